"""The Policy Store's storage (NENA-STA-010.3 section 4.9), the same cases against SQLite and
against a real PostgreSQL (a scratch database, dropped afterwards): versions, documents
kept byte for byte, expiry, optimistic concurrency (also under concurrent writers), owners
and types fixed for a policy's life, deletion keeping the version count."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from firebox.logging.testing import postgres_unavailable, scratch_postgres
from firebox.policy.store import (
    PolicyExists,
    PolicyMismatch,
    PolicyMissing,
    PolicyStore,
    VersionConflict,
    open_store,
)

PG_SKIP = postgres_unavailable()
NOW = 1_800_000_000_000_000  # microseconds since the epoch (2027)
HOUR = 3_600_000_000
ESRP = "OriginationRoutePolicy"


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    if PG_SKIP:
        pytest.fail(f"PostgreSQL is part of the test set-up (.ci/run starts it): {PG_SKIP}")
    with scratch_postgres("firebox_policytest") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[PolicyStore]:
    if request.param == "sqlite":
        s: PolicyStore = open_store(f"sqlite:///{tmp_path}/policies.db")
    else:
        url = request.getfixturevalue("pg_database")
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:  # each test starts empty
            conn.execute("DROP TABLE IF EXISTS policy_versions, policies")
        s = open_store(url)
    try:
        yield s
    finally:
        s.close()


# odd whitespace, key order and escapes: what is stored must come back exactly
DOC1 = b'{"payload":"e30",  "protected":"eyJhbGciOiJub25lIn0",\n "signature":""}\r\n'
DOC2 = b'{ "protected" : "eyJhbGciOiJub25lIn0", "payload":"e30", "signature":"" , "x":"\\u00e9\xc3\xa9"}'


def test_versions_are_kept_byte_for_byte(store):
    v1 = store.create("nights", "example.net", ESRP, DOC1, None, NOW)
    assert (v1.version, v1.owner, v1.policy_type) == (1, "example.net", ESRP)
    v2 = store.update("nights", "example.net", ESRP, DOC2, None, NOW + 1, expected=1)
    assert v2.version == 2
    cur = store.current("nights", NOW + 2)
    assert cur is not None and cur.document == DOC2 and cur.version == 2 and cur.created_us == NOW + 1
    old = store.version("nights", 1, NOW + 2)
    assert old is not None and old.document == DOC1
    assert store.version("nights", 3, NOW) is None
    assert [v.version for v in store.versions("nights", NOW) or []] == [1, 2]
    head = store.head("nights")
    assert head is not None and head.current == 2 and not head.deleted


def test_create_of_an_id_in_use_is_refused(store):
    store.create("p", "example.net", ESRP, DOC1, None, NOW)
    with pytest.raises(PolicyExists) as exc:
        store.create("p", "other.example", "BcfRules", DOC2, None, NOW)
    assert exc.value.head is not None and exc.value.head.owner == "example.net"
    assert store.current("p", NOW).document == DOC1  # type: ignore[union-attr]


def test_owner_and_type_are_fixed(store):
    store.create("p", "example.net", ESRP, DOC1, None, NOW)
    with pytest.raises(PolicyMismatch):
        store.update("p", "evil.example", ESRP, DOC2, None, NOW)
    with pytest.raises(PolicyMismatch):
        store.update("p", "example.net", "BcfRules", DOC2, None, NOW)
    with pytest.raises(PolicyMissing):
        store.update("nope", "example.net", ESRP, DOC2, None, NOW)
    assert store.head("p").current == 1  # type: ignore[union-attr]


def test_stale_version_conflicts(store):
    store.create("p", "example.net", ESRP, DOC1, None, NOW)
    store.update("p", "example.net", ESRP, DOC2, None, NOW, expected=1)
    with pytest.raises(VersionConflict) as exc:
        store.update("p", "example.net", ESRP, DOC1, None, NOW, expected=1)
    assert (exc.value.expected, exc.value.current) == (1, 2)
    with pytest.raises(VersionConflict):
        store.delete("p", expected=1)
    assert store.current("p", NOW).version == 2  # type: ignore[union-attr]


def test_concurrent_writers_each_get_a_distinct_version(store):
    """Eight threads each update from the version they last saw, retrying on conflict: every
    update lands exactly once and the versions have no gaps."""
    store.create("busy", "example.net", ESRP, DOC1, None, NOW)
    landed: list[int] = []
    conflicts = [0]

    def writer(n: int) -> None:
        for _ in range(5):
            while True:
                seen = store.head("busy").current  # type: ignore[union-attr]
                try:
                    landed.append(store.update("busy", "example.net", ESRP, DOC2, None, NOW, expected=seen).version)
                    break
                except VersionConflict:
                    conflicts[0] += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(landed) == list(range(2, 42))
    assert [v.version for v in store.versions("busy", NOW) or []] == list(range(1, 42))


def test_expired_policies_are_not_served_nor_listed(store):
    store.create("short", "example.net", ESRP, DOC1, NOW + HOUR, NOW)
    store.create("long", "example.net", "BcfRules", DOC2, None, NOW)
    assert store.current("short", NOW + HOUR - 1) is not None
    assert store.current("short", NOW + HOUR) is None
    assert store.version("short", 1, NOW + HOUR) is None
    assert store.versions("short", NOW + HOUR) is None
    page = store.query(NOW + HOUR)
    assert [p.policy_id for p in page.items] == ["long"] and page.total == 1
    # a renewal serves it again; the expired version stays unserved
    store.update("short", "example.net", ESRP, DOC2, NOW + 3 * HOUR, NOW + 2 * HOUR)
    assert store.current("short", NOW + 2 * HOUR).version == 2  # type: ignore[union-attr]
    assert store.version("short", 1, NOW + 2 * HOUR) is None
    assert [v.version for v in store.versions("short", NOW + 2 * HOUR) or []] == [2]


def test_query_filters_and_pages(store):
    for i in range(5):
        store.create(f"esrp-{i}", "a.example", ESRP, DOC1, None, NOW)
    store.create("bcf", "a.example", "BcfRules", DOC1, None, NOW)
    store.create("other", "b.example", ESRP, DOC1, None, NOW)
    assert store.query(NOW).total == 7
    assert [p.policy_id for p in store.query(NOW, owner="a.example", policy_type=ESRP, offset=1, limit=2).items] == [
        "esrp-1", "esrp-2"]  # fmt: skip
    assert store.query(NOW, owner="a.example", policy_type=ESRP).total == 5
    assert [p.policy_id for p in store.query(NOW, owner="b.example").items] == ["other"]
    assert store.query(NOW, policy_type="BcfRules").items[0].document == DOC1


def test_delete_keeps_history_and_the_version_count(store):
    store.create("p", "example.net", ESRP, DOC1, None, NOW)
    store.update("p", "example.net", ESRP, DOC2, None, NOW)
    assert store.delete("p", expected=2) == 2
    assert store.current("p", NOW) is None and store.versions("p", NOW) is None
    assert store.query(NOW).total == 0
    with pytest.raises(PolicyMissing):
        store.delete("p")
    with pytest.raises(PolicyMissing):
        store.update("p", "example.net", ESRP, DOC1, None, NOW)
    with pytest.raises(PolicyExists):  # the id stays its owner's
        store.create("p", "evil.example", ESRP, DOC1, None, NOW)
    again = store.create("p", "example.net", ESRP, DOC1, None, NOW)
    assert again.version == 3 and store.current("p", NOW).document == DOC1  # type: ignore[union-attr]


def test_reopened_store_keeps_everything(tmp_path):
    url = f"sqlite:///{tmp_path}/p.db"
    with open_store(url) as s:
        s.create("p", "example.net", ESRP, DOC2, None, NOW)
    with open_store(url) as s:
        assert s.current("p", NOW).document == DOC2  # type: ignore[union-attr]


def test_open_store_urls(tmp_path):
    with pytest.raises(ValueError):
        open_store("mysql://x")
    with pytest.raises(ValueError):
        open_store("sqlite://relative")
    open_store(str(tmp_path / "bare.db")).close()
