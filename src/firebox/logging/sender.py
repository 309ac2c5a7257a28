"""Delivery of log events to Logging Services (NENA-STA-010.3 section 4.12.3).

An element logs to one or more Logging Services (its own agency's, the one of each agency
a call passes through...) with ``POST {url}/LogEvents``, the body a JWS in the flattened JSON
serialization (RFC 7515 section 7.2.2) whose payload is the log event. A Logging Service
answers 201 with the ``logEventId`` it stored the event under.

Two layers, as everywhere in firebox:

* ``SenderCore``, sans-I/O: for each destination, which spooled event to send next. Events
  go to each destination in spool order, at most ``max_in_flight`` at a time (1 by default,
  which also guarantees the order of arrival); a failure (no connection, timeout, 5xx, 408,
  425, 429) puts the destination in capped exponential backoff and the event is retried
  before anything newer; a 201, or a 409 saying the Logging Service already has the event,
  counts as delivered; any other 4xx is a rejection (the event is bad for that service:
  it is recorded and logged, not retried). Time is an argument; no sockets, no clock.
* ``LogSender``, the asyncio adapter: ``send(event)`` signs the event, appends it to the
  durable ``Spool`` and returns once it is on disk (never waiting for the network); a
  background task POSTs with httpx what the core says and records progress in the spool,
  which is compacted once every destination is past a point. A new ``LogSender`` on the
  same spool directory (after a crash or a restart) carries on where the last one stopped.

Idempotence: every event gets a unique ``clientAssignedIdentifier``
(``urn:emergency:uid:logid:<unique>:<fqdn>``) before it is signed, so an event sent twice
(a crash between a 201 and the progress update, a timeout on a request that did arrive)
is recognised by the Logging Service, which answers 409.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from bisect import insort
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

import httpx
from cryptography import x509

from firebox import jws as jwslib
from firebox.logging.events import (
    LogEvent,
    LogEventError,
    Problem,
    is_domain_name,
    new_log_event_id,
    validate,
)
from firebox.logging.spool import Progress, Spool

__all__ = ["DestinationStatus", "LogSender", "Outcome", "Rejection", "Send", "SenderCore"]

log = logging.getLogger(__name__)

#: 4xx answers that mean "later", not "never" (RFC 9110 sections 15.5.9, RFC 8470, RFC 6585).
RETRYABLE_4XX = frozenset({408, 425, 429})
LOG_EVENTS_PATH = "/LogEvents"


class Outcome(StrEnum):
    DELIVERED = "delivered"  # 200/201
    DUPLICATE = "duplicate"  # 409: the Logging Service already has it
    REJECTED = "rejected"  # other 4xx: recorded, never retried
    FAILED = "failed"  # transport error, timeout, 5xx, 408/425/429: retried


def classify(status: int) -> Outcome:
    """What an HTTP status answering ``POST /LogEvents`` means for delivery."""
    if status in (200, 201):
        return Outcome.DELIVERED
    if status == 409:
        return Outcome.DUPLICATE
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return Outcome.REJECTED
    return Outcome.FAILED


@dataclass(frozen=True, slots=True)
class Send:
    """POST spooled event ``seq`` to ``destination`` and report the outcome to the core."""

    destination: str
    seq: int


@dataclass(frozen=True, slots=True)
class Rejection:
    destination: str
    seq: int
    status: int | None
    reason: str


@dataclass(slots=True)
class DestinationStatus:
    """Counters and state of one destination (for metrics and tests)."""

    url: str
    through: int = 0  # every event up to this one is done
    above: set[int] = field(default_factory=set)  # done events above ``through``
    in_flight: set[int] = field(default_factory=set)
    retry: list[int] = field(default_factory=list)  # failed events to send again, sorted
    next_new: int = 1  # the first event never sent to this destination (this run)
    failures: int = 0  # consecutive failures (drives the backoff)
    retry_at: float = 0.0
    attempts: dict[int, int] = field(default_factory=dict)  # failed attempts per event
    delivered: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    last_error: str | None = None

    @property
    def progress(self) -> Progress:
        return Progress(self.through, tuple(sorted(self.above)))


class SenderCore:
    """Sans-I/O delivery logic for a set of destinations over one spool.

    ``last_seq`` is the highest spooled sequence number; ``progress`` what was saved by a
    previous run (``Spool.load_progress``); ``first_seq`` the lowest event still spooled (a
    destination without saved progress starts there). Backoff after the n-th consecutive
    failure is ``min(backoff_max, backoff_base * 2**(n-1))``, shortened by up to ``jitter``
    (a fraction) drawn from ``rng`` so that many elements do not retry in lockstep.
    ``max_attempts`` (None: unlimited) turns an event that keeps failing into a rejection.
    """

    def __init__(
        self,
        destinations: Sequence[str],
        *,
        last_seq: int = 0,
        first_seq: int = 1,
        progress: Mapping[str, Progress] | None = None,
        max_in_flight: int = 1,
        backoff_base: float = 0.5,
        backoff_max: float = 60.0,
        jitter: float = 0.0,
        max_attempts: int | None = None,
        rng: random.Random | None = None,
    ):
        if not destinations:
            raise ValueError("at least one destination is needed")
        if len(set(destinations)) != len(destinations):
            raise ValueError("destinations must be distinct")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if backoff_base <= 0 or backoff_max < backoff_base:
            raise ValueError("need 0 < backoff_base <= backoff_max")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_in_flight = max_in_flight
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.jitter = jitter
        self.max_attempts = max_attempts
        self._rng = rng or random.Random()
        self.last_seq = last_seq
        self.rejections: list[Rejection] = []
        self.dests: dict[str, DestinationStatus] = {}
        saved = progress or {}
        for url in destinations:
            p = saved.get(url) or Progress(max(0, first_seq - 1))
            through = max(p.through, first_seq - 1)
            d = DestinationStatus(url, through=through, above={a for a in p.above if a > through})
            self._advance(d)
            d.next_new = d.through + 1
            self.dests[url] = d

    # --- input ------------------------------------------------------------------------------

    def appended(self, last_seq: int) -> None:
        """Events up to ``last_seq`` are now in the spool."""
        self.last_seq = max(self.last_seq, last_seq)

    def poll(self, now: float) -> list[Send]:
        """What to send now: for each destination out of backoff, failed events first, then
        new ones, in order, up to ``max_in_flight`` in flight."""
        out: list[Send] = []
        for d in self.dests.values():
            if now < d.retry_at:
                continue
            while len(d.in_flight) < self.max_in_flight:
                if d.retry:
                    seq = d.retry.pop(0)
                else:
                    while d.next_new <= self.last_seq and (d.next_new <= d.through or d.next_new in d.above):
                        d.next_new += 1  # done in a previous run
                    if d.next_new > self.last_seq:
                        break
                    seq = d.next_new
                    d.next_new += 1
                d.in_flight.add(seq)
                out.append(Send(d.url, seq))
        return out

    def delivered(self, destination: str, seq: int, now: float, *, duplicate: bool = False) -> bool:
        """A 201 (or, ``duplicate``, a 409) for ``seq``. False if it was not in flight."""
        d = self._take(destination, seq)
        if d is None:
            return False
        if duplicate:
            d.duplicates += 1
        else:
            d.delivered += 1
        d.failures = 0
        d.retry_at = 0.0
        self._done(d, seq)
        return True

    def rejected(self, destination: str, seq: int, now: float, status: int | None, reason: str) -> bool:
        """A 4xx other than 409 (or an event missing from the spool): done, never retried."""
        d = self._take(destination, seq)
        if d is None:
            return False
        d.rejected += 1
        self.rejections.append(Rejection(destination, seq, status, reason))
        self._done(d, seq)
        return True

    def failed(self, destination: str, seq: int, now: float, reason: str) -> bool:
        """No usable answer for ``seq``: retried after a backoff (or rejected once
        ``max_attempts`` is reached)."""
        d = self._take(destination, seq)
        if d is None:
            return False
        d.failed += 1
        d.last_error = reason
        attempts = d.attempts[seq] = d.attempts.get(seq, 0) + 1
        if self.max_attempts is not None and attempts >= self.max_attempts:
            d.in_flight.add(seq)  # _take removed it; rejected() takes it again
            return self.rejected(destination, seq, now, None, f"gave up after {attempts} attempts: {reason}")
        insort(d.retry, seq)
        d.failures += 1
        delay = min(self.backoff_max, self.backoff_base * 2 ** min(d.failures - 1, 62))
        if self.jitter:
            delay *= 1 - self.jitter * self._rng.random()
        d.retry_at = max(d.retry_at, now + delay)
        return True

    # --- state ------------------------------------------------------------------------------

    def backlog(self, destination: str) -> int:
        """Events not yet done for ``destination``."""
        d = self.dests[destination]
        return self.last_seq - d.through - len(d.above)

    @property
    def idle(self) -> bool:
        """Every spooled event is done for every destination."""
        return all(d.through >= self.last_seq and not d.in_flight for d in self.dests.values())

    def min_through(self) -> int:
        """Every destination is done with every event up to this one (compaction point)."""
        return min(d.through for d in self.dests.values())

    def next_wakeup(self, now: float) -> float | None:
        """When ``poll`` may have something to send again without new input: the end of the
        earliest backoff of a destination with work waiting; ``now`` if something can go out
        at once; None if nothing is waiting (only answers or new events can change that)."""
        best: float | None = None
        for d in self.dests.values():
            if len(d.in_flight) >= self.max_in_flight:
                continue
            if not d.retry and not self._has_new(d):
                continue
            when = max(now, d.retry_at)
            best = when if best is None else min(best, when)
        return best

    def progress(self) -> dict[str, Progress]:
        return {url: d.progress for url, d in self.dests.items()}

    # --- internals ------------------------------------------------------------------------------

    def _has_new(self, d: DestinationStatus) -> bool:
        n = d.next_new
        while n <= self.last_seq and (n <= d.through or n in d.above):
            n += 1
        return n <= self.last_seq

    def _take(self, destination: str, seq: int) -> DestinationStatus | None:
        d = self.dests.get(destination)
        if d is None or seq not in d.in_flight:
            return None
        d.in_flight.discard(seq)
        return d

    def _done(self, d: DestinationStatus, seq: int) -> None:
        d.attempts.pop(seq, None)
        if seq > d.through:
            d.above.add(seq)
        self._advance(d)

    @staticmethod
    def _advance(d: DestinationStatus) -> None:
        while d.through + 1 in d.above:
            d.through += 1
            d.above.discard(d.through)


# --- the asyncio adapter ---------------------------------------------------------------------


class LogSender:
    """Signs log events, spools them durably and delivers them to every Logging Service.

    ``urls`` are Logging Service base URLs (events go to ``{url}/LogEvents``); ``spool_dir``
    the spool directory (created if needed; reopened after a restart); ``key`` the element's
    Ed25519/Ed448 private key (``None``: ``alg: none``, labs only), with its certificate
    chain ``x5c`` and/or key id ``kid``; ``fqdn`` the element's domain name, used in the
    ``urn:emergency:uid:logid:`` identifiers. ``timeout`` bounds each POST in seconds.
    ``compact_every``: compact the spool once this many events are done everywhere.

    Use ``async with LogSender(...)`` or call ``start()``; ``send`` starts it too.
    """

    def __init__(
        self,
        urls: Sequence[str],
        spool_dir: str,
        key: jwslib.PrivateKey | None,
        fqdn: str,
        *,
        x5c: Sequence[bytes | x509.Certificate] | None = None,
        kid: str | None = None,
        max_in_flight: int = 1,
        timeout: float = 5.0,
        backoff_base: float = 0.25,
        backoff_max: float = 30.0,
        jitter: float = 0.1,
        max_attempts: int | None = None,
        compact_every: int = 1000,
        http: httpx.AsyncClient | None = None,
        fsync: bool = True,
    ):
        if not is_domain_name(fqdn):
            raise ValueError(f"fqdn must be a domain name, not {fqdn!r}")
        if compact_every < 1:
            raise ValueError("compact_every must be at least 1")
        self.urls = [u.rstrip("/") for u in urls]
        self.fqdn = fqdn
        self.timeout = timeout
        self.compact_every = compact_every
        self._key = key
        self._x5c = list(x5c) if x5c is not None else None
        self._kid = kid
        self.spool = Spool(spool_dir, fsync=fsync)
        try:
            self.core = SenderCore(
                self.urls,
                last_seq=self.spool.last_seq,
                first_seq=self.spool.first_seq,
                progress=self.spool.load_progress(),
                max_in_flight=max_in_flight,
                backoff_base=backoff_base,
                backoff_max=backoff_max,
                jitter=jitter,
                max_attempts=max_attempts,
            )
        except BaseException:
            self.spool.close()
            raise
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self._own_http = http is None
        self._queue: list[tuple[str, dict[str, str], asyncio.Future[str]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._save_lock = asyncio.Lock()
        self._version = 0  # bumped on every completed delivery
        self._saved = 0  # the version whose progress is on disk
        self._closed = False

    # --- life cycle ----------------------------------------------------------------------------

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def start(self) -> None:
        """Start delivering (idempotent); needs a running event loop."""
        if self._closed:
            raise RuntimeError("LogSender is closed")
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="log-sender")

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: finish spooling what ``send`` accepted, abandon the POSTs in flight (they
        are sent again by the next sender on this spool), save progress, close the spool."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        tasks = [t for t in (self._runner, *self._deliveries) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            if self._saved < self._version and not self.spool.closed:
                await asyncio.to_thread(self.spool.save_progress, self.core.progress())
        finally:
            self.spool.close()
            if self._own_http:
                await self._http.aclose()

    # --- sending -------------------------------------------------------------------------------

    def prepare(self, event: LogEvent | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The event's identifier and JSON payload, with ``clientAssignedIdentifier`` set
        (kept if already there); ``LogEventError`` if the event is not valid."""
        if isinstance(event, LogEvent):
            if event.client_assigned_identifier is None:
                event = dataclasses.replace(
                    event, client_assigned_identifier=new_log_event_id(self.fqdn)
                )
            payload = event.to_json()
        elif isinstance(event, Mapping):
            payload = dict(event)
            payload.setdefault("clientAssignedIdentifier", new_log_event_id(self.fqdn))
        else:
            raise TypeError(f"not a log event: {type(event).__name__}")
        problems = validate(payload)
        log_event_id = payload.get("clientAssignedIdentifier")
        if isinstance(log_event_id, str) and not log_event_id.strip():
            problems.append(Problem("clientAssignedIdentifier", "must not be empty (it makes retries idempotent)"))
        if problems:
            raise LogEventError(problems)
        return log_event_id, payload

    async def send(self, event: LogEvent | Mapping[str, Any]) -> str:
        """Sign ``event``, spool it and return its identifier once it is on disk. Delivery
        happens in the background. Raises ``LogEventError`` for an invalid event and
        ``SpoolError`` if it cannot be written (then it was not accepted)."""
        if self._closed:
            raise RuntimeError("LogSender is closed")
        log_event_id, payload = self.prepare(event)
        signed = jwslib.sign(payload, self._key, x5c=self._x5c, kid=self._kid)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._queue.append((log_event_id, signed, future))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write(), name="log-spool-writer")
        self.start()
        return await future

    async def _write(self) -> None:
        """Group commit: whatever ``send`` queued meanwhile goes in one write and one fsync."""
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                seqs = await asyncio.to_thread(self.spool.append, [(i, j) for i, j, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting send()
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.core.appended(seqs[-1])
            for log_event_id, _, future in batch:
                if not future.done():
                    future.set_result(log_event_id)
            self._wake.set()

    # --- delivering ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = self._now()
            for step in self.core.poll(now):
                task = asyncio.get_running_loop().create_task(self._deliver(step))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)
            wake = self.core.next_wakeup(now)
            timeout = None if wake is None else max(0.0, wake - self._now())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _deliver(self, step: Send) -> None:
        try:
            await self._post(step)
        except Exception as exc:  # a bug or a full disk must not stall a destination
            log.exception("log delivery of event %d to %s failed unexpectedly", step.seq, step.destination)
            if step.seq in self.core.dests[step.destination].in_flight:
                await self._failed(step.destination, step.seq, f"internal error: {exc!r}")

    async def _post(self, step: Send) -> None:
        core, url, seq = self.core, step.destination, step.seq
        try:
            record = await asyncio.to_thread(self.spool.read, seq)
        except KeyError:
            core.rejected(url, seq, self._now(), None, "not in the spool (an unreadable line)")
            await self._completed()
            return
        target = url + LOG_EVENTS_PATH
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._http.post(
                    target,
                    content=jwslib.serialize(record.jws),
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                    timeout=self.timeout,
                )
        except (TimeoutError, httpx.TimeoutException):
            await self._failed(url, seq, f"no answer from {target} within {self.timeout} s")
            return
        except (httpx.HTTPError, OSError) as exc:
            await self._failed(url, seq, f"cannot reach {target}: {type(exc).__name__}: {exc}")
            return
        outcome = classify(reply.status_code)
        now = self._now()
        if outcome is Outcome.FAILED:
            await self._failed(url, seq, f"HTTP {reply.status_code} from {target}")
            return
        if outcome is Outcome.REJECTED:
            detail = reply.text[:500]
            log.error(
                "Logging Service %s rejected log event %s (%s): HTTP %d %s",
                url, record.log_event_id, seq, reply.status_code, detail,
            )  # fmt: skip
            core.rejected(url, seq, now, reply.status_code, f"HTTP {reply.status_code}: {detail}")
        else:
            core.delivered(url, seq, now, duplicate=outcome is Outcome.DUPLICATE)
        await self._completed()

    async def _failed(self, url: str, seq: int, reason: str) -> None:
        d = self.core.dests[url]
        if d.failures == 0:
            log.warning("log delivery to %s failing: %s", url, reason)
        before = len(self.core.rejections)
        self.core.failed(url, seq, self._now(), reason)
        if len(self.core.rejections) > before:  # max_attempts reached
            log.error("gave up delivering log event %d to %s: %s", seq, url, reason)
            await self._completed()
        self._wake.set()

    async def _completed(self) -> None:
        self._version += 1
        self._wake.set()
        await self._persist()

    async def _persist(self) -> None:
        """Save progress (coalesced: one save covers every completion before it), then
        compact the spool when enough is done everywhere."""
        wanted = self._version
        async with self._save_lock:
            if self._saved >= wanted or self.spool.closed:
                return
            version = self._version
            await asyncio.to_thread(self.spool.save_progress, self.core.progress())
            self._saved = version
            through = self.core.min_through()
            if through - self.spool.compacted_through >= self.compact_every:
                dropped = await asyncio.to_thread(self.spool.compact, through)
                log.debug("spool compacted: %d events dropped, through %d", dropped, through)
        self._changed.set()

    # --- waiting -------------------------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every event sent so far is done (delivered or rejected) for every
        destination and that is saved. ``TimeoutError`` after ``timeout`` seconds."""
        self.start()
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                writing = self._queue or (self._writer is not None and not self._writer.done())
                if not writing and self.core.idle and self._saved >= self._version:
                    return
                if writing and self._writer is not None:
                    await asyncio.gather(self._writer, return_exceptions=True)
                    continue
                await self._changed.wait()

    # --- state ---------------------------------------------------------------------------------

    @property
    def rejections(self) -> list[Rejection]:
        return self.core.rejections

    def backlog(self, url: str | None = None) -> int:
        """Events not yet done for ``url`` (the largest backlog when None)."""
        urls = [url.rstrip("/")] if url is not None else self.urls
        return max(self.core.backlog(u) for u in urls)
