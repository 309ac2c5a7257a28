"""SIP-specific event notification for the i3 state packages, sans-I/O (RFC 6665).

NENA-STA-010.3 publishes the state of elements, services and queues through three event
packages (section 2.4.1 ``emergency-ElementState``, 2.4.2 ``emergency-ServiceState``,
4.2.1.3 ``emergency-QueueState``) whose NOTIFY bodies are JSON objects (see
:mod:`firebox.esrp.states`). This module holds both ends of such a subscription:

:class:`Notifier`
    answers SUBSCRIBE (RFC 6665 section 4.2.1): checks the ``Event`` (489 with
    ``Allow-Events``, section 8.2.2), the ``Expires`` (423 with ``Min-Expires`` below the
    minimum, section 4.2.1.1; a longer interval is shortened to the maximum), creates,
    refreshes or ends the subscription dialog, answers 200 and sends at once a NOTIFY with
    the current state (section 4.2.1.2); ``publish`` sends a NOTIFY on every change,
    ``tick`` ends expired subscriptions (``terminated;reason=timeout``, section 4.2.2) and
    ``handle_response`` drops a subscription whose NOTIFY is answered 481 (section 4.2.2).
:class:`Subscriber`
    sends SUBSCRIBE (section 4.1.2.1), refreshes it before it expires (section 4.1.2.2),
    unsubscribes (``Expires: 0``, section 4.1.2.3), answers NOTIFY (section 4.1.3) and
    subscribes again after a termination whose reason allows it (section 4.1.3).

Nothing here reads a clock or opens a socket: every time is an argument (``now``, seconds on
any monotonic scale, as in :mod:`firebox.sip.proxy`), and messages come out as
:class:`~firebox.sip.transaction.Send` events (notifier) or return values (subscriber) for
the owner to pass to its transactions. Retransmission and transaction timeouts belong to
:mod:`firebox.sip.transaction`; a NOTIFY whose transaction times out is reported with
``Notifier.notify_failed``.

Body media type. The section text of NENA-STA-010.3 says only that the bodies are JSON; it
registers no media type of its own for them (ETSI TS 103 479, the European profile of the
same packages, uses ``application/vnd.emergency.<package>+json``). The notifier therefore
labels bodies ``application/json`` by default (``content_type`` overrides it) and the
subscriber accepts ``application/json``, any ``application/...+json`` type and a missing
``Content-Type``, and hands the bytes to the caller (who applies them to a
:class:`~firebox.esrp.states.StateTable`).

Limits: one subscription per dialog (no ``id`` reuse across packages in one dialog), loose
routing only (a route set is written as ``Route`` header fields, RFC 3261 section 12.2.1.1
with ``lr``), and a subscriber keeps the first dialog a forked SUBSCRIBE creates
(RFC 6665 section 4.1.2.4 allows it to end the others; their NOTIFYs get 481).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from firebox.esrp.states import (
    EVENT_ELEMENT_STATE,
    EVENT_QUEUE_STATE,
    EVENT_SERVICE_STATE,
)
from firebox.sip.address import SipUri, parse_name_addr, parse_uri
from firebox.sip.errors import SipParseError
from firebox.sip.headers import Headers
from firebox.sip.message import Request, Response, make_response
from firebox.sip.transaction import MAGIC_COOKIE, Send

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "I3_EVENT_PACKAGES",
    "DialogId",
    "Notifier",
    "Reason",
    "SubState",
    "Subscriber",
    "SubscriberState",
    "SubscriptionEnded",
    "SubscriptionStarted",
    "SubscriptionState",
    "event_package",
    "parse_subscription_state",
]

#: The i3 event packages (NENA-STA-010.3 sections 2.4.1, 2.4.2, 4.2.1.3).
I3_EVENT_PACKAGES: Final = (EVENT_ELEMENT_STATE, EVENT_SERVICE_STATE, EVENT_QUEUE_STATE)
#: Media type of NOTIFY bodies (see the module docstring for the choice).
DEFAULT_CONTENT_TYPE: Final = "application/json"
#: NOTIFY responses after which the notifier forgets the subscription: 481 (RFC 6665
#: section 4.2.2) and the other dialog-terminating responses of RFC 5057 section 5.
_DIALOG_ENDING: Final = frozenset({404, 408, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 604})


def _token() -> str:
    return secrets.token_hex(6)


def _branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


class SubState(StrEnum):
    """``substate-value`` of ``Subscription-State`` (RFC 6665 section 8.4)."""

    ACTIVE = "active"
    PENDING = "pending"
    TERMINATED = "terminated"


class Reason(StrEnum):
    """``event-reason-value`` of a terminated subscription (RFC 6665 section 4.1.3)."""

    DEACTIVATED = "deactivated"  #: re-subscribe at once
    PROBATION = "probation"  #: re-subscribe later (after retry-after)
    REJECTED = "rejected"  #: do not re-subscribe
    TIMEOUT = "timeout"  #: not refreshed in time: re-subscribe at once
    GIVEUP = "giveup"  #: re-subscribe later (after retry-after)
    NORESOURCE = "noresource"  #: the resource is gone: do not re-subscribe
    INVARIANT = "invariant"  #: the resource will never change: do not re-subscribe


#: Reasons after which a subscriber subscribes again (RFC 6665 section 4.1.3), with whether
#: it waits (``retry-after``, or its own retry delay) first.
_RETRY_WAIT: Final[dict[str, bool]] = {
    Reason.DEACTIVATED: False,
    Reason.TIMEOUT: False,
    Reason.PROBATION: True,
    Reason.GIVEUP: True,
}


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """A ``Subscription-State`` value (RFC 6665 section 8.2.3): ``state``, ``expires``
    (seconds left), ``reason`` and ``retry_after`` (seconds) of a terminated one."""

    state: SubState | str
    expires: int | None = None
    reason: str | None = None
    retry_after: int | None = None

    def __str__(self) -> str:
        out = str(self.state)
        if self.reason is not None:
            out += f";reason={self.reason}"
        if self.expires is not None:
            out += f";expires={self.expires}"
        if self.retry_after is not None:
            out += f";retry-after={self.retry_after}"
        return out


def _seconds(value: str, what: str) -> int:
    value = value.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 10):
        raise SipParseError(400, f"Bad Request: malformed {what} '{value}'")
    return int(value)


def parse_subscription_state(value: str) -> SubscriptionState:
    """Parse ``Subscription-State`` (RFC 6665 section 8.4; names and values compared in any
    case). A state other than the three of RFC 6665 is kept as written (``Subscriber``
    treats it like ``active``); raises ``SipParseError`` (400) for malformed numbers."""
    head, *params = value.split(";")
    raw = head.strip().lower()
    if not raw:
        raise SipParseError(400, "Bad Request: empty Subscription-State")
    state: SubState | str = SubState(raw) if raw in SubState._value2member_map_ else raw
    expires = retry = None
    reason = None
    for item in params:
        name, _, v = item.partition("=")
        name = name.strip().lower()
        if name == "expires":
            expires = _seconds(v, "Subscription-State expires")
        elif name == "retry-after":
            retry = _seconds(v, "Subscription-State retry-after")
        elif name == "reason":
            reason = v.strip().lower() or None
    return SubscriptionState(state, expires, reason, retry)


def event_package(value: str) -> tuple[str, str | None]:
    """``(package, id)`` of an ``Event`` value (RFC 6665 section 8.2.1 and 8.4:
    ``o-type *(SEMI event-param)``, ``id`` names one of several subscriptions in a dialog)."""
    head, *params = value.split(";")
    event_id = None
    for item in params:
        name, _, v = item.partition("=")
        if name.strip().lower() == "id":
            event_id = v.strip() or None
    return head.strip(), event_id


def _same_package(a: str, b: str) -> bool:
    # NENA's packages are mixed case and senders differ in what they write; compare them
    # case-insensitively as esrp.states.parse_notify does.
    return a.lower() == b.lower()


@dataclass(frozen=True, slots=True)
class DialogId:
    """A dialog seen from this end (RFC 3261 section 12): Call-ID, local and remote tag."""

    call_id: str
    local_tag: str
    remote_tag: str

    def swapped(self) -> DialogId:
        """The same dialog seen from the other end."""
        return DialogId(self.call_id, self.remote_tag, self.local_tag)


@dataclass(frozen=True, slots=True)
class SubscriptionStarted:
    """The notifier accepted a new subscription (RFC 6665 section 4.2.1)."""

    dialog: DialogId
    subscriber: str
    expires: int


@dataclass(frozen=True, slots=True)
class SubscriptionEnded:
    """The notifier forgot a subscription, with the reason (``timeout``, ``unsubscribed``,
    ``noresource``, or ``"NOTIFY <status>"``)."""

    dialog: DialogId
    reason: str


NotifierEvent = Send | SubscriptionStarted | SubscriptionEnded


@dataclass(slots=True)
class _Dialog:
    """What both ends keep about the subscription dialog (RFC 3261 section 12.1)."""

    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: str  # our From/To address, without tag
    remote_addr: str  # the peer's From/To value, without tag
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int | None = None


@dataclass(slots=True)
class _Subscription:
    dialog: _Dialog
    event_id: str | None
    expires_at: float


def _strip_tag(value: str) -> str:
    addr = parse_name_addr(value)
    addr.params.pop("tag", None)
    return str(addr)


def _contact_uri(request: Request | Response) -> str | None:
    value = request.headers.get("Contact")
    if not value:
        return None
    return str(parse_name_addr(value).uri)


def _via_for(contact: str, branch: str) -> str:
    """A Via sent-by taken from our own Contact (RFC 3261 section 8.1.1.7); the transport
    layer may rewrite it to the socket it sends from."""
    uri = parse_name_addr(contact).uri if "<" in contact else parse_uri(contact)
    if isinstance(uri, SipUri):
        transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).upper()
        port = f":{uri.port}" if uri.port is not None else ""
        return f"SIP/2.0/{transport} {uri.host}{port};branch={branch}"
    return f"SIP/2.0/UDP invalid;branch={branch}"


def _in_dialog_request(
    method: str, dialog: _Dialog, contact: str, branch: str, extra: list[tuple[str, str]], body: bytes = b""
) -> Request:
    """A request inside ``dialog`` (RFC 3261 section 12.2.1.1, loose routing): Request-URI
    the remote target, ``Route`` the route set, the next local CSeq."""
    dialog.local_cseq += 1
    to = dialog.remote_addr + (f";tag={dialog.remote_tag}" if dialog.remote_tag else "")
    headers = Headers(
        [
            ("Via", _via_for(contact, branch)),
            ("Max-Forwards", "70"),
            *[("Route", r) for r in dialog.route_set],
            ("From", f"{dialog.local_uri};tag={dialog.local_tag}"),
            ("To", to),
            ("Call-ID", dialog.call_id),
            ("CSeq", f"{dialog.local_cseq} {method}"),
            ("Contact", contact if "<" in contact else f"<{contact}>"),
            *extra,
        ]
    )
    headers.set("Content-Length", str(len(body)))
    return Request(method, dialog.remote_target, headers, body)


def _check_remote_cseq(dialog: _Dialog, request: Request) -> bool:
    """RFC 3261 section 12.2.2: a request with a CSeq lower than the last one is out of
    order (answered 500); otherwise remember it."""
    number = request.cseq[0]
    if dialog.remote_cseq is not None and number < dialog.remote_cseq:
        return False
    dialog.remote_cseq = number
    return True


def _angle(uri: str) -> str:
    return uri if "<" in uri else f"<{uri}>"


# -- the notifier -------------------------------------------------------------------------


class Notifier:
    """The notifier of one event package (RFC 6665 section 4.2) for any number of
    subscribers. ``event`` is the package (one of :data:`I3_EVENT_PACKAGES` in i3),
    ``local_uri`` the resource's address (our ``From`` in NOTIFY), ``contact`` our Contact
    URI (also the Via sent-by of NOTIFYs). Intervals are in seconds."""

    def __init__(
        self,
        event: str,
        local_uri: str,
        contact: str,
        *,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        content_type: str = DEFAULT_CONTENT_TYPE,
        tag_factory: Callable[[], str] = _token,
        branch_factory: Callable[[], str] = _branch,
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        self.event = event
        self.local_uri = _angle(local_uri)
        self.contact = contact
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.content_type = content_type
        self._tag = tag_factory
        self._branch = branch_factory
        self._subs: dict[DialogId, _Subscription] = {}
        self._state: bytes = b""

    def __len__(self) -> int:
        return len(self._subs)

    @property
    def dialogs(self) -> list[DialogId]:
        """The subscriptions held now."""
        return list(self._subs)

    def expires_at(self, dialog: DialogId) -> float | None:
        """When subscription ``dialog`` expires, or ``None`` when it is not held."""
        sub = self._subs.get(dialog)
        return sub.expires_at if sub else None

    def next_deadline(self) -> float | None:
        """The earliest expiry: the owner calls ``tick`` then (or earlier)."""
        return min((s.expires_at for s in self._subs.values()), default=None)

    # -- SUBSCRIBE --------------------------------------------------------------------------

    def _reject(
        self, request: Request, status: int, headers: Sequence[tuple[str, str]] = ()
    ) -> list[NotifierEvent]:
        return [Send(make_response(request, status, headers=list(headers)))]

    def handle_subscribe(self, request: Request, now: float, current_state_body: bytes) -> list[NotifierEvent]:
        """Answer a SUBSCRIBE, initial or in-dialog (RFC 6665 section 4.2.1).

        Returns ``Send`` events (the response first, then the NOTIFY that section 4.2.1.2
        requires after every accepted SUBSCRIBE) and ``SubscriptionStarted`` /
        ``SubscriptionEnded``. ``current_state_body`` is the state to put in that NOTIFY
        and is remembered as the state for later subscribers until ``publish``."""
        if request.method != "SUBSCRIBE":
            raise ValueError(f"not a SUBSCRIBE: {request.method}")
        self._state = current_state_body
        try:
            return self._subscribe(request, now)
        except SipParseError as exc:
            return self._reject(request, exc.status if 400 <= exc.status < 700 else 400)

    def _subscribe(self, request: Request, now: float) -> list[NotifierEvent]:
        value = request.headers.get("Event")
        package, event_id = event_package(value or "")
        if not package or not _same_package(package, self.event):
            # RFC 6665 section 8.2.2 (and 4.2.1.1): unknown package, with the ones we know.
            return self._reject(request, 489, [("Allow-Events", self.event)])
        raw = request.headers.get("Expires")
        expires = self.default_expires if raw is None else _seconds(raw, "Expires")
        if 0 < expires < self.min_expires:
            # RFC 6665 section 4.2.1.1 / RFC 3261 section 21.4.17.
            return self._reject(request, 423, [("Min-Expires", str(self.min_expires))])
        expires = min(expires, self.max_expires)
        from_tag = request.from_tag
        if not from_tag:
            raise SipParseError(400, "Bad Request: From without tag")
        to_tag = request.to_tag
        if to_tag is None:
            return self._new(request, now, expires, from_tag, event_id)
        key = DialogId(request.call_id, to_tag, from_tag)
        sub = self._subs.get(key)
        if sub is None:
            return self._reject(request, 481)  # RFC 6665 section 4.2.1.2
        if not _check_remote_cseq(sub.dialog, request):
            return self._reject(request, 500)
        target = _contact_uri(request)
        if target:
            sub.dialog.remote_target = target  # a target refresh (RFC 6665 section 4.1.2.2)
        ok = make_response(request, 200, headers=[("Expires", str(expires)), ("Contact", _angle(self.contact))])
        if expires == 0:
            # Unsubscribing (RFC 6665 section 4.1.2.3): 200, then a final NOTIFY.
            del self._subs[key]
            return [
                Send(ok),
                Send(self._notify(sub, SubscriptionState(SubState.TERMINATED, reason=Reason.TIMEOUT))),
                SubscriptionEnded(key, "unsubscribed"),
            ]
        sub.expires_at = now + expires
        return [Send(ok), Send(self._notify(sub, SubscriptionState(SubState.ACTIVE, expires)))]

    def _new(
        self, request: Request, now: float, expires: int, from_tag: str, event_id: str | None
    ) -> list[NotifierEvent]:
        target = _contact_uri(request)
        if not target:
            raise SipParseError(400, "Bad Request: SUBSCRIBE without Contact")  # RFC 6665 7.1
        local_tag = self._tag()
        dialog = _Dialog(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=from_tag,
            local_uri=_strip_tag(request.headers.get("To") or self.local_uri),
            remote_addr=_strip_tag(request.headers.get("From") or ""),
            remote_target=target,
            # RFC 3261 section 12.1.1: the UAS takes Record-Route in order.
            route_set=request.headers.get_all("Record-Route"),
            remote_cseq=request.cseq[0],
        )
        key = DialogId(dialog.call_id, local_tag, from_tag)
        ok = make_response(
            request, 200, to_tag=local_tag, headers=[("Expires", str(expires)), ("Contact", _angle(self.contact))]
        )
        if expires == 0:
            # A fetch (RFC 6665 section 4.4.3): one NOTIFY with the state, then it is over.
            sub = _Subscription(dialog, event_id, now)
            return [Send(ok), Send(self._notify(sub, SubscriptionState(SubState.TERMINATED, reason=Reason.TIMEOUT)))]
        sub = _Subscription(dialog, event_id, now + expires)
        self._subs[key] = sub
        return [
            Send(ok),
            SubscriptionStarted(key, dialog.remote_addr, expires),
            Send(self._notify(sub, SubscriptionState(SubState.ACTIVE, expires))),
        ]

    # -- NOTIFY -----------------------------------------------------------------------------

    def _notify(self, sub: _Subscription, state: SubscriptionState) -> Request:
        """A NOTIFY in the subscription's dialog (RFC 6665 section 4.2.2) carrying the
        current state with ``Event`` (and its ``id``) and ``Subscription-State``."""
        event = self.event + (f";id={sub.event_id}" if sub.event_id else "")
        extra = [("Event", event), ("Subscription-State", str(state))]
        body = self._state
        if body:
            extra.append(("Content-Type", self.content_type))
        return _in_dialog_request("NOTIFY", sub.dialog, self.contact, self._branch(), extra, body)

    def _remaining(self, sub: _Subscription, now: float) -> int:
        return max(0, int(sub.expires_at - now))

    def publish(self, body: bytes, now: float) -> list[NotifierEvent]:
        """The state changed: ``body`` becomes the current state and every active
        subscription gets a NOTIFY with it (RFC 6665 section 4.2.2). Subscriptions that
        expired before ``now`` are ended first (as ``tick`` would)."""
        events = self.tick(now)
        self._state = body
        for sub in self._subs.values():
            state = SubscriptionState(SubState.ACTIVE, self._remaining(sub, now))
            events.append(Send(self._notify(sub, state)))
        return events

    def tick(self, now: float) -> list[NotifierEvent]:
        """End the subscriptions that were not refreshed in time with a final NOTIFY
        ``terminated;reason=timeout`` (RFC 6665 sections 4.2.2 and 4.1.3)."""
        events: list[NotifierEvent] = []
        for key, sub in list(self._subs.items()):
            if sub.expires_at <= now:
                del self._subs[key]
                final = SubscriptionState(SubState.TERMINATED, reason=Reason.TIMEOUT)
                events += [Send(self._notify(sub, final)), SubscriptionEnded(key, "timeout")]
        return events

    def terminate_all(self, reason: Reason = Reason.NORESOURCE) -> list[NotifierEvent]:
        """The resource goes away: end every subscription with ``reason`` (RFC 6665
        section 4.2.2; ``noresource`` tells subscribers not to come back)."""
        events: list[NotifierEvent] = []
        for key, sub in list(self._subs.items()):
            del self._subs[key]
            final = SubscriptionState(SubState.TERMINATED, reason=reason)
            events += [Send(self._notify(sub, final)), SubscriptionEnded(key, str(reason))]
        return events

    def handle_response(self, response: Response, now: float) -> list[NotifierEvent]:
        """A response to one of our NOTIFYs. 481 and the other dialog-ending responses of
        RFC 5057 drop the subscription (RFC 6665 section 4.2.2); anything else is noted
        and ignored."""
        try:
            _, method = response.cseq
            key = DialogId(response.call_id, response.from_tag or "", response.to_tag or "")
        except SipParseError:
            return []
        if method != "NOTIFY" or key not in self._subs or response.status not in _DIALOG_ENDING:
            return []
        del self._subs[key]
        return [SubscriptionEnded(key, f"NOTIFY {response.status}")]

    def notify_failed(self, dialog: DialogId) -> list[NotifierEvent]:
        """A NOTIFY transaction timed out or hit a transport error (RFC 6665 section
        4.2.2: the subscription is removed)."""
        if self._subs.pop(dialog, None) is None:
            return []
        return [SubscriptionEnded(dialog, "NOTIFY failed")]


# -- the subscriber ------------------------------------------------------------------------


class SubscriberState(StrEnum):
    """Where a :class:`Subscriber` stands."""

    IDLE = "idle"  #: never subscribed, or unsubscribed
    SUBSCRIBING = "subscribing"  #: initial SUBSCRIBE sent, nothing back yet
    PENDING = "pending"  #: accepted, waiting for authorization (RFC 6665 section 4.1.3)
    ACTIVE = "active"
    TERMINATED = "terminated"  #: ended by the notifier or by a failure; may retry


class Subscriber:
    """The subscriber end of one subscription (RFC 6665 section 4.1).

    ``event`` is the package, ``target_uri`` the resource subscribed to (Request-URI and
    ``To`` of the initial SUBSCRIBE), ``local_uri`` our address (``From``), ``contact`` our
    Contact URI, ``expires`` the interval asked for. Refreshes go out at ``refresh_fraction``
    (90 %) of the granted interval; after a failure or a termination that allows it, a new
    subscription is attempted ``retry_delay`` seconds later (or after ``retry-after``)."""

    def __init__(
        self,
        event: str,
        target_uri: str,
        local_uri: str,
        contact: str,
        expires: int = 3600,
        *,
        refresh_fraction: float = 0.9,
        retry_delay: float = 30.0,
        tag_factory: Callable[[], str] = _token,
        call_id_factory: Callable[[], str] = lambda: secrets.token_hex(12),
        branch_factory: Callable[[], str] = _branch,
    ) -> None:
        if expires <= 0:
            raise ValueError("expires must be positive")
        if not 0 < refresh_fraction < 1:
            raise ValueError("refresh_fraction must be between 0 and 1")
        self.event = event
        self.target_uri = target_uri
        self.local_uri = _angle(local_uri)
        self.contact = contact
        self.expires = expires
        self.refresh_fraction = refresh_fraction
        self.retry_delay = retry_delay
        self._tag = tag_factory
        self._call_id = call_id_factory
        self._branch = branch_factory
        self.state = SubscriberState.IDLE
        self.reason: str | None = None
        self._dialog: _Dialog | None = None
        self._confirmed = False  # the dialog has its remote tag (2xx or NOTIFY seen)
        self._expires_at: float | None = None
        self._refresh_at: float | None = None
        self._retry_at: float | None = None
        self._last_cseq = 0  # CSeq of the last SUBSCRIBE sent
        self._unsubscribing = False

    @property
    def call_id(self) -> str | None:
        """The Call-ID of the current subscription (known from the first SUBSCRIBE on,
        before the notifier answers: a NOTIFY may come first, RFC 6665 section 4.1.2.4)."""
        return self._dialog.call_id if self._dialog is not None else None

    @property
    def dialog(self) -> DialogId | None:
        """The dialog, once the notifier has answered or notified."""
        d = self._dialog
        if d is None or d.remote_tag is None:
            return None
        return DialogId(d.call_id, d.local_tag, d.remote_tag)

    @property
    def expires_at(self) -> float | None:
        return self._expires_at

    @property
    def refresh_at(self) -> float | None:
        return self._refresh_at

    def next_deadline(self) -> float | None:
        """When the owner must call ``tick`` next (a refresh, an expiry or a retry)."""
        times = [t for t in (self._refresh_at, self._expires_at, self._retry_at) if t is not None]
        return min(times, default=None)

    # -- sending ----------------------------------------------------------------------------

    def _subscribe_request(self, expires: int) -> Request:
        d = self._dialog
        assert d is not None
        extra = [("Event", self.event), ("Expires", str(expires)), ("Accept", "application/json")]
        request = _in_dialog_request("SUBSCRIBE", d, self.contact, self._branch(), extra)
        self._last_cseq = d.local_cseq
        return request

    def subscribe(self, now: float) -> Request:
        """A new (initial) SUBSCRIBE, out of any dialog (RFC 6665 section 4.1.2.1)."""
        self._dialog = _Dialog(
            call_id=self._call_id(),
            local_tag=self._tag(),
            remote_tag=None,
            local_uri=self.local_uri,
            remote_addr=_angle(self.target_uri),
            remote_target=self.target_uri,
        )
        self._confirmed = False
        self.state = SubscriberState.SUBSCRIBING
        self.reason = None
        self._retry_at = self._refresh_at = None
        self._expires_at = now + self.expires  # until told otherwise
        self._unsubscribing = False
        return self._subscribe_request(self.expires)

    def refresh(self, now: float) -> Request:
        """A refreshing SUBSCRIBE in the dialog (RFC 6665 section 4.1.2.2); a new initial
        one when there is no dialog yet."""
        if self._dialog is None or self._dialog.remote_tag is None:
            return self.subscribe(now)
        self._refresh_at = None
        return self._subscribe_request(self.expires)

    def unsubscribe(self, now: float) -> Request | None:
        """``Expires: 0`` in the dialog (RFC 6665 section 4.1.2.3); ``None`` when there is
        nothing to end. No refresh or retry follows."""
        self._retry_at = self._refresh_at = None
        if (
            self._dialog is None
            or self._dialog.remote_tag is None
            or self.state in (SubscriberState.TERMINATED, SubscriberState.IDLE)
        ):
            self.state = SubscriberState.IDLE
            return None
        self._unsubscribing = True
        return self._subscribe_request(0)

    def tick(self, now: float) -> Request | None:
        """The SUBSCRIBE due at ``now``, if any: a refresh at ~90 % of the interval, a new
        subscription after expiry without refresh or when a retry is due."""
        if self._unsubscribing:
            return None
        if self.state in (SubscriberState.ACTIVE, SubscriberState.PENDING, SubscriberState.SUBSCRIBING):
            if self._expires_at is not None and now >= self._expires_at:
                return self.subscribe(now)  # lost: start over (RFC 6665 section 4.1.2.2)
            if self._refresh_at is not None and now >= self._refresh_at:
                return self.refresh(now)
            return None
        if self._retry_at is not None and now >= self._retry_at:
            return self.subscribe(now)
        return None

    # -- receiving --------------------------------------------------------------------------

    def _granted(self, seconds: int, now: float) -> None:
        self._expires_at = now + seconds
        self._refresh_at = now + seconds * self.refresh_fraction

    def _terminate(self, reason: str | None, now: float, retry: bool, retry_after: int | None = None) -> None:
        self.state = SubscriberState.TERMINATED
        self.reason = reason
        self._expires_at = self._refresh_at = None
        if self._unsubscribing:
            self.state = SubscriberState.IDLE
            retry = False
        self._retry_at = now + (retry_after if retry_after is not None else self.retry_delay) if retry else None

    def handle_response(self, response: Response, now: float) -> Request | None:
        """A response to our SUBSCRIBE (RFC 6665 section 4.1.2). Returns a SUBSCRIBE to
        send at once, if any (after a 423, with the notifier's ``Min-Expires``)."""
        d = self._dialog
        try:
            number, method = response.cseq
            call_id, from_tag = response.call_id, response.from_tag
        except SipParseError:
            return None
        if d is None or method != "SUBSCRIBE" or call_id != d.call_id or from_tag != d.local_tag:
            return None
        if number != self._last_cseq or response.status < 200:
            return None  # a late answer to an older SUBSCRIBE, or provisional
        if 200 <= response.status < 300:
            if d.remote_tag is None:
                d.remote_tag = response.to_tag
                # RFC 3261 section 12.1.2: the UAC takes Record-Route in reverse order.
                d.route_set = list(reversed(response.headers.get_all("Record-Route")))
                d.remote_target = _contact_uri(response) or d.remote_target
            elif response.to_tag != d.remote_tag:
                return None  # a forked answer: keep the first dialog
            if self._unsubscribing:
                return None  # the final NOTIFY ends it
            raw = response.headers.get("Expires")
            try:
                granted = self.expires if raw is None else _seconds(raw, "Expires")
            except SipParseError:
                granted = self.expires
            if granted == 0:
                return None
            self._granted(granted, now)
            if self.state is SubscriberState.SUBSCRIBING:
                self.state = SubscriberState.PENDING  # until the first NOTIFY says active
            return None
        if response.status == 423 and not self._unsubscribing:
            raw = response.headers.get("Min-Expires")
            try:
                minimum = _seconds(raw or "", "Min-Expires")
            except SipParseError:
                minimum = 0
            if minimum > self.expires:
                self.expires = minimum
                return self.refresh(now) if self._confirmed_dialog() else self.subscribe(now)
        retry_after = None
        raw_retry = response.headers.get("Retry-After")
        if raw_retry:
            try:
                retry_after = _seconds(raw_retry.split(";")[0].split("(")[0], "Retry-After")
            except SipParseError:
                retry_after = None
        # RFC 6665 section 4.1.2.2: a failed refresh (481 and the like) ends the
        # subscription; try again later rather than lose the state feed for good.
        self._terminate(f"SUBSCRIBE {response.status}", now, retry=response.status != 489, retry_after=retry_after)
        return None

    def _confirmed_dialog(self) -> bool:
        return self._dialog is not None and self._dialog.remote_tag is not None

    def transaction_failed(self, now: float) -> None:
        """The SUBSCRIBE transaction timed out or could not be sent: retry later."""
        self._terminate("SUBSCRIBE timeout", now, retry=True)

    def handle_notify(
        self, request: Request, now: float
    ) -> tuple[Response, bytes | None, SubscriptionState | None]:
        """Answer a NOTIFY (RFC 6665 section 4.1.3): ``(response, body, state)``.

        ``body`` is the NOTIFY body (``None`` when it has none or the NOTIFY was refused),
        for the caller to apply (``StateTable.apply_notify(subscriber.event, body, ...)``);
        ``state`` the parsed ``Subscription-State``. A NOTIFY outside our dialog is 481, one
        for another package 489, without ``Subscription-State`` 400 (section 8.2.3)."""
        if request.method != "NOTIFY":
            raise ValueError(f"not a NOTIFY: {request.method}")
        d = self._dialog
        try:
            call_id, to_tag, from_tag = request.call_id, request.to_tag, request.from_tag
            if d is None or call_id != d.call_id or to_tag != d.local_tag or not from_tag:
                return make_response(request, 481), None, None
            if self.state in (SubscriberState.TERMINATED, SubscriberState.IDLE):
                return make_response(request, 481), None, None  # already over (section 4.1.3)
            if d.remote_tag is not None and from_tag != d.remote_tag:
                return make_response(request, 481), None, None  # another fork: keep the first
            package, _ = event_package(request.headers.get("Event") or "")
            if not _same_package(package, self.event):
                return make_response(request, 489, headers=[("Allow-Events", self.event)]), None, None
            raw_state = request.headers.get("Subscription-State")
            if not raw_state:
                return make_response(request, 400, "Missing Subscription-State"), None, None
            state = parse_subscription_state(raw_state)
            ctype = (request.content_type or "").split(";")[0].strip().lower()
            if request.body and ctype and not (ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))):
                return make_response(request, 415, headers=[("Accept", "application/json")]), None, None
            if d.remote_tag is None:
                # The NOTIFY came before the 2xx (RFC 6665 section 4.1.2.4): it makes the
                # dialog; we are its UAS, so Record-Route is taken in order.
                d.remote_tag = from_tag
                d.route_set = request.headers.get_all("Record-Route")
                d.remote_cseq = None
            if not _check_remote_cseq(d, request):
                return make_response(request, 500), None, None
            target = _contact_uri(request)
        except SipParseError as exc:
            return make_response(request, exc.status if 400 <= exc.status < 700 else 400), None, None
        if target:
            d.remote_target = target  # NOTIFY is a target refresh request (RFC 6665 4.1.3)
        body = request.body or None
        if state.state is SubState.TERMINATED:
            reason = state.reason
            wait = _RETRY_WAIT.get(reason or "")
            # No reason: RFC 6665 section 4.1.3 leaves it to the subscriber; we come back.
            retry = reason is None or wait is not None
            delay = state.retry_after if state.retry_after is not None else (0 if wait is False else None)
            self._terminate(reason, now, retry, delay)
        else:
            if not self._unsubscribing:
                self.state = SubscriberState.PENDING if state.state is SubState.PENDING else SubscriberState.ACTIVE
                if state.expires is not None:
                    # The notifier may shorten the interval (section 4.2.2): follow it.
                    self._granted(state.expires, now)
        return make_response(request, 200), body, state
