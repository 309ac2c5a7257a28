"""A second firebox node for the ``node-loss`` replay (issue 8): the deployment files of a
two-node cluster on the demo state and node B as a real child process.

Node A is the scenario's in-process node (its monitor, its PSAP agents, its Logging
Services); node B is ``firebox serve`` of its own deployment file
(``firebox.cluster.process.NodeProcess``), so that it can die for real (SIGKILL). Both files
carry the same ``cluster:`` section (``docs/cluster.md``): one cluster name per run (runs
never see each other's NATS state), nodes A and B with their SIP and HTTP addresses, the
shared PostgreSQL and NATS JetStream.

Node B runs the same demo state (the same seed) with:

* ``elements.psap_agents.remote``: A's agents, which stand for the real PSAPs and outlive B;
* no Logging Service of its own: its i3 log events go to A's two Logging Services (one
  cluster, one log; its crash-safe spool keeps what a SIGKILL interrupts for its restart);
* no Policy Store of its own: its BCF and ESRP follow A's (one set of rules per cluster);
* no console, call handling or monitor (A's monitor watches the cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ClusterPair",
    "ClusterServicesUnavailable",
    "PeerStartFailed",
    "cluster_services_problem",
    "default_database",
    "default_nats",
    "prepare_pair",
]

#: Environment variables naming the cluster's PostgreSQL and NATS for the replays.
DATABASE_ENV = "FIREBOX_SCENARIO_DATABASE"
NATS_ENV = "FIREBOX_SCENARIO_NATS"
#: Node ids of the pair (the detector's outage key is ``firebox-node:<id>``).
NODE_A = "node-a"
NODE_B = "node-b"


def default_database() -> str:
    """The replays' PostgreSQL: ``$FIREBOX_SCENARIO_DATABASE`` or the local ``test`` database."""
    return os.environ.get(DATABASE_ENV, "postgresql://postgres@127.0.0.1:5432/test")


def default_nats() -> str:
    """The replays' NATS: ``$FIREBOX_SCENARIO_NATS`` or the local server."""
    return os.environ.get(NATS_ENV, "nats://127.0.0.1:4222")


class ClusterServicesUnavailable(RuntimeError):
    """PostgreSQL or NATS JetStream cannot be used: a cluster scenario cannot run."""


class PeerStartFailed(RuntimeError):
    """Node B did not start; the message carries the tail of its log."""


def _nats_problem(url: str, timeout: float) -> str | None:
    """Whether the first server of ``url`` speaks NATS with JetStream (its ``INFO`` line)."""
    from urllib.parse import urlsplit

    first = urlsplit(url.split(",")[0].strip())
    host, port = first.hostname or "127.0.0.1", first.port or 4222
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            line = s.makefile("rb").readline(65536)
    except OSError as exc:
        return f"NATS at {host}:{port} does not answer ({exc.strerror or exc})"
    if not line.startswith(b"INFO "):
        return f"{host}:{port} is not a NATS server (it said {line[:40]!r})"
    with contextlib.suppress(ValueError):
        if not json.loads(line[5:]).get("jetstream"):
            return f"NATS at {host}:{port} runs without JetStream (start it with -js)"
    return None


def cluster_services_problem(database: str, nats: str, timeout: float = 3.0) -> str | None:
    """Why the cluster's PostgreSQL or NATS cannot be used, or None (each check bounded)."""
    try:
        import psycopg

        with psycopg.connect(database, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 -- any reason is the reason to say
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {database} cannot be used: {first}"
    return _nats_problem(nats, timeout)


def free_sip_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    for _ in range(50):  # bounded
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise OSError("no port free for both UDP and TCP on 127.0.0.1")


@dataclass(frozen=True)
class ClusterPair:
    """The two nodes' addresses and files."""

    name: str
    a_deployment: Path
    b_deployment: Path
    a_sip: int
    a_http: int
    a_agents: int
    b_sip: int
    b_http: int
    database: str
    nats: str

    @property
    def b_log(self) -> Path:
        return self.b_deployment.parent / "node-b.log"

    def process(self) -> Any:
        from firebox.cluster.process import NodeProcess

        return NodeProcess(self.b_deployment, NODE_B, f"127.0.0.1:{self.b_http}", self.b_log)


def _cluster(name: str, node_id: str, pair: dict[str, tuple[int, int]], database: str, nats: str,
             heartbeat: float) -> dict[str, Any]:  # fmt: skip
    # Same SRV priority and weight (docs/cluster.md): in-dialog requests spread over both.
    return {
        "name": name, "node_id": node_id, "database": database, "nats": nats, "heartbeat_seconds": heartbeat,
        "nodes": [{"id": n, "sip": f"127.0.0.1:{sip}", "http": f"127.0.0.1:{http}", "priority": 10, "weight": 50}
                  for n, (sip, http) in sorted(pair.items())],
    }  # fmt: skip


def prepare_pair(a_deployment: Path, work: Path, *, seed: int, n_towns: int, database: str, nats: str,
                 heartbeat: float = 0.5) -> ClusterPair:  # fmt: skip
    """Turn A's demo deployment (written by the scenario) into node A of a new cluster and
    write node B's (``work/node-b``). Raises ``ClusterServicesUnavailable`` when PostgreSQL
    or NATS cannot be used."""
    from rich.console import Console

    from firebox.node import write_demo

    problem = cluster_services_problem(database, nats)
    if problem is not None:
        raise ClusterServicesUnavailable(problem)
    name = f"core-{uuid.uuid4().hex[:10]}.scenario.invalid"
    a_doc = yaml.safe_load(a_deployment.read_text())
    a_http = int(str(a_doc["elements"]["web"]["listen"]).rpartition(":")[2])
    a_sip, a_agents, b_sip, b_http = free_sip_port(), free_sip_port(), free_sip_port(), free_sip_port()
    pair = {NODE_A: (a_sip, a_http), NODE_B: (b_sip, b_http)}
    a_els = a_doc["elements"]
    a_els["bcf"]["listen"] = f"127.0.0.1:{a_sip}"
    a_els["psap_agents"]["listen"] = f"127.0.0.1:{a_agents}"
    a_doc["cluster"] = _cluster(name, NODE_A, pair, database, nats, heartbeat)
    a_deployment.write_text(yaml.safe_dump(a_doc, sort_keys=False))

    b_path, _state = write_demo(work / NODE_B, seed=seed, n_towns=n_towns, listen=f"127.0.0.1:{b_http}",
                                sip_listen=f"127.0.0.1:{b_sip}", console=Console(quiet=True))  # fmt: skip
    b_doc = yaml.safe_load(b_path.read_text())
    b_els = b_doc["elements"]
    # As node A's: the carriers are at 127.0.0.1.
    b_els["bcf"]["sources"] = dict(a_els["bcf"]["sources"])
    b_els["psap_agents"] = {"remote": f"127.0.0.1:{a_agents}"}
    # One log and one Policy Store for the cluster: A's.
    b_els.pop("logging", None)
    b_els.pop("policy_store", None)
    b_els["log_events"] = {**a_els["log_events"], "services": _logging_urls(a_els)}
    for element in ("bcf", "esrp"):
        if "policy" in b_els.get(element, {}):
            b_els[element]["policy"] = dict(a_els[element]["policy"])
    for element in ("console", "call_handling", "monitor", "cad", "alerting", "status_page"):
        b_els.pop(element, None)
    b_doc["cluster"] = _cluster(name, NODE_B, pair, database, nats, heartbeat)
    b_path.write_text(yaml.safe_dump(b_doc, sort_keys=False))
    return ClusterPair(name, a_deployment, b_path, a_sip, a_http, a_agents, b_sip, b_http, database, nats)


def _logging_urls(elements: dict[str, Any]) -> list[str]:
    services = elements.get("logging") or []
    if isinstance(services, dict):
        services = [services]
    return [f"http://{s['listen']}{str(s.get('path', '/')).rstrip('/')}" for s in services]


async def start_peer(pair: ClusterPair, process: Any, timeout: float = 90.0) -> None:
    """Start node B and wait until it serves ``/cluster``; on failure the error carries the
    tail of its log (kept in the run's work dir)."""
    try:
        await process.start(timeout=timeout)
    except (RuntimeError, TimeoutError) as exc:
        raise PeerStartFailed(f"node B did not start (log: {pair.b_log}): {exc}") from None


async def stop_peer(process: Any, timeout: float = 20.0) -> int | None:
    """A clean stop (SIGTERM, SIGKILL after ``timeout``), never raising."""
    with contextlib.suppress(Exception):
        return await asyncio.wait_for(process.stop(timeout=timeout), timeout + 15.0)
    process.kill()
    return None
