"""Log event delivery that loses nothing (NENA-STA-010.3 section 4.12): the durable spool
(torn lines, reopening, compaction, progress), the sans-I/O ``SenderCore`` (order, in-flight
limit, backoff, outcomes), and ``LogSender`` against two real Logging Service stand-ins
served by uvicorn on 127.0.0.1, one of them down at first, across a simulated crash."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from firebox import jws
from firebox.logging.events import (
    CallSignalingMessageLogEvent,
    LogEventError,
    from_json,
    new_call_id,
    new_incident_id,
)
from firebox.logging.sender import LogSender, Outcome, SenderCore, classify
from firebox.logging.spool import (
    PROGRESS_FILE,
    SPOOL_FILE,
    Progress,
    Spool,
    SpoolLocked,
)

FQDN = "bcf.example.net"
CALL, INCIDENT = new_call_id(FQDN), new_incident_id(FQDN)
KEY = Ed25519PrivateKey.generate()
FAST = {"backoff_base": 0.02, "backoff_max": 0.1, "timeout": 3.0, "fsync": False}


def event(n: int, **kw) -> CallSignalingMessageLogEvent:
    return CallSignalingMessageLogEvent(
        element_id=FQDN, agency_id="example.net", call_id=CALL, incident_id=INCIDENT,
        text=f"MESSAGE sip:psap@example.net SIP/2.0\r\nCSeq: {n} MESSAGE\r\n\r\n", direction="outgoing", **kw,
    )  # fmt: skip


def token(n: int) -> dict:
    return jws.sign({"n": n}, None)


# --- the spool ----------------------------------------------------------------------------------


def test_spool_append_read_reopen(tmp_path):
    with Spool(tmp_path) as spool:
        assert spool.append([("id-1", token(1)), ("id-2", token(2))]) == [1, 2]
        assert spool.append([("id-3", token(3))]) == [3]
        assert spool.append([]) == []
        assert spool.read(2).log_event_id == "id-2" and spool.read(2).jws == token(2)
    with Spool(tmp_path) as spool:
        assert (spool.first_seq, spool.last_seq, len(spool)) == (1, 3, 3)
        assert [r.log_event_id for r in spool.records()] == ["id-1", "id-2", "id-3"]
        assert spool.append([("id-4", token(4))]) == [4]
        with pytest.raises(KeyError):
            spool.read(9)


def test_torn_last_line_is_ignored_and_cut_off(tmp_path):
    with Spool(tmp_path) as spool:
        spool.append([("id-1", token(1)), ("id-2", token(2))])
    path = tmp_path / SPOOL_FILE
    good = path.read_bytes()
    with path.open("ab") as f:  # a crash in the middle of writing the third line
        f.write(b'{"seq":3,"id":"id-3","jws":{"protected":"eyJhbGciOiJub25lIn0","payl')
    with Spool(tmp_path) as spool:
        assert spool.last_seq == 2 and [r.log_event_id for r in spool.records()] == ["id-1", "id-2"]
        assert path.read_bytes() == good  # the torn tail is gone, so appends start clean
        assert spool.append([("id-3b", token(3))]) == [3]
    with Spool(tmp_path) as spool:
        assert [r.log_event_id for r in spool.records()] == ["id-1", "id-2", "id-3b"]


def test_unreadable_middle_line_is_skipped(tmp_path):
    with Spool(tmp_path) as spool:
        spool.append([("id-1", token(1))])
    with (tmp_path / SPOOL_FILE).open("ab") as f:
        f.write(b"\x00\x00garbage\n")
    with Spool(tmp_path) as spool:
        spool.append([("id-2", token(2))])
    with Spool(tmp_path) as spool:
        assert spool.skipped == 1 and spool.seqs() == [1, 2]


def test_compaction_keeps_numbering(tmp_path):
    with Spool(tmp_path) as spool:
        spool.append([(f"id-{i}", token(i)) for i in range(1, 11)])
        size = (tmp_path / SPOOL_FILE).stat().st_size
        assert spool.compact(6) == 6
        assert spool.compact(4) == 0  # already done
        assert spool.seqs() == [7, 8, 9, 10] and spool.read(8).log_event_id == "id-8"
        assert (tmp_path / SPOOL_FILE).stat().st_size < size
        assert spool.append([("id-11", token(11))]) == [11]
        with pytest.raises(KeyError):
            spool.read(6)
    with Spool(tmp_path) as spool:
        assert (spool.compacted_through, spool.first_seq, spool.last_seq) == (6, 7, 11)
        spool.compact(11)
        assert len(spool) == 0 and spool.first_seq == 12
    with Spool(tmp_path) as spool:  # empty but still counting from where it was
        assert (spool.last_seq, spool.first_seq) == (11, 12)
        assert spool.append([("id-12", token(12))]) == [12]


def test_progress_file(tmp_path):
    with Spool(tmp_path) as spool:
        assert spool.load_progress() == {}
        spool.save_progress({"http://a": Progress(3, (5, 6)), "http://b": Progress(0)})
    with Spool(tmp_path) as spool:
        assert spool.load_progress() == {"http://a": Progress(3, (5, 6)), "http://b": Progress(0)}
        (tmp_path / PROGRESS_FILE).write_text("{not json")
        assert spool.load_progress() == {}
        (tmp_path / PROGRESS_FILE).write_text('{"destinations": {"http://a": {"through": -1}, "http://b": 3}}')
        assert spool.load_progress() == {}


def test_one_spool_one_sender(tmp_path):
    with Spool(tmp_path), pytest.raises(SpoolLocked):
        Spool(tmp_path)
    Spool(tmp_path).close()  # released on close


# --- the sans-I/O core -------------------------------------------------------------------------

A, B = "http://a", "http://b"


def sends(core: SenderCore, now: float = 0.0) -> list[tuple[str, int]]:
    return [(s.destination, s.seq) for s in core.poll(now)]


def test_classify():
    assert [classify(s) for s in (201, 200, 409, 400, 404, 460, 434, 408, 429, 500, 503, 302)] == [
        Outcome.DELIVERED, Outcome.DELIVERED, Outcome.DUPLICATE, Outcome.REJECTED, Outcome.REJECTED,
        Outcome.REJECTED, Outcome.REJECTED, Outcome.FAILED, Outcome.FAILED, Outcome.FAILED, Outcome.FAILED,
        Outcome.FAILED,
    ]  # fmt: skip


def test_core_in_order_one_at_a_time():
    core = SenderCore([A, B], last_seq=3)
    assert sends(core) == [(A, 1), (B, 1)]
    assert sends(core) == []  # one in flight each
    core.delivered(A, 1, 0.1)
    assert sends(core, 0.1) == [(A, 2)]
    core.delivered(B, 1, 0.1, duplicate=True)
    core.delivered(A, 2, 0.2)
    assert sends(core, 0.2) == [(A, 3), (B, 2)]
    assert core.backlog(A) == 1 and core.backlog(B) == 2 and not core.idle
    core.appended(4)
    core.delivered(A, 3, 0.3)
    assert sends(core, 0.3) == [(A, 4)]
    assert core.dests[B].duplicates == 1 and core.dests[A].delivered == 3


def test_core_window_and_out_of_order_completion():
    core = SenderCore([A], last_seq=6, max_in_flight=3)
    assert sends(core) == [(A, 1), (A, 2), (A, 3)]
    core.delivered(A, 3, 0)
    core.delivered(A, 2, 0)
    assert core.progress() == {A: Progress(0, (2, 3))}
    assert sends(core) == [(A, 4), (A, 5)]
    core.delivered(A, 1, 0)
    assert core.progress() == {A: Progress(3)}
    assert core.min_through() == 3


def test_core_backoff_is_exponential_and_capped_and_retries_first():
    core = SenderCore([A, B], last_seq=2, backoff_base=1.0, backoff_max=5.0)
    assert sends(core, 0) == [(A, 1), (B, 1)]
    core.delivered(B, 1, 0)
    waits = []
    now = 0.0
    for _ in range(5):
        assert core.failed(A, 1, now, "connection refused")
        retry_at = core.dests[A].retry_at
        waits.append(retry_at - now)
        assert sends(core, retry_at - 0.001) in ([], [(B, 2)])  # A waits; B carries on
        now = retry_at
        assert (A, 1) in sends(core, now)  # the failed event first, not event 2
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert core.next_wakeup(now) is None  # everything is in flight
    core.delivered(A, 1, now)
    assert core.dests[A].failures == 0 and sends(core, now) == [(A, 2)]
    assert core.dests[A].last_error == "connection refused"


def test_core_next_wakeup():
    core = SenderCore([A], last_seq=0, backoff_base=2.0, backoff_max=2.0)
    assert core.next_wakeup(0) is None and core.idle
    core.appended(1)
    assert core.next_wakeup(5) == 5
    sends(core, 5)
    assert core.next_wakeup(5) is None
    core.failed(A, 1, 5, "timeout")
    assert core.next_wakeup(6) == 7
    assert sends(core, 6) == [] and sends(core, 7) == [(A, 1)]


def test_core_rejection_is_final():
    core = SenderCore([A], last_seq=2)
    sends(core)
    assert core.rejected(A, 1, 0, 460, "Bad LogEvent")
    assert sends(core) == [(A, 2)]
    core.delivered(A, 2, 0)
    assert core.idle and core.rejections[0].status == 460 and core.dests[A].rejected == 1


def test_core_max_attempts_turns_into_rejection():
    core = SenderCore([A], last_seq=1, backoff_base=1, backoff_max=1, max_attempts=2)
    sends(core, 0)
    core.failed(A, 1, 0, "HTTP 500")
    assert sends(core, 1) == [(A, 1)]
    core.failed(A, 1, 1, "HTTP 500")
    assert core.idle and core.rejections[0].reason == "gave up after 2 attempts: HTTP 500"


def test_core_ignores_answers_for_what_is_not_in_flight():
    core = SenderCore([A], last_seq=1)
    assert not core.delivered(A, 1, 0)
    assert not core.failed("http://elsewhere", 1, 0, "x")
    sends(core)
    assert core.delivered(A, 1, 0) and not core.delivered(A, 1, 0)


def test_core_resumes_from_saved_progress():
    saved = {A: Progress(4, (6,)), "http://gone": Progress(1)}
    core = SenderCore([A, B], last_seq=8, first_seq=3, progress=saved, max_in_flight=8)
    # A: 5, 7, 8 are left (6 was done above 4); B (new) gets everything still spooled.
    assert sends(core) == [(A, 5), (A, 7), (A, 8), (B, 3), (B, 4), (B, 5), (B, 6), (B, 7), (B, 8)]
    assert set(core.progress()) == {A, B}


def test_core_jitter_shortens_the_wait_only():
    core = SenderCore([A], last_seq=1, backoff_base=10, backoff_max=10, jitter=0.5, rng=random.Random(7))
    sends(core)
    core.failed(A, 1, 0, "x")
    assert 5 <= core.dests[A].retry_at <= 10


def test_core_arguments():
    for kw in ({"max_in_flight": 0}, {"backoff_base": 0}, {"backoff_base": 2, "backoff_max": 1}, {"jitter": 1},
               {"max_attempts": 0}):  # fmt: skip
        with pytest.raises(ValueError):
            SenderCore([A], **kw)
    with pytest.raises(ValueError):
        SenderCore([])
    with pytest.raises(ValueError):
        SenderCore([A, A])


# --- Logging Service stand-ins served by uvicorn -------------------------------------------------


class LoggingService:
    """``POST /LogEvents``: verifies the JWS, validates the event, answers 201 with its id,
    409 for an id it already has. ``answer`` may override the status for a request."""

    def __init__(
        self,
        answer: Callable[[int, str], int | None] | None = None,
        *,
        hold_first: bool = False,
        verify: Callable[[bytes], jws.Verified] | None = None,
    ):
        self.stored: list[str] = []  # clientAssignedIdentifier of each stored event, in order
        self.posts: list[str] = []  # of every POST that reached the service
        self.answer = answer
        self.hold_first = hold_first  # answer the first request only once a second one came
        self.verify = verify or (lambda body: jws.verify(body, keys=[KEY.public_key()]))
        self.app = Starlette(routes=[Route("/LogEvents", self.log_event, methods=["POST"])])

    async def log_event(self, request: Request) -> JSONResponse:
        try:
            verified = self.verify(await request.body())
        except jws.JwsError as exc:
            return JSONResponse({"detail": str(exc)}, 434)
        try:
            event = from_json(verified.payload)
        except LogEventError as exc:
            return JSONResponse(exc.problem_json(), 400)
        log_id = event.client_assigned_identifier
        assert log_id is not None
        self.posts.append(log_id)
        status = self.answer(len(self.posts), log_id) if self.answer else None
        if status is not None:
            return JSONResponse({"detail": "as told"}, status)
        if log_id in self.stored:
            return JSONResponse({"detail": "duplicate logEventId"}, 409)
        self.stored.append(log_id)
        if self.hold_first and len(self.posts) == 1:
            await until(lambda: len(self.posts) > 1, "a second request", timeout=5)
        return JSONResponse({"logEventId": log_id}, 201)


class Servers:
    def __init__(self) -> None:
        self._running: list[tuple[uvicorn.Server, asyncio.Task]] = []
        self._sockets: list[socket.socket] = []

    def reserve(self) -> tuple[socket.socket, str]:
        """A bound socket not listening yet: connections to its URL are refused. (The
        protocol is named so that asyncio sets TCP_NODELAY on accepted connections; with
        proto 0 it does not, and Nagle plus delayed ACKs add 40 ms to every answer.)"""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self._sockets.append(sock)
        return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def start(self, service: LoggingService, sock: socket.socket | None = None) -> str:
        if sock is None:
            sock, _ = self.reserve()
        sock.listen(64)
        server = uvicorn.Server(uvicorn.Config(service.app, log_level="warning", lifespan="off",
                                               timeout_graceful_shutdown=2))  # fmt: skip
        task = asyncio.create_task(server.serve(sockets=[sock]))
        for _ in range(500):  # bounded wait for start-up
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "stand-in did not start"
        self._running.append((server, task))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def stop(self) -> None:
        for server, _ in self._running:
            server.should_exit = True
        for _, task in self._running:
            await asyncio.wait_for(task, 10)
        for sock in self._sockets:
            sock.close()


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    s = Servers()
    yield s
    await s.stop()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait (bounded) for ``predicate``."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def saved_through(spool_dir: Path, url: str) -> int:
    try:
        data = json.loads((spool_dir / PROGRESS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return 0
    return data["destinations"].get(url, {}).get("through", 0)


# --- LogSender end to end ---------------------------------------------------------------------------


async def test_every_event_reaches_both_in_order_one_down_at_first(servers, tmp_path):
    up, late = LoggingService(), LoggingService()
    up_url = await servers.start(up)
    late_sock, late_url = servers.reserve()  # nothing listens there yet
    async with LogSender([up_url, late_url], str(tmp_path), KEY, FQDN, **FAST) as sender:
        ids = [await asyncio.wait_for(sender.send(event(n)), 5) for n in range(20)]
        await until(lambda: sender.backlog(up_url) == 0, "the first Logging Service to have everything")
        assert up.stored == ids and late.posts == [] and sender.backlog(late_url) == 20
        assert sender.core.dests[late_url].failed >= 1
        await servers.start(late, late_sock)  # the second one comes up
        ids += [await sender.send(event(n)) for n in range(20, 30)]
        await sender.drain(timeout=10)
        assert sender.rejections == []
    assert up.stored == ids and late.stored == ids  # everything, in order
    assert up.posts == ids and late.posts == ids  # no duplicates: nothing sent twice
    assert len(set(ids)) == 30 and all(i.startswith("urn:emergency:uid:logid:") for i in ids)


async def test_events_spooled_before_a_crash_are_delivered_after_restart(servers, tmp_path):
    first, second = LoggingService(), LoggingService()
    first_url = await servers.start(first)
    second_sock, second_url = servers.reserve()
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    sender = LogSender([first_url, second_url], str(live), KEY, FQDN, **FAST)
    ids = [await sender.send(event(n)) for n in range(12)]
    await until(lambda: saved_through(live, first_url) == 12, "progress of the first service on disk")
    # The crash: the disk as it is now, plus a last line torn in the middle of a write.
    shutil.copytree(live, crashed)
    with (crashed / SPOOL_FILE).open("ab") as f:
        f.write(b'{"seq":13,"id":"urn:emergency:uid:logid:torn:bcf.example.net","jws":{"prot')
    await sender.aclose()

    await servers.start(second, second_sock)
    async with LogSender([first_url, second_url], str(crashed), KEY, FQDN, **FAST) as restarted:
        assert restarted.spool.last_seq == 12  # the torn line is not an event
        await restarted.drain(timeout=10)
        assert second.stored == ids and first.posts == ids  # nothing sent twice to the first
        more = [await restarted.send(event(n)) for n in range(12, 17)]
        await restarted.drain(timeout=10)
    assert first.stored == ids + more and second.stored == ids + more
    assert first.posts == ids + more and second.posts == ids + more


async def test_restart_after_delivery_sends_nothing_again_and_compacts(servers, tmp_path):
    a, b = LoggingService(), LoggingService()
    urls = [await servers.start(a), await servers.start(b)]
    async with LogSender(urls, str(tmp_path), KEY, FQDN, compact_every=4, **FAST) as sender:
        ids = [await sender.send(event(n)) for n in range(10)]
        await sender.drain(timeout=10)
        assert sender.spool.compacted_through >= 8 and len(sender.spool) <= 2
    async with LogSender(urls, str(tmp_path), KEY, FQDN, compact_every=4, **FAST) as again:
        await again.drain(timeout=10)
        ids.append(await again.send(event(10)))
        await again.drain(timeout=10)
        assert again.spool.last_seq == 11
    assert a.posts == ids and b.posts == ids


async def test_rejections_retries_and_duplicates(servers, tmp_path):
    def flaky(n: int, log_id: str) -> int | None:
        return 503 if n % 3 == 1 else None  # every third request fails, then is retried

    def picky(n: int, log_id: str) -> int | None:
        return 460 if log_id.endswith(":rejected.example.net") else None

    a, b = LoggingService(flaky), LoggingService(picky)
    urls = [await servers.start(a), await servers.start(b)]
    already = "urn:emergency:uid:logid:0123:bcf.example.net"
    b.stored.append(already)  # b has this one already: its 409 counts as delivered
    async with LogSender(urls, str(tmp_path), KEY, FQDN, **FAST) as sender:
        ids = [await sender.send(event(n)) for n in range(6)]
        bad = await sender.send(event(6, client_assigned_identifier="urn:emergency:uid:logid:1:rejected.example.net"))
        dup = await sender.send(event(7, client_assigned_identifier=already))
        last = await sender.send(event(8))
        await sender.drain(timeout=10)
        assert [(r.destination, r.status) for r in sender.rejections] == [(urls[1], 460)]
        assert sender.core.dests[urls[1]].duplicates == 1
        assert sender.core.dests[urls[0]].failed >= 3
    assert a.stored == [*ids, bad, dup, last]
    assert b.stored == [already, *ids, last]
    assert len(a.posts) > len(a.stored)  # the 503s were retried ...
    assert [p for i, p in enumerate(a.posts, 1) if i % 3 != 1] == a.stored  # ... in order, once accepted


async def test_several_in_flight(servers, tmp_path):
    a, b = LoggingService(), LoggingService()
    urls = [await servers.start(a), await servers.start(b)]
    async with LogSender(urls, str(tmp_path), KEY, FQDN, max_in_flight=4, **FAST) as sender:
        ids = await asyncio.gather(*(sender.send(event(n)) for n in range(40)))
        await sender.drain(timeout=10)
        assert sender.spool.last_seq == 40
    assert sorted(a.stored) == sorted(ids) and sorted(b.stored) == sorted(ids)
    assert len(a.posts) == len(b.posts) == 40


async def test_send_never_waits_for_the_network(servers, tmp_path):
    _, down = servers.reserve()
    async with LogSender([down], str(tmp_path), KEY, FQDN, **FAST) as sender:
        for n in range(5):
            await asyncio.wait_for(sender.send(event(n)), 5)
        assert sender.backlog() == 5 and len(sender.spool) == 5  # the spool grows
        with pytest.raises(TimeoutError):
            await sender.drain(timeout=0.2)
    async with LogSender([down], str(tmp_path), None, FQDN, **FAST) as reopened:
        assert reopened.backlog() == 5


async def test_invalid_events_are_refused_before_spooling(tmp_path):
    async with LogSender(["http://127.0.0.1:9"], str(tmp_path), KEY, FQDN, **FAST) as sender:
        with pytest.raises(LogEventError) as info:
            await sender.send(CallSignalingMessageLogEvent(element_id=FQDN, agency_id="example.net",
                                                           text="x", direction="up"))  # fmt: skip
        assert [p.member for p in info.value.problems] == ["callId", "incidentId", "direction"]
        with pytest.raises(LogEventError):
            await sender.send({"logEventType": "CallStartLogEvent"})
        assert sender.spool.last_seq == 0
        mapping = {**event(0).to_json()}
        log_id = await sender.send(mapping)
        assert sender.spool.read(1).log_event_id == log_id
        assert jws.verify(sender.spool.read(1).jws, keys=[KEY]).payload["clientAssignedIdentifier"] == log_id
    with pytest.raises(RuntimeError):
        await sender.send(event(1))
    with pytest.raises(ValueError):
        LogSender(["http://x"], str(tmp_path / "other"), KEY, "not a domain!")


async def test_unsigned_events_when_there_is_no_key(servers, tmp_path):
    seen: list[dict] = []

    async def lab_service(request: Request) -> JSONResponse:
        verified = jws.verify(await request.body(), allow_none=True)
        seen.append(verified.header)
        return JSONResponse({"logEventId": verified.payload["clientAssignedIdentifier"]}, 201)

    class Lab(LoggingService):
        def __init__(self) -> None:
            super().__init__()
            self.app = Starlette(routes=[Route("/LogEvents", lab_service, methods=["POST"])])

    url = await servers.start(Lab())
    async with LogSender([url + "/"], str(tmp_path), None, FQDN, **FAST) as sender:
        await sender.send(event(0))
        await sender.drain(timeout=10)
    assert seen == [{"alg": "none"}]


async def test_a_timed_out_request_that_arrived_is_not_stored_twice(servers, tmp_path):
    # The first event is stored but its answer is held back until the sender, having given
    # up on it, sends it again; the Logging Service already has it and answers 409, which
    # counts as delivered.
    slow = LoggingService(hold_first=True)
    url = await servers.start(slow)
    async with LogSender([url], str(tmp_path), KEY, FQDN, **{**FAST, "timeout": 0.2}) as sender:
        ids = [await sender.send(event(n)) for n in range(3)]
        await sender.drain(timeout=10)
        status = sender.core.dests[url]
        assert status.duplicates >= 1 and status.failed >= 1
        assert status.last_error == f"no answer from {url}/LogEvents within 0.2 s"
    assert slow.stored == ids and slow.posts[:2] == [ids[0], ids[0]]


async def test_giving_up_after_max_attempts(servers, tmp_path):
    broken = LoggingService(lambda n, log_id: 500)
    url = await servers.start(broken)
    async with LogSender([url], str(tmp_path), KEY, FQDN, max_attempts=3, **FAST) as sender:
        await sender.send(event(0))
        await sender.drain(timeout=10)
        assert [(r.seq, r.reason) for r in sender.rejections] == [
            (1, f"gave up after 3 attempts: HTTP 500 from {url}/LogEvents")
        ]
    assert len(broken.posts) == 3 and broken.stored == []


async def test_signed_with_a_certificate_chain_the_service_trusts(servers, tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def cert(subject_key, subject: str, issuer_key, issuer: str, ca: bool) -> x509.Certificate:
        def name(cn: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        return (
            x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
            .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, None)
        )  # fmt: skip

    ca_key, element_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ca = cert(ca_key, "ESInet CA", ca_key, "ESInet CA", ca=True)
    leaf = cert(element_key, FQDN, ca_key, "ESInet CA", ca=False)
    service = LoggingService(verify=lambda body: jws.verify(body, trust=[ca]))
    url = await servers.start(service)
    async with LogSender([url], str(tmp_path), element_key, FQDN, x5c=[leaf, ca], **FAST) as sender:
        ids = [await sender.send(event(n)) for n in range(3)]
        await sender.drain(timeout=10)
    assert service.stored == ids
    # An element signing with a key the service does not trust is refused (434), not retried.
    async with LogSender([url], str(tmp_path / "rogue"), KEY, FQDN, **FAST) as rogue:
        await rogue.send(event(9))
        await rogue.drain(timeout=10)
        assert [r.status for r in rogue.rejections] == [434]
    assert service.stored == ids


async def test_an_empty_client_assigned_identifier_is_refused(tmp_path):
    async with LogSender(["http://127.0.0.1:9"], str(tmp_path), KEY, FQDN, **FAST) as sender:
        with pytest.raises(LogEventError) as info:
            await sender.send(event(0, client_assigned_identifier=" "))
        assert [p.member for p in info.value.problems] == ["clientAssignedIdentifier"]
        assert sender.spool.last_seq == 0
