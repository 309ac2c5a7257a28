"""Console sessions shared by a cluster's nodes on PostgreSQL (issue 8: "consoles reconnect to
another node and show the same queue and incidents"), so that a call-taker whose node dies, or
whose load balancer moves them, is not signed out in the middle of a 911 call.

``PgSessions`` behaves as ``firebox.console.auth.Sessions`` (the ``SessionStore`` protocol):
the cookie is ``id.signature`` (HMAC-SHA256 with the session secret every node is given), so a
forged or altered cookie is refused before any look-up, and reading the table alone does not
let anyone make a cookie. One row per session in ``console_sessions``: the id (primary key),
the user's NAME, the CSRF token, ``created`` and ``last_seen``. The user is looked up in this
node's ``users`` on every ``get``: a user removed from a node's configuration is refused there.
Signing out deletes the row: the session ends on every node at its next request (each ``get``
asks the database; there is no cache of good answers while the database answers).
``last_seen`` (idle expiry, cluster-wide) is written at most every ``touch_every`` (5 s) per
session and node, not once per request. ``Session.notices`` (shown once on the next page) stay
in this node's memory: a notice made on node A is not shown on node B.

Blocking on the event loop: the console calls ``get`` synchronously on every request. The
statements run on one daemon thread that owns the connection, and the caller waits at most
``wait_s`` (1 s) for the answer. Measured on the development machine (2 cores shared with
other work, load average about 5; local PostgreSQL 15 over TCP on 127.0.0.1;
``bench/pg_console_sessions.py``, 2,000 look-ups, three runs): a ``get`` costs a median of
0.08-0.10 ms (p99 1.2-2.2 ms) when it only reads, 0.12-0.13 ms (p99 1.7-3.4 ms) when it also
writes ``last_seen``; the in-memory ``Sessions.get`` costs 0.002 ms. A tenth of a millisecond
per request is small enough to ask the database every time rather than cache good answers
(which would delay a sign-out on the other nodes).

When PostgreSQL cannot be reached (a failover, a partition): a console must not be thrown out
in the middle of a call, nor the node's event loop stall. So:

* a statement that fails, or has not answered within ``wait_s``, marks the store *down* (one
  that has not answered has its connection's socket shut down, so the thread is free again
  even when the peer is a frozen proxy that acknowledges and never answers); while down no
  caller waits at all: a probe (reconnect, then the writes kept back, then ``SELECT 1``) runs
  on the thread, at most once a second (and is broken off after 5 s), and the store is *up*
  again when one succeeds. The loop is blocked at most ``wait_s`` once per outage;
* while down, ``get`` fails closed for a cookie this node has not served in the last
  ``grace`` (one minute): a session it has served within that minute keeps working from this
  node's memory (and stays served as long as its console keeps asking: its ``last_seen`` here
  is renewed), with its idle expiry. A sign-out made on another node during the outage is not
  seen here until the database is back;
* ``start`` (sign-in) and ``end`` (sign-out) made while down take effect on this node at once
  and are written when the database is back (``INSERT ... ON CONFLICT DO NOTHING``,
  ``DELETE``: repeating them is harmless), before any other statement, in order; until then
  the other nodes do not know the new session, and still accept the ended one;
* ``of_user`` answers from this node's memory.

Connections (unless the URL sets its own): ``connect_timeout`` 2 s, ``tcp_user_timeout`` 2 s and TCP keepalives (a server
that vanished breaks the connection instead of hanging the thread), ``statement_timeout`` 2 s
(a server that is slow or waiting on a lock). Expired rows are deleted at each sign-in.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from firebox.console.auth import (
    AuthError,
    ConsoleUser,
    Session,
    cookie_session_id,
    session_cookie,
)

__all__ = ["PgSessions", "SCHEMA"]

log = logging.getLogger("firebox.console.sessions")

#: The one table (created if missing, under an advisory lock: two nodes start at once).
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS console_sessions (
        id text PRIMARY KEY,
        user_name text NOT NULL,
        csrf text NOT NULL,
        created timestamptz NOT NULL,
        last_seen timestamptz NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS console_sessions_user ON console_sessions (user_name)",
)
_LOCK_KEY = 7244051
#: How long a probe may take before its connection is broken (a connect is bounded at 2 s).
_PROBE_S = 5.0

Statement = tuple[str, tuple[Any, ...]]
#: libpq parameters unless the URL sets them: tighter than ``firebox.pglink``'s, as a
#: console's every request waits on this link.
_LINK = {"connect_timeout": "2", "tcp_user_timeout": "2000", "keepalives": "1", "keepalives_idle": "5",
         "keepalives_interval": "2", "keepalives_count": "2"}  # fmt: skip


class _Unavailable(Exception):
    """The database did not answer (in time): the caller falls back to this node's memory."""


class _Worker:
    """One daemon thread owning one connection; runs batches of statements in order and
    answers each batch through a future (the rows of its last statement). A daemon, so a
    statement stuck on a dead server never keeps the process from exiting; and ``interrupt``
    unsticks one that waits on a peer that accepts but never answers (a frozen proxy: TCP
    keepalives and ``tcp_user_timeout`` see nothing wrong there)."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._conn: Any = None
        self._current: Future[list[Any] | None] | None = None
        self._lock = threading.Lock()  # held while the connection is replaced or closed
        self._jobs: queue.SimpleQueue[tuple[Future[list[Any] | None], list[Statement]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="pg-console-sessions", daemon=True)
        self._thread.start()

    def connect(self) -> Any:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        given = conninfo_to_dict(self.conninfo)  # a value the URL sets itself wins
        conn = psycopg.connect(
            make_conninfo(self.conninfo, **{k: v for k, v in _LINK.items() if k not in given}), autocommit=True,
        )  # fmt: skip
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute("SET statement_timeout = '2s'")
        return conn

    def submit(self, statements: list[Statement]) -> Future[list[Any] | None]:
        fut: Future[list[Any] | None] = Future()
        self._jobs.put((fut, statements))
        return fut

    def interrupt(self, fut: Future[list[Any] | None]) -> None:
        """If ``fut``'s batch is running, break its connection (shut the socket down both
        ways): the statement fails at once and the next batch reconnects. Under the lock, so
        the socket shut is the one of the connection in use, never a reused descriptor."""
        with self._lock:
            if self._current is not fut or self._conn is None or self._conn.closed:
                return
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=os.dup(self._conn.fileno()))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()

    def close(self) -> None:
        self._jobs.put(None)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fut, statements = job
            if not fut.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._current = fut
            try:
                fut.set_result(self._run(statements))
            except BaseException as exc:  # noqa: BLE001 -- handed to the caller through the future
                fut.set_exception(exc)
            finally:
                with self._lock:
                    self._current = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def _run(self, statements: list[Statement]) -> list[Any] | None:
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
            conn = self.connect()
            with self._lock:
                self._conn = conn
        rows: list[Any] | None = None
        try:
            for sql, args in statements:
                cur = self._conn.execute(sql, args)
                rows = cur.fetchall() if cur.description is not None else None
        except psycopg.OperationalError:
            with self._lock:
                self._conn.close()  # reconnect on the next batch
            raise
        except BaseException:
            if self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self._conn.execute("ROLLBACK")  # a failed batch leaves no transaction open
            raise
        return rows


@dataclass(slots=True)
class _Known:
    """A session this node has served: the object itself (its notices live here) and the
    ``last_seen`` this node last wrote to the table."""

    session: Session
    written: datetime


class PgSessions:
    """Signed-in sessions in PostgreSQL, shared by every node given the same ``conninfo`` and
    ``secret``; see the module docstring for what happens when the database is away."""

    def __init__(
        self,
        conninfo: str,
        secret: bytes,
        *,
        users: Mapping[str, ConsoleUser],
        idle: timedelta = timedelta(hours=12),
        grace: timedelta = timedelta(minutes=1),
        touch_every: timedelta = timedelta(seconds=5),
        wait_s: float = 1.0,
    ) -> None:
        if len(secret) < 16:
            raise AuthError("the session secret must be at least 16 bytes")
        self._secret = secret
        self._users = users
        self._idle, self._grace, self._touch_every = idle, grace, touch_every
        self._wait_s = wait_s
        self._known: dict[str, _Known] = {}
        self._pending: list[Statement] = []  # sign-ins and sign-outs made while down, in order
        self._down = False
        self._probe: Future[list[Any] | None] | None = None
        self._probe_at = 0.0
        self._pruned: datetime | None = None
        self._now: datetime | None = None  # the latest time start or get was given
        self._probe_n = 0  # how many of the writes kept back the probe carries
        self._worker = _Worker(conninfo)
        # The table first, synchronously: a node whose database is unreachable at start-up
        # fails to start (as its CAD store does), rather than serving without it.
        try:
            self._call([("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,)), *((s, ()) for s in SCHEMA)],
                       wait_s=30.0, transaction=True)  # fmt: skip
        except _Unavailable as exc:
            self.close()
            raise ConnectionError(f"console sessions: PostgreSQL unusable at start-up: {exc}") from exc

    def close(self) -> None:
        """Stop the thread (and close its connection once its current batch is done)."""
        self._worker.close()

    @property
    def reachable(self) -> bool:
        """False while the database is treated as away (sessions served from memory)."""
        return not self._down

    # --- the database, bounded -------------------------------------------------------------

    def _call(self, statements: Sequence[Statement], *, wait_s: float | None = None, transaction: bool = False) -> list[Any] | None:
        """Run ``statements`` (after any writes kept back) and return the last one's rows;
        ``_Unavailable`` at once while down, or when the database fails or is slower than
        ``wait_s``."""
        if self._down and not self._recovered():
            raise _Unavailable("the session database is unreachable")
        carried = len(self._pending)
        batch = [*self._pending, *statements]
        if transaction:
            batch = [("BEGIN", ()), *batch, ("COMMIT", ())]
        fut = self._worker.submit(batch)
        try:
            rows = fut.result(timeout=wait_s if wait_s is not None else self._wait_s)
        except FutureTimeout:
            self._worker.interrupt(fut)
            self._went_down(f"no answer within {self._wait_s:g} s")
            raise _Unavailable("the session database did not answer in time") from None
        except Exception as exc:  # noqa: BLE001 -- any failure: fall back, and say why
            self._went_down(f"{type(exc).__name__}: {exc}")
            raise _Unavailable(str(exc)) from exc
        del self._pending[:carried]
        return rows

    def _went_down(self, why: str) -> None:
        if not self._down:
            log.warning("console sessions: PostgreSQL unreachable (%s): serving the sessions seen here in the last %s "
                        "from memory, refusing others", why, self._grace)  # fmt: skip
        self._down = True
        self._probe, self._probe_at = None, time.monotonic()

    def _recovered(self) -> bool:
        """While down: True once a probe has succeeded; otherwise start one (at most once a
        second, never waiting for it)."""
        probe = self._probe
        if probe is not None and probe.done():
            self._probe = None
            if probe.exception() is None:
                self._down = False
                del self._pending[: self._probe_n]  # the probe wrote them (later ones stay, in order)
                log.warning("console sessions: PostgreSQL reachable again")
                return True
        if probe is not None and not probe.done() and time.monotonic() - self._probe_at > _PROBE_S:
            self._worker.interrupt(probe)  # a probe stuck on a peer that never answers
        if self._probe is None and time.monotonic() - self._probe_at >= 1.0:
            self._probe_at, self._probe_n = time.monotonic(), len(self._pending)
            self._probe = self._worker.submit([*self._pending, ("SELECT 1", ())])
        return False

    # --- cookies ---------------------------------------------------------------------------

    def _sid(self, cookie: str | None) -> str | None:
        """The session id a cookie names if its signature is good (as ``Sessions.get``)."""
        return cookie_session_id(self._secret, cookie)

    # --- the SessionStore protocol ---------------------------------------------------------

    def start(self, user: ConsoleUser, now: datetime) -> tuple[Session, str]:
        """A new session and its cookie; written to the table (or kept back while down, and
        served by this node meanwhile)."""
        self._now = now
        sid = secrets.token_urlsafe(24)
        session = Session(sid, user, secrets.token_urlsafe(24), now, now)
        self._known[sid] = _Known(session, now)
        insert: Statement = (
            "INSERT INTO console_sessions (id, user_name, csrf, created, last_seen) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO NOTHING",
            (sid, user.name, session.csrf, now, now),
        )
        try:
            self._call([insert, ("DELETE FROM console_sessions WHERE last_seen < %s", (now - self._idle,))])
        except _Unavailable:
            self._pending.append(insert)
            log.warning("console sessions: %s signed in on this node only until PostgreSQL is back", user.name)
        return session, session_cookie(self._secret, sid)

    def get(self, cookie: str | None, now: datetime) -> Session | None:
        """The session a cookie names: None when absent, forged, ended (on any node), idle too
        long, or its user is not in this node's ``users``. While the database is away: only a
        session served here within ``grace``."""
        sid = self._sid(cookie)
        if sid is None:
            return None
        self._now = now
        self._prune(now)
        known = self._known.get(sid)
        cutoff = now - self._idle
        try:
            if known is None or now - known.written >= self._touch_every:
                mine = known.session.last_seen if known is not None else None  # GREATEST skips a NULL
                rows = self._call([(
                    "UPDATE console_sessions SET last_seen = GREATEST(last_seen, %s) "
                    "WHERE id = %s AND GREATEST(last_seen, %s::timestamptz) >= %s RETURNING user_name, csrf, created, last_seen",
                    (now, sid, mine, cutoff),
                )])  # fmt: skip
                written = True
            else:
                rows = self._call([("SELECT user_name, csrf, created, last_seen FROM console_sessions WHERE id = %s", (sid,))])
                written = False
        except _Unavailable:
            return self._from_memory(sid, known, now)
        if not rows:
            self._known.pop(sid, None)  # ended elsewhere, or idle: the table is the truth
            return None
        name, csrf, created, last_seen = rows[0]
        if not written and now - max(last_seen, known.session.last_seen if known else last_seen) > self._idle:
            self._known.pop(sid, None)
            return None
        user = self._users.get(name)
        if user is None:
            self._known.pop(sid, None)
            log.warning("console sessions: %s is not a user on this node: session refused", name)
            return None
        if known is None:
            known = self._known[sid] = _Known(Session(sid, user, csrf, created, now), now)
        known.session.user = user  # this node's view of the user (its role, its position)
        known.session.last_seen = now
        if written:
            known.written = now
        return known.session

    def _from_memory(self, sid: str, known: _Known | None, now: datetime) -> Session | None:
        if known is None:
            return None  # fail closed: never served here
        idle_here = now - known.session.last_seen
        if idle_here > self._grace or idle_here > self._idle or known.session.user.name not in self._users:
            return None
        known.session.last_seen = now
        return known.session

    def end(self, session: Session) -> None:
        """Sign out everywhere: the row goes (or, while down, goes when the database is back;
        this node refuses the session at once)."""
        self._known.pop(session.id, None)
        delete: Statement = ("DELETE FROM console_sessions WHERE id = %s", (session.id,))
        try:
            self._call([delete])
        except _Unavailable:
            self._pending.append(delete)
            log.warning("console sessions: %s signed out on this node; the other nodes learn it when PostgreSQL is back",
                        session.user.name)  # fmt: skip

    def of_user(self, name: str) -> list[Session]:
        """The user's sessions on every node (not idle), as Session objects of this node."""
        # ``of_user`` is given no clock: the idle cut-off is from the last time this node was told.
        cutoff = self._now - self._idle if self._now is not None else None
        try:
            rows = self._call([(
                "SELECT id, csrf, created, last_seen FROM console_sessions "
                "WHERE user_name = %s AND (%s::timestamptz IS NULL OR last_seen >= %s)",
                (name, cutoff, cutoff),
            )]) or []  # fmt: skip
        except _Unavailable:
            return [k.session for k in self._known.values() if k.session.user.name == name]
        user = self._users.get(name)
        if user is None:
            return []
        out = []
        for sid, csrf, created, last_seen in rows:
            known = self._known.get(sid)
            out.append(known.session if known is not None else Session(sid, user, csrf, created, last_seen))
        return out

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(session.csrf.encode(), (token or "").encode())

    # --- memory ------------------------------------------------------------------------------

    def _prune(self, now: datetime) -> None:
        """Forget sessions idle longer than ``idle`` (once a minute)."""
        if self._pruned is not None and now - self._pruned < timedelta(minutes=1):
            return
        self._pruned = now
        for sid in [s for s, k in self._known.items() if now - k.session.last_seen > self._idle]:
            del self._known[sid]
