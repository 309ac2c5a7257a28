"""The outage detector (sans-I/O): probe results from the planner's probes judged as the
runner judges them, figures from a Watch fed with log events, states, configuration changes;
time as an argument."""

from __future__ import annotations

import pytest

from firebox.monitor.detector import TRANSITIONS, Detector, DetectorConfig, OutageScope, OutageState, Signal, UpdateKind
from firebox.monitor.probes import Ingress, ProbeAnswer, ProbePlanner, ProbeTarget
from firebox.monitor.watch import Watch
from test_monitor_watch import PSAPS, T0, answered

QUEUES = {pid: uri for uri, pid in PSAPS.items()}
REGIONS = {"a": "west", "b": "west", "c": "east"}
INGRESS = Ingress("bcf-1", "127.0.0.1", 5070)
TARGETS = [ProbeTarget(pid, uri, -71.0, 42.0, REGIONS[pid]) for pid, uri in QUEUES.items()]
OK = {pid: ProbeAnswer(200, "OK", f"<sip:psap-{pid}@127.0.0.1:5099>") for pid in QUEUES}


class Harness:
    """Probes every PSAP once per round (period 1 s) and feeds the detector."""

    def __init__(self, config: DetectorConfig | None = None, ingresses=(INGRESS,)):
        self.planner = ProbePlanner(list(ingresses), TARGETS, period=1.0, start=T0)
        self.detector = Detector(QUEUES, REGIONS, ingresses=[i.name for i in ingresses], config=config)
        self.now = T0
        self.updates = []

    def round(self, answers: dict[str, ProbeAnswer] | None = None, by_ingress=None) -> list:
        self.now += 1.0
        out = []
        for probe in self.planner.due(self.now):
            answer = (by_ingress or {}).get(probe.ingress.name, (answers or OK).get(probe.target.psap_id, OK[probe.target.psap_id]))
            if isinstance(answer, dict):
                answer = answer.get(probe.target.psap_id, OK[probe.target.psap_id])
            self.detector.observe_probe(self.planner.judge(probe, answer, self.now))
            self.planner.finished(probe)
            out += self.detector.evaluate(self.now)
        self.updates += out
        return out


def test_the_table_has_hysteresis():
    assert TRANSITIONS[(OutageState.CONFIRMED, Signal.RECOVERING)] is OutageState.CONFIRMED
    assert TRANSITIONS[(OutageState.CONFIRMED, Signal.HEALTHY)] is OutageState.CLEARED
    assert (None, Signal.HEALTHY) not in TRANSITIONS
    with pytest.raises(ValueError, match="ratios"):
        DetectorConfig(suspect_ratio=0.95, clear_ratio=0.9)


def test_a_silent_psap_is_suspected_confirmed_and_cleared_after_two_good_probes():
    h = Harness()
    assert h.round() == [] and h.round() == []
    rerouted = {"c": ProbeAnswer(200, "OK", "<sip:psap-a@127.0.0.1:5099>")}  # c silent: its alternate a answers
    first = h.round(rerouted)
    assert [(u.kind, u.outage["scope"], u.outage["key"], u.outage["state"]) for u in first] == [
        (UpdateKind.NEW, "psap", "c", "suspected")]
    assert "answered by another PSAP instead" in first[0].outage["cause"]
    second = h.round(rerouted)
    assert [(u.kind, u.outage["state"]) for u in second] == [(UpdateKind.CONFIRMED, "confirmed")]
    assert second[0].outage["confirmed_at"] is not None
    assert h.round() == []  # one good probe: still confirmed (hysteresis)
    assert h.detector.open[(OutageScope.PSAP, "c")].state is OutageState.CONFIRMED
    cleared = h.round()
    assert [(u.kind, u.outage["state"]) for u in cleared] == [(UpdateKind.CLEARED, "cleared")]
    assert cleared[0].outage["end"] is not None and not h.detector.open
    assert h.detector.recent[-1].id == cleared[0].outage["id"]


def test_a_flapping_psap_does_not_open_and_close_outages_each_round():
    h = Harness()
    bad = {"c": ProbeAnswer(503, "Service Unavailable")}
    for _ in range(3):
        h.round(bad)
        h.round()
    # fail, ok, fail, ok...: suspected once, never confirmed, never cleared by a lone success
    kinds = [(u.kind, u.outage["key"]) for u in h.updates]
    assert kinds == [(UpdateKind.NEW, "c")]
    assert h.detector.open[(OutageScope.PSAP, "c")].state is OutageState.SUSPECTED


def test_every_probe_rejected_at_the_ingress_is_statewide_at_once_with_the_cause_and_the_change():
    h = Harness()
    h.round()
    h.detector.config_change("bcf-rules-v7", h.now)
    forbidden = {pid: ProbeAnswer(403, "Forbidden") for pid in QUEUES}
    updates = h.round(forbidden)
    statewide = [u for u in updates if u.outage["scope"] == "statewide"]
    assert statewide and statewide[-1].outage["state"] == "confirmed"  # one round of 3 PSAPs x 1 ingress
    cause = statewide[-1].outage["cause"]
    assert "SIP 403 Forbidden at ingress bcf-1, before any PSAP" in cause
    assert "since configuration change bcf-rules-v7" in cause
    assert statewide[-1].outage["config_change"] == "bcf-rules-v7"
    # a PSAP suspected before the statewide picture was complete is marked as within it;
    # none is opened once the statewide outage is open
    sid = statewide[-1].outage["id"]
    assert all(o.within == sid for o in h.detector.outages() if o.scope is not OutageScope.STATEWIDE)
    assert not [u for u in updates[updates.index(statewide[-1]):] if u.kind is UpdateKind.NEW and u.outage["scope"] != "statewide"]
    h.round(forbidden)
    h.round()
    assert h.detector.open[(OutageScope.STATEWIDE, "all")].state is OutageState.CONFIRMED
    h.round()
    assert not h.detector.outages()
    assert h.updates[-1].kind is UpdateKind.CLEARED


def test_one_ingress_failing_while_another_works_is_that_element():
    other = Ingress("bcf-2", "127.0.0.1", 5072)
    h = Harness(ingresses=(INGRESS, other))
    h.round()
    blocked = {"bcf-1": {pid: ProbeAnswer(403, "Forbidden") for pid in QUEUES}}
    h.round(by_ingress=blocked)
    h.round(by_ingress=blocked)
    scopes = {(o.scope, o.key, o.state) for o in h.detector.outages()}
    assert (OutageScope.ELEMENT, "ingress bcf-1", OutageState.CONFIRMED) in scopes
    assert not any(o.scope is OutageScope.STATEWIDE for o in h.detector.outages())


def test_passive_answer_ratio_and_no_calls_reaching_a_psap_and_calls_affected():
    w = Watch(PSAPS, REGIONS, window=300, profile=[0.0] * 24)  # no volume expectation here
    d = Detector(QUEUES, REGIONS, config=DetectorConfig(min_calls=5))
    answered(w, 10, "sip:psap-a@demo.firebox.test", T0)
    answered(w, 6, "sip:psap-c@demo.firebox.test", T0, answered_uri="sip:psap-a@demo.firebox.test")
    d.observe_figures(w.figures(T0 + 1))
    updates = d.evaluate(T0 + 1)
    assert [(u.outage["scope"], u.outage["key"], u.outage["state"]) for u in updates] == [("psap", "c", "confirmed")]
    assert "no calls reaching PSAP c (none answered there)" in updates[0].outage["cause"]
    # 12 more calls for c answered elsewhere: the outage is updated with the calls affected
    answered(w, 12, "sip:psap-c@demo.firebox.test", T0 + 2, answered_uri="sip:psap-b@demo.firebox.test")
    d.observe_figures(w.figures(T0 + 3))
    assert d.evaluate(T0 + 3) == []  # material, but the last notice is 2 s old: held
    d.observe_figures(w.figures(T0 + 31))
    later = d.evaluate(T0 + 31)
    assert [(u.kind, u.outage["calls_affected"]) for u in later] == [(UpdateKind.UPDATED, 12)]


def test_a_full_queue_is_suspected_and_an_element_down_is_confirmed():
    w = Watch(PSAPS, REGIONS)
    d = Detector(QUEUES, REGIONS)
    d.observe_state(w.state("queue", QUEUES["b"], "Full", T0))
    d.observe_state(w.state("element", "esrp-2.demo.firebox.test", "Down", T0))
    got = {(u.outage["scope"], u.outage["key"]): u.outage for u in d.evaluate(T0)}
    assert got[("psap", "b")]["state"] == "suspected" and "Full" in got[("psap", "b")]["cause"]
    assert got[("element", "esrp-2.demo.firebox.test")]["state"] == "confirmed"
    d.observe_state(w.state("queue", QUEUES["b"], "Active", T0 + 1))
    d.observe_state(w.state("element", "esrp-2.demo.firebox.test", "Normal", T0 + 1))
    assert {u.kind for u in d.evaluate(T0 + 1)} == {UpdateKind.CLEARED}
    assert not d.outages()


def test_a_volume_drop_is_suspected_statewide():
    w = Watch(PSAPS, REGIONS, volume_window=3600)
    d = Detector(QUEUES, REGIONS)
    answered(w, 3, "sip:psap-a@demo.firebox.test", T0)  # 3 in an hour at noon, hundreds expected
    d.observe_figures(w.figures(T0 + 60))
    assert d.evaluate(T0 + 60) == []  # a minute of watching says too little
    d.observe_figures(w.figures(T0 + 3599))
    (update,) = d.evaluate(T0 + 3599)
    assert (update.outage["scope"], update.outage["state"]) == ("statewide", "suspected")
    assert "call volume under 25% of the rate expected for hour 12" in update.outage["cause"]


def test_a_failing_psap_is_not_blamed_on_an_ingress_and_its_updates_are_not_spam():
    """Issue 6: one PSAP down, probed through two ingresses; its failed test calls are the
    PSAP's (it fails through every path), not each ingress's; while it stays down, the
    alternates answering its test calls in turn and the counts ticking send no updates."""
    a, b = Ingress("edge-a", "127.0.0.1", 5070), Ingress("edge-b", "127.0.0.1", 5072)
    h = Harness(DetectorConfig(update_interval=30.0), ingresses=(a, b))
    h.round()
    h.round()
    for n in range(12):
        # c is down; whoever of a / b answers its test calls changes every round
        other = "a" if n % 2 else "b"
        h.round({"c": ProbeAnswer(200, "OK", f"<sip:psap-{other}@127.0.0.1:5099>")})
    keys = {(u.outage["scope"], u.outage["key"]) for u in h.updates}
    assert keys == {("psap", "c")}, keys  # no ingress (element) outage at all
    kinds = [u.kind for u in h.updates]
    assert kinds == [UpdateKind.NEW, UpdateKind.CONFIRMED], kinds
    assert h.updates[-1].outage["cause"] == "test calls for PSAP c answered by another PSAP instead"
    assert h.detector.open[(OutageScope.PSAP, "c")].probes_failed >= 2  # the count is a figure


def test_a_material_change_is_notified_once_the_interval_has_passed():
    h = Harness(DetectorConfig(update_interval=5.0))
    h.round()
    h.round()
    silent = {"c": ProbeAnswer(408, "Request Timeout")}
    h.round(silent)
    h.round(silent)
    assert [u.kind for u in h.updates] == [UpdateKind.NEW, UpdateKind.CONFIRMED]
    # the failure changes kind (now answered by another PSAP): material, held until 5 s after
    # the last notice, then sent once
    moved = {"c": ProbeAnswer(200, "OK", "<sip:psap-a@127.0.0.1:5099>")}
    confirmed_at = h.now
    held = [h.round(moved) for _ in range(5)]
    # the cause turns at the second such round (the commonest failure of the run); the
    # notice waits for 5 s after the confirmation's, then goes once
    assert held[:4] == [[], [], [], []] and h.now - confirmed_at == 5.0
    assert [(u.kind, "answered by another PSAP" in u.outage["cause"]) for u in held[4]] == [(UpdateKind.UPDATED, True)]
    assert [h.round(moved) for _ in range(6)] == [[]] * 6  # nothing new: nothing sent
