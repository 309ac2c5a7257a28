"""`firebox demo` as a person runs it: the bounded run prints its summary (LoST lookups, and
SIP 911 calls from a carrier through BCF + ESRP to the PSAPs' user agents), and the page in a
real headless Chromium draws the towns, answers a click with the ECRF's LoST mapping and
shows calls answered per PSAP."""

from __future__ import annotations

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
    # Every call's i3 log events reached the demo's Logging Service, whose chain verifies.
    m = re.search(r"i3 log events: (\d+) logged by the ESRP, all delivered; the Logging Service holds (\d+), "
                  r"hash chain verified", out)  # fmt: skip
    assert m, out
    logged, stored = map(int, m.groups())
    assert logged >= 10 * answered and stored == logged, out
    verify = subprocess.run(
        [str(FIREBOX), "logs", "verify", "--db", str(tmp_path / "demo" / "var" / "logging.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0 and f"{stored} log events" in verify.stdout, verify.stdout + verify.stderr
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
        # The BCF's BadActor interface is served with the rest (NENA-STA-010.3 4.1).
        known = httpx.post(f"http://127.0.0.1:{port}/BadActors", json={"sourceId": "demo-carrier"}, timeout=5)
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
    assert "BCF + ESRP: 3 calls in, 3 answered, 0 failed" in out, out
    assert "SIP calls per PSAP" in out
