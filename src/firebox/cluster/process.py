"""A firebox node as a child process: ``firebox serve`` of one node's deployment file, for
the multi-node tests and the ``node-loss`` replay, where a node must be able to die for real
(SIGKILL: no cleanup, no goodbye to the cluster, its sockets gone at once).

``NodeProcess.start()`` returns when the node's HTTP answers ``GET /cluster`` (it has joined
the cluster: NATS reached, heartbeats running); ``kill()`` is SIGKILL; ``stop()`` is SIGTERM
(a clean stop: the node leaves the cluster), SIGKILL if it does not end in time. The child's
output goes to a log file, read back by ``tail()`` when something goes wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from firebox.cluster.config import NODE_ID_ENV

__all__ = ["NodeProcess"]


@dataclass
class NodeProcess:
    """One node: its deployment file, its id in ``cluster.nodes`` and its HTTP address
    (``host:port``, where ``/cluster`` is served)."""

    deployment: Path
    node_id: str
    http: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self, timeout: float = 90.0) -> None:
        """Spawn the node and wait until it serves ``/cluster`` (bounded by ``timeout``)."""
        if self.alive:
            return
        env = {**os.environ, **self.env, NODE_ID_ENV: self.node_id, "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(f"\n--- start {self.starts + 1} of {self.node_id} at {time.time():.3f}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "firebox.cli", "serve", str(self.deployment)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.deployment.parent, start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive:
                    raise RuntimeError(f"node {self.node_id} exited ({self.proc.returncode}) while starting:\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://{self.http}/cluster")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        self.kill()
        raise TimeoutError(f"node {self.node_id} did not serve /cluster within {timeout:g} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: the node dies as a machine would, mid-call, with nothing flushed."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a clean stop), then SIGKILL if it has not ended within ``timeout``."""
        if self.proc is None:
            return None
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            self.kill()
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
