"""Stopping is bounded and keeps every log event (the outage replays' teardown, issue 6).

The full-length replay once hung after a run: the monitor's probe loop awaited
``asyncio.wait_for(event.wait(), ...)``, which on Python 3.11 returns normally when the
event is set in the same step as the cancel (a probe finishing as ``stop()`` is called),
so the cancel was lost, the loop went on and ``ProbeRunner.stop`` never returned; the
node's log senders and policy watches kept running behind it. These tests stop each part
at the moment that matters, against real sockets on 127.0.0.1, and bound every wait (a
hang fails the test instead of holding the suite)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable

import pytest
import uvicorn

from firebox.logging.events import (
    CallSignalingMessageLogEvent,
    new_call_id,
    new_incident_id,
)
from firebox.logging.sender import LogSender
from firebox.logging.service import create_app
from firebox.logging.store import Filter, SqliteStore
from firebox.monitor.probes import Ingress, ProbePlanner, ProbeRunner, ProbeTarget
from firebox.policy.watch import PolicyWatch

FQDN = "esrp.teardown.test"
#: Every stop below must end well within this (a hang is a failure, not a slow test).
BOUND = 10.0


def event(n: int) -> CallSignalingMessageLogEvent:
    return CallSignalingMessageLogEvent(
        element_id=FQDN, agency_id="teardown.test", call_id=new_call_id(FQDN), incident_id=new_incident_id(FQDN),
        text=f"MESSAGE sip:psap@teardown.test SIP/2.0\r\nCSeq: {n} MESSAGE\r\n\r\n", direction="outgoing",
    )  # fmt: skip


async def stops(stopping: Awaitable[object], what: str) -> None:
    """Await ``stopping`` within ``BOUND``. The bound must not be what ended it: a stop that
    awaits a task under ``suppress(CancelledError)`` returns when the bound cancels it."""
    async with asyncio.timeout(BOUND) as bound:
        await stopping
    assert not bound.expired(), f"{what} did not stop by itself within {BOUND} s"


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A TCP listener that accepts connections (the kernel's backlog) and never answers:
    a server that is gone without saying so."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


class LoggingServer:
    """A real Logging Service (``firebox.logging.service`` on SQLite) on a fixed port, which
    can be stopped and started again on the same address and database."""

    def __init__(self, db: str) -> None:
        self.store = SqliteStore(db)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server = uvicorn.Server(uvicorn.Config(create_app(self.store), host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="off",
                                                     timeout_graceful_shutdown=2))  # fmt: skip
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(BOUND):
            while not self._server.started:
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            async with asyncio.timeout(BOUND):
                await self._task
        self._server = self._task = None


# --- the cause: the probe loop's stop -----------------------------------------------------------


async def test_probe_runner_stops_when_a_probe_finishes_as_it_is_stopped():
    # No probe falls due during the test (the first one is an hour away); the UDP carrier
    # is real but sends nothing.
    ingress = Ingress("route-a", "127.0.0.1", 9)
    target = ProbeTarget("psap-01", "sip:psap-01@teardown.test", -71.0, 42.0)
    runner = ProbeRunner(ProbePlanner([ingress], [target], period=3600.0, start=time.time() + 3600), lambda r: None)
    await runner.start()
    assert runner._task is not None
    loop_task = runner._task
    for _ in range(20):  # the loop is parked in its wait (up to 1 s)
        await asyncio.sleep(0)
    # What a probe finishing does (ProbeRunner._one's finally), in the same step as stop()
    runner._wake.set()
    try:
        await stops(runner.stop(), "the probe runner")
    finally:
        if not loop_task.done():  # the bug: cancel again so the test leaves nothing behind
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
    assert loop_task.done() and loop_task.cancelled()
    assert runner.carriers == {}


# --- log senders: bounded, and nothing lost --------------------------------------------------------


async def test_log_sender_whose_service_is_gone_stops_and_keeps_its_events(tmp_path):
    service = LoggingServer(str(tmp_path / "logging.db"))
    await service.start()
    spool = str(tmp_path / "spool")
    sender = LogSender([service.url], spool, None, FQDN, timeout=30.0, backoff_base=0.05, backoff_max=0.2, fsync=False)
    try:
        delivered_first = [await sender.send(event(n)) for n in range(5)]
        await sender.drain(timeout=BOUND)
        await service.stop()  # the Logging Service is gone
        kept = [await sender.send(event(n)) for n in range(5, 25)]  # spooled, not deliverable
        for _ in range(50):  # let it fail and back off a few times
            await asyncio.sleep(0.01)
        assert sender.backlog() == 20
    finally:
        await stops(sender.aclose(), "the log sender")  # although every POST fails
    # a sender on the same spool (after a restart) delivers exactly what was left
    await service.start()
    again = LogSender([service.url], spool, None, FQDN, backoff_base=0.05, backoff_max=0.2, fsync=False)
    try:
        assert again.backlog() == 20
        await again.drain(timeout=BOUND)
    finally:
        await again.aclose()
        await service.stop()
    page = await asyncio.to_thread(service.store.query, Filter(), 0, 100)
    # every event once, in the order they were logged
    assert [e.client_id for e in page.items] == delivered_first + kept


async def test_log_sender_with_a_request_in_flight_to_a_silent_service_stops_at_once(tmp_path):
    # The POST would wait 30 s for an answer; stopping abandons it (the event stays
    # spooled, sent again by the next sender) instead of waiting.
    async with silent_server() as url:
        spool = str(tmp_path / "spool")
        sender = LogSender([url], spool, None, FQDN, timeout=30.0, fsync=False)
        log_event_id = await sender.send(event(1))
        for _ in range(200):  # the POST is on its way
            if sender.core.dests[url].in_flight:
                break
            await asyncio.sleep(0.01)
        assert sender.core.dests[url].in_flight == {1}
        await stops(sender.aclose(), "the log sender")  # BOUND < its timeout: it did not wait
        again = LogSender([url], spool, None, FQDN, fsync=False)
        try:
            assert again.backlog() == 1
            assert again.spool.read(1).log_event_id == log_event_id
        finally:
            await again.aclose()


# --- policy watches -------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["silent", "refusing"])
async def test_policy_watch_whose_store_is_gone_stops(store):
    if store == "silent":
        cm: contextlib.AbstractAsyncContextManager[str] = silent_server()
    else:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
        cm = contextlib.nullcontext(url)
    async with cm as url:
        installed: list[object] = []
        watch = PolicyWatch(url, "demo-routing", installed.append, lambda *a: a, types={"x"}, interval=0.05,
                            timeout=30.0)  # fmt: skip
        task = watch.start()
        for _ in range(30):  # a few polls (refused), or one hanging GET (silent)
            await asyncio.sleep(0.01)
        await stops(watch.stop(), "the policy watch")  # BOUND < its timeout: it did not wait
        assert task.done() and installed == []
        assert watch.installed is None
    if store == "refusing":
        sock.close()
