"""Helpers shared by the console's tests and benchmark: a console served by uvicorn on
127.0.0.1 in a background thread, and a small CAD with units placed around a point.

Not used by the console itself.
"""

from __future__ import annotations

import socket
import threading
import time
import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from firebox.cad.model import Unit, UnitKind, UnitStatus
from firebox.cad.service import Cad
from firebox.cad.store import MemoryRepository
from firebox.location.shapes import Point

__all__ = ["free_port", "serve", "serve_built", "small_cad"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, *, timeout_s: float = 10.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base
    URL. Stopped (and the thread joined) when the block ends."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"console-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port} within {timeout_s} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True  # SSE streams stay open: do not wait for them
        thread.join(timeout_s)


@contextmanager
def serve_built(build: Callable[[], Awaitable[tuple[Any, Any, Callable[[], Awaitable[None]]]]], *, timeout_s: float = 15.0) -> Iterator[tuple[str, Any]]:
    """Like ``serve``, for an app that needs things running in the server's own event loop
    (the call handling element: its API is called from the console's handlers). ``build``
    runs in that loop and returns (app, what the test may read, an async close); yields
    (base URL, what the test may read). The close runs in the loop after the server stops."""
    import uvicorn

    port = free_port()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        try:
            app, extra, close = await build()
        except BaseException as exc:  # said to the test thread, not lost in this one
            box["error"] = exc
            ready.set()
            raise
        box["extra"] = extra
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
        box["server"] = server
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        ready.set()
        try:
            await task
        finally:
            await close()

    thread = threading.Thread(target=lambda: asyncio.run(main()), name=f"console-{port}", daemon=True)
    thread.start()
    if not ready.wait(timeout_s) or "error" in box:
        raise RuntimeError(f"the console did not start on 127.0.0.1:{port}: {box.get('error')!r}")
    try:
        yield f"http://127.0.0.1:{port}", box["extra"]
    finally:
        server = box["server"]
        server.should_exit = True
        server.force_exit = True
        thread.join(timeout_s)


def small_cad(centre: Point = Point(lat=42.3601, lon=-71.0589), *, fqdn: str = "cad.example.net", at: datetime | None = None) -> Cad:
    """A CAD in memory with two engines, a ladder, a chief, two ambulances and two police
    cars at stations a few hundred metres to a few kilometres from ``centre``."""
    cad = Cad(MemoryRepository(), fqdn=fqdn)
    offsets = [
        ("E1", UnitKind.ENGINE, "st-1", 0.004, 0.002), ("E2", UnitKind.ENGINE, "st-2", 0.03, -0.02),
        ("L1", UnitKind.LADDER, "st-1", 0.004, 0.002), ("C1", UnitKind.CHIEF, "st-2", 0.03, -0.02),
        ("A1", UnitKind.AMBULANCE, "st-1", 0.004, 0.002), ("A2", UnitKind.AMBULANCE, "st-2", 0.03, -0.02),
        ("P1", UnitKind.POLICE_CAR, "pd-1", -0.01, 0.01), ("P2", UnitKind.POLICE_CAR, "pd-1", -0.01, 0.01),
    ]  # fmt: skip
    units = [
        Unit(uid, kind, station, UnitStatus.AVAILABLE, Point(lat=centre.lat + dlat, lon=centre.lon + dlon), name=uid)
        for uid, kind, station, dlat, dlon in offsets
    ]
    cad.add_units(units, at or datetime.now(UTC), "roster")
    return cad
