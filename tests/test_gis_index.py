"""The spatial index: containment for points (vectorized and single), greatest overlap for areas."""

from __future__ import annotations

import json

import numpy as np
import shapely
from shapely.geometry import box, shape

from firebox.gis.index import Boundary, BoundaryLayer, ServiceIndex
from firebox.location.shapes import ArcBand, Circle, Ellipse, Point, Polygon


def grid_layer() -> BoundaryLayer:
    # Four unit squares: a b / c d, lon 0..2, lat 0..2.
    cells = {"c": box(0, 0, 1, 1), "d": box(1, 0, 2, 1), "a": box(0, 1, 1, 2), "b": box(1, 1, 2, 2)}
    return BoundaryLayer(
        "urn:service:sos", [Boundary(k, k.upper(), f"sip:{k}@x", g) for k, g in cells.items()]
    )


def test_points_vectorized_and_single_agree():
    layer = grid_layer()
    xs = np.array([0.5, 1.5, 0.5, 1.5, 5.0, 1.0, 1.0])
    ys = np.array([0.5, 0.5, 1.5, 1.5, 5.0, 0.5, 1.0])
    got = layer.locate_xy(xs, ys)
    ids = [layer.boundaries[i].id if i >= 0 else None for i in got]
    # (1.0, 0.5) lies on the c|d border and (1, 1) on all four corners: lowest index wins.
    assert ids == ["c", "d", "a", "b", None, "c", "c"]
    assert [layer.locate_point(x, y) for x, y in zip(xs, ys)] == got.tolist()


def test_area_goes_to_greatest_overlap():
    layer = grid_layer()
    idx = ServiceIndex([layer])
    # A circle centred in b, spilling into a: b wins.
    assert idx.lookup("urn:service:sos", Circle(Point(1.6, 1.4), 40_000)).id == "b"
    # A polygon mostly in d.
    poly = Polygon((Point(0.2, 0.8), Point(0.8, 0.8), Point(0.8, 1.9), Point(0.2, 1.9)))
    assert idx.lookup("urn:service:sos", poly).id == "d"
    # An ellipse elongated east-west, centred in a, mostly in a.
    assert idx.lookup("urn:service:sos", Ellipse(Point(1.5, 0.6), 60_000, 5_000, 90)).id == "a"
    # An arc band whose sector (south-east of the centre) lies in d.
    assert idx.lookup("urn:service:sos", ArcBand(Point(0.9, 1.1), 10_000, 60_000, 100, 60)).id == "d"
    # Nothing there.
    assert idx.lookup("urn:service:sos", Point(10, 10)) is None
    assert idx.lookup("urn:service:sos.fire", Point(0.5, 0.5)) is None


def test_ma_towns_point_on_surface(shared_data):
    data = json.loads((shared_data / "ma" / "towns.geojson").read_text())
    bounds = []
    for f in data["features"]:
        g = shape(f["geometry"])
        if not g.is_valid:
            g = shapely.make_valid(g)
        bounds.append(Boundary(str(f["properties"]["TOWN_ID"]), f["properties"]["TOWN"], "sip:x", g))
    layer = BoundaryLayer("urn:service:sos", bounds)
    pts = shapely.point_on_surface(layer.geometries)
    got = layer.locate_xy(shapely.get_x(pts), shapely.get_y(pts))
    assert got.tolist() == list(range(351))
    # Boston City Hall and a point in the harbour.
    boston = layer.boundaries[layer.locate_point(-71.0580, 42.3603)]
    assert boston.name == "BOSTON"
    assert layer.locate_point(-70.5, 42.5) == -1
    assert layer.nearest(-70.95, 42.33, 0.2) >= 0
