"""A finished call leaves no reference cycle behind in the ESRP element: once its
transactions are over, reference counting frees everything it held, so that the serving
process can leave full garbage collections (a pause of hundreds of milliseconds under load,
see BENCHMARKS.md) out of the call path. Real UDP on 127.0.0.1; the transaction timers
(Timer L/J, 32 s) are fired by hand instead of waited for."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

from test_esrp_sip import (  # the SIP test kit of the demo-state tests
    Net,
    cleanup,  # noqa: F401 -- fixture
    core_address,
    demo,  # noqa: F401 -- fixture
    endpoint,
    invite,
    make_core,
    no_event_loop_errors,  # noqa: F401 -- fixture
    presence,
    town_point,
)

PER_CALL = {"_Call", "_ServerEntry", "ProxyCall", "_Branch", "Request", "Response", "CallRecord", "Headers"}


async def test_finished_calls_are_freed_without_the_garbage_collector(demo, cleanup):
    state, node = demo
    point, psap_uri = town_point(state, 12)
    psap, busy, caller = await endpoint("answer"), await endpoint("503"), await endpoint("answer")
    cleanup += [psap, busy, caller]
    net = Net(default_port=busy.port, gateway_port=busy.port)
    net.ports[psap_uri] = psap.port
    core = await make_core(node, net, town_point(state, 3)[0])
    cleanup.append(core)
    assert caller.server is not None
    calls = 40
    gc.collect()
    gc.disable()
    try:
        for i in range(calls):
            caller.server.send(invite(caller.port, f"mem-{i}", presence(point), "cid:loc@carrier.example"),
                               core_address(core))  # fmt: skip
        for _ in range(500):  # bounded wait for every answer
            if core.stats["answered"] == calls:
                break
            await asyncio.sleep(0.01)
        assert core.stats["answered"] == calls
        # Fire the transactions' remaining timers (Timer L of the server side, M of the
        # client side, after a 2xx) now instead of in 32 s.
        for _ in range(20):
            server = list(core._stx_timers.items())
            client = [(call, name, handle) for call in {id(c): c for c in core._branches.values()}.values()
                      for name, handle in list(call.timers.items())]  # fmt: skip
            if not server and not client:
                break
            for (key, name), handle in server:
                handle.cancel()
                core._stx_timer(key, name)
            for call, name, handle in client:
                handle.cancel()
                core._proxy_timer(call, name)
        assert not core._servers and not core._branches
        core.records.clear()  # the kept records are what the element means to keep
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        leaked = Counter(type(o).__name__ for o in gc.garbage if type(o).__name__ in PER_CALL)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not leaked, leaked
