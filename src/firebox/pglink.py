"""A live link to the PostgreSQL a cluster's nodes share, for the stores that keep one
connection each (CAD, worklist, alert drafts, claims, changes, logging, policy).

A node cut off from the database for a while (a partition, a primary failover) must fail
fast while the link is down, with an error that names the database, and work again by
itself once it is back, without a restart. :class:`PgLink` holds one psycopg connection:

* it is opened with ``connect_timeout`` and TCP keepalives (``keepalives_idle`` /
  ``keepalives_interval`` / ``keepalives_count``, and ``tcp_user_timeout`` for a query
  sent to a peer that vanished), so a dead peer is noticed in seconds, not at the kernel's
  two hours; a value the URL sets itself wins;
* ``with link as conn:`` serialises the store's threads (reentrant: a store's transaction
  and the statements inside share one session) and, at the start of the outermost session
  only, replaces a connection found closed, broken, or closed by the peer while idle (one
  non-blocking poll of its socket), re-running the per-connection ``setup`` statements (a
  ``SET``);
* a statement that meets a lost connection raises :class:`DatabaseUnavailable` (a
  ``psycopg.OperationalError``) naming the database. Nothing is retried here: a write
  whose outcome is unknown is the caller's to decide about (a CAD action must not be
  applied twice); only the next session reconnects, and never in the middle of a
  transaction (that would run the rest of it outside the transaction).
"""

from __future__ import annotations

import asyncio
import select
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["AsyncPgLink", "DatabaseUnavailable", "PgLink", "connect", "describe", "link_params", "lost",
           "unavailable"]

#: libpq parameters set unless the URL sets them: a connection attempt gives up after 5 s;
#: an idle link is probed after 10 s, every 5 s, and declared dead after 3 probes
#: unanswered (~25 s); data sent and not acknowledged for 20 s breaks the link too.
LINK_DEFAULTS: Final[dict[str, str]] = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "20000",
}


class DatabaseUnavailable(psycopg.OperationalError):
    """The link to the shared database is down (cannot connect, or the connection was lost
    during a statement). The statement's work did not happen, or -- for a commit -- its
    outcome is unknown; the next call on the store reconnects."""


def link_params(conninfo: str) -> str:
    """``conninfo`` with :data:`LINK_DEFAULTS` for the parameters it does not set."""
    given = conninfo_to_dict(conninfo)
    return make_conninfo(conninfo, **{k: v for k, v in LINK_DEFAULTS.items() if k not in given})


def describe(conninfo: str) -> str:
    """The database for an error message (no credentials): ``PostgreSQL database "x" at
    host:port``."""
    try:
        p = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "PostgreSQL (unparsable conninfo)"
    host = str(p.get("host") or p.get("hostaddr") or "the local socket")
    port = str(p.get("port") or "5432")
    return f'PostgreSQL database "{p.get("dbname", p.get("user", "?"))}" at {host}:{port}'


def lost(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None) -> bool:
    """The connection cannot be used again (closed, or broken by a lost link)."""
    return conn is None or conn.closed or conn.broken


def _dead_while_idle(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None) -> bool:
    """``lost``, or an idle connection the server (or a link in between) has closed since its
    last use: an idle connection has nothing to read, so a readable socket is read (one
    non-blocking poll) and an end of stream or a reset marks it broken. Thus a connection
    reset while idle is replaced before a statement is sent on it."""
    if lost(conn):
        return True
    assert conn is not None
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
        if readable:
            conn.pgconn.consume_input()  # a notice or parameter status is only buffered
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return conn.pgconn.status != psycopg.pq.ConnStatus.OK


def unavailable(where: str, what: str, exc: BaseException) -> DatabaseUnavailable:
    """The error for ``exc`` (raise it ``from exc``): one line, the database first."""
    cause = " ".join(str(exc).split())  # libpq's messages span lines
    return DatabaseUnavailable(f"{where}: {what} ({type(exc).__name__}: {cause}); the next call reconnects")


def connect(conninfo: str, *, autocommit: bool = True, setup: Sequence[str] = ()) -> psycopg.Connection[Any]:
    """A new connection with :data:`LINK_DEFAULTS`, its ``setup`` statements run (and, without
    autocommit, committed). Failure: :class:`DatabaseUnavailable`."""
    try:
        conn = psycopg.connect(link_params(conninfo), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise unavailable(describe(conninfo), "cannot connect", exc) from exc
    try:
        for statement in setup:
            conn.execute(statement)
        if not autocommit:
            conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


class PgLink:
    """One connection, reopened when lost (see the module). ``with link as conn:`` is the
    only way to use it; ``conn`` is the connection of the session in progress (reentrant
    sessions, one thread at a time)."""

    def __init__(self, conninfo: str, *, autocommit: bool = True, setup: Sequence[str] = ()) -> None:
        self.conninfo = conninfo
        self.where = describe(conninfo)
        self.autocommit = autocommit
        self.setup = tuple(setup)
        self.reconnects = 0  # connections opened after the first: links lost and found again
        self._mutex = threading.RLock()
        self._depth = 0
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The current connection (reopened first if lost and no session is in progress)."""
        with self as conn:
            return conn

    def __enter__(self) -> psycopg.Connection[Any]:
        self._mutex.acquire()
        try:
            if self._closed:
                raise psycopg.OperationalError(f"{self.where}: the store is closed")
            if self._depth == 0 and _dead_while_idle(self._conn):
                self._reopen()
            assert self._conn is not None
        except BaseException:
            self._mutex.release()
            raise
        self._depth += 1
        return self._conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        try:
            self._depth -= 1
            if (isinstance(exc, psycopg.OperationalError) and not isinstance(exc, DatabaseUnavailable)
                    and lost(self._conn) and not self._closed):  # fmt: skip
                raise unavailable(self.where, "connection lost", exc) from exc
        finally:
            self._mutex.release()

    def _reopen(self) -> None:
        if self._conn is not None:
            self._conn.close()  # a broken one: frees the socket
            self.reconnects += 1
        self._conn = None
        self._conn = connect(self.conninfo, autocommit=self.autocommit, setup=self.setup)

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            if self._conn is not None:
                self._conn.close()


class AsyncPgLink:
    """:class:`PgLink` for asyncio code: ``async with link as conn:`` (not reentrant)."""

    def __init__(self, conninfo: str, *, autocommit: bool = True, setup: Sequence[str] = ()) -> None:
        self.conninfo = conninfo
        self.where = describe(conninfo)
        self.autocommit = autocommit
        self.setup = tuple(setup)
        self.reconnects = 0
        self._lock = asyncio.Lock()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._closed = False

    @property
    def conn(self) -> psycopg.AsyncConnection[Any] | None:
        """The current connection, as last opened (None before the first session)."""
        return self._conn

    async def __aenter__(self) -> psycopg.AsyncConnection[Any]:
        await self._lock.acquire()
        try:
            if self._closed:
                raise psycopg.OperationalError(f"{self.where}: the store is closed")
            if _dead_while_idle(self._conn):
                await self._reopen()
            assert self._conn is not None
        except BaseException:
            self._lock.release()
            raise
        return self._conn

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        try:
            if (isinstance(exc, psycopg.OperationalError) and not isinstance(exc, DatabaseUnavailable)
                    and lost(self._conn) and not self._closed):  # fmt: skip
                raise unavailable(self.where, "connection lost", exc) from exc
        finally:
            self._lock.release()

    async def _reopen(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self.reconnects += 1
        self._conn = None
        try:
            conn = await psycopg.AsyncConnection.connect(link_params(self.conninfo), autocommit=self.autocommit)
        except psycopg.OperationalError as exc:
            raise unavailable(self.where, "cannot connect", exc) from exc
        try:
            for statement in self.setup:
                await conn.execute(statement)
            if not self.autocommit:
                await conn.commit()
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            if self._conn is not None:
                await self._conn.close()
