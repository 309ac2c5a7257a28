"""i3 state notification bodies (NENA-STA-010.3 sections 2.4.1, 2.4.2, 4.2.1.3) and the
state table the ESRP routes by."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firebox.esrp.states import (
    EVENT_ELEMENT_STATE,
    EVENT_QUEUE_STATE,
    EVENT_SERVICE_STATE,
    Availability,
    ElementState,
    ElementStateValue,
    QueueState,
    QueueStateValue,
    SecurityPosture,
    ServiceName,
    ServiceState,
    ServiceStateValue,
    StateError,
    StateTable,
    parse_element_state,
    parse_notify,
    parse_queue_state,
    parse_service_state,
    uri_host,
    uri_key,
)

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
Q = "sip:ecc@psap.cambridge.test"


# --- registries ---------------------------------------------------------------------------


def test_registries_hold_the_standard_values():
    assert {v.value for v in ElementStateValue} == {
        "Normal", "ScheduledMaintenance", "ServiceDisruption", "Overloaded", "GoingDown", "Down", "Unreachable",
    }
    assert {v.value for v in ServiceStateValue} == {
        "Normal", "Unstaffed", "ScheduledMaintenanceDown", "ScheduledMaintenanceAvailable",
        "MajorIncidentInProgress", "Partial", "Overloaded", "GoingDown", "Down", "Unreachable",
    }
    assert {v.value for v in QueueStateValue} == {
        "Active", "Inactive", "Disabled", "Full", "Standby", "ResourceExhausted", "Unreachable",
    }
    assert {v.value for v in SecurityPosture} == {"Green", "Yellow", "Orange", "Red"}
    assert "PSAP" in {v.value for v in ServiceName}
    assert (EVENT_ELEMENT_STATE, EVENT_SERVICE_STATE, EVENT_QUEUE_STATE) == (
        "emergency-ElementState", "emergency-ServiceState", "emergency-QueueState",
    )


# --- parsing ------------------------------------------------------------------------------


def test_element_state_flat_form_from_bytes_str_and_dict():
    body = {"elementId": "esrp1.state.test", "state": "Down", "reason": "power"}
    want = ElementState("esrp1.state.test", ElementStateValue.DOWN, "power")
    assert parse_element_state(json.dumps(body).encode()) == want
    assert parse_element_state(json.dumps(body)) == want
    assert parse_element_state(body) == want


def test_element_state_appendix_e_wrapped_form():
    body = {"elementState": {"elementDomain": "esrp1.state.test", "state": "Normal"}}
    assert parse_element_state(body) == ElementState("esrp1.state.test", ElementStateValue.NORMAL)


def test_service_state_with_posture():
    body = {
        "service": {"name": "PSAP", "domain": "psap.cambridge.test", "serviceId": "psap.cambridge.test"},
        "serviceState": {"state": "Unstaffed", "reason": "evacuation"},
        "securityPosture": {"posture": "Orange", "reason": "TDoS"},
    }
    got = parse_service_state(body)
    assert got == ServiceState(
        ServiceName.PSAP, "psap.cambridge.test", ServiceStateValue.UNSTAFFED, "evacuation", SecurityPosture.ORANGE, "TDoS"
    )
    assert parse_service_state(got.to_json()) == got


def test_service_state_without_posture():
    got = parse_service_state({"service": {"name": "ECRF", "domain": "ecrf.test"}, "serviceState": {"state": "Normal"}})
    assert got.security_posture is None and got.reason == ""
    assert "securityPosture" not in got.to_dict()


def test_queue_state_both_forms_and_round_trip():
    flat = {"queueUri": Q, "queueLength": 2, "queueMaxLength": 8, "state": "Active"}
    want = QueueState(Q, 2, 8, QueueStateValue.ACTIVE)
    assert parse_queue_state(flat) == want
    assert parse_queue_state({"queueState": flat}) == want
    assert json.loads(want.to_json()) == flat


@pytest.mark.parametrize(
    ("parser", "body", "member", "text"),
    [
        (parse_element_state, {"elementId": "e.test"}, "state", "missing"),
        (parse_element_state, {"elementId": "e.test", "state": "Sleeping"}, "state", "'Sleeping' is not one of Normal"),
        (parse_element_state, {"state": "Normal"}, "elementId", "missing"),
        (parse_element_state, {"elementState": {"elementDomain": "e.test", "state": "down"}}, "elementState.state", "'down'"),
        (parse_element_state, {"elementState": "Down"}, "elementState", "expected an object"),
        (parse_element_state, {"elementId": 7, "state": "Normal"}, "elementId", "expected a string"),
        (parse_queue_state, {"queueUri": Q, "queueLength": -1, "queueMaxLength": 3, "state": "Active"}, "queueLength", "-1"),
        (parse_queue_state, {"queueUri": Q, "queueLength": True, "queueMaxLength": 3, "state": "Active"}, "queueLength", "True"),
        (parse_queue_state, {"queueUri": Q, "queueLength": "2", "queueMaxLength": 3, "state": "Active"}, "queueLength", "'2'"),
        (parse_queue_state, {"queueUri": Q, "queueLength": 1, "state": "Active"}, "queueMaxLength", "missing"),
        (parse_queue_state, {"queueUri": "tel:+16175550100", "queueLength": 1, "queueMaxLength": 3, "state": "Active"}, "queueUri", "not a sip"),
        (parse_queue_state, {"queueState": {"queueUri": Q, "queueLength": 1, "queueMaxLength": 3, "state": "Busy"}}, "queueState.state", "'Busy'"),
        (parse_service_state, {"serviceState": {"state": "Normal"}}, "service", "missing"),
        (parse_service_state, {"service": {"name": "Pizza", "domain": "d.test"}, "serviceState": {"state": "Normal"}}, "service.name", "'Pizza'"),
        (parse_service_state, {"service": {"name": "PSAP", "domain": "a.test", "serviceId": "b.test"}, "serviceState": {"state": "Normal"}}, "service.serviceId", "differs"),
        (parse_service_state, {"service": {"name": "PSAP", "domain": "a.test"}}, "serviceState", "missing"),
        (parse_service_state, {"service": {"name": "PSAP", "domain": "a.test"}, "serviceState": {"state": "Normal"}, "securityPosture": {"posture": "Purple"}}, "securityPosture.posture", "'Purple'"),
        (parse_queue_state, "{not json", "(body)", "not valid JSON"),
        (parse_queue_state, "[1, 2]", "(body)", "expected a JSON object"),
        (parse_queue_state, b"\xff\xfe", "(body)", "not UTF-8"),
    ],
)
def test_parse_errors_name_the_member(parser, body, member, text):
    with pytest.raises(StateError) as info:
        parser(body)
    assert info.value.member == member
    assert text in str(info.value)
    assert str(info.value).startswith(member + ":")
    assert isinstance(info.value, ValueError)


def test_unknown_members_are_ignored():
    # Someone else's document: a member from a later edition must not cost us the state.
    body = {"queueUri": Q, "queueLength": 0, "queueMaxLength": 4, "state": "Standby", "vendorX": {"a": 1}}
    assert parse_queue_state(body).state is QueueStateValue.STANDBY


def test_parse_notify_dispatches_on_the_event_header():
    assert isinstance(parse_notify("emergency-QueueState;id=7", QueueState(Q, 0, 1, QueueStateValue.ACTIVE).to_json()), QueueState)
    assert isinstance(parse_notify("Emergency-ElementState", {"elementId": "e.test", "state": "Normal"}), ElementState)
    assert isinstance(
        parse_notify(EVENT_SERVICE_STATE, {"service": {"name": "PSAP", "domain": "p.test"}, "serviceState": {"state": "Normal"}}),
        ServiceState,
    )
    with pytest.raises(StateError) as info:
        parse_notify("presence", "{}")
    assert info.value.member == "(event)"


queue_states = st.builds(
    QueueState,
    queue_uri=st.from_regex(r"sips?:[a-z0-9]{1,8}@[a-z0-9]{1,8}\.test", fullmatch=True),
    queue_length=st.integers(0, 10_000),
    max_length=st.integers(0, 10_000),
    state=st.sampled_from(QueueStateValue),
)
element_states = st.builds(
    ElementState,
    element_id=st.from_regex(r"[a-z0-9]{1,8}\.[a-z]{2,5}", fullmatch=True),
    state=st.sampled_from(ElementStateValue),
    reason=st.text(max_size=20),
)
service_states = st.builds(
    ServiceState,
    name=st.sampled_from(ServiceName),
    domain=st.from_regex(r"[a-z0-9]{1,8}\.[a-z]{2,5}", fullmatch=True),
    state=st.sampled_from(ServiceStateValue),
    reason=st.text(max_size=20),
    security_posture=st.none() | st.sampled_from(SecurityPosture),
    posture_reason=st.just(""),
)


@given(st.one_of(queue_states, element_states, service_states))
def test_to_json_round_trips(state):
    parse = {QueueState: parse_queue_state, ElementState: parse_element_state, ServiceState: parse_service_state}[type(state)]
    assert parse(state.to_json()) == state
    assert parse(state.to_json().encode()) == state


# --- the table ----------------------------------------------------------------------------


def table_with(*states, at=T0, max_age=timedelta(minutes=30)) -> StateTable:
    table = StateTable(max_age=max_age)
    for s in states:
        table.update(s, at)
    return table


@pytest.mark.parametrize(
    ("state", "length", "maximum", "usable"),
    [
        (QueueStateValue.ACTIVE, 0, 5, True),
        (QueueStateValue.ACTIVE, 4, 5, True),
        (QueueStateValue.ACTIVE, 5, 5, False),  # at its maximum, whatever the label says
        (QueueStateValue.ACTIVE, 9, 5, False),
        (QueueStateValue.STANDBY, 0, 5, True),
        (QueueStateValue.FULL, 5, 5, False),
        (QueueStateValue.INACTIVE, 0, 5, False),
        (QueueStateValue.DISABLED, 0, 5, False),
        (QueueStateValue.RESOURCE_EXHAUSTED, 1, 5, False),
    ],
)
def test_queue_usability(state, length, maximum, usable):
    table = table_with(QueueState(Q, length, maximum, state))
    assert table.is_queue_usable(Q, T0 + timedelta(minutes=1)) is usable


def test_unknown_queue_is_usable_but_unknown():
    table = StateTable()
    assert table.is_queue_usable(Q, T0)
    verdict = table.queue_verdict(Q, T0)
    assert verdict.availability is Availability.UNKNOWN
    assert "no state received" in verdict.reason


def test_unreachable_and_zero_maximum_are_unknown_not_excluded():
    table = table_with(QueueState(Q, 0, 0, QueueStateValue.ACTIVE))
    assert table.queue_verdict(Q, T0).availability is Availability.UNKNOWN
    table.update(QueueState(Q, 0, 0, QueueStateValue.UNREACHABLE), T0 + timedelta(seconds=1))
    assert table.queue_verdict(Q, T0 + timedelta(seconds=1)).availability is Availability.UNKNOWN


def test_stale_state_is_unknown():
    table = table_with(QueueState(Q, 5, 5, QueueStateValue.FULL), max_age=timedelta(minutes=30))
    assert not table.is_queue_usable(Q, T0 + timedelta(minutes=30))  # exactly max_age: still fresh
    later = T0 + timedelta(minutes=30, seconds=1)
    assert table.queue(Q, later) is None
    assert table.queue_state_name(Q, later) == "Unknown"
    verdict = table.queue_verdict(Q, later)
    assert verdict.availability is Availability.UNKNOWN and "1801s old" in verdict.reason
    assert table.is_queue_usable(Q, later)


def test_older_notify_does_not_overwrite_newer():
    table = table_with(QueueState(Q, 0, 5, QueueStateValue.ACTIVE), at=T0)
    assert not table.update(QueueState(Q, 5, 5, QueueStateValue.FULL), T0 - timedelta(seconds=5))
    assert table.queue(Q, T0).state is QueueStateValue.ACTIVE
    assert table.update(QueueState(Q, 5, 5, QueueStateValue.FULL), T0 + timedelta(seconds=5))
    assert table.queue(Q, T0 + timedelta(seconds=5)).state is QueueStateValue.FULL


def test_queue_uri_compares_like_sip():
    table = table_with(QueueState("sip:ecc@PSAP.Cambridge.test;transport=tls", 5, 5, QueueStateValue.FULL))
    assert not table.is_queue_usable(Q, T0)
    assert uri_key("SIP:ecc@Host.TEST:5061;user=phone?x=y") == "sip:ecc@host.test:5061"
    assert uri_host("sips:ecc@Host.TEST:5061;transport=tls") == "host.test"


def test_naive_times_are_taken_as_utc():
    table = StateTable()
    table.update(QueueState(Q, 5, 5, QueueStateValue.FULL), T0.replace(tzinfo=None))
    assert not table.is_queue_usable(Q, T0)
    assert not table.is_queue_usable(Q, T0.replace(tzinfo=None))


def test_apply_notify_parses_and_records():
    table = StateTable()
    table.apply_notify("emergency-ElementState", b'{"elementId":"psap.cambridge.test","state":"Down"}', T0)
    assert table.element("PSAP.cambridge.test", T0).state is ElementStateValue.DOWN
    with pytest.raises(StateError):
        table.apply_notify("emergency-ElementState", b'{"elementId":"x.test","state":"Gone"}', T0)


@pytest.mark.parametrize(
    ("state", "posture", "want"),
    [
        (ServiceStateValue.NORMAL, None, Availability.USABLE),
        (ServiceStateValue.SCHEDULED_MAINTENANCE_AVAILABLE, None, Availability.USABLE),
        (ServiceStateValue.MAJOR_INCIDENT_IN_PROGRESS, None, Availability.DEGRADED),
        (ServiceStateValue.UNSTAFFED, None, Availability.UNUSABLE),
        (ServiceStateValue.SCHEDULED_MAINTENANCE_DOWN, None, Availability.UNUSABLE),
        (ServiceStateValue.NORMAL, SecurityPosture.ORANGE, Availability.DEGRADED),
        (ServiceStateValue.NORMAL, SecurityPosture.RED, Availability.UNUSABLE),
    ],
)
def test_service_verdicts(state, posture, want):
    table = table_with(ServiceState(ServiceName.PSAP, "psap.cambridge.test", state, security_posture=posture))
    assert table.service_verdict("psap.cambridge.test", T0).availability is want


def test_destination_verdict_combines_known_states_only():
    table = table_with(QueueState(Q, 0, 5, QueueStateValue.ACTIVE))
    # An element nobody reports on does not demote a queue that says it is Active.
    assert table.destination_verdict(Q, T0, element_id="psap.cambridge.test").availability is Availability.USABLE
    table.update(ElementState("psap.cambridge.test", ElementStateValue.SERVICE_DISRUPTION), T0)
    assert table.destination_verdict(Q, T0, element_id="psap.cambridge.test").availability is Availability.DEGRADED
    table.update(ElementState("psap.cambridge.test", ElementStateValue.DOWN, "fire"), T0)
    verdict = table.destination_verdict(Q, T0, element_id="psap.cambridge.test")
    assert verdict.availability is Availability.UNUSABLE and "Down (fire)" in verdict.reason
    assert StateTable().destination_verdict(Q, T0, element_id="x.test", service_domain="x.test").availability is Availability.UNKNOWN


def test_max_age_must_be_positive():
    with pytest.raises(ValueError):
        StateTable(max_age=timedelta(0))
