"""Publication of CAP messages (firebox.alerting.publish) and the HTTP views
(firebox.alerting.http): Atom feed, webhook, IPAWS spool, i3 log events, approvals."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firebox import jws
from firebox.alerting.drafts import AlertArea, AlertManager, AlertPolicy, DraftState
from firebox.alerting.http import create_alerting_app
from firebox.alerting.publish import (
    ATOM_NS,
    AlertLogger,
    AlertService,
    AtomFeed,
    SpoolIpawsAdapter,
    WebhookPublisher,
)
from firebox.cap import dsig, ipaws
from firebox.cap.message import CAP_NS, parse_cap
from firebox.demo.state import generate_state
from firebox.logging.sender import LogSender
from firebox.logging.service import create_app as create_logging_app
from firebox.logging.store import Filter, open_store
from test_alerting_drafts import SENDER, T0, outage
from test_cap_message import self_signed
from test_ecrf_http import Servers

A = f"{{{ATOM_NS}}}"


@pytest.fixture
async def servers():
    s = Servers()
    yield s
    await s.stop()


@pytest.fixture(scope="module")
def area() -> AlertArea:
    state = generate_state(seed=911, n_towns=60)
    return AlertArea.from_demo(state, state_same="033000", regions={p.id: p.county for p in state.psaps})


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return self_signed(rsa.generate_private_key(65537, 2048))


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def receiver(statuses: list[int]) -> tuple[Starlette, list[tuple[str, bytes]]]:
    """A webhook receiver answering ``statuses`` in turn (then 200), keeping what it got."""
    got: list[tuple[str, bytes]] = []

    async def hook(request: Request) -> Response:
        got.append((request.headers.get("content-type", ""), await request.body()))
        return Response(status_code=statuses.pop(0) if statuses else 200)

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])]), got


def service(area, keys, tmp_path, clock, **policy) -> AlertService:
    key_pem, cert_pem = keys
    manager = AlertManager(area, AlertPolicy(sender=SENDER, **policy),
                           signer=partial(dsig.sign, key_pem=key_pem, cert_pem=cert_pem))  # fmt: skip
    feed = AtomFeed("tag:demo.firebox.test,2025:alerts", "Demo State 9-1-1 alerts", "Demo State 9-1-1",
                    "https://alerts.demo.firebox.test/alerts")  # fmt: skip
    return AlertService(manager, feed, ipaws=SpoolIpawsAdapter(tmp_path / "ipaws", fsync=False), clock=clock)


async def test_every_channel_gets_each_message_and_the_feed_verifies(area, keys, tmp_path, servers):
    app, got = receiver([503])  # the first POST fails: retried
    url = (await servers.start(app)).removesuffix("/lost") + "/hook"
    store = open_store(str(tmp_path / "logging.db"))
    try:
        logging_url = (await servers.start(create_logging_app(store), lifespan="off")).removesuffix("/lost")
        sender = LogSender([logging_url], str(tmp_path / "spool"), None, "alerts.demo.firebox.test", fsync=False)
        clock = Clock(T0)
        svc = service(area, keys, tmp_path, clock)
        svc.webhooks.append(WebhookPublisher(url, attempts=3, backoff=0.01))
        svc.logger = AlertLogger(sender, element_id="alerts.demo.firebox.test", agency_id="demo.firebox.test")

        (draft,) = await svc.on_outages([outage("p1", "psap", "psap-01")])
        assert draft.state is DraftState.DRAFT and svc.deliveries == []  # nothing leaves unapproved
        clock.t += 40
        await svc.approve(draft.id, "alice")
        clock.t += 600
        (cancel,) = await svc.on_outages([outage("p1", "psap", "psap-01", "cleared")])
        await svc.approve(cancel.id, "bob")
        assert draft.state is cancel.state is DraftState.SENT

        # Webhook: both messages, verbatim, after one retry of the first.
        assert [body for _, body in got] == [draft.xml, draft.xml, cancel.xml]
        assert got[0][0] == "application/xml"
        hook = [d for d in svc.deliveries if d.channel.startswith("webhook")]
        assert [(d.ok, d.attempts) for d in hook] == [(True, 2), (True, 1)]
        # IPAWS spool: one file per message, the signed bytes.
        spooled = {p.name: p.read_bytes() for p in (tmp_path / "ipaws").iterdir()}
        assert spooled == {f"{draft.id}.xml": draft.xml, f"{cancel.id}.xml": cancel.xml}
        assert not list((tmp_path / "ipaws").glob("*.tmp"))
        # Atom: newest first, each entry's CAP message inline and still verifying.
        feed = etree.fromstring(svc.feed.to_xml(clock()))
        entries = feed.findall(A + "entry")
        assert [e.find(A + "category").get("term") for e in entries] == ["Cancel", "Alert"]
        assert feed.find(A + "link").get("rel") == "self" and feed.findtext(A + "id")
        for entry, d in zip(entries, (cancel, draft), strict=True):
            inline = entry.find(A + "content")[0]
            assert inline.tag == f"{{{CAP_NS}}}alert" and entry.find(A + "content").get("type") == "application/xml"
            assert parse_cap(dsig.verify(etree.tostring(inline), keys[1])).identifier == d.id
            assert entry.find(A + "link").get("href") == f"https://alerts.demo.firebox.test/alerts/{d.id}"
            assert entry.findtext(A + "id") == f"tag:demo.firebox.test,2025-06-15:cap:{d.id}"
        # i3 log: one event per message, with the CAP XML and where it went.
        await sender.drain(timeout=10)
        await sender.aclose()
        events = [jws.verify(e.jws.encode(), keys=[], allow_none=True).payload
                  for e in store.query(Filter(), limit=10).items]  # fmt: skip
        assert [e["logEventType"] for e in events] == ["ServiceStateChangeLogEvent"] * 2
        caps = [e["extension"]["capAlert"] for e in events]
        assert [c["identifier"] for c in caps] == [draft.id, cancel.id]
        assert caps[1]["msgType"] == "Cancel" and caps[1]["references"] == [str(parse_cap(draft.xml).reference)]
        assert caps[0]["xml"].encode() == draft.xml and caps[0]["approvedBy"] == ["alice"]
        assert {d["channel"] for d in caps[0]["deliveries"]} == {"atom", f"webhook {url}", "ipaws"}
    finally:
        store.close()


async def test_a_refused_webhook_is_not_retried_and_does_not_stop_the_others(area, keys, tmp_path, servers):
    app, got = receiver([422])
    url = (await servers.start(app)).removesuffix("/lost") + "/hook"
    svc = service(area, keys, tmp_path, Clock(T0))
    svc.webhooks.append(WebhookPublisher(url, attempts=3, backoff=0.01))
    (draft,) = await svc.on_outages([outage("p1", "psap", "psap-01")])
    await svc.approve(draft.id, "alice")
    assert len(got) == 1 and draft.state is DraftState.SENT
    failed = next(d for d in svc.deliveries if d.channel.startswith("webhook"))
    assert (failed.ok, failed.detail, failed.attempts) == (False, "HTTP 422", 1)
    assert "FAILED HTTP 422" in draft.transitions[-1].note
    assert len(list((tmp_path / "ipaws").iterdir())) == 1 and svc.feed.entries


async def test_the_monitor_listener_batches_one_detector_step(area, keys, tmp_path):
    svc = service(area, keys, tmp_path, Clock(T0), auto_send_statewide=True)
    svc.listener(outage("s1", "statewide", "statewide"))
    await svc.settle()
    (first,) = svc.manager.drafts.values()
    assert first.state is DraftState.SENT and first.statewide
    # One detector step: the statewide outage clears and a regional one is confirmed.
    svc.listener(outage("s1", "statewide", "statewide", "cleared"))
    svc.listener(outage("r1", "region", area.regions["psap-01"]))
    await svc.settle()
    msgs = sorted(svc.manager.drafts.values(), key=lambda d: d.created)
    assert [d.msg_type.value for d in msgs] == ["Alert", "Update"]  # a narrowing, not Cancel + Alert
    assert msgs[1].state is DraftState.SENT and not msgs[1].statewide
    await svc.aclose()


async def test_http_views(area, keys, tmp_path):
    clock = Clock(T0)
    svc = service(area, keys, tmp_path, clock, two_person=True)
    app = create_alerting_app(svc)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        (draft,) = await svc.on_outages([outage("p1", "psap", "psap-01")])
        listing = (await http.get("/alerts")).json()["alerts"]
        assert [a["id"] for a in listing] == [draft.id] and listing[0]["state"] == "draft"
        preview = await http.get(f"/alerts/{draft.id}")
        assert preview.headers["content-type"].startswith("application/xml")
        assert ipaws.validate(parse_cap(preview.content)) == []

        bad = await http.post(f"/alerts/{draft.id}/approve", json={})
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
        assert bad.json()["errors"][0]["member"] == "user"
        assert (await http.post(f"/alerts/{draft.id}/approve", content=b"{")).status_code == 400
        missing = await http.post("/alerts/NOPE/approve", json={"user": "alice"})
        assert missing.status_code == 404 and "no alert 'NOPE'" in missing.json()["detail"]
        assert (await http.get("/alerts/NOPE")).status_code == 404
        first = await http.post(f"/alerts/{draft.id}/approve", json={"user": "alice"})
        assert first.status_code == 200 and first.json()["state"] == "draft"
        again = await http.post(f"/alerts/{draft.id}/approve", json={"user": "alice"})
        assert again.status_code == 409 and "different person" in again.json()["detail"]
        done = await http.post(f"/alerts/{draft.id}/approve", json={"user": "bob"})
        assert done.json()["state"] == "sent" and done.json()["approvals"] == ["alice", "bob"]
        assert (await http.get(f"/alerts/{draft.id}")).content == draft.xml  # the signed bytes

        feed = await http.get("/alerts/feed")
        assert feed.headers["content-type"].startswith("application/atom+xml")
        assert draft.id.encode() in feed.content
        assert (await http.get("/alerts?state=sent")).json()["alerts"][0]["id"] == draft.id
        wrong = await http.get("/alerts?state=gone")
        assert wrong.status_code == 400 and wrong.json()["errors"][0]["member"] == "state"

        clock.t += 60
        (cancel,) = await svc.on_outages([outage("p1", "psap", "psap-01", "cleared")])
        rejected = await http.post(f"/alerts/{cancel.id}/reject", json={"user": "carol", "reason": "probe noise"})
        assert rejected.json()["state"] == "rejected"
        assert (await http.post(f"/alerts/{cancel.id}/approve", json={"user": "bob"})).status_code == 409
        assert (await http.delete("/alerts")).status_code == 405
