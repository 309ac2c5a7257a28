"""The monitor over HTTP (Starlette):

* ``GET /monitor/outages``: current and recent outages (JSON); ``?state=suspected|confirmed``
  keeps the current ones in that state.
* ``GET /monitor/figures``: the watch's figures (``?window=`` seconds, default the
  monitor's) and the latest probe results.
* ``GET /metrics``: Prometheus text format, from a registry of the monitor's own (never the
  process-wide default one), collected at each scrape.

A bad query parameter is an RFC 9457 problem (``application/problem+json``) naming it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firebox import restapi
from firebox.monitor.detector import OutageState
from firebox.monitor.watch import Metric

__all__ = ["MonitorCollector", "create_monitor_app", "monitor_routes"]

log = logging.getLogger(__name__)

MAX_WINDOW = 86_400.0


def _problem(status: int, title: str, member: str, detail: str) -> JSONResponse:
    log.info("monitor HTTP %d: %s: %s", status, member, detail)
    return restapi.problem(status, title, [restapi.Problem(member, detail)])


class MonitorCollector(Collector):
    """The monitor's figures as Prometheus metrics, read at each scrape."""

    def __init__(self, monitor: Callable[[], Any]) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Any]:
        m = self.monitor()
        if m is None:
            return
        now = m.clock()
        calls = CounterMetricFamily("firebox_monitor_calls", "Calls seen in the i3 log events, by metric and scope",
                                    labels=["metric", "scope", "key"])  # fmt: skip
        for (metric, scope, key), n in sorted(m.watch.totals.items()):
            if metric in Metric.__members__.values():
                calls.add_metric([metric, scope, key], n)
        yield calls
        errors = CounterMetricFamily("firebox_monitor_sip_errors", "Final SIP error answers to INVITEs, by side and status",
                                     labels=["side", "status"])  # fmt: skip
        for (side, status), n in sorted(m.watch.errors_total.items()):
            errors.add_metric([side, str(status)], n)
        yield errors
        figures = m.watch.figures(now)
        ratio = GaugeMetricFamily("firebox_monitor_answer_ratio", "Answer ratio over the window (answered / settled)",
                                  labels=["scope", "key"])  # fmt: skip
        for scope, keys in sorted(figures.scopes.items()):
            for key, counts in sorted(keys.items()):
                if counts.answer_ratio is not None:
                    ratio.add_metric([scope.value, key], counts.answer_ratio)
        yield ratio
        volume = GaugeMetricFamily("firebox_monitor_volume", "Calls entered over the volume window, observed and expected",
                                   labels=["kind"])  # fmt: skip
        volume.add_metric(["observed"], figures.volume.observed)
        volume.add_metric(["expected"], figures.volume.expected)
        yield volume
        probes = CounterMetricFamily("firebox_monitor_probes", "Test calls (urn:service:test.sos) by result",
                                     labels=["ingress", "psap", "outcome"])  # fmt: skip
        for (ingress, psap, outcome), n in sorted(m.probe_counts.items()):
            probes.add_metric([ingress, psap, outcome], n)
        yield probes
        outage = GaugeMetricFamily("firebox_monitor_outage", "Open outages (1), by scope, key and state",
                                   labels=["scope", "key", "state"])  # fmt: skip
        for o in m.detector.outages():
            outage.add_metric([o.scope.value, o.key, o.state.value], 1)
        yield outage
        affected = GaugeMetricFamily("firebox_monitor_outage_calls_affected", "Calls affected by each open outage",
                                     labels=["scope", "key"])  # fmt: skip
        for o in m.detector.outages():
            affected.add_metric([o.scope.value, o.key], o.calls_affected)
        yield affected
        sent = CounterMetricFamily("firebox_monitor_notifications", "Outage notifications, by channel and result",
                                   labels=["channel", "ok"])  # fmt: skip
        tally: dict[tuple[str, str], int] = {}
        for d in m.notifier.deliveries:
            tally[(d.channel, str(d.ok).lower())] = tally.get((d.channel, str(d.ok).lower()), 0) + 1
        for labels, n in sorted(tally.items()):
            sent.add_metric(list(labels), n)
        yield sent


def monitor_routes(monitor: Any) -> list[Route]:
    """The monitor's HTTP views. ``monitor``: the ``Monitor``, or a function giving it (None
    until the node has started it: the views then answer 503)."""
    current: Callable[[], Any] = monitor if callable(monitor) else (lambda: monitor)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(current))

    def started() -> Any:
        m = current()
        if m is None:
            raise _NotStarted
        return m

    async def outages(request: Request) -> Response:
        state = request.query_params.get("state")
        body = started().outages()
        if state is not None:
            allowed = [s.value for s in OutageState if s is not OutageState.CLEARED]
            if state not in allowed:
                return _problem(400, "Bad query parameter", "state", f"must be one of {', '.join(allowed)}, not {state!r}")
            body["current"] = [o for o in body["current"] if o["state"] == state]
        return JSONResponse(body)

    async def figures(request: Request) -> Response:
        raw = request.query_params.get("window")
        window = None
        if raw is not None:
            try:
                window = float(raw)
            except ValueError:
                return _problem(400, "Bad query parameter", "window", f"must be a number of seconds, not {raw!r}")
            if not math.isfinite(window) or not 0 < window <= MAX_WINDOW:
                return _problem(400, "Bad query parameter", "window", f"must be in (0, {MAX_WINDOW:g}] seconds, not {raw}")
        return JSONResponse(started().figures(window))

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def guarded(view: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            try:
                return await view(request)
            except _NotStarted:
                return _problem(503, "Monitor not started", "", "the monitor starts with the SIP elements")

        return run

    return [
        Route("/monitor/outages", guarded(outages), methods=["GET"]),
        Route("/monitor/figures", guarded(figures), methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


class _NotStarted(Exception):
    pass


def create_monitor_app(monitor: Any) -> Starlette:
    return Starlette(routes=monitor_routes(monitor))
