"""The ECRF's HTTP adapter (LoST over HTTP, RFC 5222 section 18) served by uvicorn on
127.0.0.1: bodies of any Content-Type, both shape namespaces, bad bodies answered as
``<errors>`` with HTTP 200, and recursion through a second real ECRF server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from shapely.geometry import box
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response as HttpResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from firebox.ecrf.app import MEDIA_TYPE, create_ecrf_app
from firebox.ecrf.service import Ecrf, Peer
from firebox.gis.index import Boundary, BoundaryLayer, ServiceIndex
from firebox.lost import codec
from firebox.lost.messages import (
    ErrorKind,
    ErrorsResponse,
    FindService,
    FindServiceResponse,
    GetServiceBoundaryResponse,
    ListServicesByLocation,
    ListServicesByLocationResponse,
    ListServicesResponse,
    Redirect,
)
from firebox.xmlsafe import MAX_XML_BYTES

SOS = "urn:service:sos"
POLICE = "urn:service:sos.police"
A, B = "ecrf-a.example", "ecrf-b.example"
NS = 'xmlns="urn:ietf:params:xml:ns:lost1"'
GML = "http://www.opengis.net/gml"
GS = "http://www.opengis.net/pidflo/1.0"
SRS = "urn:ogc:def:crs:EPSG::4326"

# ECRF A serves a county of two towns; ECRF B the county east of it.
WEST = box(-71.2, 42.3, -71.1, 42.4)
EAST = box(-71.1, 42.3, -71.0, 42.4)
B_WEST = box(-71.0, 42.3, -70.95, 42.4)
B_EAST = box(-70.95, 42.3, -70.9, 42.4)
B_AREA = box(-71.0, 42.3, -70.9, 42.4)
B_CLAIMS = box(-71.0, 42.3, -70.9, 42.5)  # the area A thinks B covers: more than B has


def ecrf_a(peers: list[Peer] = ()) -> Ecrf:
    return Ecrf(A, ServiceIndex([
        BoundaryLayer(SOS, [
            Boundary("west", "Westville", "sip:west@psap-a.example", WEST),
            Boundary("east", "Eastham", "sip:east@psap-a.example", EAST),
        ]),
        BoundaryLayer(POLICE, [Boundary("a-pd", "A Police", "sip:pd@a.example", box(-71.2, 42.3, -71.0, 42.4))]),
    ]), ttl=timedelta(minutes=5), service_numbers={SOS: "911"}, peers=peers)  # fmt: skip


def ecrf_b(peers: list[Peer] = ()) -> Ecrf:
    return Ecrf(B, ServiceIndex([
        BoundaryLayer(SOS, [
            Boundary("b-west", "Bayside", "sip:bayside@psap-b.example", B_WEST),
            Boundary("b-east", "Beacon", "sip:beacon@psap-b.example", B_EAST),
        ]),
    ]), ttl=timedelta(minutes=5), service_numbers={SOS: "911"}, peers=peers)  # fmt: skip


# --- real servers on 127.0.0.1 ------------------------------------------------------------


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


class Servers:
    def __init__(self) -> None:
        self._running: list[tuple[uvicorn.Server, asyncio.Task, socket.socket]] = []

    async def start(self, app: ASGIApp, *, sock: socket.socket | None = None, lifespan: str = "on") -> str:
        """Serve ``app`` (on ``sock`` when given); return its LoST URL."""
        sock = sock or listening_socket()
        config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, timeout_graceful_shutdown=2)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        for _ in range(500):  # bounded wait for start-up
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "test server did not start"
        self._running.append((server, task, sock))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/lost"

    async def stop(self) -> None:
        for server, _, _ in self._running:
            server.should_exit = True
        for _, task, sock in self._running:
            await asyncio.wait_for(task, 10)
            sock.close()


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    s = Servers()
    yield s
    await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


class Recorder:
    """ASGI middleware keeping every request body that reaches the wrapped app."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body", False):
                break
        self.bodies.append(body)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def free_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was bound, then released)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/lost"


def peer_app(answer: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> Starlette:
    async def lost(request: HttpRequest) -> HttpResponse:
        return await answer(request)

    return Starlette(routes=[Route("/lost", lost, methods=["POST"])])


# --- helpers --------------------------------------------------------------------------------


async def post(http: httpx.AsyncClient, url: str, body: bytes | str, content_type: str | None = MEDIA_TYPE,
               **kw) -> httpx.Response:  # fmt: skip
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = await http.post(url, content=body, headers=headers, **kw)
    assert response.status_code == 200, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == MEDIA_TYPE
    return response


async def ask(http: httpx.AsyncClient, url: str, body: bytes | str, **kw):
    return codec.parse((await post(http, url, body, **kw)).content)


def bad_request(response: httpx.Response, source: str = A) -> str:
    """The message of the one ``<badRequest>`` the body holds (checked on the raw XML too)."""
    assert b"<errors " in response.content and b"<badRequest message=" in response.content, response.text
    out = codec.parse(response.content)
    assert isinstance(out, ErrorsResponse) and out.source == source
    assert [e.kind for e in out.errors] == [ErrorKind.BAD_REQUEST]
    assert out.errors[0].message
    return out.errors[0].message


def find_service(location: str, *, attrs: str = "", service: str = SOS, profile: str = "geodetic-2d") -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<findService {NS}{attrs}>'
        f'<location id="l1" profile="{profile}">{location}</location>'
        f"<service>{service}</service></findService>"
    )


def gml_point(pos: str) -> str:
    return f'<gml:Point xmlns:gml="{GML}" srsName="{SRS}"><gml:pos>{pos}</gml:pos></gml:Point>'


def mapped(out) -> tuple[str, str]:
    assert isinstance(out, FindServiceResponse), out
    (m,) = out.mappings
    return m.source, m.source_id


IN_WEST = "42.35 -71.15"
IN_EAST = "42.35 -71.05"
IN_B_EAST = "42.35 -70.92"


# --- bodies and content types ---------------------------------------------------------------


async def test_answers_whatever_the_content_type(servers, http):
    url = await servers.start(create_ecrf_app(ecrf_a()))
    body = find_service(gml_point(IN_EAST))
    for content_type in (MEDIA_TYPE, "text/xml", "application/xml", "text/xml; charset=utf-8",
                         "application/x-www-form-urlencoded", "", None):  # fmt: skip
        response = await post(http, url, body, content_type)
        assert mapped(codec.parse(response.content)) == (A, "east"), content_type
        assert response.headers["cache-control"] == "no-store"
    # POST / as well as POST /lost.
    root = url.removesuffix("lost")
    assert mapped(await ask(http, root, body)) == (A, "east")
    # The body as served: a findServiceResponse with our via, the mapping and its number.
    text = (await post(http, url, body)).text
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<findServiceResponse')
    assert f'<via source="{A}"/>' in text and "<serviceNumber>911</serviceNumber>" in text
    assert '<locationUsed id="l1"/>' in text and "<uri>sip:east@psap-a.example</uri>" in text


async def test_pos_written_with_commas(servers, http):
    url = await servers.start(create_ecrf_app(ecrf_a()))
    for pos in ("42.35,-71.05", "42.35, -71.05", " 42.35 ,-71.05 ", "42.35\n-71.05"):
        assert mapped(await ask(http, url, find_service(gml_point(pos)))) == (A, "east"), pos
    ring = "42.30,-71.06 42.30,-71.11 42.38,-71.11 42.38,-71.06 42.30,-71.06"  # mostly east
    polygon = (
        f'<gml:Polygon xmlns:gml="{GML}" srsName="{SRS}"><gml:exterior><gml:LinearRing>'
        f"<gml:posList>{ring}</gml:posList></gml:LinearRing></gml:exterior></gml:Polygon>"
    )
    assert mapped(await ask(http, url, find_service(polygon))) == (A, "east")


def shapes(ns: str) -> dict[str, tuple[str, str]]:
    """Shapes written in namespace ``ns`` (prefix ``s``), with the boundary each maps to."""
    head = f'xmlns:s="{ns}" xmlns:gml="{GML}" srsName="{SRS}"'
    m = 'uom="urn:ogc:def:uom:EPSG::9001"'
    deg = 'uom="urn:ogc:def:uom:EPSG::9102"'
    centre = "<gml:pos>42.35 -71.103</gml:pos>"  # in west, about 250 m from east
    ring = "".join(f"<gml:pos>{p}</gml:pos>" for p in (
        "42.34 -71.102", "42.34 -71.06", "42.36 -71.06", "42.36 -71.102", "42.34 -71.102"))  # fmt: skip
    return {
        "Point": (f"<s:Point {head}><gml:pos>{IN_WEST}</gml:pos></s:Point>", "west"),
        "Circle": (f"<s:Circle {head}>{centre}<s:radius {m}>100</s:radius></s:Circle>", "west"),
        "Ellipse": (
            f"<s:Ellipse {head}>{centre}<s:semiMajorAxis {m}>3000</s:semiMajorAxis>"
            f"<s:semiMinorAxis {m}>50</s:semiMinorAxis><s:orientation {deg}>80</s:orientation></s:Ellipse>",
            "west",  # the centre is in west, and so is a little more of the ellipse
        ),
        "ArcBand": (
            f"<s:ArcBand {head}>{centre}<s:innerRadius {m}>1000</s:innerRadius>"
            f"<s:outerRadius {m}>3000</s:outerRadius><s:startAngle {deg}>45</s:startAngle>"
            f"<s:openingAngle {deg}>90</s:openingAngle></s:ArcBand>",
            "east",  # the sector faces east, beyond the town line
        ),
        "Polygon": (
            f"<s:Polygon {head}><gml:exterior><gml:LinearRing>{ring}</gml:LinearRing></gml:exterior></s:Polygon>",
            "east",
        ),
    }


@pytest.mark.parametrize("ns", [GML, GS], ids=["gml", "pidflo-geoshape"])
async def test_every_shape_in_both_namespaces(servers, http, ns):
    url = await servers.start(create_ecrf_app(ecrf_a()))
    for name, (xml, expected) in shapes(ns).items():
        assert mapped(await ask(http, url, find_service(xml))) == (A, expected), (ns, name)
    # Km and radians are read too: a 0.1 km circle, and the arc band with its angles in radians.
    km = find_service(
        f'<gs:Circle xmlns:gs="{ns}" xmlns:gml="{GML}" srsName="{SRS}"><gml:pos>{IN_EAST}</gml:pos>'
        '<gs:radius uom="urn:ogc:def:uom:EPSG::9036">0.1</gs:radius></gs:Circle>'
    )
    assert mapped(await ask(http, url, km)) == (A, "east")


async def test_civic_and_other_requests_over_http(servers, http):
    url = await servers.start(create_ecrf_app(ecrf_a()))
    civic = (
        '<civicAddress xmlns="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr">'
        "<country>US</country><A1>MA</A1><A3>Westville</A3><RD>Main St</RD><HNO>12</HNO></civicAddress>"
    )
    response = await post(http, url, find_service(civic, profile="civic", attrs=' validateLocation="true"'))
    out = codec.parse(response.content)
    assert mapped(out) == (A, "west")
    assert out.validation.unchecked == ["country", "A1", "A3", "HNO", "RD"]
    assert b"<locationValidationUnavailable" in response.content
    # By reference (the default), then the boundary by its key.
    out = await ask(http, url, find_service(gml_point(IN_EAST)))
    ref = out.mappings[0].boundary_ref
    assert ref.source == A
    got = await ask(http, url, f'<getServiceBoundary {NS} key="{ref.key}"/>')
    assert isinstance(got, GetServiceBoundaryResponse) and len(got.boundaries) == 1
    assert got.path == [A]
    # By value in the answer itself.
    out = await ask(http, url, find_service(gml_point(IN_EAST), attrs=' serviceBoundary="value"'))
    assert out.mappings[0].boundaries == got.boundaries and out.mappings[0].boundary_ref is None
    listed = await ask(http, url, f"<listServices {NS}/>")
    assert isinstance(listed, ListServicesResponse) and listed.services == [SOS, POLICE]
    here = await ask(http, url, f'<listServicesByLocation {NS}><location id="x" profile="geodetic-2d">'
                                f"{gml_point(IN_WEST)}</location></listServicesByLocation>")  # fmt: skip
    assert isinstance(here, ListServicesByLocationResponse) and here.services == [SOS, POLICE]
    # LoST errors are HTTP 200 too.
    out = await ask(http, url, find_service(gml_point("10 10")))
    assert isinstance(out, ErrorsResponse) and out.errors[0].kind is ErrorKind.NOT_FOUND
    out = await ask(http, url, find_service(gml_point(IN_EAST), service="urn:service:counseling"))
    assert out.errors[0].kind is ErrorKind.SERVICE_NOT_IMPLEMENTED
    out = await ask(http, url, find_service(f'<gml:Point xmlns:gml="{GML}" srsName="EPSG:27700">'
                                            f"<gml:pos>{IN_EAST}</gml:pos></gml:Point>"))  # fmt: skip
    assert out.errors[0].kind is ErrorKind.SRS_INVALID and "EPSG:27700" in out.errors[0].message
    out = await ask(http, url, find_service(gml_point("95 -71")))
    assert out.errors[0].kind is ErrorKind.LOCATION_INVALID and "latitude 95" in out.errors[0].message


# --- bad bodies -------------------------------------------------------------------------------


async def test_bad_bodies_are_bad_requests_naming_the_problem(servers, http):
    url = await servers.start(create_ecrf_app(ecrf_a()))
    cases = {
        "malformed": (find_service(gml_point(IN_EAST)).replace("</findService>", ""), "malformed XML"),
        "not xml": ("hello, ECRF", "malformed XML"),
        "empty": ("", "empty body"),
        "blank": ("  \r\n ", "empty body"),
        "foreign root": ('<findService xmlns="urn:example:not-lost"/>', "not in the LoST namespace"),
        "no namespace": ("<findService/>", "(it has no namespace)"),
        "unknown lost element": (f"<findServices {NS}/>", "<findServices> is not a LoST request or response"),
        "a response": (f'<redirect {NS} target="x" source="y"/>', "<redirect> is not a LoST request"),
        "no location": (f"<findService {NS}><service>{SOS}</service></findService>", "has no <location>"),
        "bad boolean": (find_service(gml_point(IN_EAST), attrs=' recursive="yes"'), "recursive='yes'"),
        "entity": (
            '<?xml version="1.0"?>\n<!DOCTYPE findService [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
            + find_service(gml_point(IN_EAST)).split("\n", 1)[1].replace("<service>", "<service>&xxe;"),
            "DTD entity declarations are not accepted",
        ),
        "billion laughs": (
            '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            f"<listServices {NS}><service>&lol2;</service></listServices>",
            "DTD entity declarations are not accepted",
        ),
    }
    for name, (body, expected) in cases.items():
        message = bad_request(await post(http, url, body))
        assert expected in message, (name, message)


async def test_xxe_in_utf16_leaks_nothing(servers, http, tmp_path: Path):
    """An entity declaration the byte check cannot see (UTF-16) is still never expanded."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    url = await servers.start(create_ecrf_app(ecrf_a()))
    body = (
        f'<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE findService [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
        + find_service(gml_point(IN_EAST), service="urn:service:sos&xxe;").split("\n", 1)[1]
    ).encode("utf-16")
    response = await post(http, url, body)
    assert b"TOP-SECRET" not in response.content
    assert isinstance(codec.parse(response.content), (ErrorsResponse, FindServiceResponse))


async def test_oversized_bodies(servers, http):
    url = await servers.start(create_ecrf_app(ecrf_a()))
    padding = "<!--" + "x" * MAX_XML_BYTES + "-->"
    body = find_service(gml_point(IN_EAST)) + padding
    # Declared by Content-Length: answered without reading the body.
    message = bad_request(await post(http, url, body))
    assert f"body of {len(body)} bytes exceeds the limit of {MAX_XML_BYTES} bytes" == message

    # Sent in chunks with no length: reading stops at the limit.
    async def chunks() -> AsyncIterator[bytes]:
        data = body.encode()
        for i in range(0, len(data), 64 * 1024):
            yield data[i : i + 64 * 1024]

    message = bad_request(await post(http, url, chunks()))
    assert message == f"body of more than {MAX_XML_BYTES} bytes exceeds the limit"
    # A body just under the limit is read.
    fits = find_service(gml_point(IN_EAST))
    fits += "<!--" + "x" * (MAX_XML_BYTES - len(fits) - 7) + "-->"
    assert len(fits) == MAX_XML_BYTES
    assert mapped(await ask(http, url, fits)) == (A, "east")
    # The server is still fine afterwards.
    assert mapped(await ask(http, url, find_service(gml_point(IN_EAST)))) == (A, "east")


async def test_a_smaller_body_limit(servers, http):
    url = await servers.start(create_ecrf_app(ecrf_a(), max_body=200))
    small = f"<listServices {NS}/>"
    assert isinstance(await ask(http, url, small), ListServicesResponse)
    message = bad_request(await post(http, url, find_service(gml_point(IN_EAST))))
    assert "exceeds the limit of 200 bytes" in message


# --- recursion through a second real ECRF ---------------------------------------------------


async def two_ecrfs(servers: Servers, **app_kw) -> tuple[str, str, Recorder]:
    """ECRF B on its own, and ECRF A with B as the peer covering B's area."""
    b = Recorder(create_ecrf_app(ecrf_b()))
    b_url = await servers.start(b)
    a_url = await servers.start(create_ecrf_app(ecrf_a([Peer.from_config(b_url, B_CLAIMS, name=B)]), **app_kw))
    return a_url, b_url, b


async def test_recursive_request_comes_back_with_b_mapping_and_both_vias(servers, http):
    a_url, b_url, b = await two_ecrfs(servers)
    response = await post(http, a_url, find_service(gml_point(IN_B_EAST), attrs=' recursive="true"'))
    out = codec.parse(response.content)
    assert mapped(out) == (B, "b-east")
    assert out.mappings[0].uris == ["sip:beacon@psap-b.example"]
    assert out.path == [B, A] and out.location_used == "l1"
    assert f'<path><via source="{B}"/><via source="{A}"/></path>'.encode() in response.content
    # B was asked once, with A's via in the request's path.
    (sent,) = b.bodies
    forwarded = codec.parse(sent)
    assert isinstance(forwarded, FindService) and forwarded.path == [A] and forwarded.recursive
    # Inside A's own data, B is not asked.
    assert mapped(await ask(http, a_url, find_service(gml_point(IN_EAST), attrs=' recursive="true"'))) == (A, "east")
    assert len(b.bodies) == 1
    # listServicesByLocation recurses the same way.
    lsbl = (f'<listServicesByLocation {NS} recursive="true"><location id="x" profile="geodetic-2d">'
            f"{gml_point(IN_B_EAST)}</location></listServicesByLocation>")  # fmt: skip
    out = await ask(http, a_url, lsbl)
    assert isinstance(out, ListServicesByLocationResponse)
    assert out.services == [SOS] and out.path == [B, A]
    assert isinstance(codec.parse(b.bodies[-1]), ListServicesByLocation)
    # B's warnings come back: A serves police, B only sos, which it substitutes.
    out = await ask(http, a_url, find_service(gml_point(IN_B_EAST), attrs=' recursive="true"', service=POLICE))
    assert mapped(out) == (B, "b-east") and out.mappings[0].service == SOS
    assert [w.kind.value for w in out.warnings] == ["serviceSubstitution"] and out.warnings_source == B
    assert out.path == [B, A]
    # B's errors pass through A unchanged: a place A thinks B covers, B does not.
    out = await ask(http, a_url, find_service(gml_point("42.45 -70.95"), attrs=' recursive="true"'))
    assert isinstance(out, ErrorsResponse) and out.source == B
    assert out.errors[0].kind is ErrorKind.NOT_FOUND
    assert len(b.bodies) == 4


async def test_non_recursive_request_gets_a_redirect(servers, http):
    a_url, _, b = await two_ecrfs(servers)
    response = await post(http, a_url, find_service(gml_point(IN_B_EAST)))
    assert response.text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<redirect ')
    out = codec.parse(response.content)
    assert isinstance(out, Redirect) and out.target == B and out.source == A
    assert b.bodies == []


async def test_loop_between_two_ecrfs_is_stopped(servers, http):
    """A and B each send what they cannot place to the other: the request comes back to A with
    A already in its path, and the loop error travels back through B."""
    a_sock = listening_socket()
    a_url = f"http://127.0.0.1:{a_sock.getsockname()[1]}/lost"
    b_url = await servers.start(create_ecrf_app(ecrf_b([Peer(a_url)])))
    hop = Recorder(create_ecrf_app(ecrf_a([Peer(b_url)]), forward_timeout=5))
    assert await servers.start(hop, sock=a_sock) == a_url
    out = await ask(http, a_url, find_service(gml_point("10 10"), attrs=' recursive="true"'))
    assert isinstance(out, ErrorsResponse) and out.source == A
    assert out.errors[0].kind is ErrorKind.LOOP
    assert f"{A} -> {B}" in out.errors[0].message
    assert [codec.parse(body).path for body in hop.bodies] == [[], [A, B]]


async def test_peer_down_is_server_error(servers, http):
    down = free_port_url()
    url = await servers.start(create_ecrf_app(ecrf_a([Peer(down, B_AREA)])))
    out = await ask(http, url, find_service(gml_point(IN_B_EAST), attrs=' recursive="true"'))
    assert isinstance(out, ErrorsResponse) and out.source == A
    assert out.errors[0].kind is ErrorKind.SERVER_ERROR
    assert out.errors[0].message.startswith(f"cannot reach peer {down}: ConnectError")


async def test_slow_peer_is_server_timeout(servers, http):
    release = asyncio.Event()
    asked = []

    async def slow(request: HttpRequest) -> HttpResponse:
        asked.append(await request.body())
        try:
            await asyncio.wait_for(release.wait(), 10)  # bounded even if never released
        except TimeoutError:
            pass
        return HttpResponse(b"too late", media_type=MEDIA_TYPE)

    slow_url = await servers.start(peer_app(slow))
    url = await servers.start(create_ecrf_app(ecrf_a([Peer(slow_url, B_AREA)]), forward_timeout=0.3))
    try:
        out = await ask(http, url, find_service(gml_point(IN_B_EAST), attrs=' recursive="true"'))
        assert isinstance(out, ErrorsResponse) and out.source == A
        assert out.errors[0].kind is ErrorKind.SERVER_TIMEOUT
        assert out.errors[0].message == f"peer {slow_url} did not answer within 0.3 s"
        assert len(asked) == 1  # the peer was asked, and was too slow
        # A is not stuck: its own area is still answered.
        assert mapped(await ask(http, url, find_service(gml_point(IN_WEST)))) == (A, "west")
    finally:
        release.set()


async def test_peer_answering_garbage_or_the_wrong_message_is_server_error(servers, http):
    async def garbage(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"<html>Service Unavailable</html>", status_code=503)

    async def wrong(request: HttpRequest) -> HttpResponse:
        return HttpResponse(codec.serialize(ListServicesResponse([SOS])), media_type=MEDIA_TYPE)

    for app, expected in ((peer_app(garbage), "answered HTTP 503 with no usable LoST message"),
                          (peer_app(wrong), "answered a FindService with ListServicesResponse")):  # fmt: skip
        peer_url = await servers.start(app)
        url = await servers.start(create_ecrf_app(ecrf_a([Peer(peer_url, B_AREA)])))
        out = await ask(http, url, find_service(gml_point(IN_B_EAST), attrs=' recursive="true"'))
        assert isinstance(out, ErrorsResponse) and out.errors[0].kind is ErrorKind.SERVER_ERROR
        assert expected in out.errors[0].message and peer_url in out.errors[0].message


async def test_a_peer_redirect_passes_through(servers, http):
    async def redirect(request: HttpRequest) -> HttpResponse:
        return HttpResponse(codec.serialize(Redirect("ecrf-c.example", B, "ask C")), media_type=MEDIA_TYPE)

    peer_url = await servers.start(peer_app(redirect))
    url = await servers.start(create_ecrf_app(ecrf_a([Peer(peer_url, B_AREA)])))
    out = await ask(http, url, find_service(gml_point(IN_B_EAST), attrs=' recursive="true"'))
    assert isinstance(out, Redirect) and (out.target, out.source) == ("ecrf-c.example", B)
