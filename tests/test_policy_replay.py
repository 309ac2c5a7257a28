"""No rolling a policy back by replaying an old signed document: a replacement (PUT, either
form, and storing again a deleted policy) must carry an issued-at time (``iat``, RFC 7519
NumericDate, in the JWS protected header) later than the stored version's; an older or equal
one is a 409 naming ``protected.iat``, a missing one a 400, one far in the future a 400. Over
ASGI with httpx, a real SQLite store; the store's clock injected."""

from __future__ import annotations

import httpx

from firebox.policy.testing import body, delete_body, esrp_route_rule, policy

from test_policy_service import OWNER, RULES, SIGNERS, client, clock, problem_members, store  # noqa: F401

ED = SIGNERS["ed25519"]
OTHER_RULES = [esrp_route_rule("to-b", "sip:queue@b.example.net")]


async def test_an_old_document_sent_again_is_refused(client: httpx.AsyncClient, clock):
    t = clock.now.timestamp()
    v1 = body(ED, policy("p", RULES), iat=t - 60)
    v2 = body(ED, policy("p", OTHER_RULES), iat=t - 30)
    assert (await client.post("/Policies", content=v1)).status_code == 201
    assert (await client.put("/Policies/p", content=v2)).status_code == 200
    # v1 captured on the wire and sent again: refused, the policy stays at version 2.
    reply = await client.put("/Policies/p", content=v1)
    assert problem_members(reply, 409) == ["protected.iat"]
    detail = reply.json()["errors"][0]["detail"]
    assert "not after version 2" in detail and "old document sent again" in detail
    assert (await client.get("/Policies/p")).content == v2
    # The same document twice is a replay too (equal iat); so through NENA's query form.
    assert problem_members(await client.put("/Policies/p", content=v2), 409) == ["protected.iat"]
    reply = await client.put("/Policies", params={"policyOwner": OWNER, "policyType": "OriginationRoutePolicy",
                                                  "policyId": "p"}, content=v1)  # fmt: skip
    assert problem_members(reply, 409) == ["protected.iat"]
    # A document signed later replaces it.
    v3 = body(ED, policy("p", RULES), iat=t)
    reply = await client.put("/Policies/p", content=v3)
    assert reply.status_code == 200 and reply.json()["version"] == 3


async def test_iat_is_required_well_formed_and_not_in_the_future(client: httpx.AsyncClient, clock):
    from firebox import jws as jwslib

    t = clock.now.timestamp()
    assert (await client.post("/Policies", content=body(ED, policy("p", RULES), iat=t - 10))).status_code == 201
    bare = jwslib.serialize(ED.sign(policy("p", OTHER_RULES)))  # no iat at all
    reply = await client.put("/Policies/p", content=bare)
    assert problem_members(reply, 400) == ["protected.iat"] and "missing" in reply.text
    for bad in ("yesterday", True, -1):
        reply = await client.put("/Policies/p", content=body(ED, policy("p", OTHER_RULES), iat=bad))
        assert problem_members(reply, 400) == ["protected.iat"], bad
    reply = await client.put("/Policies/p", content=body(ED, policy("p", OTHER_RULES), iat=t + 3600))
    assert problem_members(reply, 400) == ["protected.iat"] and "in the future" in reply.text
    # A first POST may come without one (nothing to roll back); a replacement then needs one.
    first = jwslib.serialize(ED.sign(policy("q", RULES)))
    assert (await client.post("/Policies", content=first)).status_code == 201
    assert problem_members(await client.put("/Policies/q", content=first), 400) == ["protected.iat"]


async def test_a_deleted_policy_cannot_be_brought_back_by_a_replay(client: httpx.AsyncClient, clock):
    t = clock.now.timestamp()
    v1 = body(ED, policy("p", RULES), iat=t - 60)
    assert (await client.post("/Policies", content=v1)).status_code == 201
    reply = await client.request("DELETE", "/Policies/p", content=delete_body(ED, "p", 1))
    assert reply.status_code == 200
    assert problem_members(await client.post("/Policies", content=v1), 409) == ["protected.iat"]
    assert (await client.get("/Policies/p")).status_code == 404
    fresh = body(ED, policy("p", RULES), iat=t)
    reply = await client.post("/Policies", content=fresh)
    assert reply.status_code == 201 and reply.json()["version"] == 2
