"""The detector's outage states, given to the ESRP's policy routing function (issue 6: "the
policy routing function uses the detector's states").

``OutageRouting`` listens to the monitor's outage updates and keeps the ESRP state table's
outage marks (``firebox.esrp.states.StateTable.mark_outage``) in step:

* a *confirmed* PSAP outage marks that PSAP's queue: it leaves new calls' failover lists,
  so they go straight to its alternates, the regional backup and last the business lines,
  without each waiting out the no-answer timeout of a dead PSAP;
* a region outage marks each PSAP of the region the same way;
* a *suspected* outage marks nothing. Its evidence is one failed test call, a dip in the
  answer ratio or a queue state; the state table already acts on the queue state itself,
  and moving calls away from the PSAP the ECRF chose on weaker evidence, for as long as a
  suspicion lasts, would send callers to a farther PSAP for nothing;
* ``cleared`` lifts the marks that outage set (a mark another, still open outage set stays);
* statewide and element outages mark nothing. Evidence that *every* PSAP fails says the
  common path (ingress, BCF, ESRP) is broken, not each PSAP, and removing every PSAP would
  leave only business lines for calls that may well still reach PSAPs. Their answer is on
  the path: carriers' alternate ingresses, rollback of the change that caused them.

Sans-I/O apart from the table it is given; the update arrives in the detector's own step,
so routing changes within the same evaluation that declared the outage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from firebox.esrp.states import OutageMark, StateTable
from firebox.monitor.detector import OutageScope, OutageState, OutageUpdate

__all__ = ["OutageRouting"]

log = logging.getLogger(__name__)


class OutageRouting:
    """``psaps``: PSAP id -> queue URI; ``regions``: PSAP id -> region."""

    def __init__(self, states: StateTable, psaps: Mapping[str, str], regions: Mapping[str, str] | None = None):
        self.states = states
        self.psaps = dict(psaps)
        self.regions = dict(regions or {})
        #: outage id -> the queue URIs it marked, so that its end lifts exactly those.
        self.marked: dict[str, list[str]] = {}
        #: (outage id, what was done, when) for the routing log and tests.
        self.actions: list[tuple[str, str, float]] = []

    def _queues(self, scope: str, key: str) -> list[str]:
        if scope == OutageScope.PSAP and key in self.psaps:
            return [self.psaps[key]]
        if scope == OutageScope.REGION:
            return [uri for pid, uri in self.psaps.items() if self.regions.get(pid) == key]
        return []

    def __call__(self, update: OutageUpdate) -> None:
        self.apply(update.outage)

    def apply(self, outage: Mapping[str, Any]) -> None:
        oid, scope, key, state = outage["id"], outage["scope"], outage["key"], outage["state"]
        now = datetime.now(UTC)
        if state == OutageState.CLEARED:
            for uri in self.marked.pop(oid, []):
                if self.states.clear_outage(uri, oid):
                    self.actions.append((oid, f"cleared {uri}", now.timestamp()))
                    log.warning("routing: outage %s ended; %s back in its normal route", oid, uri)
            return
        queues = self._queues(scope, key)
        if not queues or state != OutageState.CONFIRMED:
            return
        reason = str(outage.get("cause") or f"{scope} {key}")
        for uri in queues:
            if uri in self.marked.get(oid, []):
                continue  # already routed around (a later update of the same outage)
            self.states.mark_outage(uri, OutageMark(oid, True, reason, now))
            self.marked.setdefault(oid, []).append(uri)
            self.actions.append((oid, f"routed around {uri}", now.timestamp()))
            log.warning("routing: outage %s confirmed: routed around %s (%s)", oid, uri, reason)
