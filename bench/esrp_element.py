"""The ESRP process of ``bench/esrp.py``: one ``EmergencyCore`` (BCF + ESRP, LoST to the
in-process ECRF over the demo state, policy routing) on 127.0.0.1 UDP, instrumented, driven
over stdin/stdout by the bench.

    .venv/bin/python bench/esrp_element.py DEPLOYMENT.yaml [--profile OUT.prof]

Instrumentation (a subclass, nothing in ``firebox.esrp.element`` is changed):

- **hop latency**: the time an INVITE's datagram is handed to the transport's protocol
  (``datagram_received``, before parsing) to the moment its first forward to a PSAP has
  been written to the socket (after ``_send_down``), ``time.perf_counter`` in this process;
  one sample per new INVITE (retransmissions and later failover forwards are not samples);
- **CPU**: ``resource.getrusage(RUSAGE_SELF)`` user + system seconds of this process;
- **failover times**: per call, the time between the first send of the first INVITE branch
  and of the next one (to the alternate), ``perf_counter`` at ``_send_down``;
- **garbage collection**: ``gc.callbacks``, pauses per generation (count, longest, total).

Control protocol, one JSON object per line: the bench writes ``{"cmd": ...}`` on stdin and
reads one JSON answer per command on stdout. Commands: ``resolve`` (``ports``: queue URI ->
UDP port; ``default_port``: any other ``psap.demo.firebox.test`` URI and the PSTN gateway),
``reset`` (drop latency samples and call records), ``report`` (CPU seconds, latency
percentiles, the element's counters, per-call failover times, how calls were routed),
``quit``. End of input also quits, so the process never outlives the bench.
"""

from __future__ import annotations

import os
import sys

# Keep this script's directory off the import path: bench/ may hold scripts named like
# standard modules (as bench/logging.py once did), which would shadow them.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import asyncio
import gc
import json
import logging
import resource
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FQDN = "esrp.demo.firebox.test"
GW = "pstn-gw.demo.firebox.test"
PSAP_HOST = "psap.demo.firebox.test"


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_system_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


def build_core(deployment: Path) -> Any:
    """The element as ``tests/test_esrp_sip.py`` builds it, with the BCF's per-source rate
    limit raised (one SIPp is one carrier sending 1,000+ calls/s: at the default 50/s
    every call would be DIVERTed, still routed, but with a callback record each)."""
    from rich.console import Console

    from firebox.bcf.core import Bcf
    from firebox.bcf.protection import RateLimit
    from firebox.deployment import load_deployment
    from firebox.esrp.element import EmergencyCore
    from firebox.esrp.policy import RuleSet, chains_from_deployment
    from firebox.esrp.router import InProcessLost, Router
    from firebox.esrp.states import StateTable
    from firebox.location.pidf import PidfLocation, Presence
    from firebox.location.shapes import Point
    from firebox.node import build_node
    from firebox.sip.address import parse_uri

    node = build_node(load_deployment(deployment), console=Console(quiet=True))

    class BenchCore(EmergencyCore):
        """``EmergencyCore`` with INVITE-in / INVITE-out timestamps."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.rx_at: float | None = None  # set by the wrapped datagram_received
            self.t_in: dict[str, float] = {}
            self.samples: list[float] = []
            self.branch_at: dict[str, float] = {}  # first send of each INVITE branch

        def _handle(self, message: Any, source: Any) -> None:
            rx = self.rx_at if self.rx_at is not None else time.perf_counter()
            self.rx_at = None
            if (
                getattr(message, "method", None) == "INVITE"
                and message.to_tag is None
                and message.call_id not in self.t_in
            ):
                self.t_in[message.call_id] = rx
            super()._handle(message, source)

        def _send_down(
            self, call: Any, request: Any, branch: str, address: Any
        ) -> None:
            super()._send_down(call, request, branch, address)
            if request.method == "INVITE":
                self.branch_at.setdefault(branch, time.perf_counter())
                t0 = self.t_in.pop(call.record.call_id, None)
                if t0 is not None:
                    self.samples.append(time.perf_counter() - t0)

    class Net:
        def __init__(self) -> None:
            self.ports: dict[str, int] = {}
            self.default_port = 9  # discard until the bench says where PSAPs are

        def resolve(self, uri: str) -> tuple[str, int, str] | None:
            port = self.ports.get(uri)
            if port is not None:
                return ("127.0.0.1", port, "udp")
            try:
                host = getattr(parse_uri(uri), "host", "")
            except ValueError:
                return None
            if host in (GW, PSAP_HOST):
                return ("127.0.0.1", self.default_port, "udp")
            return None

    net = Net()
    default = Presence(
        "sip:ingress@bcf.demo.firebox.test",
        [PidfLocation(shapes=[Point(43.2, -71.6)], method="Manual")],
    )
    router = Router(
        fqdn=FQDN,
        lost=InProcessLost(node.ecrf),
        chains=chains_from_deployment(node.deployment, GW),
        rules=RuleSet(),
        states=StateTable(),
        default_location=default,
    )
    bcf = Bcf(
        "bcf.demo.firebox.test",
        sources={"127.0.0.0/8": "carrier-a"},
        rate=RateLimit(per_second=1e6, burst=1e6),
    )
    core = BenchCore(
        bcf, router, host="127.0.0.1", port=0, transports=("udp",), resolve=net.resolve
    )
    return core, net


def routing_summary(core: Any) -> dict[str, Any]:
    lost = default = 0
    failovers: list[dict[str, Any]] = []
    outcomes: dict[str, int] = {}
    for record in core.records.values():
        outcomes[str(record.outcome)] = outcomes.get(str(record.outcome), 0) + 1
        events = record.events
        if any(e.startswith("LoST ") and "default route" not in e for e in events):
            lost += 1
        elif any("default route" in e for e in events):
            default += 1
        if record.failovers and len(record.forwards) >= 2:
            t0 = core.branch_at.get(record.forwards[0][1])
            t1 = core.branch_at.get(record.forwards[1][1])
            failovers.append(
                {
                    "reason": record.failovers[0].reason,
                    "status": record.failovers[0].status,
                    "from": record.forwards[0][0],
                    "to": record.forwards[1][0],
                    # perf_counter at each branch's first send (the loop's clock is in ms)
                    "seconds": (t1 - t0)
                    if t0 is not None and t1 is not None
                    else record.forwards[1][2] - record.forwards[0][2],
                }
            )
    return {
        "records": len(core.records),
        "lost_routed": lost,
        "default_routed": default,
        "outcomes": outcomes,
        "failovers": failovers,
    }


async def serve(
    deployment: Path, profile: str | None, gc_threshold: str | None = None
) -> None:
    from firebox.node import settle_heap

    core, net = build_core(deployment)
    await core.start()
    settle_heap()  # as `firebox serve` does
    if gc_threshold:
        gc.set_threshold(*(int(x) for x in gc_threshold.split(",")))
    udp = core.server._udp  # the transport's datagram protocol: stamp before parsing
    inner = udp.datagram_received

    def stamped(data: bytes, addr: Any) -> None:
        core.rx_at = time.perf_counter()
        inner(data, addr)

    udp.datagram_received = stamped

    # garbage collections during a step: count and the longest pause, per generation
    gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses[info["generation"]].append(time.perf_counter() - gc_started[0])

    gc.callbacks.append(on_gc)

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    out = sys.stdout

    def answer(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def command(line: str) -> None:
        try:
            msg = json.loads(line) if line.strip() else {"cmd": "quit"}
            cmd = msg.get("cmd")
            if cmd == "resolve":
                net.ports = {k: int(v) for k, v in msg.get("ports", {}).items()}
                net.default_port = int(msg.get("default_port", net.default_port))
                answer({"ok": True})
            elif cmd == "reset":
                core.samples.clear()
                core.t_in.clear()
                core.branch_at.clear()
                for pauses in gc_pauses.values():
                    pauses.clear()
                core.records.clear()
                answer(
                    {"ok": True, "cpu": cpu_seconds(), "cpu_sys": cpu_system_seconds()}
                )
            elif cmd == "report":
                lat = sorted(core.samples)
                answer(
                    {
                        "ok": True,
                        "cpu": cpu_seconds(),
                        "cpu_sys": cpu_system_seconds(),
                        "latency": {
                            "n": len(lat),
                            "p50": percentile(lat, 50),
                            "p99": percentile(lat, 99),
                            "max": lat[-1] if lat else None,
                        },
                        "stats": dict(core.stats),
                        "gc": {
                            str(g): {
                                "n": len(v),
                                "max_ms": max(v) * 1e3 if v else 0.0,
                                "total_ms": sum(v) * 1e3,
                            }
                            for g, v in gc_pauses.items()
                        },
                        "routing": routing_summary(core),
                        # what the element keeps alive (transactions wait out Timers J/L)
                        "resident": {
                            "server_transactions": len(core._servers),
                            "branches": len(core._branches),
                            "stx_timers": len(core._stx_timers),
                            "dialogs": len(core._dialogs),
                            "records": len(core.records),
                            "gc_tracked_objects": len(gc.get_objects()),
                        },
                    }
                )
            elif cmd == "quit":
                answer({"ok": True})
                done.set()
            else:
                answer({"ok": False, "error": f"unknown command {cmd!r}"})
        except Exception as exc:  # noqa: BLE001 - the bench reads the error
            answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"})

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(command, line)
        loop.call_soon_threadsafe(done.set)  # the bench went away

    threading.Thread(target=reader, daemon=True).start()
    answer({"ready": True, "port": core.port, "cpu": cpu_seconds()})
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        await done.wait()
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        await core.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("deployment", type=Path)
    ap.add_argument("--profile", help="write cProfile stats of the serving loop here")
    ap.add_argument(
        "--gc-threshold",
        help="experiment: gc.set_threshold(a,b,c) after start-up, e.g. 700,10,1000000 (default: untouched)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from firebox.sip.transport import install_uvloop

    install_uvloop()  # as `firebox serve` would run it
    asyncio.run(serve(args.deployment, args.profile, args.gc_threshold))


if __name__ == "__main__":
    main()
