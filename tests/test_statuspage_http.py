"""The status page over HTTP (httpx against the Starlette app): cache headers, ETag and 304,
gzip, the JSON's shape, the page without JavaScript, the search, and problem JSON."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import asyncio
import re

import httpx
import pytest

from firebox.alerting.status import StatusBoard, board_from_demo
from firebox.alerting.statuspage import CACHE_CONTROL, create_status_app
from firebox.demo.state import DemoState, generate_state
from firebox.monitor.detector import Outage, OutageScope, OutageState

T0 = 1_741_107_600.0  # 2025-03-04 17:00 UTC


@pytest.fixture(scope="module")
def state() -> DemoState:
    return generate_state(seed=911, n_towns=60)


@pytest.fixture()
def board(state: DemoState) -> StatusBoard:
    return board_from_demo(state, now=T0)


class Client:
    """httpx over the ASGI app, called synchronously; ``Accept-Encoding: identity`` unless
    a test asks for gzip."""

    def __init__(self, app: object) -> None:
        self.transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]

    def request(self, method: str, path: str, *, raw: bool = False, **kw: object) -> httpx.Response:
        async def go() -> httpx.Response:
            headers = {"Accept-Encoding": "identity", **kw.pop("headers", {})}  # type: ignore[dict-item]
            async with httpx.AsyncClient(transport=self.transport, base_url="http://testserver") as c:
                if raw:
                    async with c.stream(method, path, headers=headers, **kw) as s:  # type: ignore[arg-type]
                        s._raw = b"".join([chunk async for chunk in s.aiter_raw()])  # type: ignore[attr-defined]
                        return s
                return await c.request(method, path, headers=headers, **kw)  # type: ignore[arg-type]

        return asyncio.run(go())

    def get(self, path: str, **kw: object) -> httpx.Response:
        return self.request("GET", path, **kw)

    def head(self, path: str, **kw: object) -> httpx.Response:
        return self.request("HEAD", path, **kw)


@pytest.fixture()
def client(board: StatusBoard) -> Iterator[Client]:
    yield Client(create_status_app(board))


def cut(board: StatusBoard, psap_id: str, state: OutageState = OutageState.CONFIRMED) -> None:
    o = Outage(id=f"psap-{psap_id}-1", scope=OutageScope.PSAP, key=psap_id, state=state, started=T0 + 60,
               cause="test calls get no answer", updated=T0 + 60)  # fmt: skip
    board.apply_outage(o.as_dict(), T0 + 60)


def test_json_shape_and_cache_headers(client: Client, board: StatusBoard, state: DemoState) -> None:
    r = client.get("/status/status.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == CACHE_CONTROL == "public, max-age=5, stale-while-revalidate=30"
    assert r.headers["etag"] == f'"s{board.version}"' and r.headers["vary"] == "Accept-Encoding"
    doc = r.json()
    assert set(doc) == {"version", "updated", "summary", "towns"}
    assert doc["summary"] == {"working": 60, "degraded": 0, "down": 0} and len(doc["towns"]) == 60
    town = doc["towns"][0]
    assert set(town) == {"id", "name", "status", "since", "psap", "outages", "message", "instead"}
    assert set(town["instead"]) == {"business_lines", "fire_station", "police_station", "alarm_box"}
    line = town["instead"]["business_lines"][0]
    assert {"number", "display", "tel", "answered_by", "hours", "route"} <= set(line)
    assert town["instead"]["fire_station"]["km"] >= 0 and town["instead"]["police_station"]["name"]
    one = client.get(f"/status/towns/{town['id']}.json")
    assert one.status_code == 200 and one.json() == town and one.headers["etag"] == f'"t{board.version}"'


def test_etag_304_and_a_new_version_after_a_cut(client: Client, board: StatusBoard, state: DemoState) -> None:
    r = client.get("/status/status.json")
    tag = r.headers["etag"]
    again = client.get("/status/status.json", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    assert again.headers["cache-control"] == CACHE_CONTROL
    assert client.get("/status/status.json", headers={"If-None-Match": f'"x", W/{tag}'}).status_code == 304
    assert client.get("/status/status.json", headers={"If-None-Match": "*"}).status_code == 304
    psap = next(p for p in state.psaps if len(p.towns) >= 3)
    cut(board, psap.id)
    fresh = client.get("/status/status.json", headers={"If-None-Match": tag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != tag
    doc = fresh.json()
    assert doc["summary"]["down"] == len(psap.towns)
    assert [t["id"] for t in doc["towns"][: len(psap.towns)]] == sorted(
        psap.towns, key=lambda t: (next(x["name"] for x in doc["towns"] if x["id"] == t), t)
    )
    assert all(t["status"] == "down" for t in doc["towns"][: len(psap.towns)])
    # Same version, same bytes: the page is rendered once per version.
    assert client.get("/status/status.json").content == fresh.content


def test_gzip_variant(client: Client) -> None:
    r = client.get("/status/status.json", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.headers["etag"].endswith('.gz"')
    assert json.loads(r.content)["summary"]["working"] == 60  # httpx decoded it
    plain = client.get("/status/status.json", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    # A cache holding either variant revalidates with its own tag.
    assert client.get("/status/status.json", headers={"If-None-Match": plain.headers["etag"],
                                                      "Accept-Encoding": "gzip"}).status_code == 304  # fmt: skip
    r = client.get("/status/", raw=True, headers={"Accept-Encoding": "gzip"})
    assert gzip.decompress(r._raw).startswith(b"<!doctype html>")  # type: ignore[attr-defined]


def test_html_page_reads_without_javascript(client: Client, board: StatusBoard, state: DemoState) -> None:
    psap = next(p for p in state.psaps if len(p.towns) >= 3)
    cut(board, psap.id)
    r = client.get("/status/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["etag"] == f'"h{board.version}"'
    page = r.text
    assert '<meta name="viewport" content="width=device-width,initial-scale=1">' in page
    assert f"911 is down in {len(psap.towns)} towns (of 60)" in page
    first = state.town(psap.towns[0]).title
    # The towns not working come first, each with its business lines as tel: links.
    first_card = page.index('class="town down"')
    assert first_card < page.index('class="town working"')
    assert first in page and f'href="tel:+1{psap.business_line}"' in page
    assert len(page) < 120_000  # small: a phone on a weak signal
    assert client.get("/status").status_code == 308


def test_search_and_problems(client: Client, state: DemoState) -> None:
    name = state.towns[5].title
    r = client.get("/status/", params={"q": name[:5]})
    assert r.status_code == 200
    assert name in r.text and len(re.findall(r'<li class="town (?:working|degraded|down)"', r.text)) == sum(1 for t in state.towns if name[:5].lower() in t.title.lower())
    assert "No town matches" in client.get("/status/", params={"q": "zzzz"}).text
    bad = client.get("/status/", params={"q": "x" * 61})
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["errors"][0]["member"] == "q"
    missing = client.get("/status/towns/town-99.json")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"] == "town_id: no town 'town-99' on the status board"
    assert client.get("/status/nothing").headers["content-type"] == "application/problem+json"
    head = client.head("/status/status.json")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 1000


def test_not_started_is_503() -> None:
    r = Client(create_status_app(lambda: None)).get("/status/status.json")
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["title"] == "Status board not running"
