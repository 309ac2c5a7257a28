"""BCF protection that cannot black-hole 911 (NENA-STA-010.3 section 4.1: the BCF's
bad-actor handling and call rate limiting).

Three parts, all sans-I/O (time is an argument):

* ``RateTracker``: a token bucket per source, bounded in memory (least recently seen sources
  are forgotten first, so a flood of spoofed sources cannot exhaust it).
* ``BcfRules``: rules held as data (``from_dicts`` / ``to_dicts``, a version number), so that
  a rule set can be reviewed, staged and rolled back as a whole. A rule matches on source id,
  source address (CIDR), method and call kind, and says what to do.
* ``BadActors``: the i3 BadActor interface's registry. ``report`` answers 201 for a known
  source and 433 for an unknown source id, as the i3 interface defines.

``decide`` combines them into a ``Verdict``. The one invariant: an emergency call is never
rejected. The harshest treatment it can get is DIVERT (an announcement plus a callback record
so a call-taker calls back), and DEPRIORITIZE still delivers it. Non-emergency traffic can
be rejected (503 with Retry-After) when over its limit or by rule.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from firebox.bcf.marking import CallKind


class Action(StrEnum):
    ALLOW = "allow"
    DEPRIORITIZE = "deprioritize"  # forwarded, with the lowest esnet priority
    DIVERT = "divert"  # announcement + callback record; for emergency calls the harshest
    REJECT = "reject"  # 503 + Retry-After; never applied to an emergency call


# How harsh each action is, to combine a rule's verdict with the rate limiter's.
_SEVERITY = {Action.ALLOW: 0, Action.DEPRIORITIZE: 1, Action.DIVERT: 2, Action.REJECT: 3}


class RuleError(ValueError):
    """A rule set that cannot be loaded; ``problems`` names each rule and member."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


# --- rate tracking ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``per_second`` sustained, ``burst`` at once (a token bucket)."""

    per_second: float
    burst: float

    def __post_init__(self) -> None:
        if not self.per_second > 0 or not self.burst >= 1:
            raise ValueError("a rate limit needs per_second > 0 and burst >= 1")


class RateTracker:
    """Token buckets per source key, at most ``max_sources`` of them."""

    def __init__(self, limit: RateLimit, *, max_sources: int = 100_000):
        if max_sources < 1:
            raise ValueError("max_sources must be at least 1")
        self.limit = limit
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, last]

    def __len__(self) -> int:
        return len(self._buckets)

    def hit(self, key: str, now: float) -> bool:
        """Count one request from ``key`` at ``now`` (seconds); True while within the limit."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = [self.limit.burst, now]
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket[1])
            bucket[0] = min(self.limit.burst, bucket[0] + elapsed * self.limit.per_second)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False


# --- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """Matches when every given criterion matches (an empty criterion matches anything)."""

    id: str
    action: Action
    sources: tuple[str, ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    methods: tuple[str, ...] = ()
    kinds: tuple[CallKind, ...] = ()
    reason: str = ""

    def matches(self, source_id: str, source_ip: str | None, method: str, kind: CallKind) -> bool:
        if self.sources and source_id not in self.sources:
            return False
        if self.methods and method.upper() not in self.methods:
            return False
        if self.kinds and kind not in self.kinds:
            return False
        if self.networks:
            try:
                ip = ipaddress.ip_address(source_ip or "")
            except ValueError:
                return False
            if not any(ip in net for net in self.networks):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "action": self.action.value}
        if self.sources:
            out["sources"] = list(self.sources)
        if self.networks:
            out["networks"] = [str(n) for n in self.networks]
        if self.methods:
            out["methods"] = list(self.methods)
        if self.kinds:
            out["kinds"] = [k.value for k in self.kinds]
        if self.reason:
            out["reason"] = self.reason
        return out


_RULE_KEYS = frozenset({"id", "action", "sources", "networks", "methods", "kinds", "reason"})


def _rule(data: Any, n: int, problems: list[str]) -> Rule | None:
    if not isinstance(data, Mapping):
        problems.append(f"rules[{n}]: must be an object")
        return None
    rid = data.get("id")
    where = f"rule {rid!r}" if isinstance(rid, str) and rid else f"rules[{n}]"
    before = len(problems)
    if not isinstance(rid, str) or not rid:
        problems.append(f"{where}: id: a non-empty string is required")
    for key in sorted(set(data) - _RULE_KEYS):
        problems.append(f"{where}: {key}: unknown member")
    try:
        action = Action(data.get("action"))
    except ValueError:
        problems.append(f"{where}: action: must be one of {', '.join(a.value for a in Action)}")
        action = Action.ALLOW

    def strings(key: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            problems.append(f"{where}: {key}: must be a list of non-empty strings")
            return ()
        return tuple(value)

    networks = []
    for net in strings("networks"):
        try:
            networks.append(ipaddress.ip_network(net, strict=False))
        except ValueError:
            problems.append(f"{where}: networks: {net!r} is not an address or CIDR network")
    kinds = []
    for kind in strings("kinds"):
        try:
            kinds.append(CallKind(kind))
        except ValueError:
            problems.append(f"{where}: kinds: {kind!r} is not one of {', '.join(k.value for k in CallKind)}")
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        problems.append(f"{where}: reason: must be a string")
    if len(problems) > before:
        return None
    return Rule(
        rid, action, strings("sources"), tuple(networks),
        tuple(m.upper() for m in strings("methods")), tuple(kinds), reason,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class BcfRules:
    """An ordered rule set (first match wins) with a version, loadable from plain data."""

    rules: tuple[Rule, ...] = ()
    version: int = 0

    @classmethod
    def from_dicts(cls, items: Iterable[Any], version: int = 0) -> BcfRules:
        problems: list[str] = []
        rules = [r for n, item in enumerate(items) if (r := _rule(item, n, problems)) is not None]
        ids = [r.id for r in rules]
        problems += [f"rule {i!r}: id: used twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
        if problems:
            raise RuleError(problems)
        return cls(tuple(rules), version)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.rules]

    def match(self, source_id: str, source_ip: str | None, method: str, kind: CallKind) -> Rule | None:
        return next((r for r in self.rules if r.matches(source_id, source_ip, method, kind)), None)


# --- bad actors ------------------------------------------------------------------------------


@dataclass(slots=True)
class BadActorReport:
    source_id: str
    call_id: str | None
    request_id: str | None
    received: float


class BadActors:
    """Sources reported as bad actors (by a PSAP or another element), each for ``hold``
    seconds after its last report. Only sources this BCF knows can be reported."""

    def __init__(self, known_sources: Iterable[str] = (), *, hold: float = 3600.0, max_reports: int = 10_000):
        self.known = set(known_sources)
        self.hold = hold
        self.max_reports = max_reports
        self._until: dict[str, float] = {}
        self.reports: list[BadActorReport] = []

    def report(self, body: Any, now: float) -> tuple[int, dict[str, Any]]:
        """Handle a ``POST /BadActors`` JSON body: (HTTP status, JSON answer)."""
        if not isinstance(body, Mapping):
            return 400, _problem(400, "the body must be a JSON object with a sourceId")
        source = body.get("sourceId")
        if not isinstance(source, str) or not source:
            return 400, _problem(400, "sourceId: a non-empty string is required")
        if source not in self.known:
            return 433, _problem(433, f"sourceId {source[:80]!r} is not a source of this BCF")
        call_id = body.get("callId") if isinstance(body.get("callId"), str) else None
        request_id = body.get("badActorRequestId") if isinstance(body.get("badActorRequestId"), str) else None
        self._until[source] = now + self.hold
        self.reports.append(BadActorReport(source, call_id, request_id, now))
        del self.reports[: -self.max_reports]
        return 201, {"sourceId": source, "badActorRequestId": request_id, "holdSeconds": self.hold}

    def is_bad(self, source_id: str, now: float) -> bool:
        until = self._until.get(source_id)
        if until is None:
            return False
        if now >= until:
            del self._until[source_id]
            return False
        return True


def _problem(status: int, detail: str) -> dict[str, Any]:
    return {"type": "about:blank", "status": status, "title": "Bad actor report refused", "detail": detail}


# --- the verdict -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    rule_id: str | None = None
    notes: tuple[str, ...] = field(default=())


def decide(
    kind: CallKind,
    method: str,
    source_id: str,
    source_ip: str | None,
    *,
    within_rate: bool,
    bad_actor: bool,
    rules: BcfRules,
    suspect: bool = False,
) -> Verdict:
    """How the BCF treats one request. Harshest of: the first matching rule, the rate limit
    (over it: emergency calls are deprioritized, other traffic rejected) and a bad-actor
    report (emergency calls diverted with a callback record, other traffic rejected) and a
    TDoS suspicion (``suspect``: an unvetted source during an attack, the same treatment:
    the diverted call goes to the screening answer, NENA's "mark and deprioritize, never
    reject"). An emergency or test call is never rejected: a REJECT becomes DIVERT, with a note saying so."""
    emergency = kind is not CallKind.OTHER
    candidates: list[tuple[Action, str, str | None]] = []
    rule = rules.match(source_id, source_ip, method, kind)
    if rule is not None:
        candidates.append((rule.action, rule.reason or f"rule {rule.id}", rule.id))
    if not within_rate:
        candidates.append((Action.DEPRIORITIZE if emergency else Action.REJECT, "source over its rate limit", None))
    if bad_actor:
        candidates.append((Action.DIVERT if emergency else Action.REJECT, "source reported as a bad actor", None))
    if suspect:
        candidates.append((Action.DIVERT if emergency else Action.REJECT,
                           "TDoS: unvetted source during an attack (screening)", None))  # fmt: skip
    if not candidates:
        return Verdict(Action.ALLOW, "no rule, within rate")
    action, reason, rule_id = max(candidates, key=lambda c: _SEVERITY[c[0]])
    notes: tuple[str, ...] = ()
    if emergency and action is Action.REJECT:
        action = Action.DIVERT
        notes = ("an emergency call is never rejected: diverted to announcement + callback instead",)
    return Verdict(action, reason, rule_id, notes)
