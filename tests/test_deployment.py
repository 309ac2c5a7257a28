"""The deployment file: valid files load; every mistake is named with its key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from firebox.deployment import DeploymentError, dump_deployment, load_deployment, parse_deployment

GOOD = """\
authority:
  name: Demo State 911
  domain: demo.firebox.test
  state: DS
gis:
  layers:
    - service: urn:service:sos
      path: layers/sos.geojson
    - service: urn:service:sos.police
      path: layers/police.gpkg
      layer: police
      id_attribute: DEPT_ID
      uri_template: "sip:{DEPT_ID}@police.example"
  streets:
    - path: streets.geojson
  aliases:
    MASS AVE: MASSACHUSETTS AVE
psaps:
  - id: psap-01
    name: North Regional
    uri: sip:psap-01@psap.demo.firebox.test
    business_line: (603) 555-0101
    alternates: [psap-02]
  - id: psap-02
    name: South
    uri: sips:psap-02@psap.demo.firebox.test
    business_line: "+1 603 555 0102"
elements:
  ecrf:
    listen: 127.0.0.1:7070
    peers:
      - uri: http://127.0.0.1:7071/lost
"""


def test_good_file_loads_and_resolves_paths(tmp_path: Path):
    f = tmp_path / "deployment.yaml"
    f.write_text(GOOD)
    dep = load_deployment(f)
    assert dep.authority.state == "DS"
    assert dep.psaps[0].business_line == "6035550101"
    assert dep.psaps[1].business_line == "6035550102"
    assert dep.psap("psap-01").alternates == ["psap-02"]
    assert dep.resolve(dep.gis.layers[0].path) == tmp_path / "layers" / "sos.geojson"
    assert dep.gis.aliases == {"MASS AVE": "MASSACHUSETTS AVE"}
    assert dep.elements.lis is not None and dep.elements.lis.uri_lifetime_seconds == 1800
    # What we write reads back the same.
    again = parse_deployment(dump_deployment(dep))
    assert again.model_dump() == dep.model_dump()


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("state: DS", "state: DSX", "line 4: authority.state: String should have at most 2 characters"),
        ("service: urn:service:sos.police", "service: police", "line 9: gis.layers[1].service: 'police' is not a service URN"),
        ("business_line: (603) 555-0101", "business_line: 555-0101", "line 22: psaps[0].business_line: '555-0101' is not a 10-digit NANP number"),
        ("uri: sip:psap-01@psap.demo.firebox.test", "uri: tel:+16035550101", "line 21: psaps[0].uri: 'tel:+16035550101' is not a sip: or sips: URI"),
        ("alternates: [psap-02]", "alternates: [psap-09]", "line 23: psaps[0].alternates[0]: unknown PSAP id 'psap-09'"),
        ("alternates: [psap-02]", "alternates: [psap-01]", "line 23: psaps[0].alternates[0]: a PSAP cannot be its own alternate"),
        ("- id: psap-02", "- id: psap-01", "line 24: psaps[1].id: duplicate PSAP id 'psap-01'"),
        ("listen: 127.0.0.1:7070", "listen: 7070", "line 30: elements.ecrf.listen: '7070' is not HOST:PORT"),
        ("uri: http://127.0.0.1:7071/lost", "uri: ftp://x", "line 32: elements.ecrf.peers[0].uri: 'ftp://x' is not an http:// or https:// URL"),
        ("      layer: police", "      layer: police\n      colour: red", "line 12: gis.layers[1].colour: unknown key"),
        ("  name: Demo State 911\n", "", "line 1: authority.name: Field required"),
    ],
)
def test_errors_name_key_and_line(old, new, expected):
    assert old in GOOD
    with pytest.raises(DeploymentError) as exc:
        parse_deployment(GOOD.replace(old, new, 1))
    assert any(expected in p for p in exc.value.problems), exc.value.problems


def test_every_problem_is_reported_at_once():
    text = GOOD.replace("state: DS", "state: D").replace("business_line: (603) 555-0101", "business_line: 1")
    with pytest.raises(DeploymentError) as exc:
        parse_deployment(text)
    assert len(exc.value.problems) == 2


def test_broken_yaml_and_missing_file(tmp_path: Path):
    with pytest.raises(DeploymentError, match=r"line 4: not valid YAML"):
        parse_deployment("authority:\n  name: x\n  state: [DS\n")
    with pytest.raises(DeploymentError, match="expected a mapping"):
        parse_deployment("- a\n- b\n")
    with pytest.raises(DeploymentError, match="cannot read"):
        load_deployment(tmp_path / "nope.yaml")
