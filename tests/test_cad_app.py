"""The CAD's JSON API over HTTP (httpx against the ASGI app): a call's incident through
recommendation, dispatch, unit status, narrative, EIDO and close; a box alarm; a walk-in;
problem JSON naming what was wrong on every 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from firebox.cad.app import ACTOR_HEADER, create_cad_app
from firebox.cad.data import boxes_from_demo, units_from_stations
from firebox.cad.eido import validate
from firebox.cad.service import Cad, LvfGeocoder
from firebox.cad.store import SqliteRepository
from firebox.demo.state import DemoState, generate_state
from firebox.ecrf.lvf import Lvf
from firebox.location.pidf import PidfLocation, Presence, serialize_pidf
from firebox.location.shapes import Point
from firebox.logging.events import new_call_id

T0 = datetime(2025, 3, 1, 14, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def state() -> DemoState:
    return generate_state()


@pytest.fixture(scope="module")
def lvf(state: DemoState, tmp_path_factory: pytest.TempPathFactory) -> Lvf:
    paths = state.write_geojson(tmp_path_factory.mktemp("demo"))
    return Lvf.from_geojson(paths["streets"], default_state=state.abbreviation)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(state: DemoState, lvf: Lvf, clock: Clock, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    repo = SqliteRepository(tmp_path / "cad.sqlite")
    cad = Cad(repo, fqdn="cad.demo.firebox.test", geocoder=LvfGeocoder(lvf), boxes=boxes_from_demo(state.boxes),
              stations={s.id: Point(lat=s.lat, lon=s.lon) for s in state.stations})  # fmt: skip
    cad.add_units(units_from_stations(state.stations), T0 - timedelta(hours=1), "roster")
    app = create_cad_app(cad, clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cad.test") as c:
        yield c
    repo.close()


def who(name: str) -> dict[str, str]:
    return {ACTOR_HEADER: name}


def url(incident_id: str, tail: str = "") -> str:
    return f"/cad/incidents/{quote(incident_id, safe=':')}{tail}"


def assert_problem(r: httpx.Response, status: int, member: str, contains: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["title"]
    assert any(e["member"] == member and contains in e["detail"] for e in body["errors"]), body


async def test_a_call_from_creation_to_close(client: httpx.AsyncClient, state: DemoState, clock: Clock):
    where = Point(lat=state.boxes[5].lat, lon=state.boxes[5].lon)
    pidf = serialize_pidf(Presence("pres:caller@carrier.example", [PidfLocation(shapes=[where])])).decode()
    call_id = new_call_id("bcf.demo.firebox.test")
    r = await client.post("/cad/incidents", headers=who("ct1"), json={
        "source": "call", "call_id": call_id, "callback": "+16035550142", "pidf": pidf,
        "type": "fire", "subtype": "structure fire", "priority": 1, "narrative": "flames visible",
    })  # fmt: skip
    assert r.status_code == 201, r.text
    inc = r.json()
    iid = inc["id"]
    assert r.headers["location"] == f"/cad/incidents/{iid}"
    assert inc["location"]["point"] == {"lat": where.lat, "lon": where.lon}
    assert inc["calls"][0]["call_id"] == call_id and inc["status"] == "new"

    r = await client.get(url(iid, "/recommendation"))
    rec = r.json()
    assert r.status_code == 200 and len(rec["units"]) >= 2
    assert rec["slots"][0]["candidates"][0]["unit"] == rec["units"][0]
    engine = rec["units"][0]

    clock.tick(30)
    r = await client.post(url(iid, "/dispatch"), headers=who("disp1"), json={"units": rec["units"]})
    assert r.status_code == 200 and r.json()["status"] == "dispatched"
    clock.tick(200)
    r = await client.post(f"/cad/units/{engine}/status", headers=who(engine), json={"status": "on scene"})
    assert r.status_code == 200 and r.json()["status"] == "on scene"
    assert r.json()["position"] == {"lat": where.lat, "lon": where.lon}
    clock.tick(60)
    r = await client.post(url(iid, "/narrative"), headers=who(engine), json={"text": "2nd alarm requested"})
    assert r.json()["narrative"][-1] == {"at": clock.now.isoformat(), "author": engine, "text": "2nd alarm requested"}

    units = {u["id"]: u for u in (await client.get("/cad/units")).json()["units"]}
    assert units[engine]["incident_id"] == iid
    board = (await client.get("/cad/incidents", params={"status": "open"})).json()["incidents"]
    assert [i["id"] for i in board] == [iid] and board[0]["status"] == "on scene" and "timeline" not in board[0]

    r = await client.get(url(iid, "/eido"))
    assert r.status_code == 200 and validate(r.json()) == []
    assert r.json()["callComponent"][0]["$id"] == call_id

    clock.tick(1800)
    r = await client.post(url(iid, "/close"), headers=who("disp1"), json={"disposition": "fire out"})
    assert r.status_code == 200 and r.json()["status"] == "closed"
    full = (await client.get(url(iid))).json()
    actions = [(e["actor"], e["action"]) for e in full["timeline"]]
    assert actions[0] == ("ct1", "created") and actions[-1] == ("disp1", "closed")
    assert ("disp1", "dispatched") in actions and (engine, "unit status") in actions
    audit = (await client.get("/cad/audit", params={"target": iid})).json()["audit"]
    assert [a["action"] for a in audit] == ["incident created", "dispatched", "narrative added", "incident closed"]
    assert (await client.get("/cad/incidents", params={"status": "closed"})).json()["incidents"][0]["id"] == iid


async def test_box_alarm_and_walk_in(client: httpx.AsyncClient, state: DemoState):
    box = state.boxes[7]
    r = await client.post(f"/cad/boxes/{box.number}/alarm")
    assert r.status_code == 201, r.text
    assert r.json()["source"] == {"kind": "alarm box", "box": str(box.number), "station": None, "callback": None}
    assert r.json()["timeline"][0]["actor"] == "fire alarm telegraph"

    seg = state.streets[200]
    station = next(s for s in state.stations if s.kind == "fire")
    r = await client.post("/cad/incidents", headers=who("FF Ortiz"), json={
        "source": "walk-in", "station": station.id, "type": "ems", "subtype": "medical", "priority": 2,
        "civic": {"A3": seg.town, "RD": seg.street_name, "STS": seg.street_type, "HNO": str(seg.l_from)},
    })  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["location"]["validated"] is True and r.json()["location"]["method"] == "lvf"


async def test_every_4xx_is_problem_json_naming_what_was_wrong(client: httpx.AsyncClient, state: DemoState):
    assert_problem(await client.post("/cad/boxes/1/alarm"), 404, "", "no fire alarm box '1'")
    assert_problem(await client.get(url("urn:emergency:uid:incidentid:x:nowhere.test")), 404, "", "no incident")
    assert_problem(await client.get("/cad/nothing"), 404, "", "GET /cad/nothing")
    assert_problem(await client.delete("/cad/units"), 405, "", "DELETE /cad/units")
    # No actor, bad JSON, unknown and missing members, wrong types and values.
    base = {"source": "walk-in", "type": "fire", "subtype": "other", "priority": 3}
    assert_problem(await client.post("/cad/incidents", json=base), 400, ACTOR_HEADER, "header required")
    assert_problem(await client.post("/cad/incidents", headers=who("d"), content=b"{nope"), 400, "", "Expecting")
    assert_problem(await client.post("/cad/incidents", headers=who("d"), json=[1]), 400, "", "got list")
    assert_problem(await client.post("/cad/incidents", headers=who("d"), json={**base, "colour": "red"}),
                   422, "colour", "not a member")  # fmt: skip
    assert_problem(await client.post("/cad/incidents", headers=who("d"), json={"source": "walk-in"}),
                   422, "priority", "required")  # fmt: skip
    assert_problem(await client.post("/cad/incidents", headers=who("d"), json={**base, "priority": 9}),
                   422, "priority", "must be an integer from 1")  # fmt: skip
    assert_problem(await client.post("/cad/incidents", headers=who("d"), json={**base, "priority": "1"}),
                   422, "priority", "must be int, not str")  # fmt: skip
    assert_problem(await client.post("/cad/incidents", headers=who("d"), json={**base, "subtype": "medical"}),
                   422, "subtype", "is not a fire incident")  # fmt: skip
    assert_problem(await client.post("/cad/incidents", headers=who("d"), json={**base, "type": "water"}),
                   422, "type", "'water' is not one of")  # fmt: skip
    assert_problem(await client.post("/cad/incidents", headers=who("d"), json={**base, "civic": {"STREET": "x"}}),
                   422, "civic", "not RFC 5139")  # fmt: skip
    assert_problem(await client.post("/cad/incidents", headers=who("d"), json={**base, "source": "pigeon"}),
                   422, "source", "must be 'call' or 'walk-in'")  # fmt: skip
    assert_problem(await client.post("/cad/incidents", headers=who("d"),
                                     json={**base, "source": "call", "call_id": "555-1234"}),
                   422, "call_id", "must be urn:emergency:uid:callid")  # fmt: skip
    assert_problem(await client.post("/cad/incidents", headers=who("d"),
                                     json={**base, "source": "call", "call_id": new_call_id("b.test"), "pidf": "<x"}),
                   422, "pidf", "")  # fmt: skip

    # State conflicts are 409 naming the transition.
    iid = (await client.post(f"/cad/boxes/{state.boxes[9].number}/alarm")).json()["id"]
    assert_problem(await client.post(url(iid, "/status"), headers=who("d"), json={"status": "on scene"}),
                   409, "", "cannot go from 'new' to 'on scene'")  # fmt: skip
    assert_problem(await client.post(url(iid, "/dispatch"), headers=who("d"), json={"units": []}),
                   422, "units", "non-empty list")  # fmt: skip
    assert_problem(await client.post(url(iid, "/dispatch"), headers=who("d"), json={"units": ["E999"]}),
                   404, "", "no unit 'E999'")  # fmt: skip
    assert_problem(await client.post("/cad/units/E1/status", headers=who("E1"), json={"status": "on scene"}),
                   409, "", "unit E1: cannot go from 'available' to 'on scene'")  # fmt: skip
    assert_problem(await client.post("/cad/units/E1/status", headers=who("E1"), json={"status": "asleep"}),
                   422, "status", "'asleep' is not one of")  # fmt: skip
    assert_problem(await client.post("/cad/units/E1/status", headers=who("E1"),
                                     json={"status": "out of service", "position": {"lat": 99, "lon": 0}}),
                   422, "position", "latitude 99.0 out of range")  # fmt: skip
    assert_problem(await client.get("/cad/incidents", params={"status": "someday"}), 422, "status", "open, closed or all")
    await client.post(url(iid, "/close"), headers=who("d"), json={"disposition": "false alarm"})
    assert_problem(await client.post(url(iid, "/close"), headers=who("d")), 409, "", "already closed")
