"""The monitor's passive watch (sans-I/O): i3 log events as the ESRP's CallLogger writes them
(the LogEvent classes of firebox.logging.events, SIP text as on the wire), time as an
argument."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from firebox.logging.events import (
    CallEndLogEvent,
    CallSignalingMessageLogEvent,
    CallStartLogEvent,
    Direction,
    RouteLogEvent,
    new_call_id,
    new_incident_id,
)
from firebox.monitor.watch import DEFAULT_PROFILE, Scope, Watch, massachusetts_profile

EL = "esrp.demo.firebox.test"
AG = "demo.firebox.test"
PSAPS = {"sip:psap-a@demo.firebox.test": "a", "sip:psap-b@demo.firebox.test": "b", "sip:psap-c@demo.firebox.test": "c"}
REGIONS = {"a": "west", "b": "west", "c": "east"}
T0 = datetime(2026, 3, 2, 17, 0, tzinfo=UTC).timestamp()  # 12:00 in Boston


def ts() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Call:
    """The log events of one call through the BCF + ESRP, in CallLogger's order."""

    def __init__(self, sip: str, to: str = "<urn:service:sos>", peer: str = "10.1.2.3:5060"):
        self.sip, self.to, self.peer = sip, to, peer
        self.ids = {"call_id": new_call_id("bcf.demo.firebox.test"), "incident_id": new_incident_id("bcf.demo.firebox.test"),
                    "call_id_sip": sip, "element_id": EL, "agency_id": AG}  # fmt: skip

    def start(self):
        return CallStartLogEvent(timestamp=ts(), direction=Direction.INCOMING, to=self.to, from_="<sip:1@c>", **self.ids)

    def invite(self):
        text = f"INVITE urn:service:sos SIP/2.0\r\nTo: {self.to}\r\nCall-ID: {self.sip}\r\nCSeq: 1 INVITE\r\n\r\n"
        return CallSignalingMessageLogEvent(timestamp=ts(), text=text, direction=Direction.INCOMING,
                                            ip_address_port=self.peer, **self.ids)  # fmt: skip

    def route(self, uri: str, rule: str = "ecrf"):
        return RouteLogEvent(timestamp=ts(), recipient_uri=uri, rule_id=rule, policy_owner=AG,
                             policy_type="OriginationRoutingPolicy", **self.ids)  # fmt: skip

    def response(self, status: int, incoming: bool = True, method: str = "INVITE", extra: str = ""):
        text = f"SIP/2.0 {status} X\r\nTo: {self.to};tag=1\r\nCall-ID: {self.sip}\r\nCSeq: 1 {method}\r\n{extra}\r\n"
        return CallSignalingMessageLogEvent(timestamp=ts(), text=text,
                                            direction=Direction.INCOMING if incoming else Direction.OUTGOING,
                                            ip_address_port="127.0.0.1:5099", **self.ids)  # fmt: skip

    def end(self):
        return CallEndLogEvent(timestamp=ts(), direction=Direction.INCOMING, **self.ids)


def answered(w: Watch, n: int, psap_uri: str, now: float, answered_uri: str | None = None, json: bool = False) -> None:
    for i in range(n):
        c = Call(f"ans-{psap_uri}-{now}-{i}")
        events = [c.start(), c.invite(), c.route(psap_uri)]
        if answered_uri and answered_uri != psap_uri:
            events += [c.response(503), c.route(answered_uri, "failover")]
        events += [c.response(200), c.response(200, incoming=False), c.end()]
        for e in events:
            w.log_event(e.to_json() if json else e, now)


def test_counts_per_scope_from_log_events():
    w = Watch(PSAPS, REGIONS, ingresses={"10.0.0.0/8": "carrier-x"})
    answered(w, 3, "sip:psap-a@demo.firebox.test", T0)
    answered(w, 2, "sip:psap-b@demo.firebox.test", T0 + 1, json=True)  # the JSON form reads the same
    # one call for c that fails over to a, and one for c that nobody answers
    answered(w, 1, "sip:psap-c@demo.firebox.test", T0 + 2, answered_uri="sip:psap-a@demo.firebox.test")
    lost = Call("lost-1")
    for e in (lost.start(), lost.invite(), lost.route("sip:psap-c@demo.firebox.test"), lost.response(504, incoming=False), lost.end()):
        w.log_event(e, T0 + 3)
    f = w.figures(T0 + 4)
    assert f.get(Scope.STATEWIDE).as_dict() | {"answer_ratio": None} == {
        "entered": 7, "routed": 0, "answered": 6, "rerouted": 0, "failed": 1, "overflowed": 0, "answer_ratio": None}
    assert f.get(Scope.INGRESS, "carrier-x").entered == 7
    assert f.get(Scope.ELEMENT, EL).answered == 6
    assert f.get(Scope.PSAP, "a").answered == 3 and f.get(Scope.PSAP, "a").answer_ratio == 1.0
    c = f.get(Scope.PSAP, "c")
    assert (c.routed, c.answered, c.rerouted, c.failed) == (2, 0, 1, 1)
    assert c.answer_ratio == 0.0
    assert f.get(Scope.REGION, "west").answered == 5
    assert (f.get(Scope.REGION, "east").rerouted, f.get(Scope.REGION, "east").failed) == (1, 1)
    assert f.errors == {503: 1}
    assert f.errors_to_callers == {504: 1}
    assert f.unanswered[("psap", "c")] == 2 and f.unanswered[("statewide", "all")] == 1


def test_window_slides_and_test_calls_are_apart():
    w = Watch(PSAPS, REGIONS, window=60)
    answered(w, 4, "sip:psap-a@demo.firebox.test", T0)
    probe = Call("probe-1", to="<urn:service:test.sos>")
    for e in (probe.start(), probe.invite(), probe.route("sip:psap-a@demo.firebox.test"), probe.response(200), probe.end()):
        w.log_event(e, T0 + 10)
    assert w.figures(T0 + 30).get(Scope.PSAP, "a").answered == 4
    assert w.figures(T0 + 30).test_calls == 1
    assert w.figures(T0 + 61).get(Scope.PSAP, "a").answered == 0  # slid out
    assert w.totals[("answered", "psap", "a")] == 4  # totals never slide


def test_volume_against_the_hourly_profile():
    assert sum(DEFAULT_PROFILE) == pytest.approx(8800)
    assert len(massachusetts_profile(100)) == 24
    w = Watch(PSAPS, REGIONS, volume_window=3600)
    answered(w, 10, "sip:psap-a@demo.firebox.test", T0)
    young = w.figures(T0 + 360).volume  # watching for 6 minutes: 6 minutes' worth expected
    assert young.expected == pytest.approx(DEFAULT_PROFILE[12] / 10)
    v = w.figures(T0 + 3599).volume
    assert v.hour == 12  # Boston local time
    assert v.observed == 10
    assert v.expected == pytest.approx(DEFAULT_PROFILE[12] * 3599 / 3600)
    assert v.ratio == pytest.approx(10 / v.expected)
    with pytest.raises(ValueError, match="24 non-negative"):
        Watch(PSAPS, profile=[1.0] * 23)


def test_states_and_bad_events():
    w = Watch(PSAPS, REGIONS)
    note = w.state("queue", "sip:psap-a@demo.firebox.test", "Full", T0)
    assert not note.usable and note.since == T0
    assert w.state("queue", "sip:psap-a@demo.firebox.test", "Full", T0 + 5).since == T0  # unchanged: same note
    assert w.state("element", EL, "Normal", T0).usable
    with pytest.raises(ValueError, match="kind"):
        w.state("gizmo", "x", "Normal", T0)
    w.log_event({"logEventType": "CallSignalingMessageLogEvent", "callIdSip": "x"}, T0)  # no text
    w.log_event("not an event", T0)
    assert w.rejected == 2


def test_a_busy_psap_overflowing_to_its_alternate_is_not_failing():
    """A PSAP that answers busy (its overflow: 486, 480, 600, 503 with Retry-After) is
    alive; its calls answered by an alternate are ``overflowed``, outside its answer ratio.
    A bare 503 (a proxy in front of a dead PSAP) is a reroute and counts against it."""
    w = Watch(PSAPS, REGIONS)
    uri_c, uri_a = "sip:psap-c@demo.firebox.test", "sip:psap-a@demo.firebox.test"
    for i, (status, extra) in enumerate([(486, ""), (480, ""), (503, "Retry-After: 10\r\n"), (503, "")]):
        c = Call(f"busy-{i}")
        for e in (c.start(), c.invite(), c.route(uri_c), c.response(status, extra=extra), c.route(uri_a, "failover"),
                  c.response(200), c.response(200, incoming=False), c.end()):  # fmt: skip
            w.log_event(e, T0 + i)
    c_counts = w.figures(T0 + 5).get(Scope.PSAP, "c")
    assert (c_counts.overflowed, c_counts.rerouted, c_counts.answered) == (3, 1, 0)
    assert c_counts.settled == 1  # only the bare 503 is held against it


def test_a_call_set_up_through_another_node_is_not_counted_when_its_bye_passes_here():
    """In a cluster a node logs the BYE of a call another node set up (that node died): the
    watch sees its signalling and CallEnd but never its start; not a failed call here."""
    w = Watch(PSAPS, REGIONS, ingresses={"10.0.0.0/8": "carrier-x"})
    other = Call("adopted-1")
    bye = f"BYE sip:psap SIP/2.0\r\nCall-ID: {other.sip}\r\nCSeq: 2 BYE\r\n\r\n"
    w.log_event(CallSignalingMessageLogEvent(timestamp=ts(), text=bye, direction=Direction.INCOMING,
                                             ip_address_port="10.1.2.3:5060", **other.ids), T0)  # fmt: skip
    w.log_event(other.response(200, method="BYE"), T0)
    w.log_event(other.end(), T0)
    f = w.figures(T0 + 1).get(Scope.STATEWIDE)
    assert (f.entered, f.answered, f.failed) == (0, 0, 0)
    # This node's own unanswered call still counts as failed.
    lost = Call("lost-2")
    for e in (lost.start(), lost.invite(), lost.route("sip:psap-c@demo.firebox.test"), lost.end()):
        w.log_event(e, T0 + 2)
    assert w.figures(T0 + 3).get(Scope.STATEWIDE).failed == 1
