"""The ESRP's callback worklist (issue 6): every emergency call that could not be connected is
kept with its number, location, time and where it was tried, and goes onto the callback list
of the PSAP that should have had it once that PSAP is reachable.

Sans-I/O: the worklist and its delivery to a real call-handling core. End to end: the demo's
node on 127.0.0.1 with a PSAP and its alternates silent (a cut fiber); a caller who gives up
while the ESRP is still failing over is on the worklist for that PSAP; test calls are not."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from rich.console import Console

from firebox.deployment import load_deployment
from firebox.esrp.worklist import Worklist, WorklistReason, WorklistState, deliver_due
from firebox.node import build_node, start_sip, stop_sip, write_demo
from firebox.psap.api import LocationView
from firebox.sim.carrier import CallPlan, Carrier, LocationMode, Outcome
from test_psap_callhandling import core as ch_core

T0 = 1_781_800_000.0


class CoreTaker:
    """The call-handling core behind the element's ``add_callback`` (time given)."""

    def __init__(self) -> None:
        self.core = ch_core()
        self.now = T0

    def add_callback(self, psap_id, call_id, callback, location, at, reason, tried=()):  # noqa: ANN001, ANN201
        entry, _ = self.core.add_callback(psap_id, call_id, callback, location, at, reason, tried, self.now)
        return entry


def test_entries_wait_for_their_psap_then_land_on_its_callback_list_once() -> None:
    wl = Worklist()
    where = LocationView("point", 42.37, -71.11)
    a = wl.add("c1@x", WorklistReason.FAILED, T0, callback="+16175550101", location=where, owner="north",
               tried=["sip:north@psap.test", "sip:+16175550100@pstn.test;user=phone"], detail="final 503")  # fmt: skip
    again = wl.add("c1@x", WorklistReason.ABANDONED, T0 + 1, callback="+16175550101", location=where, owner="north",
                   tried=["sip:south@psap.test"])  # fmt: skip
    assert again is a and a.reason is WorklistReason.FAILED and a.tried[-1] == "sip:south@psap.test"
    wl.add("c2@x", WorklistReason.ABANDONED, T0 + 2, callback=None, location=None, owner=None)
    wl.add("c3@x", WorklistReason.BUSY, T0 + 3, callback="+16175550103", location=None, owner="elsewhere")
    assert wl.figures()["by_reason"] == {"failed": 1, "abandoned before alerting": 1, "busy": 1, "error": 0}

    taker = CoreTaker()
    up = {"north": False}
    assert deliver_due(wl, lambda p: up.get(p, False), {"north": taker}, T0 + 5) == []  # still down: kept
    assert [e.call_id for e in wl.pending()] == ["c1@x", "c2@x", "c3@x"]
    up["north"] = True
    (sent,) = deliver_due(wl, lambda p: up.get(p, False), {"north": taker}, T0 + 9)
    assert sent.call_id == "c1@x" and sent.state is WorklistState.DELIVERED and sent.delivered_to == "north"
    (on_list,) = taker.core.callbacks("north")
    assert (on_list.call_id, on_list.callback, on_list.reason) == ("c1@x", "+16175550101", "failed")
    assert on_list.location == where and on_list.tried == tuple(a.tried)
    # delivered once; the ownerless and the other system's entries stay pending and listed
    assert deliver_due(wl, lambda p: True, {"north": taker}, T0 + 10) == []
    assert {e.call_id for e in wl.pending()} == {"c2@x", "c3@x"}
    assert wl.get("c1@x").as_dict()["delivered_at"].startswith("2026-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_caller_who_gives_up_during_failover_is_on_the_worklist(tmp_path: Path) -> None:
    probe_state = write_demo(tmp_path / "probe", seed=911, n_towns=40, listen="127.0.0.1:0", sip_listen="127.0.0.1:0",
                             console=Console(quiet=True))[1]  # fmt: skip
    victim = next(p for p in probe_state.psaps if p.alternates)
    faults = {pid: "silent" for pid in (victim.id, *victim.alternates)}
    path, state = write_demo(tmp_path / "run", seed=911, n_towns=40, listen=f"127.0.0.1:{free_port()}",
                             sip_listen="127.0.0.1:0", faults=faults, console=Console(quiet=True))  # fmt: skip
    node = build_node(load_deployment(path), console=Console(quiet=True))
    http = await start_sip(node)
    try:
        town = next(t for t in state.towns if t.psap_id == victim.id).geometry.point_on_surface()
        carrier = Carrier(("127.0.0.1", node.core.port, "udp"), answer_timeout=0.8)
        await carrier.start()
        try:
            result = await carrier.call(CallPlan("tel:+12005550177", town.x, town.y, LocationMode.VALUE, hold=0.05))
            test = await carrier.call(CallPlan("tel:+12005550178", town.x, town.y, LocationMode.VALUE, hold=0.05,
                                               request_uri="urn:service:test.sos"))  # fmt: skip
        finally:
            await carrier.close()
        assert result.outcome is Outcome.NO_ANSWER and test.outcome is Outcome.NO_ANSWER
        for _ in range(100):
            if node.core.worklist.entries():
                break
            await asyncio.sleep(0.05)
        (entry,) = node.core.worklist.entries()  # the test call is not a call to call back
        assert entry.reason is WorklistReason.ABANDONED and entry.owner == victim.id
        assert entry.callback == "+12005550177"
        assert entry.tried[0] == victim.uri
        lon, lat = entry.lon_lat
        assert abs(lon - town.x) < 1e-6 and abs(lat - town.y) < 1e-6
        assert entry.state is WorklistState.PENDING  # no call handling for a simulated PSAP: kept, listed
        assert any(f"callback worklist {entry.id}" in line for line in node.core.records[entry.call_id].events)
    finally:
        await stop_sip(node)
        if http is not None:
            await http.aclose()
        if node.policy_store is not None:
            node.policy_store.close()
