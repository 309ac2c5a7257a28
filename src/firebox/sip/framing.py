"""Sans-I/O framing of SIP messages on a byte stream (TCP, TLS).

On a stream, a message ends where its ``Content-Length`` says (RFC 3261 section 18.3, which
makes the header mandatory there: a message without it is answered 400 and the framer looks
for the next start line). Between messages a client may send the RFC 5626 section 4.4.1
keep-alive ping, a double CRLF: the framer reports each one as ``PING`` so that the adapter can
answer with the single-CRLF pong ``PONG``; other stray CRLFs are skipped (RFC 3261 7.5).

``StreamFramer.feed`` takes whatever bytes arrived and returns what they completed, in order:
``Request``, ``Response``, ``PING`` or ``SipParseError``. The result does not depend on how the
stream was cut into chunks. The buffer is bounded: a message longer than ``max_message_size``
is reported as ``SipParseError(413)`` and dropped (skipping exactly its body when its length is
known, else everything up to the next line that looks like a start line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from firebox.sip.errors import SipParseError, bad_request, quoted
from firebox.sip.message import Request, Response, build_message, parse_head

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "PING", "PONG", "Ping", "StreamFramer"]

#: Default bound of one message, header section and body (64 KiB).
DEFAULT_MAX_MESSAGE_SIZE = 65536
#: What to send back for a ``PING`` (RFC 5626 section 4.4.1).
PONG = b"\r\n"

_BLANK_LINE_RE = re.compile(rb"\n\r?\n")
_CRLF_RUN_RE = re.compile(rb"[\r\n]+")
_START_LINE_RE = re.compile(
    rb"(?:[A-Za-z0-9\-.!%*_+`'~]+ [^ \r\n]+ SIP/[0-9]+\.[0-9]+"  # request line (7.1)
    rb"|SIP/[0-9]+\.[0-9]+ [0-9]{3}(?: [^\r\n]*)?)\r?\n",  # status line (7.2)
    re.IGNORECASE,
)
_CONTENT_LENGTH_RE = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,10})[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True, slots=True)
class Ping:
    """A double-CRLF keep-alive ping (RFC 5626 section 4.4.1); answer it with ``PONG``."""


#: The one ``Ping`` value.
PING = Ping()

Frame = Request | Response | SipParseError | Ping


class StreamFramer:
    """Split a SIP byte stream into messages (RFC 3261 section 18.3). One per connection."""

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        if max_message_size < 16:
            raise ValueError("max_message_size must be at least 16 bytes")
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self._scan = 0  # where the search for the blank line resumes
        self._head: tuple[int, str, list[tuple[str, str, str]], dict[str, str], int] | None = None
        self._skip = 0  # bytes of a message too large, still to drop
        self._resync = False  # after a framing error: drop lines up to a start line
        self._mid_line = False  # ... and first the rest of the current line

    @property
    def buffered(self) -> int:
        """Bytes received and not yet part of a returned frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget everything buffered (for a reused connection object)."""
        self._buf.clear()
        self._scan = 0
        self._head = None
        self._skip = 0
        self._resync = False
        self._mid_line = False

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data`` and return the frames it completed, in stream order."""
        self._buf += data
        out: list[Frame] = []
        try:
            while self._buf and self._step(out):
                pass
        except Exception as exc:  # noqa: BLE001 - a bug must not take the connection's reader down
            out.append(bad_request(f"unparseable stream ({type(exc).__name__})"))
            self.reset()
            self._resync = True
        return out

    def _step(self, out: list[Frame]) -> bool:
        """Make one unit of progress; ``False`` when more data is needed."""
        if self._skip:
            n = min(self._skip, len(self._buf))
            del self._buf[:n]
            self._skip -= n
            return True
        if self._resync:
            return self._find_start_line()
        if self._head is None:
            return self._read_head(out)
        return self._read_body(out)

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._scan = 0

    def _start_resync(self, *, mid_line: bool) -> None:
        self._resync = True
        self._mid_line = mid_line
        self._scan = 0

    def _read_head(self, out: list[Frame]) -> bool:
        buf = self._buf
        limit = self.max_message_size
        if buf[0] == 0x0D or buf[0] == 0x0A:
            return self._keep_alives(out)
        m = _BLANK_LINE_RE.search(buf, self._scan, limit)
        if m is None:
            if len(buf) < limit:
                self._scan = max(0, len(buf) - 2)
                return False
            out.append(
                SipParseError(
                    413, f"Request Entity Too Large: header section exceeds {limit} bytes"
                )
            )
            self._consume(limit)
            self._start_resync(mid_line=True)
            return True
        head = bytes(buf[: m.start()])
        body_start = m.end()
        try:
            start, items, first = parse_head(head)
        except SipParseError as exc:
            out.append(exc)
            self._drop_unreadable(head, body_start)
            return True
        length = first.get("content-length")
        if length is None or not (length.isascii() and length.isdigit() and len(length) <= 10):
            if length is None:
                out.append(bad_request("missing Content-Length (required on stream transports)"))
            else:
                out.append(bad_request(f"malformed Content-Length {quoted(length)}"))
            self._consume(body_start)
            self._start_resync(mid_line=False)
            return True
        n = int(length)
        if body_start + n > limit:
            out.append(
                SipParseError(
                    413,
                    f"Request Entity Too Large: message of {body_start + n} bytes exceeds {limit}",
                )
            )
            self._consume(body_start)
            self._skip = n
            return True
        self._head = (body_start, start, items, first, n)
        return True

    def _keep_alives(self, out: list[Frame]) -> bool:
        """A run of CR/LF between messages: one ``PING`` per ``CRLFCRLF``, the rest skipped.
        A run reaching the end of the buffer keeps its unfinished tail for the next feed."""
        buf = self._buf
        run_end = _CRLF_RUN_RE.match(buf).end()  # type: ignore[union-attr]
        run = bytes(buf[:run_end])
        pos = 0
        while (i := run.find(b"\r\n\r\n", pos)) >= 0:
            out.append(PING)
            pos = i + 4
        if run_end < len(buf):
            self._consume(run_end)
            return True
        self._consume(pos)
        return False

    def _read_body(self, out: list[Frame]) -> bool:
        assert self._head is not None
        body_start, start, items, first, n = self._head
        end = body_start + n
        if len(self._buf) < end:
            return False
        body = bytes(self._buf[body_start:end])
        self._consume(end)
        self._head = None
        try:
            out.append(build_message(start, items, first, body))
        except SipParseError as exc:
            out.append(exc)
        return True

    def _drop_unreadable(self, head: bytes, body_start: int) -> None:
        """After a header section that could not be parsed: skip its body when a
        ``Content-Length`` can still be read from it, else look for the next start line."""
        self._consume(body_start)
        lengths = _CONTENT_LENGTH_RE.findall(head)
        if len(lengths) == 1:
            self._skip = int(lengths[0])
        else:
            self._start_resync(mid_line=False)

    def _find_start_line(self) -> bool:
        """Drop whole lines until one that looks like a request or status line (RFC 3261
        sections 7.1, 7.2). Decisions are made on complete lines only."""
        buf = self._buf
        limit = self.max_message_size
        pos = 0
        if self._mid_line:
            nl = buf.find(b"\n")
            if nl < 0:
                self._consume(len(buf))
                return False
            pos = nl + 1
            self._mid_line = False
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos >= limit:
                    self._consume(len(buf))
                    self._mid_line = True
                else:
                    self._consume(pos)
                return False
            if nl + 1 - pos <= limit and _START_LINE_RE.match(buf, pos, nl + 1):
                self._consume(pos)
                self._resync = False
                return True
            pos = nl + 1
