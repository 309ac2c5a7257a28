"""RFC 6665 subscriptions for the i3 state packages: a Subscriber and a Notifier wired in
memory (every message serialized and parsed again), refresh, expiry, unsubscribe, 489, 423,
481 and state changes that land in an esrp StateTable."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from firebox.esrp.states import (
    EVENT_ELEMENT_STATE,
    EVENT_QUEUE_STATE,
    QueueState,
    QueueStateValue,
    StateTable,
    parse_notify,
)
from firebox.sip import (
    Request,
    Response,
    SipParseError,
    make_response,
    parse_message,
    serialize,
)
from firebox.sip.subscription import (
    DEFAULT_CONTENT_TYPE,
    Notifier,
    Reason,
    Subscriber,
    SubscriberState,
    SubscriptionEnded,
    SubscriptionStarted,
    SubscriptionState,
    SubState,
    event_package,
    parse_subscription_state,
)
from firebox.sip.transaction import Send

QUEUE = "sip:queue1@psap.example.net"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def wire(message):
    """Serialize and parse again, as the network would."""
    return parse_message(serialize(message))


def counter(prefix: str):
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers)}"


def queue_body(length: int, state: QueueStateValue = QueueStateValue.ACTIVE) -> bytes:
    return QueueState(QUEUE, length, 10, state).to_json().encode()


def make_pair(**notifier_options):
    notifier = Notifier(
        EVENT_QUEUE_STATE,
        QUEUE,
        "sip:psap@192.0.2.20:5060;transport=tcp",
        tag_factory=counter("ntag"),
        branch_factory=counter("z9hG4bKn"),
        **notifier_options,
    )
    subscriber = Subscriber(
        EVENT_QUEUE_STATE,
        QUEUE,
        "sip:esrp@esrp.example.net",
        "sip:esrp@192.0.2.10:5060",
        expires=600,
        tag_factory=counter("stag"),
        call_id_factory=counter("call"),
        branch_factory=counter("z9hG4bKs"),
    )
    return notifier, subscriber


class Link:
    """Carries messages both ways and applies NOTIFY bodies to a StateTable."""

    def __init__(self, notifier: Notifier, subscriber: Subscriber):
        self.notifier = notifier
        self.subscriber = subscriber
        self.table = StateTable()
        self.notifies: list[Request] = []
        self.states: list[SubscriptionState] = []
        self.ended: list[SubscriptionEnded] = []
        self.started: list[SubscriptionStarted] = []
        self.body = queue_body(0)

    def run_notifier_events(self, events, now: float) -> list[Response]:
        responses = []
        for event in events:
            if isinstance(event, SubscriptionEnded):
                self.ended.append(event)
            elif isinstance(event, SubscriptionStarted):
                self.started.append(event)
            else:
                assert isinstance(event, Send)
                message = wire(event.message)
                if isinstance(message, Response):
                    responses.append(message)
                    again = self.subscriber.handle_response(message, now)
                    if again is not None:
                        self.send_subscribe(again, now)
                else:
                    self.deliver_notify(message, now)
        return responses

    def deliver_notify(self, notify: Request, now: float) -> Response:
        self.notifies.append(notify)
        response, body, state = self.subscriber.handle_notify(notify, now)
        if state is not None:
            self.states.append(state)
        if body is not None:
            self.table.apply_notify(notify.headers.get("Event"), body, EPOCH + timedelta(seconds=now))
        response = wire(response)
        self.ended += self.notifier.handle_response(response, now)
        return response

    def send_subscribe(self, request: Request, now: float) -> list[Response]:
        events = self.notifier.handle_subscribe(wire(request), now, self.body)
        return self.run_notifier_events(events, now)


def test_full_exchange_and_state_changes_reach_the_table():
    notifier, subscriber = make_pair()
    link = Link(notifier, subscriber)
    request = subscriber.subscribe(0.0)
    assert request.method == "SUBSCRIBE" and request.uri == QUEUE
    assert request.headers.get("Event") == EVENT_QUEUE_STATE
    assert request.headers.get("Expires") == "600"
    assert request.to_tag is None and request.from_tag == "stag1"

    [ok] = link.send_subscribe(request, 0.0)
    assert ok.status == 200 and ok.headers.get("Expires") == "600"
    assert ok.to_tag == "ntag1"
    assert len(link.started) == 1 and link.started[0].expires == 600
    assert subscriber.state is SubscriberState.ACTIVE
    assert subscriber.dialog is not None and subscriber.dialog.remote_tag == "ntag1"

    [notify] = link.notifies
    assert notify.method == "NOTIFY" and notify.uri == "sip:esrp@192.0.2.10:5060"
    assert notify.headers.get("Subscription-State") == "active;expires=600"
    assert notify.headers.get("Content-Type") == DEFAULT_CONTENT_TYPE
    assert notify.from_tag == "ntag1" and notify.to_tag == "stag1"
    assert notify.top_via.transport == "TCP" and notify.top_via.host == "192.0.2.20"
    assert link.table.queue(QUEUE, EPOCH).queue_length == 0

    # a state change: every active subscription gets it, it parses and updates the table
    for n, length in enumerate((3, 9), start=1):
        link.body = queue_body(length)
        link.run_notifier_events(notifier.publish(link.body, 10.0 * n), 10.0 * n)
    last = link.notifies[-1]
    state = parse_notify(last.headers.get("Event"), last.body)
    assert isinstance(state, QueueState) and state.queue_length == 9
    assert last.headers.get("Subscription-State") == "active;expires=580"
    assert link.table.queue(QUEUE, EPOCH + timedelta(seconds=20)).queue_length == 9
    # CSeq of NOTIFYs in the dialog increases
    assert [n.cseq[0] for n in link.notifies] == [1, 2, 3]

    link.body = queue_body(10, QueueStateValue.FULL)
    link.run_notifier_events(notifier.publish(link.body, 30.0), 30.0)
    assert not link.table.is_queue_usable(QUEUE, EPOCH + timedelta(seconds=30))


def test_refresh_at_ninety_percent_and_notifier_extends():
    notifier, subscriber = make_pair()
    link = Link(notifier, subscriber)
    link.send_subscribe(subscriber.subscribe(0.0), 0.0)
    assert subscriber.refresh_at == pytest.approx(540.0)
    assert subscriber.tick(539.0) is None
    refresh = subscriber.tick(540.0)
    assert refresh is not None and refresh.to_tag == "ntag1"
    assert refresh.call_id == "call1" and refresh.cseq == (2, "SUBSCRIBE")
    [ok] = link.send_subscribe(refresh, 540.0)
    assert ok.status == 200
    assert notifier.expires_at(subscriber.dialog.swapped()) == pytest.approx(1140.0)
    assert link.notifies[-1].headers.get("Subscription-State") == "active;expires=600"
    assert subscriber.refresh_at == pytest.approx(540.0 + 540.0)
    # the old deadline passes without expiry
    assert notifier.tick(700.0) == []
    assert len(notifier) == 1


def test_expiry_sends_terminated_timeout_and_subscriber_comes_back():
    notifier, subscriber = make_pair()
    link = Link(notifier, subscriber)
    link.send_subscribe(subscriber.subscribe(0.0), 0.0)
    assert notifier.next_deadline() == 600.0
    link.run_notifier_events(notifier.tick(600.0), 600.0)
    assert len(notifier) == 0
    assert [e.reason for e in link.ended] == ["timeout"]
    assert link.notifies[-1].headers.get("Subscription-State") == "terminated;reason=timeout"
    assert subscriber.state is SubscriberState.TERMINATED and subscriber.reason == "timeout"
    # RFC 6665 4.1.3: after timeout, subscribe again at once, in a new dialog
    again = subscriber.tick(600.0)
    assert again is not None and again.to_tag is None and again.call_id == "call2"
    link.send_subscribe(again, 600.0)
    assert subscriber.state is SubscriberState.ACTIVE and len(notifier) == 1


def test_subscriber_starts_over_when_refresh_is_never_answered():
    notifier, subscriber = make_pair()
    link = Link(notifier, subscriber)
    link.send_subscribe(subscriber.subscribe(0.0), 0.0)
    assert subscriber.tick(540.0) is not None  # lost on the way
    fresh = subscriber.tick(600.0)
    assert fresh is not None and fresh.to_tag is None


def test_unsubscribe():
    notifier, subscriber = make_pair()
    link = Link(notifier, subscriber)
    link.send_subscribe(subscriber.subscribe(0.0), 0.0)
    bye = subscriber.unsubscribe(100.0)
    assert bye is not None and bye.headers.get("Expires") == "0"
    [ok] = link.send_subscribe(bye, 100.0)
    assert ok.status == 200 and ok.headers.get("Expires") == "0"
    assert len(notifier) == 0 and [e.reason for e in link.ended] == ["unsubscribed"]
    final = link.notifies[-1]
    assert parse_subscription_state(final.headers.get("Subscription-State")).state is SubState.TERMINATED
    assert final.body  # the final NOTIFY still carries the state (RFC 6665 4.2.1.2)
    assert subscriber.state is SubscriberState.IDLE
    assert subscriber.tick(10_000.0) is None  # no retry after unsubscribing
    assert subscriber.unsubscribe(200.0) is None


def test_bad_event_489_with_allow_events():
    notifier, _ = make_pair()
    other = Subscriber(EVENT_ELEMENT_STATE, QUEUE, "sip:esrp@esrp.example.net", "sip:esrp@192.0.2.10")
    events = notifier.handle_subscribe(wire(other.subscribe(0.0)), 0.0, b"")
    [send] = events
    assert send.message.status == 489
    assert send.message.headers.get("Allow-Events") == EVENT_QUEUE_STATE
    assert len(notifier) == 0
    # the subscriber gives up on 489 (no retry: the package will not appear)
    assert other.handle_response(wire(send.message), 0.0) is None
    assert other.state is SubscriberState.TERMINATED and other.tick(1e6) is None


def test_missing_event_is_489():
    notifier, subscriber = make_pair()
    request = subscriber.subscribe(0.0)
    request.headers.remove("Event")
    [send] = notifier.handle_subscribe(wire(request), 0.0, b"")
    assert send.message.status == 489


def test_interval_too_brief_423_and_retry_with_min_expires():
    notifier, subscriber = make_pair(min_expires=900, max_expires=7200, default_expires=3600)
    link = Link(notifier, subscriber)
    request = subscriber.subscribe(0.0)
    [too_brief] = link.send_subscribe(request, 0.0)  # the retry is sent from inside
    assert too_brief.status == 423 and too_brief.headers.get("Min-Expires") == "900"
    assert subscriber.expires == 900
    [dialog] = notifier.dialogs
    assert notifier.expires_at(dialog) == 900.0 and subscriber.expires_at == 900.0
    assert subscriber.state is SubscriberState.ACTIVE


def test_long_interval_is_clamped_and_missing_expires_gets_default():
    notifier, subscriber = make_pair(max_expires=300, default_expires=200)
    link = Link(notifier, subscriber)
    [ok] = link.send_subscribe(subscriber.subscribe(0.0), 0.0)
    assert ok.headers.get("Expires") == "300"
    assert subscriber.expires_at == 300.0 and subscriber.refresh_at == pytest.approx(270.0)
    notifier2, subscriber2 = make_pair(default_expires=200, max_expires=300)
    request = subscriber2.subscribe(0.0)
    request.headers.remove("Expires")
    [ok2, *_] = notifier2.handle_subscribe(wire(request), 0.0, b"")
    assert ok2.message.headers.get("Expires") == "200"


def test_notify_481_drops_subscription():
    notifier, subscriber = make_pair()
    link = Link(notifier, subscriber)
    link.send_subscribe(subscriber.subscribe(0.0), 0.0)
    [send] = notifier.publish(queue_body(1), 5.0)
    gone = make_response(wire(send.message), 481)
    events = notifier.handle_response(wire(gone), 5.0)
    assert events == [SubscriptionEnded(subscriber.dialog.swapped(), "NOTIFY 481")]
    assert len(notifier) == 0 and notifier.publish(queue_body(2), 6.0) == []
    # a 500 to a NOTIFY does not end anything
    link.send_subscribe(subscriber.subscribe(10.0), 10.0)
    [send] = notifier.publish(queue_body(3), 11.0)
    assert notifier.handle_response(wire(make_response(wire(send.message), 500)), 11.0) == []
    assert len(notifier) == 1


def test_unknown_dialog_subscribe_is_481_and_notify_outside_dialog_is_481():
    notifier, subscriber = make_pair()
    link = Link(notifier, subscriber)
    link.send_subscribe(subscriber.subscribe(0.0), 0.0)
    refresh = subscriber.refresh(10.0)
    refresh.headers.set("To", f"<{QUEUE}>;tag=bogus")
    [send] = notifier.handle_subscribe(wire(refresh), 10.0, b"")
    assert send.message.status == 481
    [notify] = link.notifies
    stray = wire(notify)
    stray.headers.set("Call-ID", "other-call")
    response, body, state = subscriber.handle_notify(stray, 11.0)
    assert response.status == 481 and body is None and state is None


def test_notify_before_2xx_creates_the_dialog():
    notifier, subscriber = make_pair()
    request = subscriber.subscribe(0.0)
    events = notifier.handle_subscribe(wire(request), 0.0, queue_body(4))
    ok, notify = (e.message for e in events if isinstance(e, Send))
    response, body, state = subscriber.handle_notify(wire(notify), 0.0)
    assert response.status == 200 and body == queue_body(4)
    assert state == SubscriptionState(SubState.ACTIVE, 600)
    assert subscriber.dialog is not None and subscriber.dialog.remote_tag == "ntag1"
    assert subscriber.handle_response(wire(ok), 0.0) is None
    assert subscriber.state is SubscriberState.ACTIVE


def test_record_route_makes_the_route_set():
    notifier, subscriber = make_pair()
    request = wire(subscriber.subscribe(0.0))
    request.headers.add("Record-Route", "<sip:p1.example.net;lr>")
    request.headers.add("Record-Route", "<sip:p2.example.net;lr>")
    events = notifier.handle_subscribe(request, 0.0, b"")
    ok, notify = (e.message for e in events if isinstance(e, Send))
    assert ok.headers.get_all("Record-Route") == ["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"]
    assert notify.headers.get_all("Route") == ["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"]
    subscriber.handle_response(wire(ok), 0.0)
    refresh = subscriber.refresh(1.0)
    assert refresh.headers.get_all("Route") == ["<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"]
    assert refresh.uri == "sip:psap@192.0.2.20:5060;transport=tcp"


def test_terminated_reasons_decide_retry():
    cases = {
        "deactivated": 0.0,
        "timeout": 0.0,
        "probation": 30.0,
        "giveup": 30.0,
        "rejected": None,
        "noresource": None,
        "invariant": None,
    }
    for reason, delay in cases.items():
        notifier, subscriber = make_pair()
        link = Link(notifier, subscriber)
        link.send_subscribe(subscriber.subscribe(0.0), 0.0)
        link.run_notifier_events(notifier.terminate_all(Reason(reason)), 50.0)
        assert subscriber.state is SubscriberState.TERMINATED and subscriber.reason == reason
        if delay is None:
            assert subscriber.tick(1e9) is None, reason
        else:
            assert subscriber.tick(50.0 + delay - 1) is None if delay else True
            assert subscriber.tick(50.0 + delay) is not None, reason


def test_retry_after_in_subscription_state_is_honoured():
    notifier, subscriber = make_pair()
    link = Link(notifier, subscriber)
    link.send_subscribe(subscriber.subscribe(0.0), 0.0)
    [notify] = link.notifies
    again = wire(notify)
    again.headers.set("CSeq", "5 NOTIFY")
    again.headers.set("Subscription-State", "terminated;reason=probation;retry-after=120")
    response, _, state = subscriber.handle_notify(again, 10.0)
    assert response.status == 200 and state.retry_after == 120
    assert subscriber.tick(129.0) is None and subscriber.tick(130.0) is not None


def test_out_of_order_notify_and_bad_headers():
    notifier, subscriber = make_pair()
    link = Link(notifier, subscriber)
    link.send_subscribe(subscriber.subscribe(0.0), 0.0)
    link.run_notifier_events(notifier.publish(queue_body(2), 1.0), 1.0)
    old = wire(link.notifies[0])
    assert subscriber.handle_notify(old, 2.0)[0].status == 500
    newer = wire(link.notifies[-1])
    newer.headers.set("CSeq", "9 NOTIFY")
    newer.headers.remove("Subscription-State")
    assert subscriber.handle_notify(newer, 2.0)[0].status == 400
    newer.headers.set("Subscription-State", "active;expires=10")
    newer.headers.set("Event", EVENT_ELEMENT_STATE)
    assert subscriber.handle_notify(newer, 2.0)[0].status == 489
    newer.headers.set("Event", EVENT_QUEUE_STATE)
    newer.headers.set("Content-Type", "application/pidf+xml")
    assert subscriber.handle_notify(newer, 2.0)[0].status == 415
    newer.headers.set("Content-Type", "application/vnd.emergency.queuestate+json")
    response, body, state = subscriber.handle_notify(newer, 2.0)
    assert response.status == 200 and body and state.expires == 10
    assert subscriber.expires_at == 12.0  # the notifier shortened it


def test_malformed_expires_is_400_and_missing_contact_is_400():
    notifier, subscriber = make_pair()
    request = wire(subscriber.subscribe(0.0))
    request.headers.set("Expires", "soon")
    assert notifier.handle_subscribe(request, 0.0, b"")[0].message.status == 400
    request = wire(subscriber.subscribe(0.0))
    request.headers.remove("Contact")
    assert notifier.handle_subscribe(request, 0.0, b"")[0].message.status == 400
    assert len(notifier) == 0


def test_fetch_with_expires_zero():
    notifier, subscriber = make_pair()
    request = wire(subscriber.subscribe(0.0))
    request.headers.set("Expires", "0")
    ok, notify = (e.message for e in notifier.handle_subscribe(request, 0.0, queue_body(5)))
    assert ok.status == 200 and notify.headers.get("Subscription-State").startswith("terminated")
    assert notify.body == queue_body(5) and len(notifier) == 0


def test_subscription_state_and_event_parsing():
    assert parse_subscription_state("Active ; expires=600") == SubscriptionState(SubState.ACTIVE, 600)
    st = parse_subscription_state("terminated;reason=Giveup;retry-after=30")
    assert st.reason == "giveup" and st.retry_after == 30
    assert str(st) == "terminated;reason=giveup;retry-after=30"
    assert parse_subscription_state("weird").state == "weird"
    assert event_package("emergency-QueueState;id=7") == ("emergency-QueueState", "7")
    with pytest.raises(SipParseError):
        parse_subscription_state("active;expires=x")


def test_event_id_is_echoed():
    notifier, subscriber = make_pair()
    request = wire(subscriber.subscribe(0.0))
    request.headers.set("Event", f"{EVENT_QUEUE_STATE};id=q1")
    _, notify = (e.message for e in notifier.handle_subscribe(request, 0.0, b"") if isinstance(e, Send))
    assert notify.headers.get("Event") == f"{EVENT_QUEUE_STATE};id=q1"
    assert notify.body == b"" and notify.headers.get("Content-Type") is None


def test_several_subscribers_all_get_published_state():
    notifier = Notifier(EVENT_QUEUE_STATE, QUEUE, "sip:psap@192.0.2.20")
    subs = [
        Subscriber(EVENT_QUEUE_STATE, QUEUE, f"sip:esrp{i}@example.net", f"sip:esrp{i}@192.0.2.{i}")
        for i in range(1, 4)
    ]
    links = [Link(notifier, s) for s in subs]
    for link in links:
        link.send_subscribe(link.subscriber.subscribe(0.0), 0.0)
    events = notifier.publish(queue_body(7), 1.0)
    sends = [e for e in events if isinstance(e, Send)]
    assert sorted(s.message.uri for s in sends) == [f"sip:esrp{i}@192.0.2.{i}" for i in range(1, 4)]
    by_target = {link.subscriber.contact: link for link in links}
    for send in sends:
        by_target[send.message.uri].run_notifier_events([send], 1.0)
    for link in links:
        assert link.table.queue(QUEUE, EPOCH + timedelta(seconds=1)).queue_length == 7
    assert len(notifier) == 3
    # a NOTIFY that reaches the wrong subscriber is refused with 481
    response, body, _ = links[0].subscriber.handle_notify(wire(by_target_other(sends, links[0])), 1.0)
    assert response.status == 481 and body is None


def by_target_other(sends, link):
    return next(s.message for s in sends if s.message.uri != link.subscriber.contact)


def test_notify_after_termination_and_from_another_fork_is_481():
    notifier, subscriber = make_pair()
    link = Link(notifier, subscriber)
    link.send_subscribe(subscriber.subscribe(0.0), 0.0)
    fork = wire(link.notifies[0])
    fork.headers.set("From", f"<{QUEUE}>;tag=other-fork")
    fork.headers.set("CSeq", "7 NOTIFY")
    assert subscriber.handle_notify(fork, 1.0)[0].status == 481
    link.run_notifier_events(notifier.terminate_all(Reason.REJECTED), 2.0)
    assert subscriber.state is SubscriberState.TERMINATED
    late = wire(link.notifies[-1])
    late.headers.set("CSeq", "99 NOTIFY")
    late.headers.set("Subscription-State", "active;expires=100")
    response, body, _ = subscriber.handle_notify(late, 3.0)
    assert response.status == 481 and body is None
    assert subscriber.state is SubscriberState.TERMINATED
