"""The Logging Service over HTTP (NENA-STA-010.3 section 4.12.3): signed events (EdDSA with
Ed25519 and Ed448 and an x5c chain) and unsigned ones, the 4xx problem JSON naming each
wrong member, 409 for a repeat, queries with paging, conversations in order; and the real
``LogSender`` delivering to the service under uvicorn on 127.0.0.1, with two services, one
of them down at first, and a spool replayed after a sender crash."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn

from firebox import jws as jwslib
from firebox.logging.events import new_call_id, new_incident_id
from firebox.logging.sender import LogSender
from firebox.logging.service import LoggingService
from firebox.logging.spool import PROGRESS_FILE
from firebox.logging.store import Filter, LogStore, open_store
from firebox.logging.testing import Signer, call_events

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LOGID = "urn:emergency:uid:logid:"
SIGNERS = {k: Signer(k) for k in ("ed25519", "ed448", "none")}


@pytest.fixture
def store(tmp_path) -> AsyncIterator[LogStore]:
    s = open_store(f"sqlite:///{tmp_path}/log.db")
    yield s
    s.close()


@pytest.fixture
async def client(store) -> AsyncIterator[httpx.AsyncClient]:
    app = LoggingService(store, fqdn="logs.example.net").app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://logs") as c:
        yield c


def a_call(start: datetime = T0, **kw) -> tuple[str, str, list[dict]]:
    call, incident = new_call_id("bcf.example.net"), new_incident_id("bcf.example.net")
    return call, incident, call_events(call, incident, start=start, **kw)


async def post(client: httpx.AsyncClient, body: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/LogEvents", content=content, headers={"Content-Type": "application/json"})


def members(reply: httpx.Response) -> list[str]:
    assert reply.headers["content-type"] == "application/problem+json"
    body = reply.json()
    assert body["status"] == reply.status_code
    return [e["member"] for e in body["errors"]]


@pytest.mark.parametrize("kind", ["ed25519", "ed448", "none"])
async def test_signed_and_unsigned_events_are_logged(client, kind):
    _, _, events = a_call()
    token = SIGNERS[kind].sign(events[0])
    if kind != "none":
        assert len(jwslib.b64url_decode(token["signature"])) == (64 if kind == "ed25519" else 114)
        assert "x5c" in json.loads(jwslib.b64url_decode(token["protected"]))
    reply = await post(client, token)
    assert reply.status_code == 201, reply.text
    log_id = reply.json()["logEventId"]
    assert log_id.startswith(LOGID) and log_id.endswith(":logs.example.net")
    got = await client.get(f"/LogEvents/{log_id}")
    assert got.status_code == 200 and got.json() == token
    assert jwslib.verify(got.content, allow_none=True).payload == events[0]


async def test_unsigned_refused_when_not_allowed(store):
    app = LoggingService(store, allow_none=False).app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://logs") as c:
        reply = await post(c, SIGNERS["none"].sign(a_call()[2][0]))
    assert reply.status_code == 438 and members(reply) == ["alg"]


async def test_bad_signatures_are_named(client):
    event = a_call()[2][0]
    token = SIGNERS["ed25519"].sign(event)
    sig = bytearray(jwslib.b64url_decode(token["signature"]))
    sig[5] ^= 1
    reply = await post(client, {**token, "signature": jwslib.b64url_encode(bytes(sig))})
    assert reply.status_code == 434 and members(reply) == ["signature"]
    assert "does not verify" in reply.json()["errors"][0]["detail"]
    forged = jwslib.b64url_encode(json.dumps({**event, "agencyId": "evil.net"}).encode())
    reply = await post(client, {**token, "payload": forged})
    assert reply.status_code == 434 and members(reply) == ["signature"]
    # signed by one key, x5c of another
    other = SIGNERS["ed448"].sign(event)
    header = json.loads(jwslib.b64url_decode(other["protected"]))
    header["x5c"] = [base64.b64encode(c.public_bytes(jwslib.serialization.Encoding.DER)).decode()
                     for c in SIGNERS["ed25519"].x5c]  # fmt: skip
    protected = jwslib.b64url_encode(json.dumps(header).encode())
    reply = await post(client, {**other, "protected": protected})
    assert reply.status_code == 434 and members(reply) == ["signature"]


async def test_trust_anchors(store):
    events = a_call()[2]
    trusted = LoggingService(store, trust=[SIGNERS["ed25519"].ca]).app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=trusted), base_url="http://logs") as c:
        assert (await post(c, SIGNERS["ed25519"].sign(events[0]))).status_code == 201
        reply = await post(c, SIGNERS["ed448"].sign(events[1]))
        assert reply.status_code == 434 and members(reply) == ["x5c"]
        reply = await post(c, SIGNERS["none"].sign(events[2]))
        assert reply.status_code == 201  # alg none stays allowed unless allow_none=False


async def test_bad_log_events_name_every_wrong_member(client):
    event = a_call()[2][4]  # a RouteLogEvent
    del event["elementId"], event["recipientUri"]
    event["timestamp"] = "yesterday"
    event["agencyId"] = "not a domain"
    reply = await post(client, SIGNERS["ed25519"].sign(event))
    assert reply.status_code == 460
    assert set(members(reply)) == {"elementId", "recipientUri", "timestamp", "agencyId"}
    assert reply.json()["title"] == "Bad LogEvent"
    reply = await post(client, SIGNERS["none"].sign({**a_call()[2][0], "clientAssignedIdentifier": " "}))
    assert reply.status_code == 460 and members(reply) == ["clientAssignedIdentifier"]
    reply = await post(client, SIGNERS["none"].sign({"logEventType": "NoSuchLogEvent"}))
    assert reply.status_code == 460 and {"logEventType", "timestamp", "elementId", "agencyId"} <= set(members(reply))


@pytest.mark.parametrize(
    ("body", "member"),
    [
        (b"{not json", ""),
        (b"[1, 2]", ""),
        ({"payload": "e30", "signature": ""}, "protected"),
        ({"protected": "eyJhbGciOiJub25lIn0", "payload": "e30=", "signature": ""}, "payload"),
        ({"protected": "eyJhbGciOiJub25lIn0", "payload": "e30", "signature": "", "header": {}}, "header"),
        ({"protected": "eyJhbGciOiJub25lIn0", "payload": "e30", "signature": 1.5}, "signature"),
        ({"protected": "eyJhbGciOiJub25lIn0", "payload": "e30", "signature": "a+b"}, "signature"),
    ],
)
async def test_not_a_jws(client, body, member):
    reply = await post(client, body)
    assert reply.status_code == 400 and members(reply) == [member]


async def test_repeat_is_409_with_the_original_id(client, store):
    event = a_call()[2][1]
    first = await post(client, SIGNERS["ed25519"].sign(event))
    assert first.status_code == 201
    again = await post(client, SIGNERS["ed448"].sign(event))  # same clientAssignedIdentifier
    assert again.status_code == 409 and members(again) == ["clientAssignedIdentifier"]
    assert again.json()["logEventId"] == first.json()["logEventId"]
    assert store.count() == 1


async def test_concurrent_posts_are_group_committed(client, store):
    events = [e for _ in range(10) for e in a_call()[2]]
    replies = await asyncio.gather(*(post(client, SIGNERS["none"].sign(e)) for e in events))
    assert [r.status_code for r in replies] == [201] * len(events)
    assert len({r.json()["logEventId"] for r in replies}) == len(events)
    assert store.count() == len(events) and store.verify() is None


async def test_queries_and_paging(client):
    calls = [a_call(T0 + timedelta(minutes=i), element=f"esrp{i % 2}.example.net") for i in range(3)]
    ids = []
    for _, _, events in calls:
        for e in events:
            r = await post(client, SIGNERS["none"].sign(e))
            ids.append(r.json()["logEventId"])
    page = (await client.get("/LogEvents", params={"limit": 10, "start": 11})).json()
    assert (page["count"], page["totalCount"]) == (10, 27)
    assert [c["logEventId"] for c in page["logEventContainers"]] == ids[10:20]
    last = (await client.get("/LogEvents", params={"limit": 10, "start": 21})).json()
    assert (last["count"], last["totalCount"]) == (7, 27)
    typed = (await client.get("/LogEvents", params={"logEventType": "RouteLogEvent"})).json()
    assert typed["totalCount"] == 3
    assert all(jwslib.verify(c["logEvent"], allow_none=True).payload["logEventType"] == "RouteLogEvent"
               for c in typed["logEventContainers"])  # fmt: skip
    mine = (await client.get("/LogEvents", params={"elementId": "esrp1.example.net"})).json()
    assert mine["totalCount"] == 9
    window = {"startTime": "2026-11-24T07:01:00-05:00", "endTime": "2026-11-24T12:01:30Z"}
    assert (await client.get("/LogEvents", params=window)).json()["totalCount"] == 9
    assert (await client.get("/CallIds", params=window)).json() == {"count": 1, "totalCount": 1, "callIds": [calls[1][0]]}
    incidents = (await client.get("/IncidentIds")).json()
    assert incidents["incidentIds"] == [c[1] for c in calls]
    by_incident = (await client.get("/CallIds", params={"incidentId": calls[2][1]})).json()
    assert by_incident["callIds"] == [calls[2][0]]
    lids = (await client.get("/LogEventIds", params={"callId": calls[0][0], "limit": 4})).json()
    assert lids == {"count": 4, "totalCount": 9, "logEventIds": ids[:4]}
    missing = await client.get(f"/LogEvents/{LOGID}nothing:logs.example.net")
    assert missing.status_code == 404 and members(missing) == ["logEventId"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": "0"}, ["limit"]),
        ({"limit": "ten", "start": "-1"}, ["limit", "start"]),
        ({"startTime": "noon"}, ["startTime"]),
        ({"startTime": "2026-11-24T12:00:00Z", "endTime": "2026-11-24T11:00:00Z"}, ["endTime"]),
        ({"logEventType": "FooLogEvent"}, ["logEventType"]),
    ],
)
async def test_bad_queries_name_each_parameter(client, params, named):
    reply = await client.get("/LogEvents", params=params)
    assert reply.status_code == 400 and members(reply) == named


async def test_conversation_in_order(client):
    call, _, events = a_call()
    shuffled = events[:]
    random.Random(5).shuffle(shuffled)
    for e in shuffled:
        assert (await post(client, SIGNERS["ed25519"].sign(e))).status_code == 201
    await post(client, SIGNERS["none"].sign(a_call()[2][0]))  # another call
    for path in (f"/Conversations/{call}", f"/Conversations?callId={call}"):
        conv = (await client.get(path)).json()
        assert conv["count"] == conv["totalCount"] == len(events)
        payloads = [jwslib.verify(c["logEvent"]).payload for c in conv["logEventContainers"]]
        assert payloads == events
    nothing = await client.get("/Conversations/urn:emergency:uid:callid:none:example.net")
    assert nothing.status_code == 404 and members(nothing) == ["callId"]


async def test_a_failing_store_answers_503_so_that_senders_retry(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/gone.db")
    app = LoggingService(store).app()
    store.close()  # the disk went away, say
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://logs") as c:
        reply = await post(c, SIGNERS["none"].sign(a_call()[2][0]))
    assert reply.status_code == 503 and reply.headers["content-type"] == "application/problem+json"


async def test_unknown_paths_and_methods_answer_problem_json(client):
    reply = await client.get("/Nothing/here")
    assert reply.status_code == 404 and reply.headers["content-type"] == "application/problem+json"
    reply = await client.put("/LogEvents", content=b"{}")
    assert reply.status_code == 405 and reply.json()["status"] == 405 and "GET" in reply.headers["allow"]


async def test_versions_and_openapi(client):
    versions = (await client.get("/Versions")).json()
    assert versions["versions"][0]["major"] == 1 and versions["versions"][0]["vendor"] == "firebox"
    spec = (await client.get("/openapi.json")).json()
    assert {"/LogEvents", "/LogEvents/{logEventId}", "/LogEventIds", "/CallIds", "/IncidentIds",
            "/Conversations/{callId}", "/Versions"} == set(spec["paths"])  # fmt: skip


# --- the real LogSender against the service under uvicorn ------------------------------------------


class Served:
    """The service under uvicorn on a socket reserved in advance (refusing connections
    until ``start``)."""

    def __init__(self, store: LogStore):
        self.service = LoggingService(store, fqdn="logs.example.net")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.sock.listen(128)
        config = uvicorn.Config(self.service.app(), log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        for _ in range(500):
            if self.server.started:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the Logging Service did not start")

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await asyncio.wait_for(self.task, 10)
        self.sock.close()


async def test_log_sender_delivers_to_two_services_one_down_then_drains(tmp_path):
    stores = [open_store(f"sqlite:///{tmp_path}/a.db"), open_store(f"sqlite:///{tmp_path}/b.db")]
    up, down = Served(stores[0]), Served(stores[1])
    signer = SIGNERS["ed25519"]
    try:
        await up.start()
        events = [e for _ in range(4) for e in a_call()[2]]
        async with LogSender([up.url, down.url], str(tmp_path / "spool"), signer.key, "esrp.example.net",
                             x5c=signer.x5c, backoff_base=0.02, backoff_max=0.2, fsync=False) as sender:  # fmt: skip
            for e in events[:20]:
                await sender.send(e)
            for _ in range(1000):  # the live one gets everything while the other is down
                if stores[0].count() == 20:
                    break
                await asyncio.sleep(0.01)
            assert stores[0].count() == 20 and stores[1].count() == 0 and sender.backlog(down.url) == 20
            await down.start()
            for e in events[20:]:
                await sender.send(e)
            await sender.drain(timeout=20)
            assert not sender.rejections
        for s in stores:
            page = s.query(Filter(), limit=1000)
            got = [json.loads(jwslib.b64url_decode(e.jws_object()["payload"])) for e in page.items]
            assert [g["clientAssignedIdentifier"] for g in got] == [e["clientAssignedIdentifier"] for e in events]
            assert s.verify() is None
        # a sender that crashed before saving its progress sends everything again: 409s, no copies
        (tmp_path / "spool" / PROGRESS_FILE).unlink()
        async with LogSender([up.url, down.url], str(tmp_path / "spool"), signer.key, "esrp.example.net",
                             x5c=signer.x5c, backoff_base=0.02, fsync=False, compact_every=10**6) as again:  # fmt: skip
            await again.drain(timeout=20)
            assert all(d.duplicates == len(events) for d in again.core.dests.values())
        assert [s.count() for s in stores] == [len(events), len(events)]
    finally:
        await up.stop()
        await down.stop()
        for s in stores:
            s.close()
