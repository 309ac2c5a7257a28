"""LoST client (RFC 5222), the ECRF client side of a NENA i3 ESRP (NENA STA-010 section 4.3).

Two layers, as everywhere in firebox:

* ``LostClientCore``, sans-I/O: builds requests, answers from its ``MappingCache`` when it
  can, follows ``<redirect>`` (section 13.3) with a hop limit and loop detection, fetches
  by-reference service boundaries once (section 9), and says what to send next (``Send``) or
  that the operation is over (``Done``). Time is an argument; it never touches a socket.
* ``AsyncLostClient``, a thin httpx adapter: POSTs what the core says to send and feeds back
  what comes back. Timeouts and transport failures become an ``ErrorsResponse`` with
  ``serverTimeout`` / ``serverError`` (section 13.1): an ESRP routes on its default route
  when the ECRF fails, so the client never raises for those.

Caching (sections 5.5 and 8.3.2): a mapping is valid until its ``expires`` time
(``NO-CACHE`` mappings are never kept, ``NO-EXPIRATION`` ones until evicted) for every
location inside its service boundary, so a new location inside a cached boundary is answered
without a query, for the same service. Boundaries sent by reference are fetched once with
``getServiceBoundary`` and then used the same way. Mappings without a boundary answer only
the very same location again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping as MappingABC, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx
import shapely
from shapely.geometry.base import BaseGeometry

from firebox.location.civic import CivicAddress
from firebox.location.shapes import ArcBand, Circle, Ellipse, Point, Polygon, Shape, to_geometry
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
    Profile,
    Redirect,
    Request,
    Response,
    ServiceBoundaryReference,
)

#: Media type of LoST messages over HTTP (RFC 5222 section 18 and the IANA registration).
LOST_MEDIA_TYPE = "application/lost+xml"
#: ``source`` of the errors the client makes itself (loops, hop limit, bad answers).
CLIENT_SOURCE = "firebox-lost-client"
DEFAULT_SERVICE = "urn:service:sos"
SHAPE_TYPES = (Point, Circle, Ellipse, ArcBand, Polygon)


def clean(value: str | None) -> str:
    """Civic value comparison form: case and runs of whitespace do not matter."""
    return " ".join((value or "").upper().split())


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime (LoST times are UTC)")
    return now


def location_of(location: Location | Shape | CivicAddress, loc_id: str = "location") -> Location:
    """A LoST ``<location>`` (section 10.2) for a shape or a civic address."""
    if isinstance(location, Location):
        return location
    if isinstance(location, CivicAddress):
        return Location(id=loc_id, profile=Profile.CIVIC.value, civic=location)
    if isinstance(location, SHAPE_TYPES):
        return Location(id=loc_id, profile=Profile.GEODETIC_2D.value, shape=location)
    raise TypeError(f"not a location, shape or civic address: {type(location).__name__}")


def _location_key(location: Location) -> Hashable | None:
    """Identity of a location for exact-match caching (shapes and civic addresses are frozen
    dataclasses, hence hashable)."""
    if location.shape is not None:
        return ("geo", location.shape)
    if location.civic is not None:
        return ("civic", tuple((k, clean(v)) for k, v in location.civic.items()))
    return None


# --- boundaries ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Boundary:
    """A service boundary usable for containment tests: a prepared lon/lat geometry for
    geodetic boundaries, and/or civic boundaries (a civic location is inside one when every
    element the boundary lists has the same value in the location, RFC 5222 section 5.5)."""

    geometry: BaseGeometry | None = None
    civic: tuple[CivicAddress, ...] = ()

    @classmethod
    def from_locations(cls, locations: Sequence[Location]) -> Boundary | None:
        geoms = [to_geometry(loc.shape) for loc in locations if loc.shape is not None]
        civic = tuple(loc.civic for loc in locations if loc.civic is not None)
        geometry = None
        if geoms:
            geometry = geoms[0] if len(geoms) == 1 else shapely.union_all(geoms)
            if not geometry.is_valid:
                geometry = shapely.make_valid(geometry)
            shapely.prepare(geometry)
        if geometry is None and not civic:
            return None
        return cls(geometry=geometry, civic=civic)

    def contains(self, location: Location, geometry: BaseGeometry | None) -> bool:
        if location.shape is not None and self.geometry is not None and geometry is not None:
            if isinstance(geometry, shapely.Point):
                return bool(shapely.contains_xy(self.geometry, geometry.x, geometry.y))
            return bool(self.geometry.contains(geometry))
        if location.civic is not None and self.civic:
            return any(_civic_within(location.civic, b) for b in self.civic)
        return False


def _civic_within(address: CivicAddress, boundary: CivicAddress) -> bool:
    items = boundary.items()
    return bool(items) and all(clean(getattr(address, k)) == clean(v) for k, v in items)


# --- the cache -----------------------------------------------------------------------------


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    stored: int = 0
    evicted: int = 0
    expired: int = 0


@dataclass(slots=True)
class _Entry:
    mapping: Mapping
    expires: datetime | None  # None: NO-EXPIRATION
    boundary: Boundary | None
    path: list[str]


class MappingCache:
    """LoST mappings by (service, boundary or exact location), LRU-bounded, expiry-aware.

    Entries with a boundary are keyed by (service, source, sourceId), so a newer copy of the
    same mapping replaces the old one; entries without one by (service, location). ``now``
    is passed to every call; expired entries are purged (a heap orders them by expiry).
    """

    def __init__(self, max_entries: int = 1024, max_boundaries: int = 1024):
        if max_entries < 1 or max_boundaries < 1:
            raise ValueError("cache sizes must be at least 1")
        self.max_entries = max_entries
        self.max_boundaries = max_boundaries
        self.stats = CacheStats()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._by_service: dict[str, dict[Hashable, None]] = {}
        self._expiry: list[tuple[datetime, int, Hashable]] = []
        self._tie = itertools.count()
        # By-reference boundaries (section 9): (source, key) -> (boundary, expires).
        self._boundaries: OrderedDict[tuple[str, str], tuple[Boundary, datetime | None]] = (
            OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._entries)

    # boundaries by reference

    def boundary(self, ref: ServiceBoundaryReference, now: datetime) -> Boundary | None:
        item = self._boundaries.get((ref.source, ref.key))
        if item is None:
            return None
        if item[1] is not None and item[1] <= _aware(now):
            del self._boundaries[(ref.source, ref.key)]
            return None
        self._boundaries.move_to_end((ref.source, ref.key))
        return item[0]

    def put_boundary(
        self, ref: ServiceBoundaryReference, boundary: Boundary, expires: Any, now: datetime
    ) -> None:
        when = _expiry(expires)
        if when is False or (when is not None and when <= _aware(now)):
            return
        self._boundaries[(ref.source, ref.key)] = (boundary, when)
        self._boundaries.move_to_end((ref.source, ref.key))
        while len(self._boundaries) > self.max_boundaries:
            self._boundaries.popitem(last=False)

    # mappings

    def put(
        self,
        mapping: Mapping,
        location: Location,
        now: datetime,
        *,
        boundary: Boundary | None = None,
        path: Sequence[str] = (),
    ) -> bool:
        """Keep ``mapping`` (answer for ``location``) unless it is NO-CACHE or already
        expired. ``boundary`` defaults to the mapping's by-value boundary. True if stored."""
        now = _aware(now)
        self.purge(now)
        when = _expiry(mapping.expires)
        if when is False or (when is not None and when <= now):
            return False
        if boundary is None and mapping.boundaries:
            boundary = Boundary.from_locations(mapping.boundaries)
        if boundary is not None:
            key: Hashable = ("b", mapping.service, mapping.source, mapping.source_id)
        else:
            loc_key = _location_key(location)
            if loc_key is None:
                return False
            key = ("l", mapping.service, loc_key)
        self._drop(key)
        self._entries[key] = _Entry(mapping, when, boundary, list(path))
        self._by_service.setdefault(mapping.service, {})[key] = None
        if when is not None:
            heapq.heappush(self._expiry, (when, next(self._tie), key))
            if len(self._expiry) > 4 * self.max_entries:
                # Replaced and evicted entries leave stale items behind; rebuild from the
                # live entries so the heap stays bounded too.
                self._expiry = [
                    (e.expires, next(self._tie), k)
                    for k, e in self._entries.items()
                    if e.expires is not None
                ]
                heapq.heapify(self._expiry)
        self.stats.stored += 1
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.stats.evicted += 1
        return True

    def get(
        self, service: str, location: Location, now: datetime
    ) -> tuple[Mapping, list[str]] | None:
        """A cached mapping of ``service`` valid for ``location`` at ``now``: first an
        exact-location entry, then any entry whose boundary contains the location."""
        now = _aware(now)
        self.purge(now)
        loc_key = _location_key(location)
        found: Hashable | None = None
        if loc_key is not None and ("l", service, loc_key) in self._entries:
            found = ("l", service, loc_key)
        else:
            geometry = to_geometry(location.shape) if location.shape is not None else None
            for key in reversed(self._by_service.get(service, {})):  # newest first
                entry = self._entries[key]
                if entry.boundary is not None and entry.boundary.contains(location, geometry):
                    found = key
                    break
        if found is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        self._entries.move_to_end(found)
        entry = self._entries[found]
        return entry.mapping, list(entry.path)

    def purge(self, now: datetime) -> int:
        """Drop every entry expired at ``now``; returns how many."""
        now = _aware(now)
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            when, _, key = heapq.heappop(self._expiry)
            entry = self._entries.get(key)
            if entry is not None and entry.expires == when:  # not replaced since
                self._drop(key)
                dropped += 1
        self.stats.expired += dropped
        return dropped

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._by_service.get(entry.mapping.service, {}).pop(key, None)


def _expiry(expires: Any) -> datetime | None | bool:
    """A mapping's ``expires`` as a datetime, None for NO-EXPIRATION, False for NO-CACHE (or
    anything unusable, which is not cached either)."""
    if expires == NO_CACHE:
        return False
    if expires == NO_EXPIRATION:
        return None
    if isinstance(expires, datetime) and expires.tzinfo is not None:
        return expires
    return False


# --- the sans-I/O core ---------------------------------------------------------------------


class Phase(StrEnum):
    QUERY = "query"  # the request itself, possibly redirected
    BOUNDARY = "boundary"  # fetching by-reference boundaries of the answer
    DONE = "done"


@dataclass(slots=True)
class Send:
    """Send ``request`` to ``destination`` (a URL) and feed the answer back to the core."""

    destination: str
    request: Request

    @property
    def body(self) -> bytes:
        from firebox.lost import codec  # the codec is only needed when bytes are wanted

        return codec.serialize(self.request)


@dataclass(slots=True)
class Done:
    """The operation is over; ``response`` is never a ``Redirect``."""

    response: Response
    from_cache: bool = False


Step = Send | Done


@dataclass(slots=True)
class ClientStats:
    """Counters for metrics (cache hits/misses live in ``MappingCache.stats``)."""

    queries: int = 0
    redirects: int = 0
    boundary_fetches: int = 0
    timeouts: int = 0
    transport_errors: int = 0
    errors_returned: int = 0


@dataclass(slots=True)
class Exchange:
    """One client operation in progress (what the core remembers between steps)."""

    request: Request
    destination: str
    visited: list[str]
    phase: Phase = Phase.QUERY
    response: FindServiceResponse | None = None
    pending: list[tuple[Mapping, ServiceBoundaryReference]] = field(default_factory=list)
    fetching: tuple[Mapping, ServiceBoundaryReference] | None = None


class LostClientCore:
    """Sans-I/O LoST client logic. ``resolve`` maps a server name from a ``<redirect
    target>`` or a ``serviceBoundaryReference source`` (an application unique string,
    section 4) to a URL; http(s) URLs resolve to themselves."""

    def __init__(
        self,
        *,
        cache: MappingCache | None = None,
        max_hops: int = 4,
        resolve: Callable[[str], str | None] | MappingABC[str, str] | None = None,
    ):
        if max_hops < 0:
            raise ValueError("max_hops must be >= 0")
        self.cache = cache if cache is not None else MappingCache()
        self.max_hops = max_hops
        self._resolve = resolve
        self.stats = ClientStats()

    # requests

    @staticmethod
    def find_service_request(
        location: Location | Shape | CivicAddress,
        service: str | None = DEFAULT_SERVICE,
        *,
        recursive: bool = False,
        validate: bool = False,
        boundary: str | None = "value",
    ) -> FindService:
        """``<findService>`` (section 8.1)."""
        if boundary not in ("value", "reference", None):
            raise ValueError(f"serviceBoundary must be 'value' or 'reference', not {boundary!r}")
        return FindService(
            locations=[location_of(location)],
            service=service,
            recursive=recursive,
            service_boundary=boundary,
            validate_location=validate,
        )

    @staticmethod
    def list_services_request(service: str | None = None) -> ListServices:
        return ListServices(service=service)

    @staticmethod
    def get_service_boundary_request(key: str) -> GetServiceBoundary:
        return GetServiceBoundary(key=key)

    # driving an exchange

    def resolve(self, name: str) -> str | None:
        if name.startswith(("http://", "https://")):
            return name
        if self._resolve is None:
            return None
        if callable(self._resolve):
            return self._resolve(name)
        return self._resolve.get(name)

    def start(self, request: Request, destination: str, now: datetime) -> tuple[Exchange, Step]:
        """Begin ``request`` at ``destination``. A findService the cache can answer is
        ``Done`` at once; one that asks for location validation always goes to the server
        (validation is about this very address, not the area a mapping covers)."""
        exchange = Exchange(request=request, destination=destination, visited=[destination])
        if isinstance(request, FindService) and request.service and not request.validate_location:
            for location in request.locations:
                hit = self.cache.get(request.service, location, now)
                if hit is not None:
                    mapping, path = hit
                    exchange.phase = Phase.DONE
                    answer = FindServiceResponse([mapping], path=path, location_used=location.id)
                    return exchange, Done(answer, from_cache=True)
        self.stats.queries += 1
        return exchange, Send(destination, request)

    def receive_bytes(self, exchange: Exchange, data: bytes, now: datetime) -> Step:
        """Feed a raw answer; one that does not parse is a ``serverError`` from its sender."""
        from firebox.lost import codec

        try:
            message = codec.parse(data)
        except (codec.LostParseError, ValueError) as exc:
            return self.fail(
                exchange, ErrorKind.SERVER_ERROR, f"unparseable LoST answer: {exc}", now
            )
        return self.receive(exchange, message, now)

    def receive(self, exchange: Exchange, message: Any, now: datetime) -> Step:
        """Feed the parsed answer to the last ``Send``."""
        if exchange.phase is Phase.BOUNDARY:
            return self._boundary_answer(exchange, message, now)
        if exchange.phase is Phase.DONE:
            raise RuntimeError("exchange is already done")
        if isinstance(message, Redirect):
            return self._redirect(exchange, message)
        if isinstance(message, ErrorsResponse):
            self.stats.errors_returned += 1
            return self._done(exchange, message)
        expected = _EXPECTED.get(type(exchange.request))
        if expected is None or not isinstance(message, expected):
            return self.fail(
                exchange,
                ErrorKind.SERVER_ERROR,
                f"expected {expected.__name__ if expected else 'a response'} to "
                f"{type(exchange.request).__name__}, got {type(message).__name__}",
                now,
            )
        if isinstance(message, FindServiceResponse):
            return self._found(exchange, message, now)
        return self._done(exchange, message)

    def fail(self, exchange: Exchange, kind: ErrorKind, message: str, now: datetime) -> Step:
        """The last ``Send`` got no usable answer (timeout, connection refused, garbage).
        While fetching a boundary the mapping is still returned, just cached without it."""
        if kind is ErrorKind.SERVER_TIMEOUT:
            self.stats.timeouts += 1
        else:
            self.stats.transport_errors += 1
        if exchange.phase is Phase.BOUNDARY:
            return self._next_boundary(exchange, now)
        source = exchange.visited[-1] if exchange.visited else CLIENT_SOURCE
        return self._done(exchange, _errors(source, kind, message))

    # internals

    def _done(self, exchange: Exchange, response: Response) -> Done:
        exchange.phase = Phase.DONE
        return Done(response)

    def _redirect(self, exchange: Exchange, redirect: Redirect) -> Step:
        """Section 13.3: ask ``target`` instead, at most ``max_hops`` times, never twice."""
        target = self.resolve(redirect.target)
        if target is None:
            return self._done(
                exchange,
                _errors(redirect.source or CLIENT_SOURCE, ErrorKind.SERVER_ERROR,
                        f"cannot resolve redirect target {redirect.target!r}"),
            )  # fmt: skip
        if target in exchange.visited:
            return self._done(
                exchange,
                _errors(CLIENT_SOURCE, ErrorKind.LOOP,
                        f"redirect loop: {' -> '.join([*exchange.visited, target])}"),
            )  # fmt: skip
        if len(exchange.visited) - 1 >= self.max_hops:  # visited[0] is the first server
            return self._done(
                exchange,
                _errors(CLIENT_SOURCE, ErrorKind.SERVER_ERROR,
                        f"more than {self.max_hops} redirects, last to {redirect.target!r}"),
            )  # fmt: skip
        self.stats.redirects += 1
        self.stats.queries += 1
        exchange.visited.append(target)
        exchange.destination = target
        return Send(target, exchange.request)

    def _found(self, exchange: Exchange, response: FindServiceResponse, now: datetime) -> Step:
        exchange.response = response
        for mapping in response.mappings:
            ref = mapping.boundary_ref
            if (
                ref is not None
                and not mapping.boundaries
                and _expiry(mapping.expires) is not False
                and self.cache.boundary(ref, now) is None
                and all(p[1] != ref for p in exchange.pending)
            ):
                exchange.pending.append((mapping, ref))
        exchange.phase = Phase.BOUNDARY
        return self._next_boundary(exchange, now)

    def _next_boundary(self, exchange: Exchange, now: datetime) -> Step:
        if exchange.pending:
            mapping, ref = exchange.pending.pop(0)
            exchange.fetching = (mapping, ref)
            # The reference names the server holding the boundary (section 9); if that name
            # is unknown here, the server that gave the reference is asked.
            destination = self.resolve(ref.source) or exchange.destination
            self.stats.boundary_fetches += 1
            return Send(destination, GetServiceBoundary(key=ref.key))
        exchange.fetching = None
        return self._finish(exchange, now)

    def _boundary_answer(self, exchange: Exchange, message: Any, now: datetime) -> Step:
        if isinstance(message, GetServiceBoundaryResponse) and exchange.fetching is not None:
            mapping, ref = exchange.fetching
            boundary = Boundary.from_locations(message.boundaries)
            if boundary is not None:
                self.cache.put_boundary(ref, boundary, mapping.expires, now)
        return self._next_boundary(exchange, now)

    def _finish(self, exchange: Exchange, now: datetime) -> Done:
        response = exchange.response
        request = exchange.request
        assert response is not None and isinstance(request, FindService)
        used = next(
            (loc for loc in request.locations if loc.id == response.location_used),
            request.locations[0] if request.locations else None,
        )
        if used is not None:
            for mapping in response.mappings:
                boundary = None
                if not mapping.boundaries and mapping.boundary_ref is not None:
                    boundary = self.cache.boundary(mapping.boundary_ref, now)
                self.cache.put(mapping, used, now, boundary=boundary, path=response.path)
        return self._done(exchange, response)


_EXPECTED: dict[type, type] = {
    FindService: FindServiceResponse,
    ListServices: ListServicesResponse,
    GetServiceBoundary: GetServiceBoundaryResponse,
}


def _errors(source: str, kind: ErrorKind, message: str) -> ErrorsResponse:
    return ErrorsResponse(source=source, errors=[LostError(kind=kind, message=message)])


# --- the asyncio adapter -------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AsyncLostClient:
    """LoST over HTTP (RFC 5222 section 18) with httpx. ``servers`` maps server names used
    in redirects and boundary references to URLs. Pass ``http`` to share a client (it is
    then not closed here); ``timeout`` bounds each request in seconds."""

    def __init__(
        self,
        url: str,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 2.0,
        cache: MappingCache | None = None,
        servers: MappingABC[str, str] | Callable[[str], str | None] | None = None,
        max_hops: int = 4,
        clock: Callable[[], datetime] = _utcnow,
    ):
        self.url = url
        self.timeout = timeout
        self.core = LostClientCore(cache=cache, max_hops=max_hops, resolve=servers)
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self._own_http = http is None
        self._clock = clock

    @property
    def cache(self) -> MappingCache:
        return self.core.cache

    @property
    def stats(self) -> ClientStats:
        return self.core.stats

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncLostClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def find_service(
        self,
        location: Location | Shape | CivicAddress,
        service: str = DEFAULT_SERVICE,
        *,
        recursive: bool = False,
        validate: bool = False,
        boundary: str | None = "value",
    ) -> FindServiceResponse | ErrorsResponse:
        request = LostClientCore.find_service_request(
            location, service, recursive=recursive, validate=validate, boundary=boundary
        )
        response = await self._run(request, self.url)
        assert isinstance(response, (FindServiceResponse, ErrorsResponse))
        return response

    async def list_services(self, service: str | None = None) -> ListServicesResponse | ErrorsResponse:
        response = await self._run(ListServices(service=service), self.url)
        assert isinstance(response, (ListServicesResponse, ErrorsResponse))
        return response

    async def get_service_boundary(
        self, key: str, source: str | None = None
    ) -> GetServiceBoundaryResponse | ErrorsResponse:
        """``getServiceBoundary`` (section 9) at ``source`` (a server name or URL), by default
        the configured server."""
        destination = (self.core.resolve(source) if source else None) or self.url
        response = await self._run(GetServiceBoundary(key=key), destination)
        assert isinstance(response, (GetServiceBoundaryResponse, ErrorsResponse))
        return response

    async def _run(self, request: Request, destination: str) -> Response:
        exchange, step = self.core.start(request, destination, self._clock())
        while isinstance(step, Send):
            try:
                body = step.body
            except (ValueError, TypeError) as exc:  # a request the codec refuses: reported
                return _errors(CLIENT_SOURCE, ErrorKind.BAD_REQUEST, f"cannot encode: {exc}")
            step = await self._exchange(exchange, step.destination, body)
        return step.response

    async def _exchange(self, exchange: Exchange, destination: str, body: bytes) -> Step:
        core = self.core
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._http.post(
                    destination,
                    content=body,
                    headers={"Content-Type": LOST_MEDIA_TYPE, "Accept": LOST_MEDIA_TYPE},
                    timeout=self.timeout,
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            return core.fail(
                exchange, ErrorKind.SERVER_TIMEOUT,
                f"no answer from {destination} within {self.timeout} s ({type(exc).__name__})",
                self._clock(),
            )  # fmt: skip
        except (httpx.HTTPError, OSError) as exc:
            return core.fail(
                exchange, ErrorKind.SERVER_ERROR,
                f"cannot reach {destination}: {type(exc).__name__}: {exc}", self._clock(),
            )  # fmt: skip
        is_lost = reply.headers.get("content-type", "").startswith(LOST_MEDIA_TYPE)
        if reply.status_code != 200 and not is_lost:
            return core.fail(
                exchange, ErrorKind.SERVER_ERROR,
                f"HTTP {reply.status_code} from {destination}", self._clock(),
            )  # fmt: skip
        return core.receive_bytes(exchange, reply.content, self._clock())
