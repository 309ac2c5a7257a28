"""The CAD on PostgreSQL (``PostgresCadStore``), two nodes on one database: the CAD's own
behaviour tests run again on PostgreSQL; a dispatch racing another for the same unit waits on
the row lock and is refused with the unit's real state; an incident id created by two nodes,
or a unit changed from a stale read, ends in ``StaleRecord`` with nothing written; restart
keeps everything."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from firebox.cad.model import (
    IncidentStatus,
    IncidentSubtype,
    IncidentType,
    TransitionError,
    Unit,
    UnitKind,
    UnitStatus,
    incident_to_json,
    unit_to_json,
)
from firebox.cad.service import Cad
from firebox.cad.store import MemoryRepository, PostgresCadStore, SqliteRepository, StaleRecord, open_cad_store
from firebox.location.shapes import Point
from firebox.logging.events import new_call_id, new_incident_id
from pg_kit import pg_url, wait_for_lock_waiter  # noqa: F401 -- a fixture
from test_cad_service import lvf, state  # noqa: F401 -- module fixtures of the behaviour tests
from test_cad_service import (  # the same behaviour, on PostgreSQL (the ``repo`` fixture below)
    test_box_alarm_dispatch_status_and_close,  # noqa: F401
    test_call_with_a_civic_pidf_is_geocoded_and_bad_input_is_named,  # noqa: F401
    test_incident_from_a_call_with_a_pidf_lo,  # noqa: F401
    test_unknown_box_and_unknown_unit_are_named,  # noqa: F401
    test_walk_in_with_an_address_geocoded_by_the_lvf,  # noqa: F401
)

T0 = datetime(2025, 3, 1, 14, 0, tzinfo=UTC)
FQDN = "cad.demo.firebox.test"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def repo(pg_url: str) -> Iterator[PostgresCadStore]:  # noqa: F811
    r = PostgresCadStore(pg_url)
    yield r
    r.close()


@pytest.fixture
def two_nodes(pg_url: str) -> Iterator[tuple[Cad, Cad]]:  # noqa: F811
    a, b = PostgresCadStore(pg_url), PostgresCadStore(pg_url)
    yield Cad(a, fqdn=FQDN), Cad(b, fqdn=FQDN)
    a.close()
    b.close()


def roster(cad: Cad) -> None:
    cad.add_units([Unit("E1", UnitKind.ENGINE, "fs-1", UnitStatus.AVAILABLE),
                   Unit("L1", UnitKind.LADDER, "fs-1", UnitStatus.AVAILABLE)], t(0), "roster")  # fmt: skip


def by_hand(cad: Cad, at: float, lat: float = 43.2) -> str:
    return cad.incident_by_hand(at=t(at), actor="disp", point=Point(lat=lat, lon=-71.6), type=IncidentType.FIRE,
                                subtype=IncidentSubtype.STRUCTURE_FIRE, priority=1).id  # fmt: skip


def test_a_second_node_dispatching_the_same_unit_waits_then_is_refused(two_nodes: tuple[Cad, Cad], pg_url: str):
    cad_a, cad_b = two_nodes
    roster(cad_a)
    fire_a, fire_b = by_hand(cad_a, 1), by_hand(cad_b, 2, lat=43.3)
    assert {i.id for i in cad_b.incidents()} == {fire_a, fire_b}  # one database

    release = threading.Event()
    outcome: dict[str, object] = {}

    def node_a() -> None:
        # Node A's dispatch, its commit held back until node B is waiting on A's row locks.
        with cad_a.repo.transaction():
            outcome["a"] = cad_a.dispatch(fire_a, ["E1"], at=t(10), actor="disp-a")
            release.wait(10)

    def node_b() -> None:
        try:
            outcome["b"] = cad_b.dispatch(fire_b, ["E1"], at=t(11), actor="disp-b")
        except TransitionError as exc:
            outcome["b"] = exc

    ta = threading.Thread(target=node_a)
    ta.start()
    for _ in range(500):  # A holds the locks once its dispatch returned inside the transaction
        if "a" in outcome:
            break
        threading.Event().wait(0.01)
    tb = threading.Thread(target=node_b)
    tb.start()
    wait_for_lock_waiter(pg_url)  # B blocked on E1's row, not racing past it
    release.set()
    ta.join(10)
    tb.join(10)
    assert not ta.is_alive() and not tb.is_alive()

    refused = outcome["b"]
    assert isinstance(refused, TransitionError)
    assert str(refused) == f"unit E1 cannot be dispatched: it is dispatched to incident {fire_a}"
    for cad in (cad_a, cad_b):  # both nodes see one dispatch, to A's incident
        assert cad.unit("E1").incident_id == fire_a and cad.unit("E1").status is UnitStatus.DISPATCHED
        assert cad.incident(fire_a).units == ["E1"] and cad.incident(fire_a).status is IncidentStatus.DISPATCHED
        assert cad.incident(fire_b).units == [] and cad.incident(fire_b).status is IncidentStatus.NEW
    assert [r.action for r in cad_b.audit(fire_b)] == ["incident created"]
    # B, told why, sends the other unit.
    assert cad_b.dispatch(fire_b, ["L1"], at=t(12), actor="disp-b").units == ["L1"]


def test_many_concurrent_dispatches_of_one_unit_make_exactly_one(pg_url: str):  # noqa: F811
    stores = [PostgresCadStore(pg_url) for _ in range(4)]
    try:
        cads = [Cad(s, fqdn=FQDN) for s in stores]
        roster(cads[0])
        fires = [by_hand(c, i, lat=43.0 + i / 10) for i, c in enumerate(cads)]
        start = threading.Barrier(len(cads))
        results: list[object] = [None] * len(cads)

        def go(i: int) -> None:
            start.wait(10)
            try:
                results[i] = cads[i].dispatch(fires[i], ["E1", "L1"], at=t(20 + i), actor=f"disp-{i}")
            except (TransitionError, StaleRecord) as exc:
                results[i] = exc

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(cads))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(20)
        won = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
        assert len(won) == 1, results
        assert all(isinstance(r, TransitionError | StaleRecord) for i, r in enumerate(results) if i != won[0])
        units = {u.id: u for u in cads[0].units()}
        assert units["E1"].incident_id == units["L1"].incident_id == fires[won[0]]
        dispatched = [i for i in cads[0].incidents() if i.units]
        assert [i.id for i in dispatched] == [fires[won[0]]]
    finally:
        for s in stores:
            s.close()


def test_an_incident_id_created_by_two_nodes_is_created_once(two_nodes: tuple[Cad, Cad]):
    cad_a, cad_b = two_nodes
    tracking = new_incident_id("bcf.example.net")
    # Both nodes checked that the id is free (the CAD does, before creating) ...
    assert cad_a.repo.get_incident(tracking) is None and cad_b.repo.get_incident(tracking) is None
    first = cad_a.incident_from_call(at=t(1), actor="ct-a", call_id=new_call_id("bcf.example.net"),
                                     type=IncidentType.EMS, subtype=IncidentSubtype.MEDICAL, priority=2,
                                     incident_tracking_id=tracking)  # fmt: skip
    # ... so B's create, from its read, must not replace A's incident.
    second = cad_a.incident(tracking)
    second.narrative = []
    with pytest.raises(StaleRecord, match=f"incident {tracking} was just created by another node"):
        with cad_b.repo.transaction():
            cad_b.repo.put_incident(second)
            cad_b._audit(t(2), "ct-b", "incident created", tracking)
    assert incident_to_json(cad_b.incident(tracking)) == incident_to_json(first)
    assert [r.actor for r in cad_b.audit(tracking)] == ["ct-a"]  # B's audit record rolled back with it


def test_a_write_from_a_stale_read_is_refused_and_changes_nothing(two_nodes: tuple[Cad, Cad]):
    cad_a, cad_b = two_nodes
    roster(cad_a)
    stale = cad_b.repo.get_unit("E1")  # B reads E1 (available) ...
    cad_a.unit_status("E1", UnitStatus.OUT_OF_SERVICE, at=t(5), actor="mechanic")  # ... A changes it
    assert stale is not None
    stale.position = Point(lat=43.0, lon=-71.0)
    with pytest.raises(StaleRecord, match="unit E1 was changed by another node since it was read"):
        cad_b.repo.put_unit(stale)
    assert cad_b.unit("E1").status is UnitStatus.OUT_OF_SERVICE and cad_b.unit("E1").position is None
    # Read again, B's write goes through.
    fresh = cad_b.repo.get_unit("E1")
    assert fresh is not None
    fresh.position = Point(lat=43.0, lon=-71.0)
    cad_b.repo.put_unit(fresh)
    assert cad_a.unit("E1").position == Point(lat=43.0, lon=-71.0)


def test_restart_keeps_incidents_units_and_audit(pg_url: str):  # noqa: F811
    cad = Cad(PostgresCadStore(pg_url), fqdn=FQDN)
    roster(cad)
    fire = by_hand(cad, 1)
    cad.dispatch(fire, ["E1"], at=t(2), actor="disp")
    other = by_hand(cad, 3, lat=43.4)
    cad.close(other, at=t(4), actor="disp", disposition="unfounded")
    before = ([incident_to_json(i) for i in cad.incidents()], [unit_to_json(u) for u in cad.units()],
              [r.to_json() for r in cad.audit()])  # fmt: skip
    cad.repo.close()
    again = Cad(open_cad_store(pg_url), fqdn=FQDN)
    try:
        after = ([incident_to_json(i) for i in again.incidents()], [unit_to_json(u) for u in again.units()],
                 [r.to_json() for r in again.audit()])  # fmt: skip
        assert after == before
        assert [i.id for i in again.incidents(open_only=True)] == [fire]
        with pytest.raises(RuntimeError), again.repo.transaction():
            again.repo.put_unit(Unit("E9", UnitKind.ENGINE, "fs-9", UnitStatus.AVAILABLE))
            raise RuntimeError("crash between two writes")
        assert [u.id for u in again.units()] == ["E1", "L1"]
    finally:
        again.repo.close()


def test_open_cad_store_picks_by_url(tmp_path):
    assert isinstance(open_cad_store("memory:"), MemoryRepository)
    lite = open_cad_store(f"sqlite:///{tmp_path}/cad.sqlite")
    assert isinstance(lite, SqliteRepository) and lite.path == tmp_path / "cad.sqlite"
    lite.close()
    bare = open_cad_store(str(tmp_path / "bare.sqlite"))
    assert isinstance(bare, SqliteRepository)
    bare.close()
    with pytest.raises(ValueError, match="unknown CAD store URL scheme"):
        open_cad_store("mysql://x/y")
