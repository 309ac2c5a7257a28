"""Rule changes over HTTP (Starlette), under ``/changes``:

* ``GET /changes`` (``?target=``, ``?stage=``): the changes, newest first;
* ``POST /changes`` ``{"kind": "bcf"|"routing", "rules": [...], "author": "...", "target": "..."}``:
  submit. 201 with the change in shadow (its ``shadow`` report), or 422 when the invariant
  refuses it: problem JSON whose ``errors`` name each call it would have hit
  (``member`` ``hits[n]``), with ``changeId`` and ``hits``;
* ``GET /changes/{id}``, ``GET /changes/{id}/diff``, ``GET /changes/{id}/log``;
* ``POST /changes/{id}/stage`` ``{"scope": {"sources": [...], "psaps": [...]}}`` (canary),
  ``POST /changes/{id}/promote`` (full), ``POST /changes/{id}/rollback`` ``{"reason": "..."}``.

Every error is RFC 9457 problem JSON (``firebox.restapi``) naming the member at fault; an
operation the stage table does not allow is 409.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firebox import restapi
from firebox.change.apply import ChangeManager
from firebox.change.core import CanaryScope, ChangeError, ChangeKind, Stage, diff

__all__ = ["change_routes", "create_change_app"]

_TITLES = {400: "Bad change request", 404: "No such change", 409: "Change not allowed now", 422: "Change refused"}


def _problem(exc: ChangeError) -> JSONResponse:
    problems = [restapi.Problem(member, message) for member, message in exc.problems]
    return restapi.problem(exc.status, _TITLES.get(exc.status, "Change failed"), problems)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ChangeError([("", f"the body is not JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise ChangeError([("", "the body must be a JSON object")])
    return data


def _handler(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            return await fn(request)
        except ChangeError as exc:
            return _problem(exc)

    return run


def change_routes(manager: ChangeManager | Callable[[], ChangeManager | None]) -> list[Route]:
    """The ``/changes`` routes of ``manager`` (or of a function giving it; None: 503)."""
    current: Callable[[], ChangeManager | None] = manager if callable(manager) else (lambda: manager)

    def get() -> ChangeManager:
        m = current()
        if m is None:
            raise ChangeError([("", "the change manager is not running yet")], 503)
        return m

    async def list_changes(request: Request) -> Response:
        stage_name = request.query_params.get("stage")
        try:
            stage = Stage(stage_name) if stage_name else None
        except ValueError:
            raise ChangeError([("stage", f"must be one of {', '.join(s.value for s in Stage)}")]) from None
        problems: list[restapi.Problem] = []
        limit = restapi.int_param(request.query_params.get("limit"), "limit", 100, 1, 1000, problems)
        if problems:
            raise ChangeError([(p.member, p.message) for p in problems])
        changes = get().store.list(target=request.query_params.get("target"), stage=stage, limit=limit)
        return JSONResponse({"changes": [_summary(c.to_dict()) for c in changes]})

    async def submit(request: Request) -> Response:
        body = await _body(request)
        problems = [(k, "unknown member") for k in sorted(set(body) - {"kind", "rules", "author", "target"})]
        try:
            kind = ChangeKind(body.get("kind"))
        except ValueError:
            problems.append(("kind", f"must be one of {', '.join(k.value for k in ChangeKind)}"))
        author, target = body.get("author"), body.get("target")
        if not isinstance(author, str) or not author:
            problems.append(("author", "a non-empty string is required"))
        if target is not None and (not isinstance(target, str) or not target):
            problems.append(("target", "must be a non-empty string"))
        if "rules" not in body:
            problems.append(("rules", "missing"))
        if problems:
            raise ChangeError(problems)
        change = await get().submit(kind, body["rules"], author=author, target=target)  # type: ignore[arg-type]
        if change.stage is Stage.REFUSED:
            hits = [h.to_dict() for h in change.hits]
            errors = [restapi.Problem(f"hits[{n}]", f"{h.call} from {h.source_id}: {h.action} by rule {h.rule_id}")
                      for n, h in enumerate(change.hits)]  # fmt: skip
            errors.insert(0, restapi.Problem("rules", change.reason))
            return restapi.problem(422, _TITLES[422], errors, changeId=change.id, hits=hits)
        return JSONResponse(change.to_dict(), status_code=201, headers={"Location": f"/changes/{change.id}"})

    async def one(request: Request) -> Response:
        return JSONResponse(get().get(request.path_params["id"]).to_dict())

    async def change_diff(request: Request) -> Response:
        change = get().get(request.path_params["id"])
        d = diff(change.before, change.after, ordered=change.kind is ChangeKind.BCF)
        return JSONResponse({"changeId": change.id, "lines": d.lines(), **d.to_dict()})

    async def change_log(request: Request) -> Response:
        change = get().get(request.path_params["id"])
        return JSONResponse({"changeId": change.id, "log": get().store.log(change.id)})

    async def stage(request: Request) -> Response:
        body = await _body(request)
        if "scope" not in body:
            raise ChangeError([("scope", "missing: a canary needs sources (ingress ids) or psaps (a region)")])
        scope = CanaryScope.from_dict(body["scope"])
        return JSONResponse((await get().stage(request.path_params["id"], scope)).to_dict())

    async def promote(request: Request) -> Response:
        return JSONResponse((await get().promote(request.path_params["id"])).to_dict())

    async def rollback(request: Request) -> Response:
        body = await _body(request)
        reason = body.get("reason", "rolled back by hand")
        if not isinstance(reason, str) or not reason:
            raise ChangeError([("reason", "must be a non-empty string")])
        return JSONResponse((await get().rollback(request.path_params["id"], reason)).to_dict())

    return [
        Route("/changes", _handler(list_changes), methods=["GET"]),
        Route("/changes", _handler(submit), methods=["POST"]),
        Route("/changes/{id}", _handler(one), methods=["GET"]),
        Route("/changes/{id}/diff", _handler(change_diff), methods=["GET"]),
        Route("/changes/{id}/log", _handler(change_log), methods=["GET"]),
        Route("/changes/{id}/stage", _handler(stage), methods=["POST"]),
        Route("/changes/{id}/promote", _handler(promote), methods=["POST"]),
        Route("/changes/{id}/rollback", _handler(rollback), methods=["POST"]),
    ]


def _summary(change: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "version", "kind", "target", "author", "stage", "scope", "created", "updated", "reason")
    out = {k: change[k] for k in keys}
    out["hits"], out["shadow"] = len(change["hits"]), len(change["shadow"])
    return out


def create_change_app(manager: ChangeManager) -> Starlette:
    """A Starlette app with just the ``/changes`` routes (404/405 as problem JSON)."""
    return Starlette(routes=change_routes(manager), exception_handlers={HTTPException: restapi.http_error})
