"""SIP across nodes (issue 8): two BCF+ESRP elements on 127.0.0.1 share one cluster name,
Record-Route with it, and the user agents resolve it by RFC 3263 (firebox.sip.resolve) from
the cluster's static SRV table. A call set up through node A is still released, either way,
through node B once A's transport is closed; a new call placed while A is dead reaches the
PSAP through B by the carrier's failover. Real UDP; every wait bounded; no timing asserted."""

from __future__ import annotations

import asyncio

from firebox.bcf.core import Bcf
from firebox.psap.ua import CallState, PsapAgents, Queue
from firebox.sim.carrier import CallPlan, Carrier, Outcome
from firebox.sip.resolve import SipResolver, StaticRecords
from test_esrp_sip import (  # the SIP test kit of the demo-state tests
    EmergencyCore,
    Net,
    demo,  # noqa: F401 -- fixture
    make_router,
    no_event_loop_errors,  # noqa: F401 -- fixture
    town_point,
)

CLUSTER = "core.example.net"
WAIT = 10.0  # bound of every single wait (seconds)
FAILOVER = 0.3  # how long a user agent waits on a silent node before the next one


class Cluster:
    """Node A (priority 10, tried first) and node B (priority 20), one PSAP agent, one
    carrier; each user agent with its own resolver over the cluster's SRV table."""

    def __init__(self, state, node) -> None:
        self.state, self.node = state, node
        point, self.psap_uri = town_point(state, 14)
        town = state.towns[14].geometry.point_on_surface()
        self.plan = CallPlan("tel:+16035550142", town.x, town.y, hold=WAIT * 3)
        self.default = point
        self.psap_id = state.psap(state.towns[14].psap_id).id
        self.cores: list[EmergencyCore] = []
        self.psap: PsapAgents | None = None
        self.carrier: Carrier | None = None

    async def start(self) -> None:
        net = Net(default_port=9, gateway_port=9)
        for _ in range(2):
            core = EmergencyCore(
                Bcf("bcf.demo.firebox.test", sources={"127.0.0.0/8": "carrier-a"}),
                make_router(self.node, self.default),
                host="127.0.0.1", port=0, transports=("udp",), resolve=net.resolve,
                cluster_name=CLUSTER, cluster_aliases=("sip.example.net",),
            )  # fmt: skip
            await core.start()
            self.cores.append(core)
        nodes = [
            {"id": "node-a", "sip": f"127.0.0.1:{self.cores[0].port}", "priority": 10, "weight": 50},
            {"id": "node-b", "sip": f"127.0.0.1:{self.cores[1].port}", "priority": 20, "weight": 50},
        ]
        records = StaticRecords.for_cluster(CLUSTER, nodes, transports=("udp",))
        self.psap = PsapAgents(
            [Queue(self.psap_id, self.psap_uri)], resolver=SipResolver(records, transports=("udp",)),
            failover_seconds=FAILOVER,
        )  # fmt: skip
        await self.psap.start()
        net.ports[self.psap_uri] = self.psap.port
        self.carrier = Carrier(
            ("127.0.0.1", self.cores[0].port, "udp"), resolver=SipResolver(records, transports=("udp",)),
            ingress_uri=f"sip:{CLUSTER}", failover_seconds=FAILOVER, answer_timeout=WAIT, bye_timeout=WAIT,
        )  # fmt: skip
        await self.carrier.start()

    async def kill(self, index: int) -> None:
        """The node is gone: its transport closed, nothing answers on its port."""
        await self.cores[index].close()

    async def close(self) -> None:
        for thing in [self.carrier, self.psap, *self.cores]:
            if thing is not None:
                await thing.close()

    async def confirmed(self) -> None:
        assert self.psap is not None
        async with asyncio.timeout(WAIT):
            while not any(c.state is CallState.CONFIRMED for c in self.psap.core.calls.values()):
                await asyncio.sleep(0.02)


async def run(demo, body) -> None:
    state, node = demo
    cluster = Cluster(state, node)
    try:
        await cluster.start()
        await body(cluster)
    finally:
        await cluster.close()


async def test_the_psap_releases_a_call_through_node_b_after_node_a_died(demo):
    async def body(c: Cluster) -> None:
        assert c.carrier is not None and c.psap is not None
        call = asyncio.ensure_future(c.carrier.call(c.plan))
        await c.confirmed()
        a, b = c.cores
        assert a.stats["calls_in"] == 1 and b.stats["calls_in"] == 0
        (invite_call,) = c.psap.core.calls.values()
        assert invite_call.dialog.route_set == (f"<sip:{CLUSTER};lr>",)  # the name, not node A
        await c.kill(0)
        c.psap.hang_up_all()
        result = await asyncio.wait_for(call, WAIT)
        assert result.outcome is Outcome.ANSWERED and result.ended_by == "psap"
        assert c.psap.core.stats["bye_failovers"] == 1
        assert b.stats["in_dialog_forwarded"] >= 1
        async with asyncio.timeout(WAIT):  # the 200 to the BYE came back through B
            while c.psap.counts[c.psap_id].ended == 0:
                await asyncio.sleep(0.02)
        assert c.psap.counts[c.psap_id].ended_by_psap == 1

    await run(demo, body)


async def test_the_carrier_releases_a_call_through_node_b_after_node_a_died(demo):
    async def body(c: Cluster) -> None:
        assert c.carrier is not None and c.psap is not None
        call = asyncio.ensure_future(c.carrier.call(c.plan))
        await c.confirmed()
        await c.kill(0)
        c.carrier.hang_up_all()
        result = await asyncio.wait_for(call, WAIT)
        assert result.outcome is Outcome.ANSWERED and result.ended_by == "carrier"
        assert c.carrier.stats.failovers == 1
        assert c.cores[1].stats["in_dialog_forwarded"] >= 1
        counts = c.psap.counts[c.psap_id]
        assert counts.ended == 1 and counts.ended_by_psap == 0

    await run(demo, body)


async def test_a_new_call_with_node_a_dead_goes_through_node_b(demo):
    async def body(c: Cluster) -> None:
        assert c.carrier is not None and c.psap is not None
        await c.kill(0)
        plan = CallPlan(c.plan.identity, c.plan.lon, c.plan.lat, hold=0.2)
        result = await asyncio.wait_for(c.carrier.call(plan), WAIT * 2)
        assert result.outcome is Outcome.ANSWERED and result.status == 200
        assert c.carrier.stats.failovers >= 1
        assert c.cores[1].stats["calls_in"] == 1 and c.cores[1].stats["answered"] == 1
        assert c.psap.counts[c.psap_id].answered == 1
        # the carrier remembers node A failed: its BYE went straight to B
        assert c.carrier.stats.failovers == 1

    await run(demo, body)


def test_the_cluster_name_and_aliases_are_ours_on_any_port():
    core = EmergencyCore(
        Bcf("bcf.test"), None, host="127.0.0.1", port=5070, resolve=lambda uri: None,  # type: ignore[arg-type]
        cluster_name="Core.Example.NET.", cluster_aliases=["sip.example.net"], element_id="esrp.test",
    )  # fmt: skip
    assert core.record_route_uri == "sip:core.example.net"
    assert core.node_uri == "sip:127.0.0.1:5070"
    assert core._is_ours("<sip:core.example.net;lr>") and core._is_ours("sip:sip.example.net:5062;lr")
    assert core._is_ours("sip:127.0.0.1:5070") and not core._is_ours("sip:127.0.0.1:5071")
    assert not core._is_ours("sip:other.example.net;lr")
