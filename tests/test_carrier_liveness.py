"""The carrier's INVITE in setup through a target that dies (issue 8, the node-loss replay):
after a provisional answer the carrier pings the target with OPTIONS (RFC 3261 section 11);
when it stops answering, the INVITE is CANCELled there (9.1) and placed again to the next
target (RFC 3263 4.3: a new transaction, the same Call-ID, From tag and CSeq), or on the
next ingress route of a ``RoutedCarrier``. A target that keeps ringing and answers its pings
is never abandoned; with nowhere else to go the call ends ``no answer`` as before.

The targets are small UDP user agents on 127.0.0.1 built from firebox's own SIP transport
and messages (``FakeTarget``): each records what it received, answers 100 and 180 at once,
and then either answers 200, keeps ringing, or goes silent (to OPTIONS too). Every wait is
bounded; nothing about timing is asserted."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from test_psap_ua import core as psap_core  # the sans-I/O PSAP kit of the UA's tests
from test_psap_ua import invite as psap_invite
from test_psap_ua import replies

from firebox.psap.ua import CallState, SendRequest, TimerName
from firebox.sim.carrier import (
    TARGET_LOST,
    CallPlan,
    Carrier,
    IngressRoute,
    Outcome,
    RoutedCarrier,
    RouteList,
)
from firebox.sip.headers import Headers
from firebox.sip.message import Message, Request, Response, make_response
from firebox.sip.resolve import SipResolver, StaticRecords
from firebox.sip.transport import start_sip_server

CLUSTER = "core.liveness.test"
PING = 0.2  # the carrier's failover_seconds: its OPTIONS ping interval on a ringing target
WAIT = 10.0  # bound of every single wait (seconds)


class Then(StrEnum):
    """What a target does after its 100 Trying and 180 Ringing."""

    ANSWER = "answer"  # 200 OK after ``ring`` seconds; OPTIONS answered
    RING = "ring"  # never a final answer (CANCEL: 487); OPTIONS answered
    DIE = "die"  # silent from then on: to OPTIONS, CANCEL, everything
    DEAF = "deaf"  # deaf to OPTIONS and CANCEL (an inbound filter), but answers the INVITE 200 after ``ring``


@dataclass
class FakeTarget:
    """A SIP target (a node's BCF, as the carrier sees it) on 127.0.0.1 UDP."""

    then: Then
    ring: float = 0.0
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    received: list[Request] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    server: Any = None
    port: int = 0
    dead: bool = False
    cancelled: set[str] = field(default_factory=set)  # branches
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.server = await start_sip_server(self._handle, "127.0.0.1", 0, transports=("udp",))
        self.port = next(iter(self.server.addresses.values()))[1]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.close()

    @property
    def address(self) -> tuple[str, int, str]:
        return ("127.0.0.1", self.port, "udp")

    def got(self, method: str) -> list[Request]:
        return [r for r in self.received if r.method == method]

    def _handle(self, message: Message, source: Any) -> None:
        if isinstance(message, Response):
            self.responses.append(message)
            return
        self.received.append(message)
        if self.dead or message.method == "ACK":
            return
        if message.method == "OPTIONS":
            if self.then not in (Then.DIE, Then.DEAF):
                self.server.reply(make_response(message, 200), source)
            return
        if message.method == "INVITE":
            if len([r for r in self.got("INVITE") if r.branch == message.branch]) > 1:
                return  # a retransmission after our 180: nothing new to say
            self.server.reply(make_response(message, 100), source)
            contact = [("Contact", f"<sip:psap@127.0.0.1:{self.port}>")]
            self.server.reply(make_response(message, 180, to_tag=self.tag, headers=contact), source)
            if self.then is Then.DIE:
                self.dead = True
            elif self.then in (Then.ANSWER, Then.DEAF):
                self._tasks.append(asyncio.ensure_future(self._answer(message, source)))
            return
        if message.method == "CANCEL" and self.then is not Then.DEAF:
            self.cancelled.add(message.branch or "")
            self.server.reply(make_response(message, 200, to_tag=self.tag), source)
            invite = next(r for r in self.got("INVITE") if r.branch == message.branch)
            self.server.reply(make_response(invite, 487, to_tag=self.tag), source)
            return
        if message.method == "BYE":
            self.server.reply(make_response(message, 200), source)

    async def _answer(self, invite: Request, source: Any) -> None:
        await asyncio.sleep(self.ring)
        if invite.branch in self.cancelled:
            return
        headers = [("Contact", f"<sip:psap@127.0.0.1:{self.port}>"), ("Content-Type", "application/sdp")]
        ok = make_response(invite, 200, to_tag=self.tag, headers=headers, body=b"v=0\r\n")
        for _ in range(4):  # a few 2xx retransmissions (13.3.1.4), until the ACK
            self.server.reply(ok, source)
            await asyncio.sleep(0.3)
            if self.got("ACK"):
                return

    def bye_as_ghost(self, invite: Request, carrier_port: int) -> Request:
        """The BYE of the dialog this target's 2xx would have made (the PSAP ending a call
        nobody ACKed): the carrier's Call-ID and From tag, this target's own tag."""
        headers = Headers()
        headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-ghost-{secrets.token_hex(4)}")
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:psap@127.0.0.1:{self.port}>;tag={self.tag}")
        headers.add("To", invite.headers.get("From") or "")
        headers.add("Call-ID", invite.call_id)
        headers.add("CSeq", "1 BYE")
        headers.add("Content-Length", "0")
        return Request("BYE", f"sip:caller@127.0.0.1:{carrier_port}", headers)


def resolver_for(*targets: FakeTarget) -> SipResolver:
    """The cluster's name resolving to the targets in order (RFC 3263 over a static SRV table)."""
    nodes = [{"id": f"node-{n}", "sip": f"127.0.0.1:{t.port}", "priority": 10 * (n + 1), "weight": 50}
             for n, t in enumerate(targets)]  # fmt: skip
    return SipResolver(StaticRecords.for_cluster(CLUSTER, nodes, transports=("udp",)), transports=("udp",))


async def started(*things: Any) -> None:
    for thing in things:
        await thing.start()


async def closed(*things: Any) -> None:
    for thing in things:
        await thing.close()


PLAN = CallPlan("tel:+16035550142", -71.5, 43.2, hold=0.3)


async def test_a_call_ringing_at_a_target_that_dies_is_placed_again_and_answered_by_the_next() -> None:
    dying, live = FakeTarget(Then.DIE), FakeTarget(Then.ANSWER, ring=0.1)
    await started(dying, live)
    carrier = Carrier(dying.address, resolver=resolver_for(dying, live), ingress_uri=f"sip:{CLUSTER}",
                      failover_seconds=PING, answer_timeout=WAIT, bye_timeout=2.0)  # fmt: skip
    await carrier.start()
    try:
        result = await asyncio.wait_for(carrier.call(PLAN), WAIT * 2)
    finally:
        await closed(carrier, dying, live)
    assert result.outcome is Outcome.ANSWERED, result
    assert result.contact == f"<sip:psap@127.0.0.1:{live.port}>"
    assert carrier.stats.lost_after_provisional == 1
    assert carrier.stats.replaced_after_provisional == 1
    assert carrier.stats.failovers == 0  # the dying target did answer: not a silence failover
    # Pinged until found dead (two in a row unanswered), then CANCELled (best effort).
    assert len(dying.got("OPTIONS")) >= 2
    assert [c.branch for c in dying.got("CANCEL")] == [dying.got("INVITE")[0].branch]
    # Placed again: a new transaction, the same Call-ID, From (tag) and CSeq (RFC 3263 4.3).
    first, again = dying.got("INVITE")[0], live.got("INVITE")[0]
    assert again.call_id == first.call_id == result.call_id
    assert again.from_tag == first.from_tag
    assert again.cseq == first.cseq
    assert again.branch != first.branch
    assert len(live.got("ACK")) >= 1 and len(live.got("BYE")) == 1
    assert result.bye_status == 200


async def test_a_target_that_keeps_ringing_and_answers_its_pings_is_not_abandoned() -> None:
    slow, other = FakeTarget(Then.ANSWER, ring=12 * PING), FakeTarget(Then.ANSWER)
    await started(slow, other)
    carrier = Carrier(slow.address, resolver=resolver_for(slow, other), ingress_uri=f"sip:{CLUSTER}",
                      failover_seconds=PING, answer_timeout=WAIT, bye_timeout=2.0)  # fmt: skip
    await carrier.start()
    try:
        result = await asyncio.wait_for(carrier.call(PLAN), WAIT * 2)
    finally:
        await closed(carrier, slow, other)
    assert result.outcome is Outcome.ANSWERED, result
    assert result.contact == f"<sip:psap@127.0.0.1:{slow.port}>"
    assert len(slow.got("OPTIONS")) >= 3  # pinged all along its ringing, answered each time
    assert carrier.stats.lost_after_provisional == 0 and carrier.stats.replaced_after_provisional == 0
    assert not slow.got("CANCEL") and not other.received


async def test_a_target_that_rings_forever_but_answers_pings_ends_no_answer_there() -> None:
    ringing, other = FakeTarget(Then.RING), FakeTarget(Then.ANSWER)
    await started(ringing, other)
    carrier = Carrier(ringing.address, resolver=resolver_for(ringing, other), ingress_uri=f"sip:{CLUSTER}",
                      failover_seconds=PING, answer_timeout=8 * PING, bye_timeout=2.0)  # fmt: skip
    await carrier.start()
    try:
        result = await asyncio.wait_for(carrier.call(PLAN), WAIT)
    finally:
        await closed(carrier, ringing, other)
    assert result.outcome is Outcome.NO_ANSWER and result.reason is None, result
    assert carrier.stats.replaced_after_provisional == 0
    assert len(ringing.got("OPTIONS")) >= 2 and len(ringing.got("CANCEL")) == 1  # the answer timeout's CANCEL
    assert not other.received


async def test_with_no_next_target_a_call_at_a_dead_target_ends_no_answer_as_before() -> None:
    dying = FakeTarget(Then.DIE)
    await started(dying)
    carrier = Carrier(dying.address, failover_seconds=PING, answer_timeout=8 * PING, bye_timeout=1.0)
    await carrier.start()
    try:
        result = await asyncio.wait_for(carrier.call(PLAN), WAIT)
    finally:
        await closed(carrier, dying)
    assert result.outcome is Outcome.NO_ANSWER and result.reason is None, result
    assert carrier.stats.no_answer == 1
    assert carrier.stats.lost_after_provisional == 1 and carrier.stats.replaced_after_provisional == 0
    assert len(dying.got("INVITE")) == 1  # the 180 came: never retransmitted, never placed elsewhere
    assert len(dying.got("CANCEL")) == 1  # the answer timeout's CANCEL, as before


async def test_the_route_list_marks_a_dead_ingress_down_and_places_the_call_on_the_next_route() -> None:
    dying, live = FakeTarget(Then.DIE), FakeTarget(Then.ANSWER, ring=0.1)
    await started(dying, live)
    carrier = Carrier(dying.address, failover_seconds=PING, answer_timeout=WAIT, bye_timeout=2.0)
    await carrier.start()
    routes = RouteList([IngressRoute("edge-1", dying.address), IngressRoute("edge-2", live.address)])
    routed = RoutedCarrier(carrier, routes, provisional_timeout=1.0)
    try:
        tried = await asyncio.wait_for(routed.call(PLAN), WAIT * 2)
    finally:
        await closed(carrier, dying, live)
    assert [r.route for r in tried] == ["edge-1", "edge-2"]
    assert tried[0].outcome is Outcome.NO_ANSWER and tried[0].reason == TARGET_LOST
    assert tried[-1].outcome is Outcome.ANSWERED, tried[-1]
    assert carrier.stats.replaced_after_provisional == 1
    assert routes.routes[0].down_since is not None  # down at once, not after three failures
    assert routes.routes[1].down_since is None
    assert [c.branch for c in dying.got("CANCEL")] == [dying.got("INVITE")[0].branch]
    assert routes.order()[0].name == "edge-2"  # the next call goes to the live route first


async def test_the_route_list_last_route_waits_on_as_before() -> None:
    dying = FakeTarget(Then.DIE)
    await started(dying)
    carrier = Carrier(dying.address, failover_seconds=PING, answer_timeout=8 * PING, bye_timeout=1.0)
    await carrier.start()
    routed = RoutedCarrier(carrier, RouteList([IngressRoute("edge-1", dying.address)]), provisional_timeout=1.0)
    try:
        tried = await asyncio.wait_for(routed.call(PLAN), WAIT)
    finally:
        await closed(carrier, dying)
    assert len(tried) == 1 and tried[0].outcome is Outcome.NO_ANSWER and tried[0].reason is None, tried
    assert carrier.stats.replaced_after_provisional == 0


async def test_a_late_2xx_from_a_target_given_up_on_is_acked_and_released() -> None:
    # Its OPTIONS are filtered, so it is given up on; but it answers the first INVITE after all.
    deaf, live = FakeTarget(Then.DEAF, ring=10 * PING), FakeTarget(Then.ANSWER, ring=15 * PING)
    await started(deaf, live)
    carrier = Carrier(deaf.address, resolver=resolver_for(deaf, live), ingress_uri=f"sip:{CLUSTER}",
                      failover_seconds=PING, answer_timeout=WAIT, bye_timeout=2.0)  # fmt: skip
    await carrier.start()
    try:
        result = await asyncio.wait_for(carrier.call(PLAN), WAIT * 2)
        async with asyncio.timeout(WAIT):
            while not deaf.got("BYE"):
                await asyncio.sleep(0.02)
    finally:
        await closed(carrier, deaf, live)
    assert result.outcome is Outcome.ANSWERED and result.contact == f"<sip:psap@127.0.0.1:{live.port}>", result
    assert carrier.stats.replaced_after_provisional == 1 and carrier.stats.late_answers_released == 1
    ack, bye = deaf.got("ACK")[0], deaf.got("BYE")[0]
    assert ack.to_tag == deaf.tag and ack.cseq == (1, "ACK")  # the ACK of its 2xx, in its dialog
    assert bye.to_tag == deaf.tag and bye.call_id == result.call_id
    assert live.got("BYE") and result.bye_status == 200


async def test_a_bye_of_the_abandoned_attempts_dialog_does_not_end_the_live_call() -> None:
    dying, live = FakeTarget(Then.DIE), FakeTarget(Then.ANSWER, ring=0.1)
    await started(dying, live)
    carrier = Carrier(dying.address, resolver=resolver_for(dying, live), ingress_uri=f"sip:{CLUSTER}",
                      failover_seconds=PING, answer_timeout=WAIT, bye_timeout=2.0)  # fmt: skip
    await carrier.start()
    plan = CallPlan("tel:+16035550142", -71.5, 43.2, hold=WAIT)
    call = asyncio.ensure_future(carrier.call(plan))
    try:
        async with asyncio.timeout(WAIT):
            while not live.got("ACK"):
                await asyncio.sleep(0.02)
        # The PSAP behind the dead target ends the dialog its unACKed 2xx made (same Call-ID,
        # same From tag as the live call's, its own tag): refused, the live call goes on.
        dying.dead = False
        dying.server.send(dying.bye_as_ghost(dying.got("INVITE")[0], carrier.port), ("127.0.0.1", carrier.port, "udp"))
        async with asyncio.timeout(WAIT):
            while not any(r.cseq[1] == "BYE" for r in dying.responses):
                await asyncio.sleep(0.02)
        assert [r.status for r in dying.responses if r.cseq[1] == "BYE"] == [481]
        assert not call.done()
        carrier.hang_up_all()
        result = await asyncio.wait_for(call, WAIT)
    finally:
        call.cancel()
        await closed(carrier, dying, live)
    assert result.outcome is Outcome.ANSWERED and result.ended_by == "carrier" and result.bye_status == 200


def test_the_psap_ends_the_ghost_call_the_abandoned_attempt_left() -> None:
    """The PSAP side (``firebox.psap.ua``): the first attempt's 200 went to the node that
    died, so it is never ACKed; after 64*T1 the PSAP hangs up with a BYE (13.3.1.4), which
    the carrier refuses 481 (not its dialog: the test above), and the call is ended."""
    psap = psap_core()
    ok = replies(psap.receive(psap_invite(), "src", 0.0))[-1]
    assert ok.status == 200
    (call,) = psap.calls.values()
    actions = psap.timer(call.key, TimerName.NO_ACK, 32.0)
    (bye,) = [a.request for a in actions if isinstance(a, SendRequest)]
    assert bye.method == "BYE" and call.state is CallState.HANGING_UP
    psap.receive(make_response(bye, 481), "src", 32.1)
    assert call.state is CallState.ENDED
    assert psap.stats["no_ack"] == 1 and psap.stats["bye_refused"] == 1
    assert psap.counts["psap-01"].ended_by_psap == 1
