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
import secrets
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
LOG_DRAIN_SECONDS = 30.0

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
    #: The Logging Service's store (``elements.logging``; the first when there are several)
    #: and the ESRP's sender of log events.
    log_store: Any = None
    log_sender: Any = None
    #: Every Logging Service store this node runs, by the service's base URL.
    log_stores: dict[str, Any] = field(default_factory=dict)
    #: The ECRF's LoST log events (``firebox.ecrf.logevents.LostLogger``) and its sender.
    ecrf_log: Any = None
    ecrf_log_sender: Any = None
    #: The PSAP call handling element (``elements.call_handling``): the console's
    #: ``CallHandlingApi``; its i3 log events' logger and sender.
    call_handling: Any = None
    psap_log: Any = None
    psap_log_sender: Any = None
    #: The Policy Store's store (``elements.policy_store``) and the rule watches.
    policy_store: Any = None
    #: The CAD (``elements.cad``), its fire alarm box receiver and telegraph interface, and
    #: the console application (``elements.console``).
    cad: Any = None
    box_receiver: Any = None
    #: Walk-ins' i3 log events (the CAD's logger's sender) and the boxes' MQTT input.
    cad_log_sender: Any = None
    box_mqtt: Any = None
    #: Each PSAP's and agency's 10-digit lines (the ESRP's last resort, the status page).
    business_lines: Any = None
    #: The monitor (``elements.monitor``): started with the SIP elements.
    monitor: Any = None
    box_listener: Any = None
    console_app: Any = None
    #: The console's sessions on the cluster's database (``firebox.console.sessions_pg``).
    console_sessions: Any = None
    watches: list[Any] = field(default_factory=list)
    #: Safe rule changes (``elements.changes``), once the BCF + ESRP run.
    changes: Any = None
    #: The public status page's board and the business lines' gateway check
    #: (``elements.status_page``).
    status_board: Any = None
    line_checker: Any = None
    #: Public alerting (``elements.alerting``): the CAP alert service.
    alerts: Any = None
    #: The cluster (``cluster:``, issue 8): the bus (NATS JetStream), this node's beats and
    #: its view of the others, ESRP states and outage marks shared, peers' outages.
    bus: Any = None
    #: The BCF's screening answer for the calls it diverts as TDoS suspects.
    screening: Any = None
    membership: Any = None
    live: Any = None
    outage_feed: Any = None
    #: The demo page's "break something" controls (``firebox demo`` only).
    demo_faults: Any = None
    #: Background tasks of the running node (callback worklist delivery), cancelled at stop.
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    #: What the run's i3 logging did, for the summary: events logged (by element), rejected,
    #: and per Logging Service (``services``, by URL): delivered (before the stop; else kept
    #: in the spool), stored by this node's service there, and whether its chain verifies.
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

        # Its LoST log events once start_sip has started its logger (elements.log_events).
        routes.setdefault(els.ecrf.listen, []).extend(create_ecrf_app(node.ecrf, log=lambda: node.ecrf_log).routes)
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
    if els.cad is not None:
        from firebox.boxes.receiver import receiver_routes
        from firebox.cad.app import create_cad_app

        _build_cad(node)
        routes.setdefault(els.cad.listen, []).extend(create_cad_app(node.cad).routes)
        routes.setdefault(els.cad.listen, []).extend(receiver_routes(node.box_receiver))
    if els.monitor is not None:
        from firebox.monitor.http import monitor_routes

        routes.setdefault(els.monitor.listen, []).extend(monitor_routes(lambda: node.monitor))
    if els.changes is not None:
        from firebox.change.http import change_routes

        routes.setdefault(els.changes.listen, []).extend(change_routes(lambda: node.changes))
    if els.alerting is not None:
        from firebox.alerting.http import alerting_routes

        # The public views only (the list, each CAP message, the Atom feed): approving an
        # alert is a signed-in person's act, not an anonymous POST.
        public = [r for r in alerting_routes(lambda: node.alerts) if "POST" not in (getattr(r, "methods", None) or ())]
        routes.setdefault(els.alerting.listen, []).extend(public)
    if els.status_page is not None:
        from firebox.alerting.statuspage import status_routes

        title = els.status_page.title or f"{node.deployment.authority.name} 911 status"
        routes.setdefault(els.status_page.listen, []).extend(status_routes(lambda: node.status_board, title=title))
    if els.console is not None and node.cad is not None:
        from starlette.routing import Mount

        from firebox.alerting.http import AlertDesk
        from firebox.console.app import console_app
        from firebox.console.audit import ConsoleAudit
        from firebox.console.auth import load_users
        from firebox.console.resilience import resilience_source
        from firebox.web.page import towns_geojson

        cfg_console = els.console
        dep = node.deployment
        secret = dep.resolve(cfg_console.session_secret_file).read_bytes() if cfg_console.session_secret_file else None
        users = load_users([u.model_dump(exclude_none=True) for u in cfg_console.users])
        sessions = None
        if dep.cluster is not None and dep.cluster.database:
            from firebox.console.sessions_pg import PgSessions

            if secret is None:
                # A random key per node: a session started on one node would be refused by the others.
                log.warning("console: a cluster node without elements.console.session_secret_file: "
                            "consoles will have to sign in again when they move to another node")  # fmt: skip
            # Sessions on the shared database: a console moved to another node stays signed in.
            sessions = PgSessions(dep.cluster.database, secret or secrets.token_bytes(32), users=users)
        node.console_sessions = sessions
        node.console_app = console_app(
            cad=node.cad,
            users=users,
            sessions=sessions,
            audit=ConsoleAudit(_store_url(dep, cfg_console.audit)),
            gis=lambda: node.towns_geojson or towns_geojson(node),
            session_secret=secret,
            cad_poll_s=cfg_console.cad_poll_seconds,
            resilience=resilience_source(node),
            alerts=AlertDesk(lambda: node.alerts) if els.alerting is not None else None,
        )  # the call handling element is attached once start_sip has started it
        routes.setdefault(cfg_console.listen, []).append(Mount(cfg_console.path, app=node.console_app))
    cl = node.deployment.cluster
    if cl is not None:
        from firebox.cluster.http import cluster_routes

        # The cluster as this node sees it, on the node's own HTTP address.
        routes.setdefault(cl.this.http, []).extend(cluster_routes(lambda: node.membership, bus=None, config=cl))
    at_root: dict[str, Any] = {}
    for n, svc in enumerate(els.logging_services()):
        from starlette.routing import Mount

        from firebox.logging.service import create_app
        from firebox.logging.store import open_store

        store = node.log_stores[svc.url] = open_store(_store_url(node.deployment, svc.store))
        if node.log_store is None:
            node.log_store = store
        fqdn = _source(node.deployment, "logging" if n == 0 else f"logging{n + 1}")
        logging_app = create_app(store, fqdn=fqdn, allow_none=svc.allow_unsigned)
        if svc.path == "/":
            # Its paths (/LogEvents, /Versions...) sit at the root, behind every other route
            # on the same address.
            at_root[svc.listen] = Mount("/", app=logging_app)
        else:
            routes.setdefault(svc.listen, []).append(Mount(svc.path.rstrip("/"), app=logging_app))
    for listen, mount in at_root.items():
        routes.setdefault(listen, []).append(mount)
    return {listen: Starlette(routes=r) for listen, r in routes.items()}


def _build_cad(node: Node) -> None:
    """The CAD of ``elements.cad``: its SQLite store, the box registry, the fleet placed at
    the stations on first start (a restart keeps the units as they were), the LVF as its
    geocoder; and the fire alarm box receiver in front of it."""
    from firebox.boxes.receiver import BoxReceiver
    from firebox.boxes.telegraph import Timing
    from firebox.cad.data import load_boxes_geojson, load_stations_geojson, units_from_stations
    from firebox.cad.service import Cad, LvfGeocoder
    from firebox.cad.store import open_cad_store
    from firebox.location.shapes import Point

    dep = node.deployment
    cfg = dep.elements.cad
    assert cfg is not None
    f = cfg.box_fields
    boxes = (
        load_boxes_geojson(dep.resolve(cfg.boxes), number_field=f.number, location_field=f.location,
                           district_field=f.district, assignment_field=f.assignment)
        if cfg.boxes is not None else {}
    )  # fmt: skip
    stations = load_stations_geojson(dep.resolve(cfg.stations)) if cfg.stations is not None else []
    from firebox.cad.locate import LocationSearch, landmarks_from

    cad = Cad(
        # A cluster's nodes share one PostgreSQL (a dispatch locks what it reads: once only).
        open_cad_store(_shared_db(dep) or _store_url(dep, cfg.store)),
        fqdn=cfg.fqdn or _source(dep, "cad"),
        geocoder=LvfGeocoder(node.lvf) if node.lvf is not None else None,
        boxes=boxes,
        stations={s.id: Point(lat=s.lat, lon=s.lon) for s in stations},
        # Walk-ins: the console's location search validates through the LVF/ECRF (LoST).
        locator=LocationSearch(node.lvf, node.ecrf, landmarks=landmarks_from(boxes, stations)),
    )
    if stations and not cad.units():
        cad.add_units(units_from_stations(stations), datetime.now(UTC), "firebox (deployment)")
    node.cad = cad
    node.box_receiver = BoxReceiver(cad, clock=lambda: datetime.now(UTC), timing=Timing(period=cfg.box_period_seconds))


async def start_boxes(node: Node, console: Console | None = None) -> None:
    """The telegraph interface (``elements.cad.box_pulses_listen``): started before the SIP
    elements and independent of them, so box alarms reach the CAD while SIP is down."""
    dep = node.deployment
    cfg = dep.elements.cad
    if cfg is None or node.box_receiver is None:
        return
    if dep.elements.log_events is not None and node.cad is not None and node.cad_log_sender is None:
        from firebox.cad.logevents import CadLogger

        # Walk-ins are logged like calls (i3 log events to the Logging Services).
        node.cad_log_sender = _log_sender(node, "cad")
        node.cad.log = CadLogger(node.cad_log_sender, element_id=node.cad.fqdn, agency_id=dep.authority.domain)
    if cfg.box_mqtt is not None and node.box_mqtt is None:
        from firebox.boxes.mqtt import MqttBoxInput

        m = cfg.box_mqtt
        key = dep.resolve(m.hmac_key_file).read_bytes().strip() if m.hmac_key_file else None
        claims, owner = None, None
        if dep.cluster is not None:
            # Every node receives every box message (its own session): one claims each alarm.
            owner = dep.cluster.node_id
            if dep.cluster.database:
                from firebox.cluster.once import PgClaims

                claims = PgClaims(dep.cluster.database)
        node.box_mqtt = MqttBoxInput(
            node.box_receiver, url=m.url, topic=m.topic, hmac_key=key,
            client_id=m.client_id or f"firebox-boxes-{_source(dep, 'cad')}" + (f"-{owner}" if owner else ""),
            claims=claims, owner=owner,
        )  # fmt: skip
        node.box_mqtt.start()
        if console is not None:
            console.print(f"[green]fire alarm boxes over MQTT[/green]: {m.url} topic {m.topic}")
    if cfg.box_pulses_listen is None:
        return
    from firebox.boxes.receiver import PulseListener

    host, port = _split_listen(cfg.box_pulses_listen)
    node.box_listener = await PulseListener.listen(node.box_receiver, host, port)
    if console is not None:
        console.print(
            f"[green]fire alarm telegraph[/green] on udp {host}:{node.box_listener.port} "
            f"({len(node.cad.boxes)} boxes)"
        )


def _shared_db(dep: Deployment) -> str | None:
    """The cluster's PostgreSQL, where durable records are shared (None: one node)."""
    return dep.cluster.database if dep.cluster is not None else None


def cluster_resolver(dep: Deployment, transports: tuple[str, ...]) -> Any:
    """RFC 3263 over the cluster's nodes (``cluster.nodes`` as SRV data for
    ``cluster.name``), for a user agent or element listening on ``transports``; None
    without a cluster."""
    if dep.cluster is None:
        return None
    from firebox.sip.resolve import SipResolver, StaticRecords

    records = StaticRecords.for_cluster(dep.cluster.name, dep.cluster.nodes, transports=("udp", "tcp"))
    return SipResolver(records, transports=transports)


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
                "allow_unsigned": cfg.allow_unsigned, "interval": cfg.interval_seconds,
                # Every install is a configuration change the detector can name as a cause.
                "on_install": lambda cid: node.monitor.config_change(cid) if node.monitor is not None else None}  # fmt: skip

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
    return [svc.url for svc in els.logging_services()]


# --- running ------------------------------------------------------------------------------


def _node_server_class() -> Any:
    import uvicorn

    class NodeServer(uvicorn.Server):
        """uvicorn's server without its own signal handling: uvicorn re-raises a captured
        SIGTERM once its server has shut down, which killed the process before the node had
        stopped (no goodbye to the cluster, calls and log senders cut). The node handles the
        signals itself (``_serve``)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    return NodeServer


async def _serve(node: Node, console: Console, duration: float | None, caller_rate: float) -> None:
    import uvicorn

    _NodeServer = _node_server_class()
    servers = []
    for listen, app in node.apps.items():
        host, _, port = listen.rpartition(":")
        config = uvicorn.Config(
            app, host=host, port=int(port), log_level="warning", access_log=False, lifespan="off"
        )
        servers.append(_NodeServer(config))
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    # One SIGINT/SIGTERM stops every server, then the node stops in order below (it leaves
    # the cluster, its calls and log senders end); a second one hurries the servers.
    loop = asyncio.get_running_loop()
    signalled: list[int] = []

    def on_signal(sig: int) -> None:
        signalled.append(sig)
        for s in servers:
            s.force_exit = len(signalled) > 1
            s.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            for t in tasks:
                exc = t.exception() if t.done() else None
                if exc is not None and not isinstance(exc, SystemExit):
                    raise exc
            # uvicorn exits (SystemExit) when it cannot bind; it has logged why.
            for t in tasks:
                t.cancel()
            raise SystemExit(f"a server could not start on {', '.join(node.apps)} (is the address in use?)")
        await asyncio.sleep(0.05)
    for listen in node.apps:
        console.print(f"[green]serving[/green] http://{listen}/")
    http = None
    lookups: asyncio.Task[None] | None = None
    calls: asyncio.Task[None] | None = None
    stop = asyncio.Event()
    try:
        await start_boxes(node, console)
        http = await start_sip(node, console)
        if caller_rate > 0 and node.callers and node.deployment.elements.ecrf:
            lookups = asyncio.create_task(_caller_load(node, caller_rate))
        if caller_rate > 0 and node.callers and node.core is not None:
            calls = asyncio.create_task(_call_load(node, caller_rate, stop))
        serving = asyncio.gather(*tasks)
        if duration is None:
            await serving
        else:
            await asyncio.wait({serving}, timeout=duration)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        if signalled and console is not None:
            console.print(f"stopping ({signal.Signals(signalled[0]).name})")
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
        if node.box_listener is not None:
            node.box_listener.close()
        if http is not None:
            await http.aclose()
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        if node.policy_store is not None:
            node.policy_store.close()
        services = node.log_figures.setdefault("services", {}) if node.log_stores else {}
        for url, store in node.log_stores.items():
            figures = services.setdefault(url, {})
            figures["stored"], figures["chain_ok"] = store.count(), store.verify() is None
            store.close()


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def start_sip(node: Node, console: Console | None = None) -> Any:
    """Start the SIP elements the deployment names: the PSAP user agents (for the PSAPs
    marked ``simulated``), then the BCF + ESRP (``EmergencyCore``). Returns the HTTP client
    the ESRP dereferences location URIs with (the caller closes it), or None."""
    dep = node.deployment
    els = dep.elements
    if els.log_events is not None and node.ecrf is not None and node.ecrf_log is None:
        from firebox.ecrf.logevents import LostLogger

        node.ecrf_log_sender = _log_sender(node, "ecrf")
        node.ecrf_log = LostLogger(node.ecrf_log_sender, element_id=_source(dep, "ecrf"), agency_id=dep.authority.domain)
    if els.psap_agents is not None and els.psap_agents.remote is None:
        from firebox.psap.ua import AgentMode, PsapAgents, Queue

        cfg = els.psap_agents
        # Simulated PSAPs, and the business lines of those the call handling element answers
        # (the agents stand in for the PSTN gateway; their queue URIs go to call handling).
        handled = set(els.call_handling.psaps) if els.call_handling is not None else set()
        queues = [
            Queue(p.id, p.uri, p.name, p.business_line, AgentMode(cfg.faults.get(p.id, "answer")))
            for p in dep.psaps
            if p.simulated or p.id in handled
        ]
        host, port = _split_listen(cfg.listen)
        node.agents = PsapAgents(queues, host=host, port=port, ring_seconds=cfg.ring_seconds, hold_seconds=cfg.hold_seconds,
                                 resolver=cluster_resolver(dep, ("udp",)))  # fmt: skip
        try:
            await node.agents.start()
        except OSError as exc:
            node.agents = None
            raise SystemExit(f"the PSAP agents could not listen on {cfg.listen} (udp): {exc.strerror or exc}") from None
        if console is not None:
            console.print(f"[green]PSAP agents[/green] for {len(queues)} PSAP queues on sip:{host}:{node.agents.port} (udp)")
    if els.call_handling is not None:
        await _start_call_handling(node, console)
        if node.console_app is not None:
            node.console_app.state.console.attach_call_handling(node.call_handling)
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
        if node.ecrf_log is not None:
            from firebox.ecrf.logevents import LoggedEcrf

            # The ECRF logs its part of each call too, under the call's i3 identifiers.
            lost = LoggedEcrf(lost, lambda: node.ecrf_log, lambda: _current_call_ids(node))
    http = httpx.AsyncClient(timeout=esrp.held_timeout_seconds)
    if node.call_handling is not None:
        node.call_handling.http = http  # location and additional data by reference
    chains = chains_from_deployment(dep, esrp.pstn_gateway, default_psap=esrp.default_psap)
    from firebox.alerting.businesslines import BusinessLineRegistry, RegistryLastResort

    sp = els.status_page
    node.business_lines = BusinessLineRegistry.from_deployment(
        dep, dep.resolve(sp.business_lines) if sp is not None and sp.business_lines else None
    )
    # The last resort: the registry's lines answered now, over a gateway route that is up.
    last_resort = RegistryLastResort(
        node.business_lines, esrp.pstn_gateway,
        lambda: node.line_checker.check.healths() if node.line_checker is not None else {},
    )  # fmt: skip
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
        last_resort=last_resort,
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
        # In a cluster: Record-Route with the cluster's name, so that any live node carries
        # a call's later requests (RFC 3263 over the nodes' SRV data).
        cluster_name=dep.cluster.name if dep.cluster is not None else None,
        sip_resolver=cluster_resolver(dep, tuple(bcf.transports)),
    )
    if dep.cluster is not None and dep.cluster.database:
        from firebox.esrp.worklist import Worklist, open_worklist_store

        # Callbacks outlive this node; delivery claims each entry (one callback made once).
        node.core.worklist = Worklist(open_worklist_store(dep.cluster.database), node=dep.cluster.node_id)
    try:
        await node.core.start()
    except OSError as exc:
        await http.aclose()
        node.core = None
        raise SystemExit(f"the BCF could not listen on {bcf.listen} ({'/'.join(bcf.transports)}): {exc.strerror or exc}") from None
    _start_watches(node)
    await _start_cluster(node, console)
    if console is not None:
        console.print(
            f"[green]BCF + ESRP[/green] listening on sip:{node.core.advertised_host}:{node.core.port} "
            f"({', '.join(bcf.transports)}); send INVITE urn:service:sos"
        )
    await start_monitor(node, console)
    await _start_screening(node)
    node.tasks.append(asyncio.create_task(_deliver_worklist(node), name="worklist-delivery"))
    _start_changes(node, console)
    await _start_status_page(node, console)
    _start_alerting(node, console)
    return http


def _start_alerting(node: Node, console: Console | None) -> None:
    """CAP alerts drafted from the monitor's outages (``elements.alerting``) over the towns
    of the GIS (the police boundaries, one per town, as the status page)."""
    cfg = node.deployment.elements.alerting
    if cfg is None or node.monitor is None:
        return
    import functools

    from firebox.alerting.drafts import AlertArea, AlertManager, AlertPolicy, AlertPsap, AlertTown
    from firebox.alerting.publish import AlertLogger, AlertService, AtomFeed, SpoolIpawsAdapter, WebhookPublisher
    from firebox.alerting.store import open_alert_store
    from firebox.cap import dsig

    dep = node.deployment
    domain = dep.authority.domain
    towns = {t.id: AlertTown(t.id, t.name, t.geometry, t.psap_id) for t in _towns(node)}
    regions = dep.elements.monitor.regions if dep.elements.monitor is not None else {}
    area = AlertArea(dep.authority.name, towns, {p.id: AlertPsap(p.id, p.name, p.business_line) for p in dep.psaps},
                     regions=regions, elements={f"esrp.{domain}": frozenset(p.id for p in dep.psaps)},
                     state_same=cfg.state_same)  # fmt: skip
    signer = None
    if cfg.signing_key is not None and cfg.certificate is not None:
        signer = functools.partial(dsig.sign, key_pem=dep.resolve(cfg.signing_key).read_bytes(),
                                   cert_pem=dep.resolve(cfg.certificate).read_bytes())  # fmt: skip
    policy = AlertPolicy(cfg.sender or f"alerts@{domain}", auto_send_statewide=cfg.auto_send_statewide,
                         two_person=cfg.two_person)  # fmt: skip
    host = cfg.listen.replace("0.0.0.0", "127.0.0.1")
    feed = AtomFeed(f"tag:{domain},2026:alerts", f"{dep.authority.name} 911 public alerts", dep.authority.name,
                    f"http://{host}/alerts")  # fmt: skip
    ipaws = SpoolIpawsAdapter(dep.resolve(cfg.ipaws_spool)) if cfg.ipaws_spool is not None else None
    logger = AlertLogger(node.log_sender, element_id=_source(dep, "alerting"), agency_id=domain) if node.log_sender else None
    db = _shared_db(dep)
    manager = AlertManager(area, policy, signer=signer, store=open_alert_store(db) if db else None,
                           node=dep.cluster.node_id if db and dep.cluster else None)  # fmt: skip
    node.alerts = AlertService(manager, feed,
                               webhooks=[WebhookPublisher(str(u)) for u in cfg.webhooks], ipaws=ipaws, logger=logger)  # fmt: skip
    node.monitor.listeners.append(node.alerts.listener)
    node.alerts.start()
    if console is not None:
        how = "statewide ones sent at once, others on approval" if cfg.auto_send_statewide else "each on approval"
        console.print(f"[green]public alerts[/green]: CAP 1.2 drafts for {len(towns)} towns ({how}); /alerts/feed")


def _start_changes(node: Node, console: Console | None) -> None:
    """Safe rule changes over the running BCF and ESRP (``elements.changes``), signed with
    the node's log signing key when it has one."""
    cfg = node.deployment.elements.changes
    if cfg is None or node.core is None:
        return
    from firebox.change.apply import ChangeManager
    from firebox.change.core import ChangeKind
    from firebox.change.store import open_change_store

    dep = node.deployment
    els = dep.elements
    domain = dep.authority.domain
    targets: dict[ChangeKind, str] = {}
    if els.bcf is not None and els.bcf.policy is not None:
        targets[ChangeKind.BCF] = els.bcf.policy.policy_id
    if els.esrp is not None and els.esrp.policy is not None:
        targets[ChangeKind.ROUTING] = els.esrp.policy.policy_id
    sources = dict(els.bcf.sources) if els.bcf is not None else {}
    # The monitor's test calls enter from this host: the canary ingress "bcf.<domain>" is
    # the source the BCF gives that address.
    probe_source = node.core.bcf.source_of("127.0.0.1")
    key = _signing_key(node)
    node.changes = ChangeManager(
        open_change_store(_shared_db(dep) or _store_url(dep, cfg.store)), sources=sources, bcf=node.core.bcf, router=node.core.router,
        monitor=node.monitor, log_sender=node.log_sender, log_store=node.log_store, targets=targets,
        key=key, element_id=f"esrp.{domain}", agency_id=domain,
        ingress_sources={f"bcf.{domain}": probe_source},
    )  # fmt: skip
    node.changes.start(interval=cfg.guard_period_seconds)
    # One path for rule changes: a Policy Store version goes through the change system too
    # (the invariant, the guard; deferred while a canary runs).
    for watch in node.watches:
        kind = next((k for k, pid in targets.items() if pid == watch.policy_id), None)
        if kind is not None:
            watch.gate = node.changes.gate(kind)
    if console is not None:
        console.print("[green]rule changes[/green]: /changes (firebox change ...); every change checked against the 911 invariant")


async def _start_status_page(node: Node, console: Console | None) -> None:
    """The public status page's board (towns from the GIS, stations and boxes from the
    CAD's files), fed by the monitor's outages; the business lines' gateway check."""
    cfg = node.deployment.elements.status_page
    if cfg is None or node.monitor is None:
        return
    from firebox.alerting.businesslines import BusinessLineRegistry, GatewayCheck, GatewayChecker

    dep = node.deployment
    registry = node.business_lines or BusinessLineRegistry.from_deployment(
        dep, dep.resolve(cfg.business_lines) if cfg.business_lines else None
    )
    board = _status_board(node, registry)
    for outage in node.monitor.detector.outages():
        board.apply_outage(outage.as_dict(), time.time())
    node.monitor.listeners.append(lambda update: board.apply_outage(update.outage, time.time()))
    node.status_board = board
    gateway = dep.elements.esrp.pstn_gateway if dep.elements.esrp is not None else None
    if cfg.check_period_seconds and gateway:
        period = cfg.check_period_seconds
        check = GatewayCheck(registry.uris(gateway), period=period, timeout=min(5.0, period), start=time.time())
        node.line_checker = GatewayChecker(
            check, resolve=sip_resolver(node),
            on_change=lambda change: board.set_line_health(change.number, change.new, time.time()),
        )  # fmt: skip
        await node.line_checker.start()
    if console is not None:
        lines = f"{len(registry)} business lines" + (f", routes checked every {cfg.check_period_seconds:g} s" if node.line_checker else "")
        console.print(f"[green]status page[/green]: /status/ ({len(board.records)} towns; {lines})")


@dataclass(frozen=True, slots=True)
class _Town:
    id: str
    name: str
    psap_id: str
    geometry: Any
    point: Any  # a point inside it


def _towns(node: Node) -> list[_Town]:
    """The towns the public pages and alerts speak of: the police boundaries (one per town,
    as the console's map draws them), named by their town attribute when the layer has one;
    each town's PSAP is the one whose ``urn:service:sos`` boundary holds it."""
    import shapely

    layer = node.index.layer("urn:service:sos.police") or node.index.layer("urn:service:sos")
    sos = node.index.layer("urn:service:sos")
    if layer is None or sos is None:
        return []
    psap_by_uri = {p.uri: p.id for p in node.deployment.psaps}
    reps = shapely.point_on_surface(layer.geometries)
    found = sos.locate_xy(shapely.get_x(reps), shapely.get_y(reps))
    towns = []
    for i, b in enumerate(layer.boundaries):
        psap_id = psap_by_uri.get(sos.boundaries[found[i]].uri) if found[i] >= 0 else None
        if psap_id is not None:
            towns.append(_Town(str(b.attrs.get("town_id") or b.id), str(b.attrs.get("town") or b.name), psap_id,
                               b.geometry, reps[i]))  # fmt: skip
    return towns


def _status_board(node: Node, registry: Any) -> Any:
    from firebox.alerting.status import BoxInfo, PsapInfo, StationInfo, StatusBoard, TownInfo
    from firebox.cad.data import load_stations_geojson

    dep = node.deployment
    towns = [TownInfo(t.id, t.name.title(), t.psap_id, t.point.x, t.point.y) for t in _towns(node)]
    psaps = [PsapInfo(p.id, p.name, tuple(p.alternates)) for p in dep.psaps]
    stations: list[StationInfo] = []
    boxes: list[BoxInfo] = []
    cad = dep.elements.cad
    if cad is not None and cad.stations is not None:
        stations = [StationInfo(s.id, s.kind, s.name, "", "", s.lon, s.lat)
                    for s in load_stations_geojson(dep.resolve(cad.stations))]  # fmt: skip
    if node.cad is not None:
        for box in node.cad.boxes.values():
            if box.number.isdigit():
                boxes.append(BoxInfo(int(box.number), box.location, "", box.town or "", box.point.lon, box.point.lat))
    regions = dep.elements.monitor.regions if dep.elements.monitor is not None else {}
    return StatusBoard(towns, psaps, registry, regions=regions, stations=stations, boxes=boxes, now=time.time())


#: How often the ESRP's callback worklist is offered to the PSAPs that are reachable again.
WORKLIST_PERIOD = 1.0


async def _deliver_worklist(node: Node) -> None:
    """Calls the ESRP could not connect go onto their PSAP's callback list as soon as that
    PSAP is reachable (no outage mark, no unusable state): checked every second."""
    from firebox.esrp.states import Availability
    from firebox.esrp.worklist import deliver_due

    assert node.core is not None
    router = node.core.router

    def reachable(psap_id: str) -> bool:
        chain = router.chains.get(psap_id)
        if chain is None:
            return False
        verdict = router.states.destination_verdict(chain.uri, datetime.now(UTC), element_id=chain.element_id,
                                                    service_domain=chain.service_domain)  # fmt: skip
        return verdict.availability is not Availability.UNUSABLE

    while True:
        await asyncio.sleep(WORKLIST_PERIOD)
        handling = node.call_handling
        if handling is None or not node.core.worklist.pending():
            continue
        takers = {p.id: handling for p in handling.psaps()}
        for entry in deliver_due(node.core.worklist, reachable, takers, time.time()):
            log.warning("worklist: %s (%s, call %s) delivered to %s's callback list", entry.id, entry.reason.value,
                        entry.call_id, entry.owner)  # fmt: skip


async def _start_call_handling(node: Node, console: Console | None) -> None:
    """The PSAP call handling element for the PSAPs ``elements.call_handling`` names, with
    its simulated call-takers signed in; i3 log events when ``elements.log_events`` is set."""
    from firebox.psap.api import RingStrategy
    from firebox.psap.callhandling import PositionSetup, PsapSetup
    from firebox.psap.element import CallHandlingElement

    dep = node.deployment
    cfg = dep.elements.call_handling
    assert cfg is not None
    setups = []
    for psap_id, pc in cfg.psaps.items():
        p = dep.psap(psap_id)
        assert p is not None  # deployment cross-check
        positions = tuple(PositionSetup(x.id, x.auto_answer_seconds, x.talk_seconds) for x in pc.positions)
        setups.append(PsapSetup(p.id, p.uri, p.name, positions, RingStrategy(pc.strategy), pc.max_queue,
                                pc.overflow_after_seconds, pc.ring_no_answer_seconds))  # fmt: skip
    try:
        from firebox.psap.logevents import PsapLogger
    except ImportError:  # (written in parallel; until it lands the element logs nothing)
        PsapLogger = None  # noqa: N806
        log.warning("firebox.psap.logevents is not available: the call handling element sends no i3 log events")
    if dep.elements.log_events is not None and node.psap_log is None and PsapLogger is not None:
        node.psap_log_sender = _log_sender(node, "psap")
        # The call's story (queue, answer, transfer, release...); its SIP messages are the
        # ones the ESRP already logs on its hop, so they are not logged a second time here.
        node.psap_log = PsapLogger(node.psap_log_sender, element_id=_source(dep, "psap"), agency_id=dep.authority.domain,
                                   log_signaling=False)  # fmt: skip
    host, port = _split_listen(cfg.listen)
    element = CallHandlingElement(
        setups, host=host, port=port, directory={p.id: p.uri for p in dep.psaps}, media_mode=cfg.media,
        record_dir=dep.resolve(cfg.record_dir) if cfg.record_dir is not None else None, logger=node.psap_log,
    )  # fmt: skip
    if dep.cluster is not None:
        # Its BYEs and transfers go out along the cluster's name, to whichever node answers.
        element.core.resolver = cluster_resolver(dep, tuple(element.transports))
    try:
        await element.start()
    except OSError as exc:
        raise SystemExit(f"the call handling element could not listen on {cfg.listen} (udp): {exc.strerror or exc}") from None
    node.call_handling = element
    if console is not None:
        console.print(f"[green]PSAP call handling[/green] for {len(setups)} PSAPs on sip:{host}:{element.port} (udp)")


def sip_resolver(node: Node) -> Any:
    """Where the ESRP sends each destination: a simulated PSAP's queue (and the PSTN
    gateway, for their business lines) to the PSAP agents; anything else by its own URI."""
    from firebox.sip.address import SipUri, parse_uri
    from firebox.sip.errors import SipParseError

    dep = node.deployment
    remote = dep.elements.psap_agents.remote if dep.elements.psap_agents is not None else None
    agents = node.agents.address if node.agents is not None else None
    if remote is not None:
        agents = (*_split_listen(remote), "udp")
    esrp = dep.elements.esrp
    gateway = esrp.pstn_gateway.rsplit(":", 1)[0].lower() if esrp is not None else None
    simulated = {p.uri for p in dep.psaps if p.simulated}
    handling = node.call_handling
    cfg = dep.elements.call_handling
    handled = {p.uri for p in dep.psaps if cfg is not None and p.id in cfg.psaps}

    def resolve(uri: str) -> tuple[str, int, str] | None:
        if handling is not None and uri in handled:
            return handling.address
        if agents is None:
            return None
        if uri in simulated:
            return agents
        try:
            parsed = parse_uri(uri)
        except SipParseError:
            return None
        if isinstance(parsed, SipUri) and parsed.host.lower() == gateway:
            return agents
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


def _current_call_ids(node: Node) -> tuple[str | None, str | None]:
    call_log = node.core.call_log if node.core is not None else None
    return call_log.current_ids() if call_log is not None else (None, None)


def _call_logger(node: Node) -> Any:
    """The ESRP's i3 log events: a ``CallLogger`` over a ``LogSender``."""
    from firebox.esrp.logevents import CallLogger

    dep = node.deployment
    assert dep.elements.log_events is not None
    node.log_sender = _log_sender(node, "esrp")
    return CallLogger(node.log_sender, element_id=_source(dep, "esrp"), agency_id=dep.authority.domain,
                      signaling=dep.elements.log_events.signaling)  # fmt: skip


def _signing_key(node: Node) -> Any:
    """The node's signing key (``elements.log_events.signing_key``), or None."""
    cfg = node.deployment.elements.log_events
    if cfg is None or cfg.signing_key is None:
        return None
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(node.deployment.resolve(cfg.signing_key).read_bytes(), password=None)


def _log_sender(node: Node, element: str) -> Any:
    """A started ``LogSender`` for ``element`` (``esrp``, ``ecrf``): to every Logging
    Service of ``elements.log_events``, signed when the deployment gives a key, with its own
    durable spool under the configured one."""
    from firebox.logging.sender import LogSender

    dep = node.deployment
    cfg = dep.elements.log_events
    assert cfg is not None
    key = _signing_key(node)
    x5c = None
    if cfg.signing_key is not None:
        from cryptography import x509

        if cfg.certificate is not None:
            x5c = x509.load_pem_x509_certificates(dep.resolve(cfg.certificate).read_bytes())
    spool = dep.resolve(cfg.spool) / element
    spool.mkdir(parents=True, exist_ok=True)
    sender = LogSender(log_event_urls(dep), str(spool), key, _source(dep, element), x5c=x5c)  # type: ignore[arg-type]
    sender.start()
    return sender


async def _start_screening(node: Node) -> None:
    """The BCF's conditions (a TDoS, its call identifiers failing) go to the detector; the
    calls it diverts as TDoS suspects get the screening answer (with a callback record;
    other diverted calls go on as before); an attack ends in quiet, so the BCF's clock
    ticks every second."""
    core = node.core
    assert core is not None
    if node.monitor is not None:
        core.bcf.on_condition(node.monitor.condition)
    from firebox.bcf.screening import ScreeningService

    host = core.advertised_host if core.advertised_host not in ("0.0.0.0", "::") else "127.0.0.1"
    node.screening = ScreeningService(host, 0)
    await node.screening.start()
    core.screen_to = node.screening.uri

    async def tick() -> None:
        while True:
            await asyncio.sleep(1.0)
            core.bcf.tick(time.monotonic())

    node.tasks.append(asyncio.create_task(tick(), name="bcf-tick"))


async def _start_cluster(node: Node, console: Console | None) -> None:
    """Join the cluster (``cluster:``): the bus on NATS JetStream, this node's heartbeats
    and its view of the others, and the ESRP's states and outage marks shared with them."""
    cl = node.deployment.cluster
    if cl is None or node.core is None:
        return
    import firebox
    from firebox.cluster.bus import NatsBus
    from firebox.cluster.live import LiveState
    from firebox.cluster.membership import Membership

    els = node.deployment.elements
    serving = [name for name in ("bcf", "esrp", "ecrf", "lis", "policy_store", "logging", "call_handling", "cad",
                                 "console", "monitor", "status_page", "alerting") if getattr(els, name, None) is not None]  # fmt: skip
    core = node.core
    node.bus = NatsBus(cl.nats, cl.name, node_id=cl.node_id)
    try:
        await node.bus.start()
    except ConnectionError as exc:
        raise SystemExit(f"cluster: NATS at {cl.nats} does not answer ({exc}); a cluster node needs it") from None
    node.membership = Membership(node.bus, cl.node_id, heartbeat_seconds=cl.heartbeat_seconds, describe=lambda: {
        "serving": serving, "sip": cl.this.sip, "http": cl.this.http,
        "load": {"calls_in": core.stats["calls_in"]},
        "version": firebox.__version__,
    })  # fmt: skip
    await node.membership.start()
    node.live = LiveState(node.bus, cl.node_id, core.router.states, view=node.membership.view)
    await node.live.start()
    if console is not None:
        console.print(f"[green]cluster[/green] {cl.name}: node {cl.node_id} of {len(cl.nodes)}, NATS {cl.nats}"
                      + (", records on PostgreSQL" if cl.database else ""))  # fmt: skip


async def _share_outages(node: Node, monitor: Any) -> None:
    """This node's outages to the others and theirs to this node's status page; a peer
    node found dead (not this node cut off) is an element outage the detector reports."""
    from firebox.cluster.live import OutageFeed
    from firebox.cluster.membership import Health

    cl = node.deployment.cluster
    assert cl is not None and node.membership is not None
    node.outage_feed = OutageFeed(node.bus, cl.node_id)
    monitor.listeners.append(node.outage_feed.listener)

    def peer_outage(update: Any) -> None:
        if node.status_board is not None:
            node.status_board.apply_outage(update.outage, time.time())

    node.outage_feed.listeners.append(peer_outage)
    await node.outage_feed.start()

    def node_health(change: Any) -> None:
        if change.node_id != cl.node_id and not change.isolated and change.after in (Health.DEAD, Health.ALIVE):
            monitor.state("element", f"firebox-node:{change.node_id}", "Down" if change.after is Health.DEAD else "Normal")

    node.membership.view.listeners.append(node_health)


async def _bounded(step: Any, seconds: float, what: str) -> None:
    """Run a stop step for at most ``seconds``: a peer or NATS that does not answer must not
    keep the node from stopping (the step is cancelled, not awaited further, and logged)."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        log.warning("cluster: %s did not finish within %g s; left behind", what, seconds)
    elif task.exception() is not None:
        log.warning("cluster: %s failed: %s", what, task.exception())


async def _stop_cluster(node: Node) -> None:
    if node.outage_feed is not None:
        await _bounded(node.outage_feed.stop(), 5.0, "stopping the outage feed")
        node.outage_feed = None
    if node.live is not None:
        await _bounded(node.live.stop(), 5.0, "stopping the live state")
        node.live = None
    if node.membership is not None:
        await _bounded(node.membership.stop(leave=True), 5.0, "leaving the cluster")
        node.membership = None
    if node.bus is not None:
        await _bounded(node.bus.close(), 10.0, "closing the bus")
        node.bus = None


async def start_monitor(node: Node, console: Console | None = None) -> None:
    """The monitor of ``elements.monitor``, once the BCF + ESRP run: a tap on every
    element's i3 log events (the watch), and test calls through the BCF to every PSAP."""
    cfg = node.deployment.elements.monitor
    if cfg is None or node.core is None:
        return
    from firebox.monitor.notify import NotifyConfig
    from firebox.monitor.routing import OutageRouting
    from firebox.monitor.service import Monitor, config_from_node

    host, port = _split_listen(cfg.smtp)
    notify = NotifyConfig(
        webhooks=tuple(str(u) for u in cfg.webhooks), emails=tuple(cfg.emails), smtp=(host, port),
        provider=node.deployment.authority.name,
    )  # fmt: skip
    config = config_from_node(node, regions=cfg.regions, notify=notify, probe_period=cfg.probe_period_seconds or 1.0)
    if not cfg.probe_period_seconds:
        config.targets = []
    monitor = Monitor(config)
    # The detector's PSAP and region outages steer the ESRP's routing at once.
    monitor.listeners.append(OutageRouting(node.core.router.states, config.psaps, config.regions))
    if node.core.call_log is not None:
        # The ESRP's events tell each call's whole path (entered, routed, failed over,
        # answered, ended): what the watch counts. Without i3 logging it sees probes only.
        node.core.call_log.sender = monitor.tap(node.core.call_log.sender)
    await monitor.start()
    node.monitor = monitor
    if node.bus is not None:
        await _share_outages(node, monitor)
    if console is not None:
        probes = f"a test call to each of {len(config.targets)} PSAPs every {cfg.probe_period_seconds:g} s" if config.targets else "no test calls"
        console.print(f"[green]monitor[/green]: watching every call's log events; {probes}")


async def stop_sip(node: Node) -> None:
    if node.demo_faults is not None:
        node.demo_faults.close()
    if node.alerts is not None:
        await node.alerts.aclose()
    if node.changes is not None:
        await node.changes.stop()
    if node.line_checker is not None:
        await node.line_checker.close()
    for task in node.tasks:
        task.cancel()
    for task in node.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    node.tasks.clear()
    for watch in node.watches:
        await watch.stop()
    node.watches.clear()
    if node.monitor is not None:
        await node.monitor.stop(drain=5.0)
    if node.console_app is not None:
        await node.console_app.state.console.aclose()  # its live streams end
    if node.console_sessions is not None:
        node.console_sessions.close()
        node.console_sessions = None
    if node.call_handling is not None:
        await node.call_handling.close()  # its BYEs go out through the ESRP, still up
    if node.core is not None:
        await node.core.close()  # spools what its call logger still holds
    if node.agents is not None:
        await node.agents.close()
    if node.screening is not None:
        await node.screening.close()
        node.screening = None
    if node.box_mqtt is not None:
        await node.box_mqtt.aclose()
        if node.box_mqtt.claims is not None:
            node.box_mqtt.claims.close()
        node.box_mqtt = None
    await _stop_cluster(node)
    await _stop_log_senders(node)


async def _stop_log_senders(node: Node) -> None:
    """Deliver what the run logged (bounded); the rest stays in the spools for next time.
    Records, per element, the events logged and, per Logging Service, whether every one
    reached it."""
    call_log = node.core.call_log if node.core is not None else None
    senders = [(name, logger, sender) for name, logger, sender in (
        ("ESRP", call_log, node.log_sender), ("ECRF", node.ecrf_log, node.ecrf_log_sender),
        ("PSAP call handling", node.psap_log, node.psap_log_sender),
        ("CAD", node.cad.log if node.cad is not None else None, node.cad_log_sender)) if sender is not None]  # fmt: skip
    if not senders:
        return
    logged = node.log_figures.setdefault("logged", {})
    services = node.log_figures.setdefault("services", {})

    async def drain(logger: Any, sender: Any) -> None:
        if logger is not None:
            await logger.flush()
        await sender.drain()

    # The senders drain side by side (each delivers in order), within one bound for all.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LOG_DRAIN_SECONDS):
            await asyncio.gather(*(drain(logger, sender) for _, logger, sender in senders))
    for name, logger, sender in senders:
        logged[name] = len(logger.sent) if logger is not None else 0
        node.log_figures["rejected"] = node.log_figures.get("rejected", 0) + len(sender.rejections)
        for url in sender.urls:
            figures = services.setdefault(url, {"delivered": True})
            figures["delivered"] = figures["delivered"] and sender.backlog(url) == 0
        await sender.aclose()
    node.log_sender = node.ecrf_log_sender = node.ecrf_log = None
    node.psap_log = node.psap_log_sender = None
    if node.cad is not None:
        node.cad.log = None
    node.cad_log_sender = None
    node.log_figures["delivered"] = all(f["delivered"] for f in services.values())


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
            except asyncio.CancelledError:
                stats.sent -= 1  # cut off by the end of the run: neither answered nor failed
                raise
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


def print_log_summary(node: Node, console: Console) -> None:
    """The run's i3 logging: events logged by each element, then per Logging Service what
    reached it before the stop, what it holds and whether its hash chain verifies."""
    f = node.log_figures
    if not f:
        return
    logged = f.get("logged", {})
    console.print(
        "i3 log events: "
        + (", ".join(f"{n} logged by the {name}" for name, n in logged.items()) or "none logged")
        + (f"; {f['rejected']} rejected" if f.get("rejected") else ""),
        highlight=False,
    )
    for url, s in f.get("services", {}).items():
        parts = []
        if "delivered" in s:
            parts.append("all delivered" if s["delivered"] else "not all delivered before the stop (kept in the spool)")
        if "stored" in s:
            parts.append(f"holds {s['stored']}, hash chain " + ("verified" if s["chain_ok"] else "BROKEN"))
        console.print(f"  Logging Service {url}: {'; '.join(parts)}", highlight=False)


def psap_call_counts(node: Node) -> list[dict[str, Any]]:
    """Per PSAP: calls its agent was offered / answered / saw end (when simulated), and
    what the ESRP saw of its queue: tried, answered, failed (each failure a failover)."""
    dep = node.deployment
    agents = node.agents.counts if node.agents is not None else {}
    core = node.core.destinations if node.core is not None else {}
    handling = node.call_handling
    handled = {v.id for v in handling.psaps()} if handling is not None else set()
    rows = []
    for p in dep.psaps:
        a = agents.get(p.id)
        d = core.get(p.uri)
        # A PSAP of the call handling element: its queue's figures (its agent, if any,
        # only answered its business line).
        ch = handling.stats(p.id) if p.id in handled else None
        rows.append(
            {
                "id": p.id,
                "name": p.name,
                "uri": p.uri,
                "simulated": p.simulated,
                "offered": (a.offered if a else 0) + (ch.offered if ch else 0),
                "answered": (a.answered if a else 0) + (ch.answered if ch else 0),
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
    print_log_summary(node, console)
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


#: The demo's simulated call-takers per PSAP, how soon they answer and how long they talk.
DEMO_CALL_TAKERS = 4
DEMO_ANSWER_SECONDS = 0.3
DEMO_TALK_SECONDS = 3.0


#: Every demo console user's password (README: the demo's users).
DEMO_CONSOLE_PASSWORD = "firebox"


def demo_deployment(
    state: DemoState,
    paths: dict[str, Path],
    listen: str,
    sip_listen: str = "127.0.0.1:5070",
    agents_listen: str = "127.0.0.1:0",
    faults: dict[str, str] | None = None,
    call_handling: bool = False,
) -> Deployment:
    """The deployment file for a generated state whose GeoJSON files are at ``paths``:
    ECRF, LIS and page on ``listen``; the BCF + ESRP on ``sip_listen``; every PSAP
    simulated by the PSAP agents on ``agents_listen``, ``faults`` (PSAP id: ``busy`` or
    ``silent``) playing up. With ``call_handling`` (what ``firebox demo`` runs) the PSAPs
    without a fault are answered by the call handling element instead: per PSAP
    ``DEMO_CALL_TAKERS`` simulated call-takers and one free position for a person at the
    console; the agents then answer only the business lines (as the PSTN gateway)."""
    faults = dict(faults or {})
    handled = [p for p in state.psaps if p.id not in faults] if call_handling else []
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
                "simulated": p not in handled,
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
            # The state's two Logging Services, on the page's address (the second at
            # /logging2); the ESRP and the ECRF log every event to both (i3: at least two).
            "logging": [
                {"listen": listen, "store": "var/logging.db"},
                {"listen": listen, "path": "/logging2", "store": "var/logging2.db"},
            ],
            "log_events": {"spool": "var/log-spool"},
            # Its Policy Store at /policy on the same address; the ESRP's routing rules and the
            # BCF's rules follow the policies "demo-routing" and "demo-bcf" once someone puts
            # them there (unsigned policies are accepted: a demo, not a deployment).
            "policy_store": {"listen": listen, "path": "/policy", "store": "var/policies.db", "allow_unsigned": True},
            "psap_agents": {
                "listen": agents_listen,
                "ring_seconds": 0.3,
                "hold_seconds": 4.0,
                "faults": faults,
            },
        },
    }
    if handled:
        data["elements"]["call_handling"] = {
            "listen": agents_listen,
            "psaps": {
                p.id: {
                    "positions": [
                        *({"id": f"{p.id}-sim{n}", "auto_answer_seconds": DEMO_ANSWER_SECONDS,
                           "talk_seconds": DEMO_TALK_SECONDS} for n in range(1, DEMO_CALL_TAKERS + 1)),
                        {"id": f"{p.id}-desk"},
                    ],
                    "strategy": "longest-idle",
                    "max_queue": 10,
                    # Calls waiting longer go to the alternate (the ESRP fails over on the 486),
                    # so that the carrier's callers are answered within its 10 s.
                    "overflow_after_seconds": 2.0,
                }
                for p in handled
            },
        }  # fmt: skip
        # The CAD (incidents, the fleet at the state's stations, its street fire alarm boxes,
        # a telegraph interface) and the console on the page's address: each PSAP has a
        # call-taker at its free desk, a dispatcher and a supervisor (README: how to sign in).
        from firebox.console.auth import demo_users

        data["elements"]["cad"] = {
            "listen": listen, "store": "var/cad.db", "stations": paths["stations"].name,
            "boxes": paths["boxes"].name, "box_pulses_listen": "127.0.0.1:0",
        }  # fmt: skip
        # The monitor: every call's log events watched, a test call to each PSAP every 30 s.
        data["elements"]["monitor"] = {"listen": listen, "probe_period_seconds": 30.0}
        # Rule changes staged and guarded; the public status page with every business line's
        # gateway route checked each minute.
        data["elements"]["changes"] = {"listen": listen, "store": "changes.db"}
        data["elements"]["status_page"] = {"listen": listen, "check_period_seconds": 60.0}
        # Public alerts: statewide ones go out at once; the rest are drafts to approve.
        # The demo's coordinates lie in New Hampshire: its whole-state SAME code (033000).
        data["elements"]["alerting"] = {"listen": listen, "ipaws_spool": "var/ipaws", "state_same": "033000"}
        users = demo_users({p.id: [f"{p.id}-desk"] for p in handled}, DEMO_CONSOLE_PASSWORD)
        data["elements"]["console"] = {
            "listen": listen,
            "users": [
                {"name": u.name, "role": u.role.value, "psap": u.psap_id, "password_hash": u.password_hash,
                 **({"position": u.position} if u.position else {})}
                for u in users.values()
            ],
        }  # fmt: skip
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
    call_handling: bool = False,
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
    dep = demo_deployment(state, paths, listen, sip_listen, faults=faults, call_handling=call_handling)
    out = target / "deployment.yaml"
    out.write_text(
        f"# Generated by `firebox demo` (seed {seed}, {n_towns} towns); edit freely.\n"
        + dump_deployment(dep),
        encoding="utf-8",
    )
    return out, state
