"""The asyncio SIP transports (firebox.sip.transport), on 127.0.0.1 with real sockets.

A tiny responder built on the transport answers OPTIONS, INVITE (100, 180, 200 with SDP),
ACK and BYE; real SIPp drives it over UDP and TCP, with its built-in ``uac`` scenario and
with an NG911 INVITE to ``urn:service:sos`` carrying SDP and a PIDF-LO
(``tests/sipp/ng911_uac.xml``). Every wait is bounded; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import shutil
import socket
import ssl
from collections import Counter
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firebox.sip import (
    Request,
    Response,
    StreamFramer,
    find_by_cid,
    make_response,
    parse_message,
    parse_multipart,
    parse_via,
    serialize,
)
from firebox.sip.message import parse_head
from firebox.sip.transport import SipServer, Source, install_uvloop, start_sip_server

SIPP_DIR = Path(__file__).parent / "sipp"
WAIT = 5.0  # upper bound of every single wait (seconds); never an assertion on timing
SDP = (
    b"v=0\r\no=firebox 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@pytest.fixture(autouse=True)
def no_event_loop_errors(caplog: pytest.LogCaptureFixture):
    """Nothing may escape to the event loop (asyncio logs those as errors)."""
    yield
    escaped = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= 40]
    assert not escaped, [r.getMessage() for r in escaped]


# -- the responder -------------------------------------------------------------------------


class Responder:
    """A minimal UAS on the transport: OPTIONS 200; INVITE 100, 180, 200 + SDP (NG911
    INVITEs only when the PIDF-LO named by Geolocation is in the body); ACK absorbed; BYE
    200; anything else 501. Records what it saw."""

    def __init__(self) -> None:
        self.server: SipServer | None = None
        self.methods: Counter[str] = Counter()
        self.invite_call_ids: set[str] = set()
        self.locations: dict[str, bytes] = {}
        self.requests: list[tuple[Request, Source]] = []
        self.responses: list[tuple[Response, Source]] = []
        self.got = asyncio.Event()

    def __call__(self, message: Request | Response, source: Source) -> None:
        self.got.set()
        if isinstance(message, Response):
            self.responses.append((message, source))
            return
        self.requests.append((message, source))
        self.methods[message.method] += 1
        assert self.server is not None
        send = self.server.reply
        tag = hashlib.sha1(message.call_id.encode()).hexdigest()[:12]
        local_port = self.server.addresses[source.transport][1]
        contact = f"<sip:uas@127.0.0.1:{local_port};transport={source.transport}>"
        if message.method == "OPTIONS":
            send(make_response(message, 200, to_tag=tag), source)
        elif message.method == "INVITE":
            self.invite_call_ids.add(message.call_id)
            send(make_response(message, 100), source)
            if message.uri.startswith("urn:service:sos"):
                reason = self._check_location(message)
                if reason is not None:
                    send(make_response(message, 424, reason, to_tag=tag), source)
                    return
            send(make_response(message, 180, to_tag=tag), source)
            ok = make_response(
                message,
                200,
                to_tag=tag,
                headers=[("Contact", contact), ("Content-Type", "application/sdp")],
                body=SDP,
            )
            send(ok, source)
        elif message.method == "ACK":
            pass
        elif message.method == "BYE":
            send(make_response(message, 200), source)
        else:
            send(make_response(message, 501), source)

    def _check_location(self, invite: Request) -> str | None:
        """``None`` when the PIDF-LO referenced by ``Geolocation`` is in the body."""
        geolocation = invite.headers.get("Geolocation")
        if not geolocation or not invite.content_type:
            return "Bad Location Information: no Geolocation or body"
        parts = parse_multipart(invite.content_type, invite.body)
        part = find_by_cid(parts, geolocation)
        if part is None or not part.content_type.startswith("application/pidf+xml"):
            return "Bad Location Information: PIDF-LO not found by cid"
        if b"<gml:pos>" not in part.body:
            return "Bad Location Information: no position"
        self.locations[invite.call_id] = part.body
        return None


@pytest.fixture
async def responder():
    r = Responder()
    r.server = await start_sip_server(r, "127.0.0.1", 0, transports=("udp", "tcp"))
    try:
        yield r
    finally:
        await r.server.close()


# -- helpers -------------------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A port number free for both UDP and TCP right now (for SIPp's own sockets)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("no free port found")


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.queue.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    async def request(self, data: bytes, addr: tuple[str, int]) -> bytes:
        assert self.transport is not None
        self.transport.sendto(data, addr)
        return await asyncio.wait_for(self.queue.get(), WAIT)


async def udp_client() -> UdpClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_datagram_endpoint(
        UdpClient, local_addr=("127.0.0.1", 0)
    )
    return client


def options(
    port: int, *, transport: str = "UDP", call_id: str = "c1@test", extra: str = ""
) -> bytes:
    return (
        f"OPTIONS sip:uas@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK-{call_id}\r\n"
        f"From: <sip:test@127.0.0.1>;tag=ft1\r\nTo: <sip:uas@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def loose_parse(data: bytes) -> tuple[int, str, dict[str, str]]:
    """Status, reason and first header values of a response that may lack mandatory
    headers (the answer to a request without a Call-ID has none either)."""
    start, _, first = parse_head(data.split(b"\r\n\r\n", 1)[0])
    version, code, reason = start.split(" ", 2)
    assert version == "SIP/2.0"
    return int(code), reason, first


async def read_frames(
    reader: asyncio.StreamReader, framer: StreamFramer, n: int
) -> list:
    """The next ``n`` frames from a stream (bounded wait)."""
    frames: list = []

    async def loop() -> None:
        while len(frames) < n:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("closed before the expected frames arrived")
            frames.extend(framer.feed(data))

    await asyncio.wait_for(loop(), WAIT)
    return frames


async def run_sipp(args: list[str], tmp_path: Path, name: str) -> tuple[int, str]:
    """Run SIPp with a bounded wait; ``(exit code, diagnostics)``."""
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.fail(
            "sipp is not installed (apt-get install sip-tester); these tests need it"
        )
    stat_file = tmp_path / f"{name}.csv"
    command = [
        sipp, *args,
        "-i", "127.0.0.1",
        "-m", "20", "-r", "50", "-d", "10", "-timeout", "20s",
        "-p", str(free_port_pair()), "-mp", str(free_port()), "-cp", str(free_port()),
        "-trace_stat", "-stf", str(stat_file), "-trace_err",
        "-nostdin",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 40)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"sipp did not finish: {' '.join(command)}")
    errors = "".join(
        p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*errors*")
    )
    stats = (
        stat_file.read_text(errors="replace")[-1500:]
        if stat_file.exists()
        else "no stats"
    )
    diagnostics = (
        f"command: {' '.join(command)}\nstderr: {err.decode(errors='replace')[-1500:]}\n"
        f"stdout tail: {out.decode(errors='replace')[-1500:]}\nerrors: {errors}\nstats: {stats}"
    )
    assert proc.returncode is not None
    return proc.returncode, diagnostics


# -- SIPp end to end -----------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_uac_calls(
    responder: Responder, tmp_path: Path, transport: str
) -> None:
    assert responder.server is not None
    port = responder.server.addresses[transport][1]
    mode = ["-t", "u1"] if transport == "udp" else ["-t", "t1"]
    code, diagnostics = await run_sipp(
        ["-sn", "uac", f"127.0.0.1:{port}", *mode], tmp_path, f"uac_{transport}"
    )
    assert code == 0, diagnostics
    assert len(responder.invite_call_ids) == 20
    assert responder.methods["BYE"] >= 20
    assert responder.methods["ACK"] >= 20
    stats = responder.server.stats[transport]
    assert stats.received >= 60 and stats.sent >= 80
    assert stats.parse_errors == 0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_ng911_invite_with_pidf_lo(
    responder: Responder, tmp_path: Path, transport: str
) -> None:
    assert responder.server is not None
    port = responder.server.addresses[transport][1]
    mode = ["-t", "u1"] if transport == "udp" else ["-t", "t1"]
    scenario = str(SIPP_DIR / "ng911_uac.xml")
    code, diagnostics = await run_sipp(
        ["-sf", scenario, f"127.0.0.1:{port}", *mode], tmp_path, f"ng911_{transport}"
    )
    assert code == 0, diagnostics
    assert len(responder.invite_call_ids) == 20
    assert set(responder.locations) == responder.invite_call_ids
    invite = next(r for r, _ in responder.requests if r.method == "INVITE")
    assert invite.uri == "urn:service:sos"
    assert invite.headers.get("To") == "<urn:service:sos>"
    # rport was asked for: the transport filled it with the source port (RFC 3581)
    via = invite.top_via
    assert via.params.get("received") == "127.0.0.1"
    assert via.rport is not None and via.rport > 0


async def test_responder_rejects_invite_whose_cid_does_not_match(
    responder: Responder,
) -> None:
    """The check SIPp relies on: a Geolocation cid that names no part is not answered 200."""
    assert responder.server is not None
    client = await udp_client()
    try:
        port = responder.server.addresses["udp"][1]
        body = (
            b"--b1\r\nContent-Type: application/sdp\r\n\r\n" + SDP + b"\r\n"
            b"--b1\r\nContent-Type: application/pidf+xml\r\nContent-ID: <other@x>\r\n\r\n"
            b"<presence><gml:pos>42 -71</gml:pos></presence>\r\n--b1--\r\n"
        )
        invite = (
            f"INVITE urn:service:sos SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{client.port};branch=z9hG4bK-x1\r\n"
            f"From: <sip:caller@127.0.0.1>;tag=a\r\nTo: <urn:service:sos>\r\n"
            f"Call-ID: nomatch@test\r\nCSeq: 1 INVITE\r\n"
            f"Geolocation: <cid:loc@x>\r\nContent-Type: multipart/mixed; boundary=b1\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        trying = parse_message(await client.request(invite, ("127.0.0.1", port)))
        final = parse_message(await asyncio.wait_for(client.queue.get(), WAIT))
        assert isinstance(trying, Response) and trying.status == 100
        assert isinstance(final, Response) and final.status == 424
        assert "PIDF-LO not found by cid" in final.reason
    finally:
        client.transport.close()  # type: ignore[union-attr]


# -- UDP -----------------------------------------------------------------------------------


async def test_udp_malformed_datagrams_get_precise_400_and_server_keeps_working(
    responder: Responder,
) -> None:
    assert responder.server is not None
    port = responder.server.addresses["udp"][1]
    stats = responder.server.stats["udp"]
    client = await udp_client()
    try:
        addr = ("127.0.0.1", port)
        # missing Call-ID: answered with the parser's reason
        no_call_id = options(client.port).replace(b"Call-ID: c1@test\r\n", b"")
        status, reason, headers = loose_parse(await client.request(no_call_id, addr))
        assert (status, reason) == (400, "Bad Request: missing Call-ID")
        assert headers["cseq"] == "1 OPTIONS"
        assert "call-id" not in headers
        assert headers["to"].startswith("<sip:uas@127.0.0.1>;tag=")  # 8.2.6.2
        assert parse_via(headers["via"]).branch == "z9hG4bK-c1@test"

        # garbage in the header section of a request
        garbled = options(client.port, call_id="c2@test").replace(
            b"Max-Forwards: 70\r\n", b"this is not a header\r\n"
        )
        answer = parse_message(await client.request(garbled, addr))
        assert isinstance(answer, Response) and answer.status == 400
        assert (
            answer.reason == "Bad Request: malformed header line 'this is not a header'"
        )
        assert answer.call_id == "c2@test"

        # bad CSeq and an unsupported version
        bad_cseq = options(client.port, call_id="c3@test").replace(
            b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"
        )
        status, reason, headers = loose_parse(await client.request(bad_cseq, addr))
        assert (status, reason) == (400, "Bad Request: malformed CSeq 'one OPTIONS'")
        assert headers["call-id"] == "c3@test"
        sip3 = options(client.port, call_id="c4@test").replace(
            b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1
        )
        answer = parse_message(await client.request(sip3, addr))
        assert isinstance(answer, Response)
        assert (answer.status, answer.reason) == (505, "Version Not Supported: SIP/3.0")

        # pure garbage cannot be answered: dropped and counted
        dropped = stats.dropped
        client.transport.sendto(b"\x16\x03\x01\x00garbage\xff\xfe", addr)  # type: ignore[union-attr]
        client.transport.sendto(b"hello\r\n\r\n", addr)  # type: ignore[union-attr]
        # a malformed ACK is never answered either
        bad_ack = options(client.port, call_id="c5@test").replace(b"OPTIONS", b"ACK")
        client.transport.sendto(bad_ack.replace(b"Call-ID: c5@test\r\n", b""), addr)  # type: ignore[union-attr]

        # ... and the server still works
        answer = parse_message(
            await client.request(options(client.port, call_id="ok"), addr)
        )
        assert isinstance(answer, Response) and answer.status == 200
        assert answer.call_id == "ok"
        assert stats.dropped == dropped + 3
        assert stats.parse_errors >= 7
        assert stats.error_responses == 4
        assert client.queue.empty()
    finally:
        client.transport.close()  # type: ignore[union-attr]


async def test_udp_received_and_rport_added_to_top_via(responder: Responder) -> None:
    assert responder.server is not None
    port = responder.server.addresses["udp"][1]
    client = await udp_client()
    try:
        request = options(client.port).replace(
            f"127.0.0.1:{client.port};".encode(), b"198.51.100.7:5060;rport;"
        )
        request = request.replace(
            b"Max-Forwards",
            b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-2\r\nMax-Forwards",
        )
        answer = parse_message(await client.request(request, ("127.0.0.1", port)))
        assert isinstance(answer, Response) and answer.status == 200
        vias = answer.headers.get_all("Via")
        assert len(vias) == 2
        top = parse_via(vias[0])
        assert top.host == "198.51.100.7"
        assert top.params["received"] == "127.0.0.1"
        assert top.rport == client.port
        assert vias[1] == "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-2"  # untouched

        # same IP as the sent-by and no rport: the Via is left alone (18.2.1)
        plain = options(client.port, call_id="plain")
        answer = parse_message(await client.request(plain, ("127.0.0.1", port)))
        assert isinstance(answer, Response)
        assert answer.headers.get("Via") == (
            f"SIP/2.0/UDP 127.0.0.1:{client.port};branch=z9hG4bK-plain"
        )
        # sent-by is a host name: received is added
        named = options(client.port, call_id="named").replace(
            f"127.0.0.1:{client.port};".encode(),
            f"uac.example.com:{client.port};".encode(),
        )
        answer = parse_message(await client.request(named, ("127.0.0.1", port)))
        assert isinstance(answer, Response)
        assert answer.top_via.received == "127.0.0.1"
    finally:
        client.transport.close()  # type: ignore[union-attr]


async def test_udp_reply_goes_to_via_port_without_rport(responder: Responder) -> None:
    """RFC 3261 18.2.2: without rport, a UDP response goes to the sent-by port, not to
    the port the request came from."""
    assert responder.server is not None
    sender, listener = await udp_client(), await udp_client()
    try:
        request = options(listener.port, call_id="viaport")
        sender.transport.sendto(request, responder.server.addresses["udp"])  # type: ignore[union-attr]
        answer = parse_message(await asyncio.wait_for(listener.queue.get(), WAIT))
        assert isinstance(answer, Response) and answer.call_id == "viaport"
        assert sender.queue.empty()
    finally:
        sender.transport.close()  # type: ignore[union-attr]
        listener.transport.close()  # type: ignore[union-attr]


async def test_handler_errors_and_async_handlers_do_not_stop_the_server() -> None:
    seen: list[str] = []
    done = asyncio.Event()
    server: SipServer

    async def handler(message: Request | Response, source: Source) -> None:
        assert isinstance(message, Request)
        if message.call_id == "boom":
            raise RuntimeError("handler bug")
        await asyncio.sleep(0)
        seen.append(message.call_id)
        server.send(make_response(message, 200), source)
        done.set()

    server = await start_sip_server(handler, "127.0.0.1", 0, transports="udp")
    client = await udp_client()
    try:
        addr = server.addresses["udp"]
        client.transport.sendto(options(client.port, call_id="boom"), addr)  # type: ignore[union-attr]
        answer = parse_message(
            await client.request(options(client.port, call_id="fine"), addr)
        )
        assert isinstance(answer, Response) and answer.call_id == "fine"
        assert seen == ["fine"]
        assert server.stats["udp"].handler_errors == 1
    finally:
        client.transport.close()  # type: ignore[union-attr]
        await server.close()


async def test_reuse_port_lets_two_servers_share_a_udp_port() -> None:
    async def handler(message: Request | Response, source: Source) -> None:
        pass

    first = await start_sip_server(
        handler, "127.0.0.1", 0, transports="udp", reuse_port=True
    )
    try:
        port = first.addresses["udp"][1]
        second = await start_sip_server(
            handler, "127.0.0.1", port, transports="udp", reuse_port=True
        )
        try:
            assert second.addresses["udp"] == ("127.0.0.1", port)
        finally:
            await second.close()
        with pytest.raises(OSError):
            await start_sip_server(handler, "127.0.0.1", port, transports="udp")
    finally:
        await first.close()


async def test_reuse_port_for_udp_and_tcp_together() -> None:
    async def handler(message: Request | Response, source: Source) -> None:
        pass

    first = await start_sip_server(handler, "127.0.0.1", 0, reuse_port=True)
    try:
        port = first.addresses["udp"][1]
        assert first.addresses["tcp"][1] == port
        second = await start_sip_server(handler, "127.0.0.1", port, reuse_port=True)
        assert second.addresses == first.addresses
        await second.close()
    finally:
        await first.close()


# -- TCP -----------------------------------------------------------------------------------


async def test_tcp_two_messages_in_one_segment_and_one_split_over_writes(
    responder: Responder,
) -> None:
    assert responder.server is not None
    port = responder.server.addresses["tcp"][1]
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port), WAIT
    )
    writer.get_extra_info("socket").setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    framer = StreamFramer()
    try:
        local = writer.get_extra_info("sockname")[1]
        one = options(local, transport="TCP", call_id="one")
        two = options(local, transport="TCP", call_id="two")
        writer.write(one + two)
        await writer.drain()
        frames = await read_frames(reader, framer, 2)
        assert [(f.status, f.call_id) for f in frames] == [(200, "one"), (200, "two")]

        three = options(local, transport="TCP", call_id="three")
        for i in range(0, len(three), 7):
            writer.write(three[i : i + 7])
            await writer.drain()
            await asyncio.sleep(
                0.002
            )  # pacing so the pieces arrive as separate segments
        frames = await read_frames(reader, framer, 1)
        assert [(f.status, f.call_id) for f in frames] == [(200, "three")]
        assert [r.call_id for r, _ in responder.requests] == ["one", "two", "three"]
        source = responder.requests[0][1]
        assert source.transport == "tcp" and source.connection is not None
        assert source.port == local

        writer.write(b"\r\n\r\n")  # RFC 5626 keep-alive ping
        await writer.drain()
        pong = await asyncio.wait_for(reader.readexactly(2), WAIT)
        assert pong == b"\r\n"
        assert responder.server.stats["tcp"].pings == 1
    finally:
        writer.close()


async def test_tcp_framing_errors_answered_and_garbage_closes(
    responder: Responder,
) -> None:
    assert responder.server is not None
    port = responder.server.addresses["tcp"][1]
    stats = responder.server.stats["tcp"]
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port), WAIT
    )
    framer = StreamFramer()
    try:
        local = writer.get_extra_info("sockname")[1]
        # no Content-Length on a stream: 400 naming it, connection stays open
        no_length = options(local, transport="TCP", call_id="nolen").replace(
            b"Content-Length: 0\r\n", b""
        )
        writer.write(no_length + options(local, transport="TCP", call_id="after"))
        await writer.drain()
        frames = await read_frames(reader, framer, 2)
        assert (frames[0].status, frames[0].reason) == (
            400,
            "Bad Request: missing Content-Length (required on stream transports)",
        )
        assert frames[0].call_id == "nolen"
        assert (frames[1].status, frames[1].call_id) == (200, "after")

        # missing Call-ID on a stream: 400 with the reason
        writer.write(
            options(local, transport="TCP", call_id="x").replace(b"Call-ID: x\r\n", b"")
        )
        await writer.drain()
        data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        status, reason, headers = loose_parse(data)
        assert (status, reason) == (400, "Bad Request: missing Call-ID")
        assert headers["content-length"] == "0"

        # garbage that cannot be answered: the connection is closed
        writer.write(b"\x00\x01garbage garbage\r\n\r\n")
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), WAIT)
        assert rest == b""
        assert stats.dropped >= 1
    finally:
        writer.close()

    # the listener still accepts new connections
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port), WAIT
    )
    try:
        writer.write(options(0, transport="TCP", call_id="again"))
        (frame,) = await read_frames(reader, StreamFramer(), 1)
        assert (frame.status, frame.call_id) == (200, "again")
    finally:
        writer.close()


async def test_tcp_oversize_message_gets_413_and_close() -> None:
    async def handler(message: Request | Response, source: Source) -> None:
        pass

    server = await start_sip_server(
        handler, "127.0.0.1", 0, transports="tcp", max_message_size=1024
    )
    try:
        port = server.addresses["tcp"][1]
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), WAIT
        )
        big = options(0, transport="TCP", call_id="big").replace(
            b"Content-Length: 0\r\n\r\n", b"Content-Length: 5000\r\n\r\n" + b"x" * 5000
        )
        writer.write(big)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), WAIT)  # everything up to the close
        frames = StreamFramer().feed(data)
        assert len(frames) == 1 and frames[0].status == 413
        assert frames[0].call_id == "big"
        writer.close()
    finally:
        await server.close()


async def test_tcp_outbound_pool_and_response_on_same_connection(
    responder: Responder,
) -> None:
    """A second server sends a request over a pooled outbound connection; the responder
    answers over that connection (RFC 3261 18.2.2), and the pool reuses it."""
    assert responder.server is not None
    target = responder.server.addresses["tcp"]
    got: asyncio.Queue[Response] = asyncio.Queue()

    def client_handler(message: Request | Response, source: Source) -> None:
        if isinstance(message, Response):
            got.put_nowait(message)

    client = await start_sip_server(client_handler, "127.0.0.1", 0, transports="tcp")
    try:
        for n in range(3):
            request = parse_message(options(client.addresses["tcp"][1], transport="TCP",
                                            call_id=f"out{n}"))  # fmt: skip
            await client.send_async(request, (*target, "tcp"))
            response = await asyncio.wait_for(got.get(), WAIT)
            assert (response.status, response.call_id) == (200, f"out{n}")
        assert client.stats["tcp"].connections_opened == 1
        assert len(client.connections) == 1
        # fire-and-forget send to a port nobody listens on: counted, nothing raised
        client.send(
            serialize(request), ("127.0.0.1", free_port(socket.SOCK_STREAM), "tcp")
        )
        for _ in range(200):
            if client.stats["tcp"].send_errors:
                break
            await asyncio.sleep(0.01)
        assert client.stats["tcp"].send_errors == 1
    finally:
        await client.close()


async def test_tcp_reply_after_the_connection_closed_opens_one_to_the_via() -> None:
    """RFC 3261 18.2.2: when the request's connection is gone, the response goes over a
    new connection to the Via's sent-by address."""
    got: asyncio.Queue[Response] = asyncio.Queue()

    def client_handler(message: Request | Response, source: Source) -> None:
        if isinstance(message, Response):
            got.put_nowait(message)

    async def slow_handler(message: Request | Response, source: Source) -> None:
        assert isinstance(message, Request) and source.connection is not None
        await asyncio.wait_for(source.connection.closed, WAIT)
        server.reply(make_response(message, 200), source)

    client = await start_sip_server(client_handler, "127.0.0.1", 0, transports="tcp")
    server = await start_sip_server(slow_handler, "127.0.0.1", 0, transports="tcp")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(*server.addresses["tcp"]), WAIT
        )
        writer.write(
            options(client.addresses["tcp"][1], transport="TCP", call_id="late")
        )
        await writer.drain()
        writer.close()
        response = await asyncio.wait_for(got.get(), WAIT)
        assert (response.status, response.call_id) == (200, "late")
        assert server.stats["tcp"].connections_opened == 2  # inbound, then outbound
    finally:
        await server.close()
        await client.close()


async def test_idle_connections_are_closed() -> None:
    async def handler(message: Request | Response, source: Source) -> None:
        pass

    server = await start_sip_server(
        handler, "127.0.0.1", 0, transports="tcp", idle_timeout=0.2
    )
    try:
        port = server.addresses["tcp"][1]
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), WAIT
        )
        assert (
            await asyncio.wait_for(reader.read(), WAIT) == b""
        )  # closed by the server
        writer.close()
        assert server.stats["tcp"].connections_closed == 1
    finally:
        await server.close()


# -- TLS -----------------------------------------------------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_options_gets_200(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    r = Responder()
    r.server = await start_sip_server(
        r, "127.0.0.1", 0, transports="tls", ssl=server_ctx, ssl_client=client_ctx
    )
    try:
        port = r.server.addresses["tls"][1]
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
            ),
            WAIT,
        )
        try:
            local = writer.get_extra_info("sockname")[1]
            writer.write(options(local, transport="TLS", call_id="tls1"))
            await writer.drain()
            (frame,) = await read_frames(reader, StreamFramer(), 1)
            assert (frame.status, frame.call_id) == (200, "tls1")
            assert r.requests[0][1].transport == "tls"
            writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
        finally:
            writer.close()

        # outbound TLS from another endpoint, verified with the same CA
        got: asyncio.Queue[Response] = asyncio.Queue()
        client = await start_sip_server(
            lambda m, s: got.put_nowait(m) if isinstance(m, Response) else None,
            "127.0.0.1", 0, transports="tls", ssl=server_ctx, ssl_client=client_ctx,
        )  # fmt: skip
        try:
            request = parse_message(options(0, transport="TLS", call_id="tls2"))
            await client.send_async(request, ("127.0.0.1", port, "tls"))
            response = await asyncio.wait_for(got.get(), WAIT)
            assert (response.status, response.call_id) == (200, "tls2")
        finally:
            await client.close()
    finally:
        await r.server.close()


async def test_udp_tcp_and_tls_together(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    r = Responder()
    r.server = await start_sip_server(
        r, "127.0.0.1", 0, transports=("udp", "tcp", "tls"), ssl=server_ctx
    )
    try:
        addresses = r.server.addresses
        assert set(addresses) == {"udp", "tcp", "tls"}
        assert addresses["udp"] == addresses["tcp"] != addresses["tls"]
        client = await udp_client()
        try:
            answer = parse_message(
                await client.request(options(client.port), addresses["udp"])
            )
            assert isinstance(answer, Response) and answer.status == 200
        finally:
            client.transport.close()  # type: ignore[union-attr]
        counters = r.server.stats["udp"].as_dict()
        assert counters["received"] == 1 and counters["sent"] == 1
        assert counters["parse_errors"] == 0
    finally:
        await r.server.close()


async def test_tls_requires_a_context() -> None:
    with pytest.raises(ValueError, match="ssl.SSLContext"):
        await start_sip_server(lambda m, s: None, "127.0.0.1", 0, transports="tls")
    with pytest.raises(ValueError, match="unknown transports"):
        await start_sip_server(lambda m, s: None, "127.0.0.1", 0, transports=("sctp",))


def test_install_uvloop_sets_the_policy() -> None:
    before = asyncio.get_event_loop_policy()
    try:
        assert install_uvloop() is True
        import uvloop

        assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(before)


# -- uvloop --------------------------------------------------------------------------------


async def _with_responder(test, *args) -> None:
    r = Responder()
    r.server = await start_sip_server(r, "127.0.0.1", 0, transports=("udp", "tcp"))
    try:
        await test(r, *args)
    finally:
        await r.server.close()


@pytest.mark.parametrize(
    ("test", "needs_tmp"),
    [
        (test_sipp_uac_calls, True),
        (test_sipp_ng911_invite_with_pidf_lo, True),
        (test_udp_malformed_datagrams_get_precise_400_and_server_keeps_working, False),
        (test_udp_received_and_rport_added_to_top_via, False),
        (test_tcp_two_messages_in_one_segment_and_one_split_over_writes, False),
        (test_tcp_framing_errors_answered_and_garbage_closes, False),
        (test_tcp_outbound_pool_and_response_on_same_connection, False),
    ],
    ids=lambda v: getattr(v, "__name__", "")[5:] or None,
)
def test_on_uvloop(test, needs_tmp: bool, tmp_path: Path) -> None:
    """The responder tests again, on uvloop's event loop (as production runs)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        for transport in ("udp", "tcp") if needs_tmp else ("",):
            if needs_tmp:
                where = tmp_path / transport
                where.mkdir()
                runner.run(_with_responder(test, where, transport))
            else:
                runner.run(_with_responder(test))


def test_tls_and_reuse_port_on_uvloop(tmp_path: Path) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(test_tls_options_gets_200(tmp_path))
        runner.run(test_reuse_port_lets_two_servers_share_a_udp_port())
        runner.run(test_reuse_port_for_udp_and_tcp_together())
        runner.run(test_tcp_reply_after_the_connection_closed_opens_one_to_the_via())
