"""The demo page's "break something" controls (issue 6), mounted only by ``firebox demo``
(``install_demo_controls(node)``), never by ``firebox serve``: without authentication, on
purpose (a demonstration on 127.0.0.1; the page says so).

Under ``/demo`` on the page's address::

    GET  /demo/faults                 what is broken now, what was done, the monitor's outages
                                      (current and recent) and calls rerouted per PSAP
    POST /demo/faults/bad-rule        submit the Massachusetts rule to the change system
    POST /demo/faults/firewall        {"on": true|false}: a firewall outside firebox blocks ingress
    POST /demo/faults/cut             {"psap": "<id>"}: the PSAP goes silent (a cut line)
    POST /demo/faults/heal            heal all

Errors are RFC 9457 problems (``firebox.restapi``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router

from firebox import restapi
from firebox.demo.faults import DemoFaults, FaultError, node_hooks

__all__ = ["demo_routes", "install_demo_controls"]


def _problem(status: int, member: str, detail: str) -> JSONResponse:
    return restapi.problem(status, "Demo fault refused" if status < 500 else "Demo fault failed",
                           [restapi.Problem(member, detail)])  # fmt: skip


def demo_routes(faults: DemoFaults, node: Any = None) -> list[Route]:
    """The routes over ``faults``; ``node`` (optional) adds the monitor's outages and the
    calls rerouted to the status."""

    def picture() -> dict[str, Any]:
        out = faults.status()
        out["psaps"] = [{"id": pid, "name": name} for pid, name, _ in faults.hooks.psaps()]
        monitor = getattr(node, "monitor", None)
        if monitor is not None:
            doc = monitor.outages()
            out["outages"] = {"current": doc["current"], "recent": doc["recent"][:8]}
            scopes = monitor.figures().get("scopes", {})
            out["rerouted"] = {k: c.get("rerouted", 0) for k, c in scopes.get("psap", {}).items() if c.get("rerouted")}
        else:
            out["outages"], out["rerouted"] = None, {}
        return out

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise FaultError(f"the body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise FaultError("the body must be a JSON object")
        return doc

    async def status(_: Request) -> Response:
        reply = JSONResponse(picture())
        reply.headers["Cache-Control"] = "no-store"
        return reply

    async def act(request: Request) -> Response:
        action = request.path_params["action"]
        try:
            doc = await body(request)
            if action == "bad-rule":
                done = await faults.bad_rule()
            elif action == "firewall":
                done = faults.firewall(doc.get("on", True) is not False)
            elif action == "cut":
                psap = doc.get("psap")
                if not isinstance(psap, str) or not psap:
                    return _problem(400, "psap", "name the PSAP to cut")
                done = await faults.cut_psap(psap)
            elif action == "heal":
                done = await faults.heal_all()
            else:
                return _problem(404, "", f"no demo fault {action!r}")
        except FaultError as exc:
            return _problem(409, "", str(exc))
        return JSONResponse({"done": done, "status": picture()})

    return [
        Route("/faults", status, methods=["GET"]),
        Route("/faults/{action}", act, methods=["POST"]),
    ]


def install_demo_controls(node: Any) -> DemoFaults:
    """Mount the demo controls on the node's page (``elements.web``): in front of the other
    routes of that address (a Logging Service at ``/`` would take every path otherwise).
    Call after ``build_node`` and before serving; the faults reach the BCF/ESRP once
    ``start_sip`` has started them."""
    web = node.deployment.elements.web
    if web is None or web.listen not in node.apps:
        raise ValueError("the node has no demo page (elements.web) to put the controls on")
    faults = DemoFaults(node_hooks(node))
    node.apps[web.listen].router.routes.insert(0, Mount("/demo", app=Router(routes=demo_routes(faults, node))))
    node.demo_faults = faults
    return faults
