"""The console's routes over HTTP (httpx on the ASGI app; SSE on uvicorn): sign-in, every
page and action by role, CSRF, problem answers, the CAD flow, audit, live events."""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from firebox.console.app import LEAFLET_DIR, console_app
from firebox.console.audit import ConsoleAudit
from firebox.console.auth import hash_password, load_users
from firebox.console.live import LiveHub, poll_cad
from firebox.console.testing import serve, small_cad

PW = "s3cret-pw"
HASH = hash_password(PW, n=2**10)
USERS = load_users([
    {"name": "ann", "role": "call-taker", "psap": "psap-01", "position": "psap-01-pos1", "password_hash": HASH},
    {"name": "dan", "role": "dispatcher", "psap": "psap-01", "password_hash": HASH},
    {"name": "sue", "role": "supervisor", "psap": "psap-01", "password_hash": HASH},
    {"name": "ada", "role": "administrator", "psap": "psap-01", "password_hash": HASH},
])  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def console(tmp_path: Path) -> dict[str, Any]:
    clock = Clock()
    cad = small_cad(at=clock.now)
    audit = ConsoleAudit(tmp_path / "audit.db")
    gis = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"name": "Town A", "psap_id": "psap-01"},
           "geometry": {"type": "Polygon", "coordinates": [[[-71.1, 42.3], [-71.0, 42.3], [-71.0, 42.4], [-71.1, 42.3]]]}}]}  # fmt: skip
    app = console_app(cad=cad, users=USERS, audit=audit, gis=gis, clock=clock, cad_poll_s=None)
    return {"app": app, "cad": cad, "audit": audit, "clock": clock}


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def signed_in(app: Any, name: str) -> tuple[httpx.AsyncClient, str]:
    c = client(app)
    r = await c.post("/signin", data={"user": name, "password": PW})
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    state = (await c.get("/api/state")).json()
    return c, state["user"]["csrf"]


def is_problem(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["status"] == status and doc["title"]
    for w in words:
        assert w in doc["detail"], (w, doc)
    return doc


# --- sign-in -------------------------------------------------------------------------------------


async def test_signin_page_redirects_and_strict_cookie(console: dict[str, Any]) -> None:
    async with client(console["app"]) as c:
        r = await c.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/signin"
        page = await c.get("/signin")
        assert page.status_code == 200 and 'name="password"' in page.text and 'autocomplete="current-password"' in page.text
        r = await c.post("/signin", data={"user": "ann", "password": PW})
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        home = await c.get("/")
        assert home.status_code == 200 and "Answer next" in home.text and "psap-01-pos1" in home.text
        assert (await c.get("/signin")).status_code == 303  # already signed in


async def test_failed_signin_is_401_and_audited_without_saying_which(console: dict[str, Any]) -> None:
    async with client(console["app"]) as c:
        bad_pw = await c.post("/signin", data={"user": "ann", "password": "nope"})
        no_user = await c.post("/signin", data={"user": "mallory", "password": PW})
        assert bad_pw.status_code == no_user.status_code == 401
        assert "Wrong user name or password." in bad_pw.text and "Wrong user name or password." in no_user.text
        assert "set-cookie" not in bad_pw.headers
        assert (await c.get("/api/state")).status_code == 401
    failed = [e for e in console["audit"].entries(action="sign-in")]
    assert [(e.user, e.outcome) for e in failed] == [
        ("mallory", "failed: wrong user name or password"), ("ann", "failed: wrong user name or password"),
    ]  # fmt: skip


async def test_signin_from_another_origin_refused(console: dict[str, Any]) -> None:
    async with client(console["app"]) as c:
        r = await c.post("/signin", data={"user": "ann", "password": PW}, headers={"Origin": "http://evil.example"})
        is_problem(r, 403, "Origin")


async def test_sign_out_ends_the_session(console: dict[str, Any]) -> None:
    c, csrf = await signed_in(console["app"], "dan")
    async with aclosing(c):
        r = await c.post("/signout", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/signin"
        is_problem(await c.get("/api/state"), 401, "sign in")
    assert [e.action for e in console["audit"].entries(user="dan")] == ["sign-out", "sign-in"]


# --- roles ----------------------------------------------------------------------------------------

PAGES = ["/", "/incidents", "/units", "/supervisor", "/admin/audit", "/api/state", "/api/gis.geojson",
         "/fragments/incidents", "/fragments/units", "/fragments/stats", "/fragments/positions", "/fragments/callbacks"]  # fmt: skip
ALLOWED = {
    "ann": {"/", "/incidents", "/units", "/api/state", "/api/gis.geojson", "/fragments/incidents", "/fragments/units", "/fragments/callbacks"},
    "dan": {"/", "/incidents", "/units", "/api/state", "/api/gis.geojson", "/fragments/incidents", "/fragments/units", "/fragments/callbacks"},
    "sue": set(PAGES) - {"/admin/audit"},
    "ada": set(PAGES),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ALLOWED))
async def test_every_page_by_role(console: dict[str, Any], name: str) -> None:
    c, _ = await signed_in(console["app"], name)
    role = USERS[name].role.value
    async with aclosing(c):
        for path in PAGES:
            r = await c.get(path)
            if path in ALLOWED[name]:
                assert r.status_code == 200, (name, path, r.text[:300])
            else:
                doc = is_problem(r, 403, f"role {role!r} may not")
                assert doc["errors"][0]["member"] == "role"
    denied = [e for e in console["audit"].entries(user=name) if e.outcome.startswith("denied")]
    assert len(denied) == len(set(PAGES) - ALLOWED[name])


ACTIONS = [
    ("/calls/answer", {}, {"ann"}),
    ("/calls/release", {"call_id": "urn:x"}, {"ann"}),
    ("/position/ready", {"ready": "on"}, {"ann"}),
    ("/callbacks/record", {"callback_id": "cb", "outcome": "no answer"}, {"ann", "sue"}),
    ("/incidents", {"type": "fire", "subtype": "structure fire", "priority": 1, "lat": 42.36, "lon": -71.06}, {"ann", "dan", "sue"}),
    ("/units/E2/status", {"status": "out of service"}, {"dan", "sue"}),
]  # fmt: skip


@pytest.mark.parametrize("name", sorted(ALLOWED))
async def test_every_action_by_role(console: dict[str, Any], name: str) -> None:
    c, csrf = await signed_in(console["app"], name)
    role = USERS[name].role.value
    async with aclosing(c):
        for path, body, allowed in ACTIONS:
            r = await c.post(path, json=body, headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
            if name in allowed:
                # Allowed by role; the call handling element is not connected to this console.
                assert r.status_code != 403, (name, path, r.text)
                if path.startswith(("/calls", "/position", "/callbacks")):
                    is_problem(r, 503, "no call handling element")
                else:
                    assert r.status_code in (200, 201), (name, path, r.text)
            elif name == "sue":  # the role may take calls; this supervisor has no position
                is_problem(r, 403, "user 'sue' has no position to take calls at")
            else:
                is_problem(r, 403, f"{role!r} may not")


async def test_csrf_token_and_origin_are_required(console: dict[str, Any]) -> None:
    c, csrf = await signed_in(console["app"], "dan")
    body = {"type": "police", "subtype": "assault", "priority": 2, "description": "front desk"}
    async with aclosing(c):
        is_problem(await c.post("/incidents", json=body), 403, "CSRF")
        is_problem(await c.post("/incidents", json=body, headers={"X-CSRF-Token": csrf + "x"}), 403, "CSRF")
        is_problem(await c.post("/incidents", json=body, headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"}), 403, "origin")
        ok = await c.post("/incidents", json=body, headers={"X-CSRF-Token": csrf, "Origin": "http://testserver", "Accept": "application/json"})
        assert ok.status_code == 201
        # A plain form carries the token as a field and is sent back to the incident.
        form = await c.post("/incidents", data={**body, "priority": "3", "csrf": csrf})
        assert form.status_code == 303 and form.headers["location"].startswith("/incidents/urn:emergency:uid:incidentid:")
    outcomes = [e.outcome for e in console["audit"].entries(user="dan", action="incident create")]
    assert outcomes.count("denied: csrf") == 3 and outcomes.count("ok") == 2


async def test_not_signed_in_is_401_problem(console: dict[str, Any]) -> None:
    async with client(console["app"]) as c:
        is_problem(await c.get("/api/state"), 401, "sign in")
        is_problem(await c.post("/incidents", json={}), 401)
        is_problem(await c.get("/events"), 401)
        assert (await c.get("/incidents")).status_code == 303


# --- the CAD through the console --------------------------------------------------------------------


async def test_incident_by_hand_dispatch_status_close_eido(console: dict[str, Any]) -> None:
    c, csrf = await signed_in(console["app"], "dan")
    h = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    async with aclosing(c):
        r = await c.post("/incidents", json={"type": "fire", "subtype": "structure fire", "priority": 1,
                                             "lat": "42.3605", "lon": "-71.0590", "description": "smoke from a window",
                                             "narrative": "caller at the front desk"}, headers=h)  # fmt: skip
        assert r.status_code == 201, r.text
        iid = r.json()["incident"]["id"]
        assert r.json()["url"] == f"/incidents/{iid}"
        board = await c.get("/incidents")
        assert iid in board.text and "smoke from a window" in board.text
        detail = await c.get(f"/incidents/{iid}")
        assert "Recommended units" in detail.text and "nearest available engine" in detail.text
        assert re.search(r"Dispatch recommended: E1, E2, L1, C1", detail.text), detail.text
        r = await c.post(f"/incidents/{iid}/dispatch", json={"recommended": "1"}, headers=h)
        assert r.status_code == 200 and r.json()["incident"]["status"] == "dispatched"
        assert r.json()["incident"]["units"] == ["E1", "E2", "L1", "C1"]
        units = await c.get("/fragments/units")
        assert units.text.count("u-dispatched") == 4
        is_problem(await c.post(f"/incidents/{iid}/dispatch", json={"units": ["E1"]}, headers=h), 409, "E1 cannot be dispatched")
        is_problem(await c.post(f"/incidents/{iid}/dispatch", json={"units": ["Z9"]}, headers=h), 404, "Z9")
        r = await c.post(f"/incidents/{iid}/status", json={"status": "on scene"}, headers=h)
        assert r.json()["incident"]["status"] == "on scene"
        is_problem(await c.post(f"/incidents/{iid}/close", json={}, headers=h), 422, "disposition: required")
        r = await c.post(f"/incidents/{iid}/close", json={"disposition": "fire out"}, headers=h)
        assert r.json()["incident"]["status"] == "closed" and r.json()["incident"]["disposition"] == "fire out"
        eido = await c.get(f"/incidents/{iid}/eido")
        assert eido.status_code == 200 and "attachment" in eido.headers["content-disposition"]
        assert json.dumps(eido.json()).count(iid) >= 1
        page = await c.get(f"/incidents/{iid}")
        assert "fire out" in page.text and "Timeline" in page.text and "Close incident" not in page.text
        assert (await c.get("/fragments/incidents")).text.count(iid) == 0  # the board shows open ones
        assert iid in (await c.get("/incidents?status=all")).text
    actions = [e.action for e in reversed(console["audit"].entries(user="dan")) if e.outcome == "ok"]
    assert actions == ["sign-in", "incident create", "dispatch", "incident status", "incident close", "eido export"]
    cad_actions = [r.action for r in console["cad"].audit(iid)]
    assert cad_actions[0] == "incident created" and "dispatched" in cad_actions and "incident closed" in cad_actions
    assert {r.actor for r in console["cad"].audit(iid)} == {"dan"}


async def test_bad_input_gets_a_precise_problem(console: dict[str, Any]) -> None:
    c, csrf = await signed_in(console["app"], "dan")
    h = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    async with aclosing(c):
        is_problem(await c.post("/incidents", json={"type": "fire", "subtype": "medical"}, headers=h), 422, "subtype", "not a fire incident")
        is_problem(await c.post("/incidents", json={"type": "arson", "subtype": "medical"}, headers=h), 422, "type: 'arson' is not one of")
        is_problem(await c.post("/incidents", json={"type": "fire", "subtype": "brush fire", "priority": "x"}, headers=h), 422, "priority: must be an integer")
        is_problem(await c.post("/incidents", json={"type": "fire", "subtype": "brush fire", "priority": 9}, headers=h), 422, "priority")
        is_problem(await c.post("/incidents", json={"type": "fire", "subtype": "brush fire", "lat": "north"}, headers=h), 422, "lat")
        is_problem(await c.post("/incidents", content=b"[1]", headers={**h, "Content-Type": "application/json"}), 400, "JSON object")
        is_problem(await c.post("/incidents", content=b"x", headers={**h, "Content-Type": "text/plain"}), 415, "Content-Type")
        is_problem(await c.get("/incidents/urn:emergency:uid:incidentid:nope:cad.example.net"), 404, "no incident")
        is_problem(await c.post("/units/E1/status", json={"status": "flying"}, headers=h), 422, "status: 'flying'")
        is_problem(await c.post("/units/E1/status", json={"status": "on scene"}, headers=h), 409, "cannot go from 'available'")
        r = await c.post("/units/E2/status", json={"status": "out of service"}, headers=h)
        assert r.json()["unit"]["status"] == "out of service"
        is_problem(await c.get("/fragments/nothing"), 404, "no fragment")
        is_problem(await c.get("/no/such/page"), 404)
    failed = [e for e in console["audit"].entries(user="dan") if e.outcome.startswith("failed")]
    assert any("not a fire incident" in e.outcome for e in failed)


async def test_without_call_handling_the_console_says_so(console: dict[str, Any]) -> None:
    c, csrf = await signed_in(console["app"], "ann")
    async with aclosing(c):
        page = await c.get("/")
        assert "Call handling is not connected" in page.text
        is_problem(await c.post("/calls/answer", json={}, headers={"X-CSRF-Token": csrf}), 503, "no call handling element")
        state = (await c.get("/api/state")).json()
        assert state["call_handling"] is False and state["calls"] == [] and len(state["units"]) == 8
    c, _ = await signed_in(console["app"], "sue")
    async with aclosing(c):
        assert "no call statistics" in (await c.get("/supervisor")).text


async def test_audit_view_shows_console_and_cad_trails(console: dict[str, Any]) -> None:
    c, csrf = await signed_in(console["app"], "dan")
    async with aclosing(c):
        await c.post("/incidents", json={"type": "ems", "subtype": "medical", "priority": 2, "description": "lobby"},
                     headers={"X-CSRF-Token": csrf})  # fmt: skip
    async with client(console["app"]) as bad:
        await bad.post("/signin", data={"user": "dan", "password": "guess"})
    c, _ = await signed_in(console["app"], "ada")
    async with aclosing(c):
        page = await c.get("/admin/audit")
        assert 'id="console-audit"' in page.text and 'id="cad-audit"' in page.text
        assert "failed: wrong user name or password" in page.text and "incident created" in page.text and "unit added" in page.text
        only = await c.get("/admin/audit", params={"user": "dan", "action": "incident create"})
        rows = re.findall(r"<tr class=\"[^\"]*\"><td>", only.text)
        assert len(rows) == 1


async def test_leaflet_served_or_its_absence_said(console: dict[str, Any], tmp_path: Path) -> None:
    assert (LEAFLET_DIR / "leaflet.js").is_file(), "run `npm ci` (make setup) to install Leaflet"
    async with client(console["app"]) as c:
        js = await c.get("/vendor/leaflet/leaflet.js")
        assert js.status_code == 200 and "Leaflet" in js.text[:400]
        await c.post("/signin", data={"user": "dan", "password": PW})
        page = await c.get("/")
        assert "/vendor/leaflet/leaflet.js" in page.text and "npm ci" not in page.text
        gis = (await c.get("/api/gis.geojson")).json()
        assert gis["features"][0]["properties"]["name"] == "Town A"
    bare = console_app(cad=console["cad"], users=USERS, audit=console["audit"], leaflet_dir=tmp_path / "none", cad_poll_s=None)
    async with client(bare) as c:
        assert (await c.get("/vendor/leaflet/leaflet.js")).status_code == 404
        await c.post("/signin", data={"user": "dan", "password": PW})
        page = await c.get("/")
        assert "Leaflet) is not installed" in page.text and "npm ci" in page.text and "leaflet.js" not in page.text


# --- live updates ------------------------------------------------------------------------------------


async def test_cad_changes_outside_the_console_are_polled() -> None:
    cad = small_cad()
    hub = LiveHub()
    seen = hub.connect("psap-01", None)
    task = asyncio.create_task(poll_cad(cad, hub, 0.01))
    try:
        await asyncio.sleep(0.05)  # the first look only learns what is there
        assert seen.queue.empty()
        cad.unit_status("E2", "out of service", at=datetime.now(UTC), actor="roster")
        incident = cad.incident_by_hand(at=datetime.now(UTC), actor="box", type="fire", subtype="fire alarm", priority=2)
        kinds: set[str] = set()
        for _ in range(500):  # bounded: the poll runs every 10 ms
            while not seen.queue.empty():
                kinds.add(json.loads(seen.queue.get_nowait().data)["kind"])
            if kinds >= {"unit", "incident"}:
                break
            await asyncio.sleep(0.01)
        assert kinds >= {"unit", "incident"}
        cad.close(incident.id, at=datetime.now(UTC), actor="box", disposition="false alarm")
        closed = None
        for _ in range(500):
            while not seen.queue.empty():
                doc = json.loads(seen.queue.get_nowait().data)
                if doc["kind"] == "incident" and doc["incident"]["status"] == "closed":
                    closed = doc
            if closed:
                break
            await asyncio.sleep(0.01)
        assert closed is not None and closed["incident"]["id"] == incident.id
    finally:
        task.cancel()


def _read_events(stream: Any, want: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ev_id = None
    for line in stream.iter_lines():
        if line.startswith("id: "):
            ev_id = int(line[4:])
        elif line.startswith("data: "):
            doc = json.loads(line[6:])
            doc["_id"] = ev_id
            out.append(doc)
            if len(out) >= want:
                break
    return out


def test_sse_stream_over_http_with_replay(tmp_path: Path) -> None:
    cad = small_cad()
    app = console_app(cad=cad, users=USERS, audit=ConsoleAudit(tmp_path / "a.db"), cad_poll_s=None)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as c:
        assert c.post("/signin", data={"user": "dan", "password": PW}).status_code == 303
        csrf = c.get("/api/state").json()["user"]["csrf"]
        with c.stream("GET", "/events", params={"after": 0}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            r = c.post("/incidents", json={"type": "police", "subtype": "burglary", "priority": 3, "description": "shop"},
                       headers={"X-CSRF-Token": csrf, "Accept": "application/json"})  # fmt: skip
            assert r.status_code == 201
            events = _read_events(stream, 1)
        assert events[0]["kind"] == "incident" and events[0]["incident"]["id"] == r.json()["incident"]["id"]
        # Reconnecting with Last-Event-ID 0 replays what came after it.
        with c.stream("GET", "/events", headers={"Last-Event-ID": "0"}) as stream:
            again = _read_events(stream, 1)
        assert again[0]["_id"] == events[0]["_id"] and again[0]["incident"]["id"] == events[0]["incident"]["id"]


async def test_call_handling_attached_after_the_app_was_built(tmp_path: Path) -> None:
    from firebox.psap.api import RingStrategy
    from firebox.psap.callhandling import PositionSetup, PsapSetup
    from firebox.psap.element import CallHandlingElement

    app = console_app(cad=small_cad(), users=USERS, audit=ConsoleAudit(tmp_path / "a.db"), cad_poll_s=None)
    element = CallHandlingElement([PsapSetup("psap-01", "sip:psap-01@psap.example", "PSAP 1",
                                             (PositionSetup("psap-01-pos1"),), RingStrategy.RING_ALL)])  # fmt: skip
    await element.start()
    try:
        app.state.console.attach_call_handling(element)
        c, csrf = await signed_in(app, "ann")  # signing in signs the position in
        async with aclosing(c):
            state = (await c.get("/api/state")).json()
            assert state["call_handling"] is True and state["psap"]["name"] == "PSAP 1"
            assert [p["status"] for p in state["positions"]] == ["available"]
            r = await c.post("/position/ready", json={"ready": "off"}, headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
            assert r.status_code == 200 and r.json()["position"]["status"] == "not ready"
            is_problem(await c.post("/calls/answer", json={}, headers={"X-CSRF-Token": csrf}), 409)
            await c.post("/signout", data={"csrf": csrf})
        assert element.positions("psap-01")[0].status.value == "signed out"
    finally:
        await app.state.console.aclose()
        await element.close()
