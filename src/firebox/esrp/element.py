"""The BCF + ESRP as one asyncio SIP element (NENA-STA-010.3 sections 4.1 and 4.2).

``EmergencyCore`` listens with ``firebox.sip.transport`` and glues the sans-I/O pieces:

* A new INVITE (or MESSAGE) gets a server transaction (retransmissions are absorbed and
  answered with the last response), a 100 Trying at once, then ``Bcf.process`` (a REJECT
  is answered with the BCF's response; a DIVERT leaves a callback record in
  ``callbacks`` and the call is still routed: firebox never drops a 911 call), then
  ``Router.route`` and a ``ProxyCall`` over the decision's destinations: queue URIs as
  ``Route: <uri;lr>`` with the Request-URI kept (``urn:service:sos``), business lines and
  number-like catch-alls with the Request-URI rewritten. Each target's network address is
  ``resolve(uri)``, else the URI's own host, port and transport. The proxy's events are
  driven with ``loop.call_later`` timers and the transport.
* We Record-Route, so in-dialog requests (ACK of a 2xx, BYE, re-INVITE, INFO...) come
  back through us; they are forwarded statelessly by loose routing (RFC 3261 16.4,
  16.11, 16.12): our own ``Route`` popped, on to the next ``Route`` or the Request-URI.
* CANCEL is matched to its INVITE (RFC 3261 9.2) and answered 200; the proxy cancels the
  pending branch and 487 goes upstream. ACKs of non-2xx answers are absorbed by the
  INVITE's server transaction. OPTIONS to us is answered 200 with Allow/Accept/Supported.
* Responses that match no call (late 2xx retransmissions, answers to stateless forwards)
  are forwarded statelessly by their next ``Via`` (16.11).

A failure anywhere before routing (BCF or router exception) still routes the call: on
the PRF's default route (``decide`` with no ECRF answer), whose list ends in a business
line. No exception reaches the transport; each one is logged and counted.

Counters are in ``stats`` (calls in, answered, failed, failed over, cancelled, ...) and
``destinations`` (per destination URI: tried, answered, failed); ``records`` keeps the
per-call record (router log, forwards, failovers, outcome) of the latest calls and
``events`` their log lines, by SIP Call-ID.

A new INVITE/MESSAGE is always routed by the policy, whatever Route set it came with
(the set is removed and logged): an emergency call never bypasses the ESRP.

MESSAGE (text to 911) gets the same serial failover through ``_MessageCall``; there any
final answer must come within ``no_provisional_timeout`` (a late 200 from an abandoned
target can mean the text reached two PSAPs).

Optional parts, each a constructor argument:

* ``call_log``: a ``CallLogger`` (``esrp.logevents``) that turns every call into i3 log
  events (CallStart, each SIP message, LoST query and response, Route and failovers,
  CallEnd) for a ``LogSender``; logging never delays or fails a call.
* ``overload``: an ``OverloadGuard`` (RFC 7339): a call beyond its places waits for one
  (emergency calls first) or is answered 503 with Retry-After, an emergency call leaving a
  callback record in ``callbacks``; responses carry overload feedback in the caller's Via
  when it asked for it (``oc``).
* State notifications (``esrp.stateevents``, RFC 6665) always run once started: SUBSCRIBE
  to us for ``emergency-ElementState`` / ``-ServiceState`` / ``-QueueState`` (our own queue,
  from the guard) is served, and the element subscribes to ``emergency-QueueState`` of each
  queue in ``subscribe_to``, applying NOTIFYs to ``router.states`` for the policy.

* ``divert_to``: the announcement-and-callback service a call the BCF diverts goes to
  first (the normal route follows it if it fails); without it a diverted call is routed
  normally. Either way its callback record is kept in ``callbacks``.

The policy's notify actions (``RouteDecision.notifications``) go out as SIP MESSAGE with a
JSON summary of the call to each SIP URI target (counted in ``notified``), never delaying
the call.

Several nodes (issue 8): with ``cluster_name`` (and ``cluster_aliases``) the element takes
that name as its own when popping Route and Record-Routes with it (``sip:<name>;lr``), so a
dialog's route set survives the node that set it up: the user agents resolve the name by
RFC 3263 (``firebox.sip.resolve``) to any live node, which forwards statelessly. With a
``call_log`` the Record-Route also carries the call's i3 identifiers
(``sip:<name>;i3c=...;i3i=...;i3f=...;lr``, ``esrp.logevents.route_params``), so the node
that carries a later BYE logs it, and the call's end, under the call's own identifiers. With
``sip_resolver`` next hops that ``resolve`` does not know are located by RFC 3263, and a
stream target that fails to connect is tried last for a while.

Not done: double Record-Route for a call that changes transport; failover between the
addresses of one destination URI (the next destination of the policy is tried instead).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from firebox.bcf.core import Bcf
from firebox.bcf.protection import Action
from firebox.esrp.logevents import CallLogger, route_params
from firebox.esrp.outbound import Outbound
from firebox.esrp.policy import (
    CallContext,
    CallMedium,
    Destination,
    DestinationKind,
    RouteDecision,
    decide,
)
from firebox.esrp.router import Router
from firebox.esrp.stateevents import QueueFigures, StateEvents
from firebox.esrp.worklist import Worklist, WorklistReason
from firebox.psap.calldata import location_view, normalize_callback
from firebox.sip.address import SipUri, parse_name_addr, parse_uri
from firebox.sip.errors import SipParseError
from firebox.sip.headers import Headers
from firebox.sip.message import Message, Request, Response, caller_uri, make_response
from firebox.sip.overload import OverloadGuard, Reject
from firebox.sip.proxy import (
    CancelTimer,
    Done,
    Failover,
    Forward,
    Outcome,
    ProxyCall,
    ProxyEvent,
    SendAck,
    SendCancel,
    SendUpstream,
    StartTimer,
    Target,
    best_response,
    new_branch,
)
from firebox.sip.resolve import SipResolver
from firebox.sip.transaction import (
    MAGIC_COOKIE,
    ClientNonInviteTransaction,
    Deliver,
    Send,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Terminated,
    Timeout,
    TransactionError,
    TransactionKeyError,
    TransportError,
    cancel_target_key,
    is_reliable,
    server_key,
)
from firebox.sip.transaction import CancelTimer as TxCancelTimer
from firebox.sip.transaction import StartTimer as TxStartTimer
from firebox.sip.transport import SipServer, Source, start_sip_server, via_destination

__all__ = ["ALLOW", "Address", "CallRecord", "EmergencyCore", "Resolver"]

log = logging.getLogger(__name__)

#: ``(host, port, transport)`` of a next hop; transport is ``udp``, ``tcp`` or ``tls``.
Address = tuple[str, int, str]
Resolver = Callable[[str], Address | None]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, UPDATE, REFER, NOTIFY, PRACK"
ACCEPT = "application/sdp, application/pidf+xml, multipart/mixed, text/plain"
SUPPORTED = "replaces, timer, geolocation"
#: Calls whose record is kept in ``records`` (oldest dropped first).
MAX_RECORDS = 10_000


@dataclass(slots=True)
class CallRecord:
    """What happened to one incoming INVITE or MESSAGE."""

    call_id: str
    method: str
    started: float
    source: str
    events: list[str] = field(default_factory=list)
    #: ``(target uri, branch, loop time)`` of each first forward.
    forwards: list[tuple[str, str, float]] = field(default_factory=list)
    failovers: list[Failover] = field(default_factory=list)
    outcome: str | None = None
    status: int | None = None
    target: str | None = None
    done_at: float | None = None


@dataclass(slots=True)
class _ServerEntry:
    """A server transaction and where its request came from."""

    tx: ServerInviteTransaction | ServerNonInviteTransaction
    source: Source
    call: _Call | None = None
    sent_trying: bool = False


@dataclass(slots=True)
class _Call:
    """One incoming INVITE/MESSAGE being routed."""

    key: Any
    entry: _ServerEntry
    record: CallRecord
    proxy: ProxyCall | _MessageCall | None = None
    cancelled: bool = False
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    addresses: dict[str, Address] = field(default_factory=dict)  # by branch
    transport: str = "udp"  # downstream transport of the proxy's Via
    admitted: bool = False  # holds a place of the overload guard (in flight or waiting)
    queued: bool = False  # waiting for a place
    #: For the callback worklist: an emergency call (not an i3 test call), the PSAP it was
    #: meant for, the caller's location, and whether any destination alerted (18x).
    emergency: bool = False
    owner: str | None = None
    location: Any = None
    alerted: bool = False


class EmergencyCore:
    """BCF + ESRP in one SIP element. ``resolve(uri)`` gives the network address of a
    destination URI (a PSAP queue, the PSTN gateway), or ``None`` to use the URI's own
    host and port. ``advertised_host`` is the host in our Via and Record-Route (default:
    ``host``; set it when listening on 0.0.0.0)."""

    def __init__(
        self,
        bcf: Bcf,
        router: Router,
        *,
        host: str,
        port: int,
        transports: str | Iterable[str] = ("udp", "tcp"),
        resolve: Resolver,
        record_route: bool = True,
        no_provisional_timeout: float = 0.5,
        advertised_host: str | None = None,
        reuse_port: bool = False,
        call_log: CallLogger | None = None,
        overload: OverloadGuard | None = None,
        element_id: str | None = None,
        subscribe_to: Iterable[str] = (),
        state_expires: int = 600,
        divert_to: str | None = None,
        cluster_name: str | None = None,
        cluster_aliases: Iterable[str] = (),
        sip_resolver: SipResolver | None = None,
    ) -> None:
        self.bcf = bcf
        self.router = router
        self.host = host
        self.port = port
        self.transports = (
            (transports,) if isinstance(transports, str) else tuple(transports)
        )
        self.resolve = resolve
        self.record_route = record_route
        self.no_provisional_timeout = no_provisional_timeout
        self.advertised_host = advertised_host or host
        self.reuse_port = reuse_port
        #: i3 log events of every call (``None``: not logged); its LoST client is wrapped.
        self.call_log = call_log
        if call_log is not None:
            call_log.attach(router)
        #: Admission control (RFC 7339): calls beyond its places wait or get 503 with
        #: Retry-After and, for an emergency call, a callback record (never silence).
        self.overload = overload
        self._waiting: dict[str, tuple[_Call, Request, Source]] = {}
        #: This element's id (ElementState) and the downstream queues whose QueueState it
        #: follows (RFC 6665 subscriptions, applied to ``router.states``).
        self.element_id = element_id or router.fqdn
        self.subscribe_to = tuple(subscribe_to)
        self.state_expires = state_expires
        self.state_events: StateEvents | None = None
        #: Where a call the BCF diverts goes first (an announcement and callback service);
        #: ``None``: diverted calls are routed normally, with their callback record.
        self.divert_to = divert_to
        #: Where TDoS suspects go (the BCF's screening answer); None: ``divert_to``.
        self.screen_to: str | None = None
        #: Several nodes, one SIP name (issue 8): the cluster name (and aliases) is "us" when
        #: popping Route, and our Record-Route, so a dialog's route set names no single node
        #: and its in-dialog requests reach whichever node is alive (RFC 3263 at the UAs).
        self.cluster_name = cluster_name.strip().rstrip(".").lower() if cluster_name else None
        self.cluster_names = frozenset(
            n.strip().rstrip(".").lower() for n in (cluster_name, *cluster_aliases) if n
        )
        #: RFC 3263 for next hops ``resolve`` does not know, with failure memory.
        self.sip_resolver = sip_resolver
        if sip_resolver is not None:
            self.resolve = _resolve_chain(resolve, sip_resolver)
        #: Policy notify actions sent / failed / not sendable.
        self.notified: Counter[str] = Counter()
        #: Requests we originate (NOTIFY, SUBSCRIBE, MESSAGE), in client transactions.
        self.outbound = Outbound(self._send, self.resolve)
        self.server: SipServer | None = None
        self.stats: Counter[str] = Counter()
        #: Per destination URI: ``tried``, ``answered``, ``failed``.
        self.destinations: dict[str, Counter[str]] = {}
        self.callbacks: list[Any] = []
        #: Every emergency call that could not be connected (``esrp.worklist``), for the
        #: PSAP that should have had it.
        self.worklist = Worklist()
        self.records: OrderedDict[str, CallRecord] = OrderedDict()
        self._servers: dict[Any, _ServerEntry] = {}
        self._branches: dict[str, _Call] = {}
        self._stx_timers: dict[tuple[Any, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Messages that arrived before ``start`` had its server (bounded; a sender retransmits).
        self._early: list[tuple[Message, Source]] = []
        self._dialogs: OrderedDict[str, tuple[Source, Address]] = OrderedDict()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> SipServer:
        self.server = await start_sip_server(
            self._handle,
            self.host,
            self.port,
            transports=self.transports,
            reuse_port=self.reuse_port,
        )
        if self.port == 0:
            self.port = next(iter(self.server.addresses.values()))[1]
        early, self._early = self._early, []
        for message, source in early:
            self._handle(message, source)
        domain = self.element_id.split(".", 1)[1] if "." in self.element_id else self.element_id
        self.state_events = StateEvents(
            self.router.states,
            element_id=self.element_id,
            service_domain=domain,
            contact=self.node_uri,
            queue_uri=f"sip:queue@{self.element_id}",
            outbound=self.outbound,
            queue_state=self._queue_figures,
            subscribe_to=self.subscribe_to,
            expires=self.state_expires,
        )
        self.state_events.start()
        return self.server

    def _queue_figures(self) -> QueueFigures:
        """Our own queue (QueueState): the overload guard's places, or the calls being
        routed when there is no guard."""
        guard = self.overload
        if guard is None:
            return QueueFigures(len(self._branches), 0)
        held = guard.in_flight + guard.queued
        return QueueFigures(held, guard.hard_limit, held >= guard.capacity + guard.queue_limit)

    async def close(self) -> None:
        if self.state_events is not None:
            await self.state_events.close()
        self.outbound.close()
        for task in list(self._tasks):
            task.cancel()
        for call in {id(c): c for c in self._branches.values()}.values():
            for handle in call.timers.values():
                handle.cancel()
        for handle in self._stx_timers.values():
            handle.cancel()
        if self.server is not None:
            await self.server.close()
        if self.call_log is not None:
            await self.call_log.aclose()

    @property
    def events(self) -> dict[str, list[str]]:
        """Log lines per call (SIP Call-ID): BCF, router, forwards, failovers, outcome."""
        return {cid: rec.events for cid, rec in self.records.items()}

    @property
    def record_route_uri(self) -> str:
        """Our Record-Route: the cluster name when configured (any node takes the dialog's
        later requests), else this node."""
        if self.cluster_name:
            return f"sip:{self.cluster_name}"
        return self.node_uri

    @property
    def node_uri(self) -> str:
        """This node's own SIP URI (subscriptions, whose state lives here)."""
        return f"sip:{self.advertised_host}:{self.port}"

    # -- entry point ---------------------------------------------------------------------

    def _handle(self, message: Message, source: Source) -> None:
        """The transport's handler: never raises."""
        if self.server is None:
            # Arrived while the transports were still opening (a node restarted under load):
            # held until ``start`` has its server, then handled in order, not dropped.
            if len(self._early) < 1000:
                self._early.append((message, source))
            else:
                log.warning("ESRP element: a message before the start, beyond 1000 held: left to its retransmission")
            return
        if self.call_log is not None:
            self.call_log.received(message, source, self._own_routes(message))
        try:
            if isinstance(message, Response):
                self._on_response(message, source)
            else:
                self._on_request(message, source)
        except Exception:
            self.stats["errors"] += 1
            log.exception("ESRP element: handling a message from %s failed", source)
            if isinstance(message, Request) and message.method in ("INVITE", "MESSAGE"):
                self._last_resort(message, source)

    def _last_resort(self, request: Request, source: Source) -> None:
        """An unexpected failure on a new call: answer 500 rather than nothing, so the
        originating network tries again or elsewhere (never a silent drop)."""
        try:
            key = self._skey(request)
            if key in self._servers and self._servers[key].call is not None:
                return  # the call is being handled
            self._send(
                make_response(request, 500, to_tag=secrets.token_hex(5)),
                source,
                reply=True,
            )
        except Exception:
            log.exception("ESRP element: could not even answer 500")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["errors"] += 1
            log.error("ESRP element task failed", exc_info=task.exception())

    def _send(
        self, message: Message, dest: Source | Address, *, reply: bool = False
    ) -> None:
        assert self.server is not None
        if self.call_log is not None:
            self.call_log.sending(message, dest)
        try:
            if reply and isinstance(dest, Source) and isinstance(message, Response):
                self.server.reply(message, dest)
            else:
                self.server.send(message, dest)
        except Exception as exc:  # noqa: BLE001
            self.stats["send_errors"] += 1
            log.info("ESRP element: send to %s failed: %s", dest, exc)

    @staticmethod
    def _skey(request: Request) -> Any:
        try:
            return server_key(request)
        except TransactionKeyError:
            # RFC 2543 peer (no magic cookie): match by dialog fields instead of dropping.
            method = "INVITE" if request.method == "ACK" else request.method
            return (
                "2543",
                request.call_id,
                request.cseq[0],
                request.from_tag,
                request.branch,
                method,
            )

    # -- requests ------------------------------------------------------------------------

    def _on_request(self, request: Request, source: Source) -> None:
        method = request.method
        if method == "CANCEL":
            self._on_cancel(request, source)
            return
        key = self._skey(request)
        entry = self._servers.get(key)
        if entry is not None:  # a retransmission, or the ACK of a non-2xx answer
            if (
                method == "ACK"
                and isinstance(entry.tx, ServerInviteTransaction)
                and entry.tx.last_response is not None
                and entry.tx.last_response.status >= 300
            ):
                self._run_stx(key, entry, entry.tx.receive(request))
                return
            if method != "ACK":
                self.stats["retransmissions"] += 1
                self._run_stx(key, entry, entry.tx.receive(request))
                return
        in_dialog = request.to_tag is not None
        events = self.state_events
        if events is not None:
            # i3 state packages (RFC 6665): a SUBSCRIBE addressed to us, a NOTIFY of one of
            # our own subscriptions. Others (a call's dialog, a SUBSCRIBE routed beyond us)
            # are forwarded like any in-dialog request.
            if method == "SUBSCRIBE" and (
                not request.headers.get("Route") or self._top_route_is_ours_only(request)
            ):
                self._answer(key, request, source, events.on_subscribe(request))
                return
            if method == "NOTIFY" and events.owns_notify(request):
                self._answer(key, request, source, events.on_notify(request))
                return
        if method in ("INVITE", "MESSAGE") and not in_dialog:
            # A new call is always routed here, whatever Route set it was given: the ESRP
            # is the routing authority for emergency calls (never bypassed, never dropped).
            self._new_call(key, request, source)
            return
        if (
            method == "ACK"
            or in_dialog
            or (
                request.headers.get("Route")
                and not self._top_route_is_ours_only(request)
            )
        ):
            self._forward_stateless(request, source)
            return
        if request.headers.get("Route"):
            request.headers.pop_first("Route")
        if method == "OPTIONS":
            headers = [("Allow", ALLOW), ("Accept", ACCEPT), ("Supported", SUPPORTED)]
            self._answer(
                key,
                request,
                source,
                make_response(
                    request, 200, to_tag=secrets.token_hex(5), headers=headers
                ),
            )
        elif method == "BYE":
            self._answer(
                key,
                request,
                source,
                make_response(request, 481, to_tag=secrets.token_hex(5)),
            )
        else:
            self._answer(
                key,
                request,
                source,
                make_response(
                    request,
                    405,
                    to_tag=secrets.token_hex(5),
                    headers=[("Allow", ALLOW)],
                ),
            )

    def _answer(
        self, key: Any, request: Request, source: Source, response: Response
    ) -> None:
        """Answer a non-INVITE request through a server transaction."""
        tx = ServerNonInviteTransaction(request, reliable=is_reliable(source.transport))
        entry = _ServerEntry(tx, source)
        self._servers[key] = entry
        tx.start()
        self._run_stx(key, entry, tx.send_response(response))

    def _own_routes(self, message: Message) -> tuple[str, ...]:
        """An in-dialog request's leading Route entries that name us (as received, before
        loose routing pops them): where the call logger finds the i3 identifiers we put
        in our Record-Route, for a call another node of the cluster set up."""
        if not isinstance(message, Request) or message.to_tag is None:
            return ()
        out: list[str] = []
        for value in message.headers.get_all("Route"):
            if not self._is_ours(value):
                break
            out.append(value)
        return tuple(out)

    def _top_route_is_ours_only(self, request: Request) -> bool:
        """The Route set is just us (a first request sent to us with a preloaded route)."""
        routes = request.headers.get_all("Route")
        return len(routes) == 1 and self._is_ours(routes[0])

    def _is_ours(self, value: str) -> bool:
        try:
            uri = parse_name_addr(value).uri if "<" in value else parse_uri(value)
        except SipParseError:
            return False
        if not isinstance(uri, SipUri):
            return False
        host = uri.host.strip("[]").lower()
        port = uri.port or 5060
        if host in self.cluster_names:
            return True  # the cluster's name, on whatever port its SRV records give
        return (
            host in {self.host.lower(), self.advertised_host.lower()}
            and port == self.port
        )

    # -- server transactions -------------------------------------------------------------

    def _run_stx(self, key: Any, entry: _ServerEntry, events: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        for event in events:
            if isinstance(event, Send):
                self._send(event.message, entry.source, reply=True)
            elif isinstance(event, TxStartTimer):
                old = self._stx_timers.pop((key, event.name), None)
                if old is not None:
                    old.cancel()
                self._stx_timers[(key, event.name)] = loop.call_later(
                    event.delay, self._stx_timer, key, event.name
                )
            elif isinstance(event, TxCancelTimer):
                old = self._stx_timers.pop((key, event.name), None)
                if old is not None:
                    old.cancel()
            elif isinstance(event, Terminated):
                if self._servers.get(key) is entry:
                    del self._servers[key]
                # Break the call <-> entry cycle so that reference counting frees the call
                # now: a cycle would wait for a full collection, a pause under load.
                entry.call = None
                for name in [n for k, n in self._stx_timers if k == key]:
                    self._stx_timers.pop((key, name)).cancel()
            elif (
                isinstance(event, Deliver)
                and isinstance(event.message, Request)
                and event.message.method == "ACK"
            ):
                # an ACK to our relayed 2xx delivered by the transaction: forward it on
                self._forward_stateless(event.message, entry.source)
            elif isinstance(event, Timeout | TransportError):
                self.stats["server_tx_failures"] += 1

    def _stx_timer(self, key: Any, name: str) -> None:
        try:
            self._stx_timers.pop((key, name), None)
            entry = self._servers.get(key)
            if entry is not None:
                self._run_stx(key, entry, entry.tx.timer(name))
        except Exception:
            self.stats["errors"] += 1
            log.exception("ESRP element: server transaction timer failed")

    def _upstream(self, call: _Call, response: Response) -> None:
        """Send a response to the caller through the call's server transaction."""
        entry = call.entry
        if response.status == 100:
            if entry.sent_trying:
                return
            entry.sent_trying = True
        elif response.status < 200:
            call.alerted = True  # a PSAP is ringing: a hang-up now is on its own abandoned list
        if self.overload is not None:
            now = asyncio.get_running_loop().time()
            self.overload.add_feedback(response, now)  # RFC 7339 5.2, if asked for
            if response.status >= 200 and call.admitted:
                self._release(call, now)
        try:
            events = entry.tx.send_response(response)
        except TransactionError:
            if 200 <= response.status < 300:
                self._send(
                    response, entry.source, reply=True
                )  # a late 2xx: still relayed
            return
        self._run_stx(call.key, entry, events)

    # -- new calls -----------------------------------------------------------------------

    def _new_call(self, key: Any, request: Request, source: Source) -> None:
        # A preloaded Route set (to us, RFC 3261 16.4, or beyond) is not followed: the
        # policy routing decides where the call goes.
        dropped_routes = request.headers.get_all("Route")
        request.headers.remove("Route")
        reliable = is_reliable(source.transport)
        tx: ServerInviteTransaction | ServerNonInviteTransaction
        if request.method == "INVITE":
            tx = ServerInviteTransaction(request, reliable=reliable)
            tx.start(trying=False)
        else:
            tx = ServerNonInviteTransaction(request, reliable=reliable)
            tx.start()
        entry = _ServerEntry(tx, source)
        self._servers[key] = entry
        loop = asyncio.get_running_loop()
        record = CallRecord(
            request.call_id,
            request.method,
            loop.time(),
            f"{source.transport}:{source.host}:{source.port}",
        )
        self._remember(record)
        call = _Call(key, entry, record)
        entry.call = call
        self.stats["calls_in"] += 1
        if dropped_routes:
            record.events.append(
                f"incoming Route set removed: {', '.join(dropped_routes)}"
            )
        if request.method == "INVITE":
            self._upstream(call, make_response(request, 100))
        if self.overload is not None and not self._admit(call, request, source):
            return
        self._spawn(self._route_call(call, request, source))

    # -- overload control (RFC 7339) -----------------------------------------------------

    def _admit(self, call: _Call, request: Request, source: Source) -> bool:
        """Whether to route the call now. A call that cannot be held is answered 503 with
        Retry-After (the originating network tries its other routes) and, if it is an
        emergency call, leaves a callback record; a call given a waiting place is routed
        when one frees (``_release``)."""
        assert self.overload is not None
        record = call.record
        verdict = self.overload.admit(request, asyncio.get_running_loop().time())
        if isinstance(verdict, Reject):
            self.stats["overload_rejected"] += 1
            if verdict.callback is not None:
                self.callbacks.append(verdict.callback)
            record.outcome, record.status = "overloaded", 503
            record.events.append(
                f"overload: {verdict.reason}; 503 with Retry-After"
                + ("; callback record kept" if verdict.callback is not None else "")
            )
            extra = [
                (name, value)
                for name in ("Retry-After", "Reason")
                if (value := verdict.response.headers.get(name)) is not None
            ]
            self._final_local(
                call,
                make_response(request, 503, to_tag=secrets.token_hex(5), headers=extra),
            )
            return False
        call.admitted = True
        if verdict.queued:
            call.queued = True
            self.stats["overload_queued"] += 1
            record.events.append("overload: all places taken; waiting for one")
            self._waiting[record.call_id] = (call, request, source)
            return False
        return True

    def _release(self, call: _Call, now: float) -> None:
        """The call's INVITE transaction is over: free its place, route who was waiting."""
        assert self.overload is not None
        call.admitted = False
        self._waiting.pop(call.record.call_id, None)
        for promote in self.overload.release(call.record.call_id, now):
            waiting = self._waiting.pop(promote.call_id, None)
            if waiting is None:
                continue
            promoted, request, source = waiting
            promoted.queued = False
            promoted.record.events.append("overload: a place freed; routed")
            self._spawn(self._route_call(promoted, request, source))

    def _remember(self, record: CallRecord) -> None:
        self.records[record.call_id] = record
        self.records.move_to_end(record.call_id)
        while len(self.records) > MAX_RECORDS:
            self.records.popitem(last=False)

    async def _route_call(self, call: _Call, request: Request, source: Source) -> None:
        """Route the call; on an unexpected failure answer 500 rather than leave the
        caller with only a 100 Trying (a silent drop)."""
        try:
            await self._route_call_inner(call, request, source)
        except Exception as exc:
            self.stats["errors"] += 1
            call.record.events.append(f"internal error ({type(exc).__name__}: {exc})")
            log.exception("ESRP element: routing a call failed")
            if call.proxy is None or not getattr(call.proxy, "done", True):
                try:
                    self._final_local(
                        call, make_response(request, 500, to_tag=secrets.token_hex(5))
                    )
                except Exception:
                    log.exception("ESRP element: could not answer 500")

    async def _route_call_inner(
        self, call: _Call, request: Request, source: Source
    ) -> None:
        record = call.record
        forward = request
        source_id: str | None = None
        diverted = False
        suspect = False  # a TDoS suspect (firebox.bcf.conditions): screened, never cascaded
        try:
            outcome = self.bcf.process(request, source.host, time.monotonic())
            record.events += outcome.log
            source_id = outcome.source_id
            if self.call_log is not None:
                marked = outcome.marked
                self.call_log.identified(
                    request.call_id,
                    marked.call_id if marked else None,
                    marked.incident_id if marked else None,
                )
            if outcome.action is Action.REJECT and outcome.response is not None:
                self.stats["rejected"] += 1
                record.outcome, record.status = "rejected", outcome.response.status
                self._final_local(call, outcome.response)
                return
            if outcome.request is not None:
                forward = outcome.request
            if outcome.action is Action.DIVERT:
                diverted = True
                suspect = outcome.suspect
                self.stats["diverted"] += 1
                if outcome.callback is not None:
                    self.callbacks.append(outcome.callback)
                record.events.append(
                    "BCF diverted the call: callback record kept, and the call is still routed"
                )
        except Exception as exc:
            self.stats["bcf_errors"] += 1
            record.events.append(
                f"BCF failed ({type(exc).__name__}: {exc}); routed unmarked"
            )
            log.exception("BCF failed")
        decision: RouteDecision | None = None
        if self.call_log is not None:
            self.call_log.identified(request.call_id, None, None)  # no-op once marked
        try:
            if self.call_log is not None:
                with self.call_log.routing(request.call_id):
                    routed = await self.router.route(forward, source=source_id)
                self.call_log.routed(request.call_id, routed.decision, routed.ecrf_uri)
            else:
                routed = await self.router.route(forward, source=source_id)
            forward, decision = routed.request, routed.decision
            record.events += routed.log
            call.location = _location_view(routed.location, routed.location_how)
        except Exception as exc:
            self.stats["router_errors"] += 1
            record.events.append(
                f"router failed ({type(exc).__name__}: {exc}); default route"
            )
            log.exception("ESRP router failed")
            try:
                decision = self._default_decision(forward)
                record.events += decision.log
            except Exception as exc2:
                record.events.append(
                    f"default route failed too ({type(exc2).__name__}: {exc2})"
                )
                log.exception("ESRP default route failed")
        call.emergency = _is_emergency(forward)
        if decision is not None:
            call.owner = next((d.psap_id for d in decision.destinations if d.psap_id), None)
        if call.cancelled:
            self._cancelled_before_routing(call)
            return
        if decision is None or not decision.destinations:
            self.stats["failed"] += 1
            record.outcome, record.status = "failed", 500
            self._unconnected(call, WorklistReason.ERROR, "no route (500)")
            self._final_local(
                call, make_response(request, 500, to_tag=secrets.token_hex(5))
            )
            return
        if decision.busy:
            self.stats["busy"] += 1
            if decision.callback is not None:
                self.callbacks.append(decision.callback)
            record.outcome, record.status = "busy", 486
            record.events.append(
                "policy: busy; callback record handed on; 486 to the caller"
            )
            self._unconnected(call, WorklistReason.BUSY, f"policy busy ({', '.join(decision.matched_rules)})")
            self._final_local(
                call, make_response(request, 486, to_tag=secrets.token_hex(5))
            )
            return
        if decision.notifications:
            self._notify_policy(decision, forward)
        destinations = list(decision.destinations)
        # A TDoS suspect goes to the screening answer (``screen_to``, else ``divert_to``);
        # any other diverted call to ``divert_to`` when there is one.
        divert = (self.screen_to or self.divert_to) if suspect else self.divert_to
        if diverted and divert:
            # NENA i3 4.1: a diverted call goes to the announcement-and-callback service;
            # should that fail, the normal route follows (never a dead end).
            destinations.insert(0, Destination(
                divert, DestinationKind.DIVERSION, None,
                "BCF diverted the call: announcement and callback",
            ))  # fmt: skip
            if suspect:
                # During a TDoS the screening answer or, failing it, the callback worklist:
                # a flood must not cascade through every PSAP and business line.
                del destinations[1:]
                record.events.append(f"TDoS suspect: to {divert}, else the callback worklist")
            else:
                record.events.append(f"diverted to {divert} first, then the normal route")
        targets = [self._target(d.uri, d.kind) for d in destinations]
        call.transport = self._address(targets[0])[2]
        via_transport = call.transport.upper()
        rr = None
        if self.record_route and forward.method == "INVITE":
            rr = self.record_route_uri + self._dialog_params(request) + (
                ";transport=tcp" if source.transport == "tcp" else ""
            )
        try:
            if forward.method == "INVITE":
                call.proxy = ProxyCall(
                    forward, targets, self.advertised_host, self.port, via_transport,
                    self.no_provisional_timeout, record_route=rr,
                )  # fmt: skip
            else:
                call.proxy = _MessageCall(
                    forward,
                    targets,
                    self.advertised_host,
                    self.port,
                    via_transport,
                    self.no_provisional_timeout,
                )
            events = call.proxy.start(asyncio.get_running_loop().time())
        except Exception as exc:
            self.stats["errors"] += 1
            record.events.append(f"proxy failed to start ({type(exc).__name__}: {exc})")
            log.exception("proxy start failed")
            self._unconnected(call, WorklistReason.ERROR, f"proxy failed to start ({type(exc).__name__})")
            self._final_local(
                call, make_response(request, 500, to_tag=secrets.token_hex(5))
            )
            return
        self._run(call, events)

    def _dialog_params(self, request: Request) -> str:
        """The call's i3 identifiers (as the call logger holds them) and caller's From tag
        as parameters of our Record-Route URI (RFC 3261 19.1.1): any node of the cluster
        that carries an in-dialog request logs it under the call's own identifiers
        (NENA-STA-010.3 4.12), with no state shared between nodes. Empty when not logged."""
        if self.call_log is None:
            return ""
        call_id, incident_id = self.call_log.ids(request.call_id)
        if call_id is None:
            return ""
        return route_params(call_id, incident_id, request.from_tag)

    def _notify_policy(self, decision: RouteDecision, request: Request) -> None:
        """Send the policy's notify actions: a SIP MESSAGE (RFC 3428) with a JSON summary of
        the call to each target that is a SIP URI; other targets are only recorded. Sent
        and forgotten: a notification never holds a call up."""
        first = decision.destinations[0].uri if decision.destinations else None
        ids = {
            purpose: value[value.find("<") + 1 : value.find(">")]
            for value in request.headers.get_all("Call-Info")
            for purpose in ("emergency-CallId", "emergency-IncidentId")
            if f"purpose={purpose}" in value and "<" in value
        }
        for note in decision.notifications:
            target = note.target.strip()
            if not target.lower().startswith(("sip:", "sips:")):
                self.notified["unsendable"] += 1
                log.info("policy notify to %s (%s): not a SIP URI, recorded only", target, note.rule_id)
                continue
            body = json.dumps({
                "event": "policy-notify", "ruleId": note.rule_id, "reason": note.reason,
                "callIdSip": note.call_id, "callId": ids.get("emergency-CallId"),
                "incidentId": ids.get("emergency-IncidentId"), "caller": caller_uri(request),
                "destination": first, "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            }, separators=(",", ":")).encode()  # fmt: skip
            transport = self._address(Target(target))[2]
            message = Request("MESSAGE", target, Headers([
                ("Via", f"SIP/2.0/{transport.upper()} {self.advertised_host}:{self.port};branch={new_branch()}"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{self.element_id}>;tag={secrets.token_hex(5)}"),
                ("To", f"<{target}>"),
                ("Call-ID", secrets.token_hex(12)),
                ("CSeq", "1 MESSAGE"),
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
            ]), body)  # fmt: skip

            def sent(response: Response, target: str = target) -> None:
                self.notified["sent" if response.status < 300 else "refused"] += 1
                if response.status >= 300:
                    log.info("policy notify to %s answered %s", target, response.status)

            def failed(target: str = target) -> None:
                self.notified["failed"] += 1
                log.info("policy notify to %s: no answer", target)

            self.outbound.request(message, sent, failed)

    def _default_decision(self, request: Request) -> RouteDecision:
        ctx = CallContext(
            call_id=request.call_id,
            service_urn="urn:service:sos",
            medium=CallMedium.TEXT if request.method == "MESSAGE" else CallMedium.VOICE,
            callback=caller_uri(request),
        )
        return decide(
            ctx, None, self.router.states, [], self.router.chains, datetime.now(UTC),
            self.router.last_resort,
        )

    def _target(self, uri: str, kind: DestinationKind) -> Target:
        rewrite = kind is DestinationKind.BUSINESS_LINE
        if kind is DestinationKind.CATCH_ALL and (
            "user=phone" in uri or uri.lower().startswith("tel:")
        ):
            rewrite = True
        return Target(uri, rewrite_uri=rewrite)

    def _address(self, target: Target) -> Address:
        uri = target.route or target.uri
        found = None
        try:
            found = self.resolve(uri)
        except Exception:
            log.exception("resolve(%s) failed", uri)
        if found is not None:
            return (found[0], int(found[1]), found[2].lower())
        return self._uri_address(uri) or (self.advertised_host, 5060, "udp")

    @staticmethod
    def _uri_address(uri: str) -> Address | None:
        try:
            parsed = parse_uri(uri.strip().strip("<>"))
        except SipParseError:
            return None
        if not isinstance(parsed, SipUri):
            return None
        transport = parsed.transport or ("tls" if parsed.scheme == "sips" else "udp")
        port = parsed.port or (5061 if transport == "tls" else 5060)
        return (parsed.host.strip("[]"), port, transport)

    def _final_local(self, call: _Call, response: Response) -> None:
        self._upstream(call, response)
        call.record.done_at = asyncio.get_running_loop().time()
        call.record.events.append(f"answered {response.status} locally")
        if self.call_log is not None:
            self.call_log.ended(
                call.record.call_id, f"answered {response.status} {response.reason} locally"
            )

    def _unconnected(self, call: _Call, reason: WorklistReason, detail: str) -> None:
        """An emergency call ends without a person: onto the callback worklist."""
        if not call.emergency:
            return
        request = call.entry.tx.request
        entry = self.worklist.add(
            call.record.call_id, reason, time.time(), callback=_callback_number(request), location=call.location,
            owner=call.owner, tried=[uri for uri, _, _ in call.record.forwards], detail=detail,
        )  # fmt: skip
        self.stats["worklist"] += 1
        call.record.events.append(f"callback worklist {entry.id}: {reason.value} ({detail}); for {call.owner}")
        log.warning("911 call %s not connected (%s): callback worklist %s for %s", call.record.call_id, detail,
                    entry.id, call.owner)  # fmt: skip

    def _cancelled_before_routing(self, call: _Call) -> None:
        self.stats["cancelled"] += 1
        self._unconnected(call, WorklistReason.ABANDONED, "caller hung up while the call was being routed")
        call.record.outcome, call.record.status = "cancelled", 487
        self._final_local(
            call, make_response(call.entry.tx.request, 487, to_tag=secrets.token_hex(5))
        )

    # -- CANCEL --------------------------------------------------------------------------

    def _on_cancel(self, cancel: Request, source: Source) -> None:
        key = self._skey(cancel)
        entry = self._servers.get(key)
        if entry is not None:  # a retransmitted CANCEL
            self._run_stx(key, entry, entry.tx.receive(cancel))
            return
        try:
            target_key = cancel_target_key(cancel)
        except TransactionKeyError:
            target_key = (
                "2543",
                cancel.call_id,
                cancel.cseq[0],
                cancel.from_tag,
                cancel.branch,
                "INVITE",
            )
        invite_entry = self._servers.get(target_key)
        call = invite_entry.call if invite_entry is not None else None
        tx = ServerNonInviteTransaction(cancel, reliable=is_reliable(source.transport))
        entry = _ServerEntry(tx, source)
        self._servers[key] = entry
        tx.start()
        if call is None:
            self._run_stx(
                key,
                entry,
                tx.send_response(
                    make_response(cancel, 481, to_tag=secrets.token_hex(5))
                ),
            )
            return
        call.record.events.append("CANCEL from the caller")
        if call.proxy is None:  # still routing: answer now, 487 once routing is over
            call.cancelled = True
            self._run_stx(key, entry, tx.send_response(make_response(cancel, 200)))
            if call.queued:  # never routed: it ends here
                call.queued = False
                self._cancelled_before_routing(call)
            return
        if not call.alerted and not getattr(call.proxy, "done", False):
            # The caller gave up before any PSAP alerted: on the worklist now, not when the
            # silent branch's CANCEL times out (up to 64*T1 later).
            self._unconnected(call, WorklistReason.ABANDONED, "caller hung up before any PSAP alerted")
        self._run(
            call,
            call.proxy.cancel(cancel, asyncio.get_running_loop().time()),
            cancel_entry=(key, entry),
        )

    # -- proxy events --------------------------------------------------------------------

    def _run(
        self,
        call: _Call,
        events: list[ProxyEvent],
        cancel_entry: tuple[Any, _ServerEntry] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        record = call.record
        for event in events:
            try:
                if isinstance(event, Forward):
                    address = call.addresses.get(event.branch)
                    if address is None:
                        address = call.addresses[event.branch] = self._address(
                            event.target
                        )
                        self._branches[event.branch] = call
                        record.forwards.append(
                            (event.target.uri, event.branch, loop.time())
                        )
                        record.events.append(
                            f"forward to {event.target.uri} at {address[0]}:{address[1]}/{address[2]}"
                        )
                        self.destinations.setdefault(event.target.uri, Counter())[
                            "tried"
                        ] += 1
                    self._send_down(call, event.request, event.branch, address)
                elif isinstance(event, SendAck | SendCancel):
                    address = call.addresses.get(event.branch)
                    if address is not None:
                        self._send_down(call, event.request, event.branch, address)
                elif isinstance(event, SendUpstream):
                    response = event.response
                    if response.cseq[1] == "CANCEL":
                        if cancel_entry is not None:
                            self._run_stx(
                                cancel_entry[0],
                                cancel_entry[1],
                                cancel_entry[1].tx.send_response(response),
                            )
                        continue
                    self._upstream(call, response)
                elif isinstance(event, StartTimer):
                    old = call.timers.pop(event.name, None)
                    if old is not None:
                        old.cancel()
                    call.timers[event.name] = loop.call_later(
                        event.delay, self._proxy_timer, call, event.name
                    )
                elif isinstance(event, CancelTimer):
                    old = call.timers.pop(event.name, None)
                    if old is not None:
                        old.cancel()
                elif isinstance(event, Failover):
                    self.stats["failovers"] += 1
                    record.failovers.append(event)
                    nxt = event.to_target.uri if event.to_target else "nothing left"
                    record.events.append(
                        f"failover from {event.from_target.uri} ({event.reason}) to {nxt}"
                    )
                    self.destinations.setdefault(event.from_target.uri, Counter())[
                        "failed"
                    ] += 1
                    if self.call_log is not None:
                        self.call_log.failover(
                            record.call_id,
                            event.from_target.uri,
                            event.to_target.uri if event.to_target else None,
                            event.reason,
                            event.status,
                        )
                elif isinstance(event, Done):
                    self._done(call, event)
            except Exception:
                self.stats["errors"] += 1
                log.exception(
                    "ESRP element: proxy event %r failed", type(event).__name__
                )
        self._maybe_forget(call)

    def _done(self, call: _Call, event: Done) -> None:
        record = call.record
        record.outcome = event.outcome.value
        record.status = event.status
        record.target = event.target.uri if event.target else None
        record.done_at = event.at
        record.events.append(
            f"done: {event.outcome.value} {event.status}"
            + (f" by {record.target}" if record.target else "")
        )
        if event.outcome is Outcome.ANSWERED:
            self.stats["answered"] += 1
            if isinstance(call.proxy, ProxyCall):
                for branch, br in call.proxy.branches.items():
                    if br.target is event.target and branch in call.addresses:
                        self._dialogs[record.call_id] = (
                            call.entry.source,
                            call.addresses[branch],
                        )
                while len(self._dialogs) > MAX_RECORDS:
                    self._dialogs.popitem(last=False)
            if event.target is not None:
                self.destinations.setdefault(event.target.uri, Counter())[
                    "answered"
                ] += 1
        elif event.outcome is Outcome.CANCELLED:
            self.stats["cancelled"] += 1
            if not call.alerted:
                self._unconnected(call, WorklistReason.ABANDONED, "caller hung up before any PSAP alerted")
        else:
            self.stats["failed"] += 1
            self._unconnected(call, WorklistReason.FAILED, f"every destination failed; final {event.status}")
        if self.call_log is not None and (
            event.outcome is not Outcome.ANSWERED or record.method == "MESSAGE"
        ):
            # An answered INVITE ends with its BYE; anything else ends here.
            self.call_log.ended(record.call_id, f"{event.outcome.value} {event.status}")

    def _send_down(
        self, call: _Call, request: Request, branch: str, address: Address
    ) -> None:
        assert self.server is not None
        host, port, transport = address
        if transport != call.transport:
            request = _with_via_transport(request, transport)
        if transport == "udp":
            self._send(request, (host, port))
            return
        self._spawn(self._send_stream(call, request, branch, address))

    async def _send_stream(
        self, call: _Call, request: Request, branch: str, address: Address
    ) -> None:
        assert self.server is not None
        if self.call_log is not None:
            self.call_log.sending(request, address)
        try:
            await self.server.send_async(request, address)
        except (OSError, ConnectionError) as exc:
            call.record.events.append(
                f"transport error to {address[0]}:{address[1]}/{address[2]}: {exc}"
            )
            if self.sip_resolver is not None:  # RFC 3263 4.3: try it last for a while
                self.sip_resolver.mark_failed(address)
            if call.proxy is not None and request.method == "INVITE":
                self._run(
                    call,
                    call.proxy.transport_error(
                        branch, asyncio.get_running_loop().time()
                    ),
                )

    def _proxy_timer(self, call: _Call, name: str) -> None:
        try:
            call.timers.pop(name, None)
            if call.proxy is not None:
                self._run(
                    call, call.proxy.timer(name, asyncio.get_running_loop().time())
                )
        except Exception:
            self.stats["errors"] += 1
            log.exception("ESRP element: proxy timer %s failed", name)

    def _maybe_forget(self, call: _Call) -> None:
        proxy = call.proxy
        if proxy is None or not proxy.finished:
            return
        for branch in list(call.addresses):
            if self._branches.get(branch) is call:
                del self._branches[branch]
        for handle in call.timers.values():
            handle.cancel()
        call.timers.clear()

    # -- responses -----------------------------------------------------------------------

    def _on_response(self, response: Response, source: Source) -> None:
        if self.outbound.on_response(response):
            return
        branch = response.branch or ""
        call = self._branches.get(branch)
        if call is not None and call.proxy is not None:
            self._run(
                call,
                call.proxy.receive_response(
                    response, asyncio.get_running_loop().time()
                ),
            )
            return
        # 16.7/16.11: no context: forward statelessly by the next Via, if the top one is ours
        if not branch.startswith(MAGIC_COOKIE):
            return
        try:
            top = response.top_via
        except SipParseError:
            return
        if not self._is_ours(f"sip:{top.host}:{top.port or 5060}"):
            self.stats["stray_responses"] += 1
            return
        out = Response(
            response.status,
            response.reason,
            response.headers.copy(),
            response.body,
            response.version,
        )
        out.headers.pop_first("Via")
        if out.headers.get("Via") is None:
            return
        try:
            dest = via_destination(out)
        except SipParseError:
            return
        self.stats["stateless_responses"] += 1
        self._send(out, dest)

    # -- in-dialog requests, stateless (RFC 3261 16.11, 16.12) ---------------------------

    def _forward_stateless(self, request: Request, source: Source) -> None:
        headers = request.headers.copy()
        try:
            max_forwards = request.max_forwards
        except SipParseError:
            max_forwards = 70
        if max_forwards <= 0:
            if request.method != "ACK":
                self._send(make_response(request, 483), source, reply=True)
            return
        routes = headers.get_all("Route")
        while routes and self._is_ours(routes[0]):
            headers.pop_first("Route")
            routes = routes[1:]
        uri = request.uri
        address: Address | None = None
        next_hop = routes[0] if routes else uri
        try:
            next_uri = (
                str(parse_name_addr(next_hop).uri) if "<" in next_hop else next_hop
            )
        except SipParseError:
            next_uri = next_hop
        if not routes and self._is_ours(uri):
            address = None  # a request for us: only the dialog table can tell
        else:
            try:
                address = self.resolve(next_uri)
            except Exception:  # noqa: BLE001
                address = None
            if address is None:
                address = self._uri_address(next_uri)
        if address is None:
            known = self._dialogs.get(request.call_id)
            if known is not None:
                caller, callee = known
                came_from_caller = (
                    source.host == caller.host and source.port == caller.port
                )
                address = (
                    callee
                    if came_from_caller
                    else (caller.host, caller.port, caller.transport)
                )
        if address is None:
            self.stats["unroutable_in_dialog"] += 1
            if request.method != "ACK":
                self._send(
                    make_response(
                        request,
                        404,
                        "No Route To Next Hop",
                        to_tag=secrets.token_hex(5),
                    ),
                    source,
                    reply=True,
                )
            return
        headers.set(
            "Max-Forwards", str(max_forwards - 1)
        ) if "Max-Forwards" in headers else headers.insert_first("Max-Forwards", "70")
        branch = (
            MAGIC_COOKIE
            + hashlib.sha1(
                f"{request.branch}|{request.call_id}|{request.headers.get('CSeq')}|{request.method}".encode()
            ).hexdigest()[:16]
        )
        headers.insert_first(
            "Via",
            f"SIP/2.0/{address[2].upper()} {self.advertised_host}:{self.port};branch={branch}",
        )
        out = Request(request.method, uri, headers, request.body, request.version)
        self.stats["in_dialog_forwarded"] += 1
        self._send(out, (address[0], address[1], address[2]))


def _resolve_chain(resolve: Resolver, sip_resolver: SipResolver) -> Resolver:
    """The deployment's own table first, then RFC 3263 (``firebox.sip.resolve``)."""

    def chained(uri: str) -> Address | None:
        try:
            found = resolve(uri)
        except Exception:  # noqa: BLE001 -- a broken table must not stop resolution
            log.exception("resolve(%s) failed", uri)
            found = None
        return found if found is not None else sip_resolver(uri)

    return chained


def _is_emergency(request: Request) -> bool:
    """An emergency call as the BCF marked it (``urn:service:sos`` and its sub-services), not
    an i3 test call (``urn:service:test.sos``)."""
    return str(request.uri).lower().startswith("urn:service:sos")


def _callback_number(request: Request) -> str | None:
    uri = caller_uri(request)
    return normalize_callback(uri) if uri else None


def _location_view(location: Any, how: str) -> Any:
    """The routed location as the PSAP's console shows it (None when it has no shape)."""
    try:
        return location_view(location, "default" if how == "default" else how)
    except Exception:  # noqa: BLE001 -- a location we cannot draw is still a call to call back
        log.debug("worklist: no drawable location", exc_info=True)
        return None


def _with_via_transport(request: Request, transport: str) -> Request:
    """A copy of ``request`` whose top Via names ``transport`` (a target reached over
    another transport than the proxy's default)."""
    headers = request.headers.copy()
    top = headers.pop_first("Via") or ""
    parts = top.split(None, 1)
    if len(parts) == 2:
        top = f"SIP/2.0/{transport.upper()} {parts[1]}"
    headers.insert_first("Via", top)
    return Request(request.method, request.uri, headers, request.body, request.version)


class _MessageCall:
    """Serial failover for a MESSAGE (text to 911), like ``ProxyCall`` for INVITE: each
    target in turn, a non-2xx final answer, a timeout, a transport error or no response at
    all within ``no_response_timeout`` moves on; the best response goes upstream when every
    target failed. Same events as ``ProxyCall``."""

    def __init__(
        self,
        request: Request,
        targets: list[Target],
        host: str,
        port: int,
        transport: str,
        no_response_timeout: float,
    ) -> None:
        self.request = request
        self.targets = targets
        self.host, self.port, self.transport = host, port, transport.upper()
        self.no_response_timeout = no_response_timeout
        self.reliable = is_reliable(transport)
        self.index = -1
        self.branches: dict[str, tuple[Target, ClientNonInviteTransaction]] = {}
        self.current: str | None = None
        self.responses: list[Response] = []
        self.done = False
        self.now: float | None = None

    @property
    def finished(self) -> bool:
        return self.done

    def start(self, now: float | None = None) -> list[ProxyEvent]:
        self.now = now
        events: list[ProxyEvent] = []
        self._next(events)
        return events

    def _next(self, events: list[ProxyEvent]) -> None:
        self.index += 1
        if self.index >= len(self.targets):
            chosen = best_response(self.responses)
            status = (
                408
                if chosen is None
                else (500 if chosen.status == 503 else chosen.status)
            )
            response = make_response(self.request, status, to_tag=secrets.token_hex(5))
            if chosen is not None and chosen.status == status:
                response = Response(
                    chosen.status,
                    chosen.reason,
                    chosen.headers.copy(),
                    chosen.body,
                    chosen.version,
                )
                response.headers.pop_first("Via")
            events.append(SendUpstream(response))
            self.done = True
            events.append(Done(Outcome.FAILED, status, None, self.now))
            return
        target = self.targets[self.index]
        branch = new_branch()
        headers = self.request.headers.copy()
        uri = self.request.uri
        if target.rewrite_uri:
            uri = target.uri
        else:
            headers.insert_first("Route", f"<{target.uri};lr>")
        mf = self.request.max_forwards
        headers.set(
            "Max-Forwards", str(mf - 1)
        ) if "Max-Forwards" in headers else headers.insert_first("Max-Forwards", "70")
        headers.insert_first(
            "Via", f"SIP/2.0/{self.transport} {self.host}:{self.port};branch={branch}"
        )
        request = Request(
            self.request.method, uri, headers, self.request.body, self.request.version
        )
        tx = ClientNonInviteTransaction(request, reliable=self.reliable)
        self.branches[branch] = (target, tx)
        self.current = branch
        self._tx_events(events, branch, tx.start())
        events.append(StartTimer(f"{branch}/response", self.no_response_timeout))

    def _tx_events(
        self, events: list[ProxyEvent], branch: str, tx_events: list[Any]
    ) -> None:
        target = self.branches[branch][0]
        for ev in tx_events:
            if isinstance(ev, Send):
                events.append(Forward(ev.message, target, branch))  # type: ignore[arg-type]
            elif isinstance(ev, TxStartTimer):
                events.append(StartTimer(f"{branch}/tx/{ev.name}", ev.delay))
            elif isinstance(ev, TxCancelTimer):
                events.append(CancelTimer(f"{branch}/tx/{ev.name}"))
            elif branch != self.current or self.done:
                continue
            elif isinstance(ev, Deliver) and isinstance(ev.message, Response):
                response = ev.message
                if response.status < 200:
                    events.append(CancelTimer(f"{branch}/response"))
                    continue
                events.append(CancelTimer(f"{branch}/response"))
                if response.status < 300:
                    out = Response(
                        response.status,
                        response.reason,
                        response.headers.copy(),
                        response.body,
                        response.version,
                    )
                    out.headers.pop_first("Via")
                    events.append(SendUpstream(out))
                    self.done = True
                    events.append(
                        Done(Outcome.ANSWERED, response.status, target, self.now)
                    )
                else:
                    self.responses.append(response)
                    self._fail(
                        events,
                        target,
                        f"{response.status} {response.reason}",
                        response.status,
                    )
            elif isinstance(ev, Timeout):
                self._fail(events, target, "no response (Timer F)", 408)
            elif isinstance(ev, TransportError):
                self._fail(events, target, "transport error", 503)

    def _fail(
        self, events: list[ProxyEvent], target: Target, reason: str, status: int
    ) -> None:
        nxt = (
            self.targets[self.index + 1] if self.index + 1 < len(self.targets) else None
        )
        events.append(Failover(target, reason, status, nxt, self.now))
        self.current = None
        self._next(events)

    def receive_response(
        self, response: Response, now: float | None = None
    ) -> list[ProxyEvent]:
        self.now = now
        found = self.branches.get(response.branch or "")
        if found is None:
            return []
        events: list[ProxyEvent] = []
        self._tx_events(events, response.branch or "", found[1].receive(response))
        return events

    def timer(self, name: str, now: float | None = None) -> list[ProxyEvent]:
        self.now = now
        parts = name.split("/")
        found = self.branches.get(parts[0])
        events: list[ProxyEvent] = []
        if found is None:
            return events
        if parts[1] == "tx":
            self._tx_events(events, parts[0], found[1].timer(parts[2]))
        elif parts[1] == "response" and parts[0] == self.current and not self.done:
            self._fail(
                events,
                found[0],
                f"no response within {self.no_response_timeout:g} s",
                408,
            )
        return events

    def transport_error(
        self, branch: str, now: float | None = None
    ) -> list[ProxyEvent]:
        self.now = now
        found = self.branches.get(branch)
        events: list[ProxyEvent] = []
        if found is not None:
            self._tx_events(events, branch, found[1].transport_error())
        return events

    def cancel(self, cancel: Request, now: float | None = None) -> list[ProxyEvent]:
        return [
            SendUpstream(make_response(cancel, 481))
        ]  # MESSAGE cannot be cancelled (9.1)
