"""Which firebox nodes are up: heartbeats in a key-value bucket and the view built from them.

Every node writes its :class:`Beat` (id, start time, the elements it serves, its SIP and
HTTP addresses, load figures, software version) under its id in the ``members`` bucket every
``heartbeat_seconds``. :class:`ClusterView` (sans-I/O, time as an argument) turns the beats
it has seen into a health per node:

* ``alive``: a beat within the last 3 intervals;
* ``suspect``: 3 intervals or more without a new beat (3 missed beats);
* ``dead``: 10 intervals or more;
* ``left``: the node said goodbye (a beat with ``leaving``), so no one waits for it.

A beat's age is measured on the observer's clock from the moment a *new* beat (a higher
``(started, seq)``) arrived, so clock skew between nodes does not matter. Only a beat seen
for the first time (a node starting, reading the bucket) is dated by its sender's ``at``,
else a long-dead node would look alive for three intervals after every restart.

A node that stops seeing its own beats come back is cut off from the bus (``isolated``):
then every peer looks dead to it, and a :class:`HealthChange` carries the flag so that the
outage detector can tell "node X is down" from "I am partitioned".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from firebox.cluster.bus import Bus, Entry, KeyValue

__all__ = ["Beat", "ClusterView", "Health", "HealthChange", "MEMBERS_BUCKET", "Membership", "NodeStatus"]

log = logging.getLogger(__name__)

MEMBERS_BUCKET: Final = "members"
SUSPECT_AFTER: Final = 3
DEAD_AFTER: Final = 10


class Health(StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


def _num(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat. ``load``: figures such as ``calls`` (in progress), ``cpu`` (0-1)."""

    node_id: str
    started: float
    at: float
    seq: int
    serving: tuple[str, ...] = ()
    sip: str = ""
    http: str = ""
    load: Mapping[str, float] = field(default_factory=dict)
    version: str = ""
    leaving: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.node_id, "started": self.started, "at": self.at, "seq": self.seq,
                "serving": list(self.serving), "sip": self.sip, "http": self.http, "load": dict(self.load),
                "version": self.version, "leaving": self.leaving}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], key: str = "") -> Beat:
        """Lenient: a member or two missing or odd gets a default (a peer on another version
        must still be seen), only a beat with no id at all is refused."""
        node_id = data.get("id") or key
        if not isinstance(node_id, str) or not node_id:
            raise ValueError("beat without a node id")
        serving = data.get("serving")
        load = data.get("load")
        return cls(
            node_id=node_id, started=_num(data.get("started")), at=_num(data.get("at")),
            seq=int(_num(data.get("seq"))),
            serving=tuple(str(s) for s in serving) if isinstance(serving, list) else (),
            sip=str(data.get("sip") or ""), http=str(data.get("http") or ""),
            load={str(k): _num(v) for k, v in load.items()} if isinstance(load, dict) else {},
            version=str(data.get("version") or ""), leaving=bool(data.get("leaving")),
        )  # fmt: skip

    def newer_than(self, other: Beat) -> bool:
        return (self.started, self.seq, self.leaving) > (other.started, other.seq, other.leaving)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    beat: Beat
    health: Health
    age: float  # seconds since its last new beat, on this observer's clock

    def as_dict(self) -> dict[str, Any]:
        return {**self.beat.to_dict(), "health": self.health.value, "age": round(self.age, 3)}


@dataclass(frozen=True, slots=True)
class HealthChange:
    """``node_id`` went from ``before`` (None: first seen) to ``after`` at ``at``.
    ``isolated``: the observer itself was cut off from the bus at the time."""

    node_id: str
    before: Health | None
    after: Health
    at: float
    isolated: bool = False


class ClusterView:
    """The nodes seen through their beats. Sans-I/O: ``observe`` each beat and ``tick``
    regularly with the current time; both return the health changes (listeners get them too)."""

    def __init__(self, node_id: str, heartbeat_seconds: float, *, suspect_after: int = SUSPECT_AFTER,
                 dead_after: int = DEAD_AFTER) -> None:  # fmt: skip
        if heartbeat_seconds <= 0 or not 0 < suspect_after < dead_after:
            raise ValueError("need heartbeat_seconds > 0 and 0 < suspect_after < dead_after")
        self.node_id = node_id
        self.heartbeat = heartbeat_seconds
        self.suspect_after = suspect_after
        self.dead_after = dead_after
        self.beats: dict[str, Beat] = {}
        self.seen: dict[str, float] = {}
        self.health_of: dict[str, Health] = {}
        self.listeners: list[Callable[[HealthChange], None]] = []

    def _grade(self, node_id: str, now: float) -> Health:
        beat = self.beats[node_id]
        if beat.leaving:
            return Health.LEFT
        missed = (now - self.seen[node_id]) / self.heartbeat
        if missed >= self.dead_after:
            return Health.DEAD
        if missed >= self.suspect_after:
            return Health.SUSPECT
        return Health.ALIVE

    def observe(self, beat: Beat, now: float) -> list[HealthChange]:
        held = self.beats.get(beat.node_id)
        if held is not None and not beat.newer_than(held):
            return self.tick(now)  # a replay of a beat already counted
        self.beats[beat.node_id] = beat
        self.seen[beat.node_id] = now if held is not None else min(now, beat.at or now)
        return self.tick(now)

    def forget(self, node_id: str, now: float) -> list[HealthChange]:
        """The node's entry was deleted from the bucket (decommissioned)."""
        self.beats.pop(node_id, None)
        self.seen.pop(node_id, None)
        before = self.health_of.pop(node_id, None)
        if before is None or before is Health.LEFT:
            return []
        return self._notify([HealthChange(node_id, before, Health.LEFT, now, self.isolated(now))])

    def isolated(self, now: float) -> bool:
        """Whether this node's own beats have stopped coming back (it is cut off)."""
        if self.node_id not in self.beats:
            return False
        return self._grade(self.node_id, now) in (Health.SUSPECT, Health.DEAD)

    def tick(self, now: float) -> list[HealthChange]:
        changes = []
        cut_off = self.isolated(now)
        for node_id in sorted(self.beats):
            health = self._grade(node_id, now)
            before = self.health_of.get(node_id)
            if health is not before:
                self.health_of[node_id] = health
                changes.append(HealthChange(node_id, before, health, now, cut_off))
        return self._notify(changes)

    def _notify(self, changes: list[HealthChange]) -> list[HealthChange]:
        for change in changes:
            level = logging.INFO if change.after is Health.ALIVE or change.before is None else logging.WARNING
            log.log(level, "cluster: node %s %s -> %s%s", change.node_id, change.before, change.after.value,
                    " (this node is cut off)" if change.isolated else "")  # fmt: skip
            for listener in self.listeners:
                try:
                    listener(change)
                except Exception:  # noqa: BLE001 -- one consumer's bug must not stop the others
                    log.exception("cluster: health listener %r failed", listener)
        return changes

    def health(self, node_id: str, now: float) -> Health | None:
        return self._grade(node_id, now) if node_id in self.beats else None

    def nodes(self, now: float) -> list[NodeStatus]:
        return [NodeStatus(self.beats[n], self._grade(n, now), max(0.0, now - self.seen[n])) for n in sorted(self.beats)]

    def alive(self, now: float) -> set[str]:
        return {s.beat.node_id for s in self.nodes(now) if s.health is Health.ALIVE}

    def as_dict(self, now: float) -> dict[str, Any]:
        return {"node": self.node_id, "heartbeat_seconds": self.heartbeat, "isolated": self.isolated(now),
                "nodes": [s.as_dict() for s in self.nodes(now)]}  # fmt: skip


Describe = Callable[[], Mapping[str, Any]]


class Membership:
    """This node's heartbeat and its :class:`ClusterView` of the others, on ``bus``.

    ``describe()`` gives the live members of the beat (``serving``, ``sip``, ``http``,
    ``load``, ``version``); it is called at each beat, so load figures stay current.
    """

    def __init__(self, bus: Bus, node_id: str, *, heartbeat_seconds: float = 1.0,
                 describe: Describe | None = None, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.bus = bus
        self.node_id = node_id
        self.heartbeat_seconds = heartbeat_seconds
        self.describe = describe or (lambda: {})
        self.clock = clock
        self.view = ClusterView(node_id, heartbeat_seconds)
        self.started = clock()
        self.seq = 0
        self.beat_failures = 0
        self.kv: KeyValue | None = None
        self._watch: Any = None
        self._task: asyncio.Task[None] | None = None

    def beat(self, *, leaving: bool = False) -> Beat:
        self.seq += 1
        info = self.describe()
        return Beat.from_dict({**info, "id": self.node_id, "started": self.started, "at": self.clock(),
                               "seq": self.seq, "leaving": leaving})  # fmt: skip

    async def start(self) -> None:
        self.kv = await self.bus.kv(MEMBERS_BUCKET)
        await self._send()
        self._watch = await self.kv.watch(self._on_entry)
        self._task = asyncio.create_task(self._run(), name="cluster-heartbeat")

    async def stop(self, *, leave: bool = True) -> None:
        """Stop beating; with ``leave`` say goodbye, so peers see ``left`` at once rather
        than ``dead`` ten beats later."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if leave and self.kv is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.heartbeat_seconds * 2):
                    await self.kv.put(self.node_id, self.beat(leaving=True).to_dict())
        if self._watch is not None:
            await self._watch.stop()
            self._watch = None

    async def _send(self) -> None:
        assert self.kv is not None
        try:
            # A beat is only true when it is sent now: never queued behind an outage.
            async with asyncio.timeout(self.heartbeat_seconds):
                await self.kv.put(self.node_id, self.beat().to_dict())
        except Exception as exc:  # noqa: BLE001 -- the bus is away; the next beat tries again
            self.beat_failures += 1
            log.debug("cluster: heartbeat not sent: %s", exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            await self._send()
            self.view.tick(self.clock())

    async def _on_entry(self, entry: Entry) -> None:
        now = self.clock()
        if entry.deleted:
            self.view.forget(entry.key, now)
            return
        try:
            beat = Beat.from_dict(entry.json(), entry.key)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("cluster: unreadable beat under %r ignored: %s", entry.key, exc)
            return
        self.view.observe(beat, now)
