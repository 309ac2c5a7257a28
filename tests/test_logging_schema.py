"""Property tests of the running Logging Service against its own OpenAPI document
(NENA-STA-010.3 section 4.12.3; issue 5): schemathesis generates valid and invalid requests
for every operation of ``/openapi.json`` and sends them over HTTP to the service under
uvicorn on 127.0.0.1 (SQLite store, a few calls already logged); no answer may be a 5xx,
have an undocumented status or content type, or break its response schema. Bounded
``max_examples`` per operation."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from firebox import jws as jwslib
from firebox.logging.events import (
    new_call_id,
    new_incident_id,
    new_log_event_id,
    parse_timestamp,
)
from firebox.logging.openapi import openapi_document
from firebox.logging.service import LoggingService
from firebox.logging.store import AppendItem, open_store, to_micros
from firebox.logging.testing import Signer, call_events

from schema_testing import CHECKS, case_id, cases, check_operation, operations
from schema_testing import served as serve

MAX_EXAMPLES = 60


SEEDED: dict[str, list[str]] = {"callIds": [], "incidentIds": [], "logEventIds": []}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[str]:
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('schema')}/logs.db")
    signer = Signer("ed25519")
    for _ in range(3):
        events = call_events(new_call_id("bcf.example.net"), new_incident_id("bcf.example.net"))
        stored = store.append([
            AppendItem(new_log_event_id("logs.example.net"), e, jwslib.serialize(signer.sign(e)).decode(),
                       to_micros(parse_timestamp(e["timestamp"])))
            for e in events
        ])  # fmt: skip
        SEEDED["callIds"].append(events[0]["callId"])
        SEEDED["incidentIds"].append(events[0]["incidentId"])
        SEEDED["logEventIds"].extend(r.log_event_id for r in stored)
    try:
        with serve(LoggingService(store).app()) as url:
            yield url
    finally:
        store.close()


OPERATIONS = operations(openapi_document())


def test_the_served_document_is_the_one_tested(served):
    assert httpx.get(f"{served}/openapi.json").json() == openapi_document()


#: Operations whose only input is a free string path parameter have no invalid requests.
NO_NEGATIVE = {"GET /Conversations/{callId}", "GET /LogEvents/{logEventId}", "GET /Versions"}
CASES = cases(OPERATIONS, NO_NEGATIVE)


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[case_id(c) for c in CASES])
def test_no_5xx_and_no_schema_violation(served, label, mode):
    check_operation(OPERATIONS[label], mode, served, MAX_EXAMPLES)


def test_answers_with_data_follow_the_document(served):
    """The generated requests rarely hit stored data or post a valid event; these do, and
    their answers (201, 409, pages of events, one event, a conversation) are held to the
    same checks."""
    call, incident, log_id = SEEDED["callIds"][0], SEEDED["incidentIds"][0], SEEDED["logEventIds"][0]
    event = call_events(call, incident)[0]
    body = jwslib.sign(event, None)
    cases = [
        ("POST /LogEvents", {"body": body, "media_type": "application/json"}, 201),
        ("POST /LogEvents", {"body": body, "media_type": "application/json"}, 409),
        ("GET /LogEvents", {"query": {"limit": 5, "start": 2}}, 200),
        ("GET /LogEvents", {"query": {"logEventType": "RouteLogEvent", "startTime": "2000-01-01T00:00:00Z"}}, 200),
        ("GET /LogEvents/{logEventId}", {"path_parameters": {"logEventId": log_id}}, 200),
        ("GET /LogEventIds", {"query": {"callId": call}}, 200),
        ("GET /CallIds", {"query": {"incidentId": incident}}, 200),
        ("GET /IncidentIds", {"query": {"limit": 2}}, 200),
        ("GET /Conversations/{callId}", {"path_parameters": {"callId": call}}, 200),
        ("GET /Versions", {}, 200),
    ]
    for label, kw, status in cases:
        response = OPERATIONS[label].Case(**kw).call_and_validate(base_url=served, checks=CHECKS[:4])
        assert response.status_code == status, (label, response.text)
