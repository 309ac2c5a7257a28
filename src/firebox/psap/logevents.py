"""i3 log events of the PSAP's call handling element (NENA-STA-010.3 section 4.12.3).

``PsapLogger`` turns what the call handling element announces (its ``CallHandlingEvent``s,
``on_event``) and the SIP messages it sends and receives (``signaling``) into log events,
handed to a ``LogSender`` (signed, spooled durably, delivered to every Logging Service)
through ``firebox.logging.queue.EventQueue``:

================================  ==========================================================
what happened                     log event
================================  ==========================================================
a call reaches the PSAP           ``CallStartLogEvent`` (incoming), ``CallStateChangeLogEvent``
                                  ``callQueued``
it rings at positions             ``CallStateChangeLogEvent`` ``callAlerting`` (each new set)
a position answers / resumes      ``CallStateChangeLogEvent`` ``callAnswered`` (position,
                                  call-taker)
a position holds it               ``CallStateChangeLogEvent`` ``callHold``
the caller hangs up unanswered    ``CallStateChangeLogEvent`` ``callCancel``, then the end
a text in or out (RFC 3428)       ``MessageLogEvent`` (the call-taker on an outgoing one)
a transfer, and its progress      ``CallTransferLogEvent`` (``target``; the progress in
                                  ``extension.transferStatus``)
a callback attempt                ``CallProcessLogEvent`` with ``extension.callback`` (i3 has
                                  no callback type; the attempt is a step of the call's
                                  processing, and the callback itself a new call)
the call ends (any way)           ``CallEndLogEvent`` (``extension.cause``: released,
                                  abandoned, transferred, overflowed), once
a SIP message in or out           ``CallSignalingMessageLogEvent``, verbatim
a position signs in/out, changes  ``AgentStateChangeLogEvent`` (``Available`` or
                                  ``NotAvailable``; our status as the secondary state)
================================  ==========================================================

Every call event carries the call's ``callId`` and ``incidentId``: the BCF's (the call's
``Call-Info``), or identifiers this element assigns (logged) when a call arrived without
valid ones, so that the Logging Service can still tell the call's story. The state values
are those of the NENA Call States registry as other i3 implementations use them
(``callQueued``, ``callAlerting``, ``callAnswered``, ``callHold``, ``callCancel``); they live in
``CALL_STATES`` alone.

Timestamps are the element's (``CallHandlingEvent.at``), not a clock read here. Logging
never blocks or fails a call: every method is synchronous and never raises.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from firebox.logging.events import (
    AgentStateChangeLogEvent,
    CallEndLogEvent,
    CallSignalingMessageLogEvent,
    CallStartLogEvent,
    CallStateChangeLogEvent,
    CallTransferLogEvent,
    Direction,
    LogEvent,
    MessageLogEvent,
    check_uid,
    new_call_id,
    new_incident_id,
)
from firebox.logging.queue import EventQueue, EventSink
from firebox.psap.api import (
    ACTIVE_STATUSES,
    CallbackEntry,
    CallHandlingEvent,
    CallStatus,
    CallView,
    EventKind,
    PositionStatus,
    PositionView,
)
from firebox.sip.message import Message, Request, serialize

__all__ = ["CALL_STATES", "PsapLogger"]

log = logging.getLogger(__name__)

#: Call States registry values (NENA-STA-010.3 section 4.12.3.7) for what the PSAP does.
CALL_STATES = {
    "queued": "callQueued",
    "alerting": "callAlerting",
    "answered": "callAnswered",
    "hold": "callHold",
    "cancel": "callCancel",
}
#: Calls whose identifiers are kept (oldest dropped first).
MAX_CALLS = 10_000
_DIRECTIONS = {"in": Direction.INCOMING, "incoming": Direction.INCOMING, "received": Direction.INCOMING,
               "out": Direction.OUTGOING, "outgoing": Direction.OUTGOING, "sent": Direction.OUTGOING}  # fmt: skip


@dataclass(slots=True)
class _Call:
    key: str  # the element's call_id (CallView.call_id)
    call_id: str
    incident_id: str
    sip_call_id: str | None = None
    status: CallStatus | None = None
    offered_to: tuple[str, ...] = ()
    messages: int = 0
    transfer: tuple[str | None, str | None] = (None, None)
    ended: bool = False
    callbacks: dict[str, int] = field(default_factory=dict)  # callback id -> attempts logged


def _ms(at: datetime | None) -> datetime:
    at = at or datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _peer(address: Any) -> str | None:
    if address is None:
        return None
    try:
        host, port = address[0], address[1]
    except (TypeError, IndexError, KeyError):
        return str(address)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class PsapLogger(EventQueue):
    """Log events of one PSAP call handling element. ``sender`` is a ``LogSender`` (or
    anything with ``send``/``drain``); ``element_id`` the element's FQDN (``elementId``, and
    the domain of identifiers it assigns); ``agency_id`` the PSAP's agency; ``log_signaling``
    False leaves SIP messages out."""

    TASK_NAME = "psap-call-logger"

    def __init__(self, sender: EventSink, *, element_id: str, agency_id: str, log_signaling: bool = True) -> None:
        super().__init__(sender)
        self.element_id = element_id
        self.agency_id = agency_id
        self.log_signaling = log_signaling
        self.calls: OrderedDict[str, _Call] = OrderedDict()
        self.users: dict[str, str | None] = {}  # position id -> the user signed in there
        self._positions: dict[str, PositionStatus] = {}

    # --- what the element tells -----------------------------------------------------------

    def on_event(self, event: CallHandlingEvent) -> None:
        """One event of the call handling element (``CallHandlingApi.subscribe``)."""
        self.guard(self._on_event, event)

    def signaling(self, message: Message, direction: str, call_id: str, incident_id: str | None,
                  peer: Any = None, at: datetime | None = None) -> None:  # fmt: skip
        """A SIP message of call ``call_id`` (the element's ``CallView.call_id``) received
        (``direction`` "in"/"incoming") or sent ("out"/"outgoing"); ``peer`` its address,
        ``at`` when (now if None)."""
        self.guard(self._signaling, message, direction, call_id, incident_id, peer, at)

    # --- internals ------------------------------------------------------------------------

    def _common(self, call: _Call | None, **more: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"element_id": self.element_id, "agency_id": self.agency_id}
        if call is not None:
            out["call_id"], out["incident_id"] = call.call_id, call.incident_id
            if call.sip_call_id:
                out["call_id_sip"] = call.sip_call_id
        out.update({k: v for k, v in more.items() if v is not None})
        return out

    def _call(self, key: str, incident_id: str | None, at: datetime | None, *, sip_call_id: str | None = None,
              from_: str | None = None, to: str | None = None, medium: str | None = None,
              psap_id: str | None = None, announce: bool = True) -> _Call:  # fmt: skip
        """The call ``key``, made on first sight (with its ``CallStartLogEvent`` when
        ``announce``: not for a call known only from its callback entry)."""
        call = self.calls.get(key)
        if call is not None:
            if sip_call_id and not call.sip_call_id:
                call.sip_call_id = sip_call_id
            return call
        call_id = key
        if check_uid(key, "callid") is not None:
            call_id = new_call_id(self.element_id)
            log.warning("i3 logging: call %r has no valid emergency-CallId; logged as %s", key, call_id)
        if incident_id is None or check_uid(incident_id, "incidentid") is not None:
            incident_id = new_incident_id(self.element_id)
        call = self.calls[key] = _Call(key, call_id, incident_id, sip_call_id)
        while len(self.calls) > MAX_CALLS:
            self.calls.popitem(last=False)
        if not announce:
            return call
        extension = {k: v for k, v in (("medium", medium), ("psapId", psap_id)) if v}
        self.emit(CallStartLogEvent(timestamp=_ms(at), direction=Direction.INCOMING, from_=from_, to=to,
                                    extension=extension or None, **self._common(call)))  # fmt: skip
        return call

    def _state(self, call: _Call, state: str, at: datetime, *, position: str | None = None,
               reason: str | None = None, target: str | None = None) -> None:  # fmt: skip
        self.emit(CallStateChangeLogEvent(
            timestamp=_ms(at), state=CALL_STATES[state], direction=Direction.INCOMING, target_id=target,
            change_reason=reason, **self._common(call, agency_position_id=position,
                                                 agency_agent_id=self.users.get(position) if position else None),
        ))  # fmt: skip

    def _on_event(self, event: CallHandlingEvent) -> None:
        if event.kind in (EventKind.CALL, EventKind.TEXT) and event.call is not None:
            self._on_call(event.call, event.at)
        elif event.kind is EventKind.POSITION and event.position is not None:
            self._on_position(event.position, event.at)
        elif event.kind is EventKind.CALLBACK and event.callback is not None:
            self._on_callback(event.callback, event.at)

    def _on_call(self, view: CallView, at: datetime) -> None:
        call = self._call(view.call_id, view.incident_id, view.offered_at, sip_call_id=view.sip_call_id,
                          from_=view.caller_uri or None, medium=view.medium.value, psap_id=view.psap_id)  # fmt: skip
        before = call.status
        if before is None:
            call.status = CallStatus.RINGING
            self._state(call, "queued", view.offered_at, reason=f"in the queue of {view.psap_id}")
            before = CallStatus.RINGING
        if view.status is CallStatus.RINGING and view.offered_to and view.offered_to != call.offered_to:
            self._state(call, "alerting", at, reason="offered to " + ", ".join(view.offered_to))
        call.offered_to = view.offered_to
        if view.status is not before:
            if view.status is CallStatus.CONNECTED:
                reason = "taken off hold" if before is CallStatus.HELD else None
                self._state(call, "answered", view.answered_at if reason is None and view.answered_at else at,
                            position=view.position, reason=reason)  # fmt: skip
            elif view.status is CallStatus.HELD:
                self._state(call, "hold", at, position=view.position)
            elif view.status is CallStatus.ABANDONED:
                self._state(call, "cancel", view.ended_at or at, reason="the caller hung up before answer")
        self._texts(call, view)
        self._transfer(call, view, at)
        call.status = view.status
        if view.status not in ACTIVE_STATUSES and not call.ended:
            call.ended = True
            self.emit(CallEndLogEvent(timestamp=_ms(view.ended_at or at), direction=Direction.INCOMING,
                                      from_=view.caller_uri or None, extension={"cause": view.status.value},
                                      **self._common(call, agency_position_id=view.position)))  # fmt: skip

    def _texts(self, call: _Call, view: CallView) -> None:
        for message in view.messages[call.messages :]:
            direction = Direction.INCOMING if message.direction == "in" else Direction.OUTGOING
            self.emit(MessageLogEvent(timestamp=_ms(message.at), text=message.text, direction=direction,
                                      **self._common(call, agency_agent_id=message.by,
                                                     agency_position_id=view.position if message.by else None)))  # fmt: skip
        call.messages = max(call.messages, len(view.messages))

    def _transfer(self, call: _Call, view: CallView, at: datetime) -> None:
        now = (view.transfer_target, view.transfer_status)
        if view.transfer_target and now != call.transfer:
            extension = {"transferStatus": view.transfer_status} if view.transfer_status else None
            self.emit(CallTransferLogEvent(timestamp=_ms(at), target=view.transfer_target, extension=extension,
                                           **self._common(call, agency_position_id=view.position,
                                                          agency_agent_id=self.users.get(view.position or ""))))  # fmt: skip
        call.transfer = now

    def _on_callback(self, entry: CallbackEntry, at: datetime) -> None:
        call = self._call(entry.call_id, None, entry.at, announce=False)
        done = call.callbacks.get(entry.id, 0)
        for attempt in entry.attempts[done:]:
            when = at
            try:
                when = datetime.fromisoformat(str(attempt.get("at")))
            except ValueError:
                pass
            details = {"id": entry.id, "number": entry.callback, "outcome": attempt.get("outcome"),
                       "status": entry.status.value}  # fmt: skip
            self.emit(LogEvent(log_event_type="CallProcessLogEvent", timestamp=_ms(when),
                               extension={"callback": details},
                               **self._common(call, agency_agent_id=attempt.get("by"))))  # fmt: skip
        call.callbacks[entry.id] = max(done, len(entry.attempts))

    def _on_position(self, position: PositionView, at: datetime) -> None:
        if position.user is not None or position.status is PositionStatus.SIGNED_OUT:
            self.users[position.id] = position.user
        if self._positions.get(position.id) is position.status:
            return
        self._positions[position.id] = position.status
        primary = "Available" if position.status is PositionStatus.AVAILABLE else "NotAvailable"
        self.emit(AgentStateChangeLogEvent(
            timestamp=_ms(at), primary_agent_state=primary, secondary_agent_state=position.status.value,
            **self._common(None, agency_position_id=position.id, agency_agent_id=position.user),
        ))  # fmt: skip

    def _signaling(self, message: Message, direction: str, call_id: str, incident_id: str | None, peer: Any,
                   at: datetime | None) -> None:  # fmt: skip
        where = _DIRECTIONS.get(direction.lower())
        if where is None:
            raise ValueError(f"direction {direction!r} is not in/incoming or out/outgoing")
        sip_call_id = message.headers.get("Call-ID")
        start: dict[str, Any] = {}
        if isinstance(message, Request) and message.method in ("INVITE", "MESSAGE") and where is Direction.INCOMING:
            start = {"from_": message.headers.get("From"), "to": message.headers.get("To")}
        call = self._call(call_id, incident_id, at, sip_call_id=sip_call_id, **start)
        if not self.log_signaling:
            return
        self.emit(CallSignalingMessageLogEvent(
            timestamp=_ms(at), text=serialize(message).decode("utf-8", errors="replace"), direction=where,
            **self._common(call, ip_address_port=_peer(peer), call_id_sip=sip_call_id),
        ))  # fmt: skip
