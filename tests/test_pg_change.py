"""The change store on PostgreSQL (``PostgresChangeStore``): the change manager's behaviour
tests again with the store on PostgreSQL; the change log is append-only (UPDATE, DELETE,
TRUNCATE refused); two nodes never get one version number; the changes outlive the node."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

import test_change_apply
from firebox.change.core import Change, ChangeKind, Stage
from firebox.change.store import ChangeStore, PostgresChangeStore, open_change_store
from pg_kit import pg_url  # noqa: F401 -- a fixture
from test_change_apply import (  # the same behaviour, on PostgreSQL (``pg_stores`` below)
    test_guard_rolls_back_a_canary_when_its_probes_fail,  # noqa: F401
    test_massachusetts_rule_refused_at_submission_naming_the_calls,  # noqa: F401
    test_stage_refuses_when_rules_moved_underneath_and_bad_scopes,  # noqa: F401
)


@pytest.fixture(autouse=True)
def pg_stores(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[PostgresChangeStore]]:  # noqa: F811
    """The change manager tests build ``ChangeStore(path)``: here it is PostgreSQL."""
    made: list[PostgresChangeStore] = []

    def on_postgres(_path: object) -> PostgresChangeStore:
        made.append(PostgresChangeStore(pg_url))
        return made[-1]

    monkeypatch.setattr(test_change_apply, "ChangeStore", on_postgres)
    yield made
    for store in made:
        store.close()


def a_change(store: PostgresChangeStore, n: int, stage: Stage = Stage.SHADOW) -> Change:
    version = store.next_version(ChangeKind.BCF, "demo-bcf")
    return Change(id=f"chg-{n}", version=version, kind=ChangeKind.BCF, target="demo-bcf", author="ops@example",
                  before=[], after=[{"id": "r1", "action": "deprioritize", "kinds": ["test"]}], created=1000.0 + n,
                  stage=stage)  # fmt: skip


def test_the_change_log_is_append_only(pg_url: str):  # noqa: F811
    store = PostgresChangeStore(pg_url)
    try:
        change = a_change(store, 1)
        store.save(change, "submitted")
        change.stage, change.updated = Stage.CANARY, 1010.0
        store.save(change, "canary", {"reason": "by hand"})
        assert [e["action"] for e in store.log("chg-1")] == ["submitted", "canary"]
        assert store.log()[1]["detail"] == {"reason": "by hand"} and store.get("chg-1").stage is Stage.CANARY
        assert store.active(ChangeKind.BCF, "demo-bcf").id == "chg-1"
        for statement in ("UPDATE change_log SET action = 'nothing'", "DELETE FROM change_log",
                          "TRUNCATE change_log"):  # fmt: skip
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                store.conn.execute(statement)
        assert [e["action"] for e in store.log()] == ["submitted", "canary"]
    finally:
        store.close()


def test_two_nodes_never_get_one_version_number_and_share_the_changes(pg_url: str):  # noqa: F811
    stores = [PostgresChangeStore(pg_url) for _ in range(3)]
    try:
        got: list[list[int]] = [[] for _ in stores]
        start = threading.Barrier(len(stores))

        def node(i: int) -> None:
            start.wait(10)
            got[i] = [stores[i].next_version(ChangeKind.ROUTING, "demo-esrp") for _ in range(20)]

        threads = [threading.Thread(target=node, args=(i,)) for i in range(len(stores))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert sorted(v for g in got for v in g) == list(range(1, 61))
        stores[0].save(a_change(stores[0], 7), "submitted")
        stores[0].close()  # that node dies; another sees its change
        assert [c.id for c in stores[1].list(target="demo-bcf")] == ["chg-7"]
        assert stores[2].list(stage=Stage.FULL) == []
    finally:
        for s in stores[1:]:
            s.close()


def test_open_change_store_picks_by_url(tmp_path, pg_url: str):  # noqa: F811
    lite = open_change_store(f"sqlite:///{tmp_path}/changes.db")
    assert isinstance(lite, ChangeStore)
    lite.close()
    pg = open_change_store(pg_url)
    assert isinstance(pg, PostgresChangeStore)
    pg.close()
    with pytest.raises(ValueError, match="unknown change store URL scheme"):
        open_change_store("redis://127.0.0.1")
