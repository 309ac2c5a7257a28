"""The PSAP call handling element's in-process interface: what the call-taker's console
(``firebox.console``), the supervisor views and the tests see of a PSAP's calls.

The call handling element (``firebox.psap.callhandling``, its asyncio adapter
``firebox.psap.element``) implements ``CallHandlingApi``. Everything it hands out is a
frozen snapshot (``CallView``, ``PositionView``, ``CallbackEntry``, ``PsapStats``); a change
is announced as a ``CallHandlingEvent`` to every subscriber, so that a console never reads
the element's own mutable state. Every action names the position that takes it and the
signed-in user behind it, so that it can be audited and logged (NENA-STA-010.3 section 4.12
log events; NENA-STA-020 call answering).

The shape is the one a console would see across a network (a JSON API plus a stream of
events); ``to_json`` gives that form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "ANSWER_TARGET_15S",
    "ANSWER_TARGET_20S",
    "AdditionalDataView",
    "CallHandlingApi",
    "CallHandlingError",
    "CallHandlingEvent",
    "CallStatus",
    "CallView",
    "CallbackEntry",
    "CallbackStatus",
    "Conflict",
    "EventKind",
    "LocationView",
    "Medium",
    "NotFound",
    "PositionStatus",
    "PositionView",
    "PsapStats",
    "PsapView",
    "RingStrategy",
    "TextMessage",
    "to_json",
]

#: NENA-STA-020.1 section 2.x answer-time standard: 90 % of calls answered within 15 s,
#: 95 % within 20 s, measured from the call's arrival at the PSAP.
ANSWER_TARGET_15S = 0.90
ANSWER_TARGET_20S = 0.95


class CallHandlingError(ValueError):
    """An action that cannot be taken; the message says why (shown to the call-taker)."""


class NotFound(CallHandlingError):
    """No such PSAP, position, call or callback."""


class Conflict(CallHandlingError):
    """The action does not fit the call's or position's state (answering an answered call)."""


class Medium(StrEnum):
    VOICE = "voice"
    TEXT = "text"  # SIP MESSAGE (RFC 3428), text to 911


class CallStatus(StrEnum):
    RINGING = "ringing"  # in the ACD queue, offered to positions, not answered
    CONNECTED = "connected"  # answered by a position
    HELD = "held"  # put on hold by its position
    ABANDONED = "abandoned"  # the caller hung up before answer: on the callback list
    RELEASED = "released"  # ended after answer (by either side)
    TRANSFERRED = "transferred"  # handed to another PSAP or agency, then left by us
    OVERFLOWED = "overflowed"  # sent away by the PSAP's overflow rule before answer


#: States in which a call is still the PSAP's business (shown in the queue).
ACTIVE_STATUSES = frozenset({CallStatus.RINGING, CallStatus.CONNECTED, CallStatus.HELD})


class PositionStatus(StrEnum):
    SIGNED_OUT = "signed out"
    AVAILABLE = "available"  # ready: calls are offered to it
    BUSY = "busy"  # on a call
    NOT_READY = "not ready"  # signed in, takes no new calls (wrap-up, break)


class RingStrategy(StrEnum):
    """How the ACD offers a waiting call to positions."""

    RING_ALL = "ring-all"  # every available position at once; the first to answer has it
    LONGEST_IDLE = "longest-idle"  # the available position idle longest
    ROUND_ROBIN = "round-robin"  # available positions in turn


class CallbackStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"  # reached the caller, or closed by a person with a reason


class EventKind(StrEnum):
    CALL = "call"  # a call arrived or changed (its CallView is in ``call``)
    TEXT = "text"  # a text message in or out (``call`` carries the whole transcript)
    POSITION = "position"  # a position signed in/out or changed status
    CALLBACK = "callback"  # the callback list changed
    STATS = "stats"  # the PSAP's statistics changed
    #: This subscriber fell behind and events were dropped: read the snapshots again.
    RESYNC = "resync"


@dataclass(frozen=True, slots=True)
class LocationView:
    """The caller's location as the console draws it: a PIDF-LO shape reduced to a point
    (and radius), with the civic address when there is one (RFC 4119, RFC 5491)."""

    shape: str  # "point", "circle", "polygon", "civic"
    lat: float | None = None
    lon: float | None = None
    radius_m: float | None = None
    civic: dict[str, str] = field(default_factory=dict)  # RFC 5139 element -> value
    source: str = "value"  # "value" (PIDF-LO in the INVITE), "reference" (HELD), "default"
    method: str | None = None  # PIDF-LO <method>: GPS, Cell, Manual...


@dataclass(frozen=True, slots=True)
class AdditionalDataView:
    """One RFC 7852 additional data block: by value (a body part) or by reference (a URI)."""

    purpose: str  # EmergencyCallData.ProviderInfo / .ServiceInfo / .DeviceInfo / .SubscriberInfo / .Comment
    by: str  # "value" or "reference"
    uri: str | None = None
    summary: dict[str, str] = field(default_factory=dict)  # the fields a call-taker reads


@dataclass(frozen=True, slots=True)
class TextMessage:
    direction: str  # "in" (from the caller) or "out" (from the position)
    text: str
    at: datetime
    by: str | None = None  # the user who sent an "out" message


@dataclass(frozen=True, slots=True)
class CallView:
    call_id: str  # the i3 call identifier (Call-Info purpose=emergency-CallId), else SIP Call-ID
    sip_call_id: str
    incident_id: str | None
    psap_id: str
    medium: Medium
    status: CallStatus
    callback: str | None  # the number to call back (P-Asserted-Identity, else From)
    caller_uri: str
    location: LocationView | None
    additional_data: tuple[AdditionalDataView, ...]
    offered_at: datetime
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    position: str | None = None  # the position that has (had) it
    offered_to: tuple[str, ...] = ()  # positions it is ringing at now
    messages: tuple[TextMessage, ...] = ()
    transfer_target: str | None = None
    transfer_status: str | None = None  # "trying", "connected", "failed"
    media: dict[str, Any] = field(default_factory=dict)  # rtp: local port, remote, packets


@dataclass(frozen=True, slots=True)
class PositionView:
    id: str
    psap_id: str
    status: PositionStatus
    user: str | None = None
    since: datetime | None = None  # in this status since (longest-idle reads it)
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallbackEntry:
    """An abandoned call to call back (or a call that could not be connected)."""

    id: str
    call_id: str
    psap_id: str
    callback: str | None
    location: LocationView | None
    at: datetime  # when the caller hung up
    status: CallbackStatus = CallbackStatus.PENDING
    attempts: tuple[dict[str, Any], ...] = ()  # {"at", "by", "outcome"} each
    #: "abandoned" (hung up while ringing here), or why the ESRP could not connect the call
    #: (its callback worklist: "failed", "busy"...), with the destinations it tried.
    reason: str = "abandoned"
    tried: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PsapStats:
    """NENA-STA-020 answer-time figures for one PSAP since the element started."""

    psap_id: str
    offered: int
    answered: int
    answered_15s: int
    answered_20s: int
    abandoned: int
    in_queue: int
    longest_wait_s: float
    average_answer_s: float | None
    #: Calls sent away by the PSAP's overflow rule (queue full, waited too long, nobody
    #: signed in): the ESRP tried the next destination. Not in ``offered`` when refused at once.
    overflowed: int = 0
    #: NENA i3 test calls (urn:service:test.sos), answered automatically; not in the figures.
    test_calls: int = 0

    @property
    def pct_15s(self) -> float | None:
        return self.answered_15s / self.offered if self.offered else None

    @property
    def pct_20s(self) -> float | None:
        return self.answered_20s / self.offered if self.offered else None


@dataclass(frozen=True, slots=True)
class PsapView:
    id: str
    name: str
    uri: str
    strategy: RingStrategy
    positions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CallHandlingEvent:
    kind: EventKind
    psap_id: str
    at: datetime
    call: CallView | None = None
    position: PositionView | None = None
    callback: CallbackEntry | None = None
    stats: PsapStats | None = None


class CallHandlingApi(Protocol):
    """What a console may ask of and tell the call handling element. Every action raises
    ``NotFound`` or ``Conflict`` (with a message for the call-taker) instead of failing
    silently; ``user`` is the signed-in person, for the audit trail and the log events."""

    def psaps(self) -> list[PsapView]: ...
    def calls(self, psap_id: str, *, include_ended: bool = False) -> list[CallView]: ...
    def call(self, call_id: str) -> CallView: ...
    def positions(self, psap_id: str) -> list[PositionView]: ...
    def callbacks(self, psap_id: str) -> list[CallbackEntry]: ...
    def stats(self, psap_id: str) -> PsapStats: ...

    def sign_in(self, position_id: str, user: str) -> PositionView: ...
    def sign_out(self, position_id: str, user: str) -> PositionView: ...
    def set_ready(self, position_id: str, user: str, ready: bool) -> PositionView: ...

    #: ``call_id`` None: the next call (the longest waiting offered to this position).
    def answer(self, position_id: str, user: str, call_id: str | None = None) -> CallView: ...
    def release(self, position_id: str, user: str, call_id: str) -> CallView: ...
    def hold(self, position_id: str, user: str, call_id: str, on: bool) -> CallView: ...
    #: ``target``: a PSAP id, or a SIP URI of an agency; the call goes back through the ESRP.
    def transfer(self, position_id: str, user: str, call_id: str, target: str) -> CallView: ...
    def send_text(self, position_id: str, user: str, call_id: str, text: str) -> CallView: ...
    def record_callback(self, callback_id: str, user: str, outcome: str, *, done: bool) -> CallbackEntry: ...

    def subscribe(self) -> AsyncIterator[CallHandlingEvent]: ...


def to_json(value: Any) -> Any:
    """A snapshot (or list of them) as JSON-ready data: datetimes as RFC 3339 strings,
    enums as their values, tuples as lists; ``PsapStats`` also gets its percentages."""
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, PsapStats):
        out = _plain(asdict(value))
        out["pct_15s"], out["pct_20s"] = value.pct_15s, value.pct_20s
        return out
    if hasattr(value, "__dataclass_fields__"):
        return _plain(asdict(value))
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    return value
