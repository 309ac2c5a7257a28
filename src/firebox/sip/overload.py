"""SIP overload control, sans-I/O (RFC 7339, loss-based algorithm of section 6).

Two ends, as RFC 7339 section 3 describes them:

:class:`OverloadGuard` (the server, an ESRP or a PSAP's call handling system)
    bounds the calls it holds: at most ``capacity`` in flight and ``queue_limit`` more
    waiting; emergency calls (``urn:service:sos`` Request-URI, RFC 5031, or a
    ``Resource-Priority`` in the ``esnet`` namespace, RFC 7135) go ahead of the others in
    the queue and may use ``emergency_reserve`` extra places. A call that cannot be held is
    always answered: :class:`Reject` carries the 503 with ``Retry-After`` to send (RFC 3261
    section 21.5.4) and, for an emergency call, a :class:`CallbackRecord` for the caller to
    log and act on. An emergency call is never dropped in silence. From its load the guard
    derives the loss percentage to ask upstream clients for and writes it in the top
    ``Via`` of its responses (``oc``, ``oc-algo``, ``oc-validity``, ``oc-seq``, RFC 7339
    sections 4 and 5.2) when the client announced support (``oc`` without a value).
:class:`OverloadThrottle` (the client, a BCF or an upstream ESRP)
    announces support in its own ``Via`` (RFC 7339 section 5.1), reads the feedback of each
    downstream element (section 5.3: per destination, kept for ``oc-validity`` and only if
    ``oc-seq`` does not go back) and decides for each request whether to send it there.
    The fraction it holds back is *diverted*: the caller must route it elsewhere (an
    alternate route of the ESRP's policy), never discard it. Emergency requests are never
    held back (RFC 7339 section 5.10.1 lets a client exempt them; an NG911 system must) but
    are counted, so that load the throttle could not shed is visible.

Load and loss. The guard counts the calls that want service: those in flight, those queued
and those rejected in the last ``window`` seconds. With ``offered`` of them against
``capacity`` places, the loss that would bring the admitted load back to capacity is
``100 * (offered - capacity) / offered`` (0 when offered <= capacity). The advertised value
is that signal smoothed by an exponential moving average with time constant ``smoothing``
seconds (RFC 7339 section 6.1 leaves the computation to the server), rounded to the integer
``oc`` value (0-100).

``oc-seq`` (RFC 7339 section 5.2: must increase whenever the feedback changes) is written
``<seconds>.<counter>``: the whole seconds of ``now`` and a 5-digit counter of changes within
that second, so it increases across restarts when ``now`` is wall-clock based and within a
run whatever the scale. Times are arguments (seconds); nothing reads a clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final, Protocol

from firebox.sip.address import (
    AbsoluteUri,
    SipUri,
    Via,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from firebox.sip.errors import SipParseError
from firebox.sip.message import Request, Response, caller_uri, make_response

__all__ = [
    "ALGO_LOSS",
    "DEFAULT_VALIDITY_MS",
    "Admit",
    "CallbackRecord",
    "OcParams",
    "OverloadGuard",
    "OverloadThrottle",
    "Promote",
    "Reject",
    "ThrottleStats",
    "add_oc_support",
    "destination_of",
    "format_oc",
    "is_emergency",
    "parse_oc",
]

#: The loss-based algorithm token (RFC 7339 section 6).
ALGO_LOSS: Final = "loss"
#: ``oc-validity`` when a server gives none (RFC 7339 section 5.2: 500 ms).
DEFAULT_VALIDITY_MS: Final = 500
_MAX_VALIDITY_MS: Final = 86_400_000


# -- emergency calls ------------------------------------------------------------------------


def is_emergency(request: Request) -> bool:
    """Whether ``request`` is an emergency call: its Request-URI is a ``urn:service:sos``
    URN or one of its sub-services (RFC 5031 section 4.2), or it carries a
    ``Resource-Priority`` value of the ``esnet`` namespace (RFC 7135). Malformed values
    count as not emergency here; they are never a reason to refuse a call."""
    uri = request.uri.strip().lower()
    if uri.startswith("urn:service:sos") and (len(uri) == 15 or uri[15] in ".;"):
        return True
    for value in request.headers.get_all("Resource-Priority"):
        if value.strip().lower().startswith("esnet."):
            return True
    return False


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    """An emergency call the guard had to refuse: who called (``caller``, from
    ``P-Asserted-Identity`` or ``From``), its ``call_id``, the time, the ``reason`` and the
    status answered, for the owner to log and hand to call takers for a call back."""

    caller: str | None
    call_id: str
    time: float
    reason: str
    request_uri: str
    status: int = 503


@dataclass(frozen=True, slots=True)
class Admit:
    """The call is held: in flight (``queued`` False) or waiting its turn (the owner holds
    it until a :class:`Promote` names it)."""

    call_id: str
    emergency: bool
    queued: bool


@dataclass(frozen=True, slots=True)
class Reject:
    """The call cannot be held. ``response`` (503 with ``Retry-After``) must be sent;
    ``callback`` is set for an emergency call and must be recorded."""

    call_id: str
    emergency: bool
    response: Response
    reason: str
    callback: CallbackRecord | None = None


@dataclass(frozen=True, slots=True)
class Promote:
    """A queued call now has a place in flight: the owner may proceed with it."""

    call_id: str
    emergency: bool


# -- the Via parameters ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OcParams:
    """The overload control parameters of one Via (RFC 7339 section 4).

    ``supported`` is whether ``oc`` is there at all (in a request, without a value, it
    announces support); ``loss`` its value (0-100) in a response; ``algos`` the ``oc-algo``
    tokens (a client's list, a server's choice); ``validity_ms`` and ``seq`` the
    ``oc-validity`` and ``oc-seq`` values. Out-of-range or malformed values read as None."""

    supported: bool = False
    loss: int | None = None
    algos: tuple[str, ...] = ()
    validity_ms: int | None = None
    seq: Decimal | None = None


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _int(value: str | None, high: int) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 10 or int(value) > high:
        return None
    return int(value)


def parse_oc(via: Via | str) -> OcParams:
    """Read the RFC 7339 parameters of a Via value (section 4, grammar in section 9)."""
    if isinstance(via, str):
        via = parse_via(via)
    params = via.params
    algos: tuple[str, ...] = ()
    raw_algo = params.get("oc-algo")
    if raw_algo:
        algos = tuple(a.strip().lower() for a in _unquote(raw_algo).split(",") if a.strip())
    seq = None
    raw_seq = params.get("oc-seq")
    if raw_seq:
        whole, dot, frac = raw_seq.partition(".")
        if whole.isascii() and whole.isdigit() and (not dot or (frac.isascii() and frac.isdigit())):
            try:
                seq = Decimal(raw_seq)
            except InvalidOperation:
                seq = None
    return OcParams(
        supported="oc" in params,
        loss=_int(params.get("oc"), 100),
        algos=algos,
        validity_ms=_int(params.get("oc-validity"), _MAX_VALIDITY_MS),
        seq=seq,
    )


def format_oc(via: Via | str, loss: int, validity_ms: int, seq: str, algo: str = ALGO_LOSS) -> str:
    """``via`` with the server's feedback (RFC 7339 section 5.2): ``oc=<loss>``,
    ``oc-algo="<algo>"``, ``oc-validity=<ms>``, ``oc-seq=<seq>``; other parameters kept."""
    if not 0 <= loss <= 100:
        raise ValueError(f"loss {loss} is not 0-100")
    if isinstance(via, str):
        via = parse_via(via)
    params = dict(via.params)
    params["oc"] = str(loss)
    params["oc-algo"] = f'"{algo}"'
    params["oc-validity"] = str(validity_ms)
    params["oc-seq"] = seq
    return str(Via(via.transport, via.host, via.port, params, via.protocol))


def add_oc_support(via: Via | str, algos: tuple[str, ...] = (ALGO_LOSS,)) -> str:
    """``via`` announcing overload control support (RFC 7339 section 5.1): ``oc`` without a
    value and ``oc-algo`` listing the algorithms the client implements."""
    if isinstance(via, str):
        via = parse_via(via)
    params = dict(via.params)
    params["oc"] = None
    params["oc-algo"] = '"' + ",".join(algos) + '"'
    return str(Via(via.transport, via.host, via.port, params, via.protocol))


# -- the server -----------------------------------------------------------------------------


class OverloadGuard:
    """Admission control and RFC 7339 feedback of one server (see the module docstring).

    ``capacity``: calls in flight at most; ``queue_limit``: more calls waiting at most
    (non-emergency and emergency); ``emergency_reserve``: extra waiting places only
    emergency calls may take (``hard_limit = capacity + queue_limit + emergency_reserve``);
    ``retry_after``: seconds in the 503's ``Retry-After``; ``validity_ms``: the
    ``oc-validity`` advertised; ``smoothing``: the time constant of the loss average;
    ``window``: how long a rejection counts as offered load."""

    def __init__(
        self,
        capacity: int,
        queue_limit: int = 0,
        *,
        emergency_reserve: int | None = None,
        retry_after: int = 30,
        validity_ms: int = DEFAULT_VALIDITY_MS,
        smoothing: float = 1.0,
        window: float = 1.0,
    ) -> None:
        if capacity < 1 or queue_limit < 0:
            raise ValueError("capacity must be >= 1 and queue_limit >= 0")
        if emergency_reserve is None:
            emergency_reserve = max(1, capacity // 10)
        if emergency_reserve < 0 or retry_after < 0 or validity_ms < 0 or smoothing <= 0 or window <= 0:
            raise ValueError("emergency_reserve, retry_after, validity_ms must be >= 0; smoothing, window > 0")
        self.capacity = capacity
        self.queue_limit = queue_limit
        self.emergency_reserve = emergency_reserve
        self.hard_limit = capacity + queue_limit + emergency_reserve
        self.retry_after = retry_after
        self.validity_ms = validity_ms
        self.smoothing = smoothing
        self.window = window
        self._active: dict[str, bool] = {}  # call id -> emergency
        self._queue: deque[tuple[str, bool]] = deque()
        self._rejections: deque[float] = deque()
        self._loss = 0.0  # smoothed, percent
        self._raw = 0.0  # the unsmoothed signal since the last update
        self._last: float | None = None
        self._advertised: tuple[int, int] | None = None
        self._seq_sec = -1
        self._seq_frac = 0
        self._seq = ""

    # -- counts ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._active)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_ids(self) -> list[str]:
        """Waiting calls, in the order they will be promoted."""
        return [call_id for call_id, _ in self._queue]

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._active or any(c == call_id for c, _ in self._queue)

    # -- admission ---------------------------------------------------------------------------

    def admit(self, request: Request, now: float) -> Admit | Reject:
        """Hold the call of ``request`` or refuse it (with the response to send). A call id
        already held is admitted again as it stands (a retransmission)."""
        call_id = request.call_id
        emergency = is_emergency(request)
        self._update(now)
        if call_id in self._active:
            return Admit(call_id, self._active[call_id], False)
        for held, held_emergency in self._queue:
            if held == call_id:
                return Admit(call_id, held_emergency, True)
        total = len(self._active) + len(self._queue)
        limit = self.hard_limit if emergency else self.capacity + self.queue_limit
        if total >= limit:
            return self._reject(request, call_id, emergency, now)
        if len(self._active) < self.capacity:
            self._active[call_id] = emergency
            queued = False
        else:
            if emergency:
                # Ahead of every non-emergency call, behind the emergency calls waiting.
                at = next((i for i, (_, e) in enumerate(self._queue) if not e), len(self._queue))
                self._queue.insert(at, (call_id, True))
            else:
                self._queue.append((call_id, False))
            queued = True
        self._raw = self._signal(now)
        return Admit(call_id, emergency, queued)

    def _reject(self, request: Request, call_id: str, emergency: bool, now: float) -> Reject:
        self._rejections.append(now)
        self._raw = self._signal(now)
        reason = "emergency hard limit reached" if emergency else "overloaded"
        response = make_response(
            request,
            503,
            headers=[
                ("Retry-After", str(self.retry_after)),
                ("Reason", f'SIP;cause=503;text="{reason}"'),
            ],
        )
        callback = None
        if emergency:
            callback = CallbackRecord(caller_uri(request), call_id, now, reason, request.uri)
        return Reject(call_id, emergency, response, reason, callback)

    def release(self, call_id: str, now: float | None = None) -> list[Promote]:
        """The call ended (or was abandoned while queued): free its place and promote the
        next waiting calls, emergency first. Unknown ids are ignored."""
        if now is not None:
            self._update(now)
        if self._active.pop(call_id, None) is None:
            for i, (held, _) in enumerate(self._queue):
                if held == call_id:
                    del self._queue[i]
                    break
            else:
                return []
        promoted: list[Promote] = []
        while self._queue and len(self._active) < self.capacity:
            next_id, emergency = self._queue.popleft()
            self._active[next_id] = emergency
            promoted.append(Promote(next_id, emergency))
        if now is not None:
            self._raw = self._signal(now)
        else:
            self._raw = self._signal(self._last if self._last is not None else 0.0)
        return promoted

    # -- load and feedback -----------------------------------------------------------------------

    def _signal(self, now: float) -> float:
        """The unsmoothed loss percentage that would bring the offered load to capacity."""
        while self._rejections and self._rejections[0] + self.window <= now:
            self._rejections.popleft()
        offered = len(self._active) + len(self._queue) + len(self._rejections)
        if offered <= self.capacity:
            return 0.0
        return 100.0 * (offered - self.capacity) / offered

    def _update(self, now: float) -> None:
        """Advance the moving average to ``now``. The signal is piecewise constant: it
        changes at each admission, release and rejection (they call ``_update`` first) and
        when a rejection leaves the window, so the average is advanced segment by segment."""
        if self._last is None:
            self._last = now
        while self._rejections and self._rejections[0] + self.window <= now:
            expiry = self._rejections[0] + self.window
            self._advance(expiry)
            self._rejections.popleft()
            self._raw = self._signal(max(expiry, self._last))
        self._advance(now)
        self._raw = self._signal(now)

    def _advance(self, to: float) -> None:
        last = self._last
        if last is not None and to > last:
            alpha = 1.0 - math.exp(-(to - last) / self.smoothing)
            self._loss += (self._raw - self._loss) * alpha
            self._last = to

    def loss_percent(self, now: float) -> int:
        """The loss percentage to ask of upstream clients now (0-100)."""
        self._update(now)
        return max(0, min(100, round(self._loss)))

    def _next_seq(self, now: float, values: tuple[int, int]) -> str:
        if values == self._advertised and self._seq:
            return self._seq
        self._advertised = values
        sec = max(0, int(now))
        if sec > self._seq_sec:
            self._seq_sec, self._seq_frac = sec, 0
        else:
            self._seq_frac += 1
            if self._seq_frac > 99_999:
                self._seq_sec, self._seq_frac = self._seq_sec + 1, 0
        self._seq = f"{self._seq_sec}.{self._seq_frac:05d}"
        return self._seq

    def feedback_via(self, via_value: str, now: float) -> str:
        """The top Via of a response with our feedback (RFC 7339 section 5.2), when the
        request's Via announced support (``oc``) for the loss algorithm (``oc-algo`` absent
        or listing ``loss``); otherwise ``via_value`` unchanged."""
        try:
            oc = parse_oc(via_value)
        except SipParseError:
            return via_value
        if not oc.supported or (oc.algos and ALGO_LOSS not in oc.algos):
            return via_value
        loss = self.loss_percent(now)
        seq = self._next_seq(now, (loss, self.validity_ms))
        return format_oc(via_value, loss, self.validity_ms, seq)

    def add_feedback(self, response: Response, now: float) -> Response:
        """Write ``feedback_via`` into the top Via of ``response`` (in place; returned)."""
        top = response.headers.get("Via")
        if top:
            new = self.feedback_via(top, now)
            if new != top:
                response.headers.pop_first("Via")
                response.headers.insert_first("Via", new)
        return response


# -- the client -----------------------------------------------------------------------------


class Random(Protocol):
    """What the throttle needs of a random source (``random.Random`` fits)."""

    def random(self) -> float: ...


@dataclass(slots=True)
class ThrottleStats:
    """What the throttle decided: non-emergency requests ``sent`` and ``diverted``, and
    ``emergency`` requests (always sent; ``emergency_under_loss`` of them while the
    destination asked for a reduction)."""

    sent: int = 0
    diverted: int = 0
    emergency: int = 0
    emergency_under_loss: int = 0


@dataclass(slots=True)
class _Feedback:
    loss: int
    expires_at: float
    seq: Decimal | None


def destination_of(request: Request) -> str:
    """Where a request goes next: the host (and port) of the top ``Route`` or else of the
    Request-URI, lower case; the key feedback is kept under when the caller gives none."""
    target = request.uri
    route = request.headers.get("Route")
    try:
        uri = parse_name_addr(route).uri if route else parse_uri(target)
    except SipParseError:
        return target.lower()
    if isinstance(uri, SipUri):
        return uri.host.lower() + (f":{uri.port}" if uri.port is not None else "")
    assert isinstance(uri, AbsoluteUri)
    return str(uri).lower()


class OverloadThrottle:
    """The client side of RFC 7339's loss-based algorithm, per downstream destination."""

    def __init__(self, algos: tuple[str, ...] = (ALGO_LOSS,)) -> None:
        self.algos = algos
        self._feedback: dict[str, _Feedback] = {}
        self._last_seq: dict[str, Decimal] = {}
        self.stats = ThrottleStats()

    def offer_support(self, via_value: str) -> str:
        """Our Via for an outgoing request, announcing support (RFC 7339 section 5.1)."""
        return add_oc_support(via_value, self.algos)

    def observe(self, response: Response, destination: str, now: float) -> bool:
        """Read the feedback in the top Via of a response from ``destination`` (RFC 7339
        section 5.3). Returns whether it was taken. Feedback with an ``oc-seq`` lower than
        the last one taken is stale and ignored; ``oc-validity=0`` ends the reduction."""
        try:
            oc = parse_oc(response.headers.get("Via") or "")
        except SipParseError:
            return False
        if oc.loss is None or (oc.algos and ALGO_LOSS not in oc.algos):
            return False
        key = destination.lower()
        last = self._last_seq.get(key)
        if oc.seq is not None and last is not None and oc.seq < last:
            return False
        if oc.seq is not None:
            self._last_seq[key] = oc.seq
        validity = DEFAULT_VALIDITY_MS if oc.validity_ms is None else oc.validity_ms
        if validity == 0 or oc.loss == 0:
            self._feedback.pop(key, None)
            return True
        self._feedback[key] = _Feedback(oc.loss, now + validity / 1000.0, oc.seq)
        return True

    def loss(self, destination: str, now: float) -> int:
        """The reduction ``destination`` asks for now, 0 when none or expired."""
        key = destination.lower()
        fb = self._feedback.get(key)
        if fb is None:
            return 0
        if now >= fb.expires_at:
            del self._feedback[key]
            return 0
        return fb.loss

    def should_send(self, request: Request, now: float, rng: Random, destination: str | None = None) -> bool:
        """Whether to send ``request`` to ``destination`` (default: ``destination_of``).
        False means divert: route it elsewhere, never discard it. Emergency requests are
        always sent (and counted); others are held back with probability loss/100
        (RFC 7339 section 6.3)."""
        key = destination if destination is not None else destination_of(request)
        loss = self.loss(key, now)
        if is_emergency(request):
            self.stats.emergency += 1
            if loss:
                self.stats.emergency_under_loss += 1
            return True
        if loss and rng.random() * 100.0 < loss:
            self.stats.diverted += 1
            return False
        self.stats.sent += 1
        return True

