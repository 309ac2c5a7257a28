"""Composition: build the elements a deployment names and serve them.

``build_node`` loads the GIS layers (with their quality reports), the LVF's streets, the ECRF
and the LIS; ``run_node`` serves them with uvicorn, one server per listen address (elements
that share an address share a server), starts the SIP elements the deployment names (the
PSAP user agents of ``simulated`` PSAPs, then the BCF + ESRP as one ``EmergencyCore``), and
optionally drives two generated loads through them over the wire: lookups (HELD to the LIS
for each caller's location, then LoST to the ECRF, as an ESRP does) and 911 calls (a
carrier's INVITEs into the BCF, ``firebox.sim.carrier``). ``write_demo`` writes the
generated state and its deployment file, so the demo starts through the same loader as
``firebox serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from firebox.deployment import Deployment, dump_deployment, parse_deployment
from firebox.gis.index import BoundaryLayer, ServiceIndex

if TYPE_CHECKING:
    from firebox.demo.state import DemoState
    from firebox.ecrf.lvf import Lvf
    from firebox.ecrf.service import Ecrf
    from firebox.esrp.element import EmergencyCore
    from firebox.lis.service import Lis
    from firebox.psap.ua import PsapAgents
    from firebox.sim.carrier import CarrierStats

#: Concurrent calls the demo's carrier keeps up at most.
MAX_CALLS = 200
#: How long (s) the carrier's callers stay on the line: uniform in this range.
CALLER_HOLD = (1.0, 5.0)
#: How long (s), at most, the end of a run waits for calls in progress to finish.
DRAIN_SECONDS = 8.0
#: A full garbage collection once per this many second-generation passes (settle_heap).
FULL_GC_EVERY = 1000
#: How long a stopping node waits for its log events to reach the Logging Services.
LOG_DRAIN_SECONDS = 10.0

log = logging.getLogger(__name__)

SERVICE_NUMBERS = {
    "urn:service:sos": "911",
    "urn:service:sos.police": "911",
    "urn:service:sos.fire": "911",
    "urn:service:sos.ambulance": "911",
}


@dataclass
class LoadStats:
    """What the generated caller load saw, for the page and the summary."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    answered: int = 0
    errors: int = 0
    per_uri: Counter[str] = field(default_factory=Counter)
    error_kinds: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))]


@dataclass
class Node:
    deployment: Deployment
    index: ServiceIndex
    quality: list[Any]
    lvf: Lvf | None
    ecrf: Ecrf | None
    lis: Lis | None
    apps: dict[str, Any]
    towns_geojson: dict[str, Any] | None = None
    callers: list[tuple[float, float, str]] = field(default_factory=list)
    stats: LoadStats = field(default_factory=LoadStats)
    core: EmergencyCore | None = None
    agents: PsapAgents | None = None
    calls: CarrierStats | None = None
    #: The Logging Service's store (``elements.logging``) and the senders of log events.
    log_store: Any = None
    log_sender: Any = None
    #: The Policy Store's store (``elements.policy_store``) and the rule watches.
    policy_store: Any = None
    watches: list[Any] = field(default_factory=list)
    #: What the run's i3 logging did, for the summary: events logged, delivered everywhere
    #: (before the stop), left in the spool, stored by this node's Logging Service, and
    #: whether its hash chain verifies.
    log_figures: dict[str, Any] = field(default_factory=dict)


def _source(dep: Deployment, element: str) -> str:
    return f"{element}.{dep.authority.domain}"


def build_node(dep: Deployment, *, console: Console | None = None) -> Node:
    """Load everything ``dep`` names. GIS problems are printed, never hidden."""
    from firebox.gis.layers import load_boundary_layer

    console = console or Console(stderr=True)
    layers: list[BoundaryLayer] = []
    reports: list[Any] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("loading GIS layers", total=len(dep.gis.layers))
        for cfg in dep.gis.layers:
            layer, report = load_boundary_layer(
                dep.resolve(cfg.path),
                cfg.service,
                id_attr=cfg.id_attribute,
                name_attr=cfg.name_attribute,
                uri_attr=cfg.uri_attribute if cfg.uri_template is None else None,
                uri_template=cfg.uri_template,
                layer=cfg.layer,
            )
            layers.append(layer)
            reports.append(report)
            progress.advance(task)
    for report in reports:
        summary = getattr(report, "summary", None)
        if callable(summary):
            console.print(summary(), highlight=False)
    index = ServiceIndex(layers)

    lvf = None
    if dep.gis.streets:
        from firebox.ecrf.lvf import Lvf, load_address_points

        points = [
            point
            for cfg in dep.gis.address_points
            for point in load_address_points(
                dep.resolve(cfg.path), address_field=cfg.address_attribute, default_town=cfg.municipality
            )
        ]
        lvf = Lvf.from_configs(
            [
                (dep.resolve(s.path), s.municipality, s.state, s.town_attribute)
                for s in dep.gis.streets
            ],
            aliases=dep.gis.aliases,
            address_points=points,
        )
        console.print(
            f"LVF: {len(lvf.segments)} street segments, {len(points)} address points"
            + (f", {len(lvf.skipped)} features skipped" if lvf.skipped else ""),
            highlight=False,
        )

    ecrf = None
    if dep.elements.ecrf is not None:
        from firebox.ecrf.service import Ecrf, Peer

        peers = [Peer.from_config(p.uri, dep.resolve(p.covers) if p.covers else None) for p in dep.elements.ecrf.peers]
        ecrf = Ecrf(
            _source(dep, "ecrf"),
            index,
            ttl=timedelta(seconds=dep.elements.ecrf.ttl_seconds),
            service_numbers=SERVICE_NUMBERS,
            lvf=lvf,
            peers=peers,
        )

    lis = None
    if dep.elements.lis is not None:
        from firebox.lis.service import Lis

        lis = Lis(
            base_url=f"http://{dep.elements.lis.listen}",
            uri_lifetime=timedelta(seconds=dep.elements.lis.uri_lifetime_seconds),
        )

    node = Node(dep, index, reports, lvf, ecrf, lis, apps={})
    node.apps = _apps(node)
    return node


def _apps(node: Node) -> dict[str, Any]:
    """One Starlette app per listen address, holding the routes of every element there."""
    from starlette.applications import Starlette

    routes: dict[str, list[Any]] = {}
    els = node.deployment.elements
    if node.ecrf is not None and els.ecrf is not None:
        from firebox.ecrf.app import create_ecrf_app

        routes.setdefault(els.ecrf.listen, []).extend(create_ecrf_app(node.ecrf).routes)
    if node.lis is not None and els.lis is not None:
        from firebox.lis.app import create_lis_app

        routes.setdefault(els.lis.listen, []).extend(
            create_lis_app(node.lis, f"http://{els.lis.listen}").routes
        )
    if els.web is not None:
        from firebox.web.page import page_routes

        routes.setdefault(els.web.listen, []).extend(page_routes(node))
    if els.bcf is not None:
        from firebox.bcf.app import bad_actors_route

        routes.setdefault(els.bcf.http_listen, []).append(
            bad_actors_route(lambda: node.core.bcf if node.core is not None else None)
        )
    if els.policy_store is not None:
        from starlette.routing import Mount

        from firebox.policy.app import create_app as create_policy_app
        from firebox.policy.store import open_store as open_policy_store

        cfg = els.policy_store
        node.policy_store = open_policy_store(_store_url(node.deployment, cfg.store))
        policy_app = create_policy_app(
            node.policy_store, allow_unsigned=cfg.allow_unsigned, trust=_certificates(node.deployment, cfg.trust)
        )
        routes.setdefault(cfg.listen, []).append(Mount(cfg.path, app=policy_app))
    if els.logging is not None:
        from starlette.routing import Mount

        from firebox.logging.service import create_app
        from firebox.logging.store import open_store

        node.log_store = open_store(_store_url(node.deployment, els.logging.store))
        logging_app = create_app(
            node.log_store, fqdn=_source(node.deployment, "logging"), allow_none=els.logging.allow_unsigned
        )
        # The Logging Service's paths (/LogEvents, /Versions...) sit at the root, behind the
        # other elements' routes on the same address.
        routes.setdefault(els.logging.listen, []).append(Mount("/", app=logging_app))
    return {listen: Starlette(routes=r) for listen, r in routes.items()}


def _store_url(dep: Deployment, store: str) -> str:
    """A Logging Service store: a URL as is, a bare path relative to the deployment file."""
    if "://" in store:
        return store
    path = dep.resolve(Path(store))
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def _certificates(dep: Deployment, paths: list[Path]) -> list[Any] | None:
    """Trust anchors from PEM files (None when none are configured)."""
    if not paths:
        return None
    from cryptography import x509

    return [c for p in paths for c in x509.load_pem_x509_certificates(dep.resolve(p).read_bytes())]


def _start_watches(node: Node) -> None:
    """Keep the ESRP's routing rules and the BCF's rules in step with their policies."""
    from firebox.policy.watch import watch_bcf, watch_esrp

    core = node.core
    assert core is not None
    dep = node.deployment
    esrp, bcf = dep.elements.esrp, dep.elements.bcf

    def options(cfg: Any) -> dict[str, Any]:
        return {"owner": cfg.owner, "trust": _certificates(dep, cfg.trust),
                "allow_unsigned": cfg.allow_unsigned, "interval": cfg.interval_seconds}  # fmt: skip

    if esrp is not None and esrp.policy is not None:
        node.watches.append(watch_esrp(core.router, esrp.policy.url, esrp.policy.policy_id, **options(esrp.policy)))
    if bcf is not None and bcf.policy is not None:
        node.watches.append(watch_bcf(core.bcf, bcf.policy.url, bcf.policy.policy_id, **options(bcf.policy)))
    for watch in node.watches:
        watch.start()


def log_event_urls(dep: Deployment) -> list[str]:
    """Where this node's elements send i3 log events (``elements.log_events``)."""
    els = dep.elements
    if els.log_events is None:
        return []
    if els.log_events.services:
        return list(els.log_events.services)
    assert els.logging is not None  # deployment cross-check
    return [f"http://{els.logging.listen}"]


# --- running ------------------------------------------------------------------------------


async def _serve(node: Node, console: Console, duration: float | None, caller_rate: float) -> None:
    import uvicorn

    servers = []
    for listen, app in node.apps.items():
        host, _, port = listen.rpartition(":")
        config = uvicorn.Config(
            app, host=host, port=int(port), log_level="warning", access_log=False, lifespan="off"
        )
        servers.append(uvicorn.Server(config))
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()  # type: ignore[misc]
            raise SystemExit(f"a server could not start on {', '.join(node.apps)}")
        await asyncio.sleep(0.05)
    for listen in node.apps:
        console.print(f"[green]serving[/green] http://{listen}/")
    http = None
    lookups: asyncio.Task[None] | None = None
    calls: asyncio.Task[None] | None = None
    stop = asyncio.Event()
    try:
        http = await start_sip(node, console)
        if caller_rate > 0 and node.callers and node.deployment.elements.ecrf:
            lookups = asyncio.create_task(_caller_load(node, caller_rate))
        if caller_rate > 0 and node.callers and node.core is not None:
            calls = asyncio.create_task(_call_load(node, caller_rate, stop))
        if duration is None:
            await asyncio.gather(*tasks)
        else:
            await asyncio.sleep(duration)
    finally:
        stop.set()
        if calls is not None:
            # Calls in progress hang up and finish (bounded), so the summary counts them.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(calls), DRAIN_SECONDS + 2)
        for load in (lookups, calls):
            if load is not None:
                load.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await load
        await stop_sip(node)
        if http is not None:
            await http.aclose()
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        if node.policy_store is not None:
            node.policy_store.close()
        if node.log_store is not None:
            node.log_figures["stored"] = node.log_store.count()
            node.log_figures["chain_ok"] = node.log_store.verify() is None
            node.log_store.close()


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def start_sip(node: Node, console: Console | None = None) -> Any:
    """Start the SIP elements the deployment names: the PSAP user agents (for the PSAPs
    marked ``simulated``), then the BCF + ESRP (``EmergencyCore``). Returns the HTTP client
    the ESRP dereferences location URIs with (the caller closes it), or None."""
    dep = node.deployment
    els = dep.elements
    if els.psap_agents is not None:
        from firebox.psap.ua import AgentMode, PsapAgents, Queue

        cfg = els.psap_agents
        queues = [
            Queue(p.id, p.uri, p.name, p.business_line, AgentMode(cfg.faults.get(p.id, "answer")))
            for p in dep.psaps
            if p.simulated
        ]
        host, port = _split_listen(cfg.listen)
        node.agents = PsapAgents(queues, host=host, port=port, ring_seconds=cfg.ring_seconds, hold_seconds=cfg.hold_seconds)
        try:
            await node.agents.start()
        except OSError as exc:
            node.agents = None
            raise SystemExit(f"the PSAP agents could not listen on {cfg.listen} (udp): {exc.strerror or exc}") from None
        if console is not None:
            console.print(f"[green]PSAP agents[/green] for {len(queues)} PSAP queues on sip:{host}:{node.agents.port} (udp)")
    if els.esrp is None or els.bcf is None:
        return None
    import httpx

    from firebox.bcf.core import Bcf
    from firebox.bcf.protection import RateLimit
    from firebox.esrp.element import EmergencyCore
    from firebox.esrp.policy import RuleSet, chains_from_deployment
    from firebox.esrp.router import InProcessLost, Router
    from firebox.esrp.states import StateTable
    from firebox.location.pidf import PidfLocation, Presence

    esrp, bcf = els.esrp, els.bcf
    domain = dep.authority.domain
    if esrp.lost is not None:
        from firebox.lost.client import AsyncLostClient

        lost: Any = AsyncLostClient(esrp.lost)
    else:
        assert node.ecrf is not None  # deployment cross-check: an ECRF, or esrp.lost
        lost = InProcessLost(node.ecrf)
    http = httpx.AsyncClient(timeout=esrp.held_timeout_seconds)
    chains = chains_from_deployment(dep, esrp.pstn_gateway, default_psap=esrp.default_psap)
    router = Router(
        fqdn=f"esrp.{domain}",
        lost=lost,
        chains=chains,
        rules=RuleSet(),
        states=StateTable(),
        default_location=Presence(
            f"sip:ingress@bcf.{domain}",
            [PidfLocation(shapes=[default_point(node, chains.default.uri if chains.default else None)], method="Manual")],
        ),
        http=http,
        held_timeout=esrp.held_timeout_seconds,
        lost_timeout=esrp.lost_timeout_seconds,
    )
    call_log = None
    if els.log_events is not None:
        call_log = _call_logger(node)
    overload = None
    if esrp.overload is not None:
        from firebox.sip.overload import OverloadGuard

        oc = esrp.overload
        overload = OverloadGuard(
            oc.capacity, oc.queue_limit, emergency_reserve=oc.emergency_reserve, retry_after=oc.retry_after_seconds
        )
    host, port = _split_listen(bcf.listen)
    node.core = EmergencyCore(
        Bcf(f"bcf.{domain}", sources=bcf.sources, rate=RateLimit(bcf.rate_per_second, bcf.burst)),
        router,
        host=host,
        port=port,
        transports=tuple(bcf.transports),
        resolve=sip_resolver(node),
        no_provisional_timeout=esrp.provisional_timeout_seconds,
        advertised_host=bcf.advertised_host,
        call_log=call_log,
        overload=overload,
        element_id=f"esrp.{domain}",
        subscribe_to=[p.uri for p in dep.psaps] if esrp.subscribe_queue_state else (),
        state_expires=esrp.state_expires_seconds,
        divert_to=esrp.divert_to,
    )
    try:
        await node.core.start()
    except OSError as exc:
        await http.aclose()
        node.core = None
        raise SystemExit(f"the BCF could not listen on {bcf.listen} ({'/'.join(bcf.transports)}): {exc.strerror or exc}") from None
    _start_watches(node)
    if console is not None:
        console.print(
            f"[green]BCF + ESRP[/green] listening on sip:{node.core.advertised_host}:{node.core.port} "
            f"({', '.join(bcf.transports)}); send INVITE urn:service:sos"
        )
    return http


def sip_resolver(node: Node) -> Any:
    """Where the ESRP sends each destination: a simulated PSAP's queue (and the PSTN
    gateway, for their business lines) to the PSAP agents; anything else by its own URI."""
    from firebox.sip.address import SipUri, parse_uri
    from firebox.sip.errors import SipParseError

    dep = node.deployment
    agents = node.agents
    esrp = dep.elements.esrp
    gateway = esrp.pstn_gateway.rsplit(":", 1)[0].lower() if esrp is not None else None
    simulated = {p.uri for p in dep.psaps if p.simulated}

    def resolve(uri: str) -> tuple[str, int, str] | None:
        if agents is None:
            return None
        if uri in simulated:
            return agents.address
        try:
            parsed = parse_uri(uri)
        except SipParseError:
            return None
        if isinstance(parsed, SipUri) and parsed.host.lower() == gateway:
            return agents.address
        return None

    return resolve


def default_point(node: Node, psap_uri: str | None) -> Any:
    """The ESRP's default location: a point inside the default PSAP's service area (else
    inside the first boundary of the ``urn:service:sos`` layer)."""
    from firebox.location.shapes import Point

    layer = node.index.layer("urn:service:sos") or next(iter(node.index.layers.values()), None)
    if layer is None or not len(layer):
        return Point(0.0, 0.0)
    boundary = next((b for b in layer.boundaries if b.uri == psap_uri), layer.boundaries[0])
    p = boundary.geometry.point_on_surface()
    return Point(p.y, p.x)


def _call_logger(node: Node) -> Any:
    """The ESRP's i3 log events: a ``CallLogger`` over a ``LogSender`` (signed when the
    deployment gives a key) with its durable spool."""
    from firebox.esrp.logevents import CallLogger
    from firebox.logging.sender import LogSender

    dep = node.deployment
    cfg = dep.elements.log_events
    assert cfg is not None
    key = x5c = None
    if cfg.signing_key is not None:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(dep.resolve(cfg.signing_key).read_bytes(), password=None)
        if cfg.certificate is not None:
            x5c = x509.load_pem_x509_certificates(dep.resolve(cfg.certificate).read_bytes())
    spool = dep.resolve(cfg.spool) / "esrp"
    spool.mkdir(parents=True, exist_ok=True)
    element_id = _source(dep, "esrp")
    node.log_sender = LogSender(log_event_urls(dep), str(spool), key, element_id, x5c=x5c)  # type: ignore[arg-type]
    node.log_sender.start()
    return CallLogger(node.log_sender, element_id=element_id, agency_id=dep.authority.domain, signaling=cfg.signaling)


async def stop_sip(node: Node) -> None:
    for watch in node.watches:
        await watch.stop()
    node.watches.clear()
    if node.core is not None:
        await node.core.close()  # spools what its call logger still holds
    if node.agents is not None:
        await node.agents.close()
    if node.log_sender is not None:
        # Deliver what the run logged (bounded); the rest stays in the spool for next time.
        drained = True
        try:
            await node.log_sender.drain(timeout=LOG_DRAIN_SECONDS)
        except TimeoutError:
            drained = False
        logged = node.core.call_log.sent if node.core is not None and node.core.call_log is not None else []
        node.log_figures.update(logged=len(logged), delivered=drained,
                                rejected=len(node.log_sender.rejections))  # fmt: skip
        await node.log_sender.aclose()
        node.log_sender = None


def attach_callers(node: Node, callers: list[tuple[float, float, str]]) -> None:
    """Give the node a generated caller population: each caller (lon, lat, town id) gets a
    device identity, and the LIS, when there is one, holds its location (NENA i3 LIS: the
    access network's record of where each device is)."""
    from firebox.location.shapes import Point

    node.callers = callers
    if node.lis is None:
        return
    for i, (lon, lat, _town) in enumerate(callers):
        node.lis.set_location(caller_identity(i), Point(lat, lon), method="GPS")


def caller_identity(i: int) -> str:
    """The tel: URI of generated caller ``i`` (555 numbers: never a real subscriber)."""
    return f"tel:+1{200 + i // 10_000:03d}555{i % 10_000:04d}"


async def _caller_load(node: Node, rate: float) -> None:
    """Generated callers, paced at ``rate`` per second until the run ends: locate each caller
    through the LIS over HELD, by value, or every fourth call by reference (a location URI,
    then its dereference, RFC 6753), as an ESRP would; then ask the ECRF over LoST which PSAP
    serves that location."""
    import httpx

    from firebox.held.codec import (
        LocationRequest,
        LocationResponse,
        dereference_request,
    )
    from firebox.held.codec import parse as held_parse
    from firebox.held.codec import serialize as held_serialize
    from firebox.location.pidf import best_location
    from firebox.location.shapes import Point
    from firebox.lost.client import AsyncLostClient
    from firebox.lost.messages import FindServiceResponse

    dep = node.deployment
    assert dep.elements.ecrf is not None
    lost = AsyncLostClient(f"http://{dep.elements.ecrf.listen}/lost", cache=None)
    held_url = f"http://{dep.elements.lis.listen}/held" if node.lis and dep.elements.lis else None
    rng = random.Random(7)
    stats = node.stats

    async def locate(http: httpx.AsyncClient, i: int, by_reference: bool) -> Any:
        kind = "locationURI" if by_reference else "geodetic"
        body = held_serialize(LocationRequest(location_types=[kind], device_uri=caller_identity(i)))
        answer = held_parse((await http.post(held_url, content=body)).content)
        if by_reference and isinstance(answer, LocationResponse) and answer.location_uris:
            uri = next(u for u in answer.location_uris if u.startswith("http"))
            answer = held_parse((await http.post(uri, content=held_serialize(dereference_request()))).content)
        if isinstance(answer, LocationResponse) and answer.presence is not None:
            loc = best_location(answer.presence)
            if loc is not None and loc.shapes:
                return loc.shapes[0]
        stats.error_kinds[f"HELD {type(answer).__name__}"] += 1
        return None

    async with httpx.AsyncClient(timeout=2.0) as http:
        period = 1.0 / rate
        next_at = time.monotonic()
        while True:
            i = rng.randrange(len(node.callers))
            lon, lat, _town = node.callers[i]
            t0 = time.perf_counter()
            stats.sent += 1
            try:
                shape: Any = Point(lat, lon)
                if held_url is not None:
                    # A caller the LIS cannot locate is still routed: on the handset's own fix.
                    shape = await locate(http, i, by_reference=stats.sent % 4 == 0) or shape
                resp = await lost.find_service(shape, "urn:service:sos")
                if isinstance(resp, FindServiceResponse) and resp.mappings:
                    stats.answered += 1
                    stats.per_uri[resp.mappings[0].uris[0]] += 1
                else:
                    stats.errors += 1
                    stats.error_kinds[type(resp).__name__] += 1
            except (httpx.HTTPError, ValueError) as exc:
                stats.errors += 1
                stats.error_kinds[type(exc).__name__] += 1
            stats.latencies_ms.append((time.perf_counter() - t0) * 1000)
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def call_plan_mode(n: int) -> str:
    """How call ``n`` of the load carries its location: every 20th none, every 20th (10
    later) a garbled PIDF-LO, every 4th else by reference, the rest by value."""
    if n % 20 == 0:
        return "none"
    if n % 20 == 10:
        return "garbled"
    if n % 4 == 1:
        return "reference"
    return "value"


async def _call_load(node: Node, rate: float, stop: asyncio.Event) -> None:
    """Generated 911 calls, paced at ``rate`` per second until ``stop``: a carrier sends
    each caller's INVITE to the BCF over UDP (location by value, by reference to a HELD
    location URI the LIS hands out, or none/garbled), ACKs the answer and hangs up after a
    short hold; at most ``MAX_CALLS`` at once. On ``stop`` no new call starts and calls in
    progress hang up (bounded by ``DRAIN_SECONDS``). Every tenth call dials
    ``sip:911@...;user=phone`` rather than ``urn:service:sos``."""
    import httpx

    from firebox.held.codec import LocationRequest, LocationResponse
    from firebox.held.codec import parse as held_parse
    from firebox.held.codec import serialize as held_serialize
    from firebox.sim.carrier import CallPlan, Carrier, LocationMode

    assert node.core is not None
    dep = node.deployment
    core_host = node.core.advertised_host
    if core_host in ("0.0.0.0", "::"):
        core_host = "127.0.0.1"
    carrier = Carrier((core_host, node.core.port, "udp"), host="127.0.0.1", domain=f"carrier.{dep.authority.domain}")
    await carrier.start()
    node.calls = carrier.stats
    held_url = f"http://{dep.elements.lis.listen}/held" if node.lis and dep.elements.lis else None
    rng = random.Random(11)
    running: set[asyncio.Task[Any]] = set()

    async def location_uri(http: httpx.AsyncClient, identity: str) -> str | None:
        """What the access network's LIS hands the carrier for this device (RFC 5985)."""
        if held_url is None:
            return None
        body = held_serialize(LocationRequest(location_types=["locationURI"], device_uri=identity))
        try:
            answer = held_parse((await http.post(held_url, content=body)).content)
        except (httpx.HTTPError, ValueError):
            return None
        if isinstance(answer, LocationResponse):
            return next((u for u in answer.location_uris if u.startswith("http")), None)
        return None

    async def one(http: httpx.AsyncClient, n: int, i: int) -> None:
        try:
            await place(http, n, i)
        except Exception:  # one broken call must not stop the load; it is counted
            carrier.stats.errors += 1
            log.exception("demo call %d failed", n)

    async def place(http: httpx.AsyncClient, n: int, i: int) -> None:
        lon, lat, _town = node.callers[i]
        identity = caller_identity(i)
        mode = LocationMode(call_plan_mode(n))
        uri = await location_uri(http, identity) if mode is LocationMode.REFERENCE else None
        if mode is LocationMode.REFERENCE and uri is None:
            mode = LocationMode.VALUE
        # Every tenth call dials 911 as a number: the BCF must recognize it (NENA-STA-010.3 4.1).
        dial = f"sip:911@{core_host}:{node.core.port};user=phone" if n % 10 == 5 else "urn:service:sos"
        await carrier.call(CallPlan(identity, lon, lat, mode, rng.uniform(*CALLER_HOLD), uri, dial))

    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            period = 1.0 / rate
            next_at = time.monotonic()
            n = 0
            while not stop.is_set():
                if len(running) >= MAX_CALLS:
                    carrier.stats.skipped += 1
                else:
                    n += 1
                    task = asyncio.create_task(one(http, n, rng.randrange(len(node.callers))))
                    running.add(task)
                    task.add_done_callback(running.discard)
                next_at += period
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
            carrier.hang_up_all()
            if running:
                await asyncio.wait(set(running), timeout=DRAIN_SECONDS)
                carrier.hang_up_all()
    finally:
        for task in list(running):
            task.cancel()
        if running:
            await asyncio.wait(set(running), timeout=2.0)
        await carrier.close()


def settle_heap() -> None:
    """Call once the data is loaded, before serving: move everything alive (boundaries,
    indexes, tables) out of the garbage collector's sight. A long-lived server otherwise
    walks that whole static heap on every full collection, a pause of milliseconds in the
    middle of answering a 911 lookup."""
    import gc

    gc.collect()
    gc.freeze()
    # Full collections walk every live object: under a 911 surge (tens of thousands of
    # transactions held for RFC 6026's 32 s) that is a pause of hundreds of milliseconds in
    # the call path. The call path makes no reference cycles (tests/test_esrp_memory.py),
    # so reference counting frees finished calls; full collections are made rare (one per
    # 1,000 second-generation passes) rather than switched off, for cycles made elsewhere.
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_GC_EVERY)


def run_node(
    node: Node, *, console: Console, duration: float | None = None, caller_rate: float = 0.0
) -> LoadStats:
    """Serve until stopped (Ctrl-C) or for ``duration`` seconds; then print a summary."""
    settle_heap()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency via uvicorn[standard]
        runner = asyncio.run
    try:
        runner(_serve(node, console, duration, caller_rate))
    except KeyboardInterrupt:
        pass
    print_summary(node, console)
    return node.stats


def print_summary(node: Node, console: Console) -> None:
    s = node.stats
    dep = node.deployment
    elapsed = time.monotonic() - s.started
    console.print(
        f"[bold]{dep.authority.name}[/bold]: {sum(len(l) for l in node.index.layers.values())} boundaries "
        f"in {len(node.index.layers)} service layers, {len(dep.psaps)} PSAPs; "
        f"ran {elapsed:.1f} s"
    )
    console.print(
        f"caller lookups: {s.sent} sent, {s.answered} answered, {s.errors} errors; "
        f"latency p50 {s.percentile(0.5):.1f} ms, p99 {s.percentile(0.99):.1f} ms",
        highlight=False,
    )
    if s.per_uri:
        names = {p.uri: p.name for p in dep.psaps}
        table = Table("PSAP", "URI", "callers routed", title="callers per PSAP")
        for uri, n in s.per_uri.most_common():
            table.add_row(names.get(uri, "?"), uri, str(n))
        console.print(table)
    if s.error_kinds:
        console.print(f"errors by kind: {dict(s.error_kinds)}")
    print_call_summary(node, console)


def psap_call_counts(node: Node) -> list[dict[str, Any]]:
    """Per PSAP: calls its agent was offered / answered / saw end (when simulated), and
    what the ESRP saw of its queue: tried, answered, failed (each failure a failover)."""
    dep = node.deployment
    agents = node.agents.counts if node.agents is not None else {}
    core = node.core.destinations if node.core is not None else {}
    rows = []
    for p in dep.psaps:
        a = agents.get(p.id)
        d = core.get(p.uri)
        rows.append(
            {
                "id": p.id,
                "name": p.name,
                "uri": p.uri,
                "simulated": p.simulated,
                "offered": a.offered if a else 0,
                "answered": a.answered if a else 0,
                "ended": a.ended if a else 0,
                "ended_by_psap": a.ended_by_psap if a else 0,
                "business_line": a.business_line if a else 0,
                "routed": d["tried"] if d else 0,
                "routed_answered": d["answered"] if d else 0,
                "failed_over": d["failed"] if d else 0,
            }
        )
    return rows


def call_totals(node: Node) -> dict[str, Any]:
    """The SIP call figures of the page and the summary."""
    c = node.calls
    core = node.core.stats if node.core is not None else Counter()
    return {
        "sent": c.sent if c else 0,
        "answered": c.answered if c else 0,
        "unanswered": c.unanswered if c else 0,
        "failed": c.failed if c else 0,
        "no_answer": c.no_answer if c else 0,
        "in_flight": c.in_flight if c else 0,
        "skipped": c.skipped if c else 0,
        "failovers": core.get("failovers", 0),
        "core_in": core.get("calls_in", 0),
        "core_answered": core.get("answered", 0),
    }


def print_call_summary(node: Node, console: Console) -> None:
    if node.core is None and node.agents is None:
        return
    c = node.calls
    t = call_totals(node)
    if c is not None:
        console.print(
            f"SIP calls: {t['sent']} sent, {t['answered']} answered, "
            f"{t['unanswered']} failed without an answer ({t['failed']} refused, {t['no_answer']} no answer, "
            f"{c.errors} not sent), {t['in_flight']} still in progress; "
            f"setup p50 {c.percentile(0.5):.1f} ms, p99 {c.percentile(0.99):.1f} ms",
            highlight=False,
        )
        console.print(
            f"  location: {', '.join(f'{k} {v}' for k, v in sorted(c.by_location.items())) or '-'}; "
            f"hung up by the caller {c.ended_by_carrier}, by the PSAP {c.ended_by_psap}"
            + (f"; {c.skipped} not placed (at {MAX_CALLS} calls at once)" if c.skipped else ""),
            highlight=False,
        )
        if c.statuses:
            console.print(f"  final answers: {dict(sorted(c.statuses.items()))}", highlight=False)
    if node.core is not None:
        core = node.core.stats
        how = Counter()
        for record in list(node.core.records.values()):
            for line in record.events:
                for key, label in (("location by value", "by value"), ("location by reference", "by reference"),
                                   ("default location added", "default")):  # fmt: skip
                    if key in line:
                        how[label] += 1
        console.print(
            f"BCF + ESRP: {core.get('calls_in', 0)} calls in, {core.get('answered', 0)} answered, "
            f"{core.get('failed', 0)} failed, failovers {core.get('failovers', 0)}; located "
            + (", ".join(f"{k} {v}" for k, v in sorted(how.items())) or "-"),
            highlight=False,
        )
    f = node.log_figures
    if f:
        console.print(
            f"i3 log events: {f.get('logged', 0)} logged by the ESRP, "
            + ("all delivered" if f.get("delivered") else "not all delivered before the stop (kept in the spool)")
            + (f", {f['rejected']} rejected" if f.get("rejected") else "")
            + (f"; the Logging Service holds {f['stored']}, hash chain "
               + ("verified" if f.get("chain_ok") else "BROKEN") if "stored" in f else ""),
            highlight=False,
        )  # fmt: skip
    rows = [r for r in psap_call_counts(node) if r["offered"] or r["routed"]]
    if rows:
        table = Table("PSAP", "offered", "answered", "ended", "by PSAP", "business line", "failed over", title="SIP calls per PSAP")
        for r in rows:
            table.add_row(
                r["name"], str(r["offered"]), str(r["answered"]), str(r["ended"]), str(r["ended_by_psap"]),
                str(r["business_line"]), str(r["failed_over"]),
            )  # fmt: skip
        console.print(table)


# --- the demo -----------------------------------------------------------------------------


def demo_deployment(
    state: DemoState,
    paths: dict[str, Path],
    listen: str,
    sip_listen: str = "127.0.0.1:5070",
    agents_listen: str = "127.0.0.1:0",
    faults: dict[str, str] | None = None,
) -> Deployment:
    """The deployment file for a generated state whose GeoJSON files are at ``paths``:
    ECRF, LIS and page on ``listen``; the BCF + ESRP on ``sip_listen``; every PSAP
    simulated by the PSAP agents on ``agents_listen``, ``faults`` (PSAP id: ``busy`` or
    ``silent``) playing up."""
    data: dict[str, Any] = {
        "authority": {"name": f"{state.name} 911", "domain": "demo.firebox.test", "state": state.abbreviation},
        "gis": {
            "layers": [
                {"service": service, "path": paths[service].name}
                for service in ("urn:service:sos", "urn:service:sos.police", "urn:service:sos.fire", "urn:service:sos.ambulance")
                if service in paths
            ],
            "streets": [{"path": paths["streets"].name, "state": state.abbreviation}] if "streets" in paths else [],
            "aliases": {},
        },
        "psaps": [
            {
                "id": p.id,
                "name": p.name,
                "uri": p.uri,
                "business_line": p.business_line,
                "alternates": list(p.alternates),
                "towns": [t for t in p.towns],
                "simulated": True,
            }
            for p in state.psaps
        ],
        "elements": {
            "ecrf": {"listen": listen},
            "lis": {"listen": listen},
            "web": {"listen": listen},
            "bcf": {"listen": sip_listen, "transports": ["udp", "tcp"], "sources": {"127.0.0.0/8": "demo-carrier"},
                    "http_listen": listen,
                    "policy": {"url": f"http://{listen}/policy", "policy_id": "demo-bcf", "allow_unsigned": True,
                               "interval_seconds": 2.0}},
            "esrp": {
                "pstn_gateway": "pstn-gw.demo.firebox.test",
                "overload": {"capacity": 400, "queue_limit": 400},
                "policy": {"url": f"http://{listen}/policy", "policy_id": "demo-routing", "allow_unsigned": True,
                           "interval_seconds": 2.0},
            },
            # The state's Logging Service, on the page's address; the ESRP logs every call to it.
            "logging": {"listen": listen, "store": "var/logging.db"},
            "log_events": {"spool": "var/log-spool"},
            # Its Policy Store at /policy on the same address; the ESRP's routing rules and the
            # BCF's rules follow the policies "demo-routing" and "demo-bcf" once someone puts
            # them there (unsigned policies are accepted: a demo, not a deployment).
            "policy_store": {"listen": listen, "path": "/policy", "store": "var/policies.db", "allow_unsigned": True},
            "psap_agents": {
                "listen": agents_listen,
                "ring_seconds": 0.3,
                "hold_seconds": 4.0,
                "faults": dict(faults or {}),
            },
        },
    }
    return parse_deployment(dump_deployment(Deployment.model_validate(data)))


def write_demo(
    target: Path,
    *,
    seed: int,
    n_towns: int,
    listen: str,
    console: Console,
    sip_listen: str = "127.0.0.1:5070",
    faults: dict[str, str] | None = None,
) -> tuple[Path, DemoState]:
    """Generate the state, write its GeoJSON and ``deployment.yaml`` under ``target``;
    return the file's path and the state."""
    from firebox.demo.state import generate_state

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("generating the demo state", total=2)
        state = generate_state(seed=seed, n_towns=n_towns)
        progress.advance(task)
        target.mkdir(parents=True, exist_ok=True)
        paths = state.write_geojson(target)
        progress.advance(task)
    dep = demo_deployment(state, paths, listen, sip_listen, faults=faults)
    out = target / "deployment.yaml"
    out.write_text(
        f"# Generated by `firebox demo` (seed {seed}, {n_towns} towns); edit freely.\n"
        + dump_deployment(dep),
        encoding="utf-8",
    )
    return out, state
