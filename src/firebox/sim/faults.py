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
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from firebox.sip.message import Request as SipRequest
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


FAULTS: dict[str, type[Fault]] = {
    f.name: f for f in (FirewallFault, CounterFault, ConfigPushFault, FiberCutFault, TdosFault, EvacuationFault)
}


def fault(name: str) -> Fault:
    try:
        return FAULTS[name]()
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(FAULTS)}") from None
