"""LoST XML codec (RFC 5222): bytes to the dataclasses of ``firebox.lost.messages`` and back.

``parse`` reads any LoST request or response (section 14 schema, namespace
``urn:ietf:params:xml:ns:lost1``); ``serialize`` writes one, media type
``application/lost+xml`` (section 18). Locations follow the two profiles every server must
support (section 12): ``geodetic-2d`` (RFC 5491 shapes, in the GML or the PIDF-LO geoshape
namespace, ``<pos>`` with spaces or commas) and ``civic`` (RFC 5139).

Every problem is a ``LostParseError`` carrying the RFC 5222 section 13.1 error kind a server
answers with: ``badRequest`` for XML or structure problems (naming the element or attribute),
``locationInvalid`` for a shape or address that cannot be read, ``SRSInvalid`` for an
unsupported coordinate reference system. A location whose *profile* is unknown is not a
parse error: it is kept with its profile and no content so that the server can answer
``locationProfileUnrecognized`` (section 13.1) or use another location of the request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from lxml import etree

from firebox.location.civic import NS_CIVIC, CivicAddress
from firebox.location.gml import (
    NS_GML,
    SRS_2D,
    GmlError,
    is_shape_element,
    parse_shape,
    shape_element,
)
from firebox.location.shapes import Point, Polygon, Shape, ShapeError
from firebox.lost.messages import (
    NO_CACHE,
    NO_EXPIRATION,
    NS_LOST,
    ErrorKind,
    ErrorsResponse,
    Expiry,
    FindService,
    FindServiceResponse,
    GetServiceBoundary,
    GetServiceBoundaryResponse,
    ListServices,
    ListServicesByLocation,
    ListServicesByLocationResponse,
    ListServicesResponse,
    Location,
    LocationValidation,
    LostError,
    LostWarning,
    Mapping,
    Message,
    Profile,
    Redirect,
    ServiceBoundaryReference,
    WarningKind,
)
from firebox.xmlsafe import XmlError, local_name, namespace, parse_xml, text

#: Media type of LoST over HTTP (RFC 5222 section 18).
MEDIA_TYPE = "application/lost+xml"
NS_XML = "http://www.w3.org/XML/1998/namespace"
_LANG = f"{{{NS_XML}}}lang"
_LOST_PREFIX = f"{{{NS_LOST}}}"
_LOST_PREFIX_LEN = len(_LOST_PREFIX)


class LostParseError(ValueError):
    """A LoST body that cannot be read. ``kind`` is the section 13.1 error to answer with."""

    def __init__(self, kind: ErrorKind, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def _bad(message: str) -> LostParseError:
    return LostParseError(ErrorKind.BAD_REQUEST, message)


# --- reading helpers -------------------------------------------------------------------

Kids = dict[str, list[etree._Element]]


def _group(el: etree._Element) -> Kids:
    """LoST-namespace children by local name, in one pass (extension elements of other
    namespaces are skipped, as the schema's extensionPoint allows)."""
    out: Kids = {}
    for child in el:
        tag = child.tag
        if isinstance(tag, str) and tag.startswith(_LOST_PREFIX):
            name = tag[_LOST_PREFIX_LEN:]
            found = out.get(name)
            if found is None:
                out[name] = [child]
            else:
                found.append(child)
    return out


def _first(kids: Kids, name: str) -> etree._Element | None:
    found = kids.get(name)
    return found[0] if found else None


def _attr(el: etree._Element, name: str) -> str:
    value = el.get(name)
    if value is None or not value.strip():
        raise _bad(f"<{local_name(el)}> is missing its '{name}' attribute")
    return value.strip()


_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


def _bool(el: etree._Element, name: str) -> bool:
    """xsd:boolean attribute, false when absent."""
    raw = el.get(name)
    if raw is None:
        return False
    value = raw.strip()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _bad(f"<{local_name(el)}> attribute {name}='{raw}' is not a boolean (true/false/1/0)")


_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_time(value: str, where: str) -> datetime:
    """An RFC 3339 timestamp with a time zone (section 5.1 lastUpdated, 5.2 expires)."""
    m = _RFC3339.match(value.strip())
    if m is None:
        raise _bad(f"{where}='{value}' is not an RFC 3339 timestamp with a time zone")
    date, clock, frac, zone = m.groups()
    frac = (frac or "")[:7]  # Python keeps microseconds; finer digits are dropped
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        return datetime.fromisoformat(f"{date}T{clock}{frac}{zone}")
    except ValueError as exc:
        raise _bad(f"{where}='{value}' is not a valid timestamp: {exc}") from None


def _expiry(value: str) -> Expiry:
    if value in (NO_CACHE, NO_EXPIRATION):
        return value
    return parse_time(value, "expires")


def _path(kids: Kids) -> list[str]:
    """``<path><via source=/>...</path>`` (section 6.4)."""
    path = _first(kids, "path")
    if path is None:
        return []
    return [_attr(via, "source") for via in _group(path).get("via", ())]


def _service(el: etree._Element, kids: Kids) -> str | None:
    s = _first(kids, "service")
    if s is None:
        return None
    value = text(s)
    if not value:
        raise _bad(f"<{local_name(el)}> has an empty <service>")
    return value


_GML_POINT = f"{{{NS_GML}}}Point"
_GML_POS = f"{{{NS_GML}}}pos"


def _fast_point(el: etree._Element) -> Point | None:
    """A plain ``<gml:Point srsName=EPSG::4326><gml:pos>lat lon</gml:pos>`` read directly:
    it is the location of nearly every call. Anything else (or any problem) returns None and
    goes through ``gml.parse_shape``, which gives the precise error."""
    if el.get("srsName") != SRS_2D or len(el) != 1:
        return None
    pos = el[0]
    if pos.tag != _GML_POS or not pos.text:
        return None
    parts = pos.text.split()
    if len(parts) != 2:
        return None
    try:
        return Point(float(parts[0]), float(parts[1]))
    except (ValueError, ShapeError):
        return None


def _location_content(el: etree._Element, loc_id: str, profile: str | None) -> Location:
    """The content of a ``<location>`` or ``<serviceBoundary>`` (section 12 profiles)."""
    if profile == "geodetic-2d" and len(el) == 1 and el[0].tag == _GML_POINT:
        point = _fast_point(el[0])
        if point is not None:
            return Location(loc_id, profile, point)
    where = f"location '{loc_id}'" if loc_id else f"<{local_name(el)}>"
    shape_el = None
    civic_el = None
    others: list[str] = []
    for child in el:
        if not isinstance(child.tag, str):
            continue
        if is_shape_element(child):
            shape_el = shape_el if shape_el is not None else child
        elif local_name(child) == "civicAddress" and namespace(child) == NS_CIVIC:
            civic_el = civic_el if civic_el is not None else child
        else:
            others.append(local_name(child))
    if profile is None:  # the attribute is optional in the schema: infer it from the content
        if shape_el is not None:
            profile = Profile.GEODETIC_2D.value
        elif civic_el is not None:
            profile = Profile.CIVIC.value
        else:
            profile = ""
    if profile == Profile.GEODETIC_2D:
        if shape_el is None:
            found = f" (found <{others[0]}>)" if others else ""
            raise LostParseError(
                ErrorKind.LOCATION_INVALID,
                f"{where}: profile geodetic-2d needs a Point, Polygon, Circle, Ellipse or "
                f"ArcBand{found}",
            )
        try:
            shape = parse_shape(shape_el)
        except GmlError as exc:
            # gml names srsName problems first, as "<Shape>: missing/unsupported srsName";
            # those are SRSInvalid (section 13.1). Matching the prefix, not "srsName" anywhere,
            # keeps a caller's own text (a <pos> reading "srsName") from changing the kind.
            shape_name = local_name(shape_el)
            srs = str(exc).startswith(
                (f"{shape_name}: missing srsName", f"{shape_name}: unsupported srsName")
            )
            kind = ErrorKind.SRS_INVALID if srs else ErrorKind.LOCATION_INVALID
            raise LostParseError(kind, f"{where}: {exc}") from None
        except ValueError as exc:  # e.g. int() of a non-numeric posList srsDimension
            raise LostParseError(
                ErrorKind.LOCATION_INVALID, f"{where}: <{local_name(shape_el)}>: {exc}"
            ) from None
        return Location(id=loc_id, profile=profile, shape=shape)
    if profile == Profile.CIVIC:
        if civic_el is None:
            raise LostParseError(
                ErrorKind.LOCATION_INVALID, f"{where}: profile civic needs a <civicAddress>"
            )
        return Location(id=loc_id, profile=profile, civic=CivicAddress.from_element(civic_el))
    return Location(id=loc_id, profile=profile)


def _locations(el: etree._Element, kids: Kids) -> list[Location]:
    out = []
    for loc in kids.get("location", ()):
        loc_id = loc.get("id")
        if loc_id is None or not loc_id.strip():
            raise _bad("<location> is missing its 'id' attribute")
        profile = loc.get("profile")
        out.append(_location_content(loc, loc_id.strip(), profile.strip() if profile else None))
    if not out:
        raise _bad(f"<{local_name(el)}> has no <location>")
    return out


def _boundaries(kids: Kids) -> list[Location]:
    out = []
    for b in kids.get("serviceBoundary", ()):
        profile = b.get("profile")
        out.append(_location_content(b, "", profile.strip() if profile else None))
    return out


def _mapping(el: etree._Element) -> Mapping:
    """``<mapping>`` (section 5)."""
    kids = _group(el)
    service = _service(el, kids)
    if service is None:
        raise _bad("<mapping> has no <service>")
    ref = None
    ref_el = _first(kids, "serviceBoundaryReference")
    if ref_el is not None:
        ref = ServiceBoundaryReference(_attr(ref_el, "source"), _attr(ref_el, "key"))
    number = _first(kids, "serviceNumber")
    return Mapping(
        service=service,
        source=_attr(el, "source"),
        source_id=_attr(el, "sourceId"),
        last_updated=parse_time(_attr(el, "lastUpdated"), "lastUpdated"),
        expires=_expiry(_attr(el, "expires")),
        display_names=[(text(d), d.get(_LANG, "")) for d in kids.get("displayName", ())],
        uris=[u for u in (text(x) for x in kids.get("uri", ())) if u],
        service_number=(text(number) or None) if number is not None else None,
        boundaries=_boundaries(kids),
        boundary_ref=ref,
    )


def _qnames(el: etree._Element | None) -> list[str]:
    # Civic element names are written as QNames (ca:A3); the prefix carries no information
    # the dataclass keeps.
    if el is None or not el.text:
        return []
    return [q.rsplit(":", 1)[-1] for q in el.text.split()]


def _validation(kids: Kids) -> LocationValidation | None:
    v = _first(kids, "locationValidation")
    if v is None:
        return None
    vk = _group(v)
    return LocationValidation(
        valid=_qnames(_first(vk, "valid")),
        invalid=_qnames(_first(vk, "invalid")),
        unchecked=_qnames(_first(vk, "unchecked")),
    )


_WARNING_KINDS = {k.value: k for k in WarningKind}
_ERROR_KINDS = {k.value: k for k in ErrorKind}


def _warnings(kids: Kids) -> tuple[list[LostWarning], str | None]:
    out: list[LostWarning] = []
    source = None
    for w in kids.get("warnings", ()):
        source = source or w.get("source")
        for name, items in _group(w).items():
            kind = _WARNING_KINDS.get(name)
            if kind is None:
                continue  # a warning we do not know is advisory: dropping it is safe
            out.extend(LostWarning(kind, item.get("message", "")) for item in items)
    return out, source


def _location_used(kids: Kids) -> str | None:
    used = _first(kids, "locationUsed")
    return None if used is None else _attr(used, "id")


def _service_list(el: etree._Element, kids: Kids) -> list[str]:
    sl = _first(kids, "serviceList")
    if sl is None:
        raise _bad(f"<{local_name(el)}> has no <serviceList>")
    return (sl.text or "").split()


# --- message readers --------------------------------------------------------------------


def _find_service(el: etree._Element) -> FindService:
    kids = _group(el)
    boundary = el.get("serviceBoundary")
    if boundary is not None:
        boundary = boundary.strip()
        if boundary not in ("value", "reference"):
            raise _bad(f"serviceBoundary='{boundary}' must be 'value' or 'reference'")
    return FindService(
        locations=_locations(el, kids),
        service=_service(el, kids),
        recursive=_bool(el, "recursive"),
        service_boundary=boundary,
        validate_location=_bool(el, "validateLocation"),
        path=_path(kids),
    )


def _list_services(el: etree._Element) -> ListServices:
    kids = _group(el)
    return ListServices(service=_service(el, kids), path=_path(kids))


def _list_by_location(el: etree._Element) -> ListServicesByLocation:
    kids = _group(el)
    return ListServicesByLocation(
        locations=_locations(el, kids),
        service=_service(el, kids),
        recursive=_bool(el, "recursive"),
        path=_path(kids),
    )


def _get_boundary(el: etree._Element) -> GetServiceBoundary:
    return GetServiceBoundary(key=_attr(el, "key"), path=_path(_group(el)))


def _find_service_response(el: etree._Element) -> FindServiceResponse:
    kids = _group(el)
    mappings = [_mapping(m) for m in kids.get("mapping", ())]
    if not mappings:
        raise _bad("<findServiceResponse> has no <mapping>")
    warnings, source = _warnings(kids)
    return FindServiceResponse(
        mappings=mappings,
        path=_path(kids),
        location_used=_location_used(kids),
        validation=_validation(kids),
        warnings=warnings,
        warnings_source=source,
    )


def _list_services_response(el: etree._Element) -> ListServicesResponse:
    kids = _group(el)
    return ListServicesResponse(services=_service_list(el, kids), path=_path(kids))


def _list_by_location_response(el: etree._Element) -> ListServicesByLocationResponse:
    kids = _group(el)
    return ListServicesByLocationResponse(
        services=_service_list(el, kids), path=_path(kids), location_used=_location_used(kids)
    )


def _get_boundary_response(el: etree._Element) -> GetServiceBoundaryResponse:
    kids = _group(el)
    return GetServiceBoundaryResponse(boundaries=_boundaries(kids), path=_path(kids))


def _errors(el: etree._Element) -> ErrorsResponse:
    errors = []
    for child in el:
        tag = child.tag
        if not (isinstance(tag, str) and tag.startswith(_LOST_PREFIX)):
            continue
        name = tag[_LOST_PREFIX_LEN:]
        kind = _ERROR_KINDS.get(name)
        message = child.get("message", "")
        if kind is None:  # an error type from a later extension: still an error
            kind, message = ErrorKind.SERVER_ERROR, f"{name}: {message}".rstrip(": ")
        errors.append(LostError(kind, message))
    if not errors:
        raise _bad("<errors> holds no error element")
    return ErrorsResponse(source=_attr(el, "source"), errors=errors)


def _redirect(el: etree._Element) -> Redirect:
    return Redirect(
        target=_attr(el, "target"), source=_attr(el, "source"), message=el.get("message", "")
    )


_READERS: dict[str, Callable[[etree._Element], Message]] = {
    "findService": _find_service,
    "listServices": _list_services,
    "listServicesByLocation": _list_by_location,
    "getServiceBoundary": _get_boundary,
    "findServiceResponse": _find_service_response,
    "listServicesResponse": _list_services_response,
    "listServicesByLocationResponse": _list_by_location_response,
    "getServiceBoundaryResponse": _get_boundary_response,
    "errors": _errors,
    "redirect": _redirect,
}


def parse(data: bytes | str) -> Message:
    """Read one LoST message; raise ``LostParseError`` naming what is wrong."""
    try:
        root = parse_xml(data)
    except XmlError as exc:
        raise _bad(str(exc)) from None
    except UnicodeEncodeError as exc:  # a str holding a lone surrogate cannot become UTF-8
        raise _bad(
            f"body is not valid Unicode text: {exc.reason} (character {exc.start})"
        ) from None
    tag = root.tag
    reader = _READERS.get(tag[_LOST_PREFIX_LEN:]) if tag.startswith(_LOST_PREFIX) else None
    if reader is None:
        name, ns = local_name(root), namespace(root)
        if ns != NS_LOST:
            raise _bad(
                f"root element <{name}> is not in the LoST namespace {NS_LOST}"
                + (f" (it is in {ns})" if ns else " (it has no namespace)")
            )
        raise _bad(f"<{name}> is not a LoST request or response")
    return reader(root)


# --- writing ----------------------------------------------------------------------------
#
# Written as text rather than through lxml: a findServiceResponse is on the hot path of every
# call an ECRF answers, and string building is several times faster. Every value passes
# through ``_esc``/``_attr_esc``, which refuse characters XML 1.0 cannot carry (as lxml would).


def format_time(value: datetime) -> str:
    """RFC 3339, ``Z`` for UTC."""
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value.isoformat()} has no time zone")
    offset = value.utcoffset()
    if offset is not None and offset % timedelta(minutes=1):
        value = value.astimezone(UTC)  # RFC 3339 offsets are whole minutes
    out = value.isoformat()
    return out[:-6] + "Z" if out.endswith("+00:00") else out


def _fmt(value: float) -> str:
    # As firebox.location.gml writes numbers: shortest round-tripping form, integers bare.
    v = float(value)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def _format_expiry(value: Expiry) -> str:
    if isinstance(value, datetime):
        return format_time(value)
    if value in (NO_CACHE, NO_EXPIRATION):
        return value
    raise ValueError(f"expires must be a datetime, {NO_CACHE} or {NO_EXPIRATION}, not {value!r}")


_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TEXT_ESC = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR_ESC = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)
_PLAIN = re.compile(r"[^&<>\"\t\n\r\x00-\x1f\ud800-\udfff\ufffe\uffff]*")


def _esc(value: str) -> str:
    if _PLAIN.fullmatch(value):  # the common case: nothing to escape or refuse
        return value
    if _INVALID_XML.search(value):
        raise ValueError(f"{value[:40]!r} holds a character XML cannot carry")
    return value.translate(_TEXT_ESC)


def _aesc(value: str) -> str:
    if _PLAIN.fullmatch(value):
        return value
    if _INVALID_XML.search(value):
        raise ValueError(f"{value[:40]!r} holds a character XML cannot carry")
    return value.translate(_ATTR_ESC)


#: Serialized polygons by identity: a server sends the same boundary objects again and
#: again, and writing a thousand-vertex ring is the costliest part of a by-value answer.
#: The cache holds the shape itself, so an id is never reused while its entry lives.
_SHAPE_CACHE: dict[int, tuple[object, str]] = {}
_SHAPE_CACHE_MAX = 4096
_CACHE_MIN_VERTICES = 32


def _shape_xml(shape: Shape) -> str:
    if isinstance(shape, Point):  # the common case, written directly
        return (
            f'<gml:Point xmlns:gml="{NS_GML}" srsName="{SRS_2D}"><gml:pos>'
            f"{_fmt(shape.lat)} {_fmt(shape.lon)}</gml:pos></gml:Point>"
        )
    big = isinstance(shape, Polygon) and len(shape.exterior) >= _CACHE_MIN_VERTICES
    if big:
        hit = _SHAPE_CACHE.get(id(shape))
        if hit is not None and hit[0] is shape:
            return hit[1]
    out = etree.tostring(shape_element(shape), encoding="unicode")
    if big:
        if len(_SHAPE_CACHE) >= _SHAPE_CACHE_MAX:
            _SHAPE_CACHE.clear()
        _SHAPE_CACHE[id(shape)] = (shape, out)
    return out


def _content_xml(loc: Location) -> str:
    if loc.shape is not None:
        return _shape_xml(loc.shape)
    if loc.civic is not None:
        return etree.tostring(loc.civic.to_element(), encoding="unicode")
    return ""


def _path_xml(path: list[str]) -> str:
    if not path:
        return ""
    return "<path>" + "".join(f'<via source="{_aesc(s)}"/>' for s in path) + "</path>"


def _locations_xml(locations: list[Location]) -> str:
    if not locations:
        raise ValueError("a LoST request needs at least one location")
    return "".join(
        f'<location id="{_aesc(loc.id)}" profile="{_aesc(loc.profile)}">{_content_xml(loc)}</location>'
        for loc in locations
    )


def _boundaries_xml(boundaries: list[Location]) -> str:
    return "".join(
        f'<serviceBoundary profile="{_aesc(b.profile)}">{_content_xml(b)}</serviceBoundary>'
        for b in boundaries
    )


def _mapping_xml(m: Mapping) -> str:
    parts = [
        f'<mapping expires="{_format_expiry(m.expires)}" lastUpdated="{format_time(m.last_updated)}"'
        f' source="{_aesc(m.source)}" sourceId="{_aesc(m.source_id)}">'
    ]
    for txt, lang in m.display_names:
        lang_attr = f' xml:lang="{_aesc(lang)}"' if lang else ""
        parts.append(f"<displayName{lang_attr}>{_esc(txt)}</displayName>")
    parts.append(f"<service>{_esc(m.service)}</service>")
    if m.boundaries and m.boundary_ref is not None:
        raise ValueError("a mapping has serviceBoundary or serviceBoundaryReference, not both")
    if m.boundaries:
        parts.append(_boundaries_xml(m.boundaries))
    elif m.boundary_ref is not None:
        ref = m.boundary_ref
        parts.append(
            f'<serviceBoundaryReference source="{_aesc(ref.source)}" key="{_aesc(ref.key)}"/>'
        )
    for uri in m.uris:
        parts.append(f"<uri>{_esc(uri)}</uri>")
    if m.service_number is not None:
        parts.append(f"<serviceNumber>{_esc(m.service_number)}</serviceNumber>")
    parts.append("</mapping>")
    return "".join(parts)


def _message_attr(message: str) -> str:
    return f' message="{_aesc(message)}" xml:lang="en"' if message else ""


def _warnings_xml(warnings: list[LostWarning], source: str) -> str:
    if not warnings:
        return ""
    items = "".join(f"<{w.kind.value}{_message_attr(w.message)}/>" for w in warnings)
    return f'<warnings source="{_aesc(source)}">{items}</warnings>'


def _validation_xml(v: LocationValidation) -> str:
    parts = [f'<locationValidation xmlns:ca="{NS_CIVIC}">']
    for name in ("valid", "invalid", "unchecked"):
        names = getattr(v, name)
        if names:
            parts.append(f"<{name}>{' '.join('ca:' + _esc(n) for n in names)}</{name}>")
    parts.append("</locationValidation>")
    return "".join(parts)


def _service_xml(service: str | None) -> str:
    return "" if service is None else f"<service>{_esc(service)}</service>"


def _used_xml(location_used: str | None) -> str:
    return "" if location_used is None else f'<locationUsed id="{_aesc(location_used)}"/>'


def _root(name: str, body: str, attrs: str = "") -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{name} xmlns="{NS_LOST}"{attrs}>{body}</{name}>'


def _build(msg: Message) -> str:
    if isinstance(msg, FindServiceResponse):
        if not msg.mappings:
            raise ValueError("a findServiceResponse needs at least one mapping")
        body = "".join(_mapping_xml(m) for m in msg.mappings)
        if msg.validation is not None:
            body += _validation_xml(msg.validation)
        source = msg.warnings_source or (msg.path[0] if msg.path else "")
        body += _warnings_xml(msg.warnings, source) + _path_xml(msg.path) + _used_xml(msg.location_used)
        return _root("findServiceResponse", body)
    if isinstance(msg, FindService):
        attrs = ""
        if msg.recursive:
            attrs += ' recursive="true"'
        if msg.service_boundary is not None:
            if msg.service_boundary not in ("value", "reference"):
                raise ValueError(
                    f"serviceBoundary must be 'value' or 'reference', not {msg.service_boundary!r}"
                )
            attrs += f' serviceBoundary="{msg.service_boundary}"'
        if msg.validate_location:
            attrs += ' validateLocation="true"'
        body = _locations_xml(msg.locations) + _service_xml(msg.service) + _path_xml(msg.path)
        return _root("findService", body, attrs)
    if isinstance(msg, ListServices):
        return _root("listServices", _service_xml(msg.service) + _path_xml(msg.path))
    if isinstance(msg, ListServicesByLocation):
        body = _locations_xml(msg.locations) + _service_xml(msg.service) + _path_xml(msg.path)
        return _root("listServicesByLocation", body, ' recursive="true"' if msg.recursive else "")
    if isinstance(msg, GetServiceBoundary):
        return _root("getServiceBoundary", _path_xml(msg.path), f' key="{_aesc(msg.key)}"')
    if isinstance(msg, ListServicesResponse):
        services = " ".join(_esc(s) for s in msg.services)
        return _root(
            "listServicesResponse", f"<serviceList>{services}</serviceList>" + _path_xml(msg.path)
        )
    if isinstance(msg, ListServicesByLocationResponse):
        services = " ".join(_esc(s) for s in msg.services)
        body = f"<serviceList>{services}</serviceList>" + _path_xml(msg.path) + _used_xml(msg.location_used)
        return _root("listServicesByLocationResponse", body)
    if isinstance(msg, GetServiceBoundaryResponse):
        return _root(
            "getServiceBoundaryResponse", _boundaries_xml(msg.boundaries) + _path_xml(msg.path)
        )
    if isinstance(msg, ErrorsResponse):
        if not msg.errors:
            raise ValueError("an errors response needs at least one error")
        body = "".join(f"<{e.kind.value}{_message_attr(e.message)}/>" for e in msg.errors)
        return _root("errors", body, f' source="{_aesc(msg.source)}"')
    if isinstance(msg, Redirect):
        attrs = f' target="{_aesc(msg.target)}" source="{_aesc(msg.source)}"' + _message_attr(msg.message)
        return _root("redirect", "", attrs)
    raise TypeError(f"not a LoST message: {type(msg).__name__}")


def serialize(msg: Message) -> bytes:
    """The XML of ``msg`` (UTF-8, with a declaration). Raises ``ValueError`` for a message
    the schema cannot express (no location, no mapping, a naive timestamp...)."""
    return _build(msg).encode("utf-8")
