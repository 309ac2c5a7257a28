"""The Policy Store as the demo composes it: served by the node at /policy, the ESRP's
routing rules following the policy "demo-routing". A policy put in the store (over its REST
interface) decides where the next call goes; a bad version leaves the rules in use alone.
Real HTTP (uvicorn) and SIP (UDP) on 127.0.0.1; every wait bounded."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from rich.console import Console

from firebox import jws
from firebox.deployment import load_deployment
from firebox.node import build_node, start_sip, stop_sip, write_demo
from firebox.policy.testing import esrp_route_rule, policy
from firebox.sim.carrier import CallPlan, Carrier, LocationMode, Outcome


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def town_of(state, psap_id: str) -> tuple[float, float]:
    town = next(t for t in state.towns if t.psap_id == psap_id)
    p = town.geometry.point_on_surface()
    return p.x, p.y


async def until(predicate, what: str, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def node(tmp_path: Path):
    port = free_port()
    path, state = write_demo(tmp_path, seed=911, n_towns=40, listen=f"127.0.0.1:{port}",
                             sip_listen="127.0.0.1:0", console=Console(quiet=True))  # fmt: skip
    text = path.read_text().replace("interval_seconds: 2.0", "interval_seconds: 0.2")
    path.write_text(text)
    dep = load_deployment(path)
    assert dep.elements.esrp is not None and dep.elements.esrp.policy is not None
    assert dep.elements.esrp.policy.interval_seconds == 0.2
    node = build_node(dep, console=Console(quiet=True))
    (app,) = node.apps.values()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, "the HTTP server")
    http = await start_sip(node)
    try:
        yield node, state, f"http://127.0.0.1:{port}/policy"
    finally:
        await stop_sip(node)
        if http is not None:
            await http.aclose()
        server.should_exit = True
        await task
        node.policy_store.close()


def unsigned(doc: dict) -> bytes:
    """The policy as a flattened-JSON JWS with ``alg: none`` (the demo's store accepts it)."""
    return json.dumps(jws.sign(doc, None, extra={"iat": time.time()})).encode()  # iat: no replays


async def test_a_policy_put_in_the_store_routes_the_next_call(node):
    node, state, store = node
    first, second = state.psaps[0], state.psaps[1]
    carrier = Carrier(("127.0.0.1", node.core.port, "udp"))
    await carrier.start()
    try:
        lon, lat = town_of(state, first.id)
        result = await carrier.call(CallPlan("tel:+12005550101", lon, lat, LocationMode.VALUE, hold=0.05))
        assert result.outcome is Outcome.ANSWERED and node.agents.counts[first.id].answered == 1
        (watch,) = [w for w in node.watches if w.policy_id == "demo-routing"]
        async with httpx.AsyncClient() as http:
            doc = policy("demo-routing", [esrp_route_rule("all-to-second", second.uri)], owner="demo.firebox.test")
            reply = await http.post(f"{store}/Policies", content=unsigned(doc),
                                    headers={"Content-Type": "application/json"})  # fmt: skip
            assert reply.status_code == 201, reply.text
            await until(lambda: watch.version == 1, "version 1 installed")
            # the next call from the first PSAP's town goes where the policy says
            result = await carrier.call(CallPlan("tel:+12005550102", lon, lat, LocationMode.VALUE, hold=0.05))
            assert result.outcome is Outcome.ANSWERED
            assert node.agents.counts[second.id].answered == 1 and node.agents.counts[first.id].answered == 1
            # a version naming no PSAP of this state is refused; version 1 stays in use
            bad = policy("demo-routing", [{"id": "x", "priority": 1, "actions": [{"type": "route", "psap": "nope"}]}],
                         owner="demo.firebox.test")  # fmt: skip
            reply = await http.put(f"{store}/Policies/demo-routing", content=unsigned(bad),
                                   headers={"Content-Type": "application/json", "If-Match": reply.headers["etag"]})  # fmt: skip
            # (the store cannot know this state's PSAPs; the ESRP's watch checks against them)
            assert reply.status_code == 200, reply.text
            await until(lambda: watch.last_error is not None, "the bad version looked at")
            assert "nope" in watch.last_error and watch.version == 1
            result = await carrier.call(CallPlan("tel:+12005550103", lon, lat, LocationMode.VALUE, hold=0.05))
            assert result.outcome is Outcome.ANSWERED and node.agents.counts[second.id].answered == 2
    finally:
        await carrier.close()
