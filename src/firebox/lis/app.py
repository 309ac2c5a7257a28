"""HTTP adapter of the LIS: HELD over HTTP (the HTTP binding of RFC 5985) and location URI
dereference (RFC 6753) with Starlette.

Routes, under the path of ``base_url`` (none for ``http://host:port``):

* ``POST /held``: a HELD ``locationRequest`` in the body, whatever the request's
  Content-Type says (clients send ``application/held+xml``, ``application/xml``,
  ``text/xml`` or nothing). The answer is ``200 application/held+xml``, errors included: RFC
  5985's HTTP binding carries HELD errors in the body of a 200 response. A body that is not a
  HELD request (malformed XML, a DTD, too large, empty, another message) is an ``<error>``
  with ``xmlError``, ``requestError`` or ``unsupportedMessage`` naming the problem; an
  unexpected failure is ``generalLisError``. Never a 500.
* ``POST /held/loc/{token}``: HELD dereference of a location URI (RFC 6753); an
  empty body is taken as a ``locationRequest`` for ``any``.
* ``GET /held/loc/{token}``: HTTP GET dereference (RFC 6753): ``200
  application/pidf+xml`` with the PIDF-LO, or ``404`` with a HELD ``<error>`` body when the
  URI is unknown or expired. A client whose Accept header asks for ``application/held+xml``
  (and not PIDF) gets the HELD ``locationResponse`` instead.

The only clock of the LIS is read here (``datetime.now(timezone.utc)``); the core is sans-I/O.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firebox.held import codec
from firebox.held.codec import (
    HeldError,
    HeldErrorCode,
    HeldParseError,
    LocationRequest,
    LocationResponse,
)
from firebox.lis.service import Lis
from firebox.location.pidf import MEDIA_TYPE as PIDF_MEDIA_TYPE
from firebox.location.pidf import serialize_pidf
from firebox.xmlsafe import MAX_XML_BYTES

HELD_MEDIA_TYPE = codec.MEDIA_TYPE
_log = logging.getLogger(__name__)


class _TooLarge(Exception):
    pass


async def _body(request: Request, max_body: int) -> bytes:
    """The request body, refusing more than ``max_body`` bytes without reading them all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body:
        raise _TooLarge(f"body of {declared} bytes exceeds the limit of {max_body} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise _TooLarge(f"body of more than {max_body} bytes exceeds the limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _held(msg: LocationResponse | HeldError, status: int = 200) -> Response:
    try:
        body = codec.serialize(msg)
    except Exception as exc:  # noqa: BLE001 - a message the core built badly: still a HELD answer
        _log.exception("cannot serialize a HELD answer")
        body = codec.serialize(HeldError(HeldErrorCode.GENERAL_LIS_ERROR, f"{type(exc).__name__}: {exc}"))
    return Response(body, status_code=status, media_type=HELD_MEDIA_TYPE, headers={"Cache-Control": "no-store"})


def _error(code: HeldErrorCode, message: str) -> Response:
    return _held(HeldError(code, message))


def create_lis_app(lis: Lis, base_url: str, *, max_body: int = MAX_XML_BYTES) -> Starlette:
    """A Starlette app serving ``lis``; its routes sit under the path of ``base_url``."""
    prefix = urlsplit(base_url).path.rstrip("/")

    async def read_request(request: Request, *, empty_ok: bool) -> LocationRequest | Response:
        try:
            body = await _body(request, max_body)
        except _TooLarge as exc:
            return _error(HeldErrorCode.XML_ERROR, str(exc))
        if empty_ok and not body.strip():
            return LocationRequest()
        try:
            message = codec.parse(body)
        except HeldParseError as exc:
            return _error(exc.code, exc.message)
        if not isinstance(message, LocationRequest):
            return _error(
                HeldErrorCode.UNSUPPORTED_MESSAGE,
                f"a LIS takes a locationRequest, not {type(message).__name__}",
            )
        return message

    async def held(request: Request) -> Response:
        try:
            message = await read_request(request, empty_ok=False)
            if isinstance(message, Response):
                return message
            source = request.client.host if request.client else None
            return _held(lis.handle(message, datetime.now(UTC), source_ip=source))
        except Exception as exc:  # noqa: BLE001 - never a 500 for a HELD client
            _log.exception("LIS failed on a HELD request")
            return _error(HeldErrorCode.GENERAL_LIS_ERROR, f"{type(exc).__name__}: {exc}")

    async def deref_post(request: Request) -> Response:
        try:
            message = await read_request(request, empty_ok=True)
            if isinstance(message, Response):
                return message
            token = request.path_params["token"]
            return _held(lis.dereference(token, datetime.now(UTC), message))
        except Exception as exc:  # noqa: BLE001 - answered as generalLisError
            _log.exception("LIS failed on a dereference")
            return _error(HeldErrorCode.GENERAL_LIS_ERROR, f"{type(exc).__name__}: {exc}")

    async def deref_get(request: Request) -> Response:
        try:
            out = lis.dereference(request.path_params["token"], datetime.now(UTC))
            accept = request.headers.get("accept", "")
            wants_held = HELD_MEDIA_TYPE in accept and PIDF_MEDIA_TYPE not in accept
            if isinstance(out, HeldError):
                status = 404 if out.code is HeldErrorCode.LOCATION_UNKNOWN else 500
                return _held(out, status)
            if wants_held or out.presence is None:
                return _held(out)
            return Response(
                serialize_pidf(out.presence),
                media_type=PIDF_MEDIA_TYPE,
                headers={"Cache-Control": "no-store"},
            )
        except Exception as exc:  # noqa: BLE001 - answered as generalLisError
            _log.exception("LIS failed on a GET dereference")
            return _held(HeldError(HeldErrorCode.GENERAL_LIS_ERROR, f"{type(exc).__name__}: {exc}"), 500)

    routes = [
        Route(f"{prefix}/held", held, methods=["POST"]),
        Route(f"{prefix}/held/loc/{{token}}", deref_post, methods=["POST"]),
        Route(f"{prefix}/held/loc/{{token}}", deref_get, methods=["GET"]),
    ]
    return Starlette(routes=routes)
