"""Where the CAD keeps incidents, units and its audit trail: a small repository interface,
in memory (tests, the demo) or in SQLite (durable: WAL, ``synchronous=FULL``, so an
incident acknowledged to a dispatcher survives a crash of the process or the machine).

Records are stored as their JSON form (``model.incident_to_json``); the columns beside it
are there to query by (status, time), not a second source of truth. A ``transaction()``
makes the several writes of one action (a dispatch touches an incident, units and the audit
trail) land together or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from firebox.cad.model import (
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
