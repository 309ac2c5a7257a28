"""The ESRP reads the caller's location from the INVITE: by value, by reference, and when it
is missing or garbled, a default added top-most with the originals kept."""

from __future__ import annotations

from firebox.esrp.location import (
    Located,
    NeedDereference,
    NoLocation,
    add_default,
    find_location,
    geolocation_uris,
    resolve_reference,
)
from firebox.location.pidf import PidfLocation, Presence, parse_pidf, serialize_pidf
from firebox.location.shapes import Circle, Point
from firebox.sip import build_multipart, find_by_cid, make_part, parse_message, parse_multipart, serialize

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
CAMBRIDGE = Presence("tel:+16175550100", [PidfLocation(shapes=[Circle(Point(42.3736, -71.1097), 30.0)], method="GPS")])
DEFAULT = Presence("sip:ingress@bcf.example", [PidfLocation(shapes=[Point(42.36, -71.06)], method="Manual")])


def invite(geolocation: list[str], parts: list | None = None, body: bytes = SDP, ctype: str = "application/sdp"):
    if parts is not None:
        ctype, body = build_multipart(parts)
    head = (
        "INVITE urn:service:sos SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1\r\n"
        "From: <sip:+16175550100@carrier.example>;tag=a\r\nTo: <urn:service:sos>\r\n"
        "Call-ID: loc-test@192.0.2.10\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        + "".join(f"Geolocation: {g}\r\n" for g in geolocation)
        + f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return parse_message(head.encode() + body)


def by_value(cid: str = "caller@carrier.example", pidf: bytes | None = None):
    return invite(
        [f"<cid:{cid}>"],
        [make_part("application/sdp", SDP), make_part("application/pidf+xml", pidf or serialize_pidf(CAMBRIDGE), content_id=cid)],
    )


def test_by_value_through_the_cid():
    step = find_location(by_value())
    assert isinstance(step, Located) and step.how == "value" and step.uri == "cid:caller@carrier.example"
    assert step.location.shapes == CAMBRIDGE.locations[0].shapes and step.problems == []


def test_comma_joined_geolocation_values_in_order():
    req = invite(["<https://lis.carrier.example/loc/1>, <cid:x@y>", "<sip:weird@z>"])
    assert geolocation_uris(req) == ["https://lis.carrier.example/loc/1", "cid:x@y", "sip:weird@z"]


def test_by_reference_asks_the_adapter_then_uses_the_answer():
    req = invite(["<https://lis.carrier.example/held/loc/abc>"])
    step = find_location(req)
    assert isinstance(step, NeedDereference) and step.uri == "https://lis.carrier.example/held/loc/abc"
    done = resolve_reference(req, step, serialize_pidf(CAMBRIDGE))
    assert isinstance(done, Located) and done.how == "reference"


def test_failed_reference_falls_through_to_the_next_uri():
    parts = [make_part("application/sdp", SDP), make_part("application/pidf+xml", serialize_pidf(CAMBRIDGE), content_id="v@c")]
    req = invite(["<https://lis.example/held/loc/gone>", "<cid:v@c>"], parts)
    step = find_location(req)
    assert isinstance(step, NeedDereference)
    done = resolve_reference(req, step, None, "connection refused")
    assert isinstance(done, Located) and done.how == "value"
    assert done.problems == ["https://lis.example/held/loc/gone: dereference failed: connection refused"]


def test_missing_garbled_and_dangling_locations_are_named():
    assert find_location(invite([])).problems == ["no Geolocation header"]
    garbled = find_location(by_value(pidf=b"<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple>"))
    assert isinstance(garbled, NoLocation) and "garbled PIDF-LO" in garbled.problems[0]
    dangling = find_location(invite(["<cid:nothing@here>"]))
    assert dangling.problems == ["cid:nothing@here: no body part has that Content-ID"]
    empty = b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="tel:+16175550100"/>'
    problem = find_location(by_value(pidf=empty)).problems[0]
    assert "holds no location" in problem
    bad_reference = resolve_reference(invite(["<http://x/y>"]), NeedDereference("http://x/y", []), b"not xml")
    assert isinstance(bad_reference, NoLocation) and "garbled PIDF-LO from dereference" in bad_reference.problems[0]


def test_the_default_goes_top_most_and_keeps_the_originals():
    original = by_value(pidf=b"garbage")
    req, cid = add_default(original, DEFAULT, "esrp.example")
    # What goes on the wire parses back with our location first and the caller's after it.
    wire = parse_message(serialize(req))
    assert geolocation_uris(wire) == [cid, "cid:caller@carrier.example"]
    assert wire.headers.get("Geolocation-Routing") == "yes"
    parts = parse_multipart(wire.content_type, wire.body)
    assert [p.content_type for p in parts] == ["application/sdp", "application/pidf+xml", "application/pidf+xml"]
    assert parts[0].body == SDP and find_by_cid(parts, "cid:caller@carrier.example").body == b"garbage"
    assert parse_pidf(find_by_cid(parts, cid).body).locations[0].shapes == [Point(42.36, -71.06)]
    step = find_location(wire)
    assert isinstance(step, Located) and step.uri == cid


def test_default_on_a_single_sdp_body_makes_it_multipart():
    req, cid = add_default(invite([]), DEFAULT, "esrp.example")
    parts = parse_multipart(req.content_type, req.body)
    assert parts[0].body == SDP and parts[0].content_type == "application/sdp"
    assert isinstance(find_location(req), Located)
