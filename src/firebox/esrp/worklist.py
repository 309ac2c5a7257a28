"""The callback worklist: every emergency call the ESRP could not connect to anybody (issue 6,
"a callback worklist for every call that could not be connected (number, location, time,
where it was tried), sent to the PSAP that should have had it as soon as it is reachable").

An emergency call can end without a person at the other end in these ways, and each leaves an
entry here, never only a counter:

* every destination of its failover list failed (``failed``), the business lines included;
* the caller hung up while the ESRP was still looking for somewhere that would ring
  (``abandoned before alerting``): no PSAP saw it, so no PSAP's abandoned-call list has it.
  A caller who hangs up while a PSAP is alerting (180/183) is on that PSAP's own list
  (NENA-STA-020 abandoned calls) and is not repeated here;
* the policy answered busy (``busy``; NENA-STA-010.3 section 4.2.1: a busy action hands the
  call's callback record on);
* the element could not route it at all (``error``).

``owner`` is the PSAP the call was meant for (the first PSAP of its failover list, i.e. the
ECRF's answer or the policy's choice). Delivery is the owner's business: ``due(reachable)``
gives the entries whose owner is reachable now (the caller decides what reachable means: the
ESRP's state table and the monitor's outage marks), ``delivered`` records where each went.
An entry whose owner stays unreachable stays pending and visible; nothing is dropped. Entries
are kept by the SIP Call-ID, so a call counted twice (e.g. an error after a cancel) is one
entry. Sans-I/O: every time is an argument.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from firebox.psap.api import LocationView

__all__ = ["CallbackTaker", "Worklist", "WorklistEntry", "WorklistReason", "WorklistState", "deliver_due"]

log = logging.getLogger(__name__)

#: Entries kept (delivered and done ones are dropped first when full).
MAX_ENTRIES = 10_000


class WorklistReason(StrEnum):
    FAILED = "failed"  # every destination failed
    ABANDONED = "abandoned before alerting"  # the caller gave up while no PSAP was alerting
    BUSY = "busy"  # a policy busy action
    ERROR = "error"  # the element could not route the call


class WorklistState(StrEnum):
    PENDING = "pending"  # waiting for its PSAP to be reachable
    DELIVERED = "delivered"  # on the PSAP's callback list
    DONE = "done"  # called back (recorded by the PSAP)


@dataclass(slots=True)
class WorklistEntry:
    id: str
    call_id: str
    callback: str | None  # the number to call back; None: anonymous (still listed)
    location: LocationView | None
    created: float  # when the call ended unconnected (epoch seconds)
    reason: WorklistReason
    owner: str | None  # the PSAP the call was meant for
    tried: list[str] = field(default_factory=list)  # destination URIs, in order
    detail: str = ""  # the final status or what failed
    state: WorklistState = WorklistState.PENDING
    delivered_to: str | None = None
    delivered_at: float | None = None

    @property
    def lon_lat(self) -> tuple[float, float] | None:
        if self.location is None or self.location.lon is None or self.location.lat is None:
            return None
        return (self.location.lon, self.location.lat)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reason"], out["state"] = self.reason.value, self.state.value
        out["created"] = _iso(self.created)
        out["delivered_at"] = _iso(self.delivered_at)
        return out


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


class Worklist:
    def __init__(self) -> None:
        self._entries: OrderedDict[str, WorklistEntry] = OrderedDict()  # by Call-ID
        self._seq = 0
        self.counts: dict[str, int] = {r.value: 0 for r in WorklistReason}

    def add(
        self,
        call_id: str,
        reason: WorklistReason,
        now: float,
        *,
        callback: str | None,
        location: LocationView | None,
        owner: str | None,
        tried: list[str] | None = None,
        detail: str = "",
    ) -> WorklistEntry:
        """Record an unconnected call (a second report of the same Call-ID adds what it
        tried and keeps the first reason)."""
        held = self._entries.get(call_id)
        if held is not None:
            held.tried.extend(t for t in tried or [] if t not in held.tried)
            return held
        self._seq += 1
        entry = WorklistEntry(f"wl-{self._seq}", call_id, callback, location, now, reason, owner,
                              list(tried or []), detail)  # fmt: skip
        self._entries[call_id] = entry
        self.counts[reason.value] += 1
        while len(self._entries) > MAX_ENTRIES:
            oldest = next((k for k, e in self._entries.items() if e.state is not WorklistState.PENDING), None)
            self._entries.pop(oldest if oldest is not None else next(iter(self._entries)))
        return entry

    def entries(self) -> list[WorklistEntry]:
        return list(self._entries.values())

    def pending(self) -> list[WorklistEntry]:
        return [e for e in self._entries.values() if e.state is WorklistState.PENDING]

    def get(self, call_id: str) -> WorklistEntry | None:
        return self._entries.get(call_id)

    def due(self, reachable: Callable[[str], bool]) -> list[WorklistEntry]:
        """Pending entries whose owner PSAP is reachable now, oldest first."""
        return [e for e in self.pending() if e.owner is not None and reachable(e.owner)]

    def delivered(self, call_id: str, to: str, now: float) -> None:
        entry = self._entries[call_id]
        entry.state, entry.delivered_to, entry.delivered_at = WorklistState.DELIVERED, to, now

    def done(self, call_id: str) -> None:
        self._entries[call_id].state = WorklistState.DONE

    def figures(self) -> dict[str, Any]:
        by_state = {s.value: 0 for s in WorklistState}
        for e in self._entries.values():
            by_state[e.state.value] += 1
        return {"by_reason": dict(self.counts), "by_state": by_state}


class CallbackTaker(Protocol):
    """What delivery needs of a PSAP's call handling (``firebox.psap.element`` fits)."""

    def add_callback(
        self, psap_id: str, call_id: str, callback: str | None, location: LocationView | None, at: float,
        reason: str, tried: tuple[str, ...] = (),
    ) -> Any: ...


def deliver_due(
    worklist: Worklist, reachable: Callable[[str], bool], takers: Mapping[str, CallbackTaker], now: float
) -> list[WorklistEntry]:
    """Hand every due entry to its owner's call handling (``takers``: PSAP id -> taker). An
    owner with no taker here (a PSAP on another system) keeps its entries pending and
    listed; a taker that fails keeps the entry pending for the next round."""
    done: list[WorklistEntry] = []
    for entry in worklist.due(lambda psap: psap in takers and reachable(psap)):
        assert entry.owner is not None
        try:
            takers[entry.owner].add_callback(entry.owner, entry.call_id, entry.callback, entry.location, entry.created,
                                             entry.reason.value, tuple(entry.tried))  # fmt: skip
        except Exception:  # noqa: BLE001 -- next round
            log.exception("worklist: delivering %s to %s failed", entry.id, entry.owner)
            continue
        worklist.delivered(entry.call_id, entry.owner, now)
        done.append(entry)
    return done
