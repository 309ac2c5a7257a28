"""The ``node-loss`` outage replay, shortened (issue 8): node B of a two-node cluster (a
``firebox serve`` child process, the carrier's first ingress route) is SIGKILLed under a
10x surge, with calls up through it, and started again. On the real PostgreSQL (a scratch
database) and NATS JetStream of this machine; real SIP and HTTP on 127.0.0.1; every wait
bounded. The fault kills B while a call of its own rings through it. Asserts: no call lost
(that one included), B's loss detected within 10 s by node A, calls carried
through A within 2 s of that, no other outage declared, every call up through B at the kill
released (through A), and B back in the cluster after the heal. Calls in setup through B at
the kill (100/180 heard, no 200) are placed again on A's route once B leaves the carrier's
OPTIONS pings unanswered (``firebox.sim.carrier``, ``stats.replaced_after_provisional``)."""

from __future__ import annotations

from pathlib import Path

from pg_kit import pg_url  # noqa: F401 -- a fixture

from firebox.sim.report import render_html
from firebox.sim.scenario import (
    DETECT_WITHIN,
    REROUTE_WITHIN,
    ScenarioConfig,
    run_scenario,
)


async def test_node_loss(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    cfg = ScenarioConfig("node-loss", speed=20.0, surge=10.0, warmup=3.0, fault_for=8.0, tail=3.0, work_dir=tmp_path,
                         database=pg_url)  # fmt: skip
    result = (await run_scenario(cfg)).as_dict()
    assert "node-loss" in render_html(result)
    counts, figures = result["counts"], result["fault_figures"]
    assert result["offered"] >= 20, result["offered"]
    assert sum(counts.values()) == result["offered"]
    assert counts["lost"] == 0, (result["lost_calls"], figures["setting_up_calls"])
    assert result["detect_s"] is not None and result["detect_s"] <= DETECT_WITHIN, (result["detect_s"], result["updates"])
    assert result["detected_outage"]["scope"] == "element", result["detected_outage"]
    assert result["reroute_s"] is not None and result["reroute_s"] <= REROUTE_WITHIN, result["reroute_raw_s"]
    assert not result["spurious_outages"], result["spurious_outages"]
    # Calls were up through B when it died, and each was released (B was gone: through A).
    assert figures["up_at_kill"] > 0, figures
    assert figures["up_at_kill_released"] == figures["up_at_kill"], figures["up_at_kill_not_released"]
    # The fault's own call was ringing through B at the kill: it must still be connected.
    assert figures["ringing_call"]["ringing_at_kill"], figures["ringing_call"]
    assert figures["ringing_call"]["connected"], figures["ringing_call"]
    # Every call in setup through B at the kill was placed again (through A) and answered.
    assert figures["setting_up_at_kill_answered"] == figures["setting_up_at_kill"], figures["setting_up_calls"]
    # The carrier moved on to node A; after the heal B is back and carries calls again.
    assert counts["intended"] + counts["alternate"] == result["offered"], counts
    assert any(r["route"] == "carrier-edge-b" for r in result["calls"])
    assert figures["restarted_at"] is not None, (figures["restart_error"], figures["node_b_log"])
    assert figures["node_b_starts"] == 2
    assert result["passed"], result["criteria"]
