"""Multipart bodies (RFC 2046 section 5.1) as SIP carries them (RFC 5621).

An NG911 INVITE carries its SDP offer and the caller's PIDF-LO in one ``multipart/mixed``
body; the ``Geolocation`` header points at the location part by a ``cid:`` URL (RFC 6442
section 4.1, RFC 2392) that matches the part's ``Content-ID``.

``parse_multipart`` is tolerant of bare LF line ends, transport padding after a delimiter,
a preamble and an epilogue (RFC 2046 section 5.1.1), and raises ``SipParseError`` (400) with a
precise reason for anything it cannot read. ``build_multipart`` writes CRLF line ends and, by
default, a boundary derived from the parts themselves (so the result is reproducible) that
does not occur in any of them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from urllib.parse import unquote

from firebox.sip.address import split_params
from firebox.sip.errors import bad_request, quoted
from firebox.sip.headers import TOKEN_RE

__all__ = [
    "BodyPart",
    "build_multipart",
    "find_by_cid",
    "make_part",
    "parse_media_type",
    "parse_multipart",
]

_BLANK_LINE_RE = re.compile(rb"\n\r?\n")
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_MEDIA_TYPE_RE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)/([A-Za-z0-9\-.!%*_+`'~]+)")
#: bchars of RFC 2046 section 5.1.1: 1 to 70 of them, not ending in a space.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
#: Default Content-Type of a body part (RFC 2046 section 5.1).
DEFAULT_PART_TYPE = "text/plain"


@dataclass(slots=True)
class BodyPart:
    """One body part: ``content_type`` and ``content_id`` (without its ``<>``) read from
    ``headers`` (every header of the part, names lower-cased), and the part's ``body``."""

    content_type: str
    content_id: str | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def make_part(
    content_type: str,
    body: bytes,
    *,
    content_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> BodyPart:
    """A part whose ``headers`` agree with ``content_type`` and ``content_id``;
    ``headers`` adds others such as ``Content-Disposition`` (RFC 5621 section 3.2)."""
    all_headers = {"content-type": content_type}
    if content_id is not None:
        all_headers["content-id"] = f"<{content_id}>"
    for name, value in (headers or {}).items():
        key = name.lower()
        if key not in all_headers:
            all_headers[key] = value
    return BodyPart(content_type, content_id, all_headers, body)


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` (lower case) and its parameters (names lower case, quoted values
    unquoted) of a ``Content-Type`` value (RFC 3261 section 20.15, RFC 2045 section 5.1)."""
    media, semi, rest = value.strip(" \t").partition(";")
    media = media.strip(" \t")
    if not _MEDIA_TYPE_RE.fullmatch(media):
        raise bad_request(f"malformed Content-Type {quoted(value.strip())}")
    params: dict[str, str] = {}
    if semi:
        for item in split_params(";" + rest, "Content-Type"):
            name, eq, raw = item.partition("=")
            name = name.strip(" \t")
            raw = raw.strip(" \t")
            if not eq or not TOKEN_RE.fullmatch(name):
                raise bad_request(f"malformed Content-Type parameter {quoted(item.strip())}")
            if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
                raw = _ESCAPE_RE.sub(r"\1", raw[1:-1])
            params[name.lower()] = raw
    return media.lower(), params


def parse_multipart(content_type: str, body: bytes) -> list[BodyPart]:
    """The parts of a multipart ``body`` (RFC 2046 section 5.1.1) whose boundary is the
    ``boundary`` parameter of ``content_type``. A part's body excludes the line break before
    the next delimiter (it belongs to the delimiter). Raises ``SipParseError`` (400)."""
    media, params = parse_media_type(content_type)
    if not media.startswith("multipart/"):
        raise bad_request(f"Content-Type {quoted(media)} is not multipart")
    boundary = params.get("boundary")
    if not boundary:
        raise bad_request("multipart Content-Type has no boundary")
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    marks = _find_delimiters(body, delimiter)
    if not marks:
        raise bad_request(f"multipart body has no delimiter {quoted('--' + boundary)}")
    if not marks[-1][2]:
        raise bad_request(
            f"multipart body has no closing delimiter {quoted('--' + boundary + '--')}"
        )
    if len(marks) == 1:
        raise bad_request("multipart body has no parts")
    parts = []
    for number, (mark, following) in enumerate(pairwise(marks), 1):
        start, end = mark[1], following[0]
        if end > start and body[end - 1] == 0x0A:
            end -= 1
            if end > start and body[end - 1] == 0x0D:
                end -= 1
        parts.append(_parse_part(body[start:end], number))
    return parts


def _find_delimiters(body: bytes, delimiter: bytes) -> list[tuple[int, int, bool]]:
    """``(line start, content start, is close)`` of each delimiter line, up to and with
    the close delimiter (RFC 2046 section 5.1.1: at the start of a line, then transport
    padding; the close delimiter has ``--`` after the boundary)."""
    marks: list[tuple[int, int, bool]] = []
    pos = 0
    while (i := body.find(delimiter, pos)) >= 0:
        pos = i + 1
        if i and body[i - 1] != 0x0A:
            continue
        after = i + len(delimiter)
        close = body.startswith(b"--", after)
        eol = body.find(b"\n", after)
        line_end = len(body) if eol < 0 else eol
        if not close and body[after:line_end].strip(b" \t\r"):
            continue  # the boundary is only the beginning of a longer line
        marks.append((i, line_end if eol < 0 else eol + 1, close))
        if close:
            break
        pos = line_end
    return marks


def _parse_part(raw: bytes, number: int) -> BodyPart:
    """One part: header lines, a blank line, the body (RFC 2046 section 5.1). A part that
    starts with a blank line has no headers; one without a blank line has no body."""
    if raw.startswith(b"\r\n"):
        head, body = b"", raw[2:]
    elif raw.startswith(b"\n"):
        head, body = b"", raw[1:]
    else:
        m = _BLANK_LINE_RE.search(raw)
        head, body = (raw, b"") if m is None else (raw[: m.start()], raw[m.end() :])
    headers = _parse_part_headers(head, number)
    content_id = headers.get("content-id")
    if content_id is not None and content_id.startswith("<") and content_id.endswith(">"):
        content_id = content_id[1:-1].strip(" \t")
    return BodyPart(headers.get("content-type", DEFAULT_PART_TYPE), content_id, headers, body)


def _parse_part_headers(head: bytes, number: int) -> dict[str, str]:
    text = head.decode("utf-8", "surrogateescape").replace("\r\n", "\n").rstrip("\r")
    headers: dict[str, str] = {}
    last: str | None = None
    for line in text.split("\n"):
        if not line:
            continue
        if line[0] in " \t":
            if last is None:
                raise bad_request(f"multipart body part {number} starts with a continuation line")
            more = line.strip(" \t")
            headers[last] = f"{headers[last]} {more}" if headers[last] else more
            continue
        name, sep, value = line.partition(":")
        name = name.rstrip(" \t")
        if not sep or not TOKEN_RE.fullmatch(name):
            raise bad_request(
                f"malformed header line {quoted(line)} in multipart body part {number}"
            )
        key = name.lower()
        value = value.strip(" \t")
        if key in headers:
            if key in ("content-type", "content-id"):
                raise bad_request(f"multipart body part {number} has multiple {name} headers")
            headers[key] = f"{headers[key]}, {value}"
        else:
            headers[key] = value
        last = key
    return headers


def _canonical_name(key: str) -> str:
    if key == "content-id":
        return "Content-ID"
    return "-".join(word.capitalize() for word in key.split("-"))


def _render_part(part: BodyPart) -> bytes:
    lines = [f"Content-Type: {part.content_type}"]
    if part.content_id is not None:
        lines.append(f"Content-ID: <{part.content_id}>")
    for key, value in part.headers.items():
        if key.lower() not in ("content-type", "content-id"):
            lines.append(f"{_canonical_name(key.lower())}: {value}")
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError(f"body part header {quoted(line)} contains CR or LF")
    head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
    return head + b"\r\n\r\n" + part.body


def _default_boundary(rendered: Sequence[bytes]) -> str:
    """A boundary derived from the parts (reproducible) that none of them contains."""
    digest = hashlib.blake2b(digest_size=12)
    for chunk in rendered:
        digest.update(len(chunk).to_bytes(8, "big"))
        digest.update(chunk)
    base = f"firebox-{digest.hexdigest()}"
    counter = 0
    boundary = base
    while any(b"--" + boundary.encode() in chunk for chunk in rendered):
        counter += 1
        boundary = f"{base}-{counter}"
    return boundary


def build_multipart(
    parts: Iterable[BodyPart], boundary: str | None = None, *, subtype: str = "mixed"
) -> tuple[str, bytes]:
    """``(content_type, body)`` of a ``multipart/<subtype>`` body of ``parts`` (RFC 2046
    section 5.1.1, RFC 5621 section 3): each part's ``Content-Type``, its ``Content-ID`` as
    ``<id>``, its other headers, then its body; CRLF line ends.

    Raises ``ValueError`` for no parts, a boundary that is not 1-70 bchars, or one that
    occurs in a part."""
    rendered = [_render_part(part) for part in parts]
    if not rendered:
        raise ValueError("a multipart body needs at least one part")
    if not TOKEN_RE.fullmatch(subtype):
        raise ValueError(f"subtype {quoted(subtype)} is not a token")
    if boundary is None:
        boundary = _default_boundary(rendered)
    elif not _BOUNDARY_RE.fullmatch(boundary):
        raise ValueError(f"boundary {quoted(boundary)} is not 1 to 70 RFC 2046 bchars")
    delimiter = b"--" + boundary.encode()
    if any(delimiter in chunk for chunk in rendered):
        raise ValueError(f"boundary {quoted(boundary)} occurs in a part")
    out = bytearray()
    for chunk in rendered:
        out += delimiter + b"\r\n" + chunk + b"\r\n"
    out += delimiter + b"--\r\n"
    value = boundary if TOKEN_RE.fullmatch(boundary) else f'"{boundary}"'
    return f"multipart/{subtype}; boundary={value}", bytes(out)


def find_by_cid(parts: Iterable[BodyPart], cid_url: str) -> BodyPart | None:
    """The part whose ``Content-ID`` is named by ``cid_url`` (RFC 2392: ``cid:abc@host``,
    percent-escapes decoded, matches ``Content-ID: <abc@host>``), as a ``Geolocation``
    header references a PIDF-LO part (RFC 6442 section 4.1). ``<cid:...>`` is accepted too.
    ``None`` when no part matches or the URL is not a ``cid:`` URL."""
    url = cid_url.strip(" \t")
    if url.startswith("<") and url.endswith(">"):
        url = url[1:-1].strip(" \t")
    if url[:4].lower() != "cid:":
        return None
    wanted = unquote(url[4:])
    for part in parts:
        if part.content_id is not None and part.content_id == wanted:
            return part
    return None
