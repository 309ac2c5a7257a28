"""A TCP relay for the cluster tests: a node reaches PostgreSQL, NATS or another node's
HTTP through it, and the test cuts the link (a partition) and heals it.

``cut()`` closes every relayed connection (both sides see a reset, as when a link's router
answers "unreachable") and refuses new ones until ``heal()``. With several upstreams the
relay is a minimal load balancer: each new connection goes to the first upstream that
accepts it (a console's address that outlives one node).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpRelay:
    def __init__(self, upstreams: list[tuple[str, int]], port: int = 0) -> None:
        self.upstreams = list(upstreams)
        self.port = port
        self.cut_off = False
        self.accepted = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> TcpRelay:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            self.refused += 1
            _abort(writer)
            return
        for host, port in self.upstreams:
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
                break
            except (OSError, TimeoutError):
                continue
        else:
            self.refused += 1
            _abort(writer)
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:  # fmt: skip
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._pairs.discard(pair)
            for w in pair:
                _abort(w)

    def cut(self) -> None:
        """The link goes down: every connection reset, new ones refused."""
        self.cut_off = True
        for pair in list(self._pairs):
            for w in pair:
                _abort(w)
        self._pairs.clear()

    def heal(self) -> None:
        self.cut_off = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        for task in list(self._tasks):
            task.cancel()


def _abort(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()
