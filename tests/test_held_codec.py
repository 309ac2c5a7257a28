"""HELD codec (RFC 5985) with device identity (RFC 6155) and the dereference form (RFC 6753)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firebox.held.codec import (
    MEDIA_TYPE,
    NS_HELD,
    NS_HELD_ID,
    HeldError,
    HeldErrorCode,
    HeldParseError,
    LocationRequest,
    LocationResponse,
    ResponseTime,
    dereference_request,
    parse,
    serialize,
)
from firebox.location.civic import CivicAddress
from firebox.location.pidf import NS_PIDF, PidfLocation, Presence, best_location
from firebox.location.shapes import Circle, Point
from firebox.xmlsafe import parse_xml

T0 = datetime(2025, 5, 4, 3, 2, 1, tzinfo=UTC)
PRESENCE = Presence(
    "pres:3650n87934c@ls.example.com",
    [PidfLocation(shapes=[Circle(Point(-34.407, 150.883), 30.0)], civic=CivicAddress(country="AU", A1="NSW"),
                  method="Wiremap", timestamp=T0, element_id="b650sf789nd")],
)  # fmt: skip


def test_media_type() -> None:
    assert MEDIA_TYPE == "application/held+xml"


# --- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        LocationRequest(),
        LocationRequest(location_types=["geodetic"], device_uri="tel:+16035551234"),
        LocationRequest(location_types=["civic", "geodetic"], exact=True, response_time=8000.0),
        LocationRequest(location_types=["locationURI"], response_time=ResponseTime.EMERGENCY_ROUTING),
        LocationRequest(location_types=["any"], response_time=ResponseTime.EMERGENCY_DISPATCH),
        LocationRequest(device_ip="192.0.2.5"),
        LocationRequest(device_ip="2001:db8::1", device_uri="sip:alice@example.com",
                        device_ids=[("mac", "00-11-22-33-44-55"), ("msisdn", "16175551212")]),
    ],
    ids=["empty", "node-usage", "exact-ms", "uri-routing", "any-dispatch", "ipv4", "many-ids"],
)  # fmt: skip
def test_request_round_trip(request_: LocationRequest) -> None:
    assert parse(serialize(request_)) == request_


def test_request_wire_form() -> None:
    xml = serialize(LocationRequest(location_types=["geodetic", "locationURI"], exact=True,
                                    response_time=ResponseTime.EMERGENCY_ROUTING, device_ip="192.0.2.5"))  # fmt: skip
    root = parse_xml(xml)
    assert root.tag == f"{{{NS_HELD}}}locationRequest"
    assert root.get("responseTime") == "emergencyRouting"
    lt = root.find(f"{{{NS_HELD}}}locationType")
    assert lt is not None and lt.text == "geodetic locationURI" and lt.get("exact") == "true"
    ip = root.find(f"{{{NS_HELD_ID}}}device/{{{NS_HELD_ID}}}ip")
    assert ip is not None and ip.get("v") == "4" and ip.text == "192.0.2.5"


def test_rfc5985_style_request() -> None:
    body = (
        f'<locationRequest xmlns="{NS_HELD}" responseTime="8">'
        '<locationType exact="true">civic locationURI</locationType></locationRequest>'
    )
    assert parse(body) == LocationRequest(["civic", "locationURI"], exact=True, response_time=8.0)
    # No locationType means "any" (section 6.2); an empty one too.
    assert parse(f'<locationRequest xmlns="{NS_HELD}"/>') == LocationRequest(["any"])
    assert parse(f'<locationRequest xmlns="{NS_HELD}"><locationType/></locationRequest>').location_types == ["any"]
    # Duplicated tokens collapse; exact="1" is a boolean too.
    req = parse(f'<locationRequest xmlns="{NS_HELD}"><locationType exact="1">civic civic</locationType></locationRequest>')
    assert isinstance(req, LocationRequest) and req.location_types == ["civic"] and req.exact


def test_rfc6155_device_identity() -> None:
    body = (
        f'<locationRequest xmlns="{NS_HELD}"><locationType>any</locationType>'
        f'<device xmlns="{NS_HELD_ID}"><ip v="6">2001:DB8:0:0::5</ip><uri>tel:+1-555-555-5555</uri>'
        "<uri>sip:second@example.com</uri><nai>user@example.net</nai></device></locationRequest>"
    )
    req = parse(body)
    assert isinstance(req, LocationRequest)
    assert req.device_ip == "2001:db8::5"  # canonical form
    assert req.device_uri == "tel:+1-555-555-5555"
    assert req.device_ids == [("uri", "sip:second@example.com"), ("nai", "user@example.net")]
    assert req.has_device


def test_dereference_request_form() -> None:
    req = dereference_request()
    assert req == LocationRequest(["any"]) and not req.has_device
    assert parse(serialize(dereference_request(["civic"], exact=True))) == LocationRequest(["civic"], exact=True)


# --- responses ----------------------------------------------------------------------------------


def test_response_by_value_round_trip() -> None:
    resp = LocationResponse(presence=PRESENCE)
    back = parse(serialize(resp))
    assert back == resp
    assert isinstance(back, LocationResponse)
    best = best_location(back.presence)
    assert best is not None and best.shapes == [Circle(Point(-34.407, 150.883), 30.0)]


def test_response_by_reference_and_both() -> None:
    uris = ["https://ls.example.com:9768/357yc6s64ceyoiuy5ax3o", "sip:9769+357yc6s64ceyoiuy5ax3o@ls.example.com"]
    by_ref = LocationResponse(location_uris=uris, expires=T0 + timedelta(minutes=30))
    assert parse(serialize(by_ref)) == by_ref
    both = LocationResponse(presence=PRESENCE, location_uris=uris[:1], expires=T0)
    xml = serialize(both)
    assert parse(xml) == both
    root = parse_xml(xml)
    # locationUriSet comes before presence (RFC 5985 section 7 schema).
    assert [c.tag for c in root] == [f"{{{NS_HELD}}}locationUriSet", f"{{{NS_PIDF}}}presence"]
    assert root[0].get("expires") == "2025-05-04T03:02:01Z"


def test_rfc5985_style_response() -> None:
    body = f"""<?xml version="1.0"?>
    <locationResponse xmlns="{NS_HELD}">
      <locationUriSet expires="2006-01-01T13:00:00.0Z">
        <locationURI>https://ls.example.com:9768/357yc6s64ceyoiuy5ax3o</locationURI>
      </locationUriSet>
      <presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:3650n87934c@ls.example.com">
        <tuple id="b650sf789nd">
          <status>
            <geopriv xmlns="urn:ietf:params:xml:ns:pidf:geopriv10">
              <location-info>
                <Point xmlns="http://www.opengis.net/gml" srsName="urn:ogc:def:crs:EPSG::4326">
                  <pos>-34.407 150.88001</pos>
                </Point>
              </location-info>
              <usage-rules xmlns:gbp="urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy">
                <gbp:retransmission-allowed>false</gbp:retransmission-allowed>
                <gbp:retention-expiry>2006-01-11T13:00:00.0Z</gbp:retention-expiry>
              </usage-rules>
              <method>Wiremap</method>
            </geopriv>
          </status>
          <timestamp>2006-01-01T12:00:00.0Z</timestamp>
        </tuple>
      </presence>
    </locationResponse>"""
    resp = parse(body)
    assert isinstance(resp, LocationResponse)
    assert resp.expires == datetime(2006, 1, 1, 13, 0, tzinfo=UTC)
    assert resp.location_uris == ["https://ls.example.com:9768/357yc6s64ceyoiuy5ax3o"]
    assert resp.presence is not None
    loc = resp.presence.locations[0]
    assert loc.shapes == [Point(-34.407, 150.88001)] and loc.method == "Wiremap"
    assert loc.retention_expiry == datetime(2006, 1, 11, 13, 0, tzinfo=UTC)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(HeldErrorCode))
def test_error_round_trip(code: HeldErrorCode) -> None:
    err = HeldError(code, f"something about {code.value}")
    assert parse(serialize(err)) == err


def test_error_codes_are_rfc5985_section_6_3() -> None:
    assert {c.value for c in HeldErrorCode} == {
        "requestError", "xmlError", "generalLisError", "locationUnknown",
        "unsupportedMessage", "timeout", "cannotProvideLiType", "notLocatable",
    }  # fmt: skip


def test_error_wire_form_and_unknown_codes() -> None:
    root = parse_xml(serialize(HeldError(HeldErrorCode.LOCATION_UNKNOWN, "no fix\x00 yet")))
    assert root.get("code") == "locationUnknown"
    msg = root.find(f"{{{NS_HELD}}}message")
    assert msg is not None and msg.text == "no fix  yet"  # NUL replaced: XML cannot carry it
    assert msg.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    later = f'<error xmlns="{NS_HELD}" code="badIdentifier"><message>bad id</message></error>'
    assert parse(later) == HeldError(HeldErrorCode.GENERAL_LIS_ERROR, "badIdentifier: bad id")
    assert parse(f'<error xmlns="{NS_HELD}" code="timeout"/>') == HeldError(HeldErrorCode.TIMEOUT, "")


def _parse_error(body: bytes | str) -> HeldParseError:
    with pytest.raises(HeldParseError) as info:
        parse(body)
    return info.value


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        (b"", HeldErrorCode.XML_ERROR, "empty body"),
        (b"<locationRequest", HeldErrorCode.XML_ERROR, "malformed XML"),
        (b'<!DOCTYPE r [<!ENTITY e "x">]><r/>', HeldErrorCode.XML_ERROR, "entity"),
        (b"<locationRequest/>", HeldErrorCode.XML_ERROR, "has no namespace"),
        (b'<findService xmlns="urn:ietf:params:xml:ns:lost1"/>', HeldErrorCode.XML_ERROR, "urn:ietf:params:xml:ns:lost1"),
        (f'<locationSubscribe xmlns="{NS_HELD}"/>', HeldErrorCode.UNSUPPORTED_MESSAGE, "<locationSubscribe>"),
        (f'<locationRequest xmlns="{NS_HELD}"><locationType>geodetic postal</locationType></locationRequest>',
         HeldErrorCode.REQUEST_ERROR, "locationType 'postal'"),
        (f'<locationRequest xmlns="{NS_HELD}"><locationType exact="yes">civic</locationType></locationRequest>',
         HeldErrorCode.REQUEST_ERROR, "exact='yes'"),
        (f'<locationRequest xmlns="{NS_HELD}"><locationType/><locationType/></locationRequest>',
         HeldErrorCode.REQUEST_ERROR, "more than one <locationType>"),
        (f'<locationRequest xmlns="{NS_HELD}" responseTime="soon"/>', HeldErrorCode.REQUEST_ERROR, "responseTime 'soon'"),
        (f'<locationRequest xmlns="{NS_HELD}" responseTime="-5"/>', HeldErrorCode.REQUEST_ERROR, "responseTime '-5'"),
        (f'<locationRequest xmlns="{NS_HELD}"><device xmlns="{NS_HELD_ID}"/></locationRequest>',
         HeldErrorCode.REQUEST_ERROR, "names no identifier"),
        (f'<locationRequest xmlns="{NS_HELD}"><device xmlns="{NS_HELD_ID}"><ip v="4">300.1.1.1</ip></device></locationRequest>',
         HeldErrorCode.REQUEST_ERROR, "'300.1.1.1' is not an IP address"),
        (f'<locationRequest xmlns="{NS_HELD}"><device xmlns="{NS_HELD_ID}"><ip v="6">192.0.2.1</ip></device></locationRequest>',
         HeldErrorCode.REQUEST_ERROR, "IPv4 address"),
        (f'<locationRequest xmlns="{NS_HELD}"><device xmlns="{NS_HELD_ID}"><uri> </uri></device></locationRequest>',
         HeldErrorCode.REQUEST_ERROR, "<uri> is empty"),
        (f'<locationResponse xmlns="{NS_HELD}"/>', HeldErrorCode.REQUEST_ERROR, "neither a <locationUriSet> nor a <presence>"),
        (f'<locationResponse xmlns="{NS_HELD}"><locationUriSet><locationURI>http://x/1</locationURI></locationUriSet></locationResponse>',
         HeldErrorCode.REQUEST_ERROR, "missing its 'expires'"),
        (f'<locationResponse xmlns="{NS_HELD}"><locationUriSet expires="2025-01-01T00:00:00Z"/></locationResponse>',
         HeldErrorCode.REQUEST_ERROR, "holds no <locationURI>"),
        (f'<locationResponse xmlns="{NS_HELD}"><locationUriSet expires="noon"><locationURI>http://x/1</locationURI></locationUriSet></locationResponse>',
         HeldErrorCode.REQUEST_ERROR, "'noon' is not an RFC 3339 timestamp"),
        (f'<locationResponse xmlns="{NS_HELD}"><presence xmlns="{NS_PIDF}" entity="a:b"><tuple id="t"><status/></tuple></presence></locationResponse>',
         HeldErrorCode.REQUEST_ERROR, "presence: presence holds no location"),
        (f'<error xmlns="{NS_HELD}"><message>x</message></error>', HeldErrorCode.REQUEST_ERROR, "missing its 'code'"),
    ],
    ids=lambda v: v.value if isinstance(v, HeldErrorCode) else None,
)  # fmt: skip
def test_parse_errors(body: bytes | str, code: HeldErrorCode, fragment: str) -> None:
    err = _parse_error(body)
    assert err.code is code
    assert fragment in err.message
    assert err.to_error() == HeldError(code, err.message)


def test_bad_shape_in_presence_is_request_error_naming_it() -> None:
    body = serialize(LocationResponse(presence=PRESENCE)).replace(b"-34.407 150.883", b"-95 150.883")
    err = _parse_error(body)
    assert err.code is HeldErrorCode.REQUEST_ERROR
    assert "bad Circle" in err.message and "latitude -95.0 out of range" in err.message


VALID = [
    serialize(LocationResponse(presence=PRESENCE, location_uris=["https://lis.example/held/loc/abc"], expires=T0)),
    serialize(LocationRequest(["civic", "geodetic"], True, 250.0, "tel:+1", "10.0.0.1", [("mac", "0a")])),
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_garbled_bodies_give_held_parse_error_only(data) -> None:
    raw = bytearray(data.draw(st.sampled_from(VALID)))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            raw[i] = data.draw(st.sampled_from(b"<>/\"'=0123456789.-:xZ \x00\xff"))
        elif op == "delete":
            del raw[i : i + data.draw(st.integers(1, 40))]
        else:
            raw[i:i] = data.draw(st.sampled_from([b"<x>", b"</presence>", b" exact=\"2\"", b"-999", b"\xe9"]))
        if not raw:
            raw = bytearray(b"<")
    try:
        out = parse(bytes(raw))
    except HeldParseError as exc:
        assert exc.code in (HeldErrorCode.XML_ERROR, HeldErrorCode.REQUEST_ERROR, HeldErrorCode.UNSUPPORTED_MESSAGE)
        return
    assert isinstance(out, (LocationRequest, LocationResponse, HeldError))


# --- serializer refusals ------------------------------------------------------------------------


def test_serialize_refuses_what_rfc5985_cannot_express() -> None:
    with pytest.raises(ValueError, match="expiry"):
        serialize(LocationResponse(location_uris=["http://x/1"]))
    with pytest.raises(ValueError, match="presence or location URIs"):
        serialize(LocationResponse())
    with pytest.raises(ValueError, match="locationType"):
        serialize(LocationRequest(location_types=["postal"]))
    with pytest.raises(ValueError, match="non-negative"):
        serialize(LocationRequest(response_time=-1.0))
    with pytest.raises(ValueError, match="emergencyRouting"):
        serialize(LocationRequest(response_time="whenever"))
    with pytest.raises(ValueError):
        serialize(LocationRequest(device_ip="not-an-ip"))
    with pytest.raises(TypeError):
        serialize("locationRequest")  # type: ignore[arg-type]


def test_plain_string_response_time_and_rounding() -> None:
    assert parse(serialize(LocationRequest(response_time="emergencyDispatch"))) == LocationRequest(
        response_time=ResponseTime.EMERGENCY_DISPATCH
    )
    root = parse_xml(serialize(LocationRequest(response_time=1499.6)))
    assert root.get("responseTime") == "1500"
