"""Passive watching of live traffic, sans-I/O: the i3 log events the elements already write
(NENA-STA-010.3 section 4.12.3, as ``firebox.esrp.logevents.CallLogger`` builds them) and the
element / service / queue states (sections 2.4.1, 2.4.2, 4.2.1.3) in; sliding-window figures
out. Every method takes the time ``now`` in seconds since the epoch (UNIX time): the hour of
the day of the expected-volume profile is read from it.

What a call tells, event by event:

* ``CallStartLogEvent``: a call entered the BCF + ESRP element (``elementId``); its ``to``
  says whether it is an i3 test call (``urn:service:test.sos``), which is counted apart:
  probes are judged by the probe runner, not mixed into live traffic.
* the incoming INVITE (``CallSignalingMessageLogEvent``, ``ipAddressPort``): the ingress
  (carrier network) it came from, named by ``ingresses`` (CIDR -> name, as the BCF's
  ``sources``) or ``ip-<address>``.
* the first ``RouteLogEvent``: the PSAP the call was meant for (its queue URI mapped by
  ``psaps``); later ones (failovers) where it went next.
* an incoming ``SIP/2.0 200`` to the INVITE: answered, by the PSAP last routed to; an
  incoming final error: an error response of that PSAP, by status.
* ``CallEndLogEvent`` without an answer: failed.

Counts per scope (statewide, ingress, element, PSAP, region) are kept in one-second buckets
for ``retention`` seconds and as running totals (for Prometheus). A PSAP's (and a region's)
``answered`` counts only calls answered there; answered elsewhere they are ``rerouted``.
Malformed events are counted in ``rejected`` and logged, never raised: watching must not
disturb what it watches.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "DEFAULT_PROFILE",
    "ConditionNote",
    "Counts",
    "Figures",
    "Metric",
    "Scope",
    "StateNote",
    "Volume",
    "Watch",
    "massachusetts_profile",
]

log = logging.getLogger(__name__)

TEST_SERVICE = "urn:service:test.sos"
#: A PSAP's explicit "busy" answers (RFC 3261 21.4.18 486, 21.4.14 480, 21.6.1 600; and 503
#: *with* Retry-After, 21.5.4, which is how a full queue answers): its overflow, not its
#: failure. A bare 503 is what a proxy in front of a dead PSAP sends: a failure.
BUSY_STATUSES = frozenset({480, 486, 600})
#: Calls whose fate is followed at once (oldest forgotten first).
MAX_CALLS = 20_000


class Scope(StrEnum):
    STATEWIDE = "statewide"
    INGRESS = "ingress"
    ELEMENT = "element"
    PSAP = "psap"
    REGION = "region"


class Metric(StrEnum):
    ENTERED = "entered"  # calls in (CallStart; per ingress: the incoming INVITE)
    ROUTED = "routed"  # first route to a PSAP (PSAP and region only)
    ANSWERED = "answered"  # 200 to the INVITE (PSAP/region: answered there)
    REROUTED = "rerouted"  # PSAP/region: meant for it, answered elsewhere
    FAILED = "failed"  # ended without any answer
    #: PSAP/region: meant for it, which declined it as busy (its overflow rule: 486, 480,
    #: 503, 600), then answered elsewhere. An overloaded PSAP is answering as fast as it can;
    #: its overflow going to alternates is the design (NENA-STA-020 overflow), not an outage,
    #: so it is left out of the answer ratio (a PSAP that is down does not answer at all).
    OVERFLOWED = "overflowed"


def massachusetts_profile(per_day: float = 8800.0) -> tuple[float, ...]:
    """Expected calls per hour of the day (local time), 24 values totalling ``per_day``.
    The total is the issue's Massachusetts average; the shape (quietest before dawn, busiest
    late afternoon) is an assumed 911 diurnal curve, to be replaced by a state's own figures."""
    shape = (3.0, 2.6, 2.3, 2.0, 1.8, 1.9, 2.5, 3.3, 4.0, 4.5, 4.8, 5.0,
             5.1, 5.2, 5.3, 5.5, 5.7, 5.8, 5.6, 5.2, 4.8, 4.3, 3.8, 3.3)  # fmt: skip
    total = sum(shape)
    return tuple(per_day * w / total for w in shape)


DEFAULT_PROFILE = massachusetts_profile()


@dataclass(frozen=True, slots=True)
class Counts:
    entered: int = 0
    routed: int = 0
    answered: int = 0
    rerouted: int = 0
    failed: int = 0
    overflowed: int = 0

    @property
    def settled(self) -> int:
        """Calls whose setup is over: answered (here or elsewhere) or failed."""
        return self.answered + self.rerouted + self.failed

    @property
    def answer_ratio(self) -> float | None:
        return self.answered / self.settled if self.settled else None

    def as_dict(self) -> dict[str, Any]:
        return {"entered": self.entered, "routed": self.routed, "answered": self.answered,
                "rerouted": self.rerouted, "failed": self.failed, "overflowed": self.overflowed,
                "answer_ratio": self.answer_ratio}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Volume:
    """Calls entered in the last ``window`` seconds (or since watching began, when that is
    shorter) against the profile's expectation for that time."""

    window: float
    observed: int
    expected: float
    hour: int

    @property
    def ratio(self) -> float | None:
        return self.observed / self.expected if self.expected > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {"window_seconds": self.window, "observed": self.observed, "expected": round(self.expected, 2),
                "hour": self.hour, "ratio": self.ratio}  # fmt: skip


@dataclass(frozen=True, slots=True)
class StateNote:
    """The latest state of an element, service or queue and when it took that value."""

    kind: str  # "element", "service" or "queue"
    ident: str
    value: str
    since: float
    usable: bool

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.ident, "state": self.value, "since": self.since, "usable": self.usable}


@dataclass(frozen=True, slots=True)
class ConditionNote:
    """An element's own report of a condition (``firebox.bcf.conditions.BcfCondition``: a
    TDoS it is screening, an identifier allocator failing), ``since`` and ``at`` in the
    monitor's clock. ``category`` "attack" or "fault"."""

    kind: str
    element: str
    active: bool
    since: float
    at: float
    cause: str
    scope: tuple[str, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)
    category: str = "fault"

    @property
    def key(self) -> str:
        return f"{self.element} {self.kind}"

    @classmethod
    def of(cls, condition: Any, now: float) -> ConditionNote:
        """From a ``BcfCondition`` (whose times are on the BCF's own clock): placed on the
        monitor's clock at ``now``, keeping how long ago it began."""
        kind = getattr(condition.kind, "value", condition.kind)
        since = now - max(0.0, float(condition.at) - float(condition.since))
        return cls(str(kind), str(condition.element), bool(condition.active), since, now, str(condition.cause),
                   tuple(condition.scope), dict(condition.figures), str(condition.category))  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "element": self.element, "active": self.active, "since": _iso(self.since),
                "cause": self.cause, "scope": list(self.scope), "figures": dict(self.figures),
                "category": self.category}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Figures:
    at: float
    window: float
    scopes: dict[Scope, dict[str, Counts]]
    errors: dict[int, int]  # final error answers from downstream (PSAPs), by SIP status
    errors_to_callers: dict[int, int]  # final error answers sent to callers, by SIP status
    volume: Volume
    states: dict[str, StateNote]
    test_calls: int
    #: Running totals since the start, by (scope, key): calls not answered where they were
    #: meant to be (failed; for a PSAP or region also rerouted).
    unanswered: dict[tuple[str, str], int] = field(default_factory=dict)

    def get(self, scope: Scope, key: str = "all") -> Counts:
        return self.scopes.get(scope, {}).get(key, Counts())

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": _iso(self.at),
            "window_seconds": self.window,
            "scopes": {s.value: {k: c.as_dict() for k, c in sorted(v.items())} for s, v in self.scopes.items()},
            "errors_by_status": {str(k): v for k, v in sorted(self.errors.items())},
            "errors_to_callers_by_status": {str(k): v for k, v in sorted(self.errors_to_callers.items())},
            "volume": self.volume.as_dict(),
            "states": [n.as_dict() for n in self.states.values()],
            "test_calls": self.test_calls,
            "unanswered_totals": {f"{s}:{k}": n for (s, k), n in sorted(self.unanswered.items())},
        }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class _Call:
    started: float
    test: bool = False
    element: str | None = None
    ingress: str | None = None
    intended: str | None = None  # PSAP id of the first route
    last: str | None = None  # PSAP id (or URI) of the latest route
    answered_by: str | None = None
    done: bool = False
    overflowed: bool = False  # the intended PSAP answered busy (its overflow)


class _Buckets:
    """Counts per key in one-second buckets, for ``retention`` seconds."""

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._buckets: deque[tuple[int, Counter[tuple[str, ...]]]] = deque()

    def add(self, key: tuple[str, ...], now: float, n: int = 1) -> None:
        second = int(now)
        if not self._buckets or self._buckets[-1][0] < second:
            self._buckets.append((second, Counter()))
            self._prune(second)
        # A late event (an earlier second) goes in the newest bucket: close enough.
        self._buckets[-1][1][key] += n

    def _prune(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self.retention:
            self._buckets.popleft()

    def since(self, start: float) -> Counter[tuple[str, ...]]:
        out: Counter[tuple[str, ...]] = Counter()
        for second, counts in reversed(self._buckets):
            if second < int(start):
                break
            out.update(counts)
        return out


_USABLE_STATES = {
    "element": {"Normal", "ScheduledMaintenance", "ServiceDisruption", "Unreachable"},
    "service": {"Normal", "ScheduledMaintenanceAvailable", "MajorIncidentInProgress", "Partial", "Unreachable"},
    "queue": {"Active", "Standby", "Unreachable"},
}


class Watch:
    """``psaps``: queue URI -> PSAP id; ``regions``: PSAP id -> region; ``ingresses``:
    CIDR -> ingress name; ``window``: seconds the figures count over; ``profile``: expected
    calls per local hour (24 values); ``volume_window``: seconds the volume is judged over."""

    def __init__(
        self,
        psaps: Mapping[str, str],
        regions: Mapping[str, str] | None = None,
        *,
        ingresses: Mapping[str, str] | None = None,
        window: float = 300.0,
        retention: float = 3600.0,
        profile: Iterable[float] = DEFAULT_PROFILE,
        volume_window: float = 900.0,
        timezone: str = "America/New_York",
    ) -> None:
        self.psaps = {_uri_key(uri): pid for uri, pid in psaps.items()}
        self.regions = dict(regions or {})
        self._networks = sorted(
            ((ipaddress.ip_network(cidr, strict=False), name) for cidr, name in (ingresses or {}).items()),
            key=lambda item: item[0].prefixlen, reverse=True,
        )  # fmt: skip
        self.window = window
        self.profile = tuple(float(v) for v in profile)
        if len(self.profile) != 24 or any(v < 0 for v in self.profile):
            raise ValueError("profile: 24 non-negative values (expected calls in each hour of the day) are required")
        self.volume_window = volume_window
        self.tz = ZoneInfo(timezone)
        self._buckets = _Buckets(max(retention, window, volume_window))
        self.totals: Counter[tuple[str, ...]] = Counter()
        self.errors_total: Counter[tuple[str, int]] = Counter()  # (psap|caller, status)
        self.states: dict[str, StateNote] = {}
        self.rejected = 0
        self.test_calls = 0
        #: When watching began (the first input or figures): a watch younger than the
        #: volume window compares what it saw with what was expected since then only.
        self.started: float | None = None
        self._calls: OrderedDict[str, _Call] = OrderedDict()

    # --- input ----------------------------------------------------------------------------

    def log_event(self, event: Any, now: float) -> None:
        """One i3 log event: a ``firebox.logging.events.LogEvent`` or its JSON object."""
        if self.started is None:
            self.started = now
        try:
            data = event.to_json() if hasattr(event, "to_json") else event
            if not isinstance(data, Mapping):
                raise TypeError(f"not a log event: {type(event).__name__}")
            self._event(data, now)
        except Exception as exc:  # noqa: BLE001 -- a bad event must not stop the watch
            self.rejected += 1
            log.warning("monitor: log event not understood (%s: %s)", type(exc).__name__, exc)

    def state(self, kind: str, ident: str, value: str, now: float) -> StateNote:
        """An element / service / queue state notification (``kind`` element, service or
        queue; ``value`` the registry value, sections 10.12, 10.13, 10.17)."""
        if kind not in _USABLE_STATES:
            raise ValueError(f"kind: must be one of {', '.join(_USABLE_STATES)}, not {kind!r}")
        key = f"{kind}:{ident}"
        held = self.states.get(key)
        if held is not None and held.value == value:
            return held
        note = StateNote(kind, ident, value, now, value in _USABLE_STATES[kind])
        self.states[key] = note
        return note

    def state_of(self, state: Any, now: float) -> StateNote:
        """A parsed ``firebox.esrp.states`` ElementState, ServiceState or QueueState."""
        from firebox.esrp.states import ElementState, QueueState, ServiceState

        match state:
            case ElementState():
                return self.state("element", state.element_id, state.state.value, now)
            case ServiceState():
                return self.state("service", state.domain, state.state.value, now)
            case QueueState():
                return self.state("queue", state.queue_uri, state.state.value, now)
        raise TypeError(f"not a state: {state!r}")

    # --- output ---------------------------------------------------------------------------

    def figures(self, now: float, window: float | None = None) -> Figures:
        window = self.window if window is None else window
        counts = self._buckets.since(now - window)
        scopes: dict[Scope, dict[str, Counts]] = {}
        keys = {(k[1], k[2]) for k in counts if k[0] in Metric.__members__.values()}
        for scope_name, ident in keys:
            scope = Scope(scope_name)
            scopes.setdefault(scope, {})[ident] = Counts(
                *(counts[(m.value, scope_name, ident)] for m in Metric)
            )
        for pid in set(self.psaps.values()):
            scopes.setdefault(Scope.PSAP, {}).setdefault(pid, Counts())
        errors = {s: n for (k, s), n in _errors(counts, "psap").items()}
        to_callers = {s: n for (k, s), n in _errors(counts, "caller").items()}
        entered = self._buckets.since(now - self.volume_window)[(Metric.ENTERED.value, Scope.STATEWIDE.value, "all")]
        if self.started is None:
            self.started = now
        hour = datetime.fromtimestamp(now, self.tz).hour
        covered = min(self.volume_window, max(0.0, now - self.started))
        expected = self.profile[hour] * covered / 3600.0
        unanswered: Counter[tuple[str, str]] = Counter()
        for (metric, scope_name, ident), n in self.totals.items():
            if metric == Metric.FAILED or (metric == Metric.REROUTED and scope_name in (Scope.PSAP, Scope.REGION)):
                unanswered[(scope_name, ident)] += n
        return Figures(now, window, scopes, errors, to_callers, Volume(self.volume_window, entered, expected, hour),
                       dict(self.states), self.test_calls, dict(unanswered))  # fmt: skip

    def unanswered_total(self, scope: Scope, key: str = "all") -> int:
        """Calls of the scope not answered where they were meant to be, since the start
        (failed, and for a PSAP or region also rerouted): the detector's calls affected."""
        n = self.totals[(Metric.FAILED.value, scope.value, key)]
        if scope in (Scope.PSAP, Scope.REGION):
            n += self.totals[(Metric.REROUTED.value, scope.value, key)]
        return n

    # --- internals ------------------------------------------------------------------------

    def _count(self, metric: Metric, scope: Scope, key: str | None, now: float) -> None:
        if key is None:
            return
        k = (metric.value, scope.value, key)
        self._buckets.add(k, now)
        self.totals[k] += 1

    def _call(self, data: Mapping[str, Any], now: float, create: bool) -> _Call | None:
        sip = data.get("callIdSip") or data.get("callId")
        if not isinstance(sip, str) or not sip:
            return None
        call = self._calls.get(sip)
        if call is None and create:
            call = self._calls[sip] = _Call(now)
            while len(self._calls) > MAX_CALLS:
                self._calls.popitem(last=False)
        return call

    def _event(self, data: Mapping[str, Any], now: float) -> None:
        kind = data.get("logEventType")
        if kind == "CallStartLogEvent":
            call = self._call(data, now, create=True)
            if call is None or call.element is not None:
                return
            call.element = str(data.get("elementId") or "unknown")
            call.test = TEST_SERVICE in str(data.get("to") or "").lower()
            if call.test:
                self.test_calls += 1
                return
            self._count(Metric.ENTERED, Scope.STATEWIDE, "all", now)
            self._count(Metric.ENTERED, Scope.ELEMENT, call.element, now)
            if call.ingress is not None:
                self._count(Metric.ENTERED, Scope.INGRESS, call.ingress, now)
        elif kind == "RouteLogEvent":
            call = self._call(data, now, create=True)
            if call is None or call.done:
                return
            uri = str(data.get("recipientUri") or "")
            psap = self.psaps.get(_uri_key(uri))
            call.last = psap or uri
            if call.intended is None and psap is not None and str(data.get("ruleId")) != "failover":
                call.intended = psap
                if not call.test:
                    self._count(Metric.ROUTED, Scope.PSAP, psap, now)
                    self._count(Metric.ROUTED, Scope.REGION, self.regions.get(psap), now)
        elif kind == "CallSignalingMessageLogEvent":
            self._signaling(data, now)
        elif kind == "CallEndLogEvent":
            call = self._call(data, now, create=False)
            if call is None or call.done:
                return
            if call.element is None:
                # A call this node never saw start: its BYE came through here after the node
                # that set it up died (a cluster). Not a failed call of this node's.
                self._calls.pop(str(data.get("callIdSip") or data.get("callId")), None)
                return
            call.done = True
            if call.answered_by is None and not call.test:
                self._settle(call, Metric.FAILED, now)
            self._calls.pop(str(data.get("callIdSip") or data.get("callId")), None)

    def _signaling(self, data: Mapping[str, Any], now: float) -> None:
        text = data.get("text")
        if not isinstance(text, str):
            raise ValueError("CallSignalingMessageLogEvent without text")
        first, _, rest = text.partition("\r\n")
        incoming = str(data.get("direction")) == "incoming"
        call = self._call(data, now, create=True)
        if call is None:
            return
        if first.startswith("SIP/2.0 "):
            status = int(first.split()[1])
            if _cseq_method(rest) != "INVITE" or status < 200:
                return
            if call.test:
                return
            if not incoming:
                if status >= 300:
                    self.errors_total[("caller", status)] += 1
                    self._buckets.add(("error", "caller", str(status)), now)
                return
            if status >= 300:
                self.errors_total[("psap", status)] += 1
                self._buckets.add(("error", "psap", str(status)), now)
                if call.intended is not None and call.last == call.intended and _is_overflow(status, rest):
                    call.overflowed = True
                return
            if call.answered_by is None:
                call.answered_by = call.last or "unknown"
                self._settle(call, Metric.ANSWERED, now)
            return
        if incoming and first.startswith("INVITE ") and call.ingress is None and ";tag=" not in _header(rest, "to"):
            call.ingress = self._ingress(data.get("ipAddressPort"))
            if call.element is not None and not call.test:  # CallStart came first (the usual order)
                self._count(Metric.ENTERED, Scope.INGRESS, call.ingress, now)

    def _settle(self, call: _Call, metric: Metric, now: float) -> None:
        """The call's setup is over: count it in every scope it belongs to."""
        self._count(metric, Scope.STATEWIDE, "all", now)
        self._count(metric, Scope.ELEMENT, call.element, now)
        self._count(metric, Scope.INGRESS, call.ingress, now)
        if call.intended is None:
            return
        region = self.regions.get(call.intended)
        if metric is Metric.ANSWERED:
            here = call.answered_by == call.intended
            elsewhere = Metric.OVERFLOWED if call.overflowed else Metric.REROUTED
            self._count(Metric.ANSWERED if here else elsewhere, Scope.PSAP, call.intended, now)
            if call.answered_by in self.regions and self.regions.get(call.answered_by) == region:
                self._count(Metric.ANSWERED, Scope.REGION, region, now)
            else:
                self._count(elsewhere, Scope.REGION, region, now)
        else:
            self._count(metric, Scope.PSAP, call.intended, now)
            self._count(metric, Scope.REGION, region, now)

    def _ingress(self, peer: Any) -> str:
        host = str(peer or "")
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        else:
            host = host.rpartition(":")[0] or host
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return "unknown"
        for net, name in self._networks:
            if ip in net:
                return name
        return f"ip-{ip}"


def _errors(counts: Counter[tuple[str, ...]], side: str) -> dict[tuple[str, int], int]:
    return {(side, int(k[2])): n for k, n in counts.items() if k[0] == "error" and k[1] == side}


def _is_overflow(status: int, rest: str) -> bool:
    return status in BUSY_STATUSES or (status == 503 and bool(_header(rest, "retry-after")))


def _cseq_method(head: str) -> str:
    value = _header(head, "cseq")
    return value.split()[-1].upper() if value else ""


def _header(head: str, name: str) -> str:
    compact = {"to": "t", "cseq": None}.get(name)
    for line in head.split("\r\n"):
        if not line:
            break
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and (key == name or (compact is not None and key == compact)):
            return value.strip()
    return ""


def _uri_key(uri: str) -> str:
    """A queue URI compared without scheme case, parameters or angle brackets."""
    return uri.strip().strip("<>").split(";", 1)[0].lower()
