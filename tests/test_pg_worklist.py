"""The callback worklist on PostgreSQL (``PostgresWorklistStore``): the worklist's behaviour
(wait for the PSAP, deliver once) on both stores; entries outlive the node that wrote them;
two nodes reporting one call make one entry; two nodes delivering at once hand each callback
over exactly once; an entry claimed by a node that died is taken again after its lease."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from firebox.esrp.worklist import (
    MemoryWorklistStore,
    PostgresWorklistStore,
    Worklist,
    WorklistReason,
    WorklistState,
    deliver_due,
    open_worklist_store,
)
from firebox.psap.api import LocationView
from pg_kit import pg_url  # noqa: F401 -- a fixture
from test_esrp_worklist import CoreTaker

T0 = 1_781_800_000.0
WHERE = LocationView("civic", 42.37, -71.11, civic={"A1": "MA", "A3": "Cambridge"}, source="value", method="GPS")


@pytest.fixture(params=["memory", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[MemoryWorklistStore | PostgresWorklistStore]:
    if request.param == "memory":
        yield MemoryWorklistStore()
        return
    s = PostgresWorklistStore(request.getfixturevalue("pg_url"))
    yield s
    s.close()


def fill(wl: Worklist) -> None:
    wl.add("c1@x", WorklistReason.FAILED, T0, callback="+16175550101", location=WHERE, owner="north",
           tried=["sip:north@psap.test", "sip:+16175550100@pstn.test;user=phone"], detail="final 503")  # fmt: skip
    wl.add("c1@x", WorklistReason.ABANDONED, T0 + 1, callback="+16175550101", location=WHERE, owner="north",
           tried=["sip:south@psap.test", "sip:north@psap.test"])  # fmt: skip
    wl.add("c2@x", WorklistReason.ABANDONED, T0 + 2, callback=None, location=None, owner=None)
    wl.add("c3@x", WorklistReason.BUSY, T0 + 3, callback="+16175550103", location=None, owner="elsewhere")


def test_entries_wait_for_their_psap_then_land_on_its_callback_list_once(store):
    wl = Worklist(store, node="node-a")
    fill(wl)
    first = wl.get("c1@x")
    assert first is not None and first.reason is WorklistReason.FAILED and first.location == WHERE
    assert first.tried == ["sip:north@psap.test", "sip:+16175550100@pstn.test;user=phone", "sip:south@psap.test"]
    assert wl.figures()["by_reason"] == {"failed": 1, "abandoned before alerting": 1, "busy": 1, "error": 0}
    taker = CoreTaker()
    up = {"north": False}
    assert deliver_due(wl, lambda p: up.get(p, False), {"north": taker}, T0 + 5) == []
    assert [e.call_id for e in wl.pending()] == ["c1@x", "c2@x", "c3@x"]
    up["north"] = True
    (sent,) = deliver_due(wl, lambda p: up.get(p, False), {"north": taker}, T0 + 9)
    assert sent.call_id == "c1@x" and sent.state is WorklistState.DELIVERED and sent.delivered_to == "north"
    (on_list,) = taker.core.callbacks("north")
    assert (on_list.call_id, on_list.callback, on_list.location) == ("c1@x", "+16175550101", WHERE)
    assert deliver_due(wl, lambda p: True, {"north": taker}, T0 + 10) == []
    assert {e.call_id for e in wl.pending()} == {"c2@x", "c3@x"}
    wl.done("c1@x")
    assert wl.figures()["by_state"] == {"pending": 2, "delivering": 0, "delivered": 0, "done": 1}


def test_a_failing_taker_leaves_the_entry_pending_for_any_node(store):
    wl = Worklist(store, node="node-a")
    fill(wl)

    class Broken:
        def add_callback(self, *args):  # noqa: ANN002, ANN201
            raise ConnectionError("call handling went away")

    assert deliver_due(wl, lambda p: True, {"north": Broken()}, T0 + 5) == []
    entry = wl.get("c1@x")
    assert entry is not None and entry.state is WorklistState.PENDING and entry.claimed_by is None
    other = Worklist(store, node="node-b")
    (sent,) = deliver_due(other, lambda p: True, {"north": CoreTaker()}, T0 + 6)
    assert sent.call_id == "c1@x"


def test_entries_outlive_the_node_and_two_nodes_make_one_entry_per_call(pg_url: str):  # noqa: F811
    a = PostgresWorklistStore(pg_url)
    wa = Worklist(a, node="node-a")
    fill(wa)
    a.close()  # node A dies
    b = PostgresWorklistStore(pg_url)
    try:
        wb = Worklist(b, node="node-b")
        assert [e.call_id for e in wb.pending()] == ["c1@x", "c2@x", "c3@x"]
        again = wb.add("c1@x", WorklistReason.ERROR, T0 + 4, callback="+16175550101", location=None, owner="north",
                       tried=["sip:west@psap.test"])  # fmt: skip
        assert again.reason is WorklistReason.FAILED and again.tried[-1] == "sip:west@psap.test"
        assert len(wb.entries()) == 3 and wb.counts["failed"] == 1
    finally:
        b.close()


def test_two_nodes_delivering_at_once_hand_each_callback_over_once(pg_url: str):  # noqa: F811
    stores = [PostgresWorklistStore(pg_url) for _ in range(3)]
    try:
        lists = [Worklist(s, node=f"node-{i}") for i, s in enumerate(stores)]
        for n in range(40):
            lists[n % 3].add(f"call-{n}@x", WorklistReason.FAILED, T0 + n, callback=f"+1617555{n:04d}",
                             location=None, owner="north")  # fmt: skip
        takers = [CoreTaker() for _ in lists]
        start = threading.Barrier(len(lists))
        delivered: list[list[str]] = [[] for _ in lists]

        def node(i: int) -> None:
            start.wait(10)
            delivered[i] = [e.call_id for e in deliver_due(lists[i], lambda p: True, {"north": takers[i]}, T0 + 100)]

        threads = [threading.Thread(target=node, args=(i,)) for i in range(len(lists))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        everything = [c for d in delivered for c in d]
        assert sorted(everything) == sorted(f"call-{n}@x" for n in range(40))  # each once, by some node
        on_lists = [cb.call_id for t in takers for cb in t.core.callbacks("north")]
        assert sorted(on_lists) == sorted(everything)
        assert all(e.state is WorklistState.DELIVERED for e in lists[0].entries())
    finally:
        for s in stores:
            s.close()


def test_an_entry_claimed_by_a_node_that_died_is_taken_again_after_its_lease(pg_url: str):  # noqa: F811
    a, b = PostgresWorklistStore(pg_url), PostgresWorklistStore(pg_url)
    try:
        wa, wb = Worklist(a, node="node-a", lease=30.0), Worklist(b, node="node-b", lease=30.0)
        fill(wa)
        claimed = wa.claim("c1@x", T0 + 10)  # node A claims, then dies before handing it over
        assert claimed is not None and claimed.claimed_by == "node-a" and claimed.state is WorklistState.DELIVERING
        assert wa.claim("c1@x", T0 + 11) is None and wb.claim("c1@x", T0 + 11) is None
        taker = CoreTaker()
        assert deliver_due(wb, lambda p: True, {"north": taker}, T0 + 39) == []  # lease still runs
        (sent,) = deliver_due(wb, lambda p: True, {"north": taker}, T0 + 40)  # lease over: B takes it
        assert sent.call_id == "c1@x" and sent.state is WorklistState.DELIVERED and sent.claimed_by == "node-b"
        wa.release("c1@x")  # A's late release changes nothing: the claim is B's
        assert wb.get("c1@x").state is WorklistState.DELIVERED
    finally:
        a.close()
        b.close()


def test_open_worklist_store_picks_by_url():
    assert isinstance(open_worklist_store(None), MemoryWorklistStore)
    assert isinstance(open_worklist_store("memory:"), MemoryWorklistStore)
    with pytest.raises(ValueError, match="unknown worklist store URL"):
        open_worklist_store("redis://127.0.0.1")
