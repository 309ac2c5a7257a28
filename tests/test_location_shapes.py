"""Geodetic shapes (RFC 5491) and their GML form."""

from __future__ import annotations

import math

import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from pyproj import Geod

from firebox.location.gml import GmlError, parse_shape, shape_element
from firebox.location.shapes import (
    ArcBand,
    Circle,
    Ellipse,
    Point,
    Polygon,
    ShapeError,
    centroid,
    to_geometry,
)
from firebox.xmlsafe import parse_xml

GEOD = Geod(ellps="WGS84")
GML = "http://www.opengis.net/gml"
GS = "http://www.opengis.net/pidflo/1.0"

lat = st.floats(-89.0, 89.0, allow_nan=False)
lon = st.floats(-179.0, 179.0, allow_nan=False)
length = st.floats(0.0, 50_000.0, allow_nan=False)
points = st.builds(Point, lat=lat, lon=lon)
shapes = st.one_of(
    points,
    st.builds(Circle, center=points, radius=length),
    st.builds(
        Ellipse, center=points, semi_major=length, semi_minor=length,
        orientation=st.floats(0, 360, allow_nan=False),
    ),
    st.builds(
        lambda c, r1, dr, a, o: ArcBand(c, r1, r1 + dr, a, o),
        points, length, length, st.floats(0, 360, allow_nan=False), st.floats(1, 360, allow_nan=False),
    ),
    st.builds(
        lambda c: Polygon((c, Point(c.lat + 0.01, c.lon), Point(c.lat + 0.01, c.lon + 0.01))),
        points,
    ),
)


@given(shapes)
def test_gml_round_trip(shape):
    xml = etree.tostring(shape_element(shape))
    assert parse_shape(parse_xml(xml)) == shape


def test_circle_is_geodesic():
    c = Circle(Point(42.37, -71.1), 1000.0)
    ring = to_geometry(c).exterior.coords
    for x, y in ring:
        _, _, d = GEOD.inv(-71.1, 42.37, x, y)
        assert d == pytest.approx(1000.0, rel=1e-6)


def test_ellipse_orientation_points_major_axis():
    # Major axis 2 km pointing east (90 degrees from north): wider east-west than north-south.
    g = to_geometry(Ellipse(Point(42.37, -71.1), 2000, 500, 90))
    minx, miny, maxx, maxy = g.bounds
    _, _, ew = GEOD.inv(minx, 42.37, maxx, 42.37)
    _, _, ns = GEOD.inv(-71.1, miny, -71.1, maxy)
    assert ew == pytest.approx(4000, rel=0.01)
    assert ns == pytest.approx(1000, rel=0.01)


def test_arcband_covers_its_sector_only():
    band = to_geometry(ArcBand(Point(42.0, -71.0), 1000, 3000, 0, 90))  # north-east quadrant
    assert band.is_valid
    lon, lat, _ = GEOD.fwd(-71.0, 42.0, 45, 2000)
    assert band.contains(shapely.Point(lon, lat))
    lon, lat, _ = GEOD.fwd(-71.0, 42.0, 225, 2000)  # opposite quadrant
    assert not band.contains(shapely.Point(lon, lat))
    lon, lat, _ = GEOD.fwd(-71.0, 42.0, 45, 500)  # inside the inner radius
    assert not band.contains(shapely.Point(lon, lat))


def test_polygon_closes_its_ring_and_needs_three_vertices():
    p = Polygon((Point(0, 0), Point(0, 1), Point(1, 1)))
    assert p.exterior[0] == p.exterior[-1] and len(p.exterior) == 4
    with pytest.raises(ShapeError, match="at least 3"):
        Polygon((Point(0, 0), Point(0, 1)))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Point(91, 0), "latitude"),
        (lambda: Point(0, 181), "longitude"),
        (lambda: Point(math.nan, 0), "finite"),
        (lambda: Circle(Point(0, 0), -1), "radius"),
        (lambda: ArcBand(Point(0, 0), 10, 5, 0, 90), "outerRadius"),
        (lambda: ArcBand(Point(0, 0), 1, 5, 0, 0), "openingAngle"),
    ],
)
def test_shape_range_errors(make, message):
    with pytest.raises(ShapeError, match=message):
        make()


def test_centroid():
    assert centroid(Circle(Point(1, 2), 5)) == Point(1, 2)
    c = centroid(Polygon((Point(0, 0), Point(0, 1), Point(1, 1), Point(1, 0))))
    assert 0 < c.lat < 1 and 0 < c.lon < 1


def test_tolerant_gml_forms():
    # Comma-separated pos, gml:Circle instead of gs:Circle, kilometres, radians, posList.
    doc = f"""<gml:Circle xmlns:gml="{GML}" xmlns:gs="{GS}" srsName="urn:ogc:def:crs:EPSG::4326">
      <gml:pos>42.5,-71.25</gml:pos><gs:radius uom="urn:ogc:def:uom:EPSG::9036">1.5</gs:radius></gml:Circle>"""
    assert parse_shape(parse_xml(doc)) == Circle(Point(42.5, -71.25), 1500.0)
    doc = f"""<gs:ArcBand xmlns:gml="{GML}" xmlns:gs="{GS}" srsName="urn:ogc:def:crs:EPSG::4326">
      <gml:pos>42 -71</gml:pos><gs:innerRadius uom="urn:ogc:def:uom:EPSG::9001">10</gs:innerRadius>
      <gs:outerRadius uom="urn:ogc:def:uom:EPSG::9001">20</gs:outerRadius>
      <gs:startAngle uom="urn:ogc:def:uom:EPSG::9101">{math.pi}</gs:startAngle>
      <gs:openingAngle uom="urn:ogc:def:uom:EPSG::9102">45</gs:openingAngle></gs:ArcBand>"""
    band = parse_shape(parse_xml(doc))
    assert band.start_angle == pytest.approx(180.0)
    doc = f"""<gml:Polygon xmlns:gml="{GML}" srsName="urn:ogc:def:crs:EPSG::4326"><gml:exterior>
      <gml:LinearRing><gml:posList>42 -71 42.1 -71 42.1 -71.1 42 -71</gml:posList></gml:LinearRing>
      </gml:exterior></gml:Polygon>"""
    assert len(parse_shape(parse_xml(doc)).exterior) == 4


@pytest.mark.parametrize(
    "doc, message",
    [
        (f'<gml:Point xmlns:gml="{GML}"><gml:pos>1 2</gml:pos></gml:Point>', "missing srsName"),
        (f'<gml:Point xmlns:gml="{GML}" srsName="EPSG:3857"><gml:pos>1 2</gml:pos></gml:Point>', "unsupported srsName"),
        (f'<gml:Point xmlns:gml="{GML}" srsName="EPSG:4326"><gml:pos>north west</gml:pos></gml:Point>', "not a list of numbers"),
        (f'<gml:Point xmlns:gml="{GML}" srsName="EPSG:4326"><gml:pos>1</gml:pos></gml:Point>', "expected 'latitude longitude'"),
        (f'<gml:Point xmlns:gml="{GML}" srsName="EPSG:4326"><gml:pos>95 2</gml:pos></gml:Point>', "latitude 95.0 out of range"),
        (f'<gml:Point xmlns:gml="{GML}" srsName="EPSG:4326"></gml:Point>', "missing <pos>"),
        (f'<gs:Circle xmlns:gml="{GML}" xmlns:gs="{GS}" srsName="EPSG:4326"><gml:pos>1 2</gml:pos></gs:Circle>', "missing <radius>"),
        (f'<gs:Circle xmlns:gml="{GML}" xmlns:gs="{GS}" srsName="EPSG:4326"><gml:pos>1 2</gml:pos><gs:radius uom="furlong">3</gs:radius></gs:Circle>', "unsupported uom"),
        (f'<gml:Polygon xmlns:gml="{GML}" srsName="EPSG:4326"/>', "missing <exterior>"),
        (f'<gml:LineString xmlns:gml="{GML}" srsName="EPSG:4326"/>', "not a geodetic shape"),
    ],
)
def test_gml_errors_name_the_problem(doc, message):
    with pytest.raises(GmlError, match=message):
        parse_shape(parse_xml(doc))
