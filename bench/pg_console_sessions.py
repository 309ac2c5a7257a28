"""What one console session look-up costs: ``PgSessions.get`` on this machine's PostgreSQL
(reads only; and reading + writing ``last_seen``) against the in-memory ``Sessions.get``.
Run: ``.venv/bin/python bench/pg_console_sessions.py`` (needs PostgreSQL, as the tests)."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from firebox.console.auth import ConsoleUser, Role, Sessions
from firebox.console.sessions_pg import PgSessions
from firebox.logging.testing import scratch_postgres

N = 2000
SECRET = b"0123456789abcdef0123456789abcdef"
USER = ConsoleUser("ann", Role.CALL_TAKER, "psap-01", "scrypt$2$1$1$x$y", "pos1")


def timed(get: object, cookie: str, *, step: timedelta) -> list[float]:
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    out = []
    for _ in range(N):
        now += step
        t0 = time.perf_counter()
        assert get(cookie, now) is not None  # type: ignore[operator]
        out.append(time.perf_counter() - t0)
    return out


def report(name: str, xs: list[float]) -> None:
    xs = sorted(xs)
    print(f"{name:34} median {statistics.median(xs) * 1e3:.3f} ms  p99 {xs[int(len(xs) * 0.99)] * 1e3:.3f} ms  (n={len(xs)})")


def main() -> None:
    start = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    with scratch_postgres("firebox_bench") as url:
        for label, touch, step in (("PgSessions.get, read only", timedelta(hours=1), timedelta(milliseconds=1)),
                                   ("PgSessions.get, writes last_seen", timedelta(0), timedelta(milliseconds=1))):
            store = PgSessions(url, SECRET, users={"ann": USER}, touch_every=touch)
            _, cookie = store.start(USER, start)
            timed(store.get, cookie, step=step)  # warm up
            report(label, timed(store.get, cookie, step=step))
            store.close()
    mem = Sessions(SECRET)
    _, cookie = mem.start(USER, start)
    report("Sessions.get (memory)", timed(mem.get, cookie, step=timedelta(milliseconds=1)))


if __name__ == "__main__":
    main()
