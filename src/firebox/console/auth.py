"""Who may use the console and what each role may do: users, password hashes, roles and
their permissions (a table), sessions in a signed cookie, CSRF tokens.

Passwords are stored as scrypt hashes (``hashlib.scrypt``, RFC 7914) in the configuration,
never in clear: ``hash_password`` makes one (``firebox console hash-password`` prints one).
A session is an opaque random id in a cookie signed with HMAC-SHA256, so a forged or
altered cookie is refused before any look-up; the session itself (user, CSRF token) stays
in the server, so signing out ends it at once. The cookie is ``HttpOnly`` and
``SameSite=Strict``, and every state-changing request must also carry the session's CSRF
token (a form field or the ``X-CSRF-Token`` header): either alone would stop a cross-site
request; together they also cover an old browser that ignores SameSite.

Sans-I/O: nothing here reads a clock (times are passed in) or does I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "PERMISSIONS",
    "AuthError",
    "ConsoleUser",
    "Permission",
    "Role",
    "Session",
    "SessionStore",
    "Sessions",
    "demo_users",
    "hash_password",
    "load_users",
    "verify_password",
]


class AuthError(ValueError):
    """A user table or a password hash that cannot be used; the message says which and why."""


class Role(StrEnum):
    CALL_TAKER = "call-taker"
    DISPATCHER = "dispatcher"
    SUPERVISOR = "supervisor"
    ADMINISTRATOR = "administrator"


class Permission(StrEnum):
    VIEW_CALLS = "view calls"  # the call queue and a call's details
    HANDLE_CALLS = "handle calls"  # answer, release, hold, transfer, text (needs a position)
    CALLBACKS = "callbacks"  # record a callback attempt on an abandoned call
    VIEW_CAD = "view incidents and units"
    CREATE_INCIDENT = "create incidents"
    DISPATCH = "dispatch"  # dispatch units, incident status, close
    VIEW_STATS = "view statistics"  # NENA-STA-020 answer times, positions
    VIEW_AUDIT = "view the audit trail"
    APPROVE_ALERTS = "approve public alerts"  # CAP drafts of 911 outages (issue 7)


_P = Permission
#: What each role may do. A call-taker answers and starts incidents; a dispatcher sends units
#: and follows incidents (sees the queue, takes no call); a supervisor does both and sees the
#: PSAP's figures; an administrator sees everything and reads the audit trail, but takes no
#: call and dispatches nothing (what an auditor does should not be audited as dispatching).
#: Only a supervisor approves a public alert: it speaks to every phone in the towns named.
PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.CALL_TAKER: frozenset({_P.VIEW_CALLS, _P.HANDLE_CALLS, _P.CALLBACKS, _P.VIEW_CAD, _P.CREATE_INCIDENT}),
    Role.DISPATCHER: frozenset({_P.VIEW_CALLS, _P.VIEW_CAD, _P.CREATE_INCIDENT, _P.DISPATCH}),
    Role.SUPERVISOR: frozenset({
        _P.VIEW_CALLS, _P.HANDLE_CALLS, _P.CALLBACKS, _P.VIEW_CAD, _P.CREATE_INCIDENT, _P.DISPATCH, _P.VIEW_STATS,
        _P.APPROVE_ALERTS,
    }),
    Role.ADMINISTRATOR: frozenset({_P.VIEW_CALLS, _P.VIEW_CAD, _P.VIEW_STATS, _P.VIEW_AUDIT}),
}  # fmt: skip


# --- passwords ---------------------------------------------------------------------------------

#: scrypt cost (RFC 7914): N=2**14, r=8, p=1 is about 16 MiB and tens of milliseconds: slow
#: for a guesser, quick enough for a sign-in.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCHEME = "scrypt"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$N$r$p$salt$hash`` (salt and hash base64url): the form kept in the users table."""
    if not password:
        raise AuthError("a password must not be empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
    return f"{_SCHEME}${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        raise AuthError("password hash: expected scrypt$N$r$p$salt$hash (make one with `firebox console hash-password`)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError as exc:
        raise AuthError(f"password hash: unreadable ({exc})") from None
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or not salt or len(digest) < 16:
        raise AuthError("password hash: N must be a power of two, r 1..64, p 1..16, with a salt and a 16+ byte hash")
    return n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; compared in constant time."""
    n, r, p, salt, digest = _parse_hash(stored)
    got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=len(digest))
    return hmac.compare_digest(got, digest)


# --- users -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """One person who may sign in: a role, the PSAP they work for, and for a call-taker (or a
    supervisor who takes calls) the position they sign in to."""

    name: str
    role: Role
    psap_id: str
    password_hash: str
    position: str | None = None
    display_name: str | None = None

    def can(self, permission: Permission) -> bool:
        if permission is Permission.HANDLE_CALLS and self.position is None:
            return False  # answering needs a position to answer at
        return permission in PERMISSIONS[self.role]

    @property
    def label(self) -> str:
        return self.display_name or self.name


def load_users(entries: Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]) -> dict[str, ConsoleUser]:
    """The users table from configuration data: a list of mappings with ``name``, ``role``,
    ``psap``, ``password_hash`` and optional ``position`` and ``display_name`` (or a mapping
    name -> the same without ``name``). Every problem is named with the entry it is in."""
    if isinstance(entries, Mapping):
        entries = [{"name": k, **dict(v)} for k, v in entries.items()]
    users: dict[str, ConsoleUser] = {}
    allowed = {"name", "role", "psap", "password_hash", "position", "display_name"}
    for i, e in enumerate(entries):
        where = f"users[{i}]" + (f" ({e.get('name')})" if isinstance(e, Mapping) and e.get("name") else "")
        if not isinstance(e, Mapping):
            raise AuthError(f"{where}: must be a mapping")
        unknown = sorted(set(e) - allowed)
        if unknown:
            raise AuthError(f"{where}: unknown keys {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
        for key in ("name", "role", "psap", "password_hash"):
            if not isinstance(e.get(key), str) or not e[key].strip():
                raise AuthError(f"{where}: {key} is required (a non-empty string)")
        try:
            role = Role(e["role"])
        except ValueError:
            raise AuthError(f"{where}: role {e['role']!r} is not one of {', '.join(r.value for r in Role)}") from None
        try:
            _parse_hash(e["password_hash"])
        except AuthError as exc:
            raise AuthError(f"{where}: {exc}") from None
        if e["name"] in users:
            raise AuthError(f"{where}: user {e['name']!r} appears twice")
        position = e.get("position")
        if position is not None and (not isinstance(position, str) or not position.strip()):
            raise AuthError(f"{where}: position must be a non-empty string")
        if role is Role.CALL_TAKER and position is None:
            raise AuthError(f"{where}: a call-taker needs a position")
        users[e["name"]] = ConsoleUser(e["name"], role, e["psap"], e["password_hash"], position, e.get("display_name"))
    return users


# --- sessions --------------------------------------------------------------------------------


@dataclass(slots=True)
class Session:
    id: str
    user: ConsoleUser
    csrf: str
    started: datetime
    last_seen: datetime
    notices: list[str] = field(default_factory=list)  # shown once on the next page


class SessionStore(Protocol):
    """What the console needs of a session store: the in-memory ``Sessions`` (one node) or
    ``firebox.console.sessions_pg.PgSessions`` (a cluster's nodes on one PostgreSQL). A
    cookie is ``id.signature`` in both, so one secret makes their cookies interchangeable."""

    def start(self, user: ConsoleUser, now: datetime) -> tuple[Session, str]: ...

    def get(self, cookie: str | None, now: datetime) -> Session | None: ...

    def end(self, session: Session) -> None: ...

    def of_user(self, name: str) -> list[Session]: ...

    def csrf_ok(self, session: Session, token: str | None) -> bool: ...


def session_cookie(secret: bytes, sid: str) -> str:
    """The cookie value naming session ``sid``: ``id.signature`` (HMAC-SHA256 with ``secret``)."""
    return f"{sid}.{_b64(hmac.new(secret, sid.encode('ascii'), hashlib.sha256).digest())}"


def cookie_session_id(secret: bytes, cookie: str | None) -> str | None:
    """The session id a cookie names when its signature is good; None when absent or forged."""
    if not cookie or "." not in cookie:
        return None
    sid, _, _sig = cookie.rpartition(".")
    try:
        good = hmac.compare_digest(cookie.encode("ascii"), session_cookie(secret, sid).encode("ascii"))
    except (UnicodeEncodeError, ValueError):
        return None
    return sid if good else None


class Sessions:
    """Signed-in sessions, keyed by a random id; the cookie value is ``id.signature``.
    Idle sessions end after ``idle`` (a console left signed in on an empty desk)."""

    def __init__(self, secret: bytes, *, idle: timedelta = timedelta(hours=12)):
        if len(secret) < 16:
            raise AuthError("the session secret must be at least 16 bytes")
        self._secret = secret
        self._idle = idle
        self._sessions: dict[str, Session] = {}

    def start(self, user: ConsoleUser, now: datetime) -> tuple[Session, str]:
        """A new session and the cookie value that names it."""
        sid = secrets.token_urlsafe(24)
        session = Session(sid, user, secrets.token_urlsafe(24), now, now)
        self._sessions[sid] = session
        return session, session_cookie(self._secret, sid)

    def get(self, cookie: str | None, now: datetime) -> Session | None:
        """The session a cookie names: None when absent, forged, ended or idle too long."""
        sid = cookie_session_id(self._secret, cookie)
        if sid is None:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        if now - session.last_seen > self._idle:
            del self._sessions[sid]
            return None
        session.last_seen = now
        return session

    def end(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    def of_user(self, name: str) -> list[Session]:
        return [s for s in self._sessions.values() if s.user.name == name]

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(session.csrf.encode(), (token or "").encode())


def demo_users(psaps: Mapping[str, Iterable[str]], password: str) -> dict[str, ConsoleUser]:
    """Users for a demonstration (``make demo``), all with ``password``: per PSAP (id ->
    its positions) a call-taker per position (``<psap>-ct<n>``), a dispatcher
    (``<psap>-dispatcher``) and a supervisor (``<psap>-supervisor``); and one
    ``admin`` (administrator) bound to the first PSAP. One hash serves all: a demo, not a
    deployment (a deployment lists its users with their own hashes)."""
    stored = hash_password(password)
    users: dict[str, ConsoleUser] = {}
    for psap_id, positions in psaps.items():
        for n, position in enumerate(positions, 1):
            name = f"{psap_id}-ct{n}"
            users[name] = ConsoleUser(name, Role.CALL_TAKER, psap_id, stored, position)
        for role in (Role.DISPATCHER, Role.SUPERVISOR):
            name = f"{psap_id}-{role.value}"
            users[name] = ConsoleUser(name, role, psap_id, stored)
    if psaps:
        users["admin"] = ConsoleUser("admin", Role.ADMINISTRATOR, next(iter(psaps)), stored)
    return users
