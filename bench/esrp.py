"""ESRP over SIP: SIPp carrier -> BCF + ESRP (one process) -> SIPp PSAP, on 127.0.0.1 UDP.

    .venv/bin/python bench/esrp.py [--quick] [--rates 250,500,...] [--step-seconds S]
                                   [--no-kamailio] [--profile RATE] [--json OUT]

The element is ``firebox.esrp.element.EmergencyCore`` built from the generated demo state
(as ``tests/test_esrp_sip.py`` builds it: BCF, ``Router`` with LoST to the in-process ECRF,
the deployment's failover chains, policy on), running alone in its own process
(``bench/esrp_element.py``, pinned to CPU 0; the SIPp processes run on CPU 1). Every call is
an NG911 INVITE urn:service:sos with multipart/mixed SDP + PIDF-LO by value and
``Geolocation: <cid:...>`` from a caller drawn inside the demo towns
(``bench/sipp/esrp_uac.xml``), routed by LoST and the policy to the town's PSAP queue (a
``Route`` naming it), answered 200 by a SIPp PSAP (``bench/sipp/esrp_psap_uas.xml``, which
fails the call unless it sees that Route, Call-Info purpose=emergency-CallId,
Resource-Priority esnet.1 and a Record-Route), then ACK and BYE through the element.

It prints:

1. a rate ramp: each step offers R calls/s for ``--step-seconds`` (``-m R*S`` calls, a
   bounded time); a step passes when SIPp reports no failed call, no unexpected or
   out-of-call message, every call succeeded at both ends, and SIPp managed to offer the
   rate (the step took at most 1.5x its planned time). The ramp stops at the first failed
   step. Per step: calls, achieved rate, CPU microseconds per call of the ESRP process
   (``getrusage`` in that process, before and after the step), and the hop latency inside
   the element (INVITE datagram in -> first INVITE forward written, p50/p99/max);
2. the highest passed rate, the CPU per call there, the p99 hop latency at 500 calls/s;
3. failover: a PSAP answering 503 (``bench/sipp/esrp_psap_503.xml``) and a PSAP that never
   answers (a UDP socket nobody reads; the element's no-provisional timeout, 0.5 s by
   default): time from the first forward to the forward to the alternate, per call,
   measured in the element;
4. the baseline, when Kamailio is installed: ``bench/kamailio_esrp.cfg`` (plain stateful
   ``t_relay`` with Record-Route, one UDP worker, pinned to CPU 0, the same three headers
   added as constants so the same PSAP scenario accepts its calls) under the same ramp and
   the same SIPp scenarios, and the ratios firebox / Kamailio for the highest passed rate
   and for CPU per call (at the highest rate both passed; Kamailio's CPU is the sum over
   all its processes);
5. the issue's targets with met / not met: >= 1,000 calls/s with zero failures through one
   ESRP process, p99 hop latency < 5 ms at 500 calls/s, failover on silence < 1 s.

Each step line also shows the element's garbage collections (gen-2 count and longest
pause, from ``gc.callbacks``), its kernel share of CPU, what it keeps resident (server
transactions, GC-tracked objects) and the SIPp processes' CPU (is the load generator the
limit?). ``--profile RATE`` also runs the element under cProfile at a fixed rate and prints
its hot spots (cumulative and own time). ``--element-gc-threshold A,B,C`` is an experiment
(``gc.set_threshold`` in the element process), not the default figures. The BCF's per-source rate limit is raised for the bench
(one SIPp is one carrier). Every SIPp run has a call limit and a global timeout; every
child process runs in its own process group and is stopped on exit, error or signal.
"""

from __future__ import annotations

import os
import sys

# Keep this script's directory off the import path: bench/ may hold scripts named like
# standard modules (as bench/logging.py once did), which would shadow them.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import contextlib
import json
import queue
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIPP_DIR = ROOT / "bench" / "sipp"
ELEMENT = ROOT / "bench" / "esrp_element.py"
KAMAILIO_CFG = ROOT / "bench" / "kamailio_esrp.cfg"
GW = "pstn-gw.demo.firebox.test"

TARGET_RATE = 1000.0  # calls/s with zero failures, one ESRP process
TARGET_P99_MS = 5.0  # hop latency at 500 calls/s
TARGET_SILENCE_S = 1.0  # failover on a PSAP that never answers

FULL_RATES = [250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2500, 3000]
QUICK_RATES = [250, 500]


# -- child processes ------------------------------------------------------------------------


class Children:
    """Every child runs in its own session (process group); ``stop_all`` ends each group by
    its id: TERM, then KILL after a grace period."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, cmd: list[str], **kw: Any) -> subprocess.Popen[Any]:
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        else:  # the leader is gone; anything it left in its group goes too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)
        self.procs.clear()


def _on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pin(cpu: int) -> list[str]:
    """The element (or Kamailio) on CPU 0, SIPp on CPU 1, when there are two CPUs."""
    return (
        ["taskset", "-c", str(cpu)]
        if (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
        else []
    )


def free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def wait_udp_taken(
    port: int, proc: subprocess.Popen[Any], timeout: float = 10.0
) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(
                f"process exited ({proc.returncode}) before listening on {port}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on udp {port} after {timeout} s")


# -- the element process --------------------------------------------------------------------


class Element:
    """``bench/esrp_element.py`` in its own process, driven over a JSON-lines pipe."""

    def __init__(
        self,
        children: Children,
        deployment: Path,
        profile: Path | None = None,
        gc_threshold: str | None = None,
    ) -> None:
        cmd = [*pin(0), sys.executable, str(ELEMENT), str(deployment)]
        if profile is not None:
            cmd += ["--profile", str(profile)]
        if gc_threshold:
            cmd += ["--gc-threshold", gc_threshold]
        self.children = children
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = children.start(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._next(120.0)
        self.port = int(ready["port"])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(
                f"the element did not answer within {timeout} s"
            ) from None
        if line is None:
            self.log.seek(0)
            raise RuntimeError(
                f"the element exited: {self.log.read()[-3000:].decode(errors='replace')}"
            )
        return json.loads(line)

    def cmd(self, cmd: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        answer = self._next(30.0)
        if not answer.get("ok"):
            raise RuntimeError(f"element command {cmd}: {answer}")
        return answer

    def stderr_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:].decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.cmd("quit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        self.children.stop(self.proc)
        self.log.close()


class Kamailio:
    """The baseline proxy: ``bench/kamailio_esrp.cfg`` with its ports filled in."""

    def __init__(self, children: Children, workdir: Path, uas_port: int) -> None:
        binary = kamailio_binary()
        assert binary is not None
        self.port = free_port()
        cfg = workdir / "kamailio.cfg"
        cfg.write_text(
            KAMAILIO_CFG.read_text()
            .replace("@PORT@", str(self.port))
            .replace("@UAS_PORT@", str(uas_port))
        )
        self.log = (workdir / "kamailio.log").open("wb")
        self.proc = children.start(
            [*pin(0), binary, "-f", str(cfg), "-DD", "-E", "-m", "256", "-M", "16",
             "-P", str(workdir / "kamailio.pid"), "-Y", str(workdir), "-w", str(workdir)],
            stdout=self.log, stderr=self.log,
        )  # fmt: skip
        wait_udp_taken(self.port, self.proc)
        time.sleep(0.5)  # its workers fork after the socket is bound

    def cpu(self) -> float:
        """User + system seconds of every process in Kamailio's process group."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == self.proc.pid:  # pgrp
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick


def kamailio_binary() -> str | None:
    return shutil.which("kamailio") or next(
        (
            p
            for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio")
            if os.access(p, os.X_OK)
        ),
        None,
    )


# -- SIPp -------------------------------------------------------------------------------------


def sipp_binary() -> str | None:
    return shutil.which("sipp")


def sipp_cmd(
    scenario: str, port: int, workdir: Path, name: str, *, calls: int, timeout_s: float,
    remote: str | None = None, rate: float | None = None, inf: Path | None = None,
) -> list[str]:  # fmt: skip
    sipp = sipp_binary()
    assert sipp is not None
    cmd = [*pin(1), sipp, "-sf", str(SIPP_DIR / scenario)]
    if inf is not None:
        cmd += ["-inf", str(inf)]
    if remote is not None:
        cmd.append(remote)
    cmd += [
        "-i", "127.0.0.1", "-p", str(port), "-t", "u1",
        "-mp", str(free_port()), "-cp", str(free_port()),
        "-m", str(calls), "-recv_timeout", "5000",
        "-timeout", f"{max(1, round(timeout_s))}s", "-timeout_error", "-nostdin",
        "-trace_err", "-error_file", str(workdir / f"{name}_errors.log"),
        "-trace_stat", "-stf", str(workdir / f"{name}_stat.csv"), "-fd", "1",
        "-watchdog_major_maxtriggers", "1000000", "-watchdog_minor_maxtriggers", "1000000",
    ]  # fmt: skip
    if rate is not None:
        cmd += ["-r", f"{rate:g}", "-rp", "1000", "-l", str(max(200, int(rate)))]
    return cmd


def sipp_stats(workdir: Path, name: str) -> dict[str, str]:
    path = workdir / f"{name}_stat.csv"
    try:
        lines = [
            ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()
        ]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


def _int(stats: dict[str, str], key: str) -> int:
    try:
        return int(stats.get(key, "0") or 0)
    except ValueError:
        return 0


def errors_tail(workdir: Path, name: str, keep: int = 4) -> str:
    """The last few error lines SIPp wrote (the dated ones, without the messages they quote)."""
    path = workdir / f"{name}_errors.log"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    dated = [
        ln.strip()[:300] for ln in text.splitlines() if re.match(r"\d{4}-\d\d-\d\d", ln)
    ]
    return "".join(f"{name}: {ln}\n" for ln in dated[-keep:])


def children_cpu() -> float:
    """User + system seconds of this process's reaped children (the SIPp runs)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def write_callers(path: Path, points: list[tuple[float, float]]) -> Path:
    path.write_text(
        "SEQUENTIAL\n" + "".join(f"{lat:.6f};{lon:.6f};\n" for lat, lon in points)
    )
    return path


class Run:
    """One SIPp scenario pair (carrier, PSAP) against a proxy at ``target_port``."""

    def __init__(self, children: Children, workdir: Path) -> None:
        self.children = children
        self.workdir = workdir
        self.n = 0

    def calls(
        self, target_port: int, uas: list[tuple[str, int, int]], *, rate: float, calls: int,
        callers: Path, planned_s: float,
    ) -> dict[str, Any]:  # fmt: skip
        """``uas``: (scenario, port, expected calls) of each PSAP SIPp. Returns the SIPp
        figures of the carrier and the PSAPs."""
        self.n += 1
        tag = f"run{self.n}"
        timeout = planned_s * 1.5 + 15
        servers = []
        try:
            for i, (scenario, port, expected) in enumerate(uas):
                name = f"{tag}_uas{i}"
                proc = self.children.start(
                    sipp_cmd(
                        scenario,
                        port,
                        self.workdir,
                        name,
                        calls=expected,
                        timeout_s=timeout + 10,
                    ),
                    cwd=self.workdir,
                )
                servers.append((name, proc, expected))
            for (_, port, _), (_, proc, _) in zip(uas, servers, strict=True):
                wait_udp_taken(port, proc)
            t0 = time.monotonic()
            sipp_cpu0 = children_cpu()
            uac = self.children.start(
                sipp_cmd("esrp_uac.xml", free_port(), self.workdir, f"{tag}_uac", calls=calls, timeout_s=timeout,
                         remote=f"127.0.0.1:{target_port}", rate=rate, inf=callers),
                cwd=self.workdir,
            )  # fmt: skip
            try:
                rc = uac.wait(timeout=timeout + 20)
            except subprocess.TimeoutExpired:
                rc = None
            wall = time.monotonic() - t0
            self.children.stop(uac)
            uas_rc = []
            for name, proc, _ in servers:
                try:
                    uas_rc.append(proc.wait(timeout=8))
                except subprocess.TimeoutExpired:
                    uas_rc.append(None)
        finally:
            for _, proc, _ in servers:
                self.children.stop(proc)
        sipp_cpu = children_cpu() - sipp_cpu0  # the SIPp processes were reaped above
        stats = sipp_stats(self.workdir, f"{tag}_uac")
        uas_stats = [sipp_stats(self.workdir, name) for name, _, _ in servers]
        return {
            "rc": rc,
            "wall_s": wall,
            "sipp_cpu_s": sipp_cpu,
            "created": _int(stats, "TotalCallCreated"),
            "successful": _int(stats, "SuccessfulCall(C)"),
            "failed": _int(stats, "FailedCall(C)"),
            "out_of_call": _int(stats, "OutOfCallMsgs(C)"),
            "unexpected": _int(stats, "FailedUnexpectedMessage(C)"),
            "retransmissions": _int(stats, "Retransmissions(C)"),
            "uas_rc": uas_rc,
            "uas_successful": sum(_int(s, "SuccessfulCall(C)") for s in uas_stats),
            "uas_failed": sum(_int(s, "FailedCall(C)") for s in uas_stats),
            "uas_out_of_call": sum(_int(s, "OutOfCallMsgs(C)") for s in uas_stats),
            "errors": errors_tail(self.workdir, f"{tag}_uac")
            + "".join(errors_tail(self.workdir, name) for name, _, _ in servers),
        }


def judge(
    sipp: dict[str, Any], calls: int, planned_s: float, uas_expected: int
) -> str | None:
    """Why the step failed, or None."""
    why = []
    if sipp["rc"] != 0:
        why.append(f"carrier SIPp exit {sipp['rc']}")
    for key in ("failed", "unexpected", "out_of_call", "uas_failed", "uas_out_of_call"):
        if sipp[key]:
            why.append(f"{key}={sipp[key]}")
    if sipp["successful"] != calls:
        why.append(f"{sipp['successful']}/{calls} calls succeeded")
    if sipp["uas_successful"] != uas_expected:
        why.append(f"PSAP saw {sipp['uas_successful']}/{uas_expected} calls succeed")
    if sipp["wall_s"] > planned_s * 1.5 + 1.0:
        why.append(
            f"SIPp could not offer the rate ({sipp['wall_s']:.1f} s for a {planned_s:.1f} s step)"
        )
    return "; ".join(why) or None


# -- phases -----------------------------------------------------------------------------------


def ramp(
    run: Run, proxy_port: int, uas_port: int, rates: list[int], step_s: float, callers: Path,
    cpu: Any, element: Element | None, out: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    """Step the offered rate up until a step fails. ``cpu()`` reads the proxy's CPU seconds."""
    steps: list[dict[str, Any]] = []
    for rate in rates:
        calls = max(1, int(rate * step_s))
        planned = calls / rate
        before = element.cmd("reset") if element else None
        stats0 = element.cmd("report")["stats"] if element else {}
        c0 = before["cpu"] if before else cpu()
        sipp = run.calls(proxy_port, [("esrp_psap_uas.xml", uas_port, calls)], rate=rate, calls=calls,
                         callers=callers, planned_s=planned)  # fmt: skip
        report = element.cmd("report") if element else None
        c1 = report["cpu"] if report else cpu()
        step: dict[str, Any] = {
            "rate": rate,
            "calls": calls,
            "achieved_rate": sipp["created"] / max(sipp["wall_s"] - 0.25, 1e-3),
            "cpu_us_per_call": (c1 - c0) * 1e6 / max(1, sipp["successful"] or calls),
            "cpu_sys_share": (report["cpu_sys"] - before["cpu_sys"])
            / max(c1 - c0, 1e-9)
            if report is not None and before is not None
            else None,
            "sipp": {k: v for k, v in sipp.items() if k != "errors"},
        }
        if report is not None:
            lat = report["latency"]
            step["latency_ms"] = {
                k: (v * 1e3 if isinstance(v, float) else v) for k, v in lat.items()
            }
            stats = report["stats"]
            step["element"] = {k: stats.get(k, 0) - stats0.get(k, 0) for k in stats}
            routing = report["routing"]
            step["routing"] = {
                k: routing[k]
                for k in ("records", "lost_routed", "default_routed", "outcomes")
            }
            step["gc"] = report["gc"]
            step["resident"] = report["resident"]
        step["failed_because"] = judge(sipp, calls, planned, calls)
        step["passed"] = step["failed_because"] is None
        steps.append(step)
        print(step_line(step), file=out, flush=True)
        if not step["passed"]:
            if sipp["errors"].strip():
                print(
                    "    SIPp errors (last lines): "
                    + sipp["errors"].strip().replace("\n", "\n    "),
                    file=out,
                )
            break
    return steps


def step_line(step: dict[str, Any]) -> str:
    s = step["sipp"]
    line = (
        f"  {step['rate']:>5} cps: {s['successful']:>6}/{step['calls']:<6} ok, failed {s['failed']}, "
        f"unexpected {s['unexpected'] + s['out_of_call']}, retrans {s['retransmissions']}, "
        f"achieved {step['achieved_rate']:,.0f} cps, CPU {step['cpu_us_per_call']:,.0f} µs/call"
        + (
            f" ({100 * step['cpu_sys_share']:.0f}% kernel)"
            if step.get("cpu_sys_share") is not None
            else ""
        )
        + f", SIPp {100 * s['sipp_cpu_s'] / max(s['wall_s'], 1e-3):.0f}% of a CPU"
    )
    if "latency_ms" in step and step["latency_ms"]["n"]:
        lat = step["latency_ms"]
        line += f", hop p50 {lat['p50']:.2f} / p99 {lat['p99']:.2f} / max {lat['max']:.2f} ms"
    if "routing" in step:
        r = step["routing"]
        line += f", LoST-routed {r['lost_routed']}/{r['records']} kept records"
    if "gc" in step:
        g = step["gc"]
        line += f", gc2 {g['2']['n']}x max {g['2']['max_ms']:.0f} ms, gc0+1 max {max(g['0']['max_ms'], g['1']['max_ms']):.1f} ms"
    if "resident" in step:
        line += f", {step['resident']['server_transactions']:,} server tx / {step['resident']['gc_tracked_objects']:,} objects resident"
    return line + ("  PASS" if step["passed"] else f"  FAIL ({step['failed_because']})")


def failover(
    run: Run, element: Element, kind: str, primary: str, alternate: str, callers: Path,
    calls: int, out: Any,
) -> dict[str, Any]:  # fmt: skip
    """Calls from a town whose PSAP answers 503 (``kind="503"``) or never answers
    (``"silence"``); the alternate is a SIPp PSAP. Times from the element's call records."""
    alt_port, bad_port = free_port(), free_port()
    silent: socket.socket | None = None
    uas = [("esrp_psap_uas.xml", alt_port, calls)]
    if kind == "503":
        uas.append(("esrp_psap_503.xml", bad_port, calls))
    else:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never read
        silent.bind(("127.0.0.1", bad_port))
    try:
        element.cmd(
            "resolve",
            ports={primary: bad_port, alternate: alt_port},
            default_port=alt_port,
        )
        element.cmd("reset")
        rate = 10.0
        sipp = run.calls(
            element.port,
            uas,
            rate=rate,
            calls=calls,
            callers=callers,
            planned_s=calls / rate,
        )
        report = element.cmd("report")
    finally:
        if silent is not None:
            silent.close()
    times = sorted(
        f["seconds"]
        for f in report["routing"]["failovers"]
        if f["from"] == primary and f["to"] == alternate
    )
    # the 503 PSAP's calls count as successful at that PSAP too
    why = judge(sipp, calls, calls / rate, calls * len(uas))
    result = {
        "kind": kind,
        "calls": calls,
        "successful": sipp["successful"],
        "failovers": len(times),
        "p50_s": times[len(times) // 2] if times else None,
        "max_s": times[-1] if times else None,
        "min_s": times[0] if times else None,
        "failed_because": why,
        "reasons": sorted({f["reason"] for f in report["routing"]["failovers"]}),
    }
    return result


# -- profile ----------------------------------------------------------------------------------


def profile(
    children: Children, workdir: Path, deployment: Path, psap_uris: list[str], callers: Path,
    rate: int, seconds: float, out: Any, keep: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    import pstats

    prof = workdir / "element.prof"
    element = Element(children, deployment, profile=prof)
    uas_port = free_port()
    try:
        element.cmd(
            "resolve", ports={u: uas_port for u in psap_uris}, default_port=uas_port
        )
        run = Run(children, workdir)
        calls = int(rate * seconds)
        sipp = run.calls(element.port, [("esrp_psap_uas.xml", uas_port, calls)], rate=rate, calls=calls,
                         callers=callers, planned_s=calls / rate)  # fmt: skip
    finally:
        element.close()
    if keep is not None:
        shutil.copyfile(prof, keep)
    stats = pstats.Stats(str(prof))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for func, (cc, nc, tt, ct, callers_) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((ct, tt, nc, f"{Path(func[0]).name}:{func[1]}({func[2]})"))
    print(f"\nProfile of the element under cProfile at {rate} cps for {seconds:g} s "
          f"({sipp['successful']}/{calls} calls ok; {total:.2f} s profiled):", file=out)  # fmt: skip
    print("  by cumulative time:", file=out)
    top_cum = sorted(rows, reverse=True)[:30]
    for ct, tt, nc, name in top_cum:
        print(
            f"    {100 * ct / total:5.1f}% cum  {100 * tt / total:5.1f}% own  {nc:>8} calls  {name}",
            file=out,
        )
    print("  by own time:", file=out)
    top_own = sorted(rows, key=lambda r: r[1], reverse=True)[:20]
    for ct, tt, nc, name in top_own:
        print(
            f"    {100 * tt / total:5.1f}% own  {100 * ct / total:5.1f}% cum  {nc:>8} calls  {name}",
            file=out,
        )
    return {
        "rate": rate,
        "seconds": seconds,
        "total_s": total,
        "cumulative": [(name, ct / total, tt / total) for ct, tt, _, name in top_cum],
        "own": [(name, tt / total, ct / total) for ct, tt, _, name in top_own],
    }


# -- the whole bench ----------------------------------------------------------------------------


def best(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    passed = [s for s in steps if s["passed"]]
    return passed[-1] if passed else None


def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} ms"


def run_bench(opts: argparse.Namespace, out: Any = sys.stdout) -> dict[str, Any]:
    from rich.console import Console

    from firebox.demo.state import sample_callers
    from firebox.node import write_demo

    if sipp_binary() is None:
        raise SystemExit("sipp is not installed (apt-get install -y sip-tester)")
    rates = opts.rates or (QUICK_RATES if opts.quick else FULL_RATES)
    step_s = opts.step_seconds or (2.0 if opts.quick else 10.0)
    fo_calls = opts.failover_calls or (5 if opts.quick else 20)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "rates": rates,
        "step_seconds": step_s,
        "cpus": os.cpu_count(),
    }
    children = Children()
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with tempfile.TemporaryDirectory(prefix="firebox-bench-esrp-") as tmp:
            work = Path(tmp)
            deployment, state = write_demo(
                work / "demo",
                seed=911,
                n_towns=60,
                listen="127.0.0.1:7070",
                console=Console(quiet=True),
            )
            people = sample_callers(state, 5000, seed=3)
            callers = write_callers(
                work / "callers.csv", [(lat, lon) for lon, lat, _ in people]
            )
            psap_uris = [p.uri for p in state.psaps]
            # failover: callers of one town, its PSAP and that PSAP's first alternate
            town = state.towns[0]
            home = state.psap(town.psap_id)
            alternate = state.psap(home.alternates[0]).uri
            in_town = [(lat, lon) for lon, lat, tid in people if tid == town.id][:50]
            if not in_town:
                p = town.geometry.point_on_surface()
                in_town = [(p.y, p.x)]
            town_callers = write_callers(work / "town.csv", in_town)
            print(
                f"ESRP over SIP: {len(state.towns)} demo towns, {len(state.psaps)} PSAPs, {len(people)} callers; "
                f"steps of {step_s:g} s at {', '.join(map(str, rates))} cps; {os.cpu_count()} CPUs "
                f"(element/Kamailio on CPU 0, SIPp on CPU 1)",
                file=out,
                flush=True,
            )
            run = Run(children, work)

            # -- firebox -------------------------------------------------------------------
            element = Element(
                children, deployment, gc_threshold=opts.element_gc_threshold
            )
            try:
                uas_port = free_port()
                element.cmd(
                    "resolve",
                    ports={u: uas_port for u in psap_uris},
                    default_port=uas_port,
                )
                warm = min(200, max(20, int(rates[0] * 0.5)))
                run.calls(element.port, [("esrp_psap_uas.xml", uas_port, warm)], rate=min(100, rates[0]),
                          calls=warm, callers=callers, planned_s=warm / min(100, rates[0]))  # fmt: skip
                # failover first, on a quiet element (after the ramp it would carry the
                # state the last, overloaded step left for its transactions' 32 s timers)
                fo = {}
                for kind in ("503", "silence"):
                    fo[kind] = failover(
                        run,
                        element,
                        kind,
                        home.uri,
                        alternate,
                        town_callers,
                        fo_calls,
                        out,
                    )
                result["failover"] = fo
                element.cmd(
                    "resolve",
                    ports={u: uas_port for u in psap_uris},
                    default_port=uas_port,
                )
                print("firebox BCF + ESRP (one process), ramp:", file=out, flush=True)
                steps = ramp(
                    run,
                    element.port,
                    uas_port,
                    rates,
                    step_s,
                    callers,
                    None,
                    element,
                    out,
                )
                result["firebox"] = {"steps": steps}
            except BaseException:
                print(
                    "element stderr (tail):\n" + element.stderr_tail(), file=sys.stderr
                )
                raise
            finally:
                element.close()

            # -- Kamailio --------------------------------------------------------------------
            kam: dict[str, Any] = {}
            if opts.no_kamailio:
                kam["skipped"] = "--no-kamailio"
            elif kamailio_binary() is None:
                kam["skipped"] = (
                    "kamailio is not installed (apt-get install -y kamailio)"
                )
            else:
                uas_port = free_port()
                try:
                    k = Kamailio(children, work, uas_port)
                except Exception as exc:  # noqa: BLE001 - reported, the rest stands
                    kam["skipped"] = f"Kamailio did not start: {exc}"
                else:
                    try:
                        run.calls(k.port, [("esrp_psap_uas.xml", uas_port, 100)], rate=100, calls=100,
                                  callers=callers, planned_s=1.0)  # fmt: skip
                        print(
                            "Kamailio t_relay baseline (same SIPp load, same PSAP UAS), ramp:",
                            file=out,
                            flush=True,
                        )
                        kam["steps"] = ramp(
                            run,
                            k.port,
                            uas_port,
                            rates,
                            step_s,
                            callers,
                            k.cpu,
                            None,
                            out,
                        )
                    finally:
                        children.stop(k.proc)
                        k.log.close()
            result["kamailio"] = kam

            if opts.profile:
                result["profile"] = profile(children, work, deployment, psap_uris, callers, opts.profile,
                                            opts.profile_seconds, out, opts.profile_out)  # fmt: skip
    finally:
        children.stop_all()
        for s, h in old.items():
            signal.signal(s, h)
    summarize(result, out)
    return result


def summarize(result: dict[str, Any], out: Any) -> None:
    steps = result["firebox"]["steps"]
    top = best(steps)
    max_rate = top["rate"] if top else 0
    all_passed = bool(steps) and all(s["passed"] for s in steps)
    p = lambda *a: print(*a, file=out)
    p("")
    p("Results")
    p(f"firebox max rate with zero failures: {max_rate} cps"
      + (" (every offered step passed: a lower bound)" if all_passed else ""))  # fmt: skip
    cpu = top["cpu_us_per_call"] if top else None
    p(f"firebox ESRP CPU per call: {cpu:,.0f} µs at {max_rate} cps" if cpu is not None else
      "firebox ESRP CPU per call: n/a (no step passed)")  # fmt: skip
    if top and "latency_ms" in top:
        lat = top["latency_ms"]
        p(f"firebox hop latency (INVITE in -> out, in the element) at {max_rate} cps: "
          f"p50 {fmt_ms(lat['p50'])}, p99 {fmt_ms(lat['p99'])}, max {fmt_ms(lat['max'])}")  # fmt: skip
    else:
        p(
            "firebox hop latency (INVITE in -> out, in the element): n/a (no step passed)"
        )
    at500 = next((s for s in steps if s["rate"] == 500), None)
    p500 = at500["latency_ms"]["p99"] if at500 else None
    if at500:
        p(f"p99 hop latency at 500 cps: {fmt_ms(p500)} (p50 {fmt_ms(at500['latency_ms']['p50'])}"
          f"{'' if at500['passed'] else ', that step had failures'})")  # fmt: skip
    else:
        p("p99 hop latency at 500 cps: n/a (no 500 cps step in this run)")
    fo = result["failover"]
    for kind, label in (("503", "failover on 503"), ("silence", "failover on silence")):
        f = fo[kind]
        if f["p50_s"] is None:
            p(
                f"{label}: n/a (no failover seen; {f['failed_because'] or 'no error reported'})"
            )
        else:
            p(f"{label}: p50 {f['p50_s'] * 1e3:.1f} ms, max {f['max_s'] * 1e3:.1f} ms "
              f"({f['failovers']} failovers, {f['successful']}/{f['calls']} calls answered by the alternate"
              f"{'' if not f['failed_because'] else '; ' + f['failed_because']})")  # fmt: skip
    kam = result["kamailio"]
    ratio_rate = ratio_cpu = None
    if "skipped" in kam:
        p(f"Kamailio baseline skipped: {kam['skipped']}")
    else:
        ksteps = kam["steps"]
        ktop = best(ksteps)
        kmax = ktop["rate"] if ktop else 0
        kall = bool(ksteps) and all(s["passed"] for s in ksteps)
        p(
            f"Kamailio max rate with zero failures: {kmax} cps"
            + (" (every offered step passed: a lower bound)" if kall else "")
        )
        common = [s["rate"] for s in steps if s["passed"]]
        kby = {s["rate"]: s for s in ksteps if s["passed"]}
        shared = [r for r in common if r in kby]
        if shared:
            r = shared[-1]
            fb = next(s for s in steps if s["rate"] == r)
            ratio_cpu = fb["cpu_us_per_call"] / max(kby[r]["cpu_us_per_call"], 1e-9)
            p(
                f"Kamailio CPU per call: {kby[r]['cpu_us_per_call']:,.0f} µs at {r} cps (all processes)"
            )
            p(f"ratio firebox/Kamailio CPU per call at {r} cps: {ratio_cpu:.1f}x")
        else:
            p("ratio firebox/Kamailio CPU per call: n/a (no rate passed by both)")
        if kmax:
            ratio_rate = max_rate / kmax
            if kall and all_passed:
                bound = (
                    " (both passed every offered step: offer higher rates to compare)"
                )
            elif kall:
                bound = " (Kamailio's is a lower bound, so this is an upper bound)"
            elif all_passed:
                bound = " (firebox's is a lower bound, so this is a lower bound)"
            else:
                bound = ""
            p(f"ratio firebox/Kamailio max rate: {ratio_rate:.2f}{bound}")
        else:
            p("ratio firebox/Kamailio max rate: n/a (Kamailio passed no step)")
    result["summary"] = {
        "max_rate": max_rate,
        "cpu_us_per_call": cpu,
        "p99_ms_at_500": p500,
        "failover_503_max_s": fo["503"]["max_s"],
        "failover_silence_max_s": fo["silence"]["max_s"],
        "ratio_rate": ratio_rate,
        "ratio_cpu": ratio_cpu,
    }
    met = lambda ok: "met" if ok else "not met"
    p(f"target >= {TARGET_RATE:,.0f} cps with zero failures through one ESRP process: "
      f"{met(max_rate >= TARGET_RATE)} ({max_rate} cps)")  # fmt: skip
    p(f"target p99 hop latency < {TARGET_P99_MS:g} ms at 500 cps: "
      + (f"{met(p500 < TARGET_P99_MS)} ({p500:.2f} ms)" if p500 is not None else "not measured in this run"))  # fmt: skip
    sil = fo["silence"]["max_s"]
    p(f"target failover on silence < {TARGET_SILENCE_S:g} s: "
      + (f"{met(sil < TARGET_SILENCE_S)} (max {sil:.3f} s)" if sil is not None else "not met (no failover seen)"))  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="two short steps (250, 500 cps, 2 s each), 5 failover calls",
    )
    ap.add_argument(
        "--rates",
        type=lambda s: [int(x) for x in s.split(",") if x],
        help="offered rates, comma separated",
    )
    ap.add_argument(
        "--step-seconds", type=float, help="length of each step (default 10, quick 2)"
    )
    ap.add_argument(
        "--failover-calls",
        type=int,
        help="calls per failover case (default 20, quick 5)",
    )
    ap.add_argument(
        "--no-kamailio", action="store_true", help="skip the Kamailio baseline"
    )
    ap.add_argument(
        "--profile",
        type=int,
        metavar="RATE",
        help="also profile the element at RATE cps",
    )
    ap.add_argument("--profile-seconds", type=float, default=10.0)
    ap.add_argument(
        "--profile-out", type=Path, help="keep the cProfile stats file here"
    )
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument(
        "--element-gc-threshold",
        metavar="A,B,C",
        help="experiment, not the default figures: gc.set_threshold(A, B, C) in the element process",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    result = run_bench(opts)
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
