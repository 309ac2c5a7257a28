"""The cluster configuration model, ``GET /cluster`` and ``firebox cluster status`` (the
latter reading a real NATS bucket)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from typer.testing import CliRunner

from firebox.cluster.bus import InProcessBus, NatsBus
from firebox.cluster.cli import cluster_app
from firebox.cluster.config import ClusterConfig, split_hostport
from firebox.cluster.http import cluster_routes
from firebox.cluster.membership import MEMBERS_BUCKET, Beat, Membership

NODES = [
    {"id": "node-a", "sip": "127.0.0.1:5060", "http": "127.0.0.1:8080", "priority": 10, "weight": 50},
    {"id": "node-b", "sip": "127.0.0.1:5062", "http": "127.0.0.1:8082"},
]


def config(**over: object) -> ClusterConfig:
    return ClusterConfig.model_validate({"name": "Core.Example.net.", "node_id": "node-a", "nodes": NODES, **over})


def test_config_valid_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIREBOX_NODE_ID", raising=False)
    c = config(database="postgresql://postgres@127.0.0.1:5432/firebox")
    assert (c.name, c.this.id, c.heartbeat_seconds, c.nats) == ("core.example.net", "node-a", 1.0, "nats://127.0.0.1:4222")
    assert c.node("node-b") is not None and c.node("node-b").weight == 50  # type: ignore[union-attr]
    assert split_hostport("[::1]:5060") == ("::1", 5060)
    monkeypatch.setenv("FIREBOX_NODE_ID", "node-b")
    assert config().node_id == "node-b"


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"node_id": "node-z"}, "not one of the nodes"),
        ({"nodes": [NODES[0], NODES[0]]}, "duplicate id node-a"),
        ({"nodes": [NODES[0], {**NODES[1], "sip": "127.0.0.1:5060"}]}, "share the sip address"),
        ({"nodes": [{**NODES[0], "sip": "127.0.0.1"}]}, "not host:port"),
        ({"nodes": [{**NODES[0], "http": "127.0.0.1:70000"}]}, "not host:port"),
        ({"nodes": [{**NODES[0], "id": "node a"}]}, "not a node id"),
        ({"nats": "http://x:4222"}, "nats://"),
        ({"database": "sqlite:///x"}, "postgresql://"),
        ({"heartbeat_seconds": 0}, "greater than 0"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_config_refuses(monkeypatch: pytest.MonkeyPatch, over: dict[str, object], says: str) -> None:
    monkeypatch.delenv("FIREBOX_NODE_ID", raising=False)
    with pytest.raises(ValidationError, match=says):
        config(**over)


async def test_get_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIREBOX_NODE_ID", raising=False)
    bus = InProcessBus("t")
    m = Membership(bus, "node-a", heartbeat_seconds=1.0, describe=lambda: {"serving": ["bcf"], "sip": "127.0.0.1:5060"})
    await m.start()
    app = Starlette(routes=cluster_routes(m, config=config()))
    none = Starlette(routes=cluster_routes(lambda: None))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            for _ in range(100):  # the own beat arrives through the bus: bounded wait
                doc = (await client.get("/cluster")).json()
                if doc["nodes"]:
                    break
                await asyncio.sleep(0.01)
        assert doc["node"] == "node-a" and doc["name"] == "core.example.net" and not doc["isolated"]
        assert [(n["id"], n["health"], n["serving"]) for n in doc["nodes"]] == [("node-a", "alive", ["bcf"])]
        assert [(n["id"], n["seen"]) for n in doc["configured"]] == [("node-a", True), ("node-b", False)]
        assert doc["bus"]["kind"] == "in-process"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=none), base_url="http://t") as client:
            assert (await client.get("/cluster")).status_code == 503
    finally:
        await m.stop()
        await bus.close()


def test_cli_status_reads_nats_directly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIREBOX_NODE_ID", raising=False)
    name = f"test-{uuid.uuid4().hex[:10]}.example.net"
    now = time.time()

    async def seed() -> None:
        bus = NatsBus("nats://127.0.0.1:4222", name)
        await bus.start()
        kv = await bus.kv(MEMBERS_BUCKET)
        await kv.put("node-a", Beat("node-a", now - 60, now, 60, ("bcf", "esrp"), "127.0.0.1:5060", "127.0.0.1:8080",
                                    {"calls": 4}, "0.8").to_dict())  # fmt: skip
        await kv.put("node-b", Beat("node-b", now - 60, now - 30, 30, ("esrp",)).to_dict())  # stopped 30 beats ago
        await bus.close()

    async def clean() -> None:
        bus = NatsBus("nats://127.0.0.1:4222", name)
        await bus.start()
        await bus.kv(MEMBERS_BUCKET)
        await bus.destroy()
        await bus.close()

    asyncio.run(seed())
    try:
        runner = CliRunner()
        result = runner.invoke(cluster_app, ["status", "--nats", "nats://127.0.0.1:4222", "--cluster", name, "--json"])
        assert result.exit_code == 1, result.output  # a node is dead
        doc = json.loads(result.output)
        assert {n["id"]: n["health"] for n in doc["nodes"]} == {"node-a": "alive", "node-b": "dead"}
        deployment = tmp_path / "deployment.yaml"
        deployment.write_text(json.dumps({"cluster": {"name": name, "node_id": "node-a", "nodes": [
            NODES[0], NODES[1], {"id": "node-c", "sip": "127.0.0.1:5064", "http": "127.0.0.1:8084"}]}}))  # fmt: skip
        table = runner.invoke(cluster_app, ["status", "--file", str(deployment)], env={"COLUMNS": "200"})
        assert table.exit_code == 1
        assert "alive" in table.output and "dead" in table.output and "never seen" in table.output
        assert "bcf, esrp" in table.output
    finally:
        asyncio.run(clean())
    gone = CliRunner().invoke(cluster_app, ["status", "--nats", "nats://127.0.0.1:1", "--cluster", "x", "--timeout", "1"])
    assert gone.exit_code == 2
