"""The cluster bus, membership and live state: in process (deterministic, time as an input)
and between two NatsBus instances on the real NATS server (bounded waits for delivery)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from firebox.cluster.bus import Entry, InProcessBus, Message, NatsBus, Replay, _Outbox, BusStats, subject_matches
from firebox.cluster.live import LiveState, OutageFeed
from firebox.cluster.membership import Beat, ClusterView, Health, HealthChange, Membership
from firebox.esrp.states import Availability, OutageMark, QueueState, QueueStateValue, StateTable, uri_key
from firebox.monitor.detector import OutageUpdate, UpdateKind

QUEUE = "sip:queue@boston.psap.example"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for bus delivery, bounded."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


# --- pieces ---------------------------------------------------------------------------------


def test_subject_matching() -> None:
    assert subject_matches("outages.>", "outages.node-a.psap-1")
    assert not subject_matches("outages.>", "outages")
    assert subject_matches("a.*.c", "a.b.c") and not subject_matches("a.*.c", "a.b.d")
    assert not subject_matches("a.b", "a.b.c")


def test_outbox_bounded_drops_oldest_and_counts() -> None:
    stats = BusStats()
    box = _Outbox(3, stats)
    for n in range(5):
        box.add(("pub", f"s{n}", "", b""))  # never blocks
    assert [op[1] for op in box.items] == ["s2", "s3", "s4"]
    assert stats.dropped == 2


async def test_nats_bus_buffers_while_unreachable() -> None:
    # A bus whose server is gone: publishing keeps working, bounded and counted.
    bus = NatsBus("nats://127.0.0.1:1", "unreachable", outbox=10, connect_timeout=0.5)
    with pytest.raises(ConnectionError):
        await bus.start()
    for n in range(15):
        bus.publish("live.x", {"n": n})
    assert bus.status()["buffered"] == 10 and bus.stats.dropped == 5
    assert not await bus.flush(0.05)


def test_view_alive_suspect_dead_with_time_as_input() -> None:
    view = ClusterView("node-a", 1.0)
    changes: list[HealthChange] = []
    view.listeners.append(changes.append)
    view.observe(Beat("node-a", 100.0, 100.0, 1), 100.0)
    view.observe(Beat("node-b", 90.0, 100.0, 1), 100.0)
    assert view.health("node-b", 100.0) is Health.ALIVE
    view.observe(Beat("node-a", 100.0, 102.0, 3), 102.0)
    view.tick(102.9)
    assert view.health("node-b", 102.9) is Health.ALIVE
    view.observe(Beat("node-a", 100.0, 103.0, 4), 103.0)
    assert view.health("node-b", 103.0) is Health.SUSPECT  # 3 missed
    view.observe(Beat("node-a", 100.0, 109.9, 10), 109.9)
    assert view.health("node-b", 109.9) is Health.SUSPECT
    view.observe(Beat("node-a", 100.0, 110.0, 11), 110.0)
    assert view.health("node-b", 110.0) is Health.DEAD  # 10 missed
    assert not changes[-1].isolated
    # The same beat replayed does not revive it; a new one (a restart) does.
    view.observe(Beat("node-b", 90.0, 100.0, 1), 111.0)
    assert view.health("node-b", 111.0) is Health.DEAD
    view.observe(Beat("node-b", 111.0, 111.0, 1), 111.0)
    assert view.health("node-b", 111.0) is Health.ALIVE
    view.observe(Beat("node-b", 111.0, 111.5, 2, leaving=True), 111.5)
    assert view.health("node-b", 111.5) is Health.LEFT
    assert [(c.node_id, c.before, c.after) for c in changes if c.node_id == "node-b"] == [
        ("node-b", None, Health.ALIVE), ("node-b", Health.ALIVE, Health.SUSPECT),
        ("node-b", Health.SUSPECT, Health.DEAD), ("node-b", Health.DEAD, Health.ALIVE),
        ("node-b", Health.ALIVE, Health.LEFT),
    ]  # fmt: skip


def test_view_isolated_when_own_beats_stop_and_old_beats_dated_by_sender() -> None:
    view = ClusterView("node-a", 1.0)
    view.observe(Beat("node-a", 0.0, 100.0, 1), 100.0)
    view.observe(Beat("node-b", 0.0, 100.0, 1), 100.0)
    changes = view.tick(104.0)
    assert all(c.isolated for c in changes) and view.isolated(104.0)
    # A beat first seen long after it was sent is as old as its sender says.
    fresh = ClusterView("node-c", 1.0)
    fresh.observe(Beat("node-z", 0.0, 50.0, 7), 100.0)
    assert fresh.health("node-z", 100.0) is Health.DEAD


def test_beat_from_odd_data_gets_defaults() -> None:
    beat = Beat.from_dict({"started": "x", "load": {"calls": "many", "cpu": 0.5}, "serving": "esrp"}, "node-q")
    assert (beat.node_id, beat.started, beat.serving, dict(beat.load)) == ("node-q", 0.0, (), {"calls": 0.0, "cpu": 0.5})
    with pytest.raises(ValueError):
        Beat.from_dict({})


async def test_in_process_bus_events_replay_and_kv_watch() -> None:
    bus = InProcessBus("t")
    got: list[Message] = []

    async def on(m: Message) -> None:
        got.append(m)

    bus.publish("outages.a.1", {"n": 1})
    bus.publish("outages.a.1", {"n": 2})
    bus.publish("other", b"x")
    sub = await bus.subscribe("outages.>", on, replay=Replay.LAST_PER_SUBJECT)
    bus.publish("outages.b.1", {"n": 3})
    await until(lambda: len(got) == 2)
    assert [m.json()["n"] for m in got] == [2, 3]
    await sub.stop()
    kv = await bus.kv("k")
    await kv.put("sip:x@y", {"v": 1})
    seen: list[Entry] = []

    async def on_entry(e: Entry) -> None:
        seen.append(e)

    watch = await kv.watch(on_entry)
    kv.put_nowait("sip:x@y", {"v": 2})
    kv.delete_nowait("sip:x@y")
    await until(lambda: len(seen) == 3)
    assert [e.json() for e in seen] == [{"v": 1}, {"v": 2}, None] and seen[-1].deleted
    assert seen[0].revision < seen[1].revision < seen[2].revision
    await watch.stop()
    await bus.close()


async def test_membership_in_process_with_a_clock() -> None:
    bus = InProcessBus("t")
    now = [1000.0]
    a = Membership(bus, "node-a", heartbeat_seconds=1.0, clock=lambda: now[0],
                   describe=lambda: {"serving": ["bcf", "esrp"], "sip": "127.0.0.1:5060", "load": {"calls": 3}})
    b = Membership(bus, "node-b", heartbeat_seconds=1.0, clock=lambda: now[0])
    await a.start()
    await b.start()
    try:
        await until(lambda: a.view.health("node-b", now[0]) is Health.ALIVE and b.view.health("node-a", now[0]) is Health.ALIVE)
        status = {s.beat.node_id: s for s in b.view.nodes(now[0])}
        assert status["node-a"].beat.serving == ("bcf", "esrp") and status["node-a"].beat.load["calls"] == 3
        await a.stop()  # says goodbye
        await until(lambda: b.view.health("node-a", now[0]) is Health.LEFT)
    finally:
        await b.stop()
        await bus.close()


# --- live state, in process (three nodes on one bus) ----------------------------------------


def mark(oid: str, confirmed: bool = True, at: datetime = T0) -> OutageMark:
    return OutageMark(oid, confirmed, "test calls fail", at)


async def test_outage_marks_union_of_live_nodes_and_dead_nodes_expire() -> None:
    bus = InProcessBus("t")
    view = ClusterView("node-c", 1.0)  # node-c's view of the others (time as an input)
    tables = {n: StateTable() for n in ("node-a", "node-b", "node-c")}
    lives = {n: LiveState(bus, n, t, view=view if n == "node-c" else None) for n, t in tables.items()}
    for live in lives.values():
        await live.start()
    c = tables["node-c"]
    try:
        view.observe(Beat("node-a", 0.0, 100.0, 1), 100.0)
        view.observe(Beat("node-b", 0.0, 100.0, 1), 100.0)
        view.observe(Beat("node-c", 0.0, 100.0, 1), 100.0)
        tables["node-a"].mark_outage(QUEUE, mark("psap-boston-1"))
        await until(lambda: c.outage_verdict(QUEUE) is not None)
        verdict = c.destination_verdict(QUEUE, T0)
        assert verdict.availability is Availability.UNUSABLE and "node-a/psap-boston-1" in verdict.reason
        # node-b confirms it too; then node-a dies: node-b's mark holds the queue out.
        tables["node-b"].mark_outage(QUEUE, mark("psap-boston-1", at=T0 + timedelta(seconds=1)))
        await until(lambda: "node-b" in lives["node-c"].marks.get(uri_key(QUEUE), {}))
        view.observe(Beat("node-b", 0.0, 110.0, 11), 110.0)
        view.observe(Beat("node-c", 0.0, 110.0, 11), 110.0)
        view.tick(110.0)
        assert view.health("node-a", 110.0) is Health.DEAD
        assert c.outage_verdict(QUEUE) is not None and "node-b/" in c.outage_verdict(QUEUE).reason  # type: ignore[union-attr]
        # node-b clears (same outage id as node-a's, different outage): the dead node's
        # mark does not count, so the queue is back.
        assert tables["node-b"].clear_outage(QUEUE, "psap-boston-1")
        await until(lambda: c.outage_verdict(QUEUE) is None)
        # node-a comes back (a healed partition): its mark counts again.
        view.observe(Beat("node-a", 0.0, 111.0, 12), 111.0)
        assert c.outage_verdict(QUEUE) is not None
        # A node's own clear lifts only its own mark.
        c.mark_outage(QUEUE, mark("psap-boston-1", confirmed=False))
        assert c.clear_outage(QUEUE, "psap-boston-1")
        assert c.outage_verdict(QUEUE) is not None and "node-a/" in c.outage_verdict(QUEUE).reason  # type: ignore[union-attr]
        assert not c.clear_outage(QUEUE)  # nothing of node-c's left to lift
    finally:
        for live in lives.values():
            await live.stop()
        await bus.close()


async def test_queue_state_newest_wins_whatever_the_order() -> None:
    bus = InProcessBus("t")
    a, b = StateTable(), StateTable()
    la, lb = LiveState(bus, "node-a", a), LiveState(bus, "node-b", b)
    await la.start()
    await lb.start()
    try:
        b.update(QueueState(QUEUE, 1, 5, QueueStateValue.ACTIVE), T0 + timedelta(seconds=5))
        a.update(QueueState(QUEUE, 5, 5, QueueStateValue.FULL), T0)  # older, arrives later
        await until(lambda: la.applied == 1 and lb.ignored + lb.applied == 0 and len(bus.buckets["live"].data) == 2)
        await until(lambda: a.queue_state_name(QUEUE, T0 + timedelta(seconds=6)) == "Active")
        await asyncio.sleep(0.05)  # node-b's watcher has node-a's older entry by now: it must not win
        assert b.queue_state_name(QUEUE, T0 + timedelta(seconds=6)) == "Active"
        assert a.queue_state_name(QUEUE, T0 + timedelta(seconds=6)) == "Active"
    finally:
        await la.stop()
        await lb.stop()
        await bus.close()
    # Detached: the table's own methods again.
    assert "update" not in vars(a)


# --- on the real NATS server ----------------------------------------------------------------


@pytest.fixture
async def nats_pair() -> AsyncIterator[tuple[NatsBus, NatsBus]]:
    name = f"test_{uuid.uuid4().hex[:10]}"
    a, b = NatsBus("nats://127.0.0.1:4222", name, node_id="node-a"), NatsBus("nats://127.0.0.1:4222", name, node_id="node-b")
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        for bus in (a, b):
            await bus.close()
        await b.start()  # a connection to delete what both made
        for n in ("live", "members", "x"):
            await b.kv(n)
        await b.destroy()
        await b.close()


async def test_nats_two_nodes_replicate_queue_state_and_outage_mark(nats_pair: tuple[NatsBus, NatsBus]) -> None:
    bus_a, bus_b = nats_pair
    a, b = StateTable(), StateTable()
    la, lb = LiveState(bus_a, "node-a", a), LiveState(bus_b, "node-b", b)
    # A mark node-a's previous run left behind: its new run starts without it.
    stale = f"outage|node-a|{uri_key(QUEUE)}"
    await (await bus_a.kv("live")).put(stale, {"node": "node-a", "uri": QUEUE, "outage_id": "old-1", "confirmed": True})
    await la.start()
    await lb.start()
    try:
        assert [e.key for e in await (await bus_b.kv("live")).entries()] == []
        assert b.outage_verdict(QUEUE) is None
        now = datetime.now(UTC)
        a.update(QueueState(QUEUE, 2, 10, QueueStateValue.ACTIVE), now)
        a.mark_outage("sip:queue@worcester.psap.example", mark("psap-worcester-1", at=now))
        await until(lambda: b.queue(QUEUE, now) is not None and b.outage_verdict("sip:queue@worcester.psap.example") is not None)
        assert b.queue(QUEUE, now) == QueueState(QUEUE, 2, 10, QueueStateValue.ACTIVE)
        assert b.destination_verdict("sip:queue@worcester.psap.example", now).availability is Availability.UNUSABLE
        # And back the other way: node-b's newer Full state reaches node-a.
        b.update(QueueState(QUEUE, 10, 10, QueueStateValue.FULL), now + timedelta(seconds=1))
        await until(lambda: a.queue_state_name(QUEUE, now + timedelta(seconds=1)) == "Full")
        a.clear_outage("sip:queue@worcester.psap.example", "psap-worcester-1")
        await until(lambda: b.outage_verdict("sip:queue@worcester.psap.example") is None)
        # A node joining later gets the current states from the bucket.
        c = StateTable()
        lc = LiveState(bus_b, "node-c", c)
        await lc.start()
        await until(lambda: c.queue_state_name(QUEUE, now + timedelta(seconds=1)) == "Full")
        await lc.stop()
    finally:
        await la.stop()
        await lb.stop()


async def test_nats_outage_feed_and_membership(nats_pair: tuple[NatsBus, NatsBus]) -> None:
    bus_a, bus_b = nats_pair
    feed_a, feed_b = OutageFeed(bus_a, "node-a"), OutageFeed(bus_b, "node-b")
    feed_a.listener(OutageUpdate(UpdateKind.NEW, {"id": "psap-boston-1", "scope": "psap", "key": "boston",
                                                  "state": "confirmed", "within": None}))  # fmt: skip
    assert await bus_a.flush(5.0)
    seen: list[OutageUpdate] = []
    feed_b.listeners.append(seen.append)
    await feed_a.start()
    await feed_b.start()  # starts after the update: replays it
    try:
        await until(lambda: len(seen) == 1)
        assert seen[0].outage["id"] == "node-a/psap-boston-1" and seen[0].outage["node"] == "node-a"
        assert not feed_a.received  # its own update is not handed back
        ma = Membership(bus_a, "node-a", heartbeat_seconds=0.2, describe=lambda: {"serving": ["esrp"]})
        mb = Membership(bus_b, "node-b", heartbeat_seconds=0.2)
        await ma.start()
        await mb.start()
        await until(lambda: mb.view.health("node-a", mb.clock()) is Health.ALIVE)
        assert mb.view.beats["node-a"].serving == ("esrp",)
        await ma.stop(leave=False)  # as if killed: no goodbye
        # Time as an input: ten beat intervals on from now, node-a is dead to node-b.
        later = mb.clock() + 10 * 0.2 + 0.01
        assert mb.view.health("node-a", later) is Health.DEAD
        await mb.stop()
    finally:
        await feed_a.stop()
        await feed_b.stop()
