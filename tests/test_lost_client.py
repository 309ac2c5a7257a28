"""LoST client (RFC 5222): the mapping cache, the sans-I/O core, and the httpx adapter
against real LoST servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import shapely
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response as HttpResponse
from starlette.routing import Route

from firebox.location.civic import CivicAddress
from firebox.location.shapes import Circle, Point, Polygon
from firebox.lost.client import (
    AsyncLostClient,
    Done,
    LostClientCore,
    MappingCache,
    Send,
    location_of,
)
from firebox.lost.messages import (
    NO_CACHE,
    NO_EXPIRATION,
    ErrorKind,
    ErrorsResponse,
    FindService,
    FindServiceResponse,
    GetServiceBoundary,
    GetServiceBoundaryResponse,
    ListServices,
    ListServicesResponse,
    Location,
    LostError,
    Mapping,
    Redirect,
    ServiceBoundaryReference,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SOS = "urn:service:sos"
POLICE = "urn:service:sos.police"


# --- real boundaries: Cambridge fire engine districts -----------------------------------


@dataclass
class District:
    name: str
    polygon: Polygon
    geometry: shapely.Polygon
    inside: list[Point]


@pytest.fixture(scope="module")
def districts(shared_data: Path) -> list[District]:
    """Single-ring engine districts, each with a few points well inside it."""
    doc = json.loads((shared_data / "cambridge" / "PUBLICSAFETY_FireEngineDistricts.geojson").read_text())
    out = []
    for f in doc["features"]:
        if f["geometry"]["type"] != "Polygon":
            continue
        ring = f["geometry"]["coordinates"][0]
        geom = shapely.Polygon(ring)
        polygon = Polygon(tuple(Point(lat=lat, lon=lon) for lon, lat, *_ in ring))
        inner = geom.buffer(-0.001)  # about 80 m inside the border
        xs = [inner.representative_point()]
        minx, miny, maxx, maxy = inner.bounds
        for i in range(1, 40):  # a bounded, deterministic grid walk
            p = shapely.Point(minx + (maxx - minx) * (i * 0.37 % 1), miny + (maxy - miny) * (i * 0.61 % 1))
            if inner.contains(p):
                xs.append(p)
        out.append(District(f["properties"]["ENGINE"], polygon, geom, [Point(lat=p.y, lon=p.x) for p in xs[:4]]))
    assert len(out) >= 4 and all(len(d.inside) >= 2 for d in out)
    return out


def mapping_for(d: District, *, service=SOS, expires=NO_EXPIRATION, by_value=True, ref=None) -> Mapping:
    return Mapping(
        service=service,
        source="ecrf-a.example",
        source_id=d.name,
        last_updated=T0,
        expires=expires,
        display_names=[(d.name, "en")],
        uris=[f"sip:{d.name.replace(' ', '').lower()}@psap.example"],
        service_number="911",
        boundaries=[Location(id="b", profile="geodetic-2d", shape=d.polygon)] if by_value else [],
        boundary_ref=ref,
    )


def at(point: Point) -> Location:
    return location_of(point)


# --- the cache ------------------------------------------------------------------------


def test_boundary_by_value_answers_other_points_inside(districts):
    cache = MappingCache()
    d, other = districts[0], districts[1]
    assert cache.put(mapping_for(d), at(d.inside[0]), T0)
    hit = cache.get(SOS, at(d.inside[1]), T0)
    assert hit is not None and hit[0].source_id == d.name
    assert cache.get(SOS, at(other.inside[0]), T0) is None  # outside: a query is needed
    assert cache.get(POLICE, at(d.inside[1]), T0) is None  # same place, other service
    assert (cache.stats.hits, cache.stats.misses) == (1, 2)


def test_areas_must_lie_wholly_inside_the_boundary(districts):
    cache = MappingCache()
    d = districts[0]
    cache.put(mapping_for(d), at(d.inside[0]), T0)
    assert cache.get(SOS, location_of(Circle(d.inside[0], 20.0)), T0) is not None
    assert cache.get(SOS, location_of(Circle(d.inside[0], 20_000.0)), T0) is None


def test_expiry_timestamps(districts):
    cache = MappingCache()
    d = districts[0]
    cache.put(mapping_for(d, expires=T0 + timedelta(seconds=60)), at(d.inside[0]), T0)
    assert cache.get(SOS, at(d.inside[1]), T0 + timedelta(seconds=59)) is not None
    assert cache.get(SOS, at(d.inside[1]), T0 + timedelta(seconds=60)) is None
    assert len(cache) == 0 and cache.stats.expired == 1
    # Already expired when it arrives: not kept.
    assert not cache.put(mapping_for(d, expires=T0 - timedelta(seconds=1)), at(d.inside[0]), T0)


def test_no_cache_is_never_kept_and_no_expiration_until_evicted(districts):
    cache = MappingCache(max_entries=2)
    a, b, c = districts[:3]
    assert not cache.put(mapping_for(a, expires=NO_CACHE), at(a.inside[0]), T0)
    assert cache.get(SOS, at(a.inside[0]), T0) is None
    far_future = T0 + timedelta(days=36500)
    cache.put(mapping_for(a), at(a.inside[0]), T0)
    cache.put(mapping_for(b), at(b.inside[0]), T0)
    assert cache.get(SOS, at(a.inside[1]), far_future) is not None  # a is now most recent
    cache.put(mapping_for(c), at(c.inside[0]), T0)  # evicts b, the least recently used
    assert len(cache) == 2 and cache.stats.evicted == 1
    assert cache.get(SOS, at(b.inside[1]), T0) is None
    assert cache.get(SOS, at(a.inside[1]), far_future) is not None
    assert cache.get(SOS, at(c.inside[1]), far_future) is not None


def test_cache_stays_bounded_under_churn(districts):
    cache = MappingCache(max_entries=3)
    d = districts[0]
    for i in range(200):
        m = mapping_for(d, expires=T0 + timedelta(hours=1))
        m.source_id = f"{d.name}-{i}"
        cache.put(m, at(d.inside[0]), T0)
    assert len(cache) == 3 and cache.stats.evicted == 197
    assert len(cache._expiry) <= 4 * 3  # expiry bookkeeping is bounded too
    assert cache.get(SOS, at(d.inside[1]), T0)[0].source_id == f"{d.name}-199"


def test_newer_copy_of_a_mapping_replaces_the_old_one(districts):
    cache = MappingCache()
    d = districts[0]
    cache.put(mapping_for(d, expires=T0 + timedelta(seconds=10)), at(d.inside[0]), T0)
    cache.put(mapping_for(d, expires=T0 + timedelta(hours=1)), at(d.inside[0]), T0)
    assert len(cache) == 1
    # The first copy's expiry passing does not drop the replacement.
    assert cache.get(SOS, at(d.inside[1]), T0 + timedelta(seconds=30)) is not None


def test_mapping_without_boundary_answers_only_the_same_location(districts):
    cache = MappingCache()
    d = districts[0]
    cache.put(mapping_for(d, by_value=False), at(d.inside[0]), T0)
    assert cache.get(SOS, at(d.inside[0]), T0) is not None
    assert cache.get(SOS, at(d.inside[1]), T0) is None


def test_civic_boundaries():
    """A civic boundary covers every address whose elements match those it lists."""
    boundary = Location(id="b", profile="civic", civic=CivicAddress(country="US", A1="MA", A3="CAMBRIDGE"))
    mapping = Mapping(SOS, "ecrf-a.example", "cambridge", T0, NO_EXPIRATION, boundaries=[boundary])
    cache = MappingCache()
    city_hall = CivicAddress(country="US", A1="MA", A3="Cambridge", RD="Massachusetts Ave", HNO="795")
    cache.put(mapping, location_of(city_hall), T0)
    theatre = CivicAddress(country="US", A1="ma", A3="cambridge ", RD="Brattle St", HNO="40")
    assert cache.get(SOS, location_of(theatre), T0) is not None
    boston = CivicAddress(country="US", A1="MA", A3="Boston", RD="Tremont St", HNO="1")
    assert cache.get(SOS, location_of(boston), T0) is None
    assert cache.get(SOS, location_of(Point(42.37, -71.1)), T0) is None  # geodetic: no match


def test_now_must_be_timezone_aware(districts):
    with pytest.raises(ValueError, match="timezone-aware"):
        MappingCache().get(SOS, at(districts[0].inside[0]), datetime(2026, 1, 1))


# --- the sans-I/O core ----------------------------------------------------------------

A, B, C = "http://127.0.0.1:1/lost", "http://127.0.0.1:2/lost", "http://127.0.0.1:3/lost"
NAMES = {"ecrf-a.example": A, "ecrf-b.example": B, "ecrf-c.example": C}


def test_redirects_are_followed_and_loops_stopped(districts):
    core = LostClientCore(resolve=NAMES)
    d = districts[0]
    request = core.find_service_request(d.inside[0])
    exchange, step = core.start(request, A, T0)
    assert isinstance(step, Send) and step.destination == A and step.request is request
    step = core.receive(exchange, Redirect(target="ecrf-b.example", source="ecrf-a.example"), T0)
    assert isinstance(step, Send) and step.destination == B
    step = core.receive(exchange, Redirect(target="ecrf-a.example", source="ecrf-b.example"), T0)
    assert isinstance(step, Done) and isinstance(step.response, ErrorsResponse)
    assert step.response.errors[0].kind is ErrorKind.LOOP
    assert A in step.response.errors[0].message and B in step.response.errors[0].message
    assert core.stats.redirects == 1


def test_redirect_hop_limit_and_unknown_target(districts):
    core = LostClientCore(resolve=NAMES, max_hops=1)
    exchange, _ = core.start(core.find_service_request(districts[0].inside[0]), A, T0)
    assert isinstance(core.receive(exchange, Redirect("ecrf-b.example", "ecrf-a.example"), T0), Send)
    done = core.receive(exchange, Redirect("ecrf-c.example", "ecrf-b.example"), T0)
    assert isinstance(done, Done) and done.response.errors[0].kind is ErrorKind.SERVER_ERROR
    assert "more than 1 redirects" in done.response.errors[0].message
    exchange, _ = core.start(core.find_service_request(districts[0].inside[0]), A, T0)
    done = core.receive(exchange, Redirect("nowhere.example", "ecrf-a.example"), T0)
    assert isinstance(done, Done) and "cannot resolve" in done.response.errors[0].message


def test_answer_is_cached_and_the_next_point_inside_needs_no_query(districts):
    core = LostClientCore()
    d = districts[0]
    exchange, step = core.start(core.find_service_request(d.inside[0]), A, T0)
    assert isinstance(step, Send)
    answer = FindServiceResponse([mapping_for(d)], path=["ecrf-a.example"], location_used="location")
    done = core.receive(exchange, answer, T0)
    assert isinstance(done, Done) and done.response is answer and not done.from_cache
    _, step = core.start(core.find_service_request(d.inside[1]), A, T0)
    assert isinstance(step, Done) and step.from_cache
    assert step.response.mappings[0].source_id == d.name
    assert step.response.path == ["ecrf-a.example"]
    # Validation is about the exact address: always asked.
    _, step = core.start(core.find_service_request(d.inside[1], validate=True), A, T0)
    assert isinstance(step, Send)
    assert core.stats.queries == 2 and core.cache.stats.hits == 1


def test_boundary_by_reference_is_fetched_once(districts):
    core = LostClientCore(resolve=NAMES)
    d = districts[0]
    ref = ServiceBoundaryReference(source="ecrf-b.example", key=f"{d.name}-key")
    by_ref = mapping_for(d, by_value=False, ref=ref)
    exchange, _ = core.start(core.find_service_request(d.inside[0], boundary="reference"), A, T0)
    step = core.receive(exchange, FindServiceResponse([by_ref]), T0)
    # The reference names the server that holds the boundary.
    assert isinstance(step, Send) and step.destination == B
    assert step.request == GetServiceBoundary(key=ref.key)
    boundary = GetServiceBoundaryResponse([Location("b", "geodetic-2d", shape=d.polygon)])
    done = core.receive(exchange, boundary, T0)
    assert isinstance(done, Done) and done.response.mappings == [by_ref]
    # Another point inside: answered from the cache.
    _, step = core.start(core.find_service_request(d.inside[1], boundary="reference"), A, T0)
    assert isinstance(step, Done) and step.from_cache
    # The same reference in a later answer (e.g. for a point outside the cached boundary
    # but the same mapping) is not fetched again.
    outside = districts[1].inside[0]
    exchange, _ = core.start(core.find_service_request(outside, boundary="reference"), A, T0)
    step = core.receive(exchange, FindServiceResponse([by_ref]), T0)
    assert isinstance(step, Done) and core.stats.boundary_fetches == 1


def test_failed_boundary_fetch_still_returns_the_mapping(districts):
    core = LostClientCore()
    d = districts[0]
    ref = ServiceBoundaryReference(source="unknown.example", key="k")
    exchange, _ = core.start(core.find_service_request(d.inside[0]), A, T0)
    step = core.receive(exchange, FindServiceResponse([mapping_for(d, by_value=False, ref=ref)]), T0)
    assert isinstance(step, Send) and step.destination == A  # unknown source: ask the same server
    done = core.fail(exchange, ErrorKind.SERVER_TIMEOUT, "slow", T0)
    assert isinstance(done, Done) and isinstance(done.response, FindServiceResponse)
    # Cached for its exact location only.
    assert isinstance(core.start(core.find_service_request(d.inside[0]), A, T0)[1], Done)
    assert isinstance(core.start(core.find_service_request(d.inside[1]), A, T0)[1], Send)


def test_errors_and_failures_are_answers(districts):
    core = LostClientCore()
    exchange, _ = core.start(core.find_service_request(districts[0].inside[0]), A, T0)
    not_found = ErrorsResponse("ecrf-a.example", [LostError(ErrorKind.NOT_FOUND, "no PSAP")])
    assert core.receive(exchange, not_found, T0) == Done(not_found)
    exchange, _ = core.start(core.find_service_request(districts[0].inside[0]), A, T0)
    done = core.fail(exchange, ErrorKind.SERVER_TIMEOUT, "no answer", T0)
    assert done.response.errors[0].kind is ErrorKind.SERVER_TIMEOUT and done.response.source == A
    exchange, _ = core.start(ListServices(), A, T0)
    wrong = core.receive(exchange, FindServiceResponse([]), T0)
    assert wrong.response.errors[0].kind is ErrorKind.SERVER_ERROR
    assert "expected ListServicesResponse" in wrong.response.errors[0].message
    assert len(core.cache) == 0


def test_requests_built(districts):
    request = LostClientCore.find_service_request(
        CivicAddress(A3="CAMBRIDGE", RD="Brattle St", HNO="40"), POLICE, recursive=True,
        validate=True, boundary="reference",
    )  # fmt: skip
    assert isinstance(request, FindService) and request.service == POLICE
    assert request.recursive and request.validate_location and request.service_boundary == "reference"
    assert request.locations[0].profile == "civic"
    assert location_of(districts[0].polygon).profile == "geodetic-2d"
    with pytest.raises(ValueError, match="serviceBoundary"):
        LostClientCore.find_service_request(districts[0].inside[0], boundary="both")
    with pytest.raises(TypeError, match="not a location"):
        location_of("42.37,-71.1")  # type: ignore[arg-type]


# --- the httpx adapter against real LoST servers on 127.0.0.1 ---------------------------

Answer = Callable[[object], object]


@dataclass
class Server:
    """A small real LoST responder: parses each request with the codec and answers with
    ``answer(request)`` serialized by the codec (or a raw Starlette response)."""

    answer: Answer
    requests: list[object] = field(default_factory=list)
    url: str = ""

    def app(self) -> Starlette:
        from firebox.lost import codec

        async def lost(http: HttpRequest) -> HttpResponse:
            message = codec.parse(await http.body())
            self.requests.append(message)
            out = self.answer(message)
            if asyncio.iscoroutine(out):
                out = await out
            if isinstance(out, HttpResponse):
                return out
            return HttpResponse(codec.serialize(out), media_type="application/lost+xml")

        return Starlette(routes=[Route("/lost", lost, methods=["POST"])])


class Servers:
    def __init__(self) -> None:
        self._running: list[tuple[uvicorn.Server, asyncio.Task, socket.socket]] = []

    async def start(self, answer: Answer) -> Server:
        server = Server(answer)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        config = uvicorn.Config(server.app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        uv = uvicorn.Server(config)
        task = asyncio.create_task(uv.serve(sockets=[sock]))
        for _ in range(500):  # bounded wait for start-up
            if uv.started:
                break
            await asyncio.sleep(0.01)
        assert uv.started, "test LoST server did not start"
        server.url = f"http://127.0.0.1:{sock.getsockname()[1]}/lost"
        self._running.append((uv, task, sock))
        return server

    async def stop(self) -> None:
        for uv, _, _ in self._running:
            uv.should_exit = True
        for _, task, sock in self._running:
            await task
            sock.close()


@pytest.fixture
async def servers():
    s = Servers()
    yield s
    await s.stop()


def free_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was bound, then released)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/lost"


def district_server(districts: list[District], *, by_reference: bool = False) -> Answer:
    """Answers findService with the engine district holding the point (by value or by
    reference), getServiceBoundary with the district, listServices with two services."""

    def answer(request):
        if isinstance(request, ListServices):
            return ListServicesResponse([SOS, POLICE], path=["ecrf-b.example"])
        if isinstance(request, GetServiceBoundary):
            for d in districts:
                if request.key == f"{d.name}-key":
                    return GetServiceBoundaryResponse([Location("b", "geodetic-2d", shape=d.polygon)])
            return ErrorsResponse("ecrf-b.example", [LostError(ErrorKind.NOT_FOUND, request.key)])
        assert isinstance(request, FindService)
        point = request.locations[0].shape
        for d in districts:
            if d.geometry.contains(shapely.Point(point.lon, point.lat)):
                ref = ServiceBoundaryReference("ecrf-b.example", f"{d.name}-key") if by_reference else None
                mapping = mapping_for(d, by_value=not by_reference, ref=ref)
                return FindServiceResponse([mapping], path=["ecrf-b.example"], location_used=request.locations[0].id)
        return ErrorsResponse("ecrf-b.example", [LostError(ErrorKind.NOT_FOUND, "outside every district")])

    return answer


async def test_http_redirect_followed_then_boundary_reused(servers, districts):
    b = await servers.start(district_server(districts))
    a = await servers.start(lambda request: Redirect(target="ecrf-b.example", source="ecrf-a.example"))
    d, other = districts[0], districts[1]
    async with AsyncLostClient(a.url, servers={"ecrf-b.example": b.url}) as client:
        first = await client.find_service(d.inside[0])
        assert isinstance(first, FindServiceResponse), first
        assert first.mappings[0].source_id == d.name and first.path == ["ecrf-b.example"]
        assert (len(a.requests), len(b.requests)) == (1, 1)
        second = await client.find_service(d.inside[1])  # same district: no query at all
        assert isinstance(second, FindServiceResponse) and second.mappings[0].source_id == d.name
        assert (len(a.requests), len(b.requests)) == (1, 1)
        third = await client.find_service(other.inside[0])  # elsewhere: asked again
        assert third.mappings[0].source_id == other.name
        assert (len(a.requests), len(b.requests)) == (2, 2)
        assert (client.cache.stats.hits, client.cache.stats.misses) == (1, 2)
        assert client.stats.redirects == 2 and client.stats.queries == 4


async def test_http_boundary_by_reference_fetched_once(servers, districts):
    b = await servers.start(district_server(districts, by_reference=True))
    d = districts[0]
    async with AsyncLostClient(b.url, servers={"ecrf-b.example": b.url}) as client:
        first = await client.find_service(d.inside[0], boundary="reference")
        assert isinstance(first, FindServiceResponse)
        assert first.mappings[0].boundary_ref.key == f"{d.name}-key"
        assert [type(r).__name__ for r in b.requests] == ["FindService", "GetServiceBoundary"]
        again = await client.find_service(d.inside[1], boundary="reference")
        assert isinstance(again, FindServiceResponse) and len(b.requests) == 2
        direct = await client.get_service_boundary(f"{d.name}-key", source="ecrf-b.example")
        assert isinstance(direct, GetServiceBoundaryResponse)
        assert direct.boundaries[0].shape == d.polygon
        services = await client.list_services()
        assert isinstance(services, ListServicesResponse) and services.services == [SOS, POLICE]


async def test_http_redirect_loop(servers, districts):
    a = await servers.start(lambda r: Redirect(target="ecrf-b.example", source="ecrf-a.example"))
    b = await servers.start(lambda r: Redirect(target="ecrf-a.example", source="ecrf-b.example"))
    names = {"ecrf-a.example": a.url, "ecrf-b.example": b.url}
    async with AsyncLostClient(a.url, servers=names) as client:
        answer = await client.find_service(districts[0].inside[0])
    assert isinstance(answer, ErrorsResponse) and answer.errors[0].kind is ErrorKind.LOOP
    assert (len(a.requests), len(b.requests)) == (1, 1)


async def test_http_timeout_is_server_timeout(servers, districts):
    release = asyncio.Event()

    async def slow(request):
        await asyncio.wait_for(release.wait(), 10)  # held until the client has given up
        return district_server(districts)(request)

    s = await servers.start(slow)
    try:
        async with AsyncLostClient(s.url, timeout=0.3) as client:
            answer = await client.find_service(districts[0].inside[0])
        assert isinstance(answer, ErrorsResponse)
        assert answer.errors[0].kind is ErrorKind.SERVER_TIMEOUT and answer.source == s.url
        assert client.stats.timeouts == 1 and len(client.cache) == 0
    finally:
        release.set()


async def test_http_connection_refused_is_server_error(districts):
    url = free_port_url()
    async with AsyncLostClient(url, timeout=2.0) as client:
        answer = await client.find_service(districts[0].inside[0])
        assert isinstance(answer, ErrorsResponse)
        assert answer.errors[0].kind is ErrorKind.SERVER_ERROR and "cannot reach" in answer.errors[0].message
        assert isinstance(await client.list_services(), ErrorsResponse)
        assert client.stats.transport_errors == 2


async def test_http_garbage_and_http_errors_are_server_errors(servers, districts):
    garbage = await servers.start(lambda r: HttpResponse(b"<not-lost/>", media_type="application/lost+xml"))
    broken = await servers.start(lambda r: HttpResponse(b"Internal Server Error", status_code=500))
    for server, text in ((garbage, "unparseable"), (broken, "HTTP 500")):
        async with AsyncLostClient(server.url) as client:
            answer = await client.find_service(districts[0].inside[0])
        assert isinstance(answer, ErrorsResponse), server
        assert answer.errors[0].kind is ErrorKind.SERVER_ERROR and text in answer.errors[0].message


async def test_http_lost_errors_pass_through(servers, districts):
    s = await servers.start(district_server(districts))
    outside = Point(lat=42.30, lon=-71.20)  # Newton, not in any Cambridge district
    async with AsyncLostClient(s.url) as client:
        answer = await client.find_service(outside)
    assert isinstance(answer, ErrorsResponse) and answer.errors[0].kind is ErrorKind.NOT_FOUND
    assert answer.source == "ecrf-b.example"
