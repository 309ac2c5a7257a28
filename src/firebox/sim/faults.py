"""The faults of the outage replays (issue 6, "Outage replays"), each acting from the outside
of the running node where it can, as the real cause did:

* ``ma-2024-firewall``: a rule in a firewall in front of the BCF answers every INVITE 403
  (Massachusetts, June 2024). The firewall is a UDP relay (``FirewallRelay``) that is one of
  the carrier's two ingress routes; the other reaches the BCF directly.
* ``counter-2014``: the identifier counter of the call path runs out (the April 2014
  multistate outage: a router's call counter passed its limit and calls were refused).
  firebox allocates ids in one place on the call path, the BCF's emergency Call-ID
  (``firebox.bcf.marking.mark`` through ``Bcf._call_id``); the fault swaps that factory for
  a counter that is exhausted (raises ``OverflowError``), the one hook reaching inside. The
  BCF marks with its fallback allocator and raises a ``call-id`` element condition, which
  the detector declares (scope element, key ``<bcf> call-id``).
* ``config-push-2020``: a bad routing policy is promoted (a vendor's push, September 2020):
  published straight into the Policy Store as policy ``demo-routing``, bypassing any check,
  sending every call to one PSAP. Healed by publishing a version without the bad rule.
* ``fiber-cut-2024``: one PSAP and its first alternate become unreachable (packets to them
  dropped: their simulated agents go silent).
* ``tdos``: a flood of calls from bad sources (127.0.0.2 and up: Linux routes 127/8 to lo)
  at 20 times the legitimate rate. The BCF's aggregate view flags the attack (a ``tdos``
  condition, declared by the detector as an outage of kind ``attack``) and sends the
  unvetted sources' calls to the screening answer; the figures say how many flood calls
  reached a PSAP before and after the flag.
* ``psap-evacuation``: a PSAP goes out of service on purpose: its queue Disabled ("by
  management action", NENA-STA-010.3 section 10.17) and its ServiceState Down, in the state
  table the ESRP reads and to the monitor.
* ``node-loss``: node B of a two-node cluster, a ``firebox serve`` child process the
  carrier's first ingress route goes to, is killed with SIGKILL under load (calls in progress
  through it included) and started again from the same files (``firebox.sim.peer``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from firebox.sip.message import Request as SipRequest
from firebox.sip.message import Response as SipResponse
from firebox.sip.message import make_response, parse_message, serialize

if TYPE_CHECKING:
    from firebox.sim.scenario import CallRow, Harness

__all__ = ["FAULTS", "ROUTE_A", "ROUTE_B", "Fault", "FirewallRelay", "fault"]

#: The carrier's two ingress routes: through the firewall, and straight to the BCF.
ROUTE_A = "carrier-edge-a"
ROUTE_B = "carrier-edge-b"

log = logging.getLogger(__name__)


class FirewallRelay(asyncio.DatagramProtocol):
    """A UDP relay in front of the BCF: passes SIP both ways (by Call-ID) or, when
    ``blocking``, answers every new INVITE 403 itself, as a firewall rule would. Other
    requests (OPTIONS pings) still pass: the rule was about INVITEs."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.blocking = False
        self.blocked = 0
        self.clients: dict[str, tuple[str, int]] = {}
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.front, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        relay = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                try:
                    call_id = parse_message(data).call_id
                except Exception:  # noqa: BLE001 -- not SIP: dropped, as a firewall would
                    return
                client = relay.clients.get(call_id)
                if client is not None and relay.front is not None:
                    relay.front.sendto(data, client)

        self.back, _ = await loop.create_datagram_endpoint(Back, local_addr=("127.0.0.1", 0))
        return int(self.front.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            message = parse_message(data)
        except Exception:  # noqa: BLE001
            return
        assert self.front is not None and self.back is not None
        if self.blocking and isinstance(message, SipRequest) and message.method in ("INVITE", "ACK"):
            if message.method == "INVITE":
                self.blocked += 1
                self.front.sendto(serialize(make_response(message, 403, to_tag="fw1")), addr)
            return  # the ACK of our 403 stops here
        self.clients[message.call_id] = addr
        if len(self.clients) > 50_000:  # bounded: the oldest half forgotten
            for key in list(itertools.islice(self.clients, 25_000)):
                del self.clients[key]
        self.back.sendto(data, self.upstream)

    def close(self) -> None:
        for t in (self.front, self.back):
            if t is not None:
                t.close()


@dataclass
class Fault(abc.ABC):
    """One fault: ``inject`` and ``heal`` act on the running node through the harness.
    ``affected(call)`` says whether a call's route goes through what failed;
    ``rerouted(call)`` whether an affected call was carried around it."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    #: Healed as soon as the outage is confirmed (the operator's rollback), not at the set time.
    heal_on_detect: ClassVar[bool] = False
    notes: list[str] = field(default_factory=list)
    #: When the fault's own routing change took effect (e.g. a rolled-back policy installed).
    rerouted_at: float | None = None
    #: Where the carrier's first ingress route (``ROUTE_A``) goes, if not to the firewall
    #: relay in front of the in-process node (``node-loss``: to node B).
    route_a: tuple[str, int] | None = None

    def sip_resolver(self) -> Any:
        """A new RFC 3263 resolver of the cluster's name for one carrier's in-dialog requests
        (in a cluster the ESRP Record-Routes with that name); None: one node, nothing to
        resolve."""
        return None

    async def prepare(self, cfg: Any, work: Path | None, deployment: Path) -> None:
        """Before the in-process node is built from ``deployment`` (``work`` is the run's
        own directory, None on a given deployment): a fault may rewrite the file."""

    async def start(self, node: Any, monitor: Any) -> None:
        """After the node's SIP elements started, before the monitor starts."""

    def call_done(self, call: CallRow, results: list[Any]) -> None:
        """A call of the load ended (``results``: the carrier's, one per route tried)."""

    async def close(self) -> None:
        """At the end of the run, before the node stops (never raises)."""

    @abc.abstractmethod
    async def inject(self, node: Any, harness: Harness) -> None: ...

    @abc.abstractmethod
    async def heal(self, node: Any, harness: Harness) -> None: ...

    def affected(self, call: CallRow) -> bool:
        return True

    def expected(self, outage: dict[str, Any]) -> bool:
        """Whether a confirmed outage is this fault's (others are reported as spurious)."""
        return True

    def rerouted(self, call: CallRow) -> bool:
        return call.category in ("alternate", "business_line")

    def figures(self) -> dict[str, Any]:
        return {}

    def criteria(self, rows: list[CallRow]) -> dict[str, bool]:
        """Criteria of this fault beyond the common ones (zero lost, detect, reroute, notify)."""
        return {}


@dataclass
class FirewallFault(Fault):
    name: ClassVar[str] = "ma-2024-firewall"
    title: ClassVar[str] = "a firewall rule in front of the BCF answers every INVITE 403"

    async def inject(self, node: Any, harness: Harness) -> None:
        harness.monitor.config_change("firewall-rule-2024")
        harness.firewall.blocking = True

    async def heal(self, node: Any, harness: Harness) -> None:
        harness.firewall.blocking = False

    def expected(self, outage: dict[str, Any]) -> bool:
        return outage["scope"] == "statewide" or (outage["scope"] == "element" and ROUTE_A in outage["key"])

    def rerouted(self, call: CallRow) -> bool:
        # carried by the carrier's other ingress route and answered
        return call.answered and call.route == ROUTE_B


class ExhaustedCounter:
    """A call-identifier factory over a counter with a ceiling, as the 2014 router had: ids
    ``start``, ``start + 1``, ... until ``limit``; past it every call raises ``OverflowError``."""

    def __init__(self, kind: str, start: int, limit: int) -> None:
        self.kind = kind
        self.next = start
        self.limit = limit
        self.refused = 0

    def __call__(self, fqdn: str) -> str:
        if self.next > self.limit:
            self.refused += 1
            raise OverflowError(f"{self.kind} counter exhausted at {self.limit}")
        value, self.next = self.next, self.next + 1
        return f"urn:emergency:uid:{self.kind}:{value:040d}:{fqdn}"


@dataclass
class CounterFault(Fault):
    name: ClassVar[str] = "counter-2014"
    title: ClassVar[str] = "the call path's identifier counter is exhausted"
    counter: ExhaustedCounter | None = None
    _saved: Callable[[str], str] | None = None

    async def inject(self, node: Any, harness: Harness) -> None:
        bcf = node.core.bcf
        # The one hook inside: the BCF has no public setter for its Call-ID factory (it is a
        # constructor argument); the counter starts at its ceiling, as in 2014.
        self._saved = bcf._call_id
        self.counter = ExhaustedCounter("callid", 40_000_000, 40_000_000)
        self.counter.next = self.counter.limit + 1
        bcf._call_id = self.counter

    async def heal(self, node: Any, harness: Harness) -> None:
        if self._saved is not None:
            node.core.bcf._call_id = self._saved

    def rerouted(self, call: CallRow) -> bool:
        return call.answered

    def expected(self, outage: dict[str, Any]) -> bool:
        return outage["scope"] == "element" and str(outage["key"]).endswith(" call-id")

    def figures(self) -> dict[str, Any]:
        return {"ids_refused": self.counter.refused if self.counter else 0}


def unsigned_policy(doc: dict[str, Any]) -> bytes:
    """The policy as a flattened JWS with ``alg: none`` (the demo's store accepts it), as a
    vendor's tool pushing straight into the store would send it."""
    from firebox import jws

    return json.dumps(jws.sign(doc, None, extra={"iat": time.time()})).encode()


@dataclass
class ConfigPushFault(Fault):
    name: ClassVar[str] = "config-push-2020"
    title: ClassVar[str] = "a bad routing policy is promoted straight into the Policy Store"
    heal_on_detect: ClassVar[bool] = True
    target_psap: str | None = None
    etag: str | None = None
    installed_at: float | None = None
    rolled_back_at: float | None = None

    async def _put(self, harness: Harness, rules: list[Any]) -> None:
        from firebox.policy.testing import policy

        doc = policy("demo-routing", rules, owner=harness.domain)
        headers = {"Content-Type": "application/json"}
        async with httpx.AsyncClient(timeout=5.0) as http:
            if self.etag is None:
                reply = await http.post(f"{harness.policy_url}/Policies", content=unsigned_policy(doc), headers=headers)
            else:
                reply = await http.put(f"{harness.policy_url}/Policies/demo-routing", content=unsigned_policy(doc),
                                       headers={**headers, "If-Match": self.etag})  # fmt: skip
        if reply.status_code not in (200, 201):
            raise RuntimeError(f"the Policy Store refused the policy: {reply.status_code} {reply.text[:200]}")
        self.etag = reply.headers.get("etag")

    async def inject(self, node: Any, harness: Harness) -> None:
        from firebox.policy.testing import esrp_route_rule

        # The push: one rule, copied from a test bench, sending every call to one PSAP.
        self.target_psap = harness.psap_ids[-1]
        await self._put(harness, [esrp_route_rule("all-calls-to-test-psap", harness.psaps[self.target_psap], 1)])
        harness.monitor.config_change("demo-routing (vendor push)")
        watch = next((w for w in node.watches if getattr(w, "policy_id", None) == "demo-routing"), None)
        if watch is not None:
            version = watch.version
            for _ in range(100):  # bounded: 10 s
                if watch.version != version:
                    break
                await asyncio.sleep(0.1)
        self.installed_at = time.time()

    async def heal(self, node: Any, harness: Harness) -> None:
        # Rollback: a version without the bad rule (nothing overrides the ECRF's answer).
        watch = next((w for w in node.watches if getattr(w, "policy_id", None) == "demo-routing"), None)
        version = watch.version if watch is not None else None
        await self._put(harness, [])
        self.rolled_back_at = time.time()
        if watch is not None:
            for _ in range(100):  # bounded: 10 s; the ESRP routes by the restored policy from here
                if watch.version != version:
                    self.rerouted_at = time.time()
                    break
                await asyncio.sleep(0.02)

    def affected(self, call: CallRow) -> bool:
        return call.psap_id != self.target_psap

    def rerouted(self, call: CallRow) -> bool:
        # after the rollback the call is answered where it belongs again
        return call.category == "intended"


def set_agent_mode(agents: Any, psap_id: str, mode: Any) -> None:
    """Make one simulated PSAP answer or go silent while running (its Queue is frozen:
    replaced in the agent core's lookups; as tests/test_monitor_e2e.py does)."""
    core = agents.core
    old = core.queues[psap_id]
    new = dataclasses.replace(old, mode=mode)
    core.queues[psap_id] = new
    for table in (core._by_queue_uri, core._by_line):
        for key, queue in list(table.items()):
            if queue is old:
                table[key] = new


@dataclass
class FiberCutFault(Fault):
    name: ClassVar[str] = "fiber-cut-2024"
    title: ClassVar[str] = "one PSAP and its alternate become unreachable"
    victims: list[str] = field(default_factory=list)

    async def inject(self, node: Any, harness: Harness) -> None:
        from firebox.psap.ua import AgentMode

        victim = harness.victim
        alternates = harness.alternates.get(victim, [])
        self.victims = [victim, *alternates[:1]]
        for pid in self.victims:
            set_agent_mode(node.agents, pid, AgentMode.SILENT)

    async def heal(self, node: Any, harness: Harness) -> None:
        from firebox.psap.ua import AgentMode

        for pid in self.victims:
            set_agent_mode(node.agents, pid, AgentMode.ANSWER)

    def affected(self, call: CallRow) -> bool:
        return call.psap_id in self.victims

    def expected(self, outage: dict[str, Any]) -> bool:
        return outage["scope"] in ("region", "statewide") or (outage["scope"] == "psap" and outage["key"] in self.victims)


@dataclass
class EvacuationFault(Fault):
    name: ClassVar[str] = "psap-evacuation"
    title: ClassVar[str] = "a PSAP goes to ServiceState Down on purpose (evacuation)"
    victim: str | None = None
    _restore: Callable[[], None] | None = None

    def _states(self, node: Any, harness: Harness, down: bool) -> None:
        from firebox.esrp.states import QueueState, QueueStateValue, ServiceName, ServiceState, ServiceStateValue

        assert self.victim is not None
        uri = harness.psaps[self.victim]
        now = datetime.now(UTC)
        queue = QueueState(uri, 0, 10, QueueStateValue.DISABLED if down else QueueStateValue.ACTIVE)
        service = ServiceState(ServiceName("PSAP"), f"{self.victim}.{harness.domain}",
                               ServiceStateValue("Down" if down else "Normal"), "evacuation" if down else "")  # fmt: skip
        for state in (queue, service):
            node.core.router.states.update(state, now)
            harness.monitor.state_of(state)

    async def inject(self, node: Any, harness: Harness) -> None:
        from firebox.esrp.states import QueueState, QueueStateValue

        self.victim = harness.victim
        core = node.agents.core if node.agents is not None else None
        if core is not None:
            # The PSAP's own QueueState notifier (the ESRP subscribes to it) must say Disabled
            # too, else its next NOTIFY (Active) overwrites the state in the ESRP's table.
            # The simulated agents have no "disabled by management" switch: this wraps their
            # queue_state for the victim's queue (a hook; see the report).
            original = core.queue_state
            uri = harness.psaps[self.victim]

            def queue_state(queue: Any) -> Any:
                state = original(queue)
                if queue.uri == uri:
                    return QueueState(state.queue_uri, state.queue_length, state.max_length, QueueStateValue.DISABLED)
                return state

            core.queue_state = queue_state
            self._restore = lambda: delattr(core, "queue_state")
        self._states(node, harness, down=True)

    async def heal(self, node: Any, harness: Harness) -> None:
        if self._restore is not None:
            self._restore()
            self._restore = None
        self._states(node, harness, down=False)

    def affected(self, call: CallRow) -> bool:
        return call.psap_id == self.victim

    def expected(self, outage: dict[str, Any]) -> bool:
        return outage["scope"] in ("region", "statewide") or (outage["scope"] == "psap" and outage["key"] == self.victim)


#: Bad sources of the flood: 127.0.0.2 .. 127.0.0.(1 + FLOOD_SOURCES).
FLOOD_SOURCES = 8
#: The flood's rate as a multiple of the legitimate rate (issue 6).
FLOOD_FACTOR = 20.0
#: Flood calls in progress at once, at most (the flood's own bound, not a defence).
FLOOD_MAX_CALLS = 400


#: A flood call placed this long after the BCF flagged the attack must not reach a PSAP.
FLAG_GRACE = 0.5


@dataclass
class TdosFault(Fault):
    name: ClassVar[str] = "tdos"
    title: ClassVar[str] = "a flood of calls from bad sources at 20 times the legitimate rate"
    sent: int = 0
    answered: int = 0
    refused: int = 0
    unanswered: int = 0
    skipped: int = 0
    #: Of the answered: by the BCF's screening answer, or by a PSAP (before / after the flag).
    screened: int = 0
    to_psap_before_flag: int = 0
    to_psap_after_flag: int = 0
    #: When the BCF flagged the attack (its monotonic clock, and epoch seconds).
    flagged_mono: float | None = None
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event | None = None
    _listener: Callable[[Any], None] | None = None
    _bcf: Any = None

    async def inject(self, node: Any, harness: Harness) -> None:
        self._bcf = node.core.bcf

        def on_condition(cond: Any) -> None:
            if cond.kind == "tdos" and cond.active and self.flagged_mono is None:
                self.flagged_mono = cond.since
                # The BCF steers suspect calls to screening from this step on.
                self.rerouted_at = time.time() - (time.monotonic() - cond.since)

        self._listener = on_condition
        self._bcf.tdos.listeners.append(on_condition)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._flood(harness), name="tdos-flood")

    async def heal(self, node: Any, harness: Harness) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), 15.0)
        if self._bcf is not None and self._listener in self._bcf.tdos.listeners:
            self._bcf.tdos.listeners.remove(self._listener)

    async def _flood(self, harness: Harness) -> None:
        from firebox.sim.carrier import CallPlan, Carrier, LocationMode, Outcome

        assert self._stop is not None
        carriers = [Carrier(("127.0.0.1", harness.bcf_port, "udp"), host=f"127.0.0.{2 + i}", domain=f"bad{i}.example",
                            answer_timeout=6.0, bye_timeout=2.0) for i in range(FLOOD_SOURCES)]  # fmt: skip
        for c in carriers:
            await c.start()
        rng = random.Random(2020)
        running: set[asyncio.Task[Any]] = set()

        async def one(carrier: Carrier, n: int) -> None:
            lon, lat = harness.random_point(rng)
            placed = time.monotonic()
            result = await carrier.call(CallPlan(f"tel:+1900555{n % 10_000:04d}", lon, lat, LocationMode.VALUE, hold=4.0))
            if result.outcome is Outcome.ANSWERED:
                self.answered += 1
                if "sip:screening@" in (result.contact or ""):
                    self.screened += 1
                elif self.flagged_mono is not None and placed >= self.flagged_mono + FLAG_GRACE:
                    self.to_psap_after_flag += 1
                else:
                    self.to_psap_before_flag += 1
            elif result.outcome is Outcome.FAILED:
                self.refused += 1
            else:
                self.unanswered += 1

        try:
            n = 0
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            while not self._stop.is_set():
                rate = max(0.1, FLOOD_FACTOR * harness.legit_rate())
                if len(running) >= FLOOD_MAX_CALLS:
                    self.skipped += 1
                else:
                    n += 1
                    self.sent += 1
                    task = asyncio.create_task(one(carriers[n % len(carriers)], n))
                    running.add(task)
                    task.add_done_callback(running.discard)
                next_at += rng.expovariate(rate)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - loop.time()))
            for c in carriers:
                c.hang_up_all()
            if running:
                await asyncio.wait(set(running), timeout=10.0)
        finally:
            for task in list(running):
                task.cancel()
            for c in carriers:
                await c.close()

    def rerouted(self, call: CallRow) -> bool:
        # Legitimate calls are not moved: what is steered is the flood (``rerouted_at``).
        return False

    def expected(self, outage: dict[str, Any]) -> bool:
        return outage.get("kind") == "attack"

    def figures(self) -> dict[str, Any]:
        return {"flood_sent": self.sent, "flood_answered": self.answered, "flood_refused": self.refused,
                "flood_unanswered": self.unanswered, "flood_not_placed": self.skipped,
                "flood_screened": self.screened, "flood_to_psap_before_flag": self.to_psap_before_flag,
                "flood_to_psap_after_flag": self.to_psap_after_flag}  # fmt: skip

    def criteria(self, rows: list[CallRow]) -> dict[str, bool]:
        # Every flood call placed after the flag (and its grace) went to screening, none to
        # a call-taker; every legitimate call was answered by a person (none on a list).
        return {
            "flood_kept_off_psaps": self.flagged_mono is not None and self.to_psap_after_flag == 0,
            "legitimate_calls_answered": all(r.answered for r in rows),
        }


@dataclass
class NodeLossFault(Fault):
    """A node of a two-node cluster dies (issue 8): node B, a ``firebox serve`` child
    process and the carrier's first ingress route, is SIGKILLed under load, calls in
    progress through it included; healed by starting it again from the same files
    (``firebox.sim.peer``). Node A (in process) carries on: the carrier's route list moves
    on after B says nothing (RFC 3263 section 4.3 as an SBC does it), calls up through B are
    released through A (the ESRP Record-Routes with the cluster's name), and A's detector
    reports B (its heartbeats stop: dead after 10 missed, ``firebox-node:node-b``) or
    the probes through B's route fail, whichever comes first."""

    name: ClassVar[str] = "node-loss"
    title: ClassVar[str] = "a cluster node (the carrier's first ingress) is killed with SIGKILL under load"
    pair: Any = None  # firebox.sim.peer.ClusterPair
    process: Any = None  # firebox.cluster.process.NodeProcess
    killed_at: float | None = None
    restarted_at: float | None = None  # node B served /cluster again
    healed_at: float | None = None
    restart_error: str | None = None
    #: Calls through B at the kill: up (answered before it), or still being set up.
    up_at_kill: list[dict[str, Any]] = field(default_factory=list)
    setting_up_at_kill: list[dict[str, Any]] = field(default_factory=list)
    through_b_after_restart: int = 0
    #: Confirmations after the kill by each path (epoch seconds), and their clearing: B's
    #: heartbeats (membership: dead after 10 missed) and the probes through B's route.
    confirmed: dict[str, float] = field(default_factory=dict)
    cleared: dict[str, float] = field(default_factory=dict)
    #: The fault's own call, ringing through B when B is killed (by construction: the kill
    #: waits for its 180), and what became of it.
    ringing_call: dict[str, Any] = field(default_factory=dict)
    _ringing: asyncio.Task[None] | None = None
    _restart: asyncio.Task[None] | None = None
    _deployment: Path | None = None

    def sip_resolver(self) -> Any:
        from firebox.deployment import load_deployment
        from firebox.node import cluster_resolver

        assert self._deployment is not None
        return cluster_resolver(load_deployment(self._deployment), ("udp",))

    async def prepare(self, cfg: Any, work: Path | None, deployment: Path) -> None:
        from firebox.sim.peer import prepare_pair

        if work is None:
            raise ValueError("node-loss runs on the demo state (node B's deployment is written next to A's), "
                             "not on a given deployment")  # fmt: skip
        self.pair = prepare_pair(deployment, work, seed=cfg.seed, n_towns=cfg.n_towns, database=cfg.database,
                                 nats=cfg.nats)  # fmt: skip
        self._deployment = deployment
        self.route_a = ("127.0.0.1", self.pair.b_sip)

    async def start(self, node: Any, monitor: Any) -> None:
        from firebox.cluster.membership import Health
        from firebox.node import _share_outages
        from firebox.sim.peer import NODE_B, start_peer

        self.process = self.pair.process()
        await start_peer(self.pair, self.process)
        if node.bus is None or node.membership is None:
            raise RuntimeError("node A is not part of the cluster (no bus): node-loss needs it")
        # A's detector hears of B's health as a deployed node's monitor does (the node's own
        # wiring, start_monitor's).
        await _share_outages(node, monitor)
        monitor.listeners.append(self._on_update)
        for _ in range(300):  # bounded: 15 s for A to see B's heartbeats
            if node.membership.view.health(NODE_B, time.time()) is Health.ALIVE:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"node A never saw node B alive; node B's log:\n{self.process.tail()}")

    def _on_update(self, update: Any) -> None:
        outage = update.outage
        if self.killed_at is None or outage["scope"] != "element":
            return
        path = "heartbeats" if "firebox-node:" in str(outage["key"]) else "probes" if ROUTE_A in str(outage["key"]) else None
        if path is None:
            return
        book = self.confirmed if outage["state"] == "confirmed" else self.cleared if outage["state"] == "cleared" else None
        if book is not None:
            book.setdefault(path, time.time())

    async def inject(self, node: Any, harness: Harness) -> None:
        # One call is ringing through B at the kill, always (the load's may or may not be).
        ringing = asyncio.Event()
        self._ringing = asyncio.create_task(self._ringing_call(harness, ringing), name="node-loss-ringing-call")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ringing.wait(), 5.0)
        self.ringing_call["ringing_at_kill"] = ringing.is_set()
        self.killed_at = time.time()
        self.process.kill()

    async def _ringing_call(self, harness: Harness, ringing: asyncio.Event) -> None:
        """A carrier's call over the same route list as the load's (B first, then A)."""
        from firebox.sim.carrier import (
            CallPlan,
            Carrier,
            IngressRoute,
            LocationMode,
            Outcome,
            RoutedCarrier,
            RouteList,
        )

        assert self.route_a is not None
        carrier = Carrier((*self.route_a, "udp"), domain="carrier-ringing.invalid", answer_timeout=15.0,
                          resolver=self.sip_resolver())  # fmt: skip
        handle = carrier._handle  # the transport is started with this attribute: watch for the 180

        def spy(message: Any, source: Any) -> None:
            if isinstance(message, SipResponse) and message.status == 180:
                ringing.set()
            handle(message, source)

        carrier._handle = spy  # type: ignore[method-assign]
        await carrier.start()
        routes = RouteList([IngressRoute(ROUTE_A, (*self.route_a, "udp")),
                            IngressRoute(ROUTE_B, ("127.0.0.1", harness.bcf_port, "udp"))])  # fmt: skip
        lon, lat = harness.random_point(random.Random(8))
        try:
            results = await RoutedCarrier(carrier, routes).call(CallPlan("tel:+16035550188", lon, lat,
                                                                         LocationMode.VALUE, 2.0))  # fmt: skip
            final = results[-1]
            self.ringing_call.update(connected=final.outcome is Outcome.ANSWERED, outcome=final.outcome.value,
                                     status=final.status, route=final.route, routes_tried=[r.route for r in results],
                                     call_id=final.call_id)  # fmt: skip
        finally:
            await carrier.close()

    async def heal(self, node: Any, harness: Harness) -> None:
        # Started in the background: the load goes on while B starts (it takes seconds).
        self.healed_at = time.time()
        self._restart = asyncio.create_task(self._start_again(), name="node-b-restart")

    async def _start_again(self) -> None:
        from firebox.sim.peer import start_peer

        try:
            await start_peer(self.pair, self.process)
        except Exception as exc:  # noqa: BLE001 -- reported in the figures, with B's log
            self.restart_error = str(exc)
            log.warning("node-loss: %s", exc)
            return
        self.restarted_at = time.time()

    async def close(self) -> None:
        from firebox.sim.peer import stop_peer

        for task, bound in ((self._ringing, 30.0), (self._restart, 100.0)):
            if task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(task), bound)
        if self.process is not None:
            await stop_peer(self.process)

    def call_done(self, call: CallRow, results: list[Any]) -> None:
        k = self.killed_at
        if self.restarted_at is not None and call.answered and call.route == ROUTE_A and (call.answered_at or 0) > self.restarted_at:
            self.through_b_after_restart += 1
        if k is None or not results or results[0].route != ROUTE_A or call.started >= k:
            return
        if call.ended is not None and call.ended <= k:
            return
        first = results[0]
        if first.answered_at is not None and first.answered_at <= k:
            # Up through B at the kill: released if the PSAP's BYE reached the caller or the
            # caller's BYE got its final answer (both through A: B is gone).
            bye = getattr(first, "bye_status", None)
            released = first.ended_by == "psap" or (bye is not None and 200 <= bye < 300)
            self.up_at_kill.append({"n": call.n, "call_id": first.call_id, "ended_by": first.ended_by,
                                    "bye_status": bye, "released": released, "ended": call.ended})  # fmt: skip
        else:
            self.setting_up_at_kill.append({"n": call.n, "call_id": first.call_id, "category": call.category,
                                            "route": call.route, "routes_tried": list(call.routes_tried)})  # fmt: skip

    def rerouted(self, call: CallRow) -> bool:
        # carried by the other ingress route (node A) and answered
        return call.answered and call.route == ROUTE_B

    def expected(self, outage: dict[str, Any]) -> bool:
        from firebox.sim.peer import NODE_B

        key = str(outage["key"])
        return outage["scope"] == "element" and (key.endswith(f"firebox-node:{NODE_B}") or ROUTE_A in key)

    def figures(self) -> dict[str, Any]:
        up = self.up_at_kill
        return {
            "killed_at": self.killed_at, "restart_started_at": self.healed_at, "restarted_at": self.restarted_at,
            "restart_s": (self.restarted_at - self.healed_at) if self.restarted_at and self.healed_at else None,
            "restart_error": self.restart_error, "node_b_starts": self.process.starts if self.process else 0,
            "node_b_log": str(self.pair.b_log) if self.pair else None,
            "cluster": self.pair.name if self.pair else None,
            "up_at_kill": len(up), "up_at_kill_released": sum(1 for c in up if c["released"]),
            "up_at_kill_not_released": [c for c in up if not c["released"]],
            "setting_up_at_kill": len(self.setting_up_at_kill),
            "setting_up_at_kill_answered": sum(1 for c in self.setting_up_at_kill
                                               if c["category"] in ("intended", "alternate", "business_line")),
            "setting_up_calls": self.setting_up_at_kill,
            "through_b_after_restart": self.through_b_after_restart,
            "ringing_call": self.ringing_call,
            # kill -> confirmed, by path; restart started -> the outage cleared, by path
            "detect_by": {p: round(at - self.killed_at, 3) for p, at in self.confirmed.items()} if self.killed_at else {},
            "cleared_after_restart": {p: round(at - self.healed_at, 3) for p, at in self.cleared.items()}
            if self.healed_at else {},
        }  # fmt: skip

    def criteria(self, rows: list[CallRow]) -> dict[str, bool]:
        return {
            "in_progress_released": all(c["released"] for c in self.up_at_kill),
            "ringing_call_connected": bool(self.ringing_call.get("connected")),
            "node_b_restarted": self.restarted_at is not None,
        }


FAULTS: dict[str, type[Fault]] = {
    f.name: f for f in (FirewallFault, CounterFault, ConfigPushFault, FiberCutFault, TdosFault, EvacuationFault,
                         NodeLossFault)
}


def fault(name: str) -> Fault:
    try:
        return FAULTS[name]()
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(FAULTS)}") from None
