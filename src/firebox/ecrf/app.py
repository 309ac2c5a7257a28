"""HTTP adapter of the ECRF: LoST over HTTP (RFC 5222 section 18) with Starlette.

``POST /lost`` (and ``POST /``) takes a LoST request in the body whatever its Content-Type
says (clients send ``application/lost+xml``, ``text/xml``, ``application/xml`` or nothing)
and answers ``200 application/lost+xml``, errors included: section 13 puts errors in the
body of a successful HTTP answer. A body that is not a LoST request (malformed XML, a DTD,
too large, empty) is an ``<errors><badRequest>`` naming the problem, never a 500.

When the core asks for recursion (``Forward``), the peer is queried over HTTP with httpx,
bounded by ``forward_timeout`` (``serverTimeout`` when it runs out, ``serverError`` when the
peer cannot be reached or answers garbage). This uses httpx directly rather than
``firebox.lost.client``: the forwarded request must carry our ``via`` in its path (loop
detection, section 6.4), which that client's requests do not expose.

With ``log`` (a ``firebox.ecrf.logevents.LostLogger``, or a function returning one or None)
every request and its answer are i3 log events (``LostQueryLogEvent`` /
``LostResponseLogEvent``, NENA-STA-010.3 section 4.12.3), tied to a call when the request
names it in ``Call-Info`` headers (see that module).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from firebox.ecrf.logevents import LostLogger, call_ids_from_headers, response_status
from firebox.ecrf.service import Ecrf, Forward
from firebox.lost import codec
from firebox.lost.messages import (
    ErrorKind,
    ErrorsResponse,
    FindServiceResponse,
    ListServicesByLocationResponse,
    LostError,
    Redirect,
)
from firebox.xmlsafe import MAX_XML_BYTES

log = logging.getLogger(__name__)

MEDIA_TYPE = codec.MEDIA_TYPE
_MEDIA_TYPE_B = MEDIA_TYPE.encode()
_PEER_ANSWERS = (FindServiceResponse, ListServicesByLocationResponse, ErrorsResponse, Redirect)


class _AsgiEndpoint:
    """Starlette runs a Route whose endpoint is not a function as a plain ASGI app."""

    __slots__ = ("_app",)

    def __init__(self, app: Callable[[Scope, Receive, Send], Any]):
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def create_ecrf_app(
    ecrf: Ecrf,
    lost_client_factory: Callable[[], httpx.AsyncClient] | None = None,
    *,
    forward_timeout: float = 2.0,
    max_body: int = MAX_XML_BYTES,
    log: LostLogger | Callable[[], LostLogger | None] | None = None,
) -> Starlette:
    """A Starlette app serving ``ecrf``. ``lost_client_factory`` builds the HTTP client used
    to query peers (default: ``httpx.AsyncClient``), created on the first forward and closed
    when the app shuts down. ``log``: where its LoST log events go (a logger, or a function
    asked on each request, for a logger started after the app is built)."""
    source = ecrf.source
    handle = ecrf.handle
    parse = codec.parse
    serialize = codec.serialize
    clients: list[httpx.AsyncClient] = []

    logger: Callable[[], LostLogger | None] = (lambda: None) if log is None else (
        (lambda: log) if isinstance(log, LostLogger) else log
    )

    def error(kind: ErrorKind, message: str) -> bytes:
        # Messages quote what the client sent; keep only what XML can carry.
        safe = "".join(c if c.isprintable() else " " for c in message)
        return serialize(ErrorsResponse(source, [LostError(kind, safe)]))

    async def forward(fwd: Forward, original: Any) -> Any:
        if not clients:
            factory = lost_client_factory or (lambda: httpx.AsyncClient(timeout=forward_timeout))
            clients.append(factory())
        client = clients[0]
        try:
            async with asyncio.timeout(forward_timeout):
                answer = await client.post(
                    fwd.target_uri,
                    content=serialize(fwd.request),
                    headers={"Content-Type": MEDIA_TYPE, "Accept": MEDIA_TYPE},
                )
        except (TimeoutError, httpx.TimeoutException):
            return ErrorsResponse(source, [LostError(
                ErrorKind.SERVER_TIMEOUT,
                f"peer {fwd.target_uri} did not answer within {forward_timeout:g} s",
            )])  # fmt: skip
        except (httpx.HTTPError, OSError) as exc:
            return ErrorsResponse(source, [LostError(
                ErrorKind.SERVER_ERROR,
                f"cannot reach peer {fwd.target_uri}: {type(exc).__name__}: {exc}",
            )])  # fmt: skip
        try:
            message = parse(answer.content)
        except codec.LostParseError as exc:
            return ErrorsResponse(source, [LostError(
                ErrorKind.SERVER_ERROR,
                f"peer {fwd.target_uri} answered HTTP {answer.status_code} with no usable "
                f"LoST message: {exc.message}",
            )])  # fmt: skip
        if not isinstance(message, _PEER_ANSWERS):
            return ErrorsResponse(source, [LostError(
                ErrorKind.SERVER_ERROR,
                f"peer {fwd.target_uri} answered a {type(fwd.request).__name__} with "
                f"{type(message).__name__}",
            )])  # fmt: skip
        return ecrf.complete_forward(original, message, datetime.now(UTC))

    async def answer(body: bytes, scope: Scope) -> bytes:
        lost_log = logger()
        try:
            message = parse(body)
        except codec.LostParseError as exc:
            out = error(exc.kind, exc.message)
            if lost_log is not None:
                _log_exchange(lost_log, scope, body, out, "error", malformed=exc.message)
            return out
        try:
            answered = handle(message, datetime.now(UTC))
            if type(answered) is Forward:
                answered = await forward(answered, message)
            out, status = serialize(answered), response_status(answered)
        except Exception as exc:  # never a 500 for a LoST client: answer internalError
            out, status = error(ErrorKind.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"), "error"
        if lost_log is not None:
            _log_exchange(lost_log, scope, body, out, status)
        return out

    async def lost(scope: Scope, receive: Receive, send: Send) -> None:
        """The LoST endpoint as a bare ASGI app (a Starlette Route runs it directly): no
        Request/Response objects on the hot path, the body read with a bound."""
        declared = -1
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = int(value) if value.isdigit() else -1
                break
        if declared > max_body:
            out = error(ErrorKind.BAD_REQUEST, f"body of {declared} bytes exceeds the limit of {max_body} bytes")
            _log_refused(logger(), scope, out)
        else:
            chunks: list[bytes] = []
            size = 0
            too_large = False
            while True:
                event = await receive()
                if event["type"] != "http.request":  # the client went away
                    return
                chunk = event.get("body", b"")
                if chunk and not too_large:
                    size += len(chunk)
                    if size > max_body:
                        too_large, chunks = True, []
                    else:
                        chunks.append(chunk)
                if not event.get("more_body", False):
                    break
                if too_large:
                    break  # stop reading: the answer does not depend on the rest
            if too_large:
                out = error(ErrorKind.BAD_REQUEST, f"body of more than {max_body} bytes exceeds the limit")
                _log_refused(logger(), scope, out)
            else:
                out = await answer(chunks[0] if len(chunks) == 1 else b"".join(chunks), scope)
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", _MEDIA_TYPE_B),
                (b"content-length", str(len(out)).encode()),
                (b"cache-control", b"no-store"),
            ],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": out})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for client in clients:
                await client.aclose()
            clients.clear()

    endpoint = _AsgiEndpoint(lost)
    routes = [
        Route("/lost", endpoint, methods=["POST"]),
        Route("/", endpoint, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    if not client:
        return None
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _call_ids(scope: Scope) -> tuple[str | None, str | None]:
    values = [v.decode("latin-1") for n, v in scope["headers"] if n == b"call-info"]
    return call_ids_from_headers(values) if values else (None, None)


def _log_exchange(
    lost_log: LostLogger, scope: Scope, query: bytes, answer: bytes, status: str, malformed: str | None = None
) -> None:
    try:
        peer, ids = _peer(scope), _call_ids(scope)
    except Exception:  # noqa: BLE001 -- logging never fails an answer
        log.exception("LoST log event: request metadata unreadable")
        peer, ids = None, (None, None)
    query_id = lost_log.query(query, ids, peer=peer, malformed=malformed)
    lost_log.response(query_id, answer, status, ids, peer=peer)


def _log_refused(lost_log: LostLogger | None, scope: Scope, answer: bytes) -> None:
    """A body too large to read: the query is logged as malformed, its body not kept (the
    event names that instead: ``queryAdapter`` must not be empty)."""
    if lost_log is not None:
        _log_exchange(lost_log, scope, b"(body not kept: larger than the limit)", answer, "error",
                      malformed="body exceeds the size limit")  # fmt: skip
