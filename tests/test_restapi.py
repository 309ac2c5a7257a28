"""The REST pieces shared by the Logging Service, the Policy Store and the CAD API
(``firebox.restapi``): one problem JSON shape (RFC 9457, each error with its member and a JSON
pointer, RFC 6901), one integer parameter rule, Starlette's 404/405 as problems; the three
services answer alike (over ASGI with httpx)."""

from __future__ import annotations

import httpx
import pytest

from firebox.restapi import Problem, int_param, openapi_problem_schema, problem_body


@pytest.mark.parametrize(
    ("member", "pointer"),
    [("", ""), ("limit", "/limit"), ("policyRules[2].actions", "/policyRules/2/actions"),
     ("a/b~c", "/a~1b~0c"), ("$.incident.calls[0]", "/incident/calls/0"), ("$", "")],
)  # fmt: skip
def test_pointer(member, pointer):
    assert Problem(member, "x").pointer() == pointer


def test_problem_body():
    body = problem_body(400, "Bad query", [Problem("limit", "must be an integer, not 'x'"), Problem("", "and more")],
                        extra="kept")  # fmt: skip
    assert body == {
        "type": "about:blank", "title": "Bad query", "status": 400,
        "detail": "limit: must be an integer, not 'x'; and more",
        "errors": [{"pointer": "/limit", "member": "limit", "detail": "must be an integer, not 'x'"},
                   {"pointer": "", "member": "", "detail": "and more"}],
        "extra": "kept",
    }  # fmt: skip
    assert problem_body(404, "Not found")["detail"] == "Not found"
    assert set(openapi_problem_schema()["required"]) == {"type", "title", "status", "detail", "errors"}


def test_int_param():
    problems: list[Problem] = []
    assert int_param(None, "limit", 100, 1, 1000, problems) == 100
    assert int_param("7", "limit", 100, 1, 1000, problems) == 7 and problems == []
    assert int_param("x", "limit", 100, 1, 1000, problems) == 100
    assert int_param("0", "start", 1, 1, 9, problems) == 1
    assert [str(p) for p in problems] == ["limit: must be an integer, not 'x'", "start: must be between 1 and 9, not 0"]


async def test_the_three_services_answer_problems_alike(tmp_path):
    from firebox.cad.app import create_cad_app
    from firebox.cad.service import Cad
    from firebox.cad.store import SqliteRepository
    from firebox.logging.service import create_app as logging_app
    from firebox.logging.store import open_store as open_log_store
    from firebox.policy.app import create_app as policy_app
    from firebox.policy.store import open_store as open_policy_store

    log_store, policy_store = open_log_store(str(tmp_path / "l.db")), open_policy_store(str(tmp_path / "p.db"))
    apps = {"logging": (logging_app(log_store), "/LogEvents"), "policy": (policy_app(policy_store), "/Policies"),
            "cad": (create_cad_app(Cad(SqliteRepository(tmp_path / "cad.sqlite"), fqdn="cad.example")),
                    "/cad/incidents")}  # fmt: skip
    try:
        for name, (app, listing) in apps.items():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                missing = await client.get("/no/such/path")
                assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
                assert missing.json()["errors"] == [{"pointer": "", "member": "", "detail": "GET /no/such/path: Not Found"}]
                wrong = await client.patch(listing)
                assert wrong.status_code == 405 and wrong.json()["status"] == 405 and wrong.headers["allow"], name
                if name != "cad":  # the CAD's lists take no paging parameters
                    bad = (await client.get(listing, params={"limit": "x"})).json()
                    assert bad["status"] == 400 and bad["errors"] == [
                        {"pointer": "/limit", "member": "limit", "detail": "must be an integer, not 'x'"}], name
    finally:
        log_store.close()
        policy_store.close()
