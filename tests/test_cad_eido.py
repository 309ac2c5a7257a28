"""EIDO export (NENA-STA-021.1a): a whole incident's story validates against firebox's schema,
references resolve, and a broken export is caught naming the member."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from firebox.cad.data import AlarmBox
from firebox.cad.eido import EidoError, check, common_priority, schema, validate
from firebox.cad.model import IncidentSubtype, IncidentType, Unit, UnitKind, UnitStatus
from firebox.cad.service import Cad
from firebox.cad.store import MemoryRepository
from firebox.location.civic import CivicAddress
from firebox.location.pidf import PidfLocation, Presence, parse_pidf, serialize_pidf
from firebox.location.shapes import Circle, Point
from firebox.logging.events import new_call_id, new_incident_id

T0 = datetime(2025, 3, 1, 14, 0, tzinfo=UTC)
SCENE = Point(lat=42.3736, lon=-71.1097)
CIVIC = CivicAddress(country="US", A1="MA", A3="Cambridge", HNO="795", RD="Massachusetts", STS="Ave")


def t(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


@pytest.fixture
def story() -> tuple[Cad, str]:
    """A structure fire from a call: two callers, narrative, two units dispatched, one on
    scene, closed with a disposition."""
    cad = Cad(MemoryRepository(), fqdn="cad.cambridge.example", agency="ecc.cambridge.example")
    cad.add_units([
        Unit("E1", UnitKind.ENGINE, "fs-1", UnitStatus.AVAILABLE, Point(lat=42.3700, lon=-71.1050), "Engine 1"),
        Unit("L1", UnitKind.LADDER, "fs-1", UnitStatus.AVAILABLE, Point(lat=42.3700, lon=-71.1050), "Ladder 1"),
    ], T0, "roster")  # fmt: skip
    pidf = serialize_pidf(Presence("pres:caller@carrier.example",
                                   [PidfLocation(shapes=[Circle(SCENE, 20.0)], civic=CIVIC)]))  # fmt: skip
    inc = cad.incident_from_call(
        at=t(0), actor="ct1", call_id=new_call_id("bcf.example"), incident_tracking_id=new_incident_id("bcf.example"),
        callback="+16175550100", pidf=pidf, type=IncidentType.FIRE, subtype=IncidentSubtype.STRUCTURE_FIRE,
        priority=1, narrative="smoke from 3rd floor <window>, people on the fire escape",
    )  # fmt: skip
    cad.link_call(inc.id, new_call_id("bcf.example"), at=t(30), actor="ct2", callback="sip:+16175550111@carrier.example")
    cad.dispatch(inc.id, ["E1", "L1"], at=t(45), actor="Dispatcher Lee")
    cad.unit_status("E1", UnitStatus.ON_SCENE, at=t(300), actor="E1")
    cad.close(inc.id, at=t(3600), actor="Dispatcher Lee", disposition="fire extinguished")
    return cad, inc.id


def test_schema_is_a_valid_draft_2020_12_schema():
    s = schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"incident", "call", "location", "emergencyResource", "notes", "agency", "agent"} <= set(s["$defs"])


def test_export_of_a_whole_story_validates(story: tuple[Cad, str]):
    cad, incident_id = story
    doc = cad.eido(incident_id)
    assert validate(doc) == []
    assert doc["$id"] == incident_id and doc["eidoVersion"] == "1.0"
    assert doc["issuingElementIdentification"] == "cad.cambridge.example"
    inc = doc["incidentComponent"]
    assert inc["incidentTypeCommonRegistryText"] == "Fire"
    assert inc["incidentTypeInternalText"] == "structure fire"
    assert inc["incidentCommonPriorityNumber"] == common_priority(1) == 10
    assert inc["incidentStatusCommonRegistryText"] == ["Closed"]
    assert inc["dispositionComponent"][0]["dispositionCommonRegistryCode"] == "fire extinguished"
    # Calls carry their i3 Call Identifier as $id; callers and call backs are referenced.
    calls = doc["callComponent"]
    assert [c["$id"] for c in calls] == [c.call_id for c in cad.incident(incident_id).calls]
    assert [cb["callBackInformationUri"] for cb in doc["callbackComponent"]] == [
        ["tel:+16175550100"], ["sip:+16175550111@carrier.example"],
    ]
    assert doc["personComponent"][0]["personIncidentRoleRegistryText"] == ["Caller"]
    # The incident's location is the caller's PIDF-LO by value, point and civic address.
    by_id = {c["$id"]: c for c in doc["locationComponent"]}
    loc = by_id[inc["locationReference"][0]["$ref"]]
    assert loc["locationTypeDescriptionRegistryText"] == "Caller"
    back = parse_pidf(loc["locationByValue"]).locations[0]
    assert back.shape == SCENE and back.civic == CIVIC
    # The narrative is HTML5 text.
    assert doc["notesComponent"][0]["notesActionComments"].startswith("smoke from 3rd floor &lt;window&gt;")
    # Units: the status each reached on this incident (cleared at close), with positions.
    res = {r["emergencyResourceName"]: r for r in doc["emergencyResourceComponent"]}
    assert res["Engine 1"]["primaryUnitStatusRegistryText"] == "Cleared"
    assert res["Engine 1"]["emergencyResourceTypeCommonRegistryText"] == "Engine"
    assert by_id[res["Engine 1"]["unitLocationReference"]["$ref"]]["locationTypeDescriptionRegistryText"] == "Unit"
    assert doc["dispatchComponent"][0]["emergencyResourceReference"] == [
        {"$ref": res["Engine 1"]["$id"]}, {"$ref": res["Ladder 1"]["$id"]},
    ]
    agents = {a["$id"]: a["agentRoleRegistryText"] for a in doc["agentComponent"]}
    assert agents["ct1@ecc.cambridge.example"] == ["Call Taking"]
    assert agents["dispatcher.lee@ecc.cambridge.example"] == ["Dispatching"]
    # The same incident exports the same component ids.
    assert cad.eido(incident_id) == doc


def test_export_of_a_new_box_incident_without_calls(story: tuple[Cad, str]):
    cad, _ = story
    cad.boxes = {"1233": AlarmBox("1233", "CHARTER at SALEM STS", Point(lat=42.367, lon=-71.0543))}
    inc = cad.incident_from_box("1233", at=t(10))
    doc = cad.eido(inc.id)
    assert validate(doc) == []
    assert "callComponent" not in doc
    assert doc["incidentComponent"]["incidentStatusCommonRegistryText"] == ["Pending"]
    assert doc["locationComponent"][0]["locationDescriptionText"] == "box 1233: CHARTER at SALEM STS"


def broken(doc: dict[str, Any], edit) -> list[str]:
    bad = copy.deepcopy(doc)
    edit(bad)
    return [str(p) for p in validate(bad)]


def test_broken_exports_are_caught_naming_the_member(story: tuple[Cad, str]):
    cad, incident_id = story
    doc = cad.eido(incident_id)

    def drop_type(d):
        del d["incidentComponent"]["incidentTypeCommonRegistryText"]

    assert broken(doc, drop_type) == [
        "$.incidentComponent: 'incidentTypeCommonRegistryText' is a required property"
    ]

    def misspell(d):
        d["emergencyResourceComponent"][0]["primaryUnitStatus"] = "Enroute"

    (msg,) = broken(doc, misspell)
    assert msg.startswith("$.emergencyResourceComponent[0]: ") and "'primaryUnitStatus' was unexpected" in msg

    def bad_time(d):
        d["callComponent"][0]["callStartTimestamp"] = "yesterday"

    assert broken(doc, bad_time) == [
        "$.callComponent[0].callStartTimestamp: 'yesterday' does not match "
        + repr(schema()["$defs"]["timestamp"]["pattern"])
    ]

    def priority(d):
        d["incidentComponent"]["incidentCommonPriorityNumber"] = 11

    assert broken(doc, priority) == [
        "$.incidentComponent.incidentCommonPriorityNumber: 11 is greater than the maximum of 10"
    ]

    def dangling(d):
        d["dispatchComponent"][0]["emergencyResourceReference"][0]["$ref"] = "no-such-unit"

    assert broken(doc, dangling) == [
        "$.dispatchComponent[0].emergencyResourceReference[0]['$ref']: 'no-such-unit' is the $id of no component"
    ]

    def version(d):
        d["eidoVersion"] = "2.0"

    assert broken(doc, version) == ["$.eidoVersion: '1.0' was expected"]
    with pytest.raises(EidoError, match=r"\$\.incidentComponent: 'incidentTypeCommonRegistryText'"):
        bad = copy.deepcopy(doc)
        drop_type(bad)
        check(bad)
