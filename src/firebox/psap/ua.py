"""A simple SIP user agent per PSAP queue: the PSAP end of the demo and of the tests.

``PsapAgentCore`` is sans-I/O: ``receive(message, source, now)`` and ``timer(key, name,
now)`` return ``Action``s (``Reply``, ``SendRequest``, ``StartTimer``, ``CancelTimer``);
nothing here touches a socket or a clock. ``PsapAgents`` is its asyncio adapter on
``firebox.sip.transport``: one listener serves every queue, and a request finds its queue
by its top ``Route`` (the ESRP routes to a queue URI as ``Route: <queue;lr>`` and keeps
``urn:service:sos`` as Request-URI, NENA-STA-010.3 section 4.2) or by its Request-URI (a
queue URI, or a PSAP's business line ``sip:+1NXXNXXXXXX@gateway;user=phone``).

What a queue does with an INVITE depends on its ``AgentMode``:

* ``answer``: 180 Ringing at once, then 200 OK after ``ring_seconds`` with the SDP answer
  (RFC 3264 section 6, ``firebox.psap.sdp``) to the offer found in the body (alone, or
  the ``application/sdp`` part of a ``multipart/mixed`` body with a PIDF-LO, RFC 5621).
  The 2xx is retransmitted (T1 doubling to T2) until its ACK (RFC 3261 13.3.1.4); with no
  ACK within 64*T1 the dialog is ended with a BYE. With ``hold_seconds`` the PSAP itself
  hangs up that long after the ACK: a BYE built from the dialog (RFC 3261 12.2.1.1).
* ``busy``: 503 Service Unavailable with ``Retry-After`` (RFC 3261 21.5.4): the ESRP
  fails over to the next destination.
* ``silent``: never answers anything (a hung PSAP; the ESRP's timers must fail over).

CANCEL of a ringing INVITE is answered 200 and the INVITE 487 (RFC 3261 9.2); BYE 200
(15.1.2), or 481 outside any dialog (12.2.2); MESSAGE, OPTIONS and in-dialog INFO/UPDATE
200; anything else 405 with ``Allow`` (8.2.1). Retransmitted INVITEs get the last
response again (17.2.1); ACKs of non-2xx answers are absorbed (17.2.1).

Each queue counts calls offered, answered, ended (and of those, ended by the PSAP),
cancelled, rejected and left unanswered, in ``counts``.

Each queue is also the notifier of its ``emergency-QueueState`` (NENA-STA-010.3 section
4.2.1.3, RFC 6665 through ``firebox.sip.subscription.Notifier``): an ESRP's SUBSCRIBE to the
queue URI is answered 200 and a NOTIFY with the state (``queueLength`` the calls ringing or
up, ``queueMaxLength`` from ``max_queue``, ``Full`` when busy or at the maximum, else
``Active``); changes are notified at most once per ``publish_seconds``. NOTIFYs are sent
once, without retransmission: a lost one leaves the ESRP a stale state, which it treats as
unknown after its maximum age.

Deliberately simple: no media, no server-transaction objects (the call record keeps the
last response, which is what 17.2.1 needs of a UAS on one hop), no PRACK, no session
timers. The PSAP call-handling element will grow out of this.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from firebox.esrp.states import EVENT_QUEUE_STATE, QueueState, QueueStateValue
from firebox.psap.sdp import SdpError, answer_sdp, offer_sdp, parse_sdp
from firebox.sip.address import SipUri, parse_name_addr, parse_uri
from firebox.sip.errors import SipParseError
from firebox.sip.headers import Headers
from firebox.sip.message import Message, Request, Response, make_response
from firebox.sip.multipart import parse_media_type, parse_multipart
from firebox.sip.resolve import RequestFailover, SipResolver, fails_over
from firebox.sip.subscription import Notifier, NotifierEvent, SubscriptionStarted
from firebox.sip.transaction import MAGIC_COOKIE
from firebox.sip.transaction import Send as NotifierSend

__all__ = [
    "Action",
    "AgentMode",
    "CallState",
    "CancelTimer",
    "Dialog",
    "PsapAgentCore",
    "PsapAgents",
    "Queue",
    "QueueCounts",
    "Reply",
    "SendRequest",
    "StartTimer",
    "TimerName",
    "sdp_offer_of",
]

log = logging.getLogger(__name__)

#: RFC 3261 section 17.1.1.1 timer values (seconds).
T1 = 0.5
T2 = 4.0
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, UPDATE, SUBSCRIBE"
ACCEPT = "application/sdp, multipart/mixed, application/pidf+xml, text/plain"
#: ``(host, port, transport)`` of a next hop.
Address = tuple[str, int, str]


class AgentMode(StrEnum):
    """How a queue's agent answers an INVITE (see the module docstring)."""

    ANSWER = "answer"
    BUSY = "busy"
    SILENT = "silent"


class CallState(StrEnum):
    RINGING = "ringing"  # 180 sent, 200 pending (ring time)
    ANSWERED = "answered"  # 200 sent, waiting for the ACK
    CONFIRMED = "confirmed"  # ACK received: the call is up
    HANGING_UP = "hanging up"  # our BYE sent, waiting for its answer
    ENDED = "ended"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # busy: 503 sent
    SILENT = "silent"  # never answered
    FAILED = "failed"  # 4xx sent (no acceptable SDP)


class TimerName(StrEnum):
    ANSWER = "answer"  # ring time over: send the 200
    RETRANSMIT_2XX = "2xx retransmit"  # RFC 3261 13.3.1.4
    NO_ACK = "no ACK"  # 64*T1 without ACK: end with BYE (13.3.1.4)
    HANGUP = "hangup"  # hold time over: the PSAP sends BYE
    RETRANSMIT_BYE = "BYE retransmit"  # Timer E (17.1.2.2)
    BYE_TIMEOUT = "BYE timeout"  # Timer F
    FORGET = "forget"  # drop the finished call's record
    PUBLISH = "publish"  # notify changed queue states (rate limit)
    FAILOVER = "failover"  # our BYE heard nothing: the next target (RFC 3263 4.3)


# -- actions (what the adapter must do) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``response`` back to where its request came from (RFC 3261 18.2.2)."""

    response: Response
    source: Any  # the transport's Source of the request


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Send a request we originate (a BYE) to its next hop."""

    request: Request
    destination: Address


@dataclass(frozen=True, slots=True)
class StartTimer:
    key: str
    name: TimerName
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: str
    name: TimerName


Action = Reply | SendRequest | StartTimer | CancelTimer


# -- queues and their counters -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Queue:
    """A PSAP queue this agent answers for: its URI and, optionally, its 10-digit business
    line (calls the ESRP sends there through the PSTN gateway land here too)."""

    psap_id: str
    uri: str
    name: str = ""
    business_line: str | None = None
    mode: AgentMode = AgentMode.ANSWER


@dataclass(slots=True)
class QueueCounts:
    offered: int = 0  # new INVITEs (queue URI or business line)
    answered: int = 0  # 200 OK sent
    ended: int = 0  # answered calls that ended (either side)
    ended_by_psap: int = 0  # of those, by our BYE (hold time or no ACK)
    cancelled: int = 0  # CANCEL before the answer
    rejected: int = 0  # busy: 503
    unanswered: int = 0  # silent
    business_line: int = 0  # of ``offered``, on the business line
    messages: int = 0  # MESSAGE (text) answered 200

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _user_host(uri: str) -> tuple[str, str] | None:
    try:
        parsed = parse_uri(uri)
    except SipParseError:
        return None
    if not isinstance(parsed, SipUri):
        return None
    return ((parsed.user or "").lower(), parsed.host.lower())


def _digits(value: str) -> str:
    digits = "".join(c for c in value if c.isdigit())
    return digits[1:] if len(digits) == 11 and digits.startswith("1") else digits


def sdp_offer_of(request: Request) -> bytes | None:
    """The SDP of a request's body: the body itself, or the ``application/sdp`` part of
    a multipart body (RFC 5621 section 3.1); ``None`` when there is none."""
    ctype = request.content_type
    if not ctype or not request.body:
        return None
    try:
        media, _ = parse_media_type(ctype)
    except (SipParseError, ValueError):
        return None
    if media == "application/sdp":
        return request.body
    if media.startswith("multipart/"):
        try:
            parts = parse_multipart(ctype, request.body)
        except (SipParseError, ValueError):
            return None
        for part in parts:
            if part.content_type.split(";")[0].strip().lower() == "application/sdp":
                return part.body
    return None


# -- dialogs -----------------------------------------------------------------------------


@dataclass(slots=True)
class Dialog:
    """The UAS side of a dialog (RFC 3261 section 12.1.1): Call-ID, our tag (on the To of
    our responses) and theirs (the From's), the remote target (the INVITE's Contact), the
    route set (the INVITE's Record-Route, *in order*: 12.1.1; a UAC would reverse the
    2xx's, 12.1.2), and the sequence numbers (ours starts unset; theirs is the INVITE's)."""

    call_id: str
    local_tag: str
    remote_tag: str | None
    local_party: str  # the INVITE's To, without tag: our From in requests we send
    remote_party: str  # the INVITE's From, with its tag: the To of requests we send
    remote_target: str
    route_set: tuple[str, ...]
    remote_seq: int
    local_seq: int | None = None

    @classmethod
    def from_invite(cls, invite: Request, local_tag: str) -> Dialog:
        contact = invite.headers.get("Contact")
        remote_target = str(parse_name_addr(contact).uri) if contact else str(invite.from_addr.uri)
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_tag,
            local_party=invite.headers.get("To") or "",
            remote_party=invite.headers.get("From") or "",
            remote_target=remote_target,
            route_set=tuple(invite.headers.get_all("Record-Route")),
            remote_seq=invite.cseq[0],
        )

    def request(self, method: str, via: str, *, max_forwards: int = 70) -> tuple[Request, Address]:
        """A request within the dialog and its next hop (RFC 3261 12.2.1.1, 8.1.2): CSeq
        one above the last we sent (1 for the first), From our party with our tag, To
        theirs; a loose first route (``lr``) keeps the remote target as Request-URI and the
        whole route set as ``Route``, a strict one becomes the Request-URI with the remote
        target appended last. Raises ``ValueError`` when there is no SIP next hop."""
        self.local_seq = 1 if self.local_seq is None else self.local_seq + 1
        routes = list(self.route_set)
        uri = self.remote_target
        next_hop = self.remote_target
        if routes:
            first = parse_name_addr(routes[0]).uri
            next_hop = str(first)
            if not (isinstance(first, SipUri) and first.lr):
                # strict router (RFC 3261 12.2.1.1): it becomes the Request-URI
                uri = str(first)
                routes = routes[1:] + [f"<{self.remote_target}>"]
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", str(max_forwards))
        for route in routes:
            headers.add("Route", route)
        headers.add("From", f"{self.local_party};tag={self.local_tag}")
        headers.add("To", self.remote_party)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.local_seq} {method}")
        headers.add("Content-Length", "0")
        return Request(method, uri, headers), next_hop_address(next_hop)


def next_hop_address(uri: str) -> Address:
    """Host, port and transport of a SIP URI (RFC 3263 without DNS: the URI's own host,
    its port or 5060/5061, its ``transport`` or UDP/TLS)."""
    parsed = parse_uri(uri)
    if not isinstance(parsed, SipUri):
        raise ValueError(f"no SIP next hop in {uri!r}")  # noqa: TRY004 -- a bad value, not a bad type
    secure = parsed.scheme == "sips"
    transport = parsed.transport or ("tls" if secure else "udp")
    host = parsed.host.strip("[]")
    return (host, parsed.port or (5061 if transport == "tls" else 5060), transport)


@dataclass(slots=True)
class Call:
    key: str  # "<Call-ID>/<our tag>": timers and the dialog table use it
    queue: Queue
    invite: Request
    source: Any
    dialog: Dialog
    state: CallState
    started: float
    on_business_line: bool = False
    last_response: Response | None = None
    answer: bytes | None = None  # our SDP
    session_id: int = 0  # of our o= line; its version goes up with each new answer (RFC 3264 8)
    sdp_version: int = 1
    retransmit: float = T1
    bye: Request | None = None
    bye_to: Address | None = None
    bye_failover: RequestFailover | None = None
    answered_at: float | None = None
    ended_at: float | None = None


# -- the core ----------------------------------------------------------------------------


class PsapAgentCore:
    """The agents of ``queues``, reachable at ``host:port`` over ``transport`` (used in
    Contact and Via). Sans-I/O: see the module docstring."""

    def __init__(
        self,
        queues: Iterable[Queue],
        *,
        host: str,
        port: int,
        transport: str = "udp",
        ring_seconds: float = 0.0,
        hold_seconds: float | None = None,
        rtp_base: int = 20000,
        token: Callable[[], str] = lambda: secrets.token_hex(6),
        max_queue: int = 20,
        publish_seconds: float = 1.0,
        resolver: SipResolver | None = None,
        failover_seconds: float = 2.0,
    ) -> None:
        self.queues = {q.psap_id: q for q in queues}
        #: RFC 3263 for our BYE's first hop (a cluster name in the route set): the targets in
        #: order, the next one after ``failover_seconds`` without any answer or on a 503.
        #: ``None``: the hop's own host and port, as before.
        self.resolver = resolver
        self.failover_seconds = failover_seconds
        self.host = host
        self.port = port
        self.transport = transport.lower()
        self.ring_seconds = ring_seconds
        self.hold_seconds = hold_seconds
        self.counts: dict[str, QueueCounts] = {q: QueueCounts() for q in self.queues}
        #: Everything else worth counting (retransmissions, unknown queues, strays).
        self.stats: Counter[str] = Counter()
        self._token = token
        self._by_queue_uri: dict[tuple[str, str], Queue] = {}
        self._by_line: dict[str, Queue] = {}
        for q in self.queues.values():
            uh = _user_host(q.uri)
            if uh is not None:
                self._by_queue_uri[uh] = q
                self._by_queue_uri.setdefault((uh[0], ""), q)  # user part alone, any host
            if q.business_line:
                self._by_line[_digits(q.business_line)] = q
        self._calls: dict[str, Call] = {}  # by key
        self._by_branch: dict[tuple[str, str], Call] = {}  # (Call-ID, INVITE branch)
        self._sessions = itertools.count(1)
        self._ports = itertools.cycle(range(rtp_base, rtp_base + 10000, 4))
        self.max_queue = max_queue
        self.publish_seconds = publish_seconds
        #: QueueState notifiers by PSAP id, made at the first SUBSCRIBE (the port is known).
        self.notifiers: dict[str, Notifier] = {}
        self._published: dict[str, bytes] = {}
        self._publish_pending = False

    # -- lookups ------------------------------------------------------------------------

    def queue_for(self, request: Request) -> tuple[Queue, bool] | None:
        """The queue a new request is for, and whether it came on the business line: the
        top ``Route`` naming a queue (loose routing, RFC 3261 16.4: that entry is ours),
        else the Request-URI (a queue URI or a business line number)."""
        route = request.headers.get("Route")
        candidates = []
        if route:
            try:
                candidates.append(str(parse_name_addr(route).uri))
            except SipParseError:
                pass
        candidates.append(request.uri)
        for uri in candidates:
            uh = _user_host(uri)
            if uh is None:
                continue
            q = self._by_queue_uri.get(uh) or self._by_queue_uri.get((uh[0], ""))
            if q is not None:
                return q, False
            line = _digits(uh[0])
            if len(line) == 10 and line in self._by_line:
                return self._by_line[line], True
        return None

    @property
    def calls(self) -> dict[str, Call]:
        return self._calls

    def call_for(self, call_id: str, local_tag: str | None) -> Call | None:
        if local_tag is None:
            return None
        return self._calls.get(f"{call_id}/{local_tag}")

    # -- input: messages ------------------------------------------------------------------

    def receive(self, message: Message, source: Any, now: float) -> list[Action]:
        """A parsed message from the transport. Never raises for a bad message: what cannot
        be read is answered 400 when it can be, else counted and dropped."""
        try:
            if isinstance(message, Response):
                return self._on_response(message, now)
            return self._on_request(message, source, now) + self._schedule_publish()
        except SipParseError as error:
            self.stats["bad_messages"] += 1
            if isinstance(message, Request) and message.method != "ACK":
                try:
                    return [Reply(make_response(message, error.status, error.reason), source)]
                except SipParseError:
                    pass
            return []

    def _on_request(self, request: Request, source: Any, now: float) -> list[Action]:
        method = request.method
        if method == "INVITE":
            if request.to_tag is not None:
                return self._reinvite(request, source)
            return self._invite(request, source, now)
        if method == "ACK":
            return self._ack(request)
        if method == "CANCEL":
            return self._cancel(request, source, now)
        if method == "BYE":
            return self._bye(request, source, now)
        if method == "OPTIONS":
            headers = [("Allow", ALLOW), ("Accept", ACCEPT)]
            return [Reply(make_response(request, 200, headers=headers), source)]
        if method == "MESSAGE":
            found = self.queue_for(request)
            if found is None:
                self.stats["unknown_queue"] += 1
                return [Reply(make_response(request, 404, to_tag=self._token()), source)]
            self.counts[found[0].psap_id].messages += 1
            return [Reply(make_response(request, 200, to_tag=self._token()), source)]
        if method == "SUBSCRIBE":
            return self._subscribe(request, source, now)
        if method in ("INFO", "UPDATE"):
            call = self.call_for(request.call_id, request.to_tag)
            status = 200 if call is not None and call.state in _LIVE else 481
            return [Reply(make_response(request, status), source)]
        return [Reply(make_response(request, 405, headers=[("Allow", ALLOW)]), source)]

    def _invite(self, invite: Request, source: Any, now: float) -> list[Action]:
        branch = invite.branch or ""
        known = self._by_branch.get((invite.call_id, branch))
        if known is not None:
            # A retransmission (RFC 3261 17.2.1): the last response again, if any.
            self.stats["invite_retransmissions"] += 1
            if known.last_response is not None and known.state is not CallState.SILENT:
                return [Reply(known.last_response, source)]
            return []
        found = self.queue_for(invite)
        if found is None:
            self.stats["unknown_queue"] += 1
            return [Reply(make_response(invite, 404, to_tag=self._token()), source)]
        queue, on_line = found
        tag = self._token()
        call = Call(
            key=f"{invite.call_id}/{tag}",
            queue=queue,
            invite=invite,
            source=source,
            dialog=Dialog.from_invite(invite, tag),
            state=CallState.RINGING,
            started=now,
            on_business_line=on_line,
        )
        self._calls[call.key] = call
        self._by_branch[(invite.call_id, branch)] = call
        counts = self.counts[queue.psap_id]
        counts.offered += 1
        counts.business_line += on_line
        if queue.mode is AgentMode.SILENT:
            call.state = CallState.SILENT
            counts.unanswered += 1
            return [StartTimer(call.key, TimerName.FORGET, 64 * T1)]
        if queue.mode is AgentMode.BUSY:
            call.state = CallState.REJECTED
            counts.rejected += 1
            call.last_response = make_response(invite, 503, to_tag=tag, headers=[("Retry-After", "30")])
            return [Reply(call.last_response, source), StartTimer(call.key, TimerName.FORGET, 64 * T1)]
        port = next(self._ports)
        session = call.session_id = next(self._sessions)
        offer = sdp_offer_of(invite)
        if offer is None:
            # No offer in the INVITE: ours goes in the 2xx (RFC 3261 13.2.1).
            call.answer = offer_sdp(host=self.host, port=port, session_id=session, username="firebox-psap")
        else:
            try:
                call.answer = answer_sdp(parse_sdp(offer), host=self.host, first_port=port, session_id=session)
            except SdpError:
                call.answer = None
            if call.answer is None:
                call.state = CallState.FAILED
                self.stats["not_acceptable"] += 1
                call.last_response = make_response(
                    invite, 488, to_tag=tag, headers=[("Warning", f'304 {self.host} "Media type not available"')]
                )
                return [Reply(call.last_response, source), StartTimer(call.key, TimerName.FORGET, 64 * T1)]
        call.last_response = make_response(invite, 180, to_tag=tag, headers=[("Contact", self._contact(queue))])
        actions: list[Action] = [Reply(call.last_response, source)]
        if self.ring_seconds > 0:
            actions.append(StartTimer(call.key, TimerName.ANSWER, self.ring_seconds))
        else:
            actions += self._send_ok(call, now)
        return actions

    def _contact(self, queue: Queue) -> str:
        uh = _user_host(queue.uri)
        user = uh[0] if uh and uh[0] else queue.psap_id
        transport = "" if self.transport == "udp" else f";transport={self.transport}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"<sip:{user}@{host}:{self.port}{transport}>"

    def _send_ok(self, call: Call, now: float) -> list[Action]:
        """The 200 OK with our SDP (RFC 3261 13.3.1.4), retransmitted until its ACK."""
        assert call.answer is not None
        headers = [
            ("Contact", self._contact(call.queue)),
            ("Allow", ALLOW),
            ("Content-Type", "application/sdp"),
        ]
        call.last_response = make_response(call.invite, 200, to_tag=call.dialog.local_tag, headers=headers, body=call.answer)
        call.state = CallState.ANSWERED
        call.answered_at = now
        self.counts[call.queue.psap_id].answered += 1
        actions: list[Action] = [Reply(call.last_response, call.source)]
        if _unreliable(call.source):
            call.retransmit = T1
            actions.append(StartTimer(call.key, TimerName.RETRANSMIT_2XX, T1))
        actions.append(StartTimer(call.key, TimerName.NO_ACK, 64 * T1))
        return actions

    def _reinvite(self, invite: Request, source: Any) -> list[Action]:
        call = self.call_for(invite.call_id, invite.to_tag)
        if call is None or call.state not in (CallState.CONFIRMED, CallState.ANSWERED):
            return [Reply(make_response(invite, 481), source)]
        call.dialog.remote_seq = invite.cseq[0]
        offer = sdp_offer_of(invite)
        body = call.answer or b""
        if offer is not None:
            try:
                fresh = answer_sdp(
                    parse_sdp(offer), host=self.host, first_port=next(self._ports),
                    session_id=call.session_id, version=call.sdp_version + 1,
                )  # fmt: skip
            except SdpError:
                fresh = None
            if fresh is None:
                return [Reply(make_response(invite, 488), source)]
            body = call.answer = fresh
            call.sdp_version += 1
        headers = [("Contact", self._contact(call.queue)), ("Content-Type", "application/sdp")]
        return [Reply(make_response(invite, 200, headers=headers, body=body), source)]

    def _ack(self, ack: Request) -> list[Action]:
        call = self.call_for(ack.call_id, ack.to_tag)
        if call is None:
            self.stats["stray_acks"] += 1
            return []
        if call.state is not CallState.ANSWERED:
            return []  # the ACK of a non-2xx, or a retransmitted one: absorbed (17.2.1)
        call.state = CallState.CONFIRMED
        actions: list[Action] = [
            CancelTimer(call.key, TimerName.RETRANSMIT_2XX),
            CancelTimer(call.key, TimerName.NO_ACK),
        ]
        if self.hold_seconds is not None:
            actions.append(StartTimer(call.key, TimerName.HANGUP, self.hold_seconds))
        return actions

    def _cancel(self, cancel: Request, source: Any, now: float) -> list[Action]:
        call = self._by_branch.get((cancel.call_id, cancel.branch or ""))
        if call is None:
            return [Reply(make_response(cancel, 481), source)]
        if call.state is CallState.SILENT:
            return []
        actions: list[Action] = [Reply(make_response(cancel, 200, to_tag=call.dialog.local_tag), source)]
        if call.state is CallState.RINGING:
            call.state = CallState.CANCELLED
            call.ended_at = now
            self.counts[call.queue.psap_id].cancelled += 1
            call.last_response = make_response(call.invite, 487, to_tag=call.dialog.local_tag)
            actions += [
                Reply(call.last_response, call.source),
                CancelTimer(call.key, TimerName.ANSWER),
                StartTimer(call.key, TimerName.FORGET, 64 * T1),
            ]
        return actions

    def _bye(self, bye: Request, source: Any, now: float) -> list[Action]:
        call = self.call_for(bye.call_id, bye.to_tag)
        if call is None:
            return [Reply(make_response(bye, 481), source)]
        actions: list[Action] = [Reply(make_response(bye, 200), source)]
        if call.state in _LIVE:
            call.dialog.remote_seq = max(call.dialog.remote_seq, bye.cseq[0])
            actions += self._end(call, now, by_psap=False)
        return actions

    def _end(self, call: Call, now: float, *, by_psap: bool) -> list[Action]:
        counts = self.counts[call.queue.psap_id]
        counts.ended += 1
        counts.ended_by_psap += by_psap
        call.state = CallState.ENDED
        call.ended_at = now
        return [
            *(CancelTimer(call.key, name) for name in _CALL_TIMERS),
            StartTimer(call.key, TimerName.FORGET, 64 * T1),
        ]

    def _on_response(self, response: Response, now: float) -> list[Action]:
        number, method = response.cseq
        if method == "NOTIFY":
            for notifier in self.notifiers.values():
                self._notifier_actions(notifier.handle_response(response, now), None)
            return []
        call = self.call_for(response.call_id, response.from_tag)
        if method != "BYE" or call is None or call.state is not CallState.HANGING_UP:
            self.stats["stray_responses"] += 1
            return []
        if number != call.dialog.local_seq:
            return []
        failover = call.bye_failover
        if failover is not None and fails_over(response.status):
            if failover.advance(now):  # 503: the next target (RFC 3263 4.3)
                self.stats["bye_failovers"] += 1
                return self._send_bye(call, failover)
        elif failover is not None:
            failover.succeeded()  # it answered
        if response.status < 200:
            return [CancelTimer(call.key, TimerName.FAILOVER)]  # it has the BYE: wait for it
        if response.status >= 300:
            self.stats["bye_refused"] += 1  # 481 and the like: the dialog is gone anyway
        return self._end(call, now, by_psap=True)

    # -- input: timers --------------------------------------------------------------------

    def timer(self, key: str, name: TimerName, now: float) -> list[Action]:
        """A timer started by a ``StartTimer`` has fired. Stale timers are ignored."""
        if name is TimerName.PUBLISH:
            self._publish_pending = False
            return self._publish(now)
        return self._call_timer(key, name, now) + self._schedule_publish()

    def _call_timer(self, key: str, name: TimerName, now: float) -> list[Action]:
        call = self._calls.get(key)
        if call is None:
            return []
        if name is TimerName.ANSWER and call.state is CallState.RINGING:
            return self._send_ok(call, now)
        if name is TimerName.RETRANSMIT_2XX and call.state is CallState.ANSWERED:
            assert call.last_response is not None
            self.stats["2xx_retransmissions"] += 1
            call.retransmit = min(2 * call.retransmit, T2)
            return [Reply(call.last_response, call.source), StartTimer(key, name, call.retransmit)]
        if name is TimerName.NO_ACK and call.state is CallState.ANSWERED:
            self.stats["no_ack"] += 1
            return [CancelTimer(key, TimerName.RETRANSMIT_2XX), *self._hang_up(call, now)]
        if name is TimerName.HANGUP and call.state is CallState.CONFIRMED:
            return self._hang_up(call, now)
        if name is TimerName.RETRANSMIT_BYE and call.state is CallState.HANGING_UP:
            assert call.bye is not None and call.bye_to is not None
            call.retransmit = min(2 * call.retransmit, T2)
            return [SendRequest(call.bye, call.bye_to), StartTimer(key, name, call.retransmit)]
        if name is TimerName.BYE_TIMEOUT and call.state is CallState.HANGING_UP:
            self.stats["bye_timeouts"] += 1
            return self._end(call, now, by_psap=True)
        if name is TimerName.FAILOVER and call.state is CallState.HANGING_UP and call.bye_failover is not None:
            if call.bye_failover.advance(now):
                self.stats["bye_failovers"] += 1
                return self._send_bye(call, call.bye_failover)
            return []  # the last target: its own timers end it
        if name is TimerName.FORGET and call.state in _FINISHED:
            self._forget(call)
        return []

    # -- QueueState (RFC 6665 notifier per queue) ------------------------------------------

    def queue_state(self, queue: Queue) -> QueueState:
        """The queue's state now: calls ringing or up, against ``max_queue``."""
        length = sum(1 for c in self._calls.values() if c.queue is queue and c.state in _QUEUED)
        full = queue.mode is AgentMode.BUSY or length >= self.max_queue
        state = QueueStateValue.FULL if full else QueueStateValue.ACTIVE
        return QueueState(queue.uri, length, self.max_queue, state)

    def _subscribe(self, request: Request, source: Any, now: float) -> list[Action]:
        found = self.queue_for(request)
        if found is None:
            self.stats["unknown_queue"] += 1
            return [Reply(make_response(request, 404, to_tag=self._token()), source)]
        queue = found[0]
        notifier = self.notifiers.get(queue.psap_id)
        if notifier is None:
            contact = self._contact(queue).strip("<>")
            notifier = self.notifiers[queue.psap_id] = Notifier(EVENT_QUEUE_STATE, queue.uri, contact)
        body = self.queue_state(queue).to_json().encode()
        self._published[queue.psap_id] = body
        return self._notifier_actions(notifier.handle_subscribe(request, now, body), source)

    def _notifier_actions(self, events: list[NotifierEvent], source: Any) -> list[Action]:
        actions: list[Action] = []
        for event in events:
            if isinstance(event, NotifierSend):
                message = event.message
                if isinstance(message, Response):
                    actions.append(Reply(message, source))
                else:
                    to = _next_hop(message)
                    if to is not None:
                        actions.append(SendRequest(message, to))
            elif isinstance(event, SubscriptionStarted):
                self.stats["subscriptions"] += 1
        return actions

    def _schedule_publish(self) -> list[Action]:
        if not self.notifiers or self._publish_pending:
            return []
        self._publish_pending = True
        return [StartTimer("queue-state", TimerName.PUBLISH, self.publish_seconds)]

    def _publish(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for psap_id, notifier in self.notifiers.items():
            body = self.queue_state(self.queues[psap_id]).to_json().encode()
            if body != self._published.get(psap_id):
                self._published[psap_id] = body
                actions += self._notifier_actions(notifier.publish(body, now), None)
            else:
                actions += self._notifier_actions(notifier.tick(now), None)
        return actions

    def hang_up(self, key: str, now: float) -> list[Action]:
        """End a call now (an operator's hang-up): BYE when it is up; nothing otherwise."""
        call = self._calls.get(key)
        if call is None or call.state is not CallState.CONFIRMED:
            return []
        return [CancelTimer(key, TimerName.HANGUP), *self._hang_up(call, now)]

    def _hang_up(self, call: Call, now: float) -> list[Action]:
        """Our BYE (RFC 3261 15.1.1), built from the dialog (12.2.1.1)."""
        branch = f"{MAGIC_COOKIE}-psap-{self._token()}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        via = f"SIP/2.0/{self.transport.upper()} {host}:{self.port};branch={branch};rport"
        try:
            bye, bye_to = call.dialog.request("BYE", via)
        except (SipParseError, ValueError):
            self.stats["bye_unroutable"] += 1
            return self._end(call, now, by_psap=True)
        call.state = CallState.HANGING_UP
        call.bye_failover = RequestFailover.for_request(bye, self.resolver, bye_to, now)
        return self._send_bye(call, call.bye_failover)

    def _send_bye(self, call: Call, failover: RequestFailover) -> list[Action]:
        """Send the BYE to the failover's current target: a new client transaction (its
        Timer E and F start again, RFC 3261 17.1.2.2; RFC 3263 4.3)."""
        call.bye, call.bye_to = failover.request, failover.destination
        call.retransmit = T1
        actions: list[Action] = [SendRequest(call.bye, call.bye_to)]
        if call.bye_to[2] == "udp":
            actions.append(StartTimer(call.key, TimerName.RETRANSMIT_BYE, T1))
        else:
            actions.append(CancelTimer(call.key, TimerName.RETRANSMIT_BYE))
        actions.append(StartTimer(call.key, TimerName.BYE_TIMEOUT, 64 * T1))
        if failover.has_next:
            actions.append(StartTimer(call.key, TimerName.FAILOVER, self.failover_seconds))
        return actions

    def _forget(self, call: Call) -> None:
        self._calls.pop(call.key, None)
        self._by_branch.pop((call.invite.call_id, call.invite.branch or ""), None)

    # -- views ----------------------------------------------------------------------------

    def totals(self) -> QueueCounts:
        total = QueueCounts()
        for c in self.counts.values():
            for name, value in c.as_dict().items():
                setattr(total, name, getattr(total, name) + value)
        return total


_LIVE = frozenset({CallState.ANSWERED, CallState.CONFIRMED, CallState.HANGING_UP})
#: Calls that occupy the queue (QueueState ``queueLength``).
_QUEUED = frozenset({CallState.RINGING, *_LIVE})
_FINISHED = frozenset(
    {CallState.ENDED, CallState.CANCELLED, CallState.REJECTED, CallState.SILENT, CallState.FAILED}
)
_CALL_TIMERS = (
    TimerName.ANSWER,
    TimerName.RETRANSMIT_2XX,
    TimerName.NO_ACK,
    TimerName.HANGUP,
    TimerName.RETRANSMIT_BYE,
    TimerName.BYE_TIMEOUT,
    TimerName.FAILOVER,
)


def _next_hop(request: Request) -> Address | None:
    """Where a request we originate goes: its top Route, else its Request-URI."""
    routes = request.headers.get_all("Route")
    hop = routes[0] if routes else request.uri
    try:
        uri = parse_name_addr(hop).uri if "<" in hop else parse_uri(hop)
    except SipParseError:
        return None
    if not isinstance(uri, SipUri):
        return None
    transport = (uri.transport or "udp").lower()
    return (uri.host.strip("[]"), uri.port or 5060, transport)


def _unreliable(source: Any) -> bool:
    return getattr(source, "transport", "udp") == "udp"


# -- the asyncio adapter -------------------------------------------------------------------


class PsapAgents:
    """``PsapAgentCore`` on ``firebox.sip.transport``: one listener at ``host:port``
    (0: any free port; ``port`` holds the bound one after ``start``) for every queue."""

    def __init__(
        self,
        queues: Iterable[Queue],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        transports: Iterable[str] = ("udp",),
        ring_seconds: float = 0.0,
        hold_seconds: float | None = None,
        advertised_host: str | None = None,
        resolver: SipResolver | None = None,
        failover_seconds: float = 2.0,
    ) -> None:
        self._queues = list(queues)
        self.host = host
        self.port = port
        self.transports = tuple(transports)
        self.ring_seconds = ring_seconds
        self.hold_seconds = hold_seconds
        self.advertised_host = advertised_host or host
        self.server: Any = None
        self.core = PsapAgentCore(
            self._queues, host=self.advertised_host, port=port, transport=self.transports[0],
            ring_seconds=ring_seconds, hold_seconds=hold_seconds, resolver=resolver,
            failover_seconds=failover_seconds,
        )  # fmt: skip
        self._timers: dict[tuple[str, TimerName], asyncio.TimerHandle] = {}

    @property
    def queues(self) -> dict[str, Queue]:
        return self.core.queues

    @property
    def counts(self) -> dict[str, QueueCounts]:
        return self.core.counts

    @property
    def address(self) -> Address:
        return (self.advertised_host, self.port, self.transports[0])

    async def start(self) -> None:
        from firebox.sip.transport import start_sip_server

        self.server = await start_sip_server(self._handle, self.host, self.port, transports=self.transports)
        self.port = next(iter(self.server.addresses.values()))[1]
        self.core.port = self.port

    async def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self.server is not None:
            await self.server.close()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _handle(self, message: Message, source: Any) -> None:
        try:
            self._apply(self.core.receive(message, source, self._now()))
        except Exception:  # a stand-in PSAP must not take the loop down: logged and counted
            self.core.stats["errors"] += 1
            log.exception("PSAP agent failed on a message from %s", source)

    def _on_timer(self, key: str, name: TimerName) -> None:
        self._timers.pop((key, name), None)
        try:
            self._apply(self.core.timer(key, name, self._now()))
        except Exception:
            self.core.stats["errors"] += 1
            log.exception("PSAP agent timer %s failed", name)

    def hang_up_all(self) -> None:
        """Send BYE on every call that is up (used when the demo stops)."""
        now = self._now()
        for key in list(self.core.calls):
            self._apply(self.core.hang_up(key, now))

    def _apply(self, actions: list[Action]) -> None:
        loop = asyncio.get_running_loop()
        for action in actions:
            if isinstance(action, Reply):
                self.server.reply(action.response, action.source)
            elif isinstance(action, SendRequest):
                self.server.send(action.request, action.destination)
            elif isinstance(action, StartTimer):
                old = self._timers.pop((action.key, action.name), None)
                if old is not None:
                    old.cancel()
                self._timers[(action.key, action.name)] = loop.call_later(
                    action.delay, self._on_timer, action.key, action.name
                )
            elif isinstance(action, CancelTimer):
                old = self._timers.pop((action.key, action.name), None)
                if old is not None:
                    old.cancel()
