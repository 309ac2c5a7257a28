"""Once-only claims: in process (time as an input) and on a real PostgreSQL, with the race
between two connections ordered by a lock wait and a free-for-all of threads."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from pg_kit import pg_url, wait_for_lock_waiter  # noqa: F401 -- the fixture

from firebox.cluster.once import AsyncPgClaims, Grant, MemoryClaims, PgClaims


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_claim_once_then_lease_expiry_takeover_with_larger_token() -> None:
    clock = Clock()
    claims = MemoryClaims(clock)
    first = claims.claim("dispatch:inc-1", "node-a", 30)
    assert first is not None and first.owner == "node-a"
    assert claims.claim("dispatch:inc-1", "node-b", 30) is None
    assert claims.claim("dispatch:inc-1", "node-a", 30) is None  # no second grant, even to the owner
    assert claims.renew(first, 30) is not None
    clock.now += 29
    assert claims.claim("dispatch:inc-1", "node-b", 30) is None  # renewed at +0, lasts to +30
    clock.now += 2
    taken = claims.claim("dispatch:inc-1", "node-b", 30)
    assert taken is not None and taken.token > first.token
    # The dead holder's late moves are fenced off.
    assert claims.renew(first, 30) is None
    assert not claims.done(first)
    assert not claims.release(first)
    holder = claims.holder("dispatch:inc-1")
    assert holder is not None and holder.owner == "node-b"


def test_memory_done_is_forever_and_release_lets_another_try() -> None:
    clock = Clock()
    claims = MemoryClaims(clock)
    grant = claims.claim("callback:c1", "a", 5)
    assert grant is not None and claims.done(grant)
    clock.now += 10_000
    assert claims.claim("callback:c1", "b", 5) is None
    assert not claims.release(grant)  # done work stays done
    other = claims.claim("alert:psap:boston", "a", 5)
    assert other is not None and claims.release(other)
    assert claims.claim("alert:psap:boston", "b", 5) is not None
    with pytest.raises(ValueError):
        claims.claim("x", "a", 0)


def test_memory_claims_threads_one_winner() -> None:
    claims = MemoryClaims()
    barrier = threading.Barrier(8)

    def race(n: int) -> Grant | None:
        barrier.wait()
        return claims.claim("incident-7", f"worker-{n}", 60)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(race, range(8)))
    assert sum(r is not None for r in results) == 1


@pytest.fixture
def table() -> str:
    return f"claims_{uuid.uuid4().hex[:12]}"


def test_pg_two_connections_race_blocked_insert_loses(pg_url: str, table: str) -> None:  # noqa: F811
    a, b = PgClaims(pg_url, table=table), PgClaims(pg_url, table=table)
    try:
        result: list[Grant | None] = []
        with a.conn.transaction():
            won = a.claim("dispatch:inc-9", "node-a", 30)
            assert won is not None
            # node-b's insert of the same key now waits for node-a's transaction.
            waiter = threading.Thread(target=lambda: result.append(b.claim("dispatch:inc-9", "node-b", 30)))
            waiter.start()
            wait_for_lock_waiter(pg_url)
        waiter.join(10)
        assert not waiter.is_alive()
        assert result == [None]
        holder = b.holder("dispatch:inc-9")
        assert holder is not None and (holder.owner, holder.token, holder.done) == ("node-a", won.token, False)
    finally:
        a.drop()
        a.close()
        b.close()


def test_pg_threads_one_winner_per_key_and_distinct_tokens(pg_url: str, table: str) -> None:  # noqa: F811
    nodes = [PgClaims(pg_url, table=table) for _ in range(4)]
    try:
        barrier = threading.Barrier(4)

        def race(n: int) -> list[Grant | None]:
            barrier.wait()
            return [nodes[n].claim(f"callback:{k}", f"node-{n}", 30) for k in range(25)]

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(race, range(4)))
        for k in range(25):
            assert sum(r[k] is not None for r in results) == 1, k
        tokens = [g.token for r in results for g in r if g is not None]
        assert len(tokens) == len(set(tokens)) == 25
    finally:
        nodes[0].drop()
        for n in nodes:
            n.close()


def test_pg_expired_lease_taken_over_once_and_fenced(pg_url: str, table: str) -> None:  # noqa: F811
    a, b = PgClaims(pg_url, table=table), PgClaims(pg_url, table=table)
    try:
        first = a.claim("alert:region:west", "node-a", 30)
        assert first is not None
        assert b.claim("alert:region:west", "node-b", 30) is None
        # node-a dies: its lease runs out (set in the past rather than waited for).
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"UPDATE {table} SET expires = now() - interval '1 second'")
        taken = b.claim("alert:region:west", "node-b", 30)
        assert taken is not None and taken.token > first.token
        assert a.claim("alert:region:west", "node-a", 30) is None
        assert a.renew(first, 30) is None and not a.done(first) and not a.release(first)
        assert b.renew(taken, 60) is not None
        assert b.done(taken)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"UPDATE {table} SET acquired = now() - interval '1 day'")
        assert a.claim("alert:region:west", "node-a", 30) is None  # done is for ever
        holder = a.holder("alert:region:west")
        assert holder is not None and holder.done and holder.owner == "node-b"
        assert not b.release(taken)
        assert a.holder("nothing") is None
        other = a.claim("callback:c2", "node-a", 30)
        assert other is not None and a.release(other)
        assert b.claim("callback:c2", "node-b", 30) is not None
    finally:
        a.drop()
        a.close()
        b.close()


async def test_async_pg_claims(pg_url: str, table: str) -> None:  # noqa: F811
    a = await AsyncPgClaims.connect(pg_url, table=table)
    b = await AsyncPgClaims.connect(pg_url, table=table)
    try:
        import asyncio

        results = await asyncio.gather(*(c.claim("dispatch:inc-3", f"n{i}", 30) for i, c in enumerate((a, b, a, b))))
        grants = [g for g in results if g is not None]
        assert len(grants) == 1
        assert await a.done(grants[0])
        holder = await b.holder("dispatch:inc-3")
        assert holder is not None and holder.done
    finally:
        await a.drop()
        await a.close()
        await b.close()
