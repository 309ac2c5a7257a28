"""i3 log events of the BCF + ESRP element (firebox.esrp.logevents wired into EmergencyCore).

Calls go over UDP on 127.0.0.1 through a real EmergencyCore to PSAP endpoints, as in
test_esrp_sip. ``Recorder`` is the event sink of a ``CallLogger``: it validates every event
it is handed (NENA-STA-010.3 section 4.12.3 members) and keeps them in order; the delivery of
those events (JWS, spool, POST) is ``LogSender``'s and is tested with it
(test_log_sender, and the last test here with a real sender to a real receiver).
"""

from __future__ import annotations

import asyncio

from firebox.esrp.logevents import CallLogger
from firebox.logging.events import (
    CallEndLogEvent,
    CallSignalingMessageLogEvent,
    CallStartLogEvent,
    Direction,
    LogEvent,
    LostQueryLogEvent,
    LostResponseLogEvent,
    RouteLogEvent,
    validate,
)
from firebox.bcf.core import Bcf
from firebox.sip import parse_message
from test_esrp_sip import (  # the SIP test kit of the demo-state tests
    GW,
    WAIT,
    EmergencyCore,
    Net,
    cleanup,  # noqa: F401 -- fixture
    core_address,
    demo,  # noqa: F401 -- fixture
    endpoint,
    invite,
    make_router,
    no_event_loop_errors,  # noqa: F401 -- fixture
    presence,
    town_point,
)

ELEMENT = "esrp.demo.firebox.test"
AGENCY = "demo.firebox.test"


class Recorder:
    """A CallLogger sink that checks and keeps every event."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []
        self.problems: list[tuple[str, list]] = []

    async def send(self, event: LogEvent) -> str:
        problems = validate(event.to_json())
        if problems:
            self.problems.append((event.log_event_type, problems))
        self.events.append(event)
        return f"urn:emergency:uid:logid:{len(self.events)}:{ELEMENT}"

    async def drain(self, timeout: float | None = None) -> None:
        return None

    def of_call(self, sip_call_id: str) -> list[LogEvent]:
        return [e for e in self.events if e.call_id_sip == sip_call_id]


async def logged_core(node, net: Net, default, recorder: Recorder) -> EmergencyCore:
    core = EmergencyCore(
        Bcf("bcf.demo.firebox.test", sources={"127.0.0.0/8": "carrier-a"}),
        make_router(node, default),
        host="127.0.0.1",
        port=0,
        transports=("udp",),
        resolve=net.resolve,
        call_log=CallLogger(recorder, element_id=ELEMENT, agency_id=AGENCY),
    )
    await core.start()
    return core


async def settle(core: EmergencyCore, predicate) -> None:
    """Flush the call logger until ``predicate`` holds (bounded)."""
    assert core.call_log is not None
    for _ in range(int(WAIT / 0.02)):
        await core.call_log.flush(WAIT)
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the expected log events did not come")


def call_info(request, purpose: str) -> str:
    for value in request.headers.get_all("Call-Info"):
        if f"purpose={purpose}" in value:
            return value[value.index("<") + 1 : value.index(">")]
    raise AssertionError(f"no Call-Info {purpose}")


async def test_an_answered_call_logs_its_whole_story_under_the_bcfs_identifiers(demo, cleanup):
    state, node = demo
    point, psap_uri = town_point(state, 12)
    psap, down, caller = await endpoint("answer"), await endpoint("503"), await endpoint("answer")
    cleanup += [psap, down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    net.ports[psap_uri] = psap.port
    recorder = Recorder()
    core = await logged_core(node, net, town_point(state, 3)[0], recorder)
    cleanup.append(core)
    assert caller.server is not None and psap.server is not None
    sent = invite(caller.port, "logged-1", presence(point), "cid:loc@carrier.example")
    caller.server.send(sent, core_address(core))
    forwarded = await psap.wait_for("INVITE")
    await caller.wait_status(lambda r: r.status == 200)
    # the PSAP hangs up: a BYE through the element (Record-Route) ends the call
    bye_text = (
        f"BYE sip:+16035550100@127.0.0.1:{caller.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{psap.port};branch=z9hG4bK-psap-bye-1\r\n"
        f"Route: <sip:127.0.0.1:{core.port};lr>\r\n"
        f"From: {forwarded.headers.get('To')};tag=answer-tag\r\nTo: {forwarded.headers.get('From')}\r\n"
        f"Call-ID: logged-1\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    psap.server.send(parse_message(bye_text.encode()), core_address(core))
    await caller.wait_for("BYE")
    await settle(core, lambda: any(isinstance(e, CallEndLogEvent) for e in recorder.events))

    assert not recorder.problems, recorder.problems
    events = recorder.of_call("logged-1")
    kinds = [type(e) for e in events]
    assert kinds[0] is CallStartLogEvent
    # the end comes with the BYE (its forward and 200 are signalling of the ended call)
    assert [k for k in kinds if k is not CallSignalingMessageLogEvent][-1] is CallEndLogEvent
    assert kinds.count(CallStartLogEvent) == 1 and kinds.count(CallEndLogEvent) == 1
    assert LostQueryLogEvent in kinds and LostResponseLogEvent in kinds
    assert kinds.index(LostQueryLogEvent) < kinds.index(LostResponseLogEvent) < kinds.index(RouteLogEvent)
    # every event carries the identifiers the BCF put in the forwarded INVITE
    call_id = call_info(forwarded, "emergency-CallId")
    incident_id = call_info(forwarded, "emergency-IncidentId")
    assert {e.call_id for e in events} == {call_id}
    assert {e.incident_id for e in events} == {incident_id}
    assert {e.element_id for e in events} == {ELEMENT} and {e.agency_id for e in events} == {AGENCY}
    (route,) = [e for e in events if isinstance(e, RouteLogEvent)]
    assert route.recipient_uri == psap_uri
    # the signalling: the INVITE as received and as forwarded, both answers, the BYE both ways
    signaling = [e for e in events if isinstance(e, CallSignalingMessageLogEvent)]
    first_lines = [(e.direction, e.text.split("\r\n", 1)[0]) for e in signaling]
    assert (Direction.INCOMING, "INVITE urn:service:sos SIP/2.0") in first_lines
    assert first_lines.count((Direction.OUTGOING, "INVITE urn:service:sos SIP/2.0")) == 1
    assert (Direction.OUTGOING, "SIP/2.0 100 Trying") in first_lines
    assert (Direction.OUTGOING, "SIP/2.0 200 OK") in first_lines
    assert (Direction.INCOMING, f"BYE sip:+16035550100@127.0.0.1:{caller.port} SIP/2.0") in first_lines
    incoming_invite = next(e for e in signaling if e.direction is Direction.INCOMING and e.text.startswith("INVITE"))
    assert incoming_invite.ip_address_port == f"127.0.0.1:{caller.port}"
    assert incoming_invite.text.encode().endswith(sent.body)  # the message as it came
    (end,) = [e for e in events if isinstance(e, CallEndLogEvent)]
    assert end.extension == {"cause": "BYE"}


async def test_a_failover_is_a_route_event_with_its_cause(demo, cleanup):
    state, node = demo
    point, psap_uri = town_point(state, 0)
    alternate_uri = state.psap(state.psap(next(p.id for p in state.psaps if p.uri == psap_uri)).alternates[0]).uri
    first, second, caller = await endpoint("503"), await endpoint("answer"), await endpoint("answer")
    cleanup += [first, second, caller]
    net = Net(default_port=first.port, gateway_port=first.port)
    net.ports[psap_uri] = first.port
    net.ports[alternate_uri] = second.port
    recorder = Recorder()
    core = await logged_core(node, net, town_point(state, 3)[0], recorder)
    cleanup.append(core)
    assert caller.server is not None
    caller.server.send(invite(caller.port, "logged-2", presence(point), "cid:loc@carrier.example"), core_address(core))
    await caller.wait_status(lambda r: r.status == 200)
    await settle(core, lambda: len([e for e in recorder.events if isinstance(e, RouteLogEvent)]) == 2)
    assert not recorder.problems, recorder.problems
    routes = [e for e in recorder.of_call("logged-2") if isinstance(e, RouteLogEvent)]
    assert [r.recipient_uri for r in routes] == [psap_uri, alternate_uri]
    assert routes[1].rule_id == "failover" and "503" in (routes[1].cause or "")
    # answered and not hung up yet: no CallEnd
    assert not any(isinstance(e, CallEndLogEvent) for e in recorder.of_call("logged-2"))


async def test_a_call_that_ends_before_answer_gets_its_call_end(demo, cleanup):
    """Every PSAP and the business line answer 503: the caller gets a final failure and
    the log says the call ended, and why."""
    state, node = demo
    point, _ = town_point(state, 8)
    down, caller = await endpoint("503"), await endpoint("answer")
    cleanup += [down, caller]
    net = Net(default_port=down.port, gateway_port=down.port)
    recorder = Recorder()
    core = await logged_core(node, net, town_point(state, 3)[0], recorder)
    cleanup.append(core)
    assert caller.server is not None
    caller.server.send(invite(caller.port, "logged-3", presence(point), "cid:loc@carrier.example"), core_address(core))
    final = await caller.wait_status(lambda r: r.status >= 300)
    await settle(core, lambda: any(isinstance(e, CallEndLogEvent) for e in recorder.events))
    assert not recorder.problems, recorder.problems
    events = recorder.of_call("logged-3")
    (end,) = [e for e in events if isinstance(e, CallEndLogEvent)]
    assert end is [e for e in events if not isinstance(e, CallSignalingMessageLogEvent)][-1]
    assert str(final.status) in end.extension["cause"]
    routes = [e for e in events if isinstance(e, RouteLogEvent)]
    assert routes[-1].recipient_uri.endswith(f"@{GW};user=phone")  # tried down to the business line
