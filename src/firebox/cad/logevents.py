"""i3 log events of the CAD (NENA-STA-010.3 section 4.12.3) for what reaches it without a
911 call: a person who walks into a station, a dispatcher's own entry.

A walk-in is logged as a call is, so that the Logging Service tells its story the same way
(``firebox logs call``): it gets its own i3 Call Identifier and the incident's Incident
Tracking Identifier (NENA-STA-010.3 section 2.1.7-2.1.8, minted by the CAD, whose FQDN
they carry), and these events, all with both identifiers:

===================================  ======================================================
what                                 log event
===================================  ======================================================
the person is taken in               ``CallStartLogEvent`` (incoming), ``localCallType``
                                     ``walk-in``, ``extension.walkIn``: the station, who
                                     entered it
the address checked                  ``LostQueryLogEvent`` (outgoing) and
                                     ``LostResponseLogEvent`` (incoming): the LoST
                                     ``findService`` with ``validateLocation`` (RFC 5222)
                                     and the ECRF's answer, as XML
the location the incident got        ``CallProcessLogEvent`` with ``extension.location``
                                     (point, civic address, validated or not, how found,
                                     the PSAP and agencies serving it)
the incident                         ``CallProcessLogEvent`` with ``extension.incident``
                                     (type, priority, status; i3 has no incident-created
                                     type, the incident is a step of the intake's processing)
the intake ends                      ``CallEndLogEvent`` (``extension.cause``: ``walk-in
                                     entered``)
===================================  ======================================================

Logging never fails or delays the incident: every method is synchronous and never raises
(``firebox.logging.queue.EventQueue``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from firebox.cad.locate import LocationCheck, Serving
from firebox.cad.model import Incident
from firebox.logging.events import (
    CallEndLogEvent,
    CallStartLogEvent,
    Direction,
    LogEvent,
    LostQueryLogEvent,
    LostResponseLogEvent,
)
from firebox.logging.queue import EventQueue, EventSink

__all__ = ["CadLogger", "WALK_IN"]

#: ``localCallType`` of a walk-in (i3 leaves local call types to the agency).
WALK_IN = "walk-in"


def _ms(at: datetime) -> datetime:
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class CadLogger(EventQueue):
    """The CAD's i3 log events. ``sender`` is a ``LogSender``; ``element_id`` the CAD's FQDN;
    ``agency_id`` its agency's domain."""

    TASK_NAME = "cad-logger"

    def __init__(self, sender: EventSink, *, element_id: str, agency_id: str) -> None:
        super().__init__(sender)
        self.element_id = element_id
        self.agency_id = agency_id

    def walk_in(
        self,
        incident: Incident,
        call_id: str,
        *,
        at: datetime,
        agent: str | None = None,
        position: str | None = None,
        station: str | None = None,
        check: LocationCheck | None = None,
        serving: tuple[Serving, ...] = (),
    ) -> None:
        """Log the intake of ``incident`` (made by hand) under the i3 ``call_id``."""
        self.guard(self._walk_in, incident, call_id, _ms(at), agent, position, station, check, serving)

    def _walk_in(self, incident: Incident, call_id: str, at: datetime, agent: str | None, position: str | None,
                 station: str | None, check: LocationCheck | None, serving: tuple[Serving, ...]) -> None:  # fmt: skip
        common: dict[str, Any] = {
            "element_id": self.element_id, "agency_id": self.agency_id, "call_id": call_id,
            "incident_id": incident.id, "agency_agent_id": agent, "agency_position_id": position, "timestamp": at,
        }  # fmt: skip
        walk_in = {"station": station, "enteredBy": agent}
        self.emit(CallStartLogEvent(direction=Direction.INCOMING, local_call_type=WALK_IN,
                                    extension={"walkIn": walk_in}, **common))  # fmt: skip
        if check is not None and check.query is not None:
            from firebox.ecrf.logevents import response_status
            from firebox.lost.codec import serialize

            query_id = uuid.uuid4().hex
            self.emit(LostQueryLogEvent(query_adapter=serialize(check.query).decode(), direction=Direction.OUTGOING,
                                        query_id=query_id, **common))  # fmt: skip
            if check.response is not None:
                self.emit(LostResponseLogEvent(response_adapter=serialize(check.response).decode(), direction=Direction.INCOMING,
                                               response_id=query_id, response_status=response_status(check.response), **common))  # fmt: skip
        loc = incident.location
        location = {
            "point": {"lat": loc.point.lat, "lon": loc.point.lon} if loc.point else None,
            "civic": {k: getattr(loc.civic, k) for k in loc.civic.present()} if loc.civic else None,
            "description": loc.description, "validated": loc.validated, "method": loc.method,
            "servedBy": [s.to_json() for s in serving],
        }  # fmt: skip
        self.emit(LogEvent(log_event_type="CallProcessLogEvent", extension={"location": location}, **common))
        summary = {"type": incident.type.value, "subtype": incident.subtype.value, "priority": incident.priority,
                   "status": incident.status.value, "source": incident.source.kind.value, "station": station}  # fmt: skip
        self.emit(LogEvent(log_event_type="CallProcessLogEvent", extension={"incident": summary}, **common))
        self.emit(CallEndLogEvent(direction=Direction.INCOMING, local_call_type=WALK_IN,
                                  extension={"cause": "walk-in entered"}, **common))  # fmt: skip
