"""`firebox demo` as a person runs it: the bounded run prints its summary (LoST lookups, and
SIP 911 calls from a carrier through BCF + ESRP to the PSAPs' user agents), and the page in a
real headless Chromium draws the towns, answers a click with the ECRF's LoST mapping and
shows calls answered per PSAP."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIREBOX = Path(sys.executable).parent / "firebox"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _demo(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.Popen(
        [
            str(FIREBOX), "demo", "--listen", f"127.0.0.1:{port}", "--sip-listen", "127.0.0.1:0",
            "--workdir", str(tmp_path / "demo"), *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def test_bounded_demo_run_prints_a_summary(tmp_path: Path):
    port = _free_port()
    proc = _demo(tmp_path, port, "--duration", "6", "--rate", "25")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    assert f"serving http://127.0.0.1:{port}/" in out
    m = re.search(r"caller lookups: (\d+) sent, (\d+) answered, (\d+) errors", out)
    assert m, out
    sent, answered, errors = map(int, m.groups())
    assert sent > 10 and errors == 0 and answered == sent, out
    assert "callers per PSAP" in out
    # The SIP call load: every call placed was answered by a PSAP (none failed unanswered).
    m = re.search(r"SIP calls: (\d+) sent, (\d+) answered, (\d+) failed without an answer", out)
    assert m, out
    calls, answered, unanswered = map(int, m.groups())
    assert calls >= answered > 0 and unanswered == 0, out
    assert re.search(r"BCF \+ ESRP: \d+ calls in, \d+ answered, 0 failed, failovers \d+", out), out
    assert "SIP calls per PSAP" in out
    # Every call's i3 log events (the ESRP's, and the ECRF's LoST exchanges) reached both of
    # the demo's Logging Services, each holding every event once, each chain verified.
    line = re.search(r"i3 log events: (.*)\n", out)
    assert line, out
    by = {name: int(n) for n, name in re.findall(r"(\d+) logged by the ([A-Za-z ]+?)(?:,|;|$)", line.group(1))}
    esrp, ecrf, total = by.get("ESRP", 0), by.get("ECRF", 0), sum(by.values())
    assert esrp >= 10 * answered and ecrf >= 2 * answered, out
    held = re.findall(r"Logging Service http://127\.0\.0\.1:\d+(/logging2)?: all delivered; holds (\d+), "
                      r"hash chain verified", out)  # fmt: skip
    assert [path for path, _ in held] == ["", "/logging2"], out
    assert [int(n) for _, n in held] == [total] * 2, out
    for db in ("logging.db", "logging2.db"):
        verify = subprocess.run(
            [str(FIREBOX), "logs", "verify", "--db", str(tmp_path / "demo" / "var" / db)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert verify.returncode == 0 and f"{total} log events" in verify.stdout, verify.stdout + verify.stderr
    # The same events in both, none twice (idempotent by clientAssignedIdentifier).
    import sqlite3

    ids = []
    for db in ("logging.db", "logging2.db"):
        with contextlib.closing(sqlite3.connect(tmp_path / "demo" / "var" / db)) as conn:
            ids.append([r[0] for r in conn.execute("SELECT client_id FROM log_events ORDER BY seq")])
    assert len(set(ids[0])) == len(ids[0]) == total and set(ids[0]) == set(ids[1]), out
    # Each element's events in the order it logged them, at both (the two elements' senders
    # interleave differently at each service).
    for element in ("esrp", "ecrf"):
        mine = [[i for i in each if i.endswith(f":{element}.demo.firebox.test")] for each in ids]
        assert mine[0] == mine[1] and len(mine[0]) == (esrp if element == "esrp" else ecrf), out
    # The state it ran on was written where asked, and loads as a deployment file.
    assert (tmp_path / "demo" / "deployment.yaml").exists()
    check = subprocess.run(
        [str(FIREBOX), "deployment", "check", str(tmp_path / "demo" / "deployment.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture
def running_demo(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    proc = _demo(tmp_path, port, "--rate", "5")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # bounded wait for the generated state and servers
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{base}/api/state", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("the demo did not start serving within 120 s")
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_page_draws_the_towns_and_a_click_asks_the_ecrf(running_demo: str, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    towns = httpx.get(f"{running_demo}/api/towns.geojson", timeout=10).json()["features"]
    assert 40 <= len(towns) <= 80
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(running_demo + "/")
            page.wait_for_function(f"document.querySelectorAll('#map path').length === {len(towns)}")
            page.wait_for_function("/LoST queries answered/.test(document.getElementById('summary').textContent)")
            # Calls per PSAP queue, refreshed live: some PSAP has answered calls (bounded wait).
            page.wait_for_function(
                "[...document.querySelectorAll('#calls tbody td.answered')].some((td) => Number(td.textContent) > 0)",
                timeout=60_000,
            )
            answered = sum(int(t) for t in page.locator("#calls tbody td.answered").all_inner_texts())
            assert answered > 0
            # Click the middle of the map: the page sends findService and shows the mapping.
            box = page.locator("#map").bounding_box()
            assert box is not None
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_selector("#answer dl")
            answer = dict(zip(page.locator("#answer dt").all_inner_texts(), page.locator("#answer dd").all_inner_texts()))
            page.screenshot(path=str(tmp_path / "demo.png"))
            assert errors == []
        finally:
            browser.close()
    state = httpx.get(f"{running_demo}/api/state", timeout=10).json()
    psaps = {p["name"]: p["uri"] for p in state["psaps"]}
    assert answer["dial"] == "911"
    # The sos layer's boundaries are the PSAPs' service areas: the answer names one of them.
    assert psaps.get(answer["PSAP"]) == answer["URI"], (answer, psaps)
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def _free_udp_tcp_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise AssertionError("no free port found")


def test_serve_starts_the_bcf_esrp_and_the_psap_agents_a_sipp_carrier_calls(tmp_path: Path):
    """`firebox serve` on the written demo deployment: SIPp as a carrier calls the BCF and
    each call is answered by the town's simulated PSAP, through the ESRP."""
    import shutil

    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.fail("sipp is not installed (apt-get install sip-tester); this test needs it")
    port, sip = _free_port(), _free_udp_tcp_port()
    written = subprocess.run(
        [str(FIREBOX), "demo", "--write", str(tmp_path / "w"), "--towns", "40",
         "--listen", f"127.0.0.1:{port}", "--sip-listen", f"127.0.0.1:{sip}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stdout + written.stderr
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [str(FIREBOX), "serve", str(tmp_path / "w" / "deployment.yaml"), "--duration", "12"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/state", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("firebox serve did not start within 60 s")
        # The BCF's BadActor interface is served with the rest (NENA-STA-010.3 4.1). HTTP
        # comes up before the SIP elements (they read the Policy Store over it): until the BCF
        # runs, the interface answers 503 "No BCF", so wait for it (bounded).
        deadline = time.monotonic() + 60
        while True:
            known = httpx.post(f"http://127.0.0.1:{port}/BadActors", json={"sourceId": "demo-carrier"}, timeout=5)
            if known.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        unknown = httpx.post(f"http://127.0.0.1:{port}/BadActors", json={"sourceId": "nobody"}, timeout=5)
        assert known.status_code == 201 and unknown.status_code == 433, (known.text, unknown.text)
        inf = tmp_path / "loc.csv"
        inf.write_text("SEQUENTIAL\n42.0;-71.5;\n")  # south of every town: the ESRP's default route
        carrier = subprocess.run(
            [sipp, "-sf", str(ROOT / "tests" / "sipp" / "esrp_uac.xml"), "-inf", str(inf), "-t", "u1",
             "-i", "127.0.0.1", "-p", str(_free_udp_tcp_port()), "-m", "3", "-timeout", "20s",
             "-timeout_error", "-nostdin", f"127.0.0.1:{sip}"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        )  # fmt: skip
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert carrier.returncode == 0, carrier.stdout[-2000:] + carrier.stderr[-2000:] + out
    assert f"BCF + ESRP listening on sip:127.0.0.1:{sip}" in out, out
    # SIPp's 3 calls, and the monitor's test calls (urn:service:test.sos) beside them: all answered.
    m = re.search(r"BCF \+ ESRP: (\d+) calls in, (\d+) answered, 0 failed", out)
    assert m and int(m.group(1)) >= 3 and m.group(1) == m.group(2), out
    assert "SIP calls per PSAP" in out


def test_the_demo_console_shows_its_psap_live_and_a_box_alarm_becomes_an_incident(running_demo: str, tmp_path: Path):
    """What the README tells a new user: open /console/, sign in as a PSAP's supervisor
    (password ``firebox``); the generated load is offered to that PSAP's queue and the
    figures move; a fire alarm box pulled (its HTTP input) is on the dispatcher's board."""
    import json

    from playwright.sync_api import expect, sync_playwright

    shots = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    console = running_demo + "/console"
    boxes = json.loads(next((tmp_path / "demo").rglob("boxes.geojson")).read_text())["features"]
    box = boxes[0]["properties"]["BOX"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(console + "/signin")
            page.get_by_label("User name").fill("psap-01-supervisor")
            page.get_by_label("Password").fill("firebox")
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(console + "/")
            expect(page.locator("#live")).to_have_text("live")
            page.get_by_role("link", name="Statistics").click()
            # The load reaches this PSAP (bounded wait: the page is refreshed live).
            for _ in range(60):
                if int(page.locator("#st-offered").inner_text() or 0) > 0:
                    break
                page.wait_for_timeout(1000)
                page.reload()
            assert int(page.locator("#st-offered").inner_text()) > 0
            page.screenshot(path=str(shots / "demo-supervisor.png"), full_page=True)
            # A street box pulled: an incident on the board, at the box, without any call.
            made = httpx.post(f"{running_demo}/boxes/{box}/alarm", timeout=10)
            assert made.status_code == 201, made.text
            page.get_by_role("link", name="Incidents").click()
            expect(page.locator("#incident-board")).to_contain_text(f"box {box}")
            page.screenshot(path=str(shots / "demo-box-incident.png"), full_page=True)
            # The monitor watches the same calls (every call's i3 log events) and serves its
            # figures, outages and Prometheus metrics on the page's address.
            figures = httpx.get(f"{running_demo}/monitor/figures", timeout=10).json()
            assert figures["scopes"]["statewide"]["all"]["entered"] > 0, figures
            assert httpx.get(f"{running_demo}/monitor/outages", timeout=10).status_code == 200
            metrics = httpx.get(f"{running_demo}/metrics", timeout=10).text
            assert 'firebox_monitor_calls_total{key="all",metric="entered",scope="statewide"}' in metrics
            # The call-taker at the PSAP's free desk: the queue, and the map drawing the
            # state's towns as vector data (no tiles, no internet).
            taker = browser.new_page(viewport={"width": 1400, "height": 1000})
            taker.on("pageerror", lambda e: errors.append(str(e)))
            taker.goto(console + "/signin")
            taker.get_by_label("User name").fill("psap-01-ct1")
            taker.get_by_label("Password").fill("firebox")
            taker.get_by_role("button", name="Sign in").click()
            expect(taker.locator("#live")).to_have_text("live")
            taker.wait_for_function("FB.mapLayers && FB.mapLayers.towns && FB.mapLayers.towns.getLayers().length > 10")
            taker.screenshot(path=str(shots / "demo-call-taker.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
