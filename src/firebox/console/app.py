"""The call-taker's console: a Starlette application, mounted by the node at ``/console``.

Server-rendered pages (Jinja2, ``templates/``) with a small amount of plain JavaScript
(``static/console.js``, no build step) and live updates over Server-Sent Events
(``firebox.console.live``). The map is Leaflet, served from ``node_modules/leaflet/dist``
(``npm ci``), drawing the node's GIS layers as vector GeoJSON: no map tiles, no internet.

Pages and actions (paths relative to the mount point)::

    GET  /                          the console: queue, call panel, map, boards, callbacks
    GET  /signin  POST /signin      sign in (also signs the user's position in)
    POST /signout                   sign out (and the position out)
    GET  /events                    SSE: call handling events and CAD changes of the PSAP
    GET  /api/state                 a snapshot of the user's PSAP (what a page starts from)
    GET  /api/calls/{call_id}       one call (the call panel)
    GET  /api/gis.geojson           the GIS layers drawn on the map
    POST /calls/answer|release|hold|transfer|text   {call_id, on, target, text}
    POST /position/ready            {ready: on|off}
    POST /callbacks/record          {callback_id, outcome, done}
    GET  /incidents  POST /incidents            board; new incident (from a call or by hand)
    GET  /api/location?q=  /api/location/stations   location search (LVF, ECRF, landmarks)
    GET  /incidents/{id}                        detail: timeline, recommendation, actions
    POST /incidents/{id}/dispatch|status|close|narrative
    GET  /incidents/{id}/eido                   the EIDO (NENA-STA-021.1a), as a download
    GET  /units  POST /units/{id}/status        unit board; a unit's status
    GET  /supervisor                            NENA-STA-020 answer times, positions
    GET  /admin/audit                           the console's and the CAD's audit trails
    GET  /fragments/{incidents|units|stats|positions|callbacks}   parts the pages refresh
    GET  /outages  GET /alerts  POST /alerts/{id}/approve|reject   outages and public
                                alerts (``firebox.console.resilience``)

A POST answers JSON to a page that asks for it (``Accept: application/json``: the
script's ``fetch``), and a 303 back to the page otherwise (a plain form, no script). Every
error is an RFC 9457 problem (``application/problem+json``) naming what was wrong: 401
without a session, 403 naming the role that may not do it, 404, 409 (the call or incident
is not in a state for it), 422 (a bad field). Every action, allowed or not, is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from firebox.cad.model import (
    CadError,
    IncidentStatus,
    IncidentSubtype,
    IncidentType,
    NotFound as CadNotFound,
    TransitionError,
    UnitStatus,
    incident_to_json,
    unit_to_json,
    SUBTYPE_TYPES,
)
from firebox.cad.service import Cad
from firebox.console.audit import AuditEntry, ConsoleAudit
from firebox.console.auth import ConsoleUser, Permission, Session, Sessions, SessionStore, verify_password, AuthError
from firebox.console.live import LiveHub, poll_cad, pump_call_handling
from firebox.console.resilience import ConsoleKit, ResilienceSource, poll_resilience, resilience_routes
from firebox.pglink import DatabaseUnavailable

log = logging.getLogger("firebox.console")

__all__ = ["console_app", "ConsoleState", "LEAFLET_DIR"]

HERE = Path(__file__).parent
#: Where ``npm ci`` puts Leaflet in a checkout (repo root / node_modules).
LEAFLET_DIR = HERE.parents[2] / "node_modules" / "leaflet" / "dist"
COOKIE = "firebox_console"
PROBLEM = "application/problem+json"
MAX_BODY = 64 * 1024
#: Statuses of a call shown in the queue; an abandoned call stays until it is called back.
QUEUE_ORDER = {"ringing": 0, "held": 1, "connected": 2, "abandoned": 3}


class _Problem(Exception):
    def __init__(self, status: int, title: str, errors: list[tuple[str, str]], *, audit_outcome: str | None = None):
        super().__init__(title)
        self.status, self.title, self.errors = status, title, errors
        self.audit_outcome = audit_outcome


def problem(status: int, title: str, errors: list[tuple[str, str]] | None = None) -> JSONResponse:
    """RFC 9457 problem details; ``errors`` lists (member, what is wrong)."""
    errors = errors or []
    body = {
        "type": "about:blank", "title": title, "status": status,
        "detail": "; ".join(f"{m}: {d}" if m else d for m, d in errors) or title,
        "errors": [{"member": m, "detail": d} for m, d in errors],
    }  # fmt: skip
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


@dataclass
class ConsoleState:
    """What the console application holds (``app.state.console``): the node's composition
    may read it, and must ``await aclose()`` it when it stops (a mounted app gets no
    lifespan events of its own)."""

    cad: Cad
    users: Mapping[str, ConsoleUser]
    audit: ConsoleAudit
    call_handling: Any
    hub: LiveHub
    sessions: SessionStore
    clock: Callable[[], datetime]
    gis: Callable[[], dict[str, Any]] | None
    leaflet_dir: Path | None
    cad_poll_s: float | None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    #: More event sources started with the others (outages and alerts: ``resilience``).
    pumps: list[Callable[[], Any]] = field(default_factory=list)

    def start(self) -> None:
        """Start the event pumps (once, in the running loop)."""
        if self.tasks:
            return
        if self.call_handling is not None:
            self.tasks.append(asyncio.create_task(pump_call_handling(self.call_handling, self.hub)))
        if self.cad_poll_s:
            self.tasks.append(asyncio.create_task(
                poll_cad(self.cad, self.hub, self.cad_poll_s, has_clients=lambda: self.hub.clients > 0)
            ))  # fmt: skip
        for pump in self.pumps:
            self.tasks.append(asyncio.create_task(pump()))

    def attach_call_handling(self, api: Any) -> None:
        """Give the console its call handling element after it was built (the node starts
        the element after building its apps). Must be called in the loop the console serves
        in, the element's own: its API is not thread-safe."""
        self.call_handling = api
        if self.tasks:  # already pumping the CAD: add the element's events
            self.tasks.append(asyncio.create_task(pump_call_handling(api, self.hub)))
        self.hub.resync_all()

    async def aclose(self) -> None:
        tasks, self.tasks = self.tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def psap_name(self, psap_id: str) -> str:
        if self.call_handling is not None:
            for p in self.call_handling.psaps():
                if p.id == psap_id:
                    return p.name
        return psap_id


def console_app(
    *,
    cad: Cad,
    users: Mapping[str, ConsoleUser],
    audit: ConsoleAudit,
    call_handling: Any | None = None,
    gis: Callable[[], dict[str, Any]] | dict[str, Any] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    session_secret: bytes | None = None,
    leaflet_dir: Path | str | None = LEAFLET_DIR,
    cad_poll_s: float | None = 2.0,
    secure_cookie: bool = False,
    resilience: ResilienceSource | None = None,
    alerts: Any | None = None,
    sessions: SessionStore | None = None,
) -> Starlette:
    """The console application.

    ``cad``: the CAD element (``firebox.cad.service.Cad``). ``users``: who may sign in
    (``firebox.console.auth.load_users``). ``audit``: the console's audit store
    (``ConsoleAudit(path)``). ``call_handling``: the PSAP call handling element
    (``firebox.psap.api.CallHandlingApi``); None shows the CAD views only, and says so.
    ``gis``: the GeoJSON FeatureCollection the map draws (towns / PSAP boundaries, as
    ``firebox.web.page.towns_geojson(node)``), or a function giving it (called once).
    ``clock``: the time of every action. ``session_secret``: the key signing session
    cookies (random per process when None: a restart signs everyone out).
    ``leaflet_dir``: Leaflet's ``dist`` folder (None or missing: the console says the map
    is not installed). ``cad_poll_s``: how often to look for CAD changes made outside the
    console (None: only the console's own). ``secure_cookie``: mark the cookie Secure
    (behind HTTPS). ``resilience``: the monitor's outages, states and the callback
    worklist for the supervisor's state view (``resilience.resilience_source(node)``);
    ``alerts``: public alert approval (``firebox.alerting.http.AlertDesk``); None: those
    pages say the node has none. ``sessions``: where signed-in sessions live (None: in this
    process, ``Sessions(session_secret)``; a cluster's nodes share
    ``firebox.console.sessions_pg.PgSessions`` so a console survives moving to another node).
    """
    leaflet = Path(leaflet_dir) if leaflet_dir is not None else None
    if leaflet is not None and not (leaflet / "leaflet.js").is_file():
        log.warning("console: Leaflet not found at %s: the map is off (run `npm ci` in the checkout)", leaflet)
        leaflet = None
    gis_source: Callable[[], dict[str, Any]] | None
    if isinstance(gis, dict):
        gis_doc = gis
        gis_source = lambda: gis_doc  # noqa: E731
    else:
        gis_source = gis
    st = ConsoleState(
        cad=cad, users=users, audit=audit, call_handling=call_handling, hub=LiveHub(),
        sessions=sessions if sessions is not None else Sessions(session_secret or secrets.token_bytes(32)), clock=clock, gis=gis_source,
        leaflet_dir=leaflet, cad_poll_s=cad_poll_s,
    )  # fmt: skip
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["hhmmss"] = lambda t: t.astimezone(UTC).strftime("%H:%M:%S") if t else ""
    env.filters["pct"] = lambda v: "—" if v is None else f"{v * 100:.1f} %"
    gis_cache: dict[str, Any] = {}
    if resilience is not None or alerts is not None:
        st.pumps.append(lambda: poll_resilience(resilience, alerts, st.hub, cad_poll_s or 2.0,
                                                has_clients=lambda: st.hub.clients > 0))  # fmt: skip

    # --- plumbing --------------------------------------------------------------------------

    def base(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    def session_of(request: Request) -> Session | None:
        return st.sessions.get(request.cookies.get(COOKIE), st.clock())

    def record(session: Session | None, action: str, target: str | None, outcome: str, *, user: str | None = None, **detail: Any) -> None:
        u = session.user if session else None
        st.audit.record(AuditEntry(
            st.clock(), user or (u.name if u else "?"), u.role.value if u else None,
            u.psap_id if u else None, action, target, outcome, detail,
        ))  # fmt: skip

    def wants_json(request: Request) -> bool:
        return "application/json" in request.headers.get("accept", "")

    def page(request: Request, template: str, session: Session | None, status: int = 200, **ctx: Any) -> HTMLResponse:
        notices = list(session.notices) if session else []
        if session:
            session.notices.clear()
        html = env.get_template(template).render(
            base=base(request), session=session, user=session.user if session else None,
            P=Permission, notices=notices, leaflet=st.leaflet_dir is not None,
            call_handling=st.call_handling is not None,
            psap_name=st.psap_name(session.user.psap_id) if session else "", **ctx,
        )  # fmt: skip
        reply = HTMLResponse(html, status_code=status)
        reply.headers["Cache-Control"] = "no-store"
        return reply

    async def form(request: Request) -> dict[str, list[str]]:
        """The body of a POST: a form (urlencoded) or a JSON object, as name -> values."""
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise _Problem(413, "Body too large", [("", f"more than {MAX_BODY} bytes")])
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            try:
                doc = json.loads(raw or b"{}")
            except (ValueError, UnicodeDecodeError) as exc:
                raise _Problem(400, "Body is not JSON", [("", str(exc))]) from None
            if not isinstance(doc, dict):
                raise _Problem(400, "Body is not a JSON object", [("", f"the body must be a JSON object, not {type(doc).__name__}")])
            out: dict[str, list[str]] = {}
            for k, v in doc.items():
                values = v if isinstance(v, list) else [v]
                out[k] = ["" if x is None else str(x).lower() if isinstance(x, bool) else str(x) for x in values]
            return out
        if kind in ("", "application/x-www-form-urlencoded"):
            try:
                return parse_qs(raw.decode("utf-8"), keep_blank_values=True)
            except UnicodeDecodeError as exc:
                raise _Problem(400, "Body is not UTF-8", [("", str(exc))]) from None
        raise _Problem(415, "Unsupported body", [("Content-Type", f"{kind}: send a form or JSON")])

    def one(doc: dict[str, list[str]], name: str, *, required: bool = False) -> str | None:
        values = doc.get(name) or []
        value = values[0].strip() if values else None
        if required and not value:
            raise _Problem(422, "Invalid request", [(name, "required")])
        return value or None

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host")

    def guarded(permission: Permission | None, action: str | None = None, *, html: bool = False) -> Callable[..., Any]:
        """Wrap an endpoint: a session (else 401, or to the sign-in page), the role's
        permission (else 403 naming the role, audited), for a POST the CSRF token and the
        origin; problems become RFC 9457 answers, audited when the action is."""

        def wrap(fn: Callable[..., Any]) -> Callable[[Request], Any]:
            async def run(request: Request) -> Response:
                session = session_of(request)
                if session is None:
                    if html:
                        return RedirectResponse(f"{base(request)}/signin", status_code=303)
                    return problem(401, "Not signed in", [("", "sign in at the console first")])
                doc: dict[str, list[str]] = {}
                try:
                    if request.method == "POST":
                        doc = await form(request)
                        token = request.headers.get("x-csrf-token") or one(doc, "csrf")
                        if not same_origin(request) or not st.sessions.csrf_ok(session, token):
                            raise _Problem(403, "Cross-site request refused", [("csrf", "missing or wrong CSRF token, or another origin")],
                                           audit_outcome="denied: csrf")  # fmt: skip
                    else:
                        doc = {k: request.query_params.getlist(k) for k in request.query_params}
                    if permission is not None and not session.user.can(permission):
                        why = f"role {session.user.role.value!r} may not {permission.value}"
                        if permission is Permission.HANDLE_CALLS and permission in _role_perms(session.user):
                            why = f"user {session.user.name!r} has no position to take calls at"
                        raise _Problem(403, "Forbidden", [("role", why)], audit_outcome=f"denied: {why}")
                    return await fn(request, session, doc)
                except DatabaseUnavailable as exc:
                    # This node is cut off from the shared database (a cluster): say so, so that
                    # the dispatcher tries again or uses a console on another node.
                    why = f"{exc}; try again, or from a console on another node"
                    record(session, action or request.url.path, _target(request, doc), f"failed: 503 {why}")
                    return problem(503, "The CAD's database cannot be reached from this node", [("", why)])
                except _Problem as exc:
                    if action is not None or exc.audit_outcome:
                        name = request.path_params.get("action", action) if action == "call action" else action
                        record(session, name or request.url.path, _target(request, doc),
                               exc.audit_outcome or f"failed: {exc.status} {'; '.join(d for _, d in exc.errors)}")  # fmt: skip
                    return problem(exc.status, exc.title, exc.errors)

            return run

        return wrap

    def done(request: Request, payload: Any, back: str | None = None, status: int = 200) -> Response:
        if wants_json(request):
            return JSONResponse(payload, status_code=status)
        return RedirectResponse(back or request.headers.get("referer") or f"{base(request)}/", status_code=303)

    # --- call handling ----------------------------------------------------------------------

    def ch() -> Any:
        if st.call_handling is None:
            raise _Problem(503, "Call handling is not connected", [("", "this console has no call handling element")])
        return st.call_handling

    def ch_errors(exc: Exception) -> _Problem:
        from firebox.psap.api import Conflict, NotFound

        status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 422
        title = {404: "Not found", 409: "Not allowed in the current state", 422: "Invalid request"}[status]
        return _Problem(status, title, [("", str(exc))])

    def own_call(session: Session, call_id: str) -> Any:
        from firebox.psap.api import CallHandlingError

        try:
            call = ch().call(call_id)
        except CallHandlingError as exc:
            raise ch_errors(exc) from None
        if call.psap_id != session.user.psap_id:
            raise _Problem(403, "Forbidden", [("call_id", f"call {call_id} is at PSAP {call.psap_id}, not {session.user.psap_id}")])
        return call

    def snapshot(session: Session) -> dict[str, Any]:
        from firebox.psap.api import ACTIVE_STATUSES, CallbackStatus, to_json

        psap = session.user.psap_id
        out: dict[str, Any] = {
            "seq": st.hub.seq, "psap": {"id": psap, "name": st.psap_name(psap)},
            "user": _user_json(session), "call_handling": st.call_handling is not None,
            "calls": [], "callbacks": [], "positions": [], "stats": None, "psaps": [],
        }  # fmt: skip
        api = st.call_handling
        if api is not None and session.user.can(Permission.VIEW_CALLS):
            callbacks = api.callbacks(psap)
            pending = {c.call_id for c in callbacks if c.status is CallbackStatus.PENDING}
            calls = [c for c in api.calls(psap, include_ended=True)
                     if c.status in ACTIVE_STATUSES or (c.status.value == "abandoned" and c.call_id in pending)]  # fmt: skip
            out.update(
                calls=to_json(calls), callbacks=to_json(callbacks), positions=to_json(api.positions(psap)),
                stats=to_json(api.stats(psap)), psaps=[{"id": p.id, "name": p.name} for p in api.psaps()],
            )  # fmt: skip
        if session.user.can(Permission.VIEW_CAD):
            out["units"] = [unit_to_json(u) for u in cad.units()]
            out["incidents"] = [_board_row(i) for i in cad.incidents(open_only=True)]
        return out

    async def call_action(request: Request, session: Session, doc: dict[str, list[str]]) -> Response:
        from firebox.psap.api import CallHandlingError, to_json

        action = request.path_params["action"]
        api, user, position = ch(), session.user, session.user.position
        assert position is not None  # HANDLE_CALLS needs one
        call_id = one(doc, "call_id", required=action != "answer")
        if call_id is not None:
            own_call(session, call_id)
        try:
            if action == "answer":
                call = api.answer(position, user.name, call_id)
            elif action == "release":
                call = api.release(position, user.name, call_id)
            elif action == "hold":
                on = (one(doc, "on") or "on").lower() in ("on", "true", "1", "yes")
                call = api.hold(position, user.name, call_id, on)
                action = "hold" if on else "unhold"
            elif action == "transfer":
                target = one(doc, "target", required=True)
                call = api.transfer(position, user.name, call_id, target)
            elif action == "text":
                text = one(doc, "text", required=True)
                if len(text) > 1000:  # a long text goes out as several MESSAGEs elsewhere; here: say so
                    raise _Problem(422, "Invalid request", [("text", f"at most 1000 characters, not {len(text)}")])
                call = api.send_text(position, user.name, call_id, text)
            else:
                raise _Problem(404, "Not found", [("", f"no call action {action!r}")])
        except CallHandlingError as exc:
            raise ch_errors(exc) from None
        record(session, action, call.call_id, "ok", position=position,
               **({"target": call.transfer_target} if action == "transfer" else {}))  # fmt: skip
        return done(request, {"call": to_json(call)})

    async def set_ready(request: Request, session: Session, doc: dict[str, list[str]]) -> Response:
        from firebox.psap.api import CallHandlingError, to_json

        ready = (one(doc, "ready", required=True) or "").lower() in ("on", "true", "1", "yes", "ready")
        try:
            pos = ch().set_ready(session.user.position, session.user.name, ready)
        except CallHandlingError as exc:
            raise ch_errors(exc) from None
        record(session, "ready" if ready else "not ready", session.user.position, "ok")
        return done(request, {"position": to_json(pos)})

    async def record_callback(request: Request, session: Session, doc: dict[str, list[str]]) -> Response:
        from firebox.psap.api import CallHandlingError, to_json

        cb_id = one(doc, "callback_id", required=True)
        outcome = one(doc, "outcome", required=True)
        is_done = (one(doc, "done") or "").lower() in ("on", "true", "1", "yes")
        api = ch()
        if not any(c.id == cb_id for c in api.callbacks(session.user.psap_id)):
            raise _Problem(404, "Not found", [("callback_id", f"no callback {cb_id} at PSAP {session.user.psap_id}")])
        try:
            entry = api.record_callback(cb_id, session.user.name, outcome, done=is_done)
        except CallHandlingError as exc:
            raise ch_errors(exc) from None
        record(session, "callback", cb_id, "ok", callback_outcome=outcome, done=is_done, call_id=entry.call_id)
        return done(request, {"callback": to_json(entry)})

    async def api_state(request: Request, session: Session, doc: Any) -> Response:
        return JSONResponse(snapshot(session))

    async def api_call(request: Request, session: Session, doc: Any) -> Response:
        from firebox.psap.api import to_json

        return JSONResponse({"call": to_json(own_call(session, request.path_params["call_id"]))})

    async def api_gis(request: Request, session: Session, doc: Any) -> Response:
        if "doc" not in gis_cache:
            gis_cache["doc"] = st.gis() if st.gis is not None else {"type": "FeatureCollection", "features": []}
        reply = JSONResponse(gis_cache["doc"])
        reply.headers["Cache-Control"] = "private, max-age=3600"
        return reply

    # --- sign-in -----------------------------------------------------------------------------

    async def signin_page(request: Request) -> Response:
        if session_of(request) is not None:
            return RedirectResponse(f"{base(request)}/", status_code=303)
        return page(request, "signin.html", None, error=None, name="")

    async def signin(request: Request) -> Response:
        if not same_origin(request):
            return problem(403, "Cross-site request refused", [("Origin", "sign in from the console's own page")])
        try:
            doc = await form(request)
        except _Problem as exc:
            return problem(exc.status, exc.title, exc.errors)
        name, password = (one(doc, "user") or ""), (doc.get("password") or [""])[0]
        user = st.users.get(name)
        ok = False
        if user is not None:
            try:
                ok = verify_password(password, user.password_hash)
            except AuthError:
                log.exception("console: user %s has an unusable password hash", name)
        if not ok:
            # Not which of the two was wrong: that would tell a guesser which names exist.
            st.audit.record(AuditEntry(st.clock(), name or "(empty)", None, None, "sign-in", None,
                                       "failed: wrong user name or password",
                                       {"client": request.client.host if request.client else None}))  # fmt: skip
            log.warning("console: failed sign-in for %r", name)
            return page(request, "signin.html", None, status=401, error="Wrong user name or password.", name=name)
        session, cookie = st.sessions.start(user, st.clock())
        outcome = "ok"
        if user.position is not None and st.call_handling is not None:
            from firebox.psap.api import CallHandlingError

            try:
                st.call_handling.sign_in(user.position, user.name)
            except CallHandlingError as exc:
                outcome = f"ok; position {user.position} not signed in: {exc}"
                session.notices.append(f"Your position {user.position} could not be signed in: {exc}")
        record(session, "sign-in", user.position, outcome)
        reply = RedirectResponse(f"{base(request)}/", status_code=303)
        reply.set_cookie(COOKIE, cookie, httponly=True, samesite="strict", secure=secure_cookie,
                         path=base(request) or "/")  # fmt: skip
        return reply

    async def signout(request: Request, session: Session, doc: Any) -> Response:
        outcome = "ok"
        user = session.user
        if user.position is not None and st.call_handling is not None and len(st.sessions.of_user(user.name)) <= 1:
            from firebox.psap.api import CallHandlingError

            try:
                st.call_handling.sign_out(user.position, user.name)
            except CallHandlingError as exc:
                outcome = f"ok; position {user.position} not signed out: {exc}"
        record(session, "sign-out", user.position, outcome)
        st.sessions.end(session)
        reply = done(request, {"signed_out": True}, back=f"{base(request)}/signin")
        reply.delete_cookie(COOKIE, path=base(request) or "/", httponly=True, samesite="strict")
        return reply

    # --- pages ---------------------------------------------------------------------------------

    async def console_page(request: Request, session: Session, doc: Any) -> Response:
        return page(request, "console.html", session, subtypes=_subtypes(), types=[t.value for t in IncidentType])

    async def events(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return problem(401, "Not signed in", [("", "sign in at the console first")])
        st.start()
        after_raw = request.headers.get("last-event-id") or request.query_params.get("after")
        try:
            after = int(after_raw) if after_raw not in (None, "") else None
        except ValueError:
            after = -1  # unreadable: start from a fresh snapshot
        client = st.hub.connect(session.user.psap_id, after)

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        ev = await asyncio.wait_for(client.queue.get(), timeout=15)
                    except TimeoutError:
                        if st.sessions.get(request.cookies.get(COOKIE), st.clock()) is None:
                            return  # signed out elsewhere: end the stream
                        yield ": keep-alive\n\n"
                        continue
                    yield LiveHub.format(ev, st.hub.seq)
                    if ev is None:
                        return  # the page resyncs and reconnects after its snapshot
            finally:
                st.hub.disconnect(client)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip

    async def incidents_page(request: Request, session: Session, doc: Any) -> Response:
        which = one(doc, "status") or "open"
        if which not in ("open", "all"):
            raise _Problem(422, "Invalid request", [("status", "must be open or all")])
        return page(request, "incidents.html", session, incidents=_incidents(which == "open"), which=which,
                    subtypes=_subtypes(), types=[t.value for t in IncidentType])  # fmt: skip

    async def incident_page(request: Request, session: Session, doc: Any) -> Response:
        iid = request.path_params["incident_id"]
        try:
            incident = cad.incident(iid)
            rec = cad.recommend(iid) if incident.open else None
        except CadError as exc:
            raise _cad_problem(exc) from None
        units = {u.id: u for u in cad.units()}
        available = [u for u in units.values() if u.status in (UnitStatus.AVAILABLE, UnitStatus.CLEARED)]
        return page(request, "incident.html", session, i=incident_to_json(incident), rec=rec.to_json() if rec else None,
                    available=[unit_to_json(u) for u in available], statuses=[s.value for s in IncidentStatus],
                    units={k: unit_to_json(u) for k, u in units.items()})  # fmt: skip

    async def units_page(request: Request, session: Session, doc: Any) -> Response:
        return page(request, "units.html", session, units=_units(), statuses=[s.value for s in UnitStatus])

    async def supervisor_page(request: Request, session: Session, doc: Any) -> Response:
        return page(request, "supervisor.html", session, **_stats_ctx(session))

    async def audit_page(request: Request, session: Session, doc: Any) -> Response:
        who, what = one(doc, "user"), one(doc, "action")
        entries = st.audit.entries(user=who, action=what, limit=500)
        cad_audit = list(reversed(cad.audit()))[:500]
        return page(request, "audit.html", session, entries=[e.to_json() for e in entries],
                    cad_audit=[r.to_json() for r in cad_audit], filter_user=who or "", filter_action=what or "")  # fmt: skip

    async def fragment(request: Request, session: Session, doc: Any) -> Response:
        name = request.path_params["name"]
        needs = {"incidents": Permission.VIEW_CAD, "units": Permission.VIEW_CAD, "stats": Permission.VIEW_STATS,
                 "positions": Permission.VIEW_STATS, "callbacks": Permission.VIEW_CALLS}  # fmt: skip
        if name not in needs:
            raise _Problem(404, "Not found", [("", f"no fragment {name!r}")])
        if not session.user.can(needs[name]):
            why = f"role {session.user.role.value!r} may not {needs[name].value}"
            raise _Problem(403, "Forbidden", [("role", why)], audit_outcome=f"denied: {why}")
        ctx: dict[str, Any] = {}
        if name == "incidents":
            ctx = {"incidents": _incidents(one(doc, "status") != "all")}
        elif name == "units":
            units = _units()
            if one(doc, "committed") == "1":
                # The console's panel: only units at work, readable at a glance in a state
                # with hundreds of units; the unit board (/units) lists them all.
                available = sum(1 for u in units if u["status"] == UnitStatus.AVAILABLE.value)
                units = [u for u in units if u["status"] != UnitStatus.AVAILABLE.value]
                ctx = {"units": units, "committed_only": True, "available": available}
            else:
                ctx = {"units": units}
            ctx["statuses"] = [s.value for s in UnitStatus]
        elif name in ("stats", "positions"):
            ctx = _stats_ctx(session)
        elif name == "callbacks":
            ctx = {"callbacks": _callbacks(session)}
        return page(request, f"_{name}.html", session, **ctx)

    # --- CAD actions -----------------------------------------------------------------------------

    def cad_call(session: Session, action: str, target: str | None, fn: Callable[[], Any], **detail: Any) -> Any:
        try:
            result = fn()
        except CadError as exc:
            raise _cad_problem(exc) from None
        record(session, action, target or getattr(result, "id", None), "ok", **detail)
        return result

    async def create_incident(request: Request, session: Session, doc: dict[str, list[str]]) -> Response:
        type_ = _enum(IncidentType, one(doc, "type", required=True), "type")
        subtype = _enum(IncidentSubtype, one(doc, "subtype", required=True), "subtype")
        priority = _int(one(doc, "priority") or "3", "priority")
        narrative = one(doc, "narrative")
        who, now = session.user.name, st.clock()
        call_id = one(doc, "call_id")
        if call_id is not None:
            incident = _incident_from_call(session, own_call(session, call_id), type_, subtype, priority, narrative, now)
        else:
            from firebox.location.civic import CivicAddress
            from firebox.location.shapes import Point

            civic_fields = {k: one(doc, f) for k, f in (("HNO", "hno"), ("RD", "street"), ("A3", "town"), ("A1", "state"))}
            civic = CivicAddress(**{k: v for k, v in civic_fields.items() if v}) if any(civic_fields.values()) else None
            lat, lon = one(doc, "lat"), one(doc, "lon")
            point = None
            if lat or lon:
                try:
                    point = Point(lat=float(lat or ""), lon=float(lon or ""))
                except ValueError as exc:
                    raise _Problem(422, "Invalid request", [("lat", f"lat and lon must be numbers in range ({exc})")]) from None
            landmark = one(doc, "landmark")
            # The search line as typed counts only when nothing more precise was given: an
            # address nobody picked from the results is still taken (and marked unvalidated).
            text = one(doc, "q") if civic is None and point is None and landmark is None else None
            if text is not None and len(text) > 200:
                raise _Problem(422, "Invalid request", [("q", f"at most 200 characters, not {len(text)}")])
            incident = cad_call(session, "incident create", None, lambda: cad.incident_by_hand(
                at=now, actor=who, type=type_, subtype=subtype, priority=priority, civic=civic, point=point,
                station=one(doc, "station"), description=one(doc, "description"), narrative=narrative,
                landmark=landmark, text=text, position=session.user.position,
            ), source="by hand", station=one(doc, "station"))  # fmt: skip
            if incident.location.validated is False:
                log.warning("console: %s entered incident %s at an address the LVF did not validate: %s",
                            who, incident.id, incident.location.description)  # fmt: skip
                session.notices.append(f"The address was not validated: the incident {incident.id} was made, marked unvalidated.")
        st.hub.publish_incident(incident)
        url = f"{base(request)}/incidents/{incident.id}"
        reply = done(request, {"incident": _board_row(incident), "url": url}, back=url, status=201)
        return reply

    async def api_location(request: Request, session: Session, doc: dict[str, list[str]]) -> Response:
        """``GET /api/location?q=12 main st springfield[&limit=8]``: candidates from the LVF
        (RFC 5222 findService with validateLocation through the ECRF), with their points and
        the PSAP and agencies serving them, and landmarks (``firebox.cad.locate``)."""
        q = one(doc, "q") or ""
        if len(q) > 200:
            raise _Problem(422, "Invalid request", [("q", f"at most 200 characters, not {len(q)}")])
        limit = min(max(_int(one(doc, "limit") or "8", "limit"), 1), 25)
        if cad.locator is None:
            return JSONResponse({"query": q, "search": False, "candidates": []})
        found = cad.locator.search(q, now=st.clock(), limit=limit)
        return JSONResponse({"query": q, "search": True, "candidates": [c.to_json() for c in found]})

    async def api_stations(request: Request, session: Session, doc: Any) -> Response:
        """``GET /api/location/stations``: the stations a person may walk into."""
        marks = cad.locator.landmarks if cad.locator is not None else {}
        return JSONResponse({"stations": [
            {"id": sid, "name": marks[f"station:{sid}"].name if f"station:{sid}" in marks else sid} for sid in sorted(cad.stations)
        ]})  # fmt: skip

    def _incident_from_call(session: Session, call: Any, type_: Any, subtype: Any, priority: int, narrative: str | None, now: datetime) -> Any:
        from firebox.logging.events import check_uid, new_call_id

        who = session.user.name
        call_id = call.call_id
        notes = narrative
        if check_uid(call_id, "callid") is not None:
            # Not an i3 call id (a SIP Call-ID): the incident still gets made, under a new id,
            # with the call's own id in the narrative so the two can be matched.
            log.warning("console: call %r has no i3 Call Identifier; the incident gets a new one", call_id)
            call_id = new_call_id(cad.fqdn)
            notes = (notes + "\n" if notes else "") + f"SIP Call-ID {call.sip_call_id}"
        tracking = call.incident_id if call.incident_id and check_uid(call.incident_id, "incidentid") is None else None
        if tracking is not None:
            try:
                existing = cad.incident(tracking)
            except CadNotFound:
                existing = None
            if existing is not None:  # a second call about the same incident: link it
                return cad_call(session, "incident link call", tracking, lambda: cad.link_call(
                    tracking, call_id, at=now, actor=who, incident_tracking_id=tracking, callback=call.callback,
                ), call_id=call.call_id)  # fmt: skip
        return cad_call(session, "incident create", None, lambda: cad.incident_from_call(
            at=now, actor=who, call_id=call_id, type=type_, subtype=subtype, priority=priority,
            incident_tracking_id=tracking, callback=call.callback, pidf=_presence(call), narrative=notes,
        ), source="call", call_id=call.call_id)  # fmt: skip

    async def dispatch(request: Request, session: Session, doc: dict[str, list[str]]) -> Response:
        iid = request.path_params["incident_id"]
        units = [u for u in doc.get("units", []) if u.strip()]
        if not units and one(doc, "recommended"):
            try:
                units = cad.recommend(iid).unit_ids
            except CadError as exc:
                raise _cad_problem(exc) from None
            if not units:
                raise _Problem(409, "Nothing to dispatch", [("units", "no unit is recommended: choose units by hand")])
        if not units:
            raise _Problem(422, "Invalid request", [("units", "name at least one unit (or recommended=1)")])
        incident = cad_call(session, "dispatch", iid, lambda: cad.dispatch(iid, units, at=st.clock(), actor=session.user.name), units=units)
        st.hub.publish_incident(incident)
        for uid in units:
            st.hub.publish_unit(cad.unit(uid))
        return done(request, {"incident": _board_row(incident)})

    async def incident_status(request: Request, session: Session, doc: dict[str, list[str]]) -> Response:
        iid = request.path_params["incident_id"]
        status = _enum(IncidentStatus, one(doc, "status", required=True), "status")
        incident = cad_call(session, "incident status", iid, lambda: cad.set_status(iid, status, at=st.clock(), actor=session.user.name), status=status.value)
        st.hub.publish_incident(incident)
        return done(request, {"incident": _board_row(incident)})

    async def close_incident(request: Request, session: Session, doc: dict[str, list[str]]) -> Response:
        iid = request.path_params["incident_id"]
        disposition = one(doc, "disposition", required=True)
        before = set(cad.incident(iid).units) if _exists(iid) else set()
        incident = cad_call(session, "incident close", iid, lambda: cad.close(iid, at=st.clock(), actor=session.user.name, disposition=disposition), disposition=disposition)
        st.hub.publish_incident(incident)
        for uid in before:
            st.hub.publish_unit(cad.unit(uid))
        return done(request, {"incident": _board_row(incident)})

    async def narrative(request: Request, session: Session, doc: dict[str, list[str]]) -> Response:
        iid = request.path_params["incident_id"]
        text = one(doc, "text", required=True)
        incident = cad_call(session, "narrative", iid, lambda: cad.add_narrative(iid, text, at=st.clock(), actor=session.user.name))
        st.hub.publish_incident(incident)
        return done(request, {"incident": _board_row(incident)})

    async def eido(request: Request, session: Session, doc: Any) -> Response:
        from firebox.cad.eido import EidoError

        iid = request.path_params["incident_id"]
        try:
            body = cad.eido(iid)
        except CadError as exc:
            raise _cad_problem(exc) from None
        except EidoError as exc:
            raise _Problem(500, "EIDO export failed validation", [(p.path, p.message) for p in exc.problems]) from None
        record(session, "eido export", iid, "ok")
        reply = JSONResponse(body)
        reply.headers["Content-Disposition"] = 'attachment; filename="incident-eido.json"'
        return reply

    async def unit_status(request: Request, session: Session, doc: dict[str, list[str]]) -> Response:
        uid = request.path_params["unit_id"]
        status = _enum(UnitStatus, one(doc, "status", required=True), "status")
        before = cad.unit(uid).incident_id if _unit_exists(uid) else None
        unit = cad_call(session, "unit status", uid, lambda: cad.unit_status(uid, status, at=st.clock(), actor=session.user.name), status=status.value)
        st.hub.publish_unit(unit)
        if before:
            st.hub.publish_incident(cad.incident(before))
        return done(request, {"unit": unit_to_json(unit)})

    # --- helpers over the CAD and call handling ----------------------------------------------------

    def _exists(iid: str) -> bool:
        return cad.repo.get_incident(iid) is not None

    def _unit_exists(uid: str) -> bool:
        return cad.repo.get_unit(uid) is not None

    def _incidents(open_only: bool) -> list[dict[str, Any]]:
        found = sorted(cad.incidents(open_only=open_only), key=lambda i: (i.open is False, i.priority, i.created_at))
        return [_board_row(i) for i in found]

    def _units() -> list[dict[str, Any]]:
        return [unit_to_json(u) for u in sorted(cad.units(), key=lambda u: u.id)]

    def _callbacks(session: Session) -> list[dict[str, Any]]:
        from firebox.psap.api import to_json

        if st.call_handling is None:
            return []
        return to_json(st.call_handling.callbacks(session.user.psap_id))

    def _stats_ctx(session: Session) -> dict[str, Any]:
        from firebox.psap.api import ANSWER_TARGET_15S, ANSWER_TARGET_20S, to_json

        if st.call_handling is None:
            return {"stats": None, "positions": [], "t15": ANSWER_TARGET_15S, "t20": ANSWER_TARGET_20S}
        psap = session.user.psap_id
        return {"stats": to_json(st.call_handling.stats(psap)), "positions": to_json(st.call_handling.positions(psap)),
                "t15": ANSWER_TARGET_15S, "t20": ANSWER_TARGET_20S}  # fmt: skip

    def _target(request: Request, doc: dict[str, list[str]]) -> str | None:
        for key in ("incident_id", "unit_id"):
            if key in request.path_params:
                return request.path_params[key]
        for key in ("call_id", "callback_id"):
            if doc.get(key):
                return doc[key][0]
        return None

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem(exc.status_code, str(exc.detail), [("", f"{request.method} {request.url.path}: {exc.detail}")])

    P = Permission
    I = "/incidents/{incident_id}"
    routes: list[Any] = [
        Route("/", guarded(None, html=True)(console_page), methods=["GET"]),
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", guarded(None, "sign-out")(signout), methods=["POST"]),
        Route("/events", events, methods=["GET"]),
        Route("/api/state", guarded(None)(api_state), methods=["GET"]),
        Route("/api/calls/{call_id:path}", guarded(P.VIEW_CALLS)(api_call), methods=["GET"]),
        Route("/api/gis.geojson", guarded(None)(api_gis), methods=["GET"]),
        Route("/calls/{action}", guarded(P.HANDLE_CALLS, "call action")(call_action), methods=["POST"]),
        Route("/position/ready", guarded(P.HANDLE_CALLS, "ready")(set_ready), methods=["POST"]),
        Route("/callbacks/record", guarded(P.CALLBACKS, "callback")(record_callback), methods=["POST"]),
        Route("/incidents", guarded(P.VIEW_CAD, html=True)(incidents_page), methods=["GET"]),
        Route("/incidents", guarded(P.CREATE_INCIDENT, "incident create")(create_incident), methods=["POST"]),
        Route("/api/location", guarded(P.CREATE_INCIDENT)(api_location), methods=["GET"]),
        Route("/api/location/stations", guarded(P.CREATE_INCIDENT)(api_stations), methods=["GET"]),
        Route(I, guarded(P.VIEW_CAD, html=True)(incident_page), methods=["GET"]),
        Route(I + "/dispatch", guarded(P.DISPATCH, "dispatch")(dispatch), methods=["POST"]),
        Route(I + "/status", guarded(P.DISPATCH, "incident status")(incident_status), methods=["POST"]),
        Route(I + "/close", guarded(P.DISPATCH, "incident close")(close_incident), methods=["POST"]),
        Route(I + "/narrative", guarded(P.CREATE_INCIDENT, "narrative")(narrative), methods=["POST"]),
        Route(I + "/eido", guarded(P.VIEW_CAD)(eido), methods=["GET"]),
        Route("/units", guarded(P.VIEW_CAD, html=True)(units_page), methods=["GET"]),
        Route("/units/{unit_id}/status", guarded(P.DISPATCH, "unit status")(unit_status), methods=["POST"]),
        Route("/supervisor", guarded(P.VIEW_STATS, html=True)(supervisor_page), methods=["GET"]),
        Route("/admin/audit", guarded(P.VIEW_AUDIT, html=True)(audit_page), methods=["GET"]),
        *resilience_routes(ConsoleKit(guarded, page, record, done, one, _Problem, st.clock, st.psap_name), resilience, alerts),
        Route("/fragments/{name}", guarded(None)(fragment), methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    if st.leaflet_dir is not None:
        routes.append(Mount("/vendor/leaflet", StaticFiles(directory=st.leaflet_dir), name="leaflet"))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await st.aclose()

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.console = st
    return app


# --- module helpers ------------------------------------------------------------------------------


def _role_perms(user: ConsoleUser) -> frozenset[Permission]:
    from firebox.console.auth import PERMISSIONS

    return PERMISSIONS[user.role]


def _user_json(session: Session) -> dict[str, Any]:
    u = session.user
    return {"name": u.name, "label": u.label, "role": u.role.value, "psap": u.psap_id, "position": u.position,
            "can": sorted(p.value for p in Permission if u.can(p)), "csrf": session.csrf}  # fmt: skip


def _board_row(incident: Any) -> dict[str, Any]:
    row = incident_to_json(incident)
    row.pop("timeline", None)
    row.pop("narrative", None)
    loc = row["location"]
    civic = loc.get("civic") or {}
    street = " ".join(v for v in (civic.get("HNO"), civic.get("RD"), civic.get("STS")) if v)
    row["where"] = ", ".join(p for p in (street, civic.get("A3")) if p) or loc.get("description") or (
        f"{loc['point']['lat']:.5f}, {loc['point']['lon']:.5f}" if loc.get("point") else "no location"
    )
    return row


def _subtypes() -> dict[str, list[str]]:
    return {t.value: [s.value for s, types in SUBTYPE_TYPES.items() if t in types] for t in IncidentType}


def _presence(call: Any) -> Any:
    """The call's location as a PIDF-LO ``Presence`` for the CAD (RFC 4119): its point or
    circle (RFC 5491) and civic address (RFC 5139); None when the call has none."""
    from firebox.location.civic import CIVIC_ELEMENTS, CivicAddress
    from firebox.location.pidf import PidfLocation, Presence
    from firebox.location.shapes import Circle, Point

    loc = call.location
    if loc is None:
        return None
    shapes: list[Any] = []
    if loc.lat is not None and loc.lon is not None:
        centre = Point(lat=loc.lat, lon=loc.lon)
        shapes.append(Circle(centre, loc.radius_m) if loc.radius_m else centre)
    civic_values = {k: v for k, v in (loc.civic or {}).items() if k in CIVIC_ELEMENTS and v}
    civic = CivicAddress(**civic_values) if civic_values else None
    if not shapes and civic is None:
        return None
    return Presence(entity=call.caller_uri or "unknown", locations=[PidfLocation(shapes=shapes, civic=civic, method=loc.method)])


def _enum(cls: Any, value: Any, member: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(s.value) for s in cls)
        raise _Problem(422, "Invalid request", [(member, f"{value!r} is not one of {allowed}")]) from None


def _int(value: str, member: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _Problem(422, "Invalid request", [(member, f"must be an integer, not {value!r}")]) from None


def _cad_problem(exc: CadError) -> _Problem:
    text = str(exc)
    member, _, detail = text.partition(": ")
    errors = [(member, detail)] if detail and " " not in member else [("", text)]
    if isinstance(exc, CadNotFound):
        return _Problem(404, "Not found", errors)
    if isinstance(exc, TransitionError):
        return _Problem(409, "Not allowed in the current state", errors)
    return _Problem(422, "Invalid request", errors)
