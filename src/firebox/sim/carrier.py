"""A carrier's originating network as the BCF sees it: NG911 calls over SIP.

``Carrier`` is a small asyncio UAC on ``firebox.sip.transport``. ``call(plan)`` sends one
emergency INVITE to the ingress (the BCF): Request-URI ``urn:service:sos`` (RFC 5031),
``P-Asserted-Identity`` with the caller's number, an SDP offer (RFC 3264), and the
location (RFC 6442) as the plan says:

* ``value``: a ``multipart/mixed`` body (RFC 5621) with the SDP and a PIDF-LO
  (RFC 4119, RFC 5491 point), ``Geolocation: <cid:...>``;
* ``reference``: ``Geolocation: <http://...>``, a location URI the access network's LIS
  handed out (RFC 6753); the ESRP dereferences it;
* ``none``: no location at all; ``garbled``: a ``cid:`` pointing at a PIDF-LO that does
  not parse. Both must still reach a PSAP (the ESRP's default location).

A plan may dial ``sip:911@...;user=phone`` instead of the service URN (a carrier that does
not map 911 to ``urn:service:sos``): the BCF recognizes and marks it.

The INVITE is retransmitted on Timer A until a provisional answer (RFC 3261 17.1.1.2); a
2xx is ACKed within the dialog (13.2.2.4: route set the 2xx's Record-Route reversed,
12.1.2; Request-URI its Contact) and the ACK re-sent for each 2xx retransmission; a final
failure is ACKed hop by hop (17.1.1.3). After the plan's hold time the carrier hangs up
with a BYE, unless the PSAP hung up first (its BYE is answered 200). A call that gets no
final answer within ``answer_timeout`` is CANCELled (9.1) and counted ``no_answer``.

While an INVITE waits for its final answer after a provisional one, the carrier keeps the
target's health as an SBC does for its trunks, with OPTIONS pings (RFC 3261 section 11)
every ``failover_seconds``. A target that leaves ``lost_after`` pings in a row unanswered
has died with the call in its hands (its 100/180 came, its 200 never will): the INVITE is
CANCELled there, best effort (9.1), and placed again to the next target, a new client
transaction with the same Call-ID, From tag and CSeq (RFC 3263 section 4.3), counted in
``stats.replaced_after_provisional``. With no next target the call waits on as before (the
pings may be filtered while the INVITE is not). A target that keeps ringing and answers its
pings is never abandoned. A 2xx that still comes from an abandoned target is ACKed and
released with a BYE (13.2.2.4), any other final answer ACKed (17.1.1.3).

Every wait is bounded. ``stats`` counts sent, answered, failed (by status), no answer,
who hung up, and the setup time (INVITE to 200).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from firebox.location.pidf import PidfLocation, Presence, serialize_pidf
from firebox.location.shapes import Point
from firebox.psap.sdp import offer_sdp
from firebox.psap.ua import Dialog
from firebox.sip.address import parse_name_addr
from firebox.sip.errors import SipParseError
from firebox.sip.headers import Headers
from firebox.sip.message import Message, Request, Response, make_response
from firebox.sip.multipart import build_multipart, make_part
from firebox.sip.resolve import RequestFailover, SipResolver, fails_over
from firebox.sip.transaction import MAGIC_COOKIE, build_ack

__all__ = ["CallPlan", "CallResult", "Carrier", "CarrierStats", "IngressRoute", "LocationMode", "Outcome", "RouteList",
           "RoutedCarrier", "TARGET_LOST"]

log = logging.getLogger(__name__)

T1 = 0.5
T2 = 4.0
Address = tuple[str, int, str]
GARBLED_PIDF = b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:x@y'><tuple id='a'><status><broken"


class LocationMode(StrEnum):
    VALUE = "value"
    REFERENCE = "reference"
    NONE = "none"
    GARBLED = "garbled"


class Outcome(StrEnum):
    ANSWERED = "answered"
    FAILED = "failed"  # a final non-2xx answer
    NO_ANSWER = "no answer"  # no final answer in time
    ERROR = "error"  # could not even be sent


@dataclass(frozen=True, slots=True)
class CallPlan:
    """One call: who (``identity``, a tel: URI), where (lon, lat), how the location goes
    (``location``; ``location_uri`` for ``reference``) and how long the caller stays."""

    identity: str
    lon: float
    lat: float
    location: LocationMode = LocationMode.VALUE
    hold: float = 2.0
    location_uri: str | None = None
    #: ``urn:service:sos`` (RFC 5031), or a dial string such as ``sip:911@bcf;user=phone``
    #: that the BCF must recognize as an emergency call (NENA-STA-010.3 4.1.3).
    request_uri: str = "urn:service:sos"


@dataclass(slots=True)
class CallResult:
    outcome: Outcome
    status: int | None = None
    setup_ms: float | None = None
    ended_by: str | None = None  # "carrier" or "psap"
    #: The final answer's Contact and reason phrase: who answered (a probe checks it is
    #: the PSAP it meant to reach) or why not.
    contact: str | None = None
    reason: str | None = None
    #: When the 2xx arrived (epoch seconds), for answered calls.
    answered_at: float | None = None
    #: The SIP Call-ID (the ESRP's ``records`` key) and the ingress route that carried it.
    call_id: str | None = None
    route: str | None = None
    #: The final answer to the carrier's BYE (the call released), None when none came.
    bye_status: int | None = None


@dataclass(slots=True)
class CarrierStats:
    sent: int = 0
    answered: int = 0
    failed: int = 0
    no_answer: int = 0
    errors: int = 0
    in_flight: int = 0
    ended_by_carrier: int = 0
    ended_by_psap: int = 0
    skipped: int = 0  # not placed: the concurrency bound was reached
    failovers: int = 0  # requests sent again to the next target (RFC 3263 4.3)
    #: Targets found dead (``lost_after`` OPTIONS pings unanswered) while an INVITE they had
    #: answered provisionally waited for its final answer; and of those, the calls placed
    #: again to the next target (or route).
    lost_after_provisional: int = 0
    replaced_after_provisional: int = 0
    #: 2xx answers from a target already given up on: ACKed and released with a BYE.
    late_answers_released: int = 0
    by_location: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    setup_ms: list[float] = field(default_factory=list)

    @property
    def unanswered(self) -> int:
        """Calls that ended without ever being answered."""
        return self.failed + self.no_answer + self.errors

    def percentile(self, q: float) -> float:
        if not self.setup_ms:
            return 0.0
        data = sorted(self.setup_ms)
        return data[min(len(data) - 1, int(q * len(data)))]


@dataclass(slots=True)
class _Uac:
    responses: asyncio.Queue[Response] = field(default_factory=asyncio.Queue)
    remote_bye: asyncio.Event = field(default_factory=asyncio.Event)
    hang_up: asyncio.Event = field(default_factory=asyncio.Event)
    dialog: Dialog | None = None
    ack: tuple[Request, Address] | None = None
    #: INVITEs given up on (their target stopped answering), by Via branch, with where
    #: they went: what still comes back from there is answered here, not by the call.
    abandoned: dict[str, tuple[Request, Address]] = field(default_factory=dict)
    #: The ACK of each late 2xx released (by its To tag), re-sent for its retransmissions,
    #: and the BYEs releasing them (by branch) until they are answered.
    late_acks: dict[str, tuple[Request, Address]] = field(default_factory=dict)
    late_byes: dict[str, asyncio.Event] = field(default_factory=dict)


@dataclass(slots=True)
class _Attempt:
    """What one INVITE client transaction to one target came to."""

    final: Response | None = None
    provisional: bool = False  # a 1xx came
    heard: bool = False  # anything came
    lost: bool = False  # after a provisional, the target stopped answering OPTIONS


#: ``CallResult.reason`` of a call given up at a target that died after a provisional answer
#: (a route list moves on).
TARGET_LOST = "the ingress stopped answering (OPTIONS) after a provisional answer"


class Carrier:
    """A UAC placing calls to ``ingress`` (``(host, port, transport)`` of the BCF)."""

    def __init__(
        self,
        ingress: Address,
        *,
        host: str = "127.0.0.1",
        domain: str = "carrier.demo.firebox.test",
        answer_timeout: float = 10.0,
        bye_timeout: float = 8.0,
        resolver: SipResolver | None = None,
        ingress_uri: str | None = None,
        failover_seconds: float = 2.0,
        lost_after: int = 2,
    ) -> None:
        self.ingress = ingress
        #: RFC 3263 (``firebox.sip.resolve``): with a resolver, calls go to the targets of
        #: ``ingress_uri`` (a cluster name; ``ingress`` is then only the fallback) and the
        #: dialog's requests to those of its route set; a target that says nothing within
        #: ``failover_seconds``, cannot be reached or answers 503 gets the request again, in a
        #: new transaction, after the next one (4.3). ``None``: ``ingress`` alone, as before.
        self.resolver = resolver
        self.ingress_uri = ingress_uri
        self.failover_seconds = failover_seconds
        #: OPTIONS pings in a row left unanswered (each given ``failover_seconds``) after
        #: which a target that answered an INVITE provisionally counts as dead.
        self.lost_after = lost_after
        self.host = host
        self.domain = domain
        self.answer_timeout = answer_timeout
        self.bye_timeout = bye_timeout
        self.transport = ingress[2]
        self.port = 0
        self.server: Any = None
        self.stats = CarrierStats()
        self._calls: dict[str, _Uac] = {}
        self._sessions = 0
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        from firebox.sip.transport import start_sip_server

        self.server = await start_sip_server(self._handle, self.host, 0, transports=(self.transport,))
        self.port = next(iter(self.server.addresses.values()))[1]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.server is not None:
            await self.server.close()

    def hang_up_all(self) -> None:
        """Every call hangs up as soon as it is up (the run is ending)."""
        self._stopping = True
        for uac in self._calls.values():
            uac.hang_up.set()

    # -- the INVITE ---------------------------------------------------------------------

    def build_invite(self, plan: CallPlan, call_id: str, tag: str) -> Request:
        number = plan.identity.removeprefix("tel:")
        self._sessions += 1
        sdp = offer_sdp(host=self.host, port=30000 + 2 * (self._sessions % 10000), session_id=self._sessions)
        headers = Headers()
        headers.add("Via", self._via())
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:{number}@{self.domain}>;tag={tag}")
        headers.add("To", f"<{plan.request_uri}>")
        headers.add("Call-ID", call_id)
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", f"<sip:{number}@{self.host}:{self.port}>")
        headers.add("P-Asserted-Identity", f"<{plan.identity}>")
        headers.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")
        headers.add("Supported", "geolocation")
        cid = f"loc-{call_id.split('@')[0]}@{self.domain}"
        parts = [make_part("application/sdp", sdp)]
        if plan.location is LocationMode.VALUE:
            pidf = serialize_pidf(
                Presence(f"pres:{number}@{self.domain}", [PidfLocation(shapes=[Point(plan.lat, plan.lon)], method="GPS")])
            )
            parts.append(make_part("application/pidf+xml", pidf, content_id=cid))
            headers.add("Geolocation", f"<cid:{cid}>")
        elif plan.location is LocationMode.GARBLED:
            parts.append(make_part("application/pidf+xml", GARBLED_PIDF, content_id=cid))
            headers.add("Geolocation", f"<cid:{cid}>")
        elif plan.location is LocationMode.REFERENCE and plan.location_uri:
            headers.add("Geolocation", f"<{plan.location_uri}>")
        if len(parts) > 1:
            headers.add("Geolocation-Routing", "yes")
            ctype, body = build_multipart(parts)
        else:
            ctype, body = "application/sdp", sdp
        headers.add("Content-Type", ctype)
        headers.add("Content-Length", str(len(body)))
        return Request("INVITE", plan.request_uri, headers, body)

    def _via(self) -> str:
        branch = f"{MAGIC_COOKIE}-car-{secrets.token_hex(8)}"
        return f"SIP/2.0/{self.transport.upper()} {self.host}:{self.port};branch={branch};rport"

    # -- one call -----------------------------------------------------------------------

    async def call(
        self,
        plan: CallPlan,
        *,
        ingress: Address | None = None,
        provisional_timeout: float | None = None,
        give_up_when_lost: bool = False,
    ) -> CallResult:
        """Place one call and see it through (bounded). Never raises for a network fault.
        ``ingress`` overrides the carrier's own; with ``provisional_timeout`` a call that
        hears nothing at all (not even 100 Trying) within it ends ``no answer`` at once
        (no CANCEL: nothing is there to cancel), so that a route list can move on. With
        ``give_up_when_lost`` a call whose last target dies after a provisional answer (its
        OPTIONS pings unanswered) is CANCELled there and ends ``no answer`` at once with
        reason ``TARGET_LOST``, for the same reason; without it, it waits on as before."""
        stats = self.stats
        stats.sent += 1
        stats.in_flight += 1
        stats.by_location[plan.location.value] += 1
        call_id = f"{secrets.token_hex(10)}@{self.domain}"
        uac = self._calls[call_id] = _Uac()
        if self._stopping:
            uac.hang_up.set()
        try:
            result = await self._call(plan, call_id, uac, ingress, provisional_timeout, give_up_when_lost)
        except (OSError, SipParseError, ValueError, RuntimeError) as exc:
            log.info("carrier call %s failed: %s", call_id, exc)
            result = CallResult(Outcome.ERROR)
        finally:
            stats.in_flight -= 1
            self._calls.pop(call_id, None)
        result.call_id = call_id
        if result.outcome is Outcome.ANSWERED:
            stats.answered += 1
            if result.setup_ms is not None:
                stats.setup_ms.append(result.setup_ms)
            if result.ended_by == "psap":
                stats.ended_by_psap += 1
            else:
                stats.ended_by_carrier += 1
        elif result.outcome is Outcome.FAILED:
            stats.failed += 1
        elif result.outcome is Outcome.NO_ANSWER:
            stats.no_answer += 1
        else:
            stats.errors += 1
        if result.status is not None:
            stats.statuses[result.status] += 1
        return result

    async def _invite(
        self, invite: Request, ingress: Address, uac: _Uac, deadline: float, heard_within: float | None
    ) -> _Attempt:
        """One INVITE client transaction to ``ingress``: retransmitted on Timer A until a
        provisional answer (RFC 3261 17.1.1.2), until a final answer or ``deadline``; with
        ``heard_within`` it gives up when nothing at all came back that soon. After the
        first provisional answer the target is pinged (``_watch``); when it is found dead
        the transaction is given up (``lost``), unless a final answer came first."""
        loop = asyncio.get_running_loop()
        self.server.send(invite, ingress)
        heard_by = None if heard_within is None else loop.time() + heard_within
        interval, attempt = T1, _Attempt()
        branch = invite.branch
        lost, done = asyncio.Event(), asyncio.Event()
        watch: asyncio.Task[None] | None = None
        try:
            while (remaining := deadline - loop.time()) > 0:
                if attempt.provisional:
                    wait = remaining
                else:
                    wait = min(interval, remaining, max(0.01, (heard_by or deadline) - loop.time()))
                response = await self._next_response(uac, wait, lost)
                if response is None:
                    if lost.is_set():
                        attempt.lost = True
                        return attempt
                    if not attempt.provisional and heard_by is not None and loop.time() >= heard_by:
                        return attempt
                    if not attempt.provisional and self.transport == "udp":  # Timer A (17.1.1.2)
                        self.server.send(invite, ingress)
                        interval *= 2
                    continue
                if response.cseq[1] != "INVITE" or response.branch != branch:
                    continue  # another transaction's (a target given up on)
                attempt.heard = True
                if response.status < 200:
                    if watch is None:
                        watch = asyncio.create_task(self._watch(ingress, lost, done),
                                                    name=f"carrier-watch-{invite.call_id}")  # fmt: skip
                    attempt.provisional = True
                    continue
                attempt.final = response
                return attempt
            return attempt
        finally:
            if watch is not None:
                done.set()  # and cancelled: whichever it sees first
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch

    @staticmethod
    async def _next_response(uac: _Uac, timeout: float, lost: asyncio.Event) -> Response | None:
        """The call's next response within ``timeout``; None on timeout or once ``lost`` is
        set. (A response waiting in the queue is never consumed by the cancelled get.)"""
        if lost.is_set():
            return None
        get = asyncio.ensure_future(uac.responses.get())
        gone = asyncio.ensure_future(lost.wait())
        try:
            done, _ = await asyncio.wait((get, gone), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not get.done():
                get.cancel()
        return get.result() if get in done else None

    async def _watch(self, target: Address, lost: asyncio.Event, done: asyncio.Event) -> None:
        """Ping ``target`` with OPTIONS (RFC 3261 11) every ``failover_seconds`` while an
        INVITE it answered provisionally waits; any final answer to a ping (even a 503 from
        a rate limit) shows it alive. ``lost_after`` unanswered in a row: ``lost`` is set.
        Runs until its transaction is ``done`` (and it is cancelled), or until it sets ``lost``."""
        loop = asyncio.get_running_loop()
        every = self.failover_seconds
        misses, next_at = 0, loop.time() + every
        while misses < self.lost_after:  # each turn waits ``every`` at most: ends with the transaction
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if done.is_set():
                return
            next_at += every
            status = await self.options(target, timeout=every)
            misses = 0 if status is not None else misses + 1
        if done.is_set():
            return
        log.info("carrier: %s:%s answered none of %d OPTIONS pings while an INVITE rang there", target[0],
                 target[1], misses)  # fmt: skip
        lost.set()

    async def _call(
        self, plan: CallPlan, call_id: str, uac: _Uac, ingress: Address | None, provisional_timeout: float | None = None,
        give_up_when_lost: bool = False,
    ) -> CallResult:  # fmt: skip
        tag = secrets.token_hex(6)
        invite = self.build_invite(plan, call_id, tag)
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        deadline = loop.time() + self.answer_timeout
        # An ingress given for this call (a route list's) is used as it is.
        hop = self.ingress_uri if ingress is None and self.resolver is not None else None
        failover = RequestFailover.for_request(
            invite, self.resolver if hop else None, ingress or self.ingress, hop=hop
        )
        final: Response | None = None
        while True:  # one INVITE transaction per target (RFC 3263 4.3), bounded by their number
            invite, ingress = failover.request, failover.destination
            timeout = provisional_timeout
            if failover.has_next:
                timeout = self.failover_seconds if timeout is None else min(timeout, self.failover_seconds)
            attempt = await self._invite(invite, ingress, uac, deadline, timeout)
            final, provisional, heard = attempt.final, attempt.provisional, attempt.heard
            if attempt.lost:
                self.stats.lost_after_provisional += 1
                if self.resolver is not None:
                    # The dialog's requests (ACK, BYE) to the cluster's name go elsewhere first.
                    self.resolver.mark_failed(ingress)
                if (failover.has_next or give_up_when_lost) and loop.time() < deadline:
                    self._abandon(invite, ingress, uac)
                    if not failover.advance(loop.time()):
                        return CallResult(Outcome.NO_ANSWER, reason=TARGET_LOST)
                    self.stats.replaced_after_provisional += 1
                    continue
                # Nowhere else to go: wait on here, as before (the pings may be filtered).
                attempt = await self._invite_wait(invite, uac, deadline)
                final = attempt.final
            if failover.has_next and loop.time() < deadline and (
                not heard or (final is not None and fails_over(final.status))
            ):
                if final is not None:
                    self.server.send(build_ack(invite, final), ingress)
                failover.advance(loop.time())
                self.stats.failovers += 1
                continue
            if heard and not attempt.lost:
                failover.succeeded()
            break
        if final is None and not heard and provisional_timeout is not None:
            if self.resolver is not None:
                self.resolver.mark_failed(ingress)  # the dialog's requests to the cluster's name go elsewhere
            return CallResult(Outcome.NO_ANSWER, reason="nothing heard from the ingress")
        if final is None:
            if provisional:
                await self._cancel(invite, uac, ingress)
            return CallResult(Outcome.NO_ANSWER)
        if final.status >= 300:
            self.server.send(build_ack(invite, final), ingress)
            return CallResult(Outcome.FAILED, final.status, reason=final.reason)
        setup_ms = (time.perf_counter() - t0) * 1000
        answered_at = time.time()
        dialog = self._dialog(invite, final, tag)
        uac.dialog = dialog
        dialog.local_seq = 0  # the ACK of a 2xx carries the INVITE's CSeq number (13.2.2.4)
        ack, ack_to = dialog.request("ACK", self._via())
        # The ACK of a 2xx has no answer to fail over on: the first live target (4.3).
        ack_over = RequestFailover.for_request(ack, self.resolver, ack_to)
        ack, ack_to = ack_over.request, ack_over.destination
        uac.ack = (ack, ack_to)
        self.server.send(ack, ack_to)
        # The call is up: wait for the hold time, the PSAP's BYE, or the end of the run.
        waits = [asyncio.ensure_future(uac.remote_bye.wait()), asyncio.ensure_future(uac.hang_up.wait())]
        try:
            await asyncio.wait(waits, timeout=plan.hold, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        contact = final.headers.get("Contact")
        if uac.remote_bye.is_set():
            return CallResult(Outcome.ANSWERED, final.status, setup_ms, "psap", contact, final.reason, answered_at)
        bye_status = await self._bye(dialog, uac)
        result = CallResult(Outcome.ANSWERED, final.status, setup_ms, "carrier", contact, final.reason, answered_at)
        result.bye_status = bye_status
        return result

    async def _invite_wait(self, invite: Request, uac: _Uac, deadline: float) -> _Attempt:
        """The rest of an INVITE transaction whose target was found dead with nowhere else
        to go: its final answer, or nothing by ``deadline`` (no more pings)."""
        loop = asyncio.get_running_loop()
        attempt = _Attempt(provisional=True, heard=True, lost=True)
        while (remaining := deadline - loop.time()) > 0:
            try:
                response = await asyncio.wait_for(uac.responses.get(), remaining)
            except TimeoutError:
                break
            if response.cseq[1] == "INVITE" and response.branch == invite.branch and response.status >= 200:
                attempt.final = response
                break
        return attempt

    def _abandon(self, invite: Request, target: Address, uac: _Uac) -> None:
        """Give up an INVITE at a target found dead: one CANCEL, best effort (RFC 3261 9.1;
        not waited for: it is most likely gone), and whatever still comes back from it is
        handled by ``_late`` (ACKed; a 2xx released)."""
        uac.abandoned[invite.branch or ""] = (invite, target)
        with contextlib.suppress(OSError):
            self.server.send(self._cancel_request(invite), target)

    def _late(self, response: Response, uac: _Uac) -> None:
        """A response to an INVITE given up on (its target was found dead, and was not).
        A final non-2xx is ACKed hop by hop (17.1.1.3); a 2xx (the PSAP answered that one
        too) is ACKed within its own dialog and released with a BYE (13.2.2.4: a UAC that
        does not want a dialog of a 2xx ACKs it and then sends BYE), so that no PSAP is left
        holding a call nobody is on. Its retransmissions get the same ACK again."""
        if response.cseq[1] != "INVITE" or response.status < 200:
            return  # a provisional, or the answer to our CANCEL
        invite, target = uac.abandoned[response.branch or ""]
        if response.status >= 300:
            self.server.send(build_ack(invite, response), target)
            return
        known = uac.late_acks.get(response.to_tag or "")
        if known is not None:
            self.server.send(*known)
            return
        tag = (invite.headers.get("From") or "").rsplit(";tag=", 1)[-1]
        dialog = self._dialog(invite, response, tag)
        dialog.local_seq = 0  # the ACK carries the INVITE's CSeq number (13.2.2.4)
        ack, to = dialog.request("ACK", self._via())
        over = RequestFailover.for_request(ack, self.resolver, to)
        uac.late_acks[response.to_tag or ""] = (over.request, over.destination)
        self.server.send(over.request, over.destination)
        bye, to = dialog.request("BYE", self._via())
        over = RequestFailover.for_request(bye, self.resolver, to)
        self.stats.late_answers_released += 1
        answered = uac.late_byes[over.request.branch or ""] = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            self._release(over.request, over.destination, answered), name=f"carrier-release-{invite.call_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release(self, bye: Request, to: Address, answered: asyncio.Event) -> None:
        """Send the BYE of a late 2xx, on Timer E until any answer (bounded by
        ``bye_timeout``; best effort: the PSAP ends it anyway when its 2xx is not ACKed)."""
        loop = asyncio.get_running_loop()
        deadline, interval = loop.time() + self.bye_timeout, T1
        while not answered.is_set() and loop.time() < deadline:
            with contextlib.suppress(OSError):
                self.server.send(bye, to)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), min(interval, max(0.01, deadline - loop.time())))
            interval = min(2 * interval, T2)

    def _dialog(self, invite: Request, ok: Response, tag: str) -> Dialog:
        """The UAC's dialog of a 2xx (RFC 3261 12.1.2): route set the 2xx's Record-Route in
        reverse order, remote target its Contact, remote party its To (with tag)."""
        contact = ok.headers.get("Contact")
        target = str(parse_name_addr(contact).uri) if contact else invite.uri
        return Dialog(
            call_id=invite.call_id,
            local_tag=tag,
            remote_tag=ok.to_tag,
            local_party=(invite.headers.get("From") or "").rsplit(";tag=", 1)[0],
            remote_party=ok.headers.get("To") or "",
            remote_target=target,
            route_set=tuple(reversed(ok.headers.get_all("Record-Route"))),
            remote_seq=0,
        )

    async def _bye(self, dialog: Dialog, uac: _Uac) -> int | None:
        """BYE (RFC 3261 15.1.1), retransmitted on Timer E until any final answer (bounded):
        that answer's status, or None when none came."""
        bye, to = dialog.request("BYE", self._via())
        loop = asyncio.get_running_loop()
        failover = RequestFailover.for_request(bye, self.resolver, to, loop.time())
        bye, to = failover.request, failover.destination
        deadline = loop.time() + self.bye_timeout
        fail_at = loop.time() + self.failover_seconds if failover.has_next else deadline
        interval = T1
        self.server.send(bye, to)
        while (remaining := deadline - loop.time()) > 0:
            try:
                response = await asyncio.wait_for(
                    uac.responses.get(), max(0.01, min(interval, remaining, fail_at - loop.time()))
                )
            except TimeoutError:
                if loop.time() >= fail_at and failover.advance(loop.time()):
                    # RFC 3263 4.3: nothing heard: the same BYE, a new transaction, the next target
                    self.stats.failovers += 1
                    bye, to = failover.request, failover.destination
                    fail_at = loop.time() + self.failover_seconds if failover.has_next else deadline
                    interval = T1
                    self.server.send(bye, to)
                elif self.transport == "udp":
                    self.server.send(bye, to)
                    interval = min(2 * interval, T2)
                continue
            if response.cseq[1] != "BYE" or response.branch != bye.branch:
                continue
            if fails_over(response.status) and failover.advance(loop.time()):
                self.stats.failovers += 1
                bye, to = failover.request, failover.destination
                fail_at = loop.time() + self.failover_seconds if failover.has_next else deadline
                interval = T1
                self.server.send(bye, to)
                continue
            failover.succeeded()
            fail_at = deadline  # it has the BYE
            if response.status >= 200:
                return response.status
        log.info("carrier: no answer to BYE of %s", dialog.call_id)
        return None

    @staticmethod
    def _cancel_request(invite: Request) -> Request:
        """The CANCEL of ``invite`` (RFC 3261 9.1): its Request-URI, top Via (so its
        branch), From, To, Call-ID and CSeq number."""
        headers = Headers()
        headers.add("Via", invite.headers.get("Via") or "")
        headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        headers.add("CSeq", f"{invite.cseq[0]} CANCEL")
        headers.add("Content-Length", "0")
        return Request("CANCEL", invite.uri, headers)

    async def _cancel(self, invite: Request, uac: _Uac, ingress: Address | None = None) -> None:
        """CANCEL a ringing INVITE (RFC 3261 9.1) and wait, bounded, for its 487."""
        ingress = ingress or self.ingress
        self.server.send(self._cancel_request(invite), ingress)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while (remaining := deadline - loop.time()) > 0:
            try:
                response = await asyncio.wait_for(uac.responses.get(), remaining)
            except TimeoutError:
                break
            if response.cseq[1] == "INVITE" and response.status >= 300:
                self.server.send(build_ack(invite, response), ingress)
                return

    async def options(self, ingress: Address, timeout: float = 1.0) -> int | None:
        """An OPTIONS ping to ``ingress`` (RFC 3261 11): the final status, or None when
        nothing answered within ``timeout`` (bounded)."""
        call_id = f"{secrets.token_hex(10)}@{self.domain}"
        headers = Headers()
        headers.add("Via", self._via())
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:ping@{self.domain}>;tag={secrets.token_hex(6)}")
        headers.add("To", f"<sip:{ingress[0]}:{ingress[1]}>")
        headers.add("Call-ID", call_id)
        headers.add("CSeq", "1 OPTIONS")
        headers.add("Content-Length", "0")
        uac = self._calls[call_id] = _Uac()
        request = Request("OPTIONS", f"sip:{ingress[0]}:{ingress[1]}", headers)
        loop = asyncio.get_running_loop()
        try:
            self.server.send(request, ingress)
            async with asyncio.timeout(timeout):
                interval, resend_at = T1, loop.time() + T1
                while True:  # bounded by the timeout
                    try:
                        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that
                        # arrives as the answer does (the watch would then ping on forever).
                        async with asyncio.timeout(max(0.01, resend_at - loop.time())):
                            response = await uac.responses.get()
                    except TimeoutError:
                        if ingress[2] == "udp":  # Timer E (17.1.2.2): a lost datagram is not a dead target
                            self.server.send(request, ingress)
                        interval = min(2 * interval, T2)
                        resend_at = loop.time() + interval
                        continue
                    if response.cseq[1] == "OPTIONS" and response.status >= 200:
                        return response.status
        except (TimeoutError, OSError):
            return None
        finally:
            self._calls.pop(call_id, None)

    # -- the transport's handler ---------------------------------------------------------

    def _handle(self, message: Message, source: Any) -> None:
        try:
            if isinstance(message, Response):
                uac = self._calls.get(message.call_id)
                if uac is None:
                    return
                if message.branch in uac.abandoned:
                    self._late(message, uac)
                    return
                if message.cseq[1] == "BYE" and message.branch in uac.late_byes:
                    uac.late_byes[message.branch].set()
                    return
                if message.cseq[1] == "INVITE" and 200 <= message.status < 300 and uac.ack is not None:
                    self.server.send(*uac.ack)  # a 2xx retransmission: the ACK again (13.2.2.4)
                    return
                uac.responses.put_nowait(message)
                return
            uac = self._calls.get(message.call_id)
            if message.method == "ACK":
                return
            if message.method == "BYE":
                # The dialog's own BYE only: the same Call-ID and From tag may have a dialog
                # at a PSAP reached by an attempt given up on (its To tag differs).
                if (uac is None or uac.dialog is None or message.to_tag != uac.dialog.local_tag
                        or message.from_tag != uac.dialog.remote_tag):  # fmt: skip
                    self.server.reply(make_response(message, 481), source)
                    return
                self.server.reply(make_response(message, 200), source)
                uac.remote_bye.set()
                return
            if message.method == "OPTIONS":
                self.server.reply(make_response(message, 200), source)
                return
            self.server.reply(make_response(message, 405, headers=[("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")]), source)
        except SipParseError:
            log.info("carrier: unreadable message from %s", source)


# -- a carrier's route list (RFC 3263 / SBC route lists) ---------------------------------------


#: Statuses on which a carrier's SBC tries the next ingress route (the call never got to a
#: PSAP): 403 (a firewall or a BCF rule refusing it) and any 5xx; a route that answers
#: nothing at all (no 100 Trying in time) is treated the same.
NEXT_ROUTE_STATUSES = frozenset({403}) | frozenset(range(500, 600))


@dataclass(slots=True)
class IngressRoute:
    name: str
    address: Address
    failures: int = 0  # in a row
    down_since: float | None = None
    next_probe: float = 0.0
    calls: int = 0
    answered: int = 0


@dataclass(slots=True)
class RouteList:
    """Sans-I/O state of a carrier's ingress routes, in preference order. A route is marked
    down after ``down_after`` failures in a row and re-probed with OPTIONS every
    ``probe_every`` seconds while down; a 200 to the probe brings it back. Calls try the
    routes that are up first, in order, then (never a dead end) those that are down."""

    routes: list[IngressRoute]
    down_after: int = 3
    probe_every: float = 1.0
    log: list[tuple[float, str, str]] = field(default_factory=list)  # (time, route, what)

    def order(self) -> list[IngressRoute]:
        return [r for r in self.routes if r.down_since is None] + [r for r in self.routes if r.down_since is not None]

    def result(self, route: IngressRoute, ok: bool, now: float) -> None:
        route.calls += 1
        if ok:
            route.answered += 1
            route.failures = 0
            if route.down_since is not None:
                route.down_since = None
                self.log.append((now, route.name, "up (a call went through)"))
            return
        route.failures += 1
        if route.down_since is None and route.failures >= self.down_after:
            route.down_since, route.next_probe = now, now + self.probe_every
            self.log.append((now, route.name, f"down after {route.failures} failures in a row"))

    def lost(self, route: IngressRoute, now: float) -> None:
        """``route``'s ingress died with a call in its hands (it answered provisionally, then
        no OPTIONS ping): down at once, whatever its count, and re-probed as any down route."""
        route.calls += 1
        route.failures += 1
        if route.down_since is None:
            route.down_since, route.next_probe = now, now + self.probe_every
            self.log.append((now, route.name, "down (stopped answering OPTIONS with a call ringing through it)"))

    def probes_due(self, now: float) -> list[IngressRoute]:
        due = [r for r in self.routes if r.down_since is not None and r.next_probe <= now]
        for r in due:
            r.next_probe = now + self.probe_every
        return due

    def probe_result(self, route: IngressRoute, status: int | None, now: float) -> None:
        if status == 200 and route.down_since is not None:
            route.down_since, route.failures = None, 0
            self.log.append((now, route.name, "up (OPTIONS answered 200)"))


class RoutedCarrier:
    """A ``Carrier`` that places each call over a ``RouteList``: on a 403, a 5xx or
    silence from one ingress it tries the next (RFC 3263 4.3: the next server of the list),
    and keeps the list's up/down marks, re-probing down routes with OPTIONS. An ingress that
    dies after answering provisionally (its OPTIONS pings unanswered, ``Carrier._watch``) is
    marked down at once and the call placed again on the next route, counted in
    ``stats.replaced_after_provisional`` (on the last route it waits on, as ``Carrier``
    does). Each route's attempt is a call leg of its own (its own Call-ID), as an SBC's
    route advance is. Note that an
    OPTIONS 200 only proves the ingress answers pings: a firewall passing OPTIONS but
    refusing INVITEs brings the route back up until the next calls fail again."""

    def __init__(self, carrier: Carrier, routes: RouteList, *, provisional_timeout: float = 1.0) -> None:
        self.carrier = carrier
        self.routes = routes
        self.provisional_timeout = provisional_timeout
        self._prober: asyncio.Task[None] | None = None

    async def call(self, plan: CallPlan) -> list[CallResult]:
        """The result of each route tried, in order (the last is the call's outcome)."""
        loop = asyncio.get_running_loop()
        tried: list[CallResult] = []
        order = self.routes.order()
        for n, route in enumerate(order):
            last = n + 1 == len(order)
            result = await self.carrier.call(plan, ingress=route.address, provisional_timeout=self.provisional_timeout,
                                             give_up_when_lost=not last)  # fmt: skip
            result.route = route.name
            tried.append(result)
            if result.outcome is Outcome.NO_ANSWER and result.reason == TARGET_LOST:
                self.routes.lost(route, loop.time())
                self.carrier.stats.replaced_after_provisional += 1
                continue
            moved_on = (result.outcome is Outcome.NO_ANSWER and result.reason == "nothing heard from the ingress") or (
                result.outcome is Outcome.FAILED and result.status in NEXT_ROUTE_STATUSES) or result.outcome is Outcome.ERROR
            self.routes.result(route, not moved_on, loop.time())
            if not moved_on:
                break
        return tried

    async def start(self) -> None:
        self._prober = asyncio.create_task(self._probe_loop(), name="carrier-route-probes")

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for route in self.routes.probes_due(loop.time()):
                status = await self.carrier.options(route.address, timeout=min(1.0, self.routes.probe_every))
                self.routes.probe_result(route, status, loop.time())
            await asyncio.sleep(self.routes.probe_every / 4)
