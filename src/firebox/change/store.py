"""Where changes are kept: SQLite through ``firebox.durable`` (WAL, ``synchronous=FULL``: a
change is on disk before it is acknowledged).

* ``changes``: the latest record of each change (its JSON, its stage);
* ``versions``: per rule target (kind, policy id) the version numbers handed out;
* ``change_log``: append-only (triggers refuse UPDATE and DELETE), one row per thing that
  happened to a change (submitted, refused, staged, promoted, rolled back, guard verdicts).

``PostgresChangeStore`` is the same in PostgreSQL, for several nodes of a cluster;
``open_change_store(url)`` picks one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from firebox.change.core import Change, ChangeKind, Stage
from firebox.durable import connect, write

__all__ = ["ChangeStore", "PostgresChangeStore", "open_change_store"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS changes (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, version INTEGER NOT NULL,
        stage TEXT NOT NULL, created REAL NOT NULL, doc TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS changes_target ON changes (kind, target, version)",
    """CREATE TABLE IF NOT EXISTS versions (
        kind TEXT NOT NULL, target TEXT NOT NULL, last INTEGER NOT NULL, PRIMARY KEY (kind, target))""",
    """CREATE TABLE IF NOT EXISTS change_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, change_id TEXT NOT NULL, at REAL NOT NULL,
        action TEXT NOT NULL, stage TEXT NOT NULL, detail TEXT NOT NULL)""",
    """CREATE TRIGGER IF NOT EXISTS change_log_no_update BEFORE UPDATE ON change_log
        BEGIN SELECT RAISE(ABORT, 'the change log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS change_log_no_delete BEFORE DELETE ON change_log
        BEGIN SELECT RAISE(ABORT, 'the change log is append-only'); END""",
)


class ChangeStore:
    def __init__(self, path: str | Path = ":memory:"):
        self.conn: sqlite3.Connection = connect(path)
        self.lock = threading.Lock()
        with write(self.lock, self.conn) as cur:
            for statement in _SCHEMA:
                cur.execute(statement)

    def close(self) -> None:
        self.conn.close()

    def next_version(self, kind: ChangeKind, target: str) -> int:
        """A new version number for the target's rules (1, 2, ...; never handed out twice)."""
        with write(self.lock, self.conn) as cur:
            row = cur.execute("SELECT last FROM versions WHERE kind = ? AND target = ?", (kind.value, target)).fetchone()
            version = (row[0] if row else 0) + 1
            cur.execute("INSERT INTO versions (kind, target, last) VALUES (?, ?, ?) "
                        "ON CONFLICT (kind, target) DO UPDATE SET last = excluded.last",
                        (kind.value, target, version))  # fmt: skip
        return version

    def save(self, change: Change, action: str, detail: dict[str, Any] | None = None) -> None:
        """Store the change as it now stands and append ``action`` to the change log, in one
        transaction."""
        doc = json.dumps(change.to_dict(), separators=(",", ":"))
        with write(self.lock, self.conn) as cur:
            cur.execute(
                "INSERT INTO changes (id, kind, target, version, stage, created, doc) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET stage = excluded.stage, doc = excluded.doc",
                (change.id, change.kind.value, change.target, change.version, change.stage.value, change.created, doc),
            )
            cur.execute("INSERT INTO change_log (change_id, at, action, stage, detail) VALUES (?, ?, ?, ?, ?)",
                        (change.id, change.updated or change.created, action, change.stage.value,
                         json.dumps(detail or {"reason": change.reason}, separators=(",", ":"))))  # fmt: skip

    def get(self, change_id: str) -> Change | None:
        row = self.conn.execute("SELECT doc FROM changes WHERE id = ?", (change_id,)).fetchone()
        return Change.from_dict(json.loads(row[0])) if row else None

    def list(self, *, target: str | None = None, stage: Stage | None = None, limit: int = 100) -> list[Change]:
        """Newest first."""
        sql, args = "SELECT doc FROM changes", []
        terms = []
        if target is not None:
            terms.append("target = ?")
            args.append(target)
        if stage is not None:
            terms.append("stage = ?")
            args.append(stage.value)
        if terms:
            sql += " WHERE " + " AND ".join(terms)
        sql += " ORDER BY created DESC, version DESC LIMIT ?"
        args.append(limit)
        return [Change.from_dict(json.loads(r[0])) for r in self.conn.execute(sql, args).fetchall()]

    def active(self, kind: ChangeKind, target: str) -> Change | None:
        """The change of the target in canary or full most recently entered (None: none)."""
        rows = self.conn.execute(
            "SELECT doc FROM changes WHERE kind = ? AND target = ? AND stage IN ('canary', 'full') "
            "ORDER BY version DESC LIMIT 1", (kind.value, target)).fetchall()  # fmt: skip
        return Change.from_dict(json.loads(rows[0][0])) if rows else None

    def log(self, change_id: str | None = None) -> list[dict[str, Any]]:
        """The change log (of one change, or all), oldest first."""
        sql = "SELECT seq, change_id, at, action, stage, detail FROM change_log"
        args: tuple[Any, ...] = ()
        if change_id is not None:
            sql += " WHERE change_id = ?"
            args = (change_id,)
        rows = self.conn.execute(sql + " ORDER BY seq", args).fetchall()
        return [{"seq": r[0], "change": r[1], "at": r[2], "action": r[3], "stage": r[4], "detail": json.loads(r[5])}
                for r in rows]  # fmt: skip


# --- PostgreSQL: the changes of every node of a cluster ------------------------------------------

_PG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS change_changes (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, version INTEGER NOT NULL,
        stage TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, doc JSONB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS change_changes_target ON change_changes (kind, target, version)",
    """CREATE TABLE IF NOT EXISTS change_versions (
        kind TEXT NOT NULL, target TEXT NOT NULL, last INTEGER NOT NULL, PRIMARY KEY (kind, target))""",
    """CREATE TABLE IF NOT EXISTS change_log (
        seq BIGSERIAL PRIMARY KEY, change_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
        action TEXT NOT NULL, stage TEXT NOT NULL, detail JSONB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS change_log_change ON change_log (change_id, seq)",
    """CREATE OR REPLACE FUNCTION change_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'the change log is append-only'; END $$""",
    "DROP TRIGGER IF EXISTS change_log_no_change ON change_log",
    """CREATE TRIGGER change_log_no_change BEFORE UPDATE OR DELETE ON change_log
        FOR EACH ROW EXECUTE FUNCTION change_log_append_only()""",
    "DROP TRIGGER IF EXISTS change_log_no_truncate ON change_log",
    """CREATE TRIGGER change_log_no_truncate BEFORE TRUNCATE ON change_log
        FOR EACH STATEMENT EXECUTE FUNCTION change_log_append_only()""",
)


class PostgresChangeStore:
    """``ChangeStore`` in PostgreSQL (psycopg 3), shared by the nodes of a cluster: the same
    tables (``change_`` prefixed, beside the other stores in one database) and the same
    semantics. ``change_log`` is append-only by triggers refusing UPDATE, DELETE and
    TRUNCATE; ``next_version`` is one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, so
    two nodes never hand out one version number twice.

    The connection is a ``firebox.pglink.PgLink``: lost (a partition, a failover), a call
    fails fast with ``DatabaseUnavailable`` naming the database and the next one
    reconnects; nothing is retried."""

    def __init__(self, conninfo: str):
        from firebox.pglink import PgLink

        self.conninfo = conninfo
        self._link = PgLink(conninfo)
        self.lock = self._link  # a session on the link: one thread at a time, reconnecting first
        with self.lock as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(7244041)")  # two nodes creating the tables at once
            for statement in _PG_SCHEMA:
                conn.execute(statement)

    @property
    def conn(self) -> Any:
        """The current connection."""
        return self._link.conn

    def close(self) -> None:
        self._link.close()

    def _rows(self, sql: str, args: Any = ()) -> list[Any]:
        with self.lock as conn:
            return conn.execute(sql, args).fetchall()

    def next_version(self, kind: ChangeKind, target: str) -> int:
        """A new version number for the target's rules (1, 2, ...; never handed out twice)."""
        (row,) = self._rows(
            "INSERT INTO change_versions (kind, target, last) VALUES (%s, %s, 1) "
            "ON CONFLICT (kind, target) DO UPDATE SET last = change_versions.last + 1 RETURNING last",
            (kind.value, target),
        )
        return int(row[0])

    def save(self, change: Change, action: str, detail: dict[str, Any] | None = None) -> None:
        """Store the change as it now stands and append ``action`` to the change log, in one
        transaction."""
        from psycopg.types.json import Jsonb

        with self.lock as conn, conn.transaction():
            conn.execute(
                "INSERT INTO change_changes (id, kind, target, version, stage, created, doc) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET stage = EXCLUDED.stage, doc = EXCLUDED.doc",
                (change.id, change.kind.value, change.target, change.version, change.stage.value, change.created,
                 Jsonb(change.to_dict())),
            )  # fmt: skip
            conn.execute(
                "INSERT INTO change_log (change_id, at, action, stage, detail) VALUES (%s, %s, %s, %s, %s)",
                (change.id, change.updated or change.created, action, change.stage.value,
                 Jsonb(detail or {"reason": change.reason})),
            )  # fmt: skip

    def get(self, change_id: str) -> Change | None:
        rows = self._rows("SELECT doc FROM change_changes WHERE id = %s", (change_id,))
        return Change.from_dict(rows[0][0]) if rows else None

    def list(self, *, target: str | None = None, stage: Stage | None = None, limit: int = 100) -> list[Change]:
        """Newest first."""
        terms, args = [], []
        if target is not None:
            terms.append("target = %s")
            args.append(target)
        if stage is not None:
            terms.append("stage = %s")
            args.append(stage.value)
        where = " WHERE " + " AND ".join(terms) if terms else ""
        rows = self._rows(f"SELECT doc FROM change_changes{where} ORDER BY created DESC, version DESC LIMIT %s",
                          (*args, limit))  # fmt: skip
        return [Change.from_dict(r[0]) for r in rows]

    def active(self, kind: ChangeKind, target: str) -> Change | None:
        """The change of the target in canary or full most recently entered (None: none)."""
        rows = self._rows(
            "SELECT doc FROM change_changes WHERE kind = %s AND target = %s AND stage IN ('canary', 'full') "
            "ORDER BY version DESC LIMIT 1", (kind.value, target))  # fmt: skip
        return Change.from_dict(rows[0][0]) if rows else None

    def log(self, change_id: str | None = None) -> list[dict[str, Any]]:
        """The change log (of one change, or all), oldest first."""
        sql = "SELECT seq, change_id, at, action, stage, detail FROM change_log"
        if change_id is not None:
            rows = self._rows(sql + " WHERE change_id = %s ORDER BY seq", (change_id,))
        else:
            rows = self._rows(sql + " ORDER BY seq")
        return [{"seq": r[0], "change": r[1], "at": r[2], "action": r[3], "stage": r[4], "detail": r[5]}
                for r in rows]  # fmt: skip


def open_change_store(url: str | Path) -> ChangeStore | PostgresChangeStore:
    """``postgresql://...`` (``postgres://``): shared by a cluster; ``sqlite:///path`` or a
    bare path: SQLite (the embedded default)."""
    text = str(url)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("postgresql", "postgres"):
        return PostgresChangeStore(text)
    if scheme == "sqlite":
        return ChangeStore(text[len("sqlite:///") :])
    if scheme == "":
        return ChangeStore(url)
    raise ValueError(f"unknown change store URL scheme {scheme!r}: use a path, sqlite:///path or postgresql://...")
