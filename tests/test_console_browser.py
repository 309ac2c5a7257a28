"""The console in headless Chromium (Playwright), served by uvicorn on 127.0.0.1: sign-in,
incident board, an incident created by hand, the recommended units dispatched, closed; the
unit board; live updates between two consoles; keyboard use; supervisor statistics; the
audit view. Screenshots of each view go to artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import console_kit
from console_kit import SHOTS, chromium
from playwright.sync_api import Browser, Page, expect

from firebox.console.app import console_app
from firebox.console.audit import ConsoleAudit
from firebox.console.auth import hash_password, load_users
from firebox.console.testing import serve, small_cad

ROOT = Path(__file__).resolve().parents[1]
PW = "s3cret-pw"
HASH = hash_password(PW, n=2**10)
USERS = load_users([
    {"name": "ann", "role": "call-taker", "psap": "psap-01", "position": "psap-01-pos1", "password_hash": HASH},
    {"name": "dan", "role": "dispatcher", "psap": "psap-01", "password_hash": HASH, "display_name": "Dan Dispatch"},
    {"name": "sue", "role": "supervisor", "psap": "psap-01", "password_hash": HASH},
    {"name": "ada", "role": "administrator", "psap": "psap-01", "password_hash": HASH},
])  # fmt: skip
TOWN = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"id": "t1", "name": "Harbor", "psap_id": "psap-01"},
     "geometry": {"type": "Polygon", "coordinates": [[[-71.10, 42.33], [-71.00, 42.33], [-71.00, 42.40], [-71.10, 42.40], [-71.10, 42.33]]]}},
    {"type": "Feature", "properties": {"id": "t2", "name": "Hill", "psap_id": "psap-02"},
     "geometry": {"type": "Polygon", "coordinates": [[[-71.20, 42.33], [-71.10, 42.33], [-71.10, 42.40], [-71.20, 42.40], [-71.20, 42.33]]]}},
]}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    audit = ConsoleAudit(tmp_path_factory.mktemp("console") / "audit.db")
    cad = small_cad()
    app = console_app(cad=cad, users=USERS, audit=audit, gis=TOWN, cad_poll_s=0.5)
    with serve(app) as url:
        yield {"url": url, "cad": cad, "audit": audit}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def sign_in(browser: Browser, url: str, name: str) -> Page:
    return console_kit.sign_in(browser, url, name, PW, height=1000, via_root=True)


def test_sign_in_wrong_then_right(server: dict[str, Any], browser: Browser) -> None:
    page = browser.new_page()
    page.goto(server["url"] + "/signin")
    page.get_by_label("User name").fill("dan")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert").filter(has_text="Wrong user name or password")).to_be_visible()
    page.screenshot(path=str(SHOTS / "signin-failed.png"))
    page.get_by_label("Password").fill(PW)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("header .who")).to_contain_text("Dan Dispatch")
    page.close()


def test_dispatcher_creates_dispatches_and_closes(server: dict[str, Any], browser: Browser) -> None:
    url = server["url"]
    page = sign_in(browser, url, "dan")
    # The console: map drawn from vector GeoJSON (no tiles), units on it, boards filled.
    page.wait_for_function("window.FB.mapLayers && FB.mapLayers.towns && FB.mapLayers.units.size === 8")
    assert page.evaluate("FB.mapLayers.towns.getLayers().length") == 2
    assert page.locator("#map img.leaflet-tile").count() == 0  # vector layers only, no tiles
    # The console's unit panel lists the units at work (none yet) and counts the rest.
    expect(page.locator("#units-panel")).to_contain_text("8 available")
    expect(page.locator("#units-panel #unit-board")).to_have_count(0)
    page.screenshot(path=str(SHOTS / "console-dispatcher.png"), full_page=True)

    page.get_by_role("link", name="Incidents").click()
    expect(page.get_by_role("heading", name="Incident board")).to_be_visible()
    page.get_by_label("Type", exact=True).select_option("fire")
    page.get_by_label("Subtype").select_option("structure fire")
    page.get_by_label("Priority").select_option("1")
    page.get_by_label("Number").fill("12")
    page.get_by_label("Street").fill("Water St")
    page.get_by_label("Town").fill("Harbor")
    page.get_by_label("Latitude").fill("42.3605")
    page.get_by_label("Longitude").fill("-71.0590")
    page.get_by_label("Description").fill("smoke showing, 3 floors")
    page.get_by_label("Narrative").fill("reported by a passer-by at the station")
    page.screenshot(path=str(SHOTS / "incident-board-new.png"), full_page=True)
    page.get_by_role("button", name="Create incident").click()

    expect(page.get_by_role("heading", name="Recommended units")).to_be_visible()
    recommendation = page.locator("#recommendation")
    expect(recommendation).to_contain_text("nearest available engine")
    expect(page.locator("#incident-status")).to_have_text("new")
    page.screenshot(path=str(SHOTS / "incident-detail-new.png"), full_page=True)
    page.locator("#dispatch-recommended").click()
    expect(page.locator("#incident-status")).to_have_text("dispatched")
    expect(page.locator("#incident-units")).to_contain_text("E1 (dispatched)")
    page.get_by_label("Status", exact=True).select_option("on scene")
    page.get_by_role("button", name="Set status").click()
    expect(page.locator("#incident-status")).to_have_text("on scene")
    page.screenshot(path=str(SHOTS / "incident-detail-on-scene.png"), full_page=True)
    page.get_by_label("Disposition").fill("fire out, overhaul done")
    page.locator("#close-incident").click()
    expect(page.locator("#incident-status")).to_have_text("closed")
    expect(page.locator("#timeline")).to_contain_text("dispatched")
    page.screenshot(path=str(SHOTS / "incident-detail-closed.png"), full_page=True)
    # The EIDO export link downloads the incident.
    with page.expect_download() as dl:
        page.get_by_role("link", name="Export EIDO (NENA-STA-021)").click()
    assert dl.value.suggested_filename == "incident-eido.json"
    assert page.errors == []  # type: ignore[attr-defined]
    page.close()


def test_unit_board_and_live_update_between_consoles(server: dict[str, Any], browser: Browser) -> None:
    url = server["url"]
    watcher = sign_in(browser, url, "dan")
    actor = sign_in(browser, url, "sue")
    actor.get_by_role("link", name="Units").click()
    expect(actor.get_by_role("heading", name="Unit board")).to_be_visible()
    actor.get_by_label("New status for P2").select_option("out of service")
    actor.locator("#unit-board tr[data-id=P2] button").click()
    expect(actor.locator("#unit-board tr[data-id=P2] .badge")).to_have_text("out of service")
    actor.screenshot(path=str(SHOTS / "unit-board.png"), full_page=True)
    # The other console sees it without a reload (SSE -> its units panel refreshed).
    expect(watcher.locator("#unit-board tr[data-id=P2] .badge")).to_have_text("out of service")
    # An incident made elsewhere (the CAD's own hands: a box pulled) reaches the board by the poll.
    from datetime import UTC, datetime

    server["cad"].incident_by_hand(at=datetime.now(UTC), actor="fire alarm telegraph", type="fire",
                                   subtype="fire alarm", priority=2, description="box 1234 pulled")  # fmt: skip
    expect(watcher.locator("#incident-board")).to_contain_text("box 1234 pulled")
    watcher.screenshot(path=str(SHOTS / "console-live-board.png"), full_page=True)
    assert watcher.errors == [] and actor.errors == []  # type: ignore[attr-defined]
    watcher.close()
    actor.close()


def test_keyboard_only(server: dict[str, Any], browser: Browser) -> None:
    url = server["url"]
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(url + "/signin")
    # The user name field has focus; sign in without the mouse.
    expect(page.get_by_label("User name")).to_be_focused()
    page.keyboard.type("ann")
    page.keyboard.press("Tab")
    page.keyboard.type(PW)
    page.keyboard.press("Enter")
    expect(page).to_have_url(url + "/")
    expect(page.locator("#live")).to_have_text("live")
    # Tab reaches the skip link first, then the navigation; focus is always outlined.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    seen = []
    for _ in range(8):
        page.keyboard.press("Tab")
        seen.append(page.evaluate(
            "(() => { const e = document.activeElement; const s = getComputedStyle(e);"
            " return [e.tagName, e.id || e.textContent.trim().slice(0, 20), s.outlineStyle, s.outlineWidth]; })()"
        ))  # fmt: skip
    assert all(style != "none" and width != "0px" for _, _, style, width in seen), seen
    assert ["BUTTON", "btn-answer"] in [s[:2] for s in seen], seen
    # Shortcuts: ? shows the list, Q focuses the queue, A with no call says so (no crash).
    page.locator("body").press("Escape")
    page.keyboard.press("?")
    expect(page.locator("#help")).to_have_attribute("open", "")
    page.screenshot(path=str(SHOTS / "console-keyboard-help.png"), full_page=True)
    page.keyboard.press("q")
    assert page.evaluate("document.activeElement.id") == "queue"
    page.keyboard.press("r")
    expect(page.get_by_role("alert")).to_contain_text("no call to release")
    page.close()


def test_supervisor_statistics(server: dict[str, Any], browser: Browser) -> None:
    page = sign_in(browser, server["url"], "sue")
    page.get_by_role("link", name="Statistics").click()
    expect(page.get_by_role("heading", name="answer times and positions")).to_be_visible()
    # This console has no call handling element; the page says so instead of showing zeros.
    expect(page.locator("[data-live=stats]")).to_contain_text("Call handling is not connected")
    page.screenshot(path=str(SHOTS / "supervisor-no-call-handling.png"), full_page=True)
    page.close()


def test_administrator_audit_view(server: dict[str, Any], browser: Browser) -> None:
    page = sign_in(browser, server["url"], "ada")
    expect(page.get_by_role("link", name="Statistics")).to_be_visible()
    page.get_by_role("link", name="Audit").click()
    table = page.locator("#console-audit")
    expect(table).to_contain_text("failed: wrong user name or password")
    expect(table).to_contain_text("incident close")
    expect(page.locator("#cad-audit")).to_contain_text("incident closed")
    page.get_by_role("textbox", name="User").fill("dan")
    page.get_by_role("textbox", name="Action").fill("dispatch")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#console-audit tbody tr")).to_have_count(1)
    page.screenshot(path=str(SHOTS / "audit.png"), full_page=True)
    # An administrator dispatches nothing: the 403 names the role.
    reply = page.request.post(server["url"] + "/units/E1/status", data={"status": "out of service"},
                              headers={"X-CSRF-Token": page.locator("body").get_attribute("data-csrf") or ""})  # fmt: skip
    assert reply.status == 403 and "role 'administrator' may not dispatch" in reply.json()["detail"]
    page.close()
