"""Alert drafts of 911 outages (firebox.alerting.drafts): area polygons on real Massachusetts
towns, WEA texts that fit, the Alert / Update / Cancel chain, and the approval workflow."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
import shapely
from cryptography.hazmat.primitives.asymmetric import ec
from shapely.geometry import Polygon, shape

from firebox.alerting.drafts import (
    TEMPLATES,
    AlertArea,
    AlertManager,
    AlertPolicy,
    AlertPsap,
    AlertTown,
    ApprovalError,
    ClearMode,
    DraftState,
    cover_polygons,
    fit_text,
)
from firebox.cap import dsig, ipaws
from firebox.cap.message import MsgType, parse_cap
from firebox.demo.state import generate_state
from test_cap_message import self_signed

T0 = 1_750_000_000.0
SENDER = "alerts@demo.firebox.test"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def outage(oid: str, scope: str, key: str, state: str = "confirmed", start: float = T0 - 120) -> dict:
    return {"id": oid, "scope": scope, "key": key, "state": state, "start": iso(start),
            "confirmed_at": iso(start + 60), "end": None, "cause": "probes failed", "calls_affected": 3}  # fmt: skip


def polygons_of(xml: bytes) -> list[Polygon]:
    alert = parse_cap(xml)
    out = []
    for poly in alert.infos[0].areas[0].polygons:
        pairs = [tuple(map(float, p.split(","))) for p in poly.split()]
        out.append(Polygon([(lon, lat) for lat, lon in pairs]))
    return out


# --- real Massachusetts towns ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ma_towns(shared_data: Path) -> dict[str, tuple[dict, shapely.Geometry]]:
    # The shared_data fixture fails (not skips) when the real data is missing.
    features = json.loads((shared_data / "ma" / "towns.geojson").read_text())["features"]
    # WAYLAND's ring self-intersects (see the data's README): repaired here.
    return {f["properties"]["TOWN"]: (f["properties"], shapely.make_valid(shape(f["geometry"]))) for f in features}


def ma_area(ma_towns, psaps: dict[str, list[str]]) -> AlertArea:
    """PSAP id -> town names; SAME codes from the towns' county FIPS (0SSCCC); business
    lines in the 555-01XX range reserved for fiction."""
    towns, lines = {}, {}
    for i, (pid, names) in enumerate(sorted(psaps.items())):
        lines[pid] = AlertPsap(pid, f"{names[0].title()} Emergency Communications", f"508555{101 + i:04d}")
        for name in names:
            props, geom = ma_towns[name]
            towns[name] = AlertTown(str(props["TOWN_ID"]), name, geom, pid, f"0{props['FIPS_STCO']}")
    return AlertArea("Massachusetts", {t.id: t for t in towns.values()}, lines, state_same="025000")


@pytest.mark.realdata
def test_polygons_cover_the_affected_towns_and_no_others(ma_towns):
    affected = ["SHREWSBURY", "BOYLSTON", "WEST BOYLSTON"]
    area = ma_area(ma_towns, {"psap-shrewsbury": affected, "psap-worcester": ["WORCESTER"]})
    m = AlertManager(area, AlertPolicy(sender=SENDER))
    (draft,) = m.on_outages([outage("o1", "psap", "psap-shrewsbury")], T0)
    assert draft.problems == [] and draft.msg_type is MsgType.ALERT
    m.approve(draft.id, "alice", T0 + 30)
    alert = parse_cap(draft.xml)
    assert ipaws.validate(alert) == []
    a = alert.infos[0].areas[0]
    assert a.area_desc == "Boylston, Shrewsbury, West Boylston"
    assert [g.value for g in a.geocodes] == ["025027"]  # Worcester County
    polys = polygons_of(draft.xml)
    assert len(polys) == 3 and all(len(p.exterior.coords) <= ipaws.MAX_POLYGON_POINTS for p in polys)
    cover = shapely.union_all(polys)
    for name in affected:
        assert cover.covers(ma_towns[name][1]), name
    for name, (_, geom) in ma_towns.items():
        if name not in affected:
            assert cover.intersection(geom).area < 0.02 * geom.area, name


@pytest.mark.realdata
def test_cover_polygons_respects_the_point_limit_on_a_town_of_many_parts(ma_towns):
    geom = ma_towns["NEW BEDFORD"][1]  # a mainland and islands
    texts = cover_polygons(geom, max_points=40)
    polys = [Polygon([(float(p.split(",")[1]), float(p.split(",")[0])) for p in t.split()]) for t in texts]
    assert len(polys) == len(shapely.get_parts(geom)) and all(len(p.exterior.coords) <= 40 for p in polys)
    assert shapely.union_all(polys).covers(geom)


@pytest.mark.realdata
def test_wea_texts_fit_with_the_longest_town_names(ma_towns):
    longest = sorted(ma_towns, key=len)[-5:]  # NORTH ATTLEBOROUGH, EAST BRIDGEWATER, ...
    assert "NORTH ATTLEBOROUGH" in longest
    area = ma_area(ma_towns, {"psap-a": longest, "psap-b": ["WORCESTER"]})
    m = AlertManager(area, AlertPolicy(sender=SENDER))
    seen = []
    for outages in ([outage("o1", "psap", "psap-a")], [outage("o1", "psap", "psap-a"), outage("o2", "psap", "psap-b")],
                    [outage("o1", "psap", "psap-a", "cleared"), outage("o2", "psap", "psap-b", "cleared")]):  # fmt: skip
        (draft,) = m.on_outages(outages, T0 + 100 * len(seen))
        m.approve(draft.id, "alice", T0 + 100 * len(seen) + 1)
        seen.append(draft)
    for draft in seen:
        alert = parse_cap(draft.xml)
        assert ipaws.validate(alert) == []
        for info in alert.infos:
            short, long = info.parameter("CMAMtext"), info.parameter("CMAMlongtext")
            assert 0 < len(short) <= 90 and 0 < len(long) <= 360
            assert short.endswith(".") and long.endswith(".")  # whole sentences, never cut
            assert len(info.headline) < 160
    one = parse_cap(seen[0].xml).infos[0]
    # One PSAP: its line in the short text, the town names in the long one.
    assert "508-555-0101" in one.parameter("CMAMtext")
    assert "North Attleborough" in one.parameter("CMAMlongtext") and "508-555-0101" in one.parameter("CMAMlongtext")
    assert "street fire alarm box" in one.instruction and "fire or police station" in one.instruction
    es = parse_cap(seen[0].xml).infos[1]
    assert es.language == "es-US" and "bomberos" in es.parameter("CMAMtext")


def test_fit_text_picks_whole_variants_in_order():
    variants = ("Call {line} in {area}.", "Go to a station in {area}.", "Go to a station.")
    values = [{"area": "North Attleborough and East Bridgewater", "line": "508-555-0101"}, {"area": "2 towns"}]
    assert fit_text(variants, 100, values) == "Call 508-555-0101 in North Attleborough and East Bridgewater."
    assert fit_text(variants, 30, values) == "Go to a station in 2 towns."
    assert fit_text(variants, 17, values) == "Go to a station."
    with pytest.raises(ValueError, match="no text variant fits in 10"):
        fit_text(variants, 10, values)
    for t in TEMPLATES.values():  # the fixed last variants always fit
        assert len(t.wea[-1]) <= 90 and len(t.clear_wea[-1]) <= 90 and "{" not in t.wea[-1] + t.clear_wea[-1]
        assert len(t.wea_long[-1]) <= 360 and "{" not in t.wea_long[-1] + t.clear_wea_long[-1]


# --- the demo state: statewide, narrowing, restoration ------------------------------------------


@pytest.fixture(scope="module")
def demo():
    state = generate_state(seed=911, n_towns=60)
    # The demo state lies where New Hampshire is (state FIPS 33): its whole-state SAME code.
    regions = {p.id: p.county for p in state.psaps}
    return state, AlertArea.from_demo(state, state_same="033000", regions=regions,
                                      elements={"esrp-1": frozenset(p.id for p in state.psaps)})  # fmt: skip


def test_statewide_outage_narrows_then_clears_in_one_chain(demo):
    state, area = demo
    key_pem, cert_pem = self_signed(ec.generate_private_key(ec.SECP256R1()))
    m = AlertManager(area, AlertPolicy(sender=SENDER, auto_send_statewide=True),
                     signer=partial(dsig.sign, key_pem=key_pem, cert_pem=cert_pem))  # fmt: skip
    statewide = outage("s1", "statewide", "statewide")
    # Suspected: nothing yet. Confirmed: an Alert, sent at once by the statewide policy.
    assert m.on_outages([dict(statewide, state="suspected")], T0 - 30) == []
    (alert_draft,) = m.on_outages([statewide], T0)
    assert alert_draft.created - datetime.fromisoformat(statewide["confirmed_at"]).timestamp() <= 60
    assert alert_draft.state is DraftState.APPROVED and alert_draft.approvals == ["policy:auto_send_statewide"]
    assert [d.id for d in m.take_outbox()] == [alert_draft.id]
    m.sent(alert_draft.id, T0 + 1)
    first = parse_cap(dsig.verify(alert_draft.xml, cert_pem))
    assert first.msg_type == "Alert" and first.references == ()
    assert first.infos[0].areas[0].area_desc == "Demo State"
    assert shapely.union_all(polygons_of(alert_draft.xml)).covers(area.outline)

    # The same detector step clears the statewide outage and confirms a regional one: a
    # narrowing (Update), not an all-clear; sent at once (it corrects a statewide alert).
    county = state.psaps[0].county
    region = outage("r1", "region", county)
    (update,) = m.on_outages([dict(statewide, state="cleared"), region], T0 + 600)
    assert update.msg_type is MsgType.UPDATE and update.state is DraftState.APPROVED
    m.sent(m.take_outbox()[0].id, T0 + 601)
    second = parse_cap(dsig.verify(update.xml, cert_pem))
    assert second.references == (first.reference,)
    region_towns = {t.id for t in state.towns if state.psap(t.psap_id).county == county}
    assert set(update.towns) == region_towns
    assert second.infos[0].areas[0].area_desc == ", ".join(sorted(state.town(t).title for t in region_towns))

    # Restoration: a Cancel of the chain, all-clear, approved by a person (not statewide).
    (cancel,) = m.on_outages([dict(region, state="cleared")], T0 + 1800)
    assert cancel.msg_type is MsgType.CANCEL and cancel.state is DraftState.DRAFT
    m.approve(cancel.id, "alice", T0 + 1830)
    m.sent(m.take_outbox()[0].id, T0 + 1831)
    third = parse_cap(dsig.verify(cancel.xml, cert_pem))
    assert third.references == (first.reference, second.reference)
    assert third.infos[0].response_types == ("AllClear",) and third.infos[0].urgency == "Past"
    assert third.infos[0].areas[0].area_desc == second.infos[0].areas[0].area_desc  # the area last told
    assert len({first.incidents, second.incidents, third.incidents}) == 1
    for msg in (first, second, third):
        assert ipaws.validate(msg) == []
        assert [i.language for i in msg.infos] == ["en-US", "es-US"]
    # A tampered message fails verification.
    with pytest.raises(dsig.SignatureInvalid):
        dsig.verify(cancel.xml.replace(b"AllClear", b"Shelter"), cert_pem)
    # A new outage starts a new chain.
    (again,) = m.on_outages([outage("p9", "psap", "psap-03")], T0 + 4000)
    assert again.msg_type is MsgType.ALERT and again.chain != alert_draft.chain


def test_two_person_approval_and_every_transition_recorded(demo):
    _, area = demo
    m = AlertManager(area, AlertPolicy(sender=SENDER, two_person=True, auto_send_statewide=True))
    (d,) = m.on_outages([outage("p1", "psap", "psap-01")], T0)
    m.approve(d.id, "alice", T0 + 10)
    assert d.state is DraftState.DRAFT and m.take_outbox() == []
    with pytest.raises(ApprovalError, match="alice already approved .* a second, different person"):
        m.approve(d.id, "alice", T0 + 11)
    with pytest.raises(ApprovalError, match="user name"):
        m.approve(d.id, "  ", T0 + 11)
    m.approve(d.id, "bob", T0 + 20)
    assert d.state is DraftState.APPROVED and d.approvals == ["alice", "bob"]
    assert parse_cap(d.xml).sent == "2025-06-15T15:07:00-00:00"  # sent when approved
    m.sent(d.id, T0 + 21)
    with pytest.raises(ApprovalError, match="is sent: cannot approve"):
        m.approve(d.id, "carol", T0 + 22)
    assert [(t.state.value, t.by, t.at) for t in d.transitions] == [
        ("draft", "firebox", T0), ("draft", "alice", T0 + 10), ("approved", "bob", T0 + 20), ("sent", "firebox", T0 + 21)]


def test_a_draft_is_superseded_or_withdrawn_and_never_cancelled_unsent(demo):
    _, area = demo
    m = AlertManager(area, AlertPolicy(sender=SENDER))
    (a,) = m.on_outages([outage("p1", "psap", "psap-01")], T0)
    (b,) = m.on_outages([outage("p2", "psap", "psap-02")], T0 + 5)  # wider before anyone approved
    assert a.state is DraftState.WITHDRAWN and "superseded" in a.transitions[-1].note
    assert b.msg_type is MsgType.ALERT and set(b.psaps) == {"psap-01", "psap-02"}
    with pytest.raises(ApprovalError, match="is withdrawn .*superseded.*: cannot approve"):
        m.approve(a.id, "alice", T0 + 6)
    assert m.on_outages([outage("p1", "psap", "psap-01", "cleared"), outage("p2", "psap", "psap-02", "cleared")],
                        T0 + 10) == []  # fmt: skip
    assert b.state is DraftState.WITHDRAWN and "ended before" in b.transitions[-1].note
    assert m.take_outbox() == []
    with pytest.raises(KeyError):
        m.approve("nope", "alice", T0)


def test_which_outages_reach_the_public(demo):
    state, area = demo
    m = AlertManager(area, AlertPolicy(sender=SENDER))
    assert m.on_outages([outage("e1", "element", "bcf-7")], T0) == []  # an element not serving the public
    assert m.on_outages([outage("p1", "psap", "psap-01", "suspected")], T0) == []
    assert m.on_outages([outage("p2", "psap", "no-such-psap")], T0) == []
    (d,) = m.on_outages([outage("e2", "element", "esrp-1")], T0)  # serves every PSAP
    assert d.statewide and len(d.towns) == len(state.towns)
    # Nothing new: no second draft; a rejection is final for that picture.
    assert m.on_outages([dict(outage("e2", "element", "esrp-1"), calls_affected=50)], T0 + 5) == []
    m.reject(d.id, "alice", T0 + 6, "test traffic")
    assert d.state is DraftState.REJECTED and m.on_outages([outage("e2", "element", "esrp-1")], T0 + 7) == []


def test_renewal_before_expiry_and_clear_as_update(demo):
    _, area = demo
    m = AlertManager(area, AlertPolicy(sender=SENDER, expires_after=3600, renew_before=600, clear_as=ClearMode.UPDATE))
    (d,) = m.on_outages([outage("p1", "psap", "psap-01")], T0)
    m.approve(d.id, "alice", T0)
    m.sent(d.id, T0)
    assert m.tick(T0 + 2000) == []
    (renewal,) = m.tick(T0 + 3000)
    assert renewal.msg_type is MsgType.UPDATE and renewal.transitions[0].note == "renewal before expiry"
    m.approve(renewal.id, "alice", T0 + 3001)
    (clear,) = m.on_outages([outage("p1", "psap", "psap-01", "cleared")], T0 + 3600)
    msg = clear.alert
    assert msg.msg_type == "Update" and msg.infos[0].response_types == ("AllClear",)
    assert [r.identifier for r in msg.references] == [d.id, renewal.id]


def test_area_model_names_bad_configuration(demo):
    state, _ = demo
    town = state.towns[0]
    with pytest.raises(ValueError, match="business_line must be 10 digits"):
        AlertArea("X", {}, {"p": AlertPsap("p", "P", "555-0101")})
    with pytest.raises(ValueError, match="unknown PSAP 'psap-x'"):
        AlertArea("X", {"t": AlertTown("t", "T", town.geometry, "psap-x")}, {})
    with pytest.raises(ValueError, match="sender must be"):
        AlertPolicy(sender="a b")


def test_an_ingress_outage_is_drafted_for_a_person_never_sent_by_policy(demo):
    """An ingress (the detector's ``ingress <name>``) is one of several ways in: any caller's
    carrier may use it, so every town is in the draft, but it is not a statewide picture and
    the statewide policy does not send it; it ends with its outage."""
    state, area = demo
    m = AlertManager(area, AlertPolicy(sender=SENDER, auto_send_statewide=True))
    (d,) = m.on_outages([outage("i1", "element", "ingress carrier-edge-a")], T0)
    assert len(d.towns) == len(state.towns) and not d.statewide
    assert d.state is DraftState.DRAFT and m.take_outbox() == []
    assert m.on_outages([outage("i1", "element", "ingress carrier-edge-a", "cleared")], T0 + 30) == []
    assert d.state is DraftState.WITHDRAWN


@pytest.mark.parametrize(
    ("scenario", "outages", "public"),
    [
        # What the detector declares in each outage replay (firebox.sim.faults), as outages.
        ("ma-2024-firewall", [("i1", "element", "ingress carrier-edge-a")], True),
        ("counter-2014", [("c1", "element", "bcf.demo.invalid call-id")], False),  # calls still routed
        ("config-push-2020", [("s1", "statewide", "all")], True),
        ("fiber-cut-2024", [("p1", "psap", "psap-01"), ("p2", "psap", "psap-02")], True),
        ("tdos", [("t1", "element", "bcf.demo.invalid tdos")], False),  # the flood is screened
        ("psap-evacuation", [("p1", "psap", "psap-03")], True),
    ],
)
def test_the_cap_output_of_each_scenario_validates(demo, scenario, outages, public):
    """Issue 7: the CAP output of each replay validates (CAP 1.2 and the IPAWS profile), its
    WEA texts fit, and an outage that does not cut callers off makes no alert; the all-clear
    validates too."""
    _, area = demo
    m = AlertManager(area, AlertPolicy(sender=SENDER))
    drafts = m.on_outages([outage(*o) for o in outages], T0)
    if not public:
        assert drafts == [], scenario
        return
    (draft,) = drafts
    m.approve(draft.id, "alice", T0 + 30)
    (clear,) = m.on_outages([outage(*o, state="cleared") for o in outages], T0 + 600)
    m.approve(clear.id, "alice", T0 + 601)
    for d in (draft, clear):
        assert d.problems == [], (scenario, d.problems)
        alert = parse_cap(d.xml)
        assert ipaws.validate(alert) == [], scenario
        for info in alert.infos:
            assert 0 < len(info.parameter("CMAMtext")) <= 90 and 0 < len(info.parameter("CMAMlongtext")) <= 360
