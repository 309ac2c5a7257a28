"""The outage detector, sans-I/O: the watch's figures, probe results, element / queue states
and configuration changes in; outage states out (scope element / PSAP / region / statewide;
state suspected / confirmed / cleared), each with its start, confirmation, end, the cause
when one can be inferred and the calls affected.

Each scope key gets a ``Signal`` at every ``evaluate(now)``, from three kinds of evidence:

* probes (``monitor.probes``): the run of latest results of the key. One failure is
  ``FAILING``; ``confirm_failures`` in a row are ``DOWN``; ``clear_successes`` successes in a
  row are ``HEALTHY``; fewer are ``RECOVERING``. A probe to PSAP P answered by Q is a failure
  of P (its calls go elsewhere).
* live traffic (``monitor.watch``): with at least ``min_calls`` settled in the window, an
  answer ratio under ``confirm_ratio`` (or no call answered where it was meant to be) is
  ``DOWN``, under ``suspect_ratio`` ``FAILING``, at or over ``clear_ratio`` ``HEALTHY``; in
  between ``RECOVERING``. Statewide, a volume under ``volume_drop`` of the rate expected
  for the hour is ``FAILING`` (a drop alone is only a suspicion: it can be a quiet hour).
* states: a queue that cannot take calls (Full, Inactive, Disabled, ResourceExhausted) is
  ``FAILING`` for its PSAP; an element reporting an unusable state is ``DOWN``.

The worst evidence wins; ``HEALTHY`` needs every kind that has data to say so. A region
fails when every PSAP of it with evidence fails (two at least); the state when
``statewide_fraction`` of the PSAPs with evidence fail (``statewide_min_psaps`` at least) or
every ingress does, and it is ``DOWN`` at once when as many independent test calls failed
(``confirm_failures`` x ``statewide_min_psaps``): a statewide outage is declared within one
probe period. A new outage is not opened inside a wider one already confirmed.

``TRANSITIONS`` maps (state, signal) to the next state. Hysteresis: a confirmed outage only
clears on ``HEALTHY`` (several successes in a row and live traffic, if any, above the
higher ``clear_ratio``); a suspicion never confirmed ends after ``suspect_expiry`` seconds
without failing evidence. An outage that began within ``change_window`` seconds after a
configuration change names the change in its cause.

Every update of an outage (new, confirmed, cause or calls affected changed, cleared) is
returned by ``evaluate`` as an ``OutageUpdate``, for notification.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any, Final

from firebox.monitor.probes import ProbeOutcome, ProbeResult
from firebox.monitor.watch import ConditionNote, Counts, Figures, Scope, StateNote

__all__ = [
    "TRANSITIONS",
    "Detector",
    "DetectorConfig",
    "Outage",
    "OutageScope",
    "OutageState",
    "OutageUpdate",
    "Signal",
    "UpdateKind",
]


class OutageScope(StrEnum):
    ELEMENT = "element"
    PSAP = "psap"
    REGION = "region"
    STATEWIDE = "statewide"


class OutageState(StrEnum):
    SUSPECTED = "suspected"
    CONFIRMED = "confirmed"
    CLEARED = "cleared"


class Signal(IntEnum):
    """What the evidence says of one key now; higher is worse."""

    NONE = 0  # no evidence at all
    HEALTHY = 1
    RECOVERING = 2  # some success, not yet enough to clear
    FAILING = 3  # enough to suspect
    DOWN = 4  # enough to confirm


class UpdateKind(StrEnum):
    NEW = "new"
    CONFIRMED = "confirmed"
    UPDATED = "updated"
    CLEARED = "cleared"


#: (current state, signal) -> next state; None is "no outage". Missing pairs: no change.
TRANSITIONS: Final[Mapping[tuple[OutageState | None, Signal], OutageState | None]] = {
    (None, Signal.FAILING): OutageState.SUSPECTED,
    (None, Signal.DOWN): OutageState.CONFIRMED,
    (OutageState.SUSPECTED, Signal.FAILING): OutageState.SUSPECTED,
    (OutageState.SUSPECTED, Signal.DOWN): OutageState.CONFIRMED,
    (OutageState.SUSPECTED, Signal.RECOVERING): OutageState.SUSPECTED,
    (OutageState.SUSPECTED, Signal.HEALTHY): OutageState.CLEARED,
    # Hysteresis: only HEALTHY clears a confirmed outage; RECOVERING or no news keeps it.
    (OutageState.CONFIRMED, Signal.FAILING): OutageState.CONFIRMED,
    (OutageState.CONFIRMED, Signal.DOWN): OutageState.CONFIRMED,
    (OutageState.CONFIRMED, Signal.RECOVERING): OutageState.CONFIRMED,
    (OutageState.CONFIRMED, Signal.HEALTHY): OutageState.CLEARED,
}


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    confirm_failures: int = 2
    clear_successes: int = 2
    min_calls: int = 5
    suspect_ratio: float = 0.8
    confirm_ratio: float = 0.5
    clear_ratio: float = 0.9
    volume_drop: float = 0.25
    volume_min_expected: float = 20.0
    statewide_fraction: float = 0.75
    statewide_min_psaps: int = 2
    change_window: float = 1800.0
    suspect_expiry: float = 120.0
    #: Probe results older than this are no longer evidence.
    probe_max_age: float = 300.0
    #: An open outage is re-notified when its cause or scope changes, when its calls
    #: affected grew by this many, or after this many seconds (47 CFR 4.9: updates as
    #: information becomes available)...
    update_calls: int = 10
    update_seconds: float = 1800.0
    #: ...and at most once per this many seconds (a change within it waits for its end;
    #: confirmation and clearing are never held back).
    update_interval: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.confirm_ratio <= self.suspect_ratio <= self.clear_ratio <= 1:
            raise ValueError("ratios: 0 <= confirm_ratio <= suspect_ratio <= clear_ratio <= 1 is required")
        if self.confirm_failures < 1 or self.clear_successes < 1 or self.statewide_min_psaps < 1:
            raise ValueError("confirm_failures, clear_successes and statewide_min_psaps must be at least 1")


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class Outage:
    id: str
    scope: OutageScope
    key: str
    state: OutageState
    started: float
    cause: str
    confirmed_at: float | None = None
    ended: float | None = None
    calls_affected: int = 0
    probes_failed: int = 0
    config_change: str | None = None
    within: str | None = None  # id of a wider outage open at the same time
    updated: float = 0.0
    baseline: int = 0  # unanswered calls of the scope before the start
    history: list[dict[str, Any]] = field(default_factory=list)
    #: "outage" (calls fail) or "attack" (a TDoS the BCF is screening: calls still flow).
    kind: str = "outage"
    #: The counts behind the cause (kept out of its text: a count ticking is no news).
    figures: dict[str, Any] = field(default_factory=dict)
    #: A material change not yet notified (held by ``update_interval``).
    pending: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "scope": self.scope.value, "key": self.key, "state": self.state.value,
            "start": _iso(self.started), "confirmed_at": _iso(self.confirmed_at), "end": _iso(self.ended),
            "cause": self.cause, "calls_affected": self.calls_affected, "probes_failed": self.probes_failed,
            "config_change": self.config_change, "within": self.within, "updated": _iso(self.updated),
            "history": list(self.history), "kind": self.kind, "figures": dict(self.figures),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class OutageUpdate:
    kind: UpdateKind
    outage: dict[str, Any]  # a snapshot (Outage.as_dict)


@dataclass(slots=True)
class _Evidence:
    signal: Signal = Signal.NONE
    causes: list[str] = field(default_factory=list)
    probes_failed: int = 0
    kind: str = "outage"
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, signal: Signal, cause: str | None = None) -> None:
        # The worst evidence wins: HEALTHY only when every kind with data says so.
        self.signal = max(self.signal, signal)
        if cause and signal >= Signal.FAILING and cause not in self.causes:
            self.causes.append(cause)


_SCOPE_OF = {OutageScope.PSAP: Scope.PSAP, OutageScope.REGION: Scope.REGION, OutageScope.STATEWIDE: Scope.STATEWIDE,
             OutageScope.ELEMENT: Scope.ELEMENT}  # fmt: skip
_WIDER = {OutageScope.PSAP: (OutageScope.REGION, OutageScope.STATEWIDE), OutageScope.REGION: (OutageScope.STATEWIDE,),
          OutageScope.ELEMENT: (OutageScope.STATEWIDE,), OutageScope.STATEWIDE: ()}  # fmt: skip


class Detector:
    """``psaps``: PSAP id -> queue URI; ``regions``: PSAP id -> region; ``ingresses``: the
    probes' ingress names (for "every ingress fails")."""

    def __init__(self, psaps: Mapping[str, str], regions: Mapping[str, str] | None = None, *,
                 ingresses: Iterable[str] = (), config: DetectorConfig | None = None) -> None:  # fmt: skip
        self.psaps = dict(psaps)
        self.regions = dict(regions or {})
        self.ingresses = list(ingresses)
        self.config = config or DetectorConfig()
        self.figures: Figures | None = None
        self.states: dict[str, StateNote] = {}
        self.changes: list[tuple[str, float]] = []
        #: Element conditions (a BCF's TDoS, its identifier allocator) by key.
        self.conditions: dict[str, ConditionNote] = {}
        self._probes: dict[tuple[str, str], deque[ProbeResult]] = {}  # by (ingress, PSAP id)
        self._by_ingress: dict[str, deque[ProbeResult]] = {}
        self.open: dict[tuple[OutageScope, str], Outage] = {}
        self.recent: deque[Outage] = deque(maxlen=200)
        self._serial = 0

    # --- input ----------------------------------------------------------------------------

    def observe_figures(self, figures: Figures) -> None:
        self.figures = figures

    def observe_probe(self, result: ProbeResult) -> None:
        key = (result.probe.ingress.name, result.probe.target.psap_id)
        self._probes.setdefault(key, deque(maxlen=20)).append(result)
        self._by_ingress.setdefault(result.probe.ingress.name, deque(maxlen=50)).append(result)
        if result.probe.ingress.name not in self.ingresses:
            self.ingresses.append(result.probe.ingress.name)

    def observe_state(self, note: StateNote) -> None:
        self.states[f"{note.kind}:{note.ident}"] = note

    def observe_condition(self, note: ConditionNote) -> None:
        """An element condition began, changed or ended (``firebox.bcf.conditions``)."""
        self.conditions[note.key] = note

    def config_change(self, change_id: str, at: float) -> None:
        """A configuration change (a rule set, a routing policy...) took effect at ``at``."""
        self.changes.append((str(change_id), at))
        del self.changes[:-100]

    # --- output ---------------------------------------------------------------------------

    def outages(self) -> list[Outage]:
        return list(self.open.values())

    def evaluate(self, now: float) -> list[OutageUpdate]:
        updates: list[OutageUpdate] = []
        psap_ev = {p: self._psap_evidence(p, now) for p in self.psaps}
        statewide = self._statewide_evidence(psap_ev, now)
        regions = self._region_evidence(psap_ev)
        elements = self._element_evidence(psap_ev, now)
        # Widest first, so that a narrower outage is not opened inside a wider one.
        updates += self._step(OutageScope.STATEWIDE, "all", statewide, now)
        for region, ev in sorted(regions.items()):
            updates += self._step(OutageScope.REGION, region, ev, now)
        for element, ev in sorted(elements.items()):
            updates += self._step(OutageScope.ELEMENT, element, ev, now)
        for psap, ev in sorted(psap_ev.items()):
            updates += self._step(OutageScope.PSAP, psap, ev, now)
        return updates

    # --- evidence -------------------------------------------------------------------------

    def _probe_run(self, results: Iterable[ProbeResult], now: float) -> tuple[int, int, list[ProbeResult]]:
        """(trailing failures, trailing successes, the failed results of the run)."""
        fresh = [r for r in results if now - r.at <= self.config.probe_max_age]
        fails: list[ProbeResult] = []
        successes = 0
        for r in reversed(fresh):
            if r.ok:
                if fails:
                    break
                successes += 1
            else:
                if successes:
                    break
                fails.append(r)
        return len(fails), successes, fails

    def _probe_signal(self, fails: int, successes: int) -> Signal:
        c = self.config
        if fails >= c.confirm_failures:
            return Signal.DOWN
        if fails:
            return Signal.FAILING
        if successes >= c.clear_successes:
            return Signal.HEALTHY
        return Signal.RECOVERING if successes else Signal.NONE

    def _passive(self, ev: _Evidence, counts: Counts, what: str) -> None:
        c = self.config
        if counts.settled < c.min_calls:
            return
        # The cause names the threshold crossed, not the ratio or the counts: a ratio moving
        # by a call is no news to notify (the counts are the outage's figures).
        ratio = counts.answer_ratio or 0.0
        if counts.answered == 0 and counts.routed:
            ev.add(Signal.DOWN, f"no calls reaching {what} (none answered there)")
        elif ratio < c.confirm_ratio:
            ev.add(Signal.DOWN, f"answer ratio under {c.confirm_ratio:.0%} at {what}")
        elif ratio < c.suspect_ratio:
            ev.add(Signal.FAILING, f"answer ratio under {c.suspect_ratio:.0%} at {what}")
        elif ratio >= c.clear_ratio:
            ev.add(Signal.HEALTHY)
        else:
            ev.add(Signal.RECOVERING)

    def _psap_evidence(self, psap: str, now: float) -> _Evidence:
        ev = _Evidence()
        # A PSAP is as good as its best path: failing through one ingress while another
        # reaches it is that ingress's fault (see _element_evidence), not the PSAP's.
        paths = [self._probe_run(results, now) for (_i, p), results in self._probes.items() if p == psap]
        paths = [(self._probe_signal(f, s), f, failed) for f, s, failed in paths]
        paths = [p for p in paths if p[0] is not Signal.NONE]
        if paths:
            best = min(paths, key=lambda p: p[0])
            failed = [r for p in paths for r in p[2]]
            ev.probes_failed = best[1]
            ev.add(best[0], _probe_cause(failed, f"PSAP {psap}") if best[0] >= Signal.FAILING else None)
        if self.figures is not None:
            self._passive(ev, self.figures.get(Scope.PSAP, psap), f"PSAP {psap}")
        note = self.states.get(f"queue:{self.psaps[psap]}")
        if note is not None:
            ev.add(Signal.HEALTHY if note.usable else Signal.FAILING,
                   None if note.usable else f"queue {note.ident} {note.value}")  # fmt: skip
        return ev

    def _region_evidence(self, psap_ev: Mapping[str, _Evidence]) -> dict[str, _Evidence]:
        members: dict[str, list[str]] = {}
        for psap, region in self.regions.items():
            if psap in psap_ev:
                members.setdefault(region, []).append(psap)
        out = {}
        for region, psaps in members.items():
            if len(psaps) < 2:
                continue  # a region of one PSAP is that PSAP: judged as such
            ev = _Evidence()
            known = [psap_ev[p] for p in psaps if psap_ev[p].signal is not Signal.NONE]
            if len(known) >= 2 and all(e.signal >= Signal.FAILING for e in known):
                ev.signal = min(e.signal for e in known)
                ev.causes = [f"every PSAP of region {region} failing ({', '.join(sorted(psaps))})"]
                ev.probes_failed = sum(e.probes_failed for e in known)
            elif known:
                ev.signal = Signal.HEALTHY if any(e.signal is Signal.HEALTHY for e in known) else Signal.RECOVERING
            if self.figures is not None:
                self._passive(ev, self.figures.get(Scope.REGION, region), f"region {region}")
            out[region] = ev
        return out

    def _statewide_evidence(self, psap_ev: Mapping[str, _Evidence], now: float) -> _Evidence:
        c = self.config
        ev = _Evidence()
        known = {p: e for p, e in psap_ev.items() if e.signal is not Signal.NONE}
        failing = {p: e for p, e in known.items() if e.signal >= Signal.FAILING}
        # At least statewide_min_psaps of them (all, when the state has fewer): one PSAP with
        # news, failing, is that PSAP's outage, not the state's.
        need = max(min(c.statewide_min_psaps, len(self.psaps)), math.ceil(c.statewide_fraction * len(known)))
        all_failed: list[ProbeResult] = []
        for results in self._probes.values():
            all_failed += self._probe_run(results, now)[2]
        if known and len(failing) >= need:
            strong = sum(e.probes_failed for e in failing.values()) >= c.confirm_failures * c.statewide_min_psaps
            ev.signal = Signal.DOWN if strong or all(e.signal is Signal.DOWN for e in failing.values()) else Signal.FAILING
            ev.probes_failed = len(all_failed)
            base = _probe_cause(all_failed, "every PSAP", statewide=True) if all_failed else None
            ev.causes = [base or f"PSAPs failing across the state ({c.statewide_fraction:.0%} or more)"]
        elif known:
            healthy = sum(1 for e in known.values() if e.signal is Signal.HEALTHY)
            ev.signal = Signal.HEALTHY if healthy >= math.ceil(len(known) / 2) else Signal.RECOVERING
        ingress_runs = {i: self._probe_run(self._by_ingress.get(i, ()), now) for i in self.ingresses}
        if ingress_runs and all(run[0] >= c.confirm_failures for run in ingress_runs.values()):
            failed = [r for run in ingress_runs.values() for r in run[2]]
            ev.add(Signal.DOWN, _probe_cause(failed, "every ingress", statewide=True))
            ev.probes_failed = max(ev.probes_failed, len(failed))
        if self.figures is not None:
            self._passive(ev, self.figures.get(Scope.STATEWIDE), "statewide")
            vol = self.figures.volume
            if vol.expected >= c.volume_min_expected and vol.ratio is not None:
                if vol.ratio < c.volume_drop:
                    ev.add(Signal.FAILING, f"call volume under {c.volume_drop:.0%} of the rate expected for hour "
                           f"{vol.hour}")  # fmt: skip
        return ev

    def _element_evidence(self, psap_ev: Mapping[str, _Evidence], now: float) -> dict[str, _Evidence]:
        out: dict[str, _Evidence] = {}
        # The most specific explanation wins: a test call that failed through an ingress
        # because its PSAP is down (failing through every path) is the PSAP's failure, not
        # the ingress's; only the rest is evidence against the ingress.
        # And a failure through one ingress is that ingress's only once another ingress
        # reached the same PSAP after it: until then it may be the PSAP's own (going down).
        explained = {p for p, e in psap_ev.items() if e.signal >= Signal.FAILING}
        last_ok: dict[tuple[str, str], float] = {}
        for (ingress, psap), results in self._probes.items():
            for r in results:
                if r.ok:
                    last_ok[(ingress, psap)] = max(last_ok.get((ingress, psap), r.at), r.at)

        def attributable(r: ProbeResult) -> bool:
            psap = r.probe.target.psap_id
            if psap in explained:
                return False
            if r.ok:
                return True
            me = r.probe.ingress.name
            return any(at >= r.at for (i, p), at in last_ok.items() if p == psap and i != me)

        runs = {i: self._probe_run([r for r in self._by_ingress.get(i, ()) if attributable(r)], now) for i in self.ingresses}
        # One ingress failing while another carries test calls: that ingress's BCF.
        if len(runs) >= 2 and any(run[1] for run in runs.values()):
            for ingress, (fails, successes, failed) in runs.items():
                ev = out.setdefault(f"ingress {ingress}", _Evidence())
                ev.probes_failed = fails
                ev.add(self._probe_signal(fails, successes),
                       _probe_cause(failed, f"ingress {ingress}", statewide=True) if failed else None)  # fmt: skip
        for key, note in self.states.items():
            if note.kind == "element":
                ev = out.setdefault(note.ident, _Evidence())
                ev.add(Signal.HEALTHY if note.usable else Signal.DOWN,
                       None if note.usable else f"element {note.ident} reports {note.value}")  # fmt: skip
        for key, cond in self.conditions.items():
            # The element itself says what is wrong: confirmed at once, cleared when it says so.
            ev = out.setdefault(key, _Evidence())
            ev.add(Signal.DOWN if cond.active else Signal.HEALTHY, cond.cause if cond.active else None)
            ev.kind = "attack" if cond.category == "attack" else ev.kind
            ev.figures = {**cond.figures, "since": _iso(cond.since), "scope": list(cond.scope)}
        return out

    # --- the table ------------------------------------------------------------------------

    def _step(self, scope: OutageScope, key: str, ev: _Evidence, now: float) -> list[OutageUpdate]:
        c = self.config
        outage = self.open.get((scope, key))
        current = outage.state if outage is not None else None
        nxt = TRANSITIONS.get((current, ev.signal), current)
        if outage is None:
            if nxt is None:
                return []
            wider = self._wider_open(scope)
            if wider is not None:
                return []  # inside a wider outage: that one speaks for it
            return [self._open(scope, key, nxt, ev, now)]
        if nxt is OutageState.SUSPECTED and ev.signal < Signal.FAILING and now - outage.started >= c.suspect_expiry:
            nxt = OutageState.CLEARED  # never confirmed, and no failing evidence any more
        updates: list[OutageUpdate] = []
        affected = self._affected(scope, key, outage)
        changed_cause = ev.causes and ev.signal >= Signal.FAILING and self._cause(ev, outage.started) != outage.cause
        if ev.figures:
            outage.figures = dict(ev.figures)
        if nxt is OutageState.CLEARED:
            outage.state, outage.ended, outage.updated = OutageState.CLEARED, now, now
            outage.calls_affected = affected
            self._note(outage, now, "cleared")
            del self.open[(scope, key)]
            self.recent.append(outage)
            return [OutageUpdate(UpdateKind.CLEARED, outage.as_dict())]
        if changed_cause or affected - outage.calls_affected >= c.update_calls or now - outage.updated >= c.update_seconds:
            outage.pending = True
        kind: UpdateKind | None = None
        if nxt is OutageState.CONFIRMED and current is OutageState.SUSPECTED:
            outage.state, outage.confirmed_at = OutageState.CONFIRMED, now
            kind = UpdateKind.CONFIRMED
        elif outage.pending and now - outage.updated >= c.update_interval:
            kind = UpdateKind.UPDATED  # material, and the outage's last notice is old enough
        if changed_cause:
            outage.cause = self._cause(ev, outage.started)
        outage.probes_failed = max(outage.probes_failed, ev.probes_failed)
        if kind is not None:
            outage.pending = False
            outage.calls_affected = affected
            outage.updated = now
            self._note(outage, now, kind.value)
            updates.append(OutageUpdate(kind, outage.as_dict()))
        return updates

    def _wider_open(self, scope: OutageScope) -> Outage | None:
        """A confirmed wider outage (a mere suspicion, say a volume drop, must not hide a
        PSAP that is plainly failing)."""
        for wider in _WIDER[scope]:
            for (s, _k), outage in self.open.items():
                if s is wider and outage.state is OutageState.CONFIRMED:
                    return outage
        return None

    def _open(self, scope: OutageScope, key: str, state: OutageState, ev: _Evidence, now: float) -> OutageUpdate:
        self._serial += 1
        change = self._change_before(now)
        outage = Outage(
            id=f"{scope.value}-{key.replace(' ', '-')}-{self._serial}", scope=scope, key=key, state=state, started=now,
            cause=self._cause(ev, now), confirmed_at=now if state is OutageState.CONFIRMED else None,
            probes_failed=ev.probes_failed, config_change=change, updated=now,
            baseline=self._unanswered(scope, key), kind=ev.kind, figures=dict(ev.figures),
        )  # fmt: skip
        for (s, _k), other in self.open.items():
            if scope in _WIDER.get(s, ()):
                other.within = outage.id
        self.open[(scope, key)] = outage
        self._note(outage, now, "new")
        return OutageUpdate(UpdateKind.NEW, outage.as_dict())

    def _note(self, outage: Outage, now: float, what: str) -> None:
        outage.history.append({"at": _iso(now), "event": what, "state": outage.state.value, "cause": outage.cause,
                               "calls_affected": outage.calls_affected})  # fmt: skip
        del outage.history[:-50]

    def _change_before(self, start: float) -> str | None:
        for change, at in reversed(self.changes):
            if at <= start and start - at <= self.config.change_window:
                return change
        return None

    def _cause(self, ev: _Evidence, start: float) -> str:
        # Sorted: the same causes found in another order are no change.
        text = "; ".join(sorted(ev.causes)[:3]) or "unknown"
        change = self._change_before(start)
        if change is not None:
            text += f"; since configuration change {change}"
        return text

    def _unanswered(self, scope: OutageScope, key: str) -> int:
        if self.figures is None:
            return 0
        return self.figures.unanswered.get((_SCOPE_OF[scope].value, key), 0)

    def _affected(self, scope: OutageScope, key: str, outage: Outage) -> int:
        return max(0, self._unanswered(scope, key) - outage.baseline)


def _probe_cause(failed: list[ProbeResult], what: str, *, statewide: bool = False) -> str:
    """The most common failure of a run of probe results, in words."""
    kinds = Counter((r.outcome, r.status, r.reason, r.answered_by) for r in failed)
    (outcome, status, reason, answered_by), n = kinds.most_common(1)[0]
    # No counts and nothing that varies call by call (which alternate answered): the cause
    # changes when what failed changes; the counts are the outage's figures.
    del n, answered_by
    ingresses = sorted({r.probe.ingress.name for r in failed})
    psaps = sorted({r.probe.target.psap_id for r in failed})
    if outcome is ProbeOutcome.REJECTED:
        source = ""
        if statewide or len(psaps) >= 2:
            # One final answer for test calls meant for several PSAPs comes from before the
            # PSAPs: the ingress (its BCF, or a firewall in front of it) or the ESRP.
            source = f" at ingress {', '.join(ingresses)}, before any PSAP"
        return f"failing probes with SIP {status} {reason or ''}".rstrip() + f"{source} (test calls to {what})"
    if outcome is ProbeOutcome.WRONG_PSAP:
        return f"test calls for {what} answered by another PSAP instead"
    if outcome is ProbeOutcome.NO_ANSWER:
        return f"test calls to {what} get no answer (through {', '.join(ingresses)})"
    return f"test calls to {what} could not be placed"
