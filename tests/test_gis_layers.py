"""Reading GIS files (GeoJSON, GeoPackage, Shapefile) into WGS84 boundary layers."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyogrio.raw
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import box

from firebox.gis.layers import LayerError, load_boundary_layer, read_features
from firebox.gis.quality import FindingKind

# Three squares in and around Boston/Cambridge (lon/lat), ids and names.
SQUARES = {
    "1": ("ALPHA", box(-71.12, 42.36, -71.10, 42.38)),
    "2": ("BRAVO", box(-71.10, 42.36, -71.08, 42.38)),
    "3": ("CHARLIE", box(-71.12, 42.38, -71.08, 42.40)),
}
TO_MA_MAINLAND = Transformer.from_crs(4326, 26986, always_xy=True)


def _projected(geom):
    return shapely.transform(geom, lambda xy: np.column_stack(TO_MA_MAINLAND.transform(xy[:, 0], xy[:, 1])))


def write_projected(path, driver, layer=None, extra=None):
    """Write SQUARES in EPSG:26986 (Massachusetts Mainland, metres) with raw pyogrio."""
    ids = list(SQUARES)
    names = [SQUARES[i][0] for i in ids]
    geoms = [shapely.segmentize(SQUARES[i][1], 0.002) for i in ids]
    wkb = np.array([shapely.to_wkb(_projected(g)) for g in geoms], dtype=object)
    fields = ["code", "name", "uri"]
    data = [np.array(ids, dtype=object), np.array(names, dtype=object),
            np.array([f"sip:{n.lower()}@psap.example" for n in names], dtype=object)]
    pyogrio.raw.write(
        path, wkb, data, fields, driver=driver, geometry_type="Polygon", crs="EPSG:26986", layer=layer,
        **(extra or {}),
    )
    return geoms


@pytest.mark.parametrize("driver,suffix", [("GPKG", "gpkg"), ("ESRI Shapefile", "shp")])
def test_projected_files_come_back_as_wgs84(tmp_path, driver, suffix):
    path = tmp_path / f"squares.{suffix}"
    originals = write_projected(path, driver)
    geoms, cols, crs = read_features(path)
    assert "26986" in crs  # the source CRS is reported as GDAL gives it
    assert cols["code"] == ["1", "2", "3"] and cols["name"] == ["ALPHA", "BRAVO", "CHARLIE"]
    for got, want in zip(geoms, originals):
        assert got.geom_type == "Polygon"
        # Back within a micro-degree (about 0.1 m) of the lon/lat we started from.
        assert shapely.hausdorff_distance(got, want) < 1e-6
    assert np.allclose(shapely.total_bounds(geoms), [-71.12, 42.36, -71.08, 42.40], atol=1e-6)


@pytest.mark.parametrize("driver,suffix", [("GPKG", "gpkg"), ("ESRI Shapefile", "shp")])
def test_load_projected_layer_answers_points(tmp_path, driver, suffix):
    path = tmp_path / f"squares.{suffix}"
    write_projected(path, driver)
    layer, report = load_boundary_layer(path, "urn:service:sos", id_attr="code", name_attr="name", uri_attr="uri")
    assert report.ok and report.findings == []
    assert len(layer) == 3
    hit = layer.boundaries[layer.locate_point(-71.09, 42.37)]
    assert (hit.id, hit.name, hit.uri) == ("2", "BRAVO", "sip:bravo@psap.example")
    assert layer.boundaries[layer.locate_point(-71.10, 42.395)].name == "CHARLIE"
    assert layer.locate_point(-71.0, 42.0) == -1


def test_geopackage_layer_by_name(tmp_path):
    path = tmp_path / "multi.gpkg"
    write_projected(path, "GPKG", layer="psaps")
    pyogrio.raw.write(
        path, np.array([shapely.to_wkb(box(0, 0, 1, 1))], dtype=object), [np.array(["x"], dtype=object)],
        ["code"], driver="GPKG", geometry_type="Polygon", crs="EPSG:4326", layer="other", append=True,
    )
    layer, _ = load_boundary_layer(path, "urn:service:sos", "code", "name", uri_attr="uri", layer="psaps")
    assert [b.id for b in layer.boundaries] == ["1", "2", "3"]
    with pytest.raises(LayerError, match="nope.*layers: psaps, other"):
        read_features(path, layer="nope")


def test_geojson_feature_id_is_the_id_attribute(shared_data):
    # US counties carry the 5-digit FIPS code only as each feature's string `id`.
    geoms, cols, _ = read_features(shared_data / "us" / "counties_2010.geojson")
    assert len(geoms) == 3221
    i = cols["id"].index("25017")
    assert cols["NAME"][i] == "Middlesex" and cols["STATE"][i] == "25"
    assert geoms[i].contains(shapely.Point(-71.11, 42.38))  # Cambridge is in Middlesex


def test_geojson_integer_feature_id(tmp_path):
    path = tmp_path / "ints.geojson"
    feats = [
        {"type": "Feature", "id": 17 + k, "properties": {"name": n},
         "geometry": shapely.geometry.mapping(g)}
        for k, (n, g) in enumerate(v for v in SQUARES.values())
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    layer, report = load_boundary_layer(path, "urn:service:sos", "id", "name", uri_template="sip:{id}@x.example")
    assert [b.id for b in layer.boundaries] == ["17", "18", "19"]
    assert [b.uri for b in layer.boundaries] == ["sip:17@x.example", "sip:18@x.example", "sip:19@x.example"]
    assert report.ok


def test_ma_towns_with_uri_template(shared_data, caplog):
    with caplog.at_level(logging.WARNING, logger="firebox.gis"):
        layer, report = load_boundary_layer(
            shared_data / "ma" / "towns.geojson", "urn:service:sos", "TOWN_ID", "TOWN",
            uri_template="sip:town-{TOWN_ID}@psap.example",
        )
    assert len(layer) == 351 and report.ok and len(report.repaired) == 1
    assert any("WAYLAND" in r.getMessage() for r in caplog.records)
    cambridge = layer.boundaries[layer.locate_point(-71.1106, 42.3736)]
    assert cambridge.name == "CAMBRIDGE" and cambridge.uri == f"sip:town-{cambridge.id}@psap.example"
    assert cambridge.attrs["POP2010"] == 105162 and "TOWN" not in cambridge.attrs
    # The repaired Wayland is in the layer, valid, and answers for its town centre.
    wayland = layer.by_id(next(b.id for b in layer.boundaries if b.name == "WAYLAND"))
    assert wayland.geometry.is_valid
    assert layer.boundaries[layer.locate_point(-71.3617, 42.3626)].name == "WAYLAND"


def test_unusable_features_are_left_out_and_reported(tmp_path):
    path = tmp_path / "mixed.geojson"
    feats = [
        {"type": "Feature", "properties": {"code": "1", "name": "ok", "uri": "sip:a@x"},
         "geometry": shapely.geometry.mapping(box(0, 0, 1, 1))},
        {"type": "Feature", "properties": {"code": "2", "name": "nothing", "uri": "sip:b@x"}, "geometry": None},
        {"type": "Feature", "properties": {"code": None, "name": "no id", "uri": "sip:c@x"},
         "geometry": shapely.geometry.mapping(box(1, 0, 2, 1))},
        {"type": "Feature", "properties": {"code": "4", "name": "no uri"},
         "geometry": shapely.geometry.mapping(box(2, 0, 3, 1))},
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    layer, report = load_boundary_layer(path, "urn:service:sos", "code", "name", uri_attr="uri")
    assert [b.id for b in layer.boundaries] == ["1", "4"]
    kinds = sorted(f.kind.value for f in report.errors)
    assert kinds == ["missing_geometry", "missing_id", "missing_uri"]


def test_no_uri_source_is_one_error(tmp_path):
    path = tmp_path / "sq.gpkg"
    write_projected(path, "GPKG")
    layer, report = load_boundary_layer(path, "urn:service:sos", "code", "name")
    assert len(layer) == 3
    assert [f.kind for f in report.errors] == [FindingKind.MISSING_URI]


def test_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(LayerError, match="no such file"):
        read_features(tmp_path / "missing.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(LayerError, match="bad.geojson"):
        read_features(bad)
    path = tmp_path / "sq.gpkg"
    write_projected(path, "GPKG")
    with pytest.raises(LayerError, match=r"no id attribute 'TOWN_ID' \(attributes: code, fid, name, uri\)"):
        load_boundary_layer(path, "urn:service:sos", "TOWN_ID", "name", uri_attr="uri")
    with pytest.raises(LayerError, match="names zone"):
        load_boundary_layer(path, "urn:service:sos", "code", "name", uri_template="sip:{zone}@x")
    with pytest.raises(LayerError, match="not both"):
        load_boundary_layer(path, "urn:service:sos", "code", "name", uri_attr="uri", uri_template="sip:{id}@x")
