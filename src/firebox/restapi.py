"""What firebox's i3 REST services share (the Logging Service, NENA-STA-010.3 section 4.12;
the Policy Store, section 4.9; and the CAD API): RFC 9457 problem details, query-parameter
parsing, and the pieces of their OpenAPI documents that say so.

Every 4xx/5xx answer is ``application/problem+json``::

    {"type": "about:blank", "title": "Bad query", "status": 400,
     "detail": "limit: must be an integer, not 'x'",
     "errors": [{"pointer": "/limit", "member": "limit", "detail": "must be an integer, not 'x'"}]}

``errors`` names each wrong member twice: ``member`` as the service's documents and messages
spell it (a dotted path such as ``policyRules[2].actions``; a query parameter or header by
its name), ``pointer`` as an RFC 6901 JSON pointer into the request body or, for a parameter,
``/`` + its name (RFC 9457 section 3 suggests a pointer for members; clients that only show
a message use ``detail``). ``""`` (member and pointer) is the request as a whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "Problem",
    "Reject",
    "http_error",
    "int_param",
    "openapi_problem_response",
    "openapi_problem_schema",
    "openapi_ref",
    "problem",
    "problem_body",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"

_PATH_PART = re.compile(r"\.|\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Problem:
    """One wrong member (its name or dotted path, ``""`` for the request as a whole) and what
    is wrong with it."""

    member: str
    message: str

    def __str__(self) -> str:
        return f"{self.member}: {self.message}" if self.member else self.message

    def pointer(self) -> str:
        """The member as a JSON pointer (RFC 6901): ``a[2].b`` is ``/a/2/b`` (a JSONPath
        ``$.a[2].b`` too: its root ``$`` is the document)."""
        member = self.member[1:] if self.member.startswith("$") else self.member
        if not member:
            return ""
        parts = _PATH_PART.split(member)
        return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts if p)

    def to_json(self) -> dict[str, str]:
        return {"pointer": self.pointer(), "member": self.member, "detail": self.message}


class Reject(Exception):
    """A request refused with ``status``; ``problems`` names each wrong member."""

    def __init__(self, status: int, title: str, problems: Sequence[Problem] = ()):
        super().__init__(title)
        self.status, self.title, self.problems = status, title, list(problems)

    def response(self, **extra: Any) -> JSONResponse:
        return problem(self.status, self.title, self.problems, **extra)


def problem_body(status: int, title: str, problems: Sequence[Problem] = (), **extra: Any) -> dict[str, Any]:
    """The RFC 9457 problem details object (``extra`` members added, e.g. ``logEventId``)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": "; ".join(str(p) for p in problems) or title,
        "errors": [p.to_json() for p in problems],
    }
    body.update(extra)
    return body


def problem(status: int, title: str, problems: Sequence[Problem] = (), **extra: Any) -> JSONResponse:
    """An RFC 9457 problem details answer; ``errors`` lists each wrong member."""
    return JSONResponse(problem_body(status, title, problems, **extra), status_code=status, media_type=PROBLEM_MEDIA_TYPE)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such path) and 405 (method not allowed) as problem JSON
    (register for ``HTTPException``); the answer keeps the exception's headers (``Allow``)."""
    assert isinstance(exc, HTTPException)
    reply = problem(exc.status_code, str(exc.detail), [Problem("", f"{request.method} {request.url.path}: {exc.detail}")])
    for name, value in (exc.headers or {}).items():
        reply.headers[name] = value
    return reply


def int_param(raw: str | None, name: str, default: int, lo: int, hi: int, problems: list[Problem]) -> int:
    """A decimal integer query parameter in ``lo..hi`` (``default`` when absent); a bad one
    adds a ``Problem`` naming it and gives ``default``."""
    if raw is None:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        problems.append(Problem(name, f"must be an integer, not {raw[:40]!r}"))
        return default
    if not lo <= value <= hi:
        problems.append(Problem(name, f"must be between {lo} and {hi}, not {value}"))
        return default
    return value


# --- OpenAPI --------------------------------------------------------------------------------


def openapi_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def openapi_problem_response(description: str, schema: str = "Problem") -> dict[str, Any]:
    """A response of problem JSON (``schema``: the component it follows)."""
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": openapi_ref(schema)}}}


def openapi_problem_schema() -> dict[str, Any]:
    """The ``Problem`` component: RFC 9457 members and ``errors`` (pointer, member, detail)."""
    return {
        "type": "object",
        "required": ["type", "title", "status", "detail", "errors"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["pointer", "member", "detail"],
                    "properties": {
                        "pointer": {"type": "string", "description": "RFC 6901 JSON pointer to the member"},
                        "member": {"type": "string", "description": "The member's name or dotted path"},
                        "detail": {"type": "string"},
                    },
                },
            },
        },
    }


def versions_document(algorithms: Sequence[str]) -> dict[str, Any]:
    """An i3 service's ``GET /Versions`` answer (NENA-STA-010.3 section 2.8; i3-common
    ``VersionsArray``): interface version 1.0, the signature algorithms it accepts."""
    from firebox import __version__

    return {
        "versions": [{"major": 1, "minor": 0, "vendor": "firebox",
                      "serviceInfo": {"requiredAlgorithms": list(algorithms)}}],
        "fingerprint": f"firebox {__version__}",
    }  # fmt: skip


def openapi_versions_schema() -> dict[str, Any]:
    """The ``VersionsArray`` component of ``versions_document``."""
    return {
        "type": "object",
        "required": ["versions"],
        "properties": {
            "versions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["major", "minor"],
                    "properties": {
                        "major": {"type": "integer"},
                        "minor": {"type": "integer"},
                        "vendor": {"type": "string"},
                        "serviceInfo": {"type": "object"},
                    },
                },
            },
            "fingerprint": {"type": "string"},
        },
    }
