"""The CAD's JSON API (Starlette), for the console and for other elements:

    GET  /cad/incidents[?status=open|closed|all]     the incident board
    POST /cad/incidents                              a new incident: from a call or by hand
    GET  /cad/incidents/{id}                         one incident with its timeline
    GET  /cad/incidents/{id}/recommendation          the recommended units, explained
    POST /cad/incidents/{id}/dispatch                {"units": ["E1", ...]}
    POST /cad/incidents/{id}/status                  {"status": "on scene"}
    POST /cad/incidents/{id}/narrative               {"text": "..."}
    POST /cad/incidents/{id}/calls                   {"call_id": ..., "callback": ...}
    POST /cad/incidents/{id}/close                   {"disposition": "..."}
    GET  /cad/incidents/{id}/eido                    the EIDO (NENA-STA-021.1a)
    GET  /cad/units                                  the unit board
    POST /cad/units/{id}/status                      {"status": "en route", "position": {...}}
    POST /cad/boxes/{box}/alarm                      a fire alarm box pulled
    GET  /cad/audit[?target=...]                     the audit trail

Who acts is the ``X-Firebox-Actor`` header (the console, signed in, sets it); it is
required on every POST but a box alarm's (the telegraph is the actor). Every 4xx is an RFC
9457 problem (``application/problem+json``) whose ``errors`` name each wrong member.
The clock is injected (``clock``), so tests and replays control time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firebox import restapi
from firebox.cad.eido import EidoError
from firebox.cad.model import (
    CadError,
    IncidentStatus,
    IncidentSubtype,
    IncidentType,
    NotFound,
    TransitionError,
    UnitStatus,
    civic_from_json,
    incident_to_json,
    point_from_json,
    unit_to_json,
)
from firebox.cad.service import Cad

PROBLEM = restapi.PROBLEM_MEDIA_TYPE
ACTOR_HEADER = "X-Firebox-Actor"
MAX_BODY = 256 * 1024


class _Problem(Exception):
    def __init__(self, status: int, title: str, errors: list[tuple[str, str]]):
        super().__init__(title)
        self.status, self.title, self.errors = status, title, errors


def problem(status: int, title: str, errors: list[tuple[str, str]] | None = None) -> JSONResponse:
    """RFC 9457 problem details (``firebox.restapi``); ``errors`` lists (member, what is
    wrong), each answered with its member and JSON pointer."""
    return restapi.problem(status, title, [restapi.Problem(m, d) for m, d in errors or []])


def _cad_problem(exc: CadError) -> JSONResponse:
    text = str(exc)
    # Messages that start "member: ..." name the member; others are about the request.
    member, _, detail = text.partition(": ")
    named = bool(detail) and " " not in member
    errors = [(member, detail)] if named else [("", text)]
    if isinstance(exc, NotFound):
        return problem(404, "Not found", errors)
    if isinstance(exc, TransitionError):
        return problem(409, "Not allowed in the current state", errors)
    return problem(422, "Invalid request", errors)


def create_cad_app(cad: Cad, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Starlette:
    async def body(request: Request, allowed: set[str], required: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise _Problem(413, "Body too large", [("", f"more than {MAX_BODY} bytes")])
        if not raw.strip():
            doc: Any = {}
        else:
            try:
                doc = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _Problem(400, "Body is not JSON", [("", str(exc))]) from None
        if not isinstance(doc, dict):
            raise _Problem(400, "Body is not a JSON object", [("", f"got {type(doc).__name__}")])
        errors = [(k, "not a member of this request") for k in sorted(set(doc) - allowed)]
        errors += [(k, "required") for k in sorted(required - set(doc))]
        if errors:
            raise _Problem(422, "Invalid request", errors)
        return doc

    def actor(request: Request, default: str | None = None) -> str:
        who = (request.headers.get(ACTOR_HEADER) or "").strip() or default
        if not who:
            raise _Problem(400, "Who is acting?", [(ACTOR_HEADER, "header required: who does this")])
        return who

    def field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = doc.get(name, default)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is int):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise _Problem(422, "Invalid request", [(name, f"must be {names}, not {type(value).__name__}")])
        return value

    def endpoint(fn: Callable[..., Any]) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            try:
                return await fn(request)
            except _Problem as exc:
                return problem(exc.status, exc.title, exc.errors)
            except CadError as exc:
                return _cad_problem(exc)
            except EidoError as exc:  # an export that fails its own schema is our bug
                return problem(500, "EIDO export failed validation", [(p.path, p.message) for p in exc.problems])

        return run

    # --- incidents ------------------------------------------------------------------------

    async def list_incidents(request: Request) -> Response:
        which = request.query_params.get("status", "all")
        if which not in ("open", "closed", "all"):
            raise _Problem(422, "Invalid request", [("status", "must be open, closed or all")])
        found = cad.incidents(open_only=which == "open")
        if which == "closed":
            found = [i for i in found if not i.open]
        return JSONResponse({"incidents": [_summary(i) for i in found]})

    async def create_incident(request: Request) -> Response:
        who = actor(request)
        doc = await body(request, {
            "source", "type", "subtype", "priority", "call_id", "incident_tracking_id", "callback",
            "pidf", "civic", "point", "station", "description", "narrative",
        }, {"source", "type", "subtype", "priority"})  # fmt: skip
        common = {
            "at": clock(), "actor": who, "type": _enum(IncidentType, doc["type"], "type"),
            "subtype": _enum(IncidentSubtype, doc["subtype"], "subtype"),
            "priority": field(doc, "priority", int), "narrative": field(doc, "narrative", str),
        }  # fmt: skip
        if doc["source"] == "call":
            if "call_id" not in doc:
                raise _Problem(422, "Invalid request", [("call_id", "required for an incident from a call")])
            for name in ("civic", "point", "station", "description"):
                if name in doc:
                    raise _Problem(422, "Invalid request", [(name, "a call's location is its PIDF-LO (pidf)")])
            incident = cad.incident_from_call(
                call_id=field(doc, "call_id", str), callback=field(doc, "callback", str),
                incident_tracking_id=field(doc, "incident_tracking_id", str),
                pidf=field(doc, "pidf", str), **common,
            )  # fmt: skip
        elif doc["source"] == "walk-in":
            for name in ("call_id", "incident_tracking_id", "callback", "pidf"):
                if name in doc:
                    raise _Problem(422, "Invalid request", [(name, "only for an incident from a call")])
            incident = cad.incident_by_hand(
                civic=civic_from_json(doc.get("civic")), point=point_from_json(doc.get("point")),
                station=field(doc, "station", str), description=field(doc, "description", str), **common,
            )  # fmt: skip
        else:
            raise _Problem(422, "Invalid request", [("source", "must be 'call' or 'walk-in' (boxes: POST /cad/boxes/{box}/alarm)")])
        return _created(incident)

    async def get_incident(request: Request) -> Response:
        return JSONResponse(incident_to_json(cad.incident(request.path_params["incident_id"])))

    async def recommendation(request: Request) -> Response:
        return JSONResponse(cad.recommend(request.path_params["incident_id"]).to_json())

    async def dispatch(request: Request) -> Response:
        who = actor(request)
        doc = await body(request, {"units"}, {"units"})
        units = doc["units"]
        if not isinstance(units, list) or not units or not all(isinstance(u, str) for u in units):
            raise _Problem(422, "Invalid request", [("units", "must be a non-empty list of unit ids")])
        incident = cad.dispatch(request.path_params["incident_id"], units, at=clock(), actor=who)
        return JSONResponse(incident_to_json(incident))

    async def set_status(request: Request) -> Response:
        who = actor(request)
        doc = await body(request, {"status"}, {"status"})
        status = _enum(IncidentStatus, doc["status"], "status")
        incident = cad.set_status(request.path_params["incident_id"], status, at=clock(), actor=who)
        return JSONResponse(incident_to_json(incident))

    async def narrative(request: Request) -> Response:
        who = actor(request)
        doc = await body(request, {"text"}, {"text"})
        text = field(doc, "text", str)
        incident = cad.add_narrative(request.path_params["incident_id"], text, at=clock(), actor=who)
        return JSONResponse(incident_to_json(incident))

    async def link_call(request: Request) -> Response:
        who = actor(request)
        doc = await body(request, {"call_id", "callback", "incident_tracking_id"}, {"call_id"})
        incident = cad.link_call(
            request.path_params["incident_id"], field(doc, "call_id", str), at=clock(), actor=who,
            callback=field(doc, "callback", str), incident_tracking_id=field(doc, "incident_tracking_id", str),
        )  # fmt: skip
        return JSONResponse(incident_to_json(incident))

    async def close(request: Request) -> Response:
        who = actor(request)
        doc = await body(request, {"disposition"})
        incident = cad.close(request.path_params["incident_id"], at=clock(), actor=who,
                             disposition=field(doc, "disposition", str))  # fmt: skip
        return JSONResponse(incident_to_json(incident))

    async def eido(request: Request) -> Response:
        return JSONResponse(cad.eido(request.path_params["incident_id"]))

    # --- units, boxes, audit -------------------------------------------------------------

    async def list_units(request: Request) -> Response:
        return JSONResponse({"units": [unit_to_json(u) for u in cad.units()]})

    async def unit_status(request: Request) -> Response:
        who = actor(request)
        doc = await body(request, {"status", "position"}, {"status"})
        status = _enum(UnitStatus, doc["status"], "status")
        unit = cad.unit_status(request.path_params["unit_id"], status, at=clock(), actor=who,
                               position=point_from_json(doc.get("position"), "position"))  # fmt: skip
        return JSONResponse(unit_to_json(unit))

    async def box_alarm(request: Request) -> Response:
        who = actor(request, default="fire alarm telegraph")
        await body(request, set())
        return _created(cad.incident_from_box(request.path_params["box"], at=clock(), actor=who))

    async def audit(request: Request) -> Response:
        target = request.query_params.get("target")
        return JSONResponse({"audit": [r.to_json() for r in cad.audit(target)]})

    I = "/cad/incidents/{incident_id}"
    routes = [
        Route("/cad/incidents", endpoint(list_incidents), methods=["GET"]),
        Route("/cad/incidents", endpoint(create_incident), methods=["POST"]),
        Route(I, endpoint(get_incident), methods=["GET"]),
        Route(I + "/recommendation", endpoint(recommendation), methods=["GET"]),
        Route(I + "/dispatch", endpoint(dispatch), methods=["POST"]),
        Route(I + "/status", endpoint(set_status), methods=["POST"]),
        Route(I + "/narrative", endpoint(narrative), methods=["POST"]),
        Route(I + "/calls", endpoint(link_call), methods=["POST"]),
        Route(I + "/close", endpoint(close), methods=["POST"]),
        Route(I + "/eido", endpoint(eido), methods=["GET"]),
        Route("/cad/units", endpoint(list_units), methods=["GET"]),
        Route("/cad/units/{unit_id}/status", endpoint(unit_status), methods=["POST"]),
        Route("/cad/boxes/{box}/alarm", endpoint(box_alarm), methods=["POST"]),
        Route("/cad/audit", endpoint(audit), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: restapi.http_error})


def _enum(cls: Any, value: Any, member: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(s.value) for s in cls)
        raise _Problem(422, "Invalid request", [(member, f"{value!r} is not one of {allowed}")]) from None


def _summary(i: Any) -> dict[str, Any]:
    """A row of the incident board: what the board shows, without the timeline."""
    d = incident_to_json(i)
    for heavy in ("timeline", "narrative"):
        d.pop(heavy)
    return d


def _created(incident: Any) -> JSONResponse:
    reply = JSONResponse(incident_to_json(incident), status_code=201)
    reply.headers["Location"] = f"/cad/incidents/{incident.id}"
    return reply
