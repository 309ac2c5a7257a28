"""The public 911 status page over HTTP (Starlette), from a ``StatusBoard``:

* ``GET /status/``: a small server-rendered HTML page, readable with no JavaScript, on a
  phone (responsive CSS inline): the towns where 911 is not working first, each with since
  when and what to do instead (business lines as ``tel:`` links, nearest staffed fire and
  police stations, nearest fire alarm box); a town search box (``?q=`` without JavaScript,
  filtering as one types with it); a few lines of script re-fetch ``status.json`` every
  ``poll_seconds`` and redraw the list when the version moved, so the page follows the
  detector live.
* ``GET /status/status.json``: every town; ``GET /status/towns/{town_id}.json``: one town
  (an unknown town is a 404 RFC 9457 problem naming it).

Built to stay up under a surge of visitors (a 911 outage in the news): every answer is
rendered once per board version and kept as bytes (and gzip bytes), so a request costs a
dict lookup; a strong ``ETag`` per version (RFC 9110 section 8.8.3), ``If-None-Match`` ->
304 (section 13.1.2, weak comparison), and ``Cache-Control: public, max-age=5,
stale-while-revalidate=30`` (RFC 9111, RFC 5861) so that caches and CDNs in front absorb
most of it.
"""

from __future__ import annotations

import gzip
import html
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from firebox import restapi
from firebox.alerting.status import StatusBoard

__all__ = ["StatusPage", "create_status_app", "status_routes"]

CACHE_CONTROL: Final = "public, max-age=5, stale-while-revalidate=30"
MAX_QUERY: Final = 60
#: Filtered pages (``?q=``) kept per version; beyond, the oldest goes.
MAX_SEARCHES: Final = 256
_LABELS: Final = {"working": "Working", "degraded": "Degraded", "down": "Down"}


@dataclass(slots=True)
class _Body:
    raw: bytes
    gz: bytes | None = None  # only worth it for the big ones

    @classmethod
    def of(cls, raw: bytes, compress: bool) -> _Body:
        # mtime=0: identical bytes for identical content, whichever worker renders them.
        return cls(raw, gzip.compress(raw, 6, mtime=0) if compress and len(raw) > 1024 else None)


@dataclass(slots=True)
class _Rendered:
    version: int
    page: _Body
    document: _Body
    towns: dict[str, _Body]
    doc: dict[str, Any]
    searches: dict[str, _Body] = field(default_factory=dict)


class StatusPage:
    """The routes' state: the board (or a function giving it, for a node that builds it
    later; ``None`` is a 503 problem), the page's title and time zone for times shown."""

    def __init__(
        self, board: StatusBoard | Callable[[], StatusBoard | None], *, title: str = "911 status",
        time_zone: str = "America/New_York", poll_seconds: float = 5.0,
    ) -> None:  # fmt: skip
        self._board = board if callable(board) else (lambda: board)
        self.title = title
        self.tz = ZoneInfo(time_zone)
        self.poll_seconds = poll_seconds
        self._rendered: _Rendered | None = None
        self._lock = threading.Lock()  # one render per version, however many ask at once

    def routes(self) -> list[Route]:
        return [
            Route("/status", lambda request: RedirectResponse("/status/", 308), methods=["GET", "HEAD"]),
            Route("/status/", self.page, methods=["GET", "HEAD"]),
            Route("/status/status.json", self.document, methods=["GET", "HEAD"]),
            Route("/status/towns/{town_id}.json", self.town, methods=["GET", "HEAD"]),
        ]

    # --- rendering, once per version ----------------------------------------------------

    def current(self) -> _Rendered:
        board = self._board()
        if board is None:
            raise _Unavailable()
        version = board.published()[0]
        rendered = self._rendered
        if rendered is not None and rendered.version == version:
            return rendered
        with self._lock:
            if self._rendered is not None and self._rendered.version == board.published()[0]:
                return self._rendered
            doc = board.document()  # one consistent snapshot for every rendering
            towns = {t["id"]: _Body.of(_json(t), False) for t in doc["towns"]}
            self._rendered = _Rendered(doc["version"], _Body.of(self._html(doc, ""), True), _Body.of(_json(doc), True), towns, doc)
            return self._rendered

    def _search(self, rendered: _Rendered, q: str) -> _Body:
        body = rendered.searches.get(q)
        if body is None:
            body = _Body.of(self._html(rendered.doc, q), True)
            if len(rendered.searches) >= MAX_SEARCHES:
                rendered.searches.pop(next(iter(rendered.searches)))
            rendered.searches[q] = body
        return body

    def _when(self, iso: str | None) -> str:
        if iso is None:
            return ""
        t = datetime.fromisoformat(iso).astimezone(self.tz)
        return t.strftime("%a %b %-d, %-I:%M %p %Z")

    def _html(self, doc: dict[str, Any], q: str) -> bytes:
        towns = doc["towns"]
        if q:
            towns = [t for t in towns if q in t["name"].lower()]
        e = html.escape
        cards = "".join(self._card(t) for t in towns) or f'<li class="none">No town matches “{e(q)}”.</li>'
        summary = _summary(doc["summary"])
        page = _PAGE.format(
            title=e(self.title), version=doc["version"], poll=int(self.poll_seconds * 1000),
            tz=e(str(self.tz.key)), summary=e(summary), summary_class="ok" if summary.startswith("911 is working") else "bad",
            updated_iso=e(doc["updated"] or ""), updated=e(self._when(doc["updated"])), q=e(q), cards=cards,
            css=_CSS, script=_SCRIPT,
        )  # fmt: skip
        return page.encode("utf-8")

    def _card(self, t: dict[str, Any]) -> str:
        e = html.escape
        status = t["status"]
        inst = t["instead"]
        items = []
        for line in inst["business_lines"]:
            items.append(f'<li>Call <a href="{e(line["tel"])}">{e(line["display"])}</a> — {e(line["answered_by"])}'
                         f'{"" if line["hours"] == "24/7" else " (" + e(line["hours"]) + ")"}</li>')  # fmt: skip
        for kind in ("fire", "police"):
            s = inst[f"{kind}_station"]
            if s is not None:
                items.append(f'<li>{kind.title()} station: {e(s["name"])}, {e(s["address"])}, {e(s["town"])} '
                             f'({s["km"]:.1f} km)</li>')  # fmt: skip
        box = inst["alarm_box"]
        if box is not None:
            items.append(f'<li>Fire alarm box {box["number"]}: {e(box["location"])}, {e(box["town"])} '
                         f'({box["km"]:.1f} km)</li>')  # fmt: skip
        since = f'<p class="since">since <time datetime="{e(t["since"] or "")}">{e(self._when(t["since"]))}</time></p>'
        open_attr = "" if status == "working" else " open"
        return (
            f'<li class="town {status}" id="{e(t["id"])}" data-name="{e(t["name"].lower())}">'
            f'<h2>{e(t["name"])} <span class="badge">{_LABELS[status]}</span></h2>{since}'
            f'<p class="msg">{e(t["message"])}</p>'
            f'<details{open_attr}><summary>What to do if 911 does not connect</summary><ul>{"".join(items)}</ul></details>'
            "</li>"
        )

    # --- handlers -------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        q = request.query_params.get("q", "").strip().lower()
        if len(q) > MAX_QUERY:
            return restapi.problem(400, "Bad query", [restapi.Problem("q", f"at most {MAX_QUERY} characters, not {len(q)}")])
        try:
            rendered = self.current()
        except _Unavailable:
            return _unavailable()
        body = rendered.page if not q else self._search(rendered, q)
        return _answer(request, body, "text/html; charset=utf-8", f"h{rendered.version}")

    async def document(self, request: Request) -> Response:
        try:
            rendered = self.current()
        except _Unavailable:
            return _unavailable()
        return _answer(request, rendered.document, "application/json", f"s{rendered.version}")

    async def town(self, request: Request) -> Response:
        town_id = request.path_params["town_id"]
        try:
            rendered = self.current()
        except _Unavailable:
            return _unavailable()
        body = rendered.towns.get(town_id)
        if body is None:
            return restapi.problem(404, "No such town", [restapi.Problem("town_id", f"no town '{town_id[:80]}' on the status board")])
        return _answer(request, body, "application/json", f"t{rendered.version}")


class _Unavailable(Exception):
    pass


def _unavailable() -> Response:
    reply = restapi.problem(503, "Status board not running", [restapi.Problem("", "the 911 status board has not started yet")])
    reply.headers["Retry-After"] = "5"
    return reply


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _matches(header: str, tags: tuple[str, ...]) -> bool:
    """``If-None-Match`` by weak comparison (RFC 9110 13.1.2): ``*`` or any listed tag."""
    for part in header.split(","):
        tag = part.strip()
        if tag == "*" or tag.removeprefix("W/") in tags:
            return True
    return False


def _answer(request: Request, body: _Body, media_type: str, tag: str) -> Response:
    plain, zipped = f'"{tag}"', f'"{tag}.gz"'  # a strong tag per representation
    use_gz = body.gz is not None and "gzip" in request.headers.get("accept-encoding", "").lower()
    etag = zipped if use_gz else plain
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding"}
    inm = request.headers.get("if-none-match")
    if inm is not None and _matches(inm, (plain, zipped)):
        return Response(status_code=304, headers=headers)
    if use_gz:
        headers["Content-Encoding"] = "gzip"
    content = (body.gz if use_gz else body.raw) or b""
    if request.method == "HEAD":
        return Response(status_code=200, headers={**headers, "Content-Length": str(len(content))}, media_type=media_type)
    return Response(content, media_type=media_type, headers=headers)


def _summary(counts: dict[str, int]) -> str:
    down, degraded, total = counts["down"], counts["degraded"], sum(counts.values())
    if not down and not degraded:
        return f"911 is working in all {total} towns."
    parts = []
    if down:
        parts.append(f"down in {down} town{'s' if down != 1 else ''}")
    if degraded:
        parts.append(f"degraded in {degraded} town{'s' if degraded != 1 else ''}")
    return "911 is " + " and ".join(parts) + f" (of {total}). Find your town below."


def status_routes(board: StatusBoard | Callable[[], StatusBoard | None], **options: Any) -> list[Route]:
    """The routes under ``/status/``, to add to a node's Starlette app."""
    return StatusPage(board, **options).routes()


def create_status_app(board: StatusBoard | Callable[[], StatusBoard | None], **options: Any) -> Starlette:
    """A Starlette app serving only the status page (problem JSON for unknown paths)."""
    return Starlette(routes=status_routes(board, **options), exception_handlers={HTTPException: restapi.http_error})


_CSS: Final = """
*{box-sizing:border-box}body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111;background:#f4f4f4}
header,form,main{max-width:46rem;margin:0 auto;padding:.75rem 1rem}header h1{margin:.2rem 0;font-size:1.6rem}
#summary{font-size:1.15rem;font-weight:600;padding:.6rem .8rem;border-radius:.4rem;margin:.4rem 0}
#summary.ok{background:#dff3e4;color:#0b5d1e}#summary.bad{background:#fde2e1;color:#8a1111}
.updated{color:#555;font-size:.9rem;margin:.2rem 0}form{display:flex;gap:.5rem;flex-wrap:wrap;align-items:center}
form label{width:100%;font-weight:600}input[type=search]{flex:1;min-width:0;font-size:1rem;padding:.55rem;border:1px solid #999;border-radius:.3rem}
button{font-size:1rem;padding:.55rem .9rem;border-radius:.3rem;border:1px solid #555;background:#fff}
ul#towns{list-style:none;margin:0;padding:0}li.town{background:#fff;border-left:.45rem solid #2e7d32;border-radius:.3rem;margin:.5rem 0;padding:.55rem .8rem}
li.town.degraded{border-color:#e69500}li.town.down{border-color:#c62828}li.town h2{margin:0;font-size:1.15rem;display:flex;justify-content:space-between;gap:.5rem}
.badge{font-size:.85rem;padding:.1rem .5rem;border-radius:1rem;background:#2e7d32;color:#fff;white-space:nowrap}
.degraded .badge{background:#e69500;color:#111}.down .badge{background:#c62828}
.since,.msg{margin:.25rem 0}.since{color:#555;font-size:.9rem}.working .msg{color:#333}
details ul{margin:.3rem 0;padding-left:1.2rem}a[href^="tel:"]{font-weight:700;white-space:nowrap}
li.none{padding:1rem}.live:not(:empty)::before{content:"· "}@media (max-width:30rem){header h1{font-size:1.35rem}li.town h2{font-size:1.05rem}}
"""

# Progressive: the page reads fine without it. It polls status.json (the browser's cache
# revalidates with If-None-Match, so an unchanged board costs a 304) and redraws.
_SCRIPT: Final = r"""
(function(){
var body=document.body,list=document.getElementById('towns'),q=document.getElementById('q');
var version=+body.dataset.version,tz=body.dataset.tz,poll=+body.dataset.poll;
var L={working:'Working',degraded:'Degraded',down:'Down'};
function e(s){return String(s).replace(/[&<>"']/g,function(c){return{'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#x27;'}[c];});}
function when(iso){if(!iso)return '';var d=new Date(iso);try{return d.toLocaleString('en-US',{timeZone:tz,weekday:'short',month:'short',day:'numeric',hour:'numeric',minute:'2-digit',timeZoneName:'short'});}catch(x){return d.toString();}}
function card(t){var i=t.instead,it=[];
 i.business_lines.forEach(function(l){it.push('<li>Call <a href="'+e(l.tel)+'">'+e(l.display)+'</a> — '+e(l.answered_by)+(l.hours==='24/7'?'':' ('+e(l.hours)+')')+'</li>');});
 ['fire','police'].forEach(function(k){var s=i[k+'_station'];if(s)it.push('<li>'+k[0].toUpperCase()+k.slice(1)+' station: '+e(s.name)+', '+e(s.address)+', '+e(s.town)+' ('+s.km.toFixed(1)+' km)</li>');});
 var b=i.alarm_box;if(b)it.push('<li>Fire alarm box '+b.number+': '+e(b.location)+', '+e(b.town)+' ('+b.km.toFixed(1)+' km)</li>');
 return '<li class="town '+t.status+'" id="'+e(t.id)+'" data-name="'+e(t.name.toLowerCase())+'"><h2>'+e(t.name)+' <span class="badge">'+L[t.status]+'</span></h2>'+
  '<p class="since">since <time datetime="'+e(t.since||'')+'">'+e(when(t.since))+'</time></p><p class="msg">'+e(t.message)+'</p>'+
  '<details'+(t.status==='working'?'':' open')+'><summary>What to do if 911 does not connect</summary><ul>'+it.join('')+'</ul></details></li>';}
function summary(c){var n=c.working+c.degraded+c.down,p=[];if(!c.down&&!c.degraded)return '911 is working in all '+n+' towns.';
 if(c.down)p.push('down in '+c.down+' town'+(c.down!==1?'s':''));if(c.degraded)p.push('degraded in '+c.degraded+' town'+(c.degraded!==1?'s':''));
 return '911 is '+p.join(' and ')+' (of '+n+'). Find your town below.';}
function filter(){var v=q.value.trim().toLowerCase();Array.prototype.forEach.call(list.children,function(li){if(li.dataset.name!==undefined)li.hidden=v!==''&&li.dataset.name.indexOf(v)<0;});}
function draw(d){list.innerHTML=d.towns.map(card).join('');var s=document.getElementById('summary'),t=summary(d.summary);
 s.textContent=t;s.className=(!d.summary.down&&!d.summary.degraded)?'ok':'bad';var u=document.getElementById('updated');u.textContent=when(d.updated);u.setAttribute('datetime',d.updated||'');
 version=d.version;body.dataset.version=String(version);filter();}
var live=document.getElementById('live');
function tick(){fetch('status.json',{cache:'no-cache'}).then(function(r){if(!r.ok)throw new Error(r.status);return r.json();})
 .then(function(d){live.textContent='live';if(d.version!==version)draw(d);})
 .catch(function(){live.textContent='reconnecting';}).then(function(){setTimeout(tick,poll);});}
q.addEventListener('input',filter);q.form.addEventListener('submit',function(ev){ev.preventDefault();filter();});filter();
setTimeout(tick,poll);
})();
"""

_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body data-version="{version}" data-poll="{poll}" data-tz="{tz}">
<header><h1>{title}</h1><p id="summary" class="{summary_class}" role="status" aria-live="polite">{summary}</p>
<p class="updated">Updated <time id="updated" datetime="{updated_iso}">{updated}</time> <span id="live" class="live"></span></p>
<p class="updated">In an emergency, always call 911 first.</p></header>
<form role="search" method="get" action="./"><label for="q">Find your town</label>
<input id="q" name="q" type="search" value="{q}" autocomplete="off" placeholder="Town name"><button type="submit">Search</button></form>
<main><ul id="towns">{cards}</ul></main>
<script>{script}</script>
</body></html>
"""
