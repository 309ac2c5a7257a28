"""What the call-taker is shown of a call (firebox.psap.calldata): identifiers, callback
number, PIDF-LO location by value (RFC 6442, RFC 5491 shapes, RFC 5139 civic) and RFC 7852
additional data by value, read from INVITEs built here; garbled and missing parts; and the
references (a location URI minted by the project's LIS, additional data blocks) fetched
over real HTTP on 127.0.0.1 by ``dereference``."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from firebox.held.codec import LocationRequest, LocationResponse
from firebox.lis.app import create_lis_app
from firebox.lis.service import Lis
from firebox.location.civic import CivicAddress
from firebox.location.shapes import Circle, Point
from firebox.psap.calldata import CallData, call_data, dereference, normalize_callback, summarize_additional_data
from firebox.sip import build_multipart, make_part, parse_message

CALL_ID = "urn:emergency:uid:callid:a7c1d2e3f4:bcf.example.net"
INCIDENT_ID = "urn:emergency:uid:incidentid:77aa88bb:bcf.example.net"

SDP = (
    b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)

PIDF_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"'
    ' xmlns:gml="http://www.opengis.net/gml" xmlns:gs="http://www.opengis.net/pidflo/1.0"'
    ' xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"'
    ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="pres:+16175551212@carrier.example">\n'
)
PIDF_TAIL = (
    "  <gp:usage-rules/>\n  <gp:method>{method}</gp:method>\n </gp:geopriv>\n"
    " <dm:timestamp>2025-06-01T09:00:00Z</dm:timestamp>\n</dm:device>\n</presence>\n"
)


def pidf(location_info: str, method: str = "GPS") -> bytes:
    return (
        PIDF_HEAD + '<dm:device id="phone">\n <gp:geopriv>\n  <gp:location-info>\n'
        + location_info + "\n  </gp:location-info>\n" + PIDF_TAIL.format(method=method)
    ).encode()


POINT = '<gml:Point srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>42.3601 -71.0589</gml:pos></gml:Point>'
CIRCLE = (
    '<gs:Circle srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>42.3601 -71.0589</gml:pos>'
    '<gs:radius uom="urn:ogc:def:uom:EPSG::9001">850.5</gs:radius></gs:Circle>'
)
ELLIPSE = (
    '<gs:Ellipse srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>42.5 -71.2</gml:pos>'
    '<gs:semiMajorAxis uom="urn:ogc:def:uom:EPSG::9001">1275</gs:semiMajorAxis>'
    '<gs:semiMinorAxis uom="urn:ogc:def:uom:EPSG::9001">670</gs:semiMinorAxis>'
    '<gs:orientation uom="urn:ogc:def:uom:EPSG::9102">43.2</gs:orientation></gs:Ellipse>'
)
POLYGON = (
    '<gml:Polygon srsName="urn:ogc:def:crs:EPSG::4326"><gml:exterior><gml:LinearRing>'
    "<gml:pos>42.00 -71.00</gml:pos><gml:pos>42.00 -71.01</gml:pos>"
    "<gml:pos>42.01 -71.01</gml:pos><gml:pos>42.01 -71.00</gml:pos><gml:pos>42.00 -71.00</gml:pos>"
    "</gml:LinearRing></gml:exterior></gml:Polygon>"
)
CIVIC = (
    "<ca:civicAddress><ca:country>US</ca:country><ca:A1>MA</ca:A1><ca:A3>Boston</ca:A3>"
    "<ca:RD>Tremont</ca:RD><ca:STS>ST</ca:STS><ca:HNO>120</ca:HNO><ca:FLR>3</ca:FLR></ca:civicAddress>"
)

PROVIDER_INFO = b"""<?xml version="1.0" encoding="UTF-8"?>
<ad:EmergencyCallData.ProviderInfo xmlns:ad="urn:ietf:params:xml:ns:EmergencyCallData:ProviderInfo"
    xmlns:xc="urn:ietf:params:xml:ns:vcard-4.0">
  <ad:DataProviderReference>flurbit735@es.example.com</ad:DataProviderReference>
  <ad:DataProviderString>Example Wireless Inc.</ad:DataProviderString>
  <ad:ProviderID>ID123</ad:ProviderID>
  <ad:ProviderIDSeries>NENA</ad:ProviderIDSeries>
  <ad:TypeOfProvider>Access Infrastructure Provider</ad:TypeOfProvider>
  <ad:ContactURI>tel:+1-201-555-0123</ad:ContactURI>
  <ad:Language>en</ad:Language>
  <ad:DataProviderContact>
    <xc:vcard><xc:fn><xc:text>Example Wireless NOC</xc:text></xc:fn>
      <xc:tel><xc:uri>tel:+1-201-555-0199</xc:uri></xc:tel></xc:vcard>
  </ad:DataProviderContact>
</ad:EmergencyCallData.ProviderInfo>
"""
SERVICE_INFO = b"""<?xml version="1.0" encoding="UTF-8"?>
<svc:EmergencyCallData.ServiceInfo xmlns:svc="urn:ietf:params:xml:ns:EmergencyCallData:ServiceInfo">
  <svc:DataProviderReference>Ab3sdsd8@es.example.com</svc:DataProviderReference>
  <svc:ServiceEnvironment>Residence</svc:ServiceEnvironment>
  <svc:ServiceType>wireless</svc:ServiceType>
  <svc:ServiceType>VOIP</svc:ServiceType>
  <svc:ServiceMobility>Mobile</svc:ServiceMobility>
</svc:EmergencyCallData.ServiceInfo>
"""
DEVICE_INFO = b"""<?xml version="1.0" encoding="UTF-8"?>
<dev:EmergencyCallData.DeviceInfo xmlns:dev="urn:ietf:params:xml:ns:EmergencyCallData:DeviceInfo">
  <dev:DataProviderReference>d4b3072df.201409182208075@es.example.com</dev:DataProviderReference>
  <dev:DeviceClassification>cellular</dev:DeviceClassification>
  <dev:DeviceMfgr>Nokia</dev:DeviceMfgr>
  <dev:DeviceModelNr>Lumia 800</dev:DeviceModelNr>
  <dev:UniqueDeviceID TypeOfDeviceID="IMEI">35788104</dev:UniqueDeviceID>
</dev:EmergencyCallData.DeviceInfo>
"""
SUBSCRIBER_INFO = b"""<?xml version="1.0" encoding="UTF-8"?>
<sub:EmergencyCallData.SubscriberInfo xmlns:sub="urn:ietf:params:xml:ns:EmergencyCallData:SubscriberInfo"
    xmlns:xc="urn:ietf:params:xml:ns:vcard-4.0" privacyRequested="false">
  <sub:DataProviderReference>FightClub@es.example.com</sub:DataProviderReference>
  <sub:SubscriberData>
    <xc:vcards><xc:vcard>
      <xc:fn><xc:text>Simone Perrault</xc:text></xc:fn>
      <xc:n><xc:surname>Perrault</xc:surname><xc:given>Simone</xc:given></xc:n>
      <xc:adr><xc:parameters><xc:type><xc:text>home</xc:text></xc:type></xc:parameters>
        <xc:pobox/><xc:ext/><xc:street>120 Tremont St</xc:street><xc:locality>Boston</xc:locality>
        <xc:region>MA</xc:region><xc:code>02108</xc:code><xc:country>USA</xc:country></xc:adr>
      <xc:tel><xc:uri>tel:+1-617-555-1212</xc:uri></xc:tel>
      <xc:email><xc:text>simone@example.com</xc:text></xc:email>
    </xc:vcard></xc:vcards>
  </sub:SubscriberData>
</sub:EmergencyCallData.SubscriberInfo>
"""
COMMENT = b"""<?xml version="1.0" encoding="UTF-8"?>
<com:EmergencyCallData.Comment xmlns:com="urn:ietf:params:xml:ns:EmergencyCallData:Comment">
  <com:DataProviderReference>string0987654321@example.org</com:DataProviderReference>
  <com:Comment xml:lang="en">Caller is deaf;   uses text.</com:Comment>
</com:EmergencyCallData.Comment>
"""


def invite(
    *,
    headers: list[str] | None = None,
    parts: list | None = None,
    body: bytes | None = None,
    ctype: str | None = None,
    marked: bool = True,
    from_: str = '"Simone" <sip:+16175551212@carrier.example>;tag=f1',
) -> object:
    lines = [
        "INVITE sip:queue@psap.example.net SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-calldata-1",
        "Max-Forwards: 69",
        "To: <urn:service:sos>",
        f"From: {from_}",
        "Call-ID: sip-call-1@carrier.example",
        "CSeq: 1 INVITE",
        "Contact: <sip:caller@127.0.0.1:5070>",
    ]
    if marked:
        lines += [f"Call-Info: <{CALL_ID}>;purpose=emergency-CallId",
                  f"Call-Info: <{INCIDENT_ID}>;purpose=emergency-IncidentId"]  # fmt: skip
    lines += headers or []
    if parts is not None:
        ctype, body = build_multipart(parts)
    if body is not None:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {len(body or b'')}")
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))


def full_invite(location_info: str = CIRCLE) -> object:
    parts = [
        make_part("application/sdp", SDP),
        make_part("application/pidf+xml", pidf(location_info), content_id="loc1@carrier.example"),
        make_part("application/EmergencyCallData.ProviderInfo+xml", PROVIDER_INFO, content_id="pi@carrier.example"),
        make_part("application/EmergencyCallData.ServiceInfo+xml", SERVICE_INFO, content_id="si@carrier.example"),
        make_part("application/EmergencyCallData.DeviceInfo+xml", DEVICE_INFO, content_id="di@carrier.example"),
        make_part("application/EmergencyCallData.SubscriberInfo+xml", SUBSCRIBER_INFO, content_id="su@carrier.example"),
        make_part("application/EmergencyCallData.Comment+xml", COMMENT, content_id="co@carrier.example"),
    ]  # fmt: skip
    headers = [
        "P-Asserted-Identity: <sip:+1-617-555-1212@carrier.example;user=phone>",
        "Geolocation: <cid:loc1@carrier.example>",
        "Geolocation-Routing: yes",
        "Call-Info: <cid:pi@carrier.example>;purpose=EmergencyCallData.ProviderInfo,"
        " <cid:si@carrier.example>;purpose=EmergencyCallData.ServiceInfo",
        "Call-Info: <cid:di@carrier.example>;purpose=EmergencyCallData.DeviceInfo",
        "Call-Info: <cid:su@carrier.example>;purpose=EmergencyCallData.SubscriberInfo",
        "Call-Info: <cid:co@carrier.example>;purpose=EmergencyCallData.Comment",
    ]
    return invite(headers=headers, parts=parts)


# --- by value ------------------------------------------------------------------------------------


def test_a_full_ng911_invite_gives_everything_the_call_taker_reads():
    data = call_data(full_invite())
    assert data.call_id == CALL_ID and data.incident_id == INCIDENT_ID
    assert data.sip_call_id == "sip-call-1@carrier.example"
    assert data.callback == "+16175551212"  # from P-Asserted-Identity, separators dropped
    assert data.caller_uri == "sip:+16175551212@carrier.example"
    loc = data.location
    assert loc is not None and (loc.shape, loc.lat, loc.lon, loc.radius_m) == ("circle", 42.3601, -71.0589, 850.5)
    assert loc.source == "value" and loc.method == "GPS"
    assert data.pidf == pidf(CIRCLE) and data.location_reference is None and data.references == ()
    by_purpose = {v.purpose: v for v in data.additional_data}
    assert [v.by for v in data.additional_data] == ["value"] * 5
    assert by_purpose["EmergencyCallData.ProviderInfo"].summary == {
        "provider": "Example Wireless Inc.", "provider_id": "ID123",
        "provider_type": "Access Infrastructure Provider", "contact": "tel:+1-201-555-0123",
        "language": "en", "contact_name": "Example Wireless NOC", "contact_tel": "tel:+1-201-555-0199",
    }  # fmt: skip
    assert by_purpose["EmergencyCallData.ServiceInfo"].summary == {
        "environment": "Residence", "service_type": "wireless, VOIP", "mobility": "Mobile"}  # fmt: skip
    assert by_purpose["EmergencyCallData.DeviceInfo"].summary == {
        "classification": "cellular", "manufacturer": "Nokia", "model": "Lumia 800", "device_id": "IMEI 35788104"}  # fmt: skip
    assert by_purpose["EmergencyCallData.SubscriberInfo"].summary == {
        "privacy_requested": "false", "name": "Simone Perrault", "address": "120 Tremont St, Boston, MA, 02108, USA",
        "tel": "tel:+1-617-555-1212", "email": "simone@example.com"}  # fmt: skip
    assert by_purpose["EmergencyCallData.Comment"].summary == {"comment": "Caller is deaf; uses text."}
    assert by_purpose["EmergencyCallData.Comment"].uri == "cid:co@carrier.example"
    assert data.problems == ()


@pytest.mark.parametrize(
    ("info", "shape", "lat", "lon", "radius"),
    [
        (POINT, "point", 42.3601, -71.0589, None),
        (ELLIPSE, "circle", 42.5, -71.2, 1275.0),  # the ellipse's covering circle
    ],
)
def test_point_and_ellipse(info, shape, lat, lon, radius):
    loc = call_data(full_invite(info)).location
    assert loc is not None and (loc.shape, loc.lat, loc.lon, loc.radius_m) == (shape, lat, lon, radius)


def test_a_polygon_is_a_point_inside_it_with_a_radius_reaching_every_vertex():
    loc = call_data(full_invite(POLYGON)).location
    assert loc is not None and loc.shape == "polygon"
    assert 42.0 < loc.lat < 42.01 and -71.01 < loc.lon < -71.0
    # the square is about 1.11 km by 0.83 km: its farthest corner lies 0.7 km to 1.4 km away
    assert loc.radius_m is not None and 690 < loc.radius_m < 1390


def test_civic_only_and_compound_locations():
    civic = call_data(full_invite(CIVIC)).location
    assert civic is not None and civic.shape == "civic" and civic.lat is None
    assert civic.civic == {"country": "US", "A1": "MA", "A3": "Boston", "STS": "ST", "HNO": "120", "FLR": "3", "RD": "Tremont"}
    both = call_data(full_invite(POINT + CIVIC)).location
    assert both is not None and both.shape == "point" and both.civic["HNO"] == "120"


def test_a_pidf_lo_body_without_geolocation_header_is_still_read():
    data = call_data(invite(body=pidf(POINT), ctype="application/pidf+xml"))
    assert data.location is not None and data.location.shape == "point"
    assert any("without a Geolocation header" in p for p in data.problems)


def test_garbled_pidf_lo_gives_no_location_and_a_warning_never_an_exception(caplog):
    bad = pidf(POINT).replace(b"42.3601 -71.0589", b"north of the river")
    parts = [make_part("application/sdp", SDP), make_part("application/pidf+xml", bad, content_id="loc@c")]
    with caplog.at_level(logging.WARNING, logger="firebox.psap.calldata"):
        data = call_data(invite(headers=["Geolocation: <cid:loc@c>"], parts=parts))
    assert data.location is None and data.pidf is None
    assert any("garbled PIDF-LO" in p for p in data.problems)
    assert any("garbled PIDF-LO" in r.getMessage() and CALL_ID in r.getMessage() for r in caplog.records)
    truncated = call_data(invite(headers=["Geolocation: <cid:loc@c>"], parts=[
        make_part("application/pidf+xml", pidf(POINT)[:150], content_id="loc@c")]))  # fmt: skip
    assert truncated.location is None and any("garbled" in p for p in truncated.problems)


def test_a_broken_multipart_body_and_dangling_cids_are_problems_not_failures():
    body = b"--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n"  # no closing delimiter
    data = call_data(invite(headers=["Geolocation: <cid:loc@c>",
                                     "Call-Info: <cid:pi@c>;purpose=EmergencyCallData.ProviderInfo"],
                            body=body, ctype="multipart/mixed; boundary=b1"))  # fmt: skip
    assert data.location is None
    assert data.additional_data[0].summary == {"problem": "no body part has that Content-ID"}
    assert any("closing delimiter" in p for p in data.problems)


def test_the_esrps_default_location_is_shown_as_a_default_not_as_the_callers():
    """A call whose PIDF-LO was garbled reaches the PSAP with the ESRP's default location
    added (firebox.esrp.location.add_default): the call-taker must see it is a default."""
    from firebox.esrp.location import add_default
    from firebox.location.pidf import PidfLocation, Presence

    bad = pidf(POINT).replace(b"42.3601 -71.0589", b"north of the river")
    parts = [make_part("application/sdp", SDP), make_part("application/pidf+xml", bad, content_id="loc@c")]
    default = Presence("pres:default@esrp.example", [PidfLocation(shapes=[Point(lat=42.0, lon=-71.5)], method="Manual")])
    routed, cid = add_default(invite(headers=["Geolocation: <cid:loc@c>"], parts=parts), default, "esrp.example")
    data = call_data(routed)
    assert data.location is not None and data.location.source == "default"
    assert (data.location.lat, data.location.lon) == (42.0, -71.5)
    # The caller's own location by value is still "value".
    good = call_data(invite(headers=["Geolocation: <cid:loc@c>"], parts=[make_part("application/pidf+xml", pidf(POINT), content_id="loc@c")]))
    assert good.location is not None and good.location.source == "value"


def test_an_unreadable_block_is_shown_as_such():
    parts = [make_part("application/EmergencyCallData.DeviceInfo+xml", PROVIDER_INFO, content_id="d@c")]
    data = call_data(invite(headers=["Call-Info: <cid:d@c>;purpose=EmergencyCallData.DeviceInfo"], parts=parts))
    (view,) = data.additional_data
    assert view.by == "value" and "is not <EmergencyCallData.DeviceInfo>" in view.summary["problem"]
    with pytest.raises(ValueError, match="malformed XML"):
        summarize_additional_data("EmergencyCallData.Comment", b"<com:EmergencyCallData.Comment")


def test_an_unmarked_call_with_no_body_still_has_an_identity():
    data = call_data(invite(marked=False))
    assert data.call_id == "sip-call-1@carrier.example" and data.incident_id is None
    assert data.callback == "+16175551212" and data.location is None and data.additional_data == ()
    assert any("emergency-CallId" in p for p in data.problems)
    bad_urn = call_data(invite(marked=False, headers=["Call-Info: <urn:emergency:uid:callid:x>;purpose=emergency-CallId"]))
    assert bad_urn.call_id == "sip-call-1@carrier.example"
    assert any("must be urn:emergency:uid:callid" in p for p in bad_urn.problems)


def test_missing_from_and_call_id_do_not_raise():
    raw = (b"MESSAGE sip:queue@psap.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-x\r\n"
           b"CSeq: 1 MESSAGE\r\nTo: <urn:service:sos>\r\nFrom: <sip:x@y>;tag=1\r\nCall-ID: c\r\n"
           b"Content-Length: 0\r\n\r\n")  # fmt: skip
    request = parse_message(raw)
    request.headers.remove("From")
    request.headers.remove("Call-ID")
    data = call_data(request)
    assert (data.call_id, data.callback, data.caller_uri) == ("", None, "")


@pytest.mark.parametrize(
    ("uri", "number"),
    [
        ("tel:+1-617-555-1212", "+16175551212"),
        ("<tel:+16175551212;phone-context=+1>", "+16175551212"),
        ("sip:6175551212@carrier.example;user=phone", "+16175551212"),
        ("sip:1 (617) 555-1212@carrier.example", None),  # a space: not a URI at all
        ("sips:16175551212@carrier.example", "+16175551212"),
        ("sip:911@carrier.example", "911"),
        ("sip:alice@example.com", "sip:alice@example.com"),
        ('"Anonymous" <sip:anonymous@anonymous.invalid>;tag=9', None),
        ("tel:not-a-number", None),
        ("", None),
    ],
)
def test_callback_numbers(uri, number):
    assert normalize_callback(uri) == number


def test_from_is_the_callback_when_there_is_no_asserted_identity():
    data = call_data(invite(from_="<tel:+1-508-555-0100>;tag=9"))
    assert data.callback == "+15085550100" and data.caller_uri == "tel:+1-508-555-0100"


# --- by reference, fetched over HTTP -------------------------------------------------------------


@pytest.fixture
async def served() -> AsyncIterator[tuple[Lis, str]]:
    """The project's LIS (HELD dereference, RFC 6753) and additional data blocks (RFC 7852
    section 4.2), one Starlette app served by uvicorn on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    lis = Lis(base)
    app = create_lis_app(lis, base)
    blocks = {"provider": PROVIDER_INFO, "device": DEVICE_INFO, "garbage": b"<not-additional-data/>"}

    async def block(request: HttpRequest) -> Response:
        name = request.path_params["name"]
        if name == "slow":
            await asyncio.sleep(1.5)
        if name not in blocks:
            return Response(status_code=404)
        return Response(blocks[name], media_type=request.headers.get("accept", "application/xml"))

    app.add_route("/adr/{name}", block, methods=["GET"])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):  # bounded wait for start-up
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "test server did not start"
    try:
        yield lis, base
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def location_uri(lis: Lis) -> str:
    now = datetime.now(UTC)
    lis.set_location("tel:+16175551212", (Circle(Point(42.36, -71.06), 25.0),
                     CivicAddress(country="US", A1="MA", A3="Boston", RD="Tremont", HNO="120")),
                     method="Wiremap")  # fmt: skip
    out = lis.handle(LocationRequest(location_types=["locationURI"], device_uri="tel:+16175551212"), now)
    assert isinstance(out, LocationResponse) and out.location_uris
    return out.location_uris[0]


def referenced_invite(loc_uri: str, base: str, names: list[str]) -> object:
    headers = [f"Geolocation: <{loc_uri}>"]
    headers += [f"Call-Info: <{base}/adr/{n}>;purpose=EmergencyCallData.{'DeviceInfo' if n == 'device' else 'ProviderInfo'}"
                for n in names]  # fmt: skip
    return invite(headers=headers, body=SDP, ctype="application/sdp")


async def test_references_are_listed_then_fetched_through_held_and_get(served):
    lis, base = served
    loc_uri = location_uri(lis)
    data = call_data(referenced_invite(loc_uri, base, ["provider", "device"]))
    assert data.location is None and data.location_reference == loc_uri
    assert data.references == (loc_uri, f"{base}/adr/provider", f"{base}/adr/device")
    assert [(v.by, v.summary) for v in data.additional_data] == [("reference", {}), ("reference", {})]
    async with httpx.AsyncClient() as http:
        done = await dereference(data, http)
    assert isinstance(done, CallData) and done.references == ()
    loc = done.location
    assert loc is not None and (loc.shape, loc.lat, loc.lon, loc.radius_m) == ("circle", 42.36, -71.06, 25.0)
    assert loc.source == "reference" and loc.method == "Wiremap" and loc.civic["RD"] == "Tremont"
    assert done.pidf is not None and b"Tremont" in done.pidf
    provider, device = done.additional_data
    assert provider.summary["provider"] == "Example Wireless Inc." and provider.by == "reference"
    assert device.summary["model"] == "Lumia 800" and device.uri == f"{base}/adr/device"


async def test_failed_references_stay_as_they_were(served, caplog):
    lis, base = served
    loc_uri = location_uri(lis)
    lis.forget("tel:+16175551212")  # the LIS answers locationUnknown
    data = call_data(referenced_invite(loc_uri, base, ["garbage", "missing", "slow"]))
    async with httpx.AsyncClient() as http:
        with caplog.at_level(logging.WARNING, logger="firebox.psap.calldata"):
            done = await dereference(data, http, timeout=0.3)
    assert done is data  # nothing fetched: the same object
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "no location is currently known" in text and "HTTP 404" in text and "unreadable" in text and "no answer within 0.3 s" in text


async def test_an_unreachable_lis_is_logged(caplog):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    data = call_data(invite(headers=[f"Geolocation: <http://127.0.0.1:{port}/held/loc/x>"]))
    async with httpx.AsyncClient() as http:
        done = await dereference(data, http, timeout=1.0)
    assert done is data and data.references == (f"http://127.0.0.1:{port}/held/loc/x",)
