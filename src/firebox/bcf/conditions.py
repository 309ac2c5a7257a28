"""What the BCF knows about itself and its traffic as a whole, sans-I/O (time is an
argument): the element conditions it raises for the monitor.

Two conditions, each a ``BcfCondition`` event when it starts, when its scope changes
materially and when it ends (listeners are called in the step that decided it):

* ``tdos``: a telephony denial-of-service attack (NENA-STA-010.3 section 4.1: the BCF
  "detects and mitigates" DoS attacks; NENA's TDoS guidance: never reject a call it can
  parse, but calls may be marked and deprioritized). ``TdosGuard`` keeps an aggregate view
  over a sliding window: calls from *unvetted* sources (not a known carrier, and no
  ``verstat=TN-Validation-Passed`` from an upstream STIR/SHAKEN verifier, RFC 8224 / 3GPP
  TS 24.229 7.2A.20) against all calls; distinct unvetted sources per network prefix (a
  spread of sources in one /24, IPv6 /48, is a flood made to stay under per-source limits);
  and short or silent calls from unvetted sources (``call_ended``). A per-source limit
  cannot see eight sources each under it; this can.
  While the condition holds, ``suspect(...)`` says which calls to treat as suspect: every
  call from an unvetted source. The BCF marks them, deprioritizes them and diverts them to
  the screening answer (``firebox.bcf.screening``) with a callback record; calls from known
  carriers are untouched.
* ``call-id``: the BCF's identifier allocator failed (the 2014 multistate outage: a
  counter at its ceiling). ``IdHealth`` raises it at the first failure (the BCF then marks
  with its fallback allocator, so no call is lost or unmarked) and clears it once the
  allocator has worked again for ``clear_after`` seconds.

Counts (calls, sources) are in ``figures``, never in ``cause``: the cause text changes only
when what is known changes (the monitor notifies on cause changes).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["BcfCondition", "ConditionKind", "IdHealth", "TdosConfig", "TdosGuard", "prefix_of"]


class ConditionKind(StrEnum):
    TDOS = "tdos"
    CALL_ID = "call-id"


@dataclass(frozen=True, slots=True)
class BcfCondition:
    """One change of an element condition. ``active`` False: it ended at ``at``.
    ``since`` is when it began; ``scope`` what it covers (for TDoS the prefixes and sources
    involved); ``figures`` the counts behind it."""

    kind: ConditionKind
    element: str
    active: bool
    since: float
    at: float
    cause: str
    scope: tuple[str, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)
    #: "attack" for a TDoS, "fault" for a failure of the element itself.
    category: str = "fault"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "element": self.element, "active": self.active, "since": self.since,
                "at": self.at, "cause": self.cause, "scope": list(self.scope), "figures": dict(self.figures),
                "category": self.category}  # fmt: skip


Listener = Callable[[BcfCondition], None]


def prefix_of(source_ip: str | None) -> str | None:
    """The network a source belongs to for the spread test: its /24 (IPv4) or /48 (IPv6)."""
    try:
        ip = ipaddress.ip_address(source_ip or "")
    except ValueError:
        return None
    bits = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


@dataclass(frozen=True, slots=True)
class TdosConfig:
    """``window``: seconds the aggregate view covers. The attack starts when, in the window,
    unvetted calls are at least ``min_calls`` and either more than ``share`` of all calls,
    or come from ``prefix_sources`` distinct sources of one prefix, or ``short_calls`` of
    them ended shorter than ``short_seconds`` (or unanswered). It ends when unvetted calls
    in the window fall under ``clear_calls`` and stay there ``clear_after`` seconds."""

    window: float = 10.0
    min_calls: int = 20
    share: float = 0.5
    prefix_sources: int = 4
    short_calls: int = 20
    short_seconds: float = 5.0
    clear_calls: int = 5
    clear_after: float = 10.0
    #: Distinct sources remembered per prefix (bounded: a spoofed spread cannot grow it).
    max_sources: int = 1000

    def __post_init__(self) -> None:
        if self.window <= 0 or self.min_calls < 1 or not 0 < self.share <= 1 or self.prefix_sources < 2:
            raise ValueError("window > 0, min_calls >= 1, 0 < share <= 1 and prefix_sources >= 2 are required")


class TdosGuard:
    """The BCF's aggregate view. ``observe`` every new call (``vetted``: from a known
    carrier or attested); ``suspect`` says whether to treat one as suspect now. Counts are
    kept incrementally (a flood makes every step cost O(1), not O(window))."""

    def __init__(self, element: str, config: TdosConfig | None = None) -> None:
        self.element = element
        self.config = config or TdosConfig()
        self.listeners: list[Listener] = []
        # (time, vetted, source id, prefix) of the window's calls; pruned at every step.
        self._calls: deque[tuple[float, bool, str, str | None]] = deque()
        self._short: deque[float] = deque()
        self._n_unvetted = 0
        self._by_prefix: dict[str, Counter[str]] = {}  # prefix -> unvetted calls per source
        self._by_source: Counter[str] = Counter()  # unvetted calls per source
        self._spread: set[str] = set()  # prefixes with at least prefix_sources sources
        self.active: BcfCondition | None = None
        self._reasons: list[str] = []
        self._quiet_since: float | None = None
        #: Totals since the start: calls seen, unvetted, treated as suspect (screened).
        self.totals: Counter[str] = Counter()
        self.history: deque[BcfCondition] = deque(maxlen=50)

    # --- input ----------------------------------------------------------------------------

    def observe(self, source_id: str, source_ip: str | None, vetted: bool, now: float) -> BcfCondition | None:
        """Count one new call; returns the condition change it caused, if any."""
        self.totals["calls"] += 1
        prefix = None
        if not vetted:
            self.totals["unvetted"] += 1
            prefix = prefix_of(source_ip) or "unknown"
            self._n_unvetted += 1
            self._by_source[source_id] += 1
            sources = self._by_prefix.setdefault(prefix, Counter())
            if source_id in sources or len(sources) < self.config.max_sources:
                sources[source_id] += 1
            if len(sources) >= self.config.prefix_sources:
                self._spread.add(prefix)
        self._calls.append((now, vetted, source_id, prefix))
        return self._judge(now)

    def call_ended(self, vetted: bool, duration: float | None, now: float) -> BcfCondition | None:
        """A call ended: ``duration`` its talk time (None: never answered). Short or silent
        calls from unvetted sources are flood calls' signature (a bot hangs up)."""
        if not vetted and (duration is None or duration < self.config.short_seconds):
            self._short.append(now)
            self.totals["unvetted_short"] += 1
        return self._judge(now)

    def tick(self, now: float) -> BcfCondition | None:
        """Judge without a new call (the end of an attack is a silence)."""
        return self._judge(now)

    def suspect(self, vetted: bool) -> bool:
        """Whether a call is to be treated as suspect: unvetted, during an attack."""
        return self.active is not None and not vetted

    def figures(self, now: float) -> dict[str, Any]:
        self._prune(now)
        return {
            "window_seconds": self.config.window, "calls": len(self._calls), "unvetted_calls": self._n_unvetted,
            "unvetted_sources": len(self._by_source), "short_calls": len(self._short),
            "sources_by_prefix": {p: len(self._by_prefix[p]) for p in sorted(self._spread)},
            "totals": dict(self.totals),
        }  # fmt: skip

    # --- internals ------------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        start = now - self.config.window
        while self._calls and self._calls[0][0] < start:
            _t, vetted, source, prefix = self._calls.popleft()
            if vetted or prefix is None:
                continue
            self._n_unvetted -= 1
            self._by_source[source] -= 1
            if self._by_source[source] <= 0:
                del self._by_source[source]
            sources = self._by_prefix.get(prefix)
            if sources is not None and source in sources:
                sources[source] -= 1
                if sources[source] <= 0:
                    del sources[source]
                if len(sources) < self.config.prefix_sources:
                    self._spread.discard(prefix)
                if not sources:
                    del self._by_prefix[prefix]
        while self._short and self._short[0] < start:
            self._short.popleft()

    def _evidence(self, now: float) -> tuple[list[str], tuple[str, ...]]:
        """The reasons for an attack now (empty: none) and its scope (the prefixes)."""
        c = self.config
        self._prune(now)
        reasons: list[str] = []
        if self._n_unvetted >= c.min_calls:
            if self._n_unvetted > c.share * len(self._calls):
                reasons.append("most calls come from sources that are not known carriers")
            if self._spread:
                reasons.append("many unknown sources in one network")
            if len(self._short) >= c.short_calls:
                reasons.append("bursts of short or silent calls")
        scope = sorted(self._spread) or sorted(self._by_prefix)
        return reasons, tuple(scope[:20])

    def _cause(self, reasons: list[str], scope: tuple[str, ...]) -> str:
        where = f" from {', '.join(scope)}" if scope else ""
        return (f"TDoS attack on {self.element}{where}: {'; '.join(reasons)}; calls from unvetted sources "
                "marked, deprioritized and sent to screening with a callback record")  # fmt: skip

    def _condition(self, active: bool, since: float, now: float, scope: tuple[str, ...]) -> BcfCondition:
        figures = self.figures(now)
        figures["sources"] = sorted(self._by_source)[:50]
        return BcfCondition(ConditionKind.TDOS, self.element, active, since, now, self._cause(self._reasons, scope),
                            scope, figures, "attack")  # fmt: skip

    def _judge(self, now: float) -> BcfCondition | None:
        c = self.config
        reasons, scope = self._evidence(now)
        if self.active is None:
            if not reasons:
                return None
            self._quiet_since = None
            self._reasons = reasons
            return self._emit(self._condition(True, now, now, scope))
        if self._n_unvetted < c.clear_calls:
            if self._quiet_since is None:
                self._quiet_since = now
            if now - self._quiet_since >= c.clear_after:
                return self._emit(self._condition(False, self.active.since, now, self.active.scope))
            return None
        self._quiet_since = None
        # A new prefix or a new kind of evidence is a material change; counts alone are not.
        wider = tuple(dict.fromkeys((*self.active.scope, *scope)))[:20]
        more = [r for r in reasons if r not in self._reasons]
        if set(wider) != set(self.active.scope) or more:
            self._reasons += more
            return self._emit(self._condition(True, self.active.since, now, wider))
        return None

    def _emit(self, cond: BcfCondition) -> BcfCondition:
        self.active = cond if cond.active else None
        return _emit(self.history, self.listeners, cond)


def _emit(history: deque[BcfCondition], listeners: list[Listener], cond: BcfCondition) -> BcfCondition:
    history.append(cond)
    for listener in list(listeners):
        try:
            listener(cond)
        except Exception:  # noqa: BLE001 -- a listener's bug must never touch a call
            log.exception("BCF condition listener %r failed", listener)
    return cond


class IdHealth:
    """The identifier allocator's health: ``failed`` at every failure, ``ok`` at every
    success; a ``call-id`` condition while it fails (and ``clear_after`` seconds more)."""

    def __init__(self, element: str, *, clear_after: float = 2.0) -> None:
        self.element = element
        self.clear_after = clear_after
        self.listeners: list[Listener] = []
        self.active: BcfCondition | None = None
        self.failures = 0
        self._last_failure = 0.0
        self.history: deque[BcfCondition] = deque(maxlen=50)

    def failed(self, what: str, error: BaseException, now: float) -> BcfCondition | None:
        self.failures += 1
        self._last_failure = now
        if self.active is not None:
            return None
        cause = (f"{what} allocation failing at {self.element} ({type(error).__name__}: {error}); "
                 "calls marked with the fallback allocator")  # fmt: skip
        return self._emit(BcfCondition(ConditionKind.CALL_ID, self.element, True, now, now, cause,
                                       (self.element,), {"failures": self.failures}))  # fmt: skip

    def ok(self, now: float) -> BcfCondition | None:
        if self.active is None or now - self._last_failure < self.clear_after:
            return None
        return self._emit(BcfCondition(ConditionKind.CALL_ID, self.element, False, self.active.since, now,
                                       self.active.cause, self.active.scope, {"failures": self.failures}))  # fmt: skip

    def _emit(self, cond: BcfCondition) -> BcfCondition:
        self.active = cond if cond.active else None
        return _emit(self.history, self.listeners, cond)
