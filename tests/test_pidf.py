"""PIDF-LO codec (RFC 4119, RFC 5139 civic, RFC 5491 shapes and rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from firebox.location.civic import CivicAddress
from firebox.location.pidf import (
    NS_DM,
    NS_GP,
    NS_PIDF,
    ElementKind,
    PidfError,
    PidfLocation,
    Presence,
    best_location,
    parse_pidf,
    presence_element,
    serialize_pidf,
)
from firebox.location.shapes import ArcBand, Circle, Ellipse, Point, Polygon
from firebox.xmlsafe import parse_xml

GML = "http://www.opengis.net/gml"
GS = "http://www.opengis.net/pidflo/1.0"
SRS = "urn:ogc:def:crs:EPSG::4326"
T0 = datetime(2025, 3, 1, 12, 30, 15, tzinfo=UTC)
CENTER = Point(42.3601, -71.0589)
ADDRESS = CivicAddress(
    country="US", A1="MA", A2="Suffolk", A3="Boston", RD="Tremont", STS="ST", HNO="120", PC="02108"
)

SHAPES = {
    "point": CENTER,
    "circle": Circle(CENTER, 25.5),
    "ellipse": Ellipse(CENTER, 120.0, 40.0, 33.5),
    "arcband": ArcBand(CENTER, 100.0, 650.0, 270.0, 45.0),
    "polygon": Polygon((Point(42.0, -71.0), Point(42.1, -71.0), Point(42.1, -71.1), Point(42.0, -71.1))),
}


def doc(body: str, *, entity: str = "pres:alice@example.com", extra_ns: str = "") -> str:
    return (
        f'<presence xmlns="{NS_PIDF}" xmlns:gp="{NS_GP}" xmlns:dm="{NS_DM}" '
        f'xmlns:gml="{GML}" xmlns:gs="{GS}" '
        f'xmlns:gbp="urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy" '
        f'xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" {extra_ns} entity="{entity}">'
        f"{body}</presence>"
    )


def tuple_with(info: str, *, rules: str = "", tail: str = "", tid: str = "t1") -> str:
    return doc(
        f'<tuple id="{tid}"><status><gp:geopriv><gp:location-info>{info}</gp:location-info>'
        f"<gp:usage-rules>{rules}</gp:usage-rules></gp:geopriv></status>{tail}</tuple>"
    )


POINT_XML = f'<gml:Point srsName="{SRS}"><gml:pos>42.5 -71.25</gml:pos></gml:Point>'


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_round_trip_each_shape(name: str) -> None:
    loc = PidfLocation(shapes=[SHAPES[name]], method="GPS", timestamp=T0, element_id="a1")
    presence = Presence("pres:alice@example.com", [loc])
    back = parse_pidf(serialize_pidf(presence))
    assert back == presence
    assert back.locations[0].shape == SHAPES[name]


def test_round_trip_civic_and_compound() -> None:
    civic_only = PidfLocation(civic=ADDRESS, method="Manual", element_id="c")
    compound = PidfLocation(shapes=[SHAPES["circle"]], civic=ADDRESS, method="Wiremap", element_id="b")
    presence = Presence("tel:+16175551212", [compound, civic_only])
    back = parse_pidf(serialize_pidf(presence))
    assert back == presence
    assert back.locations[0].civic is not None and back.locations[0].civic.A3 == "Boston"
    assert back.locations[1].shapes == []


def test_round_trip_usage_rules_device_and_person() -> None:
    expiry = T0 + timedelta(hours=24)
    device = PidfLocation(
        shapes=[SHAPES["point"]],
        method="A-GPS",
        timestamp=datetime(2025, 3, 1, 8, 0, tzinfo=timezone(timedelta(hours=-5))),
        element_id="dev1",
        element=ElementKind.DEVICE,
        retransmission_allowed=True,
        retention_expiry=expiry,
        ruleset_reference="https://lis.example/rules/7",
        note_well="for emergency use only",
        device_id="mac:00-11-22-33-44-55",
    )
    person = PidfLocation(civic=ADDRESS, element_id="p1", element=ElementKind.PERSON, timestamp=T0)
    tup = PidfLocation(shapes=[SHAPES["polygon"]], element_id="t1")
    presence = Presence("pres:bob@example.com", [tup, device, person])
    xml = serialize_pidf(presence)
    back = parse_pidf(xml)
    assert back == presence
    root = parse_xml(xml)
    # Tuples first, then the data-model elements, as the PIDF schema orders them.
    assert [etree.QName(c).localname for c in root] == ["tuple", "device", "person"]
    assert root[1].find(f"{{{NS_DM}}}deviceID").text == "mac:00-11-22-33-44-55"


def test_writer_puts_tuples_before_devices() -> None:
    presence = Presence("pres:x@example.com", [
        PidfLocation(shapes=[CENTER], element=ElementKind.DEVICE, element_id="d"),
        PidfLocation(civic=ADDRESS, element_id="t"),
    ])  # fmt: skip
    back = parse_pidf(serialize_pidf(presence))
    assert [loc.element_id for loc in back.locations] == ["t", "d"]


def test_generated_ids_and_canonical_namespaces() -> None:
    presence = Presence("pres:x@example.com", [PidfLocation(shapes=[SHAPES["circle"]])])
    root = presence_element(presence)
    tup = root.find(f"{{{NS_PIDF}}}tuple")
    assert tup is not None and tup.get("id") == "loc1"
    info = tup.find(f"{{{NS_PIDF}}}status/{{{NS_GP}}}geopriv/{{{NS_GP}}}location-info")
    assert info is not None and info[0].tag == f"{{{GS}}}Circle"
    # The embedded element parses the same as the document.
    assert parse_pidf(root).locations[0].shapes == [SHAPES["circle"]]
    assert parse_pidf(root).locations[0].element_id == "loc1"


coord_lat = st.floats(-90.0, 90.0, allow_nan=False, allow_infinity=False)
coord_lon = st.floats(-180.0, 180.0, allow_nan=False, allow_infinity=False)
points = st.builds(Point, lat=coord_lat, lon=coord_lon)
circles = st.builds(Circle, center=points, radius=st.floats(0.0, 1e7, allow_nan=False))
stamps = st.none() | st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
methods = st.none() | st.sampled_from(["GPS", "A-GPS", "Cell", "Manual", "DHCP", "802.11"])


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    shapes=st.lists(points | circles, min_size=1, max_size=4),
    stamp=stamps,
    method=methods,
    retransmit=st.booleans(),
)
def test_property_round_trip_points_and_circles(shapes, stamp, method, retransmit) -> None:
    presence = Presence(
        "pres:prop@example.com",
        [
            PidfLocation(
                shapes=[s], method=method, timestamp=stamp, element_id=f"e{i}",
                retransmission_allowed=retransmit,
            )
            for i, s in enumerate(shapes)
        ],
    )  # fmt: skip
    assert parse_pidf(serialize_pidf(presence)) == presence


# --- reading what others write -----------------------------------------------------------


@pytest.mark.parametrize("ns_prefix", ["gml", "gs"], ids=["gml-namespace", "pidflo-geoshape"])
def test_shapes_in_either_namespace(ns_prefix: str) -> None:
    info = (
        f'<{ns_prefix}:Circle srsName="{SRS}"><gml:pos>42.5 -71.25</gml:pos>'
        f'<{ns_prefix}:radius uom="urn:ogc:def:uom:EPSG::9001">850.24</{ns_prefix}:radius>'
        f"</{ns_prefix}:Circle>"
    )
    presence = parse_pidf(tuple_with(info))
    assert presence.locations[0].shapes == [Circle(Point(42.5, -71.25), 850.24)]


def test_rfc4119_style_document() -> None:
    """RFC 4119 section 2.2: shapes wrapped in <gml:location>, usage rules in the gp
    namespace with yes/no, timestamp in the tuple."""
    xml = doc(
        '<tuple id="sg89ae"><status><gp:geopriv><gp:location-info>'
        f"<gml:location>{POINT_XML}</gml:location></gp:location-info>"
        "<gp:usage-rules><gp:retransmission-allowed>yes</gp:retransmission-allowed>"
        "<gp:retention-expiry>2003-06-23T04:57:29Z</gp:retention-expiry></gp:usage-rules>"
        "</gp:geopriv></status><timestamp>2003-06-22T20:57:29Z</timestamp></tuple>",
        entity="pres:geotarget@example.com",
    )
    loc = parse_pidf(xml).locations[0]
    assert loc.shapes == [Point(42.5, -71.25)]
    assert loc.retransmission_allowed is True
    assert loc.retention_expiry == datetime(2003, 6, 23, 4, 57, 29, tzinfo=UTC)
    assert loc.timestamp == datetime(2003, 6, 22, 20, 57, 29, tzinfo=UTC)
    assert loc.element_id == "sg89ae"


def test_rfc5491_style_device_with_compound_location() -> None:
    xml = doc(
        '<dm:device id="mobile-1"><gp:geopriv><gp:location-info>'
        f"{POINT_XML}<ca:civicAddress><ca:country>US</ca:country><ca:A1>MA</ca:A1>"
        "<ca:A3>Cambridge</ca:A3><ca:RD>Broadway</ca:RD><ca:HNO>1</ca:HNO></ca:civicAddress>"
        '<con:confidence xmlns:con="urn:ietf:params:xml:ns:geopriv:conf" pdf="normal">95</con:confidence>'
        "</gp:location-info><gp:usage-rules>"
        "<gbp:retransmission-allowed>false</gbp:retransmission-allowed></gp:usage-rules>"
        "<gp:method>Wiremap</gp:method></gp:geopriv>"
        "<dm:deviceID>mac:8asd7d7d70</dm:deviceID>"
        "<dm:timestamp>2007-06-22T20:57:29.50+10:00</dm:timestamp></dm:device>"
    )
    loc = parse_pidf(xml).locations[0]
    assert loc.element is ElementKind.DEVICE and loc.device_id == "mac:8asd7d7d70"
    assert loc.shapes == [Point(42.5, -71.25)]
    assert loc.civic == CivicAddress(country="US", A1="MA", A3="Cambridge", RD="Broadway", HNO="1")
    assert loc.method == "Wiremap"
    assert loc.timestamp == datetime(2007, 6, 22, 10, 57, 29, 500000, tzinfo=UTC)


def test_one_location_per_geopriv_and_skipping_tuples_without_one() -> None:
    xml = doc(
        '<tuple id="plain"><status><basic>open</basic></status></tuple>'
        '<tuple id="two"><status>'
        f"<gp:geopriv><gp:location-info>{POINT_XML}</gp:location-info></gp:geopriv>"
        "<gp:geopriv><gp:location-info><ca:civicAddress><ca:country>US</ca:country>"
        "</ca:civicAddress></gp:location-info></gp:geopriv></status></tuple>"
        f'<dm:person id="me"><gp:geopriv><gp:location-info>{POINT_XML}</gp:location-info>'
        "</gp:geopriv></dm:person>"
    )
    locs = parse_pidf(xml).locations
    assert [(loc.element_id, loc.element) for loc in locs] == [
        ("two", ElementKind.TUPLE), ("two", ElementKind.TUPLE), ("me", ElementKind.PERSON)
    ]  # fmt: skip
    assert locs[0].civic is None and locs[1].shapes == [] and locs[1].civic == CivicAddress(country="US")
    # Absent usage rules mean the defaults.
    assert locs[0].retransmission_allowed is False and locs[0].retention_expiry is None


def test_naive_timestamp_is_utc_and_text_input_accepted() -> None:
    xml = tuple_with(POINT_XML, tail="<timestamp>2025-01-02T03:04:05</timestamp>")
    assert parse_pidf(xml).locations[0].timestamp == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_pidf(xml.encode()).locations[0].timestamp == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_missing_entity_is_tolerated() -> None:
    xml = tuple_with(POINT_XML).replace('entity="pres:alice@example.com"', "")
    assert parse_pidf(xml).entity == ""


# --- best_location -------------------------------------------------------------------------


def test_best_location_prefers_first_geodetic_then_civic() -> None:
    civic = PidfLocation(civic=ADDRESS, element_id="c")
    geo1 = PidfLocation(shapes=[SHAPES["circle"]], element_id="g1")
    geo2 = PidfLocation(shapes=[SHAPES["point"]], element_id="g2")
    assert best_location(Presence("x:y", [civic, geo1, geo2])) is geo1
    assert best_location(Presence("x:y", [civic])) is civic
    assert best_location(Presence("x:y", [])) is None
    # And after a round trip through the XML.
    back = parse_pidf(serialize_pidf(Presence("pres:a@b", [civic, geo2])))
    best = best_location(back)
    assert best is not None and best.shapes == [SHAPES["point"]]


# --- errors ----------------------------------------------------------------------------------


def _error(data: bytes | str) -> str:
    with pytest.raises(PidfError) as info:
        parse_pidf(data)
    assert type(info.value) is PidfError
    return str(info.value)


def test_not_xml() -> None:
    assert "malformed XML" in _error(b"<presence")
    assert "empty body" in _error(b"   ")
    assert "entity" in _error(b'<!DOCTYPE x [<!ENTITY a "b">]><x/>').lower()


def test_wrong_root() -> None:
    assert "<locationResponse> is not a PIDF <presence>" in _error(
        '<locationResponse xmlns="urn:ietf:params:xml:ns:geopriv:held"/>'
    )
    msg = _error('<presence xmlns="urn:example:other" entity="x:y"/>')
    assert "urn:example:other" in msg and NS_PIDF in msg


def test_no_location_anywhere() -> None:
    msg = _error(doc('<tuple id="t"><status><basic>open</basic></status></tuple>'))
    assert "presence holds no location" in msg


def test_geopriv_without_location_info() -> None:
    msg = _error(doc('<tuple id="t9"><status><gp:geopriv><gp:usage-rules/></gp:geopriv></status></tuple>'))
    assert msg == "tuple 't9': <gp:geopriv> has no <gp:location-info>"


def test_empty_or_unknown_location_info() -> None:
    assert "location-info holds no geodetic shape" in _error(tuple_with(""))
    msg = _error(tuple_with('<gml:LineString srsName="x"><gml:posList>1 2 3 4</gml:posList></gml:LineString>'))
    assert "found <LineString in http://www.opengis.net/gml>" in msg
    # A shape in an unknown namespace is not a shape.
    msg = _error(tuple_with('<x:Point xmlns:x="urn:x"><x:pos>1 2</x:pos></x:Point>'))
    assert "found <Point in urn:x>" in msg


def test_bad_shapes_are_named() -> None:
    polygon = (
        f'<gml:Polygon srsName="{SRS}"><gml:exterior><gml:LinearRing>'
        "<gml:pos>42 -71</gml:pos><gml:pos>42.1 -71</gml:pos></gml:LinearRing></gml:exterior></gml:Polygon>"
    )
    msg = _error(tuple_with(polygon))
    assert msg.startswith("tuple 't1': bad Polygon:") and "at least 3 distinct vertices" in msg
    circle = f'<gs:Circle srsName="{SRS}"><gml:pos>42 -71</gml:pos></gs:Circle>'
    assert "bad Circle" in (m := _error(tuple_with(circle))) and "missing <radius>" in m
    neg = f'<gs:Circle srsName="{SRS}"><gml:pos>42 -71</gml:pos><gs:radius uom="urn:ogc:def:uom:EPSG::9001">-5</gs:radius></gs:Circle>'
    assert "radius must be a non-negative" in _error(tuple_with(neg))
    band = (
        f'<gs:ArcBand srsName="{SRS}"><gml:pos>42 -71</gml:pos>'
        '<gs:innerRadius uom="urn:ogc:def:uom:EPSG::9001">500</gs:innerRadius>'
        '<gs:outerRadius uom="urn:ogc:def:uom:EPSG::9001">100</gs:outerRadius>'
        '<gs:startAngle uom="urn:ogc:def:uom:EPSG::9102">0</gs:startAngle>'
        '<gs:openingAngle uom="urn:ogc:def:uom:EPSG::9102">90</gs:openingAngle></gs:ArcBand>'
    )
    assert "outerRadius 100.0 is smaller than innerRadius 500.0" in _error(tuple_with(band))
    no_srs = "<gml:Point><gml:pos>42 -71</gml:pos></gml:Point>"
    assert "missing srsName" in _error(tuple_with(no_srs))
    other_srs = '<gml:Point srsName="urn:ogc:def:crs:EPSG::3857"><gml:pos>42 -71</gml:pos></gml:Point>'
    assert "unsupported srsName" in _error(tuple_with(other_srs))
    # A malformed attribute below the shape (ValueError inside gml) is still a PidfError.
    dim = (
        f'<gml:Polygon srsName="{SRS}"><gml:exterior><gml:LinearRing>'
        '<gml:posList srsDimension="two">42 -71 42.1 -71 42.1 -71.1 42 -71</gml:posList>'
        "</gml:LinearRing></gml:exterior></gml:Polygon>"
    )
    assert "bad Polygon" in _error(tuple_with(dim))


@pytest.mark.parametrize(
    ("pos", "expected"),
    [
        ("91 -71", "latitude 91.0 out of range"),
        ("42 -181", "longitude -181.0 out of range"),
        ("42 west", "is not a list of numbers"),
        ("42", "expected 'latitude longitude'"),
        ("nan 5", "finite"),
    ],
)
def test_bad_coordinates(pos: str, expected: str) -> None:
    msg = _error(tuple_with(f'<gml:Point srsName="{SRS}"><gml:pos>{pos}</gml:pos></gml:Point>'))
    assert "bad Point" in msg and expected in msg


def test_bad_civic() -> None:
    two = "<ca:civicAddress><ca:country>US</ca:country></ca:civicAddress>" * 2
    assert "more than one civicAddress" in _error(tuple_with(two))
    assert "civicAddress holds no RFC 5139 element" in _error(tuple_with("<ca:civicAddress/>"))
    # An empty civic beside a shape is dropped, not an error.
    loc = parse_pidf(tuple_with(POINT_XML + "<ca:civicAddress/>")).locations[0]
    assert loc.civic is None and loc.shapes == [Point(42.5, -71.25)]


def test_bad_usage_rules_and_timestamps() -> None:
    bad_bool = "<gbp:retransmission-allowed>maybe</gbp:retransmission-allowed>"
    assert "retransmission-allowed 'maybe' is not a boolean" in _error(tuple_with(POINT_XML, rules=bad_bool))
    bad_expiry = "<gbp:retention-expiry>tomorrow</gbp:retention-expiry>"
    assert "retention-expiry: 'tomorrow' is not an RFC 3339 timestamp" in _error(
        tuple_with(POINT_XML, rules=bad_expiry)
    )
    bad_stamp = "<timestamp>2025-02-30T00:00:00Z</timestamp>"
    assert "tuple 't1': timestamp" in _error(tuple_with(POINT_XML, tail=bad_stamp))


VALID = serialize_pidf(
    Presence("pres:f@example.com", [
        PidfLocation(shapes=[SHAPES["ellipse"]], civic=ADDRESS, method="GPS", timestamp=T0,
                     retention_expiry=T0, element_id="f1"),
        PidfLocation(shapes=[SHAPES["polygon"]], element=ElementKind.DEVICE, element_id="f2",
                     device_id="mac:1"),
    ])
)  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_garbled_documents_give_pidf_error_only(data) -> None:
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        i = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[i] = data.draw(st.sampled_from(b"<>/\"'=0123456789.-:xZ \x00\xff"))
        elif op == "delete":
            del raw[i : i + data.draw(st.integers(1, 40))]
        else:
            raw[i:i] = data.draw(st.sampled_from([b"<x>", b"</gp:geopriv>", b"-999", b"&amp;", b"\xe9", b"9e999"]))
        if not raw:
            raw = bytearray(b"<")
    try:
        out = parse_pidf(bytes(raw))
    except PidfError:
        return
    assert isinstance(out, Presence) and out.locations


# --- writer refusals --------------------------------------------------------------------------


def test_writer_refuses_what_rfc5491_cannot_express() -> None:
    with pytest.raises(ValueError, match="one location"):
        serialize_pidf(Presence("a:b", [PidfLocation(shapes=[CENTER, SHAPES["circle"]])]))
    with pytest.raises(ValueError, match="at least one location"):
        serialize_pidf(Presence("a:b", []))
    with pytest.raises(ValueError, match="needs a geodetic shape or a civic address"):
        serialize_pidf(Presence("a:b", [PidfLocation()]))
    with pytest.raises(ValueError, match="no time zone"):
        serialize_pidf(Presence("a:b", [PidfLocation(shapes=[CENTER], timestamp=datetime(2025, 1, 1))]))
    with pytest.raises(ValueError, match="NCName"):
        serialize_pidf(Presence("a:b", [PidfLocation(shapes=[CENTER], element_id="1 bad")]))
    with pytest.raises(ValueError, match="empty"):
        serialize_pidf(Presence("a:b", [PidfLocation(civic=CivicAddress())]))


def test_reader_keeps_extra_shapes_in_order() -> None:
    """A sender putting two shapes in one location-info breaks RFC 5491 section 3; the
    reader keeps both, in order, rather than drop a caller's location."""
    circle = (
        f'<gs:Circle srsName="{SRS}"><gml:pos>42 -71</gml:pos>'
        '<gs:radius uom="urn:ogc:def:uom:EPSG::9001">10</gs:radius></gs:Circle>'
    )
    loc = parse_pidf(tuple_with(POINT_XML + circle)).locations[0]
    assert loc.shapes == [Point(42.5, -71.25), Circle(Point(42, -71), 10)]
    assert loc.shape == Point(42.5, -71.25)
