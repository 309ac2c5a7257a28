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

Where entries are kept (``WorklistStore``): in memory (``MemoryWorklistStore``, the default:
one node) or in PostgreSQL (``PostgresWorklistStore``: several nodes of a cluster share one
worklist, and an entry outlives the node that wrote it). Delivery claims an entry first
(``claim``: pending -> delivering, with this node's id and a lease), atomically, so two nodes
never hand one callback over twice; a delivering entry whose node died before recording the
delivery is taken again once its lease has run out (the PSAP's ``add_callback`` keeps one
entry per Call-ID, so a retake after a delivery that did happen adds nothing).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from firebox.durable import SharedPostgres
from firebox.psap.api import LocationView

__all__ = [
    "CallbackTaker",
    "MemoryWorklistStore",
    "PostgresWorklistStore",
    "Worklist",
    "WorklistEntry",
    "WorklistReason",
    "WorklistState",
    "WorklistStore",
    "deliver_due",
    "open_worklist_store",
]

log = logging.getLogger(__name__)

#: Entries kept in memory (delivered and done ones are dropped first when full).
MAX_ENTRIES = 10_000
#: Seconds a node has to hand a claimed entry over before another node may take it again.
CLAIM_LEASE = 30.0


class WorklistReason(StrEnum):
    FAILED = "failed"  # every destination failed
    ABANDONED = "abandoned before alerting"  # the caller gave up while no PSAP was alerting
    BUSY = "busy"  # a policy busy action
    ERROR = "error"  # the element could not route the call


class WorklistState(StrEnum):
    PENDING = "pending"  # waiting for its PSAP to be reachable
    DELIVERING = "delivering"  # claimed by a node that is handing it over (``claimed_by``)
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
    claimed_by: str | None = None  # the node delivering it (state delivering)
    claimed_until: float | None = None  # its lease: after this another node may take it

    @property
    def lon_lat(self) -> tuple[float, float] | None:
        if self.location is None or self.location.lon is None or self.location.lat is None:
            return None
        return (self.location.lon, self.location.lat)

    def claimable(self, now: float) -> bool:
        """Pending, or claimed by a node whose lease ran out (it died mid-delivery)."""
        if self.state is WorklistState.PENDING:
            return True
        return self.state is WorklistState.DELIVERING and (self.claimed_until or 0.0) <= now

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reason"], out["state"] = self.reason.value, self.state.value
        out["created"] = _iso(self.created)
        out["delivered_at"] = _iso(self.delivered_at)
        out["claimed_until"] = _iso(self.claimed_until)
        return out


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


# --- where entries are kept ----------------------------------------------------------------------


class WorklistStore(Protocol):
    """The worklist's records. ``add`` takes an entry without an id (``""``) and answers
    the entry kept for its Call-ID (new, or the first one with ``tried`` extended)."""

    def add(self, entry: WorklistEntry) -> WorklistEntry: ...
    def get(self, call_id: str) -> WorklistEntry | None: ...
    def entries(self) -> list[WorklistEntry]: ...
    def claimable(self, now: float) -> list[WorklistEntry]: ...
    def claim(self, call_id: str, node: str, now: float, lease: float) -> WorklistEntry | None: ...
    def release(self, call_id: str, node: str) -> None: ...
    def delivered(self, call_id: str, to: str, now: float) -> WorklistEntry: ...
    def done(self, call_id: str) -> None: ...
    def counts(self) -> dict[str, int]: ...


class MemoryWorklistStore:
    """One node's worklist in memory: at most ``MAX_ENTRIES`` (delivered and done entries
    are dropped first); entries are handed out by reference."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, WorklistEntry] = OrderedDict()  # by Call-ID
        self._seq = 0
        self._counts: dict[str, int] = {r.value: 0 for r in WorklistReason}
        self._lock = threading.Lock()

    def add(self, entry: WorklistEntry) -> WorklistEntry:
        with self._lock:
            held = self._entries.get(entry.call_id)
            if held is not None:
                held.tried.extend(t for t in entry.tried if t not in held.tried)
                return held
            self._seq += 1
            entry.id = f"wl-{self._seq}"
            self._entries[entry.call_id] = entry
            self._counts[entry.reason.value] += 1
            while len(self._entries) > MAX_ENTRIES:
                oldest = next((k for k, e in self._entries.items() if e.state is not WorklistState.PENDING), None)
                self._entries.pop(oldest if oldest is not None else next(iter(self._entries)))
            return entry

    def get(self, call_id: str) -> WorklistEntry | None:
        return self._entries.get(call_id)

    def entries(self) -> list[WorklistEntry]:
        return list(self._entries.values())

    def claimable(self, now: float) -> list[WorklistEntry]:
        return [e for e in self._entries.values() if e.claimable(now)]

    def claim(self, call_id: str, node: str, now: float, lease: float) -> WorklistEntry | None:
        with self._lock:
            entry = self._entries.get(call_id)
            if entry is None or not entry.claimable(now):
                return None
            entry.state, entry.claimed_by, entry.claimed_until = WorklistState.DELIVERING, node, now + lease
            return entry

    def release(self, call_id: str, node: str) -> None:
        with self._lock:
            entry = self._entries.get(call_id)
            if entry is not None and entry.state is WorklistState.DELIVERING and entry.claimed_by == node:
                entry.state, entry.claimed_by, entry.claimed_until = WorklistState.PENDING, None, None

    def delivered(self, call_id: str, to: str, now: float) -> WorklistEntry:
        entry = self._entries[call_id]
        entry.state, entry.delivered_to, entry.delivered_at = WorklistState.DELIVERED, to, now
        entry.claimed_until = None
        return entry

    def done(self, call_id: str) -> None:
        self._entries[call_id].state = WorklistState.DONE

    def counts(self) -> dict[str, int]:
        return dict(self._counts)


_PG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS callback_worklist (
        seq BIGSERIAL UNIQUE, call_id TEXT PRIMARY KEY, callback TEXT, location JSONB,
        created DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL, owner TEXT, tried JSONB NOT NULL,
        detail TEXT NOT NULL, state TEXT NOT NULL, delivered_to TEXT, delivered_at DOUBLE PRECISION,
        claimed_by TEXT, claimed_until DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS callback_worklist_state ON callback_worklist (state, seq)",
)
_PG_COLS = ("seq, call_id, callback, location, created, reason, owner, tried, detail, state, delivered_to, "
            "delivered_at, claimed_by, claimed_until")  # fmt: skip


def _pg_entry(r: Any) -> WorklistEntry:
    location = None if r[3] is None else LocationView(**r[3])
    return WorklistEntry(f"wl-{r[0]}", r[1], r[2], location, float(r[4]), WorklistReason(r[5]), r[6], list(r[7]),
                         r[8], WorklistState(r[9]), r[10], r[11], r[12], r[13])  # fmt: skip


class PostgresWorklistStore(SharedPostgres):
    """The worklist of every node of a cluster in one PostgreSQL table (psycopg 3), kept by
    Call-ID (the primary key: two nodes reporting one call make one entry). ``claim`` is one
    ``UPDATE ... WHERE state = 'pending' OR (state = 'delivering' AND claimed_until <= now)
    RETURNING``: of two nodes claiming one entry, exactly one gets it. All entries are kept
    (they are durable records of calls nobody answered). One connection per store, shared
    by the node's threads behind a lock."""

    def __init__(self, conninfo: str):
        super().__init__(conninfo, _PG_SCHEMA, 7244031)  # the lock: two nodes creating the tables at once

    def add(self, entry: WorklistEntry) -> WorklistEntry:
        from psycopg.types.json import Jsonb

        location = None if entry.location is None else Jsonb(asdict(entry.location))
        with self._lock, self._db.transaction():
            row = self._db.execute(
                f"INSERT INTO callback_worklist (call_id, callback, location, created, reason, owner, tried, detail, "
                f"state) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (call_id) DO NOTHING "
                f"RETURNING {_PG_COLS}",
                (entry.call_id, entry.callback, location, entry.created, entry.reason.value, entry.owner,
                 Jsonb(list(entry.tried)), entry.detail, WorklistState.PENDING.value),
            ).fetchone()  # fmt: skip
            if row is not None:
                return _pg_entry(row)
            # Reported before (by this node or another): keep the first, add what it tried.
            row = self._db.execute(
                f"SELECT {_PG_COLS} FROM callback_worklist WHERE call_id = %s FOR UPDATE", (entry.call_id,)
            ).fetchone()
            held = _pg_entry(row)
            more = [t for t in entry.tried if t not in held.tried]
            if more:
                held.tried.extend(more)
                self._db.execute("UPDATE callback_worklist SET tried = %s WHERE call_id = %s",
                                 (Jsonb(held.tried), entry.call_id))  # fmt: skip
            return held

    def get(self, call_id: str) -> WorklistEntry | None:
        rows = self._rows(f"SELECT {_PG_COLS} FROM callback_worklist WHERE call_id = %s", (call_id,))
        return _pg_entry(rows[0]) if rows else None

    def entries(self) -> list[WorklistEntry]:
        return [_pg_entry(r) for r in self._rows(f"SELECT {_PG_COLS} FROM callback_worklist ORDER BY seq")]

    def claimable(self, now: float) -> list[WorklistEntry]:
        rows = self._rows(
            f"SELECT {_PG_COLS} FROM callback_worklist WHERE state = 'pending' "
            "OR (state = 'delivering' AND claimed_until <= %s) ORDER BY seq",
            (now,),
        )
        return [_pg_entry(r) for r in rows]

    def claim(self, call_id: str, node: str, now: float, lease: float) -> WorklistEntry | None:
        rows = self._rows(
            f"UPDATE callback_worklist SET state = 'delivering', claimed_by = %s, claimed_until = %s "
            f"WHERE call_id = %s AND (state = 'pending' OR (state = 'delivering' AND claimed_until <= %s)) "
            f"RETURNING {_PG_COLS}",
            (node, now + lease, call_id, now),
        )
        return _pg_entry(rows[0]) if rows else None

    def release(self, call_id: str, node: str) -> None:
        self._rows(
            "UPDATE callback_worklist SET state = 'pending', claimed_by = NULL, claimed_until = NULL "
            "WHERE call_id = %s AND state = 'delivering' AND claimed_by = %s RETURNING seq",
            (call_id, node),
        )

    def delivered(self, call_id: str, to: str, now: float) -> WorklistEntry:
        rows = self._rows(
            f"UPDATE callback_worklist SET state = 'delivered', delivered_to = %s, delivered_at = %s, "
            f"claimed_until = NULL WHERE call_id = %s RETURNING {_PG_COLS}",
            (to, now, call_id),
        )
        if not rows:
            raise KeyError(call_id)
        return _pg_entry(rows[0])

    def done(self, call_id: str) -> None:
        if not self._rows("UPDATE callback_worklist SET state = 'done' WHERE call_id = %s RETURNING seq", (call_id,)):
            raise KeyError(call_id)

    def counts(self) -> dict[str, int]:
        out = {r.value: 0 for r in WorklistReason}
        for reason, n in self._rows("SELECT reason, count(*) FROM callback_worklist GROUP BY reason"):
            out[reason] = int(n)
        return out


def open_worklist_store(url: str | None) -> MemoryWorklistStore | PostgresWorklistStore:
    """``None`` / ``memory:``: in memory (one node); ``postgresql://...``: shared."""
    if url is None or url in ("memory", "memory:"):
        return MemoryWorklistStore()
    if url.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        return PostgresWorklistStore(url)
    raise ValueError(f"unknown worklist store URL {url!r}: use memory: or postgresql://...")


# --- the worklist ------------------------------------------------------------------------------


class Worklist:
    """The callback worklist of this node (``node``: its cluster id, who claims entries),
    over a ``store`` (in memory by default)."""

    def __init__(self, store: WorklistStore | None = None, *, node: str = "local", lease: float = CLAIM_LEASE):
        self.store: WorklistStore = store if store is not None else MemoryWorklistStore()
        self.node = node
        self.lease = lease

    @property
    def counts(self) -> dict[str, int]:
        """Entries made, by reason."""
        return self.store.counts()

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
        return self.store.add(WorklistEntry("", call_id, callback, location, now, reason, owner, list(tried or []),
                                            detail))  # fmt: skip

    def entries(self) -> list[WorklistEntry]:
        return self.store.entries()

    def pending(self) -> list[WorklistEntry]:
        return [e for e in self.store.entries() if e.state is WorklistState.PENDING]

    def get(self, call_id: str) -> WorklistEntry | None:
        return self.store.get(call_id)

    def due(self, reachable: Callable[[str], bool], now: float | None = None) -> list[WorklistEntry]:
        """Pending entries whose owner PSAP is reachable now, oldest first; with ``now``,
        also those whose delivering node's lease has run out."""
        found = self.store.claimable(now) if now is not None else self.pending()
        return [e for e in found if e.owner is not None and reachable(e.owner)]

    def claim(self, call_id: str, now: float) -> WorklistEntry | None:
        """Take the entry for delivery by this node; None if another node has it (or it
        was delivered meanwhile)."""
        return self.store.claim(call_id, self.node, now, self.lease)

    def release(self, call_id: str) -> None:
        """Delivery failed: back to pending for the next round (of any node)."""
        self.store.release(call_id, self.node)

    def delivered(self, call_id: str, to: str, now: float) -> WorklistEntry:
        return self.store.delivered(call_id, to, now)

    def done(self, call_id: str) -> None:
        self.store.done(call_id)

    def figures(self) -> dict[str, Any]:
        by_state = {s.value: 0 for s in WorklistState}
        for e in self.store.entries():
            by_state[e.state.value] += 1
        return {"by_reason": self.counts, "by_state": by_state}


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
    listed; a taker that fails keeps the entry pending for the next round. Each entry is
    claimed first: an entry another node is delivering is left to it."""
    done: list[WorklistEntry] = []
    for due in worklist.due(lambda psap: psap in takers and reachable(psap), now):
        entry = worklist.claim(due.call_id, now)
        if entry is None:
            continue  # another node took it between our look and our claim
        assert entry.owner is not None
        try:
            takers[entry.owner].add_callback(entry.owner, entry.call_id, entry.callback, entry.location, entry.created,
                                             entry.reason.value, tuple(entry.tried))  # fmt: skip
        except Exception:  # noqa: BLE001 -- next round
            log.exception("worklist: delivering %s to %s failed", entry.id, entry.owner)
            worklist.release(entry.call_id)
            continue
        done.append(worklist.delivered(entry.call_id, entry.owner, now))
    return done
