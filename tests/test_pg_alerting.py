"""Alert drafts on PostgreSQL (``firebox.alerting.store``): two nodes seeing the same outage
draft one message (the second adopts the first's draft, its identifier and chain); an
approval given on one node is seen by the other (two-person rule across nodes); drafts
survive a restart; a message is published by one node only."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from firebox.alerting.drafts import AlertArea, AlertManager, AlertPolicy, DraftState
from firebox.alerting.store import MemoryAlertStore, PostgresAlertStore, open_alert_store
from firebox.cap.message import MsgType
from firebox.demo.state import generate_state
from pg_kit import pg_url  # noqa: F401 -- a fixture
from test_alerting_drafts import SENDER, T0, outage


@pytest.fixture(scope="module")
def area() -> AlertArea:
    return AlertArea.from_demo(generate_state(seed=911, n_towns=40), state_same="033000")


@pytest.fixture
def stores(pg_url: str) -> Iterator[list[PostgresAlertStore]]:  # noqa: F811
    made = [PostgresAlertStore(pg_url) for _ in range(2)]
    yield made
    for s in made:
        s.close()


def node(area: AlertArea, store, name: str, **policy) -> AlertManager:  # noqa: ANN001
    return AlertManager(area, AlertPolicy(sender=SENDER, **policy), store=store, node=name)


def test_two_nodes_draft_one_alert_and_the_second_adopts_it(area: AlertArea, stores):
    psap = next(iter(area.psaps))
    a, b = node(area, stores[0], "node-a"), node(area, stores[1], "node-b")
    (first,) = a.on_outages([outage("o-1", "psap", psap)], T0)
    (second,) = b.on_outages([outage("o-1", "psap", psap)], T0 + 0.4)
    assert first.msg_type is MsgType.ALERT and first.id.startswith("FIREBOX-") and "-node-a-" in first.id
    assert second.id == first.id and second.chain == first.chain and not second.problems
    assert second.alert.identifier == first.id and b.chain is not None and b.chain.id == a.chain.id
    assert [d.id for d in stores[1].drafts()] == [first.id]
    # Approved on B, the message is final on A too; published by one node only.
    b.approve(first.id, "supervisor-b", T0 + 30)
    assert [d.id for d in b.take_outbox()] == [first.id]
    assert stores[1].claim_publication(first.id, "node-b", T0 + 31)
    assert not stores[0].claim_publication(first.id, "node-a", T0 + 31)
    b.sent(first.id, T0 + 32, "atom: ok")
    with pytest.raises(Exception, match="is sent"):
        a.approve(first.id, "supervisor-a", T0 + 33)  # A reads it again: already sent
    assert a.drafts[first.id].state is DraftState.SENT


def test_two_person_approval_across_nodes_and_a_restart(area: AlertArea, stores, pg_url: str):  # noqa: F811
    psap = next(iter(area.psaps))
    a, b = node(area, stores[0], "node-a", two_person=True), node(area, stores[1], "node-b", two_person=True)
    (draft,) = a.on_outages([outage("o-2", "psap", psap)], T0)
    b.on_outages([outage("o-2", "psap", psap)], T0 + 1)
    a.approve(draft.id, "alice", T0 + 10)
    with pytest.raises(Exception, match="alice already approved"):
        b.approve(draft.id, "alice", T0 + 11)  # B sees A's first approval
    b.approve(draft.id, "bob", T0 + 12)
    assert b.drafts[draft.id].state is DraftState.APPROVED
    stores[0].close()  # node A restarts: its drafts are in the database
    again = PostgresAlertStore(pg_url)
    try:
        (kept,) = again.drafts()
        assert (kept.id, kept.state, kept.approvals) == (draft.id, DraftState.APPROVED, ["alice", "bob"])
        assert kept.xml is not None and kept.alert.identifier == draft.id
    finally:
        again.close()


def test_racing_claims_keep_one_draft(area: AlertArea, pg_url: str):  # noqa: F811
    stores = [PostgresAlertStore(pg_url) for _ in range(4)]
    try:
        psap = next(iter(area.psaps))
        managers = [node(area, s, f"node-{i}") for i, s in enumerate(stores)]
        start = threading.Barrier(len(managers))
        got: list[str] = [""] * len(managers)

        def go(i: int) -> None:
            start.wait(10)
            (d,) = managers[i].on_outages([outage("o-3", "psap", psap)], T0 + i / 10)
            got[i] = d.id

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(managers))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert len(set(got)) == 1 and got[0]
        assert [d.id for d in stores[0].drafts()] == [got[0]]
    finally:
        for s in stores:
            s.close()


def test_memory_store_and_open_alert_store(area: AlertArea):
    assert isinstance(open_alert_store(None), MemoryAlertStore)
    with pytest.raises(ValueError, match="unknown alert store URL"):
        open_alert_store("redis://x")
    store = MemoryAlertStore()
    m = node(area, store, "solo")
    (d,) = m.on_outages([outage("o-4", "psap", next(iter(area.psaps)))], T0)
    m.approve(d.id, "carol", T0 + 5)
    (kept,) = store.drafts()
    assert kept.state is DraftState.APPROVED and kept.approvals == ["carol"]


async def test_a_message_goes_out_once_from_two_nodes(area: AlertArea, pg_url: str):  # noqa: F811
    """Both nodes publish an approved draft (each has it in its own feed); the outside
    channels (webhook, IPAWS) get it from the node that claimed it, once."""
    from firebox.alerting.publish import AlertService, AtomFeed

    policy = AlertPolicy(sender=SENDER, auto_send_statewide=True)
    a = AlertManager(area, policy, store=open_alert_store(pg_url), node="node-a")
    b = AlertManager(area, policy, store=open_alert_store(pg_url), node="node-b")
    sent: list[str] = []

    class Hook:
        async def publish(self, ident, xml):
            from firebox.alerting.publish import Delivery

            sent.append(ident)
            return Delivery("webhook", ident, True, "200")

    services = [AlertService(m, AtomFeed("tag:x,2026:a", "t", "x", "http://x/alerts"), webhooks=[Hook()])
                for m in (a, b)]  # fmt: skip
    (da,) = a.on_outages([outage("s1", "statewide", "all")], T0)
    (db,) = b.on_outages([outage("s1", "statewide", "all")], T0 + 1)
    assert da.id == db.id
    for svc, draft in zip(services, (da, db), strict=True):
        await svc._publish(draft)
    assert sent == [da.id]
    assert all(any(e.identifier == da.id for e in svc.feed.entries) for svc in services)
