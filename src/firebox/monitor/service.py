"""The monitor as one functional element: the watch (live traffic), the probe runner (test
calls), the detector (outage states) and the notifier (webhooks, e-mail), with start/stop.

What feeds it:

* ``feed(event)``: every i3 log event an element writes (a ``LogEvent`` or its JSON). To tap a
  ``LogSender`` (or anything with ``send``/``drain``) put ``monitor.tap(sender)`` in its
  place: events go on to the sender unchanged and a copy comes here.
* ``state(kind, id, value)`` / ``state_of(parsed)``: element, service and queue states.
* ``config_change(id)``: a rule set or policy version took effect.
* ``condition(c)``: an element's own condition (``firebox.bcf.conditions``: a TDoS the BCF
  is screening, its identifier allocator failing); ``bcf.on_condition(monitor.condition)``.

Every input is judged at once (a probe result, a state) or at the next tick (log events:
every ``tick`` seconds the watch's figures go to the detector), and every outage update is
notified in order by one worker task. ``updates`` keeps the latest updates, ``deliveries``
(on the notifier) what the notifications did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from firebox.monitor.detector import Detector, DetectorConfig, OutageUpdate
from firebox.monitor.notify import Notifier, NotifyConfig
from firebox.monitor.probes import Ingress, ProbePlanner, ProbeResult, ProbeRunner, ProbeTarget
from firebox.monitor.watch import DEFAULT_PROFILE, ConditionNote, Watch

__all__ = ["Monitor", "MonitorConfig", "TappedSender"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MonitorConfig:
    """``psaps``: PSAP id -> queue URI; ``regions``: PSAP id -> region; ``ingresses``: where
    probes enter (BCF addresses); ``targets``: a probe target per PSAP (none: no probes);
    ``ingress_networks``: CIDR -> ingress name, for live calls' sources."""

    psaps: dict[str, str]
    regions: dict[str, str] = field(default_factory=dict)
    ingresses: list[Ingress] = field(default_factory=list)
    targets: list[ProbeTarget] = field(default_factory=list)
    ingress_networks: dict[str, str] = field(default_factory=dict)
    probe_period: float = 10.0
    probe_answer_timeout: float = 4.0
    probe_hold: float = 0.2
    probe_host: str = "127.0.0.1"
    #: RFC 3263 over a cluster's nodes: a probe's BYE follows its route set (the cluster's
    #: name) to whichever node answers (``firebox.node.cluster_resolver``); None: no cluster.
    probe_resolver: Any = None
    window: float = 300.0
    profile: tuple[float, ...] = DEFAULT_PROFILE
    timezone: str = "America/New_York"
    tick: float = 1.0
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)


class TappedSender:
    """A log event sender that also hands every event to ``feed``: the monitor's tap on a
    ``LogSender``. Anything else is the inner sender's."""

    def __init__(self, inner: Any, feed: Callable[[Any], None]) -> None:
        self.inner = inner
        self.feed = feed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def send(self, event: Any) -> Any:
        self.feed(event)
        return await self.inner.send(event)


class Monitor:
    def __init__(self, config: MonitorConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.watch = Watch({u: p for p, u in config.psaps.items()}, config.regions,
                           ingresses=config.ingress_networks, window=config.window, profile=config.profile,
                           timezone=config.timezone)  # fmt: skip
        self.detector = Detector(config.psaps, config.regions, ingresses=[i.name for i in config.ingresses],
                                 config=config.detector)  # fmt: skip
        self.notifier = Notifier(config.notify)
        self.runner: ProbeRunner | None = None
        if config.targets and config.ingresses:
            planner = ProbePlanner(config.ingresses, config.targets, period=config.probe_period, start=clock())
            self.runner = ProbeRunner(planner, self._on_probe, host=config.probe_host,
                                      answer_timeout=config.probe_answer_timeout, hold=config.probe_hold,
                                      clock=clock, resolver=config.probe_resolver)  # fmt: skip
        self.updates: deque[OutageUpdate] = deque(maxlen=500)
        self.probe_counts: Counter[tuple[str, str, str]] = Counter()  # (ingress, psap, outcome)
        self._outbox: asyncio.Queue[OutageUpdate] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False
        #: Called with every outage update as the detector makes it, in the same step (the
        #: ESRP's routing, public alerting, the status page): nothing waits for a notifier.
        self.listeners: list[Callable[[OutageUpdate], None]] = []

    # --- feeds ----------------------------------------------------------------------------

    def feed(self, event: Any) -> None:
        """One i3 log event (never raises)."""
        self.watch.log_event(event, self.clock())

    def tap(self, sender: Any) -> TappedSender:
        return TappedSender(sender, self.feed)

    def state(self, kind: str, ident: str, value: str) -> None:
        now = self.clock()
        self.detector.observe_state(self.watch.state(kind, ident, value, now))
        self._evaluate(now)

    def state_of(self, parsed: Any) -> None:
        """A parsed ``firebox.esrp.states`` ElementState / ServiceState / QueueState."""
        now = self.clock()
        self.detector.observe_state(self.watch.state_of(parsed, now))
        self._evaluate(now)

    def condition(self, condition: Any) -> None:
        """An element condition began, changed or ended (a ``BcfCondition``): judged at once
        (never raises: it is called from inside the BCF's step)."""
        try:
            now = self.clock()
            self.detector.observe_condition(ConditionNote.of(condition, now))
        except Exception:  # noqa: BLE001 -- a monitor bug must not touch the call path
            log.exception("monitor: element condition not understood")
            return
        self._evaluate(now)

    def config_change(self, change_id: str, at: float | None = None) -> None:
        self.detector.config_change(change_id, self.clock() if at is None else at)

    # --- views ----------------------------------------------------------------------------

    def outages(self) -> dict[str, Any]:
        return {
            "current": [o.as_dict() for o in self.detector.outages()],
            "recent": [o.as_dict() for o in reversed(self.detector.recent)],
        }

    def figures(self, window: float | None = None) -> dict[str, Any]:
        out = self.watch.figures(self.clock(), window).as_dict()
        if self.runner is not None:
            out["probes"] = [r.as_dict() for r in self.runner.results[-50:]]
        return out

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._outbox = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._ticker(), name="monitor-tick"),
                       asyncio.create_task(self._sender(), name="monitor-notify")]  # fmt: skip
        if self.runner is not None:
            await self.runner.start()
        self.started = True

    async def stop(self, drain: float = 10.0) -> None:
        """Stop probing and ticking; send what is waiting (bounded by ``drain`` seconds)."""
        if self.runner is not None:
            await self.runner.stop()
        if self._outbox is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain):
                    await self._outbox.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.notifier.aclose()
        self.started = False

    # --- internals ------------------------------------------------------------------------

    def _on_probe(self, result: ProbeResult) -> None:
        self.probe_counts[(result.probe.ingress.name, result.probe.target.psap_id, result.outcome.value)] += 1
        self.detector.observe_probe(result)
        self._evaluate(self.clock())

    def _evaluate(self, now: float) -> None:
        try:
            self.detector.observe_figures(self.watch.figures(now))
            updates = self.detector.evaluate(now)
        except Exception:  # noqa: BLE001 -- a detector bug must not stop the monitor
            log.exception("monitor: detector failed")
            return
        for update in updates:
            o = update.outage
            log.warning("911 outage %s: %s %s %s: %s (calls affected %d)", update.kind.value, o["scope"], o["key"],
                        o["state"], o["cause"], o["calls_affected"])  # fmt: skip
            self.updates.append(update)
            for listener in self.listeners:
                try:
                    listener(update)
                except Exception:  # noqa: BLE001 -- one consumer's bug must not stop the others
                    log.exception("monitor: outage listener %r failed", listener)
            if self._outbox is not None:
                self._outbox.put_nowait(update)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick)
            self._evaluate(self.clock())

    async def _sender(self) -> None:
        assert self._outbox is not None
        while True:
            update = await self._outbox.get()
            try:
                await self.notifier.send(update)
            except Exception:  # noqa: BLE001
                log.exception("monitor: notification failed")
            finally:
                self._outbox.task_done()


def config_from_node(node: Any, *, regions: Mapping[str, str] | None = None, **options: Any) -> MonitorConfig:
    """A monitor configuration for a running ``firebox.node`` Node: its PSAPs, a probe target
    per PSAP (a point inside its ``urn:service:sos`` boundary) and its BCF as the ingress
    (``node.core`` must be started: its port is read)."""
    from firebox.monitor.probes import targets_from_deployment

    dep = node.deployment
    regions = dict(regions or {})
    ingresses = []
    if node.core is not None:
        host = node.core.advertised_host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        transport = dep.elements.bcf.transports[0] if dep.elements.bcf is not None else "udp"
        ingresses.append(Ingress(f"bcf.{dep.authority.domain}", host, node.core.port, transport))
    networks = dict(dep.elements.bcf.sources) if dep.elements.bcf is not None else {}
    if dep.cluster is not None and "probe_resolver" not in options:
        from firebox.node import cluster_resolver

        options["probe_resolver"] = cluster_resolver(dep, (ingresses[0].transport,) if ingresses else ("udp",))
    return MonitorConfig(
        psaps={p.id: p.uri for p in dep.psaps}, regions=regions, ingresses=ingresses,
        targets=targets_from_deployment(dep, node.index, regions), ingress_networks=networks, **options,
    )  # fmt: skip
