"""Outage notification against real receivers on 127.0.0.1 (a uvicorn webhook that fails
before it succeeds, an aiosmtpd mailbox), and the monitor's HTTP view (Starlette through
httpx's ASGI transport): outages, figures, Prometheus metrics, RFC 9457 problems."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_monitor_detector import QUEUES, REGIONS, Harness
from test_monitor_e2e import Mailbox, free_port, until
from test_monitor_watch import T0, Call

from firebox.monitor.detector import UpdateKind
from firebox.monitor.http import create_monitor_app
from firebox.monitor.notify import Notifier, NotifyConfig, email_text, notice
from firebox.monitor.probes import ProbeAnswer
from firebox.monitor.service import Monitor, MonitorConfig


def outage_updates():
    """A real PSAP outage's updates: new, confirmed, cleared."""
    h = Harness()
    h.round()
    busy = {"c": ProbeAnswer(503, "Service Unavailable")}
    h.round(busy)
    h.round(busy)
    h.round()
    h.round()
    return h.updates


def test_the_notice_carries_the_fcc_fields():
    updates = outage_updates()
    assert [u.kind for u in updates] == [UpdateKind.NEW, UpdateKind.CONFIRMED, UpdateKind.CLEARED]
    config = NotifyConfig(contact={"name": "NOC", "phone": "+1 617 555 0100"})
    first, last = notice(updates[0], config), notice(updates[-1], config)
    assert (first["notification"], last["notification"]) == ("initial", "final")
    assert first["start"] and first["time_zone"] == "UTC" and first["scope"] == "psap" and first["area"] == "c"
    assert "SIP 503 Service Unavailable" in first["cause"]
    assert last["end"] and last["impact"] == "911 service to psap c restored"
    subject, text = email_text(first)
    assert subject.startswith("[911 outage initial] psap c: suspected since")
    assert "Contact: name NOC, phone +1 617 555 0100" in text


@pytest.fixture
async def flaky_hook():
    """A webhook that answers 503 to the first two POSTs of each outage event."""
    seen: list[dict] = []
    tries: dict[tuple[str, str], int] = {}

    async def hook(request: Request) -> JSONResponse:
        body = await request.json()
        key = (body["outage_id"], body["event"])
        tries[key] = tries.get(key, 0) + 1
        if tries[key] <= 2:
            return JSONResponse({"busy": True}, 503)
        seen.append(body)
        return JSONResponse({"ok": True})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/hook", hook, methods=["POST"])]), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))  # fmt: skip
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, "the webhook receiver")
    try:
        yield f"http://127.0.0.1:{port}/hook", seen
    finally:
        server.should_exit = True
        await task


async def test_webhook_retried_with_backoff_and_email_sent(flaky_hook):
    url, seen = flaky_hook
    mailbox = Mailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    notifier = Notifier(NotifyConfig(webhooks=(url, dead), emails=("psap-c@example.test", "state@example.test"),
                                     smtp=("127.0.0.1", smtp_port), attempts=3, backoff=0.05))  # fmt: skip
    try:
        for update in outage_updates():
            deliveries = await notifier.send(update)
            by = {d.target: d for d in deliveries}
            assert by[url].ok and by[url].attempts == 3  # 503, 503, 200
            assert not by[dead].ok and by[dead].attempts == 3 and "ConnectError" in by[dead].error  # bounded
            assert by["psap-c@example.test, state@example.test"].ok
    finally:
        await notifier.aclose()
        controller.stop()
    assert [b["event"] for b in seen] == ["new", "confirmed", "cleared"]
    assert len(mailbox.messages) == 3
    message = mailbox.messages[0]
    assert message["To"] == "psap-c@example.test, state@example.test"
    assert "[911 outage initial] psap c" in message["Subject"]
    parts = [p for p in message.walk() if p.get_content_type() == "application/json"]
    assert parts and b'"scope": "psap"' in parts[0].get_payload(decode=True)


async def test_smtp_down_is_a_failed_delivery_not_an_exception():
    notifier = Notifier(NotifyConfig(emails=("x@example.test",), smtp=("127.0.0.1", free_port()), attempts=2,
                                     backoff=0.01, timeout=1.0))  # fmt: skip
    (delivery,) = await notifier.send(outage_updates()[0])
    assert not delivery.ok and delivery.attempts == 2 and delivery.channel == "email"
    await notifier.aclose()


async def test_http_outages_figures_metrics_and_problems():
    monitor = Monitor(MonitorConfig(psaps=QUEUES, regions=REGIONS), clock=lambda: T0 + 10)
    c = Call("live-1")
    for e in (c.start(), c.invite(), c.route(QUEUES["a"]), c.response(200), c.end()):
        monitor.feed(e)
    monitor.state("queue", QUEUES["b"], "Full")  # suspected outage of PSAP b
    transport = httpx.ASGITransport(app=create_monitor_app(monitor))
    async with httpx.AsyncClient(transport=transport, base_url="http://monitor") as http:
        outages = (await http.get("/monitor/outages")).json()
        assert [(o["scope"], o["key"], o["state"]) for o in outages["current"]] == [("psap", "b", "suspected")]
        assert (await http.get("/monitor/outages", params={"state": "confirmed"})).json()["current"] == []
        figures = (await http.get("/monitor/figures", params={"window": "60"})).json()
        assert figures["window_seconds"] == 60 and figures["scopes"]["psap"]["a"]["answered"] == 1
        bad = await http.get("/monitor/figures", params={"window": "-3"})
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
        assert bad.json()["errors"] == [{"member": "window", "pointer": "/window", "detail": "must be in (0, 86400] seconds, not -3"}]
        bad = await http.get("/monitor/outages", params={"state": "gone"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["member"] == "state"
        metrics = await http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(metrics.text) for s in f.samples}  # fmt: skip
    assert samples[("firebox_monitor_calls_total", (("key", "a"), ("metric", "answered"), ("scope", "psap")))] == 1
    assert samples[("firebox_monitor_outage", (("key", "b"), ("scope", "psap"), ("state", "suspected")))] == 1
    assert samples[("firebox_monitor_answer_ratio", (("key", "all"), ("scope", "statewide")))] == 1.0
    # a registry of its own: nothing of the process-wide default registry
    assert "python_gc_objects_collected_total" not in metrics.text
