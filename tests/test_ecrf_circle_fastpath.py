"""The ECRF's shortcut for small circles (``_circle_in_one_cell_run``) gives exactly the
answer of the general path (the circle's polygon, greatest overlap), on the demo state's
towns and on real Massachusetts towns: circles of many radii, at random places, near town
lines and corners (where the shortcut must step aside)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from firebox.deployment import load_deployment
from firebox.ecrf.service import PointGrid, _circle_in_one_cell_run
from firebox.gis.index import BoundaryLayer
from firebox.location.shapes import Circle, Point, to_geometry
from firebox.node import build_node, write_demo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_layer(tmp_path_factory) -> BoundaryLayer:
    path, _ = write_demo(tmp_path_factory.mktemp("fast"), seed=5, n_towns=50, listen="127.0.0.1:7070",
                         console=Console(quiet=True))  # fmt: skip
    node = build_node(load_deployment(path), console=Console(quiet=True))
    return node.index.layers["urn:service:sos"]


def check(layer: BoundaryLayer, grid: PointGrid, circle: Circle) -> bool:
    """Whether the shortcut answered (it agrees with the general path whenever it does)."""
    fast = _circle_in_one_cell_run(grid, circle)
    if fast < 0:
        return False
    slow = layer.locate_geometry(to_geometry(circle))
    assert fast == slow, (circle, fast, slow)
    return True


def sweep(layer: BoundaryLayer, seed: int, n: int) -> int:
    grid = PointGrid(layer)
    rng = random.Random(seed)
    x0, y0, x1, y1 = shapely.total_bounds(layer.geometries)
    answered = 0
    for _ in range(n):
        lon, lat = rng.uniform(x0, x1), rng.uniform(y0, y1)
        radius = rng.choice([0.5, 5.0, 25.0, 100.0, 800.0, 3000.0])
        answered += check(layer, grid, Circle(Point(lat, lon), radius))
    return answered


def test_the_shortcut_agrees_with_the_polygon_path_on_the_demo_state(demo_layer):
    answered = sweep(demo_layer, seed=1, n=1500)
    assert answered > 300  # it does take most small circles


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.1, 20_000.0))
@settings(max_examples=300, deadline=None)
def test_any_circle_anywhere_in_the_demo_state(demo_layer, fx, fy, radius):
    x0, y0, x1, y1 = shapely.total_bounds(demo_layer.geometries)
    grid = PointGrid(demo_layer)
    check(demo_layer, grid, Circle(Point(y0 + fy * (y1 - y0), x0 + fx * (x1 - x0)), radius))


@pytest.mark.realdata
def test_the_shortcut_agrees_on_massachusetts_towns(shared_data):
    node = build_node(load_deployment(ROOT / "examples" / "massachusetts.yaml"), console=Console(quiet=True))
    answered = sweep(node.index.layers["urn:service:sos"], seed=2, n=1500)
    assert answered > 100  # (much of the state's bounding box is sea)
