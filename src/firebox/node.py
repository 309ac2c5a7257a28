"""Composition: build the elements a deployment names and serve them.

``build_node`` loads the GIS layers (with their quality reports), the LVF's streets, the ECRF
and the LIS; ``run_node`` serves them with uvicorn, one server per listen address (elements
that share an address share a server), and optionally drives a generated caller load through
them over the wire: HELD to the LIS for each caller's location, then LoST to the ECRF, the
way an ESRP will. ``write_demo`` writes the generated state and its deployment file, so the
demo starts through the same loader as ``firebox serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    from firebox.lis.service import Lis

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
    return {listen: Starlette(routes=r) for listen, r in routes.items()}


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
    load = None
    if caller_rate > 0 and node.callers and node.deployment.elements.ecrf:
        load = asyncio.create_task(_caller_load(node, caller_rate))
    try:
        if duration is None:
            await asyncio.gather(*tasks)
        else:
            await asyncio.sleep(duration)
    finally:
        if load is not None:
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)


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

    from firebox.held.codec import LocationRequest, LocationResponse, dereference_request
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


def settle_heap() -> None:
    """Call once the data is loaded, before serving: move everything alive (boundaries,
    indexes, tables) out of the garbage collector's sight. A long-lived server otherwise
    walks that whole static heap on every full collection, a pause of milliseconds in the
    middle of answering a 911 lookup."""
    import gc

    gc.collect()
    gc.freeze()


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


# --- the demo -----------------------------------------------------------------------------


def demo_deployment(state: DemoState, paths: dict[str, Path], listen: str) -> Deployment:
    """The deployment file for a generated state whose GeoJSON files are at ``paths``."""
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
            }
            for p in state.psaps
        ],
        "elements": {
            "ecrf": {"listen": listen},
            "lis": {"listen": listen},
            "web": {"listen": listen},
        },
    }
    return parse_deployment(dump_deployment(Deployment.model_validate(data)))


def write_demo(
    target: Path, *, seed: int, n_towns: int, listen: str, console: Console
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
    dep = demo_deployment(state, paths, listen)
    out = target / "deployment.yaml"
    out.write_text(
        f"# Generated by `firebox demo` (seed {seed}, {n_towns} towns); edit freely.\n"
        + dump_deployment(dep),
        encoding="utf-8",
    )
    return out, state
