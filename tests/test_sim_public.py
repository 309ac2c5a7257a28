"""The public-channel probe of the outage replays (``firebox.sim.public``) without a run:
which towns an outage reaches, the deployment it enables, and its figures read from samples
against the detection time."""

from __future__ import annotations

from pathlib import Path

import yaml

from firebox.sim.public import BoxAlarm, PublicChannelProbe, affected_towns, public_rows


def test_affected_towns_read_as_the_status_board_reads_outages():
    towns = {"t1": "p1", "t2": "p1", "t3": "p2", "t4": "p3"}
    regions = {"p1": "west", "p2": "west", "p3": "east"}
    assert affected_towns({"scope": "psap", "key": "p1"}, towns) == {"t1", "t2"}
    assert affected_towns({"scope": "region", "key": "west"}, towns, regions) == {"t1", "t2", "t3"}
    assert affected_towns({"scope": "statewide", "key": "state"}, towns) == set(towns)
    # an ingress the board knows nothing of can reach any caller: every town
    assert affected_towns({"scope": "element", "key": "carrier-edge-a"}, towns) == set(towns)
    assert affected_towns({"scope": "element", "key": "esrp"}, towns, element_psaps={"esrp": ["p3"]}) == {"t4"}
    assert affected_towns(None, towns) == set()


def test_enable_adds_the_public_elements_to_a_demo_deployment(tmp_path: Path):
    (tmp_path / "boxes.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump({"elements": {"web": {"listen": "127.0.0.1:18080"}}}))
    assert PublicChannelProbe.enable(path) == "http://127.0.0.1:18080"
    els = yaml.safe_load(path.read_text())["elements"]
    assert els["monitor"] == {"listen": "127.0.0.1:18080", "probe_period_seconds": 0}
    assert els["status_page"]["check_period_seconds"] == 0 and els["alerting"]["listen"] == "127.0.0.1:18080"
    assert els["cad"]["boxes"] == "boxes.geojson" and "stations" not in els["cad"]


def test_figures_are_read_against_the_detection():
    probe = PublicChannelProbe("http://127.0.0.1:9")
    probe.towns = {"t1": "p1", "t2": "p1", "t3": "p2"}
    fault, detected = 100.0, 101.5
    probe.status = [(90.0, frozenset()), (101.8, frozenset({"t1"})), (103.0, frozenset({"t1", "t2"}))]
    probe.drafts = {"old": (95.0, {}), "d1": (110.0, {}), "d2": (120.0, {})}
    probe.alarms = [BoxAlarm(99.0, "11", 201, 0.01, "inc-1"), BoxAlarm(102.0, "12", 201, 0.02, "inc-2"),
                    BoxAlarm(104.0, "13", 201, 0.03, "inc-3")]  # fmt: skip
    f = probe.figures(fault_at=fault, detected_at=detected, healed_at=105.0, detected={"scope": "psap", "key": "p1"})
    assert f.affected_towns == 2 and f.status_towns_s == 103.0 - detected  # both of p1's towns shown
    assert f.alert_draft_id == "d1" and f.alert_draft_s == 110.0 - detected  # not the draft from before the fault
    assert (f.boxes_sent, f.boxes_incidents, f.boxes_during_fault, f.boxes_failed) == (3, 3, 2, [])
    assert f.criteria == {"alert_draft_within_60s": True, "status_page_within_10s": True, "box_incidents_throughout": True}
    # A repeat (200) or an error is no incident: the boxes criterion fails and says which.
    probe.alarms.append(BoxAlarm(104.5, "13", 200, 0.01, None, "repeat"))
    f = probe.figures(fault_at=fault, detected_at=detected, healed_at=105.0, detected={"scope": "psap", "key": "p1"})
    assert not f.criteria["box_incidents_throughout"] and f.boxes_failed[0]["box"] == "13"
    # Nothing detected: no times, the criteria not met.
    f = probe.figures(fault_at=fault, detected_at=None, healed_at=105.0, detected=None)
    assert f.alert_draft_s is None and f.status_towns_s is None and not f.criteria["alert_draft_within_60s"]
    rows = dict(public_rows({"figures": {"public": f.as_dict()}}))
    assert rows["first alert draft after detection"] == "-"
    assert public_rows({"figures": {}}) == [] and public_rows({}) == []
