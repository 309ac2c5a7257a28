"""The PSAP call handling element, sans-I/O: per PSAP an ACD queue, call-taker positions,
voice and text calls, abandoned-call callbacks, transfer, overflow, test calls, QueueState
and the NENA-STA-020 answer-time figures. Its asyncio adapter is ``firebox.psap.element``.

Inputs (``now`` is POSIX time in seconds, passed in; nothing here reads a clock or touches
a socket): ``receive(message, source, now)``, ``timer(key, name, now)``,
``media_ready(key, port, now)`` (the adapter opened the call's RTP endpoint),
``originated(key, response, now)`` / ``originate_failed(key, now)`` (the result of a
request we asked the adapter to send in a client transaction), ``update_data(key, data,
now)`` (location or additional data dereferenced later), and the console's actions
(``sign_in``, ``answer``, ``release``, ``transfer``, ``send_text``...). Each returns a list of
``Action``s: the SIP ones of ``firebox.psap.ua`` (``Reply``, ``SendRequest``, ``StartTimer``,
``CancelTimer``) and ``Emit`` (a ``CallHandlingEvent`` for subscribers), ``OpenMedia`` /
``CloseMedia`` (the call's RTP endpoint) and ``Originate`` (a request to send in a client
transaction, INVITE or MESSAGE, whose responses come back through ``originated``).

SIP, voice (RFC 3261): a new INVITE for a PSAP (found by the top ``Route`` the ESRP adds,
NENA-STA-010.3 section 4.2, else by the Request-URI) is answered 180 Ringing at once and
waits in the PSAP's queue; the 200 OK with the SDP answer (RFC 3264 section 6,
``firebox.psap.sdp``) goes when a position answers and its media is open, and is
retransmitted until the ACK (13.3.1.4; no ACK within 64*T1: BYE). CANCEL before the 200
(9.2): 200, the INVITE 487, the call ABANDONED and put on the callback list. The caller's
BYE ends the call (RELEASED); a position's release sends our BYE, built from the dialog
(12.2.1.1, ``firebox.psap.ua.Dialog``).

Hold is the call's state only (HELD), with no re-INVITE: the caller's media keeps flowing to
the position's RTP endpoint (recorded), because a 911 caller on hold must still be heard.

ACD (how a waiting call is offered, ``RingStrategy``): ring-all offers every waiting call
to every available position; longest-idle and round-robin offer each waiting call, oldest
first, to one available position not already offered a call (the one idle longest, or the
next in the PSAP's order after the last one offered). A call offered to one position and not
answered within ``ring_no_answer_seconds`` is offered elsewhere and that position is made
not ready (redirect on no answer). Answering is a console action; ``answer`` with no call
id takes the longest waiting call offered to that position. Simulated call-takers
(``PositionSetup.auto_answer_seconds``) answer what is offered to them after that delay and
release after ``talk_seconds``.

Overflow (each PSAP's own rule): a call that arrives when ``max_queue`` calls already ring
is refused 503 with Retry-After at once, before any 180; a call still ringing
``overflow_after_seconds`` after its arrival is answered 486 Busy Here (after its 180). The
ESRP's proxy (``firebox.sip.proxy``) takes any non-2xx final answer, after a 180 too, as
the branch's failure and tries the next destination (the PSAP's alternates, then business
lines). A call that arrives when no position is signed in at all is refused 480 Temporarily
Unavailable at once, for the same reason. Those calls are OVERFLOWED, not offered. A text
call is never sent away once its MESSAGE got 200: it stays queued (logged when overdue).

Text to 911 (RFC 3428): every MESSAGE for a PSAP gets 200 (404 for a PSAP not here, so that
the ESRP's MESSAGE failover moves on). The first opens a TEXT call, queued and answered like a
voice call; later MESSAGEs with the same Call-Info ``emergency-CallId`` (which the BCF adds,
NENA-STA-010.3 section 4.1), or without one from the same sender URI, are appended to it
while it is not ended. ``send_text`` sends a MESSAGE straight to the caller (the incoming
MESSAGE's Contact, else its From URI, with the caller's Call-ID), not back through the ESRP: the ESRP routes every new
MESSAGE by policy as a new text to 911, so a reply through it would come back to a PSAP.

Transfer (conference-style): ``transfer`` sends a new INVITE for the target (a PSAP of the
directory, or an agency's SIP URI) to ``transfer_via`` (the adapter sets it to the ESRP,
the source of the call), with our SDP offer and the caller's PIDF-LO (RFC 6442, multipart
with ``Geolocation: <cid:...>``) or the caller's location URI, the original Call-Info
call/incident ids, and ``Referred-By`` naming the position (RFC 3892). The call-taker stays
on the call while it rings; a 2xx makes the transfer "connected" (ACKed), anything else
"failed" and the call stays as it was. Once connected, the position's release leaves the
caller and the target bridged here (status TRANSFERRED, no BYE to either); when either leg
ends, the other gets our BYE.

Test calls (NENA-STA-010.3 section 4.x, ``urn:service:test.sos``): answered at once with
200 and SDP, no position rings, released on the caller's BYE; counted in
``PsapStats.test_calls`` and not in the answer-time figures.

QueueState (NENA-STA-010.3 section 4.2.1.3, RFC 6665): each PSAP is the notifier of its
queue (``firebox.sip.subscription.Notifier``): ``queueLength`` the calls ringing (waiting
to be answered), ``queueMaxLength`` the PSAP's ``max_queue``; ``Inactive`` when no position
is signed in, ``Full`` when the queue is at its maximum, else ``Active``. Changes are
notified at most once per ``publish_seconds``.

Statistics (NENA-STA-020): per PSAP, calls offered (voice and text that reached the queue),
answered, answered within 15 s and 20 s of arrival, abandoned, ringing now, the longest
wait among those, the average time to answer; overflowed and test calls apart.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from firebox.esrp.states import EVENT_QUEUE_STATE, QueueState, QueueStateValue
from firebox.psap.api import (
    ACTIVE_STATUSES,
    AdditionalDataView,
    CallbackEntry,
    CallbackStatus,
    CallHandlingEvent,
    CallStatus,
    CallView,
    Conflict,
    EventKind,
    LocationView,
    Medium,
    NotFound,
    PositionStatus,
    PositionView,
    PsapStats,
    PsapView,
    RingStrategy,
    TextMessage,
)
from firebox.psap.sdp import SdpError, answer_sdp, offer_sdp, parse_sdp
from firebox.psap.ua import (
    ALLOW,
    T1,
    T2,
    Address,
    CancelTimer,
    Dialog,
    Reply,
    SendRequest,
    StartTimer,
    next_hop_address,
    sdp_offer_of,
)
from firebox.sip.address import SipUri, parse_name_addr, parse_uri
from firebox.sip.errors import SipParseError
from firebox.sip.headers import Headers
from firebox.sip.message import Message, Request, Response, caller_uri, make_response
from firebox.sip.multipart import build_multipart, make_part, parse_media_type, parse_multipart
from firebox.sip.resolve import RequestFailover, SipResolver, fails_over
from firebox.sip.subscription import Notifier, NotifierEvent
from firebox.sip.transaction import MAGIC_COOKIE
from firebox.sip.transaction import Send as NotifierSend

__all__ = [
    "Action",
    "CallData",
    "CallHandlingCore",
    "CloseMedia",
    "Dereference",
    "Emit",
    "OpenMedia",
    "Originate",
    "PositionSetup",
    "PsapSetup",
    "TimerName",
]

log = logging.getLogger(__name__)

ACCEPT = "application/sdp, multipart/mixed, application/pidf+xml, text/plain"
TEST_SERVICE = "urn:service:test."
#: Ended calls kept per PSAP for ``calls(include_ended=True)``.
MAX_ENDED = 500
#: Callback entries kept per PSAP (the oldest done ones go first).
MAX_CALLBACKS = 1000
#: MESSAGE answers remembered for retransmissions (RFC 3261 17.2.2: 64*T1 is enough).
MAX_SEEN_MESSAGES = 10_000


class TimerName(StrEnum):
    RETRANSMIT_2XX = "2xx retransmit"  # RFC 3261 13.3.1.4
    NO_ACK = "no ACK"  # 64*T1 without ACK: BYE
    RETRANSMIT_BYE = "BYE retransmit"  # Timer E (17.1.2.2)
    BYE_TIMEOUT = "BYE timeout"  # Timer F
    OVERFLOW = "overflow"  # the PSAP's overflow_after_seconds
    NO_ANSWER = "ring no answer"  # offered to one position too long: offer elsewhere
    AUTO_ANSWER = "auto answer"  # a simulated call-taker answers (key: position id)
    AUTO_RELEASE = "auto release"  # a simulated call-taker's talk time is over (key: position)
    PUBLISH = "publish"  # QueueState notifications (rate limit)
    FORGET = "forget"  # drop a finished SIP leg's index entries
    FAILOVER = "failover"  # our BYE heard nothing: its next target (RFC 3263 4.3)


# -- actions beyond the user agent's ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Emit:
    """Hand ``event`` to every subscriber (and the i3 log events)."""

    event: CallHandlingEvent


@dataclass(frozen=True, slots=True)
class OpenMedia:
    """Open the RTP endpoint of call ``key``; answer with ``media_ready(key, port, now)``.
    ``remote`` is the caller's RTP address from the offer, when there is one."""

    key: str
    remote: tuple[str, int] | None


@dataclass(frozen=True, slots=True)
class CloseMedia:
    key: str


@dataclass(frozen=True, slots=True)
class Originate:
    """Send ``request`` to ``destination`` in a client transaction (INVITE or non-INVITE by
    its method); report every response to ``originated(key, ...)`` and a timeout or
    transport error to ``originate_failed(key, ...)``."""

    key: str
    request: Request
    destination: Address


@dataclass(frozen=True, slots=True)
class Dereference:
    """Fetch what call ``key``'s data names by reference (a location URI, RFC 7852 blocks)
    and hand the result to ``update_data(key, data, now)``."""

    key: str
    data: Any


Action = Reply | SendRequest | StartTimer | CancelTimer | Emit | OpenMedia | CloseMedia | Originate | Dereference


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PositionSetup:
    id: str
    #: A simulated call-taker: signs in at start, answers what is offered after this delay.
    auto_answer_seconds: float | None = None
    talk_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class PsapSetup:
    id: str
    uri: str
    name: str = ""
    positions: tuple[PositionSetup, ...] = ()
    strategy: RingStrategy = RingStrategy.LONGEST_IDLE
    max_queue: int = 20
    overflow_after_seconds: float | None = None
    ring_no_answer_seconds: float = 20.0


class CallData(Protocol):
    """What the element reads of a call's request (``firebox.psap.calldata.CallData``)."""

    call_id: str
    incident_id: str | None
    callback: str | None
    caller_uri: str
    location: LocationView | None
    additional_data: tuple[AdditionalDataView, ...]
    pidf: bytes | None


@dataclass(frozen=True, slots=True)
class _HeaderData:
    """The ids and callback read from headers alone: used until ``firebox.psap.calldata``
    is importable (no location, no additional data)."""

    call_id: str
    incident_id: str | None
    callback: str | None
    caller_uri: str
    location: LocationView | None = None
    additional_data: tuple[AdditionalDataView, ...] = ()
    pidf: bytes | None = None
    location_reference: str | None = None
    references: tuple[str, ...] = ()


def call_info_ids(request: Request) -> dict[str, str]:
    """The i3 ids of a request's Call-Info (``purpose=emergency-CallId`` /
    ``emergency-IncidentId``, NENA-STA-010.3 section 2.1.x), by purpose."""
    ids: dict[str, str] = {}
    for value in request.headers.get_all("Call-Info"):
        if "<" not in value or ">" not in value:
            continue
        lowered = value.lower()
        for purpose in ("emergency-CallId", "emergency-IncidentId"):
            if f"purpose={purpose.lower()}" in lowered:
                ids[purpose] = value[value.find("<") + 1 : value.find(">")]
    return ids


def _header_data(request: Request) -> _HeaderData:
    ids = call_info_ids(request)
    uri = caller_uri(request) or ""
    return _HeaderData(ids.get("emergency-CallId") or request.call_id, ids.get("emergency-IncidentId"), uri or None, uri)


def default_describe() -> Callable[[Request], Any]:
    """``firebox.psap.calldata.call_data`` when it is there, else the header reading."""
    try:
        from firebox.psap.calldata import call_data
    except ImportError:
        log.warning("firebox.psap.calldata is not available: calls show ids and callback only")
        return _header_data
    return call_data


# -- state -----------------------------------------------------------------------------------


class Leg(StrEnum):
    """The SIP state of the caller's INVITE leg (a text call has none)."""

    RINGING = "ringing"  # 180 sent
    OPENING = "opening media"  # answered by a position, waiting for the RTP endpoint
    ANSWERED = "answered"  # 200 sent, waiting for the ACK
    CONFIRMED = "confirmed"
    HANGING_UP = "hanging up"  # our BYE sent
    ENDED = "ended"


@dataclass(slots=True)
class _Position:
    setup: PositionSetup
    psap_id: str
    status: PositionStatus = PositionStatus.SIGNED_OUT
    user: str | None = None
    since: float = 0.0
    call: str | None = None  # the key of its call

    def view(self) -> PositionView:
        return PositionView(self.setup.id, self.psap_id, self.status, self.user, _dt(self.since) if self.since else None, self.call)


@dataclass(slots=True)
class _Transfer:
    target: str
    uri: str
    key: str  # Originate key
    invite: Request
    status: str = "trying"
    dialog: Dialog | None = None
    bye_sent: bool = False


@dataclass(slots=True, eq=False)
class _Call:
    key: str
    psap: PsapSetup
    medium: Medium
    data: Any
    offered_at: float
    status: CallStatus = CallStatus.RINGING
    test: bool = False
    # voice
    invite: Request | None = None
    source: Any = None
    dialog: Dialog | None = None
    leg: Leg | None = None
    last_response: Response | None = None
    offer: bytes | None = None
    answer: bytes | None = None
    retransmit: float = T1
    bye: Request | None = None
    bye_to: Address | None = None
    bye_failover: RequestFailover | None = None
    remote_rtp: tuple[str, int] | None = None
    media_port: int | None = None
    # text
    group: str | None = None
    reply_to: str | None = None
    sip_call_id: str | None = None  # of the caller's latest MESSAGE: our replies reuse it
    reply_seq: int = 0
    messages: list[TextMessage] = field(default_factory=list)
    # handling
    answered_at: float | None = None
    ended_at: float | None = None
    position: str | None = None
    offered_to: tuple[str, ...] = ()
    no_answer: set[str] = field(default_factory=set)  # positions that let it ring out
    transfer: _Transfer | None = None
    #: The CallView id: the i3 call id, made unique when another call here has it already
    #: (a call transferred between two PSAPs of this element keeps its i3 id).
    view_id: str = ""

    @property
    def call_id(self) -> str:
        return self.view_id or self.data.call_id or self.key


@dataclass(slots=True)
class _Stats:
    offered: int = 0
    answered: int = 0
    answered_15s: int = 0
    answered_20s: int = 0
    abandoned: int = 0
    overflowed: int = 0
    test_calls: int = 0
    answer_seconds: float = 0.0


@dataclass(slots=True)
class _Psap:
    setup: PsapSetup
    positions: dict[str, _Position]
    stats: _Stats = field(default_factory=_Stats)
    ended: deque[_Call] = field(default_factory=lambda: deque(maxlen=MAX_ENDED))
    callbacks: dict[str, CallbackEntry] = field(default_factory=dict)
    last_offered: str | None = None  # round robin
    notifier: Notifier | None = None
    published: bytes = b""


def _dt(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def _user_host(uri: str) -> tuple[str, str] | None:
    try:
        parsed = parse_uri(uri.strip().strip("<>"))
    except SipParseError:
        return None
    if not isinstance(parsed, SipUri):
        return None
    return ((parsed.user or "").lower(), parsed.host.lower())


def _text_of(request: Request) -> str:
    """The text of a MESSAGE: a ``text/plain`` body, or the first such part of a multipart
    one; anything else is shown as its content type (never dropped)."""
    ctype = request.content_type or "text/plain"
    try:
        media, params = parse_media_type(ctype)
    except (SipParseError, ValueError):
        media, params = "application/octet-stream", {}
    if media == "text/plain":
        return request.body.decode(params.get("charset", "utf-8"), "replace").rstrip("\r\n")
    if media.startswith("multipart/"):
        try:
            parts = parse_multipart(ctype, request.body)
        except (SipParseError, ValueError):
            parts = []
        for part in parts:
            if part.content_type.split(";")[0].strip().lower() == "text/plain":
                return part.body.decode("utf-8", "replace")
    return f"[{media}, {len(request.body)} bytes]"


def _remote_rtp(offer: bytes | None) -> tuple[str, int] | None:
    """The caller's audio RTP address in an SDP offer (RFC 4566 c= and m=)."""
    if offer is None:
        return None
    try:
        sdp = parse_sdp(offer)
    except SdpError:
        return None
    for m in sdp.media:
        connection = m.connection or sdp.connection
        if m.media == "audio" and m.port and connection:
            return (connection.split()[-1], m.port)
    return None


# -- the core --------------------------------------------------------------------------------


class CallHandlingCore:
    """Call handling for ``psaps``, reachable at ``host:port`` over ``transport`` (Contact,
    Via). ``directory``: PSAP id -> URI of every PSAP a call may be transferred to;
    ``describe(request)`` reads a call's data (``firebox.psap.calldata.call_data``)."""

    def __init__(
        self,
        psaps: Iterable[PsapSetup],
        *,
        host: str,
        port: int,
        transport: str = "udp",
        directory: dict[str, str] | None = None,
        describe: Callable[[Request], Any] | None = None,
        token: Callable[[], str] = lambda: secrets.token_hex(6),
        publish_seconds: float = 1.0,
        resolver: SipResolver | None = None,
        failover_seconds: float = 2.0,
    ) -> None:
        #: RFC 3263 for the first hop of the requests we send along a route set (a cluster
        #: name): targets in order, the next after ``failover_seconds`` without any answer,
        #: on a 503, or (``Originate``) on a timeout or transport error. ``None``: the hop's
        #: own host and port, as before. The adapter may set it after construction.
        self.resolver = resolver
        self.failover_seconds = failover_seconds
        self.host = host
        self.port = port
        self.transport = transport.lower()
        self.publish_seconds = publish_seconds
        self.describe = describe or default_describe()
        self._token = token
        self._psaps: dict[str, _Psap] = {}
        self._positions: dict[str, _Position] = {}
        self._by_uri: dict[tuple[str, str], str] = {}
        for setup in psaps:
            positions = {p.id: _Position(p, setup.id) for p in setup.positions}
            for pid in positions:
                if pid in self._positions:
                    raise ValueError(f"position {pid!r} is in two PSAPs")
            self._psaps[setup.id] = _Psap(setup, positions)
            self._positions.update(positions)
            uh = _user_host(setup.uri)
            if uh is not None:
                self._by_uri[uh] = setup.id
                self._by_uri.setdefault((uh[0], ""), setup.id)
        self.directory = dict(directory or {})
        for p in self._psaps.values():
            self.directory.setdefault(p.setup.id, p.setup.uri)
        #: Where a transfer's INVITE goes (the ESRP); None: the source of the call.
        self.transfer_via: Address | None = None
        self._calls: dict[str, _Call] = {}  # active calls by key
        self._by_call_id: dict[str, _Call] = {}  # every call kept, by its CallView id
        self._by_branch: dict[tuple[str, str], _Call] = {}
        self._by_sip: dict[str, _Call] = {}  # by the SIP Call-ID of the caller's leg
        self._text_groups: dict[tuple[str, str], _Call] = {}  # (psap, group) -> open text call
        self._originated: dict[str, _Call] = {}  # Originate key -> call
        self._failovers: dict[str, tuple[RequestFailover, _Call]] = {}  # Originate key -> targets left
        self._seen_messages: OrderedDict[tuple[str, str, str], Response] = OrderedDict()
        self._sessions = itertools.count(1)
        self._seq = itertools.count(1)
        self._publish_pending = False
        self._pending: list[Action] = []
        self._stats_dirty: set[str] = set()
        #: Everything worth counting that is not a PSAP figure (strays, retransmissions).
        self.counters: Counter[str] = Counter()

    # -- views -------------------------------------------------------------------------------

    def psaps(self) -> list[PsapView]:
        return [
            PsapView(p.setup.id, p.setup.name, p.setup.uri, p.setup.strategy, tuple(p.positions))
            for p in self._psaps.values()
        ]

    def _psap(self, psap_id: str) -> _Psap:
        try:
            return self._psaps[psap_id]
        except KeyError:
            raise NotFound(f"no PSAP {psap_id!r} here") from None

    def _position(self, position_id: str) -> _Position:
        try:
            return self._positions[position_id]
        except KeyError:
            raise NotFound(f"no position {position_id!r}") from None

    def _call(self, call_id: str) -> _Call:
        call = self._by_call_id.get(call_id) or self._calls.get(call_id)
        if call is None:
            raise NotFound(f"no call {call_id!r}")
        return call

    def view(self, call: _Call) -> CallView:
        data = call.data
        media: dict[str, Any] = {}
        if call.media_port is not None:
            media["local_port"] = call.media_port
        if call.remote_rtp is not None:
            media["remote"] = f"{call.remote_rtp[0]}:{call.remote_rtp[1]}"
        return CallView(
            call_id=call.call_id,
            sip_call_id=call.invite.call_id if call.invite is not None else call.key,
            incident_id=data.incident_id,
            psap_id=call.psap.id,
            medium=call.medium,
            status=call.status,
            callback=data.callback,
            caller_uri=data.caller_uri,
            location=data.location,
            additional_data=tuple(data.additional_data),
            offered_at=_dt(call.offered_at),
            answered_at=_dt(call.answered_at) if call.answered_at is not None else None,
            ended_at=_dt(call.ended_at) if call.ended_at is not None else None,
            position=call.position,
            offered_to=call.offered_to,
            messages=tuple(call.messages),
            transfer_target=call.transfer.target if call.transfer else None,
            transfer_status=call.transfer.status if call.transfer else None,
            media=media,
        )

    def calls(self, psap_id: str, *, include_ended: bool = False) -> list[CallView]:
        psap = self._psap(psap_id)
        active = [c for c in self._calls.values() if c.psap.id == psap_id and not c.test and c.status in ACTIVE_STATUSES]
        # A TRANSFERRED call still bridged here is no longer the PSAP's business: not listed
        # as active, but among the ended ones.
        out = sorted(active, key=lambda c: c.offered_at)
        if include_ended:
            out += list(psap.ended)
        return [self.view(c) for c in out]

    def call(self, call_id: str) -> CallView:
        return self.view(self._call(call_id))

    def positions(self, psap_id: str) -> list[PositionView]:
        return [p.view() for p in self._psap(psap_id).positions.values()]

    def callbacks(self, psap_id: str) -> list[CallbackEntry]:
        return list(self._psap(psap_id).callbacks.values())

    def stats(self, psap_id: str, now: float) -> PsapStats:
        psap = self._psap(psap_id)
        s = psap.stats
        waiting = [c for c in self._calls.values() if c.psap.id == psap_id and c.status is CallStatus.RINGING and not c.test]
        return PsapStats(
            psap_id=psap_id,
            offered=s.offered,
            answered=s.answered,
            answered_15s=s.answered_15s,
            answered_20s=s.answered_20s,
            abandoned=s.abandoned,
            in_queue=len(waiting),
            longest_wait_s=max((now - c.offered_at for c in waiting), default=0.0),
            average_answer_s=s.answer_seconds / s.answered if s.answered else None,
            overflowed=s.overflowed,
            test_calls=s.test_calls,
        )

    def queue_state(self, psap_id: str) -> QueueState:
        psap = self._psap(psap_id)
        length = sum(1 for c in self._calls.values() if c.psap.id == psap_id and c.status is CallStatus.RINGING and not c.test)
        if not any(p.status is not PositionStatus.SIGNED_OUT for p in psap.positions.values()):
            state = QueueStateValue.INACTIVE
        elif length >= psap.setup.max_queue:
            state = QueueStateValue.FULL
        else:
            state = QueueStateValue.ACTIVE
        return QueueState(psap.setup.uri, length, psap.setup.max_queue, state)

    # -- events ------------------------------------------------------------------------------

    def _emit_call(self, call: _Call, now: float, kind: EventKind = EventKind.CALL) -> None:
        if call.test:
            return
        self._pending.append(Emit(CallHandlingEvent(kind, call.psap.id, _dt(now), call=self.view(call))))
        self._stats_dirty.add(call.psap.id)

    def _emit_position(self, position: _Position, now: float) -> None:
        self._pending.append(Emit(CallHandlingEvent(EventKind.POSITION, position.psap_id, _dt(now), position=position.view())))
        self._stats_dirty.add(position.psap_id)

    def _flush(self, now: float, actions: list[Action] | None = None) -> list[Action]:
        """The actions of one input: its own, the events it caused, one STATS event per PSAP
        touched, and a QueueState publication when a subscriber is waiting."""
        out = list(actions or []) + self._pending
        self._pending = []
        for psap_id in sorted(self._stats_dirty):
            out.append(Emit(CallHandlingEvent(EventKind.STATS, psap_id, _dt(now), stats=self.stats(psap_id, now))))
        self._stats_dirty.clear()
        if any(p.notifier is not None for p in self._psaps.values()) and not self._publish_pending:
            self._publish_pending = True
            out.append(StartTimer("queue-state", TimerName.PUBLISH, self.publish_seconds))  # type: ignore[arg-type]
        return out

    # -- lookups -------------------------------------------------------------------------------

    def psap_for(self, request: Request) -> _Psap | None:
        """The PSAP a new request is for: the top ``Route`` naming a PSAP queue (the ESRP's
        loose route, RFC 3261 16.4), else the Request-URI."""
        candidates = []
        route = request.headers.get("Route")
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
            psap_id = self._by_uri.get(uh) or self._by_uri.get((uh[0], ""))
            if psap_id is not None:
                return self._psaps[psap_id]
        return None

    def _call_for(self, call_id: str, tag: str | None) -> _Call | None:
        return self._calls.get(f"{call_id}/{tag}") if tag else None

    def _contact(self, psap: PsapSetup) -> str:
        uh = _user_host(psap.uri)
        user = uh[0] if uh and uh[0] else psap.id
        transport = "" if self.transport == "udp" else f";transport={self.transport}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"<sip:{user}@{host}:{self.port}{transport}>"

    def _via(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"SIP/2.0/{self.transport.upper()} {host}:{self.port};branch={MAGIC_COOKIE}-ch-{self._token()};rport"

    # -- input: SIP messages -----------------------------------------------------------------

    def receive(self, message: Message, source: Any, now: float) -> list[Action]:
        """A parsed message from the transport. A request that cannot be read is answered
        with the parse error's status (400...), never dropped without a word."""
        try:
            if isinstance(message, Response):
                return self._flush(now, self._on_response(message, now))
            return self._flush(now, self._on_request(message, source, now))
        except SipParseError as error:
            self.counters["bad_messages"] += 1
            log.info("call handling: unreadable %s from %s: %s", type(message).__name__, source, error)
            if isinstance(message, Request) and message.method != "ACK":
                try:
                    return self._flush(now, [Reply(make_response(message, error.status, error.reason), source)])
                except SipParseError:
                    pass
            return self._flush(now)

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
        if method == "MESSAGE":
            return self._message(request, source, now)
        if method == "SUBSCRIBE":
            return self._subscribe(request, source, now)
        if method == "OPTIONS":
            return [Reply(make_response(request, 200, headers=[("Allow", ALLOW), ("Accept", ACCEPT)]), source)]
        if method in ("INFO", "UPDATE"):
            call = self._call_for(request.call_id, request.to_tag)
            ok = call is not None and call.leg in (Leg.ANSWERED, Leg.CONFIRMED)
            return [Reply(make_response(request, 200 if ok else 481), source)]
        return [Reply(make_response(request, 405, headers=[("Allow", ALLOW)]), source)]

    def _invite(self, invite: Request, source: Any, now: float) -> list[Action]:
        known = self._by_branch.get((invite.call_id, invite.branch or ""))
        if known is not None:
            # A retransmission (RFC 3261 17.2.1): the last response again.
            self.counters["invite_retransmissions"] += 1
            return [Reply(known.last_response, source)] if known.last_response is not None else []
        psap = self.psap_for(invite)
        if psap is None:
            self.counters["unknown_psap"] += 1
            log.info("call handling: INVITE %s for no PSAP here (Route %s)", invite.uri, invite.headers.get("Route"))
            return [Reply(make_response(invite, 404, "No Such PSAP Queue Here", to_tag=self._token()), source)]
        tag = self._token()
        try:
            data = self.describe(invite)
        except Exception:  # bad call data never refuses a 911 call: ids and callback only
            log.exception("call handling: reading the call data of %s failed", invite.call_id)
            data = _header_data(invite)
        call = _Call(
            key=f"{invite.call_id}/{tag}", psap=psap.setup, medium=Medium.VOICE, data=data, offered_at=now,
            invite=invite, source=source, dialog=Dialog.from_invite(invite, tag), leg=Leg.RINGING,
            offer=sdp_offer_of(invite),
        )  # fmt: skip
        call.remote_rtp = _remote_rtp(call.offer)
        self._by_branch[(invite.call_id, invite.branch or "")] = call
        self._by_sip[invite.call_id] = call
        self._calls[call.key] = call
        if call.offer is not None and not self._acceptable(call.offer):
            self.counters["not_acceptable"] += 1
            return self._refuse(call, now, 488, [("Warning", f'304 {self.host} "Media type not available"')], offered=False)
        self._name(call)
        if invite.uri.lower().startswith(TEST_SERVICE) or str(invite.to_addr.uri).lower().startswith(TEST_SERVICE):
            # NENA i3 test call: answered at once, by no position (not a 911 call).
            call.test = True
            psap.stats.test_calls += 1
            call.status = CallStatus.CONNECTED
            call.leg = Leg.OPENING
            return [OpenMedia(call.key, call.remote_rtp)]
        ringing = sum(1 for c in self._calls.values() if c.psap is psap.setup and c.status is CallStatus.RINGING and not c.test and c is not call)
        if not any(p.status is not PositionStatus.SIGNED_OUT for p in psap.positions.values()):
            return self._refuse(call, now, 480, [("Retry-After", "10")], offered=False, reason="no position signed in")
        if ringing >= psap.setup.max_queue:
            return self._refuse(call, now, 503, [("Retry-After", "10")], offered=False, reason="queue full")
        psap.stats.offered += 1
        call.last_response = make_response(invite, 180, to_tag=tag, headers=[("Contact", self._contact(psap.setup))])
        actions: list[Action] = [Reply(call.last_response, source)]
        if psap.setup.overflow_after_seconds is not None:
            actions.append(StartTimer(call.key, TimerName.OVERFLOW, psap.setup.overflow_after_seconds))  # type: ignore[arg-type]
        self._emit_call(call, now)
        actions += self._dispatch(psap, now)
        return actions + self._dereference(call)

    @staticmethod
    def _dereference(call: _Call) -> list[Action]:
        data = call.data
        wanted = (getattr(data, "location_reference", None) and data.location is None) or getattr(data, "references", ())
        return [Dereference(call.key, data)] if wanted else []

    def ids_for_sip(self, sip_call_id: str) -> tuple[str, str | None] | None:
        """The i3 call and incident ids of the call whose caller leg has this SIP Call-ID."""
        call = self._by_sip.get(sip_call_id)
        return (call.call_id, call.data.incident_id) if call is not None and not call.test else None

    @staticmethod
    def _acceptable(offer: bytes) -> bool:
        try:
            return answer_sdp(parse_sdp(offer), host="0.0.0.0", first_port=2, session_id=0) is not None
        except SdpError:
            return False

    def _refuse(
        self, call: _Call, now: float, status: int, headers: list[tuple[str, str]], *, offered: bool, reason: str = ""
    ) -> list[Action]:
        """A final non-2xx to the caller's INVITE (overflow, 488): the ESRP fails over."""
        assert call.invite is not None and call.dialog is not None
        psap = self._psaps[call.psap.id]
        call.last_response = make_response(call.invite, status, to_tag=call.dialog.local_tag, headers=headers)
        call.leg = Leg.ENDED
        call.ended_at = now
        actions: list[Action] = [Reply(call.last_response, call.source), *self._stop_call_timers(call)]
        if status != 488:
            call.status = CallStatus.OVERFLOWED
            psap.stats.overflowed += 1
            log.info("call handling: %s overflowed from %s (%s): %d", call.call_id, psap.setup.id, reason, status)
        else:
            call.status = CallStatus.RELEASED
        self._emit_call(call, now)
        self._finish(call, now)
        actions.append(StartTimer(call.key, TimerName.FORGET, 64 * T1))  # type: ignore[arg-type]
        return actions + self._dispatch(psap, now)

    def _ack(self, ack: Request) -> list[Action]:
        call = self._call_for(ack.call_id, ack.to_tag)
        if call is None or call.leg is not Leg.ANSWERED:
            return []  # the ACK of a non-2xx, or a retransmitted one: absorbed (17.2.1)
        call.leg = Leg.CONFIRMED
        return [CancelTimer(call.key, TimerName.RETRANSMIT_2XX), CancelTimer(call.key, TimerName.NO_ACK)]  # type: ignore[arg-type]

    def _cancel(self, cancel: Request, source: Any, now: float) -> list[Action]:
        call = self._by_branch.get((cancel.call_id, cancel.branch or ""))
        if call is None:
            return [Reply(make_response(cancel, 481), source)]
        assert call.dialog is not None and call.invite is not None
        actions: list[Action] = [Reply(make_response(cancel, 200, to_tag=call.dialog.local_tag), source)]
        if call.leg not in (Leg.RINGING, Leg.OPENING):
            return actions  # the 200 went first: the CANCEL changes nothing (9.2)
        call.last_response = make_response(call.invite, 487, to_tag=call.dialog.local_tag)
        actions.append(Reply(call.last_response, call.source))
        actions += self._stop_call_timers(call)
        if call.leg is Leg.OPENING:
            actions.append(CloseMedia(call.key))
        call.leg = Leg.ENDED
        actions += self._abandon(call, now)
        actions.append(StartTimer(call.key, TimerName.FORGET, 64 * T1))  # type: ignore[arg-type]
        return actions

    def _abandon(self, call: _Call, now: float) -> list[Action]:
        """The caller gave up before the answer: ABANDONED, and on the callback list."""
        psap = self._psaps[call.psap.id]
        call.ended_at = now
        if call.test:
            self._finish(call, now)
            return []
        actions = self._free_position(call, now)
        call.status = CallStatus.ABANDONED
        call.offered_to = ()
        psap.stats.abandoned += 1
        entry = CallbackEntry(
            id=f"cb-{next(self._seq)}", call_id=call.call_id, psap_id=psap.setup.id,
            callback=call.data.callback, location=call.data.location, at=_dt(now),
        )  # fmt: skip
        psap.callbacks[entry.id] = entry
        while len(psap.callbacks) > MAX_CALLBACKS:
            oldest = next((k for k, v in psap.callbacks.items() if v.status is CallbackStatus.DONE), next(iter(psap.callbacks)))
            psap.callbacks.pop(oldest)
        log.info("call handling: %s abandoned at %s; callback %s to %s", call.call_id, psap.setup.id, entry.id, entry.callback)
        self._pending.append(Emit(CallHandlingEvent(EventKind.CALLBACK, psap.setup.id, _dt(now), callback=entry)))
        self._emit_call(call, now)
        self._finish(call, now)
        return actions + self._dispatch(psap, now)

    def _bye(self, bye: Request, source: Any, now: float) -> list[Action]:
        call = self._call_for(bye.call_id, bye.to_tag)
        if call is None:
            leg = self._transfer_leg(bye)
            if leg is not None:
                return [Reply(make_response(bye, 200), source), *self._target_hung_up(leg, now)]
            return [Reply(make_response(bye, 481), source)]
        actions: list[Action] = [Reply(make_response(bye, 200), source)]
        if call.leg in (Leg.ANSWERED, Leg.CONFIRMED, Leg.HANGING_UP):
            assert call.dialog is not None
            call.dialog.remote_seq = max(call.dialog.remote_seq, bye.cseq[0])
            actions += self._ended(call, now)
        return actions

    def _ended(self, call: _Call, now: float) -> list[Action]:
        """The caller's leg is over (their BYE, or the answer to ours)."""
        actions: list[Action] = [*self._stop_call_timers(call), CloseMedia(call.key)]
        call.leg = Leg.ENDED
        if call.status in ACTIVE_STATUSES or call.status is CallStatus.TRANSFERRED:
            if call.status is not CallStatus.TRANSFERRED:
                call.status = CallStatus.RELEASED
            call.ended_at = call.ended_at or now
            actions += self._free_position(call, now)
            actions += self._bye_target(call)
            self._emit_call(call, now)
            self._finish(call, now)
            actions += self._dispatch(self._psaps[call.psap.id], now)
        actions.append(StartTimer(call.key, TimerName.FORGET, 64 * T1))  # type: ignore[arg-type]
        return actions

    def _reinvite(self, invite: Request, source: Any) -> list[Action]:
        call = self._call_for(invite.call_id, invite.to_tag)
        if call is None or call.leg not in (Leg.ANSWERED, Leg.CONFIRMED) or call.dialog is None:
            return [Reply(make_response(invite, 481), source)]
        call.dialog.remote_seq = invite.cseq[0]
        offer = sdp_offer_of(invite)
        if offer is not None:
            call.offer, call.remote_rtp = offer, _remote_rtp(offer) or call.remote_rtp
            fresh = self._answer_sdp(call, version=2)
            if fresh is None:
                return [Reply(make_response(invite, 488), source)]
            call.answer = fresh
        headers = [("Contact", self._contact(call.psap)), ("Content-Type", "application/sdp")]
        return [Reply(make_response(invite, 200, headers=headers, body=call.answer or b""), source)]

    def _on_response(self, response: Response, now: float) -> list[Action]:
        method = response.cseq[1]
        if method == "NOTIFY":
            for psap in self._psaps.values():
                if psap.notifier is not None:
                    self._notifier_actions(psap.notifier.handle_response(response, now), None)
            return []
        if method == "BYE":
            call = self._call_for(response.call_id, response.from_tag)
            if call is None or call.leg is not Leg.HANGING_UP:
                return []
            failover = call.bye_failover
            if failover is not None and fails_over(response.status):
                if failover.advance(now):  # 503: the next target (RFC 3263 4.3)
                    self.counters["bye_failovers"] += 1
                    return self._send_bye(call, failover)
            elif failover is not None:
                failover.succeeded()
            if response.status >= 200:
                return self._ended(call, now)
            return [CancelTimer(call.key, TimerName.FAILOVER)]  # type: ignore[list-item]
        self.counters["stray_responses"] += 1
        return []

    # -- text (RFC 3428) -------------------------------------------------------------------

    def _message(self, request: Request, source: Any, now: float) -> list[Action]:
        psap = self.psap_for(request)
        if psap is None:
            self.counters["unknown_psap"] += 1
            return [Reply(make_response(request, 404, "No Such PSAP Queue Here", to_tag=self._token()), source)]
        seen = (request.call_id, str(request.cseq[0]), request.branch or "")
        if seen in self._seen_messages:
            # A retransmission (RFC 3261 17.2.2): the same 200 again, the text not twice.
            self.counters["message_retransmissions"] += 1
            return [Reply(self._seen_messages[seen], source)]
        ok = make_response(request, 200, to_tag=self._token())
        self._seen_messages[seen] = ok
        while len(self._seen_messages) > MAX_SEEN_MESSAGES:
            self._seen_messages.popitem(last=False)
        actions: list[Action] = [Reply(ok, source)]
        ids = call_info_ids(request)
        sender = caller_uri(request) or request.headers.get("From") or "unknown"
        group = ids.get("emergency-CallId") or f"from:{sender}"
        text = _text_of(request)
        call = self._text_groups.get((psap.setup.id, group))
        if call is not None and call.data.location is None:
            try:  # a later MESSAGE may bring the location the first lacked
                fresh = self.describe(request)
                if fresh.location is not None:
                    call.data = fresh
            except Exception:
                log.exception("call handling: reading the call data of a MESSAGE failed")
        if call is None:
            try:
                data = self.describe(request)
            except Exception:
                log.exception("call handling: reading the call data of a MESSAGE failed")
                data = _header_data(request)
            contact = request.headers.get("Contact")
            try:
                reply_to = str(parse_name_addr(contact).uri) if contact else sender
            except SipParseError:
                reply_to = sender
            call = _Call(
                key=f"text-{next(self._seq)}", psap=psap.setup, medium=Medium.TEXT, data=data, offered_at=now,
                group=group, reply_to=reply_to,
            )  # fmt: skip
            self._calls[call.key] = call
            self._name(call)
            self._text_groups[(psap.setup.id, group)] = call
            psap.stats.offered += 1
            if psap.setup.overflow_after_seconds is not None:
                actions.append(StartTimer(call.key, TimerName.OVERFLOW, psap.setup.overflow_after_seconds))  # type: ignore[arg-type]
            call.messages.append(TextMessage("in", text, _dt(now)))
            call.sip_call_id = request.call_id
            self._by_sip[request.call_id] = call
            self._emit_call(call, now)
            return actions + self._dispatch(psap, now) + self._dereference(call)
        call.messages.append(TextMessage("in", text, _dt(now)))
        call.sip_call_id = request.call_id
        self._by_sip[request.call_id] = call
        self._emit_call(call, now, EventKind.TEXT)
        return actions

    # -- QueueState (RFC 6665) ---------------------------------------------------------------

    def _subscribe(self, request: Request, source: Any, now: float) -> list[Action]:
        psap = self.psap_for(request)
        if psap is None:
            return [Reply(make_response(request, 404, to_tag=self._token()), source)]
        if psap.notifier is None:
            psap.notifier = Notifier(EVENT_QUEUE_STATE, psap.setup.uri, self._contact(psap.setup).strip("<>"))
        body = self.queue_state(psap.setup.id).to_json().encode()
        psap.published = body
        return self._notifier_actions(psap.notifier.handle_subscribe(request, now, body), source)

    def _notifier_actions(self, events: list[NotifierEvent], source: Any) -> list[Action]:
        actions: list[Action] = []
        for event in events:
            if isinstance(event, NotifierSend):
                message = event.message
                if isinstance(message, Response):
                    actions.append(Reply(message, source))
                else:
                    routes = message.headers.get_all("Route")
                    hop = str(parse_name_addr(routes[0]).uri) if routes else message.uri
                    try:
                        actions.append(SendRequest(message, next_hop_address(hop)))
                    except (SipParseError, ValueError):
                        self.counters["notify_unroutable"] += 1
        return actions

    def _publish(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for psap in self._psaps.values():
            if psap.notifier is None:
                continue
            body = self.queue_state(psap.setup.id).to_json().encode()
            if body != psap.published:
                psap.published = body
                actions += self._notifier_actions(psap.notifier.publish(body, now), None)
            else:
                actions += self._notifier_actions(psap.notifier.tick(now), None)
        return actions

    # -- the ACD -----------------------------------------------------------------------------

    def _dispatch(self, psap: _Psap, now: float) -> list[Action]:
        """Offer waiting calls to available positions per the PSAP's strategy; start the
        simulated call-takers' answer timers and the ring-no-answer timers."""
        waiting = sorted(
            (c for c in self._calls.values() if c.psap is psap.setup and c.status is CallStatus.RINGING and not c.test),
            key=lambda c: c.offered_at,
        )
        free = [p for p in psap.positions.values() if p.status is PositionStatus.AVAILABLE and p.call is None]
        before = {c.key: c.offered_to for c in waiting}
        if psap.setup.strategy is RingStrategy.RING_ALL:
            for call in waiting:
                call.offered_to = tuple(p.setup.id for p in free if p.setup.id not in call.no_answer)
        else:
            free_ids = {p.setup.id for p in free}
            taken: set[str] = set()
            for call in waiting:  # keep standing offers to positions still free
                kept = tuple(p for p in call.offered_to if p in free_ids and p not in taken)[:1]
                call.offered_to = kept
                taken.update(kept)
            for call in waiting:
                if call.offered_to:
                    continue
                choice = self._choose(psap, [p for p in free if p.setup.id not in taken and p.setup.id not in call.no_answer])
                if choice is None:
                    continue
                call.offered_to = (choice.setup.id,)
                taken.add(choice.setup.id)
                psap.last_offered = choice.setup.id
        actions: list[Action] = []
        had_offer = {pid for offered in before.values() for pid in offered}
        for call in waiting:
            if call.offered_to == before[call.key]:
                continue
            self._emit_call(call, now)
            if psap.setup.strategy is not RingStrategy.RING_ALL and call.offered_to:
                actions.append(StartTimer(call.key, TimerName.NO_ANSWER, psap.setup.ring_no_answer_seconds))  # type: ignore[arg-type]
            for pid in call.offered_to:
                if pid not in had_offer:
                    had_offer.add(pid)
                    setup = psap.positions[pid].setup
                    if setup.auto_answer_seconds is not None:
                        actions.append(StartTimer(pid, TimerName.AUTO_ANSWER, setup.auto_answer_seconds))  # type: ignore[arg-type]
        return actions

    @staticmethod
    def _choose(psap: _Psap, candidates: list[_Position]) -> _Position | None:
        if not candidates:
            return None
        if psap.setup.strategy is RingStrategy.LONGEST_IDLE:
            return min(candidates, key=lambda p: p.since)
        order = list(psap.positions)
        start = order.index(psap.last_offered) + 1 if psap.last_offered in order else 0
        ids = {p.setup.id: p for p in candidates}
        for pid in order[start:] + order[:start]:
            if pid in ids:
                return ids[pid]
        return None

    # -- input: timers -----------------------------------------------------------------------

    def timer(self, key: str, name: TimerName, now: float) -> list[Action]:
        """A timer started by a ``StartTimer`` has fired. Stale timers are ignored."""
        if name is TimerName.PUBLISH:
            self._publish_pending = False
            actions = self._publish(now)
            self._publish_pending = True
            return actions + [StartTimer("queue-state", TimerName.PUBLISH, self.publish_seconds)]  # type: ignore[list-item]
        if name is TimerName.AUTO_ANSWER:
            return self._flush(now, self._auto_answer(key, now))
        if name is TimerName.AUTO_RELEASE:
            position = self._positions.get(key)
            if position is None or position.call is None:
                return []
            call = self._calls.get(position.call)
            if call is None or call.status not in (CallStatus.CONNECTED, CallStatus.HELD):
                return []
            return self._flush(now, self._release(position, call, now))
        call = self._calls.get(key)
        if call is None:
            if name is TimerName.FORGET:
                self._forget_key(key)
            return []
        return self._flush(now, self._call_timer(call, name, now))

    def _call_timer(self, call: _Call, name: TimerName, now: float) -> list[Action]:
        if name is TimerName.OVERFLOW and call.status is CallStatus.RINGING:
            if call.medium is Medium.TEXT:
                # Text cannot be refused after its 200: it stays queued, and is flagged.
                log.warning("call handling: text %s waited %.0f s unanswered", call.call_id, now - call.offered_at)
                return []
            return self._refuse(call, now, 486, [("Retry-After", "10")], offered=True, reason="waited too long")
        if name is TimerName.NO_ANSWER and call.status is CallStatus.RINGING and call.offered_to:
            psap = self._psaps[call.psap.id]
            actions: list[Action] = []
            for pid in call.offered_to:
                call.no_answer.add(pid)
                position = psap.positions[pid]
                if position.status is PositionStatus.AVAILABLE and position.call is None:
                    log.info("call handling: %s let %s ring out; made not ready", pid, call.call_id)
                    position.status, position.since = PositionStatus.NOT_READY, now
                    self._emit_position(position, now)
            call.offered_to = ()
            return actions + self._dispatch(psap, now)
        if name is TimerName.RETRANSMIT_2XX and call.leg is Leg.ANSWERED and call.last_response is not None:
            self.counters["2xx_retransmissions"] += 1
            call.retransmit = min(2 * call.retransmit, T2)
            return [Reply(call.last_response, call.source), StartTimer(call.key, name, call.retransmit)]
        if name is TimerName.NO_ACK and call.leg is Leg.ANSWERED:
            self.counters["no_ack"] += 1
            return [CancelTimer(call.key, TimerName.RETRANSMIT_2XX), *self._hang_up(call, now)]  # type: ignore[arg-type]
        if name is TimerName.RETRANSMIT_BYE and call.leg is Leg.HANGING_UP and call.bye is not None:
            assert call.bye_to is not None
            call.retransmit = min(2 * call.retransmit, T2)
            return [SendRequest(call.bye, call.bye_to), StartTimer(call.key, name, call.retransmit)]
        if name is TimerName.BYE_TIMEOUT and call.leg is Leg.HANGING_UP:
            self.counters["bye_timeouts"] += 1
            return self._ended(call, now)
        if name is TimerName.FAILOVER and call.leg is Leg.HANGING_UP and call.bye_failover is not None:
            if call.bye_failover.advance(now):
                self.counters["bye_failovers"] += 1
                return self._send_bye(call, call.bye_failover)
            return []  # the last target: its own timers end it
        if name is TimerName.FORGET and call.leg is Leg.ENDED:
            self._forget_key(call.key)
        return []

    def _forget_key(self, key: str) -> None:
        call = self._calls.get(key)
        if call is None or call.leg not in (Leg.ENDED, None) or call.status in ACTIVE_STATUSES:
            return
        if call.status is CallStatus.TRANSFERRED and call.transfer is not None and not call.transfer.bye_sent:
            return  # still bridged
        self._calls.pop(key, None)
        if call.invite is not None:
            self._by_branch.pop((call.invite.call_id, call.invite.branch or ""), None)
            if self._by_sip.get(call.invite.call_id) is call:
                del self._by_sip[call.invite.call_id]
        if call.test:
            self._by_call_id.pop(call.call_id, None)

    def _stop_call_timers(self, call: _Call) -> list[Action]:
        names = (TimerName.RETRANSMIT_2XX, TimerName.NO_ACK, TimerName.OVERFLOW, TimerName.NO_ANSWER,
                 TimerName.RETRANSMIT_BYE, TimerName.BYE_TIMEOUT, TimerName.FAILOVER)  # fmt: skip
        return [CancelTimer(call.key, n) for n in names]  # type: ignore[arg-type]

    def _name(self, call: _Call) -> None:
        """The call's id in views: its i3 call id. A call that failed over from one of our
        PSAPs to another (overflow, then the ESRP's next target) is the same i3 call and
        takes the id over; only while another call with that id is still active here (a
        transfer between two PSAPs of this element) does the newer one get a suffix."""
        base = call.data.call_id or call.key
        known = self._by_call_id.get(base)
        busy = known is not None and known is not call and (known.status in ACTIVE_STATUSES or known.status is CallStatus.TRANSFERRED)
        call.view_id = f"{base}/{call.key}" if busy else base
        self._by_call_id[call.view_id] = call

    def _finish(self, call: _Call, now: float) -> None:
        """The call is no longer the PSAP's business: into the ended list."""
        psap = self._psaps[call.psap.id]
        if call.group is not None:
            self._text_groups.pop((psap.setup.id, call.group), None)
        if not call.test and not any(c is call for c in psap.ended):
            if len(psap.ended) == psap.ended.maxlen:
                oldest = psap.ended[-1]
                if oldest.key not in self._calls and self._by_call_id.get(oldest.call_id) is oldest:
                    del self._by_call_id[oldest.call_id]
            psap.ended.appendleft(call)
        if call.medium is Medium.TEXT:
            self._calls.pop(call.key, None)
            for sip_id in [k for k, v in self._by_sip.items() if v is call]:
                del self._by_sip[sip_id]

    # -- answering, media --------------------------------------------------------------------

    def _auto_answer(self, position_id: str, now: float) -> list[Action]:
        position = self._positions.get(position_id)
        if position is None or position.status is not PositionStatus.AVAILABLE or position.call is not None:
            return []
        offered = self._offered_to(position)
        if offered is None:
            return []
        return self._answer(position, offered, now)

    def _offered_to(self, position: _Position) -> _Call | None:
        calls = [
            c for c in self._calls.values()
            if c.psap.id == position.psap_id and c.status is CallStatus.RINGING and position.setup.id in c.offered_to
        ]  # fmt: skip
        return min(calls, key=lambda c: c.offered_at) if calls else None

    def _answer(self, position: _Position, call: _Call, now: float) -> list[Action]:
        psap = self._psaps[call.psap.id]
        call.status = CallStatus.CONNECTED
        call.position = position.setup.id
        call.answered_at = now
        call.offered_to = ()
        position.status, position.call, position.since = PositionStatus.BUSY, call.key, now
        waited = now - call.offered_at
        psap.stats.answered += 1
        psap.stats.answer_seconds += waited
        psap.stats.answered_15s += waited <= 15.0
        psap.stats.answered_20s += waited <= 20.0
        actions: list[Action] = [CancelTimer(call.key, TimerName.OVERFLOW), CancelTimer(call.key, TimerName.NO_ANSWER)]  # type: ignore[list-item]
        if call.medium is Medium.VOICE:
            call.leg = Leg.OPENING
            actions.append(OpenMedia(call.key, call.remote_rtp))
        if position.setup.auto_answer_seconds is not None:
            actions.append(StartTimer(position.setup.id, TimerName.AUTO_RELEASE, position.setup.talk_seconds))  # type: ignore[arg-type]
        self._emit_call(call, now)
        self._emit_position(position, now)
        return actions + self._dispatch(psap, now)

    def _answer_sdp(self, call: _Call, version: int = 1) -> bytes | None:
        port = call.media_port or 0
        session = next(self._sessions)
        if call.offer is None:
            # No offer in the INVITE: ours goes in the 2xx (RFC 3261 13.2.1).
            return offer_sdp(host=self.host, port=port, session_id=session, username="firebox-psap")
        try:
            return answer_sdp(parse_sdp(call.offer), host=self.host, first_port=port, session_id=session, version=version)
        except SdpError:
            return None

    def media_ready(self, key: str, port: int, now: float) -> list[Action]:
        """The RTP endpoint of call ``key`` is open on ``port``: send the 200 OK."""
        call = self._calls.get(key)
        if call is None or call.leg is not Leg.OPENING:
            return [CloseMedia(key)]  # the caller gave up meanwhile
        assert call.invite is not None and call.dialog is not None
        call.media_port = port
        call.answer = self._answer_sdp(call)
        headers = [("Contact", self._contact(call.psap)), ("Allow", ALLOW), ("Content-Type", "application/sdp")]
        call.last_response = make_response(call.invite, 200, to_tag=call.dialog.local_tag, headers=headers, body=call.answer or b"")
        call.leg = Leg.ANSWERED
        actions: list[Action] = [Reply(call.last_response, call.source)]
        if getattr(call.source, "transport", "udp") == "udp":
            call.retransmit = T1
            actions.append(StartTimer(call.key, TimerName.RETRANSMIT_2XX, T1))  # type: ignore[arg-type]
        actions.append(StartTimer(call.key, TimerName.NO_ACK, 64 * T1))  # type: ignore[arg-type]
        self._emit_call(call, now)
        return self._flush(now, actions)

    def update_data(self, key: str, data: Any, now: float) -> list[Action]:
        """Call data completed later (location or additional data by reference)."""
        call = self._calls.get(key)
        if call is None:
            return []
        call.data = data
        self._emit_call(call, now)
        return self._flush(now)

    # -- hanging up --------------------------------------------------------------------------

    def _hang_up(self, call: _Call, now: float) -> list[Action]:
        """Our BYE (RFC 3261 15.1.1), built from the dialog (12.2.1.1)."""
        assert call.dialog is not None
        try:
            bye, bye_to = call.dialog.request("BYE", self._via())
        except (SipParseError, ValueError):
            self.counters["bye_unroutable"] += 1
            return self._ended(call, now)
        call.leg = Leg.HANGING_UP
        call.bye_failover = RequestFailover.for_request(bye, self.resolver, bye_to, now)
        return self._send_bye(call, call.bye_failover)

    def _send_bye(self, call: _Call, failover: RequestFailover) -> list[Action]:
        """Send our BYE to the failover's current target: a new client transaction (Timer E
        and F start again, RFC 3261 17.1.2.2; RFC 3263 4.3)."""
        call.bye, call.bye_to = failover.request, failover.destination
        call.retransmit = T1
        actions: list[Action] = [SendRequest(call.bye, call.bye_to)]
        if call.bye_to[2] == "udp":
            actions.append(StartTimer(call.key, TimerName.RETRANSMIT_BYE, T1))  # type: ignore[arg-type]
        else:
            actions.append(CancelTimer(call.key, TimerName.RETRANSMIT_BYE))  # type: ignore[arg-type]
        actions.append(StartTimer(call.key, TimerName.BYE_TIMEOUT, 64 * T1))  # type: ignore[arg-type]
        if failover.has_next:
            actions.append(StartTimer(call.key, TimerName.FAILOVER, self.failover_seconds))  # type: ignore[arg-type]
        return actions

    def _free_position(self, call: _Call, now: float) -> list[Action]:
        if call.position is None:
            return []
        position = self._positions[call.position]
        if position.call != call.key:
            return []
        position.call = None
        position.status = PositionStatus.AVAILABLE if position.status is PositionStatus.BUSY else position.status
        position.since = now
        self._emit_position(position, now)
        return [CancelTimer(position.setup.id, TimerName.AUTO_RELEASE)]  # type: ignore[list-item]

    def _release(self, position: _Position, call: _Call, now: float) -> list[Action]:
        psap = self._psaps[call.psap.id]
        actions = self._free_position(call, now)
        call.ended_at = now
        if call.transfer is not None and call.transfer.status == "connected":
            # Conference-style: the caller and the target stay bridged here; we leave.
            call.status = CallStatus.TRANSFERRED
            log.info("call handling: %s transferred to %s by %s", call.call_id, call.transfer.target, position.setup.id)
        else:
            call.status = CallStatus.RELEASED
            if call.medium is Medium.VOICE and call.leg in (Leg.ANSWERED, Leg.CONFIRMED):
                actions += [CancelTimer(call.key, TimerName.RETRANSMIT_2XX), CancelTimer(call.key, TimerName.NO_ACK)]  # type: ignore[list-item]
                actions += self._hang_up(call, now)
        self._emit_call(call, now)
        self._finish(call, now)
        return actions + self._dispatch(psap, now)

    # -- the console's actions ---------------------------------------------------------------

    def _signed_in(self, position_id: str, user: str) -> _Position:
        position = self._position(position_id)
        if position.status is PositionStatus.SIGNED_OUT:
            raise Conflict(f"position {position_id} is not signed in")
        if position.user != user:
            raise Conflict(f"position {position_id} is signed in by {position.user}, not {user}")
        return position

    def _own_call(self, position: _Position, call_id: str) -> _Call:
        call = self._call(call_id)
        if call.position != position.setup.id or call.status not in (CallStatus.CONNECTED, CallStatus.HELD):
            raise Conflict(f"call {call_id} is not connected to position {position.setup.id} (it is {call.status.value})")
        return call

    def sign_in(self, position_id: str, user: str, now: float) -> tuple[PositionView, list[Action]]:
        position = self._position(position_id)
        if position.status is not PositionStatus.SIGNED_OUT and position.user != user:
            raise Conflict(f"position {position_id} is signed in by {position.user}")
        if position.status is PositionStatus.SIGNED_OUT:
            position.status, position.user, position.since = PositionStatus.AVAILABLE, user, now
            self._emit_position(position, now)
        actions = self._dispatch(self._psaps[position.psap_id], now)
        return position.view(), self._flush(now, actions)

    def sign_out(self, position_id: str, user: str, now: float) -> tuple[PositionView, list[Action]]:
        position = self._signed_in(position_id, user)
        if position.call is not None:
            raise Conflict(f"position {position_id} has a call ({self._calls[position.call].call_id}): release it first")
        position.status, position.user, position.since = PositionStatus.SIGNED_OUT, None, now
        self._emit_position(position, now)
        actions = self._dispatch(self._psaps[position.psap_id], now)
        return position.view(), self._flush(now, actions)

    def set_ready(self, position_id: str, user: str, ready: bool, now: float) -> tuple[PositionView, list[Action]]:
        position = self._signed_in(position_id, user)
        if position.call is None:
            wanted = PositionStatus.AVAILABLE if ready else PositionStatus.NOT_READY
            if position.status is not wanted:
                position.status, position.since = wanted, now
                self._emit_position(position, now)
        elif not ready:
            raise Conflict(f"position {position_id} is on a call; it is not offered others while busy")
        actions = self._dispatch(self._psaps[position.psap_id], now)
        return position.view(), self._flush(now, actions)

    def answer(self, position_id: str, user: str, call_id: str | None, now: float) -> tuple[CallView, list[Action]]:
        position = self._signed_in(position_id, user)
        if position.call is not None:
            raise Conflict(f"position {position_id} is already on call {self._calls[position.call].call_id}")
        if call_id is None:
            call = self._offered_to(position)
            if call is None:
                raise Conflict(f"no call is offered to position {position_id}")
        else:
            call = self._call(call_id)
            if call.psap.id != position.psap_id:
                raise Conflict(f"call {call_id} is for PSAP {call.psap.id}, not {position.psap_id}")
            if call.status is not CallStatus.RINGING:
                raise Conflict(f"call {call_id} is {call.status.value}, not ringing")
        actions = self._answer(position, call, now)
        return self.view(call), self._flush(now, actions)

    def release(self, position_id: str, user: str, call_id: str, now: float) -> tuple[CallView, list[Action]]:
        position = self._signed_in(position_id, user)
        call = self._own_call(position, call_id)
        if call.transfer is not None and call.transfer.status == "trying":
            raise Conflict(f"call {call_id}: the transfer to {call.transfer.target} is still ringing")
        actions = self._release(position, call, now)
        return self.view(call), self._flush(now, actions)

    def hold(self, position_id: str, user: str, call_id: str, on: bool, now: float) -> tuple[CallView, list[Action]]:
        position = self._signed_in(position_id, user)
        call = self._own_call(position, call_id)
        wanted = CallStatus.HELD if on else CallStatus.CONNECTED
        if call.status is not wanted:
            call.status = wanted
            self._emit_call(call, now)
        return self.view(call), self._flush(now)

    def send_text(self, position_id: str, user: str, call_id: str, text: str, now: float) -> tuple[CallView, list[Action]]:
        position = self._signed_in(position_id, user)
        call = self._own_call(position, call_id)
        if call.medium is not Medium.TEXT or call.reply_to is None:
            raise Conflict(f"call {call_id} is a {call.medium.value} call: no text to send")
        if not text.strip():
            raise Conflict("an empty text is not sent")
        try:
            destination = next_hop_address(call.reply_to)
        except (SipParseError, ValueError):
            raise Conflict(f"the caller's address {call.reply_to!r} is not a SIP URI: the text cannot be sent") from None
        body = text.encode()
        # The caller's Call-ID, so that its device keeps the conversation together (RFC 3428
        # section 7 leaves it open); our own From tag and CSeq count.
        call.reply_seq += 1
        headers = Headers([
            ("Via", self._via()), ("Max-Forwards", "70"),
            ("From", f"<{call.psap.uri}>;tag={self._token()}"), ("To", f"<{call.reply_to}>"),
            ("Call-ID", call.sip_call_id or f"{self._token()}@{self.host}"), ("CSeq", f"{call.reply_seq} MESSAGE"),
            ("Content-Type", "text/plain;charset=UTF-8"), ("Content-Length", str(len(body))),
        ])  # fmt: skip
        if call.group and not call.group.startswith("from:"):
            headers.add("Call-Info", f"<{call.group}>;purpose=emergency-CallId")
        if call.data.incident_id:
            headers.add("Call-Info", f"<{call.data.incident_id}>;purpose=emergency-IncidentId")
        key = f"msg-{next(self._seq)}"
        self._originated[key] = call
        call.messages.append(TextMessage("out", text, _dt(now), user))
        self._emit_call(call, now, EventKind.TEXT)
        return self.view(call), self._flush(now, [Originate(key, Request("MESSAGE", call.reply_to, headers, body), destination)])

    def transfer(self, position_id: str, user: str, call_id: str, target: str, now: float) -> tuple[CallView, list[Action]]:
        position = self._signed_in(position_id, user)
        call = self._own_call(position, call_id)
        if call.medium is not Medium.VOICE or call.invite is None:
            raise Conflict(f"call {call_id} is a text call: text is not transferred by INVITE")
        if call.transfer is not None and call.transfer.status in ("trying", "connected"):
            raise Conflict(f"call {call_id} is already being transferred to {call.transfer.target}")
        if call.media_port is None:
            # The offer to the target carries our RTP endpoint; port 0 would refuse the
            # stream (RFC 3264 section 5.1) and the target would answer 488.
            raise Conflict(f"call {call_id}: its media is still being set up; transfer in a moment")
        if target in self.directory:
            uri = self.directory[target]
        elif target.lower().startswith(("sip:", "sips:")):
            uri = target
        else:
            raise NotFound(f"transfer target {target!r} is neither a PSAP here nor a sip: URI")
        via = self.transfer_via or (
            (call.source.host, call.source.port, call.source.transport) if hasattr(call.source, "host") else None
        )
        if via is None:
            raise Conflict("no route for the transfer: the element does not know the ESRP's address")
        request = self._transfer_invite(call, position, uri)
        key = f"xfer-{next(self._seq)}"
        call.transfer = _Transfer(target, uri, key, request)
        self._originated[key] = call
        log.info("call handling: %s transfer to %s (%s) by %s", call.call_id, target, uri, position.setup.id)
        self._emit_call(call, now)
        return self.view(call), self._flush(now, [Originate(key, request, via)])

    def _transfer_invite(self, call: _Call, position: _Position, uri: str) -> Request:
        assert call.invite is not None
        uh = _user_host(call.psap.uri)
        referrer = f"<sip:{position.setup.id}@{uh[1] if uh else self.host}>"
        headers = Headers([
            ("Via", self._via()), ("Max-Forwards", "70"),
            ("From", f"<{call.psap.uri}>;tag={self._token()}"), ("To", f"<{uri}>"),
            ("Call-ID", f"{self._token()}@{self.host}"), ("CSeq", "1 INVITE"),
            ("Contact", self._contact(call.psap)), ("Referred-By", referrer),
        ])  # fmt: skip
        for value in call.invite.headers.get_all("Call-Info"):
            if "purpose=emergency-" in value.lower():
                headers.add("Call-Info", value)
        # The caller's identity goes with the call (RFC 3325 within the ESInet's trust
        # domain), so the target sees the callback number, not ours.
        asserted = call.invite.headers.get_all("P-Asserted-Identity")
        for value in asserted or [f"<{call.invite.from_addr.uri}>"]:
            headers.add("P-Asserted-Identity", value)
        sdp = offer_sdp(host=self.host, port=call.media_port or 0, session_id=next(self._sessions), username="firebox-psap")
        pidf = getattr(call.data, "pidf", None)
        if pidf:
            cid = f"loc-{self._token()}@{self.host}"
            headers.add("Geolocation", f"<cid:{cid}>")
            headers.add("Geolocation-Routing", "yes")
            ctype, body = build_multipart([make_part("application/sdp", sdp), make_part("application/pidf+xml", pidf, content_id=cid)])
        else:
            for value in call.invite.headers.get_all("Geolocation"):
                if "cid:" not in value.lower():  # a location URI travels as it is
                    headers.add("Geolocation", value)
            ctype, body = "application/sdp", sdp
        headers.add("Content-Type", ctype)
        headers.add("Content-Length", str(len(body)))
        return Request("INVITE", uri, headers, body)

    def add_callback(
        self, psap_id: str, call_id: str, callback: str | None, location: LocationView | None, at: float,
        reason: str, tried: tuple[str, ...], now: float,
    ) -> tuple[CallbackEntry, list[Action]]:
        """A call the ESRP could not connect, handed over from its callback worklist: on this
        PSAP's callback list like an abandoned call (once per Call-ID)."""
        psap = self._psap(psap_id)
        held = next((e for e in psap.callbacks.values() if e.call_id == call_id), None)
        if held is not None:
            return held, []
        entry = CallbackEntry(
            id=f"cb-{next(self._seq)}", call_id=call_id, psap_id=psap_id, callback=callback, location=location,
            at=_dt(at), reason=reason, tried=tried,
        )  # fmt: skip
        psap.callbacks[entry.id] = entry
        log.info("call handling: %s not connected (%s); callback %s to %s at %s", call_id, reason, entry.id, callback, psap_id)
        self._pending.append(Emit(CallHandlingEvent(EventKind.CALLBACK, psap_id, _dt(now), callback=entry)))
        return entry, self._flush(now)

    def record_callback(self, callback_id: str, user: str, outcome: str, done: bool, now: float) -> tuple[CallbackEntry, list[Action]]:
        for psap in self._psaps.values():
            entry = psap.callbacks.get(callback_id)
            if entry is None:
                continue
            if entry.status is CallbackStatus.DONE:
                raise Conflict(f"callback {callback_id} is already done")
            attempt = {"at": _dt(now).isoformat(), "by": user, "outcome": outcome}
            entry = replace(entry, attempts=entry.attempts + (attempt,), status=CallbackStatus.DONE if done else entry.status)
            psap.callbacks[callback_id] = entry
            log.info("call handling: callback %s by %s: %s%s", callback_id, user, outcome, " (done)" if done else "")
            self._pending.append(Emit(CallHandlingEvent(EventKind.CALLBACK, psap.setup.id, _dt(now), callback=entry)))
            return entry, self._flush(now)
        raise NotFound(f"no callback {callback_id!r}")

    # -- results of what we originated -------------------------------------------------------

    def originated(self, key: str, response: Response, now: float) -> list[Action]:
        """A response to a MESSAGE or transfer INVITE we originated (``Originate``)."""
        pending = self._failovers.pop(key, None)
        if pending is not None:
            if fails_over(response.status) and pending[0].advance(now):
                return self._originate_failed_over(key, pending, now)
            pending[0].succeeded()
        call = self._originated.get(key)
        if call is None:
            return []
        if key.startswith("msg-"):
            if response.status >= 200:
                self._originated.pop(key, None)
                if response.status >= 300:
                    self.counters["texts_refused"] += 1
                    log.warning("call handling: text to %s answered %d", call.reply_to, response.status)
            return []
        transfer = call.transfer
        if transfer is None or transfer.key != key or response.status < 200:
            return []
        actions: list[Action] = []
        if response.status < 300:
            if transfer.status != "trying":
                return []  # a retransmitted 2xx: its ACK went with the first
            transfer.status = "connected"
            transfer.dialog = self._uac_dialog(transfer, response)
            try:
                ack, to = transfer.dialog.request("ACK", self._via())
                ack.headers.set("CSeq", f"{transfer.invite.cseq[0]} ACK")
                actions.append(SendRequest(ack, to))
            except (SipParseError, ValueError):
                self.counters["ack_unroutable"] += 1
            if call.status not in (CallStatus.CONNECTED, CallStatus.HELD):
                # The caller left while it rang: end the new leg at once.
                actions += self._bye_target(call)
        else:
            self._originated.pop(key, None)
            transfer.status = "failed"
            log.info("call handling: transfer of %s to %s failed: %d", call.call_id, transfer.target, response.status)
        self._emit_call(call, now)
        return self._flush(now, actions)

    def originate_failed(self, key: str, now: float) -> list[Action]:
        pending = self._failovers.pop(key, None)
        if pending is not None and pending[0].advance(now):
            return self._originate_failed_over(key, pending, now)
        call = self._originated.pop(key, None)
        if call is None:
            return []
        if key.startswith("msg-"):
            self.counters["texts_failed"] += 1
            log.warning("call handling: text to %s got no answer", call.reply_to)
            return []
        if call.transfer is not None and call.transfer.key == key and call.transfer.status == "trying":
            call.transfer.status = "failed"
            self._emit_call(call, now)
        return self._flush(now)

    def _originate_failed_over(self, key: str, pending: tuple[RequestFailover, _Call], now: float) -> list[Action]:
        """RFC 3263 4.3: after a timeout, a transport error or a 503, the same request in a
        new transaction (fresh branch) to the next target, under the same key."""
        failover = pending[0]
        self.counters["originate_failovers"] += 1
        if failover.has_next:
            self._failovers[key] = pending
        return self._flush(now, [Originate(key, failover.request, failover.destination)])

    def _uac_dialog(self, transfer: _Transfer, response: Response) -> Dialog:
        """The UAC side of the transfer's dialog (RFC 3261 12.1.2): the route set is the
        2xx's Record-Route reversed, the remote target its Contact."""
        contact = response.headers.get("Contact")
        target = str(parse_name_addr(contact).uri) if contact else transfer.uri
        return Dialog(
            call_id=transfer.invite.call_id,
            local_tag=transfer.invite.from_tag or "",
            remote_tag=response.to_tag,
            local_party=(transfer.invite.headers.get("From") or "").split(";tag=")[0],
            remote_party=response.headers.get("To") or "",
            remote_target=target,
            route_set=tuple(reversed(response.headers.get_all("Record-Route"))),
            remote_seq=0,
            local_seq=transfer.invite.cseq[0] - 1,
        )

    def _transfer_leg(self, bye: Request) -> _Call | None:
        for call in self._originated.values():
            t = call.transfer
            if t is not None and t.dialog is not None and t.dialog.call_id == bye.call_id:
                return call
        return None

    def _target_hung_up(self, call: _Call, now: float) -> list[Action]:
        assert call.transfer is not None
        call.transfer.status = "ended"
        call.transfer.bye_sent = True
        self._originated.pop(call.transfer.key, None)
        actions: list[Action] = []
        if call.status is CallStatus.TRANSFERRED and call.leg in (Leg.ANSWERED, Leg.CONFIRMED):
            actions += self._hang_up(call, now)  # the bridge ends: the caller gets our BYE
        self._emit_call(call, now)
        return self._flush(now, actions)

    def _bye_target(self, call: _Call) -> list[Action]:
        transfer = call.transfer
        if transfer is None or transfer.dialog is None or transfer.bye_sent:
            return []
        transfer.bye_sent = True
        self._originated.pop(transfer.key, None)
        try:
            bye, to = transfer.dialog.request("BYE", self._via())
        except (SipParseError, ValueError):
            return []
        key = f"bye-{next(self._seq)}"
        return [self._originate_over(key, call, bye, to)]

    def _originate_over(self, key: str, call: _Call, request: Request, to: Address) -> Originate:
        """``Originate`` a request along its route set's first hop, resolved by RFC 3263 when
        there is a resolver: ``originate_failed`` then tries the next target."""
        failover = RequestFailover.for_request(request, self.resolver, to)
        if failover.has_next:
            self._failovers[key] = (failover, call)
        return Originate(key, failover.request, failover.destination)

    # -- start-up ------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Sign in the simulated call-takers."""
        for position in self._positions.values():
            if position.setup.auto_answer_seconds is not None and position.status is PositionStatus.SIGNED_OUT:
                position.status, position.user, position.since = PositionStatus.AVAILABLE, "simulated", now
                self._emit_position(position, now)
        actions: list[Action] = []
        for psap in self._psaps.values():
            actions += self._dispatch(psap, now)
        return self._flush(now, actions)

    def active_calls(self) -> list[str]:
        """Keys of calls whose caller leg is up (for a stopping element's BYEs)."""
        return [k for k, c in self._calls.items() if c.leg in (Leg.ANSWERED, Leg.CONFIRMED)]

    def hang_up(self, key: str, now: float) -> list[Action]:
        call = self._calls.get(key)
        if call is None or call.leg not in (Leg.ANSWERED, Leg.CONFIRMED):
            return []
        if call.position is not None:
            position = self._positions[call.position]
            if position.call == key:
                return self._flush(now, self._release(position, call, now))
        return self._flush(now, self._hang_up(call, now))
