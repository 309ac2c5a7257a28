"""An ESRP's routing rules and a BCF's rules kept in step with the Policy Store
(NENA-STA-010.3 sections 4.9, 4.2.1, 4.1): the store runs under uvicorn on 127.0.0.1, the
BCF + ESRP element (EmergencyCore on the demo state) on real UDP sockets. A PUT of a new rule
version changes where the next call goes while a call already ringing is undisturbed and
completes; a version the element cannot use, and a store that is down, leave the last good
rules in place."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from test_esrp_sip import (  # the SIP test kit of the demo-state tests
    SDP,
    WAIT,
    Net,
    cleanup,  # noqa: F401 -- the fixture
    core_address,
    demo,  # noqa: F401 -- the fixture
    endpoint,
    invite,
    make_core,
    no_event_loop_errors,  # noqa: F401 -- the autouse fixture
    presence,
    town_point,
)

from firebox.bcf.core import Bcf
from firebox.policy.app import PolicyService
from firebox.policy.store import open_store
from firebox.policy.testing import Signer, body, esrp_route_rule, policy
from firebox.policy.watch import watch_bcf, watch_esrp
from firebox.sip import make_response

OWNER = "psap.example.net"
SIGNER = Signer("ed448", cn=OWNER)
#: the owner's other signing certificate, from a CA the store trusts and the BCF does not
OTHER = Signer("ed25519", cn=OWNER)
QUEUE_A = "sip:queue@a.policy.example"
QUEUE_B = "sip:queue@b.policy.example"


class Served:
    """The Policy Store under uvicorn in a thread; ``stop()`` takes it down."""

    def __init__(self, tmp_path) -> None:
        self.store = open_store(f"sqlite:///{tmp_path}/policies.db")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        app = PolicyService(self.store, trust=[SIGNER.ca, OTHER.ca]).app()
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        for _ in range(1000):
            if self.server.started:
                break
            self.thread.join(0.01)
        assert self.server.started

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(10)
            self.sock.close()


@pytest.fixture
def served(tmp_path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.stop()
    s.store.close()


async def store_policy(url: str, payload: dict, version: int | None = None, signer: Signer = SIGNER) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        if version is None:
            reply = await http.post("/Policies", content=body(signer, payload))
        else:
            reply = await http.put(f"/Policies/{payload['policyId']}", content=body(signer, payload),
                                   headers={"If-Match": f'"v{version}"'})  # fmt: skip
        assert reply.status_code in (200, 201), reply.text


async def until(predicate, what: str) -> None:
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(loop(), WAIT)
    except TimeoutError:
        raise AssertionError(f"not within {WAIT} s: {what}") from None


async def test_a_new_rule_version_routes_the_next_call_and_spares_the_ringing_one(demo, served, cleanup):  # noqa: F811
    state, node = demo
    point, _ = town_point(state, 0)
    psap_a, psap_b, default, caller = (await endpoint("ring"), await endpoint("answer"),
                                       await endpoint("503"), await endpoint("answer"))  # fmt: skip
    cleanup += [psap_a, psap_b, default, caller]
    net = Net(default_port=default.port, gateway_port=default.port)
    net.ports[QUEUE_A], net.ports[QUEUE_B] = psap_a.port, psap_b.port
    core = await make_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)
    own_rules = core.router.rules

    await store_policy(served.url, policy("origination", [esrp_route_rule("to-a", QUEUE_A)]))
    watch = watch_esrp(core.router, served.url, "origination", trust=[SIGNER.ca], interval=0.05, timeout=0.5)
    assert await watch.poll_once() and watch.version == 1
    v1_rules = core.router.rules
    assert v1_rules is not own_rules and [r.id for r in v1_rules] == ["to-a"]
    watch.start()
    try:
        # call 1 rings at A
        assert caller.server is not None
        caller.server.send(invite(caller.port, "call-1", presence(point), "cid:loc@carrier.example"), core_address(core))
        ringing = await psap_a.wait_for("INVITE")
        await caller.wait_status(lambda r: r.status == 180 and r.call_id == "call-1")

        # the owner stores version 2: everything to B
        await store_policy(served.url, policy("origination", [esrp_route_rule("to-b", QUEUE_B)]), version=1)
        await until(lambda: watch.version == 2, "version 2 installed")
        assert [r.id for r in core.router.rules] == ["to-b"]

        # call 2 goes to B and is answered there
        caller.server.send(invite(caller.port, "call-2", presence(point), "cid:loc@carrier.example"), core_address(core))
        assert (await psap_b.wait_for("INVITE")).call_id == "call-2"
        await caller.wait_status(lambda r: r.status == 200 and r.call_id == "call-2")

        # A answers call 1 now: it was never cancelled nor moved
        (source,) = [s for r, s in psap_a.requests if r.call_id == "call-1" and r.method == "INVITE"]
        assert psap_a.server is not None
        contact = [("Contact", f"<sip:psap@127.0.0.1:{psap_a.port}>"), ("Content-Type", "application/sdp")]
        psap_a.server.reply(make_response(ringing, 200, to_tag="ring-tag", headers=contact, body=SDP), source)
        await caller.wait_status(lambda r: r.status == 200 and r.call_id == "call-1")
        assert [r.method for r, _ in psap_a.requests] == ["INVITE"]
        assert not [r for r, _ in psap_b.requests if r.call_id == "call-1"]
        record = core.records["call-1"]
        assert record.outcome == "answered" and record.target == QUEUE_A

        # version 3 names a PSAP this element does not have: refused, version 2 stays
        bad = {"id": "to-nowhere", "priority": 1, "actions": [{"type": "route", "psap": "nowhere"}]}
        await store_policy(served.url, policy("origination", [bad]), version=2)
        await until(lambda: watch.last_error is not None, "version 3 refused")
        assert "nowhere" in watch.last_error and watch.version == 2  # type: ignore[operator]
        v2_rules = core.router.rules
        assert [r.id for r in v2_rules] == ["to-b"]

        # the store goes down: the rules stay, and calls still go to B
        served.stop()
        await until(lambda: "unreachable" in (watch.last_error or ""), "store down noticed")
        assert core.router.rules is v2_rules
        caller.server.send(invite(caller.port, "call-3", presence(point), "cid:loc@carrier.example"), core_address(core))
        assert (await psap_b.wait_for("INVITE")).call_id == "call-3"
        await caller.wait_status(lambda r: r.status == 200 and r.call_id == "call-3")
        assert not default.requests
    finally:
        await watch.stop()


async def test_bcf_rules_follow_the_store(served):
    bcf = Bcf("bcf.example.net", sources={"192.0.2.0/24": "carrier-x"})
    rules = [{"id": "noisy", "action": "deprioritize", "sources": ["carrier-x"]}]
    await store_policy(served.url, policy("bcf", rules, policy_type="BcfRules"))
    watch = watch_bcf(bcf, served.url, "bcf", trust=[SIGNER.ca], owner=OWNER, interval=0.05, timeout=0.5)
    assert await watch.poll_once()
    assert bcf.rules.to_dicts() == rules and bcf.rules.version == 1
    assert not await watch.poll_once()  # unchanged: a 304
    # a version signed under a CA the BCF does not trust is refused; the first rules stay
    await store_policy(served.url, policy("bcf", [], policy_type="BcfRules"), 1, signer=OTHER)
    assert not await watch.poll_once() and "x5c" in (watch.last_error or "")
    assert bcf.rules.version == 1
    # so is an ESRP policy under the BCF's policy id
    await store_policy(served.url, policy("esrp", [esrp_route_rule("r", QUEUE_A)]))
    wrong = watch_bcf(bcf, served.url, "esrp", trust=[SIGNER.ca], timeout=0.5)
    assert not await wrong.poll_once() and "policyType" in (wrong.last_error or "")
    # a good version 3 is installed; then the store is down and nothing changes
    fixed = [{"id": "quiet", "action": "allow", "sources": ["carrier-x"]}]
    await store_policy(served.url, policy("bcf", fixed, policy_type="BcfRules"), 2)
    assert await watch.poll_once() and bcf.rules.version == 3 and bcf.rules.to_dicts() == fixed
    served.stop()
    installed = bcf.rules
    assert not await watch.poll_once() and "unreachable" in (watch.last_error or "")
    assert bcf.rules is installed


async def test_a_deleted_or_expired_policy_gives_the_element_its_own_rules_back(served):
    """Deleted (the store answers 404) or expired (its policyExpirationTime passed, even with
    the store down): the element's own rules again, logged and announced; a later version is
    installed as usual. A store that merely fails keeps the last good rules."""
    from datetime import UTC, datetime, timedelta

    from firebox.policy.testing import delete_body

    bcf = Bcf("bcf.example.net", sources={"192.0.2.0/24": "carrier-x"})
    own = bcf.rules
    announced = []
    now = [datetime.now(UTC)]
    watch = watch_bcf(bcf, served.url, "bcf", trust=[SIGNER.ca], owner=OWNER, timeout=0.5,
                      on_change=announced.append, clock=lambda: now[0])  # fmt: skip
    rules = [{"id": "noisy", "action": "deprioritize", "sources": ["carrier-x"]}]
    await store_policy(served.url, policy("bcf", rules, policy_type="BcfRules"))
    assert await watch.poll_once() and bcf.rules.to_dicts() == rules
    # Deleted by its owner: the BCF's own rules, announced.
    async with httpx.AsyncClient(base_url=served.url) as http:
        reply = await http.request("DELETE", "/Policies/bcf", content=delete_body(SIGNER, "bcf", 1, owner=OWNER))
        assert reply.status_code == 200, reply.text
    assert await watch.poll_once() and bcf.rules is own and watch.version is None
    assert [(c.kind, c.version) for c in announced] == [("installed", 1), ("reverted", 1)]
    assert "deleted or expired" in announced[-1].reason
    assert not await watch.poll_once() and bcf.rules is own  # nothing more to revert
    # Stored again, expiring in an hour: installed; then the store goes down and the hour
    # passes: the policy is no longer valid, so the BCF's own rules again.
    later = policy("bcf", rules, policy_type="BcfRules", expires=now[0] + timedelta(hours=1))
    async with httpx.AsyncClient(base_url=served.url) as http:
        assert (await http.post("/Policies", content=body(SIGNER, later))).status_code == 201
    assert await watch.poll_once() and bcf.rules.to_dicts() == rules and watch.version == 2
    served.stop()
    assert not await watch.poll_once() and bcf.rules.version == 2  # a store down changes nothing
    now[0] += timedelta(hours=1, seconds=1)
    assert await watch.poll_once() and bcf.rules is own
    assert [(c.kind, c.version) for c in announced][-2:] == [("installed", 2), ("reverted", 2)]
    assert "expired" in announced[-1].reason
