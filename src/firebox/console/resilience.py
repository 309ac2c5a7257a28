"""The console's supervisor / state view of outages (issue 6) and its public alert approval
(issue 7): pages, live fragments and actions, mounted by ``console_app`` next to its own.

Pages and actions (paths relative to the console's mount point)::

    GET  /outages                    outages now and recently, element / service / queue
                                     states, the callback worklist (``view statistics``)
    GET  /alerts                     CAP drafts waiting for a decision, recent decisions
                                     (``approve public alerts``)
    POST /alerts/{draft_id}/approve  approve (two different people when the policy says so)
    POST /alerts/{draft_id}/reject   {reason}
    GET  /fragments/outages|alerts   the parts the pages refresh live

The console reads the monitor and alerting only through narrow interfaces: a
``ResilienceSource`` (functions giving the monitor's outages, the states it follows and the
callback worklist's size: ``resilience_source(node)`` makes one from a running node) and an
``AlertDesk`` (``firebox.alerting.http``). ``poll_resilience`` watches both (cheaply, only
while a page is connected) and publishes ``outage``, ``worklist`` and ``alert`` events on the
console's live stream, so the pages update without reloading.

Every approval and rejection is audited with its draft, allowed or not, and goes through the
console's own checks (session, permission, CSRF token and origin).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firebox.console.auth import Permission, Session

log = logging.getLogger("firebox.console")

__all__ = ["ConsoleKit", "ResilienceSource", "poll_resilience", "resilience_routes", "resilience_source"]

#: Outage states in the order a supervisor reads them: what is down first.
_STATE_ORDER = {"confirmed": 0, "suspected": 1, "cleared": 2}


@dataclass(frozen=True, slots=True)
class ResilienceSource:
    """What the state view reads; each a function, None when the node has no such part.

    ``outages()``: ``{"current": [...], "recent": [...]}`` of ``Outage.as_dict()`` (the
    monitor's ``Monitor.outages()``), or None while the monitor is not running.
    ``states()``: element, service and queue states (``StateNote.as_dict()``: kind, id,
    state, since (POSIX seconds), usable). ``worklist()``: the callback worklist's counts,
    ``{"pending": n, "total": n}``."""

    outages: Callable[[], Mapping[str, Any] | None] | None = None
    states: Callable[[], Sequence[Mapping[str, Any]]] | None = None
    worklist: Callable[[], Mapping[str, int] | None] | None = None


def resilience_source(node: Any) -> ResilienceSource:
    """A ``ResilienceSource`` over a ``firebox.node.Node``, read when asked (its monitor and
    core start after the console is built)."""

    def outages() -> Mapping[str, Any] | None:
        return node.monitor.outages() if node.monitor is not None else None

    def states() -> list[Mapping[str, Any]]:
        if node.monitor is None:
            return []
        return [n.as_dict() for n in node.monitor.detector.states.values()]

    def worklist() -> Mapping[str, int] | None:
        if node.core is None:
            return None
        return {"pending": len(node.core.worklist.pending()), "total": len(node.core.worklist.entries())}

    return ResilienceSource(outages, states, worklist)


@dataclass(frozen=True, slots=True)
class ConsoleKit:
    """The console application's own plumbing, handed to these routes (``console_app``
    builds it): ``guarded(permission, action, html=)`` wraps an endpoint ``(request,
    session, doc)``; ``page(request, template, session, **ctx)`` renders; ``record(session,
    action, target, outcome, **detail)`` audits; ``done(request, payload, back=)`` answers a
    POST; ``one(doc, name, required=)`` reads a field; ``problem(status, title, errors)``
    is the exception the guard turns into an RFC 9457 answer; ``clock()`` the time."""

    guarded: Callable[..., Any]
    page: Callable[..., Response]
    record: Callable[..., None]
    done: Callable[..., Response]
    one: Callable[..., str | None]
    problem: type[Exception]
    clock: Callable[[], datetime]
    psap_name: Callable[[str], str]


# --- what the pages show ------------------------------------------------------------------------


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


def _ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return ""
    s = max(0, int((now - then).total_seconds()))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _hhmmss(then: datetime | None) -> str:
    return then.astimezone(UTC).strftime("%H:%M:%S") if then else ""


def outage_rows(outages: Sequence[Mapping[str, Any]], now: datetime, name: Callable[[str], str]) -> list[dict[str, Any]]:
    """Outages as table rows: scope, what (a PSAP by its name), state, since (and for how
    long), confirmed, ended, cause, calls affected; confirmed ones first. A malformed entry
    still gets a row (with what it has) rather than disappearing."""
    rows = []
    for o in outages:
        start, end = _parse(o.get("start")), _parse(o.get("end"))
        key = str(o.get("key", "?"))
        scope = str(o.get("scope", "?"))
        rows.append({
            "id": str(o.get("id", "")), "scope": scope, "key": key,
            "what": f"{name(key)} ({key})" if scope == "psap" and name(key) != key else key,
            "state": str(o.get("state", "?")), "since": _hhmmss(start), "for": _ago(start, end or now),
            "confirmed": _hhmmss(_parse(o.get("confirmed_at"))), "ended": _hhmmss(end),
            "cause": o.get("cause") or "not known yet", "calls_affected": int(o.get("calls_affected") or 0),
            "within": o.get("within"), "config_change": o.get("config_change"),
        })  # fmt: skip
    rows.sort(key=lambda r: (_STATE_ORDER.get(r["state"], 3), r["since"]))
    return rows


def state_rows(states: Sequence[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Element / service / queue states; the unusable ones first."""
    rows = []
    for s in states:
        since_raw = s.get("since")
        since = datetime.fromtimestamp(float(since_raw), UTC) if isinstance(since_raw, (int, float)) else _parse(str(since_raw or ""))
        rows.append({"kind": str(s.get("kind", "?")), "id": str(s.get("id", "?")), "state": str(s.get("state", "?")),
                     "usable": bool(s.get("usable", True)), "since": _hhmmss(since), "for": _ago(since, now)})  # fmt: skip
    rows.sort(key=lambda r: (r["usable"], r["kind"], r["id"]))
    return rows


def resilience_context(source: ResilienceSource, now: datetime, name: Callable[[str], str]) -> dict[str, Any]:
    """The state view's template context; each part says when it is not available."""
    doc = None
    if source.outages is not None:
        try:
            doc = source.outages()
        except Exception:  # noqa: BLE001 -- a broken source must not take the page down
            log.exception("console: reading the outages failed")
    states: Sequence[Mapping[str, Any]] = []
    if source.states is not None:
        try:
            states = source.states()
        except Exception:  # noqa: BLE001
            log.exception("console: reading the states failed")
    worklist = None
    if source.worklist is not None:
        try:
            worklist = source.worklist()
        except Exception:  # noqa: BLE001
            log.exception("console: reading the callback worklist failed")
    current = outage_rows(doc.get("current", []), now, name) if doc else []
    recent = outage_rows(doc.get("recent", []), now, name)[:20] if doc else []
    return {
        "monitor": doc is not None, "current": current, "recent": recent,
        "confirmed": sum(1 for r in current if r["state"] == "confirmed"),
        "states": state_rows(states, now), "worklist": worklist, "now": _hhmmss(now),
    }  # fmt: skip


def fingerprint(source: ResilienceSource) -> tuple[Any, Any]:
    """Changes when an outage opens, changes state, cause or calls affected, or clears; and
    when the worklist's size changes."""
    doc = source.outages() if source.outages is not None else None
    outages = tuple(
        (o.get("id"), o.get("state"), o.get("cause"), o.get("calls_affected"))
        for o in ((doc or {}).get("current") or [])
    )
    worklist = source.worklist() if source.worklist is not None else None
    return outages, tuple(sorted((worklist or {}).items()))


async def poll_resilience(source: ResilienceSource | None, desk: Any | None, hub: Any, interval_s: float, *,
                          has_clients: Callable[[], bool] | None = None) -> None:  # fmt: skip
    """Publish ``outage`` / ``worklist`` / ``alert`` events (to every PSAP's pages) when the
    monitor's outages, the worklist or the alert drafts change, looking every
    ``interval_s`` while a page is connected. Runs until cancelled."""
    last_outages: Any = None
    last_worklist: Any = None
    last_alerts: Any = None
    while True:
        if has_clients is None or has_clients():
            try:
                if source is not None:
                    outages, worklist = fingerprint(source)
                    if last_outages is not None and outages != last_outages:
                        hub.publish("outage", None, {"open": len(outages)})
                    if last_worklist is not None and worklist != last_worklist:
                        hub.publish("worklist", None, {"worklist": dict(worklist)})
                    last_outages, last_worklist = outages, worklist
                if desk is not None:
                    alerts = desk.fingerprint()
                    if last_alerts is not None and alerts != last_alerts:
                        hub.publish("alert", None, {"pending": sum(1 for _, s, _ in alerts if s == "draft")})
                    last_alerts = alerts
            except Exception:  # noqa: BLE001 -- keep watching
                log.exception("console: watching outages and alerts failed; trying again")
        await asyncio.sleep(interval_s)


# --- routes ---------------------------------------------------------------------------------------


def resilience_routes(kit: ConsoleKit, source: ResilienceSource | None, desk: Any | None) -> list[Route]:
    """The routes (place them before the console's generic ``/fragments/{name}``)."""
    from firebox.alerting.drafts import ApprovalError

    P = Permission

    def state_ctx() -> dict[str, Any]:
        if source is None:
            return {"monitor": False, "current": [], "recent": [], "confirmed": 0, "states": [], "worklist": None,
                    "now": _hhmmss(kit.clock())}  # fmt: skip
        return resilience_context(source, kit.clock(), kit.psap_name)

    def alerts_ctx() -> dict[str, Any]:
        if desk is None or not desk.available:
            return {"alerting": False, "pending": [], "decided": [], "two_person": False}
        return {"alerting": True, "pending": desk.pending(), "decided": desk.decided(), "two_person": desk.two_person}

    async def outages_page(request: Request, session: Session, doc: Any) -> Response:
        return kit.page(request, "outages.html", session, **state_ctx())

    async def outages_fragment(request: Request, session: Session, doc: Any) -> Response:
        return kit.page(request, "_outages.html", session, **state_ctx())

    async def alerts_page(request: Request, session: Session, doc: Any) -> Response:
        return kit.page(request, "alerts.html", session, **alerts_ctx())

    async def alerts_fragment(request: Request, session: Session, doc: Any) -> Response:
        return kit.page(request, "_alerts.html", session, **alerts_ctx())

    async def decide(request: Request, session: Session, doc: dict[str, list[str]], action: str) -> Response:
        draft_id = request.path_params["draft_id"]
        user = session.user.name
        reason = kit.one(doc, "reason") or ""
        audit_action = f"alert {action}"
        if desk is None or not desk.available:
            kit.record(session, audit_action, draft_id, "failed: public alerting is not running")
            raise kit.problem(503, "Public alerting is not running", [("", "this node drafts no public alerts")])
        try:
            if action == "approve":
                view = await desk.approve(draft_id, user)
            else:
                view = desk.reject(draft_id, user, reason)
        except KeyError:
            kit.record(session, audit_action, draft_id, "failed: no such draft")
            raise kit.problem(404, "Not found", [("draft_id", f"no alert draft {draft_id!r}")]) from None
        except ApprovalError as exc:
            kit.record(session, audit_action, draft_id, f"failed: {exc}")
            raise kit.problem(409, f"Cannot {action}", [("draft_id", str(exc))]) from None
        detail: dict[str, Any] = {"state": view["state"], "approvals": view["approvals"], "msgType": view["msgType"],
                                  "towns": view["towns"]}  # fmt: skip
        if action == "reject":
            detail["reason"] = reason
        kit.record(session, audit_action, draft_id, "ok", **detail)
        return kit.done(request, {"alert": view}, back=f"{request.scope.get('root_path', '').rstrip('/')}/alerts")

    async def approve(request: Request, session: Session, doc: dict[str, list[str]]) -> Response:
        return await decide(request, session, doc, "approve")

    async def reject(request: Request, session: Session, doc: dict[str, list[str]]) -> Response:
        return await decide(request, session, doc, "reject")

    g = kit.guarded
    return [
        Route("/outages", g(P.VIEW_STATS, html=True)(outages_page), methods=["GET"]),
        Route("/fragments/outages", g(P.VIEW_STATS)(outages_fragment), methods=["GET"]),
        Route("/alerts", g(P.APPROVE_ALERTS, html=True)(alerts_page), methods=["GET"]),
        Route("/fragments/alerts", g(P.APPROVE_ALERTS)(alerts_fragment), methods=["GET"]),
        # No guard action: each decision is audited here, with its draft (the guard audits
        # a refusal of the session, permission, token or origin under the path).
        Route("/alerts/{draft_id}/approve", g(P.APPROVE_ALERTS)(approve), methods=["POST"]),
        Route("/alerts/{draft_id}/reject", g(P.APPROVE_ALERTS)(reject), methods=["POST"]),
    ]
