"""SIP messages, sans-I/O: bytes in, dataclasses out, and back (RFC 3261 section 7).

``parse_message`` reads one complete message, as a UDP datagram carries it (section 18.3),
into a ``Request`` or a ``Response``; ``serialize`` writes one back with CRLF line ends and a
``Content-Length`` that is always the length of the body. Parsing is tolerant where RFC 3261
asks for tolerance (section 7.5: leading CRLFs are ignored; section 7.3.1: header folding,
white space around the colon, names in any case; section 7.3.3: compact forms) and bare LF line
ends are accepted as many stacks send them. Every problem is a ``SipParseError`` with the status
to answer with and a reason naming the fault; nothing else escapes ``parse_message``.

The parse is shallow on purpose: a proxy handles thousands of messages per second, so header
values stay strings and only what framing and transaction matching need is checked up front
(start line, the mandatory header fields of section 8.1.1, ``CSeq``, ``Max-Forwards``,
``Content-Length``). URIs, addresses and Via values are parsed on demand by the properties
and by ``parse_uri``, ``parse_name_addr`` and ``parse_via``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from firebox.sip.address import (
    AbsoluteUri,
    NameAddr,
    SipUri,
    Uri,
    Via,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from firebox.sip.errors import SipParseError, bad_request, quoted
from firebox.sip.headers import NAMES, TOKEN_RE, Headers

__all__ = [
    "DEFAULT_MAX_FORWARDS",
    "REASON_PHRASES",
    "AbsoluteUri",
    "Headers",
    "Message",
    "NameAddr",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "Uri",
    "Via",
    "caller_uri",
    "make_response",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "reason_phrase",
    "serialize",
]

#: Max-Forwards a request is taken to have when it carries none (RFC 3261 section 8.1.1.6).
DEFAULT_MAX_FORWARDS = 70

_BLANK_LINE_RE = re.compile(rb"\n\r?\n")
_REQUEST_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\x00-\x20\x7f<>\"]+")
_VERSION_RE = re.compile(r"SIP/[0-9]{1,5}\.[0-9]{1,5}")
_CSEQ_RE = re.compile(r"([0-9]{1,10})[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)")
#: Header fields that must not appear twice (RFC 3261 section 7.3.1: not list headers).
_SINGLETON_KEYS = frozenset(
    {"call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type"}
)
#: Mandatory in every request and response (RFC 3261 section 8.1.1 and the table of 20).
_REQUIRED = (
    ("via", "Via"),
    ("from", "From"),
    ("to", "To"),
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
)
#: Requests whose 101-299 responses establish a dialog (RFC 3261 12.1; RFC 6665; RFC 3515).
_DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
_CSEQ_LIMIT = 2**31  # RFC 3261 section 8.1.1.5

#: Reason phrases of RFC 3261 section 21 and the extensions a 911 proxy meets.
REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    424: "Bad Location Information", 428: "Use Identity Header", 429: "Provide Referrer Identity",
    433: "Anonymity Disallowed", 436: "Bad Identity Info", 437: "Unsupported Credential",
    438: "Invalid Identity Header", 439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded", 469: "Bad Info Package", 470: "Consent Needed",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}  # fmt: skip
_CLASS_REASONS = {
    1: "Provisional", 2: "Success", 3: "Redirection", 4: "Client Error", 5: "Server Error",
    6: "Global Failure",
}  # fmt: skip


def reason_phrase(status: int) -> str:
    """The standard reason phrase of ``status`` (RFC 3261 section 21), or one naming its
    class (section 7.2: an unknown code is treated as x00 of its class)."""
    return REASON_PHRASES.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


# -- messages ------------------------------------------------------------------------------


def _header_param(value: str, name: str, angle: bool) -> str | None:
    """Lean read of header parameter ``name`` of a From/To (``angle``) or Via value, for the
    common values without quoted strings; the others go through the full parsers."""
    if '"' in value:
        params = parse_name_addr(value).params if angle else parse_via(value).params
        return params.get(name)
    if angle:
        value = value[value.rfind(">") + 1 :]
    semi = value.find(";")
    if semi < 0:
        return None
    for item in value[semi + 1 :].split(";"):
        key, eq, v = item.partition("=")
        if eq and key.strip(" \t").lower() == name:
            return v.strip(" \t") or None
    return None


class _MessageFields:
    """Convenience properties shared by ``Request`` and ``Response``. They read the headers
    each time (no cache to go stale when headers change) and raise ``SipParseError`` for a
    mandatory header field that is missing or malformed."""

    __slots__ = ()
    headers: Headers
    body: bytes

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if not value:
            raise bad_request(f"missing {name}")
        return value

    @property
    def call_id(self) -> str:
        """``Call-ID`` (RFC 3261 section 8.1.1.4)."""
        return self._required("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        """``CSeq`` as ``(number, method)`` (RFC 3261 section 8.1.1.5)."""
        value = self._required("CSeq")
        m = _CSEQ_RE.fullmatch(value)
        if m is None or int(m.group(1)) >= _CSEQ_LIMIT:
            raise bad_request(f"malformed CSeq {quoted(value)}")
        return int(m.group(1)), m.group(2)

    @property
    def from_tag(self) -> str | None:
        """The ``tag`` of ``From`` (RFC 3261 section 8.1.1.3)."""
        return _header_param(self._required("From"), "tag", True)

    @property
    def to_tag(self) -> str | None:
        """The ``tag`` of ``To`` (RFC 3261 section 8.1.1.2), ``None`` outside a dialog."""
        return _header_param(self._required("To"), "tag", True)

    @property
    def branch(self) -> str | None:
        """The ``branch`` of the top ``Via`` (RFC 3261 section 8.1.1.7)."""
        return _header_param(self._required("Via"), "branch", False)

    @property
    def top_via(self) -> Via:
        """The top ``Via`` value, parsed (RFC 3261 section 20.42)."""
        return parse_via(self._required("Via"))

    @property
    def from_addr(self) -> NameAddr:
        """``From``, parsed (RFC 3261 section 20.20)."""
        return parse_name_addr(self._required("From"))

    @property
    def to_addr(self) -> NameAddr:
        """``To``, parsed (RFC 3261 section 20.39)."""
        return parse_name_addr(self._required("To"))

    @property
    def content_type(self) -> str | None:
        """``Content-Type`` as written (RFC 3261 section 20.15), or ``None``."""
        return self.headers.get("Content-Type")

    @property
    def content_length(self) -> int | None:
        """``Content-Length`` as declared (RFC 3261 section 20.14), or ``None`` when absent.
        After ``parse_message`` it is present and equals ``len(body)``; ``serialize`` always
        writes ``len(body)``, whatever the header says."""
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        if not (value.isascii() and value.isdigit() and len(value) <= 10):
            raise bad_request(f"malformed Content-Length {quoted(value)}")
        return int(value)

    @property
    def max_forwards(self) -> int:
        """``Max-Forwards`` (RFC 3261 section 8.1.1.6), ``DEFAULT_MAX_FORWARDS`` (70) when
        absent."""
        value = self.headers.get("Max-Forwards")
        if value is None:
            return DEFAULT_MAX_FORWARDS
        if not (value.isascii() and value.isdigit() and len(value) <= 3 and int(value) <= 255):
            raise bad_request(f"malformed Max-Forwards {quoted(value)}")
        return int(value)


@dataclass(slots=True)
class Request(_MessageFields):
    """A SIP request (RFC 3261 section 7.1): ``method``, Request-URI ``uri`` (a string;
    ``parse_uri`` reads it), ``headers``, ``body`` and ``version``."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"


@dataclass(slots=True)
class Response(_MessageFields):
    """A SIP response (RFC 3261 section 7.2): ``status`` code, ``reason`` phrase,
    ``headers``, ``body`` and ``version``."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"


Message = Request | Response


# -- parsing -------------------------------------------------------------------------------


def parse_message(data: bytes) -> Message:
    """Parse one complete SIP message, as a datagram carries it (RFC 3261 section 18.3).

    Leading CRLFs are skipped (section 7.5). Without ``Content-Length`` the body is the rest
    of the datagram; with it, a longer datagram is cut to it and a shorter one is an error
    (section 18.3). The parsed headers always hold one ``Content-Length`` equal to
    ``len(body)`` (appended when the datagram had none, where ``serialize`` would write it).
    Raises ``SipParseError`` and nothing else."""
    try:
        return _parse_datagram(data)
    except SipParseError:
        raise
    except Exception as exc:  # a bug must still answer 400, never take the proxy down
        raise bad_request(f"unparseable message ({type(exc).__name__})") from exc


def _parse_datagram(data: bytes) -> Message:
    if type(data) is not bytes:
        data = bytes(data)
    if data.startswith((b"\r", b"\n")):
        data = data.lstrip(b"\r\n")
    if not data:
        raise bad_request("empty message")
    m = _BLANK_LINE_RE.search(data)
    if m is None:
        head, body = data, b""
    else:
        head, body = data[: m.start()], data[m.end() :]
    start, items, first = parse_head(head)
    return build_message(start, items, first, body)


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str, str]], dict[str, str]]:
    """Split a header section (start line and header lines, without the blank line) into the
    start line, the header lines ``(key, name, value)`` and the first value of each key.

    Handles CRLF and bare LF line ends, folding (RFC 3261 section 7.3.1), compact forms
    (7.3.3) and rejects a second line of a header field that allows only one."""
    text = head.decode("utf-8", "surrogateescape")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        text = text.removesuffix("\r")
        if "\r" in text:
            raise bad_request("bare CR in header section")
    if "\x00" in text:
        raise bad_request("NUL byte in header section")
    lines = text.split("\n")
    items: list[tuple[str, str, str]] = []
    first: dict[str, str] = {}
    names = NAMES
    singletons = _SINGLETON_KEYS
    last_is_first = False
    for line in lines[1:]:
        if not line:
            continue
        if line[0] == " " or line[0] == "\t":
            if not items:
                raise bad_request("continuation line before the first header")
            key, name, value = items[-1]
            more = line.strip(" \t")
            value = f"{value} {more}" if value and more else value or more
            items[-1] = (key, name, value)
            if last_is_first:
                first[key] = value
            continue
        raw_name, sep, value = line.partition(":")
        info = names.get(raw_name)
        if info is None:
            if not sep:
                raise bad_request(f"malformed header line {quoted(line)}")
            stripped = raw_name.rstrip(" \t")
            info = names.get(stripped) or names.get(stripped.lower())
            if info is None:
                if not TOKEN_RE.fullmatch(stripped):
                    raise bad_request(f"malformed header name {quoted(stripped)}")
                info = (stripped.lower(), stripped)
        key = info[0]
        value = value.strip(" \t")
        if key in first:
            if key in singletons:
                raise bad_request(f"multiple {info[1]} headers")
            last_is_first = False
        else:
            first[key] = value
            last_is_first = True
        items.append((key, info[1], value))
    return lines[0], items, first


def _check_version(version: str) -> str:
    """``SIP/2.0`` in any case (RFC 3261 section 7.1); another version is a 505."""
    if version == "SIP/2.0":
        return version
    upper = version.upper()
    if upper == "SIP/2.0":
        return upper
    if _VERSION_RE.fullmatch(upper):
        raise SipParseError(505, f"Version Not Supported: {upper}")
    raise bad_request(f"malformed SIP version {quoted(version)}")


def build_message(
    start: str, items: list[tuple[str, str, str]], first: dict[str, str], body: bytes
) -> Message:
    """Make the message of a parsed head and its body: read the start line (RFC 3261 7.1,
    7.2), check the header fields (``_check_headers``) and ``Content-Length`` (18.3, 20.14:
    the body is cut to it; more than the body is an error)."""
    if start[:4].upper() == "SIP/":
        status, reason, version = _status_line(start)
        _check_headers(first, None)
        body = _content_length(body, items, first)
        return Response(status, reason, Headers._from_parsed(items, first), body, version)
    method, uri, version = _request_line(start)
    _check_headers(first, method)
    body = _content_length(body, items, first)
    return Request(method, uri, Headers._from_parsed(items, first), body, version)


def _status_line(start: str) -> tuple[int, str, str]:
    """``SIP-Version SP Status-Code SP Reason-Phrase`` (RFC 3261 section 7.2)."""
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    version = _check_version(version)
    if len(code) != 3 or not code.isascii() or not code.isdigit() or code[0] in "0789":
        raise bad_request(f"malformed status line {quoted(start)}")
    return int(code), reason.strip(" \t"), version


def _request_line(start: str) -> tuple[str, str, str]:
    """``Method SP Request-URI SP SIP-Version`` (RFC 3261 section 7.1; runs of white space
    are tolerated)."""
    parts = start.split(" ")
    if len(parts) != 3:
        parts = start.split()
        if len(parts) != 3:
            raise bad_request(f"malformed request line {quoted(start)}")
    method, uri, version = parts
    if not TOKEN_RE.fullmatch(method):
        raise bad_request(f"malformed method {quoted(method)}")
    version = _check_version(version)
    if not _REQUEST_URI_RE.fullmatch(uri):
        raise bad_request(f"malformed Request-URI {quoted(uri)}")
    return method, uri, version


def _check_headers(first: dict[str, str], method: str | None) -> None:
    """The mandatory header fields are there and not empty (RFC 3261 section 8.1.1),
    ``CSeq`` is ``number method`` with the number below 2**31 and, in a request, the
    request's method (8.1.1.5), ``Max-Forwards`` is 0-255 (8.1.1.6)."""
    for key, name in _REQUIRED:
        value = first.get(key)
        if value is None:
            raise bad_request(f"missing {name}")
        if not value:
            raise bad_request(f"empty {name}")
    cseq = first["cseq"]
    m = _CSEQ_RE.fullmatch(cseq)
    if m is None or int(m.group(1)) >= _CSEQ_LIMIT:
        raise bad_request(f"malformed CSeq {quoted(cseq)}")
    if method is not None and m.group(2) != method:
        raise bad_request(
            f"CSeq method {quoted(m.group(2))} does not match request method {quoted(method)}"
        )
    max_forwards = first.get("max-forwards")
    if max_forwards is not None and not (
        max_forwards.isascii()
        and max_forwards.isdigit()
        and len(max_forwards) <= 3
        and int(max_forwards) <= 255
    ):
        raise bad_request(f"malformed Max-Forwards {quoted(max_forwards)}")


def _content_length(body: bytes, items: list[tuple[str, str, str]], first: dict[str, str]) -> bytes:
    """The body as ``Content-Length`` frames it; the header is made canonical, or added when
    absent, exactly as ``serialize`` will write it, so that a parsed message written and
    parsed again is equal to itself."""
    length = first.get("content-length")
    if length is None:
        first["content-length"] = canonical = str(len(body))
        items.append(("content-length", "Content-Length", canonical))
        return body
    return _apply_content_length(length, body, items, first)


def _apply_content_length(
    length: str, body: bytes, items: list[tuple[str, str, str]], first: dict[str, str]
) -> bytes:
    """Check ``Content-Length`` against the body, cut the body to it, and write the value
    in canonical form so that ``serialize`` gives back the same header."""
    if not (length.isascii() and length.isdigit() and len(length) <= 10):
        raise bad_request(f"malformed Content-Length {quoted(length)}")
    n = int(length)
    if n > len(body):
        raise bad_request(f"Content-Length {n} exceeds body of {len(body)} bytes")
    if n < len(body):
        body = body[:n]
    canonical = str(n)
    if length != canonical:
        first["content-length"] = canonical
        for i, item in enumerate(items):
            if item[0] == "content-length":
                items[i] = (item[0], item[1], canonical)
    return body


# -- writing -------------------------------------------------------------------------------


def serialize(msg: Message) -> bytes:
    """The bytes of ``msg`` (RFC 3261 section 7): start line, one line per header with its
    full name, CRLF line ends, a ``Content-Length`` equal to ``len(body)`` (in place of any
    existing one, else after the other headers; section 18.3), the blank line, the body."""
    body = msg.body
    if isinstance(msg, Request):
        out = [f"{msg.method} {msg.uri} {msg.version}\r\n"]
    else:
        out = [f"{msg.version} {msg.status:03d} {msg.reason}\r\n"]
    has_length = False
    for key, name, value in msg.headers._items:
        if key == "content-length":
            if has_length:
                continue
            has_length = True
            value = str(len(body))
        out.append(f"{name}: {value}\r\n")
    if not has_length:
        out.append(f"Content-Length: {len(body)}\r\n")
    out.append("\r\n")
    return "".join(out).encode("utf-8", "surrogateescape") + body


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Headers | Iterable[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Response:
    """The response of a UAS (or a stateless error of a proxy) to ``request``, per RFC 3261
    section 8.2.6: every ``Via`` line in order, ``From``, ``To`` (with ``;tag=to_tag`` added
    when given and the request's ``To`` has no tag, 8.2.6.2), ``Call-ID`` and ``CSeq``.
    ``Timestamp`` is copied into a 100 (8.2.6.1) and ``Record-Route`` into a 101-299 to a
    dialog-creating request (12.1.1). ``headers`` are appended after those, then a
    ``Content-Length`` of ``body`` (as ``parse_message`` would give it)."""
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} is not in 100-699")
    if to_tag is not None and not TOKEN_RE.fullmatch(to_tag):
        raise ValueError(f"to-tag {quoted(to_tag)} is not a token")
    source = request.headers._items
    items = [item for item in source if item[0] == "via"]
    index = request.headers._index()
    for key in ("from", "to", "call-id", "cseq"):
        name = NAMES[key][1]
        value = index.get(key)
        if not value:
            raise bad_request(f"missing {name}")
        if key == "to" and to_tag is not None and _header_param(value, "tag", True) is None:
            value = f"{value};tag={to_tag}"
        items.append((key, name, value))
    if 100 < status < 300 and request.method in _DIALOG_METHODS:
        items += [item for item in source if item[0] == "record-route"]
    if status == 100:
        items += [item for item in source if item[0] == "timestamp"]
    out = Headers._from_parsed(items, None)
    for name, value in headers or ():
        out.add(name, value)
    out.set("Content-Length", str(len(body)))
    return Response(status, reason if reason is not None else reason_phrase(status), out, body)


def caller_uri(request: Request) -> str | None:
    """Who to call back: the URI of ``P-Asserted-Identity`` (RFC 3325, asserted by a trusted
    network) or else of ``From``; None when neither can be read."""
    for name in ("P-Asserted-Identity", "From"):
        value = request.headers.get(name)
        if value:
            try:
                return str(parse_name_addr(value).uri)
            except SipParseError:
                continue
    return None
