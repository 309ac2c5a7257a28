"""The ECRF: a LoST server (RFC 5222) over service boundaries, as NENA i3 (STA-010 section
4.3) asks of an Emergency Call Routing Function. Sans-I/O: ``Ecrf.handle(request, now)``
takes a parsed request and the time and returns a response, or a ``Forward`` when a peer LoST
server must be asked (recursion, RFC 5222 section 4.4); the HTTP adapter performs it and
hands the peer's answer to ``complete_forward``. ``handle`` never raises: every problem is an
``<errors>`` response (section 13.1) with a message naming it.

Behaviour, by request:

* ``findService`` (section 8): the first location with a recognized profile (section 12) is
  used. geodetic-2d: a Point goes to the boundary containing it; Circle, Ellipse, ArcBand and
  Polygon to the boundary with the greatest overlap (NENA i3). civic: the LVF validates and
  geocodes it when there is one; otherwise (or if the geocode falls nowhere) its municipality
  (A3) is matched against boundary names. ``validateLocation`` returns ``locationValidation``
  (section 8.4.2), or the ``locationValidationUnavailable`` warning without an LVF. A service
  we lack whose parent we have (``urn:service:sos.poison``) gets the parent's mapping and a
  ``serviceSubstitution`` warning (section 13.2); other services are
  ``serviceNotImplemented``. Outside every boundary, a peer covering the location is asked
  recursively (request ``recursive="true"``) or named in a ``<redirect>`` (section 13.3);
  otherwise ``notFound``.
* ``listServices`` (section 10), ``listServicesByLocation`` (section 11).
* ``getServiceBoundary`` (section 9) by the opaque key of a ``serviceBoundaryReference``.

Boundaries by value are written as one geodetic-2d Polygon per polygon of the boundary
(a MultiPolygon becomes several). The PIDF-LO Polygon (RFC 5491 section 5.2.2) has no
interior rings, so holes are dropped: a by-value boundary of a town with an enclave also
covers the enclave. Boundaries with more than ``max_boundary_vertices`` vertices are first
shrunk by a tolerance and then simplified by the same tolerance, so the simplified boundary
stays inside the true one: a client that answers later locations from a cached boundary
(section 5.5) may miss near a border but never maps a location to the wrong PSAP.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Mapping as MappingABC, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from firebox.ecrf.normalize import normalize_town
from firebox.gis.index import BoundaryLayer, ServiceIndex
from firebox.location.shapes import Circle, Point, Polygon, ShapeError, to_geometry
from firebox.lost.messages import (
    NO_CACHE,
    ErrorKind,
    ErrorsResponse,
    FindService,
    FindServiceResponse,
    GetServiceBoundary,
    GetServiceBoundaryResponse,
    ListServices,
    ListServicesByLocation,
    ListServicesByLocationResponse,
    ListServicesResponse,
    Location,
    LocationValidation,
    LostError,
    LostWarning,
    Mapping,
    Profile,
    Redirect,
    Request,
    Response,
    ServiceBoundaryReference,
    WarningKind,
)

log = logging.getLogger(__name__)

SOS = "urn:service:sos"
SERVICE_PREFIX = "urn:service:"
TEST_PREFIX = "urn:service:test."
_PROFILES = (Profile.GEODETIC_2D.value, Profile.CIVIC.value)
#: Boundary attributes that may hold a municipality name, for civic matching without an LVF.
NAME_ATTRIBUTES = ("TOWN", "NAME", "name", "town", "CITY", "city", "MUNICIPALITY", "municipality")


class PeerMode(StrEnum):
    """How this ECRF uses its peers for locations outside its own data (section 4.4)."""

    RECURSIVE_CAPABLE = "recursive-capable"  # recurse when the request asks, else redirect
    REDIRECT = "redirect"  # always redirect


@dataclass(frozen=True)
class Peer:
    """Another LoST server: its URI and the area it covers (``None``: any location, a
    default route). ``name`` is what a ``<redirect target>`` names (an application unique
    string, section 4); the URI when not given, which the firebox client follows directly."""

    uri: str
    coverage: BaseGeometry | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.coverage is not None:
            shapely.prepare(self.coverage)

    @classmethod
    def from_config(
        cls, uri: Any, covers: str | Path | BaseGeometry | None = None, name: str | None = None
    ) -> Peer:
        """A peer from a deployment file: ``covers`` is a GIS file of the area (its union is
        the coverage), a geometry, or None for "anything we do not cover"."""
        coverage = covers
        if isinstance(covers, (str, Path)):
            from firebox.gis.layers import read_outline

            coverage = read_outline(covers)
        return cls(str(uri), coverage, name)

    @property
    def target(self) -> str:
        return self.name or self.uri

    def covers(self, geom: BaseGeometry | None, lon: float | None = None, lat: float | None = None) -> bool:
        if self.coverage is None:
            return True
        if lon is not None and lat is not None:
            return bool(shapely.intersects_xy(self.coverage, lon, lat))
        return geom is not None and bool(self.coverage.intersects(geom))


@dataclass(slots=True)
class Forward:
    """Ask ``target_uri`` ``request`` (our via already appended to its path), then give the
    answer to ``Ecrf.complete_forward`` (recursion, RFC 5222 section 4.4)."""

    target_uri: str
    request: FindService | ListServicesByLocation
    peer: Peer


# --- fast point lookup -----------------------------------------------------------------


class PointGrid:
    """A lazily filled uniform grid over a layer's extent that answers point lookups exactly
    as ``BoundaryLayer.locate_point`` does, mostly without touching GEOS.

    Each cell, when first asked, records either the one boundary that contains the whole
    (closed) cell in its interior with no lower-indexed boundary touching the cell (then every
    point in it has that answer), or the sorted boundaries intersecting the cell (then those
    few are tested, lowest index first: containment, then touching, as ``locate_point``
    breaks ties). Cells are sized so that an average boundary spans about 64 of them.
    """

    MAX_CELLS = 1 << 21  # memo entries kept before the memo is reset (memory bound)

    def __init__(self, layer: BoundaryLayer, cells_per_boundary: int = 64):
        self.layer = layer
        self.geoms = layer.geometries
        self._cells: dict[int, int | tuple[int, ...]] = {}
        n = len(layer)
        if n == 0:
            self.x0 = self.y0 = 0.0
            self.nx = self.ny = 0
            self.w = self.h = 1.0
            return
        x0, y0, x1, y1 = shapely.total_bounds(self.geoms)
        area = float(np.sum(shapely.area(shapely.envelope(self.geoms))))
        side = math.sqrt(area / n / cells_per_boundary) if area > 0 else 1.0
        side = max(side, 1e-6)
        self.x0, self.y0 = float(x0), float(y0)
        self.nx = max(1, min(1 << 15, math.ceil((x1 - x0) / side)))
        self.ny = max(1, min(1 << 15, math.ceil((y1 - y0) / side)))
        self.w = (x1 - x0) / self.nx or 1.0
        self.h = (y1 - y0) / self.ny or 1.0
        self._x1, self._y1 = float(x1), float(y1)

    def _cell(self, cx: int, cy: int) -> int | tuple[int, ...]:
        x = self.x0 + cx * self.w
        y = self.y0 + cy * self.h
        cell = shapely.box(x, y, x + self.w, y + self.h)
        cands = np.sort(self.layer.tree.query(cell, predicate="intersects"))
        if cands.size == 0:
            return ()
        first = int(cands[0])
        if shapely.contains_properly(self.geoms[first], cell):
            return first
        return tuple(int(c) for c in cands)

    def locate(self, lon: float, lat: float) -> int:
        """Index of the boundary for (lon, lat), or -1 (the same as ``locate_point``)."""
        if not self.nx or not (self.x0 <= lon <= self._x1 and self.y0 <= lat <= self._y1):
            return -1  # outside the extent of every boundary
        cx = min(int((lon - self.x0) / self.w), self.nx - 1)
        cy = min(int((lat - self.y0) / self.h), self.ny - 1)
        key = cy * self.nx + cx
        cell = self._cells.get(key)
        if cell is None:
            if len(self._cells) >= self.MAX_CELLS:
                self._cells.clear()
            cell = self._cells[key] = self._cell(cx, cy)
        if type(cell) is int:
            return cell
        geoms = self.geoms
        for i in cell:
            if shapely.contains_xy(geoms[i], lon, lat):
                return i
        for i in cell:
            if shapely.intersects_xy(geoms[i], lon, lat):
                return i
        return -1

    MAX_BOX_CELLS = 16

    def locate_box(self, x0: float, y0: float, x1: float, y1: float) -> int | None:
        """The boundary whose interior holds the whole box, when the grid can tell at once:
        every cell the box touches (at most ``MAX_BOX_CELLS``) lies properly inside that
        one boundary with no lower-indexed boundary touching it. Then any area in the box
        overlaps that boundary completely and it wins ``locate_geometry`` (greatest
        overlap, lowest index on a tie). ``None``: ask ``locate_geometry``."""
        if not self.nx or not (self.x0 <= x0 and x1 <= self._x1 and self.y0 <= y0 and y1 <= self._y1):
            return None
        cx0 = min(int((x0 - self.x0) / self.w), self.nx - 1)
        cx1 = min(int((x1 - self.x0) / self.w), self.nx - 1)
        cy0 = min(int((y0 - self.y0) / self.h), self.ny - 1)
        cy1 = min(int((y1 - self.y0) / self.h), self.ny - 1)
        if (cx1 - cx0 + 1) * (cy1 - cy0 + 1) > self.MAX_BOX_CELLS:
            return None
        found: int | None = None
        for cy in range(cy0, cy1 + 1):
            for cx in range(cx0, cx1 + 1):
                key = cy * self.nx + cx
                cell = self._cells.get(key)
                if cell is None:
                    if len(self._cells) >= self.MAX_CELLS:
                        self._cells.clear()
                    cell = self._cells[key] = self._cell(cx, cy)
                if type(cell) is not int or (found is not None and cell != found):
                    return None
                found = cell
        return found


#: Metres per degree of latitude, at least (the meridian degree is 110,574 m at the equator
#: and grows toward the poles), so dividing by it over-estimates a box in degrees.
_M_PER_DEG_MIN = 110_500.0


def _circle_in_one_cell_run(grid: PointGrid, shape: Any) -> int:
    """For a small ``Circle`` (the usual shape of a caller's location): the boundary that
    holds it whole, found on the grid from a box around it without building the circle's
    polygon (which costs a geodesic computation per vertex); -1 when the grid cannot tell
    or for any other shape. The box over-estimates the circle by 5 % plus a metre, in
    degrees with the smallest metres-per-degree, so it always contains the circle."""
    if type(shape) is not Circle or not (0.0 < shape.radius < 50_000.0):
        return -1
    lat, lon = shape.center.lat, shape.center.lon
    cos_lat = math.cos(math.radians(lat))
    if cos_lat < 0.05:  # near a pole degrees of longitude shrink to nothing: no shortcut
        return -1
    reach = shape.radius * 1.05 + 1.0
    dlat = reach / _M_PER_DEG_MIN
    dlon = reach / (_M_PER_DEG_MIN * cos_lat)
    found = grid.locate_box(lon - dlon, lat - dlat, lon + dlon, lat + dlat)
    return -1 if found is None else found


# --- boundaries on the wire ------------------------------------------------------------


def boundary_key(service: str, boundary_id: str) -> str:
    """Stable, opaque key of one service boundary (section 9): a short hash."""
    return hashlib.sha256(f"{service}\x00{boundary_id}".encode()).hexdigest()[:20]


def _polygons(geom: BaseGeometry) -> list[shapely.Polygon]:
    if isinstance(geom, shapely.Polygon):
        return [geom] if not geom.is_empty else []
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _polygons(g)]
    return []


def _clip(simplified: BaseGeometry, geom: BaseGeometry) -> BaseGeometry:
    """``simplified`` cut back to ``geom``. GEOS can move a polygon's ring by more than the
    simplification tolerance (by about a third more, near where the ring starts), so shrinking
    by the tolerance alone does not keep a simplified boundary inside the true one."""
    return simplified if simplified.within(geom) else shapely.intersection(simplified, geom)


def boundary_shapes(geom: BaseGeometry, max_vertices: int) -> list[Polygon]:
    """A boundary as PIDF-LO Polygons: one per polygon, exterior rings only, counter-clockwise
    (RFC 5491 section 5.2.2), simplified inward when it has more than ``max_vertices``."""
    polys = _polygons(geom)
    total = sum(len(p.exterior.coords) for p in polys)
    if total > max_vertices:
        minx, miny, maxx, maxy = geom.bounds
        tol = max(maxx - minx, maxy - miny) / 20000.0
        shrunk_geom = geom
        for _ in range(24):
            shrunk = geom.buffer(-tol, quad_segs=2)
            shrunk_geom = _clip(shapely.simplify(shrunk, tol, preserve_topology=True), geom)
            polys = _polygons(shrunk_geom)
            total = sum(len(p.exterior.coords) for p in polys)
            if polys and total <= max_vertices:
                break
            if not polys:  # too thin to shrink: plain simplification instead
                polys = _polygons(_clip(shapely.simplify(geom, tol, preserve_topology=True), geom))
                total = sum(len(p.exterior.coords) for p in polys)
                if total <= max_vertices:
                    break
            tol *= 2
    out: list[Polygon] = []
    for p in polys:
        ring = shapely.orient_polygons(p, exterior_cw=False).exterior.coords
        if len(ring) < 4:
            continue
        try:
            out.append(Polygon(tuple(Point(lat=y, lon=x) for x, y in ring)))
        except ShapeError:  # a degenerate sliver left by simplification
            continue
    return out


# --- the ECRF ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    """What every mapping of one boundary of one service shares."""

    service: str
    index: int
    source_id: str
    display_names: list[tuple[str, str]]
    uris: list[str]
    key: str


@dataclass(slots=True)
class _Layer:
    layer: BoundaryLayer
    grid: PointGrid
    entries: list[_Entry]
    names: dict[str, int] = field(default_factory=dict)  # normalized municipality -> index


class Ecrf:
    """A LoST server over a ``ServiceIndex`` (see the module docstring for behaviour).

    ``source`` is this server's name (its ``via`` and error ``source``); ``ttl`` how long
    mappings may be cached (``expires`` = now + ttl; zero means ``NO-CACHE``);
    ``service_numbers`` the dial string per service (``urn:service:sos`` -> ``911``; a
    service without one inherits its parent's); ``lvf`` an optional location validation
    function with ``validate(civic)`` returning an object with ``validation`` and ``point``;
    ``peers`` other LoST servers for locations outside our data, used as ``peer_mode`` says;
    ``boundary_source`` the server named in ``serviceBoundaryReference`` (default: us);
    ``last_updated`` when the data was last changed (default: the first request's ``now``).
    """

    def __init__(
        self,
        source: str,
        index: ServiceIndex,
        *,
        ttl: timedelta,
        service_numbers: MappingABC[str, str] | None = None,
        lvf: Any = None,
        peers: Sequence[Peer] = (),
        peer_mode: PeerMode | str = PeerMode.RECURSIVE_CAPABLE,
        boundary_source: str | None = None,
        last_updated: datetime | None = None,
        display_lang: str = "en",
        max_boundary_vertices: int = 1500,
    ):
        if not source:
            raise ValueError("an ECRF needs a source name")
        if ttl < timedelta(0):
            raise ValueError("ttl must not be negative")
        if last_updated is not None and last_updated.tzinfo is None:
            raise ValueError("last_updated must be timezone-aware")
        self.source = source
        self.index = index
        self.ttl = ttl
        self.lvf = lvf
        # Default routes (no coverage) are tried after every peer with a coverage.
        self.peers = sorted(peers, key=lambda p: p.coverage is None)
        self.peer_mode = PeerMode(peer_mode)
        self.boundary_source = boundary_source or source
        self.last_updated = last_updated
        self.max_boundary_vertices = max_boundary_vertices
        numbers = {k.lower(): v for k, v in (service_numbers or {}).items()}
        self._layers: dict[str, _Layer] = {}
        self._numbers: dict[str, str | None] = {}
        self._keys: dict[str, tuple[str, int]] = {}
        for service, layer in index.layers.items():
            svc = service.lower()
            entries = []
            for i, b in enumerate(layer.boundaries):
                key = boundary_key(svc, b.id)
                entries.append(
                    _Entry(svc, i, b.id, [(b.name, display_lang)] if b.name else [],
                           [b.uri] if b.uri else [], key)
                )  # fmt: skip
                self._keys[key] = (svc, i)
            self._layers[svc] = _Layer(layer, PointGrid(layer), entries)
            self._numbers[svc] = _inherited(svc, numbers)
        self._services = sorted(self._layers)
        self._resolved: dict[str | None, tuple[str, bool] | LostError] = {}
        self._shapes: dict[tuple[str, int], list[Location]] = {}

    # --- entry points -------------------------------------------------------------------

    def handle(self, request: Request, now: datetime) -> Response | Forward:
        """Answer one parsed request at time ``now`` (timezone-aware)."""
        try:
            if not isinstance(request, _REQUEST_TYPES):
                return self._error(
                    ErrorKind.BAD_REQUEST,
                    f"<{_element_name(request)}> is not a LoST request (a server answers "
                    "findService, listServices, listServicesByLocation, getServiceBoundary)",
                )
            path = request.path
            if self.source in path:
                return self._error(
                    ErrorKind.LOOP,
                    f"this server ({self.source}) is already in the request's path "
                    f"({' -> '.join(path)})",
                )
            if isinstance(request, FindService):
                return self._find_service(request, now)
            if isinstance(request, ListServicesByLocation):
                return self._list_by_location(request)
            if isinstance(request, ListServices):
                return self._list_services(request)
            return self._get_boundary(request)
        except Exception as exc:  # a bug must still be an answer, never a dropped call
            log.exception("ECRF failed on %s", type(request).__name__)
            return self._error(ErrorKind.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def complete_forward(
        self, original: Request, peer_response: Response, now: datetime
    ) -> Response:
        """The answer to ``original`` from a peer's answer to our ``Forward``: its path gets
        our via appended (section 6.4: the vias of every server the answer went through,
        the authoritative one first). Errors and redirects pass through unchanged."""
        del original, now  # kept in the signature for adapters and future policies
        if isinstance(peer_response, (FindServiceResponse, ListServicesByLocationResponse)):
            if not peer_response.path or peer_response.path[-1] != self.source:
                peer_response.path = [*peer_response.path, self.source]
        return peer_response

    # --- requests -------------------------------------------------------------------------

    def _find_service(self, req: FindService, now: datetime) -> Response | Forward:
        resolved = self._resolve(req.service)
        if isinstance(resolved, LostError):
            return ErrorsResponse(self.source, [resolved])
        service, substituted = resolved
        loc = _pick(req.locations)
        if loc is None:
            return self._unrecognized(req.locations)
        entry = self._layers[service]
        warnings: list[LostWarning] = []
        validation: LocationValidation | None = None
        idx = -1
        where: BaseGeometry | None = None
        lonlat: tuple[float, float] | None = None
        shape = loc.shape
        if shape is not None:
            if type(shape) is Point:
                lonlat = (shape.lon, shape.lat)
                idx = entry.grid.locate(shape.lon, shape.lat)
            else:
                idx = _circle_in_one_cell_run(entry.grid, shape)
                if idx < 0:
                    where = to_geometry(shape)
                    if not where.is_valid:
                        return self._error(
                            ErrorKind.LOCATION_INVALID,
                            f"location '{loc.id}': {type(shape).__name__} is not a valid area "
                            f"({shapely.is_valid_reason(where)})",
                        )
                    idx = entry.layer.locate_geometry(where)
        else:
            civic = loc.civic
            assert civic is not None
            point = None
            if self.lvf is not None:
                result = self.lvf.validate(civic)
                point = getattr(result, "point", None)
                if req.validate_location:
                    validation = result.validation
            elif req.validate_location:
                warnings.append(LostWarning(
                    WarningKind.LOCATION_VALIDATION_UNAVAILABLE,
                    "this ECRF has no location validation function; nothing was checked",
                ))  # fmt: skip
                validation = LocationValidation(unchecked=civic.present())
            if point is not None:
                lonlat = (point.lon, point.lat)
                idx = entry.grid.locate(point.lon, point.lat)
            if idx < 0:
                idx = self._match_town(entry, civic)
        if idx < 0:
            peer = self._peer_for(where, lonlat)
            if peer is not None:
                return self._to_peer(req, peer, loc)
            return self._error(ErrorKind.NOT_FOUND, f"no {service} boundary here holds {_describe(loc)}")
        if substituted:
            warnings.append(LostWarning(
                WarningKind.SERVICE_SUBSTITUTION,
                f"{(req.service or '').strip()} is not served here; the mapping is for {service}",
            ))  # fmt: skip
        mapping = self._mapping(entry.entries[idx], req.service_boundary == "value", now)
        return FindServiceResponse(
            mappings=[mapping],
            path=[self.source],
            location_used=loc.id,
            validation=validation,
            warnings=warnings,
            warnings_source=self.source if warnings else None,
        )

    def _list_services(self, req: ListServices) -> Response:
        if req.service is None:
            return ListServicesResponse(list(self._services), path=[self.source])
        svc = req.service.strip().lower()
        if not svc.startswith(SERVICE_PREFIX):
            return self._error(ErrorKind.BAD_REQUEST, _not_urn(req.service))
        children = [s for s in self._services if s.startswith(svc + ".")]
        if not children and svc not in self._layers:
            return self._error(ErrorKind.SERVICE_NOT_IMPLEMENTED, self._not_served(req.service))
        return ListServicesResponse(children, path=[self.source])

    def _list_by_location(self, req: ListServicesByLocation) -> Response | Forward:
        services = self._services
        if req.service is not None:
            svc = req.service.strip().lower()
            if not svc.startswith(SERVICE_PREFIX):
                return self._error(ErrorKind.BAD_REQUEST, _not_urn(req.service))
            services = [s for s in services if s == svc or s.startswith(svc + ".")]
            if not services:
                return self._error(ErrorKind.SERVICE_NOT_IMPLEMENTED, self._not_served(req.service))
        loc = _pick(req.locations)
        if loc is None:
            return self._unrecognized(req.locations)
        where: BaseGeometry | None = None
        lonlat: tuple[float, float] | None = None
        if loc.shape is not None:
            if type(loc.shape) is Point:
                lonlat = (loc.shape.lon, loc.shape.lat)
            else:
                where = to_geometry(loc.shape)
                if not where.is_valid:
                    return self._error(
                        ErrorKind.LOCATION_INVALID,
                        f"location '{loc.id}': {type(loc.shape).__name__} is not a valid area "
                        f"({shapely.is_valid_reason(where)})",
                    )
        elif self.lvf is not None and loc.civic is not None:
            point = getattr(self.lvf.validate(loc.civic), "point", None)
            if point is not None:
                lonlat = (point.lon, point.lat)
        found = []
        for svc in services:
            entry = self._layers[svc]
            if lonlat is not None:
                idx = entry.grid.locate(*lonlat)
                if idx < 0 and loc.civic is not None:
                    idx = self._match_town(entry, loc.civic)
            elif where is not None:
                idx = entry.layer.locate_geometry(where)
            else:
                assert loc.civic is not None
                idx = self._match_town(entry, loc.civic)
            if idx >= 0:
                found.append(svc)
        if not found:
            peer = self._peer_for(where, lonlat)
            if peer is not None:
                return self._to_peer(req, peer, loc)
            return self._error(ErrorKind.NOT_FOUND, f"no service boundary here holds {_describe(loc)}")
        return ListServicesByLocationResponse(found, path=[self.source], location_used=loc.id)

    def _get_boundary(self, req: GetServiceBoundary) -> Response:
        hit = self._keys.get(req.key.strip())
        if hit is None:
            return self._error(ErrorKind.NOT_FOUND, f"no service boundary has the key '{req.key}'")
        return GetServiceBoundaryResponse(self._boundary_locations(*hit), path=[self.source])

    # --- pieces -------------------------------------------------------------------------------

    def _error(self, kind: ErrorKind, message: str) -> ErrorsResponse:
        return ErrorsResponse(self.source, [LostError(kind, message)])

    def _unrecognized(self, locations: list[Location]) -> ErrorsResponse:
        profiles = ", ".join(sorted({loc.profile or "(none)" for loc in locations}))
        return self._error(
            ErrorKind.LOCATION_PROFILE_UNRECOGNIZED,
            f"no location has a supported profile (got {profiles}; supported: geodetic-2d, civic)",
        )

    def _not_served(self, service: str | None) -> str:
        return f"service {service} is not provided by this ECRF (it serves {', '.join(self._services) or 'nothing'})"

    def _resolve(self, service: str | None) -> tuple[str, bool] | LostError:
        """The layer's service for a requested one, and whether it is a substitute."""
        hit = self._resolved.get(service)
        if hit is not None:
            return hit
        svc = (service or SOS).strip().lower()
        result: tuple[str, bool] | LostError
        if not svc.startswith(SERVICE_PREFIX) or len(svc) == len(SERVICE_PREFIX):
            result = LostError(ErrorKind.BAD_REQUEST, _not_urn(service or ""))
        elif svc in self._layers:
            result = (svc, False)
        elif svc.startswith(TEST_PREFIX) and len(svc) > len(TEST_PREFIX):
            # An i3 test call (urn:service:test.sos, RFC 6881 section 15, NENA-STA-010.3) is
            # routed as the service it tests, to the PSAP a real call from there would reach.
            tested = self._resolve(SERVICE_PREFIX + svc[len(TEST_PREFIX):])
            result = tested if isinstance(tested, LostError) else (tested[0], False)
        else:
            result = LostError(ErrorKind.SERVICE_NOT_IMPLEMENTED, self._not_served(service))
            parent = _parent(svc)
            while parent is not None:
                if parent in self._layers:
                    result = (parent, True)
                    break
                parent = _parent(parent)
        if len(self._resolved) < 4096:  # bounded: services are few, garbage is not
            self._resolved[service] = result
        return result

    def _mapping(self, e: _Entry, by_value: bool, now: datetime) -> Mapping:
        if self.last_updated is None:
            self.last_updated = now
        expires = now + self.ttl if self.ttl else NO_CACHE
        return Mapping(
            service=e.service,
            source=self.source,
            source_id=e.source_id,
            last_updated=self.last_updated,
            expires=expires,
            display_names=list(e.display_names),
            uris=list(e.uris),
            service_number=self._numbers.get(e.service),
            boundaries=list(self._boundary_locations(e.service, e.index)) if by_value else [],
            boundary_ref=None if by_value else ServiceBoundaryReference(self.boundary_source, e.key),
        )

    def _boundary_locations(self, service: str, index: int) -> list[Location]:
        cached = self._shapes.get((service, index))
        if cached is None:
            geom = self._layers[service].layer.boundaries[index].geometry
            shapes = boundary_shapes(geom, self.max_boundary_vertices)
            cached = [Location("", Profile.GEODETIC_2D.value, shape=s) for s in shapes]
            self._shapes[(service, index)] = cached
        return cached

    def _match_town(self, entry: _Layer, civic: Any) -> int:
        """A boundary named like the address's municipality (A3), for civic locations the LVF
        cannot place. Names are normalized as the LVF does (case, spacing, SAINT/ST)."""
        if not civic.A3:
            return -1
        if not entry.names:
            for i, b in enumerate(entry.layer.boundaries):
                for value in (b.name, *(b.attrs.get(a) for a in NAME_ATTRIBUTES)):
                    if isinstance(value, str) and value.strip():
                        entry.names.setdefault(normalize_town(value), i)
        return entry.names.get(normalize_town(civic.A3), -1)

    def _peer_for(self, where: BaseGeometry | None, lonlat: tuple[float, float] | None) -> Peer | None:
        for peer in self.peers:
            if lonlat is not None:
                if peer.covers(None, *lonlat):
                    return peer
            elif where is not None:
                if peer.covers(where):
                    return peer
            elif peer.coverage is None:  # a civic location we could not place
                return peer
        return None

    def _to_peer(
        self, req: FindService | ListServicesByLocation, peer: Peer, loc: Location
    ) -> Forward | Redirect:
        if req.recursive and self.peer_mode is PeerMode.RECURSIVE_CAPABLE:
            return Forward(peer.uri, replace(req, path=[*req.path, self.source]), peer)
        return Redirect(
            target=peer.target,
            source=self.source,
            message=f"{_describe(loc)} is outside this ECRF's boundaries; ask {peer.target}",
        )


_REQUEST_TYPES = (FindService, ListServices, ListServicesByLocation, GetServiceBoundary)


# --- helpers ---------------------------------------------------------------------------------


def _pick(locations: Iterable[Location]) -> Location | None:
    """The first location with a profile we support and content (section 8.3.2)."""
    for loc in locations:
        if loc.profile in _PROFILES and (loc.shape is not None or loc.civic is not None):
            return loc
    return None


def _parent(service: str) -> str | None:
    """``urn:service:sos.police`` -> ``urn:service:sos`` (RFC 5031 service tree)."""
    name = service[len(SERVICE_PREFIX):]
    if "." not in name:
        return None
    return SERVICE_PREFIX + name.rsplit(".", 1)[0]


def _inherited(service: str, numbers: MappingABC[str, str]) -> str | None:
    s: str | None = service
    while s is not None:
        if s in numbers:
            return numbers[s]
        s = _parent(s)
    return None


def _not_urn(service: str | None) -> str:
    return f"'{service}' is not a service URN (RFC 5031: urn:service:...)"


def _describe(loc: Location) -> str:
    shape = loc.shape
    if type(shape) is Point:
        return f"location '{loc.id}' ({shape.lat:.6f}, {shape.lon:.6f})"
    if shape is not None:
        return f"location '{loc.id}' ({type(shape).__name__})"
    if loc.civic is not None:
        return f"location '{loc.id}' ({loc.civic.one_line() or 'empty civic address'})"
    return f"location '{loc.id}'"


def _element_name(message: object) -> str:
    name = type(message).__name__
    return name[0].lower() + name[1:]
