"""The generated demo state: deterministic, a clean partition, PSAPs, streets, boxes, callers."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np
import pytest
import shapely

from firebox.demo.state import (
    AMBULANCE,
    FIRE,
    KM_PER_DEG_LAT,
    KM_PER_DEG_LON,
    OWN_PSAP_POPULATION,
    POLICE,
    SERVICES,
    SOS,
    generate_state,
    sample_callers,
)
from firebox.gis.layers import load_boundary_layer, read_features
from firebox.gis.quality import area_m2, check_boundaries


@pytest.fixture(scope="module")
def state():
    return generate_state()


@pytest.fixture(scope="module")
def written(state, tmp_path_factory):
    return state.write_geojson(tmp_path_factory.mktemp("demo"))


def test_same_seed_same_state(state, written, tmp_path):
    again = generate_state(911, 60)
    assert again.psaps == state.psaps and again.boxes == state.boxes and again.stations == state.stations
    paths = again.write_geojson(tmp_path)
    assert set(paths) == set(written)
    for key, path in paths.items():
        assert path.read_bytes() == written[key].read_bytes(), key
    other = generate_state(912, 60)
    assert [t.name for t in other.towns] != [t.name for t in state.towns]


@pytest.mark.parametrize("n", [40, 80])
def test_town_count_follows_the_argument(n):
    s = generate_state(7, n)
    assert len(s.towns) == n and len(s.layers[POLICE]) == n


def test_town_count_out_of_range_is_refused():
    with pytest.raises(ValueError, match="40..80"):
        generate_state(1, 12)


def test_towns_names_ids_and_populations(state):
    towns = state.towns
    assert len(towns) == 60
    assert len({t.id for t in towns}) == 60 and len({t.name for t in towns}) == 60
    assert all(re.fullmatch(r"[A-Z]+( [A-Z]+)?", t.name) for t in towns)
    assert all(re.fullmatch(r"town-\d\d", t.id) for t in towns)
    pops = sorted(t.population for t in towns)
    assert sum(p >= 100_000 for p in pops) >= 2
    assert sum(2_000 <= p <= 20_000 for p in pops) >= 30
    assert len(set(state.counties)) == len(state.counties) >= 3
    assert {t.county for t in towns} == set(state.counties)


def test_state_size_and_place(state):
    minx, miny, maxx, maxy = state.outline.bounds
    assert 170 < (maxx - minx) * KM_PER_DEG_LON < 230
    assert 125 < (maxy - miny) * KM_PER_DEG_LAT < 175
    c = state.outline.centroid
    assert abs(c.y - 43.2) < 0.2 and abs(c.x + 71.6) < 0.3
    assert state.name == "Demo State" and state.abbreviation == "DS"


@pytest.mark.parametrize("service", SERVICES)
def test_every_layer_partitions_the_state(state, service):
    bs = state.layers[service]
    report = check_boundaries(
        [b.id for b in bs], [b.name for b in bs], [b.geometry for b in bs], service,
        uris=[b.uri for b in bs], outline=state.outline,
    )
    assert report.findings == [], report.to_json()
    assert report.overlap_slivers == 0 and report.gap_slivers == 0
    total = sum(area_m2(b.geometry) for b in bs)
    assert total == pytest.approx(area_m2(state.outline), rel=1e-9)


def test_every_town_served_by_exactly_one_psap(state):
    served = Counter(t for p in state.psaps for t in p.towns)
    assert set(served) == {t.id for t in state.towns} and set(served.values()) == {1}
    sos = state.layer(SOS)
    for town in state.towns:
        p = shapely.point_on_surface(town.geometry)
        containing = [b.id for b in sos.boundaries if b.geometry.contains(p)]
        assert containing == [town.psap_id]
        assert state.psap(town.psap_id).uri == sos.by_id(town.psap_id).uri
        assert town.id in state.psap(town.psap_id).towns


def test_psaps_local_and_regional(state):
    psaps = state.psaps
    regional = [p for p in psaps if p.kind == "regional"]
    assert len(regional) >= 3
    assert all(2 <= len(p.towns) <= 6 for p in regional)
    assert all(len(p.towns) == 1 for p in psaps if p.kind == "local")
    for town in state.towns:
        if town.population >= OWN_PSAP_POPULATION:
            assert state.psap(town.psap_id).towns == (town.id,)
    # Regional PSAPs serve neighbouring towns: their union is one piece.
    sos = state.layer(SOS)
    for p in regional:
        assert sos.by_id(p.id).geometry.geom_type == "Polygon"


def test_psap_numbers_and_uris(state):
    ids = [p.id for p in state.psaps]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"psap-\d\d", i) for i in ids)
    for p in state.psaps:
        assert p.uri == f"sip:{p.id}@psap.demo.firebox.test"
        assert re.fullmatch(r"60355501\d\d", p.business_line)
        assert p.business_line.endswith(p.id[-2:])


def test_alternates_are_a_neighbour_then_a_backup(state):
    known = {p.id for p in state.psaps}
    sos = state.layer(SOS)
    for p in state.psaps:
        assert len(p.alternates) == 2 and len(set(p.alternates)) == 2
        assert p.id not in p.alternates and set(p.alternates) <= known
        neighbour = sos.by_id(p.alternates[0]).geometry
        assert sos.by_id(p.id).geometry.intersection(neighbour).length > 0  # shares a border


def test_deployment_accepts_the_psaps(state, written):
    from firebox.node import demo_deployment

    dep = demo_deployment(state, written, "127.0.0.1:7070")
    assert dep.cross_check() == []
    assert [p.id for p in dep.psaps] == [p.id for p in state.psaps]


def test_police_fire_and_ems(state):
    police = state.layers[POLICE]
    assert [b.attrs["town_id"] for b in police] == [t.id for t in state.towns]
    assert all(b.attrs["population"] > 0 for b in police)
    fire_towns = sorted(t for b in state.layers[FIRE] for t in b.attrs["towns"].split(","))
    assert fire_towns == sorted(t.id for t in state.towns)
    assert any("," in b.attrs["towns"] for b in state.layers[FIRE])
    assert 3 <= len(state.layers[AMBULANCE]) <= 6
    for service in SERVICES:
        assert all(b.uri.startswith("sip:") for b in state.layers[service])


def test_streets_inside_towns_with_consistent_ranges(state):
    geoms = {t.id: t.geometry for t in state.towns}
    by_street: dict[tuple[str, str], list] = defaultdict(list)
    for seg in state.streets:
        assert geoms[seg.town_id].contains(seg.geometry), seg.id
        assert seg.l_from % 2 == 1 and seg.l_to % 2 == 1 and seg.r_from % 2 == 0 and seg.r_to % 2 == 0
        assert seg.l_from <= seg.l_to and seg.r_from <= seg.r_to
        assert seg.zip_left == seg.zip_right == state.town(seg.town_id).zip
        by_street[(seg.town_id, seg.street_name)].append(seg)
    per_town = Counter(town for town, _ in by_street)
    assert set(per_town) == set(geoms)
    assert all(5 <= n <= 40 for n in per_town.values())
    big = max(state.towns, key=lambda t: t.population)
    small = min(state.towns, key=lambda t: t.population)
    assert per_town[big.id] > per_town[small.id]
    for segs in by_street.values():
        segs.sort(key=lambda s: s.id)
        assert 2 <= len(segs) <= 10
        assert len({s.street_type for s in segs}) == 1
        for a, b in zip(segs, segs[1:]):
            assert a.geometry.coords[-1] == b.geometry.coords[0]  # a continuous street
            assert b.l_from > a.l_to and b.r_from > a.r_to  # numbers increase along it
    props = state.streets[0].properties()
    for name in ("Street_Name", "Street_Type", "L_From", "L_To", "R_From", "R_To", "ZIP_Left", "ZIP_Right", "Town"):
        assert name in props


def test_fire_alarm_boxes(state):
    boxes = state.boxes
    assert len(boxes) > 20
    assert len({b.number for b in boxes}) == len(boxes)
    assert all(1000 <= b.number <= 9999 for b in boxes)
    segs_by_town = defaultdict(list)
    for s in state.streets:
        segs_by_town[s.town_id].append(s)
    for b in boxes:
        town = state.town(b.town_id)
        assert town.population >= 20_000 and b.district == town.fire_id
        m = re.fullmatch(r"([A-Z ]+) ([A-Z]+) at ([A-Z ]+) ([A-Z]+)", b.location)
        assert m, b.location
        p = shapely.Point(b.lon, b.lat)
        on = {f"{s.street_name} {s.street_type}".upper() for s in segs_by_town[b.town_id] if s.geometry.distance(p) < 1e-12}
        assert {f"{m[1]} {m[2]}", f"{m[3]} {m[4]}"} <= on


def test_stations(state):
    kinds = defaultdict(Counter)
    for s in state.stations:
        kinds[s.town_id][s.kind] += 1
        assert state.town(s.town_id).geometry.contains(shapely.Point(s.lon, s.lat))
        assert re.fullmatch(r"\d+ \w+ \w+", s.address)
    assert all(kinds[t.id]["fire"] >= 1 and kinds[t.id]["police"] == 1 for t in state.towns)
    assert len({s.id for s in state.stations}) == len(state.stations)


def test_callers_inside_towns_weighted_by_population(state):
    callers = sample_callers(state, 3000, seed=5)
    assert callers == sample_callers(state, 3000, seed=5)
    assert len(callers) == 3000
    geoms = {t.id: t.geometry for t in state.towns}
    for lon, lat, town in callers:
        assert shapely.contains_xy(geoms[town], lon, lat)
    counts = Counter(town for _, _, town in callers)
    total = sum(t.population for t in state.towns)
    big = max(state.towns, key=lambda t: t.population)
    expected = 3000 * big.population / total
    assert abs(counts[big.id] - expected) < 5 * np.sqrt(expected)
    assert counts[big.id] > counts[min(state.towns, key=lambda t: t.population).id]


def test_written_layers_load_back_and_answer_the_same(state, written):
    callers = sample_callers(state, 500, seed=11)
    xs = np.array([c[0] for c in callers])
    ys = np.array([c[1] for c in callers])
    # Points exactly on borders too: every town's vertices.
    verts = shapely.get_coordinates(np.array([t.geometry for t in state.towns[:10]]))
    xs, ys = np.concatenate([xs, verts[:, 0]]), np.concatenate([ys, verts[:, 1]])
    for service in SERVICES:
        loaded, report = load_boundary_layer(written[service], service, "id", "name", uri_attr="uri")
        assert report.ok and report.findings == []
        memory = state.layer(service)
        assert [b.id for b in loaded.boundaries] == [b.id for b in memory.boundaries]
        assert [b.uri for b in loaded.boundaries] == [b.uri for b in memory.boundaries]
        got = [loaded.boundaries[i].id for i in loaded.locate_xy(xs, ys)]
        want = [memory.boundaries[i].id for i in memory.locate_xy(xs, ys)]
        assert got == want
    police, _ = load_boundary_layer(written[POLICE], POLICE, "id", "name", uri_attr="uri")
    assert police.boundaries[0].attrs["population"] == state.towns[0].population
    geoms, cols, _ = read_features(written["streets"])
    assert len(geoms) == len(state.streets)
    assert cols["Street_Name"][0] == state.streets[0].street_name and cols["Town"][0] == state.towns[0].name
    assert cols["L_From"][:3] == [s.l_from for s in state.streets[:3]]
    geoms, cols, _ = read_features(written["boxes"])
    assert [int(b) for b in cols["BOX"]] == [b.number for b in state.boxes]
    geoms, cols, _ = read_features(written["towns"])
    assert cols["name"] == [t.name for t in state.towns] and cols["psap"] == [t.psap_id for t in state.towns]


def test_stray_piece_of_a_clipped_cell_joins_its_neighbour():
    from shapely.geometry import MultiPolygon, box

    from firebox.demo.state import _tidy_partition

    # Cell 0 was cut in two by the outline; its small piece borders cell 1 along 2 km and
    # cell 2 along 1 km: it joins cell 1.
    cells = [MultiPolygon([box(0, 0, 4, 4), box(5, 0, 6, 2)]), box(4, 0, 5, 4), box(6, 0, 9, 1)]
    tidy = _tidy_partition(cells)
    assert tidy[0].equals(box(0, 0, 4, 4))
    assert tidy[1].equals(shapely.union(box(4, 0, 5, 4), box(5, 0, 6, 2)))
    assert tidy[2].equals(box(6, 0, 9, 1))
    assert shapely.union_all(tidy).equals(shapely.union_all(cells))
    assert all(t.geom_type == "Polygon" for t in tidy)
