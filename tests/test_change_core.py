"""Safe rule changes, sans-I/O: stages, diff, signature, the invariant (the Massachusetts rule
is refused), the shadow report, calls rebuilt from i3 log events."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firebox import jws as jwslib
from firebox.bcf.marking import CallKind
from firebox.bcf.protection import BcfRules
from firebox.change.core import (
    TRANSITIONS,
    CanaryScope,
    Change,
    ChangeError,
    ChangeKind,
    Op,
    RecentCall,
    Stage,
    assess,
    diff,
    emergency_corpus,
    next_stage,
    recent_calls_from_events,
    sign_change,
    verify_change,
    with_assessment,
)
from firebox.esrp.policy import CallMedium, Chains, PsapChain, RuleSet

SOURCES = {"192.0.2.0/24": "carrier-a", "198.51.100.0/24": "carrier-b"}
MASSACHUSETTS = [{"id": "block-invites", "action": "reject", "methods": ["INVITE"], "reason": "firewall push"}]


def _chains() -> Chains:
    return Chains([
        PsapChain("boston", "Boston", "sip:boston@psap.example", "sip:+16175550001@gw.example;user=phone"),
        PsapChain("cambridge", "Cambridge", "sip:cambridge@psap.example", "sip:+16175550002@gw.example;user=phone",
                  alternates=("boston",)),
    ], catch_all="sip:catchall@gw.example")  # fmt: skip


def test_transition_table():
    assert next_stage(Stage.SHADOW, Op.STAGE) is Stage.CANARY
    assert next_stage(Stage.CANARY, Op.PROMOTE) is Stage.FULL
    assert next_stage(Stage.FULL, Op.ROLLBACK) is Stage.ROLLED_BACK
    with pytest.raises(ChangeError) as err:
        next_stage(Stage.SHADOW, Op.PROMOTE)  # a change reaches every call only after a canary
    assert err.value.status == 409 and "from shadow only" in str(err.value)
    with pytest.raises(ChangeError, match="final"):
        next_stage(Stage.REFUSED, Op.STAGE)
    assert not any(s in (Stage.REFUSED, Stage.ROLLED_BACK) for s, _ in TRANSITIONS)


def test_corpus_covers_every_carrier_and_911_form():
    corpus = emergency_corpus(SOURCES)
    assert {c.source_id for c in corpus} == {"carrier-a", "carrier-b"}
    a = [c for c in corpus if c.source_id == "carrier-a"]
    assert {c.request_uri for c in a} >= {"urn:service:sos", "tel:911", "sip:911@bcf.invalid;user=phone"}
    assert {c.method for c in a} == {"INVITE", "MESSAGE"}
    assert {c.kind for c in a} == {CallKind.EMERGENCY, CallKind.TEST}
    assert all(c.source_ip == "192.0.2.1" for c in a)


def test_massachusetts_rule_is_refused_naming_the_calls():
    result = assess(ChangeKind.BCF, BcfRules(), BcfRules.from_dicts(MASSACHUSETTS), sources=SOURCES)
    assert result.refused
    rejected = [h for h in result.hits if h.action == "reject"]
    # every INVITE form of both carriers (4 emergency + the test call), not the MESSAGEs
    assert len(rejected) == 10
    assert {h.source_id for h in rejected} == {"carrier-a", "carrier-b"}
    assert all(h.rule_id == "block-invites" and h.method == "INVITE" for h in rejected)
    assert any("carrier-a: INVITE tel:911" == h.call for h in rejected)
    assert any("every emergency voice (INVITE) call from known carrier carrier-b" in r for r in result.reasons)


def test_divert_of_every_call_of_a_carrier_is_refused_but_of_some_allowed():
    all_of_a = BcfRules.from_dicts([{"id": "d", "action": "divert", "sources": ["carrier-a"]}])
    result = assess(ChangeKind.BCF, BcfRules(), all_of_a, sources=SOURCES)
    assert result.refused and {h.action for h in result.hits} == {"divert"}
    assert all(h.source_id == "carrier-a" for h in result.hits)
    only_tests = BcfRules.from_dicts([{"id": "t", "action": "divert", "kinds": ["test"]}])
    assert not assess(ChangeKind.BCF, BcfRules(), only_tests, sources=SOURCES).refused
    unknown = BcfRules.from_dicts([{"id": "flood", "action": "reject", "networks": ["203.0.113.0/24"]}])
    assert not assess(ChangeKind.BCF, BcfRules(), unknown, sources=SOURCES).refused


def test_reject_of_recent_logged_call_from_known_carrier_is_a_hit_and_shadow_reports():
    recent = [
        RecentCall("call-1", "INVITE", "urn:service:sos", "192.0.2.7", "carrier-a", CallKind.EMERGENCY, "urn:service:sos"),
        RecentCall("call-2", "INVITE", "urn:service:sos", "203.0.113.9", "ip-203.0.113.9", CallKind.EMERGENCY,
                   "urn:service:sos"),
    ]  # fmt: skip
    rules = BcfRules.from_dicts([{"id": "x", "action": "divert", "networks": ["192.0.2.7/32", "203.0.113.0/24"]}])
    result = assess(ChangeKind.BCF, BcfRules(), rules, sources=SOURCES, recent=recent)
    assert not result.refused  # one address of carrier-a, not all its calls
    assert [(s.call, s.effect, s.before, s.after) for s in result.shadow] == [
        ("call-1", "diverted", "allow", "divert"), ("call-2", "diverted", "allow", "divert")]
    rejecting = BcfRules.from_dicts([{"id": "y", "action": "reject", "networks": ["192.0.2.7/32"]}])
    refused = assess(ChangeKind.BCF, BcfRules(), rejecting, sources=SOURCES, recent=recent)
    assert refused.refused and [h.call for h in refused.hits] == ["call-1"]


def test_routing_busy_for_a_whole_area_is_refused_and_moves_reported():
    chains = _chains()
    busy = RuleSet.from_dicts([{"id": "busy-cambridge", "priority": 10,
                                "conditions": [{"type": "ecrf_uri", "uris": ["sip:cambridge@psap.example"]}],
                                "actions": [{"type": "busy", "cause": "maintenance"}]}])  # fmt: skip
    result = assess(ChangeKind.ROUTING, RuleSet(), busy, sources=SOURCES, chains=chains)
    assert result.refused and "cambridge's area" in result.reasons[0]
    assert {h.action for h in result.hits} == {"busy"}

    move = RuleSet.from_dicts([{"id": "to-boston", "priority": 10,
                                "conditions": [{"type": "ecrf_uri", "uris": ["sip:cambridge@psap.example"]}],
                                "actions": [{"type": "route", "psap": "boston"}]}], chains)  # fmt: skip
    recent = [RecentCall("c1", "INVITE", "urn:service:sos", None, "carrier-a", CallKind.EMERGENCY, "urn:service:sos",
                         CallMedium.VOICE, "tel:+16175550123", "sip:cambridge@psap.example")]  # fmt: skip
    moved = assess(ChangeKind.ROUTING, RuleSet(), move, sources=SOURCES, chains=chains, recent=recent)
    assert not moved.refused
    assert [(s.call, s.effect, s.before, s.after, s.rule_id) for s in moved.shadow] == [
        ("c1", "moved", "cambridge", "boston", "to-boston")]


def test_timed_routing_rule_checked_over_the_week():
    chains = _chains()
    nights = RuleSet.from_dicts([{"id": "nights-busy", "priority": 10, "conditions": [
        {"type": "time", "timezone": "America/New_York", "days": ["sat"], "ranges": ["02:00-03:00"]}],
        "actions": [{"type": "busy"}]}])  # fmt: skip
    result = assess(ChangeKind.ROUTING, RuleSet(), nights, sources=SOURCES, chains=chains)
    assert result.refused and all("(at " in r for r in result.reasons)


def test_diff_lines():
    d = diff([{"id": "a", "action": "allow"}, {"id": "b", "action": "reject"}],
             [{"id": "b", "action": "divert"}, {"id": "c", "action": "allow"}], ordered=True)  # fmt: skip
    assert [r["id"] for r in d.added] == ["c"] and [r["id"] for r in d.removed] == ["a"]
    assert d.changed == {"b": {"action": ("reject", "divert")}} and d.moved == {"b": (1, 0)}
    assert d.lines()[2] == "~ rule 'b' action: \"reject\" -> \"divert\""
    assert diff([{"id": "a"}], [{"id": "a"}]).lines() == ["no change"]


def test_signature_covers_the_change():
    key = Ed25519PrivateKey.generate()
    change = Change("chg-1", 3, ChangeKind.BCF, "demo-bcf", "ops@example", [], MASSACHUSETTS, 1_700_000_000.0)
    sign_change(change, key, kid="node")
    assert verify_change(change, keys=[key.public_key()]).signer == "node"
    change.after = []
    with pytest.raises(jwslib.JwsError, match="does not cover"):
        verify_change(change, keys=[key.public_key()])
    round_trip = Change.from_dict(with_assessment(change, assess(ChangeKind.BCF, BcfRules(), BcfRules(),
                                                                 sources=SOURCES), 5.0).to_dict())  # fmt: skip
    assert round_trip.stage is Stage.SHADOW and round_trip.signature == change.signature


def test_scope_parsing():
    assert CanaryScope.from_dict({"sources": ["carrier-a"]}).sources == ("carrier-a",)
    with pytest.raises(ChangeError, match="scope.region: unknown member"):
        CanaryScope.from_dict({"region": "x"})
    with pytest.raises(ChangeError, match="needs sources"):
        CanaryScope.from_dict({})


def test_recent_calls_from_logged_events():
    invite = ("INVITE urn:service:sos SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-1\r\n"
              "From: <sip:+16175550123@carrier.example>;tag=1\r\nTo: <urn:service:sos>\r\nCall-ID: abc@x\r\n"
              "CSeq: 1 INVITE\r\nP-Asserted-Identity: <tel:+16175550123>\r\nContent-Length: 0\r\n\r\n")  # fmt: skip
    events = [
        {"logEventType": "CallSignalingMessageLogEvent", "callIdSip": "abc@x", "direction": "incoming",
         "text": invite, "ipAddressPort": "192.0.2.9:5060"},
        {"logEventType": "RouteLogEvent", "callIdSip": "abc@x", "recipientUri": "sip:boston@psap.example",
         "policyQueueName": "sip:boston@psap.example"},
        {"logEventType": "CallSignalingMessageLogEvent", "callIdSip": "zzz", "direction": "incoming", "text": "garbage"},
    ]  # fmt: skip
    [call] = recent_calls_from_events(events, SOURCES)
    assert (call.label, call.source_id, call.source_ip, call.kind) == ("abc@x", "carrier-a", "192.0.2.9", CallKind.EMERGENCY)
    assert call.ecrf_uri == call.routed_to == "sip:boston@psap.example"
    assert call.callback and "+16175550123" in call.callback
