"""HTTP adapter of the BCF's i3 BadActor interface (NENA-STA-010.3 section 4.1): ``POST
/BadActors`` with a JSON body naming the ``sourceId`` (and the ``callId`` that showed it).
201 for a source this BCF knows, 433 for an unknown source id, 400 problem JSON for a body
that is not a report; never a 500."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from firebox.bcf.core import Bcf

PROBLEM = "application/problem+json"


def bad_actors_route(get_bcf: Callable[[], Bcf | None]) -> Route:
    """``POST /BadActors`` for the BCF ``get_bcf()`` returns (looked up per request: in a
    node the BCF starts after the HTTP servers); 503 problem JSON while there is none."""

    async def bad_actors(request: Request) -> JSONResponse:
        bcf = get_bcf()
        if bcf is None:
            problem = {"type": "about:blank", "status": 503, "title": "No BCF",
                       "detail": "the BCF is not running (yet)"}  # fmt: skip
            return JSONResponse(problem, status_code=503, media_type=PROBLEM, headers={"Retry-After": "1"})
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            problem = {"type": "about:blank", "status": 400, "title": "Bad actor report refused",
                       "detail": f"the body is not JSON: {exc}"}  # fmt: skip
            return JSONResponse(problem, status_code=400, media_type=PROBLEM)
        status, answer = bcf.bad_actors.report(body, time.monotonic())
        return JSONResponse(answer, status_code=status, media_type=PROBLEM if status >= 400 else None)

    return Route("/BadActors", bad_actors, methods=["POST"])


def create_bcf_app(bcf: Bcf) -> Starlette:
    return Starlette(routes=[bad_actors_route(lambda: bcf)])
