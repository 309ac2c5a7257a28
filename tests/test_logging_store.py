"""The Logging Service's storage (NENA-STA-010.3 section 4.12.3), the same cases against
SQLite and against a real PostgreSQL (a scratch database, dropped afterwards): appends and
duplicates, queries with paging, calls and incidents, conversations in order, the hash
chain and the first broken link, concurrent writers keeping the chain linear."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from firebox import jws as jwslib
from firebox.logging.events import (
    new_call_id,
    new_incident_id,
    new_log_event_id,
    parse_timestamp,
)
from firebox.logging.store import (
    GENESIS,
    AppendItem,
    Duplicate,
    Filter,
    LogStore,
    SqliteStore,
    StoredEvent,
    chain_hash,
    open_store,
    to_micros,
)
from firebox.logging.testing import call_events, postgres_unavailable, scratch_postgres

PG_SKIP = postgres_unavailable()
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    if PG_SKIP:
        pytest.fail(f"PostgreSQL is part of the test set-up (.ci/run starts it): {PG_SKIP}")
    with scratch_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[LogStore]:
    if request.param == "sqlite":
        s: LogStore = open_store(f"sqlite:///{tmp_path}/log.db")
    else:
        url = request.getfixturevalue("pg_database")
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:  # each test starts empty
            conn.execute("DROP TABLE IF EXISTS log_events, log_head")
        s = open_store(url)
    try:
        yield s
    finally:
        s.close()


def item(event: dict) -> AppendItem:
    signed = jwslib.sign(event, None)
    return AppendItem(
        new_log_event_id("logs.example.net"), event, jwslib.serialize(signed).decode(),
        to_micros(parse_timestamp(event["timestamp"])),
    )  # fmt: skip


def a_call(start: datetime = T0, **kw) -> tuple[str, str, list[dict]]:
    call, incident = new_call_id("bcf.example.net"), new_incident_id("bcf.example.net")
    return call, incident, call_events(call, incident, start=start, **kw)


def test_append_get_and_chain(store):
    call, incident, events = a_call()
    results = store.append([item(e) for e in events])
    assert all(isinstance(r, StoredEvent) for r in results)
    assert [r.sequence for r in results] == list(range(1, len(events) + 1))
    assert results[0].prev_hash == GENESIS
    for prev, r in itertools.pairwise(results):
        assert r.prev_hash == prev.hash == chain_hash(prev.prev_hash, prev.sequence, prev.log_event_id, prev.jws)
    got = store.get(results[3].log_event_id)
    assert got == results[3]
    assert got.call_id == call and got.incident_id == incident and got.log_event_type == "LostResponseLogEvent"
    assert jwslib.verify(got.jws, allow_none=True).payload == events[3]
    assert store.get("urn:emergency:uid:logid:nope:x.net") is None
    assert store.count() == len(events) and store.verify() is None


def test_duplicates_in_the_store_and_in_one_batch(store):
    _, _, events = a_call()
    first = store.append_one(item(events[0]))
    again = store.append([item(events[0]), item(events[1]), item(events[1])])
    assert isinstance(again[0], Duplicate) and again[0].existing.log_event_id == first.log_event_id
    assert isinstance(again[1], StoredEvent) and again[1].sequence == 2
    assert isinstance(again[2], Duplicate) and again[2].existing.log_event_id == again[1].log_event_id
    assert store.count() == 2 and store.verify() is None
    assert store.by_client_id(events[1]["clientAssignedIdentifier"]).sequence == 2
    no_cid = {k: v for k, v in events[2].items() if k != "clientAssignedIdentifier"}
    assert all(isinstance(r, StoredEvent) for r in store.append([item(no_cid), item(no_cid)]))


def test_queries_paging_calls_incidents(store):
    calls = [a_call(T0 + timedelta(minutes=i), element=f"esrp{i % 2}.example.net") for i in range(4)]
    for _, _, events in calls:
        store.append([item(e) for e in events])
    n = len(calls[0][2])
    total = store.query(Filter())
    assert total.total == 4 * n and len(total.items) == min(100, 4 * n)
    page = store.query(Filter(), offset=5, limit=7)
    assert [e.sequence for e in page.items] == list(range(6, 13)) and page.total == 4 * n
    by_element = store.query(Filter(element_id="esrp1.example.net"))
    assert by_element.total == 2 * n and {e.element_id for e in by_element.items} == {"esrp1.example.net"}
    routes = store.query(Filter(log_event_type="RouteLogEvent"))
    assert routes.total == 4 and all(e.log_event_type == "RouteLogEvent" for e in routes.items)
    # time range on the events' own timestamps: the second and third call
    window = Filter(start_us=to_micros(T0 + timedelta(minutes=1)), end_us=to_micros(T0 + timedelta(minutes=2, seconds=30)))
    assert {e.call_id for e in store.query(window).items} == {calls[1][0], calls[2][0]}
    assert store.query(Filter(agency_id="other.net")).total == 0
    ids = store.call_ids(Filter())
    assert ids.items == [c[0] for c in calls] and ids.total == 4
    assert store.call_ids(Filter(), offset=1, limit=2).items == [calls[1][0], calls[2][0]]
    assert store.call_ids(Filter(incident_id=calls[3][1])).items == [calls[3][0]]
    assert store.incident_ids(window).items == [calls[1][1], calls[2][1]]
    lids = store.log_event_ids(Filter(call_id=calls[2][0]))
    assert lids.total == n and lids.items == [e.log_event_id for e in store.conversation(calls[2][0])]


def test_conversation_is_in_timestamp_order(store):
    call, _incident, events = a_call()
    store.append([item(e) for e in reversed(events)])  # arrive in reverse order
    other = a_call()[2]
    store.append([item(e) for e in other])
    conv = store.conversation(call)
    assert [e.log_event_type for e in conv] == [e["logEventType"] for e in events]
    assert [e.sequence for e in conv] == list(range(len(events), 0, -1))
    assert store.conversation("urn:emergency:uid:callid:none:x.net") == []


def tamper(store: LogStore, sql: str, args: tuple) -> None:
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute(sql.replace("%s", "?"), args)
    else:
        import psycopg

        with psycopg.connect(store.conninfo, autocommit=True) as conn:
            conn.execute(sql, args)


def test_verify_names_the_first_broken_link(store):
    _, _, events = a_call()
    stored = store.append([item(e) for e in events])
    victim = stored[4]
    forged = jwslib.serialize(jwslib.sign({**events[4], "cause": "forged"}, None)).decode()
    tamper(store, "UPDATE log_events SET jws = %s WHERE seq = %s", (forged, victim.sequence))
    broken = store.verify()
    assert broken is not None and (broken.sequence, broken.log_event_id) == (5, victim.log_event_id)
    assert "hash does not match" in broken.reason


def test_verify_finds_a_deleted_event_and_a_rewritten_chain(store):
    _, _, events = a_call()
    stored = store.append([item(e) for e in events])
    tamper(store, "DELETE FROM log_events WHERE seq = %s", (3,))
    broken = store.verify()
    assert broken is not None and broken.sequence == 3 and "missing" in broken.reason
    # re-hash event 4 to hide the gap from its own hash: prev_hash still breaks
    tamper(store, "UPDATE log_events SET seq = 3 WHERE seq = 4", ())
    broken = store.verify()
    assert broken is not None and (broken.sequence, broken.log_event_id) == (3, stored[3].log_event_id)
    assert "prev_hash" in broken.reason


def test_concurrent_writers_keep_one_linear_chain(store):
    """Eight threads append at once (several transactions in flight); one linear chain."""
    batches = [[item(e) for e in a_call()[2]] for _ in range(16)]
    errors: list[BaseException] = []

    def work(chunk):
        try:
            for b in chunk:
                store.append(b)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(batches[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.count() == sum(len(b) for b in batches) and store.verify() is None


def test_two_store_instances_share_one_chain(store, tmp_path):
    """Two stores on one database (two service processes, each with its own connections)
    appending at the same time still make one linear chain: the database serializes them
    (SQLite's BEGIN IMMEDIATE, PostgreSQL's lock on the log_head row)."""
    other = open_store(store.conninfo) if not isinstance(store, SqliteStore) else SqliteStore(store.path)
    batches = [[item(e) for e in a_call()[2]] for _ in range(12)]
    errors: list[BaseException] = []

    def work(target: LogStore, chunk: list) -> None:
        try:
            for b in chunk:
                target.append(b)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        threads = [threading.Thread(target=work, args=((store, other)[i % 2], batches[i::4])) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert other.count() == store.count() == 12 * 9 and store.verify() is None and other.verify() is None
    finally:
        other.close()


def test_postgres_store_reconnects_after_its_sessions_are_killed(pg_database):
    import psycopg

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS log_events, log_head")
    with open_store(pg_database) as store:
        store.append([item(e) for e in a_call()[2]])
        with psycopg.connect(pg_database, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")  # fmt: skip
        events = a_call()[2]
        with pytest.raises(psycopg.OperationalError):
            store.append([item(e) for e in events])  # this one meets the dead session
        stored = store.append([item(e) for e in events])  # and this one a new one
        assert all(isinstance(r, StoredEvent) for r in stored)
        for _ in range(4):  # each reader connection renews itself once
            try:
                store.count()
            except psycopg.OperationalError:
                pass
        assert store.count() == 18 and store.verify() is None


def test_open_store_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///rel.db") as s:
        assert s.path == "rel.db"
    with open_store(f"sqlite:///{tmp_path}/abs.db") as s:
        assert s.path == f"{tmp_path}/abs.db"
    with pytest.raises(ValueError, match="unknown store URL scheme"):
        open_store("mysql://x/y")
