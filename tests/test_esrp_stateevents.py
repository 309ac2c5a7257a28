"""i3 state notifications of the BCF + ESRP element over SIP (firebox.esrp.stateevents).

SIPp is the peer on the other end: a monitor subscribing to the element's
``emergency-ElementState`` (tests/sipp/state_subscriber_uac.xml), and a PSAP queue that is
the ``emergency-QueueState`` notifier the element subscribes to
(tests/sipp/state_queue_notifier_uas.xml). The queue saying it is Full must send the next
call to the alternate. Every wait is bounded; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from firebox.bcf.core import Bcf
from firebox.esrp.states import ElementStateValue, QueueStateValue
from firebox.sip import parse_message
from test_esrp_sip import (  # the SIP test kit of the demo-state tests
    SIPP_DIR,
    WAIT,
    EmergencyCore,
    Net,
    cleanup,  # noqa: F401 -- fixture
    core_address,
    demo,  # noqa: F401 -- fixture
    endpoint,
    finish_sipp,
    free_port_pair,
    invite,
    make_router,
    no_event_loop_errors,  # noqa: F401 -- fixture
    presence,
    sipp_command,
    sipp_uas,
    start_sipp,
    town_point,
)


async def state_core(node, net: Net, default, subscribe_to=()) -> EmergencyCore:
    core = EmergencyCore(
        Bcf("bcf.demo.firebox.test", sources={"127.0.0.0/8": "carrier-a"}),
        make_router(node, default),
        host="127.0.0.1",
        port=0,
        transports=("udp",),
        resolve=net.resolve,
        element_id="esrp.demo.firebox.test",
        subscribe_to=subscribe_to,
    )
    await core.start()
    return core


async def until(predicate, what: str, timeout: float = 4 * WAIT) -> None:
    """Wait (bounded) for ``predicate``: SIPp's start-up on a busy machine takes a while."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_monitor_subscribes_to_the_element_state_and_hears_it_change(demo, tmp_path, cleanup):
    state, node = demo
    down = await endpoint("503")
    cleanup.append(down)
    net = Net(default_port=down.port, gateway_port=down.port)
    core = await state_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)
    events = core.state_events
    assert events is not None
    command = sipp_command(
        ["-sf", str(SIPP_DIR / "state_subscriber_uac.xml"), "-s", "esrp", f"127.0.0.1:{core.port}"],
        tmp_path, free_port_pair(), "udp",
    )  # fmt: skip
    monitor = await start_sipp(command, tmp_path)
    await until(lambda: events.counts.get("subscriptions_started", 0) == 1, "the subscription")
    events.set_element_state(ElementStateValue.GOING_DOWN, "maintenance window")
    code, diag = await finish_sipp(monitor, tmp_path, "monitor")
    assert code == 0, diag
    assert events.counts.get("subscriptions_ended") == 1
    assert len(events.notifiers["emergency-ElementState"]) == 0


async def test_an_unknown_event_package_is_refused_with_the_ones_served(demo, cleanup):
    state, node = demo
    down, monitor = await endpoint("503"), await endpoint("answer")
    cleanup += [down, monitor]
    net = Net(default_port=down.port, gateway_port=down.port)
    core = await state_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)
    subscribe = (
        f"SUBSCRIBE sip:esrp@127.0.0.1:{core.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{monitor.port};branch=z9hG4bK-sub-presence\r\n"
        f"From: <sip:monitor@127.0.0.1>;tag=m1\r\nTo: <sip:esrp@127.0.0.1>\r\nCall-ID: sub-presence\r\n"
        f"CSeq: 1 SUBSCRIBE\r\nContact: <sip:monitor@127.0.0.1:{monitor.port}>\r\nEvent: presence\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    assert monitor.server is not None
    monitor.server.send(parse_message(subscribe.encode()), core_address(core))
    answer = await monitor.wait_status(lambda r: r.cseq[1] == "SUBSCRIBE")
    assert answer.status == 489
    allowed = {e.strip() for line in answer.headers.get_lines("Allow-Events") for e in line.split(",")}
    assert allowed == {"emergency-ElementState", "emergency-ServiceState", "emergency-QueueState"}


async def test_the_element_follows_a_psap_queue_and_routes_around_it_when_full(demo, tmp_path, cleanup):
    """The element subscribes to the town PSAP's queue (SIPp); the queue NOTIFYs Full; the
    next call located in that town goes straight to the PSAP's alternate. On shutdown the
    element unsubscribes (the SIPp scenario checks the Expires: 0 SUBSCRIBE)."""
    state, node = demo
    point, psap_uri = town_point(state, 0)
    alternate_uri = state.psap(state.psap(next(p.id for p in state.psaps if p.uri == psap_uri)).alternates[0]).uri
    queue, queue_port = await sipp_uas("state_queue_notifier_uas.xml", tmp_path, "udp")
    alternate, down, caller = await endpoint("answer"), await endpoint("503"), await endpoint("answer")
    cleanup += [alternate, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = queue_port
    net.ports[alternate_uri] = alternate.port
    core = await state_core(node, net, town_point(state, 3)[0], subscribe_to=[psap_uri])
    events = core.state_events
    assert events is not None
    try:
        await until(lambda: events.counts.get("notify_applied", 0) >= 1, "the queue's NOTIFY")
        held = core.router.states.queue(psap_uri, datetime.now(UTC))
        assert held is not None and held.state is QueueStateValue.FULL and held.queue_length == 4
        assert caller.server is not None
        caller.server.send(invite(caller.port, "full-1", presence(point), "cid:loc@carrier.example"), core_address(core))
        got = await alternate.wait_for("INVITE")
        assert got.headers.get_all("Route")[0] == f"<{alternate_uri};lr>"
        await caller.wait_status(lambda r: r.status == 200)
        record = core.records["full-1"]
        assert [uri for uri, _, _ in record.forwards] == [alternate_uri]  # the full queue was not tried
    finally:
        await core.close()
    code, diag = await finish_sipp(queue, tmp_path, "queue")
    assert code == 0, diag
