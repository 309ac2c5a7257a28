"""Live state shared by the nodes of a cluster: the ESRP's state table and the monitor's outages.

:class:`LiveState` replicates one node's ``firebox.esrp.states.StateTable`` through the
``live`` key-value bucket of the bus, so that every node routes on what any node heard:

* element, service and queue states (NENA-STA-010.3 sections 2.4.1, 2.4.2, 4.2.1.3): a state
  the table keeps locally (a NOTIFY, a subscription failure) is written under
  ``<kind>|<origin node>|<key>`` with the time it was received there; a peer's entry is
  applied with ``StateTable.update`` and that time, so per key the newest wins on every node
  whatever order the entries arrive in. One entry per origin (rather than one per key) means
  two nodes writing at once cannot overwrite a newer state with an older one in the bucket.
* outage marks (``mark_outage`` / ``clear_outage``, from ``OutageRouting``): each node's
  marks live under ``outage|<origin>|<queue>`` and are deleted when that node clears them.
  The table holds, per queue, the mark of a node the cluster view does not call dead or
  left, a confirmed one before a suspected one and then the newest: a queue stays routed
  around while any live node says it is out, and a dead node's marks expire with it unless
  another node holds one too. Its marks count again if it comes back (a healed partition);
  a node that restarts deletes the marks its previous run left.

The table is observed, not edited: ``attach`` wraps the instance's ``update``,
``mark_outage`` and ``clear_outage`` so that every existing caller (the ESRP's subscriptions,
``OutageRouting``, fault injection) is replicated without knowing it. Publishing goes
through ``put_nowait`` and never blocks the routing path.

:class:`OutageFeed` puts the monitor's outage updates (``Monitor.listeners``) on the bus and
hands peers' updates to local listeners (status page, console board, alerting), so every
node shows the same outages. Outage ids are per node (``psap-boston-1`` on two nodes are two
outages), so a peer's update arrives with its id prefixed ``<node>/`` and a ``node`` member.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from firebox.cluster.bus import Bus, Entry, KeyValue, Message, Replay, Subscription
from firebox.cluster.membership import ClusterView, Health, HealthChange
from firebox.esrp.states import (
    AnyState,
    ElementState,
    OutageMark,
    QueueState,
    ServiceState,
    StateError,
    StateTable,
    aware,
    parse_element_state,
    parse_queue_state,
    parse_service_state,
    uri_key,
)
from firebox.monitor.detector import OutageUpdate, UpdateKind

__all__ = ["LIVE_BUCKET", "LiveState", "OutageFeed"]

log = logging.getLogger(__name__)

LIVE_BUCKET: Final = "live"
_GONE: Final = (Health.DEAD, Health.LEFT)

_KINDS: Final = {"element": parse_element_state, "service": parse_service_state, "queue": parse_queue_state}


def _state_key(state: AnyState) -> tuple[str, str]:
    match state:
        case ElementState():
            return "element", state.element_id.lower()
        case ServiceState():
            return "service", state.domain.lower()
        case QueueState():
            return "queue", uri_key(state.queue_uri)
    raise TypeError(f"not a state: {state!r}")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return aware(datetime.fromisoformat(value))
    except ValueError:
        return None


class LiveState:
    """Replicate ``table`` through ``bus`` as node ``node_id``. ``view`` (the membership's)
    decides whose outage marks count; without one every node's count."""

    def __init__(self, bus: Bus, node_id: str, table: StateTable, *, view: ClusterView | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:  # fmt: skip
        self.bus = bus
        self.node_id = node_id
        self.table = table
        self.view = view
        self.clock = clock
        #: queue key -> origin node -> its mark (the local node's included).
        self.marks: dict[str, dict[str, OutageMark]] = {}
        #: queue key -> the URI as given, for the table's calls.
        self.uris: dict[str, str] = {}
        self.applied = 0
        self.ignored = 0
        self.kv: KeyValue | None = None
        self._watch: Subscription | None = None
        self._originals: dict[str, Any] = {}

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.kv = await self.bus.kv(LIVE_BUCKET)
        # Marks of this node's previous run: its monitor starts with no outage open.
        mine = f"outage|{self.node_id}|"
        for entry in await self.kv.entries():
            if entry.key.startswith(mine):
                await self.kv.delete(entry.key)
        self.attach()
        if self.view is not None:
            self.view.listeners.append(self._on_health)
        self._watch = await self.kv.watch(self._on_entry)

    async def stop(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
            self._watch = None
        if self.view is not None and self._on_health in self.view.listeners:
            self.view.listeners.remove(self._on_health)
        self.detach()

    def attach(self) -> None:
        """Wrap the table's feeding methods on the instance (idempotent)."""
        if self._originals:
            return
        for name in ("update", "mark_outage", "clear_outage"):
            self._originals[name] = getattr(self.table, name)
        self.table.update = self._update  # type: ignore[method-assign]
        self.table.mark_outage = self._mark_outage  # type: ignore[method-assign]
        self.table.clear_outage = self._clear_outage  # type: ignore[method-assign]

    def detach(self) -> None:
        for name in self._originals:
            delattr(self.table, name)  # back to the class's methods
        self._originals.clear()

    # --- local changes --------------------------------------------------------------------

    def _put(self, key: str, value: dict[str, Any] | None) -> None:
        if self.kv is None:
            return
        if value is None:
            self.kv.delete_nowait(key)
        else:
            self.kv.put_nowait(key, value)

    def _update(self, state: AnyState, received: datetime) -> bool:
        kept = bool(self._originals["update"](state, received))
        if kept:
            kind, key = _state_key(state)
            self._put(f"{kind}|{self.node_id}|{key}",
                      {"node": self.node_id, "received": aware(received).isoformat(), "state": state.to_dict()})  # fmt: skip
        return kept

    def _mark_outage(self, queue_uri: str, mark: OutageMark) -> None:
        key = uri_key(queue_uri)
        self.uris.setdefault(key, queue_uri)
        self.marks.setdefault(key, {})[self.node_id] = mark
        self._put(f"outage|{self.node_id}|{key}", {
            "node": self.node_id, "uri": queue_uri, "outage_id": mark.outage_id, "confirmed": mark.confirmed,
            "reason": mark.reason, "since": aware(mark.since).isoformat(),
        })  # fmt: skip
        self._settle(key)

    def _clear_outage(self, queue_uri: str, outage_id: str | None = None) -> bool:
        """Lift this node's own mark (only if it is ``outage_id``'s, when given); a peer's
        mark on the same queue stays in force."""
        key = uri_key(queue_uri)
        held = self.marks.get(key, {}).get(self.node_id)
        if held is None or (outage_id is not None and held.outage_id != outage_id):
            return False
        del self.marks[key][self.node_id]
        self._put(f"outage|{self.node_id}|{key}", None)
        self._settle(key)
        return True

    # --- peers' changes ------------------------------------------------------------------

    def _counts(self, origin: str) -> bool:
        if origin == self.node_id or self.view is None:
            return True
        # The health last graded (what the listeners were told); never seen counts, so that
        # a node starting does not drop marks before the first beats arrive.
        return self.view.health_of.get(origin) not in _GONE

    def _settle(self, key: str) -> None:
        """Put in the table the mark that should stand for ``key`` now."""
        standing = [(origin, m) for origin, m in self.marks.get(key, {}).items() if self._counts(origin)]
        uri = self.uris.get(key, key)
        if not standing:
            self._originals["clear_outage"](uri)
            return
        origin, mark = max(standing, key=lambda om: (om[1].confirmed, aware(om[1].since), om[0]))
        if origin != self.node_id:
            mark = OutageMark(f"{origin}/{mark.outage_id}", mark.confirmed, f"{mark.reason} (seen by {origin})", mark.since)
        self._originals["mark_outage"](uri, mark)

    def _on_health(self, change: HealthChange) -> None:
        if change.node_id == self.node_id:
            return
        for key, by_origin in list(self.marks.items()):
            if change.node_id in by_origin:
                self._settle(key)

    async def _on_entry(self, entry: Entry) -> None:
        kind, _, rest = entry.key.partition("|")
        origin, _, key = rest.partition("|")
        if origin == self.node_id or not key:
            return  # our own write coming back
        try:
            if kind == "outage":
                self._apply_outage(origin, key, entry)
            elif kind in _KINDS and not entry.deleted:
                self._apply_state(kind, entry)
        except (StateError, ValueError, TypeError, KeyError, AttributeError) as exc:
            self.ignored += 1
            log.warning("cluster: live entry %r from %s ignored: %s", entry.key, origin, exc)

    def _apply_state(self, kind: str, entry: Entry) -> None:
        data = entry.json()
        state = _KINDS[kind](data["state"])
        received = _time(data.get("received")) or self.clock()
        if self._originals.get("update", self.table.update)(state, received):
            self.applied += 1

    def _apply_outage(self, origin: str, key: str, entry: Entry) -> None:
        if entry.deleted:
            if self.marks.get(key, {}).pop(origin, None) is not None:
                self._settle(key)
            return
        data = entry.json()
        since = _time(data.get("since")) or self.clock()
        mark = OutageMark(str(data["outage_id"]), bool(data.get("confirmed")), str(data.get("reason") or ""), since)
        self.uris.setdefault(key, str(data.get("uri") or key))
        self.marks.setdefault(key, {})[origin] = mark
        self.applied += 1
        self._settle(key)


_TOKEN_BAD: Final = re.compile(r"[^A-Za-z0-9_\-]")


class OutageFeed:
    """The monitor's outage updates on the bus (subject ``outages.<node>.<outage id>``),
    and peers' updates to ``listeners`` (same signature as ``Monitor.listeners``)."""

    def __init__(self, bus: Bus, node_id: str) -> None:
        self.bus = bus
        self.node_id = node_id
        self.listeners: list[Callable[[OutageUpdate], None]] = []
        self.received: list[OutageUpdate] = []
        self._sub: Subscription | None = None

    def listener(self, update: OutageUpdate) -> None:
        """Put in ``Monitor.listeners``: publishes without waiting."""
        oid = _TOKEN_BAD.sub("_", str(update.outage.get("id") or "unknown"))
        self.bus.publish(f"outages.{self.node_id}.{oid}",
                         {"node": self.node_id, "kind": update.kind.value, "outage": update.outage})  # fmt: skip

    async def start(self) -> None:
        # The last update of every outage still in the stream: a node starting (or
        # reconnecting a console) shows the outages already open.
        self._sub = await self.bus.subscribe("outages.>", self._on_message, replay=Replay.LAST_PER_SUBJECT)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.stop()
            self._sub = None

    async def _on_message(self, message: Message) -> None:
        try:
            data = message.json()
            origin = str(data["node"])
            if origin == self.node_id:
                return
            outage = dict(data["outage"])
            outage["id"] = f"{origin}/{outage.get('id')}"
            if outage.get("within"):
                outage["within"] = f"{origin}/{outage['within']}"
            outage["node"] = origin
            update = OutageUpdate(UpdateKind(data["kind"]), outage)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cluster: outage update on %s ignored: %s", message.subject, exc)
            return
        self.received.append(update)
        del self.received[:-500]
        for listener in self.listeners:
            try:
                listener(update)
            except Exception:  # noqa: BLE001 -- one consumer's bug must not stop the others
                log.exception("cluster: outage listener %r failed", listener)
