"""Real calls in the console: the PSAP call handling element (firebox.psap.element) on UDP
127.0.0.1 takes SIPp's calls (as the ESRP would send them), the console runs in the same
event loop under uvicorn, and headless Chromium is the call-taker. A voice call rings in the
PSAP's queue, is answered by keyboard, shows its callback number and location on the map,
becomes an incident whose recommended unit is dispatched and which is closed; an abandoned
call lands on the callback list and is called back; a text call is answered and replied to;
the supervisor sees the NENA-STA-020 figures. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import shutil
import subprocess
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
from firebox.console.testing import free_port, serve_built, small_cad
from firebox.location.shapes import Point
from firebox.psap.api import RingStrategy
from firebox.psap.callhandling import PositionSetup, PsapSetup
from firebox.psap.element import CallHandlingElement

ROOT = Path(__file__).resolve().parents[1]
SIPP_DIR = Path(__file__).parent / "sipp"
PW = "s3cret-pw"
HASH = hash_password(PW, n=2**10)
NORTH = PsapSetup("north", "sip:north@psap.demo.firebox.test", "North PSAP",
                  (PositionSetup("n1"), PositionSetup("n2")), RingStrategy.RING_ALL, max_queue=10)  # fmt: skip
SOUTH = PsapSetup("south", "sip:south@psap.demo.firebox.test", "South PSAP", (PositionSetup("s1"),), RingStrategy.RING_ALL)
USERS = load_users([
    {"name": "ann", "role": "call-taker", "psap": "north", "position": "n1", "password_hash": HASH},
    {"name": "sid", "role": "call-taker", "psap": "south", "position": "s1", "password_hash": HASH},
    {"name": "sue", "role": "supervisor", "psap": "north", "password_hash": HASH},
    {"name": "dan", "role": "dispatcher", "psap": "north", "password_hash": HASH},
])  # fmt: skip
TOWN = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"id": "t1", "name": "North Town", "psap_id": "north"},
     "geometry": {"type": "Polygon", "coordinates": [[[-71.15, 42.34], [-71.05, 42.34], [-71.05, 42.40], [-71.15, 42.40], [-71.15, 42.34]]]}},
]}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed (apt-get install sip-tester); these tests need it")
    audit_path = tmp_path_factory.mktemp("console-calls") / "audit.db"

    async def build() -> Any:
        element = CallHandlingElement([NORTH, SOUTH])
        await element.start()
        cad = small_cad(Point(lat=42.37, lon=-71.11))
        app = console_app(cad=cad, users=USERS, audit=ConsoleAudit(audit_path), call_handling=element, gis=TOWN, cad_poll_s=None)

        async def close() -> None:
            await app.state.console.aclose()
            await element.close()

        return app, {"port": element.port, "cad": cad, "element": element}, close

    with serve_built(build) as (url, extra):
        yield {"url": url, **extra}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def sign_in(browser: Browser, url: str, name: str) -> Page:
    return console_kit.sign_in(browser, url, name, PW, height=1100, via_root=False)


def sipp(scenario: str, port: int, cwd: Path, service: str = "north") -> subprocess.Popen[bytes]:
    command = [
        "sipp", "-sf", str(SIPP_DIR / scenario), "-s", service, "-t", "u1",
        "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()),
        "-m", "1", "-timeout", "40s", "-timeout_error", "-trace_err", "-nostdin", f"127.0.0.1:{port}",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished(proc: subprocess.Popen[bytes], cwd: Path) -> None:
    try:
        _, err = proc.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("sipp did not finish within 45 s")
    errors = "".join(p.read_text(errors="replace")[-2000:] for p in cwd.glob("*errors*"))
    assert proc.returncode == 0, f"sipp rc={proc.returncode}\n{err.decode(errors='replace')[-1500:]}\n{errors}"


def test_voice_call_answered_by_keyboard_to_incident_dispatched_and_closed(server: dict[str, Any], browser: Browser, tmp_path: Path) -> None:
    url = server["url"]
    page = sign_in(browser, url, "ann")
    other = sign_in(browser, url, "sid")  # another PSAP's call-taker: must not see north's call
    expect(page.locator("#btn-ready")).to_contain_text("available")
    proc = sipp("console_uac.xml", server["port"], tmp_path)
    row = page.locator("#queue-body tr")
    expect(row).to_have_count(1, timeout=15000)
    expect(row.locator(".badge")).to_have_text("ringing")
    expect(row.locator("td.callback")).to_contain_text("6035550100")
    expect(page.locator("#queue-count")).to_have_text("1 ringing")
    page.screenshot(path=str(SHOTS / "queue-ringing.png"), full_page=True)
    expect(other.locator("#queue-empty")).to_be_visible()
    assert other.locator("#queue-body tr").count() == 0

    page.locator("body").press("a")  # answer the next call by keyboard
    expect(row.locator(".badge")).to_have_text("connected")
    expect(page.locator("#cf-callback")).to_contain_text("6035550100")
    expect(page.locator("#cf-location")).to_contain_text("42.37000, -71.11000 ±25 m")
    expect(page.locator("#cf-position")).to_have_text("n1")
    # The caller on the map: the uncertainty circle and the marker.
    page.wait_for_function("FB.mapLayers && FB.mapLayers.caller.getLayers().length === 2")
    radius = page.evaluate("FB.mapLayers.caller.getLayers().find(l => l.getRadius && l.options.radius > 20).getRadius()")
    assert radius == 25
    page.screenshot(path=str(SHOTS / "call-panel-voice.png"), full_page=True)

    # Create the incident from the call, then release the call by keyboard.
    page.get_by_label("Type", exact=True).select_option("fire")
    page.get_by_label("Subtype").select_option("structure fire")
    page.get_by_label("Narrative").fill("smoke from the second floor, caller outside")
    page.get_by_role("button", name="Create incident").click()
    link = page.get_by_role("link", name="Incident created: open it")
    expect(link).to_be_visible()
    page.locator("body").press("r")
    expect(page.locator("#call-status")).to_have_text("released")
    expect(row).to_have_count(0)
    finished(proc, tmp_path)

    # The call-taker sees the incident; sending units is the dispatcher's.
    href = link.get_attribute("href") or ""
    link.click()
    expect(page.locator("#incident-status")).to_have_text("new")
    assert page.locator("#dispatch-recommended").count() == 0
    disp = sign_in(browser, url, "dan")
    expect(disp.locator("#incident-board")).to_contain_text("structure fire")
    disp.goto(url + href)
    expect(disp.get_by_role("heading", name="Recommended units")).to_be_visible()
    expect(disp.locator("main")).to_contain_text("6035550100")
    disp.screenshot(path=str(SHOTS / "incident-from-call-new.png"), full_page=True)
    disp.locator("#dispatch-recommended").click()
    expect(disp.locator("#incident-status")).to_have_text("dispatched")
    disp.get_by_label("Disposition").fill("fire out")
    disp.locator("#close-incident").click()
    expect(disp.locator("#incident-status")).to_have_text("closed")
    disp.screenshot(path=str(SHOTS / "incident-from-call-closed.png"), full_page=True)
    disp.close()
    incident = server["cad"].incidents()[-1]
    assert incident.id == "urn:emergency:uid:incidentid:" + incident.id.split(":")[4] + ":bcf.demo.firebox.test"
    assert incident.source.callback and "6035550100" in incident.source.callback
    assert incident.location.point is not None and round(incident.location.point.lat, 2) == 42.37
    assert page.errors == [] and other.errors == []  # type: ignore[attr-defined]
    page.close()
    other.close()


def test_abandoned_call_goes_to_the_callback_list_and_is_called_back(server: dict[str, Any], browser: Browser, tmp_path: Path) -> None:
    page = sign_in(browser, server["url"], "ann")
    proc = sipp("psap_uac_cancel.xml", server["port"], tmp_path)
    finished(proc, tmp_path)
    row = page.locator("#queue-body tr")
    expect(row.locator(".badge")).to_have_text("abandoned")
    callbacks = page.locator("#callbacks tbody tr")
    expect(callbacks).to_have_count(1)
    expect(callbacks.locator("td.callback")).to_contain_text("6035550100")
    page.screenshot(path=str(SHOTS / "abandoned-callback.png"), full_page=True)
    callbacks.get_by_placeholder("outcome (no answer, reached…)").fill("reached the caller: pocket dial")
    callbacks.get_by_label("done").check()
    callbacks.get_by_role("button", name="Record").click()
    expect(page.locator("#callbacks tbody tr .badge")).to_have_text("done")
    expect(row).to_have_count(0)
    entry = server["element"].callbacks("north")[0]
    assert entry.attempts[0]["by"] == "ann" and entry.attempts[0]["outcome"] == "reached the caller: pocket dial"
    page.screenshot(path=str(SHOTS / "callback-done.png"), full_page=True)
    page.close()


def test_text_call_answered_and_replied_to(server: dict[str, Any], browser: Browser, tmp_path: Path) -> None:
    page = sign_in(browser, server["url"], "ann")
    proc = sipp("ch_text_uac.xml", server["port"], tmp_path)
    row = page.locator("#queue-body tr", has_text="TEXT")
    expect(row).to_have_count(1, timeout=15000)
    row.click()
    expect(page.locator("#transcript li")).to_have_count(2)
    expect(page.locator("#transcript")).to_contain_text("There is a fire next door")
    page.get_by_role("button", name="Answer this call").click()
    expect(row.locator(".badge")).to_have_text("connected")
    page.locator("body").press("t")
    expect(page.locator("#text-box")).to_be_focused()
    page.keyboard.type("Help is on the way. Leave the building if you can.")
    page.keyboard.press("Enter")
    expect(page.locator("#transcript li")).to_have_count(3)
    expect(page.locator("#transcript li.out")).to_contain_text("Help is on the way")
    finished(proc, tmp_path)
    page.screenshot(path=str(SHOTS / "call-panel-text.png"), full_page=True)
    page.keyboard.press("Escape")
    page.locator("body").press("r")
    expect(page.locator("#call-status")).to_have_text("released")
    page.close()


def test_supervisor_sees_answer_times_and_positions(server: dict[str, Any], browser: Browser) -> None:
    page = sign_in(browser, server["url"], "sue")
    page.get_by_role("link", name="Statistics").click()
    stats = page.locator("#stats")
    expect(stats).to_be_visible()
    offered = int(page.locator("#st-offered").inner_text())
    assert offered >= 3  # voice, abandoned, text (in this module's order)
    expect(page.locator("#st-abandoned")).to_have_text("1")
    expect(stats).to_contain_text("answered within 15 s (target 90 %)")
    expect(stats).to_contain_text("answered within 20 s (target 95 %)")
    expect(page.locator("#positions tr[data-id=n1]")).to_contain_text("ann")
    page.screenshot(path=str(SHOTS / "supervisor-stats.png"), full_page=True)
    page.close()
