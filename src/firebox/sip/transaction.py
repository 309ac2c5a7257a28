"""SIP transactions, sans-I/O (RFC 3261 section 17, with the 2xx fix of RFC 6026).

Four state machines, one per kind of transaction:

* ``ClientInviteTransaction``     RFC 3261 17.1.1 (Calling, Proceeding, Completed) and
  RFC 6026 section 7.2 (Accepted, Timer M)
* ``ClientNonInviteTransaction``  RFC 3261 17.1.2 (Trying, Proceeding, Completed)
* ``ServerInviteTransaction``     RFC 3261 17.2.1 (Proceeding, Completed, Confirmed) and
  RFC 6026 section 7.1 (Accepted, Timer L)
* ``ServerNonInviteTransaction``  RFC 3261 17.2.2 (Trying, Proceeding, Completed)

Like h11 or aioquic, nothing here touches a socket or a clock. The owner (the "adapter")
feeds inputs: ``start()``, ``receive(message)`` (a parsed message the transport layer matched
to this transaction with ``client_key``/``server_key`` and a ``TransactionTable``),
``send_response(response)`` (from the TU, server side), ``timer(name)`` (a timer that the
adapter started on a ``StartTimer`` event has expired) and ``transport_error()``. Each call
returns a list of events, in order: ``Send`` (serialize and send the message), ``StartTimer``
/ ``CancelTimer``, ``Deliver`` (hand the message to the TU), ``Timeout`` and
``TransportError`` (tell the TU the transaction failed) and ``Terminated`` (forget the
transaction). Starting a timer that is already running restarts it.

Inputs from the network and timer expiries never raise: what a state does not expect is
absorbed (a stale timer, a late retransmission, a response to a server transaction). Misuse
by the TU (a response sent in a state that cannot send it) raises ``TransactionStateError``.

Over a reliable transport (TCP, TLS, SCTP) the retransmission timers A, E and G never run
and the wait timers D, I, J and K are zero, so the transaction terminates at once where it
would have started them (RFC 3261 17.1.1.2, 17.1.2.2, 17.2.1, 17.2.2).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import ClassVar, NamedTuple

from firebox.sip.address import parse_via
from firebox.sip.errors import SipParseError
from firebox.sip.headers import Headers
from firebox.sip.message import Message, Request, Response, make_response

__all__ = [
    "MAGIC_COOKIE",
    "CancelTimer",
    "ClientInviteTransaction",
    "ClientKey",
    "ClientNonInviteTransaction",
    "Deliver",
    "Event",
    "Send",
    "ServerInviteTransaction",
    "ServerKey",
    "ServerNonInviteTransaction",
    "StartTimer",
    "State",
    "Terminated",
    "Timeout",
    "Timer",
    "TimerValues",
    "Transaction",
    "TransactionError",
    "TransactionKeyError",
    "TransactionStateError",
    "TransactionTable",
    "TransportError",
    "build_ack",
    "cancel_target_key",
    "client_key",
    "is_reliable",
    "server_key",
]

#: The branch prefix of RFC 3261 (section 8.1.1.7): a branch starting with it is unique.
MAGIC_COOKIE = "z9hG4bK"


# -- timers --------------------------------------------------------------------------------


class Timer(StrEnum):
    """The timers of RFC 3261 section 17 (table 4 of Appendix A) and RFC 6026 (L, M)."""

    A = "A"  #: INVITE request retransmit interval, unreliable only (17.1.1.2)
    B = "B"  #: INVITE transaction timeout (17.1.1.2)
    C = "C"  #: proxy INVITE transaction timeout (16.6 step 11; used by the proxy)
    D = "D"  #: wait time for response retransmits (17.1.1.2)
    E = "E"  #: non-INVITE request retransmit interval, unreliable only (17.1.2.2)
    F = "F"  #: non-INVITE transaction timeout (17.1.2.2)
    G = "G"  #: INVITE response retransmit interval (17.2.1)
    H = "H"  #: wait time for ACK receipt (17.2.1)
    I = "I"  #: wait time for ACK retransmits (17.2.1)
    J = "J"  #: wait time for non-INVITE request retransmits (17.2.2)
    K = "K"  #: wait time for response retransmits (17.1.2.2)
    L = "L"  #: wait time for accepted INVITE request retransmits (RFC 6026 section 8.7)
    M = "M"  #: wait time for retransmission of 2xx to INVITE (RFC 6026 section 8.4)


#: Retransmission timers: they do not run over a reliable transport.
_RETRANSMIT = frozenset({Timer.A, Timer.E, Timer.G})
#: Wait timers that are zero over a reliable transport.
_ZERO_WHEN_RELIABLE = frozenset({Timer.D, Timer.I, Timer.J, Timer.K})


@dataclass(frozen=True, slots=True)
class TimerValues:
    """Configurable timer durations in seconds (RFC 3261 Appendix A, RFC 6026).

    ``t1`` is the RTT estimate (500 ms), ``t2`` the maximum retransmit interval of
    non-INVITE requests and INVITE responses (4 s), ``t4`` the maximum time a message stays
    in the network (5 s). ``timer_c`` (> 3 min) is the proxy's INVITE timeout, ``timer_d``
    (>= 32 s) the INVITE client's wait in Completed over an unreliable transport."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_c: float = 180.0
    timer_d: float = 32.0

    def duration(self, name: Timer | str, reliable: bool) -> float:
        """The initial duration of timer ``name``: 0 when it does not run (A, E, G over a
        reliable transport) or is zero (D, I, J, K over a reliable transport)."""
        name = Timer(name)
        if reliable and (name in _RETRANSMIT or name in _ZERO_WHEN_RELIABLE):
            return 0.0
        t1 = self.t1
        if name in (Timer.A, Timer.E, Timer.G):
            return t1
        if name is Timer.C:
            return self.timer_c
        if name is Timer.D:
            return self.timer_d
        if name in (Timer.I, Timer.K):
            return self.t4
        return 64 * t1  # B, F, H, J, L, M


def is_reliable(transport: str) -> bool:
    """Whether a Via transport name is reliable (RFC 3261 section 18: TCP, TLS, SCTP; also
    WS/WSS of RFC 7118). Anything else (UDP, DTLS...) is unreliable."""
    return transport.upper() in {"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"}


# -- states and events -----------------------------------------------------------------------


class State(Enum):
    """Transaction states (RFC 3261 figures 5-8; Accepted from RFC 6026 figures 3 and 5)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to the transport (the adapter serializes it, RFC 3261 18.1/18.2)."""

    message: Message


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Start (or restart) timer ``name``; call ``timer(name)`` after ``delay`` seconds.
    Transactions name their timers with a ``Timer`` (a ``str``); the proxy uses its own
    names."""

    name: str
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Stop timer ``name``: it must not be reported any more (a late report is ignored)."""

    name: str


@dataclass(frozen=True, slots=True)
class Deliver:
    """Pass ``message`` to the transaction user (a response upward on the client side, the
    request, or an ACK to a 2xx in Accepted, on the server side)."""

    message: Message


@dataclass(frozen=True, slots=True)
class Timeout:
    """The transaction timed out (Timer B, F or H): tell the TU (RFC 3261 17.1.1.2, 17.1.2.2,
    17.2.1). ``timer`` names the timer that fired."""

    timer: Timer | None = None


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport reported a fatal error: tell the TU (RFC 3261 section 17.1.4, 17.2.4)."""


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction is over: remove it from the ``TransactionTable``."""


Event = Send | StartTimer | CancelTimer | Deliver | Timeout | TransportError | Terminated


class TransactionError(ValueError):
    """Base of the errors of this module."""


class TransactionStateError(TransactionError):
    """The TU asked for something the current state does not allow (a response after the
    final one, a 2xx to a non-INVITE request that already had its final response...)."""


class TransactionKeyError(TransactionError):
    """A message cannot be matched by RFC 3261 17.1.3/17.2.3: no Via branch with the magic
    cookie ``z9hG4bK`` (RFC 2543 matching, 17.2.3 last paragraph, is not supported), or a
    mandatory header field is missing or malformed."""


# -- the state machines ----------------------------------------------------------------------

_Handler = Callable[..., list[Event]]


def _status_kind(status: int) -> str:
    if status < 200:
        return "1xx"
    if status < 300:
        return "2xx"
    return "3xx-6xx"


class Transaction:
    """What the four transactions share: the request that created the transaction, the
    transport kind, the timers, the state and the transition table.

    ``_TRANSITIONS`` maps ``(state, input)`` to the name of the method that performs the
    transition; an input missing from the table is absorbed (network, timers) or refused
    with ``TransactionStateError`` (TU). Inputs are ``"1xx"``, ``"2xx"``, ``"3xx-6xx"``
    (a response received), ``"request"``, ``"ack"`` (a request received), ``"send 1xx"``,
    ``"send 2xx"``, ``"send 3xx-6xx"`` (TU), ``"timer A"``.. and ``"transport error"``."""

    _TRANSITIONS: ClassVar[dict[tuple[State, str], str]] = {}
    _INITIAL: ClassVar[State]

    def __init__(
        self, request: Request, *, reliable: bool = False, timers: TimerValues | None = None
    ) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers if timers is not None else TimerValues()
        self.state = self._INITIAL
        #: The timers started and neither fired nor cancelled, with their current interval.
        self.running: dict[Timer, float] = {}
        self.last_response: Response | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    # -- inputs common to all ------------------------------------------------------------

    def timer(self, name: Timer | str) -> list[Event]:
        """Timer ``name`` fired. A timer that is not running (never started, cancelled, or
        already fired) is ignored."""
        try:
            name = Timer(name)
        except ValueError:
            return []
        if name not in self.running:
            return []
        interval = self.running.pop(name)
        self._last_fired = name
        return self._dispatch(f"timer {name.value}", interval)

    def transport_error(self) -> list[Event]:
        """The transport failed to send a message of this transaction (RFC 3261 17.1.4,
        17.2.4)."""
        return self._dispatch("transport error")

    # -- machinery -----------------------------------------------------------------------

    def _dispatch(self, kind: str, *args: object) -> list[Event]:
        name = self._TRANSITIONS.get((self.state, kind))
        if name is None:
            if kind.startswith("send "):
                raise TransactionStateError(
                    f"{type(self).__name__} cannot {kind} in state {self.state.value}"
                )
            return []
        handler: _Handler = getattr(self, name)
        return handler(*args)

    def _start(self, events: list[Event], name: Timer, interval: float | None = None) -> bool:
        """Start ``name`` with ``interval`` (default: its initial duration). Returns False
        when the timer does not run (zero), so the caller can act at once."""
        delay = self.timers.duration(name, self.reliable) if interval is None else interval
        if delay <= 0:
            return False
        self.running[name] = delay
        events.append(StartTimer(name, delay))
        return True

    def _cancel(self, events: list[Event], *names: Timer) -> None:
        for name in names:
            if self.running.pop(name, None) is not None:
                events.append(CancelTimer(name))

    def _terminate(self, events: list[Event]) -> list[Event]:
        self._cancel(events, *list(self.running))
        self.state = State.TERMINATED
        events.append(Terminated())
        return events

    def _wait_then_terminate(self, events: list[Event], name: Timer) -> list[Event]:
        """Start wait timer ``name`` (D, I, J, K), or terminate now when it is zero."""
        if not self._start(events, name):
            self._terminate(events)
        return events

    def _on_timeout(self, interval: float) -> list[Event]:
        events: list[Event] = [Timeout(self._last_fired)]
        return self._terminate(events)

    def _on_transport_error(self) -> list[Event]:
        events: list[Event] = [TransportError()]
        return self._terminate(events)

    def _on_wait_over(self, interval: float) -> list[Event]:
        return self._terminate([])

    _last_fired: Timer | None = None


class _ClientTransaction(Transaction, ABC):
    """Client side: the TU's request is sent on ``start()``; responses come in."""

    def start(self) -> list[Event]:
        """Send the request and start the timers (RFC 3261 17.1.1.2, 17.1.2.2). May be
        called once."""
        if self._started:
            raise TransactionStateError("transaction already started")
        self._started = True
        return self._on_start()

    _started = False

    @abstractmethod
    def _on_start(self) -> list[Event]:
        """The first sends and timers (each kind of client transaction has its own)."""

    def receive(self, message: Message) -> list[Event]:
        """A response matched to this transaction (17.1.3). Requests are ignored."""
        if not isinstance(message, Response) or not 100 <= message.status <= 699:
            return []
        return self._dispatch(_status_kind(message.status), message)


class ClientInviteTransaction(_ClientTransaction):
    """INVITE client transaction (RFC 3261 section 17.1.1, RFC 6026 section 7.2).

    Calling: the INVITE is sent, and over an unreliable transport resent on Timer A, which
    doubles each time (T1, 2*T1, 4*T1... 17.1.1.2); Timer B (64*T1) ends the attempt with a
    ``Timeout``. A 1xx moves to Proceeding (no more retransmissions; A and B stop). A final
    non-2xx moves to Completed: the transaction builds and sends the ACK itself (17.1.1.3,
    ``build_ack``), passes the response up once and resends the ACK for each retransmission
    of it until Timer D (32 s; zero over a reliable transport). A 2xx moves to Accepted
    (RFC 6026 7.2): it and its retransmissions go to the TU, which sends the ACK itself, until
    Timer M (64*T1) fires."""

    _INITIAL = State.CALLING
    _TRANSITIONS: ClassVar[dict[tuple[State, str], str]] = {
        (State.CALLING, "timer A"): "_retransmit",
        (State.CALLING, "timer B"): "_on_timeout",
        (State.CALLING, "transport error"): "_on_transport_error",
        (State.CALLING, "1xx"): "_provisional",
        (State.CALLING, "2xx"): "_success",
        (State.CALLING, "3xx-6xx"): "_failure",
        (State.PROCEEDING, "1xx"): "_provisional",
        (State.PROCEEDING, "2xx"): "_success",
        (State.PROCEEDING, "3xx-6xx"): "_failure",
        (State.PROCEEDING, "transport error"): "_on_transport_error",
        (State.COMPLETED, "3xx-6xx"): "_resend_ack",
        (State.COMPLETED, "timer D"): "_on_wait_over",
        (State.COMPLETED, "transport error"): "_on_transport_error",
        (State.ACCEPTED, "2xx"): "_deliver",
        (State.ACCEPTED, "timer M"): "_on_wait_over",
    }

    def __init__(
        self, request: Request, *, reliable: bool = False, timers: TimerValues | None = None
    ) -> None:
        if request.method != "INVITE":
            raise ValueError(f"not an INVITE: {request.method}")
        super().__init__(request, reliable=reliable, timers=timers)
        #: The ACK built for the non-2xx final response (Completed), resent on retransmits.
        self.ack: Request | None = None

    def _on_start(self) -> list[Event]:
        events: list[Event] = [Send(self.request)]
        self._start(events, Timer.A)
        self._start(events, Timer.B)
        return events

    def _retransmit(self, interval: float) -> list[Event]:
        events: list[Event] = [Send(self.request)]
        self._start(events, Timer.A, 2 * interval)
        return events

    def _provisional(self, response: Response) -> list[Event]:
        events: list[Event] = []
        self._cancel(events, Timer.A, Timer.B)
        self.state = State.PROCEEDING
        events.append(Deliver(response))
        return events

    def _success(self, response: Response) -> list[Event]:
        events: list[Event] = []
        self._cancel(events, Timer.A, Timer.B)
        self.state = State.ACCEPTED
        events.append(Deliver(response))
        self._start(events, Timer.M)
        return events

    def _deliver(self, response: Response) -> list[Event]:
        return [Deliver(response)]

    def _failure(self, response: Response) -> list[Event]:
        events: list[Event] = []
        self._cancel(events, Timer.A, Timer.B)
        self.state = State.COMPLETED
        self.last_response = response
        self.ack = build_ack(self.request, response)
        events.append(Send(self.ack))
        events.append(Deliver(response))
        return self._wait_then_terminate(events, Timer.D)

    def _resend_ack(self, response: Response) -> list[Event]:
        return [Send(self.ack)] if self.ack is not None else []


class ClientNonInviteTransaction(_ClientTransaction):
    """Non-INVITE client transaction (RFC 3261 section 17.1.2).

    Trying: the request is sent, and over an unreliable transport resent on Timer E, which
    doubles up to T2 (T1, 2*T1, ... T2, T2...); Timer F (64*T1) ends it with a ``Timeout``.
    A 1xx moves to Proceeding, where E keeps firing every T2. A final response moves to
    Completed and goes up; retransmissions of it are absorbed until Timer K (T4; zero over a
    reliable transport)."""

    _INITIAL = State.TRYING
    _TRANSITIONS: ClassVar[dict[tuple[State, str], str]] = {
        (State.TRYING, "timer E"): "_retransmit",
        (State.TRYING, "timer F"): "_on_timeout",
        (State.TRYING, "transport error"): "_on_transport_error",
        (State.TRYING, "1xx"): "_provisional",
        (State.TRYING, "2xx"): "_final",
        (State.TRYING, "3xx-6xx"): "_final",
        (State.PROCEEDING, "timer E"): "_retransmit",
        (State.PROCEEDING, "timer F"): "_on_timeout",
        (State.PROCEEDING, "transport error"): "_on_transport_error",
        (State.PROCEEDING, "1xx"): "_provisional",
        (State.PROCEEDING, "2xx"): "_final",
        (State.PROCEEDING, "3xx-6xx"): "_final",
        (State.COMPLETED, "timer K"): "_on_wait_over",
    }

    def __init__(
        self, request: Request, *, reliable: bool = False, timers: TimerValues | None = None
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"{request.method} does not use a non-INVITE client transaction")
        super().__init__(request, reliable=reliable, timers=timers)

    def _on_start(self) -> list[Event]:
        events: list[Event] = [Send(self.request)]
        self._start(events, Timer.E)
        self._start(events, Timer.F)
        return events

    def _retransmit(self, interval: float) -> list[Event]:
        events: list[Event] = [Send(self.request)]
        t2 = self.timers.t2
        nxt = t2 if self.state is State.PROCEEDING else min(2 * interval, t2)
        self._start(events, Timer.E, nxt)
        return events

    def _provisional(self, response: Response) -> list[Event]:
        self.state = State.PROCEEDING
        return [Deliver(response)]

    def _final(self, response: Response) -> list[Event]:
        events: list[Event] = []
        self._cancel(events, Timer.E, Timer.F)
        self.state = State.COMPLETED
        self.last_response = response
        events.append(Deliver(response))
        return self._wait_then_terminate(events, Timer.K)


class _ServerTransaction(Transaction):
    """Server side: created by a request from the network; the TU sends the responses."""

    def start(self) -> list[Event]:
        """Pass the request to the TU (RFC 3261 17.2.1, 17.2.2). May be called once."""
        if self._started:
            raise TransactionStateError("transaction already started")
        self._started = True
        return self._on_start()

    _started = False

    def _on_start(self) -> list[Event]:
        return [Deliver(self.request)]

    def receive(self, message: Message) -> list[Event]:
        """A request matched to this transaction (17.2.3): a retransmission of the request
        or, for INVITE, the ACK. Responses and other methods are ignored."""
        if not isinstance(message, Request):
            return []
        if message.method == self.request.method:
            return self._dispatch("request", message)
        if message.method == "ACK":
            return self._dispatch("ack", message)
        return []

    def send_response(self, response: Response) -> list[Event]:
        """Send ``response`` from the TU. Raises ``TransactionStateError`` when the state
        does not allow it (after the final response; ``ValueError`` for a status outside
        100-699)."""
        if not 100 <= response.status <= 699:
            raise ValueError(f"status {response.status} is not in 100-699")
        return self._dispatch("send " + _status_kind(response.status), response)

    def _send_provisional(self, response: Response) -> list[Event]:
        self.state = State.PROCEEDING
        self.last_response = response
        return [Send(response)]

    def _resend_last(self, request: Request) -> list[Event]:
        return [Send(self.last_response)] if self.last_response is not None else []

    def _absorb(self, message: Message) -> list[Event]:
        return []


class ServerInviteTransaction(_ServerTransaction):
    """INVITE server transaction (RFC 3261 section 17.2.1, RFC 6026 section 7.1).

    Proceeding: the INVITE goes to the TU (``start(trying=True)`` also sends a 100 Trying,
    which 17.2.1 requires unless the TU answers within 200 ms); a retransmitted INVITE is
    answered with the last provisional response. A 2xx from the TU moves to Accepted
    (RFC 6026): further 2xx from the TU are sent, retransmitted INVITEs absorbed and ACKs
    passed to the TU until Timer L (64*T1). A 300-699 moves to Completed: it is resent on
    Timer G (T1 doubling to T2, unreliable only) and on each retransmitted INVITE, until the
    ACK arrives (Confirmed, where ACKs are absorbed until Timer I: T4, zero over a reliable
    transport) or Timer H (64*T1) fires (``Timeout``). A transport error ends the transaction
    in Proceeding and Completed; in Accepted (the TU owns 2xx retransmission) and Confirmed
    it is ignored."""

    _INITIAL = State.PROCEEDING
    _TRANSITIONS: ClassVar[dict[tuple[State, str], str]] = {
        (State.PROCEEDING, "request"): "_resend_last",
        (State.PROCEEDING, "send 1xx"): "_send_provisional",
        (State.PROCEEDING, "send 2xx"): "_send_success",
        (State.PROCEEDING, "send 3xx-6xx"): "_send_failure",
        (State.PROCEEDING, "transport error"): "_on_transport_error",
        (State.ACCEPTED, "request"): "_absorb",
        (State.ACCEPTED, "ack"): "_deliver_ack",
        (State.ACCEPTED, "send 2xx"): "_send_more_success",
        (State.ACCEPTED, "timer L"): "_on_wait_over",
        (State.COMPLETED, "request"): "_resend_last",
        (State.COMPLETED, "ack"): "_confirm",
        (State.COMPLETED, "timer G"): "_retransmit",
        (State.COMPLETED, "timer H"): "_on_timeout",
        (State.COMPLETED, "transport error"): "_on_transport_error",
        (State.CONFIRMED, "request"): "_absorb",
        (State.CONFIRMED, "ack"): "_absorb",
        (State.CONFIRMED, "timer I"): "_on_wait_over",
    }

    def __init__(
        self, request: Request, *, reliable: bool = False, timers: TimerValues | None = None
    ) -> None:
        if request.method != "INVITE":
            raise ValueError(f"not an INVITE: {request.method}")
        super().__init__(request, reliable=reliable, timers=timers)

    def start(self, trying: bool = True) -> list[Event]:
        """Pass the INVITE to the TU and, when ``trying``, send 100 Trying (17.2.1)."""
        events = super().start()
        if trying:
            events += self._send_provisional(make_response(self.request, 100))
        return events

    def _send_success(self, response: Response) -> list[Event]:
        self.state = State.ACCEPTED
        self.last_response = response
        events: list[Event] = [Send(response)]
        self._start(events, Timer.L)
        return events

    def _send_more_success(self, response: Response) -> list[Event]:
        return [Send(response)]

    def _deliver_ack(self, ack: Request) -> list[Event]:
        return [Deliver(ack)]

    def _send_failure(self, response: Response) -> list[Event]:
        self.state = State.COMPLETED
        self.last_response = response
        events: list[Event] = [Send(response)]
        self._start(events, Timer.G)
        self._start(events, Timer.H)
        return events

    def _retransmit(self, interval: float) -> list[Event]:
        events: list[Event] = [Send(self.last_response)] if self.last_response else []
        self._start(events, Timer.G, min(2 * interval, self.timers.t2))
        return events

    def _confirm(self, ack: Request) -> list[Event]:
        events: list[Event] = []
        self._cancel(events, Timer.G, Timer.H)
        self.state = State.CONFIRMED
        return self._wait_then_terminate(events, Timer.I)


class ServerNonInviteTransaction(_ServerTransaction):
    """Non-INVITE server transaction (RFC 3261 section 17.2.2).

    Trying: the request goes to the TU; retransmissions are absorbed. A 1xx from the TU
    moves to Proceeding, where retransmissions get the last provisional response. A final
    response moves to Completed, where retransmissions get the final response, until Timer J
    (64*T1; zero over a reliable transport)."""

    _INITIAL = State.TRYING
    _TRANSITIONS: ClassVar[dict[tuple[State, str], str]] = {
        (State.TRYING, "request"): "_absorb",
        (State.TRYING, "send 1xx"): "_send_provisional",
        (State.TRYING, "send 2xx"): "_send_final",
        (State.TRYING, "send 3xx-6xx"): "_send_final",
        (State.TRYING, "transport error"): "_on_transport_error",
        (State.PROCEEDING, "request"): "_resend_last",
        (State.PROCEEDING, "send 1xx"): "_send_provisional",
        (State.PROCEEDING, "send 2xx"): "_send_final",
        (State.PROCEEDING, "send 3xx-6xx"): "_send_final",
        (State.PROCEEDING, "transport error"): "_on_transport_error",
        (State.COMPLETED, "request"): "_resend_last",
        (State.COMPLETED, "timer J"): "_on_wait_over",
        (State.COMPLETED, "transport error"): "_on_transport_error",
    }

    def __init__(
        self, request: Request, *, reliable: bool = False, timers: TimerValues | None = None
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"{request.method} does not use a non-INVITE server transaction")
        super().__init__(request, reliable=reliable, timers=timers)

    def _send_final(self, response: Response) -> list[Event]:
        self.state = State.COMPLETED
        self.last_response = response
        events: list[Event] = [Send(response)]
        return self._wait_then_terminate(events, Timer.J)


# -- ACK for a non-2xx final response ----------------------------------------------------------


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK of an INVITE client transaction for a non-2xx final ``response``
    (RFC 3261 section 17.1.1.3): Request-URI, Call-ID, From and top Via (hence branch) of the
    INVITE, ``To`` of the response (with its tag), ``CSeq`` with the INVITE's number and
    method ACK, the INVITE's ``Route`` header fields, ``Max-Forwards`` as in the INVITE and no
    body."""
    headers = Headers()
    headers.add("Via", invite.headers.get("Via") or "")
    headers.add("Max-Forwards", str(invite.max_forwards))
    for line in invite.headers.get_lines("Route"):
        headers.add("Route", line)
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or invite.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq[0]} ACK")
    headers.add("Content-Length", "0")
    return Request("ACK", invite.uri, headers, b"", invite.version)


# -- matching ------------------------------------------------------------------------------


class ClientKey(NamedTuple):
    """Key of a client transaction (RFC 3261 17.1.3): top Via branch and CSeq method."""

    branch: str
    method: str


class ServerKey(NamedTuple):
    """Key of a server transaction (RFC 3261 17.2.3): top Via branch, sent-by (host in
    lower case, port with the transport's default filled in) and the method, ACK counted as
    INVITE."""

    branch: str
    host: str
    port: int
    method: str


def _branch(message: Message) -> str:
    try:
        branch = message.branch
    except SipParseError as exc:
        raise TransactionKeyError(str(exc)) from exc
    if branch is None or not branch.startswith(MAGIC_COOKIE):
        raise TransactionKeyError(
            f"top Via branch {branch!r} lacks the magic cookie {MAGIC_COOKIE}: "
            "RFC 2543 transaction matching is not supported"
        )
    return branch


def client_key(message: Message) -> ClientKey:
    """The client transaction key of a request we send or a response to it (17.1.3): the
    branch of the top Via and the method of the CSeq (so a CANCEL's responses are not taken
    for the INVITE's). Raises ``TransactionKeyError``."""
    branch = _branch(message)
    try:
        method = message.cseq[1]
    except SipParseError as exc:
        raise TransactionKeyError(str(exc)) from exc
    return ClientKey(branch, method)


def server_key(request: Request) -> ServerKey:
    """The server transaction key of a received request (17.2.3): the branch and sent-by of
    the top Via and the method, with ACK mapped to INVITE (an ACK to a non-2xx belongs to
    the INVITE's transaction). A CANCEL keeps the method CANCEL: it is a transaction of its
    own; ``cancel_target_key`` gives the INVITE transaction it cancels (section 9.2).
    Raises ``TransactionKeyError``."""
    branch = _branch(request)
    try:
        via = parse_via(request.headers.get("Via") or "")
    except SipParseError as exc:
        raise TransactionKeyError(str(exc)) from exc
    port = via.port
    if port is None:
        port = 5061 if via.transport in ("TLS", "TLS-SCTP", "WSS") else 5060
    method = "INVITE" if request.method == "ACK" else request.method
    return ServerKey(branch, via.host.lower(), port, method)


def cancel_target_key(cancel: Request) -> ServerKey:
    """The key of the server transaction a CANCEL cancels (RFC 3261 section 9.2: matched
    as in 17.2.3 with the method taken as INVITE). Raises ``TransactionKeyError``."""
    return server_key(cancel)._replace(method="INVITE")


class TransactionTable:
    """The transactions of one endpoint, by key (RFC 3261 17.1.3, 17.2.3).

    Client transactions are keyed by ``client_key`` of their request, server transactions
    by ``server_key``; the two kinds of key never collide. ``find_client`` and
    ``find_server`` look up the transaction an incoming message belongs to."""

    def __init__(self) -> None:
        self._by_key: dict[ClientKey | ServerKey, Transaction] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def get(self, key: ClientKey | ServerKey) -> Transaction | None:
        return self._by_key.get(key)

    def add(self, transaction: Transaction) -> ClientKey | ServerKey:
        """Register ``transaction`` under the key of its request; return the key. Raises
        ``TransactionKeyError`` when the key is taken or cannot be computed."""
        request = transaction.request
        key: ClientKey | ServerKey
        if isinstance(transaction, _ClientTransaction):
            key = client_key(request)
        else:
            key = server_key(request)
        if key in self._by_key:
            raise TransactionKeyError(f"a transaction with key {key} exists")
        self._by_key[key] = transaction
        return key

    def remove(self, key: ClientKey | ServerKey) -> Transaction | None:
        return self._by_key.pop(key, None)

    def discard(self, transaction: Transaction) -> None:
        """Remove ``transaction`` wherever it is."""
        for key, value in list(self._by_key.items()):
            if value is transaction:
                del self._by_key[key]

    def find_client(self, response: Response) -> Transaction | None:
        """The client transaction ``response`` belongs to (17.1.3), or ``None``: a response
        without a magic-cookie branch cannot match one of ours."""
        try:
            return self._by_key.get(client_key(response))
        except TransactionKeyError:
            return None

    def find_server(self, request: Request) -> Transaction | None:
        """The server transaction ``request`` belongs to (17.2.3: a retransmission, or the
        ACK of a non-2xx), or ``None`` for a new request. Raises ``TransactionKeyError``
        for a request without a magic-cookie branch."""
        return self._by_key.get(server_key(request))

    def find_cancelled(self, cancel: Request) -> Transaction | None:
        """The INVITE server transaction a CANCEL targets (section 9.2), or ``None``."""
        return self._by_key.get(cancel_target_key(cancel))
