"""The console's state view of outages and its public alert approval
(firebox.console.resilience, over the real detector, worklist and AlertService): who sees
what, two-person approval, the audit of every decision, and the live events."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from firebox.alerting.drafts import AlertArea, AlertManager, AlertPolicy, DraftState
from firebox.alerting.http import AlertDesk
from firebox.alerting.publish import AlertService, AtomFeed
from firebox.console.app import console_app
from firebox.console.audit import ConsoleAudit
from firebox.console.auth import hash_password, load_users
from firebox.console.live import LiveHub
from firebox.console.resilience import ResilienceSource, poll_resilience
from firebox.console.testing import small_cad
from firebox.demo.state import generate_state
from firebox.esrp.worklist import Worklist, WorklistReason
from firebox.monitor.probes import ProbeAnswer
from test_alerting_drafts import SENDER, T0, outage
from test_console_app import Clock, client, is_problem
from test_monitor_detector import Harness

PW = "pw-resilience"
HASH = hash_password(PW, n=2**10)
USERS = load_users([
    {"name": "ann", "role": "call-taker", "psap": "psap-01", "position": "psap-01-pos1", "password_hash": HASH},
    {"name": "sue", "role": "supervisor", "psap": "psap-01", "password_hash": HASH},
    {"name": "sam", "role": "supervisor", "psap": "psap-02", "password_hash": HASH},
    {"name": "ada", "role": "administrator", "psap": "psap-01", "password_hash": HASH},
])  # fmt: skip


class PosixClock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def area() -> AlertArea:
    state = generate_state(seed=911, n_towns=40)
    return AlertArea.from_demo(state, state_same="033000")


def alerting(area: AlertArea, two_person: bool) -> AlertService:
    manager = AlertManager(area, AlertPolicy(sender=SENDER, two_person=two_person))
    feed = AtomFeed("tag:demo.firebox.test,2025:alerts", "Demo 9-1-1 alerts", "Demo 9-1-1", "https://alerts.example/alerts")
    return AlertService(manager, feed, clock=PosixClock())


def build(tmp_path: Path, *, source: ResilienceSource | None = None, service: AlertService | None = None) -> dict[str, Any]:
    audit = ConsoleAudit(tmp_path / "audit.db")
    clock = Clock()
    app = console_app(cad=small_cad(at=clock.now), users=USERS, audit=audit, clock=clock, cad_poll_s=None,
                      resilience=source, alerts=AlertDesk(service) if service is not None else None)  # fmt: skip
    return {"app": app, "audit": audit}


async def signed_in(app: Any, name: str) -> tuple[Any, str]:
    c = client(app)
    r = await c.post("/signin", data={"user": name, "password": PW})
    assert r.status_code == 303, r.text
    return c, (await c.get("/api/state")).json()["user"]["csrf"]


def detector_source(h: Harness, worklist: Worklist) -> ResilienceSource:
    return ResilienceSource(
        outages=lambda: {"current": [o.as_dict() for o in h.detector.outages()],
                         "recent": [o.as_dict() for o in reversed(h.detector.recent)]},
        states=lambda: [n.as_dict() for n in h.detector.states.values()],
        worklist=lambda: {"pending": len(worklist.pending()), "total": len(worklist.entries())},
    )  # fmt: skip


async def test_the_state_view_shows_an_outage_from_suspected_to_cleared_and_the_worklist(tmp_path: Path) -> None:
    h = Harness()
    worklist = Worklist()
    c_app = build(tmp_path, source=detector_source(h, worklist))
    h.round()
    silent = {"c": ProbeAnswer(200, "OK", "<sip:psap-a@127.0.0.1:5099>")}  # c silent: its alternate answers
    sue, _ = await signed_in(c_app["app"], "sue")
    ann, _ = await signed_in(c_app["app"], "ann")
    async with aclosing(sue), aclosing(ann):
        page = await sue.get("/outages")
        assert page.status_code == 200 and 'id="no-outage"' in page.text
        h.round(silent)
        frag = (await sue.get("/fragments/outages")).text
        assert 'data-key="c" data-state="suspected"' in frag and "answered by another PSAP instead" in frag, frag
        h.round(silent)
        worklist.add("call-1", WorklistReason.FAILED, T0, callback="tel:+12005550100", location=None, owner="c")
        frag = (await sue.get("/fragments/outages")).text
        assert 'data-key="c" data-state="confirmed"' in frag
        assert '<span class="n big-n" id="worklist-pending">1</span>' in frag
        # The supervisor's statistics page carries the same live part; the nav links to it.
        sv = (await sue.get("/supervisor")).text
        assert 'data-live="outages"' in sv and 'href="/outages"' in sv and 'href="/alerts"' in sv
        # A call-taker sees neither (and the refusal is audited).
        is_problem(await ann.get("/outages"), 403, "may not view statistics")
        is_problem(await ann.get("/fragments/outages"), 403)
        assert 'href="/outages"' not in (await ann.get("/")).text
        h.round()
        h.round()
        frag = (await sue.get("/fragments/outages")).text
        assert 'id="no-outage"' in frag
        assert 'id="recent-outages"' in frag and 'data-key="c" data-state="cleared"' in frag
    assert [e.outcome for e in c_app["audit"].entries(user="ann")].count("denied: role 'call-taker' may not view statistics") == 2


async def test_without_a_monitor_or_alerting_the_pages_say_so(tmp_path: Path) -> None:
    c_app = build(tmp_path)
    sue, _ = await signed_in(c_app["app"], "sue")
    async with aclosing(sue):
        assert 'id="no-monitor"' in (await sue.get("/outages")).text
        assert 'id="no-alerting"' in (await sue.get("/alerts")).text
        r = await sue.post("/alerts/X/approve", json={}, headers={"X-CSRF-Token": (await sue.get("/api/state")).json()["user"]["csrf"],
                                                                   "Accept": "application/json"})  # fmt: skip
        is_problem(r, 503, "no public alerts")


async def test_two_person_approval_from_the_console_is_audited_and_sends(tmp_path: Path, area: AlertArea) -> None:
    svc = alerting(area, two_person=True)
    c_app = build(tmp_path, service=svc)
    psap = next(iter(area.psaps))
    (draft,) = await svc.on_outages([outage("o1", "psap", psap)])
    json_ = {"Accept": "application/json"}
    sue, sue_csrf = await signed_in(c_app["app"], "sue")
    sam, sam_csrf = await signed_in(c_app["app"], "sam")
    ann, ann_csrf = await signed_in(c_app["app"], "ann")
    ada, _ = await signed_in(c_app["app"], "ada")
    async with aclosing(sue), aclosing(sam), aclosing(ann), aclosing(ada):
        page = (await sue.get("/alerts")).text
        assert f'data-id="{draft.id}"' in page and "Two-person rule" in page
        town_names = sorted(area.towns[t].title for t in draft.towns)
        assert all(n in page for n in town_names)
        assert 'lang="en-US"' in page and 'lang="es-US"' in page
        for info in draft.alert.infos:
            short, long_ = info.parameter("CMAMtext"), info.parameter("CMAMlongtext")
            assert short and len(short) <= 90 and long_ and len(long_) <= 360
            assert f"({len(short)}/90)" in page and f"({len(long_)}/360)" in page
        # Neither a call-taker nor an administrator approves; the page is refused too.
        is_problem(await ann.post(f"/alerts/{draft.id}/approve", json={}, headers={"X-CSRF-Token": ann_csrf, **json_}), 403,
                   "may not approve public alerts")  # fmt: skip
        is_problem(await ada.get("/alerts"), 403, "may not approve public alerts")
        # The same-origin and token checks of every console POST.
        is_problem(await sue.post(f"/alerts/{draft.id}/approve", json={}, headers=json_), 403, "CSRF")
        is_problem(await sue.post(f"/alerts/{draft.id}/approve", json={},
                                  headers={"X-CSRF-Token": sue_csrf, "Origin": "http://evil.example", **json_}), 403)  # fmt: skip
        assert draft.approvals == []

        first = await sue.post(f"/alerts/{draft.id}/approve", json={}, headers={"X-CSRF-Token": sue_csrf, **json_})
        assert first.status_code == 200, first.text
        assert first.json()["alert"]["state"] == "draft" and first.json()["alert"]["approvals"] == ["sue"]
        again = await sue.post(f"/alerts/{draft.id}/approve", json={}, headers={"X-CSRF-Token": sue_csrf, **json_})
        is_problem(again, 409, "a second, different person must approve")
        assert svc.feed.to_xml(svc.clock()).count(draft.id.encode()) == 0  # nothing out yet
        # A plain form (no script) is sent back to the alerts page.
        second = await sam.post(f"/alerts/{draft.id}/approve", data={"csrf": sam_csrf})
        assert second.status_code == 303 and second.headers["location"] == "/alerts"
        assert draft.state is DraftState.SENT and draft.approvals == ["sue", "sam"]
        assert draft.id.encode() in svc.feed.to_xml(svc.clock())
        decided = (await sue.get("/fragments/alerts")).text
        assert 'id="no-pending"' in decided and f'<tr data-id="{draft.id}">' in decided
        missing = await sue.post("/alerts/NOPE/approve", json={}, headers={"X-CSRF-Token": sue_csrf, **json_})
        is_problem(missing, 404, "no alert draft 'NOPE'")
    audit = [(e.user, e.target, e.outcome) for e in reversed(c_app["audit"].entries(action="alert approve"))]
    assert audit == [
        ("sue", draft.id, "ok"),
        ("sue", draft.id, f"failed: sue already approved draft {draft.id}; a second, different person must approve"),
        ("sam", draft.id, "ok"),
        ("sue", "NOPE", "failed: no such draft"),
    ]
    refused = [e for e in c_app["audit"].entries() if e.outcome.startswith("denied")]
    assert {(e.user, e.action, e.outcome.split(":")[0]) for e in refused} == {
        ("ann", f"/alerts/{draft.id}/approve", "denied"), ("ada", "/alerts", "denied"),
        ("sue", f"/alerts/{draft.id}/approve", "denied"),
    }


async def test_a_rejection_names_its_reason_in_the_audit_and_cannot_be_approved_after(tmp_path: Path, area: AlertArea) -> None:
    svc = alerting(area, two_person=False)
    c_app = build(tmp_path, service=svc)
    (draft,) = await svc.on_outages([outage("o1", "psap", next(iter(area.psaps)))])
    sue, csrf = await signed_in(c_app["app"], "sue")
    headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    async with aclosing(sue):
        r = await sue.post(f"/alerts/{draft.id}/reject", json={"reason": "probe artefact, PSAP confirmed up by phone"}, headers=headers)
        assert r.status_code == 200 and r.json()["alert"]["state"] == "rejected"
        is_problem(await sue.post(f"/alerts/{draft.id}/approve", json={}, headers=headers), 409, "is rejected")
    (entry,) = c_app["audit"].entries(action="alert reject")
    assert entry.target == draft.id and entry.outcome == "ok"
    assert entry.detail["reason"] == "probe artefact, PSAP confirmed up by phone"
    assert draft.transitions[-1].by == "sue"


async def test_poll_publishes_outage_worklist_and_alert_events(area: AlertArea) -> None:
    h = Harness()
    worklist = Worklist()
    svc = alerting(area, two_person=False)
    hub = LiveHub()
    task = asyncio.create_task(poll_resilience(detector_source(h, worklist), AlertDesk(svc), hub, 0.01))
    kinds: list[str] = []
    client_ = hub.connect("psap-01", None)

    async def next_kind() -> str:
        ev = await asyncio.wait_for(client_.queue.get(), timeout=10)
        assert ev is not None
        return ev.kind

    try:
        await asyncio.sleep(0.05)  # the first look is the baseline: no event
        assert hub.seq == 0
        h.round({"c": ProbeAnswer(200, "OK", "<sip:psap-a@127.0.0.1:5099>")})
        kinds.append(await next_kind())
        worklist.add("call-1", WorklistReason.FAILED, T0, callback=None, location=None, owner="c")
        kinds.append(await next_kind())
        await svc.on_outages([outage("o1", "psap", next(iter(area.psaps)))])
        kinds.append(await next_kind())
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert kinds == ["outage", "worklist", "alert"]
