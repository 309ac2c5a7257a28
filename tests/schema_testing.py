"""The schemathesis set-up shared by the property tests of firebox's REST services
(``test_logging_schema.py``, ``test_policy_schema.py``): the service served by uvicorn on
127.0.0.1 in a thread, and every operation of its OpenAPI document run with hypothesis in
both generation modes, each answer checked (no 5xx, documented status and content type,
response schema, invalid requests refused). (schemathesis's own pytest plugin does not load
under pytest 9, so each operation's case strategy is run with hypothesis directly.)"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]  # fmt: skip


@contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on 127.0.0.1 (a thread); its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(1000):  # bounded wait for start-up
        if server.started:
            break
        thread.join(0.01)
    assert server.started, "the service did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def operations(document: dict[str, Any]) -> dict[str, Any]:
    """The document's operations by label (``GET /Versions``)."""
    schema = schemathesis.openapi.from_dict(document)
    return {op.label: op for op in (r.ok() for r in schema.get_all_operations())}


def cases(ops: dict[str, Any], no_negative: set[str]) -> list[tuple[str, GenerationMode]]:
    """(label, mode) for every operation and mode; ``no_negative``: operations that have
    no input that can be made invalid."""
    return [(label, mode) for label in sorted(ops) for mode in GenerationMode
            if not (mode is GenerationMode.NEGATIVE and label in no_negative)]  # fmt: skip


def case_id(case: tuple[str, GenerationMode]) -> str:
    return f"{case[0]} {case[1].value}"


def check_operation(operation: Any, mode: GenerationMode, base_url: str, max_examples: int) -> None:
    """Up to ``max_examples`` generated requests of ``operation``, each answer checked."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=max_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, checks=CHECKS)

    run()
