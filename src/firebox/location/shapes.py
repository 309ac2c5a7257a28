"""Geodetic shapes of the PIDF-LO geoshape profile (RFC 5491 section 5, GML 3.1.1).

Coordinates are WGS84 (EPSG:4326) degrees. Fields are named ``lat`` and ``lon`` so that the
GML axis order (latitude first in ``<gml:pos>``) and the GeoJSON/shapely order (longitude
first) can never be confused. Distances are metres; angles are degrees clockwise from true
north, as RFC 5491 section 5.2.3-5.2.5 define them.

``to_geometry`` turns any shape into a shapely geometry in lon/lat for spatial lookups,
drawing circles, ellipses and arc bands with geodesic offsets (pyproj.Geod) so that a
10 km uncertainty circle is right at 42 degrees north as well as at the equator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import Geod
from shapely.geometry.base import BaseGeometry

_GEOD = Geod(ellps="WGS84")
#: Vertices used to draw a full circle or ellipse; arcs use a proportional share.
CURVE_VERTICES = 48


class ShapeError(ValueError):
    """A shape whose values are out of range; ``str()`` says which value."""


def _check_latlon(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise ShapeError(f"coordinate is not a finite number: {lat} {lon}")
    if not -90.0 <= lat <= 90.0:
        raise ShapeError(f"latitude {lat} out of range -90..90")
    if not -180.0 <= lon <= 180.0:
        raise ShapeError(f"longitude {lon} out of range -180..180")


def _check_length(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ShapeError(f"{name} must be a non-negative number of metres, got {value}")


@dataclass(frozen=True, slots=True)
class Point:
    """gml:Point (RFC 5491 section 5.2.1)."""

    lat: float
    lon: float

    def __post_init__(self) -> None:
        _check_latlon(self.lat, self.lon)


@dataclass(frozen=True, slots=True)
class Circle:
    """gs:Circle (RFC 5491 section 5.2.3)."""

    center: Point
    radius: float

    def __post_init__(self) -> None:
        _check_length("radius", self.radius)


@dataclass(frozen=True, slots=True)
class Ellipse:
    """gs:Ellipse (RFC 5491 section 5.2.4): orientation of the semi-major axis from north."""

    center: Point
    semi_major: float
    semi_minor: float
    orientation: float

    def __post_init__(self) -> None:
        _check_length("semiMajorAxis", self.semi_major)
        _check_length("semiMinorAxis", self.semi_minor)
        if not math.isfinite(self.orientation):
            raise ShapeError(f"orientation must be a number of degrees, got {self.orientation}")


@dataclass(frozen=True, slots=True)
class ArcBand:
    """gs:ArcBand (RFC 5491 section 5.2.5): the band between two radii, from ``start_angle``
    clockwise through ``opening_angle`` degrees."""

    center: Point
    inner_radius: float
    outer_radius: float
    start_angle: float
    opening_angle: float

    def __post_init__(self) -> None:
        _check_length("innerRadius", self.inner_radius)
        _check_length("outerRadius", self.outer_radius)
        if self.outer_radius < self.inner_radius:
            raise ShapeError(
                f"outerRadius {self.outer_radius} is smaller than innerRadius {self.inner_radius}"
            )
        if not (math.isfinite(self.start_angle) and math.isfinite(self.opening_angle)):
            raise ShapeError("startAngle and openingAngle must be numbers of degrees")
        if not 0 < self.opening_angle <= 360:
            raise ShapeError(f"openingAngle {self.opening_angle} must be in (0, 360]")


@dataclass(frozen=True, slots=True)
class Polygon:
    """gml:Polygon with one exterior ring (RFC 5491 section 5.2.2). The ring is stored
    closed (first point repeated last) and needs at least three distinct vertices."""

    exterior: tuple[Point, ...]

    def __post_init__(self) -> None:
        ring = tuple(self.exterior)
        if ring and ring[0] != ring[-1]:
            ring = ring + (ring[0],)
            object.__setattr__(self, "exterior", ring)
        if len(ring) < 4:
            raise ShapeError(
                f"polygon needs at least 3 distinct vertices, got {max(len(ring) - 1, 0)}"
            )


Shape = Point | Circle | Ellipse | ArcBand | Polygon


def _ring(center: Point, azimuths: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """(n, 2) lon/lat array of the geodesic destinations at ``distances`` along ``azimuths``
    (degrees from north) from ``center``. Kept as numpy: building the polygon from an array
    is faster than from Python tuples."""
    lons, lats, _ = _GEOD.fwd(
        np.full(azimuths.shape, center.lon), np.full(azimuths.shape, center.lat), azimuths, distances
    )
    return np.column_stack((lons, lats))


def to_geometry(shape: Shape) -> BaseGeometry:
    """A shapely geometry in lon/lat for ``shape`` (a Point stays a point)."""
    if isinstance(shape, Point):
        return shapely.Point(shape.lon, shape.lat)
    if isinstance(shape, Polygon):
        return shapely.Polygon([(p.lon, p.lat) for p in shape.exterior])
    if isinstance(shape, Circle):
        if shape.radius == 0:
            return shapely.Point(shape.center.lon, shape.center.lat)
        az = np.linspace(0.0, 360.0, CURVE_VERTICES, endpoint=False)
        return shapely.polygons(_ring(shape.center, az, np.full(az.shape, shape.radius)))
    if isinstance(shape, Ellipse):
        a, b = shape.semi_major, shape.semi_minor
        if a == 0 and b == 0:
            return shapely.Point(shape.center.lon, shape.center.lat)
        t = np.linspace(0.0, 2 * math.pi, CURVE_VERTICES, endpoint=False)
        # Position on the ellipse in its own axes (x along the semi-major axis), then rotate
        # to a compass bearing: the major axis points at ``orientation`` degrees from north.
        x = a * np.cos(t)
        y = b * np.sin(t)
        dist = np.hypot(x, y)
        az = (shape.orientation + np.degrees(np.arctan2(y, x))) % 360.0
        return shapely.polygons(_ring(shape.center, az, dist))
    if isinstance(shape, ArcBand):
        n = max(4, int(CURVE_VERTICES * shape.opening_angle / 360.0) + 1)
        az = shape.start_angle + np.linspace(0.0, shape.opening_angle, n)
        outer = _ring(shape.center, az, np.full(az.shape, shape.outer_radius))
        if shape.inner_radius > 0:
            inner = _ring(shape.center, az[::-1], np.full(az.shape, shape.inner_radius))
        else:
            inner = np.array([[shape.center.lon, shape.center.lat]])
        return shapely.polygons(np.concatenate((outer, inner)))
    raise TypeError(f"not a shape: {shape!r}")


def centroid(shape: Shape) -> Point:
    """A representative point: the centre for centred shapes, else a point on the surface."""
    if isinstance(shape, Point):
        return shape
    if isinstance(shape, (Circle, Ellipse)):
        return shape.center
    geom = to_geometry(shape).point_on_surface()
    return Point(lat=geom.y, lon=geom.x)
