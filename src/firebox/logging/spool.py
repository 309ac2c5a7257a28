"""The durable spool of signed log events waiting for delivery.

NENA-STA-010.3 section 4.12 requires every significant event to be logged; an element must
therefore not lose an event because a Logging Service is down, slow, or because the
element itself restarts. The spool is what makes that true: an event counts as accepted
only once it is on disk, and it leaves the disk only once every Logging Service has it.

A spool is a directory holding:

``spool.jsonl``
    Append-only JSON lines, one per event: ``{"seq": n, "id": logEventId, "jws": {...}}``
    (``seq`` counts from 1 and never goes back; ``jws`` is the flattened JWS, RFC 7515
    section 7.2.2). A batch of lines is written with one ``write`` and made durable with
    ``fsync`` before ``append`` returns. After a compaction the first line is a marker,
    ``{"compactedThrough": n}``: events 1..n were delivered everywhere and dropped.
``progress.json``
    Per destination, the highest ``through`` such that every event up to it is done
    (delivered or rejected for good), plus the few done events ``above`` it (deliveries
    complete out of order when several are in flight). Replaced atomically (write a
    temporary file, ``fsync``, ``rename``, ``fsync`` the directory).
``lock``
    ``flock``-ed while the spool is open, so two senders never share a spool.

Crash safety: a crash in the middle of an append leaves a last line without its newline
(or with garbage); on reopen that torn tail is cut off (those events were never reported
accepted). A crash between a delivery and the progress update only means the event is sent
again; a Logging Service answers 409 for an event it already has (the events carry a unique
``clientAssignedIdentifier``), so delivery is at-least-once and storage exactly-once.

Compaction (``compact(through)``) rewrites the file without the events every destination
is done with: the new file is written beside the old one, ``fsync``-ed and renamed over it,
so a crash leaves either the old or the new file, both valid.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

__all__ = ["Progress", "Record", "Spool", "SpoolError", "SpoolLocked"]

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.jsonl"
PROGRESS_FILE = "progress.json"
LOCK_FILE = "lock"
_MARKER = "compactedThrough"


class SpoolError(OSError):
    """The spool cannot be used (unreadable files, a full disk...)."""


class SpoolLocked(SpoolError):
    """Another process (or another ``Spool`` object) has this spool open."""


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    log_event_id: str
    jws: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Progress:
    """A destination's progress: every event up to ``through`` is done, and so are those in
    ``above`` (all greater than ``through``)."""

    through: int = 0
    above: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"through": self.through, "above": list(self.above)}

    @classmethod
    def from_json(cls, data: Any) -> Progress | None:
        if not isinstance(data, dict):
            return None
        through, above = data.get("through"), data.get("above", [])
        if not _is_count(through) or not isinstance(above, list) or not all(_is_count(a) for a in above):
            return None
        return cls(through, tuple(sorted(a for a in set(above) if a > through)))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _line(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A spool directory (created if needed). Thread-safe: every method takes a lock, so an
    asyncio adapter can run the blocking calls in worker threads.

    ``fsync=False`` skips the ``fsync`` calls (tests on slow disks, benchmarks); never in
    production: it gives up the guarantee that accepted events survive a power loss."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True):
        self.directory = Path(directory)
        self.fsync = fsync
        self._lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLocked(f"spool {self.directory} is in use by another sender") from None
        self._fd: int | None = None
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    # --- opening -----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.directory / SPOOL_FILE

    def _open(self) -> None:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._fd = fd
        if created and self.fsync:
            _fsync_dir(self.directory)
        self._seqs: list[int] = []
        self._where: list[tuple[int, int]] = []  # (offset, length) of each line, as _seqs
        self.compacted_through = 0
        self.skipped = 0  # unreadable lines met on opening (never expected)
        data = b""
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            chunk = os.pread(fd, size - offset, offset)
            if not chunk:
                break
            data += chunk
            offset += len(chunk)
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning("spool %s: ignoring a torn last line of %d bytes", self.path, len(data) - end)
            os.ftruncate(fd, end)
            if self.fsync:
                os.fsync(fd)
        self._size = end
        pos = 0
        last = 0
        for raw in data[:end].split(b"\n")[:-1]:
            length = len(raw) + 1
            here = pos
            pos += length
            try:
                item = json.loads(raw)
            except ValueError:
                item = None
            if isinstance(item, dict) and _MARKER in item and not self._seqs and _is_count(item[_MARKER]):
                self.compacted_through = last = max(last, item[_MARKER])
                continue
            if (
                not isinstance(item, dict)
                or not _is_count(item.get("seq"))
                or item["seq"] <= last
                or not isinstance(item.get("id"), str)
                or not isinstance(item.get("jws"), dict)
            ):
                self.skipped += 1
                log.error("spool %s: skipping an unreadable line at byte %d", self.path, here)
                continue
            last = item["seq"]
            self._seqs.append(last)
            self._where.append((here, length))
        self.last_seq = last

    # --- queries ------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._seqs)

    @property
    def first_seq(self) -> int:
        """The lowest sequence number still in the spool (``last_seq + 1`` when empty)."""
        with self._lock:
            return self._seqs[0] if self._seqs else self.last_seq + 1

    def seqs(self) -> list[int]:
        with self._lock:
            return list(self._seqs)

    def _locate(self, seq: int) -> tuple[int, int]:
        i = bisect_left(self._seqs, seq)
        if i == len(self._seqs) or self._seqs[i] != seq:
            raise KeyError(seq)
        return self._where[i]

    def read(self, seq: int) -> Record:
        """The record ``seq``; ``KeyError`` if it is not in the spool (compacted away, or an
        unreadable line skipped on opening)."""
        with self._lock:
            offset, length = self._locate(seq)
            raw = os.pread(self._checked_fd(), length, offset)
        item = json.loads(raw)
        return Record(item["seq"], item["id"], item["jws"])

    def records(self, after: int = 0) -> list[Record]:
        """Every record with a sequence number above ``after``, in order."""
        return [self.read(s) for s in self.seqs() if s > after]

    def _checked_fd(self) -> int:
        if self._fd is None:
            raise SpoolError(f"spool {self.directory} is closed")
        return self._fd

    # --- appending -------------------------------------------------------------------------

    def append(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> list[int]:
        """Append ``(logEventId, jws)`` pairs; returns their sequence numbers once they are
        written and ``fsync``-ed. On failure nothing is appended (the partial write is cut
        off) and ``SpoolError`` is raised."""
        if not items:
            return []
        with self._lock:
            fd = self._checked_fd()
            seqs = list(range(self.last_seq + 1, self.last_seq + 1 + len(items)))
            lines = [_line({"seq": s, "id": i, "jws": dict(j)}) for s, (i, j) in zip(seqs, items)]
            data = b"".join(lines)
            start = self._size
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if self.fsync:
                    os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, start)
                except OSError:  # pragma: no cover - the reopen will cut the torn tail
                    pass
                raise SpoolError(f"cannot append to spool {self.path}: {exc}") from exc
            pos = start
            for s, line in zip(seqs, lines):
                self._seqs.append(s)
                self._where.append((pos, len(line)))
                pos += len(line)
            self._size = pos
            self.last_seq = seqs[-1]
            return seqs

    # --- progress ---------------------------------------------------------------------------

    def load_progress(self) -> dict[str, Progress]:
        """The saved per-destination progress ({} if none or unreadable: at worst events are
        sent again, and answered 409 by Logging Services that already have them)."""
        path = self.directory / PROGRESS_FILE
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("spool %s: unreadable progress file, starting over: %s", self.directory, exc)
            return {}
        out: dict[str, Progress] = {}
        dests = data.get("destinations") if isinstance(data, dict) else None
        for url, item in (dests or {}).items():
            progress = Progress.from_json(item)
            if progress is not None:
                out[url] = progress
        return out

    def save_progress(self, progress: Mapping[str, Progress]) -> None:
        """Replace the progress file atomically."""
        body = json.dumps(
            {"destinations": {url: p.to_json() for url, p in progress.items()}},
            separators=(",", ":"),
        ).encode()
        with self._lock:
            self._checked_fd()
            self._replace(PROGRESS_FILE, body)

    def _replace(self, name: str, body: bytes) -> None:
        target = self.directory / name
        tmp = self.directory / (name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            if self.fsync:
                _fsync_dir(self.directory)
        except OSError as exc:
            raise SpoolError(f"cannot write {target}: {exc}") from exc

    # --- compaction -------------------------------------------------------------------------

    def compact(self, through: int) -> int:
        """Drop the events up to ``through`` (every destination is done with them); returns
        how many were dropped. The caller must have saved progress showing it first."""
        with self._lock:
            fd = self._checked_fd()
            through = min(through, self.last_seq)
            if through <= self.compacted_through:
                return 0
            keep = bisect_left(self._seqs, through + 1)
            start = self._where[keep][0] if keep < len(self._seqs) else self._size
            rest = b""
            while len(rest) < self._size - start:
                chunk = os.pread(fd, self._size - start - len(rest), start + len(rest))
                if not chunk:  # pragma: no cover - the file shrank under us
                    raise SpoolError(f"spool {self.path} is shorter than expected")
                rest += chunk
            marker = _line({_MARKER: through})
            self._replace(SPOOL_FILE, marker + rest)
            new_fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            os.close(fd)
            self._fd = new_fd
            shift = len(marker) - start
            self._seqs = self._seqs[keep:]
            self._where = [(o + shift, n) for o, n in self._where[keep:]]
            self._size = len(marker) + len(rest)
            self.compacted_through = through
            return keep

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._release()

    def _release(self) -> None:
        if self._lock_fd >= 0:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = -1

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
