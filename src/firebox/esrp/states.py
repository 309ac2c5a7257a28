"""i3 state notifications and the table of the latest ones (NENA-STA-010.3).

Three SIP event packages (RFC 6665 SUBSCRIBE/NOTIFY) carry JSON bodies that tell an ESRP
whether the places it routes to can take calls:

``emergency-ElementState`` (section 2.4.1)
    one functional element (an ESRP, a PSAP's call handling system...) by its element id;
    values from the elementState registry (section 10.13).
``emergency-ServiceState`` (section 2.4.2)
    a service (a PSAP, an ECRF...) by name and domain, with an optional security posture;
    values from the serviceState (section 10.12) and securityPosture (section 10.18)
    registries; names from the serviceNames registry (section 10.11).
``emergency-QueueState`` (section 4.2.1.3, part of the ESRP, section 4.2)
    one call queue by its SIP URI, with its length and maximum; values from the queueState
    registry (section 10.17).

The bodies here are the flat objects of the section text (``{"elementId": .., "state": ..}``,
``{"queueUri": .., "queueLength": .., "queueMaxLength": .., "state": ..}``). The JSON schemas in
appendix E.11.3 wrap them in a member named after the event (``{"elementState": {...}}``,
``{"queueState": {...}}``) and E.11.3.1 calls the element id ``elementDomain``; since real
notifiers follow one or the other, ``parse_*`` accepts both and ``to_json`` writes the flat
form of the section text.

Parsing is strict about the members routing depends on (a missing or misspelled ``state``
is a :class:`StateError` naming the member) and lenient about members it does not know: a
notification is someone else's document, and a later edition adding a member must not make
us throw away an otherwise good state.

:class:`StateTable` keeps the latest state per element, service and queue with the time it
was received, and gives a :class:`Verdict` per destination. Stale or missing state is
``UNKNOWN``: usable, but after anything known to be usable, because excluding a destination
for lack of data could leave a call nowhere to go. Sans-I/O: every time is an argument.

The table also holds the monitor's outage marks (``mark_outage``): the detector's verdict on
a PSAP queue, from test calls and live traffic, which no i3 notifier sends (a PSAP whose
fiber is cut sends nothing at all). A confirmed outage makes the queue ``UNUSABLE``, a
suspected one ``SUSPECT`` (tried last); a question may leave them out (``outages=False``): the
detector's own test calls must still reach the PSAP they measure, or it could never be
seen to recover.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from functools import lru_cache
from typing import Any, Final, Generic, TypeVar

from firebox.deployment import SIP_URI

#: SIP Event header values (sections 2.4.1, 2.4.2, 4.2.1.3).
EVENT_ELEMENT_STATE: Final = "emergency-ElementState"
EVENT_SERVICE_STATE: Final = "emergency-ServiceState"
EVENT_QUEUE_STATE: Final = "emergency-QueueState"


class StateError(ValueError):
    """A state notification body is not what the standard says; ``member`` names the JSON
    member at fault (``"queueLength"``, ``"serviceState.state"``, ``"(body)"``)."""

    def __init__(self, member: str, problem: str):
        self.member = member
        self.problem = problem
        super().__init__(f"{member}: {problem}")


# --- registries -----------------------------------------------------------------------


class ElementStateValue(StrEnum):
    """elementState registry (section 10.13)."""

    NORMAL = "Normal"
    SCHEDULED_MAINTENANCE = "ScheduledMaintenance"
    SERVICE_DISRUPTION = "ServiceDisruption"
    OVERLOADED = "Overloaded"
    GOING_DOWN = "GoingDown"
    DOWN = "Down"
    #: Set by the subscriber, not the element: it cannot reach the element.
    UNREACHABLE = "Unreachable"


class ServiceStateValue(StrEnum):
    """serviceState registry (section 10.12)."""

    NORMAL = "Normal"
    #: PSAPs only: not answering calls now.
    UNSTAFFED = "Unstaffed"
    SCHEDULED_MAINTENANCE_DOWN = "ScheduledMaintenanceDown"
    SCHEDULED_MAINTENANCE_AVAILABLE = "ScheduledMaintenanceAvailable"
    MAJOR_INCIDENT_IN_PROGRESS = "MajorIncidentInProgress"
    PARTIAL = "Partial"
    OVERLOADED = "Overloaded"
    GOING_DOWN = "GoingDown"
    DOWN = "Down"
    #: Set by the subscriber: it cannot reach the service.
    UNREACHABLE = "Unreachable"


class SecurityPosture(StrEnum):
    """securityPosture registry (section 10.18)."""

    GREEN = "Green"
    YELLOW = "Yellow"
    ORANGE = "Orange"
    RED = "Red"


class ServiceName(StrEnum):
    """serviceNames registry (section 10.11)."""

    ADR = "ADR"
    BRIDGE = "Bridge"
    ECRF = "ECRF"
    ESRP = "ESRP"
    GCS = "GCS"
    IMR = "IMR"
    LOGGING = "Logging"
    LVF = "LVF"
    MCS = "MCS"
    MDS = "MDS"
    POLICY_STORE = "PolicyStore"
    PSAP = "PSAP"
    SAL = "SAL"


class QueueStateValue(StrEnum):
    """queueState registry (section 10.17)."""

    #: Someone is available or handling calls from the queue.
    ACTIVE = "Active"
    #: No one is available or handling calls from the queue.
    INACTIVE = "Inactive"
    #: Disabled by management action; no call may be enqueued.
    DISABLED = "Disabled"
    #: Full; no new call can be enqueued.
    FULL = "Full"
    #: Someone is available but the queue is not in use yet; becomes Active on the first call.
    STANDBY = "Standby"
    #: Cannot take more calls for a reason not listed above.
    RESOURCE_EXHAUSTED = "ResourceExhausted"
    #: Set by the subscriber: it cannot reach the queue's notifier.
    UNREACHABLE = "Unreachable"


class Availability(IntEnum):
    """How a destination ranks for routing; lower is preferred. ``UNUSABLE`` is skipped,
    every other value is kept (the ESRP's proxy tries them in this order)."""

    USABLE = 0
    #: Known to be answering but strained (a major incident, partial service, posture Orange).
    DEGRADED = 1
    #: No fresh state. Kept, after the known-good ones: excluding it could black-hole calls.
    UNKNOWN = 2
    #: The monitor suspects an outage (failing test calls or answers, not yet confirmed):
    #: kept, but tried after any destination with no evidence against it.
    SUSPECT = 3
    UNUSABLE = 4


# What each registry value means for routing. The serviceState and securityPosture
# registries say outright which values mean "calls must be sent to another destination";
# the elementState and queueState registries are read the same way.

ELEMENT_AVAILABILITY: Final[Mapping[ElementStateValue, Availability]] = {
    ElementStateValue.NORMAL: Availability.USABLE,
    # Maintenance may or may not interrupt service; a disruption is partial by definition.
    ElementStateValue.SCHEDULED_MAINTENANCE: Availability.DEGRADED,
    ElementStateValue.SERVICE_DISRUPTION: Availability.DEGRADED,
    ElementStateValue.OVERLOADED: Availability.UNUSABLE,
    ElementStateValue.GOING_DOWN: Availability.UNUSABLE,
    ElementStateValue.DOWN: Availability.UNUSABLE,
    # Our subscription failed, which says little about the element's call path: the SIP
    # proxy will find out on its own, so demote rather than exclude.
    ElementStateValue.UNREACHABLE: Availability.UNKNOWN,
}

SERVICE_AVAILABILITY: Final[Mapping[ServiceStateValue, Availability]] = {
    ServiceStateValue.NORMAL: Availability.USABLE,
    ServiceStateValue.UNSTAFFED: Availability.UNUSABLE,
    ServiceStateValue.SCHEDULED_MAINTENANCE_DOWN: Availability.UNUSABLE,
    ServiceStateValue.SCHEDULED_MAINTENANCE_AVAILABLE: Availability.USABLE,
    ServiceStateValue.MAJOR_INCIDENT_IN_PROGRESS: Availability.DEGRADED,
    ServiceStateValue.PARTIAL: Availability.DEGRADED,
    ServiceStateValue.OVERLOADED: Availability.UNUSABLE,
    ServiceStateValue.GOING_DOWN: Availability.UNUSABLE,
    ServiceStateValue.DOWN: Availability.UNUSABLE,
    ServiceStateValue.UNREACHABLE: Availability.UNKNOWN,
}

POSTURE_AVAILABILITY: Final[Mapping[SecurityPosture, Availability]] = {
    SecurityPosture.GREEN: Availability.USABLE,
    SecurityPosture.YELLOW: Availability.USABLE,
    SecurityPosture.ORANGE: Availability.DEGRADED,
    # "Under active attack and overwhelmed; calls must be sent to another destination."
    SecurityPosture.RED: Availability.UNUSABLE,
}

QUEUE_AVAILABILITY: Final[Mapping[QueueStateValue, Availability]] = {
    # Active is USABLE only while queueLength < queueMaxLength; see StateTable.queue_verdict.
    QueueStateValue.ACTIVE: Availability.USABLE,
    # Standby has people available, it is just idle: as good as Active.
    QueueStateValue.STANDBY: Availability.USABLE,
    QueueStateValue.INACTIVE: Availability.UNUSABLE,
    QueueStateValue.DISABLED: Availability.UNUSABLE,
    QueueStateValue.FULL: Availability.UNUSABLE,
    QueueStateValue.RESOURCE_EXHAUSTED: Availability.UNUSABLE,
    QueueStateValue.UNREACHABLE: Availability.UNKNOWN,
}


# --- the notifications ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ElementState:
    """An ``emergency-ElementState`` body (section 2.4.1)."""

    element_id: str
    state: ElementStateValue
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"elementId": self.element_id, "state": self.state.value}
        if self.reason:
            out["reason"] = self.reason
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ServiceState:
    """An ``emergency-ServiceState`` body (section 2.4.2). ``security_posture`` is
    conditional in the standard: present only for services that maintain one."""

    name: ServiceName
    domain: str
    state: ServiceStateValue
    reason: str = ""
    security_posture: SecurityPosture | None = None
    posture_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            # serviceId is optional and, when present, must equal domain: always write it so
            # that readers of either edition find the identifier they expect.
            "service": {"name": self.name.value, "domain": self.domain, "serviceId": self.domain},
            "serviceState": {"state": self.state.value, "reason": self.reason},
        }
        if self.security_posture is not None:
            out["securityPosture"] = {"posture": self.security_posture.value, "reason": self.posture_reason}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class QueueState:
    """An ``emergency-QueueState`` body (section 4.2.1.3). ``max_length`` is the
    standard's ``queueMaxLength``."""

    queue_uri: str
    queue_length: int
    max_length: int
    state: QueueStateValue

    def to_dict(self) -> dict[str, Any]:
        return {
            "queueUri": self.queue_uri,
            "queueLength": self.queue_length,
            "queueMaxLength": self.max_length,
            "state": self.state.value,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


AnyState = ElementState | ServiceState | QueueState
Body = bytes | str | Mapping[str, Any]

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)


def _object(body: Body) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        return body
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StateError("(body)", f"not UTF-8 (byte {exc.start})") from None
    if not isinstance(body, str):
        raise StateError("(body)", f"expected JSON text or an object, got {type(body).__name__}")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise StateError("(body)", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise StateError("(body)", f"expected a JSON object, got {type(data).__name__}")
    return data


def _unwrap(data: Mapping[str, Any], wrapper: str) -> tuple[Mapping[str, Any], str]:
    """The appendix E schema form ``{wrapper: {...}}`` or the section text's flat form."""
    if wrapper in data:
        inner = data[wrapper]
        if not isinstance(inner, Mapping):
            raise StateError(wrapper, "expected an object")
        return inner, f"{wrapper}."
    return data, ""


def _text(data: Mapping[str, Any], key: str, member: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise StateError(member, "missing")
        return ""
    if not isinstance(value, str):
        raise StateError(member, f"expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise StateError(member, "empty")
    return value


def _enum(cls: type[E], data: Mapping[str, Any], key: str, member: str) -> E:
    raw = _text(data, key, member)
    try:
        return cls(raw)
    except ValueError:
        allowed = ", ".join(v.value for v in cls)
        raise StateError(member, f"'{raw}' is not one of {allowed}") from None


def _count(data: Mapping[str, Any], key: str, member: str) -> int:
    value = data.get(key)
    if value is None:
        raise StateError(member, "missing")
    # bool is an int in Python; true/false is never a queue length.
    if isinstance(value, bool) or not isinstance(value, int):
        raise StateError(member, f"expected a non-negative integer, got {value!r}")
    if value < 0:
        raise StateError(member, f"expected a non-negative integer, got {value}")
    return value


def parse_element_state(body: Body) -> ElementState:
    """Parse an ``emergency-ElementState`` body; raise :class:`StateError` naming the
    member at fault."""
    data, prefix = _unwrap(_object(body), "elementState")
    # E.11.3.1 calls it elementDomain; section 2.4.1 calls it elementId.
    key = "elementId" if "elementId" in data or "elementDomain" not in data else "elementDomain"
    return ElementState(
        element_id=_text(data, key, prefix + key),
        state=_enum(ElementStateValue, data, "state", prefix + "state"),
        reason=_text(data, "reason", prefix + "reason", required=False),
    )


def parse_service_state(body: Body) -> ServiceState:
    """Parse an ``emergency-ServiceState`` body; raise :class:`StateError` naming the
    member at fault."""
    data = _object(body)
    service = data.get("service")
    if not isinstance(service, Mapping):
        raise StateError("service", "missing" if service is None else "expected an object")
    domain = _text(service, "domain", "service.domain")
    service_id = _text(service, "serviceId", "service.serviceId", required=False)
    if service_id and service_id.lower() != domain.lower():
        raise StateError("service.serviceId", f"'{service_id}' differs from service.domain '{domain}'")
    state = data.get("serviceState")
    if not isinstance(state, Mapping):
        raise StateError("serviceState", "missing" if state is None else "expected an object")
    posture = data.get("securityPosture")
    security: SecurityPosture | None = None
    posture_reason = ""
    if posture is not None:
        if not isinstance(posture, Mapping):
            raise StateError("securityPosture", "expected an object")
        security = _enum(SecurityPosture, posture, "posture", "securityPosture.posture")
        posture_reason = _text(posture, "reason", "securityPosture.reason", required=False)
    return ServiceState(
        name=_enum(ServiceName, service, "name", "service.name"),
        domain=domain,
        state=_enum(ServiceStateValue, state, "state", "serviceState.state"),
        reason=_text(state, "reason", "serviceState.reason", required=False),
        security_posture=security,
        posture_reason=posture_reason,
    )


def parse_queue_state(body: Body) -> QueueState:
    """Parse an ``emergency-QueueState`` body; raise :class:`StateError` naming the
    member at fault."""
    data, prefix = _unwrap(_object(body), "queueState")
    uri = _text(data, "queueUri", prefix + "queueUri")
    if not SIP_URI.match(uri):
        raise StateError(prefix + "queueUri", f"'{uri}' is not a sip: or sips: URI")
    return QueueState(
        queue_uri=uri,
        queue_length=_count(data, "queueLength", prefix + "queueLength"),
        max_length=_count(data, "queueMaxLength", prefix + "queueMaxLength"),
        state=_enum(QueueStateValue, data, "state", prefix + "state"),
    )


_PARSERS: Final = {
    EVENT_ELEMENT_STATE.lower(): parse_element_state,
    EVENT_SERVICE_STATE.lower(): parse_service_state,
    EVENT_QUEUE_STATE.lower(): parse_queue_state,
}


def parse_notify(event: str, body: Body) -> AnyState:
    """Parse a NOTIFY body by its Event header value (parameters after ``;`` ignored;
    event package names compare case-insensitively, RFC 6665 section 8.2.1)."""
    package = event.split(";", 1)[0].strip().lower()
    parser = _PARSERS.get(package)
    if parser is None:
        raise StateError("(event)", f"'{event}' is not one of {', '.join(_PARSERS)}")
    return parser(body)


# --- the table ---------------------------------------------------------------------------


@lru_cache(maxsize=16384)  # pure, and asked ~20 times per routed call for the same few URIs
def uri_key(uri: str) -> str:
    """A SIP URI reduced for comparison: scheme and host lowercased (RFC 3261 section
    19.1.4), user kept as is, URI parameters and headers dropped, so that the ECRF's answer,
    a rule's URI and a QueueState's ``queueUri`` for the same queue compare equal."""
    scheme, sep, rest = uri.strip().partition(":")
    if not sep:
        return uri.strip().lower()
    # The user part may itself contain ';' and '?' (RFC 3261 user-unreserved), so split at
    # the last '@' before cutting parameters and headers off the host part.
    user, at, hostpart = rest.rpartition("@")
    host = hostpart.split("?", 1)[0].split(";", 1)[0].lower()
    return f"{scheme.lower()}:{user}{at}{host}"


def uri_host(uri: str) -> str:
    """The host part of a SIP URI, lowercased, without port or parameters."""
    rest = uri_key(uri).partition(":")[2]
    host = rest.rpartition("@")[2]
    if host.startswith("["):  # IPv6 reference
        return host.split("]", 1)[0] + "]"
    return host.split(":", 1)[0]


def aware(moment: datetime) -> datetime:
    """``moment`` with a time zone; a naive datetime is taken as UTC rather than refused,
    because refusing inside the router would fail a call over a caller's bookkeeping."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Received(Generic[T]):
    """A state and the time it arrived."""

    state: T
    received: datetime


@dataclass(frozen=True, slots=True)
class OutageMark:
    """The monitor's word on one queue: an outage ``confirmed`` (skip it) or only
    ``suspected`` (try it after the healthy ones)."""

    outage_id: str
    confirmed: bool
    reason: str
    since: datetime


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the table says about one destination, and why (for the routing log)."""

    availability: Availability
    reason: str

    @property
    def usable(self) -> bool:
        return self.availability is not Availability.UNUSABLE


#: Default age after which a state is stale. Notifiers send on change, and every
#: subscription refresh brings a NOTIFY with the current state (RFC 6665 section 4.2.1), so
#: an unchanged state is re-confirmed at least once per refresh; keep this above the
#: subscription refresh interval in use.
DEFAULT_MAX_AGE: Final = timedelta(hours=1)

_UNKNOWN_NAME: Final = "Unknown"


class StateTable:
    """The latest element, service and queue states with the time each was received.

    Not thread-safe; one owner feeds it NOTIFYs (``update``/``apply_notify``) and asks it
    about destinations. A state older than ``max_age`` at the time of the question is
    stale and answers as unknown.
    """

    def __init__(self, max_age: timedelta = DEFAULT_MAX_AGE):
        if max_age <= timedelta(0):
            raise ValueError("max_age must be positive")
        self.max_age = max_age
        self._elements: dict[str, Received[ElementState]] = {}
        self._services: dict[str, Received[ServiceState]] = {}
        self._queues: dict[str, Received[QueueState]] = {}
        self._outages: dict[str, OutageMark] = {}

    # feeding

    def mark_outage(self, queue_uri: str, mark: OutageMark) -> None:
        """The monitor's detector declared (or re-graded) an outage of the PSAP behind
        ``queue_uri``; it lasts until ``clear_outage``."""
        self._outages[uri_key(queue_uri)] = mark

    def clear_outage(self, queue_uri: str, outage_id: str | None = None) -> bool:
        """Lift the mark (only if it is ``outage_id``'s, when given); whether one was lifted."""
        key = uri_key(queue_uri)
        mark = self._outages.get(key)
        if mark is None or (outage_id is not None and mark.outage_id != outage_id):
            return False
        del self._outages[key]
        return True

    def outage_marks(self) -> dict[str, OutageMark]:
        return dict(self._outages)

    def outage_verdict(self, queue_uri: str) -> Verdict | None:
        mark = self._outages.get(uri_key(queue_uri))
        if mark is None:
            return None
        grade = "confirmed" if mark.confirmed else "suspected"
        return Verdict(
            Availability.UNUSABLE if mark.confirmed else Availability.SUSPECT,
            f"monitor: outage {mark.outage_id} {grade} ({mark.reason})",
        )

    def update(self, state: AnyState, received: datetime) -> bool:
        """Record ``state``, received at ``received``. A state received before the one
        held is ignored (NOTIFYs can be reordered in transit); returns whether it was kept."""
        received = aware(received)
        table: dict[str, Any]
        match state:
            case ElementState():
                table, key = self._elements, state.element_id.lower()
            case ServiceState():
                table, key = self._services, state.domain.lower()
            case QueueState():
                table, key = self._queues, uri_key(state.queue_uri)
            case _:
                raise TypeError(f"not a state: {state!r}")
        held = table.get(key)
        if held is not None and held.received > received:
            return False
        table[key] = Received(state, received)
        return True

    def apply_notify(self, event: str, body: Body, received: datetime) -> AnyState:
        """Parse a NOTIFY body (see :func:`parse_notify`) and record it."""
        state = parse_notify(event, body)
        self.update(state, received)
        return state

    # reading

    def _fresh(self, held: Received[T] | None, now: datetime) -> T | None:
        if held is None or aware(now) - held.received > self.max_age:
            return None
        return held.state

    def _age(self, held: Received[Any] | None, now: datetime) -> str:
        if held is None:
            return "no state received"
        age = aware(now) - held.received
        return f"last state {age.total_seconds():.0f}s old (max {self.max_age.total_seconds():.0f}s)"

    def element(self, element_id: str, now: datetime) -> ElementState | None:
        """The fresh state of an element, or None when none was received or it is stale."""
        return self._fresh(self._elements.get(element_id.lower()), now)

    def service(self, domain: str, now: datetime) -> ServiceState | None:
        return self._fresh(self._services.get(domain.lower()), now)

    def queue(self, queue_uri: str, now: datetime) -> QueueState | None:
        return self._fresh(self._queues.get(uri_key(queue_uri)), now)

    def queue_state_name(self, queue_uri: str, now: datetime) -> str:
        """The fresh queueState value, or ``"Unknown"`` (for policy rule conditions)."""
        state = self.queue(queue_uri, now)
        return state.state.value if state else _UNKNOWN_NAME

    def element_state_name(self, element_id: str, now: datetime) -> str:
        state = self.element(element_id, now)
        return state.state.value if state else _UNKNOWN_NAME

    def queue_verdict(self, queue_uri: str, now: datetime) -> Verdict:
        """Usable = Active (or Standby) with ``queueLength < queueMaxLength``."""
        state = self.queue(queue_uri, now)
        if state is None:
            return Verdict(Availability.UNKNOWN, f"queue {queue_uri}: {self._age(self._queues.get(uri_key(queue_uri)), now)}")
        where = f"queue {queue_uri} {state.state.value} {state.queue_length}/{state.max_length}"
        availability = QUEUE_AVAILABILITY[state.state]
        if state.state is QueueStateValue.ACTIVE:
            if state.max_length == 0:
                # Active with room for nothing contradicts itself (notifiers that never set
                # the maximum send 0): distrust the numbers, do not exclude on them.
                return Verdict(Availability.UNKNOWN, where + " (no maximum declared)")
            if state.queue_length >= state.max_length:
                return Verdict(Availability.UNUSABLE, where + " (at its maximum)")
        return Verdict(availability, where)

    def element_verdict(self, element_id: str, now: datetime) -> Verdict:
        state = self.element(element_id, now)
        if state is None:
            return Verdict(Availability.UNKNOWN, f"element {element_id}: {self._age(self._elements.get(element_id.lower()), now)}")
        reason = f" ({state.reason})" if state.reason else ""
        return Verdict(ELEMENT_AVAILABILITY[state.state], f"element {element_id} {state.state.value}{reason}")

    def service_verdict(self, domain: str, now: datetime) -> Verdict:
        state = self.service(domain, now)
        if state is None:
            return Verdict(Availability.UNKNOWN, f"service {domain}: {self._age(self._services.get(domain.lower()), now)}")
        availability = SERVICE_AVAILABILITY[state.state]
        text = f"service {domain} {state.state.value}"
        if state.security_posture is not None:
            availability = max(availability, POSTURE_AVAILABILITY[state.security_posture])
            text += f", posture {state.security_posture.value}"
        return Verdict(availability, text)

    def is_queue_usable(self, queue_uri: str, now: datetime) -> bool:
        """Whether a call may be sent to the queue now. Unknown (never heard of, or stale)
        counts as usable: see :class:`Availability`."""
        return self.queue_verdict(queue_uri, now).usable

    def destination_verdict(
        self,
        queue_uri: str,
        now: datetime,
        *,
        element_id: str | None = None,
        service_domain: str | None = None,
        outages: bool = True,
    ) -> Verdict:
        """One verdict for a queue and, when given, the element and service behind it, and
        (unless ``outages`` is false) the monitor's outage mark on it.

        Any known UNUSABLE wins. Otherwise the worst of the *known* verdicts: an element
        nobody subscribes to must not demote a queue that says it is Active. Nothing known
        at all is UNKNOWN.
        """
        verdicts = [self.queue_verdict(queue_uri, now)]
        if outages and (marked := self.outage_verdict(queue_uri)) is not None:
            verdicts.append(marked)
        if element_id:
            verdicts.append(self.element_verdict(element_id, now))
        if service_domain:
            verdicts.append(self.service_verdict(service_domain, now))
        unusable = [v for v in verdicts if v.availability is Availability.UNUSABLE]
        if unusable:
            return Verdict(Availability.UNUSABLE, "; ".join(v.reason for v in unusable))
        known = [v for v in verdicts if v.availability is not Availability.UNKNOWN]
        if not known:
            return Verdict(Availability.UNKNOWN, "; ".join(v.reason for v in verdicts))
        worst = max(v.availability for v in known)
        return Verdict(worst, "; ".join(v.reason for v in known))
