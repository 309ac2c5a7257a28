"""The PSAP call handling element on asyncio: ``CallHandlingCore`` on ``firebox.sip.transport``,
implementing ``firebox.psap.api.CallHandlingApi`` for the console.

One SIP listener serves every PSAP queue the element handles (a request finds its PSAP by
its top ``Route`` or Request-URI, as with ``firebox.psap.ua.PsapAgents``). What the core asks
for is done here: responses and requests on the transport, timers on ``loop.call_later``,
each call's RTP endpoint (``firebox.psap.media.RtpEndpoint``, an echo or a recorder) opened
before its 200 and closed when it ends, location and additional data by reference fetched
with ``firebox.psap.calldata.dereference``, and the requests we originate in RFC 3261 client
transactions: MESSAGE replies and BYEs of transfer legs through ``firebox.esrp.outbound``
(non-INVITE), transfer INVITEs through ``ClientInviteTransaction``.

Console actions are synchronous methods: they change the state at once and return the new
snapshot (or raise ``NotFound``/``Conflict`` with a message for the call-taker); the SIP
side follows on the loop. ``subscribe()`` is an async iterator of every
``CallHandlingEvent``; each subscriber has a bounded queue, and one that falls behind by
``queue_size`` events does not hold the element up: its queue is emptied and it gets one
``EventKind.RESYNC`` event (read the snapshots again), counted in ``counters["events_dropped"]``.

With a ``logger`` (``firebox.psap.logevents.PsapLogger``) every event and every SIP message
of a call is handed to it for i3 log events; logging never fails a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firebox.esrp.outbound import Outbound
from firebox.psap.api import (
    CallbackEntry,
    CallHandlingEvent,
    CallView,
    EventKind,
    LocationView,
    PositionView,
    PsapStats,
    PsapView,
)
from firebox.psap.callhandling import (
    Action,
    CallHandlingCore,
    CloseMedia,
    Dereference,
    Emit,
    OpenMedia,
    Originate,
    PsapSetup,
    TimerName,
)
from firebox.psap.ua import Address, CancelTimer, Reply, SendRequest, StartTimer
from firebox.sip.message import Message, Response
from firebox.sip.transaction import (
    ClientInviteTransaction,
    Deliver,
    Send,
    Terminated,
    Timeout,
    TransportError,
    is_reliable,
)
from firebox.sip.transaction import CancelTimer as TxCancelTimer
from firebox.sip.transaction import StartTimer as TxStartTimer

__all__ = ["CallHandlingElement"]

log = logging.getLogger(__name__)

#: Events a subscriber may fall behind by before it is told to resynchronize.
QUEUE_SIZE = 1000


class _Subscriber:
    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[CallHandlingEvent | None] = asyncio.Queue(maxsize=size)


class CallHandlingElement:
    """The element for ``psaps`` on ``host:port`` (0: any free port; ``port`` holds the
    bound one after ``start``). ``directory``: PSAP id -> URI of every transfer target
    known by id; ``transfer_via``: where transfer INVITEs go (None: the ESRP the call came
    from); ``media_mode``: ``echo`` or ``record`` (into ``record_dir``)."""

    def __init__(
        self,
        psaps: Iterable[PsapSetup],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        transports: Iterable[str] = ("udp",),
        advertised_host: str | None = None,
        directory: dict[str, str] | None = None,
        transfer_via: Address | None = None,
        media_mode: str = "echo",
        record_dir: Path | None = None,
        http: Any = None,
        dereference_timeout: float = 2.0,
        logger: Any = None,
        queue_size: int = QUEUE_SIZE,
        publish_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.port = port
        self.transports = tuple(transports)
        self.advertised_host = advertised_host or host
        self.media_mode = media_mode
        self.record_dir = record_dir
        self.http = http
        self.dereference_timeout = dereference_timeout
        self.logger = logger
        self.queue_size = queue_size
        self._clock = clock
        self.core = CallHandlingCore(
            psaps, host=self.advertised_host, port=port, transport=self.transports[0],
            directory=directory, publish_seconds=publish_seconds,
        )  # fmt: skip
        self.core.transfer_via = transfer_via
        self.server: Any = None
        self.counters: Counter[str] = Counter()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._media: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscribers: set[_Subscriber] = set()
        self._outbound: Outbound | None = None
        self._invites: dict[str, tuple[str, ClientInviteTransaction, Address, dict[str, asyncio.TimerHandle]]] = {}

    @property
    def address(self) -> Address:
        return (self.advertised_host, self.port, self.transports[0])

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        from firebox.sip.transport import start_sip_server

        self.server = await start_sip_server(self._handle, self.host, self.port, transports=self.transports)
        self.port = next(iter(self.server.addresses.values()))[1]
        self.core.port = self.port
        self._outbound = Outbound(self._send, lambda uri: None)
        self._apply(self.core.start(self._clock()))

    async def close(self) -> None:
        """Hang up the calls still up (BYE), then stop: timers, media, listener, subscribers."""
        now = self._clock()
        for key in self.core.active_calls():
            with contextlib.suppress(Exception):
                self._apply(self.core.hang_up(key, now))
        await asyncio.sleep(0.05)  # let the BYEs leave
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for _, _, _, timers in self._invites.values():
            for handle in timers.values():
                handle.cancel()
        self._invites.clear()
        if self._outbound is not None:
            self._outbound.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for endpoint in list(self._media.values()):
            with contextlib.suppress(Exception):
                await endpoint.close()
        self._media.clear()
        if self.server is not None:
            await self.server.close()
        for sub in list(self._subscribers):
            self._put(sub, None)

    # -- CallHandlingApi: snapshots --------------------------------------------------------------

    def psaps(self) -> list[PsapView]:
        return self.core.psaps()

    def calls(self, psap_id: str, *, include_ended: bool = False) -> list[CallView]:
        return [self._with_media(v) for v in self.core.calls(psap_id, include_ended=include_ended)]

    def call(self, call_id: str) -> CallView:
        return self._with_media(self.core.call(call_id))

    def positions(self, psap_id: str) -> list[PositionView]:
        return self.core.positions(psap_id)

    def callbacks(self, psap_id: str) -> list[CallbackEntry]:
        return self.core.callbacks(psap_id)

    def stats(self, psap_id: str) -> PsapStats:
        return self.core.stats(psap_id, self._clock())

    def _with_media(self, view: CallView) -> CallView:
        """The RTP figures of the call's endpoint, read now."""
        for key, endpoint in self._media.items():
            if key.startswith(f"{view.sip_call_id}/"):
                from dataclasses import replace

                return replace(view, media={**view.media, "rtp": endpoint.stats()})
        return view

    # -- CallHandlingApi: actions ----------------------------------------------------------------

    def _act(self, result: tuple[Any, list[Action]]) -> Any:
        value, actions = result
        self._apply(actions)
        return value

    def sign_in(self, position_id: str, user: str) -> PositionView:
        return self._act(self.core.sign_in(position_id, user, self._clock()))

    def sign_out(self, position_id: str, user: str) -> PositionView:
        return self._act(self.core.sign_out(position_id, user, self._clock()))

    def set_ready(self, position_id: str, user: str, ready: bool) -> PositionView:
        return self._act(self.core.set_ready(position_id, user, ready, self._clock()))

    def answer(self, position_id: str, user: str, call_id: str | None = None) -> CallView:
        return self._act(self.core.answer(position_id, user, call_id, self._clock()))

    def release(self, position_id: str, user: str, call_id: str) -> CallView:
        return self._act(self.core.release(position_id, user, call_id, self._clock()))

    def hold(self, position_id: str, user: str, call_id: str, on: bool) -> CallView:
        return self._act(self.core.hold(position_id, user, call_id, on, self._clock()))

    def transfer(self, position_id: str, user: str, call_id: str, target: str) -> CallView:
        return self._act(self.core.transfer(position_id, user, call_id, target, self._clock()))

    def send_text(self, position_id: str, user: str, call_id: str, text: str) -> CallView:
        return self._act(self.core.send_text(position_id, user, call_id, text, self._clock()))

    def record_callback(self, callback_id: str, user: str, outcome: str, *, done: bool) -> CallbackEntry:
        return self._act(self.core.record_callback(callback_id, user, outcome, done, self._clock()))

    def add_callback(
        self, psap_id: str, call_id: str, callback: str | None, location: LocationView | None, at: float,
        reason: str, tried: tuple[str, ...] = (),
    ) -> CallbackEntry:
        """A call the ESRP could not connect (its callback worklist), onto this PSAP's list."""
        return self._act(self.core.add_callback(psap_id, call_id, callback, location, at, reason, tried, self._clock()))

    async def subscribe(self) -> AsyncIterator[CallHandlingEvent]:
        """Every event from now on, until the element closes (or the consumer stops)."""
        sub = _Subscriber(self.queue_size)
        self._subscribers.add(sub)
        try:
            while True:
                event = await sub.queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._subscribers.discard(sub)

    def _put(self, sub: _Subscriber, event: CallHandlingEvent | None) -> None:
        try:
            sub.queue.put_nowait(event)
        except asyncio.QueueFull:
            # A slow consumer: drop what it has not read, tell it to read the snapshots again.
            self.counters["events_dropped"] += sub.queue.qsize()
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait(CallHandlingEvent(EventKind.RESYNC, "", datetime.now(UTC)) if event is not None else None)

    # -- SIP in ----------------------------------------------------------------------------------

    def _handle(self, message: Message, source: Any) -> None:
        try:
            self._log_sip(message, "incoming")
            if isinstance(message, Response):
                if self._outbound is not None and self._outbound.on_response(message):
                    return
                if self._invite_response(message):
                    return
            self._apply(self.core.receive(message, source, self._clock()))
        except Exception:  # one bad message must not take the element down: logged, counted
            self.counters["errors"] += 1
            log.exception("call handling failed on a message from %s", source)

    def _log_sip(self, message: Message, direction: str) -> None:
        if self.logger is None:
            return
        ids = self.core.ids_for_sip(message.headers.get("Call-ID") or "")
        if ids is None:
            return
        try:
            self.logger.signaling(message, direction, ids[0], ids[1])
        except Exception:
            self.counters["log_errors"] += 1
            log.exception("call handling: signaling log event failed")

    # -- applying the core's actions ---------------------------------------------------------------

    def _send(self, message: Message, destination: Address) -> None:
        self._log_sip(message, "outgoing")
        self.server.send(message, destination)

    def _apply(self, actions: list[Action]) -> None:
        loop = asyncio.get_running_loop()
        for action in actions:
            if isinstance(action, Reply):
                self._log_sip(action.response, "outgoing")
                self.server.reply(action.response, action.source)
            elif isinstance(action, SendRequest):
                self._send(action.request, action.destination)
            elif isinstance(action, StartTimer):
                key = (action.key, str(action.name))
                old = self._timers.pop(key, None)
                if old is not None:
                    old.cancel()
                self._timers[key] = loop.call_later(action.delay, self._on_timer, action.key, action.name)
            elif isinstance(action, CancelTimer):
                old = self._timers.pop((action.key, str(action.name)), None)
                if old is not None:
                    old.cancel()
            elif isinstance(action, Emit):
                self._emit(action.event)
            elif isinstance(action, OpenMedia):
                self._spawn(self._open_media(action))
            elif isinstance(action, CloseMedia):
                endpoint = self._media.pop(action.key, None)
                if endpoint is not None:
                    self._spawn(endpoint.close())
            elif isinstance(action, Originate):
                self._originate(action)
            elif isinstance(action, Dereference):
                if self.http is not None:
                    self._spawn(self._dereference(action))

    def _emit(self, event: CallHandlingEvent) -> None:
        for sub in list(self._subscribers):
            self._put(sub, event)
        if self.logger is not None:
            try:
                self.logger.on_event(event)
            except Exception:
                self.counters["log_errors"] += 1
                log.exception("call handling: log event failed")

    def _on_timer(self, key: str, name: TimerName) -> None:
        self._timers.pop((key, str(name)), None)
        try:
            self._apply(self.core.timer(key, name, self._clock()))
        except Exception:
            self.counters["errors"] += 1
            log.exception("call handling timer %s failed", name)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters["errors"] += 1
            log.error("call handling task failed", exc_info=task.exception())

    # -- media and call data -----------------------------------------------------------------------

    async def _open_media(self, action: OpenMedia) -> None:
        from firebox.psap.media import RtpEndpoint

        host = self.host if self.host not in ("0.0.0.0", "::") else self.advertised_host
        try:
            endpoint = await RtpEndpoint.open(
                host, mode=self.media_mode, record_dir=self.record_dir, name=action.key.replace("/", "-")
            )
        except (OSError, ValueError) as exc:
            # The call is answered anyway (never dropped over media): port 9, discard (RFC 863).
            self.counters["media_failed"] += 1
            log.error("call handling: no RTP endpoint for %s (%s); answering without media", action.key, exc)
            self._apply(self.core.media_ready(action.key, 9, self._clock()))
            return
        if action.remote is not None:
            endpoint.set_remote(*action.remote)
        self._media[action.key] = endpoint
        actions = self.core.media_ready(action.key, endpoint.port, self._clock())
        self._apply(actions)

    async def _dereference(self, action: Dereference) -> None:
        from firebox.psap.calldata import dereference

        fresh = await dereference(action.data, self.http, timeout=self.dereference_timeout)
        if fresh is not action.data:
            self._apply(self.core.update_data(action.key, fresh, self._clock()))

    # -- requests we originate ---------------------------------------------------------------------

    def _originate(self, action: Originate) -> None:
        if action.request.method != "INVITE":
            assert self._outbound is not None
            self._outbound.request(
                action.request,
                lambda response, key=action.key: self._apply(self.core.originated(key, response, self._clock())),
                lambda key=action.key: self._apply(self.core.originate_failed(key, self._clock())),
            )
            return
        tx = ClientInviteTransaction(action.request, reliable=is_reliable(action.destination[2]))
        branch = action.request.branch or ""
        self._invites[branch] = (action.key, tx, action.destination, {})
        self._run_invite(branch, tx.start())

    def _invite_response(self, response: Response) -> bool:
        entry = self._invites.get(response.branch or "")
        if entry is None or response.cseq[1] != "INVITE":
            return False
        self._run_invite(response.branch or "", entry[1].receive(response))
        return True

    def _run_invite(self, branch: str, events: list[Any]) -> None:
        entry = self._invites.get(branch)
        if entry is None:
            return
        key, tx, destination, timers = entry
        loop = asyncio.get_running_loop()
        for event in events:
            if isinstance(event, Send):
                self._send(event.message, destination)
            elif isinstance(event, TxStartTimer):
                old = timers.pop(event.name, None)
                if old is not None:
                    old.cancel()
                timers[event.name] = loop.call_later(event.delay, self._invite_timer, branch, event.name)
            elif isinstance(event, TxCancelTimer):
                old = timers.pop(event.name, None)
                if old is not None:
                    old.cancel()
            elif isinstance(event, Deliver) and isinstance(event.message, Response):
                self._apply(self.core.originated(key, event.message, self._clock()))
            elif isinstance(event, Timeout | TransportError):
                self._apply(self.core.originate_failed(key, self._clock()))
            elif isinstance(event, Terminated):
                for handle in timers.values():
                    handle.cancel()
                self._invites.pop(branch, None)

    def _invite_timer(self, branch: str, name: str) -> None:
        entry = self._invites.get(branch)
        if entry is None:
            return
        entry[3].pop(name, None)
        try:
            self._run_invite(branch, entry[1].timer(name))
        except Exception:
            self.counters["errors"] += 1
            log.exception("call handling: transfer INVITE timer failed")
