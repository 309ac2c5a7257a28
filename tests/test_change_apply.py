"""Changes installed into a real BCF and a real ESRP router: the Massachusetts rule refused at
submission, a canary on one ingress only, promotion, rollback (by hand and by the guard)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rich.console import Console

from firebox.bcf.core import Bcf
from firebox.bcf.protection import Action
from firebox.change.apply import CanaryBcfRules, CanaryRouting, ChangeManager, policy_change_event
from firebox.change.core import CanaryScope, ChangeError, ChangeKind, Stage
from firebox.change.store import ChangeStore
from firebox.deployment import load_deployment
from firebox.esrp.policy import RuleSet, chains_from_deployment
from firebox.esrp.router import InProcessLost, Router
from firebox.esrp.states import StateTable
from firebox.location.pidf import PidfLocation, Presence, serialize_pidf
from firebox.location.shapes import Point
from firebox.logging.events import validate
from firebox.node import build_node, write_demo
from firebox.sip import build_multipart, make_part, parse_message

SOURCES = {"192.0.2.0/24": "carrier-a", "198.51.100.0/24": "carrier-b"}
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
MASSACHUSETTS = [{"id": "block-invites", "action": "reject", "methods": ["INVITE"], "reason": "firewall push"}]


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def _invite(uri: str = "urn:service:sos", pidf: bytes | None = None, n: int = 1):
    parts = [make_part("application/sdp", b"v=0\r\n")]
    if pidf is not None:
        parts.append(make_part("application/pidf+xml", pidf, content_id="loc@carrier"))
    ctype, body = build_multipart(parts)
    head = (f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-a{n}\r\n"
            f"From: <sip:+16175550100@carrier.example>;tag={n}\r\nTo: <{uri}>\r\nCall-ID: apply-{n}@carrier\r\n"
            f"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nP-Asserted-Identity: <tel:+16175550100>\r\n"
            + ("Geolocation: <cid:loc@carrier>\r\n" if pidf else "")
            + f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return parse_message(head.encode() + body)


def _manager(tmp_path, **kw) -> ChangeManager:
    return ChangeManager(ChangeStore(tmp_path / "changes.db"), sources=SOURCES, clock=Clock(), **kw)


async def test_massachusetts_rule_refused_at_submission_naming_the_calls(tmp_path):
    bcf = Bcf("bcf.example", sources=SOURCES)
    manager = _manager(tmp_path, bcf=bcf, targets={ChangeKind.BCF: "demo-bcf"})
    change = await manager.submit(ChangeKind.BCF, MASSACHUSETTS, author="ops@example")
    assert change.stage is Stage.REFUSED and change.target == "demo-bcf" and change.version == 1
    assert {h.call for h in change.hits} >= {"carrier-a: INVITE tel:911", "carrier-b: INVITE urn:service:sos"}
    assert bcf.rules.rules == ()  # nothing installed
    with pytest.raises(ChangeError, match="refused is final"):
        await manager.stage(change.id, CanaryScope(sources=("carrier-a",)))
    log = manager.store.log(change.id)
    assert [e["action"] for e in log] == ["refused"] and log[0]["detail"]["hits"] == len(change.hits)
    assert manager.store.get(change.id).signature == change.signature


async def test_bcf_canary_applies_to_the_canary_ingress_only_then_full_then_rollback(tmp_path):
    bcf = Bcf("bcf.example", sources=SOURCES)
    manager = _manager(tmp_path, bcf=bcf)
    # Deprioritize carrier-a and carrier-b's test calls: allowed by the invariant.
    rules = [{"id": "test-calls-low", "action": "deprioritize", "kinds": ["test"]}]
    change = await manager.submit(ChangeKind.BCF, rules, author="ops@example")
    assert change.stage is Stage.SHADOW
    assert bcf.process(_invite("urn:service:test.sos", n=1), "192.0.2.5", 1.0).action is Action.ALLOW

    await manager.stage(change.id, CanaryScope(sources=("carrier-a",)))
    assert isinstance(bcf.rules, CanaryBcfRules)
    assert bcf.process(_invite("urn:service:test.sos", n=2), "192.0.2.5", 2.0).action is Action.DEPRIORITIZE
    assert bcf.process(_invite("urn:service:test.sos", n=3), "198.51.100.5", 3.0).action is Action.ALLOW
    assert bcf.process(_invite(n=4), "192.0.2.5", 4.0).action is Action.ALLOW  # not a test call

    full = await manager.promote(change.id)
    assert full.stage is Stage.FULL and not isinstance(bcf.rules, CanaryBcfRules)
    assert bcf.process(_invite("urn:service:test.sos", n=5), "198.51.100.5", 5.0).action is Action.DEPRIORITIZE

    back = await manager.rollback(change.id, "by hand")
    assert back.stage is Stage.ROLLED_BACK and bcf.rules.rules == ()
    assert bcf.process(_invite("urn:service:test.sos", n=6), "198.51.100.5", 6.0).action is Action.ALLOW
    assert [e["action"] for e in manager.store.log(change.id)] == ["submitted", "canary", "full", "rolled_back"]
    import sqlite3

    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        manager.store.conn.execute("DELETE FROM change_log")


async def test_stage_refuses_when_rules_moved_underneath_and_bad_scopes(tmp_path):
    bcf = Bcf("bcf.example", sources=SOURCES)
    manager = _manager(tmp_path, bcf=bcf)
    change = await manager.submit(ChangeKind.BCF, [{"id": "t", "action": "divert", "kinds": ["test"]}], author="a")
    with pytest.raises(ChangeError, match="not a source this BCF knows"):
        await manager.stage(change.id, CanaryScope(sources=("carrier-z",)))
    with pytest.raises(ChangeError, match="BCF canary needs ingress source ids"):
        await manager.stage(change.id, CanaryScope(psaps=("boston",)))
    from firebox.bcf.protection import BcfRules

    bcf.set_rules(BcfRules.from_dicts([{"id": "other", "action": "allow"}]))
    with pytest.raises(ChangeError, match="changed since") as err:
        await manager.stage(change.id, CanaryScope(sources=("carrier-a",)))
    assert err.value.status == 409


async def test_guard_rolls_back_a_canary_when_its_probes_fail(tmp_path):
    bcf = Bcf("bcf.example", sources=SOURCES)
    manager = _manager(tmp_path, bcf=bcf, ingress_sources={"bcf.example": "carrier-a"})
    change = await manager.submit(ChangeKind.BCF, [{"id": "t", "action": "divert", "kinds": ["test"]}], author="a")
    await manager.stage(change.id, CanaryScope(sources=("carrier-a",)))
    t = manager.clock()
    probes = [{"ingress": "bcf.example", "psap": "boston", "placed": t + i, "outcome": "rejected"} for i in (1, 2)]
    manager.clock.t += 5  # type: ignore[attr-defined]
    rolled = await manager.check_guards({"scopes": {}, "probes": probes}, {"current": []})
    assert [c.id for c in rolled] == [change.id] and rolled[0].stage is Stage.ROLLED_BACK
    assert "automatic rollback: 2 test calls in a row" in rolled[0].reason
    assert not isinstance(bcf.rules, CanaryBcfRules) and bcf.rules.rules == ()


def test_policy_change_event_is_a_valid_i3_log_event(tmp_path):
    from firebox.change.core import Change

    change = Change("chg-1", 1, ChangeKind.BCF, "demo-bcf", "ops", [], [], 0.0)
    event = policy_change_event(change, "submitted", "bcf.example.net", "example.net")
    assert validate(event.to_json()) == []


# --- routing, on the generated demo state ---------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    target = tmp_path_factory.mktemp("change-demo")
    path, state = write_demo(target, seed=911, n_towns=40, listen="127.0.0.1:7070", console=Console(quiet=True))
    node = build_node(load_deployment(path), console=Console(quiet=True))
    return state, node


def _router(node) -> Router:
    return Router(
        fqdn="esrp.demo.firebox.test", lost=InProcessLost(node.ecrf),
        chains=chains_from_deployment(node.deployment, "pstn-gw.demo.firebox.test"), rules=RuleSet(),
        states=StateTable(),
        default_location=Presence("sip:ingress@bcf.demo.firebox.test", [PidfLocation(shapes=[Point(42.3, -71.1)], method="Manual")]),
    )  # fmt: skip


def _located(state, i: int, n: int):
    town = state.towns[i]
    p = town.geometry.point_on_surface()
    pidf = serialize_pidf(Presence("tel:+16175550100", [PidfLocation(shapes=[Point(p.y, p.x)], method="GPS")]))
    return _invite(pidf=pidf, n=n), town.psap_id


async def test_routing_canary_on_a_region_then_rollback(demo, tmp_path):
    state, node = demo
    router = _router(node)
    psaps = [p.id for p in state.psaps]
    towns = {}
    for i, town in enumerate(state.towns):
        towns.setdefault(town.psap_id, i)
    inside, outside = [p for p in psaps if p in towns][:2]
    target = next(p for p in psaps if p not in (inside, outside))
    rules = [{"id": "consolidate", "priority": 10, "actions": [{"type": "route", "psap": target, "cause": "drill"}]}]
    manager = _manager(tmp_path, router=router)
    change = await manager.submit(ChangeKind.ROUTING, rules, author="ops@example")
    assert change.stage is Stage.SHADOW, change.reason

    await manager.stage(change.id, CanaryScope(psaps=(inside,)))
    assert isinstance(router.rules, CanaryRouting)
    request, psap = _located(state, towns[inside], 1)
    routed = await router.route(request, NOW, source="carrier-b")
    assert psap == inside and routed.decision.destinations[0].psap_id == target  # in the canary region
    request, psap = _located(state, towns[outside], 2)
    routed = await router.route(request, NOW, source="carrier-b")
    assert routed.decision.destinations[0].psap_id == outside  # outside it: the old rules

    await manager.rollback(change.id)
    assert isinstance(router.rules, RuleSet) and not isinstance(router.rules, CanaryRouting) and len(router.rules) == 0
    request, _ = _located(state, towns[inside], 3)
    assert (await router.route(request, NOW, source="carrier-b")).decision.destinations[0].psap_id == inside


async def test_routing_canary_on_an_ingress(demo, tmp_path):
    state, node = demo
    router = _router(node)
    first = state.towns[0].psap_id
    target = next(p.id for p in state.psaps if p.id != first)
    manager = _manager(tmp_path, router=router)
    change = await manager.submit(ChangeKind.ROUTING, [{"id": "c", "priority": 1, "actions": [
        {"type": "route", "psap": target}]}], author="ops")  # fmt: skip
    await manager.stage(change.id, CanaryScope(sources=("carrier-a",)))
    request, _ = _located(state, 0, 10)
    assert (await router.route(request, NOW, source="carrier-a")).decision.destinations[0].psap_id == target
    request, _ = _located(state, 0, 11)
    assert (await router.route(request, NOW, source="carrier-b")).decision.destinations[0].psap_id == first
