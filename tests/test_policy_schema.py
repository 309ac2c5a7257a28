"""Property tests of the running Policy Store against its own OpenAPI document
(NENA-STA-010.3 section 4.9; issue 5): schemathesis generates valid and invalid requests for
every operation of ``/openapi.json`` and sends them over HTTP to the service under uvicorn
on 127.0.0.1 (SQLite store, a few policies already stored); no answer may be a 5xx, have an
undocumented status or content type, or break its response schema. Bounded
``max_examples`` per operation."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from firebox.policy.app import PolicyService
from firebox.policy.openapi import openapi_document
from firebox.policy.store import open_store
from firebox.policy.testing import Signer, body, esrp_route_rule, policy

from schema_testing import case_id, cases, check_operation, operations
from schema_testing import served as serve

MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[str]:
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('schema')}/policies.db")
    signer = Signer("ed25519", cn="psap.example.net")
    service = PolicyService(store, trust=[signer.ca])
    try:
        with serve(service.app()) as url:
            for name in ("a", "b", "c"):
                rule = esrp_route_rule("r", "sip:q@x.example")
                reply = httpx.post(f"{url}/Policies", content=body(signer, policy(name, [rule])))
                assert reply.status_code == 201, reply.text
            yield url
    finally:
        store.close()


OPERATIONS = operations(openapi_document())


def test_the_served_document_is_the_one_tested(served):
    assert httpx.get(f"{served}/openapi.json").json() == openapi_document()


#: Operations with no input that can be made invalid.
NO_NEGATIVE = {"GET /Versions"}
CASES = cases(OPERATIONS, NO_NEGATIVE)


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[case_id(c) for c in CASES])
def test_no_5xx_and_no_schema_violation(served, label, mode):
    check_operation(OPERATIONS[label], mode, served, MAX_EXAMPLES)
