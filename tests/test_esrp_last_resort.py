"""The ESRP's route of last resort from the business-line registry (NENA-STA-010.3 section
4.2): lines answered now over a working gateway route first, the others last but never
left out, and the static line when there is no registry."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from firebox.alerting.businesslines import (
    BusinessLine,
    BusinessLineRegistry,
    LineHealth,
    OwnerKind,
    RegistryLastResort,
    parse_hours,
)
from firebox.esrp.policy import (
    CallContext,
    Chains,
    DestinationKind,
    LastResortLine,
    PsapChain,
    RuleSet,
    business_line_uri,
    decide,
)
from firebox.esrp.states import Availability, QueueState, QueueStateValue, StateTable
from test_esrp_router import demo  # noqa: F401 -- the fixture

NY = ZoneInfo("America/New_York")
GW = "pstn-gw.state911.test"
CAMBRIDGE = "sip:ecc@psap.cambridge.test"
SOMERVILLE = "sip:ecc@psap.somerville.test"
CALL = CallContext("call-1", callback="tel:+16175559999")

# Monday 3 March 2025: 03:00 (night) and 10:00 (office hours) in Boston.
NIGHT = datetime(2025, 3, 3, 3, 0, tzinfo=NY)
DAY = datetime(2025, 3, 3, 10, 0, tzinfo=NY)

CAMBRIDGE_LINE = "6175550100"
SOMERVILLE_LINE = "6175550101"
CAMBRIDGE_PD = "6175550200"  # the police desk of a Cambridge town, office hours
CAMBRIDGE_FIRE = "6175550300"  # a fire station, 24/7


def uri(number: str) -> str:
    return business_line_uri(number, GW)


def chains() -> Chains:
    return Chains(
        [
            PsapChain("cambridge", "Cambridge ECC", CAMBRIDGE, uri(CAMBRIDGE_LINE), ("somerville",), "psap.cambridge.test", "psap.cambridge.test"),
            PsapChain("somerville", "Somerville ECC", SOMERVILLE, uri(SOMERVILLE_LINE), (), "psap.somerville.test", "psap.somerville.test"),
        ]
    )


def registry(cambridge_hours: str = "24/7") -> BusinessLineRegistry:
    return BusinessLineRegistry(
        [
            BusinessLine(CAMBRIDGE_LINE, "cambridge", "Cambridge ECC admin", parse_hours(cambridge_hours), OwnerKind.PSAP, ("cambridge",)),
            BusinessLine(SOMERVILLE_LINE, "somerville", "Somerville ECC admin", parse_hours("24/7"), OwnerKind.PSAP, ("somerville",)),
            BusinessLine(CAMBRIDGE_PD, "pd-cambridge", "Cambridge Police desk", parse_hours("Mon-Fri 08:00-17:00"), OwnerKind.AGENCY, ("cambridge",)),
            BusinessLine(CAMBRIDGE_FIRE, "fd-cambridge", "Cambridge Fire HQ", parse_hours("24/7"), OwnerKind.AGENCY, ("cambridge",)),
        ]
    )


def lines(decision) -> list[str]:
    return [d.uri for d in decision.destinations if d.kind is DestinationKind.BUSINESS_LINE]


def all_queues_down() -> StateTable:
    states = StateTable()
    for q in (CAMBRIDGE, SOMERVILLE):
        states.update(QueueState(q, 0, 10, QueueStateValue.DISABLED), NIGHT)
    return states


def test_without_a_registry_the_static_lines_end_the_list() -> None:
    decision = decide(CALL, CAMBRIDGE, StateTable(), RuleSet(), chains(), NIGHT)
    assert lines(decision) == [uri(CAMBRIDGE_LINE), uri(SOMERVILLE_LINE)]


def test_a_line_outside_its_hours_is_not_first() -> None:
    # The Cambridge PSAP's own line is staffed in office hours only (a YAML entry said so).
    last_resort = RegistryLastResort(registry("Mon-Fri 08:00-17:00"), GW)
    night = decide(CALL, CAMBRIDGE, StateTable(), RuleSet(), chains(), NIGHT, last_resort)
    got = lines(night)
    # Usable first, for every PSAP visited: the fire station (24/7), Somerville's line; then
    # the closed lines, last, and each is said in the log.
    assert got[:2] == [uri(CAMBRIDGE_FIRE), uri(SOMERVILLE_LINE)]
    assert set(got[2:]) == {uri(CAMBRIDGE_LINE), uri(CAMBRIDGE_PD)}
    assert any(f"+1{CAMBRIDGE_LINE}" in line and "nobody answers now" in line and "tried last" in line for line in night.log)
    closed = next(d for d in night.destinations if d.uri == uri(CAMBRIDGE_LINE))
    assert closed.availability is Availability.SUSPECT
    # In office hours the PSAP's own line leads again, then the police desk of its town.
    day = decide(CALL, CAMBRIDGE, StateTable(), RuleSet(), chains(), DAY, last_resort)
    assert lines(day)[:2] == [uri(CAMBRIDGE_LINE), uri(CAMBRIDGE_PD)]


def test_a_line_with_a_down_gateway_route_is_not_first() -> None:
    health = {CAMBRIDGE_LINE: LineHealth.DOWN, CAMBRIDGE_FIRE: LineHealth.UP}
    last_resort = RegistryLastResort(registry(), GW, lambda: health)
    decision = decide(CALL, CAMBRIDGE, StateTable(), RuleSet(), chains(), DAY, last_resort)
    got = lines(decision)
    assert got[0] != uri(CAMBRIDGE_LINE)
    assert got[:2] == [uri(CAMBRIDGE_PD), uri(CAMBRIDGE_FIRE)]
    assert got[-1] == uri(CAMBRIDGE_LINE)  # kept, last: never left out
    assert any("gateway route is down" in line for line in decision.log)
    fire = next(d for d in decision.destinations if d.uri == uri(CAMBRIDGE_FIRE))
    assert fire.availability is Availability.USABLE  # checked up, not merely unknown
    # The route comes back: the PSAP's own line leads again.
    health[CAMBRIDGE_LINE] = LineHealth.UP
    again = decide(CALL, CAMBRIDGE, StateTable(), RuleSet(), chains(), DAY, last_resort)
    assert lines(again)[0] == uri(CAMBRIDGE_LINE)


def test_every_line_down_and_every_queue_down_still_gives_a_destination() -> None:
    health = {n: LineHealth.DOWN for n in (CAMBRIDGE_LINE, SOMERVILLE_LINE, CAMBRIDGE_PD, CAMBRIDGE_FIRE)}
    last_resort = RegistryLastResort(registry(), GW, lambda: health)
    decision = decide(CALL, CAMBRIDGE, all_queues_down(), RuleSet(), chains(), NIGHT, last_resort)
    assert decision.destinations, "no destination"
    assert all(d.kind is DestinationKind.BUSINESS_LINE for d in decision.destinations)
    assert uri(CAMBRIDGE_LINE) in lines(decision) and uri(SOMERVILLE_LINE) in lines(decision)
    assert any("trying them anyway" in line for line in decision.log)


def test_max_lines_bounds_each_psaps_lines_but_keeps_one() -> None:
    health = {CAMBRIDGE_LINE: LineHealth.DOWN}
    last_resort = RegistryLastResort(registry(), GW, lambda: health, max_lines=1)
    got = last_resort(chains()["cambridge"], DAY)
    assert [line.uri for line in got] == [uri(CAMBRIDGE_PD)]
    every_down = {n: LineHealth.DOWN for n in (CAMBRIDGE_LINE, CAMBRIDGE_PD, CAMBRIDGE_FIRE)}
    only = RegistryLastResort(registry(), GW, lambda: every_down, max_lines=1)(chains()["cambridge"], DAY)
    assert len(only) == 1 and not only[0].usable


def test_registry_failure_or_silence_falls_back_to_the_static_line() -> None:
    def broken(psap: PsapChain, now: datetime) -> list[LastResortLine]:
        raise RuntimeError("registry unreadable")

    decision = decide(CALL, CAMBRIDGE, StateTable(), RuleSet(), chains(), NIGHT, broken)
    assert lines(decision) == [uri(CAMBRIDGE_LINE), uri(SOMERVILLE_LINE)]
    assert any("registry failed" in line for line in decision.log)

    silent = decide(CALL, CAMBRIDGE, StateTable(), RuleSet(), chains(), NIGHT, lambda psap, now: [])
    assert lines(silent) == [uri(CAMBRIDGE_LINE), uri(SOMERVILLE_LINE)]
    assert any("the registry has none" in line for line in silent.log)
    # An entry that is no SIP URI is ignored rather than dialled.
    junk = decide(CALL, CAMBRIDGE, StateTable(), RuleSet(), chains(), NIGHT,
                  lambda psap, now: [LastResortLine("tel:+16175550100", True)])  # fmt: skip
    assert lines(junk) == [uri(CAMBRIDGE_LINE), uri(SOMERVILLE_LINE)]


def test_catch_all_still_ends_the_list_after_unusable_lines() -> None:
    catch_all = "sip:overflow@regional.state911.test"
    c = Chains(chains().values(), catch_all=catch_all)
    health = {CAMBRIDGE_LINE: LineHealth.DOWN}
    decision = decide(CALL, CAMBRIDGE, StateTable(), RuleSet(), c, DAY, RegistryLastResort(registry(), GW, lambda: health))
    assert decision.destinations[-1].uri == catch_all
    assert decision.destinations[-2].uri == uri(CAMBRIDGE_LINE)


async def test_the_router_ends_a_demo_call_on_the_registry_lines(demo):
    """The router on the demo state asks the registry (built from the deployment) for each
    visited PSAP's lines at the call's time: the intended PSAP's line, its gateway route
    down, goes after its alternates' lines."""
    from test_esrp_router import NOW as ROUTER_NOW
    from test_esrp_router import _invite, _presence, _router, _town_point

    state, node = demo
    point, psap_uri = _town_point(state, 9)
    router = _router(node)
    plain = await router.route(_invite("cid:loc@carrier", _presence(point)), ROUTER_NOW)
    intended = plain.decision.destinations[0].psap_id
    static = [d.uri for d in plain.decision.destinations if d.kind is DestinationKind.BUSINESS_LINE]
    assert static[0] == router.chains[intended].business_line and plain.decision.destinations[0].uri == psap_uri

    registry = BusinessLineRegistry.from_deployment(node.deployment)
    number = next(line.number for line in registry.for_owner(intended))
    router.last_resort = RegistryLastResort(registry, "pstn-gw.demo.firebox.test", lambda: {number: LineHealth.DOWN})
    routed = await router.route(_invite("cid:loc@carrier", _presence(point)), ROUTER_NOW)
    lines_now = [d.uri for d in routed.decision.destinations if d.kind is DestinationKind.BUSINESS_LINE]
    assert sorted(lines_now) == sorted(static)  # the same lines, none lost
    assert lines_now[-1] == router.chains[intended].business_line and lines_now[0] != lines_now[-1]
    assert any("gateway route is down" in line for line in routed.log)
