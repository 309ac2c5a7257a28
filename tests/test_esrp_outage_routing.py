"""Routing reads the monitor's outage states (issue 6): a PSAP the detector confirmed down is
skipped at once, a suspected one is tried after the healthy ones, the monitor's own test
calls still reach it, and lifting the mark restores the normal route."""

from __future__ import annotations

from datetime import UTC, datetime

from firebox.esrp.policy import CallContext, Chains, DestinationKind, PsapChain, RuleSet, decide
from firebox.esrp.states import Availability, OutageMark, StateTable

NOW = datetime(2026, 6, 18, 14, 0, tzinfo=UTC)
GATEWAY = "pstn.example.net"


def chains() -> Chains:
    def psap(pid: str, alternates: tuple[str, ...], line: str) -> PsapChain:
        return PsapChain(pid, pid.upper(), f"sip:{pid}@esinet.example.net", f"sip:+1{line}@{GATEWAY};user=phone", alternates)

    return Chains([psap("a", ("b",), "6175550101"), psap("b", ("a",), "6175550102")], default_psap="a")


def test_confirmed_outage_skips_the_psap_and_suspected_ranks_it_last() -> None:
    states = StateTable()
    uri_a = "sip:a@esinet.example.net"
    call = CallContext("c1", callback="tel:+16175550000")
    before = decide(call, uri_a, states, RuleSet(()), chains(), NOW)
    assert [d.psap_id for d in before.destinations[:2]] == ["a", "b"]

    states.mark_outage(uri_a, OutageMark("o-1", True, "probes failed", NOW))
    during = decide(call, uri_a, states, RuleSet(()), chains(), NOW)
    kinds = [(d.kind, d.psap_id) for d in during.destinations]
    assert kinds[0] == (DestinationKind.ALTERNATE, "b")
    assert (DestinationKind.PSAP, "a") not in kinds
    # Both business lines still end the list: a person at the end, whatever the monitor says.
    assert [d.kind for d in during.destinations[-2:]] == [DestinationKind.BUSINESS_LINE] * 2
    assert any("monitor: outage o-1 confirmed (probes failed)" in line for line in during.log)

    states.mark_outage(uri_a, OutageMark("o-1", False, "answer ratio low", NOW))
    suspected = decide(call, uri_a, states, RuleSet(()), chains(), NOW)
    assert [d.psap_id for d in suspected.destinations[:2]] == ["b", "a"]
    assert suspected.destinations[1].availability is Availability.SUSPECT

    assert not states.clear_outage(uri_a, "o-other")  # another outage's end lifts nothing
    assert states.clear_outage(uri_a, "o-1")
    after = decide(call, uri_a, states, RuleSet(()), chains(), NOW)
    assert [d.psap_id for d in after.destinations[:2]] == ["a", "b"]


def test_monitor_test_calls_still_reach_the_psap_marked_down() -> None:
    states = StateTable()
    uri_a = "sip:a@esinet.example.net"
    states.mark_outage(uri_a, OutageMark("o-2", True, "fiber cut", NOW))
    probe = CallContext("p1", service_urn="urn:service:test.sos")
    decision = decide(probe, uri_a, states, RuleSet(()), chains(), NOW)
    assert decision.destinations[0].psap_id == "a" and decision.destinations[0].kind is DestinationKind.PSAP
    sos = decide(CallContext("c2"), uri_a, states, RuleSet(()), chains(), NOW)
    assert sos.destinations[0].psap_id == "b"
