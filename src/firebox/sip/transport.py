"""Thin asyncio adapters for the sans-I/O SIP message layer (RFC 3261 section 18).

``start_sip_server`` listens on UDP, TCP and/or TLS and hands every parsed message to a
``handler(message, source)`` (plain function or coroutine function); ``SipServer.send`` writes
a message or raw bytes to a destination. The protocol logic lives in ``message`` and
``framing``; this module only moves bytes and applies the transport rules of section 18:

* UDP: one datagram, one ``parse_message`` call. A request that does not parse is answered
  with the error's status and precise reason phrase when its ``Via``/``From``/``To``/...
  lines can still be read (a lenient line scan), else dropped and counted.
* TCP/TLS: bytes go through one ``StreamFramer`` per connection; ``CRLFCRLF`` pings are
  answered with a ``CRLF`` pong (RFC 5626 4.4.1); framing errors are answered like UDP parse
  errors, and the connection is closed after a 413 or when the error cannot be answered
  (unrecoverable garbage).
* Every request gets ``received=`` on its top ``Via`` when the source IP is not the sent-by
  host (section 18.2.1), and ``rport`` filled when present without a value (RFC 3581).
* Responses go back over the connection the request came on (section 18.2.2) when it is
  still open; otherwise, and for requests, over a pooled outbound connection keyed by
  ``(host, port, transport)``, created on demand and closed after ``idle_timeout``.

``reuse_port=True`` sets ``SO_REUSEPORT`` so that several processes (one per core) share a
port; ``install_uvloop`` switches asyncio to uvloop when it is installed. ``SipServer.stats``
holds per-transport counters for metrics.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import ipaddress
import logging
import re
import secrets
import socket
import ssl as _ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from firebox.sip.address import parse_via
from firebox.sip.errors import SipParseError
from firebox.sip.framing import DEFAULT_MAX_MESSAGE_SIZE, PONG, Ping, StreamFramer
from firebox.sip.headers import NAMES, Headers
from firebox.sip.message import Message, Request, Response, parse_message, serialize

__all__ = [
    "TRANSPORTS",
    "Connection",
    "Handler",
    "SipServer",
    "Source",
    "TransportStats",
    "error_response",
    "install_uvloop",
    "stamp_via",
    "start_sip_server",
    "via_destination",
]

log = logging.getLogger(__name__)

#: Transport names, lower case, as used in ``Source.transport`` and ``start_sip_server``.
TRANSPORTS = ("udp", "tcp", "tls")
#: Default idle time after which a stream connection with no traffic is closed (seconds).
DEFAULT_IDLE_TIMEOUT = 300.0
#: Default UDP socket buffer size (bytes), against drops in bursts.
DEFAULT_UDP_BUFFER = 4 * 1024 * 1024
_START_LINE_RE = re.compile(
    rb"(?m)^(?:[A-Za-z0-9\-.!%*_+`'~]+ [^ \r\n]+ SIP/[0-9]+\.[0-9]+"
    rb"|SIP/[0-9]+\.[0-9]+ [0-9]{3}(?: [^\r\n]*)?)\r?$",
    re.IGNORECASE,
)
_BLANK_LINE_RE = re.compile(rb"\n\r?\n")
#: Header lines copied from an unparseable request into its error response (8.2.6.2).
_ECHO_KEYS = ("via", "from", "to", "call-id", "cseq")


def install_uvloop() -> bool:
    """Make asyncio use uvloop's event loop policy when uvloop is installed; ``True`` if so."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


# -- counters ------------------------------------------------------------------------------


@dataclass(slots=True)
class TransportStats:
    """Counters of one transport, for metrics. Messages are SIP messages (not pings)."""

    received: int = 0  # messages parsed and handed to the handler
    sent: int = 0  # messages (or raw payloads) written
    parse_errors: int = 0  # messages that did not parse or frame
    error_responses: int = 0  # 4xx/5xx written by the transport itself for parse errors
    dropped: int = 0  # unparseable input that could not be answered
    handler_errors: int = 0  # exceptions raised by the handler
    send_errors: int = 0  # writes or connects that failed
    pings: int = 0  # keep-alive pings answered (streams)
    bytes_received: int = 0
    bytes_sent: int = 0
    connections_opened: int = 0  # streams: inbound and outbound
    connections_closed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


# -- sources and connections ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from (or where to send one): transport (``udp``, ``tcp``,
    ``tls``), remote host and port, and for streams the connection it arrived on."""

    transport: str
    host: str
    port: int
    connection: Connection | None = field(default=None, compare=False, repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


Handler = Callable[[Message, Source], Awaitable[None] | None]


def _unbracket(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _same_ip(sent_by: str, ip: str) -> bool:
    sent_by = _unbracket(sent_by)
    if sent_by == ip:
        return True
    try:
        return ipaddress.ip_address(sent_by) == ipaddress.ip_address(ip)
    except ValueError:
        return False


def stamp_via(request: Request, host: str, port: int) -> None:
    """Add ``received`` to the top ``Via`` of ``request`` when its sent-by host is not
    ``host`` (RFC 3261 section 18.2.1) and fill an empty ``rport`` with ``port`` (RFC 3581
    section 4, which then requires ``received`` always). Raises ``SipParseError`` for a
    malformed top ``Via``."""
    headers = request.headers
    top = headers.get("Via")
    if top is None:
        return
    if "rport" not in top and _same_ip(_top_via_host(top), host):
        return  # fast path: nothing to add
    via = parse_via(top)
    changed = False
    if via.wants_rport and via.params.get("rport") is None:
        via.params["rport"] = str(port)
        via.params["received"] = host
        changed = True
    elif not _same_ip(via.host, host) and via.params.get("received") != host:
        via.params["received"] = host
        changed = True
    if changed:
        headers.pop_first("Via")
        headers.insert_first("Via", str(via))


def _top_via_host(value: str) -> str:
    """The sent-by host of a Via value, cheaply (full parse on anything unusual)."""
    parts = value.split(None, 1)
    if len(parts) == 2:
        hostport = parts[1].split(";", 1)[0].strip()
        if hostport.startswith("["):
            return hostport[: hostport.find("]") + 1]
        return hostport.split(":", 1)[0]
    return ""


def _scan_head(data: bytes) -> tuple[str, list[tuple[str, str, str]]]:
    """Lenient read of a message head for answering an unparseable request: the start line
    and the well-formed lines among ``_ECHO_KEYS`` (every other line is ignored)."""
    data = data.lstrip(b"\r\n")
    m = _BLANK_LINE_RE.search(data)
    head = data if m is None else data[: m.start()]
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    items: list[tuple[str, str, str]] = []
    for line in lines[1:]:
        if not line or line[0] in " \t" or "\r" in line or "\x00" in line:
            continue
        name, sep, value = line.partition(":")
        info = NAMES.get(name.strip(" \t")) or NAMES.get(name.strip(" \t").lower())
        if not sep or info is None or info[0] not in _ECHO_KEYS:
            continue
        value = value.strip(" \t")
        if value and value.isprintable():
            items.append((info[0], info[1], value))
    return lines[0], items


def error_response(
    data: bytes, error: SipParseError, host: str, port: int
) -> bytes | None:
    """The bytes answering the unparseable request ``data`` with ``error``'s status and
    reason (RFC 3261 8.2.6.2, 21.4.1), or ``None`` when it is not a request (or an ACK,
    never answered, 17.1.1.3) or has no readable ``Via`` to route the answer by."""
    start, items = _scan_head(data)
    if (
        not start
        or start[:4].upper() == "SIP/"
        or not _START_LINE_RE.match(start.encode())
    ):
        return None
    method = start.split(" ", 1)[0]
    if method.upper() == "ACK" or not any(k == "via" for k, _, _ in items):
        return None
    seen: set[str] = set()
    echoed: list[tuple[str, str, str]] = []
    for key, name, value in items:
        if key != "via" and key in seen:
            continue
        seen.add(key)
        echoed.append((key, name, value))
    for i, (key, name, value) in enumerate(echoed):
        if key == "to" and ";tag=" not in value.replace(" ", "").lower():
            echoed[i] = (key, name, f"{value};tag={secrets.token_hex(5)}")  # 8.2.6.2
    headers = Headers._from_parsed(echoed, None)
    response = Response(error.status, error.reason, headers)
    try:
        stamp_via(response, host, port)  # type: ignore[arg-type]
    except SipParseError:
        pass  # answer anyway, to the source address
    reason = error.reason if error.reason.isprintable() else "Bad Request"
    response.reason = reason
    return serialize(response)


# -- streams -------------------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """One TCP or TLS connection, inbound or outbound: a ``StreamFramer`` and a transport."""

    def __init__(
        self, server: SipServer, transport_name: str, outbound: bool = False
    ) -> None:
        self.server = server
        self.name = transport_name
        self.outbound = outbound
        self.stats = server.stats[transport_name]
        self.framer = StreamFramer(server.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.key: tuple[str, int, str] | None = None
        self.last_activity = time.monotonic()
        self.closed = asyncio.get_running_loop().create_future()
        self._pending = b""  # copy of the framer's unconsumed tail (for error answers)

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (_unbracket(str(peer[0])), int(peer[1]))
        self.stats.connections_opened += 1
        self.server._register(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.connections_closed += 1
        self.server._unregister(self)
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError(f"{self.name} connection to {self.peer} is closed")
        self.transport.write(data)
        self.last_activity = time.monotonic()
        self.stats.bytes_sent += len(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.stats.bytes_received += len(data)
        try:
            self._on_data(data)
        except Exception:  # a bug here must close this connection, not reach the loop
            log.exception(
                "SIP %s input handling failed; closing %s", self.name, self.peer
            )
            self.close()

    def _on_data(self, data: bytes) -> None:
        region = self._pending + data if self._pending else data
        frames = self.framer.feed(data)
        left = self.framer.buffered
        self._pending = bytes(region[len(region) - left :]) if left else b""
        if not frames:
            return
        errors = [f for f in frames if isinstance(f, SipParseError)]
        heads = _split_heads(region[: len(region) - left]) if errors else []
        messages = [f for f in frames if not isinstance(f, Ping)]
        paired = len(heads) == len(messages)
        source = Source(self.name, self.peer[0], self.peer[1], self)
        for index, frame in enumerate(messages if errors else frames):
            if isinstance(frame, Ping):
                self.stats.pings += 1
                try:
                    self.write(PONG)
                except ConnectionError:
                    return
            elif isinstance(frame, SipParseError):
                head = heads[index] if paired else b""
                if not self._answer_error(frame, head):
                    return
            else:
                self.server._deliver(frame, source, self.stats)
        if errors:  # pings of a feed with errors: answer them after the messages
            for frame in frames:
                if isinstance(frame, Ping):
                    self.stats.pings += 1
                    if self.is_open:
                        self.write(PONG)

    def _answer_error(self, error: SipParseError, head: bytes) -> bool:
        """Answer a framing error; ``False`` when the connection was closed."""
        self.stats.parse_errors += 1
        answer = error_response(head, error, *self.peer) if head else None
        if answer is not None and self.is_open:
            self.write(answer)
            self.stats.error_responses += 1
        else:
            self.stats.dropped += 1
            log.info(
                "SIP %s unanswerable input from %s:%s (%s); dropped %d so far",
                self.name, self.peer[0], self.peer[1], error, self.stats.dropped,
            )  # fmt: skip
        # a 413 leaves the stream in doubt; input not even headed by a start line is
        # garbage. A well-framed message that is merely unanswerable (a response, an ACK,
        # no Via) is dropped and the connection kept.
        if error.status == 413 or not head:
            log.info("SIP %s closing %s:%s after %s", self.name, *self.peer, error)
            self.close()
            return False
        return True


def _split_heads(data: bytes) -> list[bytes]:
    """The header sections of the messages in ``data``, cut at start lines (for pairing the
    framer's errors with the text they came from)."""
    starts = [m.start() for m in _START_LINE_RE.finditer(data)]
    if not starts:
        return []
    return [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]


# -- UDP -----------------------------------------------------------------------------------


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer) -> None:
        self.server = server
        self.stats = server.stats["udp"]
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            self._on_datagram(data, addr)
        except Exception:  # never let one datagram's trouble reach the event loop
            log.exception("SIP udp: handling a datagram from %s failed", addr)

    def _on_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        stats = self.stats
        stats.bytes_received += len(data)
        host, port = _unbracket(str(addr[0])), int(addr[1])
        if data in (b"\r\n\r\n", b"\r\n", b"\0\0\0\0") or not data.strip(b"\r\n"):
            return  # keep-alives (RFC 5626 4.4.2 uses STUN; CRLFs are common too)
        try:
            message = parse_message(data)
        except SipParseError as error:
            stats.parse_errors += 1
            try:
                answer = error_response(data, error, host, port)
            except Exception:
                log.exception("SIP udp: building the error response failed")
                answer = None
            if answer is None:
                stats.dropped += 1
                log.info(
                    "SIP udp unanswerable datagram from %s:%s (%s); dropped %d so far",
                    host, port, error, stats.dropped,
                )  # fmt: skip
                return
            self._send(answer, (host, port))
            stats.error_responses += 1
            return
        self.server._deliver(message, Source("udp", host, port), stats)

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("UDP socket is closed")
        self.transport.sendto(data, addr)
        self.stats.bytes_sent += len(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP udp socket error: %s", exc)  # ICMP unreachable and the like


# -- the server ----------------------------------------------------------------------------


class SipServer:
    """The listeners of ``start_sip_server`` and the pool of stream connections."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        ssl_client: _ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.max_message_size = max_message_size
        self.idle_timeout = idle_timeout
        self.ssl_client = ssl_client
        self.stats: dict[str, TransportStats] = {
            t: TransportStats() for t in TRANSPORTS
        }
        #: Bound addresses by transport, e.g. ``{"udp": ("127.0.0.1", 5060)}``.
        self.addresses: dict[str, tuple[str, int]] = {}
        self._udp: _Datagrams | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._pool: dict[tuple[str, int, str], Connection] = {}
        self._connecting: dict[tuple[str, int, str], asyncio.Future[Connection]] = {}
        self._connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # -- receiving ---------------------------------------------------------------------

    def _deliver(self, message: Message, source: Source, stats: TransportStats) -> None:
        if isinstance(message, Request):
            try:
                stamp_via(message, source.host, source.port)
            except SipParseError as error:
                stats.parse_errors += 1
                answer = error_response(
                    serialize(message), error, source.host, source.port
                )
                if answer is not None:
                    self._write_raw(answer, source)
                    stats.error_responses += 1
                return
        stats.received += 1
        try:
            result = self.handler(message, source)
        except Exception:
            stats.handler_errors += 1
            log.exception("SIP handler failed on a message from %s", source)
            return
        if result is not None and inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._task_done(t, stats))

    def _task_done(self, task: asyncio.Task[Any], stats: TransportStats) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            stats.handler_errors += 1
            log.error("SIP handler failed", exc_info=task.exception())

    # -- sending -----------------------------------------------------------------------

    def send(
        self, message: Message | bytes, destination: Source | tuple[Any, ...]
    ) -> None:
        """Write ``message`` (or raw bytes) to ``destination``: a ``Source`` (a reply goes
        back over its connection while that is open, RFC 3261 18.2.2), ``(host, port)``
        for UDP, or ``(host, port, transport)``. Without a usable connection, a pooled or a
        new outbound one is used; connecting happens in the background (failures are
        logged and counted in ``send_errors``; use ``send_async`` to wait for them)."""
        data = message if isinstance(message, bytes | bytearray) else serialize(message)
        dest = _destination(destination)
        if self._try_write(data, dest):
            return
        task = asyncio.ensure_future(self._send_new(data, dest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reply(self, response: Response | bytes, source: Source) -> None:
        """Send a response to the request that came from ``source`` by RFC 3261 18.2.2
        (and RFC 3581): over the request's connection while it is open, else to the top
        ``Via``'s ``received`` (or sent-by) host and its ``rport`` (or sent-by) port, over
        a pooled or new connection for streams. ``response`` must be a ``Response`` when
        the destination has to be read from its ``Via``."""
        connection = source.connection
        if source.transport != "udp" and connection is not None and connection.is_open:
            self.send(response, source)
            return
        if isinstance(response, bytes | bytearray):
            response = parse_message(bytes(response))  # type: ignore[assignment]
        assert isinstance(response, Response)
        self.send(response, via_destination(response, source))

    async def send_async(
        self, message: Message | bytes, destination: Source | tuple[Any, ...]
    ) -> None:
        """Like ``send``, but waits for an outbound connection and raises ``OSError``
        when it cannot be made."""
        data = message if isinstance(message, bytes | bytearray) else serialize(message)
        dest = _destination(destination)
        if not self._try_write(data, dest):
            connection = await self.connect(dest.host, dest.port, dest.transport)
            connection.write(data)
            self.stats[dest.transport].sent += 1

    def _try_write(self, data: bytes, dest: Source) -> bool:
        stats = self.stats[dest.transport]
        if dest.transport == "udp":
            if self._udp is None:
                raise RuntimeError("this server has no UDP transport")
            try:
                self._udp._send(data, (dest.host, dest.port))
            except OSError as exc:
                stats.send_errors += 1
                log.info("SIP udp send to %s:%s failed: %s", dest.host, dest.port, exc)
                return True
            stats.sent += 1
            return True
        connection = dest.connection
        if connection is None or not connection.is_open:
            connection = self._pool.get(
                (_unbracket(dest.host), dest.port, dest.transport)
            )
        if connection is not None and connection.is_open:
            connection.write(data)
            stats.sent += 1
            return True
        return False

    async def _send_new(self, data: bytes, dest: Source) -> None:
        try:
            connection = await self.connect(dest.host, dest.port, dest.transport)
            connection.write(data)
        except (OSError, ConnectionError, _ssl.SSLError) as exc:
            self.stats[dest.transport].send_errors += 1
            log.info(
                "SIP %s send to %s:%s failed: %s",
                dest.transport,
                dest.host,
                dest.port,
                exc,
            )
            return
        self.stats[dest.transport].sent += 1

    def _write_raw(self, data: bytes, source: Source) -> None:
        try:
            if source.transport == "udp":
                if self._udp is not None:
                    self._udp._send(data, source.address)
            elif source.connection is not None and source.connection.is_open:
                source.connection.write(data)
        except (OSError, ConnectionError) as exc:
            self.stats[source.transport].send_errors += 1
            log.info(
                "SIP %s write to %s failed: %s", source.transport, source.address, exc
            )

    async def connect(self, host: str, port: int, transport: str = "tcp") -> Connection:
        """The pooled connection to ``(host, port, transport)``, made if needed (one connect
        at a time per key; concurrent callers share it)."""
        if transport not in ("tcp", "tls"):
            raise ValueError(f"{transport!r} is not a stream transport")
        key = (_unbracket(host), port, transport)
        existing = self._pool.get(key)
        if existing is not None and existing.is_open:
            return existing
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Connection] = loop.create_future()
        self._connecting[key] = future
        try:
            ssl_context: _ssl.SSLContext | None = None
            if transport == "tls":
                ssl_context = self.ssl_client or _ssl.create_default_context()
            _, connection = await loop.create_connection(
                lambda: Connection(self, transport, outbound=True),
                key[0],
                port,
                ssl=ssl_context,
            )
            connection.key = key
            self._pool[key] = connection
            future.set_result(connection)
            return connection
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            self._connecting.pop(key, None)

    # -- connection bookkeeping -----------------------------------------------------------

    def _register(self, connection: Connection) -> None:
        self._connections.add(connection)
        if not connection.outbound:
            key = (connection.peer[0], connection.peer[1], connection.name)
            connection.key = key
            self._pool.setdefault(key, connection)

    def _unregister(self, connection: Connection) -> None:
        self._connections.discard(connection)
        if connection.key is not None and self._pool.get(connection.key) is connection:
            del self._pool[connection.key]

    async def _sweep(self) -> None:
        interval = max(0.05, min(self.idle_timeout / 4, 30.0))
        while True:
            await asyncio.sleep(interval)
            cutoff = time.monotonic() - self.idle_timeout
            for connection in list(self._connections):
                if connection.last_activity < cutoff:
                    log.debug(
                        "SIP %s closing idle connection %s",
                        connection.name,
                        connection.peer,
                    )
                    connection.close()

    @property
    def connections(self) -> list[Connection]:
        """Open stream connections, inbound and outbound."""
        return [c for c in self._connections if c.is_open]

    # -- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        """Stop listening, close every connection and wait (bounded) for them to go."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self._servers:
            server.close()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        waits = [c.closed for c in self._connections]
        for connection in list(self._connections):
            connection.close()
        for task in list(self._tasks):
            task.cancel()
        if waits:
            await asyncio.wait(waits, timeout=2.0)
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except TimeoutError:
                pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def via_destination(response: Response, source: Source | None = None) -> Source:
    """Where a response goes by its top ``Via`` (RFC 3261 18.2.2, RFC 3581 section 4):
    the ``received`` host, else the sent-by host; the ``rport`` port, else the sent-by
    port, else 5060 (5061 for TLS). ``maddr`` is not supported. The transport is the
    Via's (``source``'s when given). Raises ``SipParseError`` for a malformed Via."""
    via = response.top_via
    transport = source.transport if source is not None else via.transport.lower()
    if transport not in TRANSPORTS:
        raise SipParseError(
            400, f"Bad Request: unsupported Via transport {via.transport}"
        )
    host = _unbracket(via.received or via.host)
    port = via.rport or via.port or (5061 if transport == "tls" else 5060)
    return Source(transport, host, port)


def _destination(destination: Source | tuple[Any, ...]) -> Source:
    if isinstance(destination, Source):
        return destination
    if len(destination) == 2:
        return Source("udp", _unbracket(str(destination[0])), int(destination[1]))
    host, port, transport = destination
    transport = str(transport).lower()
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}")
    return Source(transport, _unbracket(str(host)), int(port))


async def start_sip_server(
    handler: Handler,
    host: str = "0.0.0.0",
    port: int = 5060,
    *,
    transports: str | Iterable[str] = ("udp", "tcp"),
    ssl: _ssl.SSLContext | None = None,
    tls_port: int | None = None,
    ssl_client: _ssl.SSLContext | None = None,
    reuse_port: bool = False,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    udp_buffer: int = DEFAULT_UDP_BUFFER,
) -> SipServer:
    """Listen for SIP on ``host``: UDP and TCP on ``port`` (the same number; with port 0 the
    one the UDP socket got is used for TCP too), TLS on ``tls_port`` (default: ``port`` when
    TLS is the only stream transport, else ``port + 1``, or any free port when ``port`` is 0)
    with the server context ``ssl``. ``ssl_client`` is used for outbound TLS (default: the
    system's verified context). Each parsed message goes to ``handler(message, source)``.
    ``reuse_port`` sets ``SO_REUSEPORT`` on every listener; ``udp_buffer`` is the UDP
    socket's receive and send buffer size (the kernel caps it at ``net.core.rmem_max``;
    0 keeps the system default)."""
    names = (transports,) if isinstance(transports, str) else tuple(transports)
    names = tuple(dict.fromkeys(t.lower() for t in names))
    unknown = [t for t in names if t not in TRANSPORTS]
    if unknown or not names:
        raise ValueError(f"unknown transports {unknown or names!r}; use {TRANSPORTS}")
    if "tls" in names and ssl is None:
        raise ValueError("the tls transport needs an ssl.SSLContext (ssl=...)")
    attempts = 8 if port == 0 else 1
    for attempt in range(attempts):
        try:
            return await _listen(
                handler, host, port, names, ssl, tls_port, ssl_client, reuse_port,
                max_message_size, idle_timeout, udp_buffer,
            )  # fmt: skip
        except OSError as exc:
            # port 0: the number UDP got may be taken for TCP; try another one
            if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _listen(
    handler: Handler,
    host: str,
    port: int,
    names: tuple[str, ...],
    ssl: _ssl.SSLContext | None,
    tls_port: int | None,
    ssl_client: _ssl.SSLContext | None,
    reuse_port: bool,
    max_message_size: int,
    idle_timeout: float,
    udp_buffer: int,
) -> SipServer:
    loop = asyncio.get_running_loop()
    server = SipServer(
        handler, max_message_size=max_message_size, idle_timeout=idle_timeout,
        ssl_client=ssl_client,
    )  # fmt: skip
    reuse = True if reuse_port else None
    requested = port
    try:
        if "udp" in names:
            _, protocol = await loop.create_datagram_endpoint(
                lambda: _Datagrams(server), local_addr=(host, port), reuse_port=reuse
            )
            server._udp = protocol
            sock = protocol.transport.get_extra_info("socket")  # type: ignore[union-attr]
            if sock is not None and udp_buffer:
                for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    try:  # bursts of datagrams overflow the default buffer
                        sock.setsockopt(socket.SOL_SOCKET, option, udp_buffer)
                    except OSError:
                        log.debug("SIP udp: could not set socket buffer %s", option)
            sockname = protocol.transport.get_extra_info("sockname")  # type: ignore[union-attr]
            server.addresses["udp"] = (sockname[0], sockname[1])
            port = sockname[1]
        for name in ("tcp", "tls"):
            if name not in names:
                continue
            bind_port = port
            if name == "tls":
                if tls_port is not None:
                    bind_port = tls_port
                elif "tcp" in names or "udp" in names:
                    bind_port = 0 if requested == 0 else requested + 1
            listener = await loop.create_server(
                lambda name=name: Connection(server, name),
                host,
                bind_port,
                ssl=ssl if name == "tls" else None,
                reuse_port=reuse,
            )
            server._servers.append(listener)
            sockname = listener.sockets[0].getsockname()
            server.addresses[name] = (sockname[0], sockname[1])
            if name == "tcp":
                port = sockname[1]
    except BaseException:
        await server.close()
        raise
    server._sweeper = asyncio.ensure_future(server._sweep())
    return server
