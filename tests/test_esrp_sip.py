"""The BCF + ESRP SIP element (firebox.esrp.element) end to end on 127.0.0.1.

The demo state (write_demo, build_node) gives the PSAPs, the ECRF in-process and the
failover chains; ``resolve`` maps each PSAP queue URI and the PSTN gateway to a local
port. Carriers and PSAPs are real SIPp (``tests/sipp/esrp_*.xml``) or small endpoints on
``firebox.sip.transport`` where a case is easier to express in Python (a PSAP that never
answers, CANCEL, exact byte comparison). Every wait is bounded; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from rich.console import Console

from firebox.bcf.core import Bcf
from firebox.deployment import load_deployment
from firebox.esrp.element import EmergencyCore
from firebox.esrp.policy import RuleSet, chains_from_deployment
from firebox.esrp.router import InProcessLost, Router
from firebox.esrp.states import StateTable
from firebox.location.pidf import PidfLocation, Presence, serialize_pidf
from firebox.location.shapes import Point
from firebox.node import build_node, write_demo
from firebox.sip import (
    Request,
    Response,
    build_multipart,
    make_part,
    make_response,
    parse_message,
)
from firebox.sip.address import parse_uri
from firebox.sip.transport import SipServer, Source, start_sip_server

SIPP_DIR = Path(__file__).parent / "sipp"
GW = "pstn-gw.demo.firebox.test"
WAIT = 5.0  # bound of every single wait (seconds); never an assertion on timing
SDP = b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"


@pytest.fixture(autouse=True)
def no_event_loop_errors(caplog: pytest.LogCaptureFixture):
    """Nothing may escape to the event loop, and the element logs no handler failure."""
    yield
    bad = [
        r
        for r in caplog.records
        if r.levelno >= 40 and (r.name == "asyncio" or r.name.startswith("firebox"))
    ]
    assert not bad, [r.getMessage() for r in bad]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    target = tmp_path_factory.mktemp("esrp-sip-demo")
    path, state = write_demo(
        target,
        seed=911,
        n_towns=40,
        listen="127.0.0.1:7070",
        console=Console(quiet=True),
    )
    node = build_node(load_deployment(path), console=Console(quiet=True))
    return state, node


def town_point(state, i: int) -> tuple[Point, str]:
    town = state.towns[i]
    p = town.geometry.point_on_surface()  # lon/lat
    return Point(p.y, p.x), state.psap(town.psap_id).uri


# -- ports, endpoints ---------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("no free port found")


class Endpoint:
    """A PSAP, gateway or caller on the transport. ``mode``: ``answer`` (100, 180, 200;
    200 to BYE), ``503`` (100 then 503), ``ring`` (100, 180, then waits: CANCEL gets 200
    and the INVITE 487), ``silent`` (never answers). Requests and responses are kept."""

    def __init__(self, mode: str = "answer") -> None:
        self.mode = mode
        self.server: SipServer | None = None
        self.requests: list[tuple[Request, Source]] = []
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.got: asyncio.Queue[Request] = asyncio.Queue()
        self.invites: dict[str, Request] = {}

    @property
    def port(self) -> int:
        assert self.server is not None
        return next(iter(self.server.addresses.values()))[1]

    def __call__(self, message, source: Source) -> None:
        assert self.server is not None
        if isinstance(message, Response):
            self.responses.put_nowait(message)
            return
        self.requests.append((message, source))
        self.got.put_nowait(message)
        method = message.method
        tag = f"{self.mode}-tag"
        if method == "INVITE":
            self.invites[message.call_id] = message
            if self.mode == "silent":
                return
            self.server.reply(make_response(message, 100), source)
            if self.mode == "503":
                self.server.reply(make_response(message, 503, to_tag=tag), source)
            elif self.mode in ("answer", "ring"):
                self.server.reply(make_response(message, 180, to_tag=tag), source)
                if self.mode == "answer":
                    contact = [
                        ("Contact", f"<sip:psap@127.0.0.1:{self.port}>"),
                        ("Content-Type", "application/sdp"),
                    ]
                    self.server.reply(
                        make_response(
                            message, 200, to_tag=tag, headers=contact, body=SDP
                        ),
                        source,
                    )
        elif method == "CANCEL":
            self.server.reply(make_response(message, 200), source)
            invite = self.invites.get(message.call_id)
            if invite is not None:
                self.server.reply(make_response(invite, 487, to_tag=tag), source)
        elif method in ("BYE", "OPTIONS", "MESSAGE"):
            self.server.reply(make_response(message, 200), source)

    async def wait_for(self, method: str) -> Request:
        async def loop() -> Request:
            while True:
                request = await self.got.get()
                if request.method == method:
                    return request

        return await asyncio.wait_for(loop(), WAIT)

    async def wait_status(self, pred: Callable[[Response], bool]) -> Response:
        async def loop() -> Response:
            while True:
                response = await self.responses.get()
                if pred(response):
                    return response

        return await asyncio.wait_for(loop(), WAIT)


async def endpoint(mode: str, transport: str = "udp") -> Endpoint:
    ep = Endpoint(mode)
    ep.server = await start_sip_server(ep, "127.0.0.1", 0, transports=(transport,))
    return ep


class Swallower(asyncio.DatagramProtocol):
    """A UDP socket that takes every datagram and never answers (a hung PSAP)."""

    def __init__(self) -> None:
        self.count = 0
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.count += 1


async def swallower() -> tuple[Swallower, int]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        Swallower, local_addr=("127.0.0.1", 0)
    )
    return proto, transport.get_extra_info("sockname")[1]


# -- the element --------------------------------------------------------------------------


class Net:
    """The address book ``resolve`` reads: PSAP queue URI -> port, and the gateway."""

    def __init__(
        self, default_port: int, gateway_port: int, transport: str = "udp"
    ) -> None:
        self.ports: dict[str, int] = {}
        self.default_port = default_port
        self.gateway_port = gateway_port
        self.transport = transport

    def resolve(self, uri: str) -> tuple[str, int, str] | None:
        if uri in self.ports:
            return ("127.0.0.1", self.ports[uri], self.transport)
        try:
            parsed = parse_uri(uri)
        except ValueError:
            return None
        host = getattr(parsed, "host", "")
        if host == GW:
            return ("127.0.0.1", self.gateway_port, self.transport)
        if host == "psap.demo.firebox.test":
            return ("127.0.0.1", self.default_port, self.transport)
        return None


def make_router(node, default: Point) -> Router:
    return Router(
        fqdn="esrp.demo.firebox.test",
        lost=InProcessLost(node.ecrf),
        chains=chains_from_deployment(node.deployment, GW),
        rules=RuleSet(),
        states=StateTable(),
        default_location=Presence(
            "sip:ingress@bcf.demo.firebox.test",
            [PidfLocation(shapes=[default], method="Manual")],
        ),
    )


async def make_core(
    node, net: Net, default: Point, transports=("udp",)
) -> EmergencyCore:
    core = EmergencyCore(
        Bcf("bcf.demo.firebox.test", sources={"127.0.0.0/8": "carrier-a"}),
        make_router(node, default),
        host="127.0.0.1",
        port=0,
        transports=transports,
        resolve=net.resolve,
    )
    await core.start()
    return core


@pytest.fixture
async def cleanup() -> AsyncIterator[list]:
    things: list = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, asyncio.DatagramTransport):
            thing.close()
        elif isinstance(thing, Swallower):
            if thing.transport is not None:
                thing.transport.close()
        elif isinstance(thing, EmergencyCore):
            await thing.close()
        elif isinstance(thing, Endpoint) and thing.server is not None:
            await thing.server.close()


def presence(point: Point) -> bytes:
    return serialize_pidf(
        Presence("tel:+16035550100", [PidfLocation(shapes=[point], method="GPS")])
    )


def invite(
    caller_port: int,
    call_id: str,
    pidf: bytes | None,
    geolocation: str | None,
    transport: str = "UDP",
) -> Request:
    parts = [make_part("application/sdp", SDP)]
    if pidf is not None:
        parts.append(
            make_part("application/pidf+xml", pidf, content_id="loc@carrier.example")
        )
    ctype, body = build_multipart(parts)
    head = (
        "INVITE urn:service:sos SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{caller_port};branch=z9hG4bK-{call_id};rport\r\n"
        f"From: <sip:+16035550100@127.0.0.1:{caller_port}>;tag=caller-{call_id}\r\nTo: <urn:service:sos>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:+16035550100@127.0.0.1:{caller_port}>\r\n"
        + (f"Geolocation: <{geolocation}>\r\n" if geolocation else "")
        + f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return parse_message(head.encode() + body)  # type: ignore[return-value]


def core_address(core: EmergencyCore, transport: str = "udp") -> tuple[str, int, str]:
    return ("127.0.0.1", core.port, transport)


# -- SIPp ---------------------------------------------------------------------------------


def sipp_command(
    args: list[str], tmp_path: Path, port: int, transport: str
) -> list[str]:
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.fail(
            "sipp is not installed (apt-get install sip-tester); these tests need it"
        )
    mode = ["-t", "u1"] if transport == "udp" else ["-t", "t1"]
    return [
        sipp, *args, *mode,
        "-i", "127.0.0.1", "-p", str(port), "-mp", str(free_port()), "-cp", str(free_port()),
        "-m", "1", "-timeout", "20s", "-timeout_error", "-trace_err", "-trace_msg", "-nostdin",
    ]  # fmt: skip


async def start_sipp(command: list[str], tmp_path: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command, cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def finish_sipp(
    proc: asyncio.subprocess.Process, tmp_path: Path, what: str
) -> tuple[int, str]:
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"{what}: sipp did not finish"
    errors = "".join(
        p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*errors*")
    )
    diag = f"{what}: rc={proc.returncode}\nstderr: {err.decode(errors='replace')[-1500:]}\nerrors: {errors}"
    assert proc.returncode is not None
    return proc.returncode, diag


async def wait_listening(port: int, transport: str) -> None:
    """SIPp is up once its port is taken."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"sipp did not listen on {port}")


async def sipp_uas(
    scenario: str, tmp_path: Path, transport: str
) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port_pair()
    proc = await start_sipp(
        sipp_command(["-sf", str(SIPP_DIR / scenario)], tmp_path, port, transport),
        tmp_path,
    )
    await wait_listening(port, transport)
    return proc, port


async def sipp_uac(
    core: EmergencyCore, point: Point, tmp_path: Path, transport: str
) -> asyncio.subprocess.Process:
    inf = tmp_path / "location.csv"
    inf.write_text(f"SEQUENTIAL\n{point.lat:.6f};{point.lon:.6f};\n")
    args = [
        "-sf",
        str(SIPP_DIR / "esrp_uac.xml"),
        "-inf",
        str(inf),
        f"127.0.0.1:{core.port}",
    ]
    return await start_sipp(
        sipp_command(args, tmp_path, free_port_pair(), transport), tmp_path
    )


# -- 1 and 6: SIPp caller -> ESRP -> the town's PSAP (SIPp), BYE through us ----------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_call_reaches_the_towns_psap_and_bye_goes_through_us(
    demo, tmp_path, cleanup, transport
):
    state, node = demo
    point, psap_uri = town_point(state, 17)
    down = await endpoint("503", transport)
    cleanup.append(down)
    psap, psap_port = await sipp_uas("esrp_psap_uas.xml", tmp_path, transport)
    net = Net(default_port=down.port, gateway_port=down.port, transport=transport)
    net.ports[psap_uri] = psap_port
    core = await make_core(node, net, town_point(state, 3)[0], transports=(transport,))
    cleanup.append(core)
    caller = await sipp_uac(core, point, tmp_path, transport)
    code_uac, diag_uac = await finish_sipp(caller, tmp_path, "caller")
    code_uas, diag_uas = await finish_sipp(psap, tmp_path, "psap")
    assert code_uac == 0, diag_uac + "\n" + diag_uas + f"\n{core.events}"
    assert code_uas == 0, diag_uas + f"\n{core.events}"
    assert not down.requests  # nobody else was bothered
    assert (
        core.stats["calls_in"] == 1
        and core.stats["answered"] == 1
        and core.stats["failovers"] == 0
    )
    assert core.stats["in_dialog_forwarded"] >= 2  # the ACK and the BYE came through us
    assert core.destinations[psap_uri]["answered"] == 1
    (record,) = core.records.values()
    assert record.outcome == "answered" and record.target == psap_uri
    assert any("location by value" in line for line in record.events)


# -- 1: exact check of what reaches the PSAP (Python caller and PSAP) ----------------------


async def test_forwarded_invite_keeps_the_body_and_carries_the_ng911_headers(
    demo, cleanup
):
    state, node = demo
    point, psap_uri = town_point(state, 30)
    psap, down, caller = (
        await endpoint("answer"),
        await endpoint("503"),
        await endpoint("answer"),
    )
    cleanup += [psap, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = psap.port
    core = await make_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)
    sent = invite(caller.port, "exact-1", presence(point), "cid:loc@carrier.example")
    assert caller.server is not None
    caller.server.send(sent, core_address(core))
    got = await psap.wait_for("INVITE")
    assert got.uri == "urn:service:sos"
    assert got.headers.get_all("Route")[0] == f"<{psap_uri};lr>"
    assert any(
        "purpose=emergency-CallId" in v for v in got.headers.get_all("Call-Info")
    )
    assert got.headers.get("Resource-Priority") == "esnet.1"
    assert got.body == sent.body  # byte for byte
    assert got.headers.get("Geolocation") == "<cid:loc@carrier.example>"
    assert got.headers.get_all("Record-Route")[0] == f"<sip:127.0.0.1:{core.port};lr>"
    ok = await caller.wait_status(lambda r: r.status == 200)
    assert ok.headers.get("Record-Route") == f"<sip:127.0.0.1:{core.port};lr>"
    assert len(ok.headers.get_all("Via")) == 1  # ours was removed
    assert not down.requests


# -- 2: garbled PIDF-LO, and no location at all -> default PSAP with a default Geolocation --


@pytest.mark.parametrize(
    "pidf,geo", [(b"<presence><broken", "cid:loc@carrier.example"), (None, None)]
)
async def test_no_usable_location_reaches_the_default_psap(demo, cleanup, pidf, geo):
    state, node = demo
    default, default_psap = town_point(state, 5)
    psap, down, caller = (
        await endpoint("answer"),
        await endpoint("503"),
        await endpoint("answer"),
    )
    cleanup += [psap, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[default_psap] = psap.port
    core = await make_core(node, net, default)
    cleanup.append(core)
    assert caller.server is not None
    sent = invite(caller.port, f"default-{geo}", pidf, geo)
    caller.server.send(sent, core_address(core))
    got = await psap.wait_for("INVITE")
    assert got.headers.get_all("Route")[0] == f"<{default_psap};lr>"
    assert got.headers.get_lines("Geolocation")[0].startswith("<cid:default-")
    await caller.wait_status(lambda r: r.status == 200)
    (record,) = core.records.values()
    assert any("default location added" in line for line in record.events)


# -- 3: 503 (SIPp PSAP) -> the alternate (SIPp PSAP) ----------------------------------------


async def test_sipp_psap_503_fails_over_to_the_alternate(demo, tmp_path, cleanup):
    state, node = demo
    point, psap_uri = town_point(state, 0)
    alternate = state.psap(
        next(p.id for p in state.psaps if p.uri == psap_uri)
    ).alternates[0]
    alternate_uri = state.psap(alternate).uri
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    first, first_port = await sipp_uas("esrp_psap_503.xml", tmp_path / "a", "udp")
    second, second_port = await sipp_uas("esrp_psap_uas.xml", tmp_path / "b", "udp")
    down = await endpoint("503")
    cleanup.append(down)
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = first_port
    net.ports[alternate_uri] = second_port
    core = await make_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)
    caller = await sipp_uac(core, point, tmp_path / "c", "udp")
    results = [
        await finish_sipp(p, d, w)
        for p, d, w in (
            (caller, tmp_path / "c", "caller"),
            (first, tmp_path / "a", "503 psap"),
            (second, tmp_path / "b", "alternate"),
        )
    ]
    for code, diag in results:
        assert code == 0, "\n".join(d for _, d in results) + f"\n{core.events}"
    (record,) = core.records.values()
    (failover,) = record.failovers
    assert failover.from_target.uri == psap_uri and failover.status == 503
    assert failover.to_target is not None and failover.to_target.uri == alternate_uri
    assert record.outcome == "answered" and record.target == alternate_uri
    assert core.stats["failovers"] == 1 and core.destinations[psap_uri]["failed"] == 1


# -- 3: a PSAP that never answers -> the alternate, on "no provisional response" -------------


async def test_silent_psap_fails_over_for_no_provisional_response(demo, cleanup):
    state, node = demo
    point, psap_uri = town_point(state, 0)
    alternate_uri = state.psap(
        next(p.id for p in state.psaps if p.uri == psap_uri)
    ).alternates[0]
    alternate_uri = state.psap(alternate_uri).uri
    hung, hung_port = await swallower()
    cleanup.append(hung)
    alt, down, caller = (
        await endpoint("answer"),
        await endpoint("503"),
        await endpoint("answer"),
    )
    cleanup += [alt, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = hung_port
    net.ports[alternate_uri] = alt.port
    core = await make_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)
    assert caller.server is not None
    caller.server.send(
        invite(caller.port, "silent-1", presence(point), "cid:loc@carrier.example"),
        core_address(core),
    )
    got = await alt.wait_for("INVITE")
    assert got.headers.get_all("Route")[0] == f"<{alternate_uri};lr>"
    await caller.wait_status(lambda r: r.status == 200)
    assert hung.count >= 1
    (record,) = core.records.values()
    failover = record.failovers[0]
    assert failover.from_target.uri == psap_uri
    assert "no provisional" in failover.reason
    forwarded = next(t for uri, _, t in record.forwards if uri == psap_uri)
    assert failover.at is not None
    print(
        f"failover on silence after {failover.at - forwarded:.3f} s"
    )  # for the report, not asserted


# -- 4: every PSAP down -> the business line through the PSTN gateway -----------------------


async def test_every_psap_down_reaches_the_business_line(demo, cleanup):
    state, node = demo
    point, psap_uri = town_point(state, 9)
    down, gateway, caller = (
        await endpoint("503"),
        await endpoint("answer"),
        await endpoint("answer"),
    )
    cleanup += [down, gateway, caller]
    net = Net(default_port=down.port, gateway_port=gateway.port)
    core = await make_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)
    assert caller.server is not None
    caller.server.send(
        invite(caller.port, "allbusy-1", presence(point), "cid:loc@carrier.example"),
        core_address(core),
    )
    got = await gateway.wait_for("INVITE")
    number = state.psap(
        next(p.id for p in state.psaps if p.uri == psap_uri)
    ).business_line
    assert got.uri == f"sip:+1{number}@{GW};user=phone"
    assert "Route" not in got.headers or not any(
        "psap" in r for r in got.headers.get_all("Route")
    )
    await caller.wait_status(lambda r: r.status == 200)
    invites = [r for r, _ in down.requests if r.method == "INVITE"]
    assert invites and all(r.uri == "urn:service:sos" for r in invites)
    (record,) = core.records.values()
    assert record.failovers and all(f.status == 503 for f in record.failovers)
    assert (
        record.outcome == "answered"
        and record.target is not None
        and record.target.endswith(";user=phone")
    )


# -- 5: CANCEL before the answer -------------------------------------------------------------


async def test_cancel_before_answer_stops_the_forward(demo, cleanup):
    state, node = demo
    point, psap_uri = town_point(state, 0)
    ringing, down, caller = (
        await endpoint("ring"),
        await endpoint("503"),
        await endpoint("answer"),
    )
    cleanup += [ringing, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = ringing.port
    core = await make_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)
    assert caller.server is not None
    sent = invite(caller.port, "cancel-1", presence(point), "cid:loc@carrier.example")
    caller.server.send(sent, core_address(core))
    await caller.wait_status(lambda r: r.status == 180)
    cancel = (
        f"CANCEL urn:service:sos SIP/2.0\r\nVia: {sent.headers.get('Via')}\r\n"
        f"From: {sent.headers.get('From')}\r\nTo: <urn:service:sos>\r\nCall-ID: cancel-1\r\n"
        "CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    caller.server.send(cancel, core_address(core))
    got = await ringing.wait_for("CANCEL")
    assert got.call_id == "cancel-1"
    await caller.wait_status(lambda r: r.status == 200 and r.cseq[1] == "CANCEL")
    final = await caller.wait_status(
        lambda r: r.status >= 200 and r.cseq[1] == "INVITE"
    )
    assert final.status == 487
    # the caller ACKs the 487; the ESRP absorbs it (its INVITE server transaction)
    ack = (
        f"ACK urn:service:sos SIP/2.0\r\nVia: {sent.headers.get('Via')}\r\n"
        f"From: {sent.headers.get('From')}\r\nTo: {final.headers.get('To')}\r\nCall-ID: cancel-1\r\n"
        "CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    caller.server.send(ack, core_address(core))
    await asyncio.sleep(0.2)  # let a wrongly forwarded ACK arrive, if any
    (record,) = core.records.values()
    assert record.outcome == "cancelled" and record.status == 487
    assert not down.requests  # no other target was tried
    assert core.stats["in_dialog_forwarded"] == 0
    assert ringing.requests[-1][0].method in ("CANCEL", "ACK")


# -- OPTIONS to us ------------------------------------------------------------------------


async def test_options_to_the_element(demo, cleanup):
    state, node = demo
    down, caller = await endpoint("503"), await endpoint("answer")
    cleanup += [down, caller]
    core = await make_core(node, Net(down.port, down.port), town_point(state, 3)[0])
    cleanup.append(core)
    assert caller.server is not None
    options = (
        f"OPTIONS sip:127.0.0.1:{core.port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bK-opt\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:127.0.0.1:{core.port}>\r\nCall-ID: opt-1\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    caller.server.send(options, core_address(core))
    ok = await caller.wait_status(lambda r: r.cseq[1] == "OPTIONS")
    assert ok.status == 200
    assert (
        "INVITE" in (ok.headers.get("Allow") or "")
        and ok.headers.get("Accept")
        and ok.headers.get("Supported")
    )
    assert not down.requests


# -- robustness: retransmissions, BCF divert, a router that fails, the PSAP hanging up -------


async def test_a_retransmitted_invite_is_forwarded_once_and_the_psap_can_hang_up(
    demo, cleanup
):
    state, node = demo
    point, psap_uri = town_point(state, 12)
    psap, down, caller = (
        await endpoint("answer"),
        await endpoint("503"),
        await endpoint("answer"),
    )
    cleanup += [psap, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = psap.port
    core = await make_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)
    assert caller.server is not None and psap.server is not None
    sent = invite(caller.port, "retrans-1", presence(point), "cid:loc@carrier.example")
    caller.server.send(sent, core_address(core))
    caller.server.send(sent, core_address(core))  # a retransmission (same branch)
    got = await psap.wait_for("INVITE")
    ok = await caller.wait_status(lambda r: r.status == 200)
    await asyncio.sleep(0.2)
    assert sum(1 for r, _ in psap.requests if r.method == "INVITE") == 1
    assert core.stats["calls_in"] == 1 and core.stats["retransmissions"] >= 1
    # The PSAP ends the call: its BYE follows the Record-Route to us, then the caller's Contact.
    rr = got.headers.get_all("Record-Route")[0]
    bye = (
        f"BYE sip:+16035550100@127.0.0.1:{caller.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{psap.port};branch=z9hG4bK-psapbye;rport\r\nRoute: {rr}\r\n"
        f"From: {ok.headers.get('To')}\r\nTo: {sent.headers.get('From')}\r\nCall-ID: retrans-1\r\n"
        "CSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    psap.server.send(bye, core_address(core))
    got_bye = await caller.wait_for("BYE")
    assert "Route" not in got_bye.headers  # ours was popped
    assert got_bye.top_via.host == "127.0.0.1" and got_bye.top_via.port == core.port
    done = await psap.wait_status(lambda r: r.cseq[1] == "BYE")
    assert done.status == 200 and len(done.headers.get_all("Via")) == 1


async def test_a_diverted_call_is_still_routed_and_leaves_a_callback_record(
    demo, cleanup
):
    state, node = demo
    point, psap_uri = town_point(state, 20)
    psap, down, caller = (
        await endpoint("answer"),
        await endpoint("503"),
        await endpoint("answer"),
    )
    cleanup += [psap, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = psap.port
    core = await make_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)
    core.bcf.bad_actors.is_bad = lambda source_id, now: True  # type: ignore[method-assign]
    assert caller.server is not None
    caller.server.send(
        invite(caller.port, "divert-1", presence(point), "cid:loc@carrier.example"),
        core_address(core),
    )
    await psap.wait_for("INVITE")
    await caller.wait_status(lambda r: r.status == 200)
    assert core.stats["diverted"] == 1 and len(core.callbacks) == 1
    assert core.callbacks[0].callback == f"sip:+16035550100@127.0.0.1:{caller.port}"


class BrokenRouter(Router):
    async def route(self, request, now=None, *, source=None):
        raise RuntimeError("router bug")


async def test_a_failing_router_still_forwards_on_the_default_route(
    demo, cleanup, caplog
):
    state, node = demo
    psap, down, caller = (
        await endpoint("answer"),
        await endpoint("503"),
        await endpoint("answer"),
    )
    cleanup += [psap, down, caller]
    default_psap = chains_from_deployment(node.deployment, GW).default
    assert default_psap is not None
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[default_psap.uri] = psap.port
    core = await make_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)

    old = core.router
    core.router = BrokenRouter(
        old.fqdn, old.lost, old.chains, old.rules, old.states, old.default_location
    )
    assert caller.server is not None
    point, _ = town_point(state, 9)
    caller.server.send(
        invite(caller.port, "broken-1", presence(point), "cid:loc@carrier.example"),
        core_address(core),
    )
    got = await psap.wait_for("INVITE")
    assert got.headers.get_all("Route")[0] == f"<{default_psap.uri};lr>"
    await caller.wait_status(lambda r: r.status == 200)
    assert core.stats["router_errors"] == 1
    caplog.clear()  # the router failure was logged on purpose


# -- text to 911: MESSAGE with the same serial failover -------------------------------------


async def test_message_fails_over_from_a_silent_psap(demo, cleanup):
    state, node = demo
    point, psap_uri = town_point(state, 0)
    alternate_uri = state.psap(
        state.psap(next(p.id for p in state.psaps if p.uri == psap_uri)).alternates[0]
    ).uri
    hung, hung_port = await swallower()
    cleanup.append(hung)
    alt, down, caller = (
        await endpoint("answer"),
        await endpoint("503"),
        await endpoint("answer"),
    )
    cleanup += [alt, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = hung_port
    net.ports[alternate_uri] = alt.port
    core = await make_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)
    body = presence(point)
    ctype, multipart = build_multipart(
        [
            make_part("text/plain", b"help"),
            make_part("application/pidf+xml", body, content_id="loc@carrier.example"),
        ]
    )
    message = (
        "MESSAGE urn:service:sos SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bK-msg1;rport\r\n"
        f"From: <sip:+16035550100@127.0.0.1:{caller.port}>;tag=m1\r\nTo: <urn:service:sos>\r\n"
        "Call-ID: msg-1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nGeolocation: <cid:loc@carrier.example>\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(multipart)}\r\n\r\n"
    ).encode() + multipart
    assert caller.server is not None
    caller.server.send(message, core_address(core))
    got = await alt.wait_for("MESSAGE")
    assert got.uri == "urn:service:sos" and got.body == multipart
    final = await caller.wait_status(
        lambda r: r.cseq[1] == "MESSAGE" and r.status >= 200
    )
    assert final.status == 200
    (record,) = core.records.values()
    assert (
        record.failovers[0].from_target.uri == psap_uri
        and "no response" in record.failovers[0].reason
    )


async def test_a_request_arriving_while_the_core_starts_is_handled_once_it_has_started(demo, cleanup):
    """A node restarted under load gets INVITEs and pings before its transports are all
    open: they are held and handled when ``start`` has its server, not lost."""
    state, node = demo
    core = EmergencyCore(Bcf("bcf.demo.firebox.test", sources={"127.0.0.0/8": "carrier-a"}),
                         make_router(node, town_point(state, 0)[0]), host="127.0.0.1", port=0,
                         transports=("udp",), resolve=lambda uri: None)  # fmt: skip
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind(("127.0.0.1", 0))
    caller.setblocking(False)
    port = caller.getsockname()[1]
    try:
        ping = (f"OPTIONS sip:bcf.demo.firebox.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKearly1\r\n"
                f"From: <sip:ping@127.0.0.1>;tag=e1\r\nTo: <sip:bcf.demo.firebox.test>\r\nCall-ID: early-1\r\n"
                f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()  # fmt: skip
        core._handle(parse_message(ping), Source("udp", "127.0.0.1", port))  # before start: held
        await core.start()
        cleanup.append(core)
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(caller, 65535), 5)
        answer = parse_message(data)
        assert isinstance(answer, Response) and answer.call_id == "early-1" and answer.status == 200
    finally:
        caller.close()
