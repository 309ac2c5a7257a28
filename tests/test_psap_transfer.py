"""Transfer end to end: a carrier's call through BCF + ESRP rings at its PSAP; the call-taker
answers and transfers it to another PSAP; the transfer INVITE goes back through the ESRP,
which routes it to the named queue (not back home by the caller's location); the other
PSAP's call-taker answers it with the caller's location and i3 ids; the first call-taker
leaves and the caller stays connected to the second. Every wait is bounded."""

from __future__ import annotations

import asyncio

from firebox.psap.api import CallStatus

from test_psap_element import until


async def test_a_call_taker_transfers_a_call_through_the_esrp_to_another_psap(tmp_path):
    import yaml
    from rich.console import Console

    from firebox.deployment import load_deployment, parse_deployment
    from firebox.node import build_node, start_sip, stop_sip, write_demo
    from firebox.sim.carrier import CallPlan, Carrier, LocationMode, Outcome

    path, state = write_demo(tmp_path, seed=911, n_towns=40, listen="127.0.0.1:7070", console=Console(quiet=True),
                             call_handling=True)  # fmt: skip
    data = load_deployment(path).model_dump(mode="json", exclude_none=True)
    data["elements"]["bcf"].update(listen="127.0.0.1:0", transports=["udp"])
    data["elements"].pop("log_events", None)
    data["elements"].pop("monitor", None)  # its test calls are not what this test is about
    for follower in ("status_page", "alerting"):  # they show the monitor's outages
        data["elements"].pop(follower, None)
    home, other = state.psaps[1], state.psaps[2]
    for psap in (home, other):  # only the people's desks: nobody simulated answers first
        section = data["elements"]["call_handling"]["psaps"][psap.id]
        section["positions"] = [p for p in section["positions"] if p["id"].endswith("-desk")]
    dep = parse_deployment(yaml.safe_dump(data), base=path)
    node = build_node(dep, console=Console(quiet=True))
    http = await start_sip(node)
    carrier = Carrier(("127.0.0.1", node.core.port, "udp"))
    await carrier.start()
    ch = node.call_handling
    try:
        ch.sign_in(f"{home.id}-desk", "alice")
        ch.sign_in(f"{other.id}-desk", "bob")
        # Both queues were Inactive (nobody signed in) and say so over QueueState; wait until
        # the ESRP has heard them turn Active, or it would route around them.
        from datetime import UTC, datetime

        states = node.core.router.states
        for psap in (home, other):
            await until(lambda psap=psap: states.queue_state_name(psap.uri, datetime.now(UTC)) == "Active" or None,
                        f"the ESRP hearing {psap.id}'s queue Active")  # fmt: skip
        town = next(t for t in state.towns if t.psap_id == home.id)
        p = town.geometry.point_on_surface()
        placed = asyncio.create_task(
            carrier.call(CallPlan("tel:+12005550188", p.x, p.y, LocationMode.VALUE, hold=6.0))
        )
        (ringing,) = await until(lambda: ch.calls(home.id), "the call ringing at its home PSAP")
        answered = ch.answer(f"{home.id}-desk", "alice", ringing.call_id)
        assert answered.status is CallStatus.CONNECTED
        await until(lambda: ch.call(answered.call_id).media.get("local_port"), "the call's RTP endpoint open")

        view = ch.transfer(f"{home.id}-desk", "alice", answered.call_id, other.id)
        assert (view.transfer_target, view.transfer_status) == (other.id, "trying")
        # The ESRP routed the transfer to the other PSAP's queue, where it rings.
        (offered,) = await until(lambda: ch.calls(other.id), "the transfer ringing at the other PSAP")
        # The same i3 call (its view id made unique within this element, which holds both legs).
        assert offered.call_id.startswith(answered.call_id)
        assert offered.incident_id == answered.incident_id
        assert offered.location is not None and abs(offered.location.lat - p.y) < 1e-3
        assert offered.callback == "+12005550188"
        ch.answer(f"{other.id}-desk", "bob", offered.call_id)
        await until(lambda: ch.call(answered.call_id).transfer_status == "connected" or None, "the transfer connected")

        # Alice leaves; the caller stays with Bob until the caller hangs up.
        left = ch.release(f"{home.id}-desk", "alice", answered.call_id)
        assert left.status is CallStatus.TRANSFERRED
        result = await asyncio.wait_for(placed, 30)
        assert result.outcome is Outcome.ANSWERED and result.ended_by == "carrier", result
        assert node.core.stats["answered"] >= 2  # the caller's call and the transfer
    finally:
        await carrier.close()
        await stop_sip(node)
        await http.aclose()
