"""Storage of a Policy Store (NENA-STA-010.3 section 4.9): one interface, two backends.

A Policy Store keeps policy documents for their owners and hands them to retrievers. Section
4.9 asks that it "not alter the policy document in any way": each version is kept as the
octets received (the flattened JSON JWS text) and served exactly so, so that a retriever
verifies the owner's signature over what the owner signed.

A policy is identified here by its ``policyId`` (unique in the store; the URL of
``/Policies/{policyId}``) and carries its ``policyOwner`` and ``policyType``, which stay
fixed for all its versions. Versions count from 1 and never restart: a deleted policy keeps
its history (so a replayed delete of version 3 cannot remove a version 4 created later) and,
re-created by the same owner, continues with the next number.

Expiry (``policyExpirationTime``, section 4.9): each version has its own; a policy whose
*current* version has expired is not served (``current`` answers None, ``list`` leaves it
out), and an expired older version is not served either. Time is an argument (``now_us``,
microseconds since the epoch), so expiry is tested without waiting.

Optimistic concurrency: ``update`` and ``delete`` take the version the writer saw
(``expected``); when another write came first they raise ``VersionConflict`` naming the
current one. Every check and write of one operation happens in one transaction:

* ``SqliteStore``: the embedded default; WAL journal, ``synchronous=FULL`` (a commit is
  fsync-ed before the call returns), writes serialized by ``BEGIN IMMEDIATE``.
* ``PostgresStore``: psycopg 3; the policy's row is locked (``SELECT ... FOR UPDATE``), and a
  concurrent create of the same id ends in the primary key, answered as ``PolicyExists``.

``open_store("sqlite:///path")`` / ``open_store("postgresql://...")`` picks one.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from firebox import durable

__all__ = [
    "Page",
    "PolicyExists",
    "PolicyHead",
    "PolicyMismatch",
    "PolicyMissing",
    "PolicyStore",
    "PolicyVersion",
    "PostgresStore",
    "SqliteStore",
    "VersionConflict",
    "from_micros",
    "open_store",
    "to_micros",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """One stored version: ``document`` is the JWS exactly as received."""

    policy_id: str
    version: int
    owner: str
    policy_type: str
    document: bytes
    expires_us: int | None
    created_us: int

    def expired(self, now_us: int) -> bool:
        return self.expires_us is not None and self.expires_us <= now_us


@dataclass(frozen=True, slots=True)
class PolicyHead:
    """A policy's fixed attributes and where it stands (deleted or not), expired or not."""

    policy_id: str
    owner: str
    policy_type: str
    current: int
    deleted: bool


@dataclass(frozen=True, slots=True)
class Page:
    items: list[PolicyVersion]
    total: int


class PolicyExists(Exception):
    """``create`` of a policy id that is in use (``current`` version), or that belonged to
    another owner or type (``head``)."""

    def __init__(self, head: PolicyHead | None):
        super().__init__(f"policy {head.policy_id!r} exists" if head else "policy exists")
        self.head = head


class PolicyMissing(Exception):
    """``update`` / ``delete`` of a policy that does not exist (or was deleted)."""


class PolicyMismatch(Exception):
    """``update`` with another owner or type than the policy has."""

    def __init__(self, head: PolicyHead):
        super().__init__(f"policy {head.policy_id!r} is a {head.policy_type} of {head.owner}")
        self.head = head


class VersionConflict(Exception):
    """The writer saw version ``expected``; the current one is ``current``."""

    def __init__(self, expected: int, current: int):
        super().__init__(f"version {expected} is not the current version ({current})")
        self.expected, self.current = expected, current


_VCOLS = "v.policy_id, v.version, v.owner, v.policy_type, v.document, v.expires_us, v.created_us"


def _version(r: Sequence[Any]) -> PolicyVersion:
    return PolicyVersion(str(r[0]), int(r[1]), str(r[2]), str(r[3]), bytes(r[4]),
                         None if r[5] is None else int(r[5]), int(r[6]))  # fmt: skip


class PolicyStore(ABC):
    """The storage of a Policy Store. Thread-safe: the service calls it from worker threads."""

    #: the placeholder of the backend's DB-API paramstyle
    PH = "?"

    # --- writing ----------------------------------------------------------------------------

    def create(
        self, policy_id: str, owner: str, policy_type: str, document: bytes,
        expires_us: int | None, now_us: int,
    ) -> PolicyVersion:  # fmt: skip
        """Store a new policy (version 1, or the next version of a deleted policy of the same
        owner and type). ``PolicyExists`` if the id is in use or was another's."""
        with self._write() as cur:
            head = self._head(cur, policy_id)
            if head is not None and (not head.deleted or (head.owner, head.policy_type) != (owner, policy_type)):
                raise PolicyExists(head)
            version = 1 if head is None else head.current + 1
            record = PolicyVersion(policy_id, version, owner, policy_type, document, expires_us, now_us)
            if head is None:
                cur.execute(
                    f"INSERT INTO policies (policy_id, owner, policy_type, current, deleted) "
                    f"VALUES ({self.PH}, {self.PH}, {self.PH}, {self.PH}, 0)",
                    (policy_id, owner, policy_type, version),
                )
            else:
                self._set_current(cur, policy_id, version)
            self._insert(cur, record)
        return record

    def update(
        self, policy_id: str, owner: str, policy_type: str, document: bytes,
        expires_us: int | None, now_us: int, expected: int | None = None,
    ) -> PolicyVersion:  # fmt: skip
        """Store the next version; ``expected`` (None: whatever is current) must be the
        current version, else ``VersionConflict``. An expired policy may be renewed."""
        with self._write() as cur:
            head = self._head(cur, policy_id)
            if head is None or head.deleted:
                raise PolicyMissing(policy_id)
            if (head.owner, head.policy_type) != (owner, policy_type):
                raise PolicyMismatch(head)
            if expected is not None and expected != head.current:
                raise VersionConflict(expected, head.current)
            record = PolicyVersion(policy_id, head.current + 1, owner, policy_type, document, expires_us, now_us)
            self._set_current(cur, policy_id, record.version)
            self._insert(cur, record)
        return record

    def delete(self, policy_id: str, expected: int | None = None) -> int:
        """Mark the policy deleted (its versions are kept, not served); the version that was
        current. ``PolicyMissing`` / ``VersionConflict`` as for ``update``."""
        with self._write() as cur:
            head = self._head(cur, policy_id)
            if head is None or head.deleted:
                raise PolicyMissing(policy_id)
            if expected is not None and expected != head.current:
                raise VersionConflict(expected, head.current)
            cur.execute(f"UPDATE policies SET deleted = 1 WHERE policy_id = {self.PH}", (policy_id,))
        return head.current

    # --- reading ------------------------------------------------------------------------------

    def head(self, policy_id: str) -> PolicyHead | None:
        rows = self._select(
            f"SELECT policy_id, owner, policy_type, current, deleted FROM policies WHERE policy_id = {self.PH}",
            [policy_id],
        )
        return _head(rows[0]) if rows else None

    def current(self, policy_id: str, now_us: int) -> PolicyVersion | None:
        """The current version, unless the policy is deleted or that version has expired."""
        rows = self._select(
            f"SELECT {_VCOLS} FROM policies p JOIN policy_versions v "
            f"ON v.policy_id = p.policy_id AND v.version = p.current "
            f"WHERE p.policy_id = {self.PH} AND p.deleted = 0",
            [policy_id],
        )
        record = _version(rows[0]) if rows else None
        return None if record is None or record.expired(now_us) else record

    def latest(self, policy_id: str) -> PolicyVersion | None:
        """The last version stored, whether served, deleted or expired (what a replacement
        must be newer than)."""
        rows = self._select(
            f"SELECT {_VCOLS} FROM policies p JOIN policy_versions v "
            f"ON v.policy_id = p.policy_id AND v.version = p.current WHERE p.policy_id = {self.PH}",
            [policy_id],
        )
        return _version(rows[0]) if rows else None

    def version(self, policy_id: str, version: int, now_us: int) -> PolicyVersion | None:
        """Version ``version`` of a served policy, unless that version has expired."""
        if self.current(policy_id, now_us) is None:
            return None
        rows = self._select(
            f"SELECT {_VCOLS} FROM policy_versions v WHERE v.policy_id = {self.PH} AND v.version = {self.PH}",
            [policy_id, version],
        )
        record = _version(rows[0]) if rows else None
        return None if record is None or record.expired(now_us) else record

    def versions(self, policy_id: str, now_us: int) -> list[PolicyVersion] | None:
        """The unexpired versions of a served policy, oldest first; None if not served."""
        if self.current(policy_id, now_us) is None:
            return None
        rows = self._select(
            f"SELECT {_VCOLS} FROM policy_versions v WHERE v.policy_id = {self.PH} "
            f"AND (v.expires_us IS NULL OR v.expires_us > {self.PH}) ORDER BY v.version",
            [policy_id, now_us],
        )
        return [_version(r) for r in rows]

    def query(
        self, now_us: int, *, owner: str | None = None, policy_type: str | None = None,
        offset: int = 0, limit: int = 100,
    ) -> Page:  # fmt: skip
        """The current versions of the served policies (not deleted, not expired), by id."""
        where = (
            " WHERE p.deleted = 0 AND (v.expires_us IS NULL OR v.expires_us > " + self.PH + ")"
        )
        args: list[Any] = [now_us]
        for column, value in (("p.owner", owner), ("p.policy_type", policy_type)):
            if value is not None:
                where += f" AND {column} = {self.PH}"
                args.append(value)
        join = " FROM policies p JOIN policy_versions v ON v.policy_id = p.policy_id AND v.version = p.current"
        total = int(self._select(f"SELECT count(*){join}{where}", args)[0][0])
        rows = self._select(
            f"SELECT {_VCOLS}{join}{where} ORDER BY p.policy_id LIMIT {self.PH} OFFSET {self.PH}",
            [*args, limit, offset],
        )
        return Page([_version(r) for r in rows], total)

    # --- backend ----------------------------------------------------------------------------

    @abstractmethod
    def _write(self) -> Any:
        """A context manager: a serialized write transaction yielding a cursor; commits
        durably on exit, rolls back on an exception."""

    def _head(self, cur: Any, policy_id: str) -> PolicyHead | None:
        """Inside the write transaction: the policy's row (locked where the backend can)."""
        cur.execute(
            f"SELECT policy_id, owner, policy_type, current, deleted FROM policies WHERE policy_id = {self.PH}"
            + self._lock_clause,
            (policy_id,),
        )
        r = cur.fetchone()
        return _head(r) if r else None

    _lock_clause = ""

    def _set_current(self, cur: Any, policy_id: str, version: int) -> None:
        cur.execute(
            f"UPDATE policies SET current = {self.PH}, deleted = 0 WHERE policy_id = {self.PH}", (version, policy_id)
        )

    def _insert(self, cur: Any, r: PolicyVersion) -> None:
        marks = ", ".join([self.PH] * 7)
        cur.execute(
            f"INSERT INTO policy_versions (policy_id, version, owner, policy_type, document, expires_us, created_us) "
            f"VALUES ({marks})",
            (r.policy_id, r.version, r.owner, r.policy_type, r.document, r.expires_us, r.created_us),
        )

    @abstractmethod
    def _select(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _head(r: Sequence[Any]) -> PolicyHead:
    return PolicyHead(str(r[0]), str(r[1]), str(r[2]), int(r[3]), bool(r[4]))


_SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS policies ("
        " policy_id TEXT PRIMARY KEY, owner TEXT NOT NULL, policy_type TEXT NOT NULL,"
        " current INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS policy_versions ("
        " policy_id TEXT NOT NULL REFERENCES policies (policy_id), version INTEGER NOT NULL,"
        " owner TEXT NOT NULL, policy_type TEXT NOT NULL, document BLOB NOT NULL,"
        " expires_us BIGINT, created_us BIGINT NOT NULL, PRIMARY KEY (policy_id, version))"
    ),
    "CREATE INDEX IF NOT EXISTS policies_owner ON policies (owner, policy_type)",
    "CREATE INDEX IF NOT EXISTS policies_type ON policies (policy_type)",
)


# --- SQLite --------------------------------------------------------------------------------------


class SqliteStore(PolicyStore):
    """SQLite in WAL mode with ``synchronous=FULL``: a write is on disk before it returns.
    One writer connection (a lock and ``BEGIN IMMEDIATE``, which also holds off another
    process), one reader connection per thread that reads."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._lock = threading.Lock()
        self._writer = self._connect()
        self._writer.executescript(";\n".join(_SCHEMA) + ";")
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    def _connect(self) -> sqlite3.Connection:
        return durable.connect(self.path)

    def _write(self) -> AbstractContextManager[sqlite3.Cursor]:
        return durable.write(self._lock, self._writer)

    def _select(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._lock:
                self._readers.append(conn)
        return conn.execute(sql, list(args)).fetchall()

    def close(self) -> None:
        with self._lock:
            for conn in [self._writer, *self._readers]:
                conn.close()


# --- PostgreSQL ----------------------------------------------------------------------------------


class PostgresStore(PolicyStore):
    """PostgreSQL through psycopg 3: a writer connection (one transaction per operation, the
    policy's row locked ``FOR UPDATE``) and a reader connection in autocommit. Commits are
    durable with PostgreSQL's defaults (``synchronous_commit=on``, ``fsync=on``).

    Both connections are ``firebox.pglink.PgLink``: one lost (a partition, a failover)
    fails the operation that met it with ``DatabaseUnavailable`` naming the database, and
    the next operation reconnects (nothing is retried)."""

    PH = "%s"
    _lock_clause = " FOR UPDATE"

    def __init__(self, conninfo: str):
        from firebox.pglink import PgLink

        self.conninfo = conninfo
        self._writer = PgLink(conninfo, autocommit=False)
        with self._writer as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(7244012)")  # two processes creating at once
            for stmt in _SCHEMA:
                cur.execute(stmt.replace("BLOB", "BYTEA"))
            conn.commit()
        self._reader = PgLink(conninfo)

    @contextmanager
    def _write(self) -> Iterator[Any]:
        import psycopg

        from firebox.pglink import lost

        with self._writer as conn:
            try:
                with conn.cursor() as cur:
                    yield cur
            except psycopg.errors.UniqueViolation as exc:  # a create raced by another process
                conn.rollback()
                raise PolicyExists(None) from exc
            except BaseException:
                if not lost(conn):
                    conn.rollback()
                raise
            conn.commit()

    def _select(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        with self._reader as conn:
            return conn.execute(sql, list(args)).fetchall()

    def close(self) -> None:
        self._writer.close()
        self._reader.close()


def open_store(url: str) -> PolicyStore:
    """A store from a URL: ``sqlite:///relative/path``, ``sqlite:////absolute/path``, a bare
    file path (SQLite), or ``postgresql://user@host:port/db`` (``postgres://`` too)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url)
    if scheme == "sqlite":
        rest = url[len("sqlite://") :]
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"not a SQLite URL: {url!r} (sqlite:///relative or sqlite:////absolute)")
        return SqliteStore(rest[1:])
    if scheme == "" and "=" not in url:
        return SqliteStore(url)
    raise ValueError(f"unknown store URL scheme {scheme!r}: use sqlite:///path or postgresql://...")
