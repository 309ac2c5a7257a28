"""``firebox cluster``: the nodes of an active-active deployment, read from the bus itself.

    firebox cluster status --nats nats://127.0.0.1:4222 --cluster core.example.net
    firebox cluster status --file deployment.yaml [--json]

``status`` reads the heartbeats in the NATS key-value bucket directly, not through a node's
HTTP API, so it works when any node (or every node) is down. Ages come from each beat's own
time (the sender's clock); exit status 1 when a node is not alive, 2 when NATS cannot be read.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from firebox.cluster.bus import decode_key
from firebox.cluster.config import ClusterConfig
from firebox.cluster.membership import MEMBERS_BUCKET, Beat, ClusterView, Health

__all__ = ["cluster_app", "read_beats"]

cluster_app = typer.Typer(help="Active-active cluster: nodes, health, what each serves.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

@cluster_app.callback()
def _group() -> None:
    """Active-active cluster: nodes, health, what each serves."""


_COLOURS = {Health.ALIVE: "green", Health.SUSPECT: "yellow", Health.DEAD: "red", Health.LEFT: "dim"}


async def read_beats(nats_url: str, cluster: str, *, timeout: float = 5.0) -> list[Beat]:
    """Every beat in the cluster's ``members`` bucket (no bucket: none). Read-only."""
    import nats
    from nats.js.errors import BucketNotFoundError

    from firebox.cluster.bus import NatsBus, kv_snapshot

    bucket = NatsBus(nats_url, cluster).bucket_name(MEMBERS_BUCKET)

    async def failed(exc: Exception) -> None:
        return None  # connect raises (or the timeout below fires): one report is enough

    # nats-py keeps trying a refused server; the whole read is bounded here instead.
    async with asyncio.timeout(timeout):
        nc = await nats.connect([s.strip() for s in nats_url.split(",")], connect_timeout=timeout,
                                allow_reconnect=False, max_reconnect_attempts=1, error_cb=failed)  # fmt: skip
    try:
        js = nc.jetstream(timeout=timeout)
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            return []
        beats = []
        for entry in await kv_snapshot(js, kv, timeout):
            try:
                beats.append(Beat.from_dict(json.loads(entry.value or b"{}"), decode_key(entry.key)))
            except (ValueError, TypeError, AttributeError):
                continue  # not a beat
        return beats
    finally:
        await nc.close()


def _from_file(path: Path) -> ClusterConfig:
    import yaml

    data = yaml.safe_load(path.read_text())
    section = data.get("cluster") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        err.print(f"[red]{path}[/red]: no cluster section")
        raise typer.Exit(2)
    return ClusterConfig.model_validate(section)


@cluster_app.command("status")
def status(
    nats_url: Annotated[Optional[str], typer.Option("--nats", help="NATS server(s), comma separated")] = None,
    cluster: Annotated[Optional[str], typer.Option("--cluster", help="the cluster name (cluster.name)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="a deployment file with a cluster section")] = None,
    heartbeat: Annotated[Optional[float], typer.Option("--heartbeat", help="seconds between beats")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait for NATS")] = 5.0,
) -> None:
    """The nodes, their health (alive, suspect after 3 missed beats, dead after 10, left)
    and what each serves."""
    config = _from_file(file) if file else None
    url = nats_url or (config.nats if config else "nats://127.0.0.1:4222")
    name = cluster or (config.name if config else None)
    if not name:
        err.print("[red]name the cluster[/red]: --cluster NAME or --file deployment.yaml")
        raise typer.Exit(2)
    try:
        beats = asyncio.run(read_beats(url, name, timeout=timeout))
    except Exception as exc:  # noqa: BLE001 -- any failure to read is "cannot tell"
        err.print(f"[red]cannot read the cluster from {url}[/red]: {exc}")
        raise typer.Exit(2) from None
    view = ClusterView("(cli)", heartbeat or (config.heartbeat_seconds if config else 1.0))
    now = time.time()
    for beat in beats:
        view.observe(beat, now)
    nodes = view.nodes(now)
    configured = [n.id for n in config.nodes] if config else []
    missing = [n for n in configured if n not in {s.beat.node_id for s in nodes}]
    if as_json:
        print(json.dumps({"cluster": name, "nodes": [s.as_dict() for s in nodes], "never_seen": missing}, indent=2))
    else:
        table = Table("node", "health", "last beat", "serving", "sip", "http", "load", "version", "up since",
                      title=f"cluster {name}")  # fmt: skip
        for s in nodes:
            b = s.beat
            colour = _COLOURS[s.health]
            load = ", ".join(f"{k} {v:g}" for k, v in sorted(b.load.items()))
            table.add_row(b.node_id, f"[{colour}]{s.health.value}[/{colour}]", f"{s.age:.1f}s ago", ", ".join(b.serving),
                          b.sip, b.http, load, b.version, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(b.started)))  # fmt: skip
        for n in missing:
            table.add_row(n, "[red]never seen[/red]", "", "", "", "", "", "", "")
        console.print(table)
    if missing or any(s.health is not Health.ALIVE and s.health is not Health.LEFT for s in nodes):
        raise typer.Exit(1)


