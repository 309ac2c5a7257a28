"""``firebox serve`` stops in order on SIGTERM (as a service manager stops it): every server
ends, the node leaves its cluster and prints its summary, and the process exits 0. Before,
uvicorn re-raised the signal after its own shutdown and the process died with -15 before the
node had stopped (its peers then saw it die, not leave)."""

from __future__ import annotations

import uuid
from pathlib import Path

import yaml
from rich.console import Console

from firebox.cluster.process import NodeProcess
from firebox.node import write_demo
from netkit import free_tcp_port


async def test_sigterm_stops_the_node_in_order_and_exits_0(tmp_path: Path) -> None:
    http, sip = free_tcp_port(), free_tcp_port()
    path, _ = write_demo(tmp_path / "n1", seed=911, n_towns=40, listen=f"127.0.0.1:{http}",
                         sip_listen=f"127.0.0.1:{sip}", console=Console(quiet=True))  # fmt: skip
    doc = yaml.safe_load(path.read_text())
    doc["cluster"] = {"name": f"c-{uuid.uuid4().hex[:8]}.test.invalid", "node_id": "n1", "nats": "nats://127.0.0.1:4222",
                      "nodes": [{"id": "n1", "sip": f"127.0.0.1:{sip}", "http": f"127.0.0.1:{http}"}]}  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    node = NodeProcess(path, "n1", f"127.0.0.1:{http}", tmp_path / "n1.log")
    await node.start()
    assert await node.stop(timeout=30) == 0, node.tail()
    log = node.log_path.read_text()
    assert "stopping (SIGTERM)" in log and "hash chain verified" in log.replace("\n", " ").replace("  ", " "), node.tail()
