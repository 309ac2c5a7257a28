"""The business-line registry (hours, YAML, last resort) and the gateway check, sans-I/O and
against a real UDP SIP responder on 127.0.0.1."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from firebox.alerting.businesslines import (
    BusinessLine,
    BusinessLineError,
    BusinessLineRegistry,
    GatewayCheck,
    GatewayChecker,
    Hours,
    LineHealth,
    OwnerKind,
    parse_hours,
    parse_lines_yaml,
)
from firebox.deployment import parse_deployment
from firebox.sip.message import Request, make_response
from firebox.sip.transport import start_sip_server

NY = ZoneInfo("America/New_York")


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=NY).timestamp()


# 2025-03-03 is a Monday; 2025-03-09 a Sunday (the day US clocks go forward).


def test_hours_weekdays_and_midnight_crossing() -> None:
    office = parse_hours(["Mon-Fri 08:00-17:00", "Sat 09:00-12:00"])
    assert office.is_open(at(2025, 3, 3, 8, 0))
    assert not office.is_open(at(2025, 3, 3, 17, 0))  # end exclusive
    assert office.is_open(at(2025, 3, 8, 11, 59))
    assert not office.is_open(at(2025, 3, 9, 10, 0))  # Sunday
    night = parse_hours("Sun 22:00-06:00")
    assert night.is_open(at(2025, 3, 9, 23, 0))
    assert night.is_open(at(2025, 3, 10, 5, 59))  # Monday morning, across the week's end
    assert not night.is_open(at(2025, 3, 10, 6, 0))
    wrap = parse_hours("Fri-Mon 00:00-24:00")
    assert wrap.is_open(at(2025, 3, 10, 12)) and not wrap.is_open(at(2025, 3, 11, 12))
    assert parse_hours("24/7").is_always and Hours.always().is_open(at(2025, 3, 9, 3))
    # Local time, not UTC: 08:30 in New York is 13:30 UTC in winter.
    assert office.is_open(datetime(2025, 3, 3, 13, 30, tzinfo=ZoneInfo("UTC")).timestamp())


@pytest.mark.parametrize(
    ("spec", "tz", "message"),
    [
        ("Mon-Fri 8-17", "America/New_York", "is not 24/7 or a range"),
        ("Mon-Fry 08:00-17:00", "America/New_York", "days are Mon"),
        ("Mon 25:00-26:00", "America/New_York", "times are 00:00..24:00"),
        ("24/7", "Mars/Olympus", "is not an IANA time zone"),
    ],
)
def test_hours_errors_name_the_bad_part(spec: str, tz: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hours(spec, tz)


def test_business_line_numbers_are_nanp_validated() -> None:
    line = BusinessLine("+1 (603) 555-0150", "pd-1", "Desk")
    assert line.number == "6035550150" and line.display == "(603) 555-0150" and line.tel == "tel:+16035550150"
    assert line.uri("gw.example:5060") == "sip:+16035550150@gw.example:5060;user=phone"
    for bad in ("555-0150", "103-555-0150", "603-155-0150"):
        with pytest.raises(ValueError, match="not a 10-digit NANP number"):
            BusinessLine(bad, "pd-1", "Desk")


DEPLOYMENT = """
authority: {name: Demo 911, domain: demo.firebox.test, state: DS}
gis:
  layers: [{service: "urn:service:sos", path: sos.geojson}]
psaps:
  - {id: psap-01, name: Ashford ECC, uri: "sip:psap-01@psap.demo.firebox.test", business_line: "603-555-0101",
     alternates: [psap-02], towns: [town-01, town-02]}
  - {id: psap-02, name: Bradley ECC, uri: "sip:psap-02@psap.demo.firebox.test", business_line: "603-555-0102",
     towns: [town-03]}
"""

EXTRA = """
time_zone: America/New_York
lines:
  - number: 603-555-0150
    owner: pd-town-01
    answered_by: Ashford Police desk
    hours: 24/7
    towns: [town-01]
  - number: "6035550151"
    owner: psap-01
    answered_by: Ashford ECC supervisor
    hours: ["Mon-Fri 08:00-17:00"]
    gateway: gw2.example:5080
"""


def test_registry_from_deployment_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "lines.yaml").write_text(EXTRA)
    dep = parse_deployment(DEPLOYMENT, base=tmp_path / "deployment.yaml")
    reg = BusinessLineRegistry.from_deployment(dep, "lines.yaml")
    assert len(reg) == 4
    psap_line = reg.get("603-555-0101")
    assert psap_line is not None and psap_line.kind is OwnerKind.PSAP and psap_line.hours.is_always
    assert psap_line.towns == ("town-01", "town-02") and "Ashford ECC" in psap_line.answered_by
    supervisor = reg.get("6035550151")
    assert supervisor is not None and supervisor.kind is OwnerKind.PSAP  # its owner is a PSAP
    assert [line.number for line in reg.for_town("town-01")] == ["6035550101", "6035550150"]
    monday_noon, sunday_noon = at(2025, 3, 3, 12), at(2025, 3, 9, 12)
    assert {line.number for line in reg.answering_at(sunday_noon)} == {"6035550101", "6035550102", "6035550150"}
    assert len(reg.answering_at(monday_noon)) == 4
    # The ESRP's last resort: answered now, route not known down.
    assert [line.number for line in reg.last_resort("psap-01", monday_noon)] == ["6035550101", "6035550151"]
    assert [line.number for line in reg.last_resort("psap-01", sunday_noon)] == ["6035550101"]
    down = {"6035550101": LineHealth.DOWN}
    assert [line.number for line in reg.last_resort("psap-01", monday_noon, down)] == ["6035550151"]
    uris = reg.uris("gw.example:5060")
    assert uris["6035550151"] == "sip:+16035550151@gw2.example:5080;user=phone"
    assert uris["6035550150"] == "sip:+16035550150@gw.example:5060;user=phone"


def test_yaml_errors_name_key_and_line() -> None:
    text = "lines:\n  - number: 555-0150\n    owner: pd-1\n    answered_by: Desk\n  - number: 603-555-0150\n    owner: pd-1\n    answered_by: Desk\n    colour: red\n"
    with pytest.raises(BusinessLineError) as err:
        parse_lines_yaml(text, "lines.yaml")
    assert err.value.problems == [
        "lines.yaml line 2: lines[0].number: '555-0150' is not a 10-digit NANP number",
        "lines.yaml line 8: lines[1].colour: unknown key",
    ]
    bad_hours = "lines:\n  - {number: 603-555-0150, owner: pd-1, answered_by: Desk, hours: Mon 9-5}\n"
    with pytest.raises(BusinessLineError, match=r"line 2: lines\[0\]\.hours: 'Mon 9-5' is not 24/7"):
        parse_lines_yaml(bad_hours, "lines.yaml")
    dup = "lines:\n  - {number: 603-555-0150, owner: a, answered_by: A}\n  - {number: 6035550150, owner: b, answered_by: B}\n"
    with pytest.raises(BusinessLineError, match=r"lines\[1\]\.number: 6035550150 is also lines\[0\]"):
        parse_lines_yaml(dup, "lines.yaml")


def test_gateway_check_hysteresis_sans_io() -> None:
    check = GatewayCheck({"6035550101": "sip:a", "6035550102": "sip:b"}, period=10.0, timeout=2.0,
                         down_after=2, up_after=2)  # fmt: skip
    first = check.due(0.0)
    assert [r.number for r in first] == ["6035550101"]  # spread over the period
    assert check.due(1.0) == []  # one outstanding check per line
    assert [r.number for r in check.due(5.0)] == ["6035550102"]
    changes = check.answered(first[0].seq, 200, 0.1)
    assert [(c.number, c.old, c.new) for c in changes] == [("6035550101", LineHealth.UNKNOWN, LineHealth.UP)]
    # One failure (a timeout) is not enough to take it down; two in a row are.
    r = check.due(10.0)[0]
    assert check.expire(11.0) == [] and check.expire(12.0) == []
    assert check.health("6035550101") is LineHealth.UP
    assert check.answered(r.seq, 200, 12.5) == []  # late: already judged a failure
    r = check.due(20.0)[0]
    changes = check.answered(r.seq, 503, 20.1, "Service Unavailable")
    assert [(c.new, c.detail) for c in changes] == [(LineHealth.DOWN, "SIP 503 Service Unavailable")]
    # Back up only after two successes in a row; 405 shows a live gateway.
    r = check.due(30.0)[0]
    assert check.answered(r.seq, 405, 30.1) == []
    r = check.due(40.0)[0]
    assert [c.new for c in check.answered(r.seq, 200, 40.1)] == [LineHealth.UP]
    assert check.snapshot()["6035550101"]["health"] == "up"
    with pytest.raises(ValueError, match="timeout <= period"):
        GatewayCheck({}, period=1.0, timeout=2.0)


def test_gateway_checker_against_a_real_udp_responder() -> None:
    async def scenario() -> None:
        answering = {"on": True}
        seen: list[str] = []

        def responder(message: object, source: object) -> None:
            if isinstance(message, Request) and message.method == "OPTIONS":
                seen.append(message.uri)
                if answering["on"]:
                    gateway.reply(make_response(message, 200), source)  # type: ignore[arg-type]

        gateway = await start_sip_server(responder, "127.0.0.1", 0, transports=("udp",))
        gw = f"127.0.0.1:{gateway.addresses['udp'][1]}"
        reg = BusinessLineRegistry([BusinessLine("603-555-0101", "psap-01", "Ashford ECC", kind=OwnerKind.PSAP)])
        check = GatewayCheck(reg.uris(gw), period=0.4, timeout=0.4, down_after=2, up_after=1)
        changes = []
        checker = GatewayChecker(check, on_change=changes.append)
        await checker.start()
        try:
            for _ in range(200):  # bounded: 10 s at most
                if check.health("6035550101") is LineHealth.UP:
                    break
                await asyncio.sleep(0.05)
            assert check.health("6035550101") is LineHealth.UP
            assert seen[0] == "sip:+16035550101@" + gw + ";user=phone"
            answering["on"] = False
            for _ in range(200):
                if check.health("6035550101") is LineHealth.DOWN:
                    break
                await asyncio.sleep(0.05)
            assert check.health("6035550101") is LineHealth.DOWN
            assert [c.new for c in changes] == [LineHealth.UP, LineHealth.DOWN]
            assert "no answer within 0.4 s" in changes[-1].detail
            assert reg.last_resort("psap-01", 0.0, check.healths()) == []
        finally:
            await checker.close()
            await gateway.close()

    asyncio.run(scenario())
