"""The Policy Store over HTTP (NENA-STA-010.3 section 4.9): policies signed with EdDSA
(Ed25519 and Ed448) and an x5c chain leading to a trust anchor, stored and returned byte for
byte; the owner checked (certificate names, or a configured owner key); bad rules named by
rule and member; versions with ETag / If-Match; signed deletes; expiry; problem JSON on
every 4xx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from firebox import jws as jwslib
from firebox.policy.app import PolicyService
from firebox.policy.store import PolicyStore, open_store
from firebox.policy.testing import Signer, body, delete_body, esrp_route_rule, policy

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
OWNER = "psap.example.net"
SIGNERS = {k: Signer(k, cn=OWNER) for k in ("ed25519", "ed448")}
OUTSIDER = Signer("ed25519", cn="evil.example")
RULES = [esrp_route_rule("to-a", "sip:queue@a.example.net")]
BCF_RULES = [{"id": "noisy", "action": "deprioritize", "sources": ["carrier-x"]}]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path) -> AsyncIterator[PolicyStore]:
    s = open_store(f"sqlite:///{tmp_path}/policies.db")
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def client_for(store: PolicyStore, **kw) -> httpx.AsyncClient:
    anchors = [s.ca for s in (*SIGNERS.values(), OUTSIDER)]
    kw.setdefault("trust", anchors)
    app = PolicyService(store, **kw).app()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://policies")


@pytest.fixture
async def client(store, clock) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store, clock=clock) as c:
        yield c


def problem_members(reply: httpx.Response, status: int) -> list[str]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    data = reply.json()
    assert data["status"] == status and data["title"] and data["detail"]
    return [e["member"] for e in data["errors"]]


async def post(client: httpx.AsyncClient, content: bytes) -> httpx.Response:
    return await client.post("/Policies", content=content, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("kind", ["ed25519", "ed448"])
async def test_signed_policy_is_stored_and_served_byte_for_byte(client, kind):
    sent = body(SIGNERS[kind], policy("origination", RULES))
    reply = await post(client, sent)
    assert reply.status_code == 201, reply.text
    assert reply.json() == {"policyId": "origination", "version": 1}
    assert reply.headers["location"] == "/Policies/origination" and reply.headers["etag"] == '"v1"'
    got = await client.get("/Policies/origination")
    assert got.status_code == 200 and got.content == sent
    assert got.headers["content-type"] == "application/json" and got.headers["etag"] == '"v1"'
    header = json.loads(jwslib.b64url_decode(json.loads(got.content)["protected"]))
    assert header["alg"] == "EdDSA" and len(header["x5c"]) == 2
    sig = jwslib.b64url_decode(json.loads(got.content)["signature"])
    assert len(sig) == (64 if kind == "ed25519" else 114)
    assert jwslib.verify(got.content, trust=[SIGNERS[kind].ca]).payload["policyRules"] == RULES
    cached = await client.get("/Policies/origination", headers={"If-None-Match": '"v1"'})
    assert cached.status_code == 304 and not cached.content


async def test_bcf_rules_are_stored(client):
    reply = await post(client, body(SIGNERS["ed25519"], policy("bcf", BCF_RULES, policy_type="BcfRules")))
    assert reply.status_code == 201, reply.text
    listed = (await client.get("/Policies", params={"policyType": "BcfRules"})).json()
    assert listed["count"] == listed["totalCount"] == 1
    assert listed["summaries"][0]["policyId"] == "bcf" and listed["summaries"][0]["policyOwner"] == OWNER
    assert jwslib.verify(listed["policies"][0], trust=[SIGNERS["ed25519"].ca]).payload["policyRules"] == BCF_RULES


async def test_signer_not_naming_the_owner_is_forbidden(client):
    reply = await post(client, body(OUTSIDER, policy("origination", RULES)))
    assert problem_members(reply, 403) == ["policyOwner"]
    assert "evil.example" in reply.json()["detail"]
    assert (await client.get("/Policies/origination")).status_code == 404


async def test_owner_given_by_a_configured_key(store):
    delegate = Signer("ed448", cn="vendor.example")  # signs for the owner by configuration
    async with client_for(store, owner_keys={OWNER: [delegate.key.public_key()]}) as c:  # type: ignore[union-attr]
        reply = await post(c, body(delegate, policy("p", RULES)))
        assert problem_members(reply, 434) == ["x5c"]  # its CA is not a trust anchor
    async with client_for(store, trust=None, owner_keys={OWNER: [delegate.key.public_key()]}) as c:  # type: ignore[union-attr]
        assert (await post(c, body(delegate, policy("p", RULES)))).status_code == 201
        # the domain has configured keys: a certificate naming it is not enough
        assert problem_members(await post(c, body(SIGNERS["ed25519"], policy("q", RULES))), 403) == ["policyOwner"]


async def test_bad_rules_are_named_by_rule_and_member(client):
    bad = [
        esrp_route_rule("fine", "sip:queue@a.example.net"),
        {"id": "nights", "priority": 5, "conditions": [{"type": "time", "timezone": "America/Nowhere",
                                                        "ranges": ["22:00-06:00"]}],
         "actions": [{"type": "route", "uri": "sip:queue@b.example.net"}]},
    ]  # fmt: skip
    reply = await post(client, body(SIGNERS["ed25519"], policy("p", bad)))
    assert problem_members(reply, 400) == ["policyRules[1].conditions[0].timezone"]
    error = reply.json()["errors"][0]
    assert error["pointer"] == "/policyRules/1/conditions/0/timezone" and "nights" in error["detail"]
    reply = await post(client, body(SIGNERS["ed25519"], policy("b", [{"id": "x", "action": "explode"}],
                                                               policy_type="BcfRules")))  # fmt: skip
    assert problem_members(reply, 400) == ["policyRules[0].action"]
    reply = await post(client, body(SIGNERS["ed25519"], {"policyOwner": OWNER, "policyType": "Nonsense",
                                                         "policyRules": [], "colour": "red"}))  # fmt: skip
    assert problem_members(reply, 400) == ["colour", "policyType", "policyId"]


async def test_signature_and_form_problems(client, store):
    token = SIGNERS["ed25519"].sign(policy("p", RULES))
    tampered = dict(token, payload=jwslib.b64url_encode(json.dumps(policy("p", [])).encode()))
    assert problem_members(await post(client, jwslib.serialize(tampered)), 434) == ["signature"]
    unsigned = jwslib.serialize(jwslib.sign(policy("p", RULES), None))
    assert problem_members(await post(client, unsigned), 438) == ["alg"]
    assert problem_members(await post(client, b"[1, 2]"), 400) == [""]
    assert problem_members(await post(client, b'{"protected": "e30"}'), 400) == ["payload"]
    assert problem_members(await post(client, b" " * (1 << 20) + b"{}"), 413) == [""]
    async with client_for(store, allow_unsigned=True) as lab:
        assert (await post(lab, unsigned)).status_code == 201


async def test_put_versions_and_concurrency(client):
    ed = SIGNERS["ed25519"]
    assert (await post(client, body(ed, policy("p", RULES)))).status_code == 201
    assert problem_members(await post(client, body(ed, policy("p", RULES))), 409) == ["policyId"]
    v2 = body(SIGNERS["ed448"], policy("p", [esrp_route_rule("to-b", "sip:queue@b.example.net")]))
    reply = await client.put("/Policies/p", content=v2, headers={"If-Match": '"v1"'})
    assert reply.status_code == 200 and reply.json() == {"policyId": "p", "version": 2}
    assert reply.headers["etag"] == '"v2"'
    # a writer who saw version 1 loses
    stale = await client.put("/Policies/p", content=body(ed, policy("p", RULES)), headers={"If-Match": '"v1"'})
    assert problem_members(stale, 412) == ["policyVersion"]
    assert problem_members(await client.put("/Policies/p", content=v2, headers={"If-Match": "xyz"}), 412) == ["If-Match"]
    assert (await client.get("/Policies/p")).content == v2
    versions = (await client.get("/Policies/p/versions")).json()
    assert versions["currentVersion"] == 2 and [v["version"] for v in versions["versions"]] == [1, 2]
    assert problem_members(await client.get("/Policies/p/versions/9"), 404) == ["version"]
    assert problem_members(await client.get("/Policies/p/versions/x"), 404) == ["version"]
    # another owner, another type, another id, a policy that does not exist
    assert problem_members(await client.put("/Policies/p", content=body(OUTSIDER, policy("p", RULES))), 403) == [
        "policyOwner"]  # fmt: skip
    retype = body(ed, policy("p", BCF_RULES, policy_type="BcfRules"))
    assert problem_members(await client.put("/Policies/p", content=retype), 409) == ["policyType"]
    assert problem_members(await client.put("/Policies/p", content=body(ed, policy("q", RULES))), 400) == ["policyId"]
    assert problem_members(await client.put("/Policies/q", content=body(ed, policy("q", RULES))), 404) == ["policyId"]


async def test_version_one_is_served_byte_for_byte(client):
    first = body(SIGNERS["ed448"], policy("p", RULES, description="first"))
    await post(client, first)
    await client.put("/Policies/p", content=body(SIGNERS["ed448"], policy("p", RULES, description="second")))
    got = await client.get("/Policies/p/versions/1")
    assert got.status_code == 200 and got.content == first and got.headers["etag"] == '"v1"'


async def test_delete_is_signed_by_the_owner(client):
    ed = SIGNERS["ed25519"]
    await post(client, body(ed, policy("p", RULES)))
    assert problem_members(await client.request("DELETE", "/Policies/p", content=delete_body(OUTSIDER, "p", 1)),
                           403) == ["policyOwner"]  # fmt: skip
    assert problem_members(await client.request("DELETE", "/Policies/p",
                                                content=delete_body(OUTSIDER, "p", 1, owner="evil.example")),
                           403) == ["policyOwner"]  # fmt: skip
    assert problem_members(await client.request("DELETE", "/Policies/p", content=delete_body(ed, "p", 7)),
                           412) == ["policyVersion"]  # fmt: skip
    assert problem_members(await client.request("DELETE", "/Policies/p", content=delete_body(ed, "q", 1)),
                           400) == ["policyId"]  # fmt: skip
    assert problem_members(await client.delete("/Policies/p"), 400) == [""]
    reply = await client.request("DELETE", "/Policies/p", content=delete_body(ed, "p", 1))
    assert reply.status_code == 200 and reply.json() == {"policyId": "p", "deletedVersion": 1}
    assert problem_members(await client.get("/Policies/p"), 404) == ["policyId"]
    assert (await client.get("/Policies")).json()["totalCount"] == 0
    # a replay of the delete cannot remove the policy created again (version 2)
    assert (await post(client, body(ed, policy("p", RULES)))).json()["version"] == 2
    again = await client.request("DELETE", "/Policies/p", content=delete_body(ed, "p", 1))
    assert problem_members(again, 412) == ["policyVersion"]


async def test_expired_policy_is_not_served(client, clock):
    ed = SIGNERS["ed25519"]
    past = policy("old", RULES, expires=clock.now - timedelta(seconds=1))
    assert problem_members(await post(client, body(ed, past)), 400) == ["policyExpirationTime"]
    soon = policy("soon", RULES, expires=clock.now + timedelta(hours=1))
    assert (await post(client, body(ed, soon))).status_code == 201
    await post(client, body(ed, policy("forever", RULES)))
    summaries = (await client.get("/Policies")).json()["summaries"]
    assert [s["policyId"] for s in summaries] == ["forever", "soon"] and "policyExpirationTime" in summaries[1]
    clock.now += timedelta(hours=2)
    assert problem_members(await client.get("/Policies/soon"), 404) == ["policyId"]
    assert problem_members(await client.get("/Policies/soon/versions"), 404) == ["policyId"]
    assert problem_members(await client.get("/Policies/soon/versions/1"), 404) == ["version"]
    listed = (await client.get("/Policies")).json()
    assert listed["totalCount"] == 1 and listed["summaries"][0]["policyId"] == "forever"
    # the owner renews it
    renewed = body(ed, policy("soon", RULES, expires=clock.now + timedelta(days=1)))
    assert (await client.put("/Policies/soon", content=renewed)).status_code == 200
    assert (await client.get("/Policies/soon")).content == renewed


async def test_list_paging_and_filters(client):
    for i in range(4):
        await post(client, body(SIGNERS["ed25519"], policy(f"p{i}", RULES)))
    page = (await client.get("/Policies", params={"limit": 2, "start": 2})).json()
    assert page["count"] == 2 and page["totalCount"] == 4
    assert [s["policyId"] for s in page["summaries"]] == ["p1", "p2"]
    assert (await client.get("/Policies", params={"policyOwner": "nobody.example"})).json()["totalCount"] == 0
    assert problem_members(await client.get("/Policies", params={"limit": "0", "start": "x"}), 400) == ["limit", "start"]


async def test_other_paths_and_methods_answer_problem_json(client):
    # The request as a whole is what was wrong: one error, member and pointer "", naming it.
    reply = await client.get("/Nothing")
    assert problem_members(reply, 404) == [""] and reply.json()["errors"][0]["pointer"] == ""
    assert "GET /Nothing" in reply.json()["detail"]
    reply = await client.patch("/Policies")
    assert problem_members(reply, 405) == [""] and set(reply.headers["allow"].split(", ")) == {"GET", "HEAD", "POST", "PUT", "DELETE"}
    versions = (await client.get("/Versions")).json()
    assert versions["versions"][0]["major"] == 1
    assert (await client.get("/openapi.json")).json()["info"]["title"].startswith("firebox Policy Store")


def san_signer(names: list[str]) -> Signer:
    """A signer whose one certificate names ``names`` in its subjectAltName (its CN names no
    domain). Its issuer's signature is not checked (the store has no trust anchors here)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.x509.oid import NameOID

    s = Signer("none")
    key = Ed25519PrivateKey.generate()
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some PSAP")])
    leaf = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, None)
    )  # fmt: skip
    s.key, s.x5c = key, [leaf]
    return s


@pytest.mark.parametrize(
    ("names", "owner", "status"),
    [
        (["psap.example.net"], "psap.example.net", 201),
        (["*.example.net"], "sip:esrp@psap.example.net", 201),
        (["*.example.net"], "a.psap.example.net", 403),
        (["other.example.net"], "https://psap.example.net/policies", 403),
    ],
)
async def test_owner_named_in_the_subject_alt_name(store, names, owner, status):
    signer = san_signer(names)
    async with client_for(store, trust=None) as c:  # the leaf alone: its names are what is checked
        reply = await post(c, body(signer, policy("p", RULES, owner=owner)))
        assert reply.status_code == status, reply.text
