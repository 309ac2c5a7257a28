"""The public and the old channels during an outage replay (issue 7, "What it must show"): in
``ma-2024-firewall`` the first CAP alert draft exists within 60 s of detection, the public
status page shows the affected towns within 10 s, and fire alarm boxes keep creating CAD
incidents throughout.

``PublicChannelProbe`` measures this from the outside, the way the public and a box circuit
see it, over HTTP on 127.0.0.1:

* the status page's JSON (``GET /status/status.json``, with ``If-None-Match``: the page is
  cacheable, a poll costs a 304 while nothing changes) every ``poll`` seconds: the first time
  every town the detected outage affects is shown other than *working*;
* the alert list (``GET /alerts``) every ``poll`` seconds: the first time a draft exists;
* a box alarm (``POST /boxes/{number}/alarm``, a modern addressable box) every
  ``box_period`` seconds, a different box each time (a second alarm from one box is a
  repeat, not a new incident): each must answer 201 (an incident).

The scenario node is built as ``firebox demo`` builds it, but without call handling, so it
has no monitor element, status page, alerting or CAD. ``enable(path)`` adds them to the
deployment file (the monitor without test calls of its own: the runner's monitor does the
probing), and ``start`` hands the status board's and the alerts' listeners to the runner's
monitor, the one that sees the fault (it probes both ingress routes; a monitor of the node's
own would probe the BCF directly, behind the failed firewall).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = ["ALERT_WITHIN", "STATUS_WITHIN", "BoxAlarm", "PublicChannelProbe", "PublicFigures", "affected_towns", "public_rows"]

log = logging.getLogger(__name__)

#: Criteria of issue 7 for ``ma-2024-firewall``.
ALERT_WITHIN = 60.0
STATUS_WITHIN = 10.0


@dataclass(frozen=True, slots=True)
class BoxAlarm:
    """One alarm sent: when, which box, the HTTP status (201: a new incident), how long the
    answer took, and the incident id when there is one."""

    sent: float
    box: str
    status: int | None
    seconds: float
    incident: str | None = None
    detail: str = ""


@dataclass
class PublicFigures:
    """What the probe saw, JSON-ready (``as_dict``). Times in seconds from detection; None
    when it never happened (or nothing was detected)."""

    alert_draft_s: float | None
    alert_draft_id: str | None
    status_towns_s: float | None
    affected_towns: int
    towns_total: int
    status_polls: int
    status_errors: int
    boxes_sent: int
    boxes_incidents: int
    boxes_during_fault: int
    boxes_failed: list[dict[str, Any]]
    box_max_s: float | None
    criteria: dict[str, bool] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def affected_towns(outage: dict[str, Any] | None, towns: dict[str, str], regions: dict[str, str] | None = None,
                   element_psaps: dict[str, Iterable[str]] | None = None) -> set[str]:  # fmt: skip
    """The towns (id -> its PSAP id in ``towns``) an outage reaches, as the status board reads
    it (``firebox.alerting.status``): a PSAP its towns, a region those of its PSAPs, a
    statewide outage every town, an element those of the PSAPs it serves (every town when
    it is not known: a failing ingress can reach any caller)."""
    if outage is None:
        return set()
    scope, key = outage.get("scope"), str(outage.get("key"))
    if scope == "psap":
        return {t for t, p in towns.items() if p == key}
    if scope == "region":
        psaps = {p for p, r in (regions or {}).items() if r == key}
        return {t for t, p in towns.items() if p in psaps}
    if scope == "element" and element_psaps and key in element_psaps:
        served = set(element_psaps[key])
        return {t for t, p in towns.items() if p in served}
    return set(towns)


class PublicChannelProbe:
    """Polls the status page and the alert list and sends box alarms, from ``start`` to
    ``stop``; ``figures`` reads the result against the detection."""

    def __init__(self, base_url: str, *, poll: float = 0.25, box_period: float = 1.0,
                 clock: Callable[[], float] = time.time, timeout: float = 5.0) -> None:  # fmt: skip
        if poll <= 0 or box_period <= 0:
            raise ValueError("poll and box_period must be > 0")
        self.base_url = base_url.rstrip("/")
        self.poll = poll
        self.box_period = box_period
        self.clock = clock
        self.timeout = timeout
        #: (time, town ids not shown working) at each change of the status document
        self.status: list[tuple[float, frozenset[str]]] = []
        #: town id -> its PSAP id, from the first status document
        self.towns: dict[str, str] = {}
        self.status_polls = 0
        self.status_errors = 0
        #: draft id -> (first seen, the draft as listed)
        self.drafts: dict[str, tuple[float, dict[str, Any]]] = {}
        self.alarms: list[BoxAlarm] = []
        self.boxes: list[str] = []
        self._http: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- the deployment ------------------------------------------------------------------

    @staticmethod
    def enable(path: Path, *, state_same: str | None = "033000") -> str:
        """Add the monitor (no test calls of its own), the status page (no gateway checks),
        public alerting and the CAD with the demo's stations and boxes to the demo
        deployment file at ``path``; the HTTP base URL they are served on."""
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        els = data["elements"]
        listen = els["web"]["listen"]
        els.setdefault("monitor", {"listen": listen, "probe_period_seconds": 0})
        els.setdefault("status_page", {"listen": listen, "check_period_seconds": 0})
        alerting: dict[str, Any] = {"listen": listen}
        if state_same is not None:
            alerting["state_same"] = state_same  # the demo's coordinates lie in New Hampshire
        els.setdefault("alerting", alerting)
        base = path.parent
        if "cad" not in els and (base / "boxes.geojson").exists():
            cad: dict[str, Any] = {"listen": listen, "store": "var/cad.db", "boxes": "boxes.geojson"}
            if (base / "stations.geojson").exists():
                cad["stations"] = "stations.geojson"
            els["cad"] = cad
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return f"http://{listen}"

    # --- running -------------------------------------------------------------------------

    async def start(self, node: Any, monitor: Any) -> None:
        """Feed the node's status board and alerts from ``monitor`` (the runner's), then
        start polling and sending alarms."""
        own = getattr(node, "monitor", None)
        if own is not None and own is not monitor:
            from firebox.monitor.routing import OutageRouting

            # The node's monitor runs no test calls here; it stops, and what listened to it
            # (the status board, the alerts: not its routing, the runner steers routing)
            # listens to the runner's monitor instead.
            await own.stop(drain=0.0)
            monitor.listeners.extend(x for x in own.listeners if not isinstance(x, OutageRouting))
            node.monitor = monitor
        cad = getattr(node, "cad", None)
        # The box numbers are the deployment's (its boxes file); the alarms go over HTTP.
        self.boxes = sorted(cad.boxes) if cad is not None else []
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout)
        self._tasks = [asyncio.create_task(self._poll_status(), name="public-status"),
                       asyncio.create_task(self._poll_alerts(), name="public-alerts")]  # fmt: skip
        if self.boxes:
            self._tasks.append(asyncio.create_task(self._send_alarms(), name="public-boxes"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _poll_status(self) -> None:
        assert self._http is not None
        etag: str | None = None
        while True:
            self.status_polls += 1
            try:
                reply = await self._http.get("/status/status.json", headers={"If-None-Match": etag} if etag else {})
                at = self.clock()
                if reply.status_code == 200:
                    etag = reply.headers.get("etag")
                    self._status_document(at, reply.json())
                elif reply.status_code != 304:
                    self.status_errors += 1
            except (httpx.HTTPError, ValueError):
                self.status_errors += 1
            await asyncio.sleep(self.poll)

    def _status_document(self, at: float, doc: dict[str, Any]) -> None:
        towns = doc.get("towns") or []
        if not self.towns:
            self.towns = {str(t["id"]): str((t.get("psap") or {}).get("id") or "") for t in towns}
        not_working = frozenset(str(t["id"]) for t in towns if t.get("status") != "working")
        if not self.status or self.status[-1][1] != not_working:
            self.status.append((at, not_working))

    async def _poll_alerts(self) -> None:
        assert self._http is not None
        while True:
            try:
                reply = await self._http.get("/alerts")
                at = self.clock()
                if reply.status_code == 200:
                    for draft in reply.json().get("alerts", []):
                        self.drafts.setdefault(str(draft.get("id")), (at, draft))
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(self.poll)

    async def _send_alarms(self) -> None:
        assert self._http is not None
        n = 0
        while True:
            box = self.boxes[n % len(self.boxes)]
            n += 1
            sent = self.clock()
            t0 = time.monotonic()
            try:
                reply = await self._http.post(f"/boxes/{box}/alarm")
                body = reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
                incident = body.get("incident") if isinstance(body, dict) else None
                self.alarms.append(BoxAlarm(sent, box, reply.status_code, time.monotonic() - t0,
                                            str(incident) if incident else None, str(body)[:200]))  # fmt: skip
            except httpx.HTTPError as exc:
                self.alarms.append(BoxAlarm(sent, box, None, time.monotonic() - t0, None, f"{type(exc).__name__}: {exc}"))
            await asyncio.sleep(self.box_period)

    # --- the figures ---------------------------------------------------------------------

    def figures(self, *, fault_at: float | None, detected_at: float | None, healed_at: float | None,
                detected: dict[str, Any] | None, regions: dict[str, str] | None = None) -> PublicFigures:  # fmt: skip
        affected = affected_towns(detected, self.towns, regions)
        status_s = None
        if detected_at is not None and affected:
            shown = next((at for at, down in self.status if at >= (fault_at or detected_at) and affected <= down), None)
            status_s = None if shown is None else max(0.0, shown - detected_at)
        alert_s = alert_id = None
        if detected_at is not None:
            after = sorted((at, i) for i, (at, _d) in self.drafts.items() if fault_at is None or at >= fault_at)
            if after:
                alert_s, alert_id = max(0.0, after[0][0] - detected_at), after[0][1]
        failed = [asdict(a) for a in self.alarms if a.status != 201]
        during = [a for a in self.alarms if fault_at is not None and a.sent >= fault_at
                  and (healed_at is None or a.sent <= healed_at)]  # fmt: skip
        figures = PublicFigures(
            alert_draft_s=alert_s, alert_draft_id=alert_id, status_towns_s=status_s, affected_towns=len(affected),
            towns_total=len(self.towns), status_polls=self.status_polls, status_errors=self.status_errors,
            boxes_sent=len(self.alarms), boxes_incidents=sum(1 for a in self.alarms if a.status == 201),
            boxes_during_fault=len(during), boxes_failed=failed,
            box_max_s=max((a.seconds for a in self.alarms), default=None),
        )  # fmt: skip
        figures.criteria = {
            "alert_draft_within_60s": alert_s is not None and alert_s <= ALERT_WITHIN,
            "status_page_within_10s": status_s is not None and status_s <= STATUS_WITHIN,
            "box_incidents_throughout": bool(during) and not failed,
        }
        return figures


def public_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The public channels' figures as rows of the HTML report's table (none when the run
    did not measure them)."""
    pub = (result.get("figures") or {}).get("public")
    if not pub:
        return []

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    return [
        ("first alert draft after detection", secs(pub["alert_draft_s"])),
        (f"status page shows the {pub['affected_towns']} affected towns after detection", secs(pub["status_towns_s"])),
        ("box alarms sent / incidents created (during the fault)",
         f"{pub['boxes_sent']} / {pub['boxes_incidents']} ({pub['boxes_during_fault']} during)"),
    ]  # fmt: skip
