"""i3 log events (NENA-STA-010.3 section 4.12.3): JSON round trips with the standard's
member names, validation naming every wrong member, and the i3 identifiers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from firebox.logging import events as ev
from firebox.logging.events import (
    CallEndLogEvent,
    CallSignalingMessageLogEvent,
    CallStartLogEvent,
    Direction,
    LogEvent,
    LogEventError,
    LostQueryLogEvent,
    LostResponseLogEvent,
    MessageLogEvent,
    Problem,
    RouteLogEvent,
    from_json,
    new_call_id,
    new_incident_id,
    new_log_event_id,
    validate,
)

BCF = "bcf.example.net"
CALL = "urn:emergency:uid:callid:a1b2c3:bcf.example.net"
INCIDENT = "urn:emergency:uid:incidentid:d4e5f6:bcf.example.net"
WHEN = datetime(2025, 3, 10, 11, 0, 1, 250000, tzinfo=timezone(timedelta(hours=-5)))
INVITE = "INVITE sip:urn:service:sos@esrp.example.net SIP/2.0\r\nCall-ID: abc@carrier\r\n\r\n"
COMMON = {"element_id": BCF, "agency_id": "example.net", "timestamp": WHEN, "call_id": CALL, "incident_id": INCIDENT}


def samples() -> list[LogEvent]:
    return [
        CallStartLogEvent(**COMMON, direction=Direction.INCOMING, standard_primary_call_type="Emergency",
                          to="urn:service:sos", from_="sip:+15555550100@carrier.example",
                          call_id_sip="abc@carrier", ip_address_port="192.0.2.7:5060"),
        CallEndLogEvent(**COMMON, direction="outgoing", agency_agent_id="ct12@psap.example.net",
                        agency_position_id="pos-3", local_use={"trunk": 7}),
        CallSignalingMessageLogEvent(**COMMON, text=INVITE, direction="incoming"),
        RouteLogEvent(**COMMON, recipient_uri="sip:psap@psap.example.net", rule_id="rule-1",
                      policy_owner="esrp.example.net", policy_type="OriginationRoutePolicy",
                      policy_queue_name="sip:queue@psap.example.net", cause="normal"),
        LostQueryLogEvent(element_id="esrp.example.net", agency_id="example.net", timestamp=WHEN,
                          query_adapter="<findService xmlns='urn:ietf:params:xml:ns:lost1'/>",
                          direction="outgoing", query_id="q-17", call_id=CALL),
        LostResponseLogEvent(element_id="esrp.example.net", agency_id="example.net", timestamp=WHEN,
                             response_adapter="<findServiceResponse/>", direction="incoming",
                             response_id="q-17", response_status="200"),
        MessageLogEvent(**COMMON, text="help, fire", direction="incoming", extension={"vendor": {"x": 1}}),
    ]  # fmt: skip


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("event", samples(), ids=lambda e: type(e).__name__)
def test_round_trip(event):
    assert event.problems() == []
    data = event.to_json()
    assert data["logEventType"] == type(event).__name__
    assert list(data)[:4] == ["logEventType", "timestamp", "elementId", "agencyId"]
    assert data["timestamp"] == "2025-03-10T11:00:01.250-05:00"
    back = from_json(data)
    assert type(back) is type(event)
    assert back == event
    assert back.to_json() == data
    assert type(event).from_json(data) == event


def test_standard_member_names():
    start = samples()[0].to_json()
    assert start == {
        "logEventType": "CallStartLogEvent",
        "timestamp": "2025-03-10T11:00:01.250-05:00",
        "elementId": BCF,
        "agencyId": "example.net",
        "callId": CALL,
        "incidentId": INCIDENT,
        "callIdSip": "abc@carrier",
        "ipAddressPort": "192.0.2.7:5060",
        "direction": "incoming",
        "standardPrimaryCallType": "Emergency",
        "to": "urn:service:sos",
        "from": "sip:+15555550100@carrier.example",
    }
    signaling = samples()[2].to_json()
    assert signaling["protocol"] == "sip" and signaling["text"] == INVITE
    route = samples()[3].to_json()
    assert {"recipientUri", "ruleId", "policyOwner", "policyType", "policyQueueName", "cause"} <= set(route)
    lost = samples()[4].to_json()
    assert {"queryAdapter", "direction", "queryId"} <= set(lost)


def test_default_timestamp_is_now_with_an_offset():
    before = datetime.now(UTC) - timedelta(seconds=1)
    event = CallStartLogEvent(element_id=BCF, agency_id="example.net", call_id=CALL, incident_id=INCIDENT,
                              direction="incoming")  # fmt: skip
    assert event.timestamp.tzinfo is not None and event.timestamp >= before
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?\+00:00", event.to_json()["timestamp"])


@pytest.mark.parametrize("text, expected", [
    ("2020-03-10T11:00:01-05:00", datetime(2020, 3, 10, 16, 0, 1, tzinfo=UTC)),
    ("2020-03-10T16:00:01Z", datetime(2020, 3, 10, 16, 0, 1, tzinfo=UTC)),
    ("2020-03-10t16:00:01.123456789z", datetime(2020, 3, 10, 16, 0, 1, 123456, tzinfo=UTC)),
    ("2020-03-10T16:00:01.5+00:00", datetime(2020, 3, 10, 16, 0, 1, 500000, tzinfo=UTC)),
])  # fmt: skip
def test_timestamps(text, expected):
    assert ev.parse_timestamp(text) == expected


def test_other_registered_types_and_unknown_members_are_kept():
    data = {"logEventType": "ElementStateChangeLogEvent", "timestamp": "2025-01-01T00:00:00+00:00",
            "elementId": "esrp.example.net", "agencyId": "example.net",
            "notificationContents": "Normal", "direction": "outgoing"}  # fmt: skip
    event = from_json(data)
    assert type(event) is LogEvent and event.log_event_type == "ElementStateChangeLogEvent"
    assert event.other == {"notificationContents": "Normal", "direction": "outgoing"}
    assert event.to_json() == data
    assert from_json({**data, "timestamp": "2025-01-01T00:00:00Z"}) == event  # Z is +00:00
    extended = {**samples()[0].to_json(), "vendorThing": [1, 2]}
    assert from_json(extended).other == {"vendorThing": [1, 2]}
    assert from_json(extended).to_json() == extended


# --- validation -----------------------------------------------------------------------------------


def members(problems: list[Problem]) -> list[str]:
    return [p.member for p in problems]


MANDATORY = {
    CallStartLogEvent: ["timestamp", "elementId", "agencyId", "callId", "incidentId", "direction"],
    CallEndLogEvent: ["timestamp", "elementId", "agencyId", "callId", "incidentId", "direction"],
    CallSignalingMessageLogEvent: ["timestamp", "elementId", "agencyId", "callId", "incidentId", "text",
                                   "direction"],
    RouteLogEvent: ["timestamp", "elementId", "agencyId", "callId", "incidentId", "recipientUri", "ruleId",
                    "policyOwner", "policyType"],
    LostQueryLogEvent: ["timestamp", "elementId", "agencyId", "queryAdapter", "direction", "queryId"],
    LostResponseLogEvent: ["timestamp", "elementId", "agencyId", "responseAdapter", "direction", "responseId"],
    MessageLogEvent: ["timestamp", "elementId", "agencyId", "callId", "incidentId", "text", "direction"],
}  # fmt: skip


@pytest.mark.parametrize(
    "event, member",
    [(e, m) for e in samples() for m in ["logEventType", *MANDATORY[type(e)]]],
    ids=lambda x: x if isinstance(x, str) else type(x).__name__,
)
def test_each_missing_mandatory_member_is_named(event, member):
    data = event.to_json()
    del data[member]
    problems = validate(data)
    assert members(problems)[0] == member
    assert problems[0].message.startswith("missing")
    with pytest.raises(LogEventError) as info:
        from_json(data)
    assert member in members(info.value.problems)


def test_optional_members_may_be_absent():
    data = samples()[4].to_json()
    for optional in ("callId", "malformedQuery", "agencyAgentId"):
        data.pop(optional, None)
    assert validate(data) == []


@pytest.mark.parametrize("member, value, fragment", [
    ("logEventType", "CallBeginLogEvent", "'CallBeginLogEvent' is not a registered log event type"),
    ("logEventType", 3, "must be a string, not a number"),
    ("timestamp", "2020-03-10T11:00:01", "must be an RFC 3339 date-time with an offset"),
    ("timestamp", "2020-03-10 11:00:01Z", "must be an RFC 3339 date-time with an offset"),
    ("timestamp", "2020-02-30T11:00:01Z", "day is out of range for month"),
    ("timestamp", "2020-03-10T11:00:01+24:00", "offset +24:00 out of range"),
    ("timestamp", 1583856001, "must be a string, not a number"),
    ("elementId", "bcf_1.example.net", "must be a domain name, not 'bcf_1.example.net'"),
    ("elementId", "", "must not be empty"),
    ("agencyId", None, "must be a string, not null"),
    ("agencyId", "-bad.example.net", "must be a domain name"),
    ("callId", "abc@carrier", "must be urn:emergency:uid:callid:<id>:<domain name>"),
    ("callId", INCIDENT, "must be a urn:emergency:uid:callid: identifier, not a 'incidentid' one"),
    ("callId", "urn:emergency:uid:callid:abc:not a domain", "must end with the domain name"),
    ("incidentId", CALL, "must be a urn:emergency:uid:incidentid: identifier"),
    ("agencyAgentId", ["x"], "must be a string, not an array"),
    ("callIdSip", True, "must be a string, not a boolean"),
    ("extension", "x", "must be a JSON object, not a string"),
    ("direction", "inbound", "must be 'incoming' or 'outgoing', not 'inbound'"),
    ("direction", None, "must be 'incoming' or 'outgoing', not None"),
    ("localUse", [], "must be a JSON object, not an array"),
    ("from", 5, "must be a string, not a number"),
])  # fmt: skip
def test_wrong_members_are_named(member, value, fragment):
    data = {**samples()[0].to_json(), member: value}
    problems = validate(data)
    assert members(problems) == [member], problems
    assert fragment in problems[0].message


def test_route_and_lost_specific_members():
    route = {**samples()[3].to_json(), "recipientUri": "psap at example", "policyQueueName": 4}
    assert [(p.member, p.message[:20]) for p in validate(route)] == [
        ("recipientUri", "must be a URI (schem"),
        ("policyQueueName", "must be a string, no"),
    ]
    lost = {**samples()[4].to_json(), "queryId": "", "direction": "up"}
    assert members(validate(lost)) == ["direction", "queryId"]


def test_every_problem_is_listed_in_member_order():
    data = {"logEventType": "CallSignalingMessageLogEvent", "elementId": "a b", "agencyId": 1,
            "direction": "sideways", "extension": []}  # fmt: skip
    problems = validate(data)
    assert members(problems) == ["timestamp", "elementId", "agencyId", "callId", "incidentId", "extension",
                                 "text", "direction"]  # fmt: skip
    error = LogEventError(problems)
    assert str(error).startswith("timestamp: missing (mandatory in CallSignalingMessageLogEvent); elementId: ")
    problem = error.problem_json()
    assert problem["status"] == 400 and problem["title"] == "Bad LogEvent"
    assert [e["pointer"] for e in problem["errors"]][:3] == ["/timestamp", "/elementId", "/agencyId"]
    assert problem["errors"][1] == {"pointer": "/elementId", "member": "elementId",
                                    "detail": "must be a domain name, not 'a b'"}  # fmt: skip


def test_not_an_object():
    for value in ([], "x", None, 3):
        problems = validate(value)
        assert members(problems) == [""] and "must be a JSON object" in problems[0].message
    assert members(validate({1: "x", **samples()[0].to_json()})) == ["1"]


def test_from_json_on_a_subclass_checks_the_type():
    with pytest.raises(LogEventError) as info:
        CallStartLogEvent.from_json(samples()[1].to_json())
    assert str(info.value) == "logEventType: must be 'CallStartLogEvent', not 'CallEndLogEvent'"


def test_problems_of_a_constructed_event():
    event = CallStartLogEvent(element_id="x y", agency_id="example.net", direction="around")
    assert members(event.problems()) == ["elementId", "callId", "incidentId", "direction"]
    with pytest.raises(LogEventError):
        event.check()
    assert samples()[0].check() is not None


# --- identifiers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make, kind", [(new_call_id, "callid"), (new_incident_id, "incidentid"),
                                        (new_log_event_id, "logid")])  # fmt: skip
def test_identifiers(make, kind):
    ids = {make("bcf.example.net") for _ in range(200)}
    assert len(ids) == 200
    for value in ids:
        assert re.fullmatch(rf"urn:emergency:uid:{kind}:[0-9a-f]{{32}}:bcf\.example\.net", value)
        assert ev.check_uid(value, kind) is None
    for bad in ("", "bcf example", "bcf_1.example.net", "x" * 64 + ".net", None):
        with pytest.raises(ValueError):
            make(bad)  # type: ignore[arg-type]


def test_generated_ids_are_valid_members():
    data = {**samples()[0].to_json(), "callId": new_call_id(BCF), "incidentId": new_incident_id(BCF),
            "clientAssignedIdentifier": new_log_event_id(BCF)}  # fmt: skip
    assert validate(data) == []
