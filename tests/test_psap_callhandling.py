"""The PSAP call handling core (firebox.psap.callhandling), sans-I/O: messages in, actions
out, every time injected. ACD strategies, answer/release over SIP, abandon -> callback,
overflow, text grouping and replies, transfer states, test calls, NENA-STA-020 figures,
QueueState, simulated call-takers."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from firebox.psap.api import (
    CallbackStatus,
    CallStatus,
    Conflict,
    EventKind,
    LocationView,
    Medium,
    NotFound,
    PositionStatus,
    RingStrategy,
)
from firebox.psap.callhandling import (
    CallHandlingCore,
    CloseMedia,
    Emit,
    OpenMedia,
    Originate,
    PositionSetup,
    PsapSetup,
    TimerName,
)
from firebox.psap.sdp import parse_sdp
from firebox.psap.ua import Reply, SendRequest, StartTimer
from firebox.sip import parse_message, parse_multipart
from firebox.sip.message import Request, Response

T0 = 1_700_000_000.0
OFFER = (
    b"v=0\r\no=caller 7 7 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
)
PIDF = b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:x@example.com"/>'


@dataclass(frozen=True)
class Data:
    """What firebox.psap.calldata would read (the tests give it directly)."""

    call_id: str
    incident_id: str | None
    callback: str | None
    caller_uri: str
    location: LocationView | None = None
    additional_data: tuple = ()
    pidf: bytes | None = None


def describe(request: Request) -> Data:
    ids = {}
    for value in request.headers.get_all("Call-Info"):
        purpose = value.split("purpose=")[-1]
        ids[purpose] = value[value.find("<") + 1 : value.find(">")]
    caller = str(request.from_addr.uri)
    return Data(
        ids.get("emergency-CallId", request.call_id), ids.get("emergency-IncidentId"), caller, caller,
        LocationView("point", 42.37, -71.11, method="GPS"), (), PIDF,
    )  # fmt: skip


@dataclass
class Src:
    host: str = "198.51.100.7"
    port: int = 5070
    transport: str = "udp"


SRC = Src()


def psap(pid: str, positions: tuple[str, ...], strategy=RingStrategy.LONGEST_IDLE, **kw) -> PsapSetup:
    return PsapSetup(pid, f"sip:{pid}@psap.test", pid.title(), tuple(PositionSetup(p) for p in positions), strategy, **kw)


def core(*psaps: PsapSetup) -> CallHandlingCore:
    tokens = iter(f"t{i}" for i in range(10_000))
    return CallHandlingCore(
        psaps or (psap("north", ("n1", "n2", "n3")),), host="127.0.0.1", port=5090,
        describe=describe, token=tokens.__next__, directory={"south": "sip:south@psap.test"},
    )  # fmt: skip


def invite(n: int = 1, *, queue: str = "north", uri: str = "urn:service:sos", body: bytes = OFFER) -> Request:
    lines = [
        f"INVITE {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-esrp-{n}",
        f"Route: <sip:{queue}@psap.test;lr>",
        "Record-Route: <sip:198.51.100.7:5070;lr>",
        f"From: <sip:+1603555{n:04d}@carrier.example>;tag=caller-{n}",
        f"To: <{uri}>",
        f"Call-ID: call-{n}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:+1603555{n:04d}@192.0.2.10:5060>",
        f"Call-Info: <urn:emergency:uid:callid:c{n}:bcf.test>;purpose=emergency-CallId",
        f"Call-Info: <urn:emergency:uid:incidentid:i{n}:bcf.test>;purpose=emergency-IncidentId",
        "Content-Type: application/sdp",
    ]
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)  # type: ignore[return-value]


def request(method: str, *, call_id: str, to: str, cseq: int, branch: str, tag: str = "caller-1", extra=(), body=b"") -> Request:
    lines = [
        f"{method} sip:north@127.0.0.1:5090 SIP/2.0",
        f"Via: SIP/2.0/UDP 198.51.100.7:5070;branch={branch}",
        f"From: <sip:+16035550001@carrier.example>;tag={tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Max-Forwards: 69",
        *extra,
    ]
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)  # type: ignore[return-value]


def message(text: str, *, sender: str = "sip:+16035550100@carrier.example", call_info: str | None = None, n: int = 1) -> Request:
    body = text.encode()
    lines = [
        "MESSAGE urn:service:sos SIP/2.0",
        f"Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-m{n}",
        "Route: <sip:north@psap.test;lr>",
        f"From: <{sender}>;tag=m{n}",
        "To: <urn:service:sos>",
        f"Call-ID: msg-{n}",
        "CSeq: 1 MESSAGE",
        "Contact: <sip:+16035550100@192.0.2.20:5062>",
        *([f"Call-Info: <{call_info}>;purpose=emergency-CallId"] if call_info else []),
        "Content-Type: text/plain",
    ]
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)  # type: ignore[return-value]


def replies(actions) -> list[Response]:
    return [a.response for a in actions if isinstance(a, Reply)]


def opened(actions) -> list[OpenMedia]:
    return [a for a in actions if isinstance(a, OpenMedia)]


def events(actions, kind=None) -> list:
    return [a.event for a in actions if isinstance(a, Emit) and (kind is None or a.event.kind is kind)]


def signed_in(c: CallHandlingCore, *positions: str, at: float = T0) -> None:
    for n, p in enumerate(positions):
        c.sign_in(p, f"user-{p}", at + n)  # signed in one second apart: longest idle first


# -- voice: ring, answer, release --------------------------------------------------------------


def test_an_invite_rings_at_once_and_the_200_goes_when_a_position_answers_and_its_media_is_open():
    c = core()
    signed_in(c, "n1")
    actions = c.receive(invite(), SRC, T0 + 10)
    (ringing,) = replies(actions)
    assert ringing.status == 180 and ringing.to_tag == "t0"
    (view,) = c.calls("north")
    assert view.status is CallStatus.RINGING and view.offered_to == ("n1",)
    assert view.call_id == "urn:emergency:uid:callid:c1:bcf.test" and view.incident_id.endswith("i1:bcf.test")
    assert view.location.lat == 42.37 and view.callback == "sip:+16035550001@carrier.example"
    assert any(e.call and e.call.call_id == view.call_id for e in events(actions, EventKind.CALL))
    # The answer is a console action; the SIP 200 waits for the RTP endpoint.
    answered, actions = c.answer("n1", "user-n1", None, T0 + 13)
    assert answered.status is CallStatus.CONNECTED and answered.position == "n1"
    assert replies(actions) == []
    (media,) = opened(actions)
    assert media.remote == ("192.0.2.10", 40000)
    actions = c.media_ready(media.key, 30000, T0 + 13.1)
    (ok,) = replies(actions)
    assert ok.status == 200 and ok.to_tag == "t0"
    answer = parse_sdp(ok.body)
    assert answer.media[0].port == 30000 and answer.media[0].formats == ["0"]
    assert c.positions("north")[0].status is PositionStatus.BUSY
    # ACK, then the position releases: our BYE, built from the dialog, through the ESRP.
    c.receive(request("ACK", call_id="call-1", to=ok.headers.get("To"), cseq=1, branch="z9hG4bK-ack"), SRC, T0 + 13.2)
    view, actions = c.release("n1", "user-n1", answered.call_id, T0 + 60)
    assert view.status is CallStatus.RELEASED
    (bye,) = [a for a in actions if isinstance(a, SendRequest)]
    assert bye.request.method == "BYE" and bye.destination == ("198.51.100.7", 5070, "udp")
    assert bye.request.headers.get("Route") == "<sip:198.51.100.7:5070;lr>"
    assert c.positions("north")[0].status is PositionStatus.AVAILABLE
    bye_ok = parse_message(
        b"SIP/2.0 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in bye.request.headers if k in ("Via", "From", "To", "Call-ID", "CSeq")).encode()
        + b"Content-Length: 0\r\n\r\n"
    )  # fmt: skip
    assert any(isinstance(a, CloseMedia) for a in c.receive(bye_ok, SRC, T0 + 60.1))
    assert [v.status for v in c.calls("north", include_ended=True)] == [CallStatus.RELEASED]


def test_the_callers_bye_releases_the_call_and_frees_the_position():
    c = core()
    signed_in(c, "n1")
    c.receive(invite(), SRC, T0)
    _, actions = c.answer("n1", "user-n1", None, T0 + 2)
    (ok,) = replies(c.media_ready(opened(actions)[0].key, 30000, T0 + 2))
    actions = c.receive(request("BYE", call_id="call-1", to=ok.headers.get("To"), cseq=2, branch="z9hG4bK-bye"), SRC, T0 + 30)
    assert [r.status for r in replies(actions)] == [200]
    assert any(isinstance(a, CloseMedia) for a in actions)
    (view,) = c.calls("north", include_ended=True)
    assert view.status is CallStatus.RELEASED and view.ended_at is not None
    assert c.positions("north")[0].status is PositionStatus.AVAILABLE


def test_console_actions_are_checked_and_say_why():
    c = core()
    with pytest.raises(NotFound, match="no position 'x9'"):
        c.sign_in("x9", "ann", T0)
    with pytest.raises(Conflict, match="not signed in"):
        c.answer("n1", "ann", None, T0)
    c.sign_in("n1", "ann", T0)
    with pytest.raises(Conflict, match="signed in by ann"):
        c.sign_in("n1", "bob", T0)
    with pytest.raises(Conflict, match="no call is offered"):
        c.answer("n1", "ann", None, T0)
    c.receive(invite(), SRC, T0)
    view, _ = c.answer("n1", "ann", None, T0 + 1)
    with pytest.raises(Conflict, match="already on call"):
        c.answer("n1", "ann", None, T0 + 2)
    with pytest.raises(Conflict, match="release it first"):
        c.sign_out("n1", "ann", T0 + 2)
    with pytest.raises(Conflict, match="voice call: no text"):
        c.send_text("n1", "ann", view.call_id, "hello", T0 + 2)
    held, _ = c.hold("n1", "ann", view.call_id, True, T0 + 3)
    assert held.status is CallStatus.HELD  # the state only: no re-INVITE (module docstring)
    assert c.hold("n1", "ann", view.call_id, False, T0 + 4)[0].status is CallStatus.CONNECTED


# -- the ACD strategies -------------------------------------------------------------------------


def test_ring_all_offers_every_call_to_every_available_position():
    c = core(psap("north", ("n1", "n2", "n3"), RingStrategy.RING_ALL))
    signed_in(c, "n1", "n2")
    c.receive(invite(1), SRC, T0 + 10)
    c.receive(invite(2), SRC, T0 + 11)
    assert [v.offered_to for v in c.calls("north")] == [("n1", "n2"), ("n1", "n2")]
    first, _ = c.answer("n2", "user-n2", None, T0 + 12)  # the longest waiting one
    assert first.call_id.endswith("c1:bcf.test")
    assert [v.offered_to for v in c.calls("north") if v.status is CallStatus.RINGING] == [("n1",)]


def test_longest_idle_offers_each_call_to_the_position_idle_longest():
    c = core()
    signed_in(c, "n1", "n2", "n3")  # n1 idle since T0, n2 since T0+1, n3 since T0+2
    c.receive(invite(1), SRC, T0 + 10)
    c.receive(invite(2), SRC, T0 + 11)
    assert [v.offered_to for v in c.calls("north")] == [("n1",), ("n2",)]
    # n1 answers and releases: it is now the least idle, so the next call goes to n3.
    view, actions = c.answer("n1", "user-n1", None, T0 + 12)
    c.media_ready(opened(actions)[0].key, 30000, T0 + 12)
    c.release("n1", "user-n1", view.call_id, T0 + 20)
    c.receive(invite(3), SRC, T0 + 21)
    assert c.calls("north")[-1].offered_to == ("n3",)


def test_round_robin_offers_in_turn():
    c = core(psap("north", ("n1", "n2", "n3"), RingStrategy.ROUND_ROBIN))
    signed_in(c, "n3", "n2", "n1")
    offered = []
    for n in range(1, 5):
        c.receive(invite(n), SRC, T0 + 10 + n)
        view = c.calls("north")[-1]
        offered.append(view.offered_to)
        if view.offered_to:
            _, actions = c.answer(view.offered_to[0], f"user-{view.offered_to[0]}", view.call_id, T0 + 10 + n)
            c.media_ready(opened(actions)[0].key, 30000, T0 + 10 + n)
            c.release(view.offered_to[0], f"user-{view.offered_to[0]}", view.call_id, T0 + 10.5 + n)
    assert offered == [("n1",), ("n2",), ("n3",), ("n1",)]


def test_a_call_let_ring_out_is_offered_elsewhere_and_that_position_is_made_not_ready():
    c = core()
    signed_in(c, "n1", "n2")
    actions = c.receive(invite(), SRC, T0 + 10)
    (timer,) = [a for a in actions if isinstance(a, StartTimer) and a.name is TimerName.NO_ANSWER]
    actions = c.timer(timer.key, TimerName.NO_ANSWER, T0 + 30)
    assert c.calls("north")[0].offered_to == ("n2",)
    assert {p.id: p.status for p in c.positions("north")}["n1"] is PositionStatus.NOT_READY
    assert events(actions, EventKind.POSITION)


# -- abandoned calls ----------------------------------------------------------------------------


def test_a_caller_who_cancels_before_the_answer_is_abandoned_and_goes_on_the_callback_list():
    c = core()
    signed_in(c, "n1")
    (ringing,) = replies(c.receive(invite(), SRC, T0))
    cancel = request("CANCEL", call_id="call-1", to="<urn:service:sos>", cseq=1, branch="z9hG4bK-esrp-1", tag="caller-1")
    actions = c.receive(cancel, SRC, T0 + 8)
    assert [r.status for r in replies(actions)] == [200, 487]
    assert replies(actions)[1].to_tag == ringing.to_tag
    (view,) = c.calls("north", include_ended=True)
    assert view.status is CallStatus.ABANDONED and view.offered_to == ()
    (entry,) = c.callbacks("north")
    assert entry.callback == "sip:+16035550001@carrier.example" and entry.location.lat == 42.37
    assert entry.at.timestamp() == T0 + 8 and entry.status is CallbackStatus.PENDING
    assert events(actions, EventKind.CALLBACK)[0].callback == entry
    assert c.stats("north", T0 + 9).abandoned == 1
    # The ESRP's ACK of the 487 is absorbed; calling back is logged on the entry.
    ack = request("ACK", call_id="call-1", to=replies(actions)[1].headers.get("To"), cseq=1, branch="z9hG4bK-esrp-1")
    assert c.receive(ack, SRC, T0 + 8) == []
    entry, _ = c.record_callback(entry.id, "ann", "no answer", False, T0 + 60)
    entry, _ = c.record_callback(entry.id, "ann", "reached the caller, all fine", True, T0 + 120)
    assert entry.status is CallbackStatus.DONE and [a["outcome"] for a in entry.attempts] == ["no answer", "reached the caller, all fine"]
    with pytest.raises(Conflict, match="already done"):
        c.record_callback(entry.id, "ann", "again", True, T0 + 130)


# -- overflow -----------------------------------------------------------------------------------


def test_overflow_when_the_queue_is_full_nobody_is_signed_in_or_a_call_waits_too_long():
    c = core(psap("north", ("n1",), max_queue=2, overflow_after_seconds=30))
    (nobody,) = replies(c.receive(invite(9), SRC, T0))
    assert nobody.status == 480  # no 180 first: nobody could answer
    signed_in(c, "n1")
    actions = c.receive(invite(1), SRC, T0 + 1)
    assert [r.status for r in replies(actions)] == [180]
    (overflow,) = [a for a in actions if isinstance(a, StartTimer) and a.name is TimerName.OVERFLOW]
    assert overflow.delay == 30
    c.receive(invite(2), SRC, T0 + 2)
    assert c.queue_state("north").state.value == "Full"
    (full,) = replies(c.receive(invite(3), SRC, T0 + 3))
    assert full.status == 503 and full.headers.get("Retry-After") == "10"
    # The first call has waited 30 s: 486 after its 180, and the ESRP tries the next target.
    (busy,) = replies(c.timer(overflow.key, TimerName.OVERFLOW, T0 + 31))
    assert busy.status == 486 and busy.to_tag == replies(actions)[0].to_tag
    stats = c.stats("north", T0 + 31)
    assert (stats.offered, stats.overflowed, stats.in_queue, stats.answered) == (2, 3, 1, 0)
    statuses = {v.sip_call_id: v.status for v in c.calls("north", include_ended=True)}
    assert statuses["call-1"] is CallStatus.OVERFLOWED and statuses["call-2"] is CallStatus.RINGING


# -- text to 911 (RFC 3428) ---------------------------------------------------------------------


def test_texts_open_a_text_call_grouped_by_call_id_else_by_sender_and_the_position_replies():
    c = core()
    signed_in(c, "n1", "n2")
    cid = "urn:emergency:uid:callid:t1:bcf.test"
    actions = c.receive(message("help, someone broke in", call_info=cid, n=1), SRC, T0)
    assert [r.status for r in replies(actions)] == [200]
    c.receive(message("I am hiding upstairs", call_info=cid, sender="sip:other@carrier.example", n=2), SRC, T0 + 5)
    c.receive(message("different person", sender="sip:+16035550999@carrier.example", n=3), SRC, T0 + 6)
    c.receive(message("still me", sender="sip:+16035550999@carrier.example", n=4), SRC, T0 + 7)
    first, second = c.calls("north")
    assert first.medium is Medium.TEXT and first.call_id == cid
    assert [m.text for m in first.messages] == ["help, someone broke in", "I am hiding upstairs"]
    assert [m.text for m in second.messages] == ["different person", "still me"]
    assert c.stats("north", T0 + 8).offered == 2
    view, actions = c.answer("n1", "user-n1", cid, T0 + 9)
    assert view.status is CallStatus.CONNECTED and not opened(actions)  # no media for text
    view, actions = c.send_text("n1", "user-n1", cid, "Police are on the way. Stay hidden.", T0 + 12)
    assert [(m.direction, m.by) for m in view.messages][-1] == ("out", "user-n1")
    (out,) = [a for a in actions if isinstance(a, Originate)]
    # Straight to the caller's Contact (the ESRP would route a new MESSAGE as a new 911 text).
    assert out.request.method == "MESSAGE" and out.request.uri == "sip:+16035550100@192.0.2.20:5062"
    assert out.destination == ("192.0.2.20", 5062, "udp") and out.request.body == b"Police are on the way. Stay hidden."
    assert f"<{cid}>;purpose=emergency-CallId" in out.request.headers.get_all("Call-Info")
    assert events(actions, EventKind.TEXT)
    view, _ = c.release("n1", "user-n1", cid, T0 + 60)
    assert view.status is CallStatus.RELEASED
    # A text after the release opens a new text call.
    c.receive(message("one more thing", call_info=cid, n=5), SRC, T0 + 70)
    assert [v.messages[0].text for v in c.calls("north")] == ["different person", "one more thing"]


# -- transfer -----------------------------------------------------------------------------------


def connected_call(c: CallHandlingCore, n: int = 1) -> tuple[str, Response]:
    c.receive(invite(n), SRC, T0)
    view, actions = c.answer("n1", "user-n1", None, T0 + 2)
    (ok,) = replies(c.media_ready(opened(actions)[0].key, 30000, T0 + 2))
    c.receive(request("ACK", call_id=f"call-{n}", to=ok.headers.get("To"), cseq=1, branch="z9hG4bK-ack", tag=f"caller-{n}"), SRC, T0 + 2)
    return view.call_id, ok


def answer_to(req: Request, status: int, *, tag: str = "target") -> Response:
    lines = [f"SIP/2.0 {status} X"] + [f"{k}: {v}" for k, v in req.headers if k in ("Via", "From", "Call-ID", "CSeq")]
    lines += [f"To: {req.headers.get('To')};tag={tag}", "Contact: <sip:south@192.0.2.50:5060>",
              "Record-Route: <sip:198.51.100.7:5070;lr>"]  # fmt: skip
    return parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())  # type: ignore[return-value]


def test_a_transfer_goes_through_the_esrp_with_location_ids_and_referred_by_then_connects():
    c = core()
    signed_in(c, "n1")
    call_id, _ = connected_call(c)
    view, actions = c.transfer("n1", "user-n1", call_id, "south", T0 + 20)
    assert (view.transfer_target, view.transfer_status, view.status) == ("south", "trying", CallStatus.CONNECTED)
    (out,) = [a for a in actions if isinstance(a, Originate)]
    inv = out.request
    assert out.destination == ("198.51.100.7", 5070, "udp")  # the ESRP: where the call came from
    assert inv.method == "INVITE" and inv.uri == "sip:south@psap.test"
    assert inv.headers.get("Referred-By") == "<sip:n1@psap.test>"
    assert {v.split("purpose=")[1] for v in inv.headers.get_all("Call-Info")} == {"emergency-CallId", "emergency-IncidentId"}
    assert inv.headers.get("Geolocation").startswith("<cid:")
    parts = parse_multipart(inv.content_type, inv.body)
    assert [p.content_type for p in parts] == ["application/sdp", "application/pidf+xml"] and parts[1].body == PIDF
    # Ringing keeps the call-taker on; the 200 connects (ACKed), and release leaves the bridge.
    assert c.originated(out.key, answer_to(inv, 180), T0 + 21) == []
    actions = c.originated(out.key, answer_to(inv, 200), T0 + 22)
    (ack,) = [a for a in actions if isinstance(a, SendRequest)]
    assert ack.request.method == "ACK" and ack.request.cseq == (1, "ACK") and ack.destination[:2] == ("198.51.100.7", 5070)
    assert c.call(call_id).transfer_status == "connected"
    view, actions = c.release("n1", "user-n1", call_id, T0 + 30)
    assert view.status is CallStatus.TRANSFERRED
    assert not [a for a in actions if isinstance(a, SendRequest)]  # nobody is hung up on
    assert c.positions("north")[0].status is PositionStatus.AVAILABLE
    # The target hangs up: the bridge ends and the caller gets our BYE.
    dialog_to = answer_to(inv, 200).headers.get("To")
    bye = request("BYE", call_id=inv.call_id, to=inv.headers.get("From"), cseq=1, branch="z9hG4bK-tb", tag="target")
    bye.headers.set("To", inv.headers.get("From"))
    bye.headers.set("From", dialog_to)
    actions = c.receive(bye, SRC, T0 + 50)
    assert [r.status for r in replies(actions)] == [200]
    assert [a.request.method for a in actions if isinstance(a, SendRequest)] == ["BYE"]


def test_a_failed_transfer_leaves_the_call_with_the_call_taker():
    c = core()
    signed_in(c, "n1")
    call_id, _ = connected_call(c)
    with pytest.raises(NotFound, match="neither a PSAP here nor a sip: URI"):
        c.transfer("n1", "user-n1", call_id, "nowhere", T0 + 10)
    _, actions = c.transfer("n1", "user-n1", call_id, "sip:dispatch@police.test", T0 + 10)
    (out,) = [a for a in actions if isinstance(a, Originate)]
    with pytest.raises(Conflict, match="still ringing"):
        c.release("n1", "user-n1", call_id, T0 + 11)
    c.originated(out.key, answer_to(out.request, 486), T0 + 12)
    view = c.call(call_id)
    assert (view.transfer_status, view.status, view.position) == ("failed", CallStatus.CONNECTED, "n1")
    _, actions = c.transfer("n1", "user-n1", call_id, "south", T0 + 20)
    c.originate_failed([a for a in actions if isinstance(a, Originate)][0].key, T0 + 52)
    assert c.call(call_id).transfer_status == "failed"


# -- test calls ---------------------------------------------------------------------------------


def test_a_test_call_is_answered_at_once_by_no_position_and_counted_apart():
    c = core()
    signed_in(c, "n1")
    actions = c.receive(invite(uri="urn:service:test.sos"), SRC, T0)
    assert replies(actions) == []  # no 180: straight to the answer once media is open
    (ok,) = replies(c.media_ready(opened(actions)[0].key, 30000, T0))
    assert ok.status == 200 and ok.content_type == "application/sdp"
    assert c.calls("north") == [] and c.positions("north")[0].status is PositionStatus.AVAILABLE
    c.receive(request("ACK", call_id="call-1", to=ok.headers.get("To"), cseq=1, branch="z9hG4bK-a"), SRC, T0)
    (bye_ok,) = replies(c.receive(request("BYE", call_id="call-1", to=ok.headers.get("To"), cseq=2, branch="z9hG4bK-b"), SRC, T0 + 5))
    assert bye_ok.status == 200
    stats = c.stats("north", T0 + 6)
    assert (stats.test_calls, stats.offered, stats.answered) == (1, 0, 0)


# -- NENA-STA-020 figures -----------------------------------------------------------------------


def test_answer_times_within_15_and_20_seconds_of_arrival():
    c = core(psap("north", ("n1",)))
    signed_in(c, "n1")
    for n, wait in enumerate((3.0, 15.0, 18.0, 25.0), start=1):
        arrived = T0 + 100 * n
        c.receive(invite(n), SRC, arrived)
        view, actions = c.answer("n1", "user-n1", None, arrived + wait)
        c.media_ready(opened(actions)[0].key, 30000, arrived + wait)
        c.release("n1", "user-n1", view.call_id, arrived + wait + 1)
    c.receive(invite(9), SRC, T0 + 1000)
    stats = c.stats("north", T0 + 1012)
    assert (stats.offered, stats.answered, stats.answered_15s, stats.answered_20s) == (5, 4, 2, 3)
    assert stats.in_queue == 1 and stats.longest_wait_s == 12.0
    assert stats.average_answer_s == (3 + 15 + 18 + 25) / 4
    assert stats.pct_15s == 2 / 5 and stats.pct_20s == 3 / 5


# -- QueueState (RFC 6665) ----------------------------------------------------------------------


def subscribe() -> Request:
    lines = [
        "SUBSCRIBE sip:north@psap.test SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-sub",
        "From: <sip:esrp@esrp.test>;tag=esrp",
        "To: <sip:north@psap.test>",
        "Call-ID: sub-1",
        "CSeq: 1 SUBSCRIBE",
        "Contact: <sip:esrp@198.51.100.7:5070>",
        "Event: emergency-QueueState",
        "Expires: 600",
        "Max-Forwards: 70",
    ]
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())  # type: ignore[return-value]


def test_queue_state_is_inactive_without_positions_then_counts_ringing_calls():
    c = core(psap("north", ("n1",), max_queue=2))
    actions = c.receive(subscribe(), SRC, T0)
    assert [r.status for r in replies(actions)] == [200]
    (notify,) = [a for a in actions if isinstance(a, SendRequest)]
    assert notify.destination == ("198.51.100.7", 5070, "udp")
    state = json.loads(notify.request.body)
    assert (state["state"], state["queueLength"], state["queueMaxLength"]) == ("Inactive", 0, 2)
    (publish,) = [a for a in actions if isinstance(a, StartTimer) and a.name is TimerName.PUBLISH]
    c.sign_in("n1", "ann", T0 + 1)
    c.receive(invite(1), SRC, T0 + 2)
    actions = c.timer(publish.key, TimerName.PUBLISH, T0 + 3)
    (notify,) = [a for a in actions if isinstance(a, SendRequest)]
    state = json.loads(notify.request.body)
    assert (state["state"], state["queueLength"]) == ("Active", 1)
    c.receive(invite(2), SRC, T0 + 3)
    (notify,) = [a for a in c.timer(publish.key, TimerName.PUBLISH, T0 + 4) if isinstance(a, SendRequest)]
    assert json.loads(notify.request.body)["state"] == "Full"
    # Nothing changed: no NOTIFY.
    assert not [a for a in c.timer(publish.key, TimerName.PUBLISH, T0 + 5) if isinstance(a, SendRequest)]


# -- simulated call-takers ----------------------------------------------------------------------


def test_simulated_call_takers_sign_in_answer_after_their_delay_and_release_after_talking():
    setup = PsapSetup("north", "sip:north@psap.test", "North",
                      (PositionSetup("sim1", auto_answer_seconds=2.0, talk_seconds=20.0), PositionSetup("desk")))  # fmt: skip
    c = core(setup)
    actions = c.start(T0)
    assert {p.id: p.status for p in c.positions("north")} == {"sim1": PositionStatus.AVAILABLE, "desk": PositionStatus.SIGNED_OUT}
    actions = c.receive(invite(), SRC, T0 + 1)
    (auto,) = [a for a in actions if isinstance(a, StartTimer) and a.name is TimerName.AUTO_ANSWER]
    assert (auto.key, auto.delay) == ("sim1", 2.0)
    actions = c.timer("sim1", TimerName.AUTO_ANSWER, T0 + 3)
    (media,) = opened(actions)
    (talk,) = [a for a in actions if isinstance(a, StartTimer) and a.name is TimerName.AUTO_RELEASE]
    assert talk.delay == 20.0
    (ok,) = replies(c.media_ready(media.key, 30000, T0 + 3))
    c.receive(request("ACK", call_id="call-1", to=ok.headers.get("To"), cseq=1, branch="z9hG4bK-ack"), SRC, T0 + 3)
    actions = c.timer("sim1", TimerName.AUTO_RELEASE, T0 + 23)
    assert [a.request.method for a in actions if isinstance(a, SendRequest)] == ["BYE"]
    assert c.stats("north", T0 + 24).answered_15s == 1
