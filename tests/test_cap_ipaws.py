"""CAP 1.2 and IPAWS profile v1.0 validation (firebox.cap.ipaws): each rule, by element path."""

from __future__ import annotations

from dataclasses import replace

import pytest

from firebox.cap import ipaws
from firebox.cap.message import Alert, Area, Info, Reference, ValuePair, format_datetime, parse_cap

T0 = 1_750_000_000.0
SQUARE = "43.1,-71.5 43.2,-71.5 43.2,-71.6 43.1,-71.5"


def good() -> Alert:
    info = Info(
        categories=("Infra",), event="911 Telephone Outage", urgency="Immediate", severity="Severe",
        certainty="Observed", event_codes=(ValuePair("SAME", "TOE"),), expires=format_datetime(T0 + 3600),
        headline="911 outage in Dorton",
        parameters=(ValuePair("EAS-ORG", "CIV"), ValuePair("WEAHandling", "Public Safety"),
                    ValuePair("CMAMtext", "x" * 90), ValuePair("CMAMlongtext", "y" * 360)),
        areas=(Area("Dorton", (SQUARE,), geocodes=(ValuePair("SAME", "033000"),)),),
    )  # fmt: skip
    return Alert("FIREBOX-1", "alerts@demo.firebox.test", format_datetime(T0), "Actual", "Alert", "Public",
                 codes=("IPAWSv1.0",), infos=(info,))  # fmt: skip


def with_info(**changes) -> Alert:
    a = good()
    return replace(a, infos=(replace(a.infos[0], **changes),))


def with_area(**changes) -> Alert:
    a = good()
    return with_info(areas=(replace(a.infos[0].areas[0], **changes),))


def params(**values) -> tuple[ValuePair, ...]:
    base = {"EAS-ORG": "CIV", "WEAHandling": "Public Safety", "CMAMtext": "x"}
    base.update(values)
    return tuple(ValuePair(k, v) for k, v in base.items() if v is not None)


def test_a_good_message_validates_and_survives_the_wire():
    assert ipaws.validate(good()) == []
    assert ipaws.validate(parse_cap(good().to_xml())) == []
    assert ipaws.check(good()) == good()


CASES = [
    (replace(good(), identifier="FIREBOX 1"), "alert.identifier", "spaces, commas"),
    (replace(good(), sender=""), "alert.sender", "required"),
    (replace(good(), sent="2025-06-15T15:06:40Z"), "alert.sent", "no 'Z'"),
    (replace(good(), sent="2025-06-15T15:06:40.250-00:00"), "alert.sent", "whole seconds"),
    (replace(good(), status="Real"), "alert.status", "must be one of Actual, Exercise, System, Test, Draft"),
    (replace(good(), msg_type="Alarm"), "alert.msgType", "must be one of Alert, Update, Cancel, Ack, Error"),
    (replace(good(), scope="Restricted"), "alert.restriction", "required when the scope is Restricted"),
    (replace(good(), scope="Private"), "alert.addresses", "required when the scope is Private"),
    (replace(good(), codes=()), "alert.code", "must include IPAWSv1.0"),
    (replace(good(), msg_type="Update"), "alert.references", "required for a Update"),
    (replace(good(), msg_type="Cancel", references=(Reference("a@x.test", "ID 1", "2025-06-15T15:06:40-00:00"),)),
     "alert.references[0]", "restricted character"),
    (replace(good(), infos=()), "alert.info", "at least one info"),
    (with_info(categories=()), "alert.info[0].category", "at least one"),
    (with_info(categories=("Weather",)), "alert.info[0].category[0]", "must be one of Geo, Met"),
    (with_info(urgency="Now"), "alert.info[0].urgency", "must be one of Immediate"),
    (with_info(severity=""), "alert.info[0].severity", "required"),
    (with_info(certainty="Sure"), "alert.info[0].certainty", "must be one of Observed"),
    (with_info(response_types=("Run",)), "alert.info[0].responseType[0]", "must be one of Shelter"),
    (with_info(event=""), "alert.info[0].event", "required"),
    (with_info(language="en_US"), "alert.info[0].language", "RFC 3066"),
    (with_info(expires=None), "alert.info[0].expires", "required (IPAWS profile v1.0"),
    (with_info(onset="tomorrow"), "alert.info[0].onset", "date-time"),
    (with_info(event_codes=()), "alert.info[0].eventCode", "SAME"),
    (with_info(event_codes=(ValuePair("SAME", "toe"),)), "alert.info[0].eventCode.SAME", "3 capital letters"),
    (with_info(parameters=params(**{"EAS-ORG": None})), "alert.info[0].parameter.EAS-ORG", "required"),
    (with_info(parameters=params(**{"EAS-ORG": "PSAP"})), "alert.info[0].parameter.EAS-ORG", "must be one of CIV"),
    (with_info(parameters=params(CMAMtext="x" * 91)), "alert.info[0].parameter.CMAMtext", "has 91 characters; WEA carries at most 90"),
    (with_info(parameters=params(CMAMlongtext="y" * 361)), "alert.info[0].parameter.CMAMlongtext", "has 361 characters; WEA carries at most 360"),
    (with_info(parameters=params(WEAHandling="Urgent")), "alert.info[0].parameter.WEAHandling", "must be one of"),
    (with_info(areas=()), "alert.info[0].area", "at least one area"),
    (with_area(area_desc=""), "alert.info[0].area[0].areaDesc", "required"),
    (with_area(geocodes=()), "alert.info[0].area[0].geocode", "geocode SAME"),
    (with_area(geocodes=(ValuePair("SAME", "33000"),)), "alert.info[0].area[0].geocode.SAME", "6 digits"),
    (with_area(polygons=("43.1,-71.5 43.2,-71.5 43.2,-71.6 43.1,-71.6",)), "alert.info[0].area[0].polygon[0]", "is not closed"),
    (with_area(polygons=("43.1,-71.5 43.2,-71.5 43.1,-71.5",)), "alert.info[0].area[0].polygon[0]", "has 3 points; at least 4"),
    (with_area(polygons=("95.1,-71.5 43.2,-71.5 43.2,-71.6 95.1,-71.5",)), "alert.info[0].area[0].polygon[0]", "latitude must be in"),
    (with_area(polygons=("43.1;-71.5 43.2,-71.5 43.2,-71.6 43.1;-71.5",)), "alert.info[0].area[0].polygon[0]", "point 1 '43.1;-71.5' is not 'lat,lon'"),
    (with_area(circles=("43.1,-71.5",)), "alert.info[0].area[0].circle[0]", "lat,lon radius"),
    (with_area(ceiling="10"), "alert.info[0].area[0].ceiling", "only with altitude"),
]  # fmt: skip


@pytest.mark.parametrize(("alert", "member", "message"), CASES)
def test_each_rule_names_the_element(alert, member, message):
    problems = ipaws.validate(alert)
    assert any(p.member == member and message in p.message for p in problems), problems
    with pytest.raises(ipaws.CapInvalid):
        ipaws.check(alert)


def test_polygon_point_limit_is_the_ipaws_profile_only():
    ring = [(43.0 + 0.001 * i, -71.5) for i in range(100)] + [(43.1, -71.6)]
    text = " ".join(f"{lat},{lon}" for lat, lon in [*ring, ring[0]])  # 102 points
    alert = with_area(polygons=(text,))
    assert ipaws.validate_cap(alert) == []  # CAP 1.2 itself has no limit
    problems = ipaws.validate_ipaws(alert)
    assert [(p.member, p.message) for p in problems] == [
        ("alert.info[0].area[0].polygon[0]", "has 102 points; IPAWS carries at most 100 to WEA (J-STD-101)")]
    assert ipaws.validate_ipaws(alert, max_polygon_points=102) == []


def test_problems_become_json_pointers():
    (problem,) = ipaws.validate(with_info(parameters=params(CMAMtext="x" * 91)))
    assert problem.to_json()["pointer"] == "/alert/info/0/parameter/CMAMtext"
