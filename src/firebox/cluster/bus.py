"""The event bus between firebox nodes: subjects for events, key-value buckets for live state.

Two implementations of one small interface (:class:`Bus`):

* :class:`InProcessBus`: the single-node default. Everything stays in this process; the
  same code paths (replication, membership) run with one member.
* :class:`NatsBus`: NATS JetStream (nats-py). One stream per deployment holds its events
  (subjects ``firebox.<deployment>.<subject>``); each key-value bucket is a JetStream KV
  bucket ``firebox_<deployment>_<name>``. Both are created idempotently at start.

Publishing never blocks the caller: ``publish`` and ``KeyValue.put_nowait`` put the message
in a bounded outbox that one task sends in order. While NATS is away the outbox holds what
was published (the oldest is dropped, counted and logged when it is full) and the task
retries with a bounded back-off: a call path that updates a queue state never waits on the
network. ``stats`` counts what was sent, retried and dropped.

Subjects and patterns are relative to the deployment and use NATS syntax (tokens separated
by ``.``, ``*`` one token, ``>`` the rest). KV keys are free text: they are encoded to the
character set NATS allows (``[-/_=.a-zA-Z0-9]``), so callers may use SIP URIs as keys.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

__all__ = [
    "Bus",
    "BusStats",
    "Entry",
    "EntryHandler",
    "Handler",
    "InProcessBus",
    "KeyValue",
    "Message",
    "NatsBus",
    "Replay",
    "Subscription",
    "decode_key",
    "encode_key",
    "subject_matches",
]

log = logging.getLogger(__name__)

#: Messages the outbox holds while the bus is unreachable; past this the oldest is dropped.
DEFAULT_OUTBOX: Final = 10_000

Data = bytes | Mapping[str, Any]


def _bytes(data: Data) -> bytes:
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def encode_key(key: str) -> str:
    """A free-text key as a NATS KV key (base64url: letters, digits, ``-``, ``_``, ``=``)."""
    return base64.urlsafe_b64encode(key.encode()).decode()


def decode_key(key: str) -> str:
    return base64.urlsafe_b64decode(key.encode()).decode()


_NAME_BAD: Final = re.compile(r"[^A-Za-z0-9_\-]")


def _token(name: str) -> str:
    """A deployment or bucket name as a NATS name token."""
    token = _NAME_BAD.sub("_", name.strip())
    if not token:
        raise ValueError("empty name")
    return token


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` matches one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for n, token in enumerate(want):
        if token == ">":
            return len(have) > n
        if n >= len(have) or (token != "*" and token != have[n]):
            return False
    return len(want) == len(have)


@dataclass(frozen=True, slots=True)
class Message:
    """An event: ``subject`` relative to the deployment, ``seq`` its place in the stream."""

    subject: str
    data: bytes
    seq: int

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass(frozen=True, slots=True)
class Entry:
    """A key-value entry (a deletion has ``deleted`` and no value)."""

    key: str
    value: bytes | None
    revision: int
    deleted: bool = False

    def json(self) -> Any:
        return None if self.value is None or self.deleted else json.loads(self.value)


Handler = Callable[[Message], Awaitable[None]]
EntryHandler = Callable[[Entry], Awaitable[None]]


class Replay(StrEnum):
    """Where a subscription starts: only new events, every stored one, or the last per subject."""

    NEW = "new"
    ALL = "all"
    LAST_PER_SUBJECT = "last_per_subject"


@dataclass(slots=True)
class BusStats:
    published: int = 0
    retried: int = 0
    dropped: int = 0
    handler_errors: int = 0

    def as_dict(self, buffered: int = 0) -> dict[str, int]:
        return {"published": self.published, "buffered": buffered, "retried": self.retried,
                "dropped": self.dropped, "handler_errors": self.handler_errors}  # fmt: skip


class Subscription(Protocol):
    async def stop(self) -> None: ...


class KeyValue(Protocol):
    """One bucket. ``watch`` delivers every current entry first, then each change."""

    name: str

    async def put(self, key: str, value: Data) -> int: ...
    def put_nowait(self, key: str, value: Data) -> None: ...
    def delete_nowait(self, key: str) -> None: ...
    async def get(self, key: str) -> Entry | None: ...
    async def delete(self, key: str) -> None: ...
    async def entries(self) -> list[Entry]: ...
    async def watch(self, handler: EntryHandler) -> Subscription: ...


class Bus(Protocol):
    deployment: str
    stats: BusStats

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def publish(self, subject: str, data: Data) -> None: ...
    async def flush(self, timeout: float = 5.0) -> bool: ...
    async def subscribe(self, pattern: str, handler: Handler, *, replay: Replay = Replay.NEW,
                        durable: str | None = None) -> Subscription: ...  # fmt: skip
    async def kv(self, name: str) -> KeyValue: ...
    def status(self) -> dict[str, Any]: ...


async def _deliver(stats: BusStats, handler: Callable[[Any], Awaitable[None]], item: Any) -> None:
    try:
        await handler(item)
    except Exception:  # noqa: BLE001 -- one consumer's bug must not stop the stream
        stats.handler_errors += 1
        log.exception("bus: handler %r failed", handler)


# --- the outbox ---------------------------------------------------------------------------

# One pending operation: ("pub", subject, message id, data) or ("put"/"del", bucket, key, data).
_Op = tuple[str, str, str, bytes]


class _Outbox:
    """Bounded, ordered, never blocks the producer; the oldest entry goes first when full."""

    def __init__(self, size: int, stats: BusStats) -> None:
        self.size = size
        self.stats = stats
        self.items: deque[_Op] = deque()
        self.ready = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    def add(self, op: _Op) -> None:
        if len(self.items) >= self.size:
            self.items.popleft()
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
                log.error("bus: outbox full (%d); %d live-state messages dropped so far", self.size, self.stats.dropped)
        self.items.append(op)
        self.ready.set()
        self.idle.clear()

    def done(self) -> None:
        self.items.popleft()
        if not self.items:
            self.ready.clear()
            self.idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.idle.wait()
        except TimeoutError:
            return False
        return True


# --- in process ---------------------------------------------------------------------------


class _LocalSubscription:
    def __init__(self, owner: list[Any], handler: Callable[[Any], Awaitable[None]], stats: BusStats,
                 pattern: str = ">") -> None:  # fmt: skip
        self.owner = owner
        self.pattern = pattern
        self.handler = handler
        self.stats = stats
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(), name="bus-subscription")
        owner.append(self)

    async def _run(self) -> None:
        while True:
            item = await self.queue.get()
            await _deliver(self.stats, self.handler, item)
            self.queue.task_done()

    async def stop(self) -> None:
        if self in self.owner:
            self.owner.remove(self)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class _LocalKeyValue:
    def __init__(self, name: str, stats: BusStats) -> None:
        self.name = name
        self.stats = stats
        self.data: dict[str, Entry] = {}
        self.revision = 0
        self.watchers: list[_LocalSubscription] = []

    def _set(self, key: str, value: bytes | None) -> int:
        self.revision += 1
        entry = Entry(key, value, self.revision, value is None)
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = entry
        for w in list(self.watchers):
            w.queue.put_nowait(entry)
        return self.revision

    async def put(self, key: str, value: Data) -> int:
        return self._set(key, _bytes(value))

    def put_nowait(self, key: str, value: Data) -> None:
        self._set(key, _bytes(value))

    def delete_nowait(self, key: str) -> None:
        if key in self.data:
            self._set(key, None)

    async def get(self, key: str) -> Entry | None:
        return self.data.get(key)

    async def delete(self, key: str) -> None:
        self.delete_nowait(key)

    async def entries(self) -> list[Entry]:
        return sorted(self.data.values(), key=lambda e: e.revision)

    async def watch(self, handler: EntryHandler) -> Subscription:
        sub = _LocalSubscription(self.watchers, handler, self.stats)
        for entry in await self.entries():
            sub.queue.put_nowait(entry)
        return sub


class InProcessBus:
    """The bus of a single node: the same interface, nothing leaves the process. Events are
    kept (the last ``keep``) for ``Replay.ALL``/``LAST_PER_SUBJECT``."""

    def __init__(self, deployment: str = "firebox", *, keep: int = 10_000) -> None:
        self.deployment = deployment
        self.stats = BusStats()
        self.log: deque[Message] = deque(maxlen=keep)
        self.seq = 0
        self.subscriptions: list[_LocalSubscription] = []
        self.buckets: dict[str, _LocalKeyValue] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for sub in list(self.subscriptions):
            await sub.stop()
        for bucket in self.buckets.values():
            for w in list(bucket.watchers):
                await w.stop()
        self.subscriptions.clear()

    def publish(self, subject: str, data: Data) -> None:
        self.seq += 1
        message = Message(subject, _bytes(data), self.seq)
        self.log.append(message)
        self.stats.published += 1
        for sub in self.subscriptions:
            if subject_matches(sub.pattern, subject):
                sub.queue.put_nowait(message)

    async def flush(self, timeout: float = 5.0) -> bool:
        return True

    async def subscribe(self, pattern: str, handler: Handler, *, replay: Replay = Replay.NEW,
                        durable: str | None = None) -> Subscription:  # fmt: skip
        sub = _LocalSubscription(self.subscriptions, handler, self.stats, pattern)
        if replay is Replay.ALL:
            backlog = [m for m in self.log if subject_matches(pattern, m.subject)]
        elif replay is Replay.LAST_PER_SUBJECT:
            last = {m.subject: m for m in self.log if subject_matches(pattern, m.subject)}
            backlog = sorted(last.values(), key=lambda m: m.seq)
        else:
            backlog = []
        for m in backlog:
            sub.queue.put_nowait(m)
        return sub

    async def kv(self, name: str) -> KeyValue:
        if name not in self.buckets:
            self.buckets[name] = _LocalKeyValue(name, self.stats)
        return self.buckets[name]

    def status(self) -> dict[str, Any]:
        return {"kind": "in-process", "connected": True, **self.stats.as_dict()}


# --- NATS JetStream -----------------------------------------------------------------------


class _NatsSubscription:
    def __init__(self, stop: Callable[[], Awaitable[None]], task: asyncio.Task[None] | None = None) -> None:
        self._stop = stop
        self.task = task

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._stop()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def kv_snapshot(js: Any, kv: Any, timeout: float = 10.0) -> list[Any]:
    """The current entries of a nats-py KV bucket, deletions left out, by revision.

    Not ``kv.keys()``: in nats-py it may report an empty bucket when the watcher's end
    marker races its first entries. Here the stream's own message count says whether
    anything is there, and the watch ends at the entry with nothing pending after it."""
    info = await js.stream_info(kv._stream)
    if not info.state.messages:
        return []
    found: dict[str, Any] = {}
    watcher = await kv.watchall()
    try:
        async with asyncio.timeout(timeout):
            async for e in watcher:
                if e is None:
                    continue  # the end marker may come early (see above): count on delta
                found[e.key] = e
                if not e.delta:
                    break
    finally:
        await watcher.stop()
    live = [e for e in found.values() if e.operation not in ("DEL", "PURGE")]
    return sorted(live, key=lambda e: int(e.revision or 0))


class _NatsKeyValue:
    def __init__(self, bus: NatsBus, name: str, kv: Any) -> None:
        self.bus = bus
        self.name = name
        self.kv = kv

    async def put(self, key: str, value: Data) -> int:
        return int(await self.kv.put(encode_key(key), _bytes(value)))

    def put_nowait(self, key: str, value: Data) -> None:
        self.bus._outbox.add(("put", self.name, key, _bytes(value)))

    def delete_nowait(self, key: str) -> None:
        self.bus._outbox.add(("del", self.name, key, b""))

    async def get(self, key: str) -> Entry | None:
        from nats.js.errors import KeyNotFoundError

        try:
            e = await self.kv.get(encode_key(key))
        except KeyNotFoundError:
            return None
        return Entry(key, e.value, int(e.revision or 0))

    async def delete(self, key: str) -> None:
        await self.kv.delete(encode_key(key))

    async def entries(self) -> list[Entry]:
        out = []
        for e in await kv_snapshot(self.bus.js, self.kv):
            try:
                out.append(Entry(decode_key(e.key), e.value, int(e.revision or 0)))
            except ValueError:
                continue  # someone else's key in our bucket
        return out

    async def watch(self, handler: EntryHandler) -> Subscription:
        watcher = await self.kv.watchall()
        stats = self.bus.stats

        async def pump() -> None:
            async for e in watcher:
                if e is None:  # the end of the initial values
                    continue
                try:
                    key = decode_key(e.key)
                except ValueError:
                    continue  # someone else's key in our bucket
                deleted = e.operation in ("DEL", "PURGE")
                await _deliver(stats, handler, Entry(key, None if deleted else e.value, int(e.revision or 0), deleted))

        handle = _NatsSubscription(watcher.stop, asyncio.create_task(pump(), name=f"kv-watch-{self.name}"))
        self.bus._subs.append(handle)
        return handle


class NatsBus:
    """The bus on NATS JetStream. ``servers``: one URL or several, comma separated.

    ``start`` connects (raising when no server answers within ``connect_timeout``: a node
    configured for a cluster should not pretend to be in one) and creates the stream and
    buckets if missing. Afterwards a lost connection is retried forever by nats-py while
    the outbox holds what is published.
    """

    def __init__(self, servers: str, deployment: str, *, node_id: str = "", outbox: int = DEFAULT_OUTBOX,
                 connect_timeout: float = 5.0, max_age_seconds: float = 24 * 3600) -> None:  # fmt: skip
        self.servers = [s.strip() for s in servers.split(",") if s.strip()]
        self.deployment = deployment
        self.node_id = node_id
        self.token = _token(deployment)
        self.stream = f"FIREBOX_{self.token}"
        self.prefix = f"firebox.{self.token}"
        self.connect_timeout = connect_timeout
        self.max_age_seconds = max_age_seconds
        self.stats = BusStats()
        self._outbox = _Outbox(outbox, self.stats)
        self.nc: Any = None
        self.js: Any = None
        self._buckets: dict[str, _NatsKeyValue] = {}
        self._sender: asyncio.Task[None] | None = None
        self._subs: list[_NatsSubscription] = []
        self.disconnects = 0
        self._closing = False

    def bucket_name(self, name: str) -> str:
        return f"firebox_{self.token}_{_token(name)}"

    async def start(self) -> None:
        import nats

        async def disconnected() -> None:
            if self._closing:
                return
            self.disconnects += 1
            log.warning("bus: NATS connection lost; buffering (%d waiting)", len(self._outbox.items))

        async def reconnected() -> None:
            log.warning("bus: NATS connection back; sending %d buffered", len(self._outbox.items))

        async def error(exc: Exception) -> None:
            log.info("bus: NATS: %s", exc)

        try:
            # nats-py retries a refused first connection for ever with these options: bound it.
            async with asyncio.timeout(self.connect_timeout):
                self.nc = await nats.connect(
                    self.servers, name=f"firebox-{self.node_id or self.token}", connect_timeout=self.connect_timeout,
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5, allow_reconnect=True,
                    disconnected_cb=disconnected, reconnected_cb=reconnected, error_cb=error,
                )  # fmt: skip
        except TimeoutError:
            raise ConnectionError(f"no NATS server answered at {', '.join(self.servers)}") from None
        self._closing = False
        self.js = self.nc.jetstream(timeout=self.connect_timeout)
        await self._ensure_stream()
        self._sender = asyncio.create_task(self._send(), name="bus-sender")

    async def _ensure_stream(self) -> None:
        from nats.js.errors import BadRequestError

        try:
            await self.js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"], max_age=self.max_age_seconds)
        except BadRequestError:
            # Exists with another configuration (an operator changed it): use it as it is.
            await self.js.stream_info(self.stream)

    async def close(self) -> None:
        await self.flush(2.0)
        self._closing = True
        for sub in list(self._subs):
            await sub.stop()
        self._subs.clear()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def destroy(self) -> None:
        """Delete this deployment's stream and buckets (tests, decommissioning)."""
        from nats.js.errors import NotFoundError

        with contextlib.suppress(NotFoundError):
            await self.js.delete_stream(self.stream)
        for name in list(self._buckets):
            with contextlib.suppress(NotFoundError):
                await self.js.delete_key_value(self.bucket_name(name))

    def publish(self, subject: str, data: Data) -> None:
        # The id lets JetStream drop a duplicate when a retry follows a publish that did
        # reach the server but whose acknowledgement was lost (its duplicate window).
        self._outbox.add(("pub", subject, uuid.uuid4().hex, _bytes(data)))

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait (at most ``timeout``) until everything published has been acknowledged."""
        return await self._outbox.wait_idle(timeout)

    async def _send(self) -> None:
        backoff = 0.05
        while True:
            await self._outbox.ready.wait()
            kind, target, key, data = self._outbox.items[0]
            try:
                if kind == "pub":
                    await self.js.publish(f"{self.prefix}.{target}", data, stream=self.stream,
                                          headers={"Nats-Msg-Id": key})  # fmt: skip
                elif kind == "put":
                    await self._buckets[target].kv.put(encode_key(key), data)
                else:
                    await self._buckets[target].kv.delete(encode_key(key))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- NATS away: keep it, retry later
                self.stats.retried += 1
                log.debug("bus: send failed (%s), retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            self.stats.published += 1
            self._outbox.done()

    async def subscribe(self, pattern: str, handler: Handler, *, replay: Replay = Replay.NEW,
                        durable: str | None = None) -> Subscription:  # fmt: skip
        """Events on ``pattern``. With ``durable`` a named consumer keeps its place across
        restarts (acknowledged after the handler ran); without, an ordered consumer starts
        at ``replay``."""
        from nats.js import api

        policy = {Replay.NEW: api.DeliverPolicy.NEW, Replay.ALL: api.DeliverPolicy.ALL,
                  Replay.LAST_PER_SUBJECT: api.DeliverPolicy.LAST_PER_SUBJECT}[replay]  # fmt: skip
        cut = len(self.prefix) + 1
        stats = self.stats

        async def on_message(msg: Any) -> None:
            seq = msg.metadata.sequence.stream if msg.metadata else 0
            await _deliver(stats, handler, Message(msg.subject[cut:], msg.data, int(seq)))
            if durable:
                with contextlib.suppress(Exception):
                    await msg.ack()

        subject = f"{self.prefix}.{pattern}"
        if durable:
            sub = await self.js.subscribe(subject, cb=on_message, durable=_token(durable), stream=self.stream,
                                          deliver_policy=policy, manual_ack=True)  # fmt: skip
        else:
            sub = await self.js.subscribe(subject, cb=on_message, stream=self.stream, ordered_consumer=True,
                                          deliver_policy=policy)  # fmt: skip
        handle = _NatsSubscription(sub.unsubscribe)
        self._subs.append(handle)
        return handle

    async def kv(self, name: str) -> KeyValue:
        if name not in self._buckets:
            from nats.js.errors import BadRequestError

            bucket = self.bucket_name(name)
            try:
                kv = await self.js.create_key_value(bucket=bucket, history=1)
            except BadRequestError:
                kv = await self.js.key_value(bucket)
            self._buckets[name] = _NatsKeyValue(self, name, kv)
        return self._buckets[name]

    def status(self) -> dict[str, Any]:
        connected = bool(self.nc is not None and self.nc.is_connected)
        return {"kind": "nats", "servers": self.servers, "connected": connected, "disconnects": self.disconnects,
                **self.stats.as_dict(len(self._outbox.items))}  # fmt: skip
