"""One fire alarm box alarm is one incident across a cluster's nodes (issue 8): every node's
MQTT input receives every message, and each claims it (``firebox.cluster.once``) before
acting. In process (``MemoryClaims``): the loser of a claim leaves the alarm to the winner; a
claim that raises (the node cut off from PostgreSQL) keeps the alarm, and the retry handles
it, or finds it handled elsewhere, once the claims answer again; a winner that dies mid-work
does not lose the alarm (its lease ends, another node takes it). On the real PostgreSQL and
Mosquitto: three nodes, each in its own thread with its own CAD store on one database, receive
20 alarms each published twice: exactly 20 incidents, one per box, no "sounded again"."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from datetime import UTC, datetime

import aiomqtt
import pytest
from pg_kit import pg_url  # noqa: F401 -- the fixture

from firebox.boxes.mqtt import BoxMessage, MqttBoxInput, claim_key
from firebox.boxes.receiver import BoxReceiver
from firebox.cad.data import AlarmBox
from firebox.cad.service import Cad
from firebox.cad.store import MemoryRepository, PostgresCadStore
from firebox.cluster.once import Grant, Holder, MemoryClaims, PgClaims
from firebox.location.shapes import Point

BROKER = ("127.0.0.1", 1883)
FQDN = "cad.cluster.firebox.test"
BOXES = {
    str(2000 + i): AlarmBox(str(2000 + i), f"STREET {i}", Point(lat=42.30 + i / 1000, lon=-71.05), "3")
    for i in range(1, 21)
}
T0 = datetime(2026, 6, 18, 14, 0, tzinfo=UTC)


def msg(**doc: object) -> bytes:
    return json.dumps(doc).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CutOffClaims(MemoryClaims):
    """Real in-process claims that raise, as ``PgClaims`` does, while ``cut`` (the node cannot
    reach PostgreSQL)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise ConnectionError("connection to 10.1.0.5:5432 refused")

    def claim(self, key: str, owner: str, lease_seconds: float) -> Grant | None:
        self._check()
        return super().claim(key, owner, lease_seconds)

    def holder(self, key: str) -> Holder | None:
        self._check()
        return super().holder(key)

    def done(self, grant: Grant) -> bool:
        self._check()
        return super().done(grant)


class View:
    """One node's claims: the shared claims, or cut off from them (the node's own link)."""

    def __init__(self, claims: MemoryClaims) -> None:
        self.claims = claims
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise ConnectionError("no route to the cluster's PostgreSQL")

    def claim(self, key: str, owner: str, lease_seconds: float) -> Grant | None:
        self._check()
        return self.claims.claim(key, owner, lease_seconds)

    def renew(self, grant: Grant, lease_seconds: float) -> Grant | None:
        self._check()
        return self.claims.renew(grant, lease_seconds)

    def done(self, grant: Grant) -> bool:
        self._check()
        return self.claims.done(grant)

    def release(self, grant: Grant) -> bool:
        self._check()
        return self.claims.release(grant)

    def holder(self, key: str) -> Holder | None:
        self._check()
        return self.claims.holder(key)


def shared_cad() -> Cad:
    return Cad(MemoryRepository(), fqdn=FQDN, boxes=BOXES)


def node(cad: Cad, claims: object, owner: str, **kw: object) -> MqttBoxInput:
    return MqttBoxInput(BoxReceiver(cad, clock=lambda: T0), claims=claims, owner=owner, **kw)  # type: ignore[arg-type]


def narratives(cad: Cad) -> list[str]:
    return [n.text for i in cad.incidents() for n in i.narrative]


def test_the_claim_key_is_short_and_stable_and_claims_need_an_owner():
    long = BoxMessage("12-317", "alarm", "2026-06-18T14:00:00.123456Z", "gateway-" + "x" * 300)
    key = claim_key(long)
    assert key == claim_key(BoxMessage("12-317", "alarm", "2026-06-18T14:00:00.123456Z", "gateway-" + "x" * 300))
    assert key.startswith("box:12-317:") and len(key) == len("box:12-317:") + 32
    assert claim_key(BoxMessage("1818", time=None)) != claim_key(BoxMessage("1818", time=""))
    assert claim_key(BoxMessage("1818", time="t1")) != claim_key(BoxMessage("1818", time="t2"))
    with pytest.raises(ValueError, match="owner"):
        MqttBoxInput(BoxReceiver(shared_cad(), clock=lambda: T0), claims=MemoryClaims())


def test_three_nodes_one_alarm_one_incident():
    cad, claims = shared_cad(), MemoryClaims()
    a, b, c = (node(cad, claims, n) for n in ("a", "b", "c"))
    payload = msg(box="2001", time="t1", device="gw-1")
    made = a.handle(payload)
    assert made is not None and made.kind == "incident"
    assert b.handle(payload) is None and c.handle(payload) is None
    assert (a.claimed_here, b.claimed_elsewhere, c.claimed_elsewhere) == (1, 1, 1)
    assert len(cad.incidents()) == 1 and not any("sounded again" in t for t in narratives(cad))
    holder = claims.holder(claim_key(BoxMessage("2001", "alarm", "t1", "gw-1")))
    assert holder is not None and holder.done and holder.owner == "a"
    # A second pull of the same box (another message) is still a repeat, once.
    again = msg(box="2001", time="t2", device="gw-1")
    assert c.handle(again).kind == "repeat" and a.handle(again) is None and b.handle(again) is None  # type: ignore[union-attr]
    assert narratives(cad).count("box 2001 sounded again (reported by MQTT box gw-1)") == 1


def test_a_node_cut_off_keeps_the_alarm_and_the_retry_handles_it_when_back():
    clock = Clock()
    claims = CutOffClaims(clock)
    cad = shared_cad()
    a = node(cad, claims, "a", max_held=2)
    claims.cut = True
    held = a.handle(msg(box="2002", time="t1", device="gw-2"))
    # Not lost: a flag for this node's dispatcher, the alarm held with why.
    assert held is not None and held.kind == "flag" and "box 2002 alarm held, not in the CAD yet" in held.detail
    assert "10.1.0.5:5432 refused" in held.detail
    assert [h.msg.box for h in a.held] == ["2002"] and cad.incidents() == [] and a.claim_errors == 1
    # Still cut off: the retry (on the next message) keeps both, one flag each, not one per try.
    assert a.handle(msg(box="2003", time="t1", device="gw-3")).kind == "flag"  # type: ignore[union-attr]
    assert a.retry_held() == [] and [h.msg.box for h in a.held] == ["2002", "2003"]
    assert sum(1 for o in a.receiver.outcomes if o.kind == "flag") == 2
    # The bound: a third alarm is refused loudly (the other nodes received it too).
    full = a.handle(msg(box="2004", time="t1", device="gw-4"))
    assert full is not None and full.kind == "flag" and "box 2004 alarm NOT kept for retry" in full.detail
    # Back: the retry makes both incidents, oldest first, and marks the claims done.
    claims.cut = False
    made = a.retry_held()
    assert [(o.kind, o.number) for o in made] == [("incident", "2002"), ("incident", "2003")]
    assert a.held == [] and sorted(i.source.box for i in cad.incidents()) == ["2002", "2003"]
    assert claims.holder(claim_key(BoxMessage("2002", "alarm", "t1", "gw-2"))).done  # type: ignore[union-attr]
    assert a.retry_held() == [] and len(cad.incidents()) == 2


def test_a_node_cut_off_finds_the_alarm_handled_elsewhere_when_back():
    claims = MemoryClaims()
    cad = shared_cad()
    cut_view, good_view = View(claims), View(claims)
    a, b = node(cad, cut_view, "a"), node(cad, good_view, "b")
    payload = msg(box="2005", time="t1", device="gw-5")
    cut_view.cut = True
    assert a.handle(payload).kind == "flag" and len(a.held) == 1  # type: ignore[union-attr]
    made = b.handle(payload)  # the node that is not cut off handles it
    assert made is not None and made.kind == "incident"
    cut_view.cut = False
    assert a.retry_held() == [] and a.held == [] and a.claimed_elsewhere == 1
    assert len(cad.incidents()) == 1 and not any("sounded again" in t for t in narratives(cad))


def test_every_node_cut_off_all_hold_then_exactly_one_handles_it():
    claims = MemoryClaims()
    cad = shared_cad()
    views = [View(claims) for _ in range(3)]
    nodes = [node(cad, v, f"n{i}") for i, v in enumerate(views)]
    payload = msg(box="2006", time="t1", device="gw-6")
    for v in views:
        v.cut = True
    for n in nodes:
        assert n.handle(payload).kind == "flag" and len(n.held) == 1  # type: ignore[union-attr]
    for v in views:
        v.cut = False
    made = [o for n in reversed(nodes) for o in n.retry_held()]
    assert [(o.kind, o.number) for o in made] == [("incident", "2006")]
    assert all(n.held == [] for n in nodes) and sum(n.claimed_elsewhere for n in nodes) == 2
    assert len(cad.incidents()) == 1


def test_a_winner_that_dies_mid_work_does_not_lose_the_alarm():
    clock = Clock()
    claims = MemoryClaims(clock)
    cad = shared_cad()
    b = node(cad, claims, "b", lease_s=30)
    m = BoxMessage("2007", "alarm", "t1", "gw-7")
    assert claims.claim(claim_key(m), "a", 30) is not None  # node a won, then died before the CAD
    assert b.handle(msg(box="2007", time="t1", device="gw-7")) is None
    assert [h.why for h in b.held] == ["claimed by node a, not done yet"] and cad.incidents() == []
    assert b.retry_held() == [] and len(b.held) == 1  # a's lease still runs
    clock.now += 31
    made = b.retry_held()
    assert [(o.kind, o.number) for o in made] == [("incident", "2007")] and b.held == []
    holder = claims.holder(claim_key(m))
    assert holder is not None and holder.owner == "b" and holder.done


class FailingRepository(MemoryRepository):
    """The CAD's store, failing to write while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def put_incident(self, incident) -> None:  # type: ignore[no-untyped-def]
        if self.down:
            raise ConnectionError("CAD database unreachable")
        super().put_incident(incident)


def test_a_cad_write_that_fails_releases_the_claim_and_the_alarm_is_retried():
    repo = FailingRepository()
    cad = Cad(repo, fqdn=FQDN, boxes=BOXES)
    claims = MemoryClaims()
    a = node(cad, claims, "a")
    repo.down = True
    held = a.handle(msg(box="2008", time="t1", device="gw-8"))
    assert held is not None and held.kind == "flag" and "CAD write failed" in held.detail
    assert claims.holder(claim_key(BoxMessage("2008", "alarm", "t1", "gw-8"))) is None  # released
    repo.down = False
    assert [o.kind for o in a.retry_held()] == ["incident"] and len(cad.incidents()) == 1


def test_without_claims_nothing_changes():
    cad = shared_cad()
    a = MqttBoxInput(BoxReceiver(cad, clock=lambda: T0))
    assert a.handle(msg(box="2009", time="t1")).kind == "incident"  # type: ignore[union-attr]
    assert a.handle(msg(box="2009", time="t1")) is None and a.duplicates == 1
    assert a.held == [] and a.claimed_here == 0


# --- three nodes on the real PostgreSQL and Mosquitto -------------------------------------------


class NodeThread(threading.Thread):
    """One node: its own event loop, CAD store connection, claims connection and MQTT session
    (as three processes would have), so that the nodes really race."""

    def __init__(self, name: str, url: str, table: str, topic: str) -> None:
        super().__init__(name=f"box-node-{name}", daemon=True)
        self.node_name, self.url, self.table, self.topic = name, url, table, topic
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.input: MqttBoxInput | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 -- reported by the test
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        store = PostgresCadStore(self.url)
        claims = PgClaims(self.url, table=self.table)
        cad = Cad(store, fqdn=FQDN, boxes=BOXES)
        box_input = self.input = MqttBoxInput(
            BoxReceiver(cad, clock=lambda: datetime.now(UTC)), url=f"mqtt://{BROKER[0]}:{BROKER[1]}",
            topic=self.topic + "/#", client_id=f"firebox-test-{self.node_name}-{uuid.uuid4().hex[:8]}",
            claims=claims, owner=self.node_name, retry_s=0.1,
        )  # fmt: skip
        box_input.start()
        try:
            await asyncio.wait_for(box_input.connected.wait(), 10)
            self.ready.set()
            for _ in range(1200):  # bounded: 60 s
                if self.stop.is_set():
                    break
                await asyncio.sleep(0.05)
        finally:
            await box_input.aclose()
            with contextlib.suppress(aiomqtt.MqttError):  # drop the persistent session
                async with aiomqtt.Client(*BROKER, identifier=box_input.client_id, clean_session=True):
                    pass
            claims.close()
            store.close()


async def _publish_twice(topic: str, numbers: list[str]) -> None:
    async with aiomqtt.Client(*BROKER, identifier=f"firebox-test-pub-{uuid.uuid4().hex[:8]}") as pub:
        for n in numbers:
            payload = msg(box=n, kind="alarm", time="2026-06-18T14:00:00Z", device=f"gw/{n}")
            for _ in range(2):  # as a QoS 1 redelivery would
                await pub.publish(f"{topic}/{n}", payload, qos=1)


def test_three_nodes_on_postgresql_and_mosquitto_make_each_alarm_once(pg_url: str):  # noqa: F811
    import time

    table = f"box_claims_{uuid.uuid4().hex[:8]}"
    topic = f"firebox-test/{uuid.uuid4().hex}/boxes"
    threads = [NodeThread(n, pg_url, table, topic) for n in ("dc1-a", "dc1-b", "dc2-a")]
    for t in threads:
        t.start()
    watcher = PostgresCadStore(pg_url)
    try:
        for t in threads:
            assert t.ready.wait(15) and t.error is None, t.error
        numbers = sorted(BOXES)
        asyncio.run(_publish_twice(topic, numbers))
        inputs = [t.input for t in threads]
        assert all(i is not None for i in inputs)

        def settled() -> bool:
            return all(i.received == 2 * len(numbers) and not i.held for i in inputs) and (  # type: ignore[union-attr]
                sum(i.claimed_here + i.claimed_elsewhere for i in inputs) == 3 * len(numbers)  # type: ignore[union-attr]
            )

        for _ in range(400):  # bounded: 20 s
            if settled():
                break
            time.sleep(0.05)
        assert settled(), [(i.received, len(i.held), i.claimed_here, i.claimed_elsewhere) for i in inputs]  # type: ignore[union-attr]
        incidents = watcher.incidents()
        assert sorted(i.source.box for i in incidents) == numbers  # exactly N, each box once
        assert not any("sounded again" in n.text for i in incidents for n in i.narrative)
        assert sum(i.claimed_here for i in inputs) == len(numbers)  # type: ignore[union-attr]
        assert sum(i.claimed_elsewhere for i in inputs) == 2 * len(numbers)  # type: ignore[union-attr]
        assert all(i.duplicates == len(numbers) and i.claim_errors == 0 for i in inputs)  # type: ignore[union-attr]
    finally:
        for t in threads:
            t.stop.set()
        for t in threads:
            t.join(20)
        watcher.close()
    assert all(t.error is None for t in threads), [t.error for t in threads]
