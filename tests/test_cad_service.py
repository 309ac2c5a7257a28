"""The CAD element: incidents from a call (PIDF-LO), a fire alarm box (demo and real Boston
boxes), by hand (civic address geocoded by the real LVF over the demo state's streets);
dispatch, unit status, close; timeline and audit; memory and SQLite repositories, and a
restart on SQLite that keeps everything."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyproj import Geod

from firebox.cad.data import (
    AlarmBox,
    boxes_from_demo,
    load_boxes_geojson,
    units_from_stations,
)
from firebox.cad.model import (
    Action,
    CadError,
    IncidentStatus,
    IncidentSubtype,
    IncidentType,
    NotFound,
    TransitionError,
    Unit,
    UnitKind,
    UnitStatus,
    incident_to_json,
    unit_to_json,
)
from firebox.cad.service import Cad, LvfGeocoder
from firebox.cad.store import MemoryRepository, SqliteRepository
from firebox.demo.state import DemoState, generate_state
from firebox.ecrf.lvf import Lvf
from firebox.location.civic import CivicAddress
from firebox.location.pidf import PidfLocation, Presence, serialize_pidf
from firebox.location.shapes import Circle, Point
from firebox.logging.events import new_call_id, new_incident_id

T0 = datetime(2025, 3, 1, 14, 0, tzinfo=UTC)
FQDN = "cad.demo.firebox.test"
GEOD = Geod(ellps="WGS84")


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def state() -> DemoState:
    return generate_state()


@pytest.fixture(scope="module")
def lvf(state: DemoState, tmp_path_factory: pytest.TempPathFactory) -> Lvf:
    paths = state.write_geojson(tmp_path_factory.mktemp("demo"))
    return Lvf.from_geojson(paths["streets"], default_state=state.abbreviation)


@pytest.fixture(params=["memory", "sqlite"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryRepository | SqliteRepository]:
    if request.param == "memory":
        yield MemoryRepository()
    else:
        r = SqliteRepository(tmp_path / "cad.sqlite")
        yield r
        r.close()


def make_cad(repo, state: DemoState, lvf: Lvf) -> Cad:
    cad = Cad(
        repo, fqdn=FQDN, geocoder=LvfGeocoder(lvf), boxes=boxes_from_demo(state.boxes),
        stations={s.id: Point(lat=s.lat, lon=s.lon) for s in state.stations},
    )  # fmt: skip
    cad.add_units(units_from_stations(state.stations), T0 - timedelta(hours=8), "roster")
    return cad


def pidf(*locs: PidfLocation) -> bytes:
    return serialize_pidf(Presence("pres:caller@carrier.example", list(locs)))


def test_incident_from_a_call_with_a_pidf_lo(repo, state: DemoState, lvf: Lvf):
    cad = make_cad(repo, state, lvf)
    call_id, tracking = new_call_id("bcf.example.test"), new_incident_id("bcf.example.test")
    where = Point(lat=state.boxes[3].lat, lon=state.boxes[3].lon)
    inc = cad.incident_from_call(
        at=t(0), actor="ct1", call_id=call_id, incident_tracking_id=tracking,
        callback="+16035550123", pidf=pidf(PidfLocation(shapes=[Circle(where, 25.0)])),
        type=IncidentType.EMS, subtype=IncidentSubtype.MEDICAL, priority=2,
        narrative="man down, breathing",
    )  # fmt: skip
    # The BCF's Incident Tracking Identifier follows the incident into the CAD.
    assert inc.id == tracking
    assert inc.location.point == where and inc.location.method == "pidf"
    assert inc.source.callback == "+16035550123" and inc.calls[0].call_id == call_id
    assert [e.action for e in inc.timeline] == [Action.CREATED, Action.NARRATIVE]
    assert inc.timeline[0].actor == "ct1" and inc.timeline[0].detail["calls"] == [call_id]
    stored = cad.incident(inc.id)
    assert incident_to_json(stored) == incident_to_json(inc)
    assert [(a.action, a.target, a.actor) for a in cad.audit(inc.id)] == [("incident created", inc.id, "ct1")]
    # A second caller for the same incident is linked, not a new incident.
    second = new_call_id("bcf.example.test")
    cad.link_call(inc.id, second, at=t(40), actor="ct2", callback="+16035550999")
    assert [c.call_id for c in cad.incident(inc.id).calls] == [call_id, second]
    with pytest.raises(CadError, match="already exists: link the call"):
        cad.incident_from_call(at=t(50), actor="ct1", call_id=new_call_id("bcf.example.test"),
                               incident_tracking_id=tracking, type=IncidentType.EMS,
                               subtype=IncidentSubtype.MEDICAL, priority=2)  # fmt: skip


def test_call_with_a_civic_pidf_is_geocoded_and_bad_input_is_named(repo, state: DemoState, lvf: Lvf):
    cad = make_cad(repo, state, lvf)
    seg = state.streets[100]
    civic = CivicAddress(country="US", A1="DS", A3=seg.town.title(), RD=seg.street_name,
                         STS=seg.street_type, HNO=str(seg.l_from + 2))  # fmt: skip
    inc = cad.incident_from_call(
        at=t(0), actor="ct1", call_id=new_call_id("bcf.example.test"),
        pidf=pidf(PidfLocation(civic=civic)), type="police", subtype="disturbance", priority=3,
    )  # type: ignore[arg-type]  # fmt: skip
    assert inc.location.civic == civic and inc.location.validated is True
    assert inc.location.point == lvf.geocode(civic)
    assert inc.id.startswith("urn:emergency:uid:incidentid:") and inc.id.endswith(":" + FQDN)
    with pytest.raises(CadError, match="call_id: must be urn:emergency:uid:callid"):
        cad.incident_from_call(at=t(0), actor="ct1", call_id="1234", type=IncidentType.EMS,
                               subtype=IncidentSubtype.MEDICAL, priority=2)  # fmt: skip
    with pytest.raises(CadError, match="pidf: "):
        cad.incident_from_call(at=t(0), actor="ct1", call_id=new_call_id("x.example"), pidf=b"<nope/>",
                               type=IncidentType.EMS, subtype=IncidentSubtype.MEDICAL, priority=2)  # fmt: skip
    with pytest.raises(CadError, match="subtype: 'knife fight' is not one of"):
        cad.incident_from_call(at=t(0), actor="ct1", call_id=new_call_id("x.example"),
                               type=IncidentType.POLICE, subtype="knife fight", priority=2)  # type: ignore[arg-type]  # fmt: skip
    assert len(cad.incidents()) == 1  # refused requests made nothing


def test_box_alarm_dispatch_status_and_close(repo, state: DemoState, lvf: Lvf):
    cad = make_cad(repo, state, lvf)
    box = state.boxes[0]
    inc = cad.incident_from_box(box.number, at=t(0))
    assert inc.location.point == Point(lat=box.lat, lon=box.lon)
    assert inc.location.description == f"box {box.number}: {box.location}"
    assert inc.source.box == str(box.number) and inc.subtype is IncidentSubtype.ALARM_BOX

    rec = cad.recommend(inc.id)
    engine, ladder = rec.slots[0].unit_id, rec.slots[1].unit_id
    assert engine and engine.startswith("E") and ladder and ladder.startswith("L")
    cad.dispatch(inc.id, rec.unit_ids, at=t(20), actor="disp1")
    assert cad.incident(inc.id).status is IncidentStatus.DISPATCHED
    assert {cad.unit(u).status for u in rec.unit_ids} == {UnitStatus.DISPATCHED}
    # Units committed here are no longer recommended for the next incident.
    other = cad.incident_from_box(box.number, at=t(30), actor="fire alarm telegraph")
    assert engine not in cad.recommend(other.id).unit_ids
    with pytest.raises(TransitionError, match=f"unit {engine} cannot be dispatched: it is dispatched to incident {inc.id}"):
        cad.dispatch(other.id, [engine], at=t(31), actor="disp1")

    cad.unit_status(engine, "en route", at=t(60), actor="E-crew")
    cad.unit_status(engine, UnitStatus.ON_SCENE, at=t(240), actor="E-crew")
    assert cad.incident(inc.id).status is IncidentStatus.ON_SCENE
    assert cad.unit(engine).position == inc.location.point  # on scene: at the incident
    with pytest.raises(TransitionError, match=f"unit {engine}: cannot go from 'on scene' to 'available'"):
        cad.unit_status(engine, UnitStatus.AVAILABLE, at=t(250), actor="E-crew")
    cad.add_narrative(inc.id, "nothing showing, box reset", at=t(600), actor="E-crew")
    closed = cad.close(inc.id, at=t(700), actor="disp1", disposition="false alarm")
    assert closed.status is IncidentStatus.CLOSED and closed.closed_at == t(700)
    # Closing cleared every unit still committed (returning), and released them.
    for uid in rec.unit_ids:
        u = cad.unit(uid)
        assert u.status is UnitStatus.CLEARED and u.incident_id is None
    with pytest.raises(TransitionError, match="it is closed"):
        cad.dispatch(inc.id, [engine], at=t(710), actor="disp1")
    with pytest.raises(TransitionError, match="already closed"):
        cad.close(inc.id, at=t(710), actor="disp1")

    story = [(e.at, e.actor, e.action.value, e.detail.get("unit"), e.detail.get("new")) for e in closed.timeline]
    assert story[0] == (t(0), "fire alarm telegraph", "created", None, None)
    assert (t(20), "disp1", "status", None, "dispatched") in story
    assert (t(240), "E-crew", "unit status", engine, "on scene") in story
    assert (t(240), "E-crew", "status", engine, "on scene") in story  # the arrival moved it
    assert (t(700), "disp1", "unit status", ladder, "cleared") in story
    assert story[-1][2] == "closed"
    assert [e.at for e in closed.timeline] == sorted(e.at for e in closed.timeline)
    actions = [a.action for a in cad.audit(inc.id)]
    assert actions == ["incident created", "dispatched", "narrative added", "incident closed"]
    assert [a.action for a in cad.audit(engine)] == ["unit added", "unit status", "unit status"]
    # A returning unit can be sent again.
    cad.dispatch(other.id, [engine], at=t(720), actor="disp1")
    assert cad.unit(engine).incident_id == other.id


def test_unknown_box_and_unknown_unit_are_named(repo, state: DemoState, lvf: Lvf):
    cad = make_cad(repo, state, lvf)
    with pytest.raises(NotFound, match="no fire alarm box '1'"):
        cad.incident_from_box(1, at=t(0))
    inc = cad.incident_from_box(state.boxes[1].number, at=t(0))
    free = cad.recommend(inc.id).unit_ids[0]
    with pytest.raises(NotFound, match="no unit 'E999'"):
        cad.dispatch(inc.id, [free, "E999"], at=t(5), actor="disp1")
    assert cad.unit(free).status is UnitStatus.AVAILABLE  # nothing moved
    assert cad.incident(inc.id).status is IncidentStatus.NEW


def test_walk_in_with_an_address_geocoded_by_the_lvf(repo, state: DemoState, lvf: Lvf):
    cad = make_cad(repo, state, lvf)
    station = next(s for s in state.stations if s.kind == "fire")
    seg = next(s for s in state.streets if s.town_id == station.town_id and s.l_from > 100)
    civic = CivicAddress(A3=seg.town, RD=seg.street_name, STS=seg.street_type, HNO=str(seg.r_from))
    inc = cad.incident_by_hand(
        at=t(0), actor="FF Ortiz", station=station.id, civic=civic, type=IncidentType.EMS,
        subtype=IncidentSubtype.MEDICAL, priority=2, narrative="neighbour ran in: fall, head injury",
    )  # fmt: skip
    assert inc.source.kind.value == "walk-in" and inc.source.station == station.id
    assert inc.location.validated is True and inc.location.method == "lvf"
    assert inc.location.point == lvf.geocode(civic)
    assert cad.recommend(inc.id).unit_ids[0].startswith("A")

    # An address the LVF does not know still makes the incident, at the station, said so.
    bad = CivicAddress(A3=seg.town, RD="Nowhere", STS="Ln", HNO="12")
    inc2 = cad.incident_by_hand(at=t(10), actor="FF Ortiz", station=station.id, civic=bad,
                                type=IncidentType.FIRE, subtype=IncidentSubtype.OTHER, priority=3)  # fmt: skip
    assert inc2.location.validated is False and inc2.location.method == "station"
    assert inc2.location.point == Point(lat=station.lat, lon=station.lon)
    assert "address not validated (STS, RD)" in (inc2.location.description or "")
    with pytest.raises(NotFound, match="no station 'fs-nowhere'"):
        cad.incident_by_hand(at=t(20), actor="x", station="fs-nowhere", type=IncidentType.FIRE,
                             subtype=IncidentSubtype.OTHER, priority=3)  # fmt: skip


def test_sqlite_restart_keeps_incidents_units_and_audit(tmp_path: Path, state: DemoState, lvf: Lvf):
    path = tmp_path / "cad.sqlite"
    repo = SqliteRepository(path)
    cad = make_cad(repo, state, lvf)
    a = cad.incident_from_box(state.boxes[2].number, at=t(0))
    cad.dispatch(a.id, cad.recommend(a.id).unit_ids, at=t(10), actor="disp1")
    b = cad.incident_by_hand(at=t(20), actor="disp2", point=Point(lat=43.2, lon=-71.6),
                             type=IncidentType.POLICE, subtype=IncidentSubtype.BURGLARY, priority=4)  # fmt: skip
    cad.close(b.id, at=t(30), actor="disp2", disposition="unfounded")
    before = ([incident_to_json(i) for i in cad.incidents()], [unit_to_json(u) for u in cad.units()],
              [r.to_json() for r in cad.audit()])  # fmt: skip
    repo.close()

    again = Cad(SqliteRepository(path), fqdn=FQDN)
    after = ([incident_to_json(i) for i in again.incidents()], [unit_to_json(u) for u in again.units()],
             [r.to_json() for r in again.audit()])  # fmt: skip
    assert after == before
    assert [i.id for i in again.incidents(open_only=True)] == [a.id]
    assert len(before[2]) > len(before[1])  # units added + every action
    # And the restarted CAD carries on from there.
    again.unit_status(again.incident(a.id).units[0], UnitStatus.ON_SCENE, at=t(40), actor="crew")
    assert again.incident(a.id).status is IncidentStatus.ON_SCENE


def test_sqlite_transaction_rolls_back_every_write(tmp_path: Path):
    repo = SqliteRepository(tmp_path / "cad.sqlite")
    u = Unit("E1", UnitKind.ENGINE, "fs-1", UnitStatus.AVAILABLE)
    with pytest.raises(RuntimeError), repo.transaction():
        repo.put_unit(u)
        raise RuntimeError("crash between two writes")
    assert repo.units() == []
    mem = MemoryRepository()
    with pytest.raises(RuntimeError), mem.transaction():
        mem.put_unit(u)
        raise RuntimeError("crash between two writes")
    assert mem.units() == []


@pytest.mark.realdata
def test_real_boston_box_alarm(shared_data: Path):
    boxes = load_boxes_geojson(shared_data / "boston" / "fire_alarm_boxes.geojson", town="BOSTON")
    assert len(boxes) > 1500
    box = boxes["1233"]
    assert box.location == "CHARTER at SALEM STS" and box.district == "3"
    cad = Cad(MemoryRepository(), fqdn="cad.boston.example", boxes=boxes)
    # Two engines placed by hand (the North End and Charlestown), one of them busy first.
    north_end = Unit("E8", UnitKind.ENGINE, "north-end", UnitStatus.AVAILABLE, Point(lat=42.3651, lon=-71.0542))
    charlestown = Unit("E50", UnitKind.ENGINE, "charlestown", UnitStatus.AVAILABLE, Point(lat=42.3782, lon=-71.0602))
    cad.add_units([north_end, charlestown], T0, "roster")
    inc = cad.incident_from_box("1233", at=t(0))
    assert inc.location.point == box.point and "CHARTER at SALEM STS" in (inc.location.description or "")
    rec = cad.recommend(inc.id)
    assert rec.slots[0].unit_id == "E8"
    d = rec.slots[0].candidates[0].distance_m
    expected = GEOD.inv(-71.0542, 42.3651, box.point.lon, box.point.lat)[2]
    assert d == pytest.approx(expected) and d < 500
    cad.unit_status("E8", UnitStatus.OUT_OF_SERVICE, at=t(1), actor="E8")
    assert cad.recommend(inc.id).slots[0].unit_id == "E50"
    assert isinstance(next(iter(boxes.values())), AlarmBox)
