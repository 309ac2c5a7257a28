"""The deployment file: valid files load; every mistake is named with its key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from firebox.deployment import (
    DeploymentError,
    dump_deployment,
    load_deployment,
    parse_deployment,
)

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


# -- SIP elements: BCF + ESRP, simulated PSAPs ---------------------------------------------

SIP = (
    GOOD.replace('    business_line: "+1 603 555 0102"\n', '    business_line: "+1 603 555 0102"\n    simulated: true\n')
    + """\
  bcf:
    listen: 127.0.0.1:5070
    transports: [udp]
    sources:
      192.0.2.0/24: carrier-a
  esrp:
    pstn_gateway: pstn-gw.demo.firebox.test
    default_psap: psap-02
  psap_agents:
    listen: 127.0.0.1:0
    hold_seconds: 3
    faults:
      psap-02: busy
"""
)


def test_sip_elements_load_and_round_trip():
    dep = parse_deployment(SIP)
    els = dep.elements
    assert els.bcf is not None and els.bcf.transports == ["udp"] and els.bcf.sources == {"192.0.2.0/24": "carrier-a"}
    assert els.esrp is not None and els.esrp.default_psap == "psap-02"
    assert els.psap_agents is not None and els.psap_agents.faults == {"psap-02": "busy"}
    assert [p.simulated for p in dep.psaps] == [False, True]
    assert parse_deployment(dump_deployment(dep)).model_dump() == dep.model_dump()
    # Without the keys, nothing SIP runs.
    plain = parse_deployment(GOOD)
    assert plain.elements.bcf is None and plain.elements.esrp is None and plain.elements.psap_agents is None


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("    transports: [udp]\n", "    transports: [sctp]\n", "line 36: elements.bcf.transports[0]: Input should be 'udp' or 'tcp'"),
        ("    listen: 127.0.0.1:5070\n", "    listen: 5070\n", "line 35: elements.bcf.listen: '5070' is not HOST:PORT"),
        ("      192.0.2.0/24: carrier-a", "      192.0.2/33: carrier-a", "line 37: elements.bcf.sources: '192.0.2/33' is not a network"),
        ("    default_psap: psap-02", "    default_psap: psap-09", "line 41: elements.esrp.default_psap: unknown PSAP id 'psap-09'"),
        ("    pstn_gateway: pstn-gw.demo.firebox.test", "    pstn_gateway: gw/x", "line 40: elements.esrp.pstn_gateway: String should match pattern"),
        ("      psap-02: busy", "      psap-02: asleep", "line 46: elements.psap_agents.faults.psap-02: Input should be 'answer', 'busy' or 'silent'"),
        ("      psap-02: busy", "      psap-01: busy", "line 46: elements.psap_agents.faults.psap-01: not a simulated PSAP 'psap-01'"),
        ("      psap-02: busy", "      psap-07: busy", "line 46: elements.psap_agents.faults.psap-07: unknown PSAP id 'psap-07'"),
        ("    hold_seconds: 3", "    hold_seconds: -1", "line 44: elements.psap_agents.hold_seconds: Input should be greater than 0"),
        ("    simulated: true\n", "    simulated: maybe\n", "line 28: psaps[1].simulated: Input should be a valid boolean"),
        ("    simulated: true\n", "", "line 41: elements.psap_agents: no PSAP is marked simulated: true"),
        ("  esrp:\n    pstn_gateway: pstn-gw.demo.firebox.test\n    default_psap: psap-02\n", "", "line 34: elements.bcf: the BCF hands calls to an ESRP: add elements.esrp"),
        ("  bcf:\n    listen: 127.0.0.1:5070\n    transports: [udp]\n    sources:\n      192.0.2.0/24: carrier-a\n", "", "line 34: elements.esrp: the ESRP needs elements.bcf"),
        ("  psap_agents:\n    listen: 127.0.0.1:0\n    hold_seconds: 3\n    faults:\n      psap-02: busy\n", "", "line 28: psaps[1].simulated: a simulated PSAP needs elements.psap_agents"),
    ],
)
def test_sip_errors_name_key_and_line(old, new, expected):
    assert old in SIP
    with pytest.raises(DeploymentError) as exc:
        parse_deployment(SIP.replace(old, new, 1))
    assert any(expected in p for p in exc.value.problems), exc.value.problems


def test_esrp_without_an_ecrf_needs_a_lost_server():
    text = SIP.replace("elements:\n  ecrf:\n    listen: 127.0.0.1:7070\n    peers:\n      - uri: http://127.0.0.1:7071/lost\n", "elements:\n  ecrf: null\n")
    with pytest.raises(DeploymentError) as exc:
        parse_deployment(text)
    assert any("elements.esrp: no ECRF to ask" in p for p in exc.value.problems), exc.value.problems
    ok = parse_deployment(text.replace("    default_psap: psap-02\n", "    default_psap: psap-02\n    lost: http://127.0.0.1:7071/lost\n"))
    assert ok.elements.esrp is not None and ok.elements.esrp.lost == "http://127.0.0.1:7071/lost"


# -- the ESRP's options, the Logging Service and log events ----------------------------------

LOGGED = SIP.replace(
    "    default_psap: psap-02\n",
    "    default_psap: psap-02\n    overload: {capacity: 10, queue_limit: 5}\n    divert_to: sip:divert@media.example\n",
) + """\
  logging:
    listen: 127.0.0.1:7072
    store: var/logging.db
  log_events:
    spool: var/log-spool
"""


def test_logging_and_esrp_options_load_and_round_trip():
    dep = parse_deployment(LOGGED)
    els = dep.elements
    assert els.esrp is not None and els.esrp.overload is not None and els.esrp.overload.capacity == 10
    assert els.esrp.divert_to == "sip:divert@media.example" and els.esrp.provisional_timeout_seconds == 0.5
    assert els.logging is not None and els.logging.store == "var/logging.db"
    assert els.log_events is not None and els.log_events.services == []
    assert parse_deployment(dump_deployment(dep)).model_dump() == dep.model_dump()
    from firebox.node import log_event_urls

    assert log_event_urls(dep) == ["http://127.0.0.1:7072"]  # its own Logging Service by default


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("    divert_to: sip:divert@media.example\n", "    divert_to: divert@media\n",
         "elements.esrp.divert_to: 'divert@media' is not a sip: or sips: URI"),
        ("{capacity: 10, queue_limit: 5}", "{capacity: 0, queue_limit: 5}",
         "elements.esrp.overload.capacity: Input should be greater than or equal to 1"),
        ("  logging:\n    listen: 127.0.0.1:7072\n    store: var/logging.db\n", "",
         "elements.log_events.services: no Logging Service to send to"),
        ("    spool: var/log-spool\n", "    spool: var/log-spool\n    services: [ftp://x]\n",
         "elements.log_events.services[0]"),
    ],
)  # fmt: skip
def test_logging_errors_name_the_key(old, new, expected):
    assert old in LOGGED
    with pytest.raises(DeploymentError) as exc:
        parse_deployment(LOGGED.replace(old, new, 1))
    assert any(expected in p and " line " in p for p in exc.value.problems), exc.value.problems


def test_policy_store_and_policy_references():
    text = LOGGED.replace(
        "    divert_to: sip:divert@media.example\n",
        "    divert_to: sip:divert@media.example\n    policy: {url: http://127.0.0.1:7072/policy, policy_id: esrp-rules}\n",
    ) + "  policy_store:\n    listen: 127.0.0.1:7072\n    path: /policy\n"
    dep = parse_deployment(text)
    assert dep.elements.policy_store is not None and dep.elements.policy_store.path == "/policy"
    assert dep.elements.esrp is not None and dep.elements.esrp.policy is not None
    assert dep.elements.esrp.policy.policy_id == "esrp-rules" and dep.elements.esrp.policy.interval_seconds == 5.0
    with pytest.raises(DeploymentError) as exc:
        parse_deployment(text.replace("policy_id: esrp-rules", "policy_id: 'esrp rules'"))
    assert any("elements.esrp.policy.policy_id" in p and " line " in p for p in exc.value.problems), exc.value.problems
    with pytest.raises(DeploymentError) as exc:
        parse_deployment(text.replace("    path: /policy\n", "    path: policy\n"))
    assert any("elements.policy_store.path" in p for p in exc.value.problems), exc.value.problems


def test_cad_console_and_monitor_sections_and_their_cross_checks():
    from firebox.console.auth import hash_password

    h = hash_password("pw", n=2**10)
    text = LOGGED + (
        "  cad:\n    store: var/cad.db\n"
        "  console:\n    users:\n"
        f"      - {{name: ann, role: call-taker, psap: nowhere, position: p9, password_hash: '{h}'}}\n"
        f"      - {{name: ann, role: dispatcher, psap: {{psap}}, password_hash: '{h}'}}\n"
        "  monitor:\n    probe_period_seconds: 10\n    regions: {nowhere: west}\n"
    )
    psap = parse_deployment(LOGGED).psaps[0].id
    text = text.replace("{psap}", psap)
    with pytest.raises(DeploymentError) as exc:
        parse_deployment(text)
    problems = "\n".join(exc.value.problems)
    assert "elements.console.users[0].psap: unknown PSAP id 'nowhere'" in problems
    assert "elements.console.users[0].position: unknown position 'p9'" in problems
    assert "elements.console.users[1].name: duplicate user 'ann'" in problems
    assert "elements.monitor.regions.nowhere: unknown PSAP id 'nowhere'" in problems
    good = text.replace("psap: nowhere, position: p9", f"psap: {psap}").replace("name: ann, role: dispatcher", "name: dan, role: dispatcher")
    good = good.replace("regions: {nowhere: west}", f"regions: {{{psap}: west}}")
    dep = parse_deployment(good)
    assert dep.elements.cad is not None and dep.elements.cad.box_fields.number == "BOX"
    assert dep.elements.console is not None and [u.name for u in dep.elements.console.users] == ["ann", "dan"]
    assert dep.elements.monitor is not None and dep.elements.monitor.probe_period_seconds == 10
    with pytest.raises(DeploymentError) as exc:
        parse_deployment(good.replace("  cad:\n    store: var/cad.db\n", ""))
    assert any("elements.console: the console needs elements.cad" in p for p in exc.value.problems), exc.value.problems
