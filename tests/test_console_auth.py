"""Console users, password hashes, roles, sessions and CSRF tokens (firebox.console.auth)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from firebox.console.auth import (
    PERMISSIONS,
    AuthError,
    Permission,
    Role,
    Sessions,
    hash_password,
    load_users,
    verify_password,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FAST = 2**10  # scrypt cost for tests; the default is 2**14


def test_hash_round_trip_and_wrong_password() -> None:
    stored = hash_password("correct horse", n=FAST)
    assert stored.startswith(f"scrypt${FAST}$8$1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("", stored)


def test_hash_is_salted() -> None:
    assert hash_password("same", n=FAST) != hash_password("same", n=FAST)
    salt = b"0123456789abcdef"
    assert hash_password("same", n=FAST, salt=salt) == hash_password("same", n=FAST, salt=salt)


def test_default_cost_is_rfc7914_interactive() -> None:
    stored = hash_password("pw")
    assert stored.split("$")[1:4] == [str(2**14), "8", "1"]
    assert verify_password("pw", stored)


@pytest.mark.parametrize(
    ("stored", "says"),
    [
        ("plain-text-password", "expected scrypt$N$r$p$salt$hash"),
        ("bcrypt$1$2$3$aa$bb", "expected scrypt"),
        ("scrypt$1000$8$1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA", "power of two"),
        ("scrypt$x$8$1$c2FsdA$aGFzaA", "unreadable"),
    ],
)
def test_unusable_hashes_are_named(stored: str, says: str) -> None:
    with pytest.raises(AuthError, match=says.replace("$", r"\$")):
        verify_password("pw", stored)


def test_empty_password_refused() -> None:
    with pytest.raises(AuthError, match="must not be empty"):
        hash_password("")


def test_load_users_list_and_mapping() -> None:
    h = hash_password("pw", n=FAST)
    users = load_users([
        {"name": "ann", "role": "call-taker", "psap": "psap-01", "position": "pos-1", "password_hash": h},
        {"name": "sam", "role": "supervisor", "psap": "psap-01", "password_hash": h, "display_name": "Sam S."},
    ])  # fmt: skip
    assert users["ann"].role is Role.CALL_TAKER and users["ann"].position == "pos-1"
    assert users["sam"].label == "Sam S." and users["ann"].label == "ann"
    same = load_users({"ann": {"role": "call-taker", "psap": "psap-01", "position": "pos-1", "password_hash": h}})
    assert same["ann"] == users["ann"]


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"name": "x", "role": "janitor", "psap": "p", "password_hash": "H"}, "role 'janitor' is not one of"),
        ({"name": "x", "role": "dispatcher", "psap": "p"}, "password_hash is required"),
        ({"name": "x", "role": "dispatcher", "psap": "p", "password_hash": "secret"}, "expected scrypt"),
        ({"name": "x", "role": "call-taker", "psap": "p", "password_hash": "H"}, "a call-taker needs a position"),
        ({"name": "x", "role": "dispatcher", "psap": "p", "password_hash": "H", "pasword": 1}, "unknown keys pasword"),
    ],
)
def test_load_users_names_the_problem(entry: dict, says: str) -> None:
    if entry.get("password_hash") == "H":
        entry = {**entry, "password_hash": hash_password("pw", n=FAST)}
    with pytest.raises(AuthError, match=r"users\[0\] \(x\): .*" + says):
        load_users([entry])


def test_duplicate_user_refused() -> None:
    h = hash_password("pw", n=FAST)
    e = {"name": "x", "role": "dispatcher", "psap": "p", "password_hash": h}
    with pytest.raises(AuthError, match="appears twice"):
        load_users([e, e])


def test_role_table() -> None:
    h = hash_password("pw", n=FAST)
    users = load_users([
        {"name": "ct", "role": "call-taker", "psap": "p", "position": "pos-1", "password_hash": h},
        {"name": "di", "role": "dispatcher", "psap": "p", "password_hash": h},
        {"name": "su", "role": "supervisor", "psap": "p", "password_hash": h},
        {"name": "ad", "role": "administrator", "psap": "p", "password_hash": h},
    ])  # fmt: skip
    assert users["ct"].can(Permission.HANDLE_CALLS) and not users["ct"].can(Permission.DISPATCH)
    assert users["di"].can(Permission.DISPATCH) and not users["di"].can(Permission.HANDLE_CALLS)
    assert users["su"].can(Permission.VIEW_STATS) and not users["su"].can(Permission.VIEW_AUDIT)
    # A supervisor's role allows taking calls, but without a position there is nowhere to take them.
    assert Permission.HANDLE_CALLS in PERMISSIONS[Role.SUPERVISOR] and not users["su"].can(Permission.HANDLE_CALLS)
    assert users["ad"].can(Permission.VIEW_AUDIT) and not users["ad"].can(Permission.DISPATCH)
    assert set(PERMISSIONS) == set(Role)


def test_sessions_sign_forge_idle_end() -> None:
    h = hash_password("pw", n=FAST)
    user = load_users([{"name": "di", "role": "dispatcher", "psap": "p", "password_hash": h}])["di"]
    sessions = Sessions(b"k" * 32, idle=timedelta(minutes=30))
    session, cookie = sessions.start(user, T0)
    assert sessions.get(cookie, T0 + timedelta(minutes=1)) is session
    sid, sig = cookie.split(".")
    # Alter one character to one it is not (the cookie is random, so pick the substitute from it).
    def altered(text: str) -> str:
        return text[:-1] + ("B" if text[-1] == "A" else "A")

    assert sessions.get(f"{sid}.{altered(sig)}", T0) is None  # altered signature
    assert sessions.get(f"{altered(sid)}.{sig}", T0) is None  # altered id
    assert sessions.get(sid, T0) is None and sessions.get(None, T0) is None and sessions.get("ünï.cöde", T0) is None
    other = Sessions(b"z" * 32)
    assert other.get(cookie, T0) is None  # another key
    # Idle for longer than allowed: gone (each use moves last_seen on).
    assert sessions.get(cookie, T0 + timedelta(minutes=29)) is session
    assert sessions.get(cookie, T0 + timedelta(minutes=60)) is None
    session2, cookie2 = sessions.start(user, T0)
    assert sessions.of_user("di") == [session2]
    sessions.end(session2)
    assert sessions.get(cookie2, T0) is None


def test_csrf_token() -> None:
    h = hash_password("pw", n=FAST)
    user = load_users([{"name": "di", "role": "dispatcher", "psap": "p", "password_hash": h}])["di"]
    sessions = Sessions(b"k" * 32)
    session, _ = sessions.start(user, T0)
    assert Sessions.csrf_ok(session, session.csrf)
    assert not Sessions.csrf_ok(session, None)
    assert not Sessions.csrf_ok(session, "")
    assert not Sessions.csrf_ok(session, session.csrf + "x")
    other, _ = sessions.start(user, T0)
    assert not Sessions.csrf_ok(session, other.csrf)


def test_short_secret_refused() -> None:
    with pytest.raises(AuthError, match="at least 16 bytes"):
        Sessions(b"short")


def test_demo_users() -> None:
    from firebox.console.auth import demo_users

    users = demo_users({"psap-01": ["psap-01-desk"], "psap-02": ["p2a", "p2b"]}, "firebox")
    assert sorted(users) == [
        "admin", "psap-01-ct1", "psap-01-dispatcher", "psap-01-supervisor",
        "psap-02-ct1", "psap-02-ct2", "psap-02-dispatcher", "psap-02-supervisor",
    ]  # fmt: skip
    assert users["psap-02-ct2"].position == "p2b" and users["psap-02-ct2"].role is Role.CALL_TAKER
    assert users["admin"].role is Role.ADMINISTRATOR and users["admin"].psap_id == "psap-01"
    assert verify_password("firebox", users["psap-01-dispatcher"].password_hash)


def test_cli_hash_password() -> None:
    from typer.testing import CliRunner

    from firebox.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["console", "hash-password", "--stdin"], input="open sesame\n")
    assert out.exit_code == 0, out.output
    stored = out.output.strip()
    assert verify_password("open sesame", stored) and load_users([
        {"name": "x", "role": "dispatcher", "psap": "p", "password_hash": stored}
    ])["x"].name == "x"  # fmt: skip
    empty = runner.invoke(app, ["console", "hash-password", "--stdin"], input="\n")
    assert empty.exit_code == 1
