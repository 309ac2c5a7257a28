"""i3 logging of a call's in-dialog requests on any node of a cluster (issue 8,
NENA-STA-010.3 section 4.12).

Node A Record-Routes a call with the cluster's name and the call's i3 identifiers as URI
parameters (RFC 3261 section 19.1.1); node B, which never saw the call, logs the BYE that
comes to it after A died (its signalling, the response, one CallEnd) under A's i3 Call ID
and Incident ID. Two in-process EmergencyCores on 127.0.0.1 over real UDP (the setup of
test_cluster_sip), each with a list-sink CallLogger (test_esrp_logevents' Recorder); every
wait bounded; no timing asserted."""

from __future__ import annotations

import asyncio
import logging

import test_esrp_sip
from test_cluster_sip import CLUSTER, WAIT, Cluster, run
from test_esrp_logevents import AGENCY, ELEMENT, Recorder, settle
from test_esrp_sip import EmergencyCore

from firebox.bcf.core import Bcf
from firebox.esrp.logevents import CallLogger, route_ids, route_params
from firebox.logging.events import (
    CallEndLogEvent,
    CallSignalingMessageLogEvent,
    CallStartLogEvent,
    Direction,
    LogEvent,
)
from firebox.sim.carrier import Outcome
from firebox.sip import parse_message
from firebox.sip.address import parse_name_addr
from firebox.sip.headers import split_list

# the demo-state fixtures of the SIP test kit
demo = test_esrp_sip.demo
no_event_loop_errors = test_esrp_sip.no_event_loop_errors

CALL_ID = "urn:emergency:uid:callid:a1b2c3d4e5f60718293a4b5c6d7e8f90:bcf.demo.firebox.test"
INCIDENT_ID = "urn:emergency:uid:incidentid:0f1e2d3c4b5a69788796a5b4c3d2e1f0:bcf.demo.firebox.test"


def log_every_node(c: Cluster) -> list[Recorder]:
    """A CallLogger (list sink) on each node, as ``EmergencyCore(call_log=...)`` gives."""
    recorders = []
    for core in c.cores:
        recorder = Recorder()
        core.call_log = CallLogger(recorder, element_id=ELEMENT, agency_id=AGENCY)
        core.call_log.attach(core.router)
        recorders.append(recorder)
    return recorders


def only(events: list[LogEvent], kind: type[LogEvent]) -> list[LogEvent]:
    return [e for e in events if isinstance(e, kind)]


def signaling(events: list[LogEvent], method: str, direction: Direction) -> list[LogEvent]:
    """The CallSignalingMessageLogEvents of requests ``method`` in ``direction``."""
    return [
        e for e in only(events, CallSignalingMessageLogEvent)
        if e.direction is direction and e.text.startswith(f"{method} ")
    ]  # fmt: skip


async def call_confirmed(c: Cluster) -> tuple[asyncio.Future, str, CallStartLogEvent, list[Recorder]]:
    """A call set up through node A: (the carrier's call, its SIP Call-ID, A's CallStart,
    the recorders); the PSAP's route set names the cluster with the call's identifiers."""
    assert c.carrier is not None and c.psap is not None
    recorders = log_every_node(c)
    call = asyncio.ensure_future(c.carrier.call(c.plan))
    await c.confirmed()
    (psap_call,) = c.psap.core.calls.values()
    sip_call_id = psap_call.dialog.call_id
    (start,) = only(recorders[0].of_call(sip_call_id), CallStartLogEvent)
    assert isinstance(start, CallStartLogEvent)
    (route,) = psap_call.dialog.route_set
    from_tag = parse_name_addr(start.from_ or "").tag
    assert route == f"<sip:{CLUSTER}{route_params(start.call_id, start.incident_id, from_tag)};lr>"
    ids = route_ids(route)
    assert (ids.call_id, ids.incident_id, ids.from_tag) == (start.call_id, start.incident_id, from_tag)
    assert c.cores[0].stats["calls_in"] == 1 and c.cores[1].stats["calls_in"] == 0
    return call, sip_call_id, start, recorders


def assert_b_logged_the_end(events: list[LogEvent], start: CallStartLogEvent, bye_from_tag: str | None) -> None:
    assert events, "node B logged nothing of the call"
    assert {(e.call_id, e.incident_id) for e in events} == {(start.call_id, start.incident_id)}
    assert not only(events, CallStartLogEvent)  # the call started on A, logged there
    (end,) = only(events, CallEndLogEvent)
    assert isinstance(end, CallEndLogEvent)
    assert parse_name_addr(end.from_ or "").tag == parse_name_addr(start.from_ or "").tag  # the caller
    assert parse_name_addr(end.from_ or "").uri == parse_name_addr(start.from_ or "").uri
    assert parse_name_addr(end.to or "").uri == parse_name_addr(start.to or "").uri
    (bye_in,) = signaling(events, "BYE", Direction.INCOMING)
    assert f";tag={bye_from_tag}" in bye_in.text.split("\r\nFrom:", 1)[1].split("\r\n", 1)[0]
    assert signaling(events, "BYE", Direction.OUTGOING)  # forwarded on
    responses = [e for e in only(events, CallSignalingMessageLogEvent) if e.text.startswith("SIP/2.0 200")]
    assert {e.direction for e in responses} == {Direction.INCOMING, Direction.OUTGOING}


async def test_node_b_logs_the_psaps_bye_under_the_ids_node_a_gave_the_call(demo):
    async def body(c: Cluster) -> None:
        assert c.carrier is not None and c.psap is not None
        call, sip_call_id, start, (rec_a, rec_b) = await call_confirmed(c)
        (psap_call,) = c.psap.core.calls.values()
        psap_tag = psap_call.dialog.local_tag
        await c.kill(0)
        c.psap.hang_up_all()
        result = await asyncio.wait_for(call, WAIT)
        assert result.outcome is Outcome.ANSWERED and result.ended_by == "psap"
        await settle(c.cores[1], lambda: any(isinstance(e, CallEndLogEvent) for e in rec_b.of_call(sip_call_id)))
        async with asyncio.timeout(WAIT):  # and the 200 to the BYE, back through B
            while len(signaling_responses(rec_b.of_call(sip_call_id))) < 2:
                await asyncio.sleep(0.02)
        assert not rec_b.problems, rec_b.problems
        assert_b_logged_the_end(rec_b.of_call(sip_call_id), start, psap_tag)
        assert not only(rec_a.of_call(sip_call_id), CallEndLogEvent)  # A was gone

    await run(demo, body)


def signaling_responses(events: list[LogEvent]) -> list[LogEvent]:
    return [e for e in only(events, CallSignalingMessageLogEvent) if e.text.startswith("SIP/2.0 200")]


async def test_node_b_logs_the_carriers_bye_under_the_ids_node_a_gave_the_call(demo):
    async def body(c: Cluster) -> None:
        assert c.carrier is not None
        call, sip_call_id, start, (rec_a, rec_b) = await call_confirmed(c)
        await c.kill(0)
        c.carrier.hang_up_all()
        result = await asyncio.wait_for(call, WAIT)
        assert result.outcome is Outcome.ANSWERED and result.ended_by == "carrier"
        await settle(c.cores[1], lambda: len(signaling_responses(rec_b.of_call(sip_call_id))) >= 2)
        assert not rec_b.problems, rec_b.problems
        assert_b_logged_the_end(rec_b.of_call(sip_call_id), start, parse_name_addr(start.from_ or "").tag)

    await run(demo, body)


async def test_with_node_a_alive_its_bye_is_logged_there_once_and_b_sees_nothing(demo):
    async def body(c: Cluster) -> None:
        assert c.psap is not None
        call, sip_call_id, start, (rec_a, rec_b) = await call_confirmed(c)
        c.psap.hang_up_all()
        result = await asyncio.wait_for(call, WAIT)
        assert result.outcome is Outcome.ANSWERED and result.ended_by == "psap"
        await settle(c.cores[0], lambda: len(signaling_responses(rec_a.of_call(sip_call_id))) >= 2)
        events = rec_a.of_call(sip_call_id)
        assert not rec_a.problems, rec_a.problems
        assert len(only(events, CallStartLogEvent)) == 1 and len(only(events, CallEndLogEvent)) == 1
        assert {e.call_id for e in events} == {start.call_id}
        assert len(signaling(events, "BYE", Direction.INCOMING)) == 1
        assert not rec_b.of_call(sip_call_id)
        assert c.cores[1].stats["in_dialog_forwarded"] == 0

    await run(demo, body)


# -- the Record-Route parameters and the logger, without the network --------------------


def test_route_params_round_trip_and_escape_what_a_parameter_may_not_hold():
    odd_call = "urn:emergency:uid:callid:a;b,c>d%e=f?g:bcf.example.net"
    params = route_params(odd_call, INCIDENT_ID, "t;1")
    assert params.startswith(";i3c=a%3Bb%2Cc%3Ed%25e%3Df%3Fg:bcf.example.net;i3i=0f1e2d3c")
    rr = f"<sip:{CLUSTER}{params};lr>"
    assert split_list(f"{rr}, <sip:other.example.net;lr>")[0] == rr  # one list element
    ids = route_ids(rr)
    assert (ids.call_id, ids.incident_id, ids.from_tag) == (odd_call, INCIDENT_ID, "t;1")
    # a URN of another form is carried whole; an entry without parameters names nothing
    assert route_ids(f"sip:{CLUSTER}{route_params('urn:x:1', None)};lr").call_id == "urn:x:1"
    assert route_ids(f"<sip:{CLUSTER};lr>") == route_ids("not a uri")
    assert route_ids(f"<sip:{CLUSTER};lr>").call_id is None


def test_the_element_still_knows_its_route_entry_with_the_parameters():
    core = EmergencyCore(
        Bcf("bcf.test"), None, host="127.0.0.1", port=5070, resolve=lambda uri: None,  # type: ignore[arg-type]
        cluster_name=CLUSTER, element_id="esrp.test",
    )  # fmt: skip
    ours = f"<sip:{CLUSTER}{route_params(CALL_ID, INCIDENT_ID, 'abc')};lr>"
    assert core._is_ours(ours)
    bye = parse_message(bye_text(ours, "<sip:psap@127.0.0.1:5999;lr>").encode())
    assert core._own_routes(bye) == (ours,)
    new_invite = parse_message(bye_text(ours, method="INVITE", to_tag=None).encode())
    assert core._own_routes(new_invite) == ()  # only in-dialog requests


def bye_text(*routes: str, method: str = "BYE", to_tag: str | None = "caller", call_id: str = "set-up-elsewhere") -> str:
    """A request from the callee (``psap``) to the caller, through ``routes``."""
    route_lines = "".join(f"Route: {r}\r\n" for r in routes)
    to = "<tel:+16035550142>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:caller@127.0.0.1:5998 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{method.lower()}-1\r\n{route_lines}"
        f"From: <sip:psap@psap.example.net>;tag=callee\r\nTo: {to}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 2 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )


async def test_a_bye_of_a_call_set_up_elsewhere_ends_it_once_under_the_routes_ids():
    recorder = Recorder()
    logger = CallLogger(recorder, element_id=ELEMENT, agency_id=AGENCY)
    route = f"<sip:{CLUSTER}{route_params(CALL_ID, INCIDENT_ID, 'caller')};lr>"
    bye = parse_message(bye_text(route).encode())
    logger.received(bye, ("127.0.0.1", 5999), (route,))
    logger.received(bye, ("127.0.0.1", 5999), (route,))  # a retransmission
    await logger.flush(WAIT)
    kinds = [type(e) for e in recorder.events]
    assert kinds == [CallSignalingMessageLogEvent, CallEndLogEvent, CallSignalingMessageLogEvent]
    assert {(e.call_id, e.incident_id) for e in recorder.events} == {(CALL_ID, INCIDENT_ID)}
    end = recorder.events[1]
    assert isinstance(end, CallEndLogEvent)  # the callee's BYE: the call's From is the caller
    assert end.from_ == "<tel:+16035550142>;tag=caller" and end.to == "<sip:psap@psap.example.net>;tag=callee"
    assert not recorder.problems, recorder.problems
    await logger.aclose()


async def test_without_ids_in_the_route_the_bye_is_logged_under_new_ones_and_said(caplog):
    recorder = Recorder()
    logger = CallLogger(recorder, element_id=ELEMENT, agency_id=AGENCY)
    route = f"<sip:{CLUSTER};lr>"
    with caplog.at_level(logging.WARNING, logger="firebox.esrp.logevents"):
        logger.received(parse_message(bye_text(route).encode()), ("127.0.0.1", 5999), (route,))
        # an in-dialog NOTIFY through our entry without identifiers is no call of ours
        notify = bye_text(route, method="NOTIFY", call_id="a-subscription")
        logger.received(parse_message(notify.encode()), ("127.0.0.1", 5999), (route,))
        # and a request that did not come through our Route entry is not adopted
        logger.received(parse_message(bye_text(call_id="other").encode()), None, ())
    await logger.flush(WAIT)
    assert [type(e) for e in recorder.events] == [CallSignalingMessageLogEvent, CallEndLogEvent]
    assert {e.call_id_sip for e in recorder.events} == {"set-up-elsewhere"}
    (call_id,) = {e.call_id for e in recorder.events}
    assert call_id is not None and call_id.startswith("urn:emergency:uid:callid:") and call_id != CALL_ID
    assert call_id.endswith(f":{ELEMENT}")
    assert any("names no i3 identifiers" in r.getMessage() for r in caplog.records)
    assert not recorder.problems, recorder.problems
    await logger.aclose()
