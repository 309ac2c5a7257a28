"""What a call-taker is shown of an emergency call: identifiers, callback number, location
and additional data, read from the INVITE (or MESSAGE) that reaches the PSAP.

Sans-I/O ``call_data(request)``:

* ``call_id`` / ``incident_id``: the ``Call-Info`` URNs the BCF adds with
  ``purpose=emergency-CallId`` / ``emergency-IncidentId`` (NENA-STA-010.3 section 2.1.6,
  2.1.7); the SIP Call-ID when there is no (valid) emergency-CallId.
* ``callback``: who to call back (RFC 3325 ``P-Asserted-Identity``, else ``From``), a ``tel:``
  or ``sip:`` user part made ``+digits`` (10 digits are taken as NANP and get ``+1``); a
  non-numeric SIP URI is kept as it is (it can be called back); anonymous is None.
* ``location``: RFC 6442 conveyance, read with ``firebox.esrp.location`` (the ESRP's own
  reader): ``Geolocation: <cid:...>`` naming a PIDF-LO part of a ``multipart/mixed`` body
  (RFC 5621), else a PIDF-LO body or part found without a header. The PIDF-LO (RFC 4119,
  RFC 5491) is reduced to what the console draws (``LocationView``): a point, a circle, an
  ellipse as its covering circle, a polygon or arc band as a point on its surface with the
  radius reaching its farthest vertex, and the civic address (RFC 5139) when there is one.
  ``location_reference``: the first ``http:``/``https:`` Geolocation URI (RFC 6753).
* ``additional_data``: RFC 7852 blocks named by ``Call-Info`` with
  ``purpose=EmergencyCallData.<Block>``: by value (``cid:`` naming a body part, section 4.1)
  summarized to the fields a call-taker reads; by reference (an ``https:`` URI, section 4.2)
  kept with ``by="reference"`` and listed in ``references`` for ``dereference``.

Bad data is never an exception (the call is never dropped over it): a garbled PIDF-LO
leaves ``location`` None, an unreadable block gets a ``problem`` entry in its summary, and
each problem is logged and kept in ``problems``.

``dereference(data, http)`` is the asyncio part: the location by reference through HELD
(``firebox.held.client``, shared with the ESRP) and each additional data reference by HTTP
GET (RFC 7852 section 4.2). It never raises; what cannot be fetched stays as it was.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from dataclasses import dataclass, replace

import httpx
from lxml import etree

from firebox.esrp.location import Located, NeedDereference, find_location, geolocation_uris, is_default_location
from firebox.held.client import dereference as held_dereference
from firebox.location.pidf import PidfError, PidfLocation, Presence, best_location, parse_pidf
from firebox.location.shapes import ArcBand, Circle, Ellipse, Point, Polygon, Shape, centroid
from firebox.logging.events import check_uid
from firebox.psap.api import AdditionalDataView, LocationView
from firebox.sip import BodyPart, Request, SipParseError, find_by_cid, parse_media_type, parse_multipart, split_list
from firebox.sip.address import AbsoluteUri, SipUri, parse_name_addr, parse_params
from firebox.xmlsafe import XmlError, local_name, namespace, parse_xml

__all__ = [
    "ADDITIONAL_DATA_PURPOSES",
    "CallData",
    "call_data",
    "dereference",
    "location_view",
    "normalize_callback",
    "summarize_additional_data",
]

log = logging.getLogger(__name__)

PIDF_TYPE = "application/pidf+xml"
#: RFC 7852 section 4 data blocks (the ``purpose`` of their Call-Info header field).
ADDITIONAL_DATA_PURPOSES: tuple[str, ...] = (
    "EmergencyCallData.ProviderInfo",
    "EmergencyCallData.ServiceInfo",
    "EmergencyCallData.DeviceInfo",
    "EmergencyCallData.SubscriberInfo",
    "EmergencyCallData.Comment",
)
_PURPOSES = {p.lower(): p for p in ADDITIONAL_DATA_PURPOSES}
#: Namespace of each block's root element (RFC 7852 section 4.x, XML schemas of section 5).
_NS_ECD = "urn:ietf:params:xml:ns:EmergencyCallData"
_NS_VCARD = "urn:ietf:params:xml:ns:vcard-4.0"  # xCard, RFC 6351
#: A Call-Info value: ``<uri>`` then its parameters (RFC 3261 section 20.9).
_ANGLE = re.compile(r"\s*<([^>]*)>(.*)", re.DOTALL)
_VISUAL = re.compile(r"[-.() ]")
_ANONYMOUS = ("anonymous", "unknown", "restricted", "unavailable")


@dataclass(frozen=True, slots=True)
class CallData:
    """A call as the call-taker's console shows it (see the module docstring)."""

    call_id: str
    incident_id: str | None
    callback: str | None
    caller_uri: str
    location: LocationView | None
    location_reference: str | None
    additional_data: tuple[AdditionalDataView, ...]
    references: tuple[str, ...]
    pidf: bytes | None
    sip_call_id: str = ""
    #: Each problem met reading the request (also logged), for the call record.
    problems: tuple[str, ...] = ()


# --- small readers -------------------------------------------------------------------------


def _call_info(request: Request) -> list[tuple[str, str]]:
    """``(uri, purpose)`` of every Call-Info value (RFC 3261 section 20.9), in order; a
    value that cannot be read is skipped (logged by the caller through ``problems``)."""
    out = []
    for line in request.headers.get_lines("Call-Info"):
        for value in split_list(line):
            m = _ANGLE.match(value)
            if m is None:
                continue
            try:
                params = parse_params(m.group(2), "Call-Info")
            except SipParseError:
                continue
            purpose = (params.get("purpose") or "").strip('"')
            out.append((m.group(1).strip(), purpose))
    return out


def normalize_callback(uri: str) -> str | None:
    """The number to call back from a ``tel:`` or ``sip:``/``sips:`` URI: ``+digits`` when
    the user part is a telephone number (visual separators dropped, RFC 3966 section 5.1.1;
    10 digits, or 11 starting with 1, taken as NANP), the URI itself when the user is a name,
    None for an anonymous caller (RFC 3323 ``anonymous@anonymous.invalid``)."""
    try:
        parsed = parse_name_addr(uri).uri
    except SipParseError:
        return None
    if isinstance(parsed, SipUri):
        user = (parsed.user or "").split(";", 1)[0]
        if not user or user.lower() in _ANONYMOUS or parsed.host.lower().endswith(".invalid"):
            return None
    elif isinstance(parsed, AbsoluteUri) and parsed.scheme == "tel":
        user = parsed.opaque.split(";", 1)[0]
    else:
        return str(parsed)
    digits = _VISUAL.sub("", user)
    plus = digits.startswith("+")
    body = digits[1:] if plus else digits
    if not body.isdigit():
        return str(parsed) if isinstance(parsed, SipUri) else None
    if plus:
        return "+" + body
    if len(body) == 10:
        return "+1" + body
    if len(body) == 11 and body.startswith("1"):
        return "+" + body
    return body  # a short code or a national number we cannot place: as dialled


def _callback(request: Request) -> str | None:
    """P-Asserted-Identity (each value; RFC 3325 allows a sip and a tel one), else From."""
    for line in request.headers.get_lines("P-Asserted-Identity"):
        for value in split_list(line):
            number = normalize_callback(value)
            if number is not None:
                return number
    from_ = request.headers.get("From")
    return normalize_callback(from_) if from_ else None


def _caller_uri(request: Request) -> str:
    value = request.headers.get("From") or ""
    try:
        return str(parse_name_addr(value).uri)
    except SipParseError:
        return value.strip()


def _parts(request: Request, problems: list[str]) -> list[BodyPart]:
    if not request.body:
        return []
    ctype = request.content_type or "application/octet-stream"
    try:
        media, _ = parse_media_type(ctype)
        if media.startswith("multipart/"):
            return parse_multipart(ctype, request.body)
    except SipParseError as exc:
        problems.append(f"body: {exc.reason}")
        return []
    return [BodyPart(media, None, {"content-type": ctype}, request.body)]


def _media(part: BodyPart) -> str:
    try:
        return parse_media_type(part.content_type)[0]
    except SipParseError:
        return ""


# --- location ------------------------------------------------------------------------------


def _metres(a: Point, b: Point) -> float:
    """Great-circle distance (spherical Earth; enough for a radius on a map)."""
    la1, la2 = math.radians(a.lat), math.radians(b.lat)
    dla, dlo = la2 - la1, math.radians(b.lon - a.lon)
    h = math.sin(dla / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin(dlo / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(h)))


def _shape_view(shape: Shape) -> tuple[str, float, float, float | None]:
    if isinstance(shape, Point):
        return "point", shape.lat, shape.lon, None
    if isinstance(shape, Circle):
        return "circle", shape.center.lat, shape.center.lon, shape.radius
    if isinstance(shape, Ellipse):  # the circle that covers it
        return "circle", shape.center.lat, shape.center.lon, max(shape.semi_major, shape.semi_minor)
    if isinstance(shape, ArcBand):
        c = centroid(shape)
        return "polygon", c.lat, c.lon, shape.outer_radius + _metres(shape.center, c)
    assert isinstance(shape, Polygon)
    c = centroid(shape)
    return "polygon", c.lat, c.lon, max(_metres(c, p) for p in shape.exterior)


def location_view(loc: PidfLocation, source: str = "value", presence: Presence | None = None) -> LocationView:
    """``loc`` as the console draws it (see the module docstring). A geodetic ``loc`` without
    a civic address takes the first civic address of ``presence``: a LIS writes each form in
    its own geopriv (RFC 5491 section 3), both of the same device."""
    civic_of = loc.civic
    if civic_of is None and presence is not None:
        civic_of = next((other.civic for other in presence.locations if other.civic is not None), None)
    civic = dict(civic_of.items()) if civic_of is not None else {}
    if loc.shape is None:
        return LocationView("civic", civic=civic, source=source, method=loc.method)
    kind, lat, lon, radius = _shape_view(loc.shape)
    return LocationView(kind, lat, lon, radius, civic, source, loc.method)


def _location(
    request: Request, parts: list[BodyPart], problems: list[str]
) -> tuple[LocationView | None, str | None, bytes | None]:
    """The by-value location (its view and PIDF-LO bytes) and the first reference."""
    uris = geolocation_uris(request)
    reference = next((u for u in uris if u.split(":", 1)[0].lower() in ("http", "https")), None)
    step = find_location(request, problems=problems)
    while isinstance(step, NeedDereference):  # references are for ``dereference``; go on
        step = find_location(request, start=step.remaining, problems=problems)
    if isinstance(step, Located):
        part = find_by_cid(parts, step.uri)
        # The caller gave no usable location and the ESRP routed on its default: say so,
        # so that nobody is sent to the default as if it were the caller's position.
        source = "default" if is_default_location(step.uri) else "value"
        view = location_view(step.location, source=source, presence=step.presence)
        return view, reference, part.body if part is not None else None
    # No Geolocation header naming a value: a PIDF-LO sent without one (RFC 6442 requires
    # the header, but a location is worth reading whatever way it came).
    if not any(u.lower().startswith("cid:") for u in uris):
        for part in parts:
            if _media(part) != PIDF_TYPE:
                continue
            try:
                presence = parse_pidf(part.body)
            except PidfError as exc:
                problems.append(f"PIDF-LO body: garbled: {exc}")
                continue
            loc = best_location(presence)
            if loc is not None:
                problems.append("PIDF-LO body without a Geolocation header field (RFC 6442 section 4.1)")
                return location_view(loc, presence=presence), reference, part.body
    return None, reference, None


# --- additional data (RFC 7852) --------------------------------------------------------------


def _children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str) and local_name(c) == name]


def _first_text(el: etree._Element, name: str) -> str | None:
    for c in el.iter():
        if isinstance(c.tag, str) and local_name(c) == name:
            value = " ".join("".join(c.itertext()).split())
            if value:
                return value
    return None


def _vcard(el: etree._Element, prefix: str, out: dict[str, str]) -> None:
    """The lines of an xCard (RFC 6351) a call-taker reads: name, phone, email, address."""
    for c in el.iter():
        if not isinstance(c.tag, str) or namespace(c) != _NS_VCARD:
            continue
        name = local_name(c)
        if name == "fn" and (v := _first_text(c, "text")):
            out.setdefault(f"{prefix}name", v)
        elif name == "tel" and (v := _first_text(c, "uri") or _first_text(c, "text")):
            out.setdefault(f"{prefix}tel", v)
        elif name == "email" and (v := _first_text(c, "text")):
            out.setdefault(f"{prefix}email", v)
        elif name == "adr":
            lines = [_first_text(c, k) for k in ("street", "locality", "region", "code", "country")]
            if any(lines):
                out.setdefault(f"{prefix}address", ", ".join(v for v in lines if v))


def summarize_additional_data(purpose: str, xml: bytes | str) -> dict[str, str]:
    """The fields of an RFC 7852 block a call-taker reads, by name. Raises ``ValueError``
    (``XmlError``) for a body that is not that block."""
    root = parse_xml(xml)
    block = purpose.split(".", 1)[-1]
    expected_ns = f"{_NS_ECD}:{block}"
    if local_name(root) != f"EmergencyCallData.{block}" or namespace(root) != expected_ns:
        raise XmlError(
            f"root element <{local_name(root)}> in {namespace(root) or 'no namespace'} is not "
            f"<EmergencyCallData.{block}> in {expected_ns} (RFC 7852)"
        )
    out: dict[str, str] = {}

    def put(key: str, element: str) -> None:
        if (v := _first_text(root, element)) is not None:
            out[key] = v

    if block == "ProviderInfo":  # RFC 7852 section 4.1
        put("provider", "DataProviderString")
        put("provider_id", "ProviderID")
        put("provider_type", "TypeOfProvider")
        put("contact", "ContactURI")
        put("language", "Language")
        for contact in _children(root, "DataProviderContact"):
            _vcard(contact, "contact_", out)
    elif block == "ServiceInfo":  # section 4.2
        put("environment", "ServiceEnvironment")
        types = [" ".join("".join(c.itertext()).split()) for c in _children(root, "ServiceType")]
        if any(types):
            out["service_type"] = ", ".join(t for t in types if t)
        put("mobility", "ServiceMobility")
    elif block == "DeviceInfo":  # section 4.3
        put("classification", "DeviceClassification")
        put("manufacturer", "DeviceMfgr")
        put("model", "DeviceModelNr")
        for dev in _children(root, "UniqueDeviceID"):
            value = " ".join("".join(dev.itertext()).split())
            if value:
                kind = dev.get("TypeOfDeviceID")
                out["device_id"] = f"{kind} {value}" if kind else value
                break
    elif block == "SubscriberInfo":  # section 4.4
        if root.get("privacyRequested") is not None:
            out["privacy_requested"] = root.get("privacyRequested", "")
        for data in _children(root, "SubscriberData"):
            _vcard(data, "", out)
    elif block == "Comment":  # section 4.5
        comments = [" ".join("".join(c.itertext()).split()) for c in _children(root, "Comment")]
        if any(comments):
            out["comment"] = " / ".join(c for c in comments if c)
    return out


def _additional_data(
    request: Request, parts: list[BodyPart], problems: list[str]
) -> tuple[list[AdditionalDataView], list[str]]:
    views: list[AdditionalDataView] = []
    references: list[str] = []
    for uri, raw_purpose in _call_info(request):
        purpose = _PURPOSES.get(raw_purpose.lower())
        if purpose is None:
            if raw_purpose.lower().startswith("emergencycalldata."):
                problems.append(f"Call-Info {uri}: unknown additional data block {raw_purpose!r}")
            continue
        scheme = uri.split(":", 1)[0].lower()
        if scheme == "cid":
            part = find_by_cid(parts, uri)
            if part is None:
                why = "no body part has that Content-ID"
                problems.append(f"{purpose} {uri}: {why}")
                views.append(AdditionalDataView(purpose, "value", uri, {"problem": why}))
                continue
            try:
                summary = summarize_additional_data(purpose, part.body)
            except ValueError as exc:
                problems.append(f"{purpose} {uri}: unreadable: {exc}")
                summary = {"problem": f"unreadable: {exc}"}
            views.append(AdditionalDataView(purpose, "value", uri, summary))
        elif scheme in ("http", "https"):
            views.append(AdditionalDataView(purpose, "reference", uri))
            references.append(uri)
        else:
            problems.append(f"{purpose} {uri}: not a cid:, http: or https: URI (RFC 7852 section 4)")
    return views, references


# --- the whole call ------------------------------------------------------------------------------


def _identifier(request: Request, purpose: str, kind: str, problems: list[str]) -> str | None:
    for uri, p in _call_info(request):
        if p.lower() == purpose.lower():
            why = check_uid(uri, kind)
            if why is None:
                return uri
            problems.append(f"Call-Info purpose={purpose}: {why}")
    return None


def call_data(request: Request) -> CallData:
    """What the call-taker is shown of ``request`` (see the module docstring). Never raises
    for bad content; problems are logged (warning) and kept in ``problems``."""
    problems: list[str] = []
    sip_call_id = request.headers.get("Call-ID") or ""
    call_id = _identifier(request, "emergency-CallId", "callid", problems)
    if call_id is None:
        if not any(p.lower() == "emergency-callid" for _, p in _call_info(request)):
            problems.append("no Call-Info purpose=emergency-CallId: the SIP Call-ID identifies the call")
        call_id = sip_call_id
    incident_id = _identifier(request, "emergency-IncidentId", "incidentid", problems)
    parts = _parts(request, problems)
    location, reference, pidf = _location(request, parts, problems)
    additional, ad_refs = _additional_data(request, parts, problems)
    references = ([reference] if reference else []) + ad_refs
    for problem in problems:
        log.warning("call %s: %s", call_id or "(no Call-ID)", problem)
    return CallData(
        call_id=call_id,
        incident_id=incident_id,
        callback=_callback(request),
        caller_uri=_caller_uri(request),
        location=location,
        location_reference=reference,
        additional_data=tuple(additional),
        references=tuple(references),
        pidf=pidf,
        sip_call_id=sip_call_id,
        problems=tuple(problems),
    )


# --- dereference (asyncio) -----------------------------------------------------------------------


async def _fetch_location(data: CallData, http: httpx.AsyncClient, timeout: float) -> tuple[LocationView, bytes] | None:
    assert data.location_reference is not None
    pidf, failure = await held_dereference(http, data.location_reference, timeout=timeout)
    if pidf is None:
        log.warning("call %s: location %s not dereferenced: %s", data.call_id, data.location_reference, failure)
        return None
    try:
        presence = parse_pidf(pidf)
    except PidfError as exc:
        log.warning("call %s: location %s: garbled PIDF-LO: %s", data.call_id, data.location_reference, exc)
        return None
    loc = best_location(presence)
    if loc is None:
        log.warning("call %s: location %s: the PIDF-LO holds no location", data.call_id, data.location_reference)
        return None
    return location_view(loc, "reference", presence), pidf


async def _fetch_block(call_id: str, view: AdditionalDataView, http: httpx.AsyncClient, timeout: float) -> AdditionalDataView | None:
    assert view.uri is not None
    media = f"application/{view.purpose}+xml"
    try:
        async with asyncio.timeout(timeout):
            answer = await http.get(view.uri, headers={"Accept": media})
    except (TimeoutError, httpx.TimeoutException):
        log.warning("call %s: %s %s: no answer within %g s", call_id, view.purpose, view.uri, timeout)
        return None
    except (httpx.HTTPError, OSError, ValueError) as exc:
        log.warning("call %s: %s %s: %s: %s", call_id, view.purpose, view.uri, type(exc).__name__, exc)
        return None
    if answer.status_code != 200:
        log.warning("call %s: %s %s: HTTP %s", call_id, view.purpose, view.uri, answer.status_code)
        return None
    try:
        summary = summarize_additional_data(view.purpose, answer.content)
    except ValueError as exc:
        log.warning("call %s: %s %s: unreadable: %s", call_id, view.purpose, view.uri, exc)
        return None
    return AdditionalDataView(view.purpose, "reference", view.uri, summary)


async def dereference(data: CallData, http: httpx.AsyncClient, *, timeout: float = 2.0) -> CallData:
    """``data`` with its references fetched (concurrently, each within ``timeout`` s): the
    location by reference through HELD (RFC 6753; it replaces a location by value, being the
    caller's current one) and each additional data block by GET (RFC 7852 section 4.2).
    Never raises: a failure is logged and leaves its field as it was and its URI in
    ``references``; when nothing could be fetched, ``data`` itself is returned."""
    try:
        pending = set(data.references)
        loc_task = (
            _fetch_location(data, http, timeout)
            if data.location_reference is not None and data.location_reference in pending
            else None
        )
        todo = [(i, v) for i, v in enumerate(data.additional_data) if v.by == "reference" and v.uri in pending]
        results = await asyncio.gather(
            *([loc_task] if loc_task is not None else []),
            *(_fetch_block(data.call_id, v, http, timeout) for _, v in todo),
            return_exceptions=True,
        )
        changes: dict[str, object] = {}
        if loc_task is not None:
            got, results = results[0], results[1:]
            if isinstance(got, tuple):
                changes["location"], changes["pidf"] = got
                pending.discard(data.location_reference)
            elif isinstance(got, BaseException):
                log.error("call %s: location dereference failed: %r", data.call_id, got)
        blocks = list(data.additional_data)
        for (i, view), got in zip(todo, results, strict=True):
            if isinstance(got, AdditionalDataView):
                blocks[i] = got
                pending.discard(view.uri)
            elif isinstance(got, BaseException):
                log.error("call %s: %s dereference failed: %r", data.call_id, view.purpose, got)
        if pending == set(data.references):
            return data  # nothing fetched: the very same object, so a caller can tell
        changes["additional_data"] = tuple(blocks)
        changes["references"] = tuple(u for u in data.references if u in pending)
        return replace(data, **changes)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 -- never fail a call over its data
        log.exception("call %s: dereference failed", data.call_id)
        return data

