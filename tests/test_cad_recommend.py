"""Unit recommendation: nearest available of the right kind, on the demo state's stations
and on units placed by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pyproj import Geod

from firebox.cad.data import units_from_stations
from firebox.cad.model import (
    Incident,
    IncidentStatus,
    IncidentSubtype,
    IncidentType,
    Location,
    Source,
    SourceKind,
    Unit,
    UnitKind,
    UnitStatus,
)
from firebox.cad.recommend import recommend
from firebox.demo.state import DemoState, generate_state
from firebox.location.shapes import Point

T0 = datetime(2025, 3, 1, 14, 0, tzinfo=UTC)
SCENE = Point(lat=42.3736, lon=-71.1097)  # Cambridge
GEOD = Geod(ellps="WGS84")


def incident(subtype: IncidentSubtype, type_: IncidentType, point: Point | None = SCENE) -> Incident:
    return Incident(
        id="urn:emergency:uid:incidentid:1:cad.example.test", type=type_, subtype=subtype,
        priority=2, status=IncidentStatus.NEW, location=Location(point=point),
        source=Source(SourceKind.CALL), created_at=T0, updated_at=T0,
    )  # fmt: skip


def at_km_north(km: float) -> Point:
    lon, lat, _ = GEOD.fwd(SCENE.lon, SCENE.lat, 0.0, km * 1000)
    return Point(lat=lat, lon=lon)


def unit(uid: str, kind: UnitKind, km: float, status: UnitStatus = UnitStatus.AVAILABLE) -> Unit:
    return Unit(uid, kind, "st", status, at_km_north(km))


def test_nearest_available_of_the_right_kind():
    units = [
        unit("A1", UnitKind.AMBULANCE, 0.5),  # nearest of all, wrong kind for an engine
        unit("E1", UnitKind.ENGINE, 3.0),
        unit("E2", UnitKind.ENGINE, 1.2),
        unit("E3", UnitKind.ENGINE, 0.8, UnitStatus.EN_ROUTE),  # nearer but busy
        unit("E4", UnitKind.ENGINE, 0.9, UnitStatus.OUT_OF_SERVICE),
        unit("P1", UnitKind.POLICE_CAR, 0.1),
    ]
    rec = recommend(incident(IncidentSubtype.VEHICLE_FIRE, IncidentType.FIRE), units)
    assert rec.unit_ids == ["E2"]
    slot = rec.slots[0]
    assert slot.kinds == (UnitKind.ENGINE,)
    # Explainable: every engine considered, eligible ones first by distance, the busy ones
    # after them with the reason they were skipped; no ambulance or police car listed.
    assert [c.unit_id for c in slot.candidates] == ["E2", "E1", "E3", "E4"]
    assert slot.candidates[0].distance_m == pytest.approx(1200, abs=0.5)
    assert slot.candidates[2].excluded == "not available (en route)"
    assert slot.candidates[3].excluded == "not available (out of service)"
    assert slot.reason == "nearest available engine, 1.20 km"
    assert rec.to_json()["units"] == ["E2"]


def test_plan_with_several_needs_takes_a_unit_once():
    units = [unit("E1", UnitKind.ENGINE, 1.0), unit("E2", UnitKind.ENGINE, 2.0),
             unit("E3", UnitKind.ENGINE, 3.0), unit("L1", UnitKind.LADDER, 4.0)]  # fmt: skip
    rec = recommend(incident(IncidentSubtype.STRUCTURE_FIRE, IncidentType.FIRE), units)
    # Two engines, a ladder, and a chief that this fleet does not have.
    assert [s.unit_id for s in rec.slots] == ["E1", "E2", "L1", None]
    assert rec.slots[1].candidates[0].unit_id == "E2"
    assert rec.slots[1].candidates[-1].excluded == "recommended for another need of this incident"
    assert rec.slots[3].reason == "no available chief"


def test_ties_go_to_the_smaller_id_whatever_the_input_order():
    a = [unit("E9", UnitKind.ENGINE, 2.0), unit("E10", UnitKind.ENGINE, 2.0), unit("E2", UnitKind.ENGINE, 2.0)]
    for order in (a, a[::-1], [a[1], a[2], a[0]]):
        rec = recommend(incident(IncidentSubtype.BRUSH_FIRE, IncidentType.FIRE), order)
        assert rec.unit_ids == ["E10"]  # string order of the ids: "E10" < "E2" < "E9"
        assert [c.unit_id for c in rec.slots[0].candidates] == ["E10", "E2", "E9"]


def test_units_committed_to_the_incident_fill_their_slot():
    inc = incident(IncidentSubtype.TRAFFIC_COLLISION, IncidentType.POLICE)
    p1 = unit("P1", UnitKind.POLICE_CAR, 1.0, UnitStatus.EN_ROUTE)
    p1.incident_id = inc.id
    rec = recommend(inc, [p1, unit("P2", UnitKind.POLICE_CAR, 2.0), unit("A1", UnitKind.AMBULANCE, 5.0)])
    assert rec.slots[0].filled_by == "P1" and rec.slots[0].unit_id is None
    assert rec.unit_ids == ["A1"]


def test_without_a_point_nothing_is_guessed():
    rec = recommend(incident(IncidentSubtype.MEDICAL, IncidentType.EMS, point=None),
                    [unit("A1", UnitKind.AMBULANCE, 1.0)])  # fmt: skip
    assert rec.unit_ids == []
    assert "no point" in rec.slots[0].reason
    assert rec.slots[0].candidates[0].excluded == "the incident has no point"


@pytest.fixture(scope="module")
def state() -> DemoState:
    return generate_state()


def test_on_the_demo_state_the_recommended_engine_is_the_nearest_station(state: DemoState):
    units = units_from_stations(state.stations)
    engines = [u for u in units if u.kind is UnitKind.ENGINE]
    assert len(engines) == sum(1 for s in state.stations if s.kind == "fire")
    assert {u.kind for u in units} >= {UnitKind.ENGINE, UnitKind.LADDER, UnitKind.AMBULANCE, UnitKind.POLICE_CAR}
    box = state.boxes[0]
    scene = Point(lat=box.lat, lon=box.lon)
    inc = incident(IncidentSubtype.ALARM_BOX, IncidentType.FIRE, scene)

    def km(u: Unit) -> float:
        return GEOD.inv(u.position.lon, u.position.lat, scene.lon, scene.lat)[2] / 1000  # type: ignore[union-attr]

    nearest = min(engines, key=lambda u: (km(u), u.id))
    rec = recommend(inc, units)
    assert rec.slots[0].unit_id == nearest.id
    # Take the nearest engine out of service: the next one is recommended instead.
    nearest.status = UnitStatus.OUT_OF_SERVICE
    second = min((u for u in engines if u is not nearest), key=lambda u: (km(u), u.id))
    assert recommend(inc, units).slots[0].unit_id == second.id
    assert km(second) >= km(nearest)
