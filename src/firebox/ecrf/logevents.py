"""i3 log events of the ECRF (NENA-STA-010.3 section 4.12.3): every LoST request it answers
is a ``LostQueryLogEvent`` (direction ``incoming``) and its answer a ``LostResponseLogEvent``
(direction ``outgoing``, ``responseId`` = the query's ``queryId``), with the ECRF's own
``elementId`` and ``agencyId``. The event types and their members are the ones the ESRP logs
for its side of the same exchange (``firebox.esrp.logevents``); the LoST XML (RFC 5222) is
logged as it was received and as it was sent.

Which call a query belongs to. i3 puts no call or incident identifier in LoST, so a LoST
query alone cannot be tied to a call. firebox's choice: a client that knows the call (an
ESRP routing it) may name it in the HTTP request with the same header the call carries in
SIP (the BCF marks calls so, NENA-STA-010.3 section 4.1)::

    Call-Info: <urn:emergency:uid:callid:...>;purpose=emergency-CallId
    Call-Info: <urn:emergency:uid:incidentid:...>;purpose=emergency-IncidentId

(one header or comma-separated values). The ECRF then logs the query and its response with
that ``callId`` / ``incidentId``, so ``firebox logs call`` shows the ECRF's part of the call.
Without the header the events carry no call identifiers (they are not call events: the
standard does not require them). An identifier that is not a valid ``urn:emergency:uid:``
of its kind is left out and logged; the query is answered all the same. An ESRP that runs the
ECRF in-process (``InProcessLost``) hands the identifiers over directly.

Logging never delays or fails an answer: ``LostLogger`` queues events synchronously and a
background task spools them through the ``LogSender`` (``firebox.logging.queue``).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from firebox.logging.events import Direction, LostQueryLogEvent, LostResponseLogEvent, check_uid
from firebox.logging.queue import EventQueue, EventSink
from firebox.lost.messages import ErrorsResponse, Redirect

__all__ = ["CallIds", "LoggedEcrf", "LostLogger", "call_ids_from_headers", "response_status"]

log = logging.getLogger(__name__)

#: One Call-Info value: ``<URI>`` then its parameters (RFC 3261 section 20.9).
_CALL_INFO = re.compile(r"<([^>]*)>((?:\s*;[^,;]*)*)")
_PURPOSES = {"emergency-callid": "callid", "emergency-incidentid": "incidentid"}

CallIds = tuple[str | None, str | None]


def call_ids_from_headers(values: Iterable[str]) -> CallIds:
    """The ``(callId, incidentId)`` named by HTTP ``Call-Info`` header values (``None`` for
    one absent or invalid; an invalid one is logged, never an error for the query)."""
    found: dict[str, str | None] = {"callid": None, "incidentid": None}
    for value in values:
        for uri, params in _CALL_INFO.findall(value):
            purpose = next(
                (p.split("=", 1)[1].strip().strip('"').lower() for p in params.split(";")
                 if p.strip().lower().startswith("purpose=")),
                None,
            )  # fmt: skip
            kind = _PURPOSES.get(purpose or "")
            if kind is None:
                continue
            uri = uri.strip()
            problem = check_uid(uri, kind)
            if problem is not None:
                log.warning("LoST query: Call-Info %s %r ignored: %s", purpose, uri[:200], problem)
                continue
            found[kind] = uri
    return found["callid"], found["incidentid"]


def response_status(answer: Any) -> str:
    """``responseStatus`` of a LoST answer: ``error``, ``redirect`` or ``ok``."""
    if isinstance(answer, ErrorsResponse):
        return "error"
    if isinstance(answer, Redirect):
        return "redirect"
    return "ok"


def _text(data: bytes | str) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class LostLogger(EventQueue):
    """The ECRF's LoST log events. ``sender`` is a ``LogSender``; ``element_id`` the ECRF's
    FQDN; ``agency_id`` its agency's domain. ``query`` and ``response`` are synchronous and
    never raise."""

    TASK_NAME = "ecrf-lost-logger"

    def __init__(self, sender: EventSink, *, element_id: str, agency_id: str) -> None:
        super().__init__(sender)
        self.element_id = element_id
        self.agency_id = agency_id

    def query(
        self, body: bytes | str, ids: CallIds = (None, None), *, peer: str | None = None,
        malformed: str | None = None,
    ) -> str:  # fmt: skip
        """A LoST request came in: ``LostQueryLogEvent``. ``malformed`` names why it could
        not be parsed (``malformedQuery``). Returns the ``queryId`` for ``response``."""
        query_id = uuid.uuid4().hex
        self.guard(self._emit, LostQueryLogEvent, ids, peer, query_adapter=_text(body), query_id=query_id,
                   direction=Direction.INCOMING, malformed_query=malformed)  # fmt: skip
        return query_id

    def response(
        self, query_id: str, body: bytes | str, status: str, ids: CallIds = (None, None), *,
        peer: str | None = None,
    ) -> None:  # fmt: skip
        """The answer to query ``query_id`` goes out: ``LostResponseLogEvent``."""
        self.guard(self._emit, LostResponseLogEvent, ids, peer, response_adapter=_text(body), response_id=query_id,
                   direction=Direction.OUTGOING, response_status=status)  # fmt: skip

    def _emit(self, cls: type[Any], ids: CallIds, peer: str | None, **members: Any) -> None:
        call_id, incident_id = ids
        self.emit(cls(timestamp=_now(), element_id=self.element_id, agency_id=self.agency_id,
                      call_id=call_id, incident_id=incident_id, ip_address_port=peer, **members))  # fmt: skip


class LoggedEcrf:
    """An ECRF called in-process by the ESRP (``firebox.esrp.router.InProcessLost``) whose
    LoST exchanges the ECRF logs as it logs those received over HTTP: the query as the
    ESRP's LoST client would send it, the answer as it would be sent back. ``logger`` is the
    ECRF's ``LostLogger`` (or a function returning it or None); ``ids`` returns the
    identifiers of the call being routed (the ESRP knows them in-process: no header needed).
    """

    def __init__(
        self,
        inner: Any,
        logger: LostLogger | Callable[[], LostLogger | None],
        ids: Callable[[], CallIds] = lambda: (None, None),
    ) -> None:
        self.inner = inner
        self._logger = (lambda: logger) if isinstance(logger, LostLogger) else logger
        self._ids = ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def find_service(self, location: Any, service: str = "urn:service:sos") -> Any:
        lost_log = self._logger()
        if lost_log is None:
            return await self.inner.find_service(location, service)
        from firebox.lost.client import LostClientCore
        from firebox.lost.codec import serialize

        query_id = None
        try:
            ids = self._ids()
            query = serialize(LostClientCore.find_service_request(location, service, boundary=None))
            query_id = lost_log.query(query, ids)
        except Exception:  # noqa: BLE001 -- logging never fails a lookup
            log.exception("ECRF log event of an in-process query failed")
        answer = await self.inner.find_service(location, service)
        if query_id is not None:
            try:
                lost_log.response(query_id, serialize(answer), response_status(answer), ids)
            except Exception:  # noqa: BLE001
                log.exception("ECRF log event of an in-process answer failed")
        return answer
