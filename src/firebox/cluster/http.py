"""``GET /cluster``: the cluster as this node sees it (Starlette).

JSON: ``node`` (this node's id), ``name`` (the cluster's SIP name), ``isolated`` (this node's
own beats stopped coming back), ``heartbeat_seconds``, ``nodes`` (each with its beat: what it
serves, its SIP/HTTP addresses, load, version; and ``health`` and ``age`` on this node's
clock), ``configured`` (the deployment's node list, with ``seen`` false for a node that never
beat) and ``bus`` (connection and outbox figures).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firebox import restapi
from firebox.cluster.bus import Bus
from firebox.cluster.config import ClusterConfig
from firebox.cluster.membership import Membership

__all__ = ["cluster_document", "cluster_routes"]


def cluster_document(membership: Membership, *, bus: Bus | None = None, config: ClusterConfig | None = None,
                     now: float | None = None) -> dict[str, Any]:  # fmt: skip
    at = membership.clock() if now is None else now
    doc: dict[str, Any] = {"name": config.name if config else None, **membership.view.as_dict(at)}
    if config is not None:
        seen = {n["id"] for n in doc["nodes"]}
        doc["configured"] = [{**n.model_dump(), "seen": n.id in seen} for n in config.nodes]
    doc["bus"] = (bus or membership.bus).status()
    return doc


def cluster_routes(membership: Membership | Callable[[], Membership | None], *, bus: Bus | None = None,
                   config: ClusterConfig | None = None, clock: Callable[[], float] = time.time) -> list[Route]:  # fmt: skip
    """The ``/cluster`` route for ``membership`` (or a function giving it; None: 503)."""
    current: Callable[[], Membership | None] = membership if callable(membership) else (lambda: membership)

    async def get_cluster(request: Request) -> Response:
        m = current()
        if m is None:
            return restapi.problem(503, "Cluster membership not running")
        return JSONResponse(cluster_document(m, bus=bus, config=config, now=clock()))

    return [Route("/cluster", get_cluster, methods=["GET"])]
