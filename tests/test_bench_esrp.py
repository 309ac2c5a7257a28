"""bench/esrp.py end to end at a low rate: SIPp carrier -> BCF + ESRP process -> SIPp PSAP.

Checks that calls went through (and were routed by LoST) and that every figure line is
printed. Nothing here asserts a rate or a latency: the figures belong in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(autouse=True)
def needs_sipp() -> None:
    """The set-up installs SIPp (scripts/system-tools.sh): its absence is a failure."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed (apt-get install sip-tester); this test needs it")

FIGURE_LINES = (
    "firebox max rate with zero failures: ",
    "firebox ESRP CPU per call: ",
    "firebox hop latency (INVITE in -> out, in the element) at ",
    "p99 hop latency at 500 cps: ",
    "failover on 503: ",
    "failover on silence: ",
    "Kamailio baseline skipped: --no-kamailio",
    "target >= 1,000 cps with zero failures through one ESRP process: ",
    "target p99 hop latency < 5 ms at 500 cps: ",
    "target failover on silence < 1 s: ",
)


def test_bench_esrp_quick_low_rate(tmp_path):
    out_json = tmp_path / "esrp.json"
    cmd = [
        sys.executable, str(ROOT / "bench" / "esrp.py"), "--quick", "--rates", "20",
        "--step-seconds", "1", "--failover-calls", "2", "--no-kamailio", "--json", str(out_json),
    ]  # fmt: skip
    done = subprocess.run(
        cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout
    for prefix in FIGURE_LINES:
        assert any(line.startswith(prefix) for line in text.splitlines()), (
            prefix,
            text,
        )

    result = json.loads(out_json.read_text())
    (step,) = result["firebox"]["steps"]
    assert step["rate"] == 20 and step["calls"] == 20
    assert step["passed"], step
    assert step["sipp"]["successful"] == 20 and step["sipp"]["failed"] == 0
    assert step["element"]["calls_in"] == 20 and step["element"]["answered"] == 20
    # LoST on: each caller is inside a demo town
    assert step["routing"]["lost_routed"] == 20
    assert step["latency_ms"]["n"] == 20
    for kind in ("503", "silence"):
        failover = result["failover"][kind]
        assert failover["successful"] == 2 and failover["failovers"] == 2, failover
    assert any("no provisional" in r for r in result["failover"]["silence"]["reasons"])
    assert result["kamailio"] == {"skipped": "--no-kamailio"}
