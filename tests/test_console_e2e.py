"""The whole path in a browser: `firebox serve` runs the demo state's deployment (BCF, ESRP,
ECRF, PSAP call handling, CAD, console, Logging Services); SIPp is the carrier and sends its
911 calls to the BCF with a PIDF-LO located in one PSAP's area; headless Chromium is that
PSAP's call-taker and dispatcher.

A voice call rings in the right PSAP's console (and not in another's); the call-taker
answers it, sees the callback number and the caller on the map, creates an incident; the
dispatcher dispatches the recommended unit and closes it; the call-taker releases the call
(the BYE reaches SIPp through the ESRP). An abandoned call lands on the callback list and is
called back. A text to 911 is answered and replied to. Screenshots of each view go to
artifacts/screenshots/. Every wait is bounded; nothing asserts on timing."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
import console_kit
from console_kit import SHOTS, chromium
from playwright.sync_api import Browser, Page, expect

ROOT = Path(__file__).resolve().parents[1]
FIREBOX = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "firebox"
SIPP_DIR = Path(__file__).parent / "sipp"
PASSWORD = "firebox"  # the demo users' password (firebox.node.DEMO_CONSOLE_PASSWORD)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`firebox serve` on the demo deployment, with two PSAPs answered only by people: the
    test's call-taker at the first one's desk, and another PSAP's call-taker."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed (apt-get install sip-tester); this test needs it")
    from rich.console import Console

    from firebox.node import write_demo

    tmp = tmp_path_factory.mktemp("console-e2e")
    port, sip = free_port(), free_port(socket.SOCK_DGRAM)
    path, state = write_demo(tmp / "w", seed=911, n_towns=40, listen=f"127.0.0.1:{port}",
                             sip_listen=f"127.0.0.1:{sip}", console=Console(quiet=True), call_handling=True)  # fmt: skip
    data = yaml.safe_load(path.read_text())
    data["elements"]["bcf"]["transports"] = ["udp"]
    home, other = state.psaps[0], state.psaps[1]
    for psap in (home, other):
        section = data["elements"]["call_handling"]["psaps"][psap.id]
        section["positions"] = [p for p in section["positions"] if p["id"].endswith("-desk")]
        # People take their time: no overflow to an alternate while the test looks.
        section["overflow_after_seconds"] = 120
        section["ring_no_answer_seconds"] = 120
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    town = next(t for t in state.towns if t.psap_id == home.id)
    point = town.geometry.representative_point()
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen([str(FIREBOX), "serve", str(path)], stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd=tmp)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # bounded: HTTP first, then the BCF (the console's element comes with it)
            assert proc.poll() is None, (tmp / "serve.log").read_text()
            try:
                ready = httpx.post(f"{base}/BadActors", json={"sourceId": "nobody"}, timeout=2).status_code != 503
            except httpx.HTTPError:
                ready = False
            if ready:
                break
            if time.monotonic() > deadline:
                pytest.fail("firebox serve did not start within 90 s:\n" + (tmp / "serve.log").read_text())
            time.sleep(0.3)
        yield {
            "url": base + "/console", "base": base, "sip": sip, "home": home, "other": other,
            "lat": point.y, "lon": point.x, "tmp": tmp,
        }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def sign_in(browser: Browser, url: str, name: str) -> Page:
    return console_kit.sign_in(browser, url, name, PASSWORD, height=1100, via_root=False)


def carrier(system: dict[str, Any], scenario: str, cwd: Path) -> subprocess.Popen[bytes]:
    """SIPp as the carrier: one call to the BCF, located in the home PSAP's town."""
    inf = cwd / "location.csv"
    inf.write_text(f"SEQUENTIAL\n{system['lat']:.6f};{system['lon']:.6f};\n")
    command = [
        "sipp", "-sf", str(SIPP_DIR / scenario), "-inf", str(inf), "-t", "u1",
        "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)), "-mp", str(free_port(socket.SOCK_DGRAM)),
        "-m", "1", "-timeout", "90s", "-timeout_error", "-trace_err", "-nostdin", f"127.0.0.1:{system['sip']}",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished(proc: subprocess.Popen[bytes], cwd: Path) -> None:
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("sipp did not finish within 60 s")
    errors = "".join(p.read_text(errors="replace")[-2000:] for p in cwd.glob("*errors*"))
    assert proc.returncode == 0, f"sipp rc={proc.returncode}\n{err.decode(errors='replace')[-1500:]}\n{errors}"


def test_a_carrier_call_through_bcf_and_esrp_is_answered_dispatched_and_closed(
    system: dict[str, Any], browser: Browser, tmp_path: Path
) -> None:
    url, home, other = system["url"], system["home"], system["other"]
    taker = sign_in(browser, url, f"{home.id}-ct1")
    elsewhere = sign_in(browser, url, f"{other.id}-ct1")  # another PSAP: must not see it
    # Signing in turned the home queue from Inactive to Active; its QueueState reaches the
    # ESRP within the element's publish interval (1 s). Until then the ESRP would rightly
    # route around a queue nobody staffs.
    taker.wait_for_timeout(1500)
    proc = carrier(system, "bcf_voice_uac.xml", tmp_path)
    row = taker.locator("#queue-body tr")
    expect(row).to_have_count(1, timeout=20000)
    expect(row.locator(".badge")).to_have_text("ringing")
    expect(row.locator("td.callback")).to_contain_text("6035550142")
    taker.screenshot(path=str(SHOTS / "e2e-queue-ringing.png"), full_page=True)
    assert elsewhere.locator("#queue-body tr").count() == 0

    taker.locator("body").press("a")  # answer the next call, by keyboard
    expect(row.locator(".badge")).to_have_text("connected")
    expect(taker.locator("#cf-callback")).to_contain_text("6035550142")
    expect(taker.locator("#cf-location")).to_contain_text(f"{system['lat']:.5f}, {system['lon']:.5f}")
    # The caller on the map, which draws the state's towns as vector data.
    taker.wait_for_function("FB.mapLayers && FB.mapLayers.caller.getLayers().length >= 1")
    taker.wait_for_function("FB.mapLayers.towns && FB.mapLayers.towns.getLayers().length > 10")
    at = taker.evaluate("FB.mapLayers.caller.getLayers()[0].getLatLng()")
    assert abs(at["lat"] - system["lat"]) < 1e-4 and abs(at["lng"] - system["lon"]) < 1e-4
    taker.screenshot(path=str(SHOTS / "e2e-call-panel.png"), full_page=True)

    taker.get_by_label("Type", exact=True).select_option("fire")
    taker.get_by_label("Subtype").select_option("structure fire")
    taker.get_by_label("Narrative").fill("kitchen fire, caller outside with two children")
    taker.get_by_role("button", name="Create incident").click()
    link = taker.get_by_role("link", name="Incident created: open it")
    expect(link).to_be_visible()
    href = link.get_attribute("href") or ""
    taker.locator("body").press("r")  # release: the PSAP's BYE goes back through the ESRP
    expect(taker.locator("#call-status")).to_have_text("released")
    finished(proc, tmp_path)

    dispatcher = sign_in(browser, url, f"{home.id}-dispatcher")
    expect(dispatcher.locator("#incident-board")).to_contain_text("structure fire")
    dispatcher.goto(system["base"] + href)
    expect(dispatcher.get_by_role("heading", name="Recommended units")).to_be_visible()
    expect(dispatcher.locator("main")).to_contain_text("6035550142")
    dispatcher.screenshot(path=str(SHOTS / "e2e-incident-new.png"), full_page=True)
    dispatcher.locator("#dispatch-recommended").click()
    expect(dispatcher.locator("#incident-status")).to_have_text("dispatched")
    dispatcher.get_by_label("Disposition").fill("fire out, no injuries")
    dispatcher.locator("#close-incident").click()
    expect(dispatcher.locator("#incident-status")).to_have_text("closed")
    dispatcher.screenshot(path=str(SHOTS / "e2e-incident-closed.png"), full_page=True)
    # The incident carries the BCF's i3 incident id (the call's), and its EIDO validates.
    incident_id = href.rsplit("/", 1)[-1]
    assert incident_id.startswith("urn:emergency:uid:incidentid:") and incident_id.endswith(":bcf.demo.firebox.test")
    eido = dispatcher.request.get(system["base"] + href + "/eido")
    assert eido.ok, eido.text()
    assert taker.errors == [] and elsewhere.errors == [] and dispatcher.errors == []  # type: ignore[attr-defined]
    for page in (taker, elsewhere, dispatcher):
        page.close()


def test_an_abandoned_carrier_call_is_on_the_callback_list_and_called_back(
    system: dict[str, Any], browser: Browser, tmp_path: Path
) -> None:
    taker = sign_in(browser, system["url"], f"{system['home'].id}-ct1")
    proc = carrier(system, "bcf_cancel_uac.xml", tmp_path)
    finished(proc, tmp_path)
    callbacks = taker.locator("#callbacks tbody tr", has_text="6035550143")
    expect(callbacks).to_have_count(1, timeout=15000)
    taker.screenshot(path=str(SHOTS / "e2e-abandoned.png"), full_page=True)
    callbacks.get_by_placeholder("outcome (no answer, reached…)").fill("reached the caller: child playing with the phone")
    callbacks.get_by_label("done").check()
    callbacks.get_by_role("button", name="Record").click()
    expect(callbacks.locator(".badge")).to_have_text("done")
    assert taker.errors == []  # type: ignore[attr-defined]
    taker.close()


def test_a_text_to_911_through_bcf_and_esrp_is_answered_and_replied_to(
    system: dict[str, Any], browser: Browser, tmp_path: Path
) -> None:
    taker = sign_in(browser, system["url"], f"{system['home'].id}-ct1")
    proc = carrier(system, "bcf_text_uac.xml", tmp_path)
    row = taker.locator("#queue-body tr", has_text="TEXT")
    expect(row).to_have_count(1, timeout=20000)
    row.click()
    expect(taker.locator("#transcript")).to_contain_text("There is a fire next door and I cannot talk")
    taker.get_by_role("button", name="Answer this call").click()
    expect(row.locator(".badge")).to_have_text("connected")
    taker.locator("body").press("t")
    expect(taker.locator("#text-box")).to_be_focused()
    taker.keyboard.type("Help is on the way. Leave the building if you can.")
    taker.keyboard.press("Enter")
    expect(taker.locator("#transcript li.out")).to_contain_text("Help is on the way")
    finished(proc, tmp_path)  # SIPp received the reply
    taker.screenshot(path=str(SHOTS / "e2e-text.png"), full_page=True)
    taker.keyboard.press("Escape")
    taker.locator("body").press("r")
    expect(taker.locator("#call-status")).to_have_text("released")
    assert taker.errors == []  # type: ignore[attr-defined]
    taker.close()
