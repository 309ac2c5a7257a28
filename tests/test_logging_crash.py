"""A Logging Service killed with SIGKILL in the middle of a stream of writes loses nothing
it acknowledged (NENA-STA-010.3 section 4.12; issue 5): the service runs as a subprocess
(``firebox logs serve``) over SQLite and over PostgreSQL, 16 concurrent clients post log
events, the process is killed once a few hundred were answered 201, and after a restart
every acknowledged event is there, the events that were in flight are stored at most once
(sent again they answer 201 or 409), and ``firebox logs verify`` finds the chain intact.
Bounded loops, no timing assertions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from firebox import jws as jwslib
from firebox.logging.events import new_call_id, new_incident_id
from firebox.logging.testing import (
    Signer,
    call_events,
    free_port,
    postgres_unavailable,
    scratch_postgres,
)

WORKERS = 16
KILL_AFTER = 300  # acknowledged events before the SIGKILL
MAX_EVENTS = 3000  # bound on what the clients try to send
SIGNER = Signer("ed25519")
FIREBOX = [sys.executable, "-c", "from firebox.cli import app; app()"]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/logs.db"
        return
    why = postgres_unavailable()
    if why:
        pytest.fail(f"PostgreSQL is part of the test set-up (.ci/run starts it): {why}")
    with scratch_postgres("firebox_logcrash") as url:
        yield url


def start(db: str, port: int, log: Path) -> subprocess.Popen:
    out = log.open("ab")
    return subprocess.Popen([*FIREBOX, "logs", "serve", "--db", db, "--listen", f"127.0.0.1:{port}",
                             "--fqdn", "logs.example.net"], stdout=out, stderr=out)  # fmt: skip


async def ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    async with httpx.AsyncClient() as c:
        for _ in range(300):  # bounded: up to ~30 s of start-up on a loaded machine
            if proc.poll() is not None:
                raise AssertionError(f"service exited: {log.read_text()[-2000:]}")
            try:
                if (await c.get(f"{url}/Versions", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("service did not start")


def events(n: int) -> list[dict]:
    out: list[dict] = []
    while len(out) < n:
        call, incident = new_call_id("bcf.example.net"), new_incident_id("bcf.example.net")
        out.extend(call_events(call, incident))
    return out[:n]


async def test_sigkill_mid_stream_loses_nothing_acknowledged(db, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "service.log"
    proc = start(db, port, log)
    try:
        await ready(url, proc, log)
        todo = events(MAX_EVENTS)
        bodies = [jwslib.serialize(SIGNER.sign(e) if i % 2 else jwslib.sign(e, None)) for i, e in enumerate(todo)]
        acked: dict[int, str] = {}  # index in todo -> logEventId
        unanswered: list[int] = []  # sent, no answer (in flight at the kill, or refused after)
        cursor = iter(range(len(todo)))
        killed = asyncio.Event()

        async def worker(c: httpx.AsyncClient) -> None:
            for i in cursor:
                try:
                    r = await c.post(f"{url}/LogEvents", content=bodies[i], headers={"Content-Type": "application/json"})
                except httpx.HTTPError:
                    unanswered.append(i)
                    return
                assert r.status_code == 201, r.text
                acked[i] = r.json()["logEventId"]
                if len(acked) >= KILL_AFTER and not killed.is_set():
                    killed.set()
                    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: other workers have requests in flight

        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=WORKERS)) as c:
            await asyncio.gather(*(worker(c) for _ in range(WORKERS)))
        assert killed.is_set() and proc.wait(30) == -signal.SIGKILL
        assert len(acked) >= KILL_AFTER and unanswered

        proc = start(db, port, log)
        await ready(url, proc, log)
        async with httpx.AsyncClient(timeout=30) as c:
            for i, log_event_id in acked.items():  # every 201 survived
                r = await c.get(f"{url}/LogEvents/{log_event_id}")
                assert r.status_code == 200, (i, log_event_id)
                payload = json.loads(jwslib.b64url_decode(r.json()["payload"]))
                assert payload["clientAssignedIdentifier"] == todo[i]["clientAssignedIdentifier"]
            # what was in flight is there at most once: sent again, a 201 or a 409
            retried = {}
            for i in unanswered:
                r = await c.post(f"{url}/LogEvents", content=bodies[i], headers={"Content-Type": "application/json"})
                assert r.status_code in (201, 409), r.text
                retried[i] = r.json()["logEventId"]
            assert len(set(retried.values()) | set(acked.values())) == len(retried) + len(acked)
            total = (await c.get(f"{url}/LogEvents", params={"limit": 1})).json()["totalCount"]
            assert total == len(acked) + len(unanswered)
        check = await asyncio.to_thread(
            subprocess.run, [*FIREBOX, "logs", "verify", "--db", db], capture_output=True, text=True, timeout=60, check=False
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"{total} log events, the hash chain verifies" in check.stdout
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
