"""The LIS: sans-I/O core (HELD by value and by reference, RFC 6753 dereference, expiry) and
its Starlette adapter, served by uvicorn on 127.0.0.1 and through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn

from firebox.held.codec import (
    MEDIA_TYPE as HELD_TYPE,
)
from firebox.held.codec import (
    HeldError,
    HeldErrorCode,
    LocationRequest,
    LocationResponse,
    dereference_request,
    parse,
    serialize,
)
from firebox.lis.app import create_lis_app
from firebox.lis.service import Lis, normalize_identity
from firebox.location.civic import CivicAddress
from firebox.location.pidf import best_location, parse_pidf
from firebox.location.shapes import Circle, Point, Polygon
from firebox.xmlsafe import MAX_XML_BYTES

BASE = "https://lis.example.net"
T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
PHONE = "tel:+16175551212"
HOME = Point(42.3601, -71.0589)
AREA = Circle(HOME, 40.0)
ADDRESS = CivicAddress(country="US", A1="MA", A3="Boston", RD="Tremont", STS="ST", HNO="120")


def counter_tokens(prefix: str = "tok") -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"{prefix}{n}"


def make_lis(**kw) -> Lis:
    tokens = counter_tokens()
    kw.setdefault("token_factory", lambda: next(tokens))
    return Lis(BASE, **kw)


def value(out: LocationResponse | HeldError) -> LocationResponse:
    assert isinstance(out, LocationResponse), out
    return out


def error(out: LocationResponse | HeldError, code: HeldErrorCode) -> str:
    assert isinstance(out, HeldError), out
    assert out.code is code
    return out.message


# --- construction ------------------------------------------------------------------------------


def test_uri_lifetime_must_be_in_nena_range() -> None:
    assert Lis(BASE).uri_lifetime == timedelta(minutes=30)
    assert Lis(BASE, timedelta(hours=24)).uri_lifetime == timedelta(hours=24)
    for bad in (timedelta(minutes=29), timedelta(hours=24, seconds=1), timedelta(0)):
        with pytest.raises(ValueError, match="NENA"):
            Lis(BASE, bad)
    with pytest.raises(ValueError):
        Lis("  ")


def test_identity_normalisation() -> None:
    assert normalize_identity("tel:+1-617-555-1212") == PHONE
    assert normalize_identity("TEL:+1 (617) 555.1212") == PHONE
    assert normalize_identity("::ffff:192.0.2.7") == "192.0.2.7"
    assert normalize_identity("2001:DB8::0:1") == "2001:db8::1"
    assert normalize_identity("SIP:alice@example.com") == "sip:alice@example.com"
    with pytest.raises(ValueError):
        normalize_identity(" ")


def test_set_location_keeps_the_other_form_unless_replaced() -> None:
    lis = make_lis()
    lis.set_location(PHONE, AREA, now=T0)
    rec = lis.set_location("tel:+1-617-555-1212", ADDRESS, method="Manual")
    assert rec.shape == AREA and rec.civic == ADDRESS and rec.method == "Manual" and rec.updated is None
    rec = lis.set_location(PHONE, HOME, replace=True, now=T0)
    assert rec.shape == HOME and rec.civic is None
    rec = lis.set_location(PHONE, (AREA, ADDRESS), now=T0)
    assert (rec.shape, rec.civic) == (AREA, ADDRESS)
    with pytest.raises(TypeError):
        lis.set_location(PHONE, "42 -71")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        lis.set_location(PHONE, CivicAddress())
    with pytest.raises(ValueError, match="timezone"):
        lis.set_location(PHONE, HOME, now=datetime(2025, 1, 1))


# --- by value ----------------------------------------------------------------------------------


def test_by_value_geodetic() -> None:
    lis = make_lis()
    lis.set_location(PHONE, AREA, method="A-GPS", now=T0 - timedelta(seconds=5))
    out = value(lis.handle(LocationRequest(["geodetic"], device_uri="tel:+1-617-555-1212"), T0))
    assert out.location_uris == [] and out.expires is None
    assert out.presence is not None and out.presence.entity == PHONE
    loc = best_location(out.presence)
    assert loc is not None
    assert loc.shapes == [AREA] and loc.civic is None
    assert loc.method == "A-GPS" and loc.timestamp == T0 - timedelta(seconds=5)
    assert loc.retention_expiry == T0 + timedelta(hours=24)
    assert lis.uri_count == 0  # nothing minted for a by-value request


def test_any_gives_every_form_by_value() -> None:
    lis = make_lis()
    lis.set_location(PHONE, (AREA, ADDRESS))
    out = value(lis.handle(LocationRequest(["any"], device_uri=PHONE), T0))
    assert out.location_uris == []
    # One form per tuple (RFC 5491 section 3.4), geodetic first.
    geo, civic = out.presence.locations
    assert (geo.shapes, geo.civic) == ([AREA], None) and (civic.shapes, civic.civic) == ([], ADDRESS)
    assert geo.element_id != civic.element_id
    assert geo.timestamp == civic.timestamp == T0  # no determination time given: the time of the answer


def test_asking_for_one_form_gives_only_that_form() -> None:
    lis = make_lis()
    lis.set_location(PHONE, (AREA, ADDRESS))
    civic = value(lis.handle(LocationRequest(["civic"], device_uri=PHONE), T0)).presence.locations[0]
    assert civic.civic == ADDRESS and civic.shapes == []


def test_civic_asked_but_only_geodetic_held() -> None:
    lis = make_lis()
    lis.set_location(PHONE, AREA)
    msg = error(lis.handle(LocationRequest(["civic"], exact=True, device_uri=PHONE), T0),
                HeldErrorCode.CANNOT_PROVIDE_LI_TYPE)  # fmt: skip
    assert "civic location requested exactly" in msg and "only geodetic" in msg
    # Not exact: what the LIS has.
    loc = value(lis.handle(LocationRequest(["civic"], device_uri=PHONE), T0)).presence.locations[0]
    assert loc.shapes == [AREA] and loc.civic is None
    # Exact with both asked and one held is still an error.
    error(lis.handle(LocationRequest(["civic", "geodetic"], exact=True, device_uri=PHONE), T0),
          HeldErrorCode.CANNOT_PROVIDE_LI_TYPE)  # fmt: skip


def test_unknown_device_and_no_identity() -> None:
    lis = make_lis()
    lis.set_location(PHONE, AREA)
    msg = error(lis.handle(LocationRequest(device_uri="tel:+19995550000"), T0), HeldErrorCode.LOCATION_UNKNOWN)
    assert "tel:+19995550000" in msg
    msg = error(lis.handle(LocationRequest(), T0), HeldErrorCode.LOCATION_UNKNOWN)
    assert "names no device" in msg
    error(lis.handle(LocationRequest(["geodetic", "locationURI"], device_uri="sip:nobody@x"), T0),
          HeldErrorCode.LOCATION_UNKNOWN)  # fmt: skip
    assert lis.uri_count == 0  # no URI for a device the LIS cannot locate


def test_missing_device_falls_back_to_source_address() -> None:
    lis = make_lis()
    lis.set_location("192.0.2.44", ADDRESS, method="DHCP")
    out = value(lis.handle(LocationRequest(), T0, source_ip="::ffff:192.0.2.44"))
    assert out.presence.locations[0].civic == ADDRESS
    assert out.presence.entity == "pres:device@192.0.2.44"
    # A request naming a device does not use the source address.
    error(lis.handle(LocationRequest(device_uri=PHONE), T0, source_ip="192.0.2.44"), HeldErrorCode.LOCATION_UNKNOWN)
    # The RFC 6155 <ip> identifier is used after <uri>, and a second <uri> after both.
    value(lis.handle(LocationRequest(device_uri="tel:+10000000000", device_ip="192.0.2.44"), T0))
    lis.set_location(PHONE, AREA)
    req = LocationRequest(device_uri="sip:old@example.com", device_ids=[("uri", "tel:+1-617-555-1212")])
    assert value(lis.handle(req, T0)).presence.locations[0].shapes == [AREA]
    # A device named only by identifiers the LIS does not key on is not the requester.
    req = LocationRequest(device_ids=[("mac", "00-11-22-33-44-55")])
    msg = error(lis.handle(req, T0, source_ip="192.0.2.44"), HeldErrorCode.LOCATION_UNKNOWN)
    assert "not by mac" in msg


def test_unknown_location_type_is_request_error() -> None:
    lis = make_lis()
    lis.set_location(PHONE, AREA)
    assert "postal" in error(lis.handle(LocationRequest(["postal"], device_uri=PHONE), T0), HeldErrorCode.REQUEST_ERROR)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        make_lis().handle(LocationRequest(), datetime(2025, 1, 1))


# --- by reference and dereference -------------------------------------------------------------


def test_by_reference_and_dereference() -> None:
    lis = make_lis(uri_lifetime=timedelta(hours=2))
    lis.set_location(PHONE, AREA, now=T0)
    out = value(lis.handle(LocationRequest(["locationURI"], device_uri=PHONE), T0))
    assert out.presence is None
    assert out.location_uris == [f"{BASE}/held/loc/tok1"]
    assert out.expires == T0 + timedelta(hours=2)
    # By URI or by token; the location is the device's current one.
    first = value(lis.dereference(out.location_uris[0], T0 + timedelta(minutes=1)))
    assert first.presence.locations[0].shapes == [AREA] and first.location_uris == []
    lis.set_location(PHONE, HOME, now=T0 + timedelta(minutes=2))
    moved = value(lis.dereference("tok1", T0 + timedelta(minutes=3)))
    assert moved.presence.locations[0].shapes == [HOME]
    assert moved.presence.locations[0].timestamp == T0 + timedelta(minutes=2)


def test_value_and_reference_together() -> None:
    lis = make_lis()
    lis.set_location(PHONE, (AREA, ADDRESS))
    out = value(lis.handle(LocationRequest(["geodetic", "locationURI"], device_uri=PHONE), T0))
    assert out.location_uris == [f"{BASE}/held/loc/tok1"] and out.expires == T0 + timedelta(minutes=30)
    assert out.presence.locations[0].shapes == [AREA] and out.presence.locations[0].civic is None
    # And it survives the wire.
    assert parse(serialize(out)) == out


def test_dereference_with_a_held_request_applies_its_types() -> None:
    lis = make_lis()
    lis.set_location(PHONE, (AREA, ADDRESS))
    uri = value(lis.handle(LocationRequest(["locationURI"], device_uri=PHONE), T0)).location_uris[0]
    loc = value(lis.dereference(uri, T0, dereference_request(["civic"]))).presence.locations[0]
    assert loc.civic == ADDRESS and loc.shapes == []
    # locationURI in a dereference request asks for nothing more than the value.
    both = value(lis.dereference(uri, T0, dereference_request(["locationURI"])))
    assert both.location_uris == [] and both.presence.locations[0].shapes == [AREA]
    lis.set_location(PHONE, ADDRESS, replace=True)
    error(lis.dereference(uri, T0, dereference_request(["geodetic"], exact=True)), HeldErrorCode.CANNOT_PROVIDE_LI_TYPE)


def test_dereference_expired_unknown_and_forgotten() -> None:
    lis = make_lis()
    lis.set_location(PHONE, AREA)
    uri = value(lis.handle(LocationRequest(["locationURI"], device_uri=PHONE), T0)).location_uris[0]
    value(lis.dereference(uri, T0 + timedelta(minutes=29, seconds=59)))
    msg = error(lis.dereference(uri, T0 + timedelta(minutes=30)), HeldErrorCode.LOCATION_UNKNOWN)
    assert "expired at 2025-06-01T09:30:00+00:00" in msg
    msg = error(lis.dereference(f"{BASE}/held/loc/never-issued", T0), HeldErrorCode.LOCATION_UNKNOWN)
    assert "never issued" in msg
    assert "never issued" in error(lis.dereference("../../etc/passwd\x00", T0), HeldErrorCode.LOCATION_UNKNOWN)
    uri2 = value(lis.handle(LocationRequest(["locationURI"], device_uri=PHONE), T0)).location_uris[0]
    assert lis.forget(PHONE)
    msg = error(lis.dereference(uri2, T0 + timedelta(minutes=1)), HeldErrorCode.LOCATION_UNKNOWN)
    assert "no location is currently known" in msg


def test_expired_uris_are_pruned() -> None:
    lis = make_lis()
    lis.set_location(PHONE, AREA)
    for i in range(10):
        lis.handle(LocationRequest(["locationURI"], device_uri=PHONE), T0 + timedelta(minutes=i))
    assert lis.uri_count == 10
    # Still remembered one lifetime after expiry (so "expired" can be said)...
    lis.handle(LocationRequest(["geodetic"], device_uri=PHONE), T0 + timedelta(minutes=59))
    assert lis.uri_count == 10
    # ...then gone: the first five expired at 09:30..09:34 and are forgotten by 10:04:30.
    lis.handle(LocationRequest(["geodetic"], device_uri=PHONE), T0 + timedelta(minutes=64, seconds=30))
    assert lis.uri_count == 5
    msg = error(lis.dereference("tok1", T0 + timedelta(minutes=65)), HeldErrorCode.LOCATION_UNKNOWN)
    assert "never issued" in msg
    assert "expired" in error(lis.dereference("tok10", T0 + timedelta(minutes=65)), HeldErrorCode.LOCATION_UNKNOWN)
    lis.dereference("tok1", T0 + timedelta(hours=5))
    assert lis.uri_count == 0


def test_uri_count_is_capped() -> None:
    lis = make_lis(max_uris=3)
    lis.set_location(PHONE, AREA)
    for i in range(5):
        lis.handle(LocationRequest(["locationURI"], device_uri=PHONE), T0 + timedelta(seconds=i))
    assert lis.uri_count == 3
    # The ones closest to expiry went first.
    error(lis.dereference("tok1", T0 + timedelta(seconds=10)), HeldErrorCode.LOCATION_UNKNOWN)
    value(lis.dereference("tok5", T0 + timedelta(seconds=10)))


def test_default_tokens_are_unguessable() -> None:
    lis = Lis(BASE)
    lis.set_location(PHONE, AREA)
    uris = {
        value(lis.handle(LocationRequest(["locationURI"], device_uri=PHONE), T0)).location_uris[0]
        for _ in range(50)
    }
    assert len(uris) == 50
    for uri in uris:
        token = uri.removeprefix(f"{BASE}/held/loc/")
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)  # 192 random bits, URL-safe


# --- HTTP adapter -------------------------------------------------------------------------------


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@pytest.fixture
async def served() -> AsyncIterator[tuple[Lis, str]]:
    """A LIS served by uvicorn on 127.0.0.1 at a free port; yields it and its base URL."""
    sock = listening_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    lis = Lis(base)
    server = uvicorn.Server(uvicorn.Config(create_lis_app(lis, base), log_level="warning", lifespan="off"))
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


async def test_http_by_value_by_reference_and_dereference(served: tuple[Lis, str]) -> None:
    lis, base = served
    lis.set_location(PHONE, (AREA, ADDRESS), method="GPS")
    async with httpx.AsyncClient(timeout=10) as http:
        # By value, with the node's own request form and no Content-Type at all.
        r = await http.post(f"{base}/held", content=serialize(LocationRequest(["geodetic"], device_uri=PHONE)))
        assert r.status_code == 200 and r.headers["content-type"] == HELD_TYPE
        resp = parse(r.content)
        assert isinstance(resp, LocationResponse)
        assert best_location(resp.presence).shapes == [AREA]

        # By reference, the request labelled text/xml.
        r = await http.post(
            f"{base}/held",
            content=serialize(LocationRequest(["locationURI"], device_uri=PHONE)),
            headers={"Content-Type": "text/xml"},
        )
        ref = parse(r.content)
        assert isinstance(ref, LocationResponse) and ref.presence is None
        (uri,) = ref.location_uris
        assert uri.startswith(f"{base}/held/loc/")
        assert ref.expires is not None and timedelta(minutes=29) < ref.expires - datetime.now(UTC) <= timedelta(minutes=30)

        # HTTP GET dereference gives the PIDF-LO itself.
        r = await http.get(uri)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/pidf+xml")
        geo, civic = parse_pidf(r.content).locations
        assert geo.shapes == [AREA] and civic.civic == ADDRESS
        # ...or the HELD response when that is what the client accepts.
        r = await http.get(uri, headers={"Accept": HELD_TYPE})
        assert r.headers["content-type"] == HELD_TYPE and isinstance(parse(r.content), LocationResponse)

        # HELD dereference: a locationRequest POSTed to the URI, or an empty POST.
        r = await http.post(uri, content=serialize(dereference_request(["civic"])), headers={"Content-Type": HELD_TYPE})
        deref = parse(r.content)
        assert isinstance(deref, LocationResponse)
        assert deref.presence.locations[0].civic == ADDRESS and deref.presence.locations[0].shapes == []
        r = await http.post(uri, content=b"")
        assert isinstance(parse(r.content), LocationResponse)

        # Unknown URI: 404 on GET, a HELD error in a 200 on POST.
        r = await http.get(f"{base}/held/loc/not-a-token")
        assert r.status_code == 404
        assert parse(r.content) == HeldError(HeldErrorCode.LOCATION_UNKNOWN, "unknown location URI: it was never issued by this LIS")
        r = await http.post(f"{base}/held/loc/not-a-token", content=b"")
        assert r.status_code == 200 and parse(r.content).code is HeldErrorCode.LOCATION_UNKNOWN


async def test_http_source_address_fallback(served: tuple[Lis, str]) -> None:
    lis, base = served
    lis.set_location("127.0.0.1", HOME, method="DHCP")
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(f"{base}/held", content=serialize(LocationRequest()))
    resp = parse(r.content)
    assert isinstance(resp, LocationResponse)
    assert resp.presence.locations[0].shapes == [HOME] and resp.presence.locations[0].method == "DHCP"


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        (b"<locationRequest", HeldErrorCode.XML_ERROR, "malformed XML"),
        (b"", HeldErrorCode.XML_ERROR, "empty body"),
        (b'<!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;</r>', HeldErrorCode.XML_ERROR, "entity"),
        (b"<locationRequest/>", HeldErrorCode.XML_ERROR, "namespace"),
        (b'<locationRequest xmlns="urn:ietf:params:xml:ns:geopriv:held"><locationType>postal</locationType></locationRequest>',
         HeldErrorCode.REQUEST_ERROR, "postal"),
        (b'<error xmlns="urn:ietf:params:xml:ns:geopriv:held" code="timeout"/>', HeldErrorCode.UNSUPPORTED_MESSAGE, "HeldError"),
        (b"\xff\xfe garbage", HeldErrorCode.XML_ERROR, ""),
    ],
)  # fmt: skip
async def test_http_bad_bodies_are_held_errors_with_200(
    served: tuple[Lis, str], body: bytes, code: HeldErrorCode, fragment: str
) -> None:
    _, base = served
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(f"{base}/held", content=body, headers={"Content-Type": "application/held+xml"})
    assert r.status_code == 200 and r.headers["content-type"] == HELD_TYPE
    err = parse(r.content)
    assert isinstance(err, HeldError) and err.code is code
    assert fragment.lower() in err.message.lower()


async def test_http_too_large_body(served: tuple[Lis, str]) -> None:
    _, base = served
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(f"{base}/held", content=b"<a>" + b" " * MAX_XML_BYTES + b"</a>")
    assert r.status_code == 200
    err = parse(r.content)
    assert isinstance(err, HeldError) and err.code is HeldErrorCode.XML_ERROR and "exceeds the limit" in err.message


async def test_asgi_routes_under_the_base_path_and_internal_errors() -> None:
    base = "https://lis.example.net/region-1"
    lis = Lis(base)
    lis.set_location(PHONE, Polygon((Point(42, -71), Point(42.1, -71), Point(42.1, -71.1))))
    app = create_lis_app(lis, base)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        r = await http.post("/region-1/held", content=serialize(LocationRequest(["locationURI"], device_uri=PHONE)))
        uri = parse(r.content).location_uris[0]
        assert uri.startswith(f"{base}/held/loc/")
        r = await http.get(uri.removeprefix("https://lis.example.net"))
        assert r.status_code == 200 and len(parse_pidf(r.content).locations[0].shapes[0].exterior) == 4
        assert (await http.post("/held", content=b"")).status_code == 404  # not under the prefix

        # A failure inside the core is a generalLisError, not a 500.
        def broken(*_a, **_k):
            raise RuntimeError("disk on fire")

        lis.handle = broken  # type: ignore[method-assign]
        r = await http.post("/region-1/held", content=serialize(LocationRequest(device_uri=PHONE)))
        assert r.status_code == 200
        assert parse(r.content) == HeldError(HeldErrorCode.GENERAL_LIS_ERROR, "RuntimeError: disk on fire")
