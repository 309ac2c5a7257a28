"""The Logging Service's REST interface (NENA-STA-010.3 section 4.12.3, and NENA's Logging
Service OpenAPI, ``loggingservice.yaml``) as a Starlette app over a ``LogStore``.

=====================================  ============================================================
``POST /LogEvents``                    a log event as a flattened JSON JWS (RFC 7515 section
                                       7.2.2); 201 ``{"logEventId": "urn:emergency:uid:logid:..."}``
``GET /LogEvents``                     ``startTime``/``endTime`` (the event's timestamp),
                                       ``elementId``, ``agencyId``, ``logEventType``; paging with
                                       ``limit`` and ``start`` (1-based); ``count``, ``totalCount``,
                                       ``logEventContainers`` (``logEventId`` + the JWS)
``GET /LogEvents/{logEventId}``        the event's JWS as received (its three members
                                       unchanged; the outer JSON compacted)
``GET /LogEventIds``                   by ``callId`` / ``incidentId``
``GET /CallIds``                       by ``incidentId`` and time range
``GET /IncidentIds``                   by time range
``GET /Conversations/{callId}``        every event of a call, in the order things happened
                                       (``/Conversations?callId=`` too)
``GET /Versions``                      the i3 versions document (NENA-STA-010.3 section 2.8,
                                       ``i3-common.yaml`` ``VersionsArray``)
``GET /openapi.json``                  the OpenAPI document of all this (``openapi.py``)
=====================================  ============================================================

Answers to a bad ``POST`` use the status codes NENA's Logging Service OpenAPI assigns, with
an RFC 9457 problem JSON (``application/problem+json``) whose ``errors`` name every wrong
member: 400 (not a flattened JWS: not JSON, members missing or not base64url), 434
(signature verification failure), 438 (unacceptable algorithm), 460 (Bad LogEvent: the
payload is not a valid log event; one error per wrong member), 461 (LogEvent too big). A
repeated ``clientAssignedIdentifier`` answers 409 with the ``logEventId`` the event was
first stored under (retried deliveries are idempotent).

Signatures: ``alg: EdDSA`` (Ed25519 or Ed448) is verified with the key of the ``x5c`` leaf
certificate, and, if ``trust`` anchors are configured, the chain must lead to one of them;
``alg: none`` is accepted unless ``allow_none=False``.

Writes are group commits: concurrent ``POST``s are queued and stored together by one
writer task in one transaction (one fsync), and each gets its 201 only once that
transaction is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from cryptography import x509
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firebox import jws as jwslib
from firebox.logging.events import (
    LOG_EVENT_TYPES,
    Problem,
    is_domain_name,
    new_log_event_id,
    parse_timestamp,
    validate,
)
from firebox.logging.store import (
    AppendItem,
    Duplicate,
    Filter,
    LogStore,
    StoredEvent,
    to_micros,
)
from firebox.restapi import Reject, http_error, int_param, problem
from firebox.restapi import versions_document as i3_versions_document

__all__ = ["LoggingService", "create_app"]

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_BATCH = 512


def _structure(doc: dict[str, Any]) -> None:
    """Exactly ``protected``, ``payload`` and ``signature``, each base64url (RFC 7515
    section 7.2.2, no unprotected header); ``JwsError`` naming the member otherwise."""
    for name in doc:
        if name not in jwslib.MEMBERS:
            raise jwslib.JwsError(name, "not a member of a flattened JWS as accepted here "
                                  "(protected, payload, signature; no unprotected header)")
    for name in jwslib.MEMBERS:
        if name not in doc:
            raise jwslib.JwsError(name, "missing member")
        jwslib.b64url_decode(doc[name], name)


def versions_document() -> dict[str, Any]:
    """``GET /Versions``: log events signed with EdDSA, or unsigned (``alg: none``)."""
    return i3_versions_document(["EdDSA", "none"])


class LoggingService:
    """The service: ``store`` where events go; ``fqdn`` the domain name in the
    ``logEventId``s it assigns; ``allow_none`` accept unsigned (``alg: none``) events;
    ``trust`` anchors the ``x5c`` chains must lead to (None: the signature is checked with the
    leaf's key, which proves integrity but not who signed)."""

    def __init__(
        self,
        store: LogStore,
        *,
        fqdn: str = "localhost",
        allow_none: bool = True,
        trust: Sequence[x509.Certificate | bytes] | None = None,
    ):
        if not is_domain_name(fqdn):
            raise ValueError(f"fqdn must be a domain name, not {fqdn!r}")
        self.store = store
        self.fqdn = fqdn
        self.allow_none = allow_none
        self.trust = list(trust) if trust is not None else None
        self._pending: list[tuple[AppendItem, asyncio.Future[StoredEvent | Duplicate]]] = []
        self._writer: asyncio.Task[None] | None = None

    # --- ingestion ----------------------------------------------------------------------------

    def check(self, body: bytes) -> AppendItem:
        """Verify and validate one ``POST /LogEvents`` body; raises ``Reject``."""
        if len(body) > jwslib.MAX_JWS_BYTES:
            raise Reject(461, "LogEvent too big", [Problem("", f"{len(body)} bytes, more than {jwslib.MAX_JWS_BYTES}")])
        try:  # the form of a flattened JWS: 400
            doc = jwslib.parse_json_object(body, None)
            _structure(doc)
        except jwslib.JwsError as exc:
            raise Reject(400, "Not a flattened JSON JWS", [Problem(exc.member or "", exc.message)]) from None
        try:
            verified = jwslib.verify(doc, allow_none=self.allow_none, trust=self.trust)
        except jwslib.JwsError as exc:
            member = exc.member or ""
            if member in ("signature", "x5c"):
                status, title = 434, "Signature Verification Failure"
            elif member == "alg":
                status, title = 438, "Unacceptable Algorithm"
            else:
                status, title = 400, "Not a flattened JSON JWS"
            raise Reject(status, title, [Problem(member, exc.message)]) from None
        event = verified.payload
        problems = validate(event)
        cid = event.get("clientAssignedIdentifier")
        if isinstance(cid, str) and not cid.strip():
            problems.append(Problem("clientAssignedIdentifier", "must not be empty (it makes retries idempotent)"))
        ts_us = 0
        if not problems:
            try:
                ts_us = to_micros(parse_timestamp(event["timestamp"]))
            except (OverflowError, ValueError) as exc:
                problems.append(Problem("timestamp", f"out of range: {exc}"))
        if problems:
            raise Reject(460, "Bad LogEvent", problems)
        text = jwslib.serialize({k: doc[k] for k in jwslib.MEMBERS}).decode("utf-8")
        return AppendItem(new_log_event_id(self.fqdn), event, text, ts_us)

    async def ingest(self, item: AppendItem) -> StoredEvent | Duplicate:
        """Queue ``item`` for the next group commit and wait until it is durable."""
        future: asyncio.Future[StoredEvent | Duplicate] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write(), name="log-store-writer")
        return await future

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                results = await asyncio.to_thread(self.store.append, [i for i, _ in batch])
            except Exception as exc:
                log.exception("storing %d log events failed", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def post_log_event(self, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > jwslib.MAX_JWS_BYTES:
                return problem(461, "LogEvent too big", [Problem("", f"more than {jwslib.MAX_JWS_BYTES} bytes")])
        try:
            item = self.check(body)
        except Reject as exc:
            return problem(exc.status, exc.title, exc.problems)
        try:
            result = await self.ingest(item)
        except Exception:  # noqa: BLE001 - the store failed: the client retries later
            return problem(503, "Log store unavailable", [Problem("", "the event was not stored; retry later")])
        if isinstance(result, Duplicate):
            first = result.existing.log_event_id
            return problem(
                409, "Duplicate LogEvent",
                [Problem("clientAssignedIdentifier", f"already logged as {first}")],
                logEventId=first,
            )  # fmt: skip
        return JSONResponse({"logEventId": result.log_event_id}, status_code=201)

    async def log_events(self, request: Request) -> Response:
        """``/LogEvents``: one route for both methods, so that a 405 lists both in Allow."""
        if request.method == "POST":
            return await self.post_log_event(request)
        return await self.get_log_events(request)

    # --- retrieval ----------------------------------------------------------------------------

    async def get_log_events(self, request: Request) -> Response:
        try:
            f, offset, limit = _filter(request, ("startTime", "endTime", "elementId", "agencyId", "logEventType"))
        except Reject as exc:
            return problem(exc.status, exc.title, exc.problems)
        page = await asyncio.to_thread(self.store.query, f, offset, limit)
        return JSONResponse(_containers(page.items, page.total))

    async def get_log_event(self, request: Request) -> Response:
        log_event_id = request.path_params["logEventId"]
        record = await asyncio.to_thread(self.store.get, log_event_id)
        if record is None:
            return problem(404, "Not found", [Problem("logEventId", f"no log event {log_event_id!r}")])
        return Response(record.jws, media_type="application/json")

    async def get_log_event_ids(self, request: Request) -> Response:
        try:
            f, offset, limit = _filter(request, ("callId", "incidentId"))
        except Reject as exc:
            return problem(exc.status, exc.title, exc.problems)
        page = await asyncio.to_thread(self.store.log_event_ids, f, offset, limit)
        return JSONResponse({"count": len(page.items), "totalCount": page.total, "logEventIds": page.items})

    async def get_call_ids(self, request: Request) -> Response:
        try:
            f, offset, limit = _filter(request, ("incidentId", "startTime", "endTime"))
        except Reject as exc:
            return problem(exc.status, exc.title, exc.problems)
        page = await asyncio.to_thread(self.store.call_ids, f, offset, limit)
        return JSONResponse({"count": len(page.items), "totalCount": page.total, "callIds": page.items})

    async def get_incident_ids(self, request: Request) -> Response:
        try:
            f, offset, limit = _filter(request, ("startTime", "endTime"))
        except Reject as exc:
            return problem(exc.status, exc.title, exc.problems)
        page = await asyncio.to_thread(self.store.incident_ids, f, offset, limit)
        return JSONResponse({"count": len(page.items), "totalCount": page.total, "incidentIds": page.items})

    async def get_conversation(self, request: Request) -> Response:
        call_id = request.path_params.get("callId") or request.query_params.get("callId")
        if not call_id:
            return problem(400, "Bad query", [Problem("callId", "missing")])
        events = await asyncio.to_thread(self.store.conversation, call_id)
        if not events:
            return problem(404, "Not found", [Problem("callId", f"no log event of call {call_id!r}")])
        return JSONResponse(_containers(events, len(events)))

    async def get_versions(self, request: Request) -> Response:
        return JSONResponse(versions_document())

    async def get_openapi(self, request: Request) -> Response:
        from firebox.logging.openapi import openapi_document

        return JSONResponse(openapi_document())

    # --- the app ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self._writer is not None:
                await asyncio.gather(self._writer, return_exceptions=True)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/LogEvents", self.log_events, methods=["GET", "POST"]),
                Route("/LogEvents/{logEventId:path}", self.get_log_event, methods=["GET"]),
                Route("/LogEventIds", self.get_log_event_ids, methods=["GET"]),
                Route("/CallIds", self.get_call_ids, methods=["GET"]),
                Route("/IncidentIds", self.get_incident_ids, methods=["GET"]),
                Route("/Conversations", self.get_conversation, methods=["GET"]),
                Route("/Conversations/{callId:path}", self.get_conversation, methods=["GET"]),
                Route("/Versions", self.get_versions, methods=["GET"]),
                Route("/openapi.json", self.get_openapi, methods=["GET"]),
            ],
            lifespan=self.lifespan,
            exception_handlers={HTTPException: http_error},
        )


def create_app(store: LogStore, **kw: Any) -> Starlette:
    """The Logging Service app over ``store`` (keyword arguments: ``LoggingService``'s)."""
    return LoggingService(store, **kw).app()


# --- query parameters ----------------------------------------------------------------------------


def _containers(events: Sequence[StoredEvent], total: int) -> dict[str, Any]:
    """``LogEventContainerArray`` of NENA's Logging Service OpenAPI."""
    return {
        "count": len(events),
        "totalCount": total,
        "logEventContainers": [{"logEventId": e.log_event_id, "logEvent": e.jws_object()} for e in events],
    }


def _time(request: Request, name: str, problems: list[Problem]) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return to_micros(parse_timestamp(raw))
    except (ValueError, OverflowError) as exc:
        problems.append(Problem(name, str(exc)))
        return None


def _filter(request: Request, allowed: Sequence[str]) -> tuple[Filter, int, int]:
    """The ``Filter``, offset and limit of a GET; ``Reject`` (400) naming each bad parameter."""
    problems: list[Problem] = []
    q = request.query_params
    limit = int_param(q.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, problems)
    start = int_param(q.get("start"), "start", 1, 1, 2**31 - 1, problems)
    start_us = _time(request, "startTime", problems) if "startTime" in allowed else None
    end_us = _time(request, "endTime", problems) if "endTime" in allowed else None
    if start_us is not None and end_us is not None and end_us < start_us:
        problems.append(Problem("endTime", "occurs before startTime"))
    kind = q.get("logEventType") if "logEventType" in allowed else None
    if kind is not None and kind not in LOG_EVENT_TYPES:
        problems.append(Problem("logEventType", f"{kind[:60]!r} is not a registered log event type"))
    if problems:
        raise Reject(400, "Bad query", problems)

    def get(name: str) -> str | None:
        return q.get(name) if name in allowed else None

    f = Filter(
        start_us=start_us, end_us=end_us, element_id=get("elementId"), agency_id=get("agencyId"),
        log_event_type=kind, call_id=get("callId"), incident_id=get("incidentId"),
    )  # fmt: skip
    return f, start - 1, limit
