"""Serial-failover stateful proxy core (RFC 3261 section 16) over scripted exchanges; time
is an input (timers are fired by name), nothing waits."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firebox.sip import Request, Response, make_response, parse_message, serialize
from firebox.sip.proxy import (
    CancelTimer,
    Done,
    Failover,
    Forward,
    Outcome,
    ProxyCall,
    SendAck,
    SendCancel,
    SendUpstream,
    StartTimer,
    Target,
    best_response,
    new_branch,
)
from firebox.sip.transaction import TimerValues

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"

INVITE = (
    b"INVITE urn:service:sos SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS bcf.example.net:5061;branch=z9hG4bK-bcf-1\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-ue-1;rport\r\n"
    b"Max-Forwards: 69\r\n"
    b"Route: <sip:downstream-proxy.example.net;lr>\r\n"
    b"To: <urn:service:sos>\r\n"
    b'From: "Caller" <sip:+15085550100@carrier.example.net>;tag=caller1\r\n'
    b"Call-ID: esrp-call-1@carrier.example.net\r\n"
    b"CSeq: 31862 INVITE\r\n"
    b"Contact: <sip:+15085550100@192.0.2.10:5061;transport=tls>\r\n"
    b"Geolocation: <cid:target123@carrier.example.net>\r\n"
    b"Resource-Priority: esnet.1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n" % len(SDP)
) + SDP

QUEUE_A = Target("sip:queue-a@psap-a.example.net")
QUEUE_B = Target("sip:queue-b@psap-b.example.net")
BUSINESS = Target("sip:+15085551234@pbx.example.net", rewrite_uri=True)


def invite() -> Request:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    return msg


def branches():  # type: ignore[no-untyped-def]
    counter = itertools.count(1)
    return lambda: f"z9hG4bK-esrp-{next(counter)}"


def call(targets=(QUEUE_A, QUEUE_B, BUSINESS), **kw) -> ProxyCall:  # type: ignore[no-untyped-def]
    kw.setdefault("transport", "TCP")
    return ProxyCall(
        invite(), list(targets), "esrp.example.net", 5061, branch_factory=branches(), **kw
    )


def of(events: list[object], cls: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, cls)]


def forwarded(events: list[object]) -> Forward:
    fwd = [e for e in of(events, Forward) if not e.retransmission]
    assert len(fwd) == 1, events
    return fwd[0]


def upstream(events: list[object]) -> list[Response]:
    return [e.response for e in of(events, SendUpstream)]


def answer(fwd: Forward, status: int, tag: str = "psap") -> Response:
    return make_response(fwd.request, status, to_tag=tag if status > 100 else None)


# -- the forwarded request, RFC 3261 16.6 -------------------------------------------------------


def test_forwarded_request_headers() -> None:
    proxy = call()
    events = proxy.start(now=100.0)
    orig = invite()
    trying = upstream(events)[0]
    assert trying.status == 100 and trying.to_tag is None
    assert trying.headers.get_all("Via") == orig.headers.get_all("Via")
    fwd = forwarded(events)
    req = fwd.request
    assert fwd.target == QUEUE_A and fwd.branch == "z9hG4bK-esrp-1"
    assert req.method == "INVITE"
    assert req.uri == "urn:service:sos"  # Request-URI unchanged: the NG911 way
    assert req.headers.get_all("Via") == [
        "SIP/2.0/TCP esrp.example.net:5061;branch=z9hG4bK-esrp-1",
        *orig.headers.get_all("Via"),
    ]
    assert req.max_forwards == 68
    assert req.headers.get_all("Route") == [
        "<sip:queue-a@psap-a.example.net;lr>",
        "<sip:downstream-proxy.example.net;lr>",
    ]
    assert req.body == orig.body
    # Every other header is kept, in order.
    skip = {"Via", "Route", "Max-Forwards"}
    assert [h for h in req.headers.items() if h[0] not in skip] == [
        h for h in orig.headers.items() if h[0] not in skip
    ]
    assert [n for n, _ in req.headers.items()][:3] == ["Via", "Via", "Via"]
    # The original request is untouched, and the copy survives the wire.
    assert orig == invite()
    assert proxy.request == invite()
    assert parse_message(serialize(req)) == req
    assert of(events, StartTimer) == [
        StartTimer("z9hG4bK-esrp-1/INVITE/B", 32.0),
        StartTimer("z9hG4bK-esrp-1/1xx", 0.5),
        StartTimer("z9hG4bK-esrp-1/C", 180.0),
    ]


def test_target_may_rewrite_request_uri_and_add_outbound_route() -> None:
    target = Target("sip:+15085551234@pbx.example.net", route="sip:sbc.example.net",
                    rewrite_uri=True)  # fmt: skip
    proxy = call([target])
    req = forwarded(proxy.start()).request
    assert req.uri == "sip:+15085551234@pbx.example.net"
    assert req.headers.get_all("Route") == [
        "<sip:sbc.example.net;lr>",
        "<sip:downstream-proxy.example.net;lr>",
    ]


def test_route_lr_not_doubled_and_max_forwards_added_when_absent() -> None:
    req = invite()
    req.headers.remove("Max-Forwards")
    proxy = ProxyCall(req, [Target("sip:q@psap.example.net;lr")], "esrp.example.net",
                      branch_factory=branches(), record_route="sip:esrp.example.net")  # fmt: skip
    fwd = forwarded(proxy.start()).request
    assert fwd.headers.get("Route") == "<sip:q@psap.example.net;lr>"
    assert fwd.max_forwards == 70 and fwd.headers.get("Max-Forwards") == "70"
    assert fwd.headers.get("Record-Route") == "<sip:esrp.example.net;lr>"
    assert fwd.headers.get("Via") == "SIP/2.0/UDP esrp.example.net;branch=z9hG4bK-esrp-1"


@pytest.mark.parametrize(("max_forwards", "forwards"), [("0", False), ("1", True)])
def test_max_forwards_zero_is_483(max_forwards: str, forwards: bool) -> None:
    req = invite()
    req.headers.set("Max-Forwards", max_forwards)
    proxy = ProxyCall(req, [QUEUE_A], "esrp.example.net", branch_factory=branches())
    events = proxy.start()
    if forwards:
        assert forwarded(events).request.max_forwards == 0
        return
    assert of(events, Forward) == []
    (resp,) = upstream(events)
    assert resp.status == 483 and resp.to_tag == proxy.tag
    assert of(events, Done) == [Done(Outcome.REJECTED, 483, None, None)]
    assert proxy.finished


def test_branch_factory_gets_magic_cookie_and_default_is_unique() -> None:
    proxy = ProxyCall(invite(), [QUEUE_A], "esrp.example.net", branch_factory=lambda: "abc")
    assert forwarded(proxy.start()).branch == "z9hG4bKabc"
    assert new_branch().startswith("z9hG4bK") and new_branch() != new_branch()


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        ProxyCall(invite(), [], "esrp.example.net")
    bye = Request("BYE", "sip:x@y", invite().headers.copy())
    with pytest.raises(ValueError):
        ProxyCall(bye, [QUEUE_A], "esrp.example.net")
    proxy = call()
    proxy.start()
    with pytest.raises(RuntimeError):
        proxy.start()


# -- answered -------------------------------------------------------------------------------


def test_straight_200() -> None:
    proxy = call()
    fwd = forwarded(proxy.start(now=0.0))
    events = proxy.receive_response(answer(fwd, 100), now=0.1)
    assert events == [CancelTimer("z9hG4bK-esrp-1/INVITE/B"), CancelTimer("z9hG4bK-esrp-1/1xx")]
    events = proxy.receive_response(answer(fwd, 180), now=0.2)
    (ringing,) = upstream(events)
    assert ringing.status == 180
    assert ringing.headers.get_all("Via") == invite().headers.get_all("Via")  # our Via removed
    assert StartTimer("z9hG4bK-esrp-1/C", 180.0) in events  # Timer C reset by a 1xx (16.7)
    ok = answer(fwd, 200)
    ok.body = SDP
    events = proxy.receive_response(ok, now=5.0)
    (relayed,) = upstream(events)
    assert relayed.status == 200 and relayed.body == SDP and relayed.to_tag == "psap"
    assert relayed.headers.get_all("Via") == invite().headers.get_all("Via")
    assert of(events, Done) == [Done(Outcome.ANSWERED, 200, QUEUE_A, 5.0)]
    assert CancelTimer("z9hG4bK-esrp-1/C") in events
    assert proxy.done and not proxy.finished  # Timer M still runs (RFC 6026)
    # A retransmitted 2xx is relayed too (16.7 step 5); the ACK is end to end.
    again = proxy.receive_response(ok)
    assert [r.status for r in upstream(again)] == [200]
    assert of(again, SendAck) == []
    proxy.timer("z9hG4bK-esrp-1/INVITE/M")
    assert proxy.finished


# -- failover --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 486, 408, 500, 480, 404, 302, 603])
def test_final_non_2xx_fails_over_to_next_target(status: int) -> None:
    proxy = call()
    fwd1 = forwarded(proxy.start(now=0.0))
    proxy.receive_response(answer(fwd1, 100))
    events = proxy.receive_response(answer(fwd1, status), now=1.0)
    assert upstream(events) == []  # not relayed while targets remain
    (ack,) = of(events, SendAck)
    assert ack.branch == "z9hG4bK-esrp-1" and ack.request.cseq == (31862, "ACK")
    assert ack.request.to_tag == "psap"
    (failover,) = of(events, Failover)
    assert failover.from_target == QUEUE_A and failover.to_target == QUEUE_B
    assert failover.status == status and failover.at == 1.0
    assert failover.reason.startswith(str(status))
    fwd2 = forwarded(events)
    assert fwd2.target == QUEUE_B and fwd2.branch == "z9hG4bK-esrp-2"
    assert fwd2.request.headers.get("Route") == "<sip:queue-b@psap-b.example.net;lr>"
    assert fwd2.request.max_forwards == 68
    assert of(events, SendCancel) == []  # the failed branch is over: nothing to cancel
    # The second target answers.
    events = proxy.receive_response(answer(fwd2, 200, tag="b"))
    assert [r.status for r in upstream(events)] == [200]
    assert of(events, Done) == [Done(Outcome.ANSWERED, 200, QUEUE_B, 1.0)]


def test_provisional_then_480_fails_over_without_cancel() -> None:
    proxy = call()
    fwd1 = forwarded(proxy.start())
    events = proxy.receive_response(answer(fwd1, 180))
    assert [r.status for r in upstream(events)] == [180]
    events = proxy.receive_response(answer(fwd1, 480))
    assert of(events, SendCancel) == []
    assert forwarded(events).target == QUEUE_B


def test_silence_fails_over_at_no_provisional_timeout() -> None:
    proxy = call()
    fwd1 = forwarded(proxy.start(now=0.0))
    events = proxy.timer("z9hG4bK-esrp-1/1xx", now=0.5)
    (failover,) = of(events, Failover)
    assert failover.status == 408 and "no provisional response within 0.5 s" in failover.reason
    assert failover.to_target == QUEUE_B
    assert forwarded(events).target == QUEUE_B
    assert of(events, SendCancel) == []  # no CANCEL before a provisional (RFC 3261 9.1)
    assert CancelTimer("z9hG4bK-esrp-1/C") in events
    # A late 180 on the abandoned branch: CANCEL it now, do not relay it.
    events = proxy.receive_response(answer(fwd1, 180))
    (cancel,) = of(events, SendCancel)
    assert cancel.branch == "z9hG4bK-esrp-1"
    assert cancel.request.method == "CANCEL" and cancel.request.uri == fwd1.request.uri
    assert cancel.request.branch == fwd1.branch and cancel.request.cseq == (31862, "CANCEL")
    assert cancel.request.headers.get_all("Route") == fwd1.request.headers.get_all("Route")
    assert upstream(events) == []
    # Its 487 is ACKed by the transaction and absorbed.
    events = proxy.receive_response(answer(fwd1, 487))
    assert upstream(events) == [] and len(of(events, SendAck)) == 1
    events = proxy.receive_response(make_response(cancel.request, 200, to_tag="psap"))
    assert events == [CancelTimer("z9hG4bK-esrp-1/CANCEL/F")]  # TCP: Timer K is zero


def test_no_provisional_timeout_is_configurable_and_can_be_disabled() -> None:
    proxy = call(no_provisional_timeout=2.0)
    assert StartTimer("z9hG4bK-esrp-1/1xx", 2.0) in proxy.start()
    proxy = call(no_provisional_timeout=0)
    assert not any(e.name.endswith("/1xx") for e in of(proxy.start(), StartTimer))


def test_timer_b_fails_over_over_udp() -> None:
    proxy = call(transport="UDP", no_provisional_timeout=0)
    events = proxy.start()
    assert StartTimer("z9hG4bK-esrp-1/INVITE/A", 0.5) in events
    events = proxy.timer("z9hG4bK-esrp-1/INVITE/A")
    (retrans,) = of(events, Forward)
    assert retrans.retransmission and retrans.target == QUEUE_A
    assert StartTimer("z9hG4bK-esrp-1/INVITE/A", 1.0) in events
    events = proxy.timer("z9hG4bK-esrp-1/INVITE/B")
    (failover,) = of(events, Failover)
    assert failover.status == 408 and "Timer B" in failover.reason
    assert forwarded(events).target == QUEUE_B


def test_transport_error_fails_over_as_503() -> None:
    proxy = call()
    proxy.start()
    events = proxy.transport_error("z9hG4bK-esrp-1")
    (failover,) = of(events, Failover)
    assert failover.status == 503 and failover.reason == "transport error"
    assert forwarded(events).target == QUEUE_B
    assert proxy.transport_error("z9hG4bK-nope") == []


def test_timer_c_after_provisional_cancels_and_fails_over() -> None:
    proxy = call()
    fwd1 = forwarded(proxy.start())
    proxy.receive_response(answer(fwd1, 180))
    events = proxy.timer("z9hG4bK-esrp-1/C")
    (cancel,) = of(events, SendCancel)
    assert cancel.branch == "z9hG4bK-esrp-1"
    assert of(events, Failover)[0].reason == "Timer C"
    assert forwarded(events).target == QUEUE_B


def test_all_fail_best_response_upstream() -> None:
    proxy = call()
    fwd1 = forwarded(proxy.start())
    fwd2 = forwarded(proxy.receive_response(answer(fwd1, 503)))
    fwd3 = forwarded(proxy.receive_response(answer(fwd2, 486, tag="busy")))
    events = proxy.receive_response(answer(fwd3, 500))
    (failover,) = of(events, Failover)
    assert failover.from_target == BUSINESS and failover.to_target is None
    (final,) = upstream(events)
    # 16.7 step 6: the lowest class wins: 486 over 503 and 500; relayed without our Via.
    assert final.status == 486 and final.to_tag == "busy"
    assert final.headers.get_all("Via") == invite().headers.get_all("Via")
    assert of(events, Done) == [Done(Outcome.FAILED, 486, QUEUE_B, None)]


def test_all_fail_only_503_becomes_500() -> None:
    proxy = call([QUEUE_A])
    fwd = forwarded(proxy.start())
    events = proxy.receive_response(answer(fwd, 503))
    (final,) = upstream(events)
    assert final.status == 500 and final.to_tag == proxy.tag
    assert of(events, Done) == [Done(Outcome.FAILED, 500, None, None)]


def test_all_silent_gives_local_408() -> None:
    proxy = call([QUEUE_A, QUEUE_B])
    proxy.start()
    proxy.timer("z9hG4bK-esrp-1/1xx")
    events = proxy.timer("z9hG4bK-esrp-2/1xx")
    (final,) = upstream(events)
    assert final.status == 408 and final.to_tag == proxy.tag
    assert of(events, Done) == [Done(Outcome.FAILED, 408, None, None)]
    # Both abandoned branches still run their transactions until Timer B.
    assert not proxy.finished
    proxy.timer("z9hG4bK-esrp-1/INVITE/B")
    proxy.timer("z9hG4bK-esrp-2/INVITE/B")
    assert proxy.finished


def test_late_2xx_from_abandoned_branch_wins() -> None:
    proxy = call()
    fwd1 = forwarded(proxy.start())
    events = proxy.timer("z9hG4bK-esrp-1/1xx")
    fwd2 = forwarded(events)
    proxy.receive_response(answer(fwd2, 180))
    events = proxy.receive_response(answer(fwd1, 200, tag="late"))
    (ok,) = upstream(events)
    assert ok.status == 200 and ok.to_tag == "late"
    (cancel,) = of(events, SendCancel)
    assert cancel.branch == fwd2.branch  # the other pending branch is cancelled
    assert of(events, Done) == [Done(Outcome.ANSWERED, 200, QUEUE_A, None)]
    # The cancelled branch's 487 is not relayed.
    assert upstream(proxy.receive_response(answer(fwd2, 487))) == []


# -- CANCEL, RFC 3261 16.10 ----------------------------------------------------------------


def upstream_cancel() -> Request:
    orig = invite()
    cancel = Request("CANCEL", orig.uri)
    cancel.headers.add("Via", orig.headers.get("Via") or "")
    cancel.headers.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        cancel.headers.add(name, orig.headers.get(name) or "")
    cancel.headers.add("CSeq", "31862 CANCEL")
    return cancel


def test_cancel_before_answer() -> None:
    proxy = call()
    fwd = forwarded(proxy.start())
    proxy.receive_response(answer(fwd, 180))
    events = proxy.cancel(upstream_cancel(), now=3.0)
    (ok,) = upstream(events)
    assert ok.status == 200 and ok.cseq == (31862, "CANCEL")
    (cancel,) = of(events, SendCancel)
    assert cancel.branch == fwd.branch and cancel.request.method == "CANCEL"
    assert cancel.request.headers.get("Via") == fwd.request.headers.get("Via")
    assert StartTimer("cancel", 32.0) in events
    assert of(events, Forward) == [] and of(events, Done) == []
    # The branch answers 487: ACK it, 487 upstream, no next target.
    events = proxy.receive_response(answer(fwd, 487))
    assert len(of(events, SendAck)) == 1
    (final,) = upstream(events)
    assert final.status == 487
    assert of(events, Forward) == []
    assert of(events, Done) == [Done(Outcome.CANCELLED, 487, None, 3.0)]
    assert CancelTimer("cancel") in events
    # The 200 to our CANCEL is absorbed; a second upstream CANCEL only gets its 200.
    events = proxy.receive_response(make_response(cancel.request, 200))
    assert events == [CancelTimer(f"{fwd.branch}/CANCEL/F")]
    assert proxy.finished
    again = proxy.cancel(upstream_cancel())
    assert [r.status for r in upstream(again)] == [200] and len(again) == 1


def test_cancel_before_provisional_waits_for_one() -> None:
    proxy = call()
    fwd = forwarded(proxy.start())
    events = proxy.cancel(upstream_cancel())
    assert of(events, SendCancel) == []  # RFC 3261 9.1: not before a provisional
    assert CancelTimer(f"{fwd.branch}/1xx") in events  # no failover after a CANCEL
    assert proxy.timer(f"{fwd.branch}/1xx") == []
    events = proxy.receive_response(answer(fwd, 100))
    assert len(of(events, SendCancel)) == 1
    assert upstream(events) == []


def test_cancel_then_timeout_sends_487_locally() -> None:
    proxy = call()
    fwd = forwarded(proxy.start())
    proxy.receive_response(answer(fwd, 180))
    proxy.cancel(upstream_cancel())
    events = proxy.timer("cancel")
    (final,) = upstream(events)
    assert final.status == 487 and final.to_tag == proxy.tag
    assert of(events, Done)[0].outcome is Outcome.CANCELLED
    # The branch's late 487 is then just ACKed.
    events = proxy.receive_response(answer(fwd, 487))
    assert upstream(events) == [] and len(of(events, SendAck)) == 1


def test_cancel_races_with_200() -> None:
    proxy = call()
    fwd = forwarded(proxy.start())
    proxy.receive_response(answer(fwd, 180))
    proxy.cancel(upstream_cancel())
    events = proxy.receive_response(answer(fwd, 200))
    assert [r.status for r in upstream(events)] == [200]
    assert of(events, Done)[0].outcome is Outcome.ANSWERED


def test_cancel_after_final_only_answers_200() -> None:
    proxy = call()
    fwd = forwarded(proxy.start())
    proxy.receive_response(answer(fwd, 200))
    events = proxy.cancel(upstream_cancel())
    assert [type(e) for e in events] == [SendUpstream]
    with pytest.raises(ValueError):
        proxy.cancel(invite())
    other = upstream_cancel()
    other.headers.set("Call-ID", "another-call")
    with pytest.raises(ValueError, match="not for this call"):
        proxy.cancel(other)


def test_cancel_with_timer_b_and_no_provisional() -> None:
    proxy = call(transport="UDP")
    proxy.start()
    proxy.cancel(upstream_cancel())
    events = proxy.timer("z9hG4bK-esrp-1/INVITE/B")
    assert [r.status for r in upstream(events)] == [487]
    assert of(events, Forward) == []


# -- odds and ends ---------------------------------------------------------------------------


def test_unmatched_responses_and_timers_are_ignored() -> None:
    proxy = call()
    fwd = forwarded(proxy.start())
    stray = answer(fwd, 200)
    stray.headers.set("Via", "SIP/2.0/TCP esrp.example.net:5061;branch=z9hG4bK-other")
    assert proxy.receive_response(stray) == []
    bye_resp = answer(fwd, 200)
    bye_resp.headers.set("CSeq", "31862 BYE")
    assert proxy.receive_response(bye_resp) == []
    assert proxy.receive_response(make_response(upstream_cancel(), 200)) == []
    assert proxy.timer("nonsense") == []
    assert proxy.timer("z9hG4bK-nope/INVITE/A") == []
    assert proxy.timer("z9hG4bK-esrp-1/CANCEL/E") == []
    assert proxy.timer("z9hG4bK-esrp-1/INVITE/A") == []  # TCP: never started
    assert proxy.timer("cancel") == []
    broken = answer(fwd, 180)
    broken.headers.remove("CSeq")
    assert proxy.receive_response(broken) == []


def test_best_response_rules() -> None:
    req = invite()

    def r(status: int) -> Response:
        return make_response(req, status, to_tag="t")

    assert best_response([]) is None
    assert best_response([r(503), r(486), r(603)]).status == 603
    assert best_response([r(503), r(486), r(404)]).status == 486
    assert best_response([r(503), r(404), r(407)]).status == 407
    assert best_response([r(302), r(486)]).status == 302
    assert best_response([r(500), r(503)]).status == 500


def test_fast_timers_are_used_for_branch_transactions() -> None:
    proxy = call(transport="UDP", timers=TimerValues(t1=0.1), cancel_timeout=1.0)
    events = proxy.start()
    assert StartTimer("z9hG4bK-esrp-1/INVITE/A", 0.1) in events
    assert StartTimer("z9hG4bK-esrp-1/INVITE/B", pytest.approx(6.4)) in events


# -- property ----------------------------------------------------------------------------------

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("resp"), st.integers(0, 3), st.sampled_from(
            [100, 180, 183, 200, 302, 404, 408, 480, 486, 487, 500, 503, 603])),
        st.tuples(st.just("timer"), st.integers(0, 3), st.sampled_from(
            ["1xx", "C", "INVITE/A", "INVITE/B", "INVITE/D", "INVITE/M", "CANCEL/E",
             "CANCEL/F", "CANCEL/K"])),
        st.tuples(st.just("cancel"), st.just(0), st.just(0)),
        st.tuples(st.just("cancel-timer"), st.just(0), st.just(0)),
        st.tuples(st.just("transport"), st.integers(0, 3), st.just(0)),
    ),
    max_size=30,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(steps=_steps, udp=st.booleans())
def test_random_exchanges_never_raise_and_end_once(steps, udp) -> None:  # type: ignore[no-untyped-def]
    proxy = call(transport="UDP" if udp else "TCP")
    events = proxy.start()
    sent: list[Forward] = [forwarded(events)]
    all_events = list(events)
    for kind, index, value in steps:
        if kind == "resp":
            if index >= len(sent):
                continue
            out = proxy.receive_response(answer(sent[index], value))
        elif kind == "timer":
            branch = f"z9hG4bK-esrp-{index + 1}"
            out = proxy.timer(f"{branch}/{value}")
        elif kind == "cancel":
            out = proxy.cancel(upstream_cancel())
        elif kind == "cancel-timer":
            out = proxy.timer("cancel")
        else:
            out = proxy.transport_error(f"z9hG4bK-esrp-{index + 1}")
        sent += [e for e in of(out, Forward) if not e.retransmission]
        all_events += out
    # The world finishes the call: every branch gets a final answer, every timer fires.
    for fwd in list(sent):
        out = proxy.receive_response(answer(fwd, 486))
        sent += [e for e in of(out, Forward) if not e.retransmission]
        all_events += out
    running: list[str] = []
    for event in all_events:
        if isinstance(event, StartTimer) and event.name not in running:
            running.append(event.name)
        elif isinstance(event, CancelTimer) and event.name in running:
            running.remove(event.name)
    for _ in range(500):
        if not running:
            break
        out = proxy.timer(running.pop(0))
        for event in out:
            if isinstance(event, StartTimer) and event.name not in running:
                running.append(event.name)
            elif isinstance(event, CancelTimer) and event.name in running:
                running.remove(event.name)
        sent += [e for e in of(out, Forward) if not e.retransmission]
        all_events += out
    assert proxy.done and proxy.finished
    (done,) = of(all_events, Done)
    finals = [r.status for r in upstream(all_events) if r.status >= 300]
    if done.outcome is Outcome.ANSWERED:
        assert finals == []
    else:
        assert finals == [done.status]
    # Nothing is forwarded after the call is done, and never more than the targets.
    assert len(sent) <= 3
    assert all(not isinstance(e, Forward) or e.retransmission
               for e in all_events[all_events.index(done):])  # fmt: skip
    for fwd in sent:
        assert parse_message(serialize(fwd.request)) == fwd.request
