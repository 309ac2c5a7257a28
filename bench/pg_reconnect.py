"""What a lost link costs a shared-PostgreSQL store (``firebox.pglink.PgLink``, here under
``PgClaims``): the per-call price of the idle check (one non-blocking poll) against a bare
psycopg connection running the same statement; and, through ``tests/netkit.TcpRelay``, how
long a call takes to fail while the link is cut and to succeed on the first call after the
heal (a new connection). Run: ``.venv/bin/python bench/pg_reconnect.py`` (needs PostgreSQL,
as the tests)."""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from firebox.cluster.once import PgClaims
from firebox.logging.testing import scratch_postgres
from firebox.pglink import DatabaseUnavailable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from netkit import TcpRelay  # noqa: E402

N = 2000
ROUNDS = 20


def report(name: str, xs: list[float]) -> None:
    xs = sorted(xs)
    print(f"{name:44} median {statistics.median(xs) * 1e3:8.3f} ms  max {xs[-1] * 1e3:8.3f} ms  (n={len(xs)})")


def timed(call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def main() -> None:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def on_loop(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(10)

    async def call(fn: Callable[[], None]) -> None:
        fn()

    relay: TcpRelay = on_loop(TcpRelay([("127.0.0.1", 5432)]).start())
    with scratch_postgres("firebox_bench") as url:
        claims = PgClaims(url, table="bench_claims")
        bare = psycopg.connect(url, autocommit=True)
        statement = claims.sql.holder
        report("PgClaims.holder (PgLink)", [timed(lambda: claims.holder("k")) for _ in range(N)])
        report("same statement, bare psycopg connection",
               [timed(lambda: bare.execute(statement, {"key": "k"}).fetchone()) for _ in range(N)])  # fmt: skip
        bare.close()
        claims.close()

        parts = urlsplit(url)
        via = urlunsplit(parts._replace(netloc=f"{parts.netloc.rsplit('@', 1)[0]}@{relay.address}"))
        claims = PgClaims(via, table="bench_claims")
        failing: list[float] = []
        healed: list[float] = []
        for _ in range(ROUNDS):
            claims.holder("k")
            on_loop(call(relay.cut))
            for _ in range(3):
                t0 = time.perf_counter()
                try:
                    claims.holder("k")
                except DatabaseUnavailable:
                    failing.append(time.perf_counter() - t0)
                else:
                    raise AssertionError("a call succeeded while the link was cut")
            on_loop(call(relay.heal))
            healed.append(timed(lambda: claims.holder("k")))
        report("a call while cut (fails: cannot connect)", failing)
        report("first call after the heal (reconnects)", healed)
        print(f"reconnections: {claims._link.reconnects} in {ROUNDS} cuts")
        claims.drop()
        claims.close()
    on_loop(relay.close())
    loop.call_soon_threadsafe(loop.stop)


if __name__ == "__main__":
    main()
