"""The detector's outage updates to the ESRP state table's marks (monitor.routing)."""

from __future__ import annotations

from firebox.esrp.states import Availability, StateTable
from firebox.monitor.routing import OutageRouting

PSAPS = {"a": "sip:a@esinet.test", "b": "sip:b@esinet.test", "c": "sip:c@esinet.test"}
REGIONS = {"a": "west", "b": "west", "c": "east"}


def outage(oid: str, scope: str, key: str, state: str, cause: str = "probes failed") -> dict:
    return {"id": oid, "scope": scope, "key": key, "state": state, "cause": cause}


def test_psap_and_region_outages_mark_and_clear_exactly_their_queues() -> None:
    states = StateTable()
    routing = OutageRouting(states, PSAPS, REGIONS)
    routing.apply(outage("o1", "psap", "c", "suspected"))
    assert states.outage_verdict(PSAPS["c"]) is None  # a suspicion moves no call
    routing.apply(outage("o1", "psap", "c", "confirmed"))
    assert states.outage_verdict(PSAPS["c"]).availability is Availability.UNUSABLE
    assert "o1" in states.outage_verdict(PSAPS["c"]).reason

    routing.apply(outage("o2", "region", "west", "confirmed", "fiber cut"))
    assert {k for k in states.outage_marks()} == {"sip:a@esinet.test", "sip:b@esinet.test", "sip:c@esinet.test"}
    # a later suspicion elsewhere does not touch the region's confirmed mark
    routing.apply(outage("o3", "psap", "a", "suspected"))
    assert states.outage_verdict(PSAPS["a"]).availability is Availability.UNUSABLE
    assert "o2" in states.outage_verdict(PSAPS["a"]).reason

    routing.apply(outage("o2", "region", "west", "cleared"))
    assert states.outage_verdict(PSAPS["a"]) is None and states.outage_verdict(PSAPS["b"]) is None
    assert states.outage_verdict(PSAPS["c"]) is not None  # o1 still open
    routing.apply(outage("o1", "psap", "c", "cleared"))
    assert not states.outage_marks()


def test_statewide_and_element_outages_leave_routing_alone() -> None:
    states = StateTable()
    routing = OutageRouting(states, PSAPS, REGIONS)
    routing.apply(outage("s1", "statewide", "statewide", "confirmed", "every ingress fails"))
    routing.apply(outage("e1", "element", "esrp.test", "confirmed"))
    routing.apply(outage("p9", "psap", "unknown-psap", "confirmed"))
    assert not states.outage_marks() and not routing.actions
