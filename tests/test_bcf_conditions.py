"""The BCF's element conditions (issue 6): a TDoS seen in the aggregate (eight sources each
under the per-source limit), its suspect calls marked, deprioritized and diverted (never
rejected) while carriers' calls pass untouched, the attack's end; an identifier counter at
its ceiling raised as a condition while calls stay marked; and the detector turning both
into outages with their cause, at once and without a notice per counted call."""

from __future__ import annotations

from itertools import count

import pytest

from firebox.bcf import Action, Bcf, RateLimit
from firebox.bcf.conditions import BcfCondition, ConditionKind, IdHealth, TdosConfig, TdosGuard, prefix_of
from firebox.monitor.detector import Detector, OutageScope, UpdateKind
from firebox.monitor.watch import ConditionNote
from firebox.sim.faults import ExhaustedCounter
from firebox.sip import parse_message

FQDN = "bcf.mass911.example"
CARRIERS = {"192.0.2.0/24": "carrier-a"}


def invite(n: int, *, pai: str = "<tel:+16175550100>", method: str = "INVITE") -> object:
    body = b"v=0\r\n"
    return parse_message(
        (
            f"{method} urn:service:sos SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-{n}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:+1900555{n % 10000:04d}@bad.example>;tag=t{n}\r\n"
            "To: <urn:service:sos>\r\n"
            f"Call-ID: {n}-flood@bad.example\r\n"
            f"CSeq: 1 {method}\r\n"
            f"P-Asserted-Identity: {pai}\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )


def make_bcf(**kw) -> Bcf:
    n = count(1)
    return Bcf(FQDN, sources=CARRIERS, rate=RateLimit(per_second=5.0, burst=10.0),
               call_id_factory=lambda f: f"urn:emergency:uid:callid:c{next(n)}:{f}", **kw)  # fmt: skip


def flood(bcf: Bcf, start: float, seconds: float, per_second: float, sources: int = 8, first: int = 0) -> list:
    """Calls from 203.0.113.2.. each under the per-source limit; returns the outcomes."""
    out = []
    steps = int(seconds * per_second)
    for i in range(steps):
        ip = f"203.0.113.{2 + (i % sources)}"
        out.append(bcf.process(invite(first + i), ip, start + i / per_second))
    return out


def test_prefix_of():
    assert prefix_of("203.0.113.77") == "203.0.113.0/24"
    assert prefix_of("2001:db8:1:2::9") == "2001:db8:1::/48"
    assert prefix_of("not an address") is None and prefix_of(None) is None
    with pytest.raises(ValueError):
        TdosConfig(share=0)


def test_eight_sources_under_the_per_source_limit_are_an_attack_and_are_screened_not_rejected():
    bcf = make_bcf()
    seen: list[BcfCondition] = []
    bcf.on_condition(seen.append)
    # A carrier's ordinary traffic: 1 call a second for 10 s, nothing happens.
    for i in range(10):
        assert bcf.process(invite(i), "192.0.2.10", float(i)).action is Action.ALLOW
    assert seen == []
    # The flood: 8 sources x 2 calls a second each (under the limit of 5/s per source).
    outcomes = flood(bcf, 10.0, 5.0, 16.0, first=1000)
    assert all(o.verdict.reason != "source over its rate limit" for o in outcomes)
    (start,) = seen
    assert start.kind is ConditionKind.TDOS and start.active and start.category == "attack"
    assert start.scope == ("203.0.113.0/24",)
    assert "many unknown sources in one network" in start.cause and "203.0.113.0/24" in start.cause
    assert start.figures["unvetted_sources"] == 8 and "ip-203.0.113.2" in start.figures["sources"]
    # Counts are figures, not cause: the cause text has no digits of a count in it.
    assert str(start.figures["unvetted_calls"]) not in start.cause.replace("203.0.113.0/24", "")
    flagged = [o for o in outcomes if o.suspect]
    assert flagged, "calls after the flag are suspect"
    # from the flag on, every call of the flood is suspect
    assert all(o.suspect for o in outcomes[outcomes.index(flagged[0]):])
    for o in flagged:
        # never rejected: diverted (screening) with a callback record, marked, lowest priority
        assert o.action is Action.DIVERT and o.response is None and o.request is not None
        assert o.callback is not None and o.callback.callback == "tel:+16175550100"
        assert o.request.headers.get("Resource-Priority") == "esnet.0"
        assert o.marked is not None and o.marked.call_id.startswith("urn:emergency:uid:callid:")
    # A carrier's call during the attack: untouched.
    ok = bcf.process(invite(5000), "192.0.2.10", 15.1)
    assert ok.action is Action.ALLOW and not ok.suspect
    assert ok.request.headers.get("Resource-Priority") != "esnet.0"
    # Attested by an upstream verifier: not suspect either.
    attested = bcf.process(invite(5001, pai="<tel:+16175550101;verstat=TN-Validation-Passed>"), "203.0.113.50", 15.2)
    assert not attested.suspect and attested.action is Action.ALLOW
    assert bcf.tdos.totals["suspect"] == len(flagged)


def test_the_attack_ends_after_a_quiet_spell_and_scope_changes_are_the_only_updates():
    guard = TdosGuard(FQDN, TdosConfig(window=10.0, clear_after=5.0))
    seen: list[BcfCondition] = []
    guard.listeners.append(seen.append)
    for i in range(40):
        guard.observe(f"ip-203.0.113.{2 + i % 8}", f"203.0.113.{2 + i % 8}", False, i * 0.1)
    assert [c.active for c in seen] == [True]
    # more of the same: no new event (counts tick, nothing material)
    for i in range(40, 80):
        guard.observe(f"ip-203.0.113.{2 + i % 8}", f"203.0.113.{2 + i % 8}", False, i * 0.1)
    assert len(seen) == 1
    # a second network joins: a wider scope, one update
    for i in range(8):
        guard.observe(f"ip-198.51.100.{i}", f"198.51.100.{i}", False, 8.0 + i * 0.01)
    assert len(seen) == 2 and set(seen[-1].scope) == {"203.0.113.0/24", "198.51.100.0/24"}
    assert seen[-1].since == seen[0].since
    # silence: the window empties by 18 s; quiet from the first look (20 s), 5 s more
    assert guard.tick(20.0) is None and guard.active is not None
    assert guard.tick(24.9) is None
    end = guard.tick(25.0)
    assert end is not None and not end.active and guard.active is None and end.since == seen[0].since
    assert not guard.suspect(False)


def test_short_or_silent_calls_from_unvetted_sources_are_evidence():
    guard = TdosGuard(FQDN, TdosConfig(min_calls=5, share=0.9, short_calls=5, prefix_sources=50))
    # one source among many carrier calls: no share, no spread
    for i in range(20):
        guard.observe("carrier-a", "192.0.2.1", True, i * 0.1)
    for i in range(6):
        guard.observe("ip-203.0.113.9", "203.0.113.9", False, 2.0 + i * 0.1)
    assert guard.active is None
    for i in range(5):
        guard.call_ended(False, 0.8, 3.0 + i * 0.1)  # bots hang up within a second
    assert guard.active is not None and "bursts of short or silent calls" in guard.active.cause
    assert guard.suspect(False) and not guard.suspect(True)


def test_an_exhausted_counter_is_raised_while_every_call_stays_marked_and_clears_after():
    bcf = make_bcf()
    seen: list[BcfCondition] = []
    bcf.on_condition(seen.append)
    counter = ExhaustedCounter("callid", 10, 10)
    counter.next = 11
    bcf._call_id = counter  # the fault's one hook, as sim.faults.CounterFault does
    out = bcf.process(invite(1), "192.0.2.10", 100.0)
    assert out.action is Action.ALLOW and out.marked is not None
    assert out.marked.call_id.startswith("urn:emergency:uid:callid:")  # the fallback allocator's
    assert any("fallback identifiers used" in line for line in out.log)
    (raised,) = seen
    assert raised.kind is ConditionKind.CALL_ID and raised.active and "OverflowError" in raised.cause
    bcf.process(invite(2), "192.0.2.10", 100.5)
    assert len(seen) == 1 and bcf.ids.failures == 2
    bcf._call_id = lambda f: f"urn:emergency:uid:callid:new:{f}"  # healed
    bcf.process(invite(3), "192.0.2.10", 101.0)
    assert len(seen) == 1  # not yet clear_after (2 s) since the last failure
    bcf.process(invite(4), "192.0.2.10", 103.0)
    assert [c.active for c in seen] == [True, False]
    health = IdHealth(FQDN)
    assert health.ok(0.0) is None


def test_the_detector_declares_the_attack_at_once_and_clears_it():
    d = Detector({"a": "sip:psap-a@x"}, {"a": "west"})
    cond = BcfCondition(ConditionKind.TDOS, FQDN, True, 50.0, 51.0, "TDoS attack on x from 203.0.113.0/24: y",
                        ("203.0.113.0/24",), {"unvetted_calls": 40}, "attack")  # fmt: skip
    note = ConditionNote.of(cond, 1000.0)
    assert note.since == 999.0 and note.key == f"{FQDN} tdos"
    d.observe_condition(note)
    (new,) = d.evaluate(1000.0)
    o = new.outage
    assert (new.kind, o["scope"], o["key"], o["state"], o["kind"]) == (UpdateKind.NEW, "element", f"{FQDN} tdos",
                                                                       "confirmed", "attack")  # fmt: skip
    assert o["cause"].startswith("TDoS attack") and o["figures"]["unvetted_calls"] == 40
    # the counts move: figures follow, no notice
    d.observe_condition(ConditionNote.of(BcfCondition(ConditionKind.TDOS, FQDN, True, 50.0, 52.0, cond.cause,
                                                      cond.scope, {"unvetted_calls": 90}, "attack"), 1001.0))  # fmt: skip
    assert d.evaluate(1001.0) == []
    assert d.open[(OutageScope.ELEMENT, f"{FQDN} tdos")].figures["unvetted_calls"] == 90
    d.observe_condition(ConditionNote.of(BcfCondition(ConditionKind.TDOS, FQDN, False, 50.0, 60.0, cond.cause,
                                                      cond.scope, {}, "attack"), 1010.0))  # fmt: skip
    (end,) = d.evaluate(1010.0)
    assert end.kind is UpdateKind.CLEARED and end.outage["end"] is not None
