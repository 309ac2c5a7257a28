"""The Policy Store's requests in the form NENA-STA-010.3 section 4.9 gives them: a policy
named by query parameters (``policyOwner``, ``policyType`` and one of ``policyId`` /
``policyName`` / ``policyQueueName``) for retrieving (``GET /Policies?...``, a PolicyArray),
storing or replacing (``PUT /Policies?...``, 201 when new, 200 for the next version) and
deleting (``DELETE /Policies?...``, the signed delete request as for ``/Policies/{id}``).
The path form stays as an alias. Over ASGI with httpx, a real SQLite store."""

from __future__ import annotations

import httpx

from firebox.policy.testing import body, delete_body, esrp_route_rule, policy

from test_policy_service import OUTSIDER, OWNER, RULES, SIGNERS, client, clock, problem_members, store  # noqa: F401

ED = SIGNERS["ed25519"]
QUEUE = "sip:queue@a.example.net"
KIND = "OriginationRoutePolicy"


def named(**extra: str) -> dict[str, str]:
    return {"policyOwner": OWNER, "policyType": KIND, **extra}


async def test_put_stores_then_replaces_and_get_retrieves(client: httpx.AsyncClient):
    first = body(ED, policy("orig", RULES, policy_type=KIND, policyQueueName=QUEUE))
    reply = await client.put("/Policies", params=named(policyId="orig"), content=first)
    assert reply.status_code == 201 and reply.json() == {"policyId": "orig", "version": 1}
    assert reply.headers["location"] == "/Policies/orig"
    second = body(ED, policy("orig", [esrp_route_rule("to-b", "sip:queue@b.example.net")], policy_type=KIND,
                              policyQueueName=QUEUE))  # fmt: skip
    reply = await client.put("/Policies", params=named(policyQueueName=QUEUE), content=second)
    assert reply.status_code == 200 and reply.json() == {"policyId": "orig", "version": 2}
    # Retrieval by each selector: the current version, byte for byte inside the PolicyArray.
    for selector in ({"policyId": "orig"}, {"policyName": "orig"}, {"policyQueueName": QUEUE}):
        page = (await client.get("/Policies", params=named(**selector))).json()
        assert page["count"] == page["totalCount"] == 1 and page["summaries"][0]["version"] == 2
        assert (await client.get("/Policies/orig")).content == second
    # The path form is the same policy.
    assert (await client.get("/Policies", params={"policyId": "orig"})).json()["totalCount"] == 1
    for miss in ({"policyId": "other"}, {"policyQueueName": "sip:nobody@a.example.net"}):
        page = (await client.get("/Policies", params=named(**miss))).json()
        assert page["count"] == page["totalCount"] == 0 and page["policies"] == []


async def test_the_query_must_name_the_document(client: httpx.AsyncClient):
    doc = body(ED, policy("orig", RULES, policy_type=KIND, policyQueueName=QUEUE))
    reply = await client.put("/Policies", params={"policyType": KIND}, content=doc)
    assert problem_members(reply, 400) == ["policyOwner", "policyId"]
    reply = await client.put("/Policies", params=named(policyId="orig", policyQueueName=QUEUE), content=doc)
    assert problem_members(reply, 400) == ["policyQueueName"]
    reply = await client.put("/Policies", params=named(policyId="another"), content=doc)
    assert problem_members(reply, 400) == ["policyId"]
    reply = await client.put("/Policies", params={**named(policyId="orig"), "policyType": "OtherRoutePolicy",
                                                  "policyOwner": "other.example"}, content=doc)  # fmt: skip
    assert problem_members(reply, 400) == ["policyOwner", "policyType"]
    # The signer is still checked: another agency cannot store for this owner.
    reply = await client.put("/Policies", params=named(policyId="orig"), content=body(OUTSIDER, policy(
        "orig", RULES, policy_type=KIND)))  # fmt: skip
    assert problem_members(reply, 403) == ["policyOwner"]


async def test_delete_by_query(client: httpx.AsyncClient):
    doc = body(ED, policy("orig", RULES, policy_type=KIND, policyQueueName=QUEUE))
    assert (await client.put("/Policies", params=named(policyId="orig"), content=doc)).status_code == 201
    reply = await client.request("DELETE", "/Policies", params=named(policyQueueName="sip:x@y.example"),
                                 content=delete_body(ED, "orig", 1))  # fmt: skip
    assert problem_members(reply, 404) == ["policyQueueName"]
    reply = await client.request("DELETE", "/Policies", params={"policyOwner": OWNER}, content=delete_body(ED, "orig", 1))
    assert problem_members(reply, 400) == ["policyType", "policyId"]
    reply = await client.request("DELETE", "/Policies", params=named(policyQueueName=QUEUE), content=delete_body(ED, "orig", 1))
    assert reply.status_code == 200 and reply.json() == {"policyId": "orig", "deletedVersion": 1}
    assert (await client.get("/Policies/orig")).status_code == 404
    assert (await client.get("/Policies", params=named(policyId="orig"))).json()["totalCount"] == 0
    # The same signed document again cannot bring the deleted policy back (a replay); one
    # signed since can: the next version of the same policy, 201.
    replay = await client.put("/Policies", params=named(policyId="orig"), content=doc)
    assert problem_members(replay, 409) == ["protected.iat"]
    again = body(ED, policy("orig", RULES, policy_type=KIND, policyQueueName=QUEUE))
    reply = await client.put("/Policies", params=named(policyId="orig"), content=again)
    assert reply.status_code == 201 and reply.json() == {"policyId": "orig", "version": 2}
