"""Public alerting over HTTP (Starlette):

* ``GET /alerts``: the drafts and messages, newest first (JSON; ``?state=draft|approved|
  sent|withdrawn|rejected`` keeps one state);
* ``GET /alerts/feed``: the Atom feed of the messages sent (``application/atom+xml``);
* ``GET /alerts/{id}``: one message's CAP XML (``application/xml``): as sent (signed) once
  approved, the preview of a draft before;
* ``POST /alerts/{id}/approve`` ``{"user": "..."}``: approve (two distinct users under the
  two-person policy); the answer is the draft's JSON, published if that approval sufficed;
* ``POST /alerts/{id}/reject`` ``{"user": "...", "reason": "..."}``.

Errors are RFC 9457 problems (``application/problem+json``) naming what was wrong: an unknown
alert (404), a bad body (400), an approval the workflow refuses (409, saying why). The user
name is taken from the body: mount these routes behind the console's authentication.

``AlertDesk`` is the narrow interface the call-taker console approves through (the console's
``/alerts`` pages, signed-in users with the ``approve public alerts`` permission): the drafts
waiting, as plain dicts with their texts in every language and their WEA texts, and
approve / reject under the user the console signed in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firebox import restapi
from firebox.alerting.drafts import AlertDraft, ApprovalError, DraftState
from firebox.alerting.publish import AlertService
from firebox.cap.message import format_datetime

__all__ = ["AlertDesk", "alerting_routes", "create_alerting_app", "draft_view"]

log = logging.getLogger(__name__)

MAX_BODY = 16_384


def _problem(status: int, title: str, member: str, detail: str) -> JSONResponse:
    log.info("alerting HTTP %d: %s: %s", status, member, detail)
    return restapi.problem(status, title, [restapi.Problem(member, detail)])


async def _body(request: Request, *members: str) -> dict[str, str] | JSONResponse:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return _problem(413, "Body too large", "", f"at most {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        return _problem(400, "Bad body", "", f"must be a JSON object: {exc}")
    if not isinstance(body, dict):
        return _problem(400, "Bad body", "", "must be a JSON object")
    out = {}
    for name in members:
        value = body.get(name, "")
        if not isinstance(value, str):
            return _problem(400, "Bad body", name, "must be a string")
        out[name] = value.strip()
    if "user" in members and not out["user"]:
        return _problem(400, "Bad body", "user", "required: the name of the person approving or rejecting")
    return out


def alerting_routes(service: AlertService | Callable[[], AlertService | None]) -> list[Route]:
    """The routes; ``service`` the ``AlertService`` or a function giving it (None: 503)."""
    current: Callable[[], Any] = service if callable(service) and not isinstance(service, AlertService) else (
        lambda: service)  # fmt: skip

    def started() -> AlertService:
        s = current()
        if s is None:
            raise _NotStarted
        return s

    async def listing(request: Request) -> Response:
        s = started()
        state = request.query_params.get("state")
        allowed = [x.value for x in DraftState]
        if state is not None and state not in allowed:
            return _problem(400, "Bad query parameter", "state", f"must be one of {', '.join(allowed)}, not {state!r}")
        drafts = sorted(s.manager.drafts.values(), key=lambda d: (d.created, d.id), reverse=True)
        return JSONResponse({"alerts": [d.as_dict() for d in drafts if state is None or d.state.value == state]})

    async def feed(request: Request) -> Response:
        s = started()
        return Response(s.feed.to_xml(s.clock()), media_type="application/atom+xml")

    async def one(request: Request) -> Response:
        s = started()
        draft = s.manager.drafts.get(request.path_params["id"])
        if draft is None:
            return _problem(404, "No such alert", "id", f"no alert {request.path_params['id']!r}")
        return Response(draft.xml or draft.alert.to_xml(), media_type="application/xml")

    async def decide(request: Request, action: str) -> Response:
        s = started()
        ident = request.path_params["id"]
        if ident not in s.manager.drafts:
            return _problem(404, "No such alert", "id", f"no alert {ident!r}")
        body = await _body(request, "user", "reason")
        if isinstance(body, JSONResponse):
            return body
        try:
            if action == "approve":
                draft = await s.approve(ident, body["user"])
            else:
                draft = s.manager.reject(ident, body["user"], s.clock(), body["reason"])
        except ApprovalError as exc:
            return _problem(409, f"Cannot {action}", "id", str(exc))
        return JSONResponse(draft.as_dict())

    async def approve(request: Request) -> Response:
        return await decide(request, "approve")

    async def reject(request: Request) -> Response:
        return await decide(request, "reject")

    def guarded(view: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            try:
                return await view(request)
            except _NotStarted:
                return _problem(503, "Alerting not started", "", "public alerting starts with the monitor")

        return run

    return [
        Route("/alerts", guarded(listing), methods=["GET"]),
        Route("/alerts/feed", guarded(feed), methods=["GET"]),
        Route("/alerts/{id}", guarded(one), methods=["GET"]),
        Route("/alerts/{id}/approve", guarded(approve), methods=["POST"]),
        Route("/alerts/{id}/reject", guarded(reject), methods=["POST"]),
    ]


class _NotStarted(Exception):
    pass


def create_alerting_app(service: Any) -> Starlette:
    return Starlette(routes=alerting_routes(service), exception_handlers={HTTPException: restapi.http_error})


# --- the console's interface ----------------------------------------------------------------


def draft_view(draft: AlertDraft, service: AlertService) -> dict[str, Any]:
    """A draft as a person deciding on it reads it: ``as_dict()`` plus the towns by name, the
    approvals still needed, and per language (CAP ``<info>``) the headline, description,
    instruction and the two WEA texts (``CMAMtext``, at most 90 characters; ``CMAMlongtext``,
    at most 360: 47 CFR 10.430)."""
    manager = service.manager
    towns = manager.area.towns
    needed = 2 if manager.policy.two_person else 1
    out = draft.as_dict()
    out["town_names"] = sorted(towns[t].title if t in towns else t for t in draft.towns)
    out["needed"] = needed
    out["approvals_missing"] = max(0, needed - len(draft.approvals)) if draft.state is DraftState.DRAFT else 0
    out["infos"] = [
        {
            "language": info.language, "headline": info.headline, "description": info.description,
            "instruction": info.instruction, "wea": info.parameter("CMAMtext"),
            "wea_long": info.parameter("CMAMlongtext"),
        }
        for info in draft.alert.infos
    ]  # fmt: skip
    out["sent_at"] = format_datetime(draft.sent_at) if draft.sent_at is not None else None
    return out


class AlertDesk:
    """Public alerting as the console sees it, over an ``AlertService`` (or a function
    giving it; None until the node has started alerting: ``available`` is False and every
    list is empty). The user is whoever the console signed in; the workflow's own rules
    (two-person approval, validation, state) decide, and say why in ``ApprovalError``."""

    def __init__(self, service: AlertService | Callable[[], AlertService | None]) -> None:
        self._current: Callable[[], AlertService | None] = (
            service if callable(service) and not isinstance(service, AlertService) else (lambda: service)
        )  # fmt: skip

    @property
    def available(self) -> bool:
        return self._current() is not None

    @property
    def two_person(self) -> bool:
        s = self._current()
        return bool(s is not None and s.manager.policy.two_person)

    def _drafts(self) -> list[AlertDraft]:
        s = self._current()
        if s is None:
            return []
        return sorted(s.manager.drafts.values(), key=lambda d: (d.created, d.id), reverse=True)

    def pending(self) -> list[dict[str, Any]]:
        """Drafts waiting for a decision, newest first."""
        s = self._current()
        return [draft_view(d, s) for d in self._drafts() if d.state is DraftState.DRAFT] if s else []

    def decided(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest messages no longer waiting (approved, sent, withdrawn, rejected)."""
        s = self._current()
        done = [d for d in self._drafts() if d.state is not DraftState.DRAFT][:limit]
        return [draft_view(d, s) for d in done] if s else []

    def fingerprint(self) -> tuple[tuple[str, str, int], ...]:
        """Changes when any draft appears or changes state or gets an approval (what a live
        page polls)."""
        return tuple((d.id, d.state.value, len(d.approvals)) for d in self._drafts())

    def _service(self) -> AlertService:
        s = self._current()
        if s is None:
            raise ApprovalError("public alerting is not running")
        return s

    async def approve(self, draft_id: str, user: str) -> dict[str, Any]:
        """``KeyError`` for an unknown draft, ``ApprovalError`` when the workflow refuses."""
        s = self._service()
        draft = await s.approve(draft_id, user)
        return draft_view(draft, s)

    def reject(self, draft_id: str, user: str, reason: str = "") -> dict[str, Any]:
        s = self._service()
        draft = s.manager.reject(draft_id, user, s.clock(), reason)
        return draft_view(draft, s)
