"""The ECRF/LVF on real geography, over real HTTP, built the way `firebox serve` builds it.

The deployments are the repository's own examples (`examples/massachusetts.yaml`,
`examples/us-counties.yaml`), which point at ../shared/data: MassGIS's 351 towns, the Census
2010 counties, Cambridge's street centerlines. Each is loaded with `load_deployment` and
`build_node`, and its Starlette app is served by uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import shapely
import shapely.ops
import uvicorn
from rich.console import Console

from firebox.deployment import Deployment, PeerConfig, load_deployment
from firebox.location.civic import CivicAddress
from firebox.location.shapes import Circle, Point
from firebox.lost.client import AsyncLostClient, MappingCache
from firebox.lost.messages import ErrorKind, ErrorsResponse, FindServiceResponse
from firebox.node import Node, build_node

ROOT = Path(__file__).resolve().parents[1]
SOS = "urn:service:sos"


def _deployment(name: str, *, peer: str | None = None) -> Deployment:
    dep = load_deployment(ROOT / "examples" / name)
    # The LIS and page are not what these tests are about; the ECRF's peer is the test's.
    elements = dep.elements.model_copy(
        update={
            "lis": None,
            "web": None,
            "ecrf": dep.elements.ecrf.model_copy(update={"peers": [PeerConfig(uri=peer)] if peer else []}),
        }
    )
    return dep.model_copy(update={"elements": elements})


@asynccontextmanager
async def serving(node: Node) -> AsyncIterator[str]:
    """Serve the node's one app on a free port of 127.0.0.1; yield its LoST URL."""
    (app,) = node.apps.values()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):  # bounded wait for start-up
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "ECRF did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/lost"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture(scope="module")
def ma_node(shared_data: Path) -> Node:
    return build_node(_deployment("massachusetts.yaml"), console=Console(quiet=True))


@pytest.fixture(scope="module")
def counties_node(shared_data: Path) -> Node:
    return build_node(_deployment("us-counties.yaml"), console=Console(quiet=True))


def _ma_towns(shared_data: Path) -> list[tuple[str, str, shapely.Point]]:
    doc = json.loads((shared_data / "ma" / "towns.geojson").read_text())
    out = []
    for f in doc["features"]:
        geom = shapely.make_valid(shapely.geometry.shape(f["geometry"]))  # WAYLAND needs it
        p = f["properties"]
        out.append((str(p["TOWN_ID"]), p["TOWN"], geom.point_on_surface()))
    return out


async def _find_all(url: str, points: list[Point], **kw) -> list[FindServiceResponse | ErrorsResponse]:
    """findService for every point, eight at a time (a bounded concurrent client)."""
    sem = asyncio.Semaphore(8)
    async with AsyncLostClient(url, cache=MappingCache(max_entries=1)) as client:

        async def one(p: Point):
            async with sem:
                return await client.find_service(p, SOS, boundary=None, **kw)

        return await asyncio.gather(*(one(p) for p in points))


def test_the_quality_report_names_the_wayland_repair(ma_node: Node):
    (report,) = ma_node.quality
    repaired = [f.message for f in report.repaired]
    assert len(repaired) == 1 and "WAYLAND" in repaired[0]


async def test_every_massachusetts_town_maps_to_itself(ma_node: Node, shared_data: Path):
    towns = _ma_towns(shared_data)
    assert len(towns) == 351
    async with serving(ma_node) as url:
        answers = await _find_all(url, [Point(lat=p.y, lon=p.x) for _, _, p in towns])
    wrong = []
    for (town_id, name, _), ans in zip(towns, answers, strict=True):
        if not isinstance(ans, FindServiceResponse) or len(ans.mappings) != 1:
            wrong.append((name, ans))
            continue
        m = ans.mappings[0]
        if (m.source_id, m.display_names[0][0], m.uris) != (town_id, name, [f"sip:psap-{town_id}@mass911.example"]):
            wrong.append((name, m))
        assert m.service_number == "911" and m.source == "ecrf.mass911.example"
        assert ans.path == ["ecrf.mass911.example"]
    assert wrong == []


async def test_a_circle_across_a_town_line_goes_to_the_town_with_most_of_it(ma_node: Node, shared_data: Path):
    """A 900 m circle centred just inside Somerville, on the Cambridge line, goes to the town
    holding most of its area (NENA i3: the greatest overlap wins), not the centre's town."""
    from firebox.location.shapes import to_geometry

    towns = dict(_town_geoms(shared_data))
    cambridge, somerville = towns["CAMBRIDGE"], towns["SOMERVILLE"]
    border = cambridge.boundary.intersection(somerville.boundary)
    circle = expected = None
    for k in range(1, 20):  # walk the shared border until a circle's majority is across it
        centre = _step_into(somerville, border.interpolate(k / 20, normalized=True))
        candidate = Circle(Point(lat=centre.y, lon=centre.x), 900.0)
        area = to_geometry(candidate)
        share = {n: area.intersection(g).area for n, g in towns.items() if area.intersects(g)}
        if max(share, key=share.get) == "CAMBRIDGE":
            circle, expected = candidate, "CAMBRIDGE"
            break
    assert circle is not None, "no point on the Cambridge-Somerville line has a Cambridge-majority circle"
    assert somerville.contains(shapely.Point(circle.center.lon, circle.center.lat))
    async with serving(ma_node) as url:
        (ans,) = await _find_all(url, [circle])
    assert isinstance(ans, FindServiceResponse)
    assert ans.mappings[0].display_names[0][0] == expected


def _town_geoms(shared_data: Path) -> list[tuple[str, shapely.Geometry]]:
    doc = json.loads((shared_data / "ma" / "towns.geojson").read_text())
    return [
        (f["properties"]["TOWN"], shapely.make_valid(shapely.geometry.shape(f["geometry"])))
        for f in doc["features"]
    ]


def _step_into(geom: shapely.Geometry, p: shapely.Point) -> shapely.Point:
    """A point about 60 m inside ``geom`` near ``p`` (the nearest point of a shrunk copy)."""
    inner = geom.buffer(-0.0008)
    return shapely.ops.nearest_points(inner, p)[0]


# --- US counties -------------------------------------------------------------------------

#: Places whose county is not in doubt: (lat, lon, 5-digit FIPS, county name).
KNOWN = [
    (42.3736, -71.1097, "25017", "Middlesex"),  # Cambridge, MA
    (41.8781, -87.6298, "17031", "Cook"),  # Chicago
    (34.0522, -118.2437, "06037", "Los Angeles"),
    (29.7604, -95.3698, "48201", "Harris"),  # Houston
    (47.6062, -122.3321, "53033", "King"),  # Seattle
    (25.7617, -80.1918, "12086", "Miami-Dade"),
    (39.7392, -104.9903, "08031", "Denver"),
    (40.7831, -73.9712, "36061", "New York"),  # Manhattan
    (33.4484, -112.0740, "04013", "Maricopa"),  # Phoenix
    (61.2181, -149.9003, "02020", "Anchorage"),
    (21.3069, -157.8583, "15003", "Honolulu"),
    (42.7654, -71.4676, "33011", "Hillsborough"),  # Nashua, NH
    (44.4759, -73.2121, "50007", "Chittenden"),  # Burlington, VT
]


async def test_known_places_answer_their_county(counties_node: Node):
    async with serving(counties_node) as url:
        answers = await _find_all(url, [Point(lat=lat, lon=lon) for lat, lon, _, _ in KNOWN])
    got = [(a.mappings[0].source_id, a.mappings[0].display_names[0][0]) for a in answers]  # type: ignore[union-attr]
    assert got == [(fips, name) for _, _, fips, name in KNOWN]


async def test_a_sample_of_all_counties_over_http(counties_node: Node, shared_data: Path):
    """Every county's representative point through the vectorized index, and one in eight of
    them over HTTP (a bounded load)."""
    layer = counties_node.index.layer(SOS)
    assert layer is not None and len(layer) == 3221
    reps = shapely.point_on_surface(layer.geometries)
    located = layer.locate_xy(shapely.get_x(reps), shapely.get_y(reps))
    assert list(located) == list(range(len(layer)))
    sample = random.Random(5).sample(range(len(layer)), len(layer) // 8)
    async with serving(counties_node) as url:
        answers = await _find_all(url, [Point(lat=reps[i].y, lon=reps[i].x) for i in sample])
    assert [a.mappings[0].source_id for a in answers] == [layer.boundaries[i].id for i in sample]  # type: ignore[union-attr]


async def test_outside_massachusetts_is_recursed_or_redirected_to_the_county_ecrf(
    ma_node: Node, counties_node: Node
):
    nashua = Point(lat=42.7654, lon=-71.4676)
    async with serving(counties_node) as counties_url:
        ma = build_node(_deployment("massachusetts.yaml", peer=counties_url), console=Console(quiet=True))
        async with serving(ma) as ma_url:
            (recursed,) = await _find_all(ma_url, [nashua], recursive=True)
            (redirected,) = await _find_all(ma_url, [nashua])
        # Without a peer the same place is simply not found, and says so.
        async with serving(ma_node) as alone_url:
            (alone,) = await _find_all(alone_url, [nashua])
    assert isinstance(recursed, FindServiceResponse)
    assert recursed.mappings[0].source_id == "33011"
    assert recursed.path == ["ecrf.counties.example", "ecrf.mass911.example"]
    # The client followed the <redirect> to the county ECRF itself.
    assert isinstance(redirected, FindServiceResponse)
    assert redirected.mappings[0].source_id == "33011" and redirected.path == ["ecrf.counties.example"]
    assert isinstance(alone, ErrorsResponse) and alone.errors[0].kind == ErrorKind.NOT_FOUND


# --- Cambridge addresses through LoST (LVF) ----------------------------------------------


def _cambridge_ranges(shared_data: Path, n: int) -> list[tuple[str, str, int]]:
    """(street name, type, house number) drawn from real address ranges."""
    doc = json.loads((shared_data / "cambridge" / "TRANS_Centerlines.geojson").read_text())
    rng = random.Random(11)
    out = []
    features = [f for f in doc["features"] if f["properties"].get("Street_Name")]
    for f in rng.sample(features, len(features)):
        p = f["properties"]
        lo, hi = p.get("L_From"), p.get("L_To")
        if lo is None or hi is None or min(lo, hi) <= 0 or not p.get("Street_Type"):  # -1: no range
            continue
        lo, hi = sorted((int(lo), int(hi)))
        out.append((p["Street_Name"], p["Street_Type"], lo + ((hi - lo) // 4) * 2))
        if len(out) == n:
            break
    return out


def _civic(number: int | str, street: str, town: str = "Cambridge", **kw) -> CivicAddress:
    return CivicAddress(country="US", A1="MA", A3=town, HNO=str(number), RD=street, **kw)


async def test_cambridge_addresses_validate_through_lost(ma_node: Node, shared_data: Path):
    addresses = _cambridge_ranges(shared_data, 40)
    assert len(addresses) == 40
    civics = [_civic(num, f"{name} {kind}") for name, kind, num in addresses]
    civics.append(_civic(795, "Mass Ave"))  # City Hall, through the alias table
    async with serving(ma_node) as url:
        answers = await _find_all(url, civics, validate=True)
    for civic, ans in zip(civics, answers, strict=True):
        assert isinstance(ans, FindServiceResponse), (civic, ans)
        assert ans.validation is not None
        assert ans.validation.invalid == [], (civic.one_line(), ans.validation)
        assert {"A3", "RD", "HNO"} <= set(ans.validation.valid), (civic.one_line(), ans.validation)
        assert ans.mappings[0].display_names[0][0] == "CAMBRIDGE"


async def test_wrong_numbers_and_streets_come_back_invalid(ma_node: Node):
    wrong_number = _civic(99999, "Massachusetts Ave")
    wrong_street = _civic(12, "Nowhere Such St")
    async with serving(ma_node) as url:
        by_number, by_street = await _find_all(url, [wrong_number, wrong_street], validate=True)
    assert isinstance(by_number, FindServiceResponse) and by_number.validation is not None
    assert by_number.validation.invalid == ["HNO"] and "RD" in by_number.validation.valid
    assert isinstance(by_street, FindServiceResponse) and by_street.validation is not None
    assert "RD" in by_street.validation.invalid
    # An invalid address is still routed (by its town): a 911 lookup never ends empty-handed.
    assert by_number.mappings[0].display_names[0][0] == "CAMBRIDGE"
    assert by_street.mappings[0].display_names[0][0] == "CAMBRIDGE"


def test_the_deployments_address_points_are_authoritative(ma_node: Node):
    """The example names Cambridge's fire stations as address points: Fire Headquarters at
    491 Broadway geocodes to its own point, not to an interpolation along the range."""
    assert ma_node.lvf is not None
    result = ma_node.lvf.validate(_civic(491, "Broadway"))
    assert result.address_point is not None and result.point == result.address_point.point
    assert result.validation.invalid == []
