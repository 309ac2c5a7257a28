"""i3 log events (NENA-STA-010.3 section 4.12.3, "LogEvent" and its types).

Every functional element (BCF, ESRP, ECRF, PSAP...) logs what it does to a Logging Service:
``POST /LogEvents`` with the event as a JWS (RFC 7515, flattened JSON serialization) whose
payload is a JSON object with camelCase member names. The members common to every event
(section 4.12.3; NENA's Logging Service OpenAPI, schema ``LogEvent``) are:

======================  ==========  =====================================================
member                  presence    content
======================  ==========  =====================================================
logEventType            mandatory   one of the registered types (``LOG_EVENT_TYPES``)
timestamp               mandatory   RFC 3339 date-time *with* an offset (``Z`` or +hh:mm)
elementId               mandatory   the logging element's identifier (a domain name)
agencyId                mandatory   its agency's identifier (a domain name)
agencyAgentId           optional    the agent (call taker) involved
agencyPositionId        optional    the position (workstation) involved
callId                  conditional ``urn:emergency:uid:callid:<id>:<fqdn>``, for call events
incidentId              conditional ``urn:emergency:uid:incidentid:<id>:<fqdn>``, idem
callIdSip               optional    the SIP Call-ID of the leg concerned
ipAddressPort           optional    address:port of the peer
extension               optional    a JSON object of vendor/extension members
clientAssignedIdentifier optional   an identifier assigned by the logging client
======================  ==========  =====================================================

firebox models the types a BCF, ESRP, ECRF and PSAP write (call start/end, signaling
messages, routing decisions, LoST queries and responses, text messages, call state changes,
transfers, agent states); events of the other
registered types are read as a plain ``LogEvent`` keeping their own members in ``other``.
Members not modelled are kept in ``other`` too, so ``from_json(e.to_json())`` never drops
anything. ``callId`` and ``incidentId`` are mandatory for the call events modelled here
(the BCF assigns both when a call enters the ESInet).

``validate(data)`` checks a JSON object and returns a ``Problem`` per wrong member (the
member's name and what is wrong), which a Logging Service turns into a 400 answer
(``LogEventError.problem_json()``, RFC 9457 problem details).

firebox's ``LogSender`` sets ``clientAssignedIdentifier`` to a ``new_log_event_id`` before
signing: a Logging Service that already has an event with that identifier answers 409
instead of storing it twice, which makes retried deliveries idempotent.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from firebox.jws import json_type as _json_type
from firebox.restapi import Problem as _Problem
from firebox.restapi import problem_body

__all__ = [
    "LOG_EVENT_TYPES",
    "AgentStateChangeLogEvent",
    "CallEndLogEvent",
    "CallSignalingMessageLogEvent",
    "CallStartLogEvent",
    "CallStateChangeLogEvent",
    "CallTransferLogEvent",
    "Direction",
    "LogEvent",
    "LogEventError",
    "LostQueryLogEvent",
    "LostResponseLogEvent",
    "MessageLogEvent",
    "Problem",
    "RouteLogEvent",
    "from_json",
    "new_call_id",
    "new_incident_id",
    "new_log_event_id",
    "validate",
]

#: The LogEvent types registered by NENA-STA-010.3 (section 4.12.3 and the "LogEvent Types"
#: registry, as listed by NENA's Logging Service OpenAPI).
LOG_EVENT_TYPES: frozenset[str] = frozenset("""
    CallProcessLogEvent CallStartLogEvent CallEndLogEvent RecCallStartLogEvent
    RecCallEndLogEvent CallTransferLogEvent RouteLogEvent MediaStartLogEvent MediaEndLogEvent
    RecMediaStartLogEvent RecMediaEndLogEvent RecordingFailedLogEvent MessageLogEvent
    AdditionalAgencyLogEvent IncidentMergeLogEvent IncidentUnMergeLogEvent IncidentLinkLogEvent
    IncidentUnLinkLogEvent IncidentClearLogEvent IncidentReopenLogEvent LostQueryLogEvent
    LostResponseLogEvent CallSignalingMessageLogEvent SipRecMetadataLogEvent
    NonRtpMediaMessageLogEvent AliLocationQueryLogEvent AliLocationResponseLogEvent
    MalformedMessageLogEvent IncidentSplitLogEvent DiscrepancyReportLogEvent
    ElementStateChangeLogEvent ServiceStateChangeLogEvent AdditionalDataQueryLogEvent
    AdditionalDataResponseLogEvent LocationQueryLogEvent LocationResponseLogEvent
    CallStateChangeLogEvent GatewayCallLogEvent HookflashLogEvent LegacyDigitsLogEvent
    AgentStateChangeLogEvent QueueStateChangeLogEvent KeepAliveFailureLogEvent
    RouteRuleMsgLogEvent PolicyChangeLogEvent VersionsLogEvent SubscribeLogEvent EidoLogEvent
    EidoDereferenceFactoryQueryLogEvent EidoDereferenceFactoryQueryResponseLogEvent
    SubscriptionRequestedLogEvent SubscriptionRequestedResponseLogEvent
    SubscriptionTerminatedLogEvent EidoDeniedLogEvent EidoTransmissionErrorLogEvent
    WebSocketEstablishedLogEvent WebSocketTerminatedLogEvent
""".split())  # noqa: SIM905


class Direction(StrEnum):
    """``direction`` (NENA-STA-010.3 section 4.12.3): seen from the logging element."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"


# --- i3 identifiers (NENA-STA-010.3: urn:emergency:uid:<kind>:<id>:<fqdn>) ---------------

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_UID = re.compile(r"urn:emergency:uid:([A-Za-z]+):([^:\s]{1,64}):(.+)", re.IGNORECASE)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


def is_domain_name(value: str) -> bool:
    """A host name in the preferred syntax (RFC 1034 section 3.5, RFC 1123 section 2.1)."""
    return len(value) <= 253 and bool(_DOMAIN.fullmatch(value))


def _new_uid(kind: str, fqdn: str) -> str:
    if not isinstance(fqdn, str) or not is_domain_name(fqdn):
        raise ValueError(f"not a domain name: {fqdn!r}")
    return f"urn:emergency:uid:{kind}:{uuid.uuid4().hex}:{fqdn}"


def new_call_id(fqdn: str) -> str:
    """A Call Identifier, ``urn:emergency:uid:callid:<unique>:<fqdn>`` (NENA-STA-010.3),
    ``fqdn`` being the element that assigns it (usually the BCF)."""
    return _new_uid("callid", fqdn)


def new_incident_id(fqdn: str) -> str:
    """An Incident Tracking Identifier, ``urn:emergency:uid:incidentid:<unique>:<fqdn>``
    (NENA-STA-010.3)."""
    return _new_uid("incidentid", fqdn)


def new_log_event_id(fqdn: str) -> str:
    """A log event identifier, ``urn:emergency:uid:logid:<unique>:<fqdn>`` (NENA-STA-010.3
    section 4.12.3); the unique part is 32 hexadecimal digits (a random UUID)."""
    return _new_uid("logid", fqdn)


def check_uid(value: str, kind: str) -> str | None:
    """Why ``value`` is not a ``urn:emergency:uid:<kind>:<id>:<fqdn>``, or None if it is."""
    m = _UID.fullmatch(value)
    if m is None:
        return f"must be urn:emergency:uid:{kind}:<id>:<domain name>, not {_short(value)}"
    if m.group(1).lower() != kind:
        return f"must be a urn:emergency:uid:{kind}: identifier, not a {m.group(1)!r} one"
    if not is_domain_name(m.group(3)):
        return f"must end with the domain name of the element that assigned it, not {_short(m.group(3))}"
    return None


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 ``date-time`` (section 5.6) with a mandatory offset; ``ValueError`` if not."""
    m = _RFC3339.fullmatch(value)
    if m is None:
        raise ValueError(
            f"must be an RFC 3339 date-time with an offset, like 2020-03-10T11:00:01-05:00, "
            f"not {_short(value)}"
        )
    y, mo, d, h, mi, s, frac, off = m.groups()
    if off in ("Z", "z"):
        off = "+00:00"
    if int(off[1:3]) > 23 or int(off[4:6]) > 59:
        raise ValueError(f"offset {off} out of range")
    micro = (frac or ".")[1:7].ljust(6, "0") if frac else "000000"
    return datetime.fromisoformat(f"{y}-{mo}-{d}T{h}:{mi}:{s}.{micro}{off}")


def format_timestamp(value: datetime) -> str:
    """RFC 3339 with offset; whole seconds, milli- or microseconds as the value needs."""
    if value.microsecond == 0:
        return value.isoformat(timespec="seconds")
    if value.microsecond % 1000 == 0:
        return value.isoformat(timespec="milliseconds")
    return value.isoformat(timespec="microseconds")


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- problems --------------------------------------------------------------------------------


# One wrong member: the shape every firebox REST service answers with (RFC 9457 ``errors``).
Problem = _Problem


class LogEventError(ValueError):
    """An event that is not a valid log event; ``problems`` lists every wrong member."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(str(p) for p in problems) or "invalid log event")
        self.problems = problems

    def problem_json(self, status: int = 400, title: str = "Bad LogEvent") -> dict[str, Any]:
        """RFC 9457 problem details, with one ``errors`` entry per wrong member (a JSON
        pointer to it and the message), as a Logging Service answers a bad ``POST``."""
        return problem_body(status, title, self.problems)


# --- member checks -----------------------------------------------------------------------------

Check = Callable[[Any], str | None]


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else f"must be a string, not {_json_type(value)}"


def _domain(value: Any) -> str | None:
    if not isinstance(value, str):
        return _string(value)
    return None if is_domain_name(value) else f"must be a domain name, not {_short(value)}"


def _uid(kind: str) -> Check:
    def check(value: Any) -> str | None:
        return _string(value) or check_uid(value, kind)

    return check


def _timestamp(value: Any) -> str | None:
    if isinstance(value, datetime):
        return None if value.tzinfo is not None else "must have a UTC offset"
    if not isinstance(value, str):
        return _string(value)
    try:
        parse_timestamp(value)
    except ValueError as exc:
        return str(exc)
    return None


def _object(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"must be a JSON object, not {_json_type(value)}"


def _uri(value: Any) -> str | None:
    if not isinstance(value, str):
        return _string(value)
    return None if _URI.fullmatch(value) else f"must be a URI (scheme:...), not {_short(value)}"


def _direction(value: Any) -> str | None:
    if isinstance(value, str) and value in ("incoming", "outgoing"):
        return None
    return f"must be 'incoming' or 'outgoing', not {_short(value)}"


def _agent_state(value: Any) -> str | None:
    if isinstance(value, str) and value in ("Available", "NotAvailable"):
        return None
    return f"must be 'Available' or 'NotAvailable', not {_short(value)}"


def _m(name: str, check: Check = _string, *, required: bool = False) -> dict[str, Any]:
    """Field metadata: the JSON member ``name``, its ``check``, whether it is mandatory."""
    return {"json": name, "check": check, "required": required}


# --- the events --------------------------------------------------------------------------------


@dataclass(kw_only=True)
class LogEvent:
    """The members common to every log event (NENA-STA-010.3 section 4.12.3). Used as is
    for registered types firebox does not model; their own members are kept in ``other``.

    ``TYPE`` is the ``logEventType`` of a subclass; ``CALL_EVENT`` subclasses need
    ``callId`` and ``incidentId``."""

    TYPE: ClassVar[str | None] = None
    CALL_EVENT: ClassVar[bool] = False

    log_event_type: str = field(metadata=_m("logEventType", required=True))
    timestamp: datetime = field(default_factory=_now, metadata=_m("timestamp", _timestamp, required=True))
    element_id: str = field(metadata=_m("elementId", _domain, required=True))
    agency_id: str = field(metadata=_m("agencyId", _domain, required=True))
    agency_agent_id: str | None = field(default=None, metadata=_m("agencyAgentId"))
    agency_position_id: str | None = field(default=None, metadata=_m("agencyPositionId"))
    call_id: str | None = field(default=None, metadata=_m("callId", _uid("callid")))
    incident_id: str | None = field(default=None, metadata=_m("incidentId", _uid("incidentid")))
    call_id_sip: str | None = field(default=None, metadata=_m("callIdSip"))
    ip_address_port: str | None = field(default=None, metadata=_m("ipAddressPort"))
    extension: dict[str, Any] | None = field(default=None, metadata=_m("extension", _object))
    client_assigned_identifier: str | None = field(default=None, metadata=_m("clientAssignedIdentifier"))
    #: Members not modelled by the class, by JSON name (kept for lossless round trips).
    other: dict[str, Any] = field(default_factory=dict, metadata={"json": None})

    # JSON

    def to_json(self) -> dict[str, Any]:
        """The event as the JSON object that is signed (camelCase members; absent optional
        members are left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            name = f.metadata.get("json")
            if name is None:
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, datetime):
                value = format_timestamp(value)
            elif isinstance(value, StrEnum):
                value = value.value
            out[name] = value
        for name, value in self.other.items():
            out.setdefault(name, value)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LogEvent:
        """Parse and validate a JSON object; the class is chosen by ``logEventType`` (called
        on a subclass, the type must be that subclass's). Raises ``LogEventError``."""
        problems = validate(data)
        target = _CLASSES.get(data.get("logEventType"), LogEvent) if not problems else cls
        if not problems and cls is not LogEvent and target is not cls:
            problems = [Problem("logEventType", f"must be {cls.TYPE!r}, not {data['logEventType']!r}")]
        if problems:
            raise LogEventError(problems)
        members = _members(target)
        kwargs: dict[str, Any] = {}
        other: dict[str, Any] = {}
        for name, value in data.items():
            f = members.get(name)
            if f is None:
                other[name] = value
            elif not f.init:
                continue  # logEventType of a subclass: implied by the class
            elif name == "timestamp":
                kwargs[f.name] = parse_timestamp(value)
            else:
                kwargs[f.name] = value
        return target(**kwargs, other=other)

    def problems(self) -> list[Problem]:
        """What is wrong with this event (empty if nothing)."""
        return validate(self.to_json())

    def check(self) -> LogEvent:
        """Raise ``LogEventError`` unless the event is valid; returns it."""
        problems = self.problems()
        if problems:
            raise LogEventError(problems)
        return self


def _type_field(name: str) -> Any:
    return field(default=name, init=False, metadata=_m("logEventType", required=True))


@dataclass(kw_only=True)
class _CallLogEvent(LogEvent):
    """Members of call start/end events (the ``CallLogEvent`` part)."""

    CALL_EVENT: ClassVar[bool] = True

    direction: Direction | str = field(metadata=_m("direction", _direction, required=True))
    standard_primary_call_type: str | None = field(default=None, metadata=_m("standardPrimaryCallType"))
    standard_secondary_call_type: str | None = field(default=None, metadata=_m("standardSecondaryCallType"))
    local_call_type: str | None = field(default=None, metadata=_m("localCallType"))
    local_use: dict[str, Any] | None = field(default=None, metadata=_m("localUse", _object))
    to: str | None = field(default=None, metadata=_m("to"))
    from_: str | None = field(default=None, metadata=_m("from"))


@dataclass(kw_only=True)
class CallStartLogEvent(_CallLogEvent):
    """A call enters or leaves the element (NENA-STA-010.3 section 4.12.3, ``CallStartLogEvent``)."""

    TYPE: ClassVar[str] = "CallStartLogEvent"
    log_event_type: str = _type_field(TYPE)


@dataclass(kw_only=True)
class CallEndLogEvent(_CallLogEvent):
    """A call ends at the element (``CallEndLogEvent``)."""

    TYPE: ClassVar[str] = "CallEndLogEvent"
    log_event_type: str = _type_field(TYPE)


@dataclass(kw_only=True)
class CallSignalingMessageLogEvent(LogEvent):
    """A signaling message sent or received, verbatim (``CallSignalingMessageLogEvent``):
    ``text`` is the whole SIP message, ``protocol`` ``"sip"``."""

    TYPE: ClassVar[str] = "CallSignalingMessageLogEvent"
    CALL_EVENT: ClassVar[bool] = True
    log_event_type: str = _type_field(TYPE)
    text: str = field(metadata=_m("text", required=True))
    direction: Direction | str = field(metadata=_m("direction", _direction, required=True))
    protocol: str | None = field(default="sip", metadata=_m("protocol"))


@dataclass(kw_only=True)
class RouteLogEvent(LogEvent):
    """An ESRP routing decision (``RouteLogEvent``): where the call went (``recipientUri``),
    by which rule of which policy, and why (``cause``)."""

    TYPE: ClassVar[str] = "RouteLogEvent"
    CALL_EVENT: ClassVar[bool] = True
    log_event_type: str = _type_field(TYPE)
    recipient_uri: str = field(metadata=_m("recipientUri", _uri, required=True))
    rule_id: str = field(metadata=_m("ruleId", required=True))
    policy_owner: str = field(metadata=_m("policyOwner", required=True))
    policy_type: str = field(metadata=_m("policyType", required=True))
    policy_queue_name: str | None = field(default=None, metadata=_m("policyQueueName", _uri))
    policy_id: str | None = field(default=None, metadata=_m("policyId"))
    cause: str | None = field(default=None, metadata=_m("cause"))


@dataclass(kw_only=True)
class LostQueryLogEvent(LogEvent):
    """A LoST query sent or received (``LostQueryLogEvent``); ``queryAdapter`` carries the
    query (the LoST XML, RFC 5222), ``queryId`` pairs it with its response."""

    TYPE: ClassVar[str] = "LostQueryLogEvent"
    log_event_type: str = _type_field(TYPE)
    query_adapter: str = field(metadata=_m("queryAdapter", required=True))
    direction: Direction | str = field(metadata=_m("direction", _direction, required=True))
    query_id: str = field(metadata=_m("queryId", required=True))
    malformed_query: str | None = field(default=None, metadata=_m("malformedQuery"))


@dataclass(kw_only=True)
class LostResponseLogEvent(LogEvent):
    """A LoST response sent or received (``LostResponseLogEvent``); ``responseAdapter``
    carries the response XML, ``responseId`` equals the query's ``queryId``."""

    TYPE: ClassVar[str] = "LostResponseLogEvent"
    log_event_type: str = _type_field(TYPE)
    response_adapter: str = field(metadata=_m("responseAdapter", required=True))
    direction: Direction | str = field(metadata=_m("direction", _direction, required=True))
    response_id: str = field(metadata=_m("responseId", required=True))
    response_status: str | None = field(default=None, metadata=_m("responseStatus"))
    malformed_response: str | None = field(default=None, metadata=_m("malformedResponse"))


@dataclass(kw_only=True)
class MessageLogEvent(LogEvent):
    """A text message (RTT/MSRP/SMS text) sent or received (``MessageLogEvent``)."""

    TYPE: ClassVar[str] = "MessageLogEvent"
    CALL_EVENT: ClassVar[bool] = True
    log_event_type: str = _type_field(TYPE)
    text: str = field(metadata=_m("text", required=True))
    direction: Direction | str = field(metadata=_m("direction", _direction, required=True))


@dataclass(kw_only=True)
class CallStateChangeLogEvent(LogEvent):
    """A call's state changed at the element (``CallStateChangeLogEvent``, NENA-STA-010.3
    section 4.12.3.7): ``state`` one of the Call States registry's values (``callQueued``,
    ``callAlerting``, ``callAnswered``, ``callHold``, ``callCancel``...), ``direction`` the
    call's; ``targetId`` the party concerned when it is not the call itself, ``legCallId``
    another leg's Call-ID, ``changeReason`` why in words."""

    TYPE: ClassVar[str] = "CallStateChangeLogEvent"
    CALL_EVENT: ClassVar[bool] = True
    log_event_type: str = _type_field(TYPE)
    state: str = field(metadata=_m("state", required=True))
    direction: Direction | str = field(metadata=_m("direction", _direction, required=True))
    leg_call_id: str | None = field(default=None, metadata=_m("legCallId"))
    target_id: str | None = field(default=None, metadata=_m("targetId"))
    change_reason: str | None = field(default=None, metadata=_m("changeReason"))


@dataclass(kw_only=True)
class CallTransferLogEvent(LogEvent):
    """A call transferred (``CallTransferLogEvent``, section 4.12.3.7): ``target`` the URI
    it goes to, ``targetCallIdSip`` the Call-ID of the leg to the target when known."""

    TYPE: ClassVar[str] = "CallTransferLogEvent"
    CALL_EVENT: ClassVar[bool] = True
    log_event_type: str = _type_field(TYPE)
    target: str = field(metadata=_m("target", required=True))
    target_call_id_sip: str | None = field(default=None, metadata=_m("targetCallIdSip"))


@dataclass(kw_only=True)
class AgentStateChangeLogEvent(LogEvent):
    """A call-taker's state changed (``AgentStateChangeLogEvent``, section 4.12.3.7):
    ``primaryAgentState`` ``Available`` or ``NotAvailable``, with an optional
    ``secondaryAgentState`` and ``deviceId``."""

    TYPE: ClassVar[str] = "AgentStateChangeLogEvent"
    log_event_type: str = _type_field(TYPE)
    primary_agent_state: str = field(metadata=_m("primaryAgentState", _agent_state, required=True))
    secondary_agent_state: str | None = field(default=None, metadata=_m("secondaryAgentState"))
    device_id: str | None = field(default=None, metadata=_m("deviceId"))


_CLASSES: dict[str, type[LogEvent]] = {
    c.TYPE: c
    for c in (
        CallStartLogEvent,
        CallEndLogEvent,
        CallSignalingMessageLogEvent,
        RouteLogEvent,
        LostQueryLogEvent,
        LostResponseLogEvent,
        MessageLogEvent,
        CallStateChangeLogEvent,
        CallTransferLogEvent,
        AgentStateChangeLogEvent,
    )
}


def _members(cls: type[LogEvent]) -> dict[str, dataclasses.Field[Any]]:
    return {f.metadata["json"]: f for f in dataclasses.fields(cls) if f.metadata.get("json")}


def event_class(log_event_type: str) -> type[LogEvent]:
    """The class modelling ``log_event_type`` (``LogEvent`` for the others)."""
    return _CLASSES.get(log_event_type, LogEvent)


def validate(data: object) -> list[Problem]:
    """Every problem with a log event given as a JSON object: each missing mandatory member
    and each member of the wrong type or form, in member order. Empty when it is valid."""
    if not isinstance(data, Mapping):
        return [Problem("", f"a log event must be a JSON object, not {_json_type(data)}")]
    problems: list[Problem] = []
    bad_keys = [k for k in data if not isinstance(k, str)]
    for key in bad_keys:
        problems.append(Problem(str(key), "member names must be strings"))
    kind = data.get("logEventType")
    cls: type[LogEvent] = LogEvent
    if "logEventType" not in data:
        problems.append(Problem("logEventType", "missing"))
    elif not isinstance(kind, str):
        problems.append(Problem("logEventType", f"must be a string, not {_json_type(kind)}"))
    elif kind not in LOG_EVENT_TYPES:
        problems.append(Problem("logEventType", f"{_short(kind)} is not a registered log event type"))
    else:
        cls = _CLASSES.get(kind, LogEvent)
    for name, f in _members(cls).items():
        if name == "logEventType":
            continue
        required = f.metadata.get("required", False) or (
            cls.CALL_EVENT and name in ("callId", "incidentId")
        )
        if name not in data:
            if required:
                where = kind if cls.TYPE else "every log event"
                problems.append(Problem(name, f"missing (mandatory in {where})"))
            continue
        value = data[name]
        if required and isinstance(value, str) and not value.strip():
            problems.append(Problem(name, "must not be empty"))
            continue
        why = f.metadata["check"](value)
        if why is not None:
            problems.append(Problem(name, why))
    return problems


def from_json(data: Mapping[str, Any]) -> LogEvent:
    """Parse and validate a log event (the payload of a verified JWS); the returned class
    follows ``logEventType``. Raises ``LogEventError`` listing every problem."""
    return LogEvent.from_json(data)
