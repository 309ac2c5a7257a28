"""Property tests of the running Policy Store against its own OpenAPI document
(NENA-STA-010.3 section 4.9; issue 5): schemathesis generates valid and invalid requests for
every operation of ``/openapi.json`` and sends them over HTTP to the service under uvicorn
on 127.0.0.1 (SQLite store, a few policies already stored); no answer may be a 5xx, have an
undocumented status or content type, or break its response schema. Bounded
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

from firebox.policy.app import PolicyService
from firebox.policy.openapi import openapi_document
from firebox.policy.store import open_store
from firebox.policy.testing import Signer, body, esrp_route_rule, policy

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]  # fmt: skip
MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[str]:
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('schema')}/policies.db")
    signer = Signer("ed25519", cn="psap.example.net")
    service = PolicyService(store, trust=[signer.ca])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(service.app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started:
            break
        thread.join(0.01)
    assert server.started
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for name in ("a", "b", "c"):
        reply = httpx.post(f"{url}/Policies", content=body(signer, policy(name, [esrp_route_rule("r", "sip:q@x.example")])))
        assert reply.status_code == 201, reply.text
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        store.close()


SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}


def test_the_served_document_is_the_one_tested(served):
    assert httpx.get(f"{served}/openapi.json").json() == openapi_document()


#: Operations with no input that can be made invalid.
NO_NEGATIVE = {"GET /Versions"}
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
