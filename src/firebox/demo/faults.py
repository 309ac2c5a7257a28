"""Faults a person can cause from the demo page (issue 6: "``make demo`` lets a user break
something from the page and watch detection, rerouting and recovery live"). Demo only: the
routes that call these are mounted by ``firebox.web.demo.install_demo_controls``, never by
``firebox serve``.

* **The Massachusetts rule, through firebox**: a BCF rule rejecting every INVITE (the cause of
  the 18 June 2024 outage) submitted to the change system, which refuses it at submission
  with the calls it would have hit (the invariant: a rule never rejects emergency calls from
  a known carrier). Nothing breaks; the page shows the refusal.
* **A firewall outside firebox blocks ingress**: in Massachusetts the firewall was outside
  any rule system. ``IngressFirewall`` sits in front of the BCF's SIP listener (wrapping the
  server's handler, where a network firewall would drop packets before the element) and
  answers every new INVITE ``403``. firebox cannot stop that; it notices it (test calls and
  live calls fail everywhere: a statewide outage), notifies and alerts.
* **Cut a PSAP**: the path to one PSAP goes dark, as a fiber cut does: ``PsapCut`` wraps the
  ESRP's resolver so that INVITEs to that PSAP's queue go to a black hole (a UDP socket that
  reads and never answers). The monitor's test calls fail, the detector confirms the PSAP's
  outage, and routing sends its calls to the alternate.
* **Heal all**: undo each.

``DemoFaults`` acts only through ``DemoHooks`` (narrow callables); ``node_hooks(node)`` makes
them over a running ``firebox.node.Node``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from firebox.sip.message import Request, make_response

log = logging.getLogger(__name__)

__all__ = ["MASSACHUSETTS_RULE", "DemoFaults", "DemoHooks", "FaultError", "IngressFirewall", "PsapCut", "node_hooks"]

#: The rule of 18 June 2024: every INVITE rejected, whoever sends it.
MASSACHUSETTS_RULE: Sequence[Mapping[str, Any]] = ({"id": "block-invites", "methods": ["INVITE"], "action": "reject"},)

Address = tuple[str, int, str]


class FaultError(Exception):
    """A fault that cannot be caused now (unknown PSAP, the part not running); says why."""


class IngressFirewall:
    """A firewall in front of a SIP listener: wraps ``server.handler``. While ``blocking``,
    every new INVITE is answered ``403 Forbidden`` and its ACK dropped (what the
    Massachusetts firewall did to 911 calls); everything else passes."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.inner = server.handler
        self.blocking = False
        self.blocked = 0
        server.handler = self.handle

    def handle(self, message: Any, source: Any) -> Any:
        if self.blocking and isinstance(message, Request) and message.method in ("INVITE", "ACK") \
                and "tag=" not in (message.headers.get("To") or ""):  # fmt: skip
            if message.method == "INVITE":
                self.blocked += 1
                self.server.reply(make_response(message, 403, "Forbidden", to_tag="fw-demo"), source)
            return None
        return self.inner(message, source)


class _BlackHole(asyncio.DatagramProtocol):
    def datagram_received(self, data: bytes, addr: Any) -> None:
        pass  # a cut line: nothing comes back


class PsapCut:
    """Wraps a SIP resolver (``uri -> (host, port, transport) | None``): a URI in ``cut``
    resolves to a black hole. ``open()`` binds the hole (a UDP socket on 127.0.0.1 that never
    answers: the sender's transaction times out, as over a cut fiber)."""

    def __init__(self, inner: Callable[[str], Address | None]) -> None:
        self.inner = inner
        self.cut: set[str] = set()
        self.hole: Address | None = None
        self._transport: asyncio.DatagramTransport | None = None

    async def open(self) -> None:
        if self._transport is None:
            loop = asyncio.get_running_loop()
            self._transport, _ = await loop.create_datagram_endpoint(_BlackHole, local_addr=("127.0.0.1", 0))
            self.hole = ("127.0.0.1", int(self._transport.get_extra_info("sockname")[1]), "udp")

    def __call__(self, uri: str) -> Address | None:
        if self.hole is not None and uri in self.cut:
            return self.hole
        return self.inner(uri)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


@dataclass(frozen=True, slots=True)
class DemoHooks:
    """What the demo's faults may touch. ``psaps()``: (id, name, queue URI) of each PSAP;
    ``submit_bcf_rules(rules, author)``: the change system's submission (a ``Change``'s
    dict); ``firewall()``: the ingress firewall (None while the BCF is not running);
    ``cut()``: the PSAP cut over the ESRP's resolver (None likewise, awaited: it binds)."""

    psaps: Callable[[], Sequence[tuple[str, str, str]]]
    submit_bcf_rules: Callable[[list[dict[str, Any]], str], Awaitable[dict[str, Any]]] | None
    firewall: Callable[[], IngressFirewall | None]
    cut: Callable[[], Awaitable[PsapCut | None]]


@dataclass
class DemoFaults:
    """The faults of the demo page and what they did (``log``: newest last)."""

    hooks: DemoHooks
    clock: Callable[[], float] = time.time
    log: list[dict[str, Any]] = field(default_factory=list)

    def _note(self, action: str, **detail: Any) -> dict[str, Any]:
        entry = {"at": self.clock(), "action": action, **detail}
        self.log.append(entry)
        del self.log[:-50]
        log.warning("demo fault: %s %s", action, detail)
        return entry

    async def bad_rule(self) -> dict[str, Any]:
        """Submit the Massachusetts rule to the change system; the answer says whether it was
        refused and which calls it would have hit."""
        if self.hooks.submit_bcf_rules is None:
            raise FaultError("this node has no change system (elements.changes)")
        change = await self.hooks.submit_bcf_rules([dict(r) for r in MASSACHUSETTS_RULE], "demo page")
        refused = change.get("stage") == "refused"
        hits = change.get("hits") or []
        return self._note("bad rule", refused=refused, change=change.get("id"), reason=change.get("reason"),
                          hits=len(hits), examples=[h.get("call") for h in hits[:5]])  # fmt: skip

    def firewall(self, on: bool = True) -> dict[str, Any]:
        fw = self.hooks.firewall()
        if fw is None:
            raise FaultError("the BCF is not running")
        fw.blocking = on
        return self._note("firewall on" if on else "firewall off", blocked=fw.blocked)

    async def cut_psap(self, psap_id: str) -> dict[str, Any]:
        known = {pid: (name, uri) for pid, name, uri in self.hooks.psaps()}
        if psap_id not in known:
            raise FaultError(f"no PSAP {psap_id!r}; known: {', '.join(sorted(known))}")
        cut = await self.hooks.cut()
        if cut is None:
            raise FaultError("the ESRP is not running")
        cut.cut.add(known[psap_id][1])
        return self._note("cut", psap=psap_id, name=known[psap_id][0])

    async def heal_all(self) -> dict[str, Any]:
        fw = self.hooks.firewall()
        if fw is not None:
            fw.blocking = False
        cut = await self.hooks.cut()
        healed = sorted(pid for pid, _, uri in self.hooks.psaps() if cut is not None and uri in cut.cut)
        if cut is not None:
            cut.cut.clear()
        return self._note("heal all", psaps=healed)

    def close(self) -> None:
        """Release the cut's socket (when the node stops)."""
        holder = getattr(self.hooks.cut, "current", None)
        if holder is not None and holder() is not None:
            holder().close()

    def status(self) -> dict[str, Any]:
        fw = self.hooks.firewall()
        uris = {uri: pid for pid, _, uri in self.hooks.psaps()}
        cut_now: list[str] = []
        # the cut is only read here, never made: a status must not bind sockets
        holder = getattr(self.hooks.cut, "current", None)
        if holder is not None and holder() is not None:
            cut_now = sorted(uris[u] for u in holder().cut if u in uris)
        return {"firewall": bool(fw and fw.blocking), "firewall_blocked": fw.blocked if fw else 0,
                "cut": cut_now, "log": list(reversed(self.log[-10:]))}  # fmt: skip


class _Lazy:
    """The node's cut, made on first use (the ESRP runs by then); ``current()`` without
    making it."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.cut: PsapCut | None = None

    async def __call__(self) -> PsapCut | None:
        core = self.node.core
        if core is None:
            return None
        if self.cut is None:
            cut = PsapCut(core.resolve)
            await cut.open()
            core.resolve = cut  # the ESRP resolves each INVITE's destination through it
            self.cut = cut
        return self.cut

    def current(self) -> PsapCut | None:
        return self.cut


def node_hooks(node: Any) -> DemoHooks:
    """``DemoHooks`` over a ``firebox.node.Node`` (its BCF/ESRP, change system and PSAPs)."""
    firewall: dict[str, IngressFirewall] = {}

    def get_firewall() -> IngressFirewall | None:
        core = node.core
        if core is None or core.server is None:
            return None
        if "fw" not in firewall or firewall["fw"].server is not core.server:
            firewall["fw"] = IngressFirewall(core.server)
        return firewall["fw"]

    async def submit(rules: list[dict[str, Any]], author: str) -> dict[str, Any]:
        from firebox.change.core import ChangeKind

        if node.changes is None:
            raise FaultError("the change system is not running")
        change = await node.changes.submit(ChangeKind.BCF, rules, author=author)
        return dict(change.to_dict())

    def psaps() -> list[tuple[str, str, str]]:
        return [(p.id, p.name, p.uri) for p in node.deployment.psaps]

    return DemoHooks(psaps=psaps, submit_bcf_rules=submit if node.deployment.elements.changes is not None else None,
                     firewall=get_firewall, cut=_Lazy(node))  # fmt: skip
