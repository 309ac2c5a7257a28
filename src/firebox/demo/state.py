"""A generated state for the demo and for tests that need a whole 9-1-1 authority.

``generate_state(seed)`` builds, with no data files and deterministically from the seed, a
fictional "Demo State" (DS) of about 200 km x 150 km around 43.2 N, 71.6 W, organised the way
Massachusetts is: towns that partition the state, large towns answering their own 9-1-1
calls and small neighbouring towns sharing a regional PSAP; police, fire and EMS service
boundaries (one layer per service URN, as an ECRF serves them); street centerlines with address
ranges in the attribute schema of Cambridge's centerlines, so one civic-address validator
loads both; street fire alarm boxes at intersections; stations; and population-weighted
callers.

Geometry is built in a local kilometre plane (so lengths and areas mean something) and mapped
to lon/lat with one affine function at the end, which keeps shared borders bit-identical.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPoint
from shapely.geometry.base import BaseGeometry

from firebox.gis.index import Boundary, BoundaryLayer, ServiceIndex

CENTER_LAT = 43.2
CENTER_LON = -71.6
KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LON = 111.320 * math.cos(math.radians(CENTER_LAT))
#: Semi-axes of the state's base ellipse (km): about 200 km x 150 km.
HALF_WIDTH_KM = 100.0
HALF_HEIGHT_KM = 75.0

DOMAIN = "demo.firebox.test"
SOS = "urn:service:sos"
POLICE = "urn:service:sos.police"
FIRE = "urn:service:sos.fire"
AMBULANCE = "urn:service:sos.ambulance"
SERVICES = (SOS, POLICE, FIRE, AMBULANCE)

#: A town this populous answers its own 9-1-1 calls; smaller ones share a regional PSAP.
OWN_PSAP_POPULATION = 25_000
#: A town this populous has its own fire department; smaller ones share fire districts.
OWN_FIRE_POPULATION = 15_000
#: Towns this populous still have street fire alarm boxes.
BOX_TOWN_POPULATION = 20_000

_PREFIXES = (
    "ASH", "BRAD", "CAR", "DUN", "ELM", "FAIR", "GLEN", "HAR", "KING", "LIN", "MAR", "NOR",
    "OAK", "PEM", "QUIN", "ROCK", "SAL", "STAN", "THORN", "WAL", "WIN", "BEL", "CHEL", "DOR",
    "GRAN", "HOL", "LAN", "MIL", "PRES", "RED", "SHER", "TEW", "BRIN", "COL", "DEER", "FRAN",
    "HAD", "LEX", "MAN", "PELL", "ROX", "SWAN", "TAUN", "WEL", "AMES", "BLACK", "CRAN", "EVER",
)
_SUFFIXES = (
    "FORD", "BURY", "TON", "FIELD", "HAM", "BOROUGH", "WOOD", "LEY", "DALE", "MOUTH",
    "VILLE", "BRIDGE", "STEAD", "WELL", "MONT", "LAND", "BROOK", "HURST",
)
_DIRECTIONS = ("NORTH", "SOUTH", "EAST", "WEST")
_COUNTY_SUFFIXES = ("SEX", "SHIRE", "FOLK", "DEN", "CASTER")
_STREET_NAMES = (
    "Main", "Elm", "Maple", "Oak", "Pine", "Washington", "Church", "School", "High", "Pleasant",
    "Park", "Center", "Spring", "Chestnut", "Union", "Water", "Mill", "Winter", "Summer",
    "Prospect", "Cedar", "Walnut", "Highland", "Forest", "Bridge", "Lincoln", "Franklin",
    "Central", "Hill", "Lake", "River", "Pond", "Depot", "Green", "Cottage", "Academy",
    "Liberty", "Grove", "Meadow", "Orchard", "Brook", "Birch", "Willow", "Adams", "Jefferson",
    "Madison", "Putnam", "Salem", "Concord", "Lowell",
)
_STREET_TYPES = ("St", "St", "St", "Ave", "Rd", "Rd", "Ln", "Dr", "Way")


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Town:
    """A municipality (uppercase name, as MassGIS writes them); ``kind`` C city or T town."""

    id: str
    name: str
    county: str
    population: int
    kind: str
    zip: str
    geometry: BaseGeometry
    psap_id: str
    fire_id: str
    ems_id: str

    @property
    def title(self) -> str:
        return self.name.title()


@dataclass(frozen=True, slots=True)
class Psap:
    """A PSAP: its SIP URI, its 10-digit business line, the towns it answers for and who
    takes its calls when it cannot (``alternates``, in order: a neighbouring PSAP, then a
    regional backup), for policy routing."""

    id: str
    name: str
    uri: str
    business_line: str
    alternates: tuple[str, ...]
    towns: tuple[str, ...]
    kind: str  # "local" (one town's own) or "regional"
    county: str
    population: int


@dataclass(frozen=True, slots=True)
class StreetSegment:
    """One centerline segment with address ranges: left side odd, right side even, both
    increasing along the street (a 100-number block per segment)."""

    id: str
    town_id: str
    town: str
    street_name: str
    street_type: str
    l_from: int
    l_to: int
    r_from: int
    r_to: int
    zip_left: str
    zip_right: str
    geometry: LineString

    def properties(self) -> dict[str, Any]:
        """The attributes under the names Cambridge's TRANS_Centerlines uses, plus ``Town``."""
        return {
            "ID": self.id,
            "Street_Name": self.street_name,
            "Street_Type": self.street_type,
            "Street": f"{self.street_name} {self.street_type}",
            "L_From": self.l_from,
            "L_To": self.l_to,
            "R_From": self.r_from,
            "R_To": self.r_to,
            "ZIP_Left": self.zip_left,
            "ZIP_Right": self.zip_right,
            "Town": self.town,
            "Town_ID": self.town_id,
        }


@dataclass(frozen=True, slots=True)
class AlarmBox:
    """A street fire alarm box at an intersection (as in Boston's box registry)."""

    number: int
    location: str
    district: str
    town_id: str
    town: str
    lon: float
    lat: float


@dataclass(frozen=True, slots=True)
class Station:
    id: str
    kind: str  # "fire" or "police"
    name: str
    address: str
    town_id: str
    town: str
    lon: float
    lat: float


@dataclass
class DemoState:
    seed: int
    outline: BaseGeometry
    towns: list[Town]
    psaps: list[Psap]
    layers: dict[str, list[Boundary]]
    streets: list[StreetSegment]
    boxes: list[AlarmBox]
    stations: list[Station]
    counties: list[str] = field(default_factory=list)
    name: str = "Demo State"
    abbreviation: str = "DS"

    def town(self, town_id: str) -> Town | None:
        return next((t for t in self.towns if t.id == town_id), None)

    def psap(self, psap_id: str) -> Psap | None:
        return next((p for p in self.psaps if p.id == psap_id), None)

    def layer(self, service: str) -> BoundaryLayer:
        return BoundaryLayer(service, self.layers[service])

    def service_index(self) -> ServiceIndex:
        return ServiceIndex(self.layer(s) for s in SERVICES)

    def write_geojson(self, directory: str | Path) -> dict[str, Path]:
        """Write every layer as an RFC 7946 GeoJSON file (lon/lat, counter-clockwise outer
        rings) under ``directory``; return the paths by key: ``towns``, ``outline``, each
        service URN, ``streets``, ``boxes`` and ``stations``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}

        def write(key: str, filename: str, features: Iterable[tuple[dict[str, Any], BaseGeometry]]) -> None:
            path = out / filename
            _write_features(path, features)
            paths[key] = path

        write("outline", "outline.geojson", [({"name": self.name, "abbreviation": self.abbreviation}, self.outline)])
        write("towns", "towns.geojson", [(_town_properties(t), t.geometry) for t in self.towns])
        for service in SERVICES:
            stem = "service_" + service.removeprefix("urn:service:").replace(".", "_")
            write(service, f"{stem}.geojson", [
                ({"id": b.id, "name": b.name, "uri": b.uri, **b.attrs}, b.geometry) for b in self.layers[service]
            ])
        write("streets", "streets.geojson", [(s.properties(), s.geometry) for s in self.streets])
        write("boxes", "boxes.geojson", [
            (
                {"BOX": str(b.number), "LOCATION": b.location, "DISTRICT": b.district, "TOWN": b.town, "Town_ID": b.town_id},
                shapely.Point(b.lon, b.lat),
            )
            for b in self.boxes
        ])
        write("stations", "stations.geojson", [
            (
                {"id": s.id, "kind": s.kind, "name": s.name, "address": s.address, "town": s.town, "town_id": s.town_id},
                shapely.Point(s.lon, s.lat),
            )
            for s in self.stations
        ])
        return paths


def _town_properties(t: Town) -> dict[str, Any]:
    return {
        "id": t.id, "name": t.name, "county": t.county, "population": t.population, "type": t.kind,
        "zip": t.zip, "psap": t.psap_id, "fire": t.fire_id, "ems": t.ems_id,
    }


def _write_features(path: Path, features: Iterable[tuple[dict[str, Any], BaseGeometry]]) -> None:
    feats = []
    for props, geom in features:
        if geom.geom_type in ("Polygon", "MultiPolygon"):
            geom = shapely.orient_polygons(geom)  # RFC 7946 section 3.1.6
        feats.append({"type": "Feature", "properties": props, "geometry": shapely.geometry.mapping(geom)})
    # Python's float repr round-trips exactly, so a loaded layer answers like this one.
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}), encoding="utf-8")


# --- geometry helpers ----------------------------------------------------------------------


def _to_lonlat_xy(xy: np.ndarray) -> np.ndarray:
    return np.column_stack([CENTER_LON + xy[:, 0] / KM_PER_DEG_LON, CENTER_LAT + xy[:, 1] / KM_PER_DEG_LAT])


def to_lonlat(geom: Any) -> Any:
    """Local km plane to lon/lat (one affine map, so identical inputs stay identical)."""
    return shapely.transform(geom, _to_lonlat_xy)


def _outline(rng: np.random.Generator, vertices: int = 120) -> BaseGeometry:
    """A star-shaped noisy ellipse: a radius per angle, so the ring never crosses itself."""
    theta = np.linspace(0.0, 2 * np.pi, vertices, endpoint=False)
    wobble = np.zeros_like(theta)
    for harmonic in range(2, 7):
        wobble += rng.uniform(0.015, 0.05) * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    wobble += rng.normal(0.0, 0.012, size=theta.size)
    x = HALF_WIDTH_KM * (1 + wobble) * np.cos(theta)
    y = HALF_HEIGHT_KM * (1 + wobble) * np.sin(theta)
    return shapely.Polygon(np.column_stack([x, y]))


def _random_points_in(geom: BaseGeometry, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform points inside ``geom`` by rejection from its bounding box (bounded)."""
    minx, miny, maxx, maxy = geom.bounds
    shapely.prepare(geom)
    found: list[np.ndarray] = []
    count = 0
    for _ in range(100):
        xs = rng.uniform(minx, maxx, size=max(16, 2 * (n - count)))
        ys = rng.uniform(miny, maxy, size=xs.size)
        keep = shapely.contains_xy(geom, xs, ys)
        pts = np.column_stack([xs[keep], ys[keep]])[: n - count]
        found.append(pts)
        count += len(pts)
        if count >= n:
            break
    pts = np.concatenate(found) if found else np.empty((0, 2))
    if len(pts) < n:  # a sliver of a polygon: fall back on a point surely inside
        p = shapely.point_on_surface(geom)
        pts = np.concatenate([pts, np.tile([p.x, p.y], (n - len(pts), 1))])
    return pts


def _voronoi_partition(points: np.ndarray, outline: BaseGeometry) -> list[BaseGeometry]:
    cells = shapely.voronoi_polygons(
        MultiPoint(points), extend_to=outline.buffer(20.0).envelope, ordered=True
    )
    return list(shapely.intersection(np.array(shapely.get_parts(cells)), outline))


def _tidy_partition(cells: list[BaseGeometry]) -> list[BaseGeometry]:
    """Each town one polygon: a stray piece of a clipped cell joins the neighbour it shares
    the longest border with (the union keeps the partition exact)."""
    cells = list(cells)
    for i in range(len(cells)):
        if cells[i].geom_type != "MultiPolygon":
            continue
        parts = sorted(shapely.get_parts(cells[i]), key=lambda p: -p.area)
        cells[i] = parts[0]
        for piece in parts[1:]:
            best, best_len = -1, 0.0
            for j, other in enumerate(cells):
                if j != i and piece.intersects(other):
                    shared = piece.boundary.intersection(other.boundary).length
                    if shared > best_len:
                        best, best_len = j, shared
            if best >= 0:
                cells[best] = shapely.union(cells[best], piece)
            else:
                cells[i] = shapely.union(cells[i], piece)
    return cells


def _adjacency(cells: Sequence[BaseGeometry]) -> list[dict[int, float]]:
    """For each cell, its neighbours and the length (km) of the border they share."""
    arr = np.array(cells, dtype=object)
    tree = shapely.STRtree(arr)
    a, b = tree.query(arr, predicate="intersects")
    keep = a < b
    a, b = a[keep], b[keep]
    shared = shapely.length(shapely.intersection(shapely.boundary(arr[a]), shapely.boundary(arr[b])))
    adj: list[dict[int, float]] = [{} for _ in cells]
    for i, j, length in zip(a.tolist(), b.tolist(), shared.tolist()):
        if length > 1e-6:
            adj[i][j] = length
            adj[j][i] = length
    return adj


def _grow_regions(adj: list[dict[int, float]], seeds: Sequence[int]) -> list[int]:
    """Multi-source breadth-first growth on the adjacency graph: every cell joins one seed's
    region, and every region is contiguous."""
    region = [-1] * len(adj)
    queues = [deque([s]) for s in seeds]
    for r, s in enumerate(seeds):
        region[s] = r
    active = True
    while active:
        active = False
        for r, q in enumerate(queues):
            while q:
                cell = q[0]
                free = [n for n in sorted(adj[cell]) if region[n] < 0]
                if not free:
                    q.popleft()
                    continue
                region[free[0]] = r
                q.append(free[0])
                active = True
                break
    for i in range(len(region)):  # an island cell with no neighbours (not expected)
        if region[i] < 0:
            region[i] = 0
    return region


def _spread_seeds(centres: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """``k`` well-spread cells: farthest-point sampling from a random start."""
    first = int(rng.integers(len(centres)))
    seeds = [first]
    dist = np.linalg.norm(centres - centres[first], axis=1)
    while len(seeds) < k:
        nxt = int(np.argmax(dist))
        seeds.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(centres - centres[nxt], axis=1))
    return seeds


def _group_small(
    adj: list[dict[int, float]], small: set[int], order: Sequence[int], rng: np.random.Generator,
    lo: int, hi: int,
) -> list[list[int]]:
    """Group neighbouring ``small`` cells into contiguous groups of ``lo``..``hi``; a cell that
    cannot join any group is left on its own (a group of one)."""
    group_of: dict[int, int] = {}
    groups: list[list[int]] = []
    for start in order:
        if start not in small or start in group_of:
            continue
        target = int(rng.integers(lo, hi + 1))
        members = [start]
        group_of[start] = len(groups)
        frontier = deque([start])
        while frontier and len(members) < target:
            cell = frontier.popleft()
            for n in sorted(adj[cell], key=lambda m: -adj[cell][m]):
                if n in small and n not in group_of and len(members) < target:
                    group_of[n] = len(groups)
                    members.append(n)
                    frontier.append(n)
        groups.append(members)
    # Singletons join a neighbouring group with room, if there is one.
    for g, members in enumerate(groups):
        if len(members) != 1:
            continue
        cell = members[0]
        options = sorted(
            {group_of[n] for n in adj[cell] if n in group_of and group_of[n] != g and len(groups[group_of[n]]) < hi},
            key=lambda h: (len(groups[h]), h),
        )
        if options:
            groups[options[0]].append(cell)
            group_of[cell] = options[0]
            members.clear()
    return [sorted(m) for m in groups if m]


# --- names and numbers ---------------------------------------------------------------------


def _names(rng: np.random.Generator, n: int, taken: set[str], suffixes: Sequence[str] = _SUFFIXES) -> list[str]:
    out: list[str] = []
    for _ in range(50 * n + 100):
        if len(out) == n:
            break
        name = _PREFIXES[rng.integers(len(_PREFIXES))] + suffixes[rng.integers(len(suffixes))]
        if rng.random() < 0.08:
            name = f"{_DIRECTIONS[rng.integers(len(_DIRECTIONS))]} {name}"
        if name not in taken:
            taken.add(name)
            out.append(name)
    if len(out) < n:  # pragma: no cover - 864 base names for at most 80 towns
        raise RuntimeError("ran out of generated names")
    return out


def _populations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Skewed like New England: a few cities of 100k+, many towns of 2k-20k."""
    cities = max(2, n // 20)
    big = rng.uniform(100_000, 240_000, size=cities)
    rest = np.clip(rng.lognormal(math.log(7_500), 0.75, size=n - cities), 1_500, 80_000)
    pops = np.round(np.concatenate([big, rest]) / 10) * 10
    return rng.permutation(pops).astype(int)


def business_line(n: int) -> str:
    """The n-th fictional 10-digit line, 603-555-01nn (555-0100..0199 are reserved for fiction)."""
    if not 0 <= n <= 99:
        raise ValueError(f"only 100 fictional 555-01xx numbers exist, not {n}")
    return f"603555{100 + n:04d}"


# --- the generator -------------------------------------------------------------------------


def generate_state(seed: int = 911, n_towns: int = 60) -> DemoState:
    """The demo state for ``seed`` (identical output for identical arguments)."""
    if not 40 <= n_towns <= 80:
        raise ValueError(f"n_towns must be 40..80, not {n_towns}")
    rng = np.random.default_rng(seed)
    outline_km = _outline(rng)

    # Towns: Voronoi cells of seeded points, relaxed twice (Lloyd) for even sizes.
    pts = _random_points_in(outline_km, n_towns, rng)
    for _ in range(2):
        cells = _voronoi_partition(pts, outline_km)
        pts = shapely.get_coordinates(shapely.centroid(np.array(cells)))
    cells = _tidy_partition(_voronoi_partition(pts, outline_km))
    # Number towns in reading order (north-west first), like a map index.
    centres = shapely.get_coordinates(shapely.point_on_surface(np.array(cells)))
    order = sorted(range(n_towns), key=lambda i: (-round(centres[i, 1] / 15.0), centres[i, 0]))
    cells = [cells[i] for i in order]
    centres = centres[order]
    adj = _adjacency(cells)

    names = _names(rng, n_towns, set())
    pops = _populations(rng, n_towns)
    ids = [f"town-{i + 1:02d}" for i in range(n_towns)]

    n_counties = max(3, n_towns // 12)
    county_of = _grow_regions(adj, _spread_seeds(centres, n_counties, rng))
    county_names = _names(rng, n_counties, set(names), _COUNTY_SUFFIXES)

    # PSAPs: big towns alone; small neighbours share a regional PSAP (2-6 towns).
    small = {i for i in range(n_towns) if pops[i] < OWN_PSAP_POPULATION}
    groups = [[i] for i in range(n_towns) if i not in small]
    groups += _group_small(adj, small, rng.permutation(n_towns).tolist(), rng, 2, 6)
    groups.sort(key=lambda g: min(g))
    psap_of = [0] * n_towns
    for p, members in enumerate(groups):
        for t in members:
            psap_of[t] = p
    psap_ids = [f"psap-{p + 1:02d}" for p in range(len(groups))]

    # Fire: towns of 15k+ alone, smaller neighbours in fire districts of 2-3 towns.
    fire_small = {i for i in range(n_towns) if pops[i] < OWN_FIRE_POPULATION}
    fire_groups = [[i] for i in range(n_towns) if i not in fire_small]
    fire_groups += _group_small(adj, fire_small, rng.permutation(n_towns).tolist(), rng, 2, 3)
    fire_groups.sort(key=lambda g: min(g))
    fire_of = [0] * n_towns
    for f, members in enumerate(fire_groups):
        for t in members:
            fire_of[t] = f
    fire_ids = [f"fd-{f + 1:02d}" for f in range(len(fire_groups))]

    # EMS: a few contiguous regions.
    n_ems = max(3, n_towns // 15)
    ems_of = _grow_regions(adj, _spread_seeds(centres, n_ems, rng))
    ems_ids = [f"ems-{e + 1}" for e in range(n_ems)]

    zips = [f"03{101 + 2 * i:03d}" for i in range(n_towns)]
    towns_ll = [to_lonlat(c) for c in cells]
    towns = [
        Town(
            id=ids[i], name=names[i], county=county_names[county_of[i]], population=int(pops[i]),
            kind="C" if pops[i] >= 40_000 else "T", zip=zips[i], geometry=towns_ll[i],
            psap_id=psap_ids[psap_of[i]], fire_id=fire_ids[fire_of[i]], ems_id=ems_ids[ems_of[i]],
        )
        for i in range(n_towns)
    ]

    psaps = _make_psaps(groups, psap_ids, psap_of, adj, towns)
    layers = _make_layers(towns, psaps, cells, fire_groups, fire_ids, ems_of, ems_ids, names)
    streets, junctions, vertices = _make_streets(cells, towns, pops, rng)
    boxes = _make_boxes(towns, junctions, rng)
    stations = _make_stations(towns, vertices, pops, rng)
    return DemoState(
        # The state is exactly its towns (the noisy ellipse, cut by the cells, rounds apart).
        seed=seed, outline=shapely.union_all(towns_ll), towns=towns, psaps=psaps, layers=layers,
        streets=streets, boxes=boxes, stations=stations, counties=county_names,
    )


def _make_psaps(
    groups: list[list[int]], psap_ids: list[str], psap_of: list[int], adj: list[dict[int, float]], towns: list[Town]
) -> list[Psap]:
    n = len(groups)
    pop = [sum(towns[t].population for t in g) for g in groups]
    county = [max((towns[t] for t in g), key=lambda t: t.population).county for g in groups]
    # Border length shared with each neighbouring PSAP.
    shared: list[dict[int, float]] = [{} for _ in range(n)]
    for t, neighbours in enumerate(adj):
        for u, length in neighbours.items():
            a, b = psap_of[t], psap_of[u]
            if a != b:
                shared[a][b] = shared[a].get(b, 0.0) + length
    by_pop = sorted(range(n), key=lambda p: (-pop[p], p))
    psaps = []
    for p, members in enumerate(groups):
        alternates: list[int] = []
        if shared[p]:
            alternates.append(max(shared[p], key=lambda q: (shared[p][q], -q)))
        # The regional backup: the biggest PSAP of the county, else of the state.
        backup = next((q for q in by_pop if q != p and q not in alternates and county[q] == county[p]), None)
        if backup is None:
            backup = next((q for q in by_pop if q != p and q not in alternates), None)
        if backup is not None:
            alternates.append(backup)
        lead = max((towns[t] for t in members), key=lambda t: t.population)
        regional = len(members) > 1
        name = (
            f"{lead.title} Regional Emergency Communications Center" if regional
            else f"{lead.title} Emergency Communications"
        )
        psaps.append(Psap(
            id=psap_ids[p], name=name, uri=f"sip:{psap_ids[p]}@psap.{DOMAIN}",
            business_line=business_line(p + 1), alternates=tuple(psap_ids[q] for q in alternates),
            towns=tuple(towns[t].id for t in members), kind="regional" if regional else "local",
            county=county[p], population=pop[p],
        ))
    return psaps


def _make_layers(
    towns: list[Town], psaps: list[Psap], cells: list[BaseGeometry], fire_groups: list[list[int]],
    fire_ids: list[str], ems_of: list[int], ems_ids: list[str], names: list[str],
) -> dict[str, list[Boundary]]:
    index = {t.id: i for i, t in enumerate(towns)}

    def union(members: Iterable[int]) -> BaseGeometry:
        # Union in the km plane, then map: borders shared with other layers stay identical.
        return to_lonlat(shapely.union_all([cells[i] for i in members]))

    sos = [
        Boundary(
            p.id, p.name, p.uri, union(index[t] for t in p.towns),
            {"towns": ",".join(p.towns), "population": p.population, "business_line": p.business_line, "kind": p.kind},
        )
        for p in psaps
    ]
    police = [
        Boundary(
            f"pd-{t.id}", f"{t.title} Police Department", f"sip:pd-{t.id}@police.{DOMAIN}", t.geometry,
            {"town": t.name, "town_id": t.id, "population": t.population, "county": t.county},
        )
        for t in towns
    ]
    fire = []
    for f, members in enumerate(fire_groups):
        lead = max(members, key=lambda i: towns[i].population)
        name = f"{towns[lead].title} Fire Department" if len(members) == 1 else f"{towns[lead].title} Area Fire District"
        fire.append(Boundary(
            fire_ids[f], name, f"sip:{fire_ids[f]}@fire.{DOMAIN}", union(members),
            {"towns": ",".join(towns[i].id for i in members), "population": sum(towns[i].population for i in members)},
        ))
    ems = []
    for e, eid in enumerate(ems_ids):
        members = [i for i in range(len(towns)) if ems_of[i] == e]
        lead = max(members, key=lambda i: towns[i].population)
        ems.append(Boundary(
            eid, f"{towns[lead].title} Regional EMS", f"sip:{eid}@ems.{DOMAIN}", union(members),
            {"towns": ",".join(towns[i].id for i in members), "population": sum(towns[i].population for i in members)},
        ))
    return {SOS: sos, POLICE: police, FIRE: fire, AMBULANCE: ems}


@dataclass
class _Street:
    name: str
    type: str
    points: list[tuple[float, float]]


def _make_streets(
    cells: list[BaseGeometry], towns: list[Town], pops: np.ndarray, rng: np.random.Generator
) -> tuple[list[StreetSegment], list[list[tuple[tuple[float, float], str, str]]], list[list[tuple[float, float, str, int]]]]:
    """Street networks grown from each town's Main Street: each new street branches off a
    vertex of an earlier one (a junction), then runs 2-10 segments, staying at least 100 m
    inside the town. Returns the segments, the junctions per town (lon/lat, street, street)
    and the street vertices per town (lon/lat, street label, segment number)."""
    segments: list[StreetSegment] = []
    junctions: list[list[tuple[tuple[float, float], str, str]]] = []
    vertices: list[list[tuple[float, float, str, int]]] = []
    lo, hi = math.log(1_500), math.log(240_000)
    for ti, cell in enumerate(cells):
        town = towns[ti]
        inner = cell.buffer(-0.1)
        if inner.is_empty:
            inner = cell.buffer(-0.02)
        shapely.prepare(inner)
        share = (math.log(max(pops[ti], 1_500)) - lo) / (hi - lo)
        target = int(np.clip(round(5 + 35 * share), 5, 40))
        names = list(rng.permutation(np.array(_STREET_NAMES[1:], dtype=object)))
        streets: list[_Street] = []
        town_junctions: list[tuple[tuple[float, float], str, str]] = []
        start = shapely.centroid(inner)
        if not inner.contains(start):
            start = shapely.point_on_surface(inner)
        for attempt in range(3 * target):
            if len(streets) >= target:
                break
            if not streets:
                origin, heading, parent = (start.x, start.y), rng.uniform(0, 2 * np.pi), None
                name, stype = "Main", "St"
            else:
                parent = streets[int(rng.integers(len(streets)))]
                k = int(rng.integers(len(parent.points)))
                origin = parent.points[k]
                a = parent.points[max(k - 1, 0)]
                b = parent.points[min(k + 1, len(parent.points) - 1)]
                along = math.atan2(b[1] - a[1], b[0] - a[0])
                heading = along + (1 if rng.random() < 0.5 else -1) * (np.pi / 2 + rng.normal(0, 0.25))
                name = str(names[len(streets) - 1]) if len(streets) - 1 < len(names) else f"Street {len(streets)}"
                stype = _STREET_TYPES[int(rng.integers(len(_STREET_TYPES)))]
            want = int(rng.integers(2, 11))
            pts = [origin]
            for _ in range(want):
                placed = False
                for tries in range(8):
                    h = heading + rng.normal(0, 0.2 + 0.35 * tries)
                    step = rng.uniform(0.15, 0.5)
                    nxt = (pts[-1][0] + step * math.cos(h), pts[-1][1] + step * math.sin(h))
                    if inner.contains(LineString([pts[-1], nxt])):
                        pts.append(nxt)
                        heading = h
                        placed = True
                        break
                if not placed:
                    break
            if len(pts) < 3:  # fewer than 2 segments: not a street
                continue
            street = _Street(name, stype, pts)
            streets.append(street)
            if parent is not None:
                town_junctions.append((origin, f"{parent.name} {parent.type}", f"{name} {stype}"))
        town_vertices: list[tuple[float, float, str, int]] = []
        for si, street in enumerate(streets):
            ll = _to_lonlat_xy(np.array(street.points))
            label = f"{street.name} {street.type}"
            for k in range(len(street.points) - 1):
                seg_km = LineString(street.points[k : k + 2])
                lots = int(np.clip(seg_km.length / 0.02, 1, 49))  # a lot every 20 m each side
                base = 100 * k
                segments.append(StreetSegment(
                    id=f"{town.id}-s{si + 1:02d}-{k + 1:02d}", town_id=town.id, town=town.name,
                    street_name=street.name, street_type=street.type,
                    l_from=base + 1, l_to=base + 2 * lots - 1, r_from=base + 2, r_to=base + 2 * lots,
                    zip_left=town.zip, zip_right=town.zip, geometry=LineString(ll[k : k + 2]),
                ))
                town_vertices.append((float(ll[k, 0]), float(ll[k, 1]), label, k))
        junctions.append([
            ((float(p[0]), float(p[1])), a, b)
            for (xy, a, b) in town_junctions
            for p in [_to_lonlat_xy(np.array([xy]))[0]]
        ])
        vertices.append(town_vertices)
    return segments, junctions, vertices


def _make_boxes(
    towns: list[Town], junctions: list[list[tuple[tuple[float, float], str, str]]], rng: np.random.Generator
) -> list[AlarmBox]:
    wanted = [(ti, j) for ti, t in enumerate(towns) if t.population >= BOX_TOWN_POPULATION for j in junctions[ti]]
    numbers = sorted(rng.choice(np.arange(1000, 10000), size=len(wanted), replace=False).tolist())
    boxes = []
    seen: set[tuple[int, tuple[float, float]]] = set()
    for number, (ti, ((lon, lat), a, b)) in zip(numbers, wanted):
        if (ti, (lon, lat)) in seen:  # two streets branching at one point: one box
            continue
        seen.add((ti, (lon, lat)))
        t = towns[ti]
        boxes.append(AlarmBox(
            number=int(number), location=f"{a.upper()} at {b.upper()}", district=t.fire_id,
            town_id=t.id, town=t.name, lon=lon, lat=lat,
        ))
    return boxes


def _make_stations(
    towns: list[Town], vertices: list[list[tuple[float, float, str, int]]], pops: np.ndarray, rng: np.random.Generator
) -> list[Station]:
    stations = []
    for ti, t in enumerate(towns):
        verts = vertices[ti]
        if not verts:  # pragma: no cover - every town gets a Main Street
            p = shapely.point_on_surface(t.geometry)
            verts = [(p.x, p.y, "Main St", 0)]

        def at(v: tuple[float, float, str, int]) -> tuple[float, float, str]:
            lon, lat, label, k = v
            return lon, lat, f"{100 * k + 2} {label}"

        lon, lat, addr = at(verts[min(1, len(verts) - 1)])
        stations.append(Station(f"ps-{t.id}", "police", f"{t.name} POLICE HEADQUARTERS", addr, t.id, t.name, lon, lat))
        # Headquarters at the start of Main Street; a city adds a station per 50,000 people.
        extra = min(int(pops[ti] // 50_000), len(verts) - 1)
        picks = [0] + sorted(rng.choice(np.arange(1, len(verts)), size=extra, replace=False).tolist())
        for k, vi in enumerate(picks):
            lon, lat, addr = at(verts[vi])
            stations.append(Station(
                f"fs-{t.id}-{k + 1}", "fire", f"{t.name} FIRE STATION {k + 1}", addr, t.id, t.name, lon, lat,
            ))
    return stations


# --- callers -------------------------------------------------------------------------------


def sample_callers(state: DemoState, n: int, seed: int = 0) -> list[tuple[float, float, str]]:
    """``n`` callers as (lon, lat, town id): towns drawn by population, points uniform inside."""
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    rng = np.random.default_rng(seed)
    pops = np.array([t.population for t in state.towns], dtype=float)
    which = rng.choice(len(state.towns), size=n, p=pops / pops.sum())
    out: list[tuple[float, float, str] | None] = [None] * n
    for ti in np.unique(which):
        slots = np.flatnonzero(which == ti)
        town = state.towns[int(ti)]
        pts = _random_points_in(town.geometry, slots.size, rng)
        for slot, (lon, lat) in zip(slots.tolist(), pts.tolist()):
            out[slot] = (lon, lat, town.id)
    return [c for c in out if c is not None]
