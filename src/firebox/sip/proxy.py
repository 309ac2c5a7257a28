"""Stateful proxy core for one emergency call, sans-I/O (RFC 3261 section 16).

``ProxyCall`` forwards one incoming INVITE to an ordered list of targets, one at a time
(serial forking, RFC 3261 16.6 and 16.7 with a single pending branch), as the ESRP's
policy routing gives them: the next target is tried when the current one fails, and the
last target is a business line, so reaching the end of the list means everything is down.

The object is the proxy's transaction user above the client side: it runs the INVITE
client transaction of each branch (and the CANCEL client transaction when it cancels one)
itself, from ``firebox.sip.transaction``, so the owner only does I/O. The server side is
the owner's: it runs a ``ServerInviteTransaction`` for the incoming INVITE (with
``start(trying=False)``: the 100 Trying comes from here) and passes every ``SendUpstream``
response through it, and a ``ServerNonInviteTransaction`` for an incoming CANCEL.

Inputs: ``start(now)``, ``receive_response(response)`` (a response from downstream, as
parsed), ``timer(name)`` (a timer started by a ``StartTimer`` expired), ``cancel(request)``
(a CANCEL from upstream matched to this call), ``transport_error(branch)``. Each returns a
list of events:

* ``Forward(request, target, branch)``: send the INVITE of a branch (``retransmission``
  True for a resend by Timer A). The next hop is the top ``Route`` or else the
  Request-URI (RFC 3263); every later message of the branch goes the same way.
* ``SendAck(request, branch)``: the ACK of a non-2xx final response (RFC 3261 17.1.1.3).
* ``SendCancel(request, branch)``: a CANCEL of a pending branch (RFC 3261 9.1, 16.10).
* ``SendUpstream(response)``: a response for the server transaction of the incoming
  INVITE (or, for the 200 to a CANCEL, the CANCEL's server transaction: see its CSeq).
* ``StartTimer(name, delay)`` / ``CancelTimer(name)``: proxy and transaction timers.
* ``Failover(from_target, reason, status, to_target)``: a target failed (for logging).
* ``Done(outcome, status, target)``: the call has its final answer upstream. Transactions
  may still run (retransmissions absorbed, Timer D/M): drop the object when ``finished``.

Failover policy (NG911, decided here): every final response other than 2xx moves on to
the next target, whatever its class: 486, 408, 5xx as asked, and also 3xx (no recursion in
this version), the other 4xx and 6xx, because an emergency call must reach a person and
the next target (ultimately a business line) may still take it. A branch also fails on its
INVITE transaction timing out (Timer B, as a 408: 16.7), on a transport error (as a 503:
16.9), when no provisional response (any 1xx, 100 included, as it proves the next hop has
the request) came within ``no_provisional_timeout``, and on Timer C (16.8, as a 408). When
the last target fails, the best response of RFC 3261 16.7 step 6 goes upstream (a 503
becomes 500; none at all, 408).

A branch given up without a provisional response cannot be cancelled yet (RFC 3261 9.1):
its INVITE transaction keeps running (retransmissions included) until Timer B, a late
provisional response gets it CANCELled, and a late 2xx still answers the call (it is
relayed, 16.7 step 5, and the branch being tried then is CANCELled). After a CANCEL from
upstream no new target is tried and 487 goes upstream, whatever the pending branch ends
with (except a 2xx, relayed: CANCEL and 200 crossed).

Not done here: loop detection and Proxy-Require (16.3 steps 4-5), removing our own
``Route`` value from the incoming request (16.4: the caller does it), recursion on 3xx,
aggregating 401/407 challenges, the ``Reason`` header on CANCEL.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from firebox.sip.address import SipUri, parse_uri
from firebox.sip.errors import SipParseError
from firebox.sip.headers import Headers
from firebox.sip.message import Request, Response, make_response, reason_phrase
from firebox.sip.transaction import (
    MAGIC_COOKIE,
    CancelTimer,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    Deliver,
    Event,
    Send,
    StartTimer,
    Terminated,
    Timeout,
    TimerValues,
    TransportError,
    is_reliable,
)

__all__ = [
    "CancelTimer",
    "Done",
    "Failover",
    "Forward",
    "Outcome",
    "ProxyCall",
    "ProxyEvent",
    "SendAck",
    "SendCancel",
    "SendUpstream",
    "StartTimer",
    "Target",
    "best_response",
    "new_branch",
]

#: 4xx responses that carry information for a resubmission (RFC 3261 16.7 step 6).
_PREFERRED_4XX = (401, 407, 415, 420, 484)


def new_branch() -> str:
    """A fresh branch with the magic cookie (RFC 3261 8.1.1.7, 16.6 step 8)."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def _new_tag() -> str:
    return secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class Target:
    """One destination of the call, as the ESRP's policy routing gives it.

    By default (the NG911 way) ``uri`` is a queue URI: it is put on top of the ``Route``
    set as ``<uri;lr>`` and the Request-URI (``urn:service:sos``...) stays unchanged. With
    ``rewrite_uri`` the Request-URI becomes ``uri`` instead (RFC 3261 16.6 step 2) and no
    Route is added for it. ``route``, when given, is an outbound proxy put on top of the
    Route set (``<route;lr>``, 16.6 step 7) in both cases."""

    uri: str
    route: str | None = None
    rewrite_uri: bool = False


class Outcome(Enum):
    """How the call ended upstream."""

    ANSWERED = "answered"  #: a 2xx was relayed
    FAILED = "failed"  #: every target failed; the best response was relayed
    CANCELLED = "cancelled"  #: upstream cancelled; 487 was sent
    REJECTED = "rejected"  #: not forwarded at all (483 Too Many Hops)


@dataclass(frozen=True, slots=True)
class Forward:
    """Send ``request`` (the INVITE of ``branch``) towards ``target``."""

    request: Request
    target: Target
    branch: str
    retransmission: bool = False


@dataclass(frozen=True, slots=True)
class SendAck:
    """Send the ACK of a non-2xx final response on ``branch`` (RFC 3261 17.1.1.3)."""

    request: Request
    branch: str


@dataclass(frozen=True, slots=True)
class SendCancel:
    """Send ``request``, a CANCEL of ``branch`` (RFC 3261 9.1), to the branch's next hop."""

    request: Request
    branch: str
    retransmission: bool = False


@dataclass(frozen=True, slots=True)
class SendUpstream:
    """Send ``response`` upstream through the server transaction of its request."""

    response: Response


@dataclass(frozen=True, slots=True)
class Failover:
    """``from_target`` failed with ``status`` (a response, or 408/503 for a local failure)
    for ``reason``; ``to_target`` is tried next (``None``: it was the last one)."""

    from_target: Target
    reason: str
    status: int
    to_target: Target | None
    at: float | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """The call has its final answer upstream: ``status`` sent, from ``target`` (``None``
    for a locally generated response)."""

    outcome: Outcome
    status: int
    target: Target | None
    at: float | None = None


ProxyEvent = (
    Forward | SendAck | SendCancel | SendUpstream | StartTimer | CancelTimer | Failover | Done
)


def best_response(responses: Sequence[Response]) -> Response | None:
    """The response to forward from a response context (RFC 3261 16.7 step 6): a 6xx if
    there is one, otherwise one of the lowest class; within 4xx one of 401, 407, 415, 420,
    484 first. The earliest received wins a tie. ``None`` for no response."""
    if not responses:
        return None
    six = [r for r in responses if r.status >= 600]
    if six:
        return six[0]
    lowest = min(r.status // 100 for r in responses)
    chosen = [r for r in responses if r.status // 100 == lowest]
    if lowest == 4:
        for r in chosen:
            if r.status in _PREFERRED_4XX:
                return r
    return chosen[0]


@dataclass(slots=True)
class _Branch:
    """One forwarded INVITE (RFC 3261 16.6) and its client transactions."""

    index: int
    target: Target
    branch: str
    request: Request
    invite_tx: ClientInviteTransaction
    cancel_tx: ClientNonInviteTransaction | None = None
    provisional: bool = False
    final: bool = False
    #: A CANCEL is wanted; sent once a provisional response allows it (RFC 3261 9.1).
    cancel_wanted: bool = False
    sends: int = 0
    cancel_sends: int = 0


def _relay(response: Response) -> Response:
    """A copy of a downstream response with our Via removed (RFC 3261 16.7 step 3)."""
    out = Response(
        response.status, response.reason, response.headers.copy(), response.body, response.version
    )
    out.headers.pop_first("Via")
    return out


def _add_lr(uri: str) -> str:
    """``<uri;lr>`` for a Route value; ``lr`` is not added twice (RFC 3261 19.1.1)."""
    try:
        parsed = parse_uri(uri)
    except SipParseError:
        return f"<{uri};lr>"
    if isinstance(parsed, SipUri) and parsed.lr:
        return f"<{uri}>"
    return f"<{uri};lr>"


class ProxyCall:
    """Serial-failover stateful proxy for one INVITE (RFC 3261 section 16). See the module
    documentation for inputs, events and the failover policy."""

    def __init__(
        self,
        request: Request,
        targets: Sequence[Target],
        my_via_host: str,
        my_via_port: int | None = None,
        transport: str = "UDP",
        no_provisional_timeout: float = 0.5,
        branch_factory: Callable[[], str] = new_branch,
        *,
        timers: TimerValues | None = None,
        cancel_timeout: float | None = None,
        record_route: str | None = None,
        tag_factory: Callable[[], str] = _new_tag,
    ) -> None:
        if request.method != "INVITE":
            raise ValueError(f"ProxyCall handles INVITE, not {request.method}")
        if not targets:
            raise ValueError("no targets")
        self.request = request
        self.targets = list(targets)
        self.my_via_host = my_via_host
        self.my_via_port = my_via_port
        self.transport = transport.upper()
        self.reliable = is_reliable(transport)
        self.no_provisional_timeout = no_provisional_timeout
        self.branch_factory = branch_factory
        self.timers = timers if timers is not None else TimerValues()
        #: How long to wait for the final response of a cancelled branch before sending
        #: 487 upstream ourselves (default 64*T1).
        self.cancel_timeout = 64 * self.timers.t1 if cancel_timeout is None else cancel_timeout
        self.record_route = record_route
        self.tag = tag_factory()
        self.branches: dict[str, _Branch] = {}
        self.current: _Branch | None = None
        #: The response context (16.7 step 6): the final response each failed target gave,
        #: with the target and whether it was generated here (408 or 503 for a timeout or a
        #: transport error).
        self.responses: list[tuple[Response, Target, bool]] = []
        self.outcome: Outcome | None = None
        self.cancelled = False
        self.started_at: float | None = None
        self.now: float | None = None
        self._next_index = 0
        self._started = False
        self._running: set[str] = set()

    # -- state -------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """A final response has gone upstream."""
        return self.outcome is not None

    @property
    def finished(self) -> bool:
        """Done, and every client transaction terminated: the object can be dropped."""
        if not self.done:
            return False
        for br in self.branches.values():
            if not br.invite_tx.terminated:
                return False
            if br.cancel_tx is not None and not br.cancel_tx.terminated:
                return False
        return True

    # -- inputs ------------------------------------------------------------------------

    def start(self, now: float | None = None) -> list[ProxyEvent]:
        """Send 100 Trying upstream (RFC 3261 16.2) and forward to the first target; or
        answer 483 when Max-Forwards is 0 (16.3 step 3). Call once."""
        if self._started:
            raise RuntimeError("ProxyCall already started")
        self._started = True
        self.started_at = self.now = now
        events: list[ProxyEvent] = []
        try:
            max_forwards = self.request.max_forwards
        except SipParseError:
            max_forwards = 0
        if max_forwards <= 0:
            events.append(SendUpstream(self._local(483)))
            self._finish(events, Outcome.REJECTED, 483, None)
            return events
        events.append(SendUpstream(make_response(self.request, 100)))
        self._try_next(events)
        return events

    def receive_response(self, response: Response, now: float | None = None) -> list[ProxyEvent]:
        """A response from downstream. It is matched to a branch by the top Via branch and
        the CSeq method (RFC 3261 17.1.3); one that matches nothing is dropped (16.7)."""
        self._tick(now)
        try:
            branch = response.branch
            method = response.cseq[1]
        except SipParseError:
            return []
        br = self.branches.get(branch or "")
        if br is None:
            return []
        if method == "INVITE":
            return self._run(br, "INVITE", br.invite_tx.receive(response))
        if method == "CANCEL" and br.cancel_tx is not None:
            return self._run(br, "CANCEL", br.cancel_tx.receive(response))
        return []

    def timer(self, name: str, now: float | None = None) -> list[ProxyEvent]:
        """Timer ``name`` (from a ``StartTimer`` of this call) expired. Stale or unknown
        names are ignored."""
        self._tick(now)
        parts = name.split("/")
        if len(parts) == 3:
            br = self.branches.get(parts[0])
            if br is None:
                return []
            if parts[1] == "INVITE":
                return self._run(br, "INVITE", br.invite_tx.timer(parts[2]))
            if parts[1] == "CANCEL" and br.cancel_tx is not None:
                return self._run(br, "CANCEL", br.cancel_tx.timer(parts[2]))
            return []
        if name not in self._running:
            return []
        self._running.discard(name)
        events: list[ProxyEvent] = []
        if name == "cancel":
            if not self.done:
                self._finish_cancelled(events)
            return events
        br = self.branches.get(parts[0])
        if br is None or br is not self.current or br.final or self.done:
            return events
        if parts[1] == "1xx" and not br.provisional:
            seconds = f"{self.no_provisional_timeout:g}"
            self._abandon(events, br, 408, f"no provisional response within {seconds} s")
        elif parts[1] == "C":
            self._abandon(events, br, 408, "Timer C")
        return events

    def transport_error(self, branch: str, now: float | None = None) -> list[ProxyEvent]:
        """The transport could not send a message of ``branch`` (RFC 3261 16.9: as a 503)."""
        self._tick(now)
        br = self.branches.get(branch)
        if br is None:
            return []
        return self._run(br, "INVITE", br.invite_tx.transport_error())

    def cancel(self, cancel: Request, now: float | None = None) -> list[ProxyEvent]:
        """A CANCEL from upstream for this call (RFC 3261 16.10): 200 to the CANCEL, a
        CANCEL on the pending branch (once it had a provisional response, 9.1), and 487
        upstream when the branch answers (or after ``cancel_timeout``). No new target is
        tried. After the final response went upstream only the 200 is sent (9.2)."""
        self._tick(now)
        if cancel.method != "CANCEL":
            raise ValueError(f"not a CANCEL: {cancel.method}")
        if cancel.call_id != self.request.call_id or cancel.cseq[0] != self.request.cseq[0]:
            raise ValueError("the CANCEL is not for this call (Call-ID or CSeq number differ)")
        events: list[ProxyEvent] = [SendUpstream(make_response(cancel, 200, to_tag=self.tag))]
        if self.done or self.cancelled:
            return events
        self.cancelled = True
        br = self.current
        if br is None or br.final:
            self._finish_cancelled(events)
            return events
        self._stop(events, f"{br.branch}/1xx", f"{br.branch}/C")
        self._want_cancel(events, br)
        self._start_timer(events, "cancel", self.cancel_timeout)
        return events

    # -- branches ----------------------------------------------------------------------

    def _tick(self, now: float | None) -> None:
        if now is not None:
            self.now = now

    def _try_next(self, events: list[ProxyEvent]) -> None:
        """Forward to the next target (RFC 3261 16.6), or send the best response upstream
        when none is left (16.7 step 6)."""
        if self._next_index >= len(self.targets):
            self._finish_failed(events)
            return
        index = self._next_index
        self._next_index += 1
        target = self.targets[index]
        branch = self.branch_factory()
        if not branch.startswith(MAGIC_COOKIE):
            branch = MAGIC_COOKIE + branch
        request = self._forward_request(target, branch)
        tx = ClientInviteTransaction(request, reliable=self.reliable, timers=self.timers)
        br = _Branch(index, target, branch, request, tx)
        self.branches[branch] = br
        self.current = br
        events += self._run(br, "INVITE", tx.start())
        if self.no_provisional_timeout > 0:
            self._start_timer(events, f"{branch}/1xx", self.no_provisional_timeout)
        self._start_timer(events, f"{branch}/C", self.timers.timer_c)

    def _forward_request(self, target: Target, branch: str) -> Request:
        """The copy of the request for ``target`` (RFC 3261 16.6): Request-URI kept (queue
        target, ``Route: <uri;lr>`` on top) or replaced (``rewrite_uri``), Max-Forwards
        decremented (70 when absent, step 3), our Record-Route when configured (step 4), the
        target's outbound proxy Route on top (step 7), our Via on top with a fresh branch
        (step 8). Other header fields keep their order; the body is the same bytes."""
        orig = self.request
        headers = orig.headers.copy()
        uri = orig.uri
        if target.rewrite_uri:
            uri = target.uri
        else:
            headers.insert_first("Route", _add_lr(target.uri))
        if target.route:
            headers.insert_first("Route", _add_lr(target.route))
        if "Max-Forwards" in headers:
            headers.set("Max-Forwards", str(orig.max_forwards - 1))
        else:
            headers.insert_first("Max-Forwards", "70")
        if self.record_route:
            headers.insert_first("Record-Route", _add_lr(self.record_route))
        port = "" if self.my_via_port is None else f":{self.my_via_port}"
        headers.insert_first(
            "Via", f"SIP/2.0/{self.transport} {self.my_via_host}{port};branch={branch}"
        )
        return Request(orig.method, uri, headers, orig.body, orig.version)

    def _run(self, br: _Branch, kind: str, tx_events: list[Event]) -> list[ProxyEvent]:
        """Turn the events of a branch's transaction into proxy events."""
        events: list[ProxyEvent] = []
        for event in tx_events:
            if isinstance(event, Send):
                msg = event.message
                if isinstance(msg, Request) and msg.method == "ACK":
                    events.append(SendAck(msg, br.branch))
                elif kind == "INVITE" and isinstance(msg, Request):
                    events.append(Forward(msg, br.target, br.branch, br.sends > 0))
                    br.sends += 1
                elif isinstance(msg, Request):
                    events.append(SendCancel(msg, br.branch, br.cancel_sends > 0))
                    br.cancel_sends += 1
            elif isinstance(event, StartTimer):
                events.append(StartTimer(f"{br.branch}/{kind}/{event.name}", event.delay))
            elif isinstance(event, CancelTimer):
                events.append(CancelTimer(f"{br.branch}/{kind}/{event.name}"))
            elif kind != "INVITE" or isinstance(event, Terminated):
                continue  # the CANCEL's own outcome does not matter: 487 or the guard timer
            elif isinstance(event, Deliver) and isinstance(event.message, Response):
                self._on_response(events, br, event.message)
            elif isinstance(event, Timeout):
                br.final = True
                self._on_failure(events, br, 408, None, "no response (Timer B)")
            elif isinstance(event, TransportError):
                br.final = True
                self._on_failure(events, br, 503, None, "transport error")
        return events

    def _on_response(self, events: list[ProxyEvent], br: _Branch, response: Response) -> None:
        status = response.status
        if status < 200:
            if not br.provisional:
                br.provisional = True
                self._stop(events, f"{br.branch}/1xx")
            if br.cancel_wanted:
                self._send_cancel(events, br)
                return
            if br is self.current and not self.done and status > 100:
                if f"{br.branch}/C" in self._running:
                    self._start_timer(events, f"{br.branch}/C", self.timers.timer_c)  # 16.7.2
                events.append(SendUpstream(_relay(response)))
            return
        br.final = True
        self._stop(events, f"{br.branch}/1xx", f"{br.branch}/C")
        if status < 300:
            # 16.7 step 5: every 2xx goes upstream at once, even after a final response.
            events.append(SendUpstream(_relay(response)))
            if not self.done:
                for other in self.branches.values():
                    if other is not br and not other.final:
                        self._want_cancel(events, other)
                self._finish(events, Outcome.ANSWERED, status, br.target)
            return
        if br is not self.current or self.done:
            return  # an abandoned branch's late answer; its ACK went out with the transaction
        self._on_failure(events, br, status, response, f"{status} {response.reason}".strip())

    def _on_failure(
        self,
        events: list[ProxyEvent],
        br: _Branch,
        status: int,
        response: Response | None,
        reason: str,
    ) -> None:
        """The current branch failed with ``response``, or with a local ``status`` when
        ``response`` is ``None``: record it and try the next target (or end the call)."""
        self._stop(events, f"{br.branch}/1xx", f"{br.branch}/C")
        if br is not self.current or self.done:
            return
        if self.cancelled:
            self._finish_cancelled(events)
            return
        if response is None:
            self.responses.append((self._local(status), br.target, True))
        else:
            self.responses.append((response, br.target, False))
        nxt = self.targets[self._next_index] if self._next_index < len(self.targets) else None
        events.append(Failover(br.target, reason, status, nxt, self.now))
        self._try_next(events)

    def _abandon(self, events: list[ProxyEvent], br: _Branch, status: int, reason: str) -> None:
        """Give up the pending current branch (no provisional, Timer C): CANCEL it as soon as
        9.1 allows, count it as ``status`` and move on (16.8)."""
        self._want_cancel(events, br)
        self._on_failure(events, br, status, None, reason)

    def _want_cancel(self, events: list[ProxyEvent], br: _Branch) -> None:
        br.cancel_wanted = True
        if br.provisional:
            self._send_cancel(events, br)

    def _send_cancel(self, events: list[ProxyEvent], br: _Branch) -> None:
        """CANCEL ``br`` (RFC 3261 9.1): Request-URI, Call-ID, From, To, CSeq number, Route
        and top Via (so the branch) of the forwarded INVITE; once only."""
        if br.cancel_tx is not None or br.final:
            return
        invite = br.request
        headers = Headers()
        headers.add("Via", invite.headers.get("Via") or "")
        headers.add("Max-Forwards", "70")
        for line in invite.headers.get_lines("Route"):
            headers.add("Route", line)
        for name in ("From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        headers.add("CSeq", f"{invite.cseq[0]} CANCEL")
        headers.add("Content-Length", "0")
        cancel = Request("CANCEL", invite.uri, headers, b"", invite.version)
        br.cancel_tx = ClientNonInviteTransaction(
            cancel, reliable=self.reliable, timers=self.timers
        )
        events += self._run(br, "CANCEL", br.cancel_tx.start())

    # -- ending ------------------------------------------------------------------------

    def _local(self, status: int) -> Response:
        """A response generated here to the incoming INVITE, with our To tag (8.2.6.2)."""
        return make_response(self.request, status, reason_phrase(status), to_tag=self.tag)

    def _finish_failed(self, events: list[ProxyEvent]) -> None:
        """Every target failed: forward the best response (16.7 step 6), a 503 turned into a
        500, 408 when there is none."""
        chosen = best_response([r for r, _, _ in self.responses])
        target: Target | None = None
        if chosen is None:
            response = self._local(408)
        elif chosen.status == 503:
            response = self._local(500)
        else:
            target, local = next((t, loc) for r, t, loc in self.responses if r is chosen)
            response = chosen if local else _relay(chosen)
            if local:
                target = None
        events.append(SendUpstream(response))
        self._finish(events, Outcome.FAILED, response.status, target)

    def _finish_cancelled(self, events: list[ProxyEvent]) -> None:
        events.append(SendUpstream(self._local(487)))
        self._finish(events, Outcome.CANCELLED, 487, None)

    def _finish(
        self, events: list[ProxyEvent], outcome: Outcome, status: int, target: Target | None
    ) -> None:
        self.outcome = outcome
        self._stop(events, *sorted(self._running))
        events.append(Done(outcome, status, target, self.now))

    # -- timers ------------------------------------------------------------------------

    def _start_timer(self, events: list[ProxyEvent], name: str, delay: float) -> None:
        self._running.add(name)
        events.append(StartTimer(name, delay))

    def _stop(self, events: list[ProxyEvent], *names: str) -> None:
        for name in names:
            if name in self._running:
                self._running.discard(name)
                events.append(CancelTimer(name))
