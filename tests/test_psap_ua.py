"""The PSAP user agent (firebox.psap.ua): its sans-I/O core message by message (SDP answer,
BYE built from the dialog, CANCEL, busy/silent, retransmissions), then the asyncio adapter
against SIPp as the UAC over UDP and TCP. Every wait is bounded; nothing asserts on timing."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from firebox.psap.sdp import answer_sdp, parse_sdp
from firebox.psap.ua import (
    T1,
    AgentMode,
    CallState,
    CancelTimer,
    PsapAgentCore,
    PsapAgents,
    Queue,
    Reply,
    SendRequest,
    StartTimer,
    TimerName,
)
from firebox.sip import (
    Request,
    Response,
    build_multipart,
    make_part,
    parse_message,
    serialize,
)

SIPP_DIR = Path(__file__).parent / "sipp"
QUEUES = [
    Queue("psap-01", "sip:psap-01@psap.demo.firebox.test", "North", "6035550101"),
    Queue("psap-02", "sip:psap-02@psap.demo.firebox.test", "South", "6035550102", AgentMode.BUSY),
    Queue("psap-03", "sip:psap-03@psap.demo.firebox.test", "East", None, AgentMode.SILENT),
]
OFFER = (
    b"v=0\r\no=caller 7 7 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 101 8 0\r\na=rtpmap:101 telephone-event/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=sendonly\r\n"
    b"m=video 40002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    b"m=text 40004 RTP/AVP 98\r\na=rtpmap:98 t140/1000\r\n"
)


def invite(
    *,
    route: str | None = "<sip:psap-01@psap.demo.firebox.test;lr>",
    uri: str = "urn:service:sos",
    body: bytes = OFFER,
    ctype: str = "application/sdp",
    record_route: tuple[str, ...] = ("<sip:198.51.100.7:5070;lr>", "<sip:198.51.100.1:5060;lr>"),
    call_id: str = "call-1",
    branch: str = "z9hG4bK-esrp-1",
) -> Request:
    lines = [
        f"INVITE {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 198.51.100.7:5070;branch={branch}",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-caller-1",
        *([f"Route: {route}"] if route else []),
        *(f"Record-Route: {rr}" for rr in record_route),
        "From: <sip:+16035550100@carrier.example>;tag=caller-tag",
        "To: <urn:service:sos>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        "Max-Forwards: 69",
        "Contact: <sip:+16035550100@192.0.2.10:5060>",
        f"Content-Type: {ctype}",
    ]
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)  # type: ignore[return-value]


def in_dialog(method: str, response: Response, *, cseq: int, branch: str) -> Request:
    """A request from the caller's side within the dialog a response of ours set up."""
    lines = [
        f"{method} sip:psap-01@127.0.0.1:5099 SIP/2.0",
        f"Via: SIP/2.0/UDP 198.51.100.7:5070;branch={branch}",
        "From: <sip:+16035550100@carrier.example>;tag=caller-tag",
        f"To: {response.headers.get('To')}",
        f"Call-ID: {response.call_id}",
        f"CSeq: {cseq} {method}",
        "Max-Forwards: 69",
    ]
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())  # type: ignore[return-value]


def core(**kw) -> PsapAgentCore:
    return PsapAgentCore(QUEUES, host="127.0.0.1", port=5099, token=iter(f"t{i}" for i in range(1000)).__next__, **kw)


def replies(actions) -> list[Response]:
    return [a.response for a in actions if isinstance(a, Reply)]


# -- SDP (RFC 3264 section 6) -------------------------------------------------------------


def test_sdp_answer_keeps_the_media_lines_and_takes_one_format_of_each():
    answer = answer_sdp(parse_sdp(OFFER), host="127.0.0.1", first_port=20000, session_id=42)
    assert answer is not None
    text = answer.decode()
    assert text.endswith("\r\n")
    lines = text.split("\r\n")
    assert lines[0] == "v=0"
    assert lines[1] == "o=firebox-psap 42 1 IN IP4 127.0.0.1"  # our own origin
    assert "c=IN IP4 127.0.0.1" in lines  # our own connection address
    assert "t=0 0" in lines  # the offer's timing
    parsed = parse_sdp(answer)
    assert [m.media for m in parsed.media] == ["audio", "video", "text"]  # same lines, same order
    audio, video, text_m = parsed.media
    # One codec of the offer, the first of its order the UA takes (telephone-event is no codec).
    assert audio.port == 20000 and audio.formats == ["8"] and audio.rtpmap == {"8": "PCMA/8000"}
    assert audio.direction.value == "recvonly"  # the offer was sendonly
    assert video.port == 0 and video.formats == ["96"]  # declined, with the offer's formats
    assert text_m.port == 20004 and text_m.formats == ["98"] and text_m.rtpmap["98"] == "t140/1000"


def test_sdp_answer_to_nothing_acceptable_is_none_and_the_invite_gets_488():
    offer = b"v=0\r\no=c 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\n"
    assert answer_sdp(parse_sdp(offer), host="127.0.0.1", first_port=20000, session_id=1) is None
    c = core()
    (resp,) = replies(c.receive(invite(body=offer), "src", 0.0))
    assert resp.status == 488
    assert c.counts["psap-01"].offered == 1 and c.counts["psap-01"].answered == 0


# -- INVITE, ACK, BYE built from the dialog -----------------------------------------------


def test_invite_is_answered_180_then_200_with_an_sdp_answer_from_a_multipart_body():
    ctype, body = build_multipart(
        [make_part("application/sdp", OFFER), make_part("application/pidf+xml", b"<presence/>", content_id="loc@x")]
    )
    c = core()
    actions = c.receive(invite(body=body, ctype=ctype), "src", 0.0)
    ringing, ok = replies(actions)
    assert ringing.status == 180 and ok.status == 200
    assert ringing.to_tag == ok.to_tag == "t0"
    assert ok.headers.get_all("Record-Route") == ["<sip:198.51.100.7:5070;lr>", "<sip:198.51.100.1:5060;lr>"]
    assert ok.headers.get("Contact") == "<sip:psap-01@127.0.0.1:5099>"
    assert ok.content_type == "application/sdp"
    assert parse_sdp(ok.body).media[0].formats == ["8"]
    assert len(ok.headers.get_all("Via")) == 2
    assert StartTimer("call-1/t0", TimerName.RETRANSMIT_2XX, T1) in actions
    assert c.counts["psap-01"].offered == 1 and c.counts["psap-01"].answered == 1


def test_the_psap_hangs_up_with_a_bye_built_from_the_dialog():
    c = core(hold_seconds=3.0)
    ok = replies(c.receive(invite(), "src", 0.0))[-1]
    actions = c.receive(in_dialog("ACK", ok, cseq=1, branch="z9hG4bK-ack"), "src", 0.1)
    assert CancelTimer("call-1/t0", TimerName.RETRANSMIT_2XX) in actions
    assert StartTimer("call-1/t0", TimerName.HANGUP, 3.0) in actions
    assert c.calls["call-1/t0"].state is CallState.CONFIRMED
    sends = [a for a in c.timer("call-1/t0", TimerName.HANGUP, 3.1) if isinstance(a, SendRequest)]
    (send,) = sends
    bye = send.request
    # RFC 3261 12.2.1.1: Request-URI the remote target (the INVITE's Contact); the route
    # set is the INVITE's Record-Route in order (12.1.1, UAS side); the first is loose, so
    # the BYE goes to it.
    assert bye.method == "BYE" and bye.uri == "sip:+16035550100@192.0.2.10:5060"
    assert bye.headers.get_all("Route") == ["<sip:198.51.100.7:5070;lr>", "<sip:198.51.100.1:5060;lr>"]
    assert send.destination == ("198.51.100.7", 5070, "udp")
    assert bye.cseq == (1, "BYE")
    assert bye.from_tag == "t0" and bye.to_tag == "caller-tag"
    assert bye.headers.get("From") == "<urn:service:sos>;tag=t0"
    assert bye.headers.get("To") == "<sip:+16035550100@carrier.example>;tag=caller-tag"
    assert bye.call_id == "call-1" and bye.branch.startswith("z9hG4bK")
    assert serialize(bye)  # it is a complete message
    # Its 200 ends the call, counted as ended by the PSAP.
    answer = Response(200, "OK", bye.headers.copy())
    c.receive(answer, "src", 3.2)
    counts = c.counts["psap-01"]
    assert c.calls["call-1/t0"].state is CallState.ENDED
    assert counts.ended == 1 and counts.ended_by_psap == 1


def test_a_strict_first_route_becomes_the_request_uri():
    c = core(hold_seconds=1.0)
    ok = replies(c.receive(invite(record_route=("<sip:198.51.100.7:5070>",)), "src", 0.0))[-1]
    c.receive(in_dialog("ACK", ok, cseq=1, branch="z9hG4bK-ack"), "src", 0.1)
    (send,) = [a for a in c.timer("call-1/t0", TimerName.HANGUP, 1.2) if isinstance(a, SendRequest)]
    assert send.request.uri == "sip:198.51.100.7:5070"
    assert send.request.headers.get_all("Route") == ["<sip:+16035550100@192.0.2.10:5060>"]
    assert send.destination == ("198.51.100.7", 5070, "udp")


def test_no_ack_retransmits_the_200_then_hangs_up():
    c = core()
    ok = replies(c.receive(invite(), "src", 0.0))[-1]
    again = c.timer("call-1/t0", TimerName.RETRANSMIT_2XX, T1)
    assert replies(again) == [ok]
    assert StartTimer("call-1/t0", TimerName.RETRANSMIT_2XX, 2 * T1) in again
    actions = c.timer("call-1/t0", TimerName.NO_ACK, 64 * T1)
    assert any(isinstance(a, SendRequest) and a.request.method == "BYE" for a in actions)
    assert c.stats["no_ack"] == 1


def test_the_callers_bye_ends_the_call_and_a_stray_bye_gets_481():
    c = core()
    ok = replies(c.receive(invite(), "src", 0.0))[-1]
    c.receive(in_dialog("ACK", ok, cseq=1, branch="z9hG4bK-ack"), "src", 0.1)
    (resp,) = replies(c.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bK-bye"), "src", 1.0))
    assert resp.status == 200
    assert c.counts["psap-01"].ended == 1 and c.counts["psap-01"].ended_by_psap == 0
    # The same BYE again (a retransmission) is answered 200 again, not counted twice.
    assert replies(c.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bK-bye"), "src", 1.1))[0].status == 200
    assert c.counts["psap-01"].ended == 1
    stray = Response(200, "OK", ok.headers.copy())
    stray.headers.set("To", "<urn:service:sos>;tag=nobody")
    assert replies(c.receive(in_dialog("BYE", stray, cseq=2, branch="z9hG4bK-x"), "src", 1.2))[0].status == 481


# -- CANCEL, busy, silent, retransmissions, other methods ---------------------------------


def cancel_of(inv: Request) -> Request:
    lines = [
        f"CANCEL {inv.uri} SIP/2.0",
        f"Via: {inv.headers.get('Via')}",
        f"From: {inv.headers.get('From')}",
        f"To: {inv.headers.get('To')}",
        f"Call-ID: {inv.call_id}",
        "CSeq: 1 CANCEL",
        "Max-Forwards: 70",
    ]
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())  # type: ignore[return-value]


def test_cancel_while_ringing_gets_200_and_the_invite_487():
    c = core(ring_seconds=5.0)
    inv = invite()
    actions = c.receive(inv, "src", 0.0)
    assert [r.status for r in replies(actions)] == [180]
    assert StartTimer("call-1/t0", TimerName.ANSWER, 5.0) in actions
    actions = c.receive(cancel_of(inv), "src", 1.0)
    ok, terminated = replies(actions)
    assert ok.status == 200 and ok.cseq == (1, "CANCEL")
    assert terminated.status == 487 and terminated.cseq == (1, "INVITE") and terminated.to_tag == "t0"
    assert CancelTimer("call-1/t0", TimerName.ANSWER) in actions
    assert c.counts["psap-01"].cancelled == 1
    # The ring timer firing late does nothing; the ACK of the 487 is absorbed.
    assert c.timer("call-1/t0", TimerName.ANSWER, 5.0) == []
    assert c.receive(in_dialog("ACK", terminated, cseq=1, branch="z9hG4bK-esrp-1"), "src", 1.1) == []
    assert c.counts["psap-01"].answered == 0
    # A CANCEL matching nothing: 481.
    other = cancel_of(invite(call_id="other"))
    assert replies(c.receive(other, "src", 2.0))[0].status == 481


def test_cancel_after_the_answer_changes_nothing():
    c = core()
    inv = invite()
    c.receive(inv, "src", 0.0)
    (ok,) = replies(c.receive(cancel_of(inv), "src", 0.5))
    assert ok.status == 200 and c.calls["call-1/t0"].state is CallState.ANSWERED


def test_busy_and_silent_queues_and_a_retransmitted_invite():
    c = core()
    busy = invite(route="<sip:psap-02@psap.demo.firebox.test;lr>", call_id="b")
    (resp,) = replies(c.receive(busy, "src", 0.0))
    assert resp.status == 503 and resp.headers.get("Retry-After") == "30"
    assert replies(c.receive(busy, "src", 0.5)) == [resp]  # retransmission: the same answer
    assert c.counts["psap-02"].offered == 1 and c.counts["psap-02"].rejected == 1
    silent = invite(route="<sip:psap-03@psap.demo.firebox.test;lr>", call_id="s")
    assert replies(c.receive(silent, "src", 0.0)) == []
    assert replies(c.receive(cancel_of(silent), "src", 0.5)) == []
    assert c.counts["psap-03"].offered == 1 and c.counts["psap-03"].unanswered == 1


def test_business_line_and_unknown_queue():
    c = core()
    line = invite(route=None, uri="sip:+16035550101@pstn-gw.demo.firebox.test;user=phone", call_id="bl")
    assert [r.status for r in replies(c.receive(line, "src", 0.0))] == [180, 200]
    assert c.counts["psap-01"].business_line == 1
    nowhere = invite(route="<sip:psap-99@psap.demo.firebox.test;lr>", call_id="x")
    assert [r.status for r in replies(c.receive(nowhere, "src", 0.0))] == [404]


def test_message_options_and_unknown_methods():
    c = core()
    base = invite()
    msg = Request("MESSAGE", base.uri, base.headers.copy(), b"help")
    msg.headers.set("CSeq", "1 MESSAGE")
    msg.headers.set("Content-Type", "text/plain")
    assert replies(c.receive(msg, "src", 0.0))[0].status == 200
    assert c.counts["psap-01"].messages == 1
    opt = Request("OPTIONS", "sip:psap-01@127.0.0.1:5099", base.headers.copy())
    opt.headers.set("CSeq", "1 OPTIONS")
    (resp,) = replies(c.receive(opt, "src", 0.0))
    assert resp.status == 200 and "INVITE" in (resp.headers.get("Allow") or "")
    sub = Request("SUBSCRIBE", "sip:psap-01@127.0.0.1:5099", base.headers.copy())
    sub.headers.set("CSeq", "1 SUBSCRIBE")
    (resp,) = replies(c.receive(sub, "src", 0.0))  # no Event: not a package we serve
    assert resp.status == 489 and resp.headers.get("Allow-Events") == "emergency-QueueState"
    refer = Request("REFER", "sip:psap-01@127.0.0.1:5099", base.headers.copy())
    refer.headers.set("CSeq", "1 REFER")
    assert replies(c.receive(refer, "src", 0.0))[0].status == 405


def subscribe(expires: int = 600) -> Request:
    base = invite()
    sub = Request("SUBSCRIBE", "sip:psap-01@psap.demo.firebox.test", base.headers.copy())
    sub.headers.remove("Route")
    sub.headers.remove("Record-Route")
    sub.headers.set("CSeq", "1 SUBSCRIBE")
    sub.headers.set("Event", "emergency-QueueState")
    sub.headers.set("Expires", str(expires))
    sub.headers.set("Contact", "<sip:198.51.100.7:5070>")
    sub.headers.set("To", "<sip:psap-01@psap.demo.firebox.test>")
    sub.headers.set("Call-ID", "sub-1")
    return sub


def test_a_queue_notifies_its_state_and_each_change_once_per_interval():
    """RFC 6665 / NENA-STA-010.3 4.2.1.3: 200 and a NOTIFY with the state at once; a new
    call makes the queue one longer, notified after the publish interval, not per call."""
    import json

    c = core(publish_seconds=1.0, max_queue=2)
    actions = c.receive(subscribe(), "src", 0.0)
    (ok,) = replies(actions)
    assert ok.status == 200 and ok.headers.get("Expires") == "600"
    (notify,) = [a for a in actions if isinstance(a, SendRequest)]
    assert notify.request.method == "NOTIFY" and notify.destination == ("198.51.100.7", 5070, "udp")
    assert json.loads(notify.request.body) == {
        "queueUri": "sip:psap-01@psap.demo.firebox.test", "queueLength": 0, "queueMaxLength": 2, "state": "Active",
    }  # fmt: skip
    timers = [a for a in actions if isinstance(a, StartTimer) and a.name is TimerName.PUBLISH]
    assert len(timers) == 1 and timers[0].delay == 1.0  # the rate limit's clock starts
    # two calls within the interval: no more timers, one NOTIFY when it is over
    for n in (1, 2):
        actions = c.receive(invite(call_id=f"q-{n}", branch=f"z9hG4bK-q{n}"), "src", 0.1 * n)
        assert not [a for a in actions if isinstance(a, StartTimer) and a.name is TimerName.PUBLISH]
    (notify,) = [a for a in c.timer(timers[0].key, TimerName.PUBLISH, 1.1) if isinstance(a, SendRequest)]
    body = json.loads(notify.request.body)
    assert body["queueLength"] == 2 and body["state"] == "Full"
    assert notify.request.headers.get("Subscription-State").startswith("active;expires=")
    # nothing changed since: the next publish sends nothing
    c.receive(invite(call_id="q-1", branch="z9hG4bK-q1"), "src", 1.5)  # a retransmission
    assert not [a for a in c.timer(timers[0].key, TimerName.PUBLISH, 2.6) if isinstance(a, SendRequest)]


def test_a_busy_queue_says_it_is_full():
    c = core()
    c.queues["psap-01"] = Queue("psap-01", "sip:psap-01@psap.demo.firebox.test", mode=AgentMode.BUSY)
    assert c.queue_state(c.queues["psap-01"]).state.value == "Full"


# -- the asyncio adapter against SIPp -------------------------------------------------------


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


async def run_sipp(scenario: str, agents: PsapAgents, tmp_path: Path, transport: str, service: str) -> tuple[int, str]:
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.fail("sipp is not installed (apt-get install sip-tester); these tests need it")
    command = [
        sipp, "-sf", str(SIPP_DIR / scenario), "-s", service,
        "-t", "u1" if transport == "udp" else "t1",
        "-i", "127.0.0.1", "-p", str(free_port_pair()), "-mp", str(free_port()),
        "-m", "1", "-timeout", "20s", "-timeout_error", "-trace_err", "-nostdin",
        f"127.0.0.1:{agents.port}",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 40)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "sipp did not finish"
    errors = "".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*errors*"))
    assert proc.returncode is not None
    return proc.returncode, f"rc={proc.returncode}\nstderr: {err.decode(errors='replace')[-1500:]}\nerrors: {errors}"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_caller_is_answered_and_hangs_up(tmp_path, transport):
    agents = PsapAgents(QUEUES, port=0, transports=(transport,), ring_seconds=0.1)
    await agents.start()
    try:
        code, diag = await run_sipp("psap_uac.xml", agents, tmp_path, transport, "psap-01")
        assert code == 0, diag + f"\n{agents.core.stats}"
        counts = agents.counts["psap-01"]
        assert (counts.offered, counts.answered, counts.ended, counts.ended_by_psap) == (1, 1, 1, 0)
    finally:
        await agents.close()


async def test_sipp_caller_gets_the_psaps_bye_after_the_hold_time(tmp_path):
    agents = PsapAgents(QUEUES, port=0, ring_seconds=0.0, hold_seconds=0.3)
    await agents.start()
    try:
        code, diag = await run_sipp("psap_uac_psap_hangs_up.xml", agents, tmp_path, "udp", "psap-01")
        assert code == 0, diag + f"\n{agents.core.stats}"
        counts = agents.counts["psap-01"]
        for _ in range(100):  # SIPp's 200 to our BYE may still be on its way (bounded)
            if counts.ended:
                break
            await asyncio.sleep(0.02)
        assert (counts.answered, counts.ended, counts.ended_by_psap) == (1, 1, 1)
    finally:
        await agents.close()


# -- composed as the demo composes them: carrier -> BCF + ESRP -> PSAP agents ------------------


@pytest.fixture(scope="module")
def demo_state(tmp_path_factory):
    from rich.console import Console

    from firebox.node import write_demo

    target = tmp_path_factory.mktemp("psap-demo")
    _, state = write_demo(target, seed=911, n_towns=40, listen="127.0.0.1:7070", console=Console(quiet=True))
    return target, state


async def composed(target: Path, state, faults: dict[str, str], *, queue_state: bool = False):
    """The demo's deployment with ``faults``, its SIP elements started (no HTTP). Without
    ``queue_state`` the ESRP does not follow the queues' QueueState, so that a faulty PSAP
    is found out by the call itself (failover)."""
    import yaml
    from rich.console import Console

    from firebox.deployment import load_deployment, parse_deployment
    from firebox.node import build_node, start_sip

    dep = load_deployment(target / "deployment.yaml")
    data = dep.model_dump(mode="json", exclude_none=True)
    data["elements"]["bcf"]["listen"] = "127.0.0.1:0"
    data["elements"]["bcf"]["transports"] = ["udp"]
    data["elements"]["psap_agents"]["faults"] = faults
    data["elements"]["psap_agents"]["hold_seconds"] = 0.2
    data["elements"]["esrp"]["subscribe_queue_state"] = queue_state
    data["elements"].pop("log_events", None)  # not what these tests are about
    dep = parse_deployment(yaml.safe_dump(data), base=target / "deployment.yaml")
    node = build_node(dep, console=Console(quiet=True))
    http = await start_sip(node)
    return node, http


def town_of(state, psap_id: str) -> tuple[float, float]:
    town = next(t for t in state.towns if t.psap_id == psap_id)
    p = town.geometry.point_on_surface()
    return p.x, p.y


@pytest.mark.parametrize("fault", ["busy", "silent"])
async def test_a_faulty_psap_fails_over_to_its_alternate_and_the_call_is_answered(demo_state, fault):
    from firebox.node import stop_sip
    from firebox.sim.carrier import CallPlan, Carrier, LocationMode, Outcome

    target, state = demo_state
    psap = next(p for p in state.psaps if p.alternates)
    node, http = await composed(target, state, {psap.id: fault})
    carrier = Carrier(("127.0.0.1", node.core.port, "udp"))
    await carrier.start()
    try:
        lon, lat = town_of(state, psap.id)
        result = await carrier.call(CallPlan("tel:+12005550001", lon, lat, LocationMode.VALUE, hold=0.1))
        assert result.outcome is Outcome.ANSWERED and result.status == 200
        assert node.agents.counts[psap.id].offered == 1 and node.agents.counts[psap.id].answered == 0
        alternate = node.agents.counts[psap.alternates[0]]
        assert alternate.offered == 1 and alternate.answered == 1
        assert node.core.stats["failovers"] == 1
        assert node.core.destinations[psap.uri]["failed"] == 1
        assert carrier.stats.answered == 1 and carrier.stats.unanswered == 0
    finally:
        await carrier.close()
        await stop_sip(node)
        await http.aclose()


async def test_the_esrp_follows_queue_states_and_skips_a_full_queue(demo_state):
    """With QueueState subscriptions (RFC 6665, NENA-STA-010.3 4.2.1.3) the ESRP learns that
    a busy PSAP's queue is Full and sends its call straight to the alternate: no 503 first."""
    from datetime import UTC, datetime

    from firebox.node import stop_sip
    from firebox.sim.carrier import CallPlan, Carrier, LocationMode, Outcome

    target, state = demo_state
    psap = next(p for p in state.psaps if p.alternates)
    node, http = await composed(target, state, {psap.id: "busy"}, queue_state=True)
    carrier = Carrier(("127.0.0.1", node.core.port, "udp"))
    await carrier.start()
    try:
        states = node.core.router.states
        for _ in range(250):  # bounded wait for every queue's first NOTIFY
            if all(states.queue(p.uri, datetime.now(UTC)) is not None for p in state.psaps):
                break
            await asyncio.sleep(0.02)
        held = states.queue(psap.uri, datetime.now(UTC))
        assert held is not None and held.state.value == "Full"
        lon, lat = town_of(state, psap.id)
        result = await carrier.call(CallPlan("tel:+12005550002", lon, lat, LocationMode.VALUE, hold=0.1))
        assert result.outcome is Outcome.ANSWERED
        assert node.agents.counts[psap.id].offered == 0  # never tried
        assert node.agents.counts[psap.alternates[0]].answered == 1
        assert node.core.stats["failovers"] == 0
    finally:
        await carrier.close()
        await stop_sip(node)
        await http.aclose()


async def test_calls_without_a_usable_location_reach_the_default_psap(demo_state):
    from firebox.node import stop_sip
    from firebox.sim.carrier import CallPlan, Carrier, LocationMode, Outcome

    target, state = demo_state
    node, http = await composed(target, state, {})
    carrier = Carrier(("127.0.0.1", node.core.port, "udp"))
    await carrier.start()
    try:
        default = state.psaps[0].id  # the ESRP's default route: the first PSAP listed
        for n, mode in enumerate((LocationMode.NONE, LocationMode.GARBLED)):
            result = await carrier.call(CallPlan(f"tel:+1200555000{n}", 0.0, 0.0, mode, hold=0.1))
            assert result.outcome is Outcome.ANSWERED, result
        assert node.agents.counts[default].answered == 2
        assert all(any("default location added" in line for line in r.events) for r in node.core.records.values())
        # The PSAP's own hold time (0.2 s) ends a call the caller keeps up.
        result = await carrier.call(CallPlan("tel:+12005550009", 0.0, 0.0, LocationMode.NONE, hold=5.0))
        assert result.outcome is Outcome.ANSWERED and result.ended_by == "psap"
    finally:
        await carrier.close()
        await stop_sip(node)
        await http.aclose()


async def test_a_911_dial_string_is_recognized_and_routed_by_location(demo_state):
    from firebox.node import stop_sip
    from firebox.sim.carrier import CallPlan, Carrier, LocationMode, Outcome

    target, state = demo_state
    node, http = await composed(target, state, {})
    carrier = Carrier(("127.0.0.1", node.core.port, "udp"))
    await carrier.start()
    try:
        psap = state.psaps[-1]
        lon, lat = town_of(state, psap.id)
        dial = f"sip:911@127.0.0.1:{node.core.port};user=phone"
        result = await carrier.call(CallPlan("tel:+12005550042", lon, lat, LocationMode.VALUE, 0.1, None, dial))
        assert result.outcome is Outcome.ANSWERED, result
        assert node.agents.counts[psap.id].answered == 1, node.core.events
    finally:
        await carrier.close()
        await stop_sip(node)
        await http.aclose()


async def test_sipp_caller_cancels_while_it_rings(tmp_path):
    agents = PsapAgents(QUEUES, port=0, ring_seconds=5.0)
    await agents.start()
    try:
        code, diag = await run_sipp("psap_uac_cancel.xml", agents, tmp_path, "udp", "psap-01")
        assert code == 0, diag + f"\n{agents.core.stats}"
        counts = agents.counts["psap-01"]
        assert (counts.offered, counts.cancelled, counts.answered) == (1, 1, 0)
        assert agents.core.stats["invite_retransmissions"] == 0
    finally:
        await agents.close()
