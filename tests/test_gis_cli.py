"""``firebox gis check``: report, JSON, exit codes."""

from __future__ import annotations

import json

import shapely
from shapely.geometry import box
from typer.testing import CliRunner

from firebox.gis.cli import gis_app

runner = CliRunner()


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def write_geojson(path, items):
    feats = [
        {"type": "Feature", "properties": props, "geometry": shapely.geometry.mapping(geom)}
        for props, geom in items
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def test_ma_towns_repaired_is_exit_0_with_json(shared_data, tmp_path):
    out = tmp_path / "report.json"
    result = runner.invoke(gis_app, [
        "check", str(shared_data / "ma" / "towns.geojson"), "--service", "urn:service:sos",
        "--id-attr", "TOWN_ID", "--name-attr", "TOWN", "--uri-template", "sip:town-{id}@psap.example",
        "--json", str(out),
    ], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "WAYLAND" in flat(result.output) and "351 boundaries, ok" in flat(result.output)
    data = json.loads(out.read_text())
    assert data["ok"] is True and data["repaired"] == 1
    assert [f["kind"] for f in data["findings"]] == ["invalid_geometry"]


def test_overlap_and_gap_exit_1(tmp_path):
    path = write_geojson(tmp_path / "bad.geojson", [
        ({"id": "a", "name": "A", "uri": "sip:a@x"}, box(-71.0, 42.0, -70.99, 42.01)),
        ({"id": "b", "name": "B", "uri": "sip:b@x"}, box(-70.995, 42.0, -70.98, 42.01)),
    ])
    outline = write_geojson(tmp_path / "outline.geojson", [({}, box(-71.0, 42.0, -70.97, 42.01))])
    out = tmp_path / "r.json"
    result = runner.invoke(gis_app, [
        "check", str(path), "--service", "urn:service:sos.police", "--id-attr", "id", "--name-attr", "name",
        "--uri-attr", "uri", "--outline", str(outline), "--json", str(out),
    ], terminal_width=200)
    assert result.exit_code == 1, result.output
    kinds = sorted(f["kind"] for f in json.loads(out.read_text())["findings"])
    assert kinds == ["outline_gap", "overlap"]
    assert "overlap" in flat(result.output) and "2 errors" in flat(result.output)


def test_unreadable_or_misconfigured_is_exit_2(tmp_path):
    path = write_geojson(tmp_path / "ok.geojson", [({"id": "a", "name": "A"}, box(0, 0, 1, 1))])
    result = runner.invoke(gis_app, ["check", str(path), "--service", "urn:service:sos",
                                     "--id-attr", "code", "--name-attr", "name"])
    assert result.exit_code == 2 and "no id attribute 'code'" in flat(result.output)
    result = runner.invoke(gis_app, ["check", str(tmp_path / "none.gpkg"), "--service", "urn:service:sos",
                                     "--id-attr", "id", "--name-attr", "name"])
    assert result.exit_code == 2 and "no such file" in flat(result.output)
    result = runner.invoke(gis_app, ["check", str(path), "--service", "police",
                                     "--id-attr", "id", "--name-attr", "name"])
    assert result.exit_code == 2 and "not a service URN" in flat(result.output)
