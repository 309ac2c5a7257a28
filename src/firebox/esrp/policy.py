"""The ESRP's Policy Routing Function (NENA-STA-010.3 section 4.2).

An ESRP receives a call, asks the ECRF where it goes (a LoST answer: a URI), and then runs
its Policy Routing Function (PRF) over the Policy Routing Rules (PRR) of the queue the call
arrived on. A rule has conditions (the state of the candidate queue and of elements
(sections 2.4 and 4.2.1.3), the time, where the call came from, what kind of call it is,
what the ECRF answered) and actions: *route* (to a queue, with a cause), *busy*, *notify*.
The result is where the call goes next.

:func:`decide` is that function, sans-I/O: it is given the call, the ECRF's answer, the
:class:`~firebox.esrp.states.StateTable`, the rules, the failover :class:`Chains` and the
time, and returns a :class:`RouteDecision` whose ``destinations`` is the ordered failover
list the ESRP's SIP proxy tries one after the other. The first rule of firebox shapes it:

* ``destinations`` is never empty and always ends in a person: every PSAP in a deployment
  has a 10-digit business line, reached through the PSTN gateway, and those lines (then the
  configured catch-all, if any) end every list. State never removes them, because we have
  no state for them and the PSTN is the path of last resort.
* No ECRF answer, or one naming no PSAP here, takes the default route (a configured PSAP).
* Queues the state table calls unusable are skipped; queues it knows nothing fresh about are
  kept, after the ones known to be usable (excluding on missing data could black-hole calls).
  The table includes the monitor's outage marks (a PSAP the detector confirmed down is
  skipped, one it suspects tried last), except for i3 test calls (``urn:service:test.sos``),
  which must keep reaching the PSAP they measure.
* A PSAP's chain is the PSAP then its own alternates (not theirs: each hop can cost the
  caller the no-answer timeout), then the business lines; no URI appears twice.
* The business lines come from a :data:`LastResortLines` callable when one is given (the
  business-line registry: who answers now, whose gateway route is up), else each PSAP's
  static line. Lines answered now over a route not known to be down come first, for every
  PSAP visited; the others follow (a person may still pick up) and a log line says why;
  a PSAP the callable has no line for keeps its static line, so the tail is never empty.
* *busy* answers the caller busy only when there is a callback number to put in a callback
  record; without one it is logged and the call is routed (a busy signal to a caller nobody
  can call back would be a silent drop).

Rules are data (:meth:`RuleSet.from_dicts` / :meth:`RuleSet.to_dicts`, JSON- and
YAML-shaped) so that a Policy Store can hold them and stage their rollout; they are checked
when loaded and every problem is reported with the rule id and the member, e.g.::

    rule 'nights': conditions[0].timezone: 'America/Nowhere' is not a known time zone

Rule format (larger ``priority`` is evaluated first; ties by id)::

    - id: nights-to-regional
      priority: 100
      conditions:
        - {type: time, timezone: America/New_York, days: [mon, tue, wed, thu, fri], ranges: ["22:00-06:00"]}
        - {type: call_type, services: [urn:service:sos], media: [voice, text]}
      actions:
        - {type: route, psap: regional, cause: night-consolidation}
        - {type: notify, target: sip:supervisor@regional.example, reason: night routing}

Condition types: ``queue_state`` (states of the candidate queue, or of ``queue``; the
pseudo-state ``Unknown`` matches no fresh state), ``element_state`` (of the candidate's
element, or of ``element``), ``time``, ``source`` (the ingress BCF or originating domain;
``*.example.net`` matches subdomains), ``call_type`` (``media`` and/or ``services``; a
service URN matches itself and its sub-services, so ``urn:service:sos`` matches
``urn:service:sos.police`` but not ``urn:service:test.sos``), ``ecrf_uri``. All conditions
of a rule must hold. Action types: ``route`` (``uri`` or ``psap``, optional ``cause``),
``busy`` (optional ``cause``), ``notify`` (``target``, optional ``reason``). A rule holds at
most one route or busy; rules with only notify actions do not stop the evaluation, the first
matching rule with a route or busy does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, ClassVar, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firebox.deployment import SERVICE_URN, SIP_URI, Deployment
from firebox.esrp.states import (
    Availability,
    ElementStateValue,
    QueueStateValue,
    StateTable,
    aware,
    uri_host,
    uri_key,
)


class PolicyError(ValueError):
    """Rules or chains that cannot be used; ``problems`` lists every one found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# --- the call and the decision ------------------------------------------------------------


class CallMedium(StrEnum):
    VOICE = "voice"
    TEXT = "text"
    VIDEO = "video"


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the PRF knows about a call.

    ``source`` is the ingress BCF or the originating service's domain (a host name, or a
    SIP URI whose host is used). ``callback`` is the caller's callback URI or number: it is
    what lets a *busy* answer still end with a person calling back.
    """

    call_id: str
    service_urn: str = "urn:service:sos"
    medium: CallMedium = CallMedium.VOICE
    source: str | None = None
    callback: str | None = None


class DestinationKind(StrEnum):
    #: The queue the ECRF (or the default route, or a rule naming a PSAP) chose.
    PSAP = "PSAP"
    #: A PSAP's alternate (from the deployment, in order, then theirs).
    ALTERNATE = "ALTERNATE"
    #: The configured regional backup PSAP.
    BACKUP = "BACKUP"
    #: A queue named by a rule's route action that is not one of the deployment's PSAPs.
    POLICY = "POLICY"
    #: A PSAP's 10-digit line through the PSTN gateway.
    BUSINESS_LINE = "BUSINESS_LINE"
    #: The configured destination of last resort.
    CATCH_ALL = "CATCH_ALL"
    #: The announcement-and-callback target of calls the BCF diverted (the element puts it
    #: first; the normal route follows it).
    DIVERSION = "DIVERSION"


#: The i3 test call service (RFC 6881 section 15): the monitor's probes.
TEST_SERVICE_URN: Final = "urn:service:test.sos"

#: Kinds that may end a failover list (the first rule of firebox).
TERMINAL_KINDS: Final = frozenset({DestinationKind.BUSINESS_LINE, DestinationKind.CATCH_ALL})


@dataclass(frozen=True, slots=True)
class Destination:
    uri: str
    kind: DestinationKind
    psap_id: str | None
    reason: str
    #: The route action's cause, for the proxy to carry downstream.
    cause: str | None = None
    availability: Availability = Availability.UNKNOWN


@dataclass(frozen=True, slots=True)
class Notification:
    """A notify action: tell ``target`` (an element id or SIP URI) about this call; the
    route is unchanged."""

    target: str
    rule_id: str
    call_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    """What a busy answer leaves behind: who must call the caller back. ``owner`` is the
    first destination of the decision; the proxy delivers the record along
    ``RouteDecision.destinations`` as it would have delivered the call."""

    call_id: str
    callback: str
    owner: Destination
    rule_id: str
    cause: str | None
    created: datetime


@dataclass(slots=True)
class RouteDecision:
    """The PRF's answer.

    ``destinations`` is the ordered failover list (never empty; the last is a business line
    or the catch-all). When ``busy`` is true the ESRP answers the caller busy and does *not*
    place the call; it hands ``callback`` to the destinations instead, in the same order.
    """

    destinations: list[Destination]
    notifications: list[Notification] = field(default_factory=list)
    matched_rules: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    busy: bool = False
    callback: CallbackRecord | None = None


@dataclass(frozen=True, slots=True)
class LastResortLine:
    """One business line a last-resort route may end on, as the business-line registry
    sees it at the time of the call: ``usable`` is false when nobody answers it now (outside
    its hours) or its PSTN gateway route is known to be down; ``note`` says which."""

    uri: str
    usable: bool
    note: str = ""
    #: Its gateway check said the route is up (rather than not checked yet).
    checked: bool = False


# --- chains ---------------------------------------------------------------------------------

_GATEWAY = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$")
_FQDN = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*$")


def business_line_uri(number: str, pstn_gateway: str) -> str:
    """``sip:+1NXXNXXXXXX@<gateway>;user=phone`` (RFC 3261 section 19.1.1 telephone-subscriber
    form) for a 10-digit NANP number."""
    digits = re.sub(r"\D", "", number)
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) != 10 or digits[0] in "01" or digits[3] in "01":
        raise ValueError(f"'{number}' is not a 10-digit NANP number")
    if not _GATEWAY.match(pstn_gateway):
        raise ValueError(f"'{pstn_gateway}' is not a host or host:port for the PSTN gateway")
    return f"sip:+1{digits}@{pstn_gateway};user=phone"


@dataclass(frozen=True, slots=True)
class PsapChain:
    """One PSAP as routing sees it: its queue, its business line (already a SIP URI),
    its alternates in order, and the element and service whose states speak for it."""

    psap_id: str
    name: str
    uri: str
    business_line: str
    alternates: tuple[str, ...] = ()
    element_id: str | None = None
    service_domain: str | None = None


#: The narrow interface between routing and the business-line registry: for a PSAP, at a
#: time, its lines in the order to try them (NENA-STA-010.3 section 4.2, the ESRP's route of
#: last resort). Sans-I/O: the time is an argument, the health is what the registry was told.
LastResortLines = Callable[[PsapChain, datetime], Sequence[LastResortLine]]


class Chains(Mapping[str, PsapChain]):
    """The failover table: PSAPs by id, plus the default route, the regional backup and the
    catch-all. A read-only mapping of PSAP id to :class:`PsapChain`.

    Checked when built, so that :func:`decide` can rely on it: the default and the backup
    are PSAPs here, alternates name PSAPs here, and there is somewhere to end (at least one
    PSAP, hence one business line, or a catch-all).
    """

    def __init__(
        self,
        psaps: Iterable[PsapChain],
        *,
        default_psap: str | None = None,
        backup: str | None = None,
        catch_all: str | None = None,
    ):
        problems: list[str] = []
        self._psaps: dict[str, PsapChain] = {}
        for p in psaps:
            if p.psap_id in self._psaps:
                problems.append(f"psap '{p.psap_id}': listed twice")
            self._psaps[p.psap_id] = p
        for p in self._psaps.values():
            for alt in p.alternates:
                if alt not in self._psaps:
                    problems.append(f"psap '{p.psap_id}': alternate '{alt}' is not a PSAP here")
        if default_psap is None and self._psaps:
            # The first PSAP listed: a deployment with PSAPs always has a default route.
            default_psap = next(iter(self._psaps))
        if default_psap is not None and default_psap not in self._psaps:
            problems.append(f"default_psap: '{default_psap}' is not a PSAP here")
        if backup is not None and backup not in self._psaps:
            problems.append(f"backup: '{backup}' is not a PSAP here")
        if catch_all is not None:
            if not SIP_URI.match(catch_all):
                problems.append(f"catch_all: '{catch_all}' is not a sip: or sips: URI")
            elif any(uri_key(catch_all) == uri_key(p.uri) for p in self._psaps.values()):
                problems.append(f"catch_all: '{catch_all}' is a PSAP queue, not a last resort")
        if not self._psaps and catch_all is None:
            problems.append("no PSAPs and no catch_all: a call would have nowhere to end")
        if problems:
            raise PolicyError(problems)
        self.default_psap = default_psap
        self.backup = backup
        self.catch_all = catch_all
        self._by_uri = {uri_key(p.uri): p for p in self._psaps.values()}

    def __getitem__(self, psap_id: str) -> PsapChain:
        return self._psaps[psap_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._psaps)

    def __len__(self) -> int:
        return len(self._psaps)

    def __repr__(self) -> str:
        return f"Chains({list(self._psaps)}, default_psap={self.default_psap!r}, backup={self.backup!r}, catch_all={self.catch_all!r})"

    def psap_for_uri(self, uri: str) -> PsapChain | None:
        return self._by_uri.get(uri_key(uri))

    @property
    def default(self) -> PsapChain | None:
        return self._psaps[self.default_psap] if self.default_psap is not None else None


def chains_from_deployment(
    dep: Deployment,
    pstn_gateway: str,
    *,
    default_psap: str | None = None,
    backup: str | None = None,
    catch_all: str | None = None,
) -> Chains:
    """The failover table for a deployment's PSAPs.

    Business lines become ``sip:+1NXXNXXXXXX@<pstn_gateway>;user=phone``. Each PSAP's
    element id and service domain default to the host of its queue URI (i3 element and
    service identifiers are FQDNs). ``default_psap`` defaults to the first PSAP listed.
    """
    psaps = []
    for p in dep.psaps:
        host = uri_host(p.uri)
        psaps.append(
            PsapChain(
                psap_id=p.id,
                name=p.name,
                uri=p.uri,
                business_line=business_line_uri(p.business_line, pstn_gateway),
                alternates=tuple(p.alternates),
                element_id=host,
                service_domain=host,
            )
        )
    return Chains(psaps, default_psap=default_psap, backup=backup, catch_all=catch_all)


# --- conditions -------------------------------------------------------------------------------

UNKNOWN_STATE: Final = "Unknown"
_QUEUE_STATE_NAMES: Final = frozenset(v.value for v in QueueStateValue) | {UNKNOWN_STATE}
_ELEMENT_STATE_NAMES: Final = frozenset(v.value for v in ElementStateValue) | {UNKNOWN_STATE}
_DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES: Final = {**{d: i for i, d in enumerate(_DAYS)}, **{
    name: i for i, name in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
}}
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class _Env:
    """What conditions look at. ``candidate`` is where the call goes absent policy: the
    ECRF's PSAP, or the default route's."""

    call: CallContext
    ecrf_uri: str | None
    candidate: PsapChain | None
    states: StateTable
    now: datetime


@dataclass(frozen=True, slots=True)
class QueueStateCondition:
    """The queueState (section 10.17) of the candidate queue, or of ``queue``, is one of
    ``states``. The raw registry value is tested; ``Unknown`` stands for no fresh state."""

    type: ClassVar[str] = "queue_state"
    states: frozenset[str]
    queue: str | None = None

    def matches(self, env: _Env) -> bool:
        uri = self.queue or (env.candidate.uri if env.candidate else None)
        name = env.states.queue_state_name(uri, env.now) if uri else UNKNOWN_STATE
        return name in self.states

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "states": sorted(self.states)}
        if self.queue:
            out["queue"] = self.queue
        return out


@dataclass(frozen=True, slots=True)
class ElementStateCondition:
    """The elementState (section 10.13) of the candidate's element, or of ``element``."""

    type: ClassVar[str] = "element_state"
    states: frozenset[str]
    element: str | None = None

    def matches(self, env: _Env) -> bool:
        element = self.element or (env.candidate.element_id if env.candidate else None)
        name = env.states.element_state_name(element, env.now) if element else UNKNOWN_STATE
        return name in self.states

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "states": sorted(self.states)}
        if self.element:
            out["element"] = self.element
        return out


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Local wall-clock minutes ``[start, end)``; ``end`` may be 1440 (24:00). A range with
    ``start > end`` wraps past midnight."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


@dataclass(frozen=True, slots=True)
class TimeCondition:
    """Local time in ``timezone`` (an IANA name, so DST follows the zone) falls in one of
    ``ranges`` on one of ``days`` (0 = Monday). The part of a wrapping range after midnight
    belongs to the day it started on: ``fri 22:00-06:00`` holds at 02:00 on Saturday."""

    type: ClassVar[str] = "time"
    timezone: str
    days: frozenset[int]
    ranges: tuple[TimeRange, ...]

    def matches(self, env: _Env) -> bool:
        local = env.now.astimezone(_zone(self.timezone))
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        today = local.weekday()
        yesterday = (today - 1) % 7
        for r in self.ranges:
            start, end = r.start * 60, r.end * 60
            if start < end:
                if today in self.days and start <= seconds < end:
                    return True
            else:
                if today in self.days and seconds >= start:
                    return True
                if yesterday in self.days and seconds < end:
                    return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "timezone": self.timezone,
            "days": [_DAYS[d] for d in sorted(self.days)],
            "ranges": [str(r) for r in self.ranges],
        }


def _source_host(source: str) -> str:
    s = source.strip()
    if s.lower().startswith(("sip:", "sips:")):
        return uri_host(s)
    return s.lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class SourceCondition:
    """The call came in through one of ``sources`` (a BCF host or an originating domain);
    ``*.example.net`` matches any subdomain of example.net (not example.net itself)."""

    type: ClassVar[str] = "source"
    sources: tuple[str, ...]

    def matches(self, env: _Env) -> bool:
        if not env.call.source:
            return False
        host = _source_host(env.call.source)
        for pattern in self.sources:
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]):
                    return True
            elif host == pattern:
                return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "sources": list(self.sources)}


def service_matches(pattern: str, urn: str) -> bool:
    """A service URN matches itself and its sub-services (RFC 5031 section 3)."""
    urn = urn.strip().lower()
    return urn == pattern or urn.startswith(pattern + ".")


@dataclass(frozen=True, slots=True)
class CallTypeCondition:
    """The call's medium is one of ``media`` and its service URN one of ``services``
    (either may be omitted, not both)."""

    type: ClassVar[str] = "call_type"
    media: frozenset[CallMedium] | None = None
    services: tuple[str, ...] | None = None

    def matches(self, env: _Env) -> bool:
        medium_ok = self.media is None or env.call.medium in self.media
        service_ok = self.services is None or any(service_matches(s, env.call.service_urn) for s in self.services)
        return medium_ok and service_ok

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.media is not None:
            out["media"] = sorted(m.value for m in self.media)
        if self.services is not None:
            out["services"] = list(self.services)
        return out


@dataclass(frozen=True, slots=True)
class EcrfUriCondition:
    """The ECRF answered one of ``uris``."""

    type: ClassVar[str] = "ecrf_uri"
    uris: tuple[str, ...]

    def matches(self, env: _Env) -> bool:
        return env.ecrf_uri is not None and uri_key(env.ecrf_uri) in {uri_key(u) for u in self.uris}

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "uris": list(self.uris)}


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteAction:
    """Route to a queue: ``psap`` (an id in the chains, bringing its alternates) or ``uri``
    (a PSAP's queue URI does the same; any other queue is tried first and the ECRF's chain
    follows it)."""

    type: ClassVar[str] = "route"
    uri: str | None = None
    psap: str | None = None
    cause: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.uri:
            out["uri"] = self.uri
        if self.psap:
            out["psap"] = self.psap
        if self.cause:
            out["cause"] = self.cause
        return out


@dataclass(frozen=True, slots=True)
class BusyAction:
    """Answer busy, leaving a callback record (see :class:`RouteDecision`)."""

    type: ClassVar[str] = "busy"
    cause: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.cause:
            out["cause"] = self.cause
        return out


@dataclass(frozen=True, slots=True)
class NotifyAction:
    """Notify ``target`` (an element id or a SIP URI); the route does not change."""

    type: ClassVar[str] = "notify"
    target: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "target": self.target}
        if self.reason:
            out["reason"] = self.reason
        return out


Action = RouteAction | BusyAction | NotifyAction
AnyCondition = QueueStateCondition | ElementStateCondition | TimeCondition | SourceCondition | CallTypeCondition | EcrfUriCondition


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    priority: int
    conditions: tuple[AnyCondition, ...]
    actions: tuple[Action, ...]
    description: str = ""
    #: A disabled rule is kept (for the Policy Store and staged rollouts) but not evaluated.
    enabled: bool = True

    @property
    def terminal(self) -> RouteAction | BusyAction | None:
        """The route or busy action that ends evaluation, if any."""
        return next((a for a in self.actions if not isinstance(a, NotifyAction)), None)

    @property
    def notifies(self) -> tuple[NotifyAction, ...]:
        return tuple(a for a in self.actions if isinstance(a, NotifyAction))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "priority": self.priority,
            "conditions": [c.to_dict() for c in self.conditions],
            "actions": [a.to_dict() for a in self.actions],
        }
        if self.description:
            out["description"] = self.description
        if not self.enabled:
            out["enabled"] = False
        return out


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Rules in evaluation order: larger ``priority`` first, ties by id (so the order never
    depends on how a store happened to list them)."""

    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise PolicyError([f"rule '{i}': id used more than once" for i in dupes])
        object.__setattr__(self, "rules", tuple(sorted(self.rules, key=lambda r: (-r.priority, r.id))))

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    @classmethod
    def from_dicts(cls, data: Sequence[Mapping[str, Any]], chains: Chains | None = None) -> RuleSet:
        """Load and check rules; with ``chains``, PSAP ids in route actions are checked too.
        Raises :class:`PolicyError` listing every problem."""
        return load_rules(data, chains)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.rules]

    def check_against(self, chains: Chains) -> list[str]:
        """Problems that only the chains reveal: route actions naming unknown PSAPs."""
        problems = []
        for rule in self.rules:
            for n, action in enumerate(rule.actions):
                if isinstance(action, RouteAction) and action.psap and action.psap not in chains:
                    problems.append(f"rule '{rule.id}': actions[{n}].psap: '{action.psap}' is not a PSAP here")
        return problems


# --- loading ---------------------------------------------------------------------------------

_RULE_ID = re.compile(r"^[A-Za-z0-9._\-]+$")


class _Bad(Exception):
    """One problem inside one rule; collected by load_rules."""

    def __init__(self, member: str, problem: str):
        self.member = member
        self.problem = problem


def _keys(obj: Mapping[str, Any], member: str, required: set[str], optional: set[str]) -> None:
    for key in obj:
        if key not in required and key not in optional:
            raise _Bad(f"{member}.{key}" if member else str(key), "unknown key")
    for key in sorted(required):
        if key not in obj:
            raise _Bad(f"{member}.{key}" if member else key, "missing")


def _str(value: Any, member: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(member, f"expected a non-empty string, got {value!r}")
    return value.strip()


def _str_list(value: Any, member: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise _Bad(member, f"expected a non-empty list, got {value!r}")
    return [_str(v, f"{member}[{i}]") for i, v in enumerate(value)]


def _sip(value: Any, member: str) -> str:
    uri = _str(value, member)
    if not SIP_URI.match(uri):
        raise _Bad(member, f"'{uri}' is not a sip: or sips: URI")
    return uri


def _state_names(value: Any, member: str, allowed: frozenset[str]) -> frozenset[str]:
    names = _str_list(value, member)
    for i, name in enumerate(names):
        if name not in allowed:
            raise _Bad(f"{member}[{i}]", f"'{name}' is not one of {', '.join(sorted(allowed))}")
    return frozenset(names)


def _queue_state(obj: Mapping[str, Any], m: str) -> QueueStateCondition:
    _keys(obj, m, {"type", "states"}, {"queue"})
    queue = _sip(obj["queue"], f"{m}.queue") if obj.get("queue") is not None else None
    return QueueStateCondition(_state_names(obj["states"], f"{m}.states", _QUEUE_STATE_NAMES), queue)


def _element_state(obj: Mapping[str, Any], m: str) -> ElementStateCondition:
    _keys(obj, m, {"type", "states"}, {"element"})
    element = None
    if obj.get("element") is not None:
        element = _str(obj["element"], f"{m}.element")
        if not _FQDN.match(element):
            raise _Bad(f"{m}.element", f"'{element}' is not an element id (a domain name)")
    return ElementStateCondition(_state_names(obj["states"], f"{m}.states", _ELEMENT_STATE_NAMES), element)


def _range(value: Any, member: str) -> TimeRange:
    text = _str(value, member)
    match = _RANGE.match(text)
    if not match:
        raise _Bad(member, f"'{text}' is not HH:MM-HH:MM")
    sh, sm, eh, em = (int(g) for g in match.groups())
    if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em != 0):
        raise _Bad(member, f"'{text}' is not a time of day (00:00 to 24:00)")
    start, end = sh * 60 + sm, eh * 60 + em
    if start == end:
        # Both "never" and "always" are plausible readings; make the author say which.
        raise _Bad(member, f"'{text}' is empty or all day: write 00:00-24:00 for all day")
    return TimeRange(start, end)


def _time(obj: Mapping[str, Any], m: str) -> TimeCondition:
    _keys(obj, m, {"type", "timezone", "ranges"}, {"days"})
    tz = _str(obj["timezone"], f"{m}.timezone")
    try:
        _zone(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _Bad(f"{m}.timezone", f"'{tz}' is not a known time zone") from None
    days = frozenset(range(7))
    if obj.get("days") is not None:
        names = _str_list(obj["days"], f"{m}.days")
        picked = set()
        for i, name in enumerate(names):
            day = _DAY_NAMES.get(name.lower())
            if day is None:
                raise _Bad(f"{m}.days[{i}]", f"'{name}' is not a day of the week (mon..sun)")
            picked.add(day)
        days = frozenset(picked)
    raw = obj["ranges"]
    if isinstance(raw, str) or not isinstance(raw, Sequence) or not raw:
        raise _Bad(f"{m}.ranges", f"expected a non-empty list of HH:MM-HH:MM, got {raw!r}")
    ranges = tuple(_range(v, f"{m}.ranges[{i}]") for i, v in enumerate(raw))
    return TimeCondition(tz, days, ranges)


def _source(obj: Mapping[str, Any], m: str) -> SourceCondition:
    _keys(obj, m, {"type", "sources"}, set())
    out = []
    for i, s in enumerate(_str_list(obj["sources"], f"{m}.sources")):
        wild = s.startswith("*.")
        host = _source_host(s[2:] if wild else s)
        if not _FQDN.match(host):
            raise _Bad(f"{m}.sources[{i}]", f"'{s}' is not a host, domain or *.domain")
        out.append(("*." + host) if wild else host)
    return SourceCondition(tuple(out))


def _call_type(obj: Mapping[str, Any], m: str) -> CallTypeCondition:
    _keys(obj, m, {"type"}, {"media", "services"})
    if obj.get("media") is None and obj.get("services") is None:
        raise _Bad(m, "needs media, services or both")
    media = None
    if obj.get("media") is not None:
        picked = set()
        for i, name in enumerate(_str_list(obj["media"], f"{m}.media")):
            try:
                picked.add(CallMedium(name.lower()))
            except ValueError:
                raise _Bad(f"{m}.media[{i}]", f"'{name}' is not one of {', '.join(c.value for c in CallMedium)}") from None
        media = frozenset(picked)
    services = None
    if obj.get("services") is not None:
        services = tuple(s.lower() for s in _str_list(obj["services"], f"{m}.services"))
        for i, s in enumerate(services):
            if not SERVICE_URN.match(s):
                raise _Bad(f"{m}.services[{i}]", f"'{s}' is not a service URN like urn:service:sos")
    return CallTypeCondition(media, services)


def _ecrf_uri(obj: Mapping[str, Any], m: str) -> EcrfUriCondition:
    _keys(obj, m, {"type", "uris"}, set())
    return EcrfUriCondition(tuple(_sip(u, f"{m}.uris[{i}]") for i, u in enumerate(_str_list(obj["uris"], f"{m}.uris"))))


_CONDITIONS: Final[dict[str, Callable[[Mapping[str, Any], str], AnyCondition]]] = {
    "queue_state": _queue_state,
    "element_state": _element_state,
    "time": _time,
    "source": _source,
    "call_type": _call_type,
    "ecrf_uri": _ecrf_uri,
}


def _cause(obj: Mapping[str, Any], m: str) -> str | None:
    return _str(obj["cause"], f"{m}.cause") if obj.get("cause") is not None else None


def _route(obj: Mapping[str, Any], m: str) -> RouteAction:
    _keys(obj, m, {"type"}, {"uri", "psap", "cause"})
    has_uri, has_psap = obj.get("uri") is not None, obj.get("psap") is not None
    if has_uri == has_psap:
        raise _Bad(m, "needs exactly one of uri or psap")
    uri = _sip(obj["uri"], f"{m}.uri") if has_uri else None
    psap = _str(obj["psap"], f"{m}.psap") if has_psap else None
    return RouteAction(uri=uri, psap=psap, cause=_cause(obj, m))


def _busy(obj: Mapping[str, Any], m: str) -> BusyAction:
    _keys(obj, m, {"type"}, {"cause"})
    return BusyAction(cause=_cause(obj, m))


def _notify(obj: Mapping[str, Any], m: str) -> NotifyAction:
    _keys(obj, m, {"type", "target"}, {"reason"})
    target = _str(obj["target"], f"{m}.target")
    if not (SIP_URI.match(target) or _FQDN.match(target)):
        raise _Bad(f"{m}.target", f"'{target}' is neither a sip:/sips: URI nor an element id")
    reason = obj.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise _Bad(f"{m}.reason", f"expected a string, got {reason!r}")
    return NotifyAction(target, reason or "")


_ACTIONS: Final[dict[str, Callable[[Mapping[str, Any], str], Action]]] = {
    "route": _route,
    "busy": _busy,
    "notify": _notify,
}


_T = TypeVar("_T")


def _typed(items: Any, member: str, table: Mapping[str, Callable[[Mapping[str, Any], str], _T]]) -> list[_T]:
    if isinstance(items, str) or not isinstance(items, Sequence):
        raise _Bad(member, f"expected a list, got {items!r}")
    out = []
    for n, item in enumerate(items):
        m = f"{member}[{n}]"
        if not isinstance(item, Mapping):
            raise _Bad(m, f"expected a mapping, got {item!r}")
        kind = item.get("type")
        parse = table.get(kind) if isinstance(kind, str) else None
        if parse is None:
            raise _Bad(f"{m}.type", f"{kind!r} is not one of {', '.join(table)}")
        out.append(parse(item, m))
    return out


def _rule(data: Mapping[str, Any]) -> Rule:
    _keys(data, "", {"id", "priority", "actions"}, {"conditions", "description", "enabled"})
    priority = data["priority"]
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _Bad("priority", f"expected an integer, got {priority!r}")
    conditions = _typed(data.get("conditions") or [], "conditions", _CONDITIONS)
    actions = _typed(data["actions"], "actions", _ACTIONS)
    if not actions:
        raise _Bad("actions", "a rule needs at least one action")
    terminal = [n for n, a in enumerate(actions) if not isinstance(a, NotifyAction)]
    if len(terminal) > 1:
        raise _Bad(f"actions[{terminal[1]}]", "a rule has at most one route or busy action")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise _Bad("description", f"expected a string, got {description!r}")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _Bad("enabled", f"expected true or false, got {enabled!r}")
    return Rule(str(data["id"]), priority, tuple(conditions), tuple(actions), description, enabled)


def load_rules(data: Sequence[Mapping[str, Any]], chains: Chains | None = None) -> RuleSet:
    """Rules from a list of mappings (JSON or YAML), checked; raises :class:`PolicyError`
    listing every problem as ``rule '<id>': <member>: <problem>``."""
    if isinstance(data, str | bytes) or not isinstance(data, Sequence):
        raise PolicyError([f"rules: expected a list of rules, got {type(data).__name__}"])
    problems: list[str] = []
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for n, item in enumerate(data):
        if not isinstance(item, Mapping):
            problems.append(f"rules[{n}]: expected a mapping, got {item!r}")
            continue
        rid = item.get("id")
        if not isinstance(rid, str) or not _RULE_ID.match(rid):
            problems.append(f"rules[{n}]: id: {rid!r} is not an id (letters, digits, . _ -)")
            continue
        where = f"rule '{rid}'"
        if rid in seen:
            problems.append(f"{where}: id: also used by rules[{seen[rid]}]")
            continue
        seen[rid] = n
        try:
            rules.append(_rule(item))
        except _Bad as bad:
            problems.append(f"{where}: {bad.member}: {bad.problem}")
    if not problems:
        ruleset = RuleSet(tuple(rules))
        if chains is not None:
            problems.extend(ruleset.check_against(chains))
        if not problems:
            return ruleset
    raise PolicyError(problems)


# --- deciding --------------------------------------------------------------------------------


class _Builder:
    """Accumulates the failover list: queue segments (deduplicated, unusable ones skipped,
    each segment ordered by availability), then the business lines of every PSAP the walk
    visited, then the catch-all."""

    def __init__(
        self, chains: Chains, states: StateTable, now: datetime, log: list[str], *, outages: bool = True,
        last_resort: LastResortLines | None = None,
    ):  # fmt: skip
        self.chains = chains
        self.last_resort = last_resort
        self.states = states
        self.now = now
        self.log = log
        self.outages = outages
        self.queues: list[Destination] = []
        self.seen: set[str] = set()
        self.visited: list[PsapChain] = []

    def _visit(self, psap: PsapChain) -> None:
        if psap not in self.visited:
            self.visited.append(psap)

    def segment(self, entries: list[tuple[str, DestinationKind, PsapChain | None, str, str | None]]) -> None:
        kept: list[Destination] = []
        for uri, kind, psap, reason, cause in entries:
            if psap is not None:
                self._visit(psap)
            key = uri_key(uri)
            if key in self.seen:
                self.log.append(f"{uri}: already in the list; not repeated")
                continue
            self.seen.add(key)
            verdict = self.states.destination_verdict(
                uri,
                self.now,
                element_id=psap.element_id if psap else None,
                service_domain=psap.service_domain if psap else None,
                outages=self.outages,
            )
            if verdict.availability is Availability.UNUSABLE:
                self.log.append(f"skip {kind.value} {uri}: {verdict.reason}")
                continue
            self.log.append(f"{kind.value} {uri}: {verdict.availability.name.lower()} ({verdict.reason})")
            kept.append(Destination(uri, kind, psap.psap_id if psap else None, reason, cause, verdict.availability))
        # Stable: among equals the walk order (ECRF's PSAP, then alternates in order) holds.
        kept.sort(key=lambda d: d.availability)
        self.queues.extend(kept)

    def psap_walk(self, start: PsapChain, lead_reason: str, cause: str | None) -> None:
        """``start``, then its own alternates in order: the PSAP's chain as the deployment
        names it. Alternates of alternates are not followed: each hop costs the caller up
        to the no-answer timeout, and the business line (a person) must come soon after."""
        entries: list[tuple[str, DestinationKind, PsapChain | None, str, str | None]] = [
            (start.uri, DestinationKind.PSAP, start, lead_reason, cause)
        ]
        for alt_id in dict.fromkeys(start.alternates):
            if alt_id != start.psap_id and alt_id in self.chains:
                alt = self.chains[alt_id]
                entries.append((alt.uri, DestinationKind.ALTERNATE, alt, f"alternate of {start.psap_id}", cause))
        self.segment(entries)

    def lines_of(self, psap: PsapChain) -> list[LastResortLine]:
        """``psap``'s business lines from the registry, or its static line when there is
        no registry, it fails, or it names none (a last resort is never empty)."""
        static = [LastResortLine(psap.business_line, True, "static line")]
        if self.last_resort is None:
            return static
        try:
            lines = [line for line in self.last_resort(psap, self.now) if SIP_URI.match(line.uri)]
        except Exception as exc:  # noqa: BLE001 -- a registry bug must not cost the call its last resort
            self.log.append(f"business lines of {psap.psap_id}: registry failed ({exc!r}); static line used")
            return static
        if not lines:
            self.log.append(f"business lines of {psap.psap_id}: the registry has none; static line used")
            return static
        return lines

    def finish(self) -> list[Destination]:
        usable: list[Destination] = []
        unusable: list[Destination] = []
        tail_seen: set[str] = set()
        for psap in self.visited:
            for line in self.lines_of(psap):
                key = uri_key(line.uri)
                if key in tail_seen:
                    continue
                tail_seen.add(key)
                reason = f"business line of {psap.psap_id}" + (f" ({line.note})" if line.note else "")
                if line.usable:
                    availability = Availability.USABLE if line.checked else Availability.UNKNOWN
                    usable.append(Destination(line.uri, DestinationKind.BUSINESS_LINE, psap.psap_id, reason,
                                              availability=availability))  # fmt: skip
                else:
                    self.log.append(f"business line {line.uri} of {psap.psap_id}: {line.note or 'not usable now'}; tried last")
                    unusable.append(Destination(line.uri, DestinationKind.BUSINESS_LINE, psap.psap_id, reason,
                                                availability=Availability.SUSPECT))  # fmt: skip
        if unusable and not usable and not self.chains.catch_all:
            self.log.append("no business line is answered now over a working route: trying them anyway (never no destination)")
        # Answered lines over working routes first, for every PSAP visited: a closed desk or
        # a dead gateway route costs the caller a timeout each.
        tail = usable + unusable
        if self.chains.catch_all:
            catch_all = self.chains.catch_all
            tail = [d for d in tail if uri_key(d.uri) != uri_key(catch_all)]
            tail.append(Destination(catch_all, DestinationKind.CATCH_ALL, None, "catch-all"))
        # The tail is what guarantees a person at the end, so where a rule routed to one of
        # its URIs earlier, the tail entry wins and the earlier one goes.
        tail_keys = {uri_key(d.uri) for d in tail}
        for d in self.queues:
            if uri_key(d.uri) in tail_keys:
                self.log.append(f"{d.uri}: also a business line or the catch-all; kept at the end only")
        return [d for d in self.queues if uri_key(d.uri) not in tail_keys] + tail


def _as_chains(chains: Chains | Mapping[str, PsapChain]) -> Chains:
    return chains if isinstance(chains, Chains) else Chains(chains.values())


def decide(
    call: CallContext,
    ecrf_uri: str | None,
    states: StateTable,
    rules: RuleSet,
    chains: Chains | Mapping[str, PsapChain],
    now: datetime,
    last_resort: LastResortLines | None = None,
) -> RouteDecision:
    """Run the Policy Routing Function for one call at time ``now``.

    Steps: (1) the candidate PSAP is the ECRF's answer if it names a PSAP here, else the
    default route; (2) rules are evaluated in order, collecting notify actions, until one
    with a route or busy action matches; (3) the failover list is built: the rule's route
    target and its alternates, the candidate and its alternates, the regional backup, then
    the business lines of every PSAP visited (from ``last_resort`` when given, usable ones
    first) and the catch-all. See the module docstring for the guarantees.
    """
    now = aware(now)
    chains = _as_chains(chains)
    log: list[str] = []

    ecrf_psap = chains.psap_for_uri(ecrf_uri) if ecrf_uri else None
    default = chains.default
    default_name = default.psap_id if default else "none (catch-all only)"
    if ecrf_psap is not None:
        candidate, lead_reason = ecrf_psap, f"ECRF answer {ecrf_uri}"
        log.append(f"ECRF answered {ecrf_uri}: PSAP {ecrf_psap.psap_id}")
    elif ecrf_uri is None:
        candidate, lead_reason = default, "default route (no ECRF answer)"
        log.append(f"ECRF gave no URI: default route to {default_name}")
    else:
        candidate, lead_reason = default, f"default route (ECRF answered unknown {ecrf_uri})"
        log.append(f"ECRF answered {ecrf_uri}, which is no PSAP queue here: default route to {default_name}")

    env = _Env(call, ecrf_uri, candidate, states, now)
    matched: list[str] = []
    notifications: list[Notification] = []
    terminal: RouteAction | BusyAction | None = None
    terminal_rule = ""
    for rule in rules:
        if not rule.enabled:
            continue
        try:
            hit = all(c.matches(env) for c in rule.conditions)
        except Exception as exc:  # noqa: BLE001 -- one broken rule must not stop routing
            log.append(f"rule {rule.id}: error while evaluating ({exc!r}); treated as not matching")
            continue
        if not hit:
            continue
        matched.append(rule.id)
        log.append(f"rule {rule.id} (priority {rule.priority}) matched")
        notifications.extend(Notification(a.target, rule.id, call.call_id, a.reason) for a in rule.notifies)
        if rule.terminal is not None:
            terminal, terminal_rule = rule.terminal, rule.id
            break

    # The monitor's test calls measure the PSAP the ECRF names even while the monitor has it
    # marked down: routing them around it would hide its recovery.
    probe = service_matches(TEST_SERVICE_URN, call.service_urn)
    builder = _Builder(chains, states, now, log, outages=not probe, last_resort=last_resort)
    busy_action: BusyAction | None = None
    if isinstance(terminal, RouteAction):
        cause = terminal.cause
        target = chains.get(terminal.psap) if terminal.psap else (chains.psap_for_uri(terminal.uri) if terminal.uri else None)
        if target is not None:
            builder.psap_walk(target, f"rule {terminal_rule}: route to {target.psap_id}", cause)
        elif terminal.uri:
            builder.segment([(terminal.uri, DestinationKind.POLICY, None, f"rule {terminal_rule}: route", cause)])
        else:
            log.append(f"rule {terminal_rule}: route to unknown PSAP '{terminal.psap}' ignored")
    elif isinstance(terminal, BusyAction):
        if call.callback:
            busy_action = terminal
        else:
            log.append(f"rule {terminal_rule}: busy not honoured: no callback number; routing the call")

    if candidate is not None:
        builder.psap_walk(candidate, lead_reason, None)
    if chains.backup is not None:
        backup = chains[chains.backup]
        builder.segment([(backup.uri, DestinationKind.BACKUP, backup, "regional backup", None)])
    destinations = builder.finish()
    log.append("failover: " + " -> ".join(f"{d.kind.value}:{d.uri}" for d in destinations))

    decision = RouteDecision(destinations, notifications, matched, log)
    if busy_action is not None and call.callback:
        decision.busy = True
        decision.callback = CallbackRecord(call.call_id, call.callback, destinations[0], terminal_rule, busy_action.cause, now)
        log.append(f"rule {terminal_rule}: busy; callback record for {call.callback} to {destinations[0].uri}")
    return decision
