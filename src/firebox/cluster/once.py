"""Once-only work across nodes: claims with leases and fencing tokens.

Two nodes may see the same event (a call's end with a callback due, an outage confirmed by
both monitors, an incident ready for dispatch). Before acting, each claims the work by a key
that names it (``callback:<call id>``, ``dispatch:<incident id>``, ``alert:<scope>:<key>``);
only one claim succeeds. The winner acts, then marks the claim ``done`` (held for ever, so
the work is never redone) or ``release``-s it (so another node may try). A claim that is
neither done nor released expires after its lease: a node that died mid-work does not keep
the work from being done.

Each grant carries a *fencing token* from one sequence, larger for every new grant of any
key: where the action writes to a shared store, storing the token with it lets the store
refuse a late write from a holder whose lease expired and was taken over (the classic
fencing argument; PostgreSQL sequences never go backwards).

Implementations: :class:`PgClaims` (sync, psycopg; safe across threads) and
:class:`AsyncPgClaims` (asyncio) on one PostgreSQL table, the race settled by the primary
key (``INSERT .. ON CONFLICT``, a lease taken over in the same statement); and
:class:`MemoryClaims` for the single node (thread-safe, time as a function).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

__all__ = ["AsyncClaims", "AsyncMemoryClaims", "AsyncPgClaims", "Claims", "Grant", "Holder", "MemoryClaims",
           "PgClaims"]  # fmt: skip

DEFAULT_TABLE: Final = "firebox_claims"
_IDENT: Final = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")
_FOREVER: Final = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Grant:
    """A claim won: ``token`` fences the work it covers."""

    key: str
    owner: str
    token: int
    expires: datetime


@dataclass(frozen=True, slots=True)
class Holder:
    key: str
    owner: str
    token: int
    expires: datetime
    done: bool


class Claims(Protocol):
    def claim(self, key: str, owner: str, lease_seconds: float) -> Grant | None: ...
    def renew(self, grant: Grant, lease_seconds: float) -> Grant | None: ...
    def done(self, grant: Grant) -> bool: ...
    def release(self, grant: Grant) -> bool: ...
    def holder(self, key: str) -> Holder | None: ...


class AsyncClaims(Protocol):
    async def claim(self, key: str, owner: str, lease_seconds: float) -> Grant | None: ...
    async def renew(self, grant: Grant, lease_seconds: float) -> Grant | None: ...
    async def done(self, grant: Grant) -> bool: ...
    async def release(self, grant: Grant) -> bool: ...
    async def holder(self, key: str) -> Holder | None: ...


def _check_lease(lease_seconds: float) -> float:
    if not lease_seconds > 0:
        raise ValueError("lease_seconds must be positive")
    return float(lease_seconds)


# --- in process -----------------------------------------------------------------------------


class MemoryClaims:
    """Claims of a single node. ``clock``: seconds (time.time by default)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, Holder] = {}
        self._token = 0

    def _at(self, seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    def claim(self, key: str, owner: str, lease_seconds: float) -> Grant | None:
        lease = _check_lease(lease_seconds)
        with self._lock:
            now = self.clock()
            held = self._held.get(key)
            if held is not None and (held.done or held.expires > self._at(now)):
                return None
            self._token += 1
            h = Holder(key, owner, self._token, self._at(now + lease), False)
            self._held[key] = h
            return Grant(key, owner, h.token, h.expires)

    def _current(self, grant: Grant) -> Holder | None:
        held = self._held.get(grant.key)
        return held if held is not None and held.token == grant.token else None

    def renew(self, grant: Grant, lease_seconds: float) -> Grant | None:
        lease = _check_lease(lease_seconds)
        with self._lock:
            held = self._current(grant)
            now = self.clock()
            if held is None or held.done or held.expires <= self._at(now):
                return None
            h = Holder(grant.key, grant.owner, grant.token, self._at(now + lease), False)
            self._held[grant.key] = h
            return Grant(grant.key, grant.owner, grant.token, h.expires)

    def done(self, grant: Grant) -> bool:
        with self._lock:
            held = self._current(grant)
            if held is None:
                return False
            self._held[grant.key] = Holder(grant.key, grant.owner, grant.token, _FOREVER, True)
            return True

    def release(self, grant: Grant) -> bool:
        with self._lock:
            held = self._current(grant)
            if held is None or held.done:
                return False
            del self._held[grant.key]
            return True

    def holder(self, key: str) -> Holder | None:
        with self._lock:
            return self._held.get(key)


class AsyncMemoryClaims:
    """:class:`MemoryClaims` behind the async interface."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.sync = MemoryClaims(clock)

    async def claim(self, key: str, owner: str, lease_seconds: float) -> Grant | None:
        return self.sync.claim(key, owner, lease_seconds)

    async def renew(self, grant: Grant, lease_seconds: float) -> Grant | None:
        return self.sync.renew(grant, lease_seconds)

    async def done(self, grant: Grant) -> bool:
        return self.sync.done(grant)

    async def release(self, grant: Grant) -> bool:
        return self.sync.release(grant)

    async def holder(self, key: str) -> Holder | None:
        return self.sync.holder(key)


# --- PostgreSQL -----------------------------------------------------------------------------


class _Sql:
    """The statements, for one table. Times are the database's (``now()``), so nodes'
    clocks do not matter; ``done`` is ``expires = 'infinity'``."""

    def __init__(self, table: str) -> None:
        if not _IDENT.match(table):
            raise ValueError(f"'{table}' is not a plain table name")
        self.table = table
        t = table
        self.create = [
            f"SELECT pg_advisory_xact_lock(hashtext('firebox-claims:{t}'))",
            f"CREATE SEQUENCE IF NOT EXISTS {t}_token",
            f"""CREATE TABLE IF NOT EXISTS {t} (
                key text PRIMARY KEY,
                owner text NOT NULL,
                token bigint NOT NULL,
                acquired timestamptz NOT NULL DEFAULT now(),
                expires timestamptz NOT NULL)""",
        ]
        # The conflict is settled by the primary key: of two inserts of one key, one waits
        # for the other and then sees its row; the takeover of an expired lease happens in
        # the same statement, under the row lock, so two nodes cannot both take it over.
        self.claim = f"""
            INSERT INTO {t} AS c (key, owner, token, expires)
            VALUES (%(key)s, %(owner)s, nextval('{t}_token'), now() + %(lease)s * interval '1 second')
            ON CONFLICT (key) DO UPDATE
              SET owner = EXCLUDED.owner, token = EXCLUDED.token, acquired = now(), expires = EXCLUDED.expires
              WHERE c.expires <= now()
            RETURNING token, expires"""
        self.renew = f"""
            UPDATE {t} SET expires = now() + %(lease)s * interval '1 second'
            WHERE key = %(key)s AND token = %(token)s AND expires > now() AND expires <> 'infinity'
            RETURNING token, expires"""
        self.done = f"UPDATE {t} SET expires = 'infinity' WHERE key = %(key)s AND token = %(token)s RETURNING token"
        self.release = f"DELETE FROM {t} WHERE key = %(key)s AND token = %(token)s AND expires <> 'infinity' RETURNING token"
        # psycopg cannot load 'infinity' as a datetime: say "done" with a NULL instead.
        self.holder = f"""SELECT key, owner, token, NULLIF(expires, 'infinity'), expires = 'infinity'
                          FROM {t} WHERE key = %(key)s"""
        self.drop = [f"DROP TABLE IF EXISTS {t}", f"DROP SEQUENCE IF EXISTS {t}_token"]


def _expires(value: Any) -> datetime:
    # NULL stands for 'infinity' (a claim done); see _Sql.holder.
    return value if isinstance(value, datetime) else _FOREVER


def _holder(row: Any) -> Holder | None:
    if row is None:
        return None
    return Holder(row[0], row[1], int(row[2]), _expires(row[3]), bool(row[4]))


class PgClaims:
    """Claims on PostgreSQL (sync; one connection, serialised by a lock, so a
    :class:`PgClaims` may be shared by threads). ``table``: a plain name.

    The connection is a ``firebox.pglink.PgLink``: while the database is unreachable every
    call fails fast with ``DatabaseUnavailable`` (a ``psycopg.OperationalError`` naming the
    database), the next call after that reconnects; nothing is retried (a claim whose answer
    was lost may have been granted: its lease ends on its own)."""

    def __init__(self, dsn: str, *, table: str = DEFAULT_TABLE) -> None:
        from firebox.pglink import PgLink

        self.sql = _Sql(table)
        self._link = PgLink(dsn)
        self._lock = self._link
        with self._lock as conn, conn.transaction():
            for statement in self.sql.create:
                conn.execute(statement)

    @property
    def conn(self) -> Any:
        """The current connection (tests: a transaction around calls)."""
        return self._link.conn

    def close(self) -> None:
        self._link.close()

    def drop(self) -> None:
        """Remove the table and its sequence (tests)."""
        with self._lock as conn:
            for statement in self.sql.drop:
                conn.execute(statement)

    def _one(self, statement: str, params: dict[str, Any]) -> Any:
        with self._lock as conn:
            return conn.execute(statement, params).fetchone()

    def claim(self, key: str, owner: str, lease_seconds: float) -> Grant | None:
        row = self._one(self.sql.claim, {"key": key, "owner": owner, "lease": _check_lease(lease_seconds)})
        return None if row is None else Grant(key, owner, int(row[0]), _expires(row[1]))

    def renew(self, grant: Grant, lease_seconds: float) -> Grant | None:
        row = self._one(self.sql.renew, {"key": grant.key, "token": grant.token, "lease": _check_lease(lease_seconds)})
        return None if row is None else Grant(grant.key, grant.owner, grant.token, _expires(row[1]))

    def done(self, grant: Grant) -> bool:
        return self._one(self.sql.done, {"key": grant.key, "token": grant.token}) is not None

    def release(self, grant: Grant) -> bool:
        return self._one(self.sql.release, {"key": grant.key, "token": grant.token}) is not None

    def holder(self, key: str) -> Holder | None:
        return _holder(self._one(self.sql.holder, {"key": key}))


class AsyncPgClaims:
    """Claims on PostgreSQL for asyncio code: ``await AsyncPgClaims.connect(dsn)``. Lost
    connections as in :class:`PgClaims` (``firebox.pglink.AsyncPgLink``)."""

    def __init__(self, link: Any, sql: _Sql) -> None:
        self.link = link
        self.sql = sql

    @property
    def conn(self) -> Any:
        """The current connection (None once lost and not yet reopened)."""
        return self.link.conn

    @classmethod
    async def connect(cls, dsn: str, *, table: str = DEFAULT_TABLE) -> AsyncPgClaims:
        from firebox.pglink import AsyncPgLink

        sql = _Sql(table)
        link = AsyncPgLink(dsn)
        async with link as conn, conn.transaction():
            for statement in sql.create:
                await conn.execute(statement)
        return cls(link, sql)

    async def close(self) -> None:
        await self.link.close()

    async def drop(self) -> None:
        async with self.link as conn:
            for statement in self.sql.drop:
                await conn.execute(statement)

    async def _one(self, statement: str, params: dict[str, Any]) -> Any:
        async with self.link as conn:
            cursor = await conn.execute(statement, params)
            return await cursor.fetchone()

    async def claim(self, key: str, owner: str, lease_seconds: float) -> Grant | None:
        row = await self._one(self.sql.claim, {"key": key, "owner": owner, "lease": _check_lease(lease_seconds)})
        return None if row is None else Grant(key, owner, int(row[0]), _expires(row[1]))

    async def renew(self, grant: Grant, lease_seconds: float) -> Grant | None:
        params = {"key": grant.key, "token": grant.token, "lease": _check_lease(lease_seconds)}
        row = await self._one(self.sql.renew, params)
        return None if row is None else Grant(grant.key, grant.owner, grant.token, _expires(row[1]))

    async def done(self, grant: Grant) -> bool:
        return await self._one(self.sql.done, {"key": grant.key, "token": grant.token}) is not None

    async def release(self, grant: Grant) -> bool:
        return await self._one(self.sql.release, {"key": grant.key, "token": grant.token}) is not None

    async def holder(self, key: str) -> Holder | None:
        return _holder(await self._one(self.sql.holder, {"key": key}))
