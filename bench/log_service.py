"""Logging Service ingestion rate (NENA-STA-010.3 section 4.12; issue 5): log events per
second, unsigned (``alg: none``) and signed (EdDSA Ed25519 with a two-certificate x5c),
POSTed over HTTP to ``firebox logs serve`` (a subprocess) storing into SQLite and into
PostgreSQL, with the store's raw insert rate measured in the same run as the baseline
(``LogStore.append`` called directly: one event per transaction, and batches of 32).

The client is a minimal HTTP/1.1 keep-alive client over asyncio streams (``CONNECTIONS``
connections, one request in flight on each) so that it costs little CPU: client and
service share this machine's cores. Bodies are signed before the clock starts.

    .venv/bin/python bench/log_service.py [--events 4000] [--connections 32] [--skip-postgres]

Target (issue 5): 2,000 events/s (20 events a call at 100 calls a second).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from firebox import jws as jwslib
from firebox.logging.events import (
    new_call_id,
    new_incident_id,
    new_log_event_id,
    parse_timestamp,
)
from firebox.logging.store import AppendItem, open_store, to_micros
from firebox.logging.testing import (
    Signer,
    call_events,
    free_port,
    postgres_unavailable,
    scratch_postgres,
)

FIREBOX = [sys.executable, "-c", "from firebox.cli import app; app()"]
TARGET = 2000


def make_events(n: int) -> list[dict]:
    out: list[dict] = []
    while len(out) < n:
        out.extend(call_events(new_call_id("bcf.example.net"), new_incident_id("bcf.example.net")))
    return out[:n]


def raw_rate(db: str, n: int, batch: int) -> float:
    """Events per second through ``LogStore.append`` directly (pre-signed, unsigned)."""
    events = make_events(n)
    items = [
        AppendItem(new_log_event_id("logs.example.net"), e, jwslib.serialize(jwslib.sign(e, None)).decode(),
                   to_micros(parse_timestamp(e["timestamp"])))
        for e in events
    ]  # fmt: skip
    with open_store(db) as store:
        t = time.perf_counter()
        for i in range(0, n, batch):
            store.append(items[i : i + batch])
        return n / (time.perf_counter() - t)


async def _connection(host: str, port: int, bodies: list[bytes], cursor: Iterator[int], statuses: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in cursor:
            body = bodies[i]
            writer.write(
                b"POST /LogEvents HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (host.encode(), port, len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            statuses.append(status)
    finally:
        writer.close()


async def http_rate(port: int, bodies: list[bytes], connections: int) -> tuple[float, list[int]]:
    statuses: list[int] = []
    cursor = iter(range(len(bodies)))
    t = time.perf_counter()
    await asyncio.gather(*(_connection("127.0.0.1", port, bodies, cursor, statuses) for _ in range(connections)))
    return len(bodies) / (time.perf_counter() - t), statuses


@contextmanager
def service(db: str) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([*FIREBOX, "logs", "serve", "--db", db, "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/Versions", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the service did not start")
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def bench_backend(name: str, db_factory, n: int, connections: int) -> dict[str, float]:
    results: dict[str, float] = {}
    with db_factory() as db:
        results["raw 1/txn"] = raw_rate(db, min(n, 2000), 1)
    with db_factory() as db:
        results["raw 32/txn"] = raw_rate(db, n, 32)
    signer = Signer("ed25519")
    for kind in ("unsigned", "signed"):
        events = make_events(n + 200)
        bodies = [jwslib.serialize(signer.sign(e) if kind == "signed" else jwslib.sign(e, None)) for e in events]
        with db_factory() as db, service(db) as port:
            asyncio.run(http_rate(port, bodies[:200], connections))  # warm-up
            rate, statuses = asyncio.run(http_rate(port, bodies[200:], connections))
        bad = [s for s in statuses if s != 201]
        if bad:
            raise RuntimeError(f"{len(bad)} answers were not 201: {sorted(set(bad))}")
        results[f"HTTP {kind}"] = rate
    base = results["raw 32/txn"]
    print(f"\n{name}")
    for label, rate in results.items():
        ratio = f"  ({rate / base:.2f} x raw 32/txn)" if label.startswith("HTTP") else ""
        flag = "" if not label.startswith("HTTP") else ("  >= target" if rate >= TARGET else "  below target")
        print(f"  {label:<14} {rate:8.0f} events/s{ratio}{flag}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--skip-postgres", action="store_true")
    args = ap.parse_args()
    print(f"Logging Service ingestion, {args.events} events per run, {args.connections} connections, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")  # fmt: skip

    @contextmanager
    def sqlite_db() -> Iterator[str]:
        with tempfile.TemporaryDirectory(prefix="firebox-bench-") as d:
            yield f"sqlite:///{Path(d) / 'logs.db'}"

    bench_backend("SQLite (WAL, synchronous=FULL)", sqlite_db, args.events, args.connections)
    why = postgres_unavailable() if not args.skip_postgres else "--skip-postgres"
    if why:
        print(f"\nPostgreSQL skipped: {why}")
    else:
        bench_backend("PostgreSQL (127.0.0.1, synchronous_commit=on)", lambda: scratch_postgres("firebox_logbench"),
                      args.events, args.connections)  # fmt: skip
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
