"""A call the BCF diverts goes to the announcement-and-callback service first, with the
normal route behind it; the policy's notify actions reach their SIP targets as MESSAGE.
Real UDP on 127.0.0.1 through EmergencyCore (see test_esrp_sip for the kit)."""

from __future__ import annotations

import asyncio
import json

from firebox.bcf.core import Bcf
from firebox.esrp.policy import RuleSet
from test_esrp_sip import (  # the SIP test kit of the demo-state tests
    EmergencyCore,
    Net,
    cleanup,  # noqa: F401 -- fixture
    core_address,
    demo,  # noqa: F401 -- fixture
    endpoint,
    invite,
    make_router,
    no_event_loop_errors,  # noqa: F401 -- fixture
    presence,
    town_point,
)

ANNOUNCEMENT = "sip:divert@media.demo.firebox.test"
SUPERVISOR = "sip:supervisor@ops.demo.firebox.test"


async def core_with(node, net: Net, default, **kwargs) -> EmergencyCore:
    rules = kwargs.pop("rules", None)
    router = make_router(node, default)
    if rules is not None:
        router.rules = rules
    core = EmergencyCore(
        Bcf("bcf.demo.firebox.test", sources={"127.0.0.0/8": "carrier-a"}),
        router,
        host="127.0.0.1",
        port=0,
        transports=("udp",),
        resolve=net.resolve,
        **kwargs,
    )
    await core.start()
    return core


async def test_a_diverted_call_reaches_the_announcement_service_and_keeps_its_callback(demo, cleanup):
    state, node = demo
    point, psap_uri = town_point(state, 20)
    media, psap, down, caller = (await endpoint("answer"), await endpoint("answer"),
                                 await endpoint("503"), await endpoint("answer"))  # fmt: skip
    cleanup += [media, psap, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[ANNOUNCEMENT] = media.port
    net.ports[psap_uri] = psap.port
    core = await core_with(node, net, town_point(state, 3)[0], divert_to=ANNOUNCEMENT)
    cleanup.append(core)
    core.bcf.bad_actors.is_bad = lambda source_id, now: True  # type: ignore[method-assign]
    assert caller.server is not None
    caller.server.send(invite(caller.port, "divert-a", presence(point), "cid:loc@carrier.example"), core_address(core))
    got = await media.wait_for("INVITE")
    assert got.uri == "urn:service:sos"
    assert got.headers.get_all("Route")[0] == f"<{ANNOUNCEMENT};lr>"
    await caller.wait_status(lambda r: r.status == 200)
    assert not psap.requests
    assert core.stats["diverted"] == 1 and len(core.callbacks) == 1
    assert core.records["divert-a"].target == ANNOUNCEMENT


async def test_when_the_announcement_service_fails_the_diverted_call_takes_the_normal_route(demo, cleanup):
    state, node = demo
    point, psap_uri = town_point(state, 20)
    media, psap, down, caller = (await endpoint("503"), await endpoint("answer"),
                                 await endpoint("503"), await endpoint("answer"))  # fmt: skip
    cleanup += [media, psap, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[ANNOUNCEMENT] = media.port
    net.ports[psap_uri] = psap.port
    core = await core_with(node, net, town_point(state, 3)[0], divert_to=ANNOUNCEMENT)
    cleanup.append(core)
    core.bcf.bad_actors.is_bad = lambda source_id, now: True  # type: ignore[method-assign]
    assert caller.server is not None
    caller.server.send(invite(caller.port, "divert-b", presence(point), "cid:loc@carrier.example"), core_address(core))
    await psap.wait_for("INVITE")
    await caller.wait_status(lambda r: r.status == 200)
    record = core.records["divert-b"]
    assert [uri for uri, _, _ in record.forwards] == [ANNOUNCEMENT, psap_uri]
    assert record.target == psap_uri


async def test_a_policy_notify_action_reaches_its_sip_target_as_a_message(demo, cleanup):
    state, node = demo
    point, psap_uri = town_point(state, 9)
    supervisor, psap, down, caller = (await endpoint("answer"), await endpoint("answer"),
                                      await endpoint("503"), await endpoint("answer"))  # fmt: skip
    cleanup += [supervisor, psap, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = psap.port
    net.ports[SUPERVISOR] = supervisor.port
    rules = RuleSet.from_dicts([
        {"id": "tell-ops", "priority": 10, "conditions": [{"type": "call_type", "media": ["voice"]}],
         "actions": [{"type": "notify", "target": SUPERVISOR, "reason": "watch list"},
                     {"type": "notify", "target": "ops.demo.firebox.test", "reason": "element id"}]},
    ])  # fmt: skip
    core = await core_with(node, net, town_point(state, 3)[0], rules=rules)
    cleanup.append(core)
    assert caller.server is not None
    caller.server.send(invite(caller.port, "notify-1", presence(point), "cid:loc@carrier.example"), core_address(core))
    message = await supervisor.wait_for("MESSAGE")
    await caller.wait_status(lambda r: r.status == 200)
    body = json.loads(message.body)
    assert body["ruleId"] == "tell-ops" and body["reason"] == "watch list"
    assert body["callIdSip"] == "notify-1" and body["destination"] == psap_uri
    assert body["callId"].startswith("urn:emergency:uid:callid:")
    assert body["incidentId"].startswith("urn:emergency:uid:incidentid:")
    assert message.headers.get("Content-Type") == "application/json"
    for _ in range(250):  # the 200 to the MESSAGE comes back (bounded wait)
        if core.notified["sent"]:
            break
        await asyncio.sleep(0.02)
    assert core.notified["sent"] == 1 and core.notified["unsendable"] == 1
