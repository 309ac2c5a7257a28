"""Handing log events to a ``LogSender`` from code that must never wait or fail.

An element's logger (the ESRP's ``CallLogger``, the ECRF's ``LostLogger``) is called
synchronously from the path of a 911 call or a LoST query: it must not block on the disk or
the network, and a logging bug must not fail the call. ``EventQueue`` gives it that: ``emit``
queues an event and returns; one background task awaits ``sender.send`` for each (spooled in
the order emitted: ``LogSender`` group-commits what was queued meanwhile); failures are
counted and logged, never raised (NENA-STA-010.3 section 4.12: logging is a side effect of
call handling, not a condition of it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from firebox.logging.events import LogEvent

__all__ = ["EventQueue", "EventSink"]

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """What an ``EventQueue`` needs of a ``LogSender``."""

    async def send(self, event: LogEvent) -> str: ...

    async def drain(self, timeout: float | None = None) -> None: ...


class EventQueue:
    """Events queued in order, spooled by one background task. ``sent`` holds the
    ``clientAssignedIdentifier`` of every event spooled, in order; ``errors`` counts the
    events that could not be (and logging bugs caught by ``guard``)."""

    #: The name of the background task (for debugging).
    TASK_NAME = "log-event-queue"

    def __init__(self, sender: EventSink) -> None:
        self.sender = sender
        self.sent: list[str] = []
        self.errors = 0
        self._queue: list[LogEvent] = []
        self._worker: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def emit(self, event: LogEvent) -> None:
        """Queue ``event`` for the sender (needs a running event loop)."""
        self._queue.append(event)
        self._idle.clear()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=self.TASK_NAME)

    def guard(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Run ``fn``; an exception is counted and logged, never raised."""
        try:
            fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 -- logging must never fail a call
            self.errors += 1
            log.exception("i3 logging failed")

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every event handed over so far is spooled (or failed, logged)."""
        async with asyncio.timeout(timeout):
            while self._queue or (self._worker is not None and not self._worker.done()):
                await self._idle.wait()
                if self._worker is not None and not self._worker.done() and not self._queue:
                    await asyncio.gather(self._worker, return_exceptions=True)

    async def drain(self, timeout: float | None = None) -> None:
        """``flush``, then wait until the sender delivered everything (``TimeoutError``)."""
        async with asyncio.timeout(timeout):
            await self.flush()
            await self.sender.drain()

    async def aclose(self) -> None:
        """Spool what is queued; the sender is closed by its owner."""
        await self.flush()

    async def _work(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                # send() spools in call order (each reaches its spool queue before its first
                # await), and the sender commits the batch in one write.
                results = await asyncio.gather(*(self.sender.send(e) for e in batch), return_exceptions=True)
                for event, result in zip(batch, results, strict=True):
                    if isinstance(result, BaseException):
                        self.errors += 1
                        log.error("i3 log event %s not spooled: %r", event.TYPE, result)
                    else:
                        self.sent.append(result)
        finally:
            self._idle.set()
