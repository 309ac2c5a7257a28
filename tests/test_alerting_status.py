"""The status board, sans-I/O, on the generated demo state (60 towns): PSAP and region
outages, clearing, diverts, business lines that work, and the nearest staffed station and
alarm box checked against a brute-force search."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import shapely

from firebox.alerting.businesslines import BusinessLine, BusinessLineRegistry, LineHealth, OwnerKind, parse_hours
from firebox.alerting.status import StatusBoard, TownStatus, board_from_demo
from firebox.demo.state import DemoState, generate_state
from firebox.monitor.detector import Outage, OutageScope, OutageState

T0 = datetime(2025, 3, 4, 12, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()  # a Tuesday noon


@pytest.fixture(scope="module")
def state() -> DemoState:
    return generate_state(seed=911, n_towns=60)


def outage(oid: str, scope: OutageScope, key: str, state: OutageState, start: float, end: float | None = None) -> dict:
    # The detector's own record and serialisation, as the monitor hands them on.
    o = Outage(id=oid, scope=scope, key=key, state=state, started=start, cause="test calls get no answer",
               ended=end, updated=start)  # fmt: skip
    return o.as_dict()


def regional_psap(state: DemoState):
    return next(p for p in state.psaps if len(p.towns) >= 3)


def test_psap_cut_takes_its_towns_down_and_clearing_brings_them_back(state: DemoState) -> None:
    board = board_from_demo(state, now=T0)
    assert board.towns_with(TownStatus.WORKING) == sorted(t.id for t in state.towns)
    v0 = board.version
    psap = regional_psap(state)
    assert board.apply_outage(outage("psap-x-1", OutageScope.PSAP, psap.id, OutageState.SUSPECTED, T0 + 10), T0 + 10)
    assert board.towns_with(TownStatus.DEGRADED) == sorted(psap.towns)
    assert board.version == v0 + 1
    assert board.apply_outage(outage("psap-x-1", OutageScope.PSAP, psap.id, OutageState.CONFIRMED, T0 + 10), T0 + 20)
    assert board.towns_with(TownStatus.DOWN) == sorted(psap.towns)
    others = sorted(t.id for t in state.towns if t.psap_id != psap.id)
    assert board.towns_with(TownStatus.WORKING) == others
    rec = board.records[psap.towns[0]]
    assert rec["status"] == "down" and rec["outages"] == ["psap-x-1"]
    assert rec["since"] == datetime.fromtimestamp(T0 + 10, ZoneInfo("UTC")).isoformat(timespec="seconds")
    assert "may not get through" in rec["message"] and "Call 911 first" in rec["message"]
    # What to do instead: lines of the alternates first (its own PSAP is down), then its own.
    numbers = [line["number"] for line in rec["instead"]["business_lines"]]
    alt_numbers = [state.psap(a).business_line for a in psap.alternates]
    assert numbers == [*alt_numbers, psap.business_line]
    # An update that changes no town's record (more calls affected) keeps the version.
    v = board.version
    again = outage("psap-x-1", OutageScope.PSAP, psap.id, OutageState.CONFIRMED, T0 + 10)
    again["calls_affected"] = 42
    assert not board.apply_outage(again, T0 + 30) and board.version == v
    # Cleared: working again, since the clearing.
    assert board.apply_outage(outage("psap-x-1", OutageScope.PSAP, psap.id, OutageState.CLEARED, T0 + 10, T0 + 90), T0 + 90)
    assert board.towns_with(TownStatus.WORKING) == sorted(t.id for t in state.towns)
    assert board.records[psap.towns[0]]["since"] == datetime.fromtimestamp(T0 + 90, ZoneInfo("UTC")).isoformat(timespec="seconds")
    assert board.records[psap.towns[0]]["outages"] == []
    assert board.version == v + 1


def test_region_and_statewide_outages(state: DemoState) -> None:
    board = board_from_demo(state, now=T0)
    county = state.psaps[0].county
    in_region = sorted(t for p in state.psaps if p.county == county for t in p.towns)
    board.apply_outage(outage("region-1", OutageScope.REGION, county, OutageState.CONFIRMED, T0), T0)
    assert board.towns_with(TownStatus.DOWN) == in_region
    assert len(board.towns_with(TownStatus.WORKING)) == 60 - len(in_region)
    # A statewide suspicion degrades everyone else; the region stays down (the worst wins).
    board.apply_outage(outage("statewide-2", OutageScope.STATEWIDE, "all", OutageState.SUSPECTED, T0 + 5), T0 + 5)
    assert board.towns_with(TownStatus.DOWN) == in_region
    assert len(board.towns_with(TownStatus.DEGRADED)) == 60 - len(in_region)
    assert board.records[in_region[0]]["outages"] == ["region-1", "statewide-2"]
    doc = board.document()
    assert doc["summary"] == {"working": 0, "degraded": 60 - len(in_region), "down": len(in_region)}
    assert [t["status"] for t in doc["towns"][: len(in_region)]] == ["down"] * len(in_region)  # not working first
    # An element outage with no PSAP mapping concerns every caller; with one, only those.
    board.apply_outage(outage("region-1", OutageScope.REGION, county, OutageState.CLEARED, T0, T0 + 9), T0 + 9)
    board.apply_outage(outage("statewide-2", OutageScope.STATEWIDE, "all", OutageState.CLEARED, T0, T0 + 9), T0 + 9)
    assert len(board.towns_with(TownStatus.WORKING)) == 60
    mapped = board_from_demo(state, now=T0, element_psaps={"ingress bcf-west": ["psap-01"]})
    mapped.apply_outage(outage("element-3", OutageScope.ELEMENT, "ingress bcf-west", OutageState.CONFIRMED, T0), T0)
    assert mapped.towns_with(TownStatus.DOWN) == sorted(state.psap("psap-01").towns)
    board.apply_outage(outage("element-4", OutageScope.ELEMENT, "esrp.demo", OutageState.SUSPECTED, T0), T0)
    assert len(board.towns_with(TownStatus.DEGRADED)) == 60
    # An ingress tied to no PSAP is one of several ways in: confirmed, every town is degraded
    # (some calls fail until the carrier moves), not down.
    board.apply_outage(outage("element-4", OutageScope.ELEMENT, "esrp.demo", OutageState.CLEARED, T0, T0 + 2), T0 + 2)
    board.apply_outage(outage("element-5", OutageScope.ELEMENT, "ingress edge-a", OutageState.CONFIRMED, T0 + 3), T0 + 3)
    assert len(board.towns_with(TownStatus.DEGRADED)) == 60 and board.towns_with(TownStatus.DOWN) == []


def test_diverted_psap_is_degraded_and_bad_input_is_named(state: DemoState) -> None:
    board = board_from_demo(state, now=T0)
    psap = regional_psap(state)
    assert board.set_diverted(psap.id, True, T0 + 1)
    assert board.towns_with(TownStatus.DEGRADED) == sorted(psap.towns)
    assert "backup of" in board.records[psap.towns[0]]["message"]
    assert board.set_diverted(psap.id, False, T0 + 2)
    assert len(board.towns_with(TownStatus.WORKING)) == 60
    with pytest.raises(ValueError, match="scope 'county' is not one of"):
        board.apply_outage({"id": "x", "scope": "county", "key": "k", "state": "confirmed"}, T0)
    with pytest.raises(ValueError, match="state 'gone' is not suspected"):
        board.apply_outage({"id": "x", "scope": "psap", "key": "k", "state": "gone"}, T0)
    with pytest.raises(ValueError, match="missing member 'state'"):
        board.apply_outage({"id": "x", "scope": "psap", "key": "k"}, T0)
    with pytest.raises(ValueError, match="unknown PSAP 'psap-99'"):
        board.set_diverted("psap-99", True, T0)


def test_lines_that_work_follow_gateway_health_and_hours(state: DemoState) -> None:
    psap = regional_psap(state)
    town = psap.towns[0]
    desk = BusinessLine("603-555-0190", f"pd-{town}", "Police desk", parse_hours("Mon-Fri 08:00-17:00"), OwnerKind.AGENCY, (town,))
    lines = BusinessLineRegistry([
        *(BusinessLine(p.business_line, p.id, p.name, kind=OwnerKind.PSAP, towns=p.towns) for p in state.psaps), desk,
    ])  # fmt: skip
    board = board_from_demo(state, lines, now=T0)
    numbers = lambda: [line["number"] for line in board.records[town]["instead"]["business_lines"]]  # noqa: E731
    assert numbers()[0] == psap.business_line and numbers()[-1] == "6035550190"
    v = board.version
    assert board.set_line_health(psap.business_line, LineHealth.DOWN, T0 + 1)
    assert psap.business_line not in numbers() and board.version == v + 1
    assert not board.set_line_health(psap.business_line, LineHealth.DOWN, T0 + 2)  # no change, same version
    # Evening: the desk is closed; tick() notices.
    assert board.tick(T0 + 8 * 3600)
    assert "6035550190" not in numbers()
    with pytest.raises(ValueError, match="not a business line"):
        board.set_line_health("6175550000", LineHealth.UP, T0)


def _brute_km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    # The haversine formula written out again, scalar, independent of the board's numpy.
    r = 6371.0088
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def test_nearest_station_and_box_match_brute_force(state: DemoState) -> None:
    board = board_from_demo(state, now=T0, box_max_km=1000.0)
    for t in state.towns:
        c = shapely.centroid(t.geometry)
        for kind in ("fire", "police"):
            best = min((s for s in state.stations if s.kind == kind), key=lambda s: _brute_km(c.x, c.y, s.lon, s.lat))
            got = board.nearest_station(t.id, kind, T0)
            assert got is not None and got[0].id == best.id
            assert got[1] == pytest.approx(_brute_km(c.x, c.y, best.lon, best.lat), rel=1e-9)
            assert board.records[t.id]["instead"][f"{kind}_station"]["id"] == best.id
        box = min(state.boxes, key=lambda b: _brute_km(c.x, c.y, b.lon, b.lat))
        got_box = board.nearest_box(t.id)
        assert got_box is not None and got_box[0].number == box.number
    # With the default 5 km limit, a town far from any box is offered none.
    near = board_from_demo(state, now=T0)
    far = [t.id for t in state.towns if board.nearest_box(t.id)[1] > 5.0]
    assert far and all(near.records[t]["instead"]["alarm_box"] is None for t in far)


def test_nearest_staffed_station_skips_a_closed_one(state: DemoState) -> None:
    board = board_from_demo(state, now=T0)
    t = state.towns[0]
    first, _ = board.nearest_station(t.id, "fire", T0)
    # The same board, but its nearest fire station volunteer-staffed on weekend days only.
    stations = [s if s.id != first.id else type(s)(**{**{f: getattr(s, f) for f in s.__slots__},
                                                        "hours": parse_hours("Sat-Sun 08:00-18:00")})
                for s in board.stations]  # fmt: skip
    b2 = StatusBoard(board.towns.values(), board.psaps.values(), board.lines, regions=board.regions,
                     stations=stations, boxes=board.boxes, now=T0)  # fmt: skip
    second, km = b2.nearest_station(t.id, "fire", T0)
    assert second.id != first.id and km >= board.nearest_station(t.id, "fire", T0)[1]
    saturday = T0 + 4 * 86400
    assert b2.nearest_station(t.id, "fire", saturday)[0].id == first.id


def test_real_massachusetts_towns_boston_boxes_and_police_stations(shared_data) -> None:
    """351 MassGIS towns, Boston's 1,850 street fire alarm boxes and 13 police stations:
    the nearest ones match a brute-force search; a box is offered only within 5 km."""
    import csv
    import json

    from firebox.alerting.status import BoxInfo, PsapInfo, StationInfo, TownInfo

    feats = json.loads((shared_data / "ma" / "towns.geojson").read_text())["features"]
    towns = []
    for f in feats:
        geom = shapely.make_valid(shapely.geometry.shape(f["geometry"]))  # WAYLAND's ring is invalid
        c = shapely.centroid(geom)
        towns.append(TownInfo(f"ma-{f['properties']['TOWN_ID']}", f["properties"]["TOWN"].title(),
                              f"psap-{f['properties']['TOWN_ID']}", c.x, c.y))  # fmt: skip
    psaps = [PsapInfo(t.psap_id, f"{t.name} 911") for t in towns]
    boxes = [
        BoxInfo(int(f["properties"]["BOXVAL"]), f["properties"]["LOCATION"], "ma-35", "Boston", *f["geometry"]["coordinates"])
        for f in json.loads((shared_data / "boston" / "fire_alarm_boxes.geojson").read_text())["features"]
    ]
    with open(shared_data / "boston" / "police_stations.csv", encoding="utf-8-sig", newline="") as fh:
        police = [StationInfo(f"bpd-{r['OBJECTID']}", "police", r["NAME"], r["ADDRESS"], "Boston", float(r["X"]), float(r["Y"]))
                  for r in csv.DictReader(fh)]  # fmt: skip
    assert len(towns) == 351 and len(boxes) == 1850 and len(police) == 13
    board = StatusBoard(towns, psaps, BusinessLineRegistry([]), stations=police, boxes=boxes, now=T0)
    for t in towns:
        best = min(police, key=lambda s: _brute_km(t.lon, t.lat, s.lon, s.lat))
        got = board.nearest_station(t.id, "police", T0)
        assert got is not None and got[0].id == best.id
        box = min(boxes, key=lambda b: _brute_km(t.lon, t.lat, b.lon, b.lat))
        km = _brute_km(t.lon, t.lat, box.lon, box.lat)
        offered = board.records[t.id]["instead"]["alarm_box"]
        assert (offered is not None) == (km <= 5.0)
        if offered is not None:
            assert offered["number"] == box.number
    boston = next(t for t in towns if t.name == "Boston")
    assert board.records[boston.id]["instead"]["alarm_box"] is not None
    assert board.records[next(t.id for t in towns if t.name == "Pittsfield")]["instead"]["alarm_box"] is None
    assert board.records[boston.id]["instead"]["fire_station"] is None  # none given: none invented
    board.apply_outage(outage("psap-boston", OutageScope.PSAP, boston.psap_id, OutageState.CONFIRMED, T0), T0)
    assert board.towns_with(TownStatus.DOWN) == [boston.id]
