"""Storage of a Logging Service (NENA-STA-010.3 section 4.12.3): one interface, two backends.

A Logging Service keeps every log event it accepted, retrievable by ``logEventId``, by time
range, element, agency and type (``GET /LogEvents``), by call and incident (``/LogEventIds``,
``/CallIds``, ``/IncidentIds``, ``/Conversations``). ``LogStore`` is that storage:

* ``SqliteStore``: the embedded default; one file, WAL journal, ``synchronous=FULL`` so that
  every commit is fsync-ed before ``append`` returns.
* ``PostgresStore``: psycopg 3, for production; a dedicated writer connection and a small pool
  of reader connections.

``open_store("sqlite:///path")`` / ``open_store("postgresql://...")`` picks one.

Appends are group commits: ``append(items)`` stores a batch in one transaction (one fsync)
and answers, per item, the ``StoredEvent`` or a ``Duplicate`` naming the event already
stored under the same ``clientAssignedIdentifier`` (the idempotency key of a retried
delivery, which the service answers with 409).

Tamper evidence: stored events form one hash chain. Event ``n`` (``sequence``, from 1, no
gaps) holds ``prev_hash`` (the ``hash`` of event ``n-1``; 64 zeros for the first) and::

    hash = sha256(bytes.fromhex(prev_hash) || canonical(sequence, logEventId, jws))

where ``canonical`` is the UTF-8 of the compact JSON array ``[sequence, logEventId, jws]``
(``jws`` the stored flattened JWS text, byte for byte as served). ``verify()`` recomputes the
chain and names the first broken link. A chain can only prove itself up to its last link:
cutting events off its end leaves a valid chain, so ``head()`` (sequence and hash of the
last link) is meant to be recorded elsewhere now and then, and checked later with
``hash_at`` (``firebox logs verify --anchor SEQ:HASH``). Appends are serialized so that the chain stays linear
under concurrent writers (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE`` on
the single ``log_head`` row, which also serializes several service processes).
"""

from __future__ import annotations

import hashlib
import json
import queue
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, Self, TypeVar
from urllib.parse import urlsplit

from firebox import durable

__all__ = [
    "GENESIS",
    "AppendItem",
    "ChainBreak",
    "Duplicate",
    "LogStore",
    "Page",
    "PostgresStore",
    "SqliteStore",
    "StoredEvent",
    "chain_hash",
    "open_store",
    "to_micros",
]

GENESIS = "0" * 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = TypeVar("T")


def chain_hash(prev_hash: str, sequence: int, log_event_id: str, jws: str) -> str:
    """The hash of one link of the chain (see the module docstring)."""
    canonical = json.dumps([sequence, log_event_id, jws], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical.encode("utf-8")).hexdigest()


def to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (``OverflowError`` at the far
    ends of the calendar, where a UTC offset leaves the representable range)."""
    return (value - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class AppendItem:
    """One event to store: its service-assigned ``logEventId``, the event (the verified JWS
    payload, already validated), and the JWS text to keep and serve."""

    log_event_id: str
    event: Mapping[str, Any]
    jws: str
    timestamp_us: int


@dataclass(frozen=True, slots=True)
class StoredEvent:
    sequence: int
    log_event_id: str
    client_id: str | None
    received_at: str
    timestamp: str
    timestamp_us: int
    log_event_type: str
    element_id: str
    agency_id: str
    call_id: str | None
    incident_id: str | None
    jws: str
    prev_hash: str
    hash: str

    def jws_object(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.jws)
        return value


@dataclass(frozen=True, slots=True)
class Duplicate:
    """An append refused because ``existing`` has the same ``clientAssignedIdentifier``."""

    existing: StoredEvent


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first link of the chain that does not verify."""

    sequence: int
    log_event_id: str | None
    reason: str

    def __str__(self) -> str:
        return f"sequence {self.sequence} ({self.log_event_id or 'missing'}): {self.reason}"


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int


@dataclass(frozen=True, slots=True)
class Filter:
    """Selection of ``query``: time range on the event's own ``timestamp`` (inclusive, in
    microseconds since the epoch), and equality on the other members."""

    start_us: int | None = None
    end_us: int | None = None
    element_id: str | None = None
    agency_id: str | None = None
    log_event_type: str | None = None
    call_id: str | None = None
    incident_id: str | None = None

    def where(self, ph: str) -> tuple[str, list[Any]]:
        """A WHERE clause with ``ph`` as the placeholder (``?`` or ``%s``)."""
        terms: list[str] = []
        args: list[Any] = []
        if self.start_us is not None:
            terms.append(f"ts_us >= {ph}")
            args.append(self.start_us)
        if self.end_us is not None:
            terms.append(f"ts_us <= {ph}")
            args.append(self.end_us)
        for column, value in (
            ("element_id", self.element_id),
            ("agency_id", self.agency_id),
            ("log_event_type", self.log_event_type),
            ("call_id", self.call_id),
            ("incident_id", self.incident_id),
        ):
            if value is not None:
                terms.append(f"{column} = {ph}")
                args.append(value)
        return (" WHERE " + " AND ".join(terms)) if terms else "", args


_COLUMNS = (
    "seq, log_event_id, client_id, received_at, timestamp, ts_us, log_event_type, element_id, "
    "agency_id, call_id, incident_id, jws, prev_hash, hash"
)
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS log_events_ts ON log_events (ts_us, seq)",
    "CREATE INDEX IF NOT EXISTS log_events_call ON log_events (call_id, ts_us, seq)",
    "CREATE INDEX IF NOT EXISTS log_events_incident ON log_events (incident_id, ts_us, seq)",
    "CREATE INDEX IF NOT EXISTS log_events_element ON log_events (element_id, seq)",
    "CREATE INDEX IF NOT EXISTS log_events_agency ON log_events (agency_id, seq)",
    "CREATE INDEX IF NOT EXISTS log_events_type ON log_events (log_event_type, seq)",
)


def _row(r: Sequence[Any]) -> StoredEvent:
    return StoredEvent(*r)


def _str(event: Mapping[str, Any], name: str) -> str | None:
    value = event.get(name)
    return value if isinstance(value, str) else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class LogStore(ABC):
    """The storage of a Logging Service. Thread-safe: the service calls it from worker
    threads. ``offset`` counts from 0 (the REST ``start`` counts from 1)."""

    #: the placeholder of the backend's DB-API paramstyle
    PH = "?"

    # --- writing ----------------------------------------------------------------------------

    def append(self, items: Sequence[AppendItem]) -> list[StoredEvent | Duplicate]:
        """Store ``items`` in one transaction, chained in order; a ``Duplicate`` for each item
        whose ``clientAssignedIdentifier`` is already stored (or earlier in the batch). Returns
        once the transaction is durable."""
        if not items:
            return []
        with self._write() as cur:
            seq, head = self._head(cur)
            out: list[StoredEvent | Duplicate] = []
            fresh: dict[str, StoredEvent] = {}
            rows: list[StoredEvent] = []
            received = _now()
            for item in items:
                cid = _str(item.event, "clientAssignedIdentifier")
                if cid is not None:
                    prior = fresh.get(cid) or self._by_client_id(cur, cid)
                    if prior is not None:
                        out.append(Duplicate(prior))
                        continue
                seq += 1
                h = chain_hash(head, seq, item.log_event_id, item.jws)
                record = StoredEvent(
                    seq, item.log_event_id, cid, received, str(item.event["timestamp"]),
                    item.timestamp_us, str(item.event["logEventType"]),
                    str(item.event["elementId"]), str(item.event["agencyId"]),
                    _str(item.event, "callId"), _str(item.event, "incidentId"), item.jws, head, h,
                )  # fmt: skip
                head = h
                rows.append(record)
                out.append(record)
                if cid is not None:
                    fresh[cid] = record
            if rows:
                self._insert(cur, rows)
        return out

    def append_one(self, item: AppendItem) -> StoredEvent | Duplicate:
        return self.append([item])[0]

    # --- reading -----------------------------------------------------------------------------

    def get(self, log_event_id: str) -> StoredEvent | None:
        rows = self._select(f"SELECT {_COLUMNS} FROM log_events WHERE log_event_id = {self.PH}", [log_event_id])
        return _row(rows[0]) if rows else None

    def by_client_id(self, client_id: str) -> StoredEvent | None:
        rows = self._select(f"SELECT {_COLUMNS} FROM log_events WHERE client_id = {self.PH}", [client_id])
        return _row(rows[0]) if rows else None

    def query(self, f: Filter, offset: int = 0, limit: int = 100) -> Page[StoredEvent]:
        """Events matching ``f`` in log (sequence) order, a page of them and the total."""
        where, args = f.where(self.PH)
        total = self._select(f"SELECT count(*) FROM log_events{where}", args)[0][0]
        rows = self._select(
            f"SELECT {_COLUMNS} FROM log_events{where} ORDER BY seq LIMIT {self.PH} OFFSET {self.PH}",
            [*args, limit, offset],
        )
        return Page([_row(r) for r in rows], int(total))

    def log_event_ids(self, f: Filter, offset: int = 0, limit: int = 100) -> Page[str]:
        where, args = f.where(self.PH)
        total = self._select(f"SELECT count(*) FROM log_events{where}", args)[0][0]
        rows = self._select(
            f"SELECT log_event_id FROM log_events{where} ORDER BY seq LIMIT {self.PH} OFFSET {self.PH}",
            [*args, limit, offset],
        )
        return Page([r[0] for r in rows], int(total))

    def _distinct(self, column: str, f: Filter, offset: int, limit: int) -> Page[str]:
        where, args = f.where(self.PH)
        where = where + (" AND " if where else " WHERE ") + f"{column} IS NOT NULL"
        total = self._select(f"SELECT count(DISTINCT {column}) FROM log_events{where}", args)[0][0]
        rows = self._select(
            f"SELECT {column} FROM log_events{where} GROUP BY {column} ORDER BY min(seq) "
            f"LIMIT {self.PH} OFFSET {self.PH}",
            [*args, limit, offset],
        )
        return Page([r[0] for r in rows], int(total))

    def call_ids(self, f: Filter, offset: int = 0, limit: int = 100) -> Page[str]:
        """Distinct ``callId``s of the events matching ``f``, in order of first appearance."""
        return self._distinct("call_id", f, offset, limit)

    def incident_ids(self, f: Filter, offset: int = 0, limit: int = 100) -> Page[str]:
        return self._distinct("incident_id", f, offset, limit)

    def conversation(self, call_id: str) -> list[StoredEvent]:
        """Every event of a call in the order things happened (the events' own timestamps,
        ties in log order)."""
        rows = self._select(
            f"SELECT {_COLUMNS} FROM log_events WHERE call_id = {self.PH} ORDER BY ts_us, seq", [call_id]
        )
        return [_row(r) for r in rows]

    def count(self) -> int:
        return int(self._select("SELECT count(*) FROM log_events", [])[0][0])

    # --- the chain ----------------------------------------------------------------------------

    def verify(self, batch: int = 5000) -> ChainBreak | None:
        """Walk the whole chain; the first broken link, or None if every link verifies."""
        expected_seq, head = 1, GENESIS
        after = 0
        while True:
            rows = self._select(
                f"SELECT seq, log_event_id, jws, prev_hash, hash FROM log_events WHERE seq > {self.PH} "
                f"ORDER BY seq LIMIT {self.PH}",
                [after, batch],
            )
            for seq, log_event_id, jws, prev_hash, h in rows:
                if seq != expected_seq:
                    return ChainBreak(expected_seq, None, f"missing (the next stored event is {seq})")
                if prev_hash != head:
                    return ChainBreak(seq, log_event_id, "prev_hash is not the hash of the event before")
                if chain_hash(prev_hash, seq, log_event_id, jws) != h:
                    return ChainBreak(seq, log_event_id, "hash does not match the stored event")
                head, expected_seq, after = h, seq + 1, seq
            if len(rows) < batch:
                break
        stored = self._stored_head()
        if stored is not None and stored != (expected_seq - 1, head):
            return ChainBreak(stored[0], None, "the chain head does not match the last stored event")
        return None

    def head(self) -> tuple[int, str]:
        """The last link: its sequence and hash ((0, GENESIS) when empty). Recorded outside
        the store (printed by ``firebox logs verify``, kept by an auditor), it is an anchor:
        the chain cannot be rewritten or cut back before it unnoticed (``hash_at``)."""
        rows = self._select("SELECT seq, hash FROM log_events ORDER BY seq DESC LIMIT 1", [])
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)

    def hash_at(self, sequence: int) -> str | None:
        """The stored hash of event ``sequence`` (None if there is no such event)."""
        rows = self._select(f"SELECT hash FROM log_events WHERE seq = {self.PH}", [sequence])
        return str(rows[0][0]) if rows else None

    def _stored_head(self) -> tuple[int, str] | None:
        """A separately recorded (sequence, hash) of the head, if the backend keeps one."""
        return None

    # --- backend ----------------------------------------------------------------------------

    @abstractmethod
    def _write(self) -> Any:
        """A context manager: a serialized write transaction yielding a cursor; commits
        durably on exit, rolls back on an exception."""

    @abstractmethod
    def _head(self, cur: Any) -> tuple[int, str]:
        """Inside the write transaction: the last sequence and hash (0, GENESIS if empty)."""

    @abstractmethod
    def _select(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]: ...

    def _by_client_id(self, cur: Any, cid: str) -> StoredEvent | None:
        cur.execute(f"SELECT {_COLUMNS} FROM log_events WHERE client_id = {self.PH}", [cid])
        r = cur.fetchone()
        return _row(r) if r else None

    def _insert(self, cur: Any, rows: list[StoredEvent]) -> None:
        marks = ", ".join([self.PH] * 14)
        cur.executemany(
            f"INSERT INTO log_events ({_COLUMNS}) VALUES ({marks})",
            [
                (r.sequence, r.log_event_id, r.client_id, r.received_at, r.timestamp, r.timestamp_us,
                 r.log_event_type, r.element_id, r.agency_id, r.call_id, r.incident_id, r.jws,
                 r.prev_hash, r.hash)
                for r in rows
            ],
        )  # fmt: skip

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Pool(Generic[T]):
    """A fixed set of connections handed out one at a time (readers; on PostgreSQL, links
    that reconnect themselves)."""

    def __init__(self, conns: list[T]):
        self.all = list(conns)
        self._free: queue.SimpleQueue[T] = queue.SimpleQueue()
        for c in conns:
            self._free.put(c)

    @contextmanager
    def take(self) -> Iterator[T]:
        conn = self._free.get()
        try:
            yield conn
        finally:
            self._free.put(conn)


# --- SQLite --------------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_events (
    seq INTEGER PRIMARY KEY,
    log_event_id TEXT NOT NULL UNIQUE,
    client_id TEXT UNIQUE,
    received_at TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    log_event_type TEXT NOT NULL,
    element_id TEXT NOT NULL,
    agency_id TEXT NOT NULL,
    call_id TEXT,
    incident_id TEXT,
    jws TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
)
"""


class SqliteStore(LogStore):
    """SQLite in WAL mode with ``synchronous=FULL``: a commit is on disk (the WAL fsync-ed)
    before ``append`` returns. One writer connection (appends are serialized by a lock and by
    ``BEGIN IMMEDIATE``, which also holds off another process), ``readers`` reader
    connections (WAL lets them read while a write is going on)."""

    def __init__(self, path: str | Path, *, readers: int = 4):
        self.path = str(path)
        self._lock = threading.Lock()
        self._writer = self._connect()
        self._writer.executescript(_SQLITE_SCHEMA + ";\n" + ";\n".join(_INDEXES) + ";")
        self._readers = _Pool([self._connect() for _ in range(readers)])

    def _connect(self) -> sqlite3.Connection:
        return durable.connect(self.path)

    def _write(self) -> AbstractContextManager[sqlite3.Cursor]:
        return durable.write(self._lock, self._writer)

    def _head(self, cur: Any) -> tuple[int, str]:
        cur.execute("SELECT seq, hash FROM log_events ORDER BY seq DESC LIMIT 1")
        r = cur.fetchone()
        return (int(r[0]), str(r[1])) if r else (0, GENESIS)

    def _select(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        with self._readers.take() as conn:
            return conn.execute(sql, list(args)).fetchall()

    def close(self) -> None:
        with self._lock:
            for conn in [self._writer, *self._readers.all]:
                conn.close()


# --- PostgreSQL ----------------------------------------------------------------------------------

_PG_SCHEMA = (
    _SQLITE_SCHEMA.replace("seq INTEGER PRIMARY KEY", "seq BIGINT PRIMARY KEY").replace(
        "ts_us INTEGER", "ts_us BIGINT"
    ),
    ("CREATE TABLE IF NOT EXISTS log_head (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "seq BIGINT NOT NULL, hash TEXT NOT NULL)"),
    f"INSERT INTO log_head (id, seq, hash) VALUES (1, 0, '{GENESIS}') ON CONFLICT (id) DO NOTHING",
    *_INDEXES,
)


class PostgresStore(LogStore):
    """PostgreSQL through psycopg 3. Appends lock the one ``log_head`` row (``SELECT ... FOR
    UPDATE``), so the chain stays linear whatever the number of writers and processes, and
    update it in the same transaction. Commits are durable with PostgreSQL's defaults
    (``synchronous_commit=on``, ``fsync=on``).

    Each connection (the writer, every reader) is a ``firebox.pglink.PgLink``: one lost
    (server restart, terminated session, a partition) fails the request that met it with
    ``DatabaseUnavailable`` naming the database; the next request on it reconnects."""

    PH = "%s"

    def __init__(self, conninfo: str, *, readers: int = 4):
        from firebox.pglink import PgLink

        self.conninfo = conninfo
        self._writer = PgLink(conninfo, autocommit=False)
        with self._writer as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(7244011)")  # two processes creating at once
            for stmt in _PG_SCHEMA:
                cur.execute(stmt)
            conn.commit()
        self._readers = _Pool([PgLink(conninfo) for _ in range(readers)])

    @contextmanager
    def _write(self) -> Iterator[Any]:
        from firebox.pglink import lost

        with self._writer as conn:
            try:
                with conn.cursor() as cur:
                    yield cur
            except BaseException:
                if not lost(conn):
                    conn.rollback()
                raise
            conn.commit()

    def _head(self, cur: Any) -> tuple[int, str]:
        cur.execute("SELECT seq, hash FROM log_head WHERE id = 1 FOR UPDATE")
        r = cur.fetchone()
        return int(r[0]), str(r[1])

    def _insert(self, cur: Any, rows: list[StoredEvent]) -> None:
        super()._insert(cur, rows)
        cur.execute("UPDATE log_head SET seq = %s, hash = %s WHERE id = 1", (rows[-1].sequence, rows[-1].hash))

    def _stored_head(self) -> tuple[int, str] | None:
        r = self._select("SELECT seq, hash FROM log_head WHERE id = 1", [])
        return (int(r[0][0]), str(r[0][1])) if r else None

    def _select(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        with self._readers.take() as link, link as conn:
            return conn.execute(sql, list(args)).fetchall()

    def close(self) -> None:
        for link in [self._writer, *self._readers.all]:
            link.close()


def open_store(url: str, *, readers: int = 4) -> LogStore:
    """A store from a URL, as SQLAlchemy spells them: ``sqlite:///relative/path``,
    ``sqlite:////absolute/path``, a bare file path (SQLite), or ``postgresql://user@host:port/db``
    (``postgres://`` too, any libpq URL)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url, readers=readers)
    if scheme == "sqlite":
        rest = url[len("sqlite://") :]
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"not a SQLite URL: {url!r} (sqlite:///relative or sqlite:////absolute)")
        return SqliteStore(rest[1:], readers=readers)
    if scheme == "" and "=" not in url:
        return SqliteStore(url, readers=readers)
    raise ValueError(f"unknown store URL scheme {scheme!r}: use sqlite:///path or postgresql://...")
