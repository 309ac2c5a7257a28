"""Putting a change's stage into the running elements (asyncio; the decisions are
``firebox.change.core``'s and ``guard``'s).

* shadow: nothing is installed; the change is assessed (the invariant over the corpus and
  recent logged calls, the shadow report) and stored.
* canary: the element gets a wrapper holding the old and the new rules that picks per call:
  ``CanaryBcfRules`` (the ``Bcf`` reads ``rules.match(source_id, ...)`` once per request:
  the new rules for the canary sources) and ``CanaryRouting`` (the ``Router`` asks
  ``rules.for_call(call, ecrf_uri, chains)`` once per call: the new rules for calls from a
  canary source or whose candidate PSAP is in the canary region). Used without the per-call
  choice, each wrapper behaves as the *old* rules: a canary never reaches every call by
  accident. A BCF cannot know a call's PSAP, so a BCF canary needs sources.
* full: the new rules installed as a whole. rollback: the rules before the change again.
* adopted (``adopt``, through ``gate(kind)`` for a ``firebox.policy.watch.PolicyWatch``): a
  version published in the Policy Store becomes a change too, so rule changes have one path.
  Its owner published it (NENA-STA-010.3 section 4.9), so it is not held for a person to
  stage: it is assessed like any submission (refused when it breaks the 911 invariant,
  which is how a Massachusetts-like rule arriving through the Policy Store is stopped),
  then installed in full under a guard (automatic rollback). While another change of the
  same policy is in canary it is deferred, not installed over it; an earlier full change
  still under its guard is superseded (its guard stops: its rollback would undo the new
  version).

Each stage tells the monitor (``config_change``: an outage right after names the change) and
is logged as an i3 ``PolicyChangeLogEvent`` (NENA-STA-010.3 section 4.12.3) through a
``LogSender`` when given. A guard (``guard.Guard``) watches each canary and full promotion;
``check_guards`` (or the task ``start`` runs) rolls back on its verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from firebox import jws as jwslib
from firebox.bcf.marking import CallKind
from firebox.bcf.protection import BcfRules, Rule
from firebox.change.core import (
    CanaryScope,
    Change,
    ChangeError,
    ChangeKind,
    Op,
    RecentCall,
    Stage,
    assess,
    diff,
    load,
    next_stage,
    recent_calls_from_events,
    sign_change,
    with_assessment,
)
from firebox.change.guard import Guard, GuardConfig, GuardState, input_from_monitor
from firebox.change.store import ChangeStore
from firebox.esrp.policy import CallContext, Chains, RuleSet
from firebox.logging.events import LogEvent
from firebox.policy.watch import Adoption, AdoptOutcome

__all__ = ["CanaryBcfRules", "CanaryRouting", "ChangeManager", "events_from_log_store", "policy_change_event"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CanaryBcfRules(BcfRules):
    """BCF rules in canary: ``rules``/``version`` are the old set's (what anything but
    ``match`` sees); ``match`` uses ``candidate`` for requests from ``sources``."""

    candidate: BcfRules = field(default_factory=BcfRules)
    sources: frozenset[str] = frozenset()

    def match(self, source_id: str, source_ip: str | None, method: str, kind: CallKind) -> Rule | None:
        chosen: BcfRules = self.candidate if source_id in self.sources else BcfRules(self.rules, self.version)
        return chosen.match(source_id, source_ip, method, kind)

    @property
    def old(self) -> BcfRules:
        return BcfRules(self.rules, self.version)


@dataclass(frozen=True, slots=True)
class CanaryRouting(RuleSet):
    """Routing rules in canary: iterating it gives the old rules; ``for_call`` gives the
    candidate for calls from ``sources`` or whose candidate PSAP (the ECRF's answer, else the
    default route, as ``decide`` picks it) is in ``psaps``."""

    candidate: RuleSet = field(default_factory=RuleSet)
    sources: frozenset[str] = frozenset()
    psaps: frozenset[str] = frozenset()

    def for_call(self, call: CallContext, ecrf_uri: str | None, chains: Chains) -> RuleSet:
        if call.source is not None and call.source in self.sources:
            return self.candidate
        psap = chains.psap_for_uri(ecrf_uri) if ecrf_uri else None
        psap = psap or chains.default
        if psap is not None and psap.psap_id in self.psaps:
            return self.candidate
        return self.old

    @property
    def old(self) -> RuleSet:
        return RuleSet(self.rules)


def _b64_payload(stored: Any) -> dict[str, Any] | None:
    try:
        obj = stored.jws_object()
        value = json.loads(jwslib.b64url_decode(obj["payload"]))
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def events_from_log_store(store: Any, since: datetime, *, limit: int = 5000) -> list[dict[str, Any]]:
    """Call signaling and route events stored since ``since`` (a ``firebox.logging.store``
    LogStore), as JSON objects, at most ``limit`` of each type."""
    from firebox.logging.store import Filter, to_micros

    out: list[dict[str, Any]] = []
    for kind in ("CallSignalingMessageLogEvent", "RouteLogEvent"):
        offset = 0
        while offset < limit:
            page = store.query(Filter(start_us=to_micros(since), log_event_type=kind), offset, min(500, limit - offset))
            out += [p for e in page.items if (p := _b64_payload(e)) is not None]
            offset += len(page.items)
            if not page.items or offset >= page.total:
                break
    return out


class ChangeManager:
    """Runs changes for one node. ``sources``: the BCF's CIDR -> source id (the known
    carriers); ``bcf`` / ``router``: the running elements (either may be None); ``targets``:
    the policy id each kind's rules are for; ``recent``: where recent calls come from (a
    function giving ``RecentCall``s), else ``log_store`` (the Logging Service's store, the
    last ``recent_window``), else none; ``key``: the node's Ed25519 key signing each change
    (None: ``alg: none``, a lab)."""

    def __init__(
        self,
        store: ChangeStore,
        *,
        sources: Mapping[str, str],
        bcf: Any = None,
        router: Any = None,
        monitor: Any = None,
        log_sender: Any = None,
        log_store: Any = None,
        recent: Callable[[], Sequence[RecentCall]] | None = None,
        recent_window: timedelta = timedelta(hours=1),
        targets: Mapping[ChangeKind, str] | None = None,
        key: jwslib.PrivateKey | None = None,
        kid: str | None = None,
        element_id: str = "change.firebox.invalid",
        agency_id: str = "firebox.invalid",
        guard_config: GuardConfig | None = None,
        ingress_sources: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.sources = dict(sources)
        self.bcf = bcf
        self.router = router
        self.monitor = monitor
        self.log_sender = log_sender
        self.log_store = log_store
        self.recent = recent
        self.recent_window = recent_window
        self.targets = {ChangeKind.BCF: "bcf", ChangeKind.ROUTING: "routing", **(targets or {})}
        self.key = key
        self.kid = kid
        self.element_id = element_id
        self.agency_id = agency_id
        self.guard_config = guard_config or GuardConfig()
        self.ingress_sources = dict(ingress_sources or {})
        self.clock = clock
        self.guards: dict[str, Guard] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # --- what runs now ----------------------------------------------------------------------

    def element(self, kind: ChangeKind) -> Any:
        element = self.bcf if kind is ChangeKind.BCF else self.router
        if element is None:
            raise ChangeError([("kind", f"this node runs no {'BCF' if kind is ChangeKind.BCF else 'ESRP router'}")], 409)
        return element

    def running(self, kind: ChangeKind) -> BcfRules | RuleSet:
        """The rules in force for every call (in a canary: the old ones)."""
        rules = self.element(kind).rules
        return rules.old if isinstance(rules, CanaryBcfRules | CanaryRouting) else rules

    def _chains(self, kind: ChangeKind) -> Chains | None:
        return self.router.chains if kind is ChangeKind.ROUTING and self.router is not None else None

    def recent_calls(self) -> list[RecentCall]:
        if self.recent is not None:
            return list(self.recent())
        if self.log_store is not None:
            since = datetime.fromtimestamp(self.clock(), UTC) - self.recent_window
            return recent_calls_from_events(events_from_log_store(self.log_store, since), self.sources)
        return []

    # --- operations -------------------------------------------------------------------------

    async def submit(self, kind: ChangeKind, rules: Any, *, author: str, target: str | None = None) -> Change:
        """Check, assess, sign and store a new change (in shadow, or refused with the calls
        it would hit). ``ChangeError`` (400) for rules that do not load."""
        async with self._lock:
            chains = self._chains(kind)
            current = self.running(kind)
            target = target or self.targets[kind]
            candidate = load(kind, rules, chains=chains)
            version = self.store.next_version(kind, target)
            if isinstance(candidate, BcfRules):
                candidate = BcfRules(candidate.rules, version)
            now = self.clock()
            recent = self.recent_calls()
            assessment = await asyncio.to_thread(assess, kind, current, candidate, sources=self.sources,
                                                 recent=recent, chains=chains)  # fmt: skip
            change = Change(f"chg-{uuid.uuid4().hex[:12]}", version, kind, target, author, current.to_dicts(),
                            candidate.to_dicts(), now)  # fmt: skip
            sign_change(change, self.key, kid=self.kid)
            change = with_assessment(change, assessment, now)
            self.store.save(change, "refused" if change.stage is Stage.REFUSED else "submitted",
                            {"reason": change.reason, "hits": len(change.hits), "shadow": len(change.shadow),
                             "diff": diff(change.before, change.after, ordered=kind is ChangeKind.BCF).lines()})  # fmt: skip
            await self._log_event(change, "submitted" if change.stage is Stage.SHADOW else "refused")
            return change

    async def adopt(self, kind: ChangeKind, rules: BcfRules | RuleSet, *, target: str | None = None,
                    origin: str) -> Adoption:  # fmt: skip
        """A Policy Store version (already verified and loaded by the watch) as a change:
        deferred while another change of ``target`` is in canary,
        refused when it breaks the 911 invariant, else installed in full under a guard
        (the monitor told, the i3 PolicyChangeLogEvent sent). ``origin`` is the author."""
        async with self._lock:
            target = target or self.targets[kind]
            busy = self._busy(kind, target)
            if busy is not None:
                return Adoption(AdoptOutcome.DEFERRED, busy)
            chains = self._chains(kind)
            current = self.running(kind)
            version = self.store.next_version(kind, target)
            candidate: BcfRules | RuleSet = BcfRules(rules.rules, version) if isinstance(rules, BcfRules) else rules
            now = self.clock()
            assessment = await asyncio.to_thread(assess, kind, current, candidate, sources=self.sources,
                                                 recent=self.recent_calls(), chains=chains)  # fmt: skip
            change = Change(f"chg-{uuid.uuid4().hex[:12]}", version, kind, target, origin, current.to_dicts(),
                            candidate.to_dicts(), now)  # fmt: skip
            sign_change(change, self.key, kid=self.kid)
            change = with_assessment(change, assessment, now)
            refused = change.stage is Stage.REFUSED
            self.store.save(change, "refused" if refused else "submitted",
                            {"reason": change.reason, "hits": len(change.hits), "shadow": len(change.shadow),
                             "origin": origin,
                             "diff": diff(change.before, change.after, ordered=kind is ChangeKind.BCF).lines()})  # fmt: skip
            if refused:
                await self._log_event(change, "refused")
                log.warning("change %s (%s): refused: %s", change.id, origin, change.reason)
                return Adoption(AdoptOutcome.REFUSED, change.reason, change.id)
            await self._log_event(change, "submitted")
            self._supersede(kind, target, change)
            self._install(kind, candidate)
            await self._entered(change, Stage.FULL, f"full: {origin}, installed as published")
            return Adoption(AdoptOutcome.INSTALLED, change.reason, change.id)

    def _busy(self, kind: ChangeKind, target: str) -> str | None:
        """Why nothing may be installed over ``target`` now (None: it may)."""
        rules = self.element(kind).rules
        if isinstance(rules, CanaryBcfRules | CanaryRouting):
            active = self.store.active(kind, target)
            return f"change {active.id if active else '?'} is in canary on {target}: promote or roll it back first"
        return None

    def _supersede(self, kind: ChangeKind, target: str, by: Change) -> None:
        """Stop the guards of earlier full changes of ``target``: their automatic rollback
        would reinstall the rules before them and silently undo ``by``, which replaced
        them as a whole and has its own guard."""
        for change_id in list(self.guards):
            earlier = self.store.get(change_id)
            if earlier is not None and earlier.kind is kind and earlier.target == target and earlier.id != by.id:
                self.guards.pop(change_id, None)
                self.store.save(earlier, "superseded", {"reason": f"replaced as a whole by change {by.id}"})

    def gate(self, kind: ChangeKind) -> _Gate:
        """This manager as a ``firebox.policy.watch.PolicyGate`` for one kind of rules."""
        return _Gate(self, kind)

    def get(self, change_id: str) -> Change:
        change = self.store.get(change_id)
        if change is None:
            raise ChangeError([("changeId", f"no change {change_id!r}")], 404)
        return change

    async def stage(self, change_id: str, scope: CanaryScope) -> Change:
        """Shadow -> canary on ``scope``."""
        async with self._lock:
            change = self.get(change_id)
            after = next_stage(change.stage, Op.STAGE)
            if change.kind is ChangeKind.BCF and not scope.sources:
                raise ChangeError([("scope.sources", "a BCF canary needs ingress source ids: the BCF does not know "
                                   "a call's PSAP")])  # fmt: skip
            self._check_sources(scope)
            self._check_unchanged(change)
            old = self.running(change.kind)
            new = load(change.kind, change.after, chains=self._chains(change.kind), version=change.version)
            if isinstance(old, BcfRules) and isinstance(new, BcfRules):
                self.element(change.kind).set_rules(CanaryBcfRules(old.rules, old.version, new, frozenset(scope.sources)))
            else:
                assert isinstance(old, RuleSet) and isinstance(new, RuleSet)
                self.element(change.kind).rules = CanaryRouting(old.rules, new, frozenset(scope.sources),
                                                                frozenset(scope.psaps))  # fmt: skip
            return await self._entered(change, after, f"canary on {_scope_text(scope)}", scope)

    async def promote(self, change_id: str) -> Change:
        """Canary -> full: the new rules for every call."""
        async with self._lock:
            change = self.get(change_id)
            after = next_stage(change.stage, Op.PROMOTE)
            new = load(change.kind, change.after, chains=self._chains(change.kind), version=change.version)
            self._install(change.kind, new)
            return await self._entered(change, after, "full: installed for every call")

    async def rollback(self, change_id: str, reason: str = "rolled back by hand") -> Change:
        """Back to the rules before the change (nothing to undo in shadow)."""
        async with self._lock:
            return await self._rollback(self.get(change_id), reason)

    async def _rollback(self, change: Change, reason: str) -> Change:
        before = change.stage
        after = next_stage(change.stage, Op.ROLLBACK)
        if before in (Stage.CANARY, Stage.FULL):
            old = load(change.kind, change.before, chains=self._chains(change.kind))
            self._install(change.kind, old)
        self.guards.pop(change.id, None)
        return await self._entered(change, after, reason)

    # --- the guard --------------------------------------------------------------------------

    async def check_guards(self, figures: Mapping[str, Any] | None = None,
                           outages: Mapping[str, Any] | None = None) -> list[Change]:  # fmt: skip
        """One look at the monitor (or the ``figures`` / ``outages`` given) for every guarded
        change; rolls back those the guard condemns. Returns the changes rolled back."""
        if not self.guards:
            return []
        if figures is None:
            if self.monitor is None:
                return []
            figures, outages = self.monitor.figures(), self.monitor.outages()
        inp = input_from_monitor(figures, outages, self.clock())
        rolled: list[Change] = []
        async with self._lock:
            for change_id, guard in list(self.guards.items()):
                verdict = guard.observe(inp)
                if verdict.state is GuardState.ROLLBACK:
                    change = self.get(change_id)
                    if change.stage in (Stage.CANARY, Stage.FULL):
                        log.warning("change %s rolled back automatically: %s", change_id, verdict.reason)
                        rolled.append(await self._rollback(change, f"automatic rollback: {verdict.reason}"))
                    self.guards.pop(change_id, None)
                elif verdict.state is GuardState.PASSED:
                    self.store.save(self.get(change_id), "guard passed", {"reason": verdict.reason})
                    self.guards.pop(change_id, None)
        return rolled

    def start(self, interval: float = 5.0) -> asyncio.Task[None]:
        async def run() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.check_guards()
                except Exception:  # noqa: BLE001 -- the guard must outlive one bad look
                    log.exception("change guard failed")

        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(run(), name="change-guard")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- internals --------------------------------------------------------------------------

    def _install(self, kind: ChangeKind, rules: BcfRules | RuleSet) -> None:
        element = self.element(kind)
        if kind is ChangeKind.BCF:
            element.set_rules(rules)
        else:
            element.rules = rules

    def _check_sources(self, scope: CanaryScope) -> None:
        known = set(self.sources.values())
        problems = [(f"scope.sources[{i}]", f"{s!r} is not a source this BCF knows ({', '.join(sorted(known))})")
                    for i, s in enumerate(scope.sources) if s not in known]  # fmt: skip
        chains = self.router.chains if self.router is not None else None
        if chains is not None:
            problems += [(f"scope.psaps[{i}]", f"{p!r} is not a PSAP here") for i, p in enumerate(scope.psaps)
                         if p not in chains]  # fmt: skip
        if problems:
            raise ChangeError(problems)

    def _check_unchanged(self, change: Change) -> None:
        """The rules the change was assessed against must still be the ones running."""
        if self.running(change.kind).to_dicts() != change.before:
            raise ChangeError([("before", f"the {change.kind.value} rules changed since change {change.id} was "
                               "submitted; submit it again to have it checked against what runs now")], 409)  # fmt: skip
        active = self.store.active(change.kind, change.target)
        if active is not None and active.id != change.id and active.stage is Stage.CANARY:
            raise ChangeError([("stage", f"change {active.id} is in canary on {change.target}: promote or roll it "
                               "back first")], 409)  # fmt: skip

    async def _entered(self, change: Change, stage: Stage, reason: str, scope: CanaryScope | None = None) -> Change:
        now = self.clock()
        change.enter(stage, now, reason, scope)
        self.store.save(change, stage.value, {"reason": reason, "scope": scope.to_dict() if scope else None})
        if self.monitor is not None and stage in (Stage.CANARY, Stage.FULL, Stage.ROLLED_BACK):
            self.monitor.config_change(change.id, now)
        if stage in (Stage.CANARY, Stage.FULL):
            self.guards[change.id] = Guard(change.id, now, scope if stage is Stage.CANARY else None,
                                           self._baseline(), self.guard_config, ingress_sources=self.ingress_sources)  # fmt: skip
        await self._log_event(change, stage.value)
        log.info("change %s (%s %s v%d): %s", change.id, change.kind.value, change.target, change.version, reason)
        return change

    def _baseline(self) -> float | None:
        if self.monitor is None:
            return None
        try:
            ratio = self.monitor.figures().get("scopes", {}).get("statewide", {}).get("all", {}).get("answer_ratio")
        except Exception:  # noqa: BLE001 -- no baseline: the ratio check is off, probes still count
            return None
        return float(ratio) if isinstance(ratio, int | float) else None

    async def _log_event(self, change: Change, what: str) -> None:
        if self.log_sender is None:
            return
        try:
            await self.log_sender.send(policy_change_event(change, what, self.element_id, self.agency_id))
        except Exception:  # noqa: BLE001 -- logging never blocks a rollback
            log.exception("change %s: the PolicyChangeLogEvent could not be logged", change.id)


@dataclass(frozen=True, slots=True)
class _Gate:
    """``ChangeManager.adopt`` for one kind of rules: a ``PolicyGate``."""

    manager: ChangeManager
    kind: ChangeKind

    async def adopt(self, rules: Any, *, target: str, origin: str) -> Adoption:
        return await self.manager.adopt(self.kind, rules, target=target, origin=origin)


def policy_change_event(change: Change, what: str, element_id: str, agency_id: str) -> LogEvent:
    """The i3 ``PolicyChangeLogEvent`` (a registered type, NENA-STA-010.3 section 4.12.3) of
    one step of a change; firebox's members go in ``extension``."""
    return LogEvent(
        log_event_type="PolicyChangeLogEvent", element_id=element_id, agency_id=agency_id,
        extension={"changeId": change.id, "action": what, "stage": change.stage.value, "kind": change.kind.value,
                   "policyId": change.target, "version": change.version, "author": change.author,
                   "reason": change.reason[:500]},
    )  # fmt: skip


def _scope_text(scope: CanaryScope) -> str:
    parts = []
    if scope.sources:
        parts.append("sources " + ", ".join(scope.sources))
    if scope.psaps:
        parts.append("PSAPs " + ", ".join(scope.psaps))
    return "; ".join(parts)
