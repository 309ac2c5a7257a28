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
    cluster's nodes share, used by a store's threads one at a time. The schema is created
    under a transaction-level advisory lock, so that two nodes starting at once do not race
    on ``CREATE ... IF NOT EXISTS``.

    The connection is a ``firebox.pglink.PgLink``: lost (a partition, a failover), it fails
    fast with ``DatabaseUnavailable`` naming the database, and the next call reconnects.
    ``with self._lock:`` is a session on the link (it serialises the threads, reconnects
    first if needed, and names the database in a lost-connection error); inside it,
    ``self._db`` is the session's connection."""

    def __init__(self, conninfo: str, schema: Iterable[str], lock_key: int) -> None:
        from firebox.pglink import PgLink

        self.conninfo = conninfo
        self._link = PgLink(conninfo)
        self._lock = self._link
        with self._lock as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
            for stmt in schema:
                db.execute(stmt)

    @property
    def _db(self) -> Any:
        """The connection (use under ``self._lock``)."""
        return self._link.conn

    def close(self) -> None:
        self._link.close()

    def _rows(self, sql: str, args: Any = ()) -> list[Any]:
        with self._lock as db:
            return db.execute(sql, args).fetchall()
