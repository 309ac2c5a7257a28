"""The console's call queue under load, in headless Chromium: how long from a call event
leaving the server to its row updated on the page, and the page's long tasks, with 200 calls
ringing, against a baseline measured in the same run (the same page, the same event rate,
one call in the queue).

The events go through the console's real path: its live hub -> Server-Sent Events ->
EventSource -> batched per animation frame -> the row diffed in place. They are CallView
snapshots (``firebox.psap.api``) published at the hub, as ``firebox.console.live`` publishes
the call handling element's events: the element's own cost is not what this measures.

    .venv/bin/python bench/console.py [--calls 200] [--events 600] [--rate 100]

Latency is the page's ``Date.now()`` after the row is updated minus the server's
``time.time()`` when it published the event (same machine, same clock). Long tasks are the
browser's PerformanceObserver ``longtask`` entries (tasks over 50 ms) during the updates.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from firebox.console.app import console_app
from firebox.console.audit import ConsoleAudit
from firebox.console.auth import hash_password, load_users
from firebox.console.testing import serve_built, small_cad
from firebox.psap.api import CallStatus, CallView, LocationView, Medium, to_json

PSAP = "bench"
PW = "bench-pw"
METRICS = """
window.__fbMetrics = { applied: [] };
window.__fbLong = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__fbLong.push(e.duration); })
  .observe({ type: "longtask", buffered: true });
"""


def call_view(i: int, status: CallStatus, offered_to: tuple[str, ...], t0: datetime) -> dict[str, Any]:
    view = CallView(
        call_id=f"urn:emergency:uid:callid:bench{i:05d}:bcf.bench.example", sip_call_id=f"bench-{i}@carrier",
        incident_id=None, psap_id=PSAP, medium=Medium.VOICE, status=status, callback=f"+1603555{i:04d}",
        caller_uri=f"sip:+1603555{i:04d}@carrier.example",
        location=LocationView("circle", 42.36 + i * 1e-4, -71.06 - i * 1e-4, 30.0, {"HNO": str(i), "RD": "Main St", "A3": "Harbor"}, "value", "GPS"),
        additional_data=(), offered_at=t0 + timedelta(milliseconds=i), position=None, offered_to=offered_to,
    )  # fmt: skip
    return to_json(view)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_phase(page: Page, hub: Any, loop: asyncio.AbstractEventLoop, n_calls: int, n_events: int, rate: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    t0 = datetime.now(UTC) - timedelta(seconds=30)

    def publish(doc: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(lambda: hub.publish("call", PSAP, {"call": doc, "sent_ms": time.time() * 1000}))

    for i in range(n_calls):
        publish(call_view(i, CallStatus.RINGING, ("p1", "p2"), t0))
    page.wait_for_function(f"document.querySelectorAll('#queue-body tr').length === {n_calls}", timeout=30000)
    page.evaluate("window.__fbMetrics.applied = []; window.__fbLong = [];")
    positions = ("p1", "p2", "p3", "p4")
    statuses = [CallStatus.RINGING] * n_calls
    interval = 1.0 / rate
    start = time.perf_counter()
    for n in range(n_events):
        i = rng.randrange(n_calls)
        if rng.random() < 0.2:  # a status change moves the row between groups
            statuses[i] = CallStatus.HELD if statuses[i] is CallStatus.RINGING else CallStatus.RINGING
        offered = tuple(rng.sample(positions, rng.randint(1, 3)))
        publish(call_view(i, statuses[i], offered, t0))
        delay = start + (n + 1) * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    # Every event is applied (or coalesced into a later one for the same call in one frame).
    last_seq = hub.seq
    page.wait_for_function(f"window.__fbMetrics.applied.some(m => m.seq >= {last_seq})", timeout=30000)
    applied = page.evaluate("window.__fbMetrics.applied")
    longs = page.evaluate("window.__fbLong")
    latencies = [m["nowMs"] - m["sentMs"] for m in applied if m.get("sentMs")]
    return {
        "calls": n_calls, "events": n_events, "applied": len(latencies),
        "median_ms": statistics.median(latencies), "p95_ms": percentile(latencies, 0.95), "max_ms": max(latencies),
        "long_tasks": len(longs), "long_ms": sum(longs),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--rate", type=float, default=100.0, help="call events per second")
    args = parser.parse_args()

    users = load_users([{"name": "ct", "role": "call-taker", "psap": PSAP, "position": "p1", "password_hash": hash_password(PW, n=2**10)}])
    tmp = Path(tempfile.mkdtemp(prefix="firebox-bench-console-"))

    async def build() -> Any:
        app = console_app(cad=small_cad(), users=users, audit=ConsoleAudit(tmp / "audit.db"), cad_poll_s=None)

        async def close() -> None:
            await app.state.console.aclose()

        return app, {"hub": app.state.console.hub, "loop": asyncio.get_running_loop()}, close

    results = []
    with serve_built(build) as (url, extra), sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for label, n_calls in (("baseline: 1 call in the queue", 1), (f"{args.calls} calls ringing", args.calls)):
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.add_init_script(METRICS)
            page.goto(url + "/signin")
            page.get_by_label("User name").fill("ct")
            page.get_by_label("Password").fill(PW)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("#live.ok")
            r = run_phase(page, extra["hub"], extra["loop"], n_calls, args.events, args.rate, seed=911)
            r["label"] = label
            results.append(r)
            page.close()
        browser.close()

    print(f"console queue: {args.events} call events at {args.rate:g}/s; event published -> row updated (ms)")
    print(f"{'':32} {'applied':>8} {'median':>8} {'p95':>8} {'max':>8} {'long tasks':>11} {'long ms':>8}")
    for r in results:
        print(f"{r['label']:32} {r['applied']:>8} {r['median_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['max_ms']:>8.1f} {r['long_tasks']:>11} {r['long_ms']:>8.0f}")
    base, full = results
    print(f"ratio {args.calls} calls / baseline: median {full['median_ms'] / base['median_ms']:.2f}x, p95 {full['p95_ms'] / base['p95_ms']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
