"""Two firebox nodes composed from deployment files with one ``cluster:`` section, on the
real NATS (JetStream) and PostgreSQL of this machine: each sees the other alive; an outage
mark one node's detector sets steers the other's routing; an incident one node's CAD makes
is the other's; a call placed to the cluster's name with the first node gone is carried by
the second; a node that stops leaves the other's view."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import yaml
from rich.console import Console

from firebox.cad.model import IncidentSubtype, IncidentType
from firebox.cluster.membership import Health
from firebox.deployment import load_deployment
from firebox.esrp.states import OutageMark
from firebox.node import build_node, cluster_resolver, start_sip, stop_sip, write_demo
from firebox.sim.carrier import CallPlan, Carrier, Outcome
from pg_kit import pg_url  # noqa: F401 -- a fixture


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(predicate, what: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _deployment(tmp: Path, node_id: str, sip: dict[str, int], http: dict[str, int], name: str, db: str) -> Path:
    path, state = write_demo(tmp / node_id, seed=911, n_towns=40, listen=f"127.0.0.1:{http[node_id]}",
                         sip_listen=f"127.0.0.1:{sip[node_id]}", console=Console(quiet=True))  # fmt: skip
    doc = yaml.safe_load(path.read_text())
    doc["elements"]["cad"] = {"listen": f"127.0.0.1:{http[node_id]}"}
    # No HTTP server runs here: no Logging Service to send to (the stop would wait for it).
    doc["elements"].pop("log_events", None)
    doc["cluster"] = {
        "name": name, "node_id": node_id, "database": db, "nats": "nats://127.0.0.1:4222",
        "heartbeat_seconds": 0.2,
        "nodes": [{"id": n, "sip": f"127.0.0.1:{sip[n]}", "http": f"127.0.0.1:{http[n]}", "priority": 10 * (i + 1)}
                  for i, n in enumerate(sorted(sip))],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    TOWNS[:] = state.towns
    return path


TOWNS: list = []


async def test_two_nodes_share_state_records_and_calls(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    name = f"core-{uuid.uuid4().hex[:10]}.test.invalid"
    sip = {"node-a": free_port(), "node-b": free_port()}
    http = {"node-a": free_port(socket.SOCK_STREAM), "node-b": free_port(socket.SOCK_STREAM)}
    nodes = {n: build_node(load_deployment(_deployment(tmp_path, n, sip, http, name, pg_url)), console=Console(quiet=True))
             for n in sip}  # fmt: skip
    a, b = nodes["node-a"], nodes["node-b"]
    clients = []
    try:
        for node in (a, b):
            clients.append(await start_sip(node))
        # Each sees the other alive.
        await until(lambda: a.membership.view.health("node-b", time.time()) is Health.ALIVE
                    and b.membership.view.health("node-a", time.time()) is Health.ALIVE, "both nodes alive")  # fmt: skip
        # An outage mark on A (its detector's) steers B's routing too.
        queue = a.deployment.psaps[0].uri
        a.core.router.states.mark_outage(queue, OutageMark("psap-x-1", True, "silent", datetime.now(UTC)))
        await until(lambda: b.core.router.states.outage_verdict(queue) is not None, "the mark on node B")
        a.core.router.states.clear_outage(queue, "psap-x-1")
        await until(lambda: b.core.router.states.outage_verdict(queue) is None, "the mark lifted on node B")
        # One CAD: an incident made on A is B's.
        made = a.cad.incident_by_hand(at=datetime.now(UTC), actor="test", type=IncidentType.FIRE,
                                      subtype=IncidentSubtype.STRUCTURE_FIRE, priority=2,
                                      description="walk-in at the station")  # fmt: skip
        assert made.id in {i.id for i in b.cad.incidents()}
        # Node A stops; a call to the cluster's name is carried by node B.
        await stop_sip(a)
        a_stopped = True
        await until(lambda: b.membership.view.health("node-a", time.time()) is Health.LEFT, "node A left")
        carrier = Carrier(("127.0.0.1", sip["node-a"], "udp"), resolver=cluster_resolver(b.deployment, ("udp",)),
                          ingress_uri=f"sip:{name}", failover_seconds=0.5)  # fmt: skip
        await carrier.start()
        try:
            point = TOWNS[14].geometry.point_on_surface()
            lon, lat = point.x, point.y
            before = b.core.stats["calls_in"]
            # Bounded without waiting on the cancellation of a call that never ends.
            task = asyncio.ensure_future(carrier.call(CallPlan("tel:+16035550142", lon, lat, hold=0.2)))
            done, _ = await asyncio.wait({task}, timeout=20)
            if not done:
                task.cancel()
            assert done, "the call through node B did not end within 20 s"
            result = task.result()
            assert result.outcome is Outcome.ANSWERED and result.status == 200, result
            assert b.core.stats["calls_in"] == before + 1 and carrier.stats.failovers >= 1
        finally:
            await carrier.close()
    finally:
        for node in (b,) if locals().get("a_stopped") else (a, b):
            await stop_sip(node)
        for http_client in clients:
            if http_client is not None:
                await http_client.aclose()
        for node in (a, b):
            if node.policy_store is not None:
                node.policy_store.close()
