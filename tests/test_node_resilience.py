"""Issue 6 and 7 composed in one node, as ``firebox demo`` runs it: the demo's deployment with
call handling, the monitor, rule changes, the status page and public alerting, served on
127.0.0.1. One PSAP goes silent (a cut fiber): the detector confirms it from its test calls,
new calls from its towns go straight to its alternate, the public status page shows its
towns down, a CAP alert for those towns is drafted and validates, and the Massachusetts
firewall rule is refused at /changes. Every wait is bounded."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
import uvicorn
from rich.console import Console

from firebox.deployment import load_deployment
from firebox.monitor.detector import OutageScope, OutageState
from firebox.node import build_node, start_sip, stop_sip, write_demo
from firebox.sim.carrier import CallPlan, Carrier, LocationMode, Outcome

MASSACHUSETTS = [{"id": "block-invites", "methods": ["INVITE"], "action": "reject"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until(predicate, what: str, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def running(tmp_path: Path):
    port = free_port()
    probe_state = write_demo(tmp_path / "probe", seed=911, n_towns=40, listen="127.0.0.1:0", sip_listen="127.0.0.1:0",
                             console=Console(quiet=True))[1]  # fmt: skip
    victim = next(p for p in probe_state.psaps if p.alternates)
    path, state = write_demo(tmp_path / "run", seed=911, n_towns=40, listen=f"127.0.0.1:{port}",
                             sip_listen="127.0.0.1:0", faults={victim.id: "silent"}, call_handling=True,
                             console=Console(quiet=True))  # fmt: skip
    text = path.read_text()
    assert "probe_period_seconds: 30.0" in text
    path.write_text(text.replace("probe_period_seconds: 30.0", "probe_period_seconds: 1.0"))  # the demo's 30 s, shortened
    dep = load_deployment(path)
    node = build_node(dep, console=Console(quiet=True))
    (app,) = node.apps.values()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, "the HTTP server")
    http = await start_sip(node)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield node, state, victim, client
    finally:
        await stop_sip(node)
        if http is not None:
            await http.aclose()
        server.should_exit = True
        await task
        node.policy_store.close()


async def test_a_cut_psap_is_routed_around_shown_on_the_status_page_and_alerted(running):
    node, state, victim, client = running
    key = (OutageScope.PSAP, victim.id)
    detector = node.monitor.detector
    await until(lambda: key in detector.open and detector.open[key].state is OutageState.CONFIRMED,
                "the silent PSAP's outage confirmed")  # fmt: skip
    outage = detector.open[key]

    # routing: a new call from the victim's town goes to its alternate first
    town = next(t for t in state.towns if t.psap_id == victim.id)
    here = town.geometry.point_on_surface()
    carrier = Carrier(("127.0.0.1", node.core.port, "udp"), domain="live.carrier.test", answer_timeout=20.0)
    await carrier.start()
    try:
        before = set(node.core.records)
        result = await carrier.call(CallPlan("tel:+12005550131", here.x, here.y, LocationMode.VALUE, hold=0.05))
    finally:
        await carrier.close()
    assert result.outcome is Outcome.ANSWERED
    (record,) = [r for cid, r in node.core.records.items() if cid not in before and cid.endswith("@live.carrier.test")]
    assert victim.uri not in [uri for uri, _, _ in record.forwards]

    # the public status page: the victim's towns down, with what to do instead
    status = (await client.get(f"/status/towns/{town.id}.json")).json()
    assert status["status"] == "down" and outage.id in status["outages"]
    assert status["instead"]["business_lines"], status
    other = next(t for t in state.towns if t.psap_id != victim.id)
    assert (await client.get(f"/status/towns/{other.id}.json")).json()["status"] == "working"
    page = await client.get("/status/")
    assert page.status_code == 200 and town.title in page.text

    # public alerting: a draft for exactly the victim's towns, valid CAP 1.2 / IPAWS
    def alerts_now() -> list[dict]:
        return [d.as_dict() if hasattr(d, "as_dict") else {} for d in node.alerts.manager.drafts.values()]

    await until(lambda: any(outage.id in (a.get("outages") or []) for a in alerts_now()), "the alert draft", timeout=10)
    alerts = (await client.get("/alerts")).json()["alerts"]
    (draft,) = [a for a in alerts if outage.id in a["outages"]]
    assert sorted(draft["towns"]) == sorted(t.id for t in state.towns if t.psap_id == victim.id)
    assert draft["state"] == "draft" and draft["problems"] == []
    cap = await client.get(f"/alerts/{draft['id']}")
    assert cap.status_code == 200 and b"urn:oasis:names:tc:emergency:cap:1.2" in cap.content
    assert (await client.post(f"/alerts/{draft['id']}/approve", json={"user": "anyone"})).status_code in (404, 405)

    # the Massachusetts rule is refused at submission, naming the calls it would hit
    refused = await client.post("/changes", json={"kind": "bcf", "rules": MASSACHUSETTS, "author": "vendor@example"})
    assert refused.status_code == 422 and refused.json()["hits"]
    assert node.core.bcf.rules.rules == ()
