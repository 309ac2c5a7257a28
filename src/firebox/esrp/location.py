"""Where the caller is, as the ESRP reads it from an INVITE or MESSAGE (NENA-STA-010.3
section 4.2; RFC 6442 location conveyance; RFC 5621 multipart bodies; RFC 6753 dereference).

Sans-I/O. ``find_location(request)`` walks the ``Geolocation`` header's URIs in order:

* ``cid:`` (by value): the body part with that Content-ID, parsed as PIDF-LO;
* ``http:``/``https:`` (by reference): returned as ``NeedDereference`` for the adapter to
  fetch over HELD (``resolve_reference`` then takes the fetched bytes);
* anything else, or a value that does not parse, is a problem noted and skipped.

The first usable location wins. When there is none (no header, a garbled PIDF-LO, a
reference that cannot be fetched), ``add_default`` gives the request a top-most
``Geolocation`` pointing at a default PIDF-LO (the ingress's default location) added to the
body, keeping the caller's own headers and parts after it: the call is routed, the
originals are preserved for the PSAP, and the reason is logged. Never an exception: every
problem becomes a sentence in ``problems``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from firebox.location.pidf import PidfError, PidfLocation, Presence, best_location, parse_pidf, serialize_pidf
from firebox.sip import (
    BodyPart,
    Request,
    SipParseError,
    build_multipart,
    find_by_cid,
    make_part,
    parse_media_type,
    parse_multipart,
    split_list,
)

PIDF_TYPE = "application/pidf+xml"


@dataclass(slots=True)
class Located:
    location: PidfLocation
    presence: Presence
    how: str  # "value" (cid:), "reference" (dereferenced URI) or "default"
    uri: str  # the Geolocation URI it came from
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class NeedDereference:
    """Fetch ``uri`` (HELD, RFC 6753), then call ``resolve_reference``; ``remaining`` are
    the Geolocation URIs after it, tried if this one fails."""

    uri: str
    remaining: list[str]
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class NoLocation:
    problems: list[str]


LocationStep = Located | NeedDereference | NoLocation


def geolocation_uris(request: Request) -> list[str]:
    """The URIs of every Geolocation header value, in order (RFC 6442 section 4.1)."""
    out = []
    for line in request.headers.get_lines("Geolocation"):
        for value in split_list(line):
            value = value.strip()
            if value.startswith("<") and ">" in value:
                out.append(value[1 : value.index(">")].strip())
            elif value:
                out.append(value)
    return out


def _parts(request: Request, problems: list[str]) -> list[BodyPart]:
    ctype = request.content_type or ""
    if not request.body:
        return []
    try:
        media, _ = parse_media_type(ctype)
        if media.startswith("multipart/"):
            return parse_multipart(ctype, request.body)
    except SipParseError as exc:
        problems.append(f"body: {exc.reason}")
        return []
    return [BodyPart(media, None, {"Content-Type": ctype}, request.body)]


def _usable(presence: Presence, where: str, problems: list[str]) -> PidfLocation | None:
    loc = best_location(presence)
    if loc is None or (not loc.shapes and loc.civic is None):
        problems.append(f"{where}: the PIDF-LO holds no location")
        return None
    return loc


def find_location(request: Request, *, start: list[str] | None = None, problems: list[str] | None = None) -> LocationStep:
    """The first usable location of ``request`` (see the module docstring); ``start`` lets
    the adapter continue after a failed dereference."""
    problems = problems if problems is not None else []
    uris = geolocation_uris(request) if start is None else start
    if not uris and start is None:
        problems.append("no Geolocation header")
    parts: list[BodyPart] | None = None
    for i, uri in enumerate(uris):
        scheme = uri.split(":", 1)[0].lower()
        if scheme == "cid":
            if parts is None:
                parts = _parts(request, problems)
            part = find_by_cid(parts, uri)
            if part is None:
                problems.append(f"{uri}: no body part has that Content-ID")
                continue
            try:
                presence = parse_pidf(part.body)
            except PidfError as exc:
                problems.append(f"{uri}: garbled PIDF-LO: {exc}")
                continue
            loc = _usable(presence, uri, problems)
            if loc is not None:
                return Located(loc, presence, "value", uri, problems)
        elif scheme in ("http", "https"):
            return NeedDereference(uri, uris[i + 1 :], problems)
        else:
            problems.append(f"{uri}: not a cid:, http: or https: location URI")
    return NoLocation(problems)


def resolve_reference(
    request: Request, step: NeedDereference, pidf: bytes | None, failure: str | None = None
) -> LocationStep:
    """Continue after the adapter dereferenced ``step.uri``: ``pidf`` is the PIDF-LO it got
    (None with ``failure`` saying why when it got none)."""
    problems = step.problems
    if pidf is None:
        problems.append(f"{step.uri}: dereference failed: {failure or 'no answer'}")
    else:
        try:
            presence = parse_pidf(pidf)
        except PidfError as exc:
            problems.append(f"{step.uri}: garbled PIDF-LO from dereference: {exc}")
        else:
            loc = _usable(presence, step.uri, problems)
            if loc is not None:
                return Located(loc, presence, "reference", step.uri, problems)
    return find_location(request, start=step.remaining, problems=problems)


#: The Content-ID prefix of a default location the ESRP added (``add_default``), so that the
#: PSAP can tell the call-taker the location is not the caller's.
DEFAULT_CID_PREFIX = "default-"


def is_default_location(uri: str) -> bool:
    """Whether the Geolocation URI ``uri`` is a default location an ESRP added."""
    return uri.lower().startswith("cid:" + DEFAULT_CID_PREFIX)


def add_default(request: Request, default: Presence, fqdn: str) -> tuple[Request, str]:
    """``request`` with ``default`` as its top-most location: a PIDF-LO part with a new
    Content-ID added to the body (a single body becomes multipart/mixed; parts already there
    stay, in order), and ``Geolocation: <cid:...>`` inserted first. Returns the new request
    and the cid: URI. The caller's Geolocation headers stay, after ours."""
    pidf = serialize_pidf(default)
    digest = hashlib.sha1(pidf + request.call_id.encode()).hexdigest()[:16]
    cid = f"{DEFAULT_CID_PREFIX}{digest}@{fqdn}"
    headers = request.headers.copy()
    problems: list[str] = []
    parts = _parts(request, problems)
    if problems:  # an unreadable multipart body is kept whole, as an opaque part
        parts = [BodyPart(request.content_type or "application/octet-stream", None, {}, request.body)]
    parts = [*parts, make_part(PIDF_TYPE, pidf, content_id=cid)]
    ctype, body = build_multipart(parts)
    headers.set("Content-Type", ctype)
    headers.insert_first("Geolocation", f"<cid:{cid}>")
    if headers.get("Geolocation-Routing") is None:
        headers.add("Geolocation-Routing", "yes")
    return Request(request.method, request.uri, headers, body, request.version), f"cid:{cid}"
