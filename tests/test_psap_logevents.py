"""The PSAP's i3 log events (firebox.psap.logevents, NENA-STA-010.3 section 4.12.3): a call's
life at the call handling element, given as the element's own CallHandlingEvents and SIP
messages, becomes log events that a real Logging Service (served on 127.0.0.1 over SQLite,
delivered by a LogSender through its spool) accepts, and ``firebox logs call`` tells the
PSAP's part of the story. Also the schema of the event types the PSAP adds."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import uvicorn
from typer.testing import CliRunner

from firebox import jws
from firebox.cli import app as cli
from firebox.logging.events import (
    AgentStateChangeLogEvent,
    CallStateChangeLogEvent,
    CallTransferLogEvent,
    LogEvent,
    from_json,
    validate,
)
from firebox.logging.sender import LogSender
from firebox.logging.service import create_app as create_logging_app
from firebox.logging.store import open_store
from firebox.psap.api import (
    CallbackEntry,
    CallHandlingEvent,
    CallStatus,
    CallView,
    EventKind,
    Medium,
    PositionStatus,
    PositionView,
    TextMessage,
)
from firebox.psap.logevents import PsapLogger
from firebox.sip import parse_message

ELEMENT = "chfe.psap.example.net"
AGENCY = "psap.example.net"
CALL = "urn:emergency:uid:callid:c0ffee01:bcf.example.net"
INCIDENT = "urn:emergency:uid:incidentid:feed02:bcf.example.net"
T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)

INVITE = (
    "INVITE sip:queue@psap.example.net SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-psaplog-1\r\n"
    "Max-Forwards: 68\r\nTo: <sip:queue@psap.example.net>\r\n"
    "From: <sip:+16175551212@carrier.example>;tag=c1\r\nCall-ID: sip-psap-1@esrp\r\nCSeq: 1 INVITE\r\n"
    f"Call-Info: <{CALL}>;purpose=emergency-CallId\r\nContent-Length: 0\r\n\r\n"
)
OK = (
    "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-psaplog-1\r\n"
    "To: <sip:queue@psap.example.net>;tag=p1\r\nFrom: <sip:+16175551212@carrier.example>;tag=c1\r\n"
    "Call-ID: sip-psap-1@esrp\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


class Recorder:
    """A sink that checks (NENA-STA-010.3 section 4.12.3 members) and keeps every event."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []
        self.problems: list[tuple[str, list]] = []

    async def send(self, event: LogEvent) -> str:
        if problems := validate(event.to_json()):
            self.problems.append((event.log_event_type, problems))
        self.events.append(event)
        return f"urn:emergency:uid:logid:{len(self.events)}:{ELEMENT}"

    async def drain(self, timeout: float | None = None) -> None:
        return None


def view(status: CallStatus = CallStatus.RINGING, **kw) -> CallView:
    base = CallView(
        call_id=CALL, sip_call_id="sip-psap-1@esrp", incident_id=INCIDENT, psap_id="psap-a",
        medium=Medium.VOICE, status=status, callback="+16175551212",
        caller_uri="sip:+16175551212@carrier.example", location=None, additional_data=(), offered_at=T0,
    )  # fmt: skip
    return replace(base, **kw)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def position(status: PositionStatus, user: str | None, s: float) -> CallHandlingEvent:
    return CallHandlingEvent(EventKind.POSITION, "psap-a", at(s),
                             position=PositionView("pos-1", "psap-a", status, user, at(s)))  # fmt: skip


def call_event(s: float, v: CallView, kind: EventKind = EventKind.CALL) -> CallHandlingEvent:
    return CallHandlingEvent(kind, "psap-a", at(s), call=v)


def answered_and_transferred() -> list[CallHandlingEvent]:
    """A call's life at the PSAP, as the call handling element announces it."""
    hello = TextMessage("in", "is anyone there", at(6))
    reply = TextMessage("out", "911, what is your emergency?", at(7), by="alice")
    connected = view(CallStatus.CONNECTED, answered_at=at(5), position="pos-1")
    return [
        position(PositionStatus.AVAILABLE, "alice", 0),
        call_event(1, view()),
        call_event(1, view(offered_to=("pos-1",))),
        call_event(5, connected),
        position(PositionStatus.BUSY, "alice", 5),
        call_event(6, replace(connected, messages=(hello,)), EventKind.TEXT),
        call_event(7, replace(connected, messages=(hello, reply)), EventKind.TEXT),
        call_event(8, replace(connected, status=CallStatus.HELD)),
        call_event(9, connected),
        call_event(10, replace(connected, transfer_target="sip:fire@dispatch.example.net", transfer_status="trying")),
        call_event(12, replace(connected, status=CallStatus.TRANSFERRED, ended_at=at(12),
                               transfer_target="sip:fire@dispatch.example.net", transfer_status="connected")),
        call_event(13, replace(connected, status=CallStatus.TRANSFERRED, ended_at=at(12),  # repeated: no 2nd end
                               transfer_target="sip:fire@dispatch.example.net", transfer_status="connected")),
    ]  # fmt: skip


async def test_each_step_is_a_valid_event_under_the_calls_identifiers():
    recorder = Recorder()
    logger = PsapLogger(recorder, element_id=ELEMENT, agency_id=AGENCY)
    story = answered_and_transferred()
    logger.on_event(story[0])
    logger.signaling(parse_message(INVITE.encode()), "in", CALL, INCIDENT, ("127.0.0.1", 5070), at(1))
    for event in story[1:4]:
        logger.on_event(event)
    logger.signaling(parse_message(OK.encode()), "out", CALL, INCIDENT, ("127.0.0.1", 5070), at(5))
    for event in story[4:]:
        logger.on_event(event)
    await logger.flush(5)
    assert recorder.problems == [] and logger.errors == 0
    kinds = [(e.log_event_type, getattr(e, "state", None)) for e in recorder.events]
    assert kinds == [
        ("AgentStateChangeLogEvent", None), ("CallStartLogEvent", None), ("CallSignalingMessageLogEvent", None),
        ("CallStateChangeLogEvent", "callQueued"), ("CallStateChangeLogEvent", "callAlerting"),
        ("CallStateChangeLogEvent", "callAnswered"), ("CallSignalingMessageLogEvent", None),
        ("AgentStateChangeLogEvent", None), ("MessageLogEvent", None), ("MessageLogEvent", None),
        ("CallStateChangeLogEvent", "callHold"), ("CallStateChangeLogEvent", "callAnswered"),
        ("CallTransferLogEvent", None), ("CallTransferLogEvent", None), ("CallEndLogEvent", None),
    ]  # fmt: skip
    calls = [e for e in recorder.events if e.log_event_type != "AgentStateChangeLogEvent"]
    assert {(e.call_id, e.incident_id) for e in calls} == {(CALL, INCIDENT)}
    start = recorder.events[1]
    assert start.direction == "incoming" and start.from_ == "<sip:+16175551212@carrier.example>;tag=c1"
    assert start.call_id_sip == "sip-psap-1@esrp" and start.timestamp == at(1)
    invite, ok = (e for e in recorder.events if e.log_event_type == "CallSignalingMessageLogEvent")
    assert invite.text == INVITE and invite.direction == "incoming" and invite.ip_address_port == "127.0.0.1:5070"
    assert ok.text.startswith("SIP/2.0 200 OK") and ok.direction == "outgoing"
    answer = recorder.events[5]
    assert (answer.agency_position_id, answer.agency_agent_id, answer.timestamp) == ("pos-1", "alice", at(5))
    assert recorder.events[11].change_reason == "taken off hold"
    reply = recorder.events[9]
    assert (reply.direction, reply.text, reply.agency_agent_id) == ("outgoing", "911, what is your emergency?", "alice")
    trying, connected = recorder.events[12], recorder.events[13]
    assert trying.target == "sip:fire@dispatch.example.net" and trying.extension == {"transferStatus": "trying"}
    assert connected.extension == {"transferStatus": "connected"}
    end = recorder.events[-1]
    assert end.extension == {"cause": "transferred"} and end.timestamp == at(12)
    assert [e.primary_agent_state for e in recorder.events if isinstance(e, AgentStateChangeLogEvent)] == [
        "Available", "NotAvailable"]  # fmt: skip


async def test_an_abandoned_unmarked_call_and_its_callback():
    recorder = Recorder()
    logger = PsapLogger(recorder, element_id=ELEMENT, agency_id=AGENCY)
    unmarked = view(call_id="sip-psap-9@esrp", sip_call_id="sip-psap-9@esrp", incident_id=None)
    logger.on_event(call_event(1, unmarked))
    logger.on_event(call_event(9, replace(unmarked, status=CallStatus.ABANDONED, ended_at=at(9))))
    entry = CallbackEntry("cb-1", "sip-psap-9@esrp", "psap-a", "+16175551212", None, at(9))
    logger.on_event(CallHandlingEvent(EventKind.CALLBACK, "psap-a", at(9), callback=entry))  # listed: no attempt yet
    tried = replace(entry, attempts=({"at": at(60).isoformat(), "by": "bob", "outcome": "no answer"},))
    logger.on_event(CallHandlingEvent(EventKind.CALLBACK, "psap-a", at(60), callback=tried))
    logger.on_event(CallHandlingEvent(EventKind.CALLBACK, "psap-a", at(61), callback=tried))  # again: logged once
    logger.signaling(parse_message(INVITE.encode()), "sideways", CALL, INCIDENT)  # a bug of the caller: counted
    await logger.flush(5)
    assert recorder.problems == [] and logger.errors == 1
    kinds = [(e.log_event_type, getattr(e, "state", None)) for e in recorder.events]
    assert kinds == [("CallStartLogEvent", None), ("CallStateChangeLogEvent", "callQueued"),
                     ("CallStateChangeLogEvent", "callCancel"), ("CallEndLogEvent", None),
                     ("CallProcessLogEvent", None)]  # fmt: skip
    ids = {(e.call_id, e.incident_id) for e in recorder.events}
    assert len(ids) == 1
    call_id, incident_id = ids.pop()  # assigned by this element, the unmarked call's own
    assert call_id.startswith("urn:emergency:uid:callid:") and call_id.endswith(f":{ELEMENT}")
    assert incident_id.startswith("urn:emergency:uid:incidentid:") and incident_id.endswith(f":{ELEMENT}")
    assert recorder.events[3].extension == {"cause": "abandoned"}
    callback = recorder.events[4]
    assert callback.agency_agent_id == "bob" and callback.timestamp == at(60)
    assert callback.extension == {"callback": {"id": "cb-1", "number": "+16175551212", "outcome": "no answer",
                                               "status": "pending"}}  # fmt: skip


def test_the_schema_checks_the_psap_event_types():
    common = {"timestamp": "2025-06-01T09:00:00+00:00", "elementId": ELEMENT, "agencyId": AGENCY,
              "callId": CALL, "incidentId": INCIDENT}  # fmt: skip
    state = {**common, "logEventType": "CallStateChangeLogEvent", "state": "callAnswered", "direction": "incoming",
             "agencyPositionId": "pos-1", "changeReason": "answered"}  # fmt: skip
    parsed = from_json(state)
    assert isinstance(parsed, CallStateChangeLogEvent) and parsed.to_json() == state
    assert [str(p) for p in validate({**state, "state": None, "direction": "up"})] == [
        "state: must be a string, not null", "direction: must be 'incoming' or 'outgoing', not 'up'"]  # fmt: skip
    no_call = {k: v for k, v in state.items() if k != "callId"}
    assert [p.member for p in validate(no_call)] == ["callId"]
    transfer = {**common, "logEventType": "CallTransferLogEvent", "target": "sip:fire@dispatch.example.net"}
    assert isinstance(from_json(transfer), CallTransferLogEvent)
    assert [str(p) for p in validate({k: v for k, v in transfer.items() if k != "target"})] == [
        "target: missing (mandatory in CallTransferLogEvent)"]  # fmt: skip
    agent = {"logEventType": "AgentStateChangeLogEvent", "timestamp": "2025-06-01T09:00:00Z", "elementId": ELEMENT,
             "agencyId": AGENCY, "primaryAgentState": "Available"}  # fmt: skip
    assert isinstance(from_json(agent), AgentStateChangeLogEvent)
    assert [str(p) for p in validate({**agent, "primaryAgentState": "Busy"})] == [
        "primaryAgentState: must be 'Available' or 'NotAvailable', not 'Busy'"]  # fmt: skip


# --- through a real Logging Service ------------------------------------------------------------


@pytest.fixture
async def logging_service(tmp_path):
    url = f"sqlite:///{tmp_path}/logs.db"
    store = open_store(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(create_logging_app(store, fqdn="logs.example.net"),
                                           log_level="warning", lifespan="off"))  # fmt: skip
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):  # bounded wait for start-up
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "the Logging Service did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", store, url
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
        store.close()


async def test_the_logging_service_takes_the_psaps_story_and_tells_it(logging_service, tmp_path):
    base, store, url = logging_service
    async with LogSender([base], str(tmp_path / "spool"), None, ELEMENT, fsync=False) as sender:
        logger = PsapLogger(sender, element_id=ELEMENT, agency_id=AGENCY)
        logger.signaling(parse_message(INVITE.encode()), "incoming", CALL, INCIDENT, ("127.0.0.1", 5070), at(1))
        for event in answered_and_transferred():
            logger.on_event(event)
        await logger.drain(timeout=10)
    assert logger.errors == 0 and len(logger.sent) == 14
    stored = store.conversation(CALL)
    assert len(stored) == 12  # the two agent state changes belong to no call
    payloads = [jws.verify(e.jws.encode(), keys=[], allow_none=True).payload for e in stored]
    assert {p["elementId"] for p in payloads} == {ELEMENT} and {p["incidentId"] for p in payloads} == {INCIDENT}
    shown = CliRunner().invoke(cli, ["logs", "call", CALL, "--db", url], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    for fragment in (
        "call starts from <sip:+16175551212@carrier.example>;tag=c1", "INVITE sip:queue@psap.example.net",
        "callQueued (in the queue of psap-a)", "callAlerting (offered to pos-1)", "callAnswered at pos-1 by alice",
        "is anyone there", "911, what is your emergency? (alice)", "callHold at pos-1 by alice",
        "→ transfer to sip:fire@dispatch.example.net (trying) at pos-1 by alice", "(connected)",
        "call ends (transferred)",
    ):  # fmt: skip
        assert fragment in text, fragment
    assert text.index("callQueued") < text.index("callAnswered") < text.index("callHold") < text.index("call ends")
