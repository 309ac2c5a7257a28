"""i3 log events of the BCF + ESRP element (NENA-STA-010.3 section 4.12.3).

``CallLogger`` turns what ``EmergencyCore`` sees into log events and hands each one to a
``LogSender`` (which signs it, spools it durably and delivers it to every Logging Service):

* ``CallStartLogEvent`` (incoming) once the BCF has marked the call (its
  ``urn:emergency:uid:callid:`` / ``incidentid:`` identifiers are the events' ``callId`` and
  ``incidentId``; an unmarked call gets identifiers of this element);
* ``CallSignalingMessageLogEvent`` for every SIP message of the call received or sent by
  the element (the message text as it is on the wire, ``direction`` incoming/outgoing);
* ``LostQueryLogEvent`` / ``LostResponseLogEvent`` for the ESRP's ``findService`` (the LoST
  XML of RFC 5222, built with ``firebox.lost.codec.serialize`` from the request and the
  answer; ``attach(router)`` wraps the router's LoST client for that);
* ``RouteLogEvent`` for the routing decision (the first destination) and for each failover
  (the next destination, with the failure as ``cause``);
* ``CallEndLogEvent`` when the call ends: a BYE from either side, or a final failure
  (CANCEL, every destination failed, a local rejection or busy answer).

Events of a call received before the BCF assigned its identifiers (the INVITE itself, the
100 Trying) are held and written, after the ``CallStartLogEvent``, once they are known.

Several nodes (issue 8): the element Record-Routes an INVITE with the call's i3 identifiers
as parameters of its Record-Route URI (``route_params``; RFC 3261 section 19.1.1: a proxy's
own URI is its to fill, and it comes back in the Route of every in-dialog request in both
directions). A node that did not set the call up, given an in-dialog request with that Route
entry (``received(..., routes=...)``), takes the call's identifiers from it (``route_ids``)
and logs the request, the responses to it and, for a BYE, the ``CallEndLogEvent`` under the
original call's i3 Call ID and Incident ID (NENA-STA-010.3 section 4.12: each element logs
what passes through it). No ``CallStartLogEvent`` there: the call started on the node that
set it up. A route entry without the parameters (a node of an older release) gives new
identifiers, said in a log line, rather than no events at all. The format::

    sip:core.example.gov;i3c=<callid>;i3i=<incidentid>;i3f=<caller's From tag>;lr

``<callid>`` / ``<incidentid>``: the identifier without its ``urn:emergency:uid:callid:`` /
``urn:emergency:uid:incidentid:`` prefix (the whole URN when it has another), every
character but ``A-Za-z0-9-_.~:`` %-escaped (RFC 3261 section 25.1 ``paramchar``). The From
tag orients the call's ``to`` / ``from`` when the callee sends the request.

Logging never blocks or fails a call: every method is synchronous and never raises, and
``LogSender.send`` is awaited in one background task (in order, errors logged). ``drain``
waits for the events handed over so far to be spooled and then delivered.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from firebox.esrp.policy import RouteDecision
from firebox.logging.events import (
    CallEndLogEvent,
    CallSignalingMessageLogEvent,
    CallStartLogEvent,
    Direction,
    LogEvent,
    LostQueryLogEvent,
    LostResponseLogEvent,
    RouteLogEvent,
    check_uid,
    new_call_id,
    new_incident_id,
)
from firebox.logging.queue import EventQueue, EventSink
from firebox.sip.address import SipUri, parse_name_addr, parse_uri
from firebox.sip.errors import SipParseError
from firebox.sip.message import Message, Request, serialize

__all__ = ["CallLogger", "EventSink", "LoggedLost", "RouteIds", "current_call", "route_ids", "route_params"]

log = logging.getLogger(__name__)

#: The SIP Call-ID of the call being routed in this task (set by ``EmergencyCore`` around
#: ``Router.route``): which call a LoST query belongs to.
current_call: contextvars.ContextVar[str | None] = contextvars.ContextVar("firebox_esrp_call", default=None)

#: Calls whose identifiers are kept (oldest dropped first), like ``EmergencyCore.records``.
MAX_CALLS = 10_000
#: Events of a call held while its identifiers are unknown (beyond: dropped, counted).
MAX_PENDING = 200

ROUTE_POLICY_TYPE = "OriginationRoutingPolicy"

#: Record-Route URI parameters carrying a call's i3 identifiers and its caller's From tag.
RR_CALL, RR_INCIDENT, RR_FROM_TAG = "i3c", "i3i", "i3f"
_CALL_PREFIX, _INCIDENT_PREFIX = "urn:emergency:uid:callid:", "urn:emergency:uid:incidentid:"
#: Left as they are in a parameter value: a subset of RFC 3261 25.1 ``paramchar`` (no
#: ``;``, ``=``, ``,``, ``?``, ``>``, ``%`` unescaped, so the value survives any parser).
_SAFE = "-_.~:"
#: In-dialog methods of a call: a Route entry of ours without identifiers on one of these is
#: a call set up by an older node (a SUBSCRIBE/NOTIFY dialog is not a call).
_CALL_DIALOG_METHODS = frozenset({"INVITE", "ACK", "BYE", "UPDATE", "INFO", "PRACK", "REFER", "MESSAGE"})


def route_params(call_id: str, incident_id: str | None, from_tag: str | None = None) -> str:
    """``;i3c=...;i3i=...;i3f=...`` for our Record-Route URI (see the module text)."""

    def short(value: str, prefix: str) -> str:
        if value[: len(prefix)].lower() == prefix:
            value = value[len(prefix) :]
        return quote(value, safe=_SAFE)

    out = f";{RR_CALL}={short(call_id, _CALL_PREFIX)}"
    if incident_id:
        out += f";{RR_INCIDENT}={short(incident_id, _INCIDENT_PREFIX)}"
    if from_tag:
        out += f";{RR_FROM_TAG}={quote(from_tag, safe=_SAFE)}"
    return out


@dataclass(frozen=True, slots=True)
class RouteIds:
    """What a Route entry of ours tells about its call (``None``: not there)."""

    call_id: str | None
    incident_id: str | None
    from_tag: str | None


def route_ids(route: str) -> RouteIds:
    """The identifiers ``route_params`` put in a Route / Record-Route value (``<uri>`` or a
    bare URI); ``RouteIds(None, None, None)`` when it has none or does not parse."""
    try:
        uri = parse_name_addr(route).uri if "<" in route else parse_uri(route)
    except SipParseError:
        return RouteIds(None, None, None)
    if not isinstance(uri, SipUri):
        return RouteIds(None, None, None)

    def full(name: str, prefix: str) -> str | None:
        value = uri.params.get(name)
        if not value:
            return None
        value = unquote(value)
        return value if value[:4].lower() == "urn:" else prefix + value

    tag = uri.params.get(RR_FROM_TAG)
    return RouteIds(full(RR_CALL, _CALL_PREFIX), full(RR_INCIDENT, _INCIDENT_PREFIX), unquote(tag) if tag else None)


@dataclass(slots=True)
class _CallState:
    sip_call_id: str
    call_id: str | None = None
    incident_id: str | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    pending: list[LogEvent] = field(default_factory=list)
    to: str | None = None
    from_: str | None = None
    ended: bool = False


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _text(message: Message) -> str:
    return serialize(message).decode("utf-8", errors="replace")


def _peer(address: Any) -> str | None:
    try:
        host, port = address.host, address.port  # a transport Source
    except AttributeError:
        try:
            host, port = address[0], address[1]
        except (TypeError, IndexError, KeyError):
            return None
    if ":" in str(host):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class CallLogger(EventQueue):
    """Log events of one BCF + ESRP element. ``sender`` is a ``LogSender`` (or anything
    with ``send``/``drain``); ``element_id`` the element's FQDN (``elementId``, and the
    domain of identifiers it assigns itself); ``agency_id`` its agency's domain;
    ``signaling``: log every SIP message (``CallSignalingMessageLogEvent``)."""

    TASK_NAME = "esrp-call-logger"

    def __init__(self, sender: EventSink, *, element_id: str, agency_id: str, signaling: bool = True) -> None:
        super().__init__(sender)
        self.element_id = element_id
        self.agency_id = agency_id
        self.signaling = signaling
        self.calls: OrderedDict[str, _CallState] = OrderedDict()
        self.dropped = 0

    # --- what the element tells ---------------------------------------------------------

    def received(self, message: Message, source: Any, routes: tuple[str, ...] = ()) -> None:
        """A SIP message came in (before the element acts on it). ``routes``: for an
        in-dialog request, its leading Route entries that name this element (or its
        cluster), as received: where a call set up by another node is recognised."""
        self._guard(self._signaling, message, Direction.INCOMING, source, routes)

    def sending(self, message: Message, dest: Any) -> None:
        """A SIP message goes out."""
        self._guard(self._signaling, message, Direction.OUTGOING, dest)

    def ids(self, sip_call_id: str) -> tuple[str | None, str | None]:
        """The i3 ``(callId, incidentId)`` of a call (``(None, None)`` until known): what
        the element puts in its Record-Route."""
        state = self.calls.get(sip_call_id)
        return (state.call_id, state.incident_id) if state is not None else (None, None)

    def identified(self, sip_call_id: str, call_id: str | None, incident_id: str | None) -> None:
        """The BCF marked the call (``None``: it did not; the element assigns identifiers):
        ``CallStartLogEvent``, then what was held."""
        self._guard(self._identified, sip_call_id, call_id, incident_id)

    def routed(self, sip_call_id: str, decision: RouteDecision, ecrf_uri: str | None = None) -> None:
        """The policy routing function's decision: ``RouteLogEvent`` for its first
        destination."""
        self._guard(self._routed, sip_call_id, decision, ecrf_uri)

    def failover(self, sip_call_id: str, from_uri: str, to_uri: str | None, reason: str, status: int) -> None:
        """A destination failed: ``RouteLogEvent`` for the next one."""
        self._guard(self._failover, sip_call_id, from_uri, to_uri, reason, status)

    def ended(self, sip_call_id: str, cause: str | None = None) -> None:
        """The call ended (``CallEndLogEvent``, once per call)."""
        self._guard(self._ended, sip_call_id, cause)

    def lost_query(self, sip_call_id: str | None, query_id: str, xml: str) -> None:
        self._guard(self._lost, sip_call_id, LostQueryLogEvent, query_adapter=xml, query_id=query_id,
                    direction=Direction.OUTGOING)  # fmt: skip

    def lost_response(self, sip_call_id: str | None, query_id: str, xml: str, status: str | None) -> None:
        self._guard(self._lost, sip_call_id, LostResponseLogEvent, response_adapter=xml, response_id=query_id,
                    direction=Direction.INCOMING, response_status=status)  # fmt: skip

    def attach(self, router: Any) -> None:
        """Wrap ``router.lost`` so that its LoST queries and responses are logged."""
        lost = router.lost
        if isinstance(lost, LoggedLost):
            lost.logger = self
        else:
            router.lost = LoggedLost(lost, self)

    def current_ids(self) -> tuple[str | None, str | None]:
        """The i3 ``(callId, incidentId)`` of the call being routed in this task (``routing``),
        or ``(None, None)``: what the in-process ECRF logs its part of the call under."""
        sip_call_id = current_call.get()
        state = self.calls.get(sip_call_id) if sip_call_id else None
        return (state.call_id, state.incident_id) if state is not None else (None, None)

    @contextmanager
    def routing(self, sip_call_id: str) -> Iterator[None]:
        """Within: LoST queries belong to ``sip_call_id``."""
        token = current_call.set(sip_call_id)
        try:
            yield
        finally:
            current_call.reset(token)

    # --- internals ----------------------------------------------------------------------

    _guard = EventQueue.guard

    def _state(self, sip_call_id: str, create: bool = False) -> _CallState | None:
        state = self.calls.get(sip_call_id)
        if state is None and create:
            state = self.calls[sip_call_id] = _CallState(sip_call_id)
            while len(self.calls) > MAX_CALLS:
                _, old = self.calls.popitem(last=False)
                if old.pending:
                    self._assign(old)  # never silently lose what was held
        return state

    def _common(self, state: _CallState | None, sip_call_id: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"element_id": self.element_id, "agency_id": self.agency_id}
        if sip_call_id:
            out["call_id_sip"] = sip_call_id
        if state is not None:
            out["call_id"] = state.call_id
            out["incident_id"] = state.incident_id
        return out

    def _emit(self, state: _CallState | None, event: LogEvent) -> None:
        if state is not None and state.call_id is None:
            if len(state.pending) >= MAX_PENDING:
                self.dropped += 1
                log.warning("i3 call logging: too many events held for call %s", state.sip_call_id)
                return
            state.pending.append(event)
            return
        self.emit(event)

    def _signaling(self, message: Message, direction: Direction, peer: Any, routes: tuple[str, ...] = ()) -> None:
        try:
            sip_call_id = message.call_id
        except Exception:  # noqa: BLE001 -- no Call-ID: not a call's message
            return
        if not sip_call_id:
            return
        state = self._state(sip_call_id)
        if state is None:
            if not (isinstance(message, Request) and direction is Direction.INCOMING):
                return
            if message.method in ("INVITE", "MESSAGE") and message.to_tag is None:
                state = self._state(sip_call_id, create=True)
                assert state is not None
                state.to, state.from_ = message.headers.get("To"), message.headers.get("From")
            elif message.to_tag is not None and routes:
                state = self._adopt(message, routes)
            if state is None:
                return
        if self.signaling:
            event = CallSignalingMessageLogEvent(
                timestamp=_now(), text=_text(message), direction=direction,
                ip_address_port=_peer(peer), **self._common(state, sip_call_id),
            )  # fmt: skip
            self._emit(state, event)
        if isinstance(message, Request) and message.method == "BYE" and direction is Direction.INCOMING:
            self._ended(sip_call_id, "BYE")

    def _adopt(self, request: Request, routes: tuple[str, ...]) -> _CallState | None:
        """An in-dialog request of a call another node set up (it reached us through our
        Route entry): the call's state under the identifiers in that entry, without a
        ``CallStartLogEvent`` (logged where the call started)."""
        found = next((ids for ids in map(route_ids, routes) if ids.call_id), None)
        if found is None and request.method not in _CALL_DIALOG_METHODS:
            return None
        state = self._state(request.call_id, create=True)
        assert state is not None
        to, from_ = request.headers.get("To"), request.headers.get("From")
        if found is not None and found.from_tag is not None and request.from_tag != found.from_tag:
            to, from_ = from_, to  # the callee's request: the call's From is its To
        state.to, state.from_ = to, from_
        call_id = found.call_id if found is not None else None
        incident_id = found.incident_id if found is not None else None
        if call_id is None or check_uid(call_id, "callid") is not None:
            if call_id is not None:
                log.warning("i3 call logging: bad call identifier %r in the Route of %s %s",
                            call_id, request.method, request.call_id)  # fmt: skip
            else:
                log.warning("i3 call logging: %s of call %s (set up elsewhere) names no i3 identifiers "
                            "in its Route (a node of an older release?): logged under new ones",
                            request.method, request.call_id)  # fmt: skip
            call_id = new_call_id(self.element_id)
        if incident_id is None or check_uid(incident_id, "incidentid") is not None:
            incident_id = new_incident_id(self.element_id)
        state.call_id, state.incident_id = call_id, incident_id
        return state

    def _assign(self, state: _CallState, call_id: str | None = None, incident_id: str | None = None) -> None:
        if state.call_id is not None:
            return
        if call_id is None or check_uid(call_id, "callid") is not None:
            call_id = new_call_id(self.element_id)
        if incident_id is None or check_uid(incident_id, "incidentid") is not None:
            incident_id = new_incident_id(self.element_id)
        state.call_id, state.incident_id = call_id, incident_id
        start = CallStartLogEvent(
            timestamp=state.started.replace(microsecond=state.started.microsecond // 1000 * 1000),
            direction=Direction.INCOMING, to=state.to, from_=state.from_,
            **self._common(state, state.sip_call_id),
        )  # fmt: skip
        held, state.pending = state.pending, []
        self._emit(state, start)
        for event in held:
            event.call_id, event.incident_id = call_id, incident_id
            self._emit(state, event)

    def _identified(self, sip_call_id: str, call_id: str | None, incident_id: str | None) -> None:
        state = self._state(sip_call_id, create=True)
        assert state is not None
        self._assign(state, call_id, incident_id)

    def _known(self, sip_call_id: str) -> _CallState:
        state = self._state(sip_call_id, create=True)
        assert state is not None
        self._assign(state)  # no-op once identified
        return state

    def _route_event(self, state: _CallState, sip_call_id: str, uri: str, rule: str, cause: str | None,
                     queue: str | None) -> None:  # fmt: skip
        self._emit(state, RouteLogEvent(
            timestamp=_now(), recipient_uri=uri, rule_id=rule, policy_owner=self.agency_id,
            policy_type=ROUTE_POLICY_TYPE, policy_queue_name=queue, cause=cause,
            **self._common(state, sip_call_id),
        ))  # fmt: skip

    def _routed(self, sip_call_id: str, decision: RouteDecision, ecrf_uri: str | None) -> None:
        state = self._known(sip_call_id)
        if decision.busy or not decision.destinations:
            return
        first = decision.destinations[0]
        rule = decision.matched_rules[-1] if decision.matched_rules else ("ecrf" if ecrf_uri else "default")
        cause = first.cause or f"{first.kind.value}: {first.reason}"
        queue = ecrf_uri if ecrf_uri and ":" in ecrf_uri else None
        self._route_event(state, sip_call_id, first.uri, rule, cause, queue)

    def _failover(self, sip_call_id: str, from_uri: str, to_uri: str | None, reason: str, status: int) -> None:
        if to_uri is None:
            return
        state = self._known(sip_call_id)
        self._route_event(state, sip_call_id, to_uri, "failover", f"{from_uri} failed: {status} {reason}", None)

    def _ended(self, sip_call_id: str, cause: str | None) -> None:
        state = self._known(sip_call_id)
        if state.ended:
            return
        state.ended = True
        extension = {"cause": cause} if cause else None
        self._emit(state, CallEndLogEvent(
            timestamp=_now(), direction=Direction.INCOMING, to=state.to, from_=state.from_,
            extension=extension, **self._common(state, sip_call_id),
        ))  # fmt: skip

    def _lost(self, sip_call_id: str | None, cls: type[LogEvent], **members: Any) -> None:
        state = self._known(sip_call_id) if sip_call_id else None
        self._emit(state, cls(timestamp=_now(), **members, **self._common(state, sip_call_id)))


class LoggedLost:
    """A router's LoST client (``LostAsker``) whose ``findService`` queries and responses
    are logged: the query as ``firebox.lost.client`` builds it, the answer as received
    (both serialized with ``firebox.lost.codec``)."""

    def __init__(self, inner: Any, logger: CallLogger) -> None:
        self.inner = inner
        self.logger = logger

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def find_service(self, location: Any, service: str = "urn:service:sos") -> Any:
        sip_call_id = current_call.get()
        query_id = uuid.uuid4().hex
        try:
            query = _query_xml(location, service)
        except Exception:  # noqa: BLE001
            log.exception("LoST query not serializable for the log")
            query = None
        if query is not None:
            self.logger.lost_query(sip_call_id, query_id, query)
        answer = await self.inner.find_service(location, service)
        try:
            xml, status = _answer_xml(answer)
        except Exception:  # noqa: BLE001
            log.exception("LoST answer not serializable for the log")
        else:
            self.logger.lost_response(sip_call_id, query_id, xml, status)
        return answer


def _query_xml(location: Any, service: str) -> str:
    from firebox.lost.client import LostClientCore
    from firebox.lost.codec import serialize as lost_serialize

    request = LostClientCore.find_service_request(location, service, boundary=None)
    return lost_serialize(request).decode("utf-8")


def _answer_xml(answer: Any) -> tuple[str, str]:
    from firebox.lost.codec import serialize as lost_serialize
    from firebox.lost.messages import ErrorsResponse

    status = "error" if isinstance(answer, ErrorsResponse) else "ok"
    return lost_serialize(answer).decode("utf-8"), status
