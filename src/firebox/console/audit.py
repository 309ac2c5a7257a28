"""The console's audit trail: every action a person takes at the console (sign-in and out,
failed sign-ins, answer, release, hold, transfer, text, callback outcomes, incident actions),
who took it, in which role, on what, and what came of it.

Durable SQLite through ``firebox.durable`` (WAL, ``synchronous=FULL``): an entry is on disk
before the action's answer goes back to the browser. Append-only: there is no update or
delete here. The CAD keeps its own audit trail of CAD changes (``Cad.audit``); an
administrator sees both.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from firebox import durable

__all__ = ["AuditEntry", "ConsoleAudit"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS console_audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    user    TEXT NOT NULL,
    role    TEXT,
    psap    TEXT,
    action  TEXT NOT NULL,
    target  TEXT,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS console_audit_user ON console_audit (user, seq);
"""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    user: str  # who (for a failed sign-in: the name typed)
    role: str | None
    psap: str | None
    action: str  # "sign-in", "answer", "dispatch"...
    target: str | None  # the call, incident, unit, callback or position acted on
    outcome: str  # "ok", "denied: ...", "failed: ..."
    detail: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "at": self.at.isoformat(), "user": self.user, "role": self.role,
            "psap": self.psap, "action": self.action, "target": self.target,
            "outcome": self.outcome, "detail": self.detail,
        }  # fmt: skip


class ConsoleAudit:
    """Append and read audit entries. ``path`` is a file (``":memory:"`` for a test that
    does not need a file)."""

    def __init__(self, path: str | Path):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = durable.connect(path)
        self._lock = threading.Lock()
        with durable.write(self._lock, self._conn) as cur:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                cur.execute(statement)

    def record(self, entry: AuditEntry) -> AuditEntry:
        with durable.write(self._lock, self._conn) as cur:
            cur.execute(
                "INSERT INTO console_audit (at, user, role, psap, action, target, outcome, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (entry.at.isoformat(), entry.user, entry.role, entry.psap, entry.action, entry.target,
                 entry.outcome, json.dumps(entry.detail, default=str, sort_keys=True)),
            )  # fmt: skip
            seq = cur.lastrowid
        return AuditEntry(entry.at, entry.user, entry.role, entry.psap, entry.action, entry.target,
                          entry.outcome, entry.detail, seq)  # fmt: skip

    def entries(self, *, user: str | None = None, action: str | None = None, limit: int = 500) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first, optionally of one user or action."""
        where, args = [], []  # type: ignore[var-annotated]
        if user:
            where.append("user = ?")
            args.append(user)
        if action:
            where.append("action = ?")
            args.append(action)
        sql = "SELECT seq, at, user, role, psap, action, target, outcome, detail FROM console_audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(max(1, min(limit, 10_000)))
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [
            AuditEntry(datetime.fromisoformat(at), u, role, psap, act, target, outcome, json.loads(detail), seq)
            for seq, at, u, role, psap, act, target, outcome, detail in rows
        ]

    def close(self) -> None:
        self._conn.close()
