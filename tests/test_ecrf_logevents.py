"""The ECRF's i3 log events (NENA-STA-010.3 section 4.12.3): every LoST request it answers
over HTTP is a LostQueryLogEvent and a LostResponseLogEvent with the ECRF's elementId, paired
by queryId/responseId, tied to the call named by Call-Info headers. Real servers on
127.0.0.1: the ECRF app and firebox's Logging Service over SQLite, the events delivered by a
LogSender through its spool."""

from __future__ import annotations

import httpx
import pytest

from firebox import jws
from firebox.ecrf.app import create_ecrf_app
from firebox.ecrf.logevents import LostLogger, call_ids_from_headers, response_status
from firebox.logging.sender import LogSender
from firebox.logging.service import create_app as create_logging_app
from firebox.logging.store import Filter, open_store
from firebox.lost.messages import ErrorsResponse, Redirect

from test_ecrf_http import A, IN_EAST, Servers, ecrf_a, find_service, gml_point

CALL = "urn:emergency:uid:callid:a1b2c3:bcf.example.com"
INCIDENT = "urn:emergency:uid:incidentid:d4e5f6:bcf.example.com"


@pytest.fixture
async def servers():
    s = Servers()
    yield s
    await s.stop()


def test_call_ids_from_call_info_headers():
    both = [f"<{CALL}>;purpose=emergency-CallId, <{INCIDENT}>;purpose=emergency-IncidentId"]
    assert call_ids_from_headers(both) == (CALL, INCIDENT)
    apart = [f"<{INCIDENT}> ; purpose=emergency-IncidentId", f"<{CALL}>;purpose=\"emergency-CallId\""]
    assert call_ids_from_headers(apart) == (CALL, INCIDENT)
    # Other purposes, a malformed identifier, an identifier of the wrong kind: left out.
    assert call_ids_from_headers(["<sip:carrier@example.com>;purpose=emergency-source"]) == (None, None)
    assert call_ids_from_headers(["<urn:emergency:uid:callid:nodomain>;purpose=emergency-CallId"]) == (None, None)
    assert call_ids_from_headers([f"<{INCIDENT}>;purpose=emergency-CallId"]) == (None, None)
    assert call_ids_from_headers(["garbage", ""]) == (None, None)


def test_response_status():
    assert response_status(ErrorsResponse("x", [])) == "error"
    assert response_status(Redirect("x", "y", "z")) == "redirect"
    assert response_status(object()) == "ok"


async def test_every_query_and_answer_reaches_the_logging_service(servers, tmp_path):
    store = open_store(str(tmp_path / "logging.db"))
    try:
        logging_url = (await servers.start(create_logging_app(store, fqdn="logging.example"), lifespan="off"))
        logging_url = logging_url.removesuffix("/lost")
        sender = LogSender([logging_url], str(tmp_path / "spool"), None, "ecrf-a.example", fsync=False)
        lost_log = LostLogger(sender, element_id="ecrf-a.example", agency_id="example")
        url = await servers.start(create_ecrf_app(ecrf_a(), log=lost_log))
        body = find_service(gml_point(IN_EAST))
        async with httpx.AsyncClient(timeout=10) as http:
            marked = await http.post(url, content=body, headers={
                "Call-Info": f"<{CALL}>;purpose=emergency-CallId, <{INCIDENT}>;purpose=emergency-IncidentId"})
            plain = await http.post(url, content=body)
            bad = await http.post(url, content=b"<findService")
        assert marked.status_code == plain.status_code == bad.status_code == 200
        await lost_log.drain(timeout=10)
        await sender.aclose()
        assert lost_log.errors == 0 and len(lost_log.sent) == 6

        mine = store.query(Filter(element_id="ecrf-a.example"), limit=100)
        assert mine.total == 6 and store.count() == 6 and store.verify() is None
        events = [jws.verify(e.jws.encode(), keys=[], allow_none=True).payload for e in mine.items]
        types = [e["logEventType"] for e in events]
        assert types == ["LostQueryLogEvent", "LostResponseLogEvent"] * 3
        for query, answer in zip(events[::2], events[1::2], strict=True):
            assert query["agencyId"] == "example" and query["direction"] == "incoming"
            assert answer["direction"] == "outgoing" and answer["responseId"] == query["queryId"]
            assert query["ipAddressPort"].startswith("127.0.0.1:")
        # The marked query: its call's identifiers, the XML as received and as sent.
        q, r = events[0], events[1]
        assert (q["callId"], q["incidentId"], r["callId"], r["incidentId"]) == (CALL, INCIDENT, CALL, INCIDENT)
        assert q["queryAdapter"] == body and r["responseAdapter"] == marked.text
        assert r["responseStatus"] == "ok" and A in r["responseAdapter"]
        # Unmarked: no call identifiers (i3 puts none in LoST).
        assert "callId" not in events[2] and "incidentId" not in events[3]
        # Malformed: the body as received, why it is malformed, and the error answer.
        q, r = events[4], events[5]
        assert q["queryAdapter"] == "<findService" and q["malformedQuery"]
        assert r["responseStatus"] == "error" and r["responseAdapter"] == bad.text
        # The whole call's story holds the ECRF's part.
        assert [e.log_event_type for e in store.conversation(CALL)] == ["LostQueryLogEvent", "LostResponseLogEvent"]
    finally:
        store.close()


async def test_a_too_large_body_is_logged_as_malformed(servers, tmp_path):
    store = open_store(str(tmp_path / "logging.db"))
    try:
        logging_url = (await servers.start(create_logging_app(store), lifespan="off")).removesuffix("/lost")
        sender = LogSender([logging_url], str(tmp_path / "spool"), None, "ecrf-a.example", fsync=False)
        lost_log = LostLogger(sender, element_id="ecrf-a.example", agency_id="example")
        # The logger is asked for on each request (a node starts it after building the app).
        url = await servers.start(create_ecrf_app(ecrf_a(), log=lambda: lost_log, max_body=100))
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(url, content=b"<" + b"x" * 200 + b"/>")
        assert answer.status_code == 200 and b"badRequest" in answer.content
        await lost_log.drain(timeout=10)
        await sender.aclose()
        events = [jws.verify(e.jws.encode(), keys=[], allow_none=True).payload
                  for e in store.query(Filter(), limit=10).items]  # fmt: skip
        assert [e["logEventType"] for e in events] == ["LostQueryLogEvent", "LostResponseLogEvent"]
        assert events[0]["malformedQuery"] == "body exceeds the size limit" and "not kept" in events[0]["queryAdapter"]
        assert events[1]["responseStatus"] == "error" and events[1]["responseAdapter"] == answer.text
    finally:
        store.close()
