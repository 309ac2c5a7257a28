"""Shared by the ``test_pg_*`` tests: a scratch PostgreSQL database per test (dropped
afterwards, with every connection to it), and a bounded wait for a session blocked on a lock
(to order a race deterministically rather than hope for it)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from firebox.logging.testing import postgres_unavailable, scratch_postgres

PG_SKIP = postgres_unavailable()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database's URL. PostgreSQL is part of the test set-up: missing is a failure."""
    if PG_SKIP:
        pytest.fail(f"PostgreSQL is part of the test set-up (.ci/run starts it): {PG_SKIP}")
    with scratch_postgres("firebox_pgtest") as url:
        yield url


def wait_for_lock_waiter(url: str, *, rounds: int = 500) -> None:
    """Return once a session of ``url``'s database waits on a lock (a row locked ``FOR
    UPDATE`` by another); fail after ``rounds`` checks 10 ms apart."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(rounds):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0] > 0:
                return
            time.sleep(0.01)
    raise AssertionError("no session ever waited on the lock")
