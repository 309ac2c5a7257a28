"""Overload control in the BCF + ESRP element (RFC 7339, firebox.sip.overload wired into
EmergencyCore): bounded places, an explicit 503 with Retry-After and a callback record when
full, waiting calls routed as places free, feedback in the Via. Real UDP on 127.0.0.1."""

from __future__ import annotations

from firebox.bcf.core import Bcf
from firebox.sip.overload import OverloadGuard, parse_oc
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


async def guarded_core(node, net: Net, default, guard: OverloadGuard) -> EmergencyCore:
    core = EmergencyCore(
        Bcf("bcf.demo.firebox.test", sources={"127.0.0.0/8": "carrier-a"}),
        make_router(node, default),
        host="127.0.0.1",
        port=0,
        transports=("udp",),
        resolve=net.resolve,
        overload=guard,
    )
    await core.start()
    return core


def cancel_of(sent) -> bytes:
    return (
        f"CANCEL urn:service:sos SIP/2.0\r\nVia: {sent.headers.get('Via')}\r\n"
        f"From: {sent.headers.get('From')}\r\nTo: <urn:service:sos>\r\nCall-ID: {sent.call_id}\r\n"
        "CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def test_full_element_answers_503_keeps_a_callback_and_routes_the_waiting_call_later(demo, cleanup):
    """One place in flight and one waiting place for emergency calls: the first call rings
    at its PSAP, the second waits, the third is answered 503 with Retry-After and leaves a
    callback record. When the first caller gives up, the waiting call is routed."""
    state, node = demo
    point, psap_uri = town_point(state, 14)
    ringing, down = await endpoint("ring"), await endpoint("503")
    callers = [await endpoint("answer") for _ in range(3)]
    cleanup += [ringing, down, *callers]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = ringing.port
    guard = OverloadGuard(capacity=1, queue_limit=0, emergency_reserve=1, retry_after=7)
    core = await guarded_core(node, net, town_point(state, 3)[0], guard)
    cleanup.append(core)
    sent = []
    for i, caller in enumerate(callers):
        assert caller.server is not None
        request = invite(caller.port, f"oc-{i}", presence(point), "cid:loc@carrier.example")
        sent.append(request)
        caller.server.send(request, core_address(core))
        if i == 0:
            await callers[0].wait_status(lambda r: r.status == 180)
        else:
            await caller.wait_status(lambda r: r.status == 100)

    busy = await callers[2].wait_status(lambda r: r.status >= 200)
    assert busy.status == 503 and busy.headers.get("Retry-After") == "7"
    assert ";tag=" in (busy.headers.get("To") or "")
    (callback,) = core.callbacks
    assert callback.call_id == "oc-2" and callback.caller == f"sip:+16035550100@127.0.0.1:{callers[2].port}"
    assert core.records["oc-2"].outcome == "overloaded"
    assert core.stats["overload_rejected"] == 1 and core.stats["overload_queued"] == 1
    assert guard.in_flight == 1 and guard.queued_ids == ["oc-1"]
    assert [r.call_id for r, _ in ringing.requests] == ["oc-0"]  # the waiting call is not routed yet

    # the first caller hangs up before answer: its place goes to the waiting call
    assert callers[0].server is not None
    callers[0].server.send(cancel_of(sent[0]), core_address(core))
    final = await callers[0].wait_status(lambda r: r.status >= 200 and r.cseq[1] == "INVITE")
    assert final.status == 487
    got = await ringing.wait_for("INVITE")
    while got.call_id != "oc-1":
        got = await ringing.wait_for("INVITE")
    await callers[1].wait_status(lambda r: r.status == 180)
    assert guard.in_flight == 1 and guard.queued == 0
    assert any("a place freed; routed" in line for line in core.records["oc-1"].events)


async def test_a_waiting_call_cancelled_ends_with_487_and_frees_its_place(demo, cleanup):
    state, node = demo
    point, psap_uri = town_point(state, 14)
    ringing, down = await endpoint("ring"), await endpoint("503")
    first, second = await endpoint("answer"), await endpoint("answer")
    cleanup += [ringing, down, first, second]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = ringing.port
    guard = OverloadGuard(capacity=1, queue_limit=1)
    core = await guarded_core(node, net, town_point(state, 3)[0], guard)
    cleanup.append(core)
    assert first.server is not None and second.server is not None
    first.server.send(invite(first.port, "w-0", presence(point), "cid:loc@carrier.example"), core_address(core))
    await first.wait_status(lambda r: r.status == 180)
    waiting = invite(second.port, "w-1", presence(point), "cid:loc@carrier.example")
    second.server.send(waiting, core_address(core))
    await second.wait_status(lambda r: r.status == 100)
    assert guard.queued_ids == ["w-1"]
    second.server.send(cancel_of(waiting), core_address(core))
    await second.wait_status(lambda r: r.status == 200 and r.cseq[1] == "CANCEL")
    final = await second.wait_status(lambda r: r.status >= 200 and r.cseq[1] == "INVITE")
    assert final.status == 487
    assert guard.queued == 0 and guard.in_flight == 1
    assert core.records["w-1"].outcome == "cancelled"
    assert [r.call_id for r, _ in ringing.requests] == ["w-0"]


async def test_feedback_goes_to_a_client_that_announced_support(demo, cleanup):
    """RFC 7339 section 5: a client puts ``oc`` in its Via; the element's responses carry
    ``oc``, ``oc-algo``, ``oc-validity`` and ``oc-seq`` in that Via."""
    state, node = demo
    point, psap_uri = town_point(state, 14)
    psap, down, caller = await endpoint("answer"), await endpoint("503"), await endpoint("answer")
    cleanup += [psap, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = psap.port
    core = await guarded_core(node, net, town_point(state, 3)[0], OverloadGuard(capacity=10, queue_limit=5))
    cleanup.append(core)
    request = invite(caller.port, "oc-feedback", presence(point), "cid:loc@carrier.example")
    request.headers.set("Via", request.headers.get("Via") + ";oc")
    assert caller.server is not None
    caller.server.send(request, core_address(core))
    ok = await caller.wait_status(lambda r: r.status == 200)
    oc = parse_oc(ok.headers.get("Via"))
    assert oc.loss == 0 and oc.validity_ms is not None and oc.seq
    assert core.overload is not None and core.overload.in_flight == 0
