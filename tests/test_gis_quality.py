"""Quality checks of boundary layers: repairs reported, overlaps and gaps measured in m²."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import shapely
from pyproj import Geod
from rich.console import Console
from shapely.geometry import LineString, Polygon, box

from firebox.gis.layers import read_features
from firebox.gis.quality import FindingKind, Severity, area_m2, check_boundaries

# A small grid near Boston: 0.01° cells (about 820 m x 1,110 m).
D = 0.01
X0, Y0 = -71.10, 42.35


def cell(i: int, j: int) -> Polygon:
    return box(X0 + i * D, Y0 + j * D, X0 + (i + 1) * D, Y0 + (j + 1) * D)


def check(geoms, ids=None, **kw):
    ids = ids or [f"b{i}" for i in range(len(geoms))]
    return check_boundaries(ids, [f"N{i}" for i in ids], geoms, "urn:service:sos", **kw)


def test_ma_towns_wayland_is_the_one_repair(shared_data, caplog):
    geoms, cols, crs = read_features(shared_data / "ma" / "towns.geojson")
    assert crs == "EPSG:4326" and len(geoms) == 351
    with caplog.at_level(logging.WARNING, logger="firebox.gis"):
        report = check_boundaries(cols["TOWN_ID"], cols["TOWN"], geoms, "urn:service:sos")
    invalid = report.of_kind(FindingKind.INVALID_GEOMETRY)
    assert len(invalid) == 1
    f = invalid[0]
    wayland = cols["TOWN"].index("WAYLAND")
    assert f.ids == (str(cols["TOWN_ID"][wayland]),)
    assert "WAYLAND" in f.message and "Self-intersection" in f.message
    assert f.repaired and f.severity is Severity.WARNING
    # The self-intersection is located (lon, lat) inside Wayland's bounding box.
    minx, miny, maxx, maxy = geoms[wayland].bounds
    assert minx <= f.point[0] <= maxx and miny <= f.point[1] <= maxy
    # Repaired geometry is valid polygonal, about Wayland's 39.3 km² of land (41 km² total).
    fixed = report.geometries[wayland]
    assert fixed.is_valid and fixed.geom_type in ("Polygon", "MultiPolygon")
    assert 38e6 < f.area_m2 < 44e6
    # Everything else is clean: towns do not overlap and leave no holes.
    assert report.ok and report.errors == []
    assert report.findings == [f]
    assert all(g.is_valid for g in report.geometries)
    # Never silent: the repair was logged.
    assert any("WAYLAND" in r.getMessage() for r in caplog.records)


def test_report_serializes_and_renders(shared_data):
    geoms, cols, _ = read_features(shared_data / "ma" / "towns.geojson")
    report = check_boundaries(cols["TOWN_ID"], cols["TOWN"], geoms, "urn:service:sos")
    data = json.loads(report.to_json())
    assert data["features"] == 351 and data["ok"] is True and data["repaired"] == 1
    assert data["findings"][0]["kind"] == "invalid_geometry"
    assert data["counts"] == {"invalid_geometry": 1}
    console = Console(record=True, width=200)
    console.print(report.table())
    text = console.export_text()
    assert "WAYLAND" in text and "invalid_geometry" in text
    assert "351 boundaries" in report.summary()


def test_area_matches_geodesic_on_a_densified_box():
    b = box(-72.0, 42.0, -71.0, 43.0)
    geodesic = abs(Geod(ellps="WGS84").geometry_area_perimeter(shapely.segmentize(b, 0.001))[0])
    assert area_m2(b) == pytest.approx(geodesic, rel=1e-6)
    # A zero-width sliver (out and back along one line) has no area.
    sliver = Polygon([(-71.0, 42.0), (-71.05, 42.02), (-71.1, 42.04), (-71.0, 42.0)])
    assert area_m2(sliver) < 1e-3


def test_overlap_reported_with_area_and_point():
    a = cell(0, 0)
    b = shapely.affinity.translate(cell(1, 0), xoff=-D / 4)  # a quarter of a cell into a
    report = check([a, b, cell(2, 2)])
    overlaps = report.of_kind(FindingKind.OVERLAP)
    assert len(overlaps) == 1
    f = overlaps[0]
    assert f.ids == ("b0", "b1") and f.severity is Severity.ERROR
    expected = area_m2(a.intersection(b))
    assert f.area_m2 == pytest.approx(expected, rel=1e-6)
    assert 200_000 < f.area_m2 < 250_000  # a quarter of ~0.91 km²
    assert a.intersection(b).contains(shapely.Point(f.point))
    assert not report.ok


def test_overlap_slivers_counted_not_listed_and_tolerance_configurable():
    a = cell(0, 0)
    # Overlaps a by 1e-8° of longitude (0.8 mm) along its 1.1 km east side: about 0.9 m².
    b = box(X0 + D - 1e-8, Y0, X0 + 2 * D, Y0 + D)
    report = check([a, b])
    assert report.of_kind(FindingKind.OVERLAP) == []
    assert report.overlap_slivers == 1 and report.ok
    strict = check([a, b], sliver_m2=0.01)
    assert len(strict.of_kind(FindingKind.OVERLAP)) == 1
    assert 0.5 < strict.of_kind(FindingKind.OVERLAP)[0].area_m2 < 1.0


def test_touching_boundaries_are_not_overlaps():
    grid = [cell(i, j) for i in range(3) for j in range(3)]
    report = check(grid)
    assert report.findings == [] and report.ok
    assert report.overlap_slivers == 0 and report.gap_slivers == 0


def test_hole_in_coverage_is_a_gap():
    ring = [cell(i, j) for i in range(3) for j in range(3) if (i, j) != (1, 1)]
    report = check(ring)
    gaps = report.of_kind(FindingKind.GAP)
    assert len(gaps) == 1
    g = gaps[0]
    assert g.area_m2 == pytest.approx(area_m2(cell(1, 1)), rel=1e-6)
    assert cell(1, 1).contains(shapely.Point(g.point))
    assert not report.ok


def test_gap_against_outline():
    cells = [cell(0, 0), cell(1, 0)]
    outline = box(X0, Y0, X0 + 3 * D, Y0 + D)
    report = check(cells, outline=outline)
    gaps = report.of_kind(FindingKind.OUTLINE_GAP)
    assert len(gaps) == 1
    assert gaps[0].area_m2 == pytest.approx(area_m2(cell(2, 0)), rel=1e-6)
    assert cell(2, 0).contains(shapely.Point(gaps[0].point))
    assert check(cells, outline=box(X0, Y0, X0 + 2 * D, Y0 + D)).ok


def test_ids_uris_and_unusable_geometry():
    bowtie = Polygon([(X0, Y0), (X0 + D, Y0 + D), (X0 + D, Y0), (X0, Y0 + D), (X0, Y0)])
    collection = shapely.GeometryCollection([cell(5, 5), LineString([(0, 0), (1, 1)])])
    geoms = [cell(0, 0), cell(2, 0), None, Polygon(),
             LineString([(X0, Y0), (X0 + D, Y0)]), bowtie, collection]
    ids = ["a", "a", "c", "d", "e", "f", ""]
    report = check(geoms, ids=ids, uris=["sip:a@x", "sip:a2@x", None, "sip:d@x", "sip:e@x", " ", "sip:g@x"])
    kinds = {(f.kind, f.severity, f.ids) for f in report.findings}
    assert (FindingKind.DUPLICATE_ID, Severity.ERROR, ("a",)) in kinds
    assert (FindingKind.MISSING_GEOMETRY, Severity.ERROR, ("c",)) in kinds
    assert (FindingKind.EMPTY_GEOMETRY, Severity.ERROR, ("d",)) in kinds
    assert (FindingKind.NON_POLYGONAL, Severity.ERROR, ("e",)) in kinds
    assert (FindingKind.INVALID_GEOMETRY, Severity.WARNING, ("f",)) in kinds
    assert (FindingKind.NON_POLYGONAL, Severity.WARNING, ("",)) in kinds
    assert (FindingKind.MISSING_ID, Severity.ERROR, ()) in kinds
    assert {f.ids for f in report.of_kind(FindingKind.MISSING_URI)} == {("c",), ("f",)}
    # Unusable geometry is None; repaired ones are valid polygons.
    assert [g is None for g in report.geometries] == [False, False, True, True, True, False, False]
    assert report.geometries[5].is_valid and report.geometries[5].geom_type == "MultiPolygon"
    assert report.geometries[6].equals(cell(5, 5))
    assert len(report.repaired) == 2 and not report.ok


def test_projected_coordinates_are_out_of_range():
    report = check([box(230_000, 900_000, 231_000, 901_000)])
    assert [f.kind for f in report.errors] == [FindingKind.OUT_OF_RANGE]
    assert "CRS" in report.errors[0].message


def test_bad_arguments_are_precise():
    with pytest.raises(ValueError, match="same length"):
        check_boundaries(["a"], [], [cell(0, 0)], "urn:service:sos")
    with pytest.raises(ValueError, match="sliver_m2"):
        check([cell(0, 0)], sliver_m2=-1)


def test_steps_are_announced():
    steps: list[str] = []
    check([cell(0, 0), cell(1, 0)], on_step=steps.append)
    assert steps == ["checking geometry", "checking ids and URIs", "finding overlaps", "finding gaps"]
    assert isinstance(check([]).geometries, np.ndarray)
