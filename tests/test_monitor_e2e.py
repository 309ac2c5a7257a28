"""The monitor end to end on 127.0.0.1: the demo's node as ``firebox.node`` composes it (BCF +
ESRP, ECRF in-process, PSAP agents, Logging Service, Policy Store) with the Monitor probing
every PSAP through the BCF (urn:service:test.sos), tapping the ESRP's i3 log events, and
notifying a real webhook receiver (uvicorn) and a real SMTP server (aiosmtpd).

* A PSAP goes silent: its test calls are answered by its alternate; the detector declares
  that PSAP's outage with the cause, the webhook and the mailbox get it; the PSAP answers
  again and the outage clears.
* A firewall in front of the BCF (a UDP relay, the 2024 Massachusetts cause) answers every
  INVITE 403: statewide outage within seconds, from the probes; cleared when it lets calls
  through again.

Every wait is bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import json
import socket
from pathlib import Path

import pytest
import uvicorn
from aiosmtpd.controller import Controller
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from firebox.deployment import load_deployment
from firebox.monitor.detector import OutageScope, OutageState
from firebox.monitor.notify import NotifyConfig
from firebox.monitor.probes import Ingress
from firebox.monitor.routing import OutageRouting
from firebox.monitor.service import Monitor, config_from_node
from firebox.monitor.watch import Scope
from firebox.node import build_node, start_sip, stop_sip, write_demo
from firebox.psap.ua import AgentMode
from firebox.sim.carrier import CallPlan, Carrier, LocationMode, Outcome
from firebox.sim.faults import FirewallRelay


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until(predicate, what: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def set_mode(agents, psap_id: str, mode: AgentMode) -> None:
    """Make one simulated PSAP answer, go busy or go silent while running (its Queue is
    frozen: replaced in the agent core's lookups)."""
    core = agents.core
    old = core.queues[psap_id]
    new = dataclasses.replace(old, mode=mode)
    core.queues[psap_id] = new
    for table in (core._by_queue_uri, core._by_line):
        for key, queue in list(table.items()):
            if queue is old:
                table[key] = new


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
async def receivers():
    """A webhook receiver (uvicorn) and an SMTP server (aiosmtpd) on 127.0.0.1."""
    hooks: list[dict] = []

    async def hook(request: Request) -> JSONResponse:
        hooks.append(await request.json())
        return JSONResponse({"ok": True})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/hook", hook, methods=["POST"])]), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))  # fmt: skip
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, "the webhook receiver")
    mailbox = Mailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        yield f"http://127.0.0.1:{port}/hook", hooks, ("127.0.0.1", smtp_port), mailbox
    finally:
        controller.stop()
        server.should_exit = True
        await task


@pytest.fixture
async def node(tmp_path: Path):
    port = free_port()
    path, state = write_demo(tmp_path, seed=911, n_towns=40, listen=f"127.0.0.1:{port}",
                             sip_listen="127.0.0.1:0", console=Console(quiet=True))  # fmt: skip
    node = build_node(load_deployment(path), console=Console(quiet=True))
    (app,) = node.apps.values()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, "the HTTP server")
    http = await start_sip(node)
    try:
        yield node, state
    finally:
        await stop_sip(node)
        if http is not None:
            await http.aclose()
        server.should_exit = True
        await task
        node.policy_store.close()


def regions_of(node) -> dict[str, str]:
    ids = [p.id for p in node.deployment.psaps]
    return {pid: ("west" if i < len(ids) // 2 else "east") for i, pid in enumerate(ids)}


def notify(hook_url: str, smtp) -> NotifyConfig:
    return NotifyConfig(webhooks=(hook_url,), emails=("state-911-office@example.test",), smtp=smtp,
                        contact={"name": "NOC", "phone": "+1 617 555 0100", "email": "noc@example.test"},
                        backoff=0.1)  # fmt: skip


async def test_a_silent_psap_is_declared_notified_and_cleared(node, receivers):
    node, state = node
    hook_url, hooks, smtp, mailbox = receivers
    config = config_from_node(node, regions=regions_of(node), probe_period=1.0, probe_answer_timeout=3.0, tick=0.25,
                              notify=notify(hook_url, smtp))  # fmt: skip
    assert len(config.targets) == len(node.deployment.psaps) >= 3
    monitor = Monitor(config)
    node.core.call_log.sender = monitor.tap(node.core.call_log.sender)  # node.start_monitor's wiring, in small
    routing = OutageRouting(node.core.router.states, config.psaps, config.regions)
    monitor.listeners.append(routing)
    await monitor.start()
    victim = next(p for p in state.psaps if p.alternates)
    victim_town = next(t for t in state.towns if t.psap_id == victim.id).geometry.point_on_surface()

    async def live_call() -> tuple[Outcome, list[str], list[str]]:
        """One 911 call from the victim's town: its outcome, the ESRP's forwards and log."""
        carrier = Carrier(("127.0.0.1", node.core.port, "udp"), domain="live.carrier.test", answer_timeout=20.0)
        await carrier.start()
        try:
            before = set(node.core.records)
            result = await carrier.call(CallPlan("tel:+12005550102", victim_town.x, victim_town.y, LocationMode.VALUE,
                                                 hold=0.05))  # fmt: skip
        finally:
            await carrier.close()
        (record,) = [r for cid, r in node.core.records.items() if cid not in before and cid.endswith("@live.carrier.test")]
        return result.outcome, [uri for uri, _, _ in record.forwards], record.events

    try:
        # a live 911 call is seen by the watch from the ESRP's log events
        carrier = Carrier(("127.0.0.1", node.core.port, "udp"))
        await carrier.start()
        try:
            town = next(t for t in state.towns if t.psap_id == victim.id).geometry.point_on_surface()
            result = await carrier.call(CallPlan("tel:+12005550101", town.x, town.y, LocationMode.VALUE, hold=0.05))
        finally:
            await carrier.close()
        assert result.outcome is Outcome.ANSWERED
        await until(lambda: monitor.watch.figures(monitor.clock()).get(Scope.PSAP, victim.id).answered == 1,
                    "the live call counted as answered at its PSAP")  # fmt: skip
        # every PSAP answers its test calls: no outage
        await until(lambda: all(monitor.probe_counts[(i.name, t.psap_id, "answered")] >= 2
                                for i in config.ingresses for t in config.targets), "two good probe rounds")  # fmt: skip
        assert not monitor.detector.outages()
        assert monitor.watch.test_calls > 0 and monitor.watch.figures(monitor.clock()).get(Scope.STATEWIDE).entered == 1

        set_mode(node.agents, victim.id, AgentMode.SILENT)
        key = (OutageScope.PSAP, victim.id)
        await until(lambda: key in monitor.detector.open and monitor.detector.open[key].state is OutageState.CONFIRMED,
                    "the silent PSAP's outage confirmed")  # fmt: skip
        outage = monitor.detector.open[key]
        assert f"test calls for PSAP {victim.id} answered by" in outage.cause
        assert not [o for o in monitor.detector.outages() if o.scope is OutageScope.STATEWIDE]
        # Routing follows the detector at once: a new call from the victim's town is not
        # offered to the silent PSAP (no no-answer timeout to wait out) but to its alternate.
        assert routing.marked[outage.id] == [victim.uri]
        outcome, forwards, _ = await live_call()
        assert outcome is Outcome.ANSWERED
        assert victim.uri not in forwards and forwards[0] == node.deployment.psap(victim.alternates[0]).uri, forwards

        set_mode(node.agents, victim.id, AgentMode.ANSWER)
        await until(lambda: key not in monitor.detector.open, "the outage cleared after recovery")
        cleared = monitor.detector.recent[-1]
        assert cleared.id == outage.id and cleared.state is OutageState.CLEARED and cleared.ended > cleared.started
        # ... and back: the PSAP has its calls again.
        assert outage.id not in routing.marked and not node.core.router.states.outage_marks()
        outcome, forwards, _ = await live_call()
        assert outcome is Outcome.ANSWERED and forwards[0] == victim.uri
        await until(lambda: any(h["outage_id"] == outage.id and h["event"] == "cleared" for h in hooks),
                    "the final notification received")  # fmt: skip
    finally:
        await monitor.stop()
    events = [h for h in hooks if h["outage_id"] == outage.id]
    assert [h["notification"] for h in events][0] == "initial" and events[-1]["notification"] == "final"
    assert {"confirmed", "cleared"} <= {h["event"] for h in events}
    first = events[0]
    for member in ("start", "time_zone", "scope", "area", "cause", "calls_affected", "impact", "contact",
                   "services_affected", "notifying_provider"):  # fmt: skip
        assert first[member] is not None, member
    assert first["scope"] == "psap" and first["area"] == victim.id
    mails = [m for m in mailbox.messages if outage.id in m["Subject"] or outage.id in m.as_string()]
    assert mails, [m["Subject"] for m in mailbox.messages]
    assert mails[0]["To"] == "state-911-office@example.test" and "Cause: test calls for PSAP" in mails[0].as_string()
    assert all(d.ok for d in monitor.notifier.deliveries)


async def test_a_firewall_rejecting_every_invite_is_a_statewide_outage_found_by_the_probes(node, receivers):
    node, _state = node
    hook_url, hooks, smtp, _mailbox = receivers
    firewall = FirewallRelay(("127.0.0.1", node.core.port))
    port = await firewall.start()
    config = config_from_node(node, regions=regions_of(node), probe_period=1.0, probe_answer_timeout=3.0, tick=0.25,
                              notify=notify(hook_url, smtp))  # fmt: skip
    config.ingresses = [Ingress("carrier-edge", "127.0.0.1", port)]
    monitor = Monitor(config)
    await monitor.start()
    loop = asyncio.get_running_loop()
    try:
        await until(lambda: sum(n for (_i, _p, o), n in monitor.probe_counts.items() if o == "answered")
                    >= len(config.targets), "a good round through the firewall")  # fmt: skip
        assert not monitor.detector.outages()
        monitor.config_change("bcf-rules-42")
        firewall.blocking = True
        blocked_at = loop.time()
        key = (OutageScope.STATEWIDE, "all")
        await until(lambda: key in monitor.detector.open and monitor.detector.open[key].state is OutageState.CONFIRMED,
                    "the statewide outage confirmed", timeout=15)  # fmt: skip
        detected_in = loop.time() - blocked_at
        outage = monitor.detector.open[key]
        assert "failing probes with SIP 403 Forbidden at ingress carrier-edge, before any PSAP" in outage.cause
        assert "since configuration change bcf-rules-42" in outage.cause
        firewall.blocking = False
        await until(lambda: key not in monitor.detector.open, "the statewide outage cleared")
        await until(lambda: any(h["outage_id"] == outage.id and h["event"] == "cleared" for h in hooks),
                    "the final notification received")  # fmt: skip
    finally:
        await monitor.stop()
        firewall.close()
    statewide = [h for h in hooks if h["outage_id"] == outage.id]
    assert statewide[0]["scope"] == "statewide" and statewide[0]["config_change"] == "bcf-rules-42"
    print(f"statewide outage confirmed {detected_in:.2f} s after the firewall began rejecting")
    print(json.dumps(statewide[0], indent=1)[:400])
