"""CAD domain: transition tables, precise errors, the timeline, the JSON round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from firebox.cad.model import (
    INCIDENT_TRANSITIONS,
    UNIT_TRANSITIONS,
    Action,
    CadError,
    Incident,
    IncidentStatus,
    IncidentSubtype,
    IncidentType,
    Location,
    Source,
    SourceKind,
    TransitionError,
    Unit,
    UnitKind,
    UnitStatus,
    check_priority,
    check_type,
    incident_from_json,
    incident_to_json,
    unit_from_json,
    unit_to_json,
)
from firebox.location.civic import CivicAddress
from firebox.location.shapes import Point

T0 = datetime(2025, 3, 1, 14, 0, tzinfo=UTC)
ID = "urn:emergency:uid:incidentid:0123abcd:cad.example.test"


def incident() -> Incident:
    return Incident(
        id=ID, type=IncidentType.FIRE, subtype=IncidentSubtype.STRUCTURE_FIRE, priority=1,
        status=IncidentStatus.NEW,
        location=Location(point=Point(lat=42.37, lon=-71.11), civic=CivicAddress(HNO="10", RD="Main", STS="St")),
        source=Source(SourceKind.WALK_IN, station="fs-1"), created_at=T0, updated_at=T0,
    )  # fmt: skip


def test_every_state_has_a_row_and_rows_name_only_states():
    assert set(INCIDENT_TRANSITIONS) == set(IncidentStatus)
    assert set(UNIT_TRANSITIONS) == set(UnitStatus)
    assert INCIDENT_TRANSITIONS[IncidentStatus.CLOSED] == frozenset()
    # Every unit state can get back to available (no unit is stuck forever).
    for start in UnitStatus:
        seen, todo = {start}, [start]
        while todo:
            for nxt in UNIT_TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert UnitStatus.AVAILABLE in seen, start


def test_incident_moves_along_the_table_and_records_each_move():
    i = incident()
    i.move(IncidentStatus.DISPATCHED, T0 + timedelta(seconds=30), "disp1")
    i.move(IncidentStatus.ON_SCENE, T0 + timedelta(minutes=5), "disp1")
    i.move(IncidentStatus.CLOSED, T0 + timedelta(minutes=40), "disp2")
    assert [(e.action, e.detail["old"], e.detail["new"], e.actor) for e in i.timeline] == [
        (Action.STATUS, "new", "dispatched", "disp1"),
        (Action.STATUS, "dispatched", "on scene", "disp1"),
        (Action.STATUS, "on scene", "closed", "disp2"),
    ]
    assert i.updated_at == T0 + timedelta(minutes=40)


def test_illegal_incident_move_names_both_states_and_what_was_allowed():
    i = incident()
    with pytest.raises(TransitionError) as err:
        i.move(IncidentStatus.ON_SCENE, T0, "disp1")
    msg = str(err.value)
    assert ID in msg and "'new' to 'on scene'" in msg and "closed, dispatched" in msg
    assert i.status is IncidentStatus.NEW and i.timeline == []  # nothing changed
    i.move(IncidentStatus.CLOSED, T0, "disp1")
    with pytest.raises(TransitionError, match="'closed' to 'dispatched'.*none: it is final"):
        i.move(IncidentStatus.DISPATCHED, T0, "disp1")


@pytest.mark.parametrize(
    "old,new,ok",
    [
        (UnitStatus.AVAILABLE, UnitStatus.DISPATCHED, True),
        (UnitStatus.AVAILABLE, UnitStatus.ON_SCENE, False),
        (UnitStatus.DISPATCHED, UnitStatus.ON_SCENE, True),  # en route skipped
        (UnitStatus.EN_ROUTE, UnitStatus.AVAILABLE, False),  # must clear first
        (UnitStatus.ON_SCENE, UnitStatus.CLEARED, True),
        (UnitStatus.CLEARED, UnitStatus.DISPATCHED, True),  # redirected while returning
        (UnitStatus.OUT_OF_SERVICE, UnitStatus.DISPATCHED, False),
    ],
)
def test_unit_transitions(old: UnitStatus, new: UnitStatus, ok: bool):
    u = Unit("E1", UnitKind.ENGINE, "fs-1", old)
    if ok:
        assert u.move(new, T0) is old and u.status is new and u.updated_at == T0
    else:
        with pytest.raises(TransitionError, match=f"unit E1: cannot go from '{old.value}' to '{new.value}'"):
            u.move(new, T0)
        assert u.status is old


def test_times_must_be_aware_and_actors_named():
    i = incident()
    with pytest.raises(CadError, match="aware datetime"):
        i.move(IncidentStatus.DISPATCHED, datetime(2025, 3, 1, 14, 0), "disp1")
    with pytest.raises(CadError, match="actor"):
        i.add_narrative("smoke showing", T0, " ")
    with pytest.raises(CadError, match="non-empty"):
        i.add_narrative("  ", T0, "disp1")


def test_priority_and_subtype_checks():
    assert check_priority(3) == 3
    for bad in (0, 6, 2.5, True, "1"):
        with pytest.raises(CadError, match="priority: must be an integer from 1"):
            check_priority(bad)  # type: ignore[arg-type]
    check_type(IncidentType.EMS, IncidentSubtype.TRAFFIC_COLLISION)
    with pytest.raises(CadError, match="subtype: 'structure fire' is not a police incident"):
        check_type(IncidentType.POLICE, IncidentSubtype.STRUCTURE_FIRE)


def test_narrative_is_kept_and_on_the_timeline():
    i = incident()
    i.add_narrative("  caller reports smoke from 2nd floor ", T0, "ct1")
    assert i.narrative[0].text == "caller reports smoke from 2nd floor"
    assert i.timeline[-1].action is Action.NARRATIVE and i.timeline[-1].actor == "ct1"


def test_json_round_trip_keeps_everything():
    i = incident()
    i.add_narrative("smoke", T0, "ct1")
    i.move(IncidentStatus.DISPATCHED, T0 + timedelta(seconds=5), "disp1")
    i.units.append("E1")
    back = incident_from_json(incident_to_json(i))
    assert back == i
    u = Unit("E1", UnitKind.ENGINE, "fs-1", UnitStatus.EN_ROUTE, Point(lat=42.0, lon=-71.0),
             "Engine 1", ID, T0)  # fmt: skip
    assert unit_from_json(unit_to_json(u)) == u
