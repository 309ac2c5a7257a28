"""Automatic rollback, sans-I/O (firebox issue 6): after a canary or full promotion the guard
watches what the monitor says (``Monitor.figures()``: the answer ratio and the latest probe
results; ``Monitor.outages()``: outages naming the change) for ``window`` seconds, and
decides to roll the change back when:

* a probe (an i3 test call, ``urn:service:test.sos``) attributable to the change's scope
  fails ``probe_failures`` times in a row: for a canary, one entering at a canary ingress or
  aimed at a canary PSAP; for a full promotion, any probe;
* the answer ratio (answered / settled calls, over at least ``min_settled`` calls) falls
  below ``baseline x (1 - max_drop)``, the baseline being the ratio before the change;
* the detector opened an outage whose ``config_change`` is this change.

When the window passes without any of these the guard says ``PASSED``. Time is an argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from firebox.change.core import CanaryScope

__all__ = ["Guard", "GuardConfig", "GuardInput", "GuardState", "GuardVerdict", "ProbeSample", "input_from_monitor"]


class GuardState(StrEnum):
    WATCHING = "watching"
    PASSED = "passed"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class ProbeSample:
    ingress: str
    psap: str
    ok: bool
    at: float
    outcome: str = ""


@dataclass(frozen=True, slots=True)
class GuardInput:
    """What the monitor says at ``at``: the statewide answer ratio over its window (None:
    no call settled), how many calls settled, the probe results, the open outages' change ids."""

    at: float
    answer_ratio: float | None = None
    settled: int = 0
    probes: Sequence[ProbeSample] = ()
    outage_changes: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class GuardConfig:
    window: float = 600.0
    probe_failures: int = 2
    max_drop: float = 0.2
    min_settled: int = 10

    def __post_init__(self) -> None:
        if self.window <= 0 or self.probe_failures < 1 or not 0 < self.max_drop < 1 or self.min_settled < 1:
            raise ValueError("guard: window > 0, probe_failures >= 1, 0 < max_drop < 1, min_settled >= 1")


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    state: GuardState
    reason: str


@dataclass(slots=True)
class Guard:
    """Watches one change from ``started`` (the promotion) on. ``scope`` None: a full
    promotion (every probe counts). ``baseline``: the answer ratio before the change."""

    change_id: str
    started: float
    scope: CanaryScope | None = None
    baseline: float | None = None
    config: GuardConfig = field(default_factory=GuardConfig)
    #: probe ingress name -> the BCF source id its test calls arrive with (the probe host's
    #: network), so that a canary naming a source id covers the probes entering there
    ingress_sources: Mapping[str, str] = field(default_factory=dict)
    state: GuardState = GuardState.WATCHING
    reason: str = ""
    _runs: dict[tuple[str, str], list[bool]] = field(default_factory=dict)
    _seen: set[tuple[str, str, float]] = field(default_factory=set)

    def in_scope(self, probe: ProbeSample) -> bool:
        if self.scope is None:
            return True
        source = self.ingress_sources.get(probe.ingress, probe.ingress)
        return source in self.scope.sources or probe.ingress in self.scope.sources or probe.psap in self.scope.psaps

    def observe(self, inp: GuardInput) -> GuardVerdict:
        """Feed one look at the monitor; the verdict (final once not WATCHING)."""
        if self.state is not GuardState.WATCHING:
            return GuardVerdict(self.state, self.reason)
        if self.change_id in inp.outage_changes:
            return self._decide(GuardState.ROLLBACK, f"the monitor opened an outage caused by change {self.change_id}")
        for probe in sorted(inp.probes, key=lambda p: p.at):
            key = (probe.ingress, probe.psap, probe.at)
            if probe.at < self.started or key in self._seen or not self.in_scope(probe):
                continue
            self._seen.add(key)
            run = self._runs.setdefault((probe.ingress, probe.psap), [])
            run.append(probe.ok)
            tail = run[-self.config.probe_failures :]
            if len(tail) == self.config.probe_failures and not any(tail):
                return self._decide(GuardState.ROLLBACK,
                                    f"{self.config.probe_failures} test calls in a row from {probe.ingress} to "
                                    f"{probe.psap} failed ({probe.outcome or 'not answered'}) after the change")  # fmt: skip
        if self.baseline is not None and inp.answer_ratio is not None and inp.settled >= self.config.min_settled:
            floor = self.baseline * (1 - self.config.max_drop)
            if inp.answer_ratio < floor:
                return self._decide(GuardState.ROLLBACK,
                                    f"answer ratio {inp.answer_ratio:.2f} over {inp.settled} calls fell below "
                                    f"{floor:.2f} ({self.baseline:.2f} before the change, less {self.config.max_drop:.0%})")  # fmt: skip
        if inp.at >= self.started + self.config.window:
            return self._decide(GuardState.PASSED, f"{self.config.window:.0f} s watched: probes and answer ratio held")
        return GuardVerdict(GuardState.WATCHING, "watching")

    def _decide(self, state: GuardState, reason: str) -> GuardVerdict:
        self.state, self.reason = state, reason
        return GuardVerdict(state, reason)


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def input_from_monitor(figures: Mapping[str, Any], outages: Mapping[str, Any] | None, at: float) -> GuardInput:
    """A ``GuardInput`` from ``Monitor.figures()`` and ``Monitor.outages()`` (their JSON
    shapes): the statewide answer ratio, the probes (``placed`` time), the open outages'
    ``config_change``."""
    statewide = figures.get("scopes", {}).get("statewide", {}).get("all", {})
    settled = sum(int(statewide.get(k, 0) or 0) for k in ("answered", "rerouted", "failed"))
    probes = []
    for p in figures.get("probes", []):
        placed = _epoch(p.get("placed"))
        if placed is None:
            continue
        probes.append(ProbeSample(str(p.get("ingress")), str(p.get("psap")), p.get("outcome") == "answered", placed,
                                  str(p.get("outcome", ""))))  # fmt: skip
    changes = [o["config_change"] for o in (outages or {}).get("current", []) if o.get("config_change")]
    return GuardInput(at, statewide.get("answer_ratio"), settled, probes, changes)
