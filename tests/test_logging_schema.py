"""Property tests of the running Logging Service against its own OpenAPI document
(NENA-STA-010.3 section 4.12.3; issue 5): schemathesis generates valid and invalid requests
for every operation of ``/openapi.json`` and sends them over HTTP to the service under
uvicorn on 127.0.0.1 (SQLite store, a few calls already logged); no answer may be a 5xx,
have an undocumented status or content type, or break its response schema. Bounded
``max_examples`` per operation."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

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

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]  # fmt: skip
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
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(LoggingService(store).app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started:
            break
        thread.join(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        store.close()


SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}


def test_the_served_document_is_the_one_tested(served):
    assert httpx.get(f"{served}/openapi.json").json() == openapi_document()


#: Operations whose only input is a free string path parameter have no invalid requests.
NO_NEGATIVE = {"GET /Conversations/{callId}", "GET /LogEvents/{logEventId}", "GET /Versions"}
CASES = [(label, mode) for label in sorted(OPERATIONS) for mode in GenerationMode
         if not (mode is GenerationMode.NEGATIVE and label in NO_NEGATIVE)]  # fmt: skip


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{label} {mode.value}" for label, mode in CASES])
def test_no_5xx_and_no_schema_violation(served, label, mode):
    """(schemathesis's own pytest plugin does not load under pytest 9, so each operation's
    case strategy is run with hypothesis directly.)"""
    operation = OPERATIONS[label]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        case.call_and_validate(base_url=served, checks=CHECKS)

    run()


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
