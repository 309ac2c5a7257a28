"""Durable SQLite for the embedded stores (the Logging Service's, the Policy Store's): WAL
with ``synchronous=FULL``, so that a commit is on disk before the call that made it returns,
and one writer at a time (a lock in the process, ``BEGIN IMMEDIATE`` across processes)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["SharedPostgres", "connect", "write"]


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any thread,
    waiting up to 30 s for another writer."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@contextmanager
def write(lock: threading.Lock, conn: sqlite3.Connection) -> Iterator[sqlite3.Cursor]:
    """One write transaction on ``conn``: committed when the block ends, rolled back if it
    raises."""
    with lock:
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")


class SharedPostgres:
    """One psycopg 3 connection (autocommit; explicit transactions) to the PostgreSQL a
    cluster's nodes share, used by a store's threads one at a time (``_lock``). The schema
    is created under a transaction-level advisory lock, so that two nodes starting at once
    do not race on ``CREATE ... IF NOT EXISTS``."""

    def __init__(self, conninfo: str, schema: Iterable[str], lock_key: int) -> None:
        import psycopg

        self.conninfo = conninfo
        self._db = psycopg.connect(conninfo, autocommit=True)
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
            for stmt in schema:
                self._db.execute(stmt)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: Any = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()
