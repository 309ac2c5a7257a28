"""Probes, sans-I/O: the planner's schedule, the judge; and the ECRF mapping the i3 test
service (urn:service:test.sos) as the service it tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from shapely.geometry import box

from firebox.ecrf.service import Ecrf
from firebox.gis.index import Boundary, BoundaryLayer, ServiceIndex
from firebox.location.shapes import Point
from firebox.lost.client import LostClientCore
from firebox.lost.messages import ErrorKind, ErrorsResponse, FindServiceResponse
from firebox.monitor.probes import Ingress, ProbeAnswer, ProbeOutcome, ProbePlanner, ProbeTarget

A = ProbeTarget("a", "sip:psap-a@demo.firebox.test", -71.1, 42.3)
B = ProbeTarget("b", "sip:psap-b@demo.firebox.test", -71.0, 42.3)
I1, I2 = Ingress("bcf-1", "127.0.0.1", 5070), Ingress("bcf-2", "127.0.0.1", 5072)


def test_every_pair_once_per_period_spread_and_never_two_at_once():
    p = ProbePlanner([I1, I2], [A, B], period=4.0, start=100.0)
    first = p.due(100.0)
    assert [(x.ingress.name, x.target.psap_id) for x in first] == [("bcf-1", "a")]
    assert p.next_due() == 101.0
    assert [(x.ingress.name, x.target.psap_id) for x in p.due(103.0)] == [("bcf-1", "b"), ("bcf-2", "a"), ("bcf-2", "b")]
    # bcf-1/a is due again at 104 but still running: skipped until it finishes
    assert p.due(104.5) == []
    p.finished(first[0])
    again = p.due(104.5)
    assert [(x.ingress.name, x.target.psap_id) for x in again] == [("bcf-1", "a")]
    assert again[0].id > first[0].id
    with pytest.raises(ValueError, match="at least one ingress"):
        ProbePlanner([], [A])


def test_judge_names_what_happened():
    p = ProbePlanner([I1], [A, B], period=1.0)
    (probe,) = p.due(0.0)
    j = lambda answer: p.judge(probe, answer, 1.0)  # noqa: E731
    assert j(ProbeAnswer(200, "OK", "<sip:psap-a@127.0.0.1:5099>")).outcome is ProbeOutcome.ANSWERED
    wrong = j(ProbeAnswer(200, "OK", "<sip:psap-b@127.0.0.1:5099>"))
    assert (wrong.outcome, wrong.answered_by, wrong.detail) == (ProbeOutcome.WRONG_PSAP, "b", "answered by b, not a")
    rejected = j(ProbeAnswer(403, "Forbidden"))
    assert (rejected.outcome, rejected.status, rejected.detail) == (ProbeOutcome.REJECTED, 403, "SIP 403 Forbidden")
    assert j(ProbeAnswer(None, timed_out=True)).outcome is ProbeOutcome.NO_ANSWER
    assert j(ProbeAnswer(None, error="no route")).outcome is ProbeOutcome.ERROR
    unknown = j(ProbeAnswer(200, "OK", "<sip:someone@10.0.0.1>"))
    assert unknown.ok and "not identified" in unknown.detail


def test_the_ecrf_maps_the_test_service_like_the_service_it_tests():
    west, east = box(-71.2, 42.2, -71.05, 42.4), box(-71.05, 42.2, -70.9, 42.4)
    ecrf = Ecrf("ecrf.example", ServiceIndex([BoundaryLayer("urn:service:sos", [
        Boundary("a", "A", "sip:psap-a@demo.firebox.test", west),
        Boundary("b", "B", "sip:psap-b@demo.firebox.test", east),
    ])]), ttl=timedelta(minutes=30))  # fmt: skip
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for lon, want in ((-71.1, "sip:psap-a@demo.firebox.test"), (-71.0, "sip:psap-b@demo.firebox.test")):
        request = LostClientCore.find_service_request(Point(42.3, lon), "urn:service:test.sos", boundary=None)
        answer = ecrf.handle(request, now)
        assert isinstance(answer, FindServiceResponse), answer
        assert answer.mappings[0].uris == [want]
        assert not answer.warnings  # not a substitution: the test service is routed as sos
    # a test of a service this ECRF does not serve is still an error that says so
    request = LostClientCore.find_service_request(Point(42.3, -71.1), "urn:service:test.counseling", boundary=None)
    answer = ecrf.handle(request, now)
    assert isinstance(answer, ErrorsResponse) and answer.errors[0].kind is ErrorKind.SERVICE_NOT_IMPLEMENTED
