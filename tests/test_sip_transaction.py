"""SIP transactions (RFC 3261 section 17, RFC 6026): every transition of the four state
machines over unreliable and reliable transports, ACK building, matching, and a property
that random inputs never raise and always end in Terminated."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firebox.sip import Request, Response, make_response, parse_message, serialize
from firebox.sip.transaction import (
    CancelTimer,
    ClientInviteTransaction,
    ClientKey,
    ClientNonInviteTransaction,
    Deliver,
    Send,
    ServerInviteTransaction,
    ServerKey,
    ServerNonInviteTransaction,
    StartTimer,
    State,
    Terminated,
    Timeout,
    Timer,
    TimerValues,
    TransactionKeyError,
    TransactionStateError,
    TransactionTable,
    TransportError,
    build_ack,
    cancel_target_key,
    client_key,
    is_reliable,
    server_key,
)

INVITE = (
    b"INVITE sip:psap@psap.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP esrp.example.net:5060;branch=z9hG4bK-esrp-1\r\n"
    b"Via: SIP/2.0/TLS bcf.example.net;branch=z9hG4bK-bcf-1\r\n"
    b"Max-Forwards: 69\r\n"
    b"Route: <sip:proxy1.example.net;lr>\r\n"
    b"Route: <sip:proxy2.example.net;lr>\r\n"
    b"From: <sip:+15085550100@carrier.example.net>;tag=from1\r\n"
    b"To: <urn:service:sos>\r\n"
    b"Call-ID: call-1@carrier.example.net\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:+15085550100@192.0.2.10>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)

OPTIONS = (
    b"OPTIONS sip:psap@psap.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP esrp.example.net:5060;branch=z9hG4bK-opt-1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:esrp@esrp.example.net>;tag=o1\r\n"
    b"To: <sip:psap@psap.example.net>\r\n"
    b"Call-ID: opt-1@esrp.example.net\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

T = TimerValues()


def invite() -> Request:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    return msg


def options() -> Request:
    msg = parse_message(OPTIONS)
    assert isinstance(msg, Request)
    return msg


def resp(request: Request, status: int, tag: str | None = "uas1") -> Response:
    return make_response(request, status, to_tag=tag if status > 100 else None)


def ack_for(request: Request, response: Response) -> Request:
    return build_ack(request, response)


def kinds(events: list[object]) -> list[type]:
    return [type(e) for e in events]


def timers_started(events: list[object]) -> list[tuple[Timer, float]]:
    return [(e.name, e.delay) for e in events if isinstance(e, StartTimer)]


# -- timer values ------------------------------------------------------------------------------


def test_default_timer_values_follow_rfc3261_table_4() -> None:
    assert (T.t1, T.t2, T.t4) == (0.5, 4.0, 5.0)
    unreliable = {t: T.duration(t, reliable=False) for t in Timer}
    assert unreliable == {
        Timer.A: 0.5, Timer.B: 32.0, Timer.C: 180.0, Timer.D: 32.0, Timer.E: 0.5,
        Timer.F: 32.0, Timer.G: 0.5, Timer.H: 32.0, Timer.I: 5.0, Timer.J: 32.0,
        Timer.K: 5.0, Timer.L: 32.0, Timer.M: 32.0,
    }  # fmt: skip
    reliable = {t: T.duration(t, reliable=True) for t in Timer}
    for t in (Timer.A, Timer.E, Timer.G, Timer.D, Timer.I, Timer.J, Timer.K):
        assert reliable[t] == 0.0
    for t in (Timer.B, Timer.F, Timer.H, Timer.L, Timer.M):
        assert reliable[t] == 32.0


def test_timer_values_are_configurable() -> None:
    fast = TimerValues(t1=0.1, t2=1.0, t4=2.0, timer_d=10.0)
    assert fast.duration("B", False) == pytest.approx(6.4)
    assert fast.duration(Timer.K, False) == 2.0
    assert fast.duration(Timer.D, False) == 10.0


@pytest.mark.parametrize(
    ("transport", "reliable"),
    [("UDP", False), ("udp", False), ("TCP", True), ("TLS", True), ("SCTP", True), ("WSS", True)],
)
def test_is_reliable(transport: str, reliable: bool) -> None:
    assert is_reliable(transport) is reliable


# -- INVITE client, RFC 3261 17.1.1 -------------------------------------------------------------


def test_invite_client_start_unreliable_starts_a_and_b() -> None:
    req = invite()
    tx = ClientInviteTransaction(req)
    events = tx.start()
    assert events == [Send(req), StartTimer(Timer.A, 0.5), StartTimer(Timer.B, 32.0)]
    assert tx.state is State.CALLING
    with pytest.raises(TransactionStateError):
        tx.start()


def test_invite_client_start_reliable_has_no_timer_a() -> None:
    req = invite()
    tx = ClientInviteTransaction(req, reliable=True)
    assert tx.start() == [Send(req), StartTimer(Timer.B, 32.0)]
    assert tx.timer(Timer.A) == []  # never started: ignored


def test_invite_client_timer_a_doubles_until_timer_b() -> None:
    req = invite()
    tx = ClientInviteTransaction(req)
    tx.start()
    intervals = []
    for _ in range(6):
        events = tx.timer(Timer.A)
        assert events[0] == Send(req)
        intervals += [d for _, d in timers_started(events)]
    # A doubles without a cap: 1, 2, 4, 8, 16, 32 s (17.1.1.2); 7 sends within Timer B.
    assert intervals == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    events = tx.timer(Timer.B)
    assert events == [Timeout(Timer.B), CancelTimer(Timer.A), Terminated()]
    assert tx.state is State.TERMINATED
    assert tx.timer(Timer.A) == []


def test_invite_client_timer_b_reliable() -> None:
    tx = ClientInviteTransaction(invite(), reliable=True)
    tx.start()
    assert tx.timer("B") == [Timeout(Timer.B), Terminated()]


@pytest.mark.parametrize("reliable", [False, True])
def test_invite_client_provisional_then_proceeding(reliable: bool) -> None:
    req = invite()
    tx = ClientInviteTransaction(req, reliable=reliable)
    tx.start()
    ringing = resp(req, 180)
    events = tx.receive(ringing)
    cancels = [CancelTimer(Timer.B)] if reliable else [CancelTimer(Timer.A), CancelTimer(Timer.B)]
    assert events == [*cancels, Deliver(ringing)]
    assert tx.state is State.PROCEEDING
    assert tx.running == {}
    # More 1xx go up; no retransmission any more.
    assert tx.receive(resp(req, 183)) == [Deliver(resp(req, 183))]
    assert tx.timer(Timer.A) == []
    assert tx.timer(Timer.B) == []


@pytest.mark.parametrize("state", ["calling", "proceeding"])
def test_invite_client_non_2xx_sends_ack_and_waits_timer_d(state: str) -> None:
    req = invite()
    tx = ClientInviteTransaction(req)
    tx.start()
    if state == "proceeding":
        tx.receive(resp(req, 180))
    busy = resp(req, 486)
    events = tx.receive(busy)
    assert tx.state is State.COMPLETED
    sends = [e for e in events if isinstance(e, Send)]
    assert len(sends) == 1 and sends[0].message.method == "ACK"
    assert Deliver(busy) in events
    assert events[-1] == StartTimer(Timer.D, 32.0)
    # The retransmitted 486 is answered with the same ACK and not passed up again.
    assert tx.receive(busy) == [Send(tx.ack)]
    assert tx.receive(resp(req, 180)) == []
    assert tx.receive(resp(req, 200)) == []
    assert tx.timer(Timer.D) == [Terminated()]
    assert tx.state is State.TERMINATED
    assert tx.receive(busy) == []


def test_invite_client_non_2xx_reliable_terminates_at_once() -> None:
    req = invite()
    tx = ClientInviteTransaction(req, reliable=True)
    tx.start()
    busy = resp(req, 503)
    events = tx.receive(busy)
    assert kinds(events) == [CancelTimer, Send, Deliver, Terminated]
    assert tx.state is State.TERMINATED


@pytest.mark.parametrize("reliable", [False, True])
def test_invite_client_2xx_moves_to_accepted_rfc6026(reliable: bool) -> None:
    req = invite()
    tx = ClientInviteTransaction(req, reliable=reliable)
    tx.start()
    ok = resp(req, 200)
    events = tx.receive(ok)
    assert events[-2:] == [Deliver(ok), StartTimer(Timer.M, 32.0)]
    assert not any(isinstance(e, Send) for e in events)  # the TU sends the ACK to a 2xx
    assert tx.state is State.ACCEPTED
    # Retransmitted 2xx (and 2xx from other forks) go up; anything else is absorbed.
    assert tx.receive(ok) == [Deliver(ok)]
    assert tx.receive(resp(req, 486)) == []
    assert tx.receive(resp(req, 180)) == []
    assert tx.transport_error() == []
    assert tx.timer(Timer.M) == [Terminated()]


def test_invite_client_2xx_after_provisional() -> None:
    req = invite()
    tx = ClientInviteTransaction(req)
    tx.start()
    tx.receive(resp(req, 100))
    ok = resp(req, 200)
    assert tx.receive(ok) == [Deliver(ok), StartTimer(Timer.M, 32.0)]


@pytest.mark.parametrize("setup", ["calling", "proceeding", "completed"])
def test_invite_client_transport_error(setup: str) -> None:
    req = invite()
    tx = ClientInviteTransaction(req)
    tx.start()
    if setup == "proceeding":
        tx.receive(resp(req, 180))
    elif setup == "completed":
        tx.receive(resp(req, 500))
    events = tx.transport_error()
    assert events[0] == TransportError()
    assert events[-1] == Terminated()
    assert tx.running == {}
    assert tx.transport_error() == []


def test_invite_client_ignores_requests_and_junk() -> None:
    req = invite()
    tx = ClientInviteTransaction(req)
    tx.start()
    assert tx.receive(req) == []
    assert tx.timer("Z") == []
    assert tx.timer(Timer.K) == []


def test_invite_client_refuses_other_methods() -> None:
    with pytest.raises(ValueError):
        ClientInviteTransaction(options())
    with pytest.raises(ValueError):
        ClientNonInviteTransaction(invite())
    with pytest.raises(ValueError):
        ServerInviteTransaction(options())
    with pytest.raises(ValueError):
        ServerNonInviteTransaction(invite())


# -- ACK, RFC 3261 17.1.1.3 ---------------------------------------------------------------------


def test_ack_for_non_2xx_contents() -> None:
    req = invite()
    busy = resp(req, 486, tag="busy-tag")
    ack = build_ack(req, busy)
    assert ack.method == "ACK"
    assert ack.uri == req.uri
    assert ack.headers.get_all("Via") == ["SIP/2.0/UDP esrp.example.net:5060;branch=z9hG4bK-esrp-1"]
    assert ack.branch == req.branch
    assert ack.call_id == req.call_id
    assert ack.headers.get("From") == req.headers.get("From")
    assert ack.to_tag == "busy-tag"
    assert ack.headers.get("To") == busy.headers.get("To")
    assert ack.cseq == (7, "ACK")
    assert ack.headers.get_all("Route") == [
        "<sip:proxy1.example.net;lr>",
        "<sip:proxy2.example.net;lr>",
    ]
    assert ack.max_forwards == 69
    assert ack.body == b""
    assert "Contact" not in ack.headers
    assert "Content-Type" not in ack.headers
    # It is a well-formed message, and it matches the INVITE's client transaction key.
    again = parse_message(serialize(ack))
    assert again == ack
    assert client_key(ack) == ClientKey("z9hG4bK-esrp-1", "ACK")


def test_invite_client_ack_is_built_from_the_response() -> None:
    req = invite()
    tx = ClientInviteTransaction(req)
    tx.start()
    tx.receive(resp(req, 404, tag="t404"))
    assert tx.ack is not None
    assert tx.ack == build_ack(req, resp(req, 404, tag="t404"))
    assert tx.ack.to_tag == "t404"


# -- non-INVITE client, RFC 3261 17.1.2 ---------------------------------------------------------


def test_non_invite_client_timer_e_doubles_to_t2_then_f() -> None:
    req = options()
    tx = ClientNonInviteTransaction(req)
    assert tx.start() == [Send(req), StartTimer(Timer.E, 0.5), StartTimer(Timer.F, 32.0)]
    assert tx.state is State.TRYING
    intervals = []
    for _ in range(7):
        events = tx.timer(Timer.E)
        assert events[0] == Send(req)
        intervals += [d for _, d in timers_started(events)]
    assert intervals == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert tx.timer(Timer.F) == [Timeout(Timer.F), CancelTimer(Timer.E), Terminated()]


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    req = options()
    tx = ClientNonInviteTransaction(req)
    tx.start()
    trying = resp(req, 100)
    assert tx.receive(trying) == [Deliver(trying)]
    assert tx.state is State.PROCEEDING
    assert tx.timer(Timer.E) == [Send(req), StartTimer(Timer.E, 4.0)]
    assert tx.receive(resp(req, 180)) == [Deliver(resp(req, 180))]
    assert tx.timer(Timer.E) == [Send(req), StartTimer(Timer.E, 4.0)]
    assert tx.timer(Timer.F) == [Timeout(Timer.F), CancelTimer(Timer.E), Terminated()]


@pytest.mark.parametrize("status", [200, 404, 503])
@pytest.mark.parametrize("via_proceeding", [False, True])
def test_non_invite_client_final_then_timer_k(status: int, via_proceeding: bool) -> None:
    req = options()
    tx = ClientNonInviteTransaction(req)
    tx.start()
    if via_proceeding:
        tx.receive(resp(req, 100))
    final = resp(req, status)
    events = tx.receive(final)
    assert events == [
        CancelTimer(Timer.E),
        CancelTimer(Timer.F),
        Deliver(final),
        StartTimer(Timer.K, 5.0),
    ]
    assert tx.state is State.COMPLETED
    assert tx.receive(final) == []  # retransmission absorbed
    assert tx.timer(Timer.E) == []
    assert tx.transport_error() == []
    assert tx.timer(Timer.K) == [Terminated()]


def test_non_invite_client_reliable() -> None:
    req = options()
    tx = ClientNonInviteTransaction(req, reliable=True)
    assert tx.start() == [Send(req), StartTimer(Timer.F, 32.0)]
    ok = resp(req, 200)
    assert tx.receive(ok) == [CancelTimer(Timer.F), Deliver(ok), Terminated()]


@pytest.mark.parametrize("proceeding", [False, True])
def test_non_invite_client_transport_error(proceeding: bool) -> None:
    req = options()
    tx = ClientNonInviteTransaction(req)
    tx.start()
    if proceeding:
        tx.receive(resp(req, 100))
    events = tx.transport_error()
    assert events[0] == TransportError() and events[-1] == Terminated()
    assert tx.state is State.TERMINATED


# -- INVITE server, RFC 3261 17.2.1 -------------------------------------------------------------


def test_invite_server_start_sends_100_and_answers_retransmits() -> None:
    req = invite()
    tx = ServerInviteTransaction(req)
    events = tx.start()
    assert events[0] == Deliver(req)
    assert isinstance(events[1], Send) and events[1].message.status == 100
    assert events[1].message.to_tag is None
    assert tx.state is State.PROCEEDING
    # A retransmitted INVITE gets the last provisional response.
    assert tx.receive(req) == [events[1]]
    ringing = resp(req, 180)
    assert tx.send_response(ringing) == [Send(ringing)]
    assert tx.receive(req) == [Send(ringing)]
    assert tx.state is State.PROCEEDING


def test_invite_server_without_trying_has_nothing_to_resend() -> None:
    req = invite()
    tx = ServerInviteTransaction(req)
    assert tx.start(trying=False) == [Deliver(req)]
    assert tx.receive(req) == []


def test_invite_server_non_2xx_g_doubles_to_t2_h_times_out() -> None:
    req = invite()
    tx = ServerInviteTransaction(req)
    tx.start()
    busy = resp(req, 486)
    assert tx.send_response(busy) == [
        Send(busy),
        StartTimer(Timer.G, 0.5),
        StartTimer(Timer.H, 32.0),
    ]
    assert tx.state is State.COMPLETED
    intervals = []
    for _ in range(6):
        events = tx.timer(Timer.G)
        assert events[0] == Send(busy)
        intervals += [d for _, d in timers_started(events)]
    assert intervals == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert tx.receive(req) == [Send(busy)]  # retransmitted INVITE gets the final again
    with pytest.raises(TransactionStateError):
        tx.send_response(resp(req, 200))
    assert tx.timer(Timer.H) == [Timeout(Timer.H), CancelTimer(Timer.G), Terminated()]


def test_invite_server_ack_confirms_then_timer_i() -> None:
    req = invite()
    tx = ServerInviteTransaction(req)
    tx.start()
    busy = resp(req, 603)
    tx.send_response(busy)
    ack = build_ack(req, busy)
    assert server_key(ack) == server_key(req)
    events = tx.receive(ack)
    assert events == [CancelTimer(Timer.G), CancelTimer(Timer.H), StartTimer(Timer.I, 5.0)]
    assert tx.state is State.CONFIRMED
    # ACK and INVITE retransmissions are absorbed.
    assert tx.receive(ack) == []
    assert tx.receive(req) == []
    assert tx.timer(Timer.G) == []
    assert tx.timer(Timer.I) == [Terminated()]


def test_invite_server_reliable_no_g_and_no_i() -> None:
    req = invite()
    tx = ServerInviteTransaction(req, reliable=True)
    tx.start()
    busy = resp(req, 480)
    assert tx.send_response(busy) == [Send(busy), StartTimer(Timer.H, 32.0)]
    assert tx.receive(build_ack(req, busy)) == [CancelTimer(Timer.H), Terminated()]


def test_invite_server_2xx_accepted_rfc6026() -> None:
    req = invite()
    tx = ServerInviteTransaction(req)
    tx.start()
    ok = resp(req, 200)
    assert tx.send_response(ok) == [Send(ok), StartTimer(Timer.L, 32.0)]
    assert tx.state is State.ACCEPTED
    assert tx.send_response(ok) == [Send(ok)]  # the TU retransmits its 2xx
    assert tx.receive(req) == []  # retransmitted INVITE absorbed
    ack = Request("ACK", req.uri, req.headers.copy())
    ack.headers.set("CSeq", "7 ACK")
    assert tx.receive(ack) == [Deliver(ack)]
    with pytest.raises(TransactionStateError):
        tx.send_response(resp(req, 180))
    with pytest.raises(TransactionStateError):
        tx.send_response(resp(req, 500))
    assert tx.timer(Timer.L) == [Terminated()]


@pytest.mark.parametrize("setup", ["proceeding", "completed"])
def test_invite_server_transport_error(setup: str) -> None:
    req = invite()
    tx = ServerInviteTransaction(req)
    tx.start()
    if setup == "completed":
        tx.send_response(resp(req, 500))
    events = tx.transport_error()
    assert events[0] == TransportError() and events[-1] == Terminated()
    assert tx.running == {}


def test_server_send_response_validates_status() -> None:
    tx = ServerInviteTransaction(invite())
    tx.start()
    bad = resp(invite(), 180)
    bad.status = 99
    with pytest.raises(ValueError):
        tx.send_response(bad)


def test_server_ignores_responses_and_other_methods() -> None:
    req = invite()
    tx = ServerInviteTransaction(req)
    tx.start(trying=False)
    assert tx.receive(resp(req, 200)) == []
    bye = Request("BYE", req.uri, req.headers.copy())
    assert tx.receive(bye) == []
    assert tx.receive(Request("ACK", req.uri, req.headers.copy())) == []  # ACK in Proceeding


# -- non-INVITE server, RFC 3261 17.2.2 ---------------------------------------------------------


def test_non_invite_server_trying_absorbs_then_proceeding_resends() -> None:
    req = options()
    tx = ServerNonInviteTransaction(req)
    assert tx.start() == [Deliver(req)]
    assert tx.state is State.TRYING
    assert tx.receive(req) == []
    trying = resp(req, 100)
    assert tx.send_response(trying) == [Send(trying)]
    assert tx.state is State.PROCEEDING
    assert tx.receive(req) == [Send(trying)]
    ok = resp(req, 200)
    assert tx.send_response(ok) == [Send(ok), StartTimer(Timer.J, 32.0)]
    assert tx.state is State.COMPLETED
    assert tx.receive(req) == [Send(ok)]
    with pytest.raises(TransactionStateError):
        tx.send_response(ok)
    assert tx.timer(Timer.J) == [Terminated()]


def test_non_invite_server_final_from_trying_reliable() -> None:
    req = options()
    tx = ServerNonInviteTransaction(req, reliable=True)
    tx.start()
    nf = resp(req, 404)
    assert tx.send_response(nf) == [Send(nf), Terminated()]
    assert tx.state is State.TERMINATED
    assert tx.receive(req) == []


@pytest.mark.parametrize("setup", ["trying", "proceeding", "completed"])
def test_non_invite_server_transport_error(setup: str) -> None:
    req = options()
    tx = ServerNonInviteTransaction(req)
    tx.start()
    if setup == "proceeding":
        tx.send_response(resp(req, 100))
    elif setup == "completed":
        tx.send_response(resp(req, 200))
    events = tx.transport_error()
    assert events[0] == TransportError() and events[-1] == Terminated()


# -- matching, RFC 3261 17.1.3, 17.2.3, 9.2 -----------------------------------------------------


def cancel_of(req: Request) -> Request:
    """A CANCEL as 9.1 builds it: same Request-URI, Call-ID, From, To, top Via, CSeq number."""
    cancel = Request("CANCEL", req.uri)
    cancel.headers.add("Via", req.headers.get("Via") or "")
    cancel.headers.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        cancel.headers.add(name, req.headers.get(name) or "")
    cancel.headers.add("CSeq", f"{req.cseq[0]} CANCEL")
    return cancel


def test_client_key_branch_and_method() -> None:
    req = invite()
    assert client_key(req) == ClientKey("z9hG4bK-esrp-1", "INVITE")
    assert client_key(resp(req, 180)) == client_key(req)
    cancel = cancel_of(req)
    assert client_key(cancel) == ClientKey("z9hG4bK-esrp-1", "CANCEL")
    assert client_key(make_response(cancel, 200)) != client_key(req)


def test_server_key_sent_by_and_method() -> None:
    req = invite()
    key = server_key(req)
    assert key == ServerKey("z9hG4bK-esrp-1", "esrp.example.net", 5060, "INVITE")
    other_host = invite()
    other_host.headers.pop_first("Via")
    other_host.headers.insert_first(
        "Via", "SIP/2.0/UDP other.example.net:5060;branch=z9hG4bK-esrp-1"
    )
    assert server_key(other_host) != key
    # The port defaults by transport; the host compares case-insensitively.
    tls = invite()
    tls.headers.pop_first("Via")
    tls.headers.insert_first("Via", "SIP/2.0/TLS ESRP.example.net;branch=z9hG4bK-x")
    assert server_key(tls) == ServerKey("z9hG4bK-x", "esrp.example.net", 5061, "INVITE")


def test_cancel_matches_the_invite_server_transaction() -> None:
    req = invite()
    cancel = cancel_of(req)
    assert server_key(cancel).method == "CANCEL"
    assert cancel_target_key(cancel) == server_key(req)
    table = TransactionTable()
    inv_tx = ServerInviteTransaction(req)
    table.add(inv_tx)
    cancel_tx = ServerNonInviteTransaction(cancel)
    assert table.find_server(cancel) is None  # a CANCEL is a new transaction
    table.add(cancel_tx)
    assert table.find_server(cancel) is cancel_tx
    assert table.find_cancelled(cancel) is inv_tx
    assert table.find_server(req) is inv_tx
    assert table.find_server(build_ack(req, resp(req, 486))) is inv_tx
    # A CANCEL with another branch does not match (RFC 3261 9.2).
    stray = cancel_of(req)
    stray.headers.set("Via", "SIP/2.0/UDP esrp.example.net:5060;branch=z9hG4bK-other")
    assert table.find_cancelled(stray) is None


def test_rfc2543_branch_is_a_clear_error() -> None:
    req = invite()
    req.headers.pop_first("Via")
    req.headers.insert_first("Via", "SIP/2.0/UDP old.example.net;branch=1234")
    with pytest.raises(TransactionKeyError, match="RFC 2543"):
        server_key(req)
    with pytest.raises(TransactionKeyError):
        client_key(req)
    nobranch = invite()
    nobranch.headers.pop_first("Via")
    nobranch.headers.insert_first("Via", "SIP/2.0/UDP old.example.net")
    with pytest.raises(TransactionKeyError):
        server_key(nobranch)
    table = TransactionTable()
    assert table.find_client(resp(req, 200)) is None


def test_table_add_find_remove() -> None:
    table = TransactionTable()
    req = invite()
    client = ClientInviteTransaction(req)
    key = table.add(client)
    assert key == client_key(req) and key in table and len(table) == 1
    with pytest.raises(TransactionKeyError):
        table.add(ClientInviteTransaction(invite()))
    assert table.find_client(resp(req, 180)) is client
    cancel_resp = make_response(cancel_of(req), 200)
    assert table.find_client(cancel_resp) is None
    server = ServerInviteTransaction(invite())
    table.add(server)  # same branch, but a server key: no collision
    assert len(table) == 2
    assert table.get(server_key(req)) is server
    table.discard(server)
    assert table.remove(key) is client
    assert len(table) == 0
    assert table.remove(key) is None


# -- properties ------------------------------------------------------------------------------

NETWORK_STATUSES = [100, 180, 183, 200, 202, 302, 404, 408, 486, 487, 500, 503, 603]
_inputs = st.one_of(
    st.tuples(st.just("response"), st.sampled_from(NETWORK_STATUSES)),
    st.tuples(st.just("timer"), st.sampled_from([*Timer, "X"])),
    st.tuples(st.just("transport"), st.just(None)),
    st.tuples(st.just("request"), st.sampled_from(["same", "ACK", "BYE"])),
    st.tuples(st.just("tu"), st.sampled_from([100, 180, 200, 404, 500])),
)


def _feed(tx, step, req: Request) -> list[object]:  # type: ignore[no-untyped-def]
    kind, value = step
    if kind == "response":
        return tx.receive(resp(req, value))
    if kind == "timer":
        return tx.timer(value)
    if kind == "transport":
        return tx.transport_error()
    if kind == "request":
        if value == "same":
            return tx.receive(req)
        other = Request(value, req.uri, req.headers.copy())
        other.headers.set("CSeq", f"{req.cseq[0]} {value}")
        return tx.receive(other)
    if not hasattr(tx, "send_response"):
        return []
    state = tx.state
    try:
        return tx.send_response(resp(req, value))
    except TransactionStateError:
        assert tx.state is state  # a refused TU response changes nothing
        return []


def _drain(tx, req: Request) -> None:  # type: ignore[no-untyped-def]
    """Finish the transaction the way the world would: a final response (client) or a final
    response from the TU (server), then fire every running timer until none is left."""
    if tx.state is not State.TERMINATED:
        if isinstance(tx, ClientInviteTransaction | ClientNonInviteTransaction):
            if tx.state in (State.CALLING, State.TRYING, State.PROCEEDING):
                tx.receive(resp(req, 486))
        elif tx.state in (State.TRYING, State.PROCEEDING):
            tx.send_response(resp(req, 486))
    for _ in range(100):
        if not tx.running:
            break
        name = next(iter(tx.running))
        tx.timer(name)
    assert tx.running == {}
    assert tx.state is State.TERMINATED


def _check_timer_events(events: list[object]) -> None:
    for event in events:
        assert isinstance(
            event, Send | StartTimer | CancelTimer | Deliver | Timeout | TransportError | Terminated
        )
        if isinstance(event, StartTimer):
            assert event.delay > 0


@pytest.mark.parametrize(
    "cls", [ClientInviteTransaction, ClientNonInviteTransaction, ServerInviteTransaction,
            ServerNonInviteTransaction],
)  # fmt: skip
@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_inputs, max_size=25), reliable=st.booleans())
def test_random_inputs_never_raise_and_always_terminate(cls, steps, reliable) -> None:  # type: ignore[no-untyped-def]
    req = invite() if cls in (ClientInviteTransaction, ServerInviteTransaction) else options()
    tx = cls(req, reliable=reliable)
    _check_timer_events(tx.start())
    terminated_seen = 0
    for step in steps:
        events = _feed(tx, step, req)
        _check_timer_events(events)
        terminated_seen += events.count(Terminated())
        if tx.state is State.TERMINATED:
            assert tx.running == {}
    assert terminated_seen <= 1
    _drain(tx, req)
    # After Terminated nothing happens any more.
    for step in steps:
        assert _feed(tx, step, req) == []
