"""The one error of the SIP message layer.

Every problem found in bytes received from the network is a ``SipParseError`` carrying the
status code a UAS or proxy answers with (RFC 3261 section 21: 400 Bad Request normally,
413 Request Entity Too Large for oversize messages, 505 Version Not Supported for another
SIP version) and a reason phrase that names what was wrong, fit to be put on the status line
of that answer (RFC 3261 section 7.2 allows any reason phrase; section 21.4.1 suggests one
that says which header field is at fault).
"""

from __future__ import annotations

_MAX_QUOTED = 60


class SipParseError(ValueError):
    """Malformed SIP input: ``status`` (400, 413, 505, ...) and a precise ``reason`` phrase.

    The reason is one line of printable text, e.g. ``Bad Request: missing Call-ID`` or
    ``Version Not Supported: SIP/3.0``, so it can go on a status line as it is.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"SipParseError({self.status!r}, {self.reason!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipParseError):
            return NotImplemented
        return self.status == other.status and self.reason == other.reason

    def __hash__(self) -> int:
        return hash((self.status, self.reason))


def quoted(text: str) -> str:
    """``text`` in single quotes for a reason phrase: non-printable characters (controls,
    undecodable bytes) become ``?`` and long text is cut, so the phrase stays one short line."""
    if len(text) > _MAX_QUOTED:
        text = text[:_MAX_QUOTED] + "..."
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "?" for c in text)
    return f"'{text}'"


def bad_request(detail: str) -> SipParseError:
    """A 400 error whose reason is ``Bad Request: <detail>`` (RFC 3261 section 21.4.1)."""
    return SipParseError(400, f"Bad Request: {detail}")
