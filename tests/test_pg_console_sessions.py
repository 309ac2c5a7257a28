"""Console sessions shared by two nodes on the real PostgreSQL (``PgSessions``, issue 8): a
console signed in on node A keeps working on node B (state, CSRF, incidents on a shared CAD),
a sign-out on either ends it on both, forged cookies and idle sessions are refused, and while
the database is away a node keeps the sessions it served in the last minute and refuses the
others (through a TCP proxy on 127.0.0.1 that the test cuts and restores)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_kit import pg_url  # noqa: F401 -- the fixture
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from test_console_app import USERS, Clock, client, is_problem, signed_in

from firebox.cad.service import Cad
from firebox.cad.store import open_cad_store
from firebox.console.app import COOKIE, console_app
from firebox.console.audit import ConsoleAudit
from firebox.console.auth import Sessions
from firebox.console.sessions_pg import PgSessions

SECRET = b"one-secret-for-every-node-0123456789"
IDLE = timedelta(minutes=30)


@dataclass
class Node:
    app: Any
    cad: Cad
    sessions: PgSessions
    audit: ConsoleAudit


@pytest.fixture
def nodes(pg_url: str, tmp_path: Path) -> Iterator[tuple[Node, Node, Clock]]:  # noqa: F811
    """Two consoles as ``test_console_app``'s fixture builds one, each with its own CAD store
    and ``PgSessions`` on the same database (as two nodes of a cluster), one clock."""
    clock = Clock()
    built: list[Node] = []
    for name in ("a", "b"):
        cad = Cad(open_cad_store(pg_url), fqdn="cad.example.net")
        sessions = PgSessions(pg_url, SECRET, users=USERS, idle=IDLE)
        audit = ConsoleAudit(tmp_path / f"audit-{name}.db")
        app = console_app(cad=cad, users=USERS, audit=audit, clock=clock, cad_poll_s=None, sessions=sessions)
        built.append(Node(app, cad, sessions, audit))
    yield built[0], built[1], clock
    for n in built:
        n.sessions.close()
        n.cad.repo.close()  # type: ignore[attr-defined]


def on(node: Node, cookie: str) -> Any:
    """A client of ``node`` carrying a cookie got from another node."""
    c = client(node.app)
    c.cookies.set(COOKIE, cookie)
    return c


async def test_a_session_moves_to_the_other_node(nodes: tuple[Node, Node, Clock]) -> None:
    a, b, _ = nodes
    ca, csrf = await signed_in(a.app, "dan")
    cookie = ca.cookies[COOKIE]
    async with aclosing(ca), aclosing(on(b, cookie)) as cb:
        state = (await cb.get("/api/state")).json()
        assert state["user"]["name"] == "dan" and state["user"]["csrf"] == csrf
        h = {"X-CSRF-Token": csrf, "Accept": "application/json"}
        r = await cb.post("/incidents", json={"type": "fire", "subtype": "structure fire", "priority": 1,
                                              "lat": "42.3605", "lon": "-71.0590", "description": "smoke on B"}, headers=h)  # fmt: skip
        assert r.status_code == 201, r.text
        iid = r.json()["incident"]["id"]
        seen_on_a = await ca.get(f"/incidents/{iid}")
        assert seen_on_a.status_code == 200 and "smoke on B" in seen_on_a.text
        is_problem(await cb.post("/incidents", json={"type": "fire", "subtype": "structure fire"},
                                 headers={**h, "X-CSRF-Token": "not-the-token"}), 403, "CSRF")  # fmt: skip
        # Sign out on B: the session ends on A too, at its next request.
        r = await cb.post("/signout", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/signin"
        is_problem(await ca.get("/api/state"), 401, "sign in")
        is_problem(await on(b, cookie).get("/api/state"), 401, "sign in")
    assert [(e.action, e.outcome) for e in b.audit.entries(user="dan")] == [
        ("sign-out", "ok"), ("incident create", "denied: csrf"), ("incident create", "ok"),
    ]  # fmt: skip
    assert [e.action for e in a.audit.entries(user="dan")] == ["sign-in"]


async def test_forged_and_unknown_cookies_are_refused(nodes: tuple[Node, Node, Clock]) -> None:
    a, b, _ = nodes
    ca, _ = await signed_in(a.app, "ann")
    sid, _, sig = ca.cookies[COOKIE].rpartition(".")
    other = Sessions(b"another-secret-0123456789abcdef")
    _, other_cookie = other.start(USERS["ann"], Clock()())
    # Signed with the right secret but never stored: an in-memory session of another node.
    _, unstored = Sessions(SECRET).start(USERS["ann"], Clock()())
    async with aclosing(ca):
        for forged in (f"{sid}.{sig[:-2]}xx", f"{sid}x.{sig}", other_cookie, unstored, "garbage", sid):
            async with aclosing(on(b, forged)) as cb:
                is_problem(await cb.get("/api/state"), 401, "sign in")
        assert (await ca.get("/api/state")).status_code == 200  # the real one still works


async def test_idle_expiry_is_cluster_wide(nodes: tuple[Node, Node, Clock]) -> None:
    a, b, clock = nodes
    ca, _ = await signed_in(a.app, "sue")
    cookie = ca.cookies[COOKIE]
    async with aclosing(ca), aclosing(on(b, cookie)) as cb:
        clock.now += IDLE - timedelta(minutes=1)
        assert (await cb.get("/api/state")).status_code == 200  # used on B: last_seen moves for A too
        clock.now += IDLE - timedelta(minutes=1)
        assert (await ca.get("/api/state")).status_code == 200
        clock.now += IDLE + timedelta(minutes=1)
        is_problem(await cb.get("/api/state"), 401, "sign in")
        is_problem(await ca.get("/api/state"), 401, "sign in")
    # The next sign-in deletes the expired row.
    c2, _ = await signed_in(b.app, "dan")
    await c2.aclose()
    with psycopg.connect(a.sessions._worker.conninfo) as conn:
        names = [r[0] for r in conn.execute("SELECT user_name FROM console_sessions")]
    assert names == ["dan"]


def test_users_are_this_nodes_and_of_user_spans_nodes(pg_url: str) -> None:  # noqa: F811
    clock = Clock()
    a = PgSessions(pg_url, SECRET, users=USERS)
    without_dan = {k: v for k, v in USERS.items() if k != "dan"}
    b = PgSessions(pg_url, SECRET, users=without_dan)
    try:
        _, dan = a.start(USERS["dan"], clock())
        assert a.get(dan, clock()) is not None
        assert b.get(dan, clock()) is None  # removed from B's configuration: refused there
        s1, ann1 = a.start(USERS["ann"], clock())
        s2, ann2 = b.start(USERS["ann"], clock())
        assert {s.id for s in a.of_user("ann")} == {s.id for s in b.of_user("ann")} == {s1.id, s2.id}
        b.end(s2)
        assert [s.id for s in a.of_user("ann")] == [s1.id]
        assert a.get(ann2, clock()) is None and b.get(ann1, clock()) is not None
        got = b.get(ann1, clock())
        assert got is not None and b.csrf_ok(got, s1.csrf) and not b.csrf_ok(got, None) and not b.csrf_ok(got, "x")
    finally:
        a.close()
        b.close()


# --- the database away -----------------------------------------------------------------------


class Proxy:
    """A TCP forwarder on 127.0.0.1 to PostgreSQL that the test can cut (every connection
    reset and the port closed), make silent (accepts and reads, never answers), and restore
    on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.silent = False
        self._socks: list[socket.socket] = []
        self._server: socket.socket | None = None
        self._acceptor: threading.Thread
        self._lock = threading.Lock()

    def start(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        self.port = self._server.getsockname()[1]
        self._server.settimeout(0.05)
        self._acceptor = threading.Thread(target=self._accept, args=(self._server,), daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            self._acceptor.join(timeout=5)  # it sees the change within 0.05 s; then the port is free
            server.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked on it (close alone would not)
            except OSError:
                pass
            s.close()

    def _accept(self, server: socket.socket) -> None:
        while self._server is server:
            try:
                down, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            up = socket.create_connection(self.target)
            with self._lock:
                self._socks += [down, up]
            for src, dst in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.silent:
                    dst.sendall(data)
        except OSError:
            pass


@pytest.fixture
def proxy(pg_url: str) -> Iterator[tuple[Proxy, str]]:  # noqa: F811
    params = conninfo_to_dict(pg_url)
    p = Proxy((str(params.get("host", "127.0.0.1")), int(params.get("port", 5432))))
    p.start()
    yield p, make_conninfo(pg_url, host="127.0.0.1", port=str(p.port))
    p.cut()


def wait_until_reachable(store: PgSessions, cookie: str, clock: Clock, *, rounds: int = 100) -> None:
    for _ in range(rounds):
        store.get(cookie, clock())
        if store.reachable:
            return
        time.sleep(0.05)
    raise AssertionError("the store never came back")


def test_database_away_keeps_recent_sessions_only(pg_url: str, proxy: tuple[Proxy, str]) -> None:  # noqa: F811
    prox, via_proxy = proxy
    clock = Clock()
    a = PgSessions(via_proxy, SECRET, users=USERS, wait_s=0.5)  # node A reaches the database through the proxy
    b = PgSessions(pg_url, SECRET, users=USERS)
    try:
        _, dan = a.start(USERS["dan"], clock())
        _, sue = b.start(USERS["sue"], clock())  # never seen by A
        _, ann = b.start(USERS["ann"], clock())
        assert a.get(ann, clock()) is not None  # seen by A ...
        clock.now += timedelta(minutes=2)  # ... two minutes ago
        assert a.get(dan, clock()) is not None  # served by A just now
        prox.cut()
        assert a.get(dan, clock()) is not None and not a.reachable  # the database is away: from memory
        assert a.get(sue, clock()) is None  # a cookie new to A: fail closed
        assert a.get(ann, clock()) is None  # seen more than a minute ago: refused too
        assert a.get(dan, clock()) is not None
        # Sign-in and sign-out while away: at once on A, on B once the database is back.
        ada_session, ada = a.start(USERS["ada"], clock())
        assert a.get(ada, clock()) is ada_session and b.get(ada, clock()) is None
        dan_session = a.get(dan, clock())
        assert dan_session is not None
        a.end(dan_session)
        assert a.get(dan, clock()) is None
        assert b.get(dan, clock()) is not None  # B cannot know yet
        assert [s.user.name for s in a.of_user("ada")] == ["ada"]  # from memory
        prox.start()  # the same port again
        wait_until_reachable(a, ada, clock)
        assert b.get(ada, clock()) is not None  # the sign-in kept back is written
        assert b.get(dan, clock()) is None  # and the sign-out
        assert a.get(sue, clock()) is not None  # and A asks the database again
    finally:
        a.close()
        b.close()


def test_a_silent_database_blocks_the_caller_once_then_not_at_all(pg_url: str, proxy: tuple[Proxy, str]) -> None:  # noqa: F811
    prox, via_proxy = proxy
    clock = Clock()
    a = PgSessions(via_proxy, SECRET, users=USERS, wait_s=0.3)
    try:
        _, dan = a.start(USERS["dan"], clock())
        prox.silent = True  # connections stay open; nothing comes back
        clock.now += timedelta(seconds=10)  # past touch_every: this get writes, and waits wait_s
        assert a.get(dan, clock()) is not None and not a.reachable
        assert a.get(dan, clock()) is not None  # no wait while down (the probe runs on the thread)
        prox.silent = False
        prox.cut()
        prox.start()
        wait_until_reachable(a, dan, clock)
        assert a.get(dan, clock()) is not None
    finally:
        a.close()

