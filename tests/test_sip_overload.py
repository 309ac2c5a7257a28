"""RFC 7339 overload control: admission limits, emergency priority, the explicit 503 and
call back record at the hard limit, release and promotion, the Via parameters (format and
parse round trips in the form of RFC 7339's examples), oc-seq, validity, the client's
throttle fraction (bounded with the binomial distribution) and a property that no sequence
of admit/release ever rejects without a response to send."""

from __future__ import annotations

import itertools
import math
import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firebox.sip import Request, parse_message, parse_via, serialize
from firebox.sip.message import make_response
from firebox.sip.overload import (
    Admit,
    CallbackRecord,
    OcParams,
    OverloadGuard,
    OverloadThrottle,
    Promote,
    Reject,
    add_oc_support,
    destination_of,
    format_oc,
    is_emergency,
    parse_oc,
)

CLIENT_VIA = 'SIP/2.0/TCP cl.example.net;branch=z9hG4bKy7cjbu3;oc;oc-algo="loss,A"'


def call(n: int, *, emergency: bool = False, via: str = CLIENT_VIA, priority: str | None = None) -> Request:
    uri = "urn:service:sos" if emergency else "sip:admin@psap.example.net"
    text = (
        f"INVITE {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:+1508555{n:04d}@carrier.example.net>;tag=f{n}\r\n"
        f"To: <{uri}>\r\n"
        f"Call-ID: call-{n}@carrier.example.net\r\n"
        "CSeq: 1 INVITE\r\n"
        "P-Asserted-Identity: <tel:+15085550100>\r\n"
        + (f"Resource-Priority: {priority}\r\n" if priority else "")
        + "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


# -- emergency detection ---------------------------------------------------------------------


def test_is_emergency():
    assert is_emergency(call(1, emergency=True))
    assert not is_emergency(call(2))
    assert is_emergency(call(3, priority="esnet.1"))
    assert not is_emergency(call(4, priority="wps.1"))
    r = call(5)
    r.uri = "urn:service:sos.police"
    assert is_emergency(r)
    r.uri = "urn:service:sosx"
    assert not is_emergency(r)


# -- admission --------------------------------------------------------------------------------


def test_admission_is_bounded_by_capacity_and_queue():
    guard = OverloadGuard(capacity=2, queue_limit=1, emergency_reserve=1)
    results = [guard.admit(call(n), 0.0) for n in range(4)]
    assert [type(r) for r in results] == [Admit, Admit, Admit, Reject]
    assert [r.queued for r in results[:3]] == [False, False, True]
    assert guard.in_flight == 2 and guard.queued == 1
    reject = results[3]
    assert reject.response.status == 503
    assert reject.response.headers.get("Retry-After") == "30"
    assert reject.callback is None  # not an emergency call
    # a retransmission of an admitted call is admitted again, not counted twice
    again = guard.admit(call(0), 0.0)
    assert isinstance(again, Admit) and not again.queued and guard.in_flight == 2


def test_emergency_calls_go_ahead_and_use_the_reserve():
    guard = OverloadGuard(capacity=1, queue_limit=2, emergency_reserve=1)
    assert isinstance(guard.admit(call(0), 0.0), Admit)  # in flight
    assert guard.admit(call(1), 0.0).queued
    assert guard.admit(call(2), 0.0).queued
    assert isinstance(guard.admit(call(3), 0.0), Reject)  # non-emergency: full
    e1 = guard.admit(call(10, emergency=True), 0.0)
    assert isinstance(e1, Admit) and e1.queued and e1.emergency  # the reserve
    assert guard.queued_ids == ["call-10@carrier.example.net", "call-1@carrier.example.net", "call-2@carrier.example.net"]
    # release: the emergency call is promoted first
    assert guard.release("call-0@carrier.example.net") == [Promote("call-10@carrier.example.net", True)]
    assert guard.release("call-10@carrier.example.net") == [Promote("call-1@carrier.example.net", False)]


def test_emergency_hard_limit_is_an_explicit_503_with_callback_record():
    guard = OverloadGuard(capacity=1, queue_limit=0, emergency_reserve=1, retry_after=5)
    assert isinstance(guard.admit(call(1, emergency=True), 0.0), Admit)
    assert isinstance(guard.admit(call(2, emergency=True), 0.0), Admit)
    rejected = guard.admit(call(3, emergency=True), 7.5)
    assert isinstance(rejected, Reject) and rejected.emergency
    response = parse_message(serialize(rejected.response))
    assert response.status == 503 and response.headers.get("Retry-After") == "5"
    assert response.call_id == "call-3@carrier.example.net"
    assert rejected.callback == CallbackRecord(
        caller="tel:+15085550100",
        call_id="call-3@carrier.example.net",
        time=7.5,
        reason="emergency hard limit reached",
        request_uri="urn:service:sos",
    )


def test_release_of_queued_and_unknown_calls():
    guard = OverloadGuard(capacity=1, queue_limit=2)
    guard.admit(call(0), 0.0)
    guard.admit(call(1), 0.0)
    guard.admit(call(2), 0.0)
    assert guard.release("call-1@carrier.example.net") == []  # abandoned while queued
    assert guard.queued_ids == ["call-2@carrier.example.net"]
    assert guard.release("nobody") == []
    assert guard.release("call-0@carrier.example.net", 1.0) == [Promote("call-2@carrier.example.net", False)]
    assert guard.in_flight == 1 and guard.queued == 0
    assert "call-2@carrier.example.net" in guard


def test_bad_configuration():
    with pytest.raises(ValueError):
        OverloadGuard(0)
    with pytest.raises(ValueError):
        OverloadGuard(1, -1)


# -- loss -------------------------------------------------------------------------------------


def test_loss_follows_offered_load_smoothed():
    guard = OverloadGuard(capacity=10, queue_limit=10, smoothing=1.0)
    for n in range(10):
        guard.admit(call(n), 0.0)
    assert guard.loss_percent(100.0) == 0  # at capacity, not above
    for n in range(10, 20):
        guard.admit(call(n), 100.0)  # offered 20 against 10: the signal is 50 %
    assert guard.loss_percent(100.0) == 0  # no time has passed: the average has not moved
    assert guard.loss_percent(101.0) == round(50 * (1 - math.exp(-1)))
    assert guard.loss_percent(110.0) == 50
    # rejections count as offered load while they are in the window
    for n in range(20, 30):
        guard.admit(call(n), 110.0)
    assert guard.loss_percent(120.0) == 50  # they left the window long ago
    for n in range(20):
        guard.release(f"call-{n}@carrier.example.net", 120.0)
    assert guard.loss_percent(121.0) == round(50 * math.exp(-1))
    assert guard.loss_percent(150.0) == 0


def test_rejections_raise_the_signal_within_the_window():
    guard = OverloadGuard(capacity=2, queue_limit=0, smoothing=0.001, window=1.0)
    guard.admit(call(0), 0.0)
    guard.admit(call(1), 0.0)
    for n in range(2, 6):
        assert isinstance(guard.admit(call(n), 0.0), Reject)
    # 6 offered against 2 places: two thirds must go
    assert guard.loss_percent(0.5) == 67
    assert guard.loss_percent(2.0) == 0


# -- the Via parameters -------------------------------------------------------------------------


def test_parse_client_support_and_server_feedback():
    oc = parse_oc(CLIENT_VIA)
    assert oc == OcParams(supported=True, loss=None, algos=("loss", "a"))
    server = (
        'SIP/2.0/TCP cl.example.net;branch=z9hG4bKy7cjbu3;oc=20;oc-algo="loss";'
        "oc-validity=500;oc-seq=1282321615.782"
    )
    assert parse_oc(server) == OcParams(True, 20, ("loss",), 500, Decimal("1282321615.782"))
    assert parse_oc("SIP/2.0/UDP a.example.net;branch=z9hG4bK1") == OcParams()
    # out-of-range values are not taken
    bad = parse_oc("SIP/2.0/UDP a.example.net;branch=z9hG4bK1;oc=101;oc-validity=x;oc-seq=1.2.3")
    assert bad.supported and bad.loss is None and bad.validity_ms is None and bad.seq is None


def test_format_round_trip():
    text = format_oc(CLIENT_VIA, 20, 500, "1282321615.00782")
    assert text == (
        'SIP/2.0/TCP cl.example.net;branch=z9hG4bKy7cjbu3;oc=20;oc-algo="loss";'
        "oc-validity=500;oc-seq=1282321615.00782"
    )
    assert parse_oc(text) == OcParams(True, 20, ("loss",), 500, Decimal("1282321615.00782"))
    assert str(parse_via(text)) == text
    assert add_oc_support("SIP/2.0/UDP c.example.net:5060;branch=z9hG4bK9") == (
        'SIP/2.0/UDP c.example.net:5060;branch=z9hG4bK9;oc;oc-algo="loss"'
    )
    with pytest.raises(ValueError):
        format_oc(CLIENT_VIA, 101, 500, "1.0")


def test_feedback_only_for_clients_that_support_it():
    guard = OverloadGuard(capacity=1, validity_ms=1000)
    plain = "SIP/2.0/UDP a.example.net;branch=z9hG4bK1"
    assert guard.feedback_via(plain, 0.0) == plain
    other_algo = 'SIP/2.0/UDP a.example.net;branch=z9hG4bK1;oc;oc-algo="rate"'
    assert guard.feedback_via(other_algo, 0.0) == other_algo
    no_algo = "SIP/2.0/UDP a.example.net;branch=z9hG4bK1;oc"
    assert parse_oc(guard.feedback_via(no_algo, 0.0)).loss == 0
    fed = parse_oc(guard.feedback_via(CLIENT_VIA, 0.0))
    assert fed.loss == 0 and fed.algos == ("loss",) and fed.validity_ms == 1000


def test_add_feedback_rewrites_only_the_top_via():
    guard = OverloadGuard(capacity=1)
    request = call(1)
    request.headers.add("Via", "SIP/2.0/UDP second.example.net;branch=z9hG4bK2")
    response = guard.add_feedback(make_response(request, 200), 3.0)
    vias = response.headers.get_all("Via")
    assert parse_oc(vias[0]).loss == 0 and parse_oc(vias[0]).seq is not None
    assert vias[1] == "SIP/2.0/UDP second.example.net;branch=z9hG4bK2"
    assert parse_message(serialize(response)).headers.get_all("Via") == vias


def test_oc_seq_increases_when_the_feedback_changes():
    guard = OverloadGuard(capacity=2, queue_limit=10, smoothing=0.5)
    seqs = []
    losses = []
    n = 0
    for step in range(40):
        now = 1000.0 + step * 0.25
        for _ in range(step % 3):
            guard.admit(call(n), now)
            n += 1
        oc = parse_oc(guard.feedback_via(CLIENT_VIA, now))
        seqs.append(oc.seq)
        losses.append(oc.loss)
    assert all(b >= a for a, b in itertools.pairwise(seqs))
    for i in range(1, len(seqs)):
        if losses[i] != losses[i - 1]:
            assert seqs[i] > seqs[i - 1]
        else:
            assert seqs[i] == seqs[i - 1]
    assert len(set(losses)) > 3
    # many changes within one second still increase
    g = OverloadGuard(capacity=1)
    a = g._next_seq(5.0, (1, 500))
    b = g._next_seq(5.0, (2, 500))
    c = g._next_seq(5.9, (3, 500))
    assert Decimal(a) < Decimal(b) < Decimal(c)


# -- the client -------------------------------------------------------------------------------


def feedback_response(loss: int, validity: int, seq: str):
    request = call(99, via=add_oc_support("SIP/2.0/UDP bcf.example.net;branch=z9hG4bKb"))
    response = make_response(request, 200)
    top = response.headers.pop_first("Via")
    response.headers.insert_first("Via", format_oc(top, loss, validity, seq))
    return parse_message(serialize(response))


def binomial_bound(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    mean = n * p
    sd = math.sqrt(n * p * (1 - p))
    return mean - sigmas * sd, mean + sigmas * sd


def test_throttle_diverts_the_advertised_fraction():
    throttle = OverloadThrottle()
    assert throttle.observe(feedback_response(30, 60_000, "10.00001"), "esrp.example.net", 0.0)
    assert throttle.loss("esrp.example.net", 1.0) == 30
    rng = random.Random(7339)
    n = 10_000
    sent = sum(throttle.should_send(call(i), 1.0, rng, "esrp.example.net") for i in range(n))
    low, high = binomial_bound(n, 0.30)
    diverted = n - sent
    assert low <= diverted <= high
    assert throttle.stats.diverted == diverted and throttle.stats.sent == sent
    # another destination is not affected
    assert all(throttle.should_send(call(i), 1.0, rng, "other.example.net") for i in range(100))


def test_emergency_is_never_throttled_but_counted():
    throttle = OverloadThrottle()
    throttle.observe(feedback_response(100, 60_000, "1.0"), "esrp.example.net", 0.0)
    rng = random.Random(1)
    assert not any(throttle.should_send(call(i), 1.0, rng, "esrp.example.net") for i in range(50))
    assert all(throttle.should_send(call(i, emergency=True), 1.0, rng, "esrp.example.net") for i in range(50))
    assert all(throttle.should_send(call(i, priority="esnet.0"), 1.0, rng, "esrp.example.net") for i in range(5))
    assert throttle.stats.emergency == 55 and throttle.stats.emergency_under_loss == 55
    assert throttle.stats.diverted == 50


def test_validity_expiry_and_stop():
    throttle = OverloadThrottle()
    throttle.observe(feedback_response(40, 500, "1.00001"), "d", 10.0)
    assert throttle.loss("d", 10.499) == 40
    assert throttle.loss("d", 10.5) == 0  # oc-validity ms elapsed
    throttle.observe(feedback_response(40, 5000, "1.00002"), "d", 11.0)
    assert throttle.loss("d", 12.0) == 40
    throttle.observe(feedback_response(40, 0, "1.00003"), "d", 12.0)  # oc-validity=0: stop
    assert throttle.loss("d", 12.0) == 0


def test_stale_oc_seq_is_ignored():
    throttle = OverloadThrottle()
    assert throttle.observe(feedback_response(50, 5000, "100.00002"), "d", 0.0)
    assert not throttle.observe(feedback_response(10, 5000, "100.00001"), "d", 0.1)
    assert throttle.loss("d", 0.2) == 50
    assert throttle.observe(feedback_response(10, 5000, "100.00002"), "d", 0.3)  # same seq: fine
    assert throttle.loss("d", 0.4) == 10


def test_response_without_feedback_is_ignored_and_destination_default():
    throttle = OverloadThrottle()
    response = make_response(call(1, via="SIP/2.0/UDP x.example.net;branch=z9hG4bK1"), 200)
    assert not throttle.observe(response, "d", 0.0)
    request = call(2)
    assert destination_of(request) == "psap.example.net"
    request.headers.add("Route", "<sip:ESRP.example.net:5061;lr>")
    assert destination_of(request) == "esrp.example.net:5061"
    throttle.observe(feedback_response(100, 5000, "1.0"), "esrp.example.net:5061", 0.0)
    assert not throttle.should_send(request, 1.0, random.Random(0))
    assert throttle.offer_support("SIP/2.0/UDP c.example.net;branch=z9hG4bK5").endswith(';oc;oc-algo="loss"')


def test_end_to_end_guard_feedback_drives_throttle():
    guard = OverloadGuard(capacity=5, queue_limit=20, smoothing=0.1)
    throttle = OverloadThrottle()
    for n in range(20):
        guard.admit(call(n), 0.0)  # 20 offered against 5 places: 75 %
    request = call(100, via=throttle.offer_support("SIP/2.0/TCP bcf.example.net;branch=z9hG4bKq"))
    response = guard.add_feedback(make_response(request, 182), 5.0)
    assert throttle.observe(parse_message(serialize(response)), "esrp", 5.0)
    assert throttle.loss("esrp", 5.1) == 75


# -- property ----------------------------------------------------------------------------------

operations = st.lists(
    st.tuples(st.sampled_from(["admit", "admit_e", "release"]), st.integers(0, 30), st.floats(0, 5)),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.integers(1, 5),
    queue_limit=st.integers(0, 5),
    reserve=st.integers(0, 3),
    ops=operations,
)
def test_no_rejection_without_a_response(capacity, queue_limit, reserve, ops):
    guard = OverloadGuard(capacity, queue_limit, emergency_reserve=reserve)
    now = 0.0
    held: set[str] = set()
    for op, n, dt in ops:
        now += dt
        if op == "release":
            for promote in guard.release(f"call-{n}@carrier.example.net", now):
                assert promote.call_id in held
            held.discard(f"call-{n}@carrier.example.net")
        else:
            request = call(n, emergency=op == "admit_e")
            result = guard.admit(request, now)
            if isinstance(result, Reject):
                assert result.response is not None and result.response.status == 503
                assert result.response.headers.get("Retry-After")
                assert result.response.call_id == request.call_id
                if is_emergency(request):
                    assert result.callback is not None and result.callback.call_id == request.call_id
                assert result.call_id not in guard
            else:
                held.add(result.call_id)
                assert result.call_id in guard
        assert guard.in_flight <= capacity
        assert guard.in_flight + guard.queued <= guard.hard_limit
        assert guard.queued == 0 or guard.in_flight == capacity
        # emergency calls are never behind non-emergency calls in the queue
        kinds = [e for _, e in guard._queue]
        assert kinds == sorted(kinds, reverse=True)
        assert 0 <= guard.loss_percent(now) <= 100
