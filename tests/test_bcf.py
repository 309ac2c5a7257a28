"""The BCF core: recognition and marking of emergency calls, protection that never turns an
emergency call away, rules as data, and the BadActor interface over real HTTP."""

from __future__ import annotations

import asyncio
import socket
from itertools import count

import httpx
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st

from firebox.bcf import Action, Bcf, BcfRules, CallKind, RateLimit, RateTracker, RuleError, decide, recognize
from firebox.bcf.app import create_bcf_app
from firebox.sip import find_by_cid, parse_message, parse_multipart, serialize

FQDN = "bcf.mass911.example"
CARRIER_NET = {"192.0.2.0/24": "carrier-a", "198.51.100.7/32": "carrier-b"}

PIDF = b"""<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="tel:+16175550100"/>"""


def invite(ruri: str = "sip:911@bcf.mass911.example;user=phone", to: str | None = None, *, extra: str = "",
           method: str = "INVITE", body: bytes = b"v=0\r\n", content_type: str = "application/sdp") -> bytes:  # fmt: skip
    to = to or f"<{ruri}>"
    head = (
        f"{method} {ruri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Caller" <sip:+16175550100@carrier-a.example>;tag=abc\r\n'
        f"To: {to}\r\n"
        "Call-ID: 1-caller@192.0.2.10\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:+16175550100@192.0.2.10:5060>\r\n"
        f"{extra}"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def ids():
    n = count(1)
    return (lambda fqdn: f"urn:emergency:uid:callid:c{next(n)}:{fqdn}",
            lambda fqdn: f"urn:emergency:uid:incidentid:i{next(n)}:{fqdn}")  # fmt: skip


def make_bcf(**kw) -> Bcf:
    call, incident = ids()
    return Bcf(FQDN, sources=CARRIER_NET, call_id_factory=call, incident_id_factory=incident, **kw)


# --- recognition -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ruri, kind, service",
    [
        ("urn:service:sos", CallKind.EMERGENCY, "urn:service:sos"),
        ("urn:service:SOS", CallKind.EMERGENCY, "urn:service:sos"),
        ("urn:service:sos.fire", CallKind.EMERGENCY, "urn:service:sos.fire"),
        ("urn:service:sos.firee", CallKind.EMERGENCY, "urn:service:sos"),
        ("urn:service:sos.", CallKind.EMERGENCY, "urn:service:sos"),
        ("urn:service:911", CallKind.EMERGENCY, "urn:service:sos"),
        ("tel:911", CallKind.EMERGENCY, "urn:service:sos"),
        ("tel:9-1-1;phone-context=+1", CallKind.EMERGENCY, "urn:service:sos"),
        ("sip:911@carrier.example;user=phone", CallKind.EMERGENCY, "urn:service:sos"),
        ("sip:sos@carrier.example", CallKind.EMERGENCY, "urn:service:sos"),
        ("urn:service:test.sos", CallKind.TEST, "urn:service:test.sos"),
        ("urn:service:counseling", None, None),
        ("sip:+16175550199@carrier.example", None, None),
        ("tel:+16175550199", None, None),
    ],
)
def test_recognition(ruri, kind, service):
    found = recognize(parse_message(invite(ruri)))
    assert (found.kind, found.service) == (kind, service) if kind else found is None


def test_the_to_header_is_read_when_the_request_uri_is_the_bcf():
    req = parse_message(invite("sip:bcf.mass911.example", to="<sip:911@carrier.example;user=phone>"))
    assert recognize(req).kind is CallKind.EMERGENCY


def test_only_invite_and_message_start_emergency_conversations():
    assert recognize(parse_message(invite("urn:service:sos", method="OPTIONS"))) is None
    assert recognize(parse_message(invite("urn:service:sos", method="MESSAGE"))).kind is CallKind.EMERGENCY


# --- marking ---------------------------------------------------------------------------------


def test_a_911_call_leaves_marked_with_its_body_unchanged():
    body = b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b\r\nContent-Type: application/pidf+xml\r\nContent-ID: <loc@carrier>\r\n\r\n" + PIDF + b"\r\n--b--\r\n"
    raw = invite(
        "sip:911@carrier.example;user=phone",
        to='"911" <sip:911@carrier.example;user=phone>',
        extra="Geolocation: <cid:loc@carrier>\r\nCall-Info: <http://carrier.example/adr/1>;purpose=EmergencyCallData.ProviderInfo\r\n"
        "Resource-Priority: wps.1, esnet.3, esnet.2\r\n",
        body=body,
        content_type='multipart/mixed;boundary="b"',
    )
    out = make_bcf().process(parse_message(raw), "192.0.2.10", now=0.0)
    assert out.action is Action.ALLOW and out.kind is CallKind.EMERGENCY and out.source_id == "carrier-a"
    fwd = parse_message(serialize(out.request))  # what goes on the wire parses back the same
    assert fwd.uri == "urn:service:sos"
    assert fwd.headers.get("To") == '"911" <urn:service:sos>'
    call_info = fwd.headers.get_all("Call-Info")
    assert call_info[:3] == [
        f"<urn:emergency:uid:callid:c1:{FQDN}>;purpose=emergency-CallId",
        f"<urn:emergency:uid:incidentid:i2:{FQDN}>;purpose=emergency-IncidentId",
        f"<sip:carrier-a@{FQDN}>;purpose=emergency-source",
    ]
    assert call_info[3] == "<http://carrier.example/adr/1>;purpose=EmergencyCallData.ProviderInfo"
    assert fwd.headers.get_all("Resource-Priority") == ["esnet.2"]
    assert "replaces" in [v.lower() for v in fwd.headers.get_all("Supported")]
    assert fwd.body == out.request.body == parse_message(raw).body
    parts = parse_multipart(fwd.content_type, fwd.body)
    assert find_by_cid(parts, "cid:loc@carrier").body.strip() == PIDF
    assert fwd.headers.get("Geolocation") == "<cid:loc@carrier>"
    assert any("Resource-Priority removed: wps.1, esnet.3" in c for c in out.marked.changes)


def test_resource_priority_added_when_missing_and_supported_not_duplicated():
    out = make_bcf().process(parse_message(invite("urn:service:sos", extra="Supported: replaces, timer\r\n")), "192.0.2.1", 0.0)
    assert out.request.headers.get_all("Resource-Priority") == ["esnet.1"]
    assert [v.lower() for v in out.request.headers.get_all("Supported")].count("replaces") == 1
    assert out.request.uri == "urn:service:sos" and not any(c.startswith("Request-URI") for c in out.marked.changes)


def test_a_test_call_keeps_its_urn_and_is_marked():
    out = make_bcf().process(parse_message(invite("urn:service:test.sos")), "192.0.2.1", 0.0)
    assert out.kind is CallKind.TEST and out.request.uri == "urn:service:test.sos"
    assert out.request.headers.get("To") == "<urn:service:test.sos>"
    assert out.marked.call_id.startswith("urn:emergency:uid:callid:")


def test_other_traffic_passes_untouched():
    req = parse_message(invite("sip:+16175550199@carrier.example"))
    out = make_bcf().process(req, "203.0.113.9", 0.0)
    assert out.request is req and out.marked is None and out.source_id == "ip-203.0.113.9"


# --- protection ------------------------------------------------------------------------------


def test_over_the_rate_limit_emergency_is_deprioritized_other_gets_503():
    bcf = make_bcf(rate=RateLimit(per_second=1, burst=2))
    outs = [bcf.process(parse_message(invite("urn:service:sos")), "192.0.2.5", 0.0) for _ in range(3)]
    assert [o.action for o in outs] == [Action.ALLOW, Action.ALLOW, Action.DEPRIORITIZE]
    assert outs[2].request is not None and outs[2].request.headers.get("Resource-Priority") == "esnet.0"
    other = bcf.process(parse_message(invite("sip:+16175550199@x.example")), "192.0.2.5", 0.0)
    assert other.action is Action.REJECT and other.request is None
    assert other.response.status == 503 and other.response.headers.get("Retry-After") == "30"
    # A second later the bucket has a token again.
    assert bcf.process(parse_message(invite("urn:service:sos")), "192.0.2.5", 1.0).action is Action.ALLOW


def test_rate_tracker_is_bounded():
    tracker = RateTracker(RateLimit(1, 1), max_sources=100)
    for i in range(1000):
        tracker.hit(f"spoofed-{i}", 0.0)
    assert len(tracker) == 100


def test_bad_actor_report_diverts_emergency_calls_with_a_callback_record():
    bcf = make_bcf(bad_actor_hold=60)
    assert bcf.bad_actors.report({"sourceId": "nobody"}, 0.0)[0] == 433
    status, answer = bcf.bad_actors.report({"sourceId": "carrier-b", "callId": "urn:emergency:uid:callid:x:y"}, 0.0)
    assert status == 201 and answer["sourceId"] == "carrier-b"
    out = bcf.process(parse_message(invite("urn:service:sos")), "198.51.100.7", 10.0)
    assert out.action is Action.DIVERT and out.request is not None
    assert out.callback.callback == "sip:+16175550100@carrier-a.example"
    assert out.callback.call_id == out.marked.call_id and out.callback.source_id == "carrier-b"
    # The hold runs out.
    assert bcf.process(parse_message(invite("urn:service:sos")), "198.51.100.7", 61.0).action is Action.ALLOW


def test_rules_as_data_round_trip_and_reject_never_applies_to_emergency_calls():
    rules = BcfRules.from_dicts(
        [
            {"id": "block-b", "action": "reject", "sources": ["carrier-b"], "reason": "misbehaving trunk"},
            {"id": "slow-lab", "action": "deprioritize", "networks": ["192.0.2.128/25"], "kinds": ["test"]},
        ],
        version=7,
    )
    assert BcfRules.from_dicts(rules.to_dicts(), version=7) == rules
    bcf = make_bcf(rules=rules)
    emergency = bcf.process(parse_message(invite("urn:service:sos")), "198.51.100.7", 0.0)
    assert emergency.action is Action.DIVERT and emergency.verdict.rule_id == "block-b"
    assert "never rejected" in emergency.verdict.notes[0] and emergency.callback is not None
    other = bcf.process(parse_message(invite("sip:+16175550199@x.example")), "198.51.100.7", 0.0)
    assert other.action is Action.REJECT
    test_call = bcf.process(parse_message(invite("urn:service:test.sos")), "192.0.2.200", 0.0)
    assert test_call.action is Action.DEPRIORITIZE
    assert bcf.set_rules(BcfRules()) is rules  # the old set comes back, for a rollback


def test_rule_errors_name_the_rule_and_member():
    with pytest.raises(RuleError) as info:
        BcfRules.from_dicts([
            {"id": "a", "action": "drop"},
            {"id": "b", "action": "allow", "networks": ["not-a-net"], "kinds": ["sos"], "colour": "red"},
            {"id": "a", "action": "allow"},
            "nonsense",
        ])  # fmt: skip
    problems = info.value.problems
    assert "rule 'a': action: must be one of allow, deprioritize, divert, reject" in problems
    assert "rule 'b': colour: unknown member" in problems
    assert "rule 'b': networks: 'not-a-net' is not an address or CIDR network" in problems
    assert any(p.startswith("rule 'b': kinds: 'sos'") for p in problems)
    assert "rules[3]: must be an object" in problems


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(list(CallKind)),
    action=st.sampled_from(list(Action)),
    within_rate=st.booleans(),
    bad=st.booleans(),
)
def test_an_emergency_call_is_never_rejected(kind, action, within_rate, bad):
    rules = BcfRules.from_dicts([{"id": "r", "action": action.value}])
    verdict = decide(kind, "INVITE", "s", "192.0.2.1", within_rate=within_rate, bad_actor=bad, rules=rules)
    if kind is not CallKind.OTHER:
        assert verdict.action is not Action.REJECT
    else:
        assert verdict.action is (Action.REJECT if (bad or not within_rate or action is Action.REJECT) else verdict.action)


# --- the BadActor interface over HTTP --------------------------------------------------------


async def test_bad_actors_over_http():
    bcf = make_bcf()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(create_bcf_app(bcf), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            unknown = await http.post(f"{base}/BadActors", json={"sourceId": "carrier-z"})
            known = await http.post(f"{base}/BadActors", json={"sourceId": "carrier-a", "badActorRequestId": "r1"})
            garbage = await http.post(f"{base}/BadActors", content=b"{not json")
            empty = await http.post(f"{base}/BadActors", json={})
    finally:
        server.should_exit = True
        await task
        sock.close()
    assert unknown.status_code == 433 and "carrier-z" in unknown.json()["detail"]
    assert unknown.headers["content-type"].startswith("application/problem+json")
    assert known.status_code == 201 and known.json()["badActorRequestId"] == "r1"
    assert garbage.status_code == 400 and "not JSON" in garbage.json()["detail"]
    assert empty.status_code == 400 and "sourceId" in empty.json()["detail"]
    assert bcf.bad_actors.reports[-1].source_id == "carrier-a"
