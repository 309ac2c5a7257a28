"""Outage replays (issue 6): run a named scenario on the demo state (or a deployment) with a
population-weighted call load, inject its fault, heal it, and measure what callers got.

``run_scenario(ScenarioConfig(...))`` builds the node as ``firebox demo`` does (HTTP app on
uvicorn, ``start_sip``), starts a webhook receiver on 127.0.0.1 (the notifications' real
destination), a firewall relay in front of the BCF, a ``Monitor`` probing every PSAP through
both ingress routes every ``probe_period`` seconds with ``OutageRouting`` steering the ESRP,
the BCF's element conditions (TDoS, identifier allocation) fed to it, the BCF's screening
answer (``firebox.bcf.screening``) as the ESRP's ``divert_to`` unless the deployment names
one, and a carrier with two ingress routes (``RoutedCarrier``: through the firewall, and straight
to the BCF). The load (``firebox.sim.load``) runs ``speed`` times faster than the clock: a
wall second offers ``speed`` seconds of the day's calls. The fault, the monitor and every
measured time are wall-clock: a system's reactions are not compressed.

Each legitimate call ends in one category: answered by its ``intended`` PSAP (the ECRF's
PSAP for the caller's town), by an ``alternate``, on a ``business_line``, on the ESRP's
callback ``worklist`` (with its number and location), or ``lost``. Times: to detect (fault
-> the first outage the detector confirms), to reroute (detection -> the first affected call
carried around the fault, or the routing mark; 0 when that came first), to notify (detection
-> the first notification of that outage received by the webhook receiver; 0 when the
suspicion's notification came first). The result is JSON-ready (``ScenarioResult.as_dict``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firebox.sim.faults import ROUTE_A, ROUTE_B, Fault, FirewallRelay, fault
from firebox.sim.load import CallGenerator, LoadModel, PlannedCall, towns_from_deployment, towns_from_state
from firebox.sim.peer import default_database, default_nats
from firebox.sim.public import PublicChannelProbe

log = logging.getLogger(__name__)

__all__ = ["CATEGORIES", "CallRow", "Harness", "ScenarioConfig", "ScenarioResult", "run_scenario"]

CATEGORIES = ("intended", "alternate", "business_line", "worklist", "lost")
#: Criteria of issue 6, per scenario at a 10x surge.
DETECT_WITHIN = 10.0
REROUTE_WITHIN = 2.0
NOTIFY_WITHIN = 60.0
#: Bound on waiting for the last calls to end after the load stops.
DRAIN_SECONDS = 20.0
#: Bound on stopping the node (``stop_sip``: its log senders drain for up to
#: ``node.LOG_DRAIN_SECONDS``, what is left stays in their spools).
STOP_NODE_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(predicate: Any, what: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class ScenarioConfig:
    name: str
    speed: float = 1.0
    surge: float = 10.0
    warmup: float = 10.0  # wall seconds of load before the fault
    fault_for: float = 30.0  # wall seconds the fault lasts (unless healed on detection)
    tail: float = 15.0  # wall seconds of load after the heal
    seed: int = 911
    n_towns: int = 40
    probe_period: float = 2.0
    hold: tuple[float, float] = (1.0, 3.0)  # callers' hold time (s), uniform
    deployment: Path | None = None
    work_dir: Path | None = None
    #: Seconds after the confirmation at which a ``heal_on_detect`` fault is rolled back.
    rollback_after: float = 0.5
    #: None: the scenario's own fault; "none" for a baseline run with no fault.
    fault: str | None = None
    #: Measure the public channels (status page, alert drafts, box alarms: ``sim.public``).
    public: bool = False
    #: The cluster's PostgreSQL and NATS JetStream, for a fault with a second node
    #: (``node-loss``); unused otherwise.
    database: str = field(default_factory=default_database)
    nats: str = field(default_factory=default_nats)

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, not {self.speed}")
        for name in ("warmup", "fault_for", "tail"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass
class CallRow:
    """One legitimate call of the load and what became of it."""

    n: int
    started: float  # epoch seconds
    psap_id: str | None  # intended
    town_id: str
    identity: str
    lon: float
    lat: float
    ended: float | None = None
    #: When its 2xx arrived: the reroute time is read from it (its end would add the
    #: conversation).
    answered_at: float | None = None
    category: str = "lost"
    answered_by: str | None = None  # PSAP id, or the business line's URI
    route: str | None = None
    routes_tried: list[str] = field(default_factory=list)
    status: int | None = None
    call_ids: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def answered(self) -> bool:
        return self.category in ("intended", "alternate", "business_line")


@dataclass
class Harness:
    """What the faults act on and the runner measures with."""

    node: Any
    state: Any
    monitor: Any
    routing: Any
    firewall: FirewallRelay
    policy_url: str
    domain: str
    bcf_port: int
    psaps: dict[str, str]  # id -> queue URI
    psap_ids: list[str]
    alternates: dict[str, list[str]]
    victim: str
    towns: list[Any]
    rate: float = 0.0  # legitimate calls per wall second (expected)
    screening: Any = None  # the BCF's screening answer (firebox.bcf.screening), if started here

    def legit_rate(self) -> float:
        return self.rate

    def random_point(self, rng: random.Random) -> tuple[float, float]:
        town = rng.choice(self.towns)
        p = town.geometry.point_on_surface()
        return p.x, p.y


@dataclass
class ScenarioResult:
    name: str
    title: str
    config: dict[str, Any]
    started: float
    fault_at: float | None
    healed_at: float | None
    ended: float
    offered: int
    counts: dict[str, int]
    detect_s: float | None
    reroute_s: float | None
    notify_s: float | None
    detected_outage: dict[str, Any] | None
    reroute_raw_s: float | None
    notify_raw_s: float | None
    outage_free: bool  # no call was affected and no outage declared: nothing to detect
    spurious_outages: list[str]
    criteria: dict[str, bool]
    updates: list[dict[str, Any]]
    notifications: list[dict[str, Any]]
    routes_log: list[list[Any]]
    lost_calls: list[dict[str, Any]]
    fault_figures: dict[str, Any]
    core_stats: dict[str, int]
    calls: list[dict[str, Any]]
    #: Further figures by name (legitimate calls' setup times, the BCF's conditions, the
    #: screening answer...): add here rather than new positional members.
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(self.criteria.values())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        return out


async def _bounded(step: str, work: Any, seconds: float, overruns: list[str]) -> None:
    """Await one teardown step for at most ``seconds``; an overrun is named, logged and the
    teardown goes on (a part that does not stop must not keep the rest running)."""
    try:
        async with asyncio.timeout(seconds):
            await work
    except TimeoutError:
        overruns.append(step)
        log.warning("scenario teardown: %s did not stop within %.0f s", step, seconds)


async def _webhook_receiver() -> tuple[str, list[tuple[float, dict[str, Any]]], Any, asyncio.Task[None]]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    hooks: list[tuple[float, dict[str, Any]]] = []

    async def hook(request: Request) -> JSONResponse:
        hooks.append((time.time(), await request.json()))
        return JSONResponse({"ok": True})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/hook", hook, methods=["POST"])]), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=5))  # fmt: skip
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, "the webhook receiver", 15.0)
    return f"http://127.0.0.1:{port}/hook", hooks, server, task


def _prepare_demo(work: Path, cfg: ScenarioConfig) -> tuple[Path, Any, int]:
    from rich.console import Console

    from firebox.node import write_demo

    port = free_port()
    path, state = write_demo(work, seed=cfg.seed, n_towns=cfg.n_towns, listen=f"127.0.0.1:{port}",
                             sip_listen="127.0.0.1:0", console=Console(quiet=True))  # fmt: skip
    text = path.read_text()
    # The carriers are at 127.0.0.1; the rest of 127/8 is somebody else (the flood's sources).
    text = text.replace("127.0.0.0/8: demo-carrier", "127.0.0.1/32: demo-carrier")
    # Policies are looked at twice a second (a rollback takes effect within that).
    text = text.replace("interval_seconds: 2.0", "interval_seconds: 0.5")
    path.write_text(text)
    return path, state, port


def _classify(row: CallRow, results: list[Any], node: Any, uri_to_psap: dict[str, str]) -> None:
    from firebox.sim.carrier import Outcome

    final = results[-1] if results else None
    row.call_ids = [r.call_id for r in results if r.call_id]
    row.routes_tried = [r.route for r in results if r.route]
    row.route = final.route if final else None
    row.status = final.status if final else None
    if final is not None and final.outcome is Outcome.ANSWERED:
        record = node.core.records.get(final.call_id) if final.call_id else None
        target = record.target if record is not None else None
        if target is None and final.contact:
            from firebox.monitor.probes import _user  # the probes' own reading of a Contact

            user = _user(final.contact)
            target = next((u for u in uri_to_psap if user and _user(u) == user), None)
        if target in uri_to_psap:
            row.answered_by = uri_to_psap[target]
            row.category = "intended" if row.answered_by == row.psap_id else "alternate"
        else:
            row.answered_by = target
            row.category = "business_line"
        return
    worklist = getattr(node.core, "worklist", None)
    for cid in row.call_ids:
        entry = worklist.get(cid) if worklist is not None else None
        if entry is not None and entry.callback and entry.lon_lat is not None:
            row.category = "worklist"
            row.detail = f"worklist {entry.id}: {entry.reason.value}"
            return
    row.category = "lost"
    row.detail = "; ".join(f"{r.route}: {r.outcome.value} {r.status or ''} {r.reason or ''}".strip() for r in results)


async def run_scenario(cfg: ScenarioConfig) -> ScenarioResult:  # noqa: C901 -- one timeline, read top to bottom
    import uvicorn
    from rich.console import Console

    from firebox.deployment import load_deployment
    from firebox.monitor.detector import OutageState
    from firebox.monitor.notify import NotifyConfig
    from firebox.monitor.probes import Ingress
    from firebox.monitor.routing import OutageRouting
    from firebox.monitor.service import Monitor, config_from_node
    from firebox.node import build_node, start_sip, stop_sip
    from firebox.sim.carrier import CallPlan, Carrier, LocationMode, RouteList, IngressRoute, RoutedCarrier

    the_fault: Fault | None = None if cfg.fault == "none" else fault(cfg.fault or cfg.name)
    tmp = None
    if cfg.deployment is None:
        tmp = tempfile.TemporaryDirectory(prefix="firebox-scenario-") if cfg.work_dir is None else None
        work = Path(tmp.name) if tmp is not None else cfg.work_dir
        assert work is not None
        path, state, http_port = _prepare_demo(work, cfg)
    else:
        path, state = cfg.deployment, None
        http_port = None
    if the_fault is not None:
        await the_fault.prepare(cfg, work if cfg.deployment is None else None, path)
    public = PublicChannelProbe(PublicChannelProbe.enable(path)) if cfg.public and state is not None else None
    dep = load_deployment(path)
    node = build_node(dep, console=Console(quiet=True))
    servers: list[tuple[Any, asyncio.Task[None]]] = []
    for listen, app in node.apps.items():
        host, _, port = str(listen).rpartition(":")
        server = uvicorn.Server(uvicorn.Config(app, host=host.strip("[]"), port=int(port), log_level="warning",
                                               lifespan="off", timeout_graceful_shutdown=5))  # fmt: skip
        servers.append((server, asyncio.create_task(server.serve())))
    for server, _task in servers:
        await until(lambda s=server: s.started, "the HTTP server", 30.0)
    http = await start_sip(node)
    hook_url, hooks, hook_server, hook_task = await _webhook_receiver()
    firewall = FirewallRelay(("127.0.0.1", node.core.port))
    fw_port = await firewall.start()
    psaps = {p.id: p.uri for p in dep.psaps}
    ids = list(psaps)
    regions = {pid: ("west" if i < len(ids) // 2 else "east") for i, pid in enumerate(ids)}
    mcfg = config_from_node(node, regions=regions, probe_period=cfg.probe_period, probe_answer_timeout=3.0, tick=0.25,
                            notify=NotifyConfig(webhooks=(hook_url,), backoff=0.1,
                                                contact={"name": "NOC", "phone": "+1 617 555 0100"}))  # fmt: skip
    route_a = the_fault.route_a if the_fault is not None and the_fault.route_a else ("127.0.0.1", fw_port)
    mcfg.ingresses = [Ingress(ROUTE_A, *route_a), Ingress(ROUTE_B, "127.0.0.1", node.core.port)]
    monitor = Monitor(mcfg)
    if the_fault is not None:
        await the_fault.start(node, monitor)
    if node.core.call_log is not None:
        node.core.call_log.sender = monitor.tap(node.core.call_log.sender)
    routing = OutageRouting(node.core.router.states, mcfg.psaps, mcfg.regions)
    monitor.listeners.append(routing)
    updates: list[tuple[float, Any]] = []
    monitor.listeners.append(lambda u: updates.append((time.time(), u)))
    await monitor.start()
    if the_fault is not None and monitor.runner is not None:
        for probe_carrier in monitor.runner.carriers.values():
            probe_carrier.resolver = the_fault.sip_resolver()
    bcf = node.core.bcf
    bcf.on_condition(monitor.condition)
    conditions: list[tuple[float, Any]] = []
    bcf.on_condition(lambda c: conditions.append((time.time(), c)))
    screening = None
    if node.core.divert_to is None:
        from firebox.bcf.screening import ScreeningService

        screening = ScreeningService("127.0.0.1", 0)
        await screening.start()
        node.core.divert_to = screening.uri

    towns = towns_from_state(state) if state is not None else towns_from_deployment(dep, node.index)
    population = sum(t.population for t in towns)
    gen = CallGenerator(LoadModel(population, surge=cfg.surge), towns, seed=cfg.seed)
    alternates = {p.id: list(p.alternates) for p in dep.psaps}
    # The victim of a one-PSAP fault: the most populous PSAP with alternates.
    pops = {pid: sum(t.population for t in towns if t.psap_id == pid) for pid in ids}
    victim = max((pid for pid in ids if alternates.get(pid)), key=lambda pid: (pops.get(pid, 0), pid), default=ids[0])
    harness = Harness(node, state, monitor, routing, firewall, f"http://127.0.0.1:{http_port}/policy",
                      dep.authority.domain, node.core.port, psaps, ids, alternates, victim, towns,
                      rate=gen.model.rate(0) * cfg.speed, screening=screening)  # fmt: skip
    carrier = Carrier(("127.0.0.1", fw_port, "udp"), domain=f"carrier.{dep.authority.domain}", answer_timeout=15.0,
                      resolver=the_fault.sip_resolver() if the_fault is not None else None)  # fmt: skip
    await carrier.start()
    route_list = RouteList([IngressRoute(ROUTE_A, (*route_a, "udp")),
                            IngressRoute(ROUTE_B, ("127.0.0.1", node.core.port, "udp"))])  # fmt: skip
    routed = RoutedCarrier(carrier, route_list, provisional_timeout=1.0)
    await routed.start()
    uri_to_psap = {u: p for p, u in psaps.items()}
    rows: list[CallRow] = []
    tasks: set[asyncio.Task[None]] = set()
    rng = random.Random(cfg.seed + 1)
    fault_at = healed_at = None
    detected_at: float | None = None
    detected: dict[str, Any] | None = None

    async def place(planned: PlannedCall) -> None:
        row = CallRow(planned.n, time.time(), planned.psap_id, planned.town_id, planned.identity, planned.lon,
                      planned.lat)  # fmt: skip
        rows.append(row)
        plan = CallPlan(planned.identity, planned.lon, planned.lat, LocationMode.VALUE, rng.uniform(*cfg.hold))
        try:
            results = await routed.call(plan)
        except Exception as exc:  # noqa: BLE001 -- counted as lost, with why
            row.ended, row.category, row.detail = time.time(), "lost", f"carrier error {exc!r}"
            return
        row.ended = time.time()
        _classify(row, results, node, uri_to_psap)
        if row.answered:
            row.answered_at = next((r.answered_at for r in reversed(results) if getattr(r, "answered_at", None)), None)
        if the_fault is not None:
            the_fault.call_done(row, results)

    try:
        if public is not None:
            await public.start(node, monitor)
        await until(lambda: sum(n for (_i, _p, o), n in monitor.probe_counts.items() if o == "answered")
                    >= len(mcfg.targets), "a good probe round", 30.0)  # fmt: skip
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        started = time.time()
        stop_at = cfg.warmup + cfg.fault_for + cfg.tail
        heal_at = cfg.warmup + cfg.fault_for
        max_steps = int((stop_at + 120.0) / 0.05)
        for _ in range(max_steps):  # bounded; ends at stop_at
            elapsed = loop.time() - t0
            if elapsed >= stop_at:
                break
            for planned in gen.due(elapsed * cfg.speed):
                task = asyncio.create_task(place(planned))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if detected_at is None and fault_at is not None:
                for at, u in updates:
                    if at >= fault_at and u.outage["state"] == OutageState.CONFIRMED and the_fault.expected(u.outage):
                        detected_at, detected = at, u.outage
                        break
            if the_fault is not None and fault_at is None and elapsed >= cfg.warmup:
                fault_at = time.time()
                await the_fault.inject(node, harness)
            if the_fault is not None and fault_at is not None and healed_at is None:
                rollback = the_fault.heal_on_detect and detected_at is not None and time.time() >= detected_at + cfg.rollback_after
                if elapsed >= heal_at or rollback:
                    await the_fault.heal(node, harness)
                    healed_at = time.time()
            bcf.tick(time.monotonic())  # the BCF judges its aggregate view in silence too
            await asyncio.sleep(0.05)
        if the_fault is not None and fault_at is not None and healed_at is None:
            await the_fault.heal(node, harness)
            healed_at = time.time()
        carrier.hang_up_all()
        if tasks:
            await asyncio.wait(set(tasks), timeout=DRAIN_SECONDS)
        # a detection after the load ended still counts (bounded wait for the monitor)
        if fault_at is not None and detected_at is None:
            for at, u in updates:
                if at >= fault_at and u.outage["state"] == OutageState.CONFIRMED and the_fault.expected(u.outage):
                    detected_at, detected = at, u.outage
                    break
        if detected is not None:
            with contextlib.suppress(TimeoutError):
                await until(lambda: any(h.get("outage_id") == detected["id"] for _t, h in hooks),
                            "the outage's first notification", 60.0)  # fmt: skip
        ended = time.time()
    finally:
        # Every step is bounded: a part that does not stop is named (figures["teardown"])
        # and the rest still stops, in this order: the load and the probes, then the node
        # (stop_sip drains its log senders while the Logging Services are still up), then
        # the HTTP servers.
        teardown_t0 = time.monotonic()
        overruns: list[str] = []
        for task in list(tasks):
            task.cancel()
        if the_fault is not None:
            await _bounded("fault", the_fault.close(), 60.0, overruns)
        await _bounded("carrier routes", routed.close(), 10.0, overruns)
        await _bounded("carrier", carrier.close(), 10.0, overruns)
        await _bounded("monitor", monitor.stop(drain=5.0), 30.0, overruns)
        if screening is not None:
            await _bounded("screening", screening.close(), 10.0, overruns)
        if public is not None:
            await _bounded("public channels", public.stop(), 10.0, overruns)
        firewall.close()
        await _bounded("node", stop_sip(node), STOP_NODE_SECONDS, overruns)
        if http is not None:
            await _bounded("node HTTP client", http.aclose(), 10.0, overruns)
        hook_server.should_exit = True
        for server, _task in servers:
            server.should_exit = True
        await _bounded("HTTP servers", asyncio.gather(hook_task, *(t for _s, t in servers), return_exceptions=True),
                       30.0, overruns)  # fmt: skip
        if node.policy_store is not None:
            node.policy_store.close()
        teardown = {"seconds": round(time.monotonic() - teardown_t0, 2), "overruns": overruns,
                    "log_delivery": dict(node.log_figures)}  # fmt: skip
        if tmp is not None:
            tmp.cleanup()

    counts = {c: sum(1 for r in rows if r.category == c) for c in CATEGORIES}
    affected = [r for r in rows if fault_at is not None and r.started >= fault_at - 1.0 and the_fault is not None
                and the_fault.affected(r)]  # fmt: skip
    # An outage-free run: the fault was absorbed (every affected call answered where it was
    # meant to be) and the detector declared nothing: there was nothing to detect.
    outage_free = detected is None and all(r.category == "intended" for r in affected)
    reroute_raw = notify_raw = None
    if detected_at is not None and the_fault is not None and fault_at is not None:
        marks = [at for oid, _what, at in routing.actions if oid == detected["id"]] if detected else []
        carried = [r.answered_at for r in affected if r.answered_at is not None and the_fault.rerouted(r)
                   and (the_fault.name != "config-push-2020" or (healed_at is not None and r.started >= healed_at))]  # fmt: skip
        candidates = [t for t in (*marks, *carried, the_fault.rerouted_at) if t is not None and t >= fault_at]
        if candidates:
            reroute_raw = min(candidates) - detected_at
        firsts = [t for t, h in hooks if detected and h.get("outage_id") == detected["id"]]
        if firsts:
            notify_raw = min(firsts) - detected_at
    detect_s = detected_at - fault_at if detected_at is not None and fault_at is not None else None
    reroute_s = max(0.0, reroute_raw) if reroute_raw is not None else None
    notify_s = max(0.0, notify_raw) if notify_raw is not None else None
    criteria = {"zero_lost": counts["lost"] == 0}
    if the_fault is not None and not outage_free:
        criteria["detected_within_10s"] = detect_s is not None and detect_s <= DETECT_WITHIN
        criteria["rerouted_within_2s"] = reroute_s is not None and reroute_s <= REROUTE_WITHIN
        criteria["notified_within_60s"] = notify_s is not None and notify_s <= NOTIFY_WITHIN
    if the_fault is not None:
        criteria.update(the_fault.criteria([r for r in rows if fault_at is not None and r.started >= fault_at]))
    figures: dict[str, Any] = {
        "setup_s": _setup_figures(rows, fault_at, healed_at),
        "bcf_conditions": [{**c.as_dict(), "received": at} for at, c in conditions],
        "screening": screening.counts() if screening is not None else None,
        "notifications_by_outage": _per_outage([h for _t, h in hooks]),
        "teardown": teardown,
    }
    if public is not None:
        seen = public.figures(fault_at=fault_at, detected_at=detected_at, healed_at=healed_at, detected=detected,
                              regions=regions)  # fmt: skip
        figures["public"] = seen.as_dict()
        criteria.update(seen.criteria)
    # Confirmed outages that were not the fault's: the detector blaming the wrong thing.
    spurious = sorted({u.outage["id"] for _at, u in updates if u.outage["state"] == OutageState.CONFIRMED
                       and (the_fault is None or not the_fault.expected(u.outage))})  # fmt: skip
    lost = [{"n": r.n, "identity": r.identity, "town": r.town_id, "intended": r.psap_id, "lon": r.lon, "lat": r.lat,
             "started": r.started, "routes_tried": r.routes_tried, "call_ids": r.call_ids, "detail": r.detail}
            for r in rows if r.category == "lost"]  # fmt: skip
    name = cfg.name if cfg.fault != "none" else f"{cfg.name} (baseline, no fault)"
    return ScenarioResult(
        name=name, title=the_fault.title if the_fault else "no fault (baseline)",
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        started=started, fault_at=fault_at, healed_at=healed_at, ended=ended, offered=len(rows), counts=counts,
        detect_s=detect_s, reroute_s=reroute_s, notify_s=notify_s, detected_outage=detected,
        reroute_raw_s=reroute_raw, notify_raw_s=notify_raw, outage_free=outage_free, spurious_outages=spurious,
        criteria=criteria,
        updates=[{"at": at, "kind": u.kind.value, "id": u.outage["id"], "scope": u.outage["scope"],
                  "key": u.outage["key"], "state": u.outage["state"], "cause": u.outage["cause"]} for at, u in updates],
        notifications=[{"at": t, "outage_id": h.get("outage_id"), "event": h.get("event"),
                        "notification": h.get("notification")} for t, h in hooks],
        routes_log=[list(x) for x in route_list.log], lost_calls=lost,
        fault_figures=the_fault.figures() if the_fault else {},
        core_stats=dict(node.core.stats) if node.core is not None else {},
        calls=[{"n": r.n, "started": r.started, "ended": r.ended, "category": r.category, "intended": r.psap_id,
                "answered_by": r.answered_by, "route": r.route} for r in rows],
        figures=figures,
    )  # fmt: skip


def _setup_figures(rows: list[CallRow], fault_at: float | None, healed_at: float | None) -> dict[str, Any]:
    """Legitimate calls' setup time (INVITE to 2xx, s) before, during and after the fault:
    whether callers were slowed (median, 95th percentile, maximum, and how many)."""
    import statistics

    def summary(times: list[float]) -> dict[str, Any]:
        if not times:
            return {"n": 0}
        ordered = sorted(times)
        p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
        return {"n": len(ordered), "median": round(statistics.median(ordered), 3), "p95": round(p95, 3),
                "max": round(ordered[-1], 3)}  # fmt: skip

    phases: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    for r in rows:
        if r.answered_at is None:
            continue
        phase = ("before" if fault_at is None or r.started < fault_at
                 else "during" if healed_at is None or r.started < healed_at else "after")  # fmt: skip
        phases[phase].append(r.answered_at - r.started)
    return {phase: summary(times) for phase, times in phases.items()}


def _per_outage(hooks: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Notifications received per outage, by event (new, confirmed, updated, cleared)."""
    out: dict[str, dict[str, int]] = {}
    for h in hooks:
        events = out.setdefault(str(h.get("outage_id")), {})
        events[str(h.get("event"))] = events.get(str(h.get("event")), 0) + 1
    return out
