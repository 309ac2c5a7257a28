"""The ESRP's Policy Routing Function (NENA-STA-010.3 section 4.2): every decision is an
ordered failover list that ends in a destination a person answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firebox.deployment import parse_deployment
from firebox.esrp.policy import (
    TERMINAL_KINDS,
    CallContext,
    CallMedium,
    Chains,
    DestinationKind,
    PolicyError,
    PsapChain,
    RuleSet,
    business_line_uri,
    chains_from_deployment,
    decide,
    load_rules,
)
from firebox.esrp.states import (
    Availability,
    ElementState,
    ElementStateValue,
    QueueState,
    QueueStateValue,
    ServiceName,
    ServiceState,
    ServiceStateValue,
    StateTable,
    uri_key,
)

# Cambridge and Somerville back each other up (a loop the walk must not follow forever);
# Boston backs up Cambridge and is backed up by Somerville; Regional is the night center.
DEPLOYMENT = """\
authority: {name: Test State 911, domain: state911.test, state: MA}
gis:
  layers:
    - {service: urn:service:sos, path: sos.geojson}
psaps:
  - id: cambridge
    name: Cambridge ECC
    uri: sip:ecc@psap.cambridge.test
    business_line: (617) 555-0100
    alternates: [somerville, boston]
  - id: somerville
    name: Somerville ECC
    uri: sip:ecc@psap.somerville.test
    business_line: 617-555-0101
    alternates: [cambridge]
  - id: boston
    name: Boston ECC
    uri: sip:ecc@psap.boston.test
    business_line: "6175550102"
    alternates: [somerville]
  - id: regional
    name: Regional Center
    uri: sip:ecc@regional.state911.test
    business_line: 508-555-0103
"""

GW = "pstn-gw.state911.test"
CAMBRIDGE = "sip:ecc@psap.cambridge.test"
SOMERVILLE = "sip:ecc@psap.somerville.test"
BOSTON = "sip:ecc@psap.boston.test"
REGIONAL = "sip:ecc@regional.state911.test"
BL = {
    "cambridge": f"sip:+16175550100@{GW};user=phone",
    "somerville": f"sip:+16175550101@{GW};user=phone",
    "boston": f"sip:+16175550102@{GW};user=phone",
    "regional": f"sip:+15085550103@{GW};user=phone",
}
CATCH_ALL = f"sip:+16175550199@{GW};user=phone"
TEST_QUEUE = "sip:test-calls@testdesk.state911.test"

NOW = datetime(2024, 6, 5, 16, 0, tzinfo=UTC)  # a Wednesday, noon in Boston
CALL = CallContext("call-1", callback="tel:+16175551234")

DEP = parse_deployment(DEPLOYMENT)


@pytest.fixture
def chains() -> Chains:
    return chains_from_deployment(DEP, GW)


def uris(decision) -> list[str]:
    return [d.uri for d in decision.destinations]


def kinds(decision) -> list[DestinationKind]:
    return [d.kind for d in decision.destinations]


def route(ecrf_uri, *, states=None, rules=(), chains, now=NOW, call=CALL):
    ruleset = rules if isinstance(rules, RuleSet) else load_rules(list(rules))
    return decide(call, ecrf_uri, states or StateTable(), ruleset, chains, now)


def queue(uri: str, state: QueueStateValue, length: int = 0, maximum: int = 10) -> QueueState:
    return QueueState(uri, length, maximum, state)


# --- chains from a deployment -----------------------------------------------------------------


def test_chains_from_deployment(chains):
    assert list(chains) == ["cambridge", "somerville", "boston", "regional"]
    cambridge = chains["cambridge"]
    assert cambridge.business_line == BL["cambridge"]
    assert cambridge.alternates == ("somerville", "boston")
    assert cambridge.element_id == "psap.cambridge.test" == cambridge.service_domain
    assert chains.default_psap == "cambridge"  # the first PSAP listed
    assert chains.psap_for_uri("SIP:ecc@PSAP.Cambridge.TEST;transport=tls") is cambridge


def test_business_line_uri():
    assert business_line_uri("(617) 555-0100", "gw.test:5060") == "sip:+16175550100@gw.test:5060;user=phone"
    assert business_line_uri("+1 617 555 0100", "gw.test") == "sip:+16175550100@gw.test;user=phone"
    with pytest.raises(ValueError, match="10-digit"):
        business_line_uri("555-0100", "gw.test")
    with pytest.raises(ValueError, match="PSTN gateway"):
        business_line_uri("6175550100", "gw test;x")


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"default_psap": "nowhere"}, "default_psap: 'nowhere' is not a PSAP here"),
        ({"backup": "nowhere"}, "backup: 'nowhere' is not a PSAP here"),
        ({"catch_all": "tel:911"}, "catch_all: 'tel:911' is not a sip: or sips: URI"),
        ({"catch_all": CAMBRIDGE}, "is a PSAP queue, not a last resort"),
    ],
)
def test_chain_configuration_errors(kwargs, text):
    with pytest.raises(PolicyError) as info:
        chains_from_deployment(DEP, GW, **kwargs)
    assert text in str(info.value)


def test_chains_need_somewhere_to_end():
    with pytest.raises(PolicyError, match="nowhere to end"):
        Chains([])
    with pytest.raises(PolicyError, match="alternate 'ghost' is not a PSAP here"):
        Chains([PsapChain("a", "A", "sip:a@a.test", BL["cambridge"], ("ghost",))])
    only_catch_all = Chains([], catch_all=CATCH_ALL)
    decision = decide(CALL, None, StateTable(), RuleSet(), only_catch_all, NOW)
    assert uris(decision) == [CATCH_ALL]


# --- routing by the ECRF's answer -------------------------------------------------------------


@pytest.mark.parametrize(("psap", "uri"), [("cambridge", CAMBRIDGE), ("somerville", SOMERVILLE), ("boston", BOSTON), ("regional", REGIONAL)])
def test_routes_to_the_ecrf_answer(chains, psap, uri):
    decision = route(uri, chains=chains)
    first = decision.destinations[0]
    assert (first.uri, first.kind, first.psap_id) == (uri, DestinationKind.PSAP, psap)
    assert first.reason == f"ECRF answer {uri}"
    assert not decision.busy and decision.matched_rules == []


def test_full_chain_order_with_backup():
    chains = chains_from_deployment(DEP, GW, backup="regional")
    decision = route(CAMBRIDGE, chains=chains)
    assert uris(decision) == [
        CAMBRIDGE, SOMERVILLE, BOSTON, REGIONAL,
        BL["cambridge"], BL["somerville"], BL["boston"], BL["regional"],
    ]
    assert kinds(decision) == [DestinationKind.PSAP, DestinationKind.ALTERNATE, DestinationKind.ALTERNATE, DestinationKind.BACKUP] + [DestinationKind.BUSINESS_LINE] * 4


def test_ecrf_answer_matches_like_a_sip_uri(chains):
    assert route("sip:ecc@PSAP.Boston.test;transport=tls", chains=chains).destinations[0].psap_id == "boston"


@pytest.mark.parametrize("ecrf_uri", [None, "sip:ecc@psap.elsewhere.test"])
def test_no_or_unknown_ecrf_answer_takes_the_default_route(chains, ecrf_uri):
    decision = route(ecrf_uri, chains=chains)
    assert decision.destinations[0].uri == CAMBRIDGE
    assert decision.destinations[0].reason.startswith("default route")
    assert "default route to cambridge" in decision.log[0]
    assert "sip:ecc@psap.elsewhere.test" not in uris(decision)

    other_default = chains_from_deployment(DEP, GW, default_psap="boston")
    assert route(ecrf_uri, chains=other_default).destinations[0].uri == BOSTON


def test_plain_mapping_of_chains_is_accepted(chains):
    plain = {k: chains[k] for k in chains}
    assert uris(route(BOSTON, chains=plain)) == uris(route(BOSTON, chains=chains))


# --- state: alternates, staleness -------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        queue(CAMBRIDGE, QueueStateValue.FULL, 10, 10),
        queue(CAMBRIDGE, QueueStateValue.INACTIVE),
        queue(CAMBRIDGE, QueueStateValue.DISABLED),
        queue(CAMBRIDGE, QueueStateValue.ACTIVE, 10, 10),
        ElementState("psap.cambridge.test", ElementStateValue.DOWN, "generator failure"),
        ServiceState(ServiceName.PSAP, "psap.cambridge.test", ServiceStateValue.UNSTAFFED),
    ],
    ids=["full", "inactive", "disabled", "active-at-max", "element-down", "unstaffed"],
)
def test_unusable_primary_goes_to_its_alternates(chains, state):
    states = StateTable()
    states.update(state, NOW - timedelta(seconds=10))
    decision = route(CAMBRIDGE, states=states, chains=chains)
    assert decision.destinations[0].uri == SOMERVILLE
    assert decision.destinations[0].kind is DestinationKind.ALTERNATE
    assert CAMBRIDGE not in uris(decision)
    # Its business line is still there: that is a person too.
    assert BL["cambridge"] in uris(decision)
    assert any(line.startswith("skip PSAP sip:ecc@psap.cambridge.test") for line in decision.log)


def test_every_queue_unusable_leaves_business_lines(chains):
    states = StateTable()
    for uri in (CAMBRIDGE, SOMERVILLE, BOSTON, REGIONAL):
        states.update(queue(uri, QueueStateValue.DISABLED), NOW)
    decision = route(CAMBRIDGE, states=states, chains=chains)
    assert uris(decision) == [BL["cambridge"], BL["somerville"], BL["boston"]]
    assert set(kinds(decision)) == {DestinationKind.BUSINESS_LINE}


def test_stale_state_is_unknown_but_usable(chains):
    states = StateTable(max_age=timedelta(hours=1))
    states.update(queue(CAMBRIDGE, QueueStateValue.FULL, 10, 10), NOW - timedelta(hours=2))
    decision = route(CAMBRIDGE, states=states, chains=chains)
    assert decision.destinations[0].uri == CAMBRIDGE
    assert decision.destinations[0].availability is Availability.UNKNOWN

    # The same state, fresh, excludes it.
    states.update(queue(CAMBRIDGE, QueueStateValue.FULL, 10, 10), NOW - timedelta(minutes=5))
    assert CAMBRIDGE not in uris(route(CAMBRIDGE, states=states, chains=chains))


def test_unknown_is_lower_preference_than_known_usable(chains):
    states = StateTable(max_age=timedelta(hours=1))
    states.update(queue(CAMBRIDGE, QueueStateValue.ACTIVE), NOW - timedelta(hours=3))  # stale
    states.update(queue(BOSTON, QueueStateValue.ACTIVE, 1, 10), NOW - timedelta(minutes=1))
    decision = route(CAMBRIDGE, states=states, chains=chains)
    assert uris(decision)[:3] == [BOSTON, CAMBRIDGE, SOMERVILLE]
    assert [d.availability for d in decision.destinations[:3]] == [Availability.USABLE, Availability.UNKNOWN, Availability.UNKNOWN]


def test_alternate_loops_are_deduplicated(chains):
    # cambridge -> somerville -> cambridge, boston -> somerville -> cambridge -> boston.
    for start in (CAMBRIDGE, SOMERVILLE, BOSTON):
        decision = route(start, chains=chains)
        keys = [uri_key(u) for u in uris(decision)]
        assert len(keys) == len(set(keys))
    # A PSAP's own alternates only: somerville's alternate (cambridge) is not followed, so
    # the business lines come after two tries, not after the whole state.
    boston = route(BOSTON, chains=chains)
    assert uris(boston)[:2] == [BOSTON, SOMERVILLE] and CAMBRIDGE not in uris(boston)
    assert boston.destinations[2].kind is DestinationKind.BUSINESS_LINE


def test_every_chain_ends_in_a_business_line(chains):
    states = StateTable()
    states.update(ElementState("psap.somerville.test", ElementStateValue.GOING_DOWN), NOW)
    for ecrf in (CAMBRIDGE, SOMERVILLE, BOSTON, REGIONAL, None, "sip:x@unknown.test"):
        decision = route(ecrf, states=states, chains=chains)
        assert decision.destinations[-1].kind is DestinationKind.BUSINESS_LINE
        assert decision.destinations[-1].uri.endswith(f"@{GW};user=phone")


def test_catch_all_is_last():
    chains = chains_from_deployment(DEP, GW, catch_all=CATCH_ALL)
    decision = route(CAMBRIDGE, chains=chains)
    assert decision.destinations[-1].uri == CATCH_ALL
    assert decision.destinations[-1].kind is DestinationKind.CATCH_ALL
    # A catch-all that is also a business line appears once, at the end.
    chains = chains_from_deployment(DEP, GW, catch_all=BL["somerville"])
    decision = route(CAMBRIDGE, chains=chains)
    assert uris(decision).count(BL["somerville"]) == 1 and uris(decision)[-1] == BL["somerville"]


# --- rules --------------------------------------------------------------------------------------

NIGHTS = {
    "id": "nights-to-regional",
    "priority": 100,
    "conditions": [{"type": "time", "timezone": "America/New_York", "ranges": ["22:00-06:00"]}],
    "actions": [{"type": "route", "psap": "regional", "cause": "night-consolidation"}],
}


@pytest.mark.parametrize(
    ("utc", "night"),
    [
        # Same UTC clock time either side of the spring change (10 March 2024, 02:00 EST -> 03:00 EDT).
        (datetime(2024, 3, 9, 10, 30, tzinfo=UTC), True),  # 05:30 EST
        (datetime(2024, 3, 11, 10, 30, tzinfo=UTC), False),  # 06:30 EDT
        # The night of the change itself.
        (datetime(2024, 3, 10, 3, 0, tzinfo=UTC), True),  # 22:00 EST on the 9th: start is inclusive
        (datetime(2024, 3, 10, 6, 59, tzinfo=UTC), True),  # 01:59 EST
        (datetime(2024, 3, 10, 7, 0, tzinfo=UTC), True),  # 03:00 EDT (02:00 never happened)
        (datetime(2024, 3, 10, 9, 59, tzinfo=UTC), True),  # 05:59 EDT
        (datetime(2024, 3, 10, 10, 0, tzinfo=UTC), False),  # 06:00 EDT: end is exclusive (05:00 in EST)
        # And either side of the autumn change (3 November 2024, 02:00 EDT -> 01:00 EST).
        (datetime(2024, 11, 2, 10, 30, tzinfo=UTC), False),  # 06:30 EDT
        (datetime(2024, 11, 4, 10, 30, tzinfo=UTC), True),  # 05:30 EST
        (datetime(2024, 11, 3, 5, 30, tzinfo=UTC), True),  # 01:30 EDT, the first time
        (datetime(2024, 11, 3, 6, 30, tzinfo=UTC), True),  # 01:30 EST, the second time
        (datetime(2024, 11, 4, 2, 59, tzinfo=UTC), False),  # 21:59 EST
        (datetime(2024, 11, 4, 3, 0, tzinfo=UTC), True),  # 22:00 EST
    ],
)
def test_night_rule_across_dst(chains, utc, night):
    decision = route(CAMBRIDGE, rules=[NIGHTS], chains=chains, now=utc)
    first = decision.destinations[0]
    if night:
        assert (first.uri, first.kind, first.cause) == (REGIONAL, DestinationKind.PSAP, "night-consolidation")
        assert decision.matched_rules == ["nights-to-regional"]
        # Cambridge's own chain still follows the night center.
        assert uris(decision)[1:4] == [CAMBRIDGE, SOMERVILLE, BOSTON]
    else:
        assert first.uri == CAMBRIDGE and decision.matched_rules == []


def test_time_rule_days_and_wrap_past_midnight(chains):
    friday_nights = {**NIGHTS, "conditions": [{**NIGHTS["conditions"][0], "days": ["fri"]}]}

    def at(*parts: int) -> datetime:
        return datetime(*parts, tzinfo=UTC)

    # Saturday 8 June 2024 02:00 EDT = 06:00 UTC: the tail of Friday night.
    assert route(CAMBRIDGE, rules=[friday_nights], chains=chains, now=at(2024, 6, 8, 6, 0)).destinations[0].uri == REGIONAL
    # Friday 7 June 23:00 EDT = 8 June 03:00 UTC.
    assert route(CAMBRIDGE, rules=[friday_nights], chains=chains, now=at(2024, 6, 8, 3, 0)).destinations[0].uri == REGIONAL
    # Sunday 9 June 02:00 EDT: Saturday night is not in the rule.
    assert route(CAMBRIDGE, rules=[friday_nights], chains=chains, now=at(2024, 6, 9, 6, 0)).destinations[0].uri == CAMBRIDGE
    # Friday 7 June 02:00 EDT: the tail of Thursday night.
    assert route(CAMBRIDGE, rules=[friday_nights], chains=chains, now=at(2024, 6, 7, 6, 0)).destinations[0].uri == CAMBRIDGE


def test_night_center_unusable_falls_back_to_the_ecrf_chain(chains):
    states = StateTable()
    states.update(queue(REGIONAL, QueueStateValue.FULL, 10, 10), NOW)
    decision = route(CAMBRIDGE, rules=[NIGHTS], states=states, chains=chains, now=datetime(2024, 6, 5, 6, 0, tzinfo=UTC))
    assert decision.matched_rules == ["nights-to-regional"]
    assert uris(decision)[0] == CAMBRIDGE
    assert BL["regional"] in uris(decision) and REGIONAL not in uris(decision)


CARRIER_A = {
    "id": "carrier-a-to-boston",
    "priority": 50,
    "conditions": [{"type": "source", "sources": ["*.carrier-a.test", "bcf1.state911.test"]}],
    "actions": [{"type": "route", "uri": BOSTON, "cause": "carrier-a-trunk"}],
}


@pytest.mark.parametrize(
    ("source", "to_boston"),
    [
        ("bcf.east.carrier-a.test", True),
        ("sip:bcf.west.carrier-a.test:5061;transport=tls", True),
        ("BCF1.state911.test", True),
        ("carrier-a.test", False),  # *.domain is subdomains only
        ("bcf.carrier-b.test", False),
        (None, False),
    ],
)
def test_call_source_rule(chains, source, to_boston):
    call = CallContext("c", source=source)
    decision = route(CAMBRIDGE, rules=[CARRIER_A], chains=chains, call=call)
    assert (decision.destinations[0].uri == BOSTON) is to_boston
    if to_boston:
        assert decision.destinations[0].kind is DestinationKind.PSAP
        assert decision.destinations[0].cause == "carrier-a-trunk"


TEST_CALLS = {
    "id": "test-calls",
    "priority": 1000,
    "conditions": [{"type": "call_type", "services": ["urn:service:test.sos"]}],
    "actions": [{"type": "route", "uri": TEST_QUEUE, "cause": "test-call"}],
}


def test_test_calls_go_to_the_test_queue(chains):
    test_call = CallContext("t", service_urn="urn:service:test.sos")
    decision = route(CAMBRIDGE, rules=[TEST_CALLS, NIGHTS], chains=chains, call=test_call)
    first = decision.destinations[0]
    assert (first.uri, first.kind, first.psap_id, first.cause) == (TEST_QUEUE, DestinationKind.POLICY, None, "test-call")
    assert decision.destinations[-1].kind is DestinationKind.BUSINESS_LINE
    # A real call is not a test call, and neither is a sub-service of sos.
    for urn in ("urn:service:sos", "urn:service:sos.police"):
        decision = route(CAMBRIDGE, rules=[TEST_CALLS], chains=chains, call=CallContext("r", service_urn=urn))
        assert decision.destinations[0].uri == CAMBRIDGE


def test_call_type_medium_and_service_hierarchy(chains):
    texts = {
        "id": "texts-to-boston",
        "priority": 10,
        "conditions": [{"type": "call_type", "media": ["text"], "services": ["urn:service:sos"]}],
        "actions": [{"type": "route", "psap": "boston"}],
    }
    police_text = CallContext("c", service_urn="urn:service:sos.police", medium=CallMedium.TEXT)
    assert route(CAMBRIDGE, rules=[texts], chains=chains, call=police_text).destinations[0].uri == BOSTON
    voice = CallContext("c", service_urn="urn:service:sos", medium=CallMedium.VOICE)
    assert route(CAMBRIDGE, rules=[texts], chains=chains, call=voice).destinations[0].uri == CAMBRIDGE
    test_text = CallContext("c", service_urn="urn:service:test.sos", medium=CallMedium.TEXT)
    assert route(CAMBRIDGE, rules=[texts], chains=chains, call=test_text).destinations[0].uri == CAMBRIDGE


def test_notify_action_does_not_change_the_route(chains):
    rule = {
        "id": "tell-supervisor",
        "priority": 5,
        "conditions": [{"type": "ecrf_uri", "uris": [CAMBRIDGE]}],
        "actions": [
            {"type": "notify", "target": "sip:supervisor@psap.cambridge.test", "reason": "watch list"},
            {"type": "notify", "target": "logger.state911.test"},
        ],
    }
    plain = route(CAMBRIDGE, chains=chains)
    decision = route(CAMBRIDGE, rules=[rule], chains=chains)
    assert uris(decision) == uris(plain)
    assert decision.matched_rules == ["tell-supervisor"]
    assert [(n.target, n.rule_id, n.call_id, n.reason) for n in decision.notifications] == [
        ("sip:supervisor@psap.cambridge.test", "tell-supervisor", "call-1", "watch list"),
        ("logger.state911.test", "tell-supervisor", "call-1", ""),
    ]
    assert route(BOSTON, rules=[rule], chains=chains).notifications == []


def test_notify_only_rules_do_not_stop_evaluation(chains):
    notify = {"id": "a-notify", "priority": 500, "actions": [{"type": "notify", "target": "ops.state911.test"}]}
    decision = route(CAMBRIDGE, rules=[notify, CARRIER_A], chains=chains, call=CallContext("c", source="x.carrier-a.test"))
    assert decision.matched_rules == ["a-notify", "carrier-a-to-boston"]
    assert decision.destinations[0].uri == BOSTON and len(decision.notifications) == 1


def test_priority_order_and_disabled_rules(chains):
    low = {"id": "low", "priority": 1, "actions": [{"type": "route", "psap": "somerville"}]}
    high = {"id": "high", "priority": 2, "actions": [{"type": "route", "psap": "boston"}]}
    assert route(CAMBRIDGE, rules=[low, high], chains=chains).destinations[0].uri == BOSTON
    assert route(CAMBRIDGE, rules=[low, {**high, "enabled": False}], chains=chains).destinations[0].uri == SOMERVILLE
    tie_a = {"id": "a", "priority": 3, "actions": [{"type": "route", "psap": "regional"}]}
    tie_b = {"id": "b", "priority": 3, "actions": [{"type": "route", "psap": "boston"}]}
    assert route(CAMBRIDGE, rules=[tie_b, tie_a], chains=chains).matched_rules == ["a"]


def test_queue_state_condition_on_the_candidate(chains):
    overflow = {
        "id": "overflow-to-regional",
        "priority": 10,
        "conditions": [{"type": "queue_state", "states": ["Full", "Inactive"]}],
        "actions": [{"type": "route", "psap": "regional", "cause": "overflow"}],
    }
    states = StateTable()
    states.update(queue(CAMBRIDGE, QueueStateValue.FULL, 10, 10), NOW)
    decision = route(CAMBRIDGE, rules=[overflow], states=states, chains=chains)
    assert decision.destinations[0].uri == REGIONAL and decision.destinations[0].cause == "overflow"
    assert CAMBRIDGE not in uris(decision)
    # Boston's queue is not Full: the rule does not apply to calls the ECRF sends there.
    assert route(BOSTON, rules=[overflow], states=states, chains=chains).destinations[0].uri == BOSTON
    # "Unknown" matches a queue with no fresh state.
    unknown = {**overflow, "conditions": [{"type": "queue_state", "states": ["Unknown"]}]}
    assert route(BOSTON, rules=[unknown], states=states, chains=chains).destinations[0].uri == REGIONAL


def test_element_state_condition(chains):
    rule = {
        "id": "esrp-b-down",
        "priority": 10,
        "conditions": [{"type": "element_state", "element": "esrp-b.state911.test", "states": ["Down", "GoingDown"]}],
        "actions": [{"type": "route", "psap": "boston"}],
    }
    states = StateTable()
    assert route(CAMBRIDGE, rules=[rule], states=states, chains=chains).destinations[0].uri == CAMBRIDGE
    states.update(ElementState("esrp-b.state911.test", ElementStateValue.GOING_DOWN), NOW)
    assert route(CAMBRIDGE, rules=[rule], states=states, chains=chains).destinations[0].uri == BOSTON


def test_busy_leaves_a_callback_record(chains):
    busy = {"id": "tdos-busy", "priority": 10, "conditions": [{"type": "source", "sources": ["*.attacker.test"]}], "actions": [{"type": "busy", "cause": "tdos"}]}
    call = CallContext("c9", source="bcf.attacker.test", callback="tel:+16175559876")
    decision = route(CAMBRIDGE, rules=[busy], chains=chains, call=call)
    assert decision.busy
    record = decision.callback
    assert record is not None
    assert (record.call_id, record.callback, record.rule_id, record.cause, record.created) == ("c9", "tel:+16175559876", "tdos-busy", "tdos", NOW)
    assert record.owner == decision.destinations[0] and record.owner.uri == CAMBRIDGE
    assert decision.destinations[-1].kind is DestinationKind.BUSINESS_LINE


def test_busy_without_a_callback_number_routes_the_call(chains):
    busy = {"id": "tdos-busy", "priority": 10, "actions": [{"type": "busy"}]}
    decision = route(CAMBRIDGE, rules=[busy], chains=chains, call=CallContext("c", callback=None))
    assert not decision.busy and decision.callback is None
    assert decision.destinations[0].uri == CAMBRIDGE
    assert any("busy not honoured" in line for line in decision.log)


def test_rule_routing_to_a_business_line_keeps_it_last(chains):
    rule = {"id": "to-line", "priority": 1, "actions": [{"type": "route", "uri": BL["cambridge"]}]}
    decision = route(CAMBRIDGE, rules=[rule], chains=chains)
    assert uris(decision).count(BL["cambridge"]) == 1
    assert decision.destinations[-1].kind is DestinationKind.BUSINESS_LINE


def test_route_to_unknown_psap_is_ignored_at_decision_time(chains):
    rules = RuleSet.from_dicts([{"id": "ghost", "priority": 1, "actions": [{"type": "route", "psap": "ghost"}]}])
    decision = route(CAMBRIDGE, rules=rules, chains=chains)
    assert decision.destinations[0].uri == CAMBRIDGE
    assert any("unknown PSAP 'ghost' ignored" in line for line in decision.log)


# --- loading and validation ----------------------------------------------------------------------


def test_rules_round_trip_and_load_from_yaml():
    text = """
- id: nights-to-regional
  priority: 100
  description: nights go to the regional center
  conditions:
    - {type: time, timezone: America/New_York, days: [Mon, tuesday, wed, thu, fri, sat, sun], ranges: ["22:00-06:00", "12:00-12:30"]}
    - {type: call_type, media: [voice, text], services: [urn:service:sos]}
  actions:
    - {type: route, psap: regional, cause: night-consolidation}
    - {type: notify, target: sip:supervisor@regional.state911.test}
- id: test-calls
  priority: 1000
  enabled: false
  conditions:
    - {type: call_type, services: [urn:service:test.sos]}
  actions:
    - {type: route, uri: "sip:test-calls@testdesk.state911.test"}
"""
    rules = load_rules(yaml.safe_load(text))
    assert [r.id for r in rules] == ["test-calls", "nights-to-regional"]
    assert load_rules(rules.to_dicts()) == rules
    dumped = rules.to_dicts()
    assert dumped[1]["conditions"][0]["days"] == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    assert dumped[1]["conditions"][0]["ranges"] == ["22:00-06:00", "12:00-12:30"]
    assert dumped[0]["enabled"] is False


def _rule(**overrides):
    base = {"id": "r1", "priority": 1, "conditions": [], "actions": [{"type": "route", "psap": "boston"}]}
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (_rule(conditions=[{"type": "time", "timezone": "America/Nowhere", "ranges": ["22:00-06:00"]}]),
         "rule 'r1': conditions[0].timezone: 'America/Nowhere' is not a known time zone"),
        (_rule(conditions=[{"type": "time", "timezone": "UTC", "ranges": ["25:00-06:00"]}]),
         "rule 'r1': conditions[0].ranges[0]: '25:00-06:00' is not a time of day"),
        (_rule(conditions=[{"type": "time", "timezone": "UTC", "ranges": ["10:00-10:00"]}]),
         "rule 'r1': conditions[0].ranges[0]: '10:00-10:00' is empty or all day"),
        (_rule(conditions=[{"type": "time", "timezone": "UTC", "ranges": ["night"]}]),
         "rule 'r1': conditions[0].ranges[0]: 'night' is not HH:MM-HH:MM"),
        (_rule(conditions=[{"type": "time", "timezone": "UTC", "days": ["funday"], "ranges": ["00:00-24:00"]}]),
         "rule 'r1': conditions[0].days[0]: 'funday' is not a day of the week"),
        (_rule(conditions=[{"type": "time", "timezone": "UTC"}]),
         "rule 'r1': conditions[0].ranges: missing"),
        (_rule(conditions=[{"type": "weather", "is": "rain"}]),
         "rule 'r1': conditions[0].type: 'weather' is not one of queue_state"),
        (_rule(conditions=[{"type": "queue_state", "states": ["Busy"]}]),
         "rule 'r1': conditions[0].states[0]: 'Busy' is not one of Active"),
        (_rule(conditions=[{"type": "queue_state", "states": ["Full"], "queu": CAMBRIDGE}]),
         "rule 'r1': conditions[0].queu: unknown key"),
        (_rule(conditions=[{"type": "element_state", "states": ["Down"], "element": "not a host"}]),
         "rule 'r1': conditions[0].element: 'not a host' is not an element id"),
        (_rule(conditions=[{"type": "call_type"}]), "rule 'r1': conditions[0]: needs media, services or both"),
        (_rule(conditions=[{"type": "call_type", "services": ["sos"]}]),
         "rule 'r1': conditions[0].services[0]: 'sos' is not a service URN"),
        (_rule(conditions=[{"type": "call_type", "media": ["fax"]}]),
         "rule 'r1': conditions[0].media[0]: 'fax' is not one of voice"),
        (_rule(conditions=[{"type": "source", "sources": "bcf.test"}]),
         "rule 'r1': conditions[0].sources: expected a non-empty list"),
        (_rule(conditions=[{"type": "ecrf_uri", "uris": ["http://psap.test"]}]),
         "rule 'r1': conditions[0].uris[0]: 'http://psap.test' is not a sip: or sips: URI"),
        (_rule(actions=[]), "rule 'r1': actions: a rule needs at least one action"),
        (_rule(actions=[{"type": "route"}]), "rule 'r1': actions[0]: needs exactly one of uri or psap"),
        (_rule(actions=[{"type": "route", "uri": CAMBRIDGE, "psap": "boston"}]), "rule 'r1': actions[0]: needs exactly one of uri or psap"),
        (_rule(actions=[{"type": "route", "psap": "boston"}, {"type": "busy"}]),
         "rule 'r1': actions[1]: a rule has at most one route or busy action"),
        (_rule(actions=[{"type": "notify", "target": "tel:911"}]),
         "rule 'r1': actions[0].target: 'tel:911' is neither a sip:/sips: URI nor an element id"),
        (_rule(actions=[{"type": "route", "psap": "boston", "cause": ""}]), "rule 'r1': actions[0].cause: expected a non-empty string"),
        (_rule(priority="high"), "rule 'r1': priority: expected an integer, got 'high'"),
        (_rule(enabled="yes"), "rule 'r1': enabled: expected true or false"),
        (_rule(prority=3), "rule 'r1': prority: unknown key"),
        (_rule(id="bad id!"), "rules[0]: id: 'bad id!' is not an id"),
        ({"priority": 1, "actions": []}, "rules[0]: id: None is not an id"),
    ],
)
def test_rule_validation_errors(rule, message):
    with pytest.raises(PolicyError) as info:
        load_rules([rule])
    assert any(p.startswith(message) for p in info.value.problems), info.value.problems


def test_validation_reports_every_problem_and_duplicates(chains):
    with pytest.raises(PolicyError) as info:
        load_rules([_rule(id="a", priority="x"), _rule(id="b"), _rule(id="b"), "not a rule"])
    assert info.value.problems == [
        "rule 'a': priority: expected an integer, got 'x'",
        "rule 'b': id: also used by rules[1]",
        "rules[3]: expected a mapping, got 'not a rule'",
    ]
    with pytest.raises(PolicyError) as info:
        load_rules([_rule(actions=[{"type": "route", "psap": "ghost"}])], chains)
    assert info.value.problems == ["rule 'r1': actions[0].psap: 'ghost' is not a PSAP here"]
    with pytest.raises(PolicyError, match="expected a list of rules"):
        load_rules({"id": "r1"})  # type: ignore[arg-type]


# --- the first rule, as a property ------------------------------------------------------------------

PSAP_URIS = [CAMBRIDGE, SOMERVILLE, BOSTON, REGIONAL]
CHAIN_CONFIGS = [
    chains_from_deployment(DEP, GW),
    chains_from_deployment(DEP, GW, backup="regional"),
    chains_from_deployment(DEP, GW, default_psap="somerville", catch_all=CATCH_ALL),
    chains_from_deployment(DEP, GW, backup="boston", catch_all=BL["boston"]),
    Chains([], catch_all=CATCH_ALL),
]

queue_notes = st.builds(
    QueueState,
    queue_uri=st.sampled_from(PSAP_URIS + [TEST_QUEUE]),
    queue_length=st.integers(0, 12),
    max_length=st.integers(0, 12),
    state=st.sampled_from(QueueStateValue),
)
element_notes = st.builds(
    ElementState,
    element_id=st.sampled_from(["psap.cambridge.test", "psap.somerville.test", "psap.boston.test", "regional.state911.test"]),
    state=st.sampled_from(ElementStateValue),
)
service_notes = st.builds(
    ServiceState,
    name=st.just(ServiceName.PSAP),
    domain=st.sampled_from(["psap.cambridge.test", "psap.somerville.test", "psap.boston.test", "regional.state911.test"]),
    state=st.sampled_from(ServiceStateValue),
)
ages = st.integers(0, 3 * 3600).map(lambda s: timedelta(seconds=s))

conditions = st.one_of(
    st.fixed_dictionaries({"type": st.just("queue_state"), "states": st.lists(st.sampled_from([v.value for v in QueueStateValue] + ["Unknown"]), min_size=1, max_size=3)}),
    st.fixed_dictionaries({"type": st.just("element_state"), "states": st.lists(st.sampled_from([v.value for v in ElementStateValue] + ["Unknown"]), min_size=1, max_size=3)}),
    st.fixed_dictionaries({
        "type": st.just("time"),
        "timezone": st.sampled_from(["America/New_York", "UTC", "America/Los_Angeles"]),
        "days": st.lists(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1, max_size=7),
        "ranges": st.lists(st.sampled_from(["22:00-06:00", "00:00-24:00", "08:00-17:00", "12:00-12:01"]), min_size=1, max_size=2),
    }),
    st.fixed_dictionaries({"type": st.just("source"), "sources": st.lists(st.sampled_from(["*.carrier-a.test", "bcf1.state911.test"]), min_size=1)}),
    st.fixed_dictionaries({"type": st.just("call_type"), "services": st.lists(st.sampled_from(["urn:service:sos", "urn:service:test.sos"]), min_size=1)}),
    st.fixed_dictionaries({"type": st.just("ecrf_uri"), "uris": st.lists(st.sampled_from(PSAP_URIS + ["sip:x@unknown.test"]), min_size=1)}),
)
terminal_actions = st.one_of(
    st.fixed_dictionaries({"type": st.just("route"), "psap": st.sampled_from(["cambridge", "somerville", "boston", "regional"])}),
    st.fixed_dictionaries({"type": st.just("route"), "uri": st.sampled_from(PSAP_URIS + [TEST_QUEUE, CATCH_ALL, BL["regional"]])}),
    st.fixed_dictionaries({"type": st.just("busy")}),
)
notify_actions = st.fixed_dictionaries({"type": st.just("notify"), "target": st.sampled_from(["ops.state911.test", "sip:sup@regional.state911.test"])})


@st.composite
def rule_lists(draw):
    out = []
    for n in range(draw(st.integers(0, 5))):
        actions = draw(st.lists(notify_actions, max_size=2))
        terminal = draw(st.none() | terminal_actions)
        if terminal is not None or not actions:
            actions.append(terminal or draw(terminal_actions))
        out.append({
            "id": f"r{n}",
            "priority": draw(st.integers(-5, 5)),
            "conditions": draw(st.lists(conditions, max_size=3)),
            "actions": actions,
            "enabled": draw(st.booleans()),
        })
    return out


calls = st.builds(
    CallContext,
    call_id=st.just("p"),
    service_urn=st.sampled_from(["urn:service:sos", "urn:service:sos.fire", "urn:service:test.sos"]),
    medium=st.sampled_from(CallMedium),
    source=st.none() | st.sampled_from(["bcf.east.carrier-a.test", "bcf1.state911.test", "sip:bcf.other.test"]),
    callback=st.none() | st.just("tel:+16175551234"),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    notes=st.lists(st.tuples(st.one_of(queue_notes, element_notes, service_notes), ages), max_size=12),
    rules=rule_lists(),
    ecrf=st.none() | st.sampled_from(PSAP_URIS + ["sip:x@unknown.test", "SIP:ecc@PSAP.Boston.test;transport=tls", TEST_QUEUE]),
    call=calls,
    chains_index=st.integers(0, len(CHAIN_CONFIGS) - 1),
    now=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2025, 12, 31), timezones=st.just(UTC)),
)
def test_every_decision_ends_with_a_person(notes, rules, ecrf, call, chains_index, now):
    chains = CHAIN_CONFIGS[chains_index]
    states = StateTable(max_age=timedelta(hours=1))
    for note, age in notes:
        states.update(note, now - age)
    decision = decide(call, ecrf, states, load_rules(rules), chains, now)

    assert decision.destinations, "no destination"
    last = decision.destinations[-1]
    assert last.kind in TERMINAL_KINDS
    if chains.catch_all:
        assert last.kind is DestinationKind.CATCH_ALL and last.uri == chains.catch_all
    keys = [uri_key(d.uri) for d in decision.destinations]
    assert len(keys) == len(set(keys)), keys
    assert all(d.availability is not Availability.UNUSABLE for d in decision.destinations)
    for d in decision.destinations:
        if d.kind not in TERMINAL_KINDS:
            verdict = states.destination_verdict(
                d.uri, now,
                element_id=chains[d.psap_id].element_id if d.psap_id else None,
                service_domain=chains[d.psap_id].service_domain if d.psap_id else None,
            )
            assert verdict.usable
    if decision.busy:
        assert call.callback and decision.callback is not None
        assert decision.callback.owner == decision.destinations[0]
