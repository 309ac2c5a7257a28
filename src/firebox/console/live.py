"""Live updates for the console: one numbered stream of changes (call handling events and
CAD changes), fanned out to every signed-in browser over Server-Sent Events, filtered by the
browser's PSAP.

Sources:

* the call handling element's ``subscribe()`` (``pump_call_handling``), every event as it
  comes;
* the CAD, which has no event stream of its own: the console's own CAD actions publish the
  incident and units they changed at once (``publish_incident`` / ``publish_unit``), and a
  cheap poll (``poll_cad``, every ``cad_poll_s``) publishes what changed by other hands (a
  fire alarm box, the CAD's JSON API), by comparing each record's ``updated_at``.

Every event gets the next sequence number, sent as the SSE ``id``. The hub keeps the last
``buffer`` events, so a browser that reconnects with ``Last-Event-ID`` (EventSource does so
by itself) gets what it missed; one that missed more than the buffer, or fell behind by more
than its queue holds, is told ``resync`` and fetches a fresh snapshot. Memory stays bounded
whatever a client does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firebox.cad.model import incident_to_json, unit_to_json

log = logging.getLogger("firebox.console")

__all__ = ["Client", "LiveHub", "pump_call_handling", "poll_cad"]


@dataclass(slots=True)
class _Event:
    seq: int
    psap_id: str | None  # None: for every PSAP (CAD changes)
    kind: str
    data: str  # JSON, serialised once for all clients


@dataclass(eq=False, slots=True)
class Client:
    psap_id: str
    queue: asyncio.Queue[_Event | None] = field(default_factory=lambda: asyncio.Queue())
    limit: int = 2000
    lagging: bool = False

    def offer(self, event: _Event) -> None:
        if self.lagging:
            return
        if self.queue.qsize() >= self.limit:
            # Too far behind: drop what is queued and tell the page to fetch a snapshot.
            self.lagging = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(event)


class LiveHub:
    def __init__(self, *, buffer: int = 5000, client_limit: int = 2000):
        self.seq = 0
        self._buffer: deque[_Event] = deque(maxlen=buffer)
        self._clients: set[Client] = set()
        self._client_limit = client_limit

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, kind: str, psap_id: str | None, data: dict[str, Any]) -> int:
        self.seq += 1
        body = json.dumps({"kind": kind, "seq": self.seq, **data}, default=str, separators=(",", ":"))
        event = _Event(self.seq, psap_id, kind, body)
        self._buffer.append(event)
        for client in self._clients:
            if psap_id is None or client.psap_id == psap_id:
                client.offer(event)
        return self.seq

    def connect(self, psap_id: str, after: int | None) -> Client:
        """A new client; ``after`` is the last sequence number the page has (from its
        snapshot or ``Last-Event-ID``): events after it are replayed, or ``resync`` sent
        when they are no longer all in the buffer."""
        client = Client(psap_id, limit=self._client_limit)
        if after is not None and after < self.seq:
            oldest = self._buffer[0].seq if self._buffer else self.seq + 1
            if after + 1 < oldest or after < 0:
                client.lagging = True
                client.queue.put_nowait(None)
            else:
                for event in self._buffer:
                    if event.seq > after and (event.psap_id is None or event.psap_id == psap_id):
                        client.offer(event)
        self._clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self._clients.discard(client)

    def resync_all(self) -> None:
        """Tell every page to fetch a fresh snapshot (a source of events restarted)."""
        for client in self._clients:
            client.lagging = True
            client.queue.put_nowait(None)

    @staticmethod
    def format(event: _Event | None, seq: int) -> str:
        """One SSE message (the WHATWG ``text/event-stream`` format)."""
        if event is None:
            return f"id: {seq}\ndata: {json.dumps({'kind': 'resync', 'seq': seq})}\n\n"
        return f"id: {event.seq}\ndata: {event.data}\n\n"

    # --- CAD changes -----------------------------------------------------------------------

    def publish_incident(self, incident: Any) -> None:
        row = incident_to_json(incident)
        row.pop("timeline", None)
        row.pop("narrative", None)
        self.publish("incident", None, {"incident": row})

    def publish_unit(self, unit: Any) -> None:
        self.publish("unit", None, {"unit": unit_to_json(unit)})


async def pump_call_handling(api: Any, hub: LiveHub, *, retry_s: float = 1.0) -> None:
    """Forward the call handling element's events to the hub until cancelled. If the
    subscription ends or fails, pages are told to resync and it is taken again."""
    from firebox.psap.api import to_json

    while True:
        try:
            async for ev in api.subscribe():
                if ev.kind.value == "resync":  # the element dropped events for us: every page resyncs
                    hub.resync_all()
                    continue
                data: dict[str, Any] = {"at": ev.at.isoformat()}
                for name in ("call", "position", "callback", "stats"):
                    value = getattr(ev, name)
                    if value is not None:
                        data[name] = to_json(value)
                hub.publish(ev.kind.value, ev.psap_id, data)
            log.warning("console: the call handling event stream ended; subscribing again")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("console: the call handling event stream failed; subscribing again")
        hub.resync_all()
        await asyncio.sleep(retry_s)


async def poll_cad(cad: Any, hub: LiveHub, interval_s: float, *, has_clients: Callable[[], bool] | None = None) -> None:
    """Publish incidents and units changed outside the console, every ``interval_s``.
    Looks only while a page is connected (``has_clients``)."""
    seen_incidents: dict[str, str] = {}
    seen_units: dict[str, str] = {}
    first = True
    while True:
        if has_clients is None or has_clients() or first:
            try:
                current = set()
                for i in cad.incidents(open_only=True):
                    current.add(i.id)
                    stamp = i.updated_at.isoformat()
                    if seen_incidents.get(i.id) != stamp:
                        seen_incidents[i.id] = stamp
                        if not first:
                            hub.publish_incident(i)
                for gone in set(seen_incidents) - current:  # closed since: show it closed
                    del seen_incidents[gone]
                    hub.publish_incident(cad.incident(gone))
                for u in cad.units():
                    stamp = f"{u.status.value}|{u.updated_at}"
                    if seen_units.get(u.id) != stamp:
                        seen_units[u.id] = stamp
                        if not first:
                            hub.publish_unit(u)
                first = False
            except Exception:
                log.exception("console: polling the CAD failed; trying again")
        await asyncio.sleep(interval_s)
