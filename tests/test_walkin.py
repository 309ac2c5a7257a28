"""Walk-ins and entries by hand with location search (firebox.cad.locate, the CAD, the
console's /api/location and POST /incidents): candidates validated by the LVF through the
ECRF's findService with validateLocation (RFC 5222 section 8.4.2), with the PSAP and zone
serving them; an address that does not validate still makes an incident, marked; and the
walk-in logged like a call (NENA-STA-010.3 identifiers and events) into a real Logging
Service."""

from __future__ import annotations

from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from firebox import jws
from firebox.cad.data import boxes_from_demo, units_from_stations
from firebox.cad.locate import CandidateKind, LocationSearch, landmarks_from
from firebox.cad.logevents import CadLogger
from firebox.cad.model import IncidentSubtype, IncidentType, SourceKind
from firebox.cad.service import Cad, LvfGeocoder
from firebox.cad.store import MemoryRepository
from firebox.console.app import console_app
from firebox.console.audit import ConsoleAudit
from firebox.console.auth import hash_password, load_users
from firebox.demo.state import SERVICES, DemoState, generate_state
from firebox.ecrf.lvf import Lvf
from firebox.ecrf.service import Ecrf
from firebox.gis.index import Boundary, BoundaryLayer, ServiceIndex
from firebox.location.civic import CivicAddress
from firebox.location.shapes import Point
from firebox.logging.events import LogEvent, check_uid, validate
from firebox.logging.sender import LogSender
from test_psap_logevents import logging_service  # noqa: F401 -- a fixture (the Logging Service on 127.0.0.1)

T0 = datetime(2025, 3, 1, 14, 0, tzinfo=UTC)
FQDN = "cad.demo.firebox.test"
PW = "s3cret-pw"
USERS = load_users([
    {"name": "ff", "role": "dispatcher", "psap": "psap-01", "password_hash": hash_password(PW, n=2**10)},
])  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_world(tmp_path_factory.mktemp("demo"))


def build_world(directory: Path) -> dict[str, Any]:
    """The demo state's streets (LVF), service boundaries (ECRF), boxes and stations."""
    state = generate_state()
    paths = state.write_geojson(directory)
    lvf = Lvf.from_geojson(paths["streets"], default_state=state.abbreviation)
    index = ServiceIndex([
        BoundaryLayer(svc, [Boundary(b.id, b.name, b.uri, b.geometry) for b in state.layers[svc]]) for svc in SERVICES
    ])  # fmt: skip
    ecrf = Ecrf("ecrf.demo.firebox.test", index, ttl=timedelta(minutes=5), lvf=lvf)
    boxes = boxes_from_demo(state.boxes)
    search = LocationSearch(lvf, ecrf, landmarks=landmarks_from(boxes, state.stations))
    seg = next(s for s in state.streets if s.l_from and s.l_from % 2 == 1 and s.l_to > s.l_from + 4)
    return {"state": state, "lvf": lvf, "ecrf": ecrf, "boxes": boxes, "search": search, "seg": seg}


def make_cad(world: dict[str, Any], log: Any = None) -> Cad:
    state: DemoState = world["state"]
    cad = Cad(MemoryRepository(), fqdn=FQDN, geocoder=LvfGeocoder(world["lvf"]), boxes=world["boxes"],
              stations={s.id: Point(lat=s.lat, lon=s.lon) for s in state.stations},
              locator=world["search"], log=log)  # fmt: skip
    cad.add_units(units_from_stations(state.stations), T0 - timedelta(hours=8), "roster")
    return cad


def typed(world: dict[str, Any]) -> str:
    seg = world["seg"]
    return f"{seg.l_from} {seg.street_name} {seg.street_type} {seg.town.title()}"


def expected_psap(world: dict[str, Any], point: Any) -> str:
    state: DemoState = world["state"]
    import shapely

    return next(b.name for b in state.layers["urn:service:sos"] if b.geometry.covers(shapely.Point(point.lon, point.lat)))


# --- the search ----------------------------------------------------------------------------------


def test_parse_one_line_into_a_civic_address(world):
    search: LocationSearch = world["search"]
    seg = world["seg"]
    civic = search.parse(f"{seg.l_from}A {seg.street_name} {seg.street_type}, {seg.town.title()} {world['state'].abbreviation} 03101")
    assert civic == CivicAddress(HNO=str(seg.l_from), HNS="A", RD=f"{seg.street_name} {seg.street_type}".upper(),
                                 A3=seg.town, A1=world["state"].abbreviation, PC="03101")  # fmt: skip
    assert search.parse("   ,, ") is None


def test_a_typed_address_validates_with_its_point_psap_and_zone(world):
    search: LocationSearch = world["search"]
    found = search.search(typed(world), now=T0)
    best = found[0]
    assert best.kind is CandidateKind.ADDRESS and best.validated is True and best.point is not None
    assert "HNO" in best.validation.valid and "RD" in best.validation.valid and best.validation.invalid == []
    assert best.psap is not None and best.psap.name == expected_psap(world, best.point) and best.psap.uri
    zone = {s.service for s in best.serving} - {"urn:service:sos"}
    assert zone == {"urn:service:sos.fire", "urn:service:sos.police", "urn:service:sos.ambulance"}
    doc = best.to_json()
    assert doc["validated"] is True and doc["psap"]["name"] == best.psap.name and len(doc["zone"]) == 3


def test_a_partial_street_is_completed_from_the_lvf(world):
    seg = world["seg"]
    found = world["search"].search(f"{seg.l_from} {seg.street_name[:3]} {seg.town.title()}", now=T0)
    streets = [c for c in found if c.kind is CandidateKind.STREET and c.validated]
    assert any(c.civic.RD == f"{seg.street_name} {seg.street_type}" and c.civic.A3 == seg.town for c in streets), found


def test_an_unknown_address_is_still_a_choice_marked_unvalidated(world):
    found = world["search"].search(f"999 Nowhere Rd {world['seg'].town.title()}", now=T0)
    assert len(found) == 1 and found[0].validated is False and found[0].point is None
    assert found[0].validation.invalid == ["RD"]


def test_landmarks_boxes_and_stations(world):
    state: DemoState = world["state"]
    box = state.boxes[0]
    found = world["search"].search(f"box {box.number}", now=T0)
    assert found[0].kind is CandidateKind.LANDMARK and found[0].landmark == f"box:{box.number}"
    assert found[0].validated is True and found[0].point.lat == box.lat and found[0].psap is not None
    station = state.stations[0]
    found = world["search"].search(station.name.lower(), now=T0)
    assert found[0].landmark == f"station:{station.id}"


# --- the CAD ----------------------------------------------------------------------------------------


def test_walk_in_by_typed_text_gets_the_validated_location_and_a_call_id(world):
    cad = make_cad(world)
    station = world["state"].stations[0].id
    inc = cad.incident_by_hand(at=T0, actor="FF Ortiz", type=IncidentType.EMS, subtype=IncidentSubtype.MEDICAL,
                               priority=2, station=station, text=typed(world))  # fmt: skip
    assert inc.location.validated is True and inc.location.method == "lvf" and inc.location.point is not None
    assert inc.source.kind is SourceKind.WALK_IN and inc.source.station == station
    assert len(inc.calls) == 1 and check_uid(inc.calls[0].call_id, "callid") is None and inc.calls[0].call_id.endswith(FQDN)
    served = inc.timeline[0].detail["served_by"]
    assert served[0] == f"urn:service:sos: {expected_psap(world, inc.location.point)}" and len(served) == 4


def test_walk_in_at_an_unknown_address_is_made_marked_and_at_the_station(world, caplog):
    cad = make_cad(world)
    station = world["state"].stations[0]
    inc = cad.incident_by_hand(at=T0, actor="FF Ortiz", type=IncidentType.FIRE, subtype=IncidentSubtype.STRUCTURE_FIRE,
                               priority=1, station=station.id, text="999 Nowhere Rd")  # fmt: skip
    assert inc.location.validated is False and "address not validated" in inc.location.description
    assert inc.location.method == "station" and inc.location.point.lat == station.lat
    assert "not validated; incident made anyway" in caplog.text
    # A landmark nobody knows: still an incident, the name kept.
    inc2 = cad.incident_by_hand(at=T0, actor="x", type=IncidentType.FIRE, subtype=IncidentSubtype.STRUCTURE_FIRE,
                                priority=1, landmark="box:nope")  # fmt: skip
    assert "landmark box:nope (not known)" in inc2.location.description and inc2.location.point is None


def test_walk_in_at_a_landmark(world):
    cad = make_cad(world)
    box = world["state"].boxes[2]
    inc = cad.incident_by_hand(at=T0, actor="x", type=IncidentType.FIRE, subtype=IncidentSubtype.STRUCTURE_FIRE,
                               priority=1, landmark=f"box:{box.number}")  # fmt: skip
    assert inc.location.validated is True and inc.location.method == "landmark"
    assert (inc.location.point.lat, inc.location.point.lon) == (box.lat, box.lon) and f"box {box.number}" in inc.location.description


# --- logged like a call ------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[LogEvent] = []
        self.problems: list[Any] = []

    async def send(self, event: LogEvent) -> str:
        if problems := validate(event.to_json()):
            self.problems.append((event.log_event_type, problems))
        self.events.append(event)
        return f"urn:emergency:uid:logid:{len(self.events)}:{FQDN}"

    async def drain(self, timeout: float | None = None) -> None:
        return None


async def test_walk_in_log_events_carry_its_identifiers(world):
    recorder = Recorder()
    logger = CadLogger(recorder, element_id=FQDN, agency_id="demo.firebox.test")
    cad = make_cad(world, log=logger)
    station = world["state"].stations[0].id
    inc = cad.incident_by_hand(at=T0, actor="FF Ortiz", position="fs-desk", type=IncidentType.EMS,
                               subtype=IncidentSubtype.MEDICAL, priority=2, station=station, text=typed(world))  # fmt: skip
    await logger.drain(timeout=10)
    assert logger.errors == 0 and recorder.problems == []
    types = [e.log_event_type for e in recorder.events]
    assert types == ["CallStartLogEvent", "LostQueryLogEvent", "LostResponseLogEvent", "CallProcessLogEvent",
                     "CallProcessLogEvent", "CallEndLogEvent"]  # fmt: skip
    assert {e.call_id for e in recorder.events} == {inc.calls[0].call_id}
    assert {e.incident_id for e in recorder.events} == {inc.id}
    start = recorder.events[0].to_json()
    assert start["localCallType"] == "walk-in" and start["extension"]["walkIn"] == {"station": station, "enteredBy": "FF Ortiz"}
    assert start["agencyPositionId"] == "fs-desk"
    query, answer = recorder.events[1].to_json(), recorder.events[2].to_json()
    assert 'validateLocation="true"' in query["queryAdapter"] and "locationValidation>" in answer["responseAdapter"] and "valid>" in answer["responseAdapter"]
    assert answer["responseId"] == query["queryId"] and answer["responseStatus"] == "ok"
    location = recorder.events[3].to_json()["extension"]["location"]
    assert location["validated"] is True and location["method"] == "lvf" and location["servedBy"][0]["service"] == "urn:service:sos"


async def test_the_logging_service_keeps_the_walk_in_as_a_conversation(world, logging_service, tmp_path):  # noqa: F811
    base, store, _url = logging_service
    async with LogSender([base], str(tmp_path / "spool"), None, FQDN, fsync=False) as sender:
        logger = CadLogger(sender, element_id=FQDN, agency_id="demo.firebox.test")
        cad = make_cad(world, log=logger)
        inc = cad.incident_by_hand(at=T0, actor="FF Ortiz", type=IncidentType.FIRE, subtype=IncidentSubtype.STRUCTURE_FIRE,
                                   priority=1, station=world["state"].stations[0].id, text="999 Nowhere Rd")  # fmt: skip
        await logger.drain(timeout=10)
    assert logger.errors == 0 and len(logger.sent) == 6
    stored = store.conversation(inc.calls[0].call_id)
    payloads = [jws.verify(e.jws.encode(), keys=[], allow_none=True).payload for e in stored]
    assert [p["logEventType"] for p in payloads][0] == "CallStartLogEvent" and len(payloads) == 6
    location = next(p["extension"]["location"] for p in payloads if "location" in (p.get("extension") or {}))
    assert location["validated"] is False and location["method"] == "station"


# --- the console's API -------------------------------------------------------------------------------


@pytest.fixture
def console(world, tmp_path: Path) -> dict[str, Any]:
    cad = make_cad(world)
    app = console_app(cad=cad, users=USERS, audit=ConsoleAudit(tmp_path / "audit.db"), cad_poll_s=None, leaflet_dir=None)
    return {"app": app, "cad": cad}


async def signed_in(app: Any) -> tuple[httpx.AsyncClient, str]:
    c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    r = await c.post("/signin", data={"user": "ff", "password": PW})
    assert r.status_code == 303, r.text
    return c, (await c.get("/api/state")).json()["user"]["csrf"]


async def test_location_api(world, console):
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=console["app"]), base_url="http://testserver")
    async with anonymous:
        assert (await anonymous.get("/api/location", params={"q": "main"})).status_code == 401
    c, _ = await signed_in(console["app"])
    async with aclosing(c):
        r = await c.get("/api/location", params={"q": typed(world)})
        assert r.status_code == 200
        doc = r.json()
        best = doc["candidates"][0]
        assert doc["search"] is True and best["validated"] is True and best["psap"]["name"] and best["point"]["lat"]
        assert best["validation"]["invalid"] == [] and "RD" in best["validation"]["valid"]
        r = await c.get("/api/location", params={"q": "x" * 201})
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
        assert (await c.get("/api/location", params={"q": ""})).json()["candidates"] == []
        stations = (await c.get("/api/location/stations")).json()["stations"]
        first = world["state"].stations[0]
        assert {"id": first.id, "name": f"{first.name} ({first.id})"} in stations


async def test_create_walk_ins_through_the_console(world, console):
    c, csrf = await signed_in(console["app"])
    station = world["state"].stations[0].id
    headers = {"Accept": "application/json", "X-CSRF-Token": csrf}
    async with aclosing(c):
        # Picked from the results: the civic fields of the candidate; the server validates again.
        seg = world["seg"]
        r = await c.post("/incidents", headers=headers, json={
            "type": "ems", "subtype": "medical", "priority": 2, "station": station,
            "hno": str(seg.l_from), "street": f"{seg.street_name} {seg.street_type}", "town": seg.town,
        })  # fmt: skip
        assert r.status_code == 201, r.text
        picked = console["cad"].incident(r.json()["incident"]["id"])
        assert picked.location.validated is True and picked.location.method == "lvf" and picked.source.station == station
        # Typed and never picked, not in the street data: made, marked unvalidated.
        r = await c.post("/incidents", headers=headers, json={
            "type": "fire", "subtype": "structure fire", "priority": 1, "station": station, "q": "999 Nowhere Rd",
        })  # fmt: skip
        assert r.status_code == 201, r.text
        row = r.json()["incident"]
        assert row["location"]["validated"] is False and row["source"]["kind"] == "walk-in"
        board = await c.get("/fragments/incidents")
        assert "unvalidated" in board.text
        # A landmark.
        box = world["state"].boxes[1]
        r = await c.post("/incidents", headers=headers, json={
            "type": "fire", "subtype": "structure fire", "priority": 1, "landmark": f"box:{box.number}", "q": "ignored",
        })  # fmt: skip
        assert r.status_code == 201 and r.json()["incident"]["location"]["method"] == "landmark"
        page = await c.get(f"/incidents/{r.json()['incident']['id']}")
        assert "Served by" in page.text and "urn:service:sos:" in page.text
