"""Where the CAD keeps incidents, units and its audit trail: a small repository interface,
in memory (tests, the demo) or in SQLite (durable: WAL, ``synchronous=FULL``, so an
incident acknowledged to a dispatcher survives a crash of the process or the machine).

Records are stored as their JSON form (``model.incident_to_json``); the columns beside it
are there to query by (status, time), not a second source of truth. A ``transaction()``
makes the several writes of one action (a dispatch touches an incident, units and the audit
trail) land together or not at all.

``PostgresCadStore`` keeps them in PostgreSQL for several nodes of one cluster (row locks and
versions: one unit is never dispatched twice); ``open_cad_store(url)`` picks one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from firebox.cad.model import (
    CadError,
    Incident,
    Unit,
    incident_from_json,
    incident_to_json,
    unit_from_json,
    unit_to_json,
)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One action on the CAD: when, who, what, on which record, with what."""

    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "actor": self.actor, "action": self.action,
                "target": self.target, "detail": self.detail}  # fmt: skip


class CadRepository(Protocol):
    def transaction(self) -> Any: ...  # a context manager
    def get_incident(self, incident_id: str) -> Incident | None: ...
    def put_incident(self, incident: Incident) -> None: ...
    def incidents(self, *, open_only: bool = False) -> list[Incident]: ...
    def get_unit(self, unit_id: str) -> Unit | None: ...
    def put_unit(self, unit: Unit) -> None: ...
    def units(self) -> list[Unit]: ...
    def append_audit(self, record: AuditRecord) -> None: ...
    def audit(self, target: str | None = None) -> list[AuditRecord]: ...


class MemoryRepository:
    """Everything in dicts. Records are copied in and out through their JSON form, so that
    a caller holding an object cannot change the stored one behind the CAD's back (and so
    that both repositories behave the same)."""

    def __init__(self) -> None:
        self._incidents: dict[str, dict[str, Any]] = {}
        self._units: dict[str, dict[str, Any]] = {}
        self._audit: list[AuditRecord] = []
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # Roll back on error: snapshot the dicts (small; an action touches a few records).
        with self._lock:
            saved = (dict(self._incidents), dict(self._units), len(self._audit))
            try:
                yield
            except BaseException:
                self._incidents, self._units = saved[0], saved[1]
                del self._audit[saved[2]:]
                raise

    def get_incident(self, incident_id: str) -> Incident | None:
        d = self._incidents.get(incident_id)
        return None if d is None else incident_from_json(json.loads(json.dumps(d)))

    def put_incident(self, incident: Incident) -> None:
        self._incidents[incident.id] = json.loads(json.dumps(incident_to_json(incident)))

    def incidents(self, *, open_only: bool = False) -> list[Incident]:
        out = [incident_from_json(json.loads(json.dumps(d))) for d in self._incidents.values()]
        out = [i for i in out if i.open] if open_only else out
        return sorted(out, key=lambda i: (i.created_at, i.id))

    def get_unit(self, unit_id: str) -> Unit | None:
        d = self._units.get(unit_id)
        return None if d is None else unit_from_json(dict(d))

    def put_unit(self, unit: Unit) -> None:
        self._units[unit.id] = unit_to_json(unit)

    def units(self) -> list[Unit]:
        return [unit_from_json(dict(self._units[k])) for k in sorted(self._units)]

    def append_audit(self, record: AuditRecord) -> None:
        self._audit.append(record)

    def audit(self, target: str | None = None) -> list[AuditRecord]:
        return [r for r in self._audit if target is None or r.target == target]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_status ON incidents (status, created_at);
CREATE TABLE IF NOT EXISTS units (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target, seq);
"""


class SqliteRepository:
    """Incidents, units and the audit trail in one SQLite file. One connection shared by
    the threads of the HTTP app behind a lock (the CAD's write rate is a few per second)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._depth = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._db.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> Any:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def _all(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _write(self, sql: str, *args: Any) -> None:
        with self.transaction():
            self._db.execute(sql, args)

    def get_incident(self, incident_id: str) -> Incident | None:
        doc = self._one("SELECT doc FROM incidents WHERE id = ?", incident_id)
        return None if doc is None else incident_from_json(json.loads(doc))

    def put_incident(self, incident: Incident) -> None:
        self._write(
            "INSERT INTO incidents (id, status, created_at, doc) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc",
            incident.id, incident.status.value, incident.created_at.isoformat(),
            json.dumps(incident_to_json(incident)),
        )  # fmt: skip

    def incidents(self, *, open_only: bool = False) -> list[Incident]:
        where = "WHERE status != 'closed' " if open_only else ""
        rows = self._all(f"SELECT doc FROM incidents {where}ORDER BY created_at, id")
        return [incident_from_json(json.loads(r[0])) for r in rows]

    def get_unit(self, unit_id: str) -> Unit | None:
        doc = self._one("SELECT doc FROM units WHERE id = ?", unit_id)
        return None if doc is None else unit_from_json(json.loads(doc))

    def put_unit(self, unit: Unit) -> None:
        self._write(
            "INSERT INTO units (id, doc) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            unit.id, json.dumps(unit_to_json(unit)),
        )  # fmt: skip

    def units(self) -> list[Unit]:
        return [unit_from_json(json.loads(r[0])) for r in self._all("SELECT doc FROM units ORDER BY id")]

    def append_audit(self, record: AuditRecord) -> None:
        self._write(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            record.at.isoformat(), record.actor, record.action, record.target, json.dumps(record.detail),
        )  # fmt: skip

    def audit(self, target: str | None = None) -> list[AuditRecord]:
        sql = "SELECT at, actor, action, target, detail FROM audit"
        rows = self._all(sql + " WHERE target = ? ORDER BY seq", target) if target else self._all(sql + " ORDER BY seq")
        return [AuditRecord(datetime.fromisoformat(r[0]), r[1], r[2], r[3], json.loads(r[4])) for r in rows]


# --- PostgreSQL: several nodes on one database ---------------------------------------------------


class StaleRecord(CadError):
    """A record changed (or was created) by another node between this node's read and its
    write: nothing was written; read it again and decide again."""


_PG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cad_incidents (
        id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
        version BIGINT NOT NULL, doc JSONB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS cad_incidents_status ON cad_incidents (status, created_at)",
    "CREATE TABLE IF NOT EXISTS cad_units (id TEXT PRIMARY KEY, version BIGINT NOT NULL, doc JSONB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS cad_audit (
        seq BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        target TEXT NOT NULL, detail JSONB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS cad_audit_target ON cad_audit (target, seq)",
)


class PostgresCadStore:
    """Incidents, units and the audit trail in PostgreSQL (psycopg 3), shared by every node
    of a cluster. Same interface as ``SqliteRepository``; what it adds is what two writers
    need:

    * inside a ``transaction()``, ``get_incident`` / ``get_unit`` lock the row they read
      (``SELECT ... FOR UPDATE``): a second node's dispatch of the same unit waits for the
      first to commit, then reads the unit as dispatched and is refused by the CAD's own
      check (``TransitionError`` naming the incident), never a double dispatch;
    * every row has a version; a record read (outside a transaction, as most CAD actions
      read first and write after) is written back only if its version is still the one read
      (``UPDATE ... WHERE version = %s``), and a record read as absent is only inserted, so
      two nodes creating one incident id, or changing one unit from stale reads, end in
      ``StaleRecord`` for the second, with nothing written. Records not read by this thread
      (a roster reload) are upserted.

    One connection per store (one per node), shared by the node's threads behind a lock, in
    autocommit with explicit transactions; commits are durable with PostgreSQL's defaults
    (``synchronous_commit=on``). The connection is a ``firebox.pglink.PgLink``: lost (a
    partition, a failover), the action that meets the loss fails with ``DatabaseUnavailable``
    naming the database (its transaction rolled back by the server; a lost ``COMMIT`` is
    reported as of unknown outcome), nothing is retried, and the next action reconnects."""

    def __init__(self, conninfo: str):
        from firebox.pglink import PgLink

        self.conninfo = conninfo
        # The link is the store's lock too (reentrant): a transaction and its statements are
        # one session on one connection, never reconnected in the middle.
        self._link = PgLink(conninfo, setup=("SET TIME ZONE 'UTC'",))
        self._lock = self._link
        with self._lock as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(7244021)")  # two nodes creating the tables at once
            for stmt in _PG_SCHEMA:
                db.execute(stmt)
        self._depth = 0
        self._local = threading.local()

    @property
    def _db(self) -> Any:
        """The session's connection (use under ``self._lock``)."""
        return self._link.conn

    def close(self) -> None:
        self._link.close()

    # --- transactions and versions ------------------------------------------------------

    def _seen(self) -> dict[tuple[str, str], int]:
        """Per thread: (table, id) -> the version this thread read (0: read as absent)."""
        seen: dict[tuple[str, str], int] | None = getattr(self._local, "seen", None)
        if seen is None:
            seen = self._local.seen = {}
        return seen

    @contextmanager
    def transaction(self) -> Iterator[None]:
        import psycopg

        from firebox.pglink import lost, unavailable

        with self._lock as db:
            outer = self._depth == 0
            if outer:
                db.execute("BEGIN")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    self._seen().clear()
                    if not lost(db):  # a lost connection's transaction is rolled back by the server
                        db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                # What was read before this action has been written or checked (or the
                # action failed): a later action reads again.
                self._seen().clear()
                try:
                    db.execute("COMMIT")
                except psycopg.OperationalError as exc:
                    if lost(db):
                        what = ("connection lost during COMMIT: whether the action was stored is unknown, "
                                "read it again before repeating it")
                        raise unavailable(self._link.where, what, exc) from exc
                    raise

    def _get(self, table: str, key: str) -> Any:
        import psycopg

        with self._lock:
            lock = " FOR UPDATE" if self._depth else ""
            try:
                row = self._db.execute(f"SELECT doc, version FROM {table} WHERE id = %s{lock}", (key,)).fetchone()
            except psycopg.errors.DeadlockDetected:  # two dispatches locking units in opposite orders
                raise StaleRecord(f"{_what(table)} {key} is being changed by another node: try again") from None
        self._seen()[(table, key)] = 0 if row is None else int(row[1])
        return None if row is None else row[0]

    def _put(self, table: str, key: str, doc: dict[str, Any], extra: dict[str, Any]) -> None:
        import psycopg
        from psycopg.types.json import Jsonb

        seen = self._seen()
        expected = seen.get((table, key))
        cols = {"doc": Jsonb(doc), **extra}
        names = ", ".join(cols)
        marks = ", ".join(["%s"] * len(cols))
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
        with self.transaction():
            if expected is None:  # not read here: a replace (roster reload)
                cur = self._db.execute(
                    f"INSERT INTO {table} (id, version, {names}) VALUES (%s, 1, {marks}) "
                    f"ON CONFLICT (id) DO UPDATE SET {sets}, version = {table}.version + 1 RETURNING version",
                    (key, *cols.values()),
                )
            elif expected == 0:  # read as absent: create, and only create
                try:
                    with self._db.transaction():  # a savepoint: the outer transaction stays usable
                        cur = self._db.execute(
                            f"INSERT INTO {table} (id, version, {names}) VALUES (%s, 1, {marks}) RETURNING version",
                            (key, *cols.values()),
                        )
                except psycopg.errors.UniqueViolation:
                    raise StaleRecord(f"{_what(table)} {key} was just created by another node") from None
            else:
                sets = ", ".join(f"{c} = %s" for c in cols)
                cur = self._db.execute(
                    f"UPDATE {table} SET {sets}, version = version + 1 WHERE id = %s AND version = %s "
                    "RETURNING version",
                    (*cols.values(), key, expected),
                )
            row = cur.fetchone()
            if row is None:
                raise StaleRecord(f"{_what(table)} {key} was changed by another node since it was read")
            seen[(table, key)] = int(row[0])

    # --- the repository -------------------------------------------------------------------

    def get_incident(self, incident_id: str) -> Incident | None:
        doc = self._get("cad_incidents", incident_id)
        return None if doc is None else incident_from_json(doc)

    def put_incident(self, incident: Incident) -> None:
        self._put("cad_incidents", incident.id, incident_to_json(incident),
                  {"status": incident.status.value, "created_at": incident.created_at})  # fmt: skip

    def incidents(self, *, open_only: bool = False) -> list[Incident]:
        where = "WHERE status != 'closed' " if open_only else ""
        with self._lock:
            rows = self._db.execute(f"SELECT doc FROM cad_incidents {where}ORDER BY created_at, id").fetchall()
        return [incident_from_json(r[0]) for r in rows]

    def get_unit(self, unit_id: str) -> Unit | None:
        doc = self._get("cad_units", unit_id)
        return None if doc is None else unit_from_json(doc)

    def put_unit(self, unit: Unit) -> None:
        self._put("cad_units", unit.id, unit_to_json(unit), {})

    def units(self) -> list[Unit]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM cad_units ORDER BY id").fetchall()
        return [unit_from_json(r[0]) for r in rows]

    def append_audit(self, record: AuditRecord) -> None:
        from psycopg.types.json import Jsonb

        with self.transaction():
            self._db.execute(
                "INSERT INTO cad_audit (at, actor, action, target, detail) VALUES (%s, %s, %s, %s, %s)",
                (record.at, record.actor, record.action, record.target, Jsonb(record.detail)),
            )

    def audit(self, target: str | None = None) -> list[AuditRecord]:
        sql = "SELECT at, actor, action, target, detail FROM cad_audit"
        with self._lock:
            if target:
                rows = self._db.execute(sql + " WHERE target = %s ORDER BY seq", (target,)).fetchall()
            else:
                rows = self._db.execute(sql + " ORDER BY seq").fetchall()
        return [AuditRecord(r[0].astimezone(UTC), r[1], r[2], r[3], r[4]) for r in rows]


def _what(table: str) -> str:
    return "incident" if table == "cad_incidents" else "unit"


def open_cad_store(url: str) -> MemoryRepository | SqliteRepository | PostgresCadStore:
    """A CAD repository from a URL: ``postgresql://...`` (``postgres://``) for a cluster,
    ``memory:`` for tests and demos, ``sqlite:///path`` or a bare file path (the embedded
    default)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return PostgresCadStore(url)
    if url in ("memory", "memory:", ":memory:"):
        return MemoryRepository()
    if scheme == "sqlite":
        rest = url[len("sqlite://") :]
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"not a SQLite URL: {url!r} (sqlite:///relative or sqlite:////absolute)")
        return SqliteRepository(rest[1:])
    if scheme == "":
        return SqliteRepository(url)
    raise ValueError(f"unknown CAD store URL scheme {scheme!r}: use a path, sqlite:///path or postgresql://...")
