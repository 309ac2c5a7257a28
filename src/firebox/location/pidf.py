"""PIDF-LO codec: Presence Information Data Format Location Objects (RFC 4119), with the
civic format of RFC 5139 and the geodetic shapes and usage rules of RFC 5491.

A PIDF document (RFC 3863) is a ``<presence entity=...>`` holding ``<tuple>`` elements and,
with the data model of RFC 4479, ``<dm:device>`` and ``<dm:person>`` elements. Location sits
in a ``<gp:geopriv>`` element (RFC 4119 section 2.2): inside ``<status>`` of a tuple, or
directly inside a device or person (RFC 4479, RFC 5491 section 3). Each ``<gp:geopriv>`` carries

* ``<gp:location-info>``: one location (RFC 5491 section 3): a geodetic shape (section 5,
  in the GML or the PIDF-LO geoShape namespace, possibly wrapped in the RFC 4119
  ``<gml:location>`` element) and/or a civic address (RFC 5139) of the same place (the
  compound location of RFC 5491 section 3);
* ``<gp:usage-rules>``: ``retransmission-allowed`` and ``retention-expiry`` (RFC 4119
  section 2.2.2), read in the RFC 4119 ``gp`` namespace or the basic-policy namespace that
  RFC 5491 examples use, written in the latter;
* ``<gp:method>`` (RFC 4119 section 2.2.3), the way the location was determined.

One ``PidfLocation`` is made for each ``<gp:geopriv>`` (RFC 5491 section 3: a geopriv
describes one location), in document order, which is also the order of preference
(RFC 5491 section 3).

Every problem in a document is a ``PidfError`` (a ``ValueError``) whose message names the
element and what is wrong with it, fit to be put in a HELD or LoST error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from lxml import etree

from firebox.location.civic import NS_CIVIC, CivicAddress
from firebox.location.gml import (
    NS_GML,
    NS_GS,
    GmlError,
    is_shape_element,
    parse_shape,
    shape_element,
)
from firebox.location.shapes import Shape, ShapeError
from firebox.xmlsafe import XmlError, local_name, namespace, parse_xml, text, to_bytes

#: PIDF (RFC 3863 section 4.1).
NS_PIDF = "urn:ietf:params:xml:ns:pidf"
#: GEOPRIV location object (RFC 4119 section 2.2).
NS_GP = "urn:ietf:params:xml:ns:pidf:geopriv10"
#: Basic policy of the usage rules (the namespace of the RFC 5491 examples).
NS_GBP = "urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy"
#: PIDF data model: device and person elements (RFC 4479).
NS_DM = "urn:ietf:params:xml:ns:pidf:data-model"
#: Media type of a PIDF document (registered by RFC 3863).
MEDIA_TYPE = "application/pidf+xml"

_PRESENCE = f"{{{NS_PIDF}}}presence"


class PidfError(ValueError):
    """A PIDF-LO document that cannot be read; ``str()`` names the element and the problem."""


class ElementKind(StrEnum):
    """The PIDF element holding a location (RFC 3863 tuple; RFC 4479 device, person)."""

    TUPLE = "tuple"
    DEVICE = "device"
    PERSON = "person"


@dataclass(slots=True)
class PidfLocation:
    """The content of one ``<gp:geopriv>``.

    ``shapes`` are the geodetic shapes of its ``location-info`` (RFC 5491 section 5); a
    conforming document has at most one (section 3), more are kept in document order when a
    sender puts them there. ``civic`` is its civic address (RFC 5139), when present.
    ``timestamp`` is the ``<timestamp>`` of the enclosing element (RFC 3863 section 4.1),
    ``element_id`` its ``id`` (generated when writing if None), ``device_id`` the
    ``<dm:deviceID>`` of a device element (RFC 4479).
    """

    shapes: list[Shape] = field(default_factory=list)
    civic: CivicAddress | None = None
    method: str | None = None
    timestamp: datetime | None = None
    element_id: str | None = None
    element: ElementKind = ElementKind.TUPLE
    retransmission_allowed: bool = False
    retention_expiry: datetime | None = None
    ruleset_reference: str | None = None
    note_well: str | None = None
    device_id: str | None = None

    @property
    def shape(self) -> Shape | None:
        """The (first) geodetic shape, or None."""
        return self.shapes[0] if self.shapes else None


@dataclass(slots=True)
class Presence:
    """A PIDF ``<presence>`` document (RFC 3863 section 4.1.1) reduced to its locations."""

    entity: str
    locations: list[PidfLocation] = field(default_factory=list)


# --- timestamps --------------------------------------------------------------------------

_DATETIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$"
)


def parse_time(value: str, where: str) -> datetime:
    """An ``xs:dateTime`` (RFC 3339 profile). A value without a zone is taken as UTC: the
    PIDF schema allows it, and refusing a caller's location over it would help nobody."""
    m = _DATETIME.match(value.strip())
    if m is None:
        raise PidfError(f"{where}: '{value[:60]}' is not an RFC 3339 timestamp")
    date, clock, frac, zone = m.groups()
    frac = (frac or "")[:7]  # Python keeps microseconds; finer digits are dropped
    zone = "+00:00" if zone in (None, "Z", "z") else zone
    try:
        return datetime.fromisoformat(f"{date}T{clock}{frac}{zone}")
    except ValueError as exc:
        raise PidfError(f"{where}: '{value[:60]}' is not a valid timestamp: {exc}") from None


def format_time(value: datetime) -> str:
    """RFC 3339 with ``Z`` for UTC; a naive datetime is refused."""
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value.isoformat()} has no time zone")
    out = value.isoformat()
    return out[:-6] + "Z" if out.endswith("+00:00") else out


# --- reading -----------------------------------------------------------------------------

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _elements(el: etree._Element) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str)]


def _child(el: etree._Element, name: str, ns: str | frozenset[str] | None = None) -> etree._Element | None:
    for c in el:
        if not isinstance(c.tag, str) or local_name(c) != name:
            continue
        if ns is None or namespace(c) == ns or (isinstance(ns, frozenset) and namespace(c) in ns):
            return c
    return None


_USAGE_NS = frozenset({NS_GP, NS_GBP})


def _usage_rules(geopriv: etree._Element, where: str, loc: PidfLocation) -> None:
    """``<gp:usage-rules>`` (RFC 4119 section 2.2.2). Optional in practice: absent rules
    mean the defaults (no retransmission, no stated expiry)."""
    rules = _child(geopriv, "usage-rules", NS_GP)
    if rules is None:
        return
    for c in _elements(rules):
        if namespace(c) not in _USAGE_NS:
            continue
        name = local_name(c)
        value = text(c)
        if name == "retransmission-allowed":
            low = value.lower()
            if low in _TRUE:
                loc.retransmission_allowed = True
            elif low in _FALSE:
                loc.retransmission_allowed = False
            else:
                raise PidfError(
                    f"{where}: retransmission-allowed '{value[:40]}' is not a boolean (true/false)"
                )
        elif name == "retention-expiry":
            loc.retention_expiry = parse_time(value, f"{where}: retention-expiry")
        elif name in ("ruleset-reference", "external-ruleset"):
            loc.ruleset_reference = value or None
        elif name == "note-well":
            loc.note_well = value or None


def _location_info(info: etree._Element, where: str) -> tuple[list[Shape], CivicAddress | None]:
    """The shapes and civic address of a ``<gp:location-info>`` (RFC 5491 sections 3, 5).
    Elements of other kinds (confidence, relative location, extensions) are skipped, but
    a location-info holding no location at all is an error."""
    shapes: list[Shape] = []
    civic: CivicAddress | None = None
    civic_seen = False
    others: list[str] = []
    candidates = _elements(info)
    # RFC 4119 wrapped shapes in <gml:location>; RFC 5491 puts them directly in location-info.
    expanded: list[etree._Element] = []
    for c in candidates:
        if local_name(c) == "location" and namespace(c) == NS_GML:
            expanded.extend(_elements(c))
        else:
            expanded.append(c)
    for c in expanded:
        if is_shape_element(c):
            try:
                shapes.append(parse_shape(c))
            except (GmlError, ShapeError) as exc:
                raise PidfError(f"{where}: bad {local_name(c)}: {exc}") from None
            except ValueError as exc:  # e.g. a malformed srsDimension attribute
                raise PidfError(f"{where}: bad {local_name(c)}: {exc}") from None
        elif local_name(c) == "civicAddress" and namespace(c) == NS_CIVIC:
            if civic_seen:
                raise PidfError(
                    f"{where}: location-info holds more than one civicAddress "
                    "(RFC 5491 section 3: one location per geopriv)"
                )
            civic_seen = True
            address = CivicAddress.from_element(c)
            civic = address if address.present() else None
        else:
            ns = namespace(c)
            others.append(f"{local_name(c)}" + (f" in {ns}" if ns else " without a namespace"))
    if not shapes and civic is None:
        if civic_seen:
            raise PidfError(f"{where}: civicAddress holds no RFC 5139 element")
        found = f" (found <{others[0]}>)" if others else " (it is empty)"
        raise PidfError(
            f"{where}: location-info holds no geodetic shape (Point, Polygon, Circle, Ellipse, "
            f"ArcBand) and no civicAddress{found}"
        )
    return shapes, civic


def _geopriv(gp: etree._Element, where: str) -> PidfLocation:
    info = _child(gp, "location-info", NS_GP)
    if info is None:
        raise PidfError(f"{where}: <gp:geopriv> has no <gp:location-info>")
    shapes, civic = _location_info(info, where)
    loc = PidfLocation(shapes=shapes, civic=civic)
    _usage_rules(gp, where, loc)
    method = _child(gp, "method", NS_GP)
    if method is not None:
        loc.method = text(method) or None
    return loc


def _is_geopriv(el: etree._Element) -> bool:
    return isinstance(el.tag, str) and local_name(el) == "geopriv" and namespace(el) == NS_GP


def _holder(el: etree._Element, kind: ElementKind) -> list[PidfLocation]:
    """The locations of one tuple, device or person."""
    el_id = el.get("id")
    where = f"{kind.value} '{el_id}'" if el_id else f"<{kind.value}>"
    geoprivs: list[etree._Element] = []
    if kind is ElementKind.TUPLE:
        status = _child(el, "status", NS_PIDF)
        if status is not None:
            geoprivs.extend(c for c in status if _is_geopriv(c))
    geoprivs.extend(c for c in el if _is_geopriv(c))  # device, person (and lenient tuples)
    if not geoprivs:
        return []
    stamp_el = _child(el, "timestamp")
    stamp = parse_time(text(stamp_el), f"{where}: timestamp") if stamp_el is not None else None
    device_id = None
    if kind is ElementKind.DEVICE:
        dev = _child(el, "deviceID", NS_DM)
        device_id = (text(dev) or None) if dev is not None else None
    out = []
    for gp in geoprivs:
        loc = _geopriv(gp, where)
        loc.timestamp = stamp
        loc.element = kind
        loc.element_id = el_id
        loc.device_id = device_id
        out.append(loc)
    return out


_KINDS = {
    f"{{{NS_PIDF}}}tuple": ElementKind.TUPLE,
    f"{{{NS_DM}}}device": ElementKind.DEVICE,
    f"{{{NS_DM}}}person": ElementKind.PERSON,
}


def _presence(root: etree._Element) -> Presence:
    if root.tag != _PRESENCE:
        name, ns = local_name(root), namespace(root)
        if name == "presence":
            raise PidfError(
                f"root element <presence> is in {ns or 'no namespace'}, not the PIDF namespace {NS_PIDF}"
            )
        raise PidfError(f"root element <{name}> is not a PIDF <presence> ({NS_PIDF})")
    entity = (root.get("entity") or "").strip()
    locations: list[PidfLocation] = []
    for child in root:
        kind = _KINDS.get(child.tag) if isinstance(child.tag, str) else None
        if kind is not None:
            locations.extend(_holder(child, kind))
    if not locations:
        raise PidfError(
            "presence holds no location: no tuple, device or person has a <gp:geopriv> "
            "with <gp:location-info> (RFC 4119 section 2.2)"
        )
    return Presence(entity=entity, locations=locations)


def parse_pidf(data: bytes | str | etree._Element) -> Presence:
    """Read a PIDF-LO document (bytes, text, or an already parsed ``<presence>`` element, as
    embedded in a HELD response). Raises ``PidfError`` and only ``PidfError``."""
    if isinstance(data, (bytes, str)):
        try:
            root = parse_xml(data)
        except XmlError as exc:
            raise PidfError(f"not a PIDF-LO document: {exc}") from None
    else:
        root = data
    try:
        return _presence(root)
    except PidfError:
        raise
    except (ShapeError, GmlError, XmlError, ValueError, TypeError) as exc:  # pragma: no cover
        # Defensive: every known problem is reported above with its element.
        raise PidfError(f"unreadable PIDF-LO document: {exc}") from None


# --- writing -----------------------------------------------------------------------------

_NSMAP = {None: NS_PIDF, "gp": NS_GP, "gbp": NS_GBP, "dm": NS_DM, "ca": NS_CIVIC, "gml": NS_GML, "gs": NS_GS}
_NCNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")


def _geopriv_element(parent: etree._Element, loc: PidfLocation) -> None:
    if len(loc.shapes) > 1:
        raise ValueError(
            f"a geopriv carries one location (RFC 5491 section 3); got {len(loc.shapes)} shapes: "
            "write each in its own PidfLocation"
        )
    if not loc.shapes and loc.civic is None:
        raise ValueError("a PidfLocation needs a geodetic shape or a civic address")
    if loc.civic is not None and not loc.civic.present():
        raise ValueError("the civic address of a PidfLocation is empty")
    gp = etree.SubElement(parent, f"{{{NS_GP}}}geopriv")
    info = etree.SubElement(gp, f"{{{NS_GP}}}location-info")
    for shape in loc.shapes:
        shape_element(shape, info)
    if loc.civic is not None:
        loc.civic.to_element(info)
    rules = etree.SubElement(gp, f"{{{NS_GP}}}usage-rules")
    etree.SubElement(rules, f"{{{NS_GBP}}}retransmission-allowed").text = (
        "true" if loc.retransmission_allowed else "false"
    )
    if loc.retention_expiry is not None:
        etree.SubElement(rules, f"{{{NS_GBP}}}retention-expiry").text = format_time(loc.retention_expiry)
    if loc.ruleset_reference is not None:
        etree.SubElement(rules, f"{{{NS_GBP}}}external-ruleset").text = loc.ruleset_reference
    if loc.note_well is not None:
        etree.SubElement(rules, f"{{{NS_GBP}}}note-well").text = loc.note_well
    if loc.method is not None:
        etree.SubElement(gp, f"{{{NS_GP}}}method").text = loc.method


def presence_element(presence: Presence) -> etree._Element:
    """The ``<presence>`` element of ``presence`` (for embedding, as HELD does).

    Tuples are written first, then devices and persons, as the PIDF schema orders them
    (RFC 3863 section 4.1; RFC 4479). Raises ``ValueError`` for what RFC 4119 and
    RFC 5491 cannot express: no location, two shapes in one geopriv, a naive timestamp, an
    ``id`` that is not an XML NCName.
    """
    if not presence.locations:
        raise ValueError("a PIDF-LO needs at least one location")
    root = etree.Element(_PRESENCE, nsmap=_NSMAP)  # type: ignore[arg-type]
    root.set("entity", presence.entity)
    ordered = [loc for loc in presence.locations if loc.element is ElementKind.TUPLE] + [
        loc for loc in presence.locations if loc.element is not ElementKind.TUPLE
    ]
    for i, loc in enumerate(ordered, 1):
        el_id = loc.element_id or f"loc{i}"
        if not _NCNAME.match(el_id):
            raise ValueError(f"element id {el_id!r} is not an XML NCName (RFC 3863 tuple id)")
        if loc.element is ElementKind.TUPLE:
            el = etree.SubElement(root, f"{{{NS_PIDF}}}tuple", id=el_id)
            _geopriv_element(etree.SubElement(el, f"{{{NS_PIDF}}}status"), loc)
            stamp_tag = f"{{{NS_PIDF}}}timestamp"
        else:
            el = etree.SubElement(root, f"{{{NS_DM}}}{loc.element.value}", id=el_id)
            _geopriv_element(el, loc)
            if loc.element is ElementKind.DEVICE and loc.device_id is not None:
                etree.SubElement(el, f"{{{NS_DM}}}deviceID").text = loc.device_id
            stamp_tag = f"{{{NS_DM}}}timestamp"
        if loc.timestamp is not None:
            etree.SubElement(el, stamp_tag).text = format_time(loc.timestamp)
    return root


def serialize_pidf(presence: Presence) -> bytes:
    """The PIDF-LO document of ``presence`` (UTF-8 with an XML declaration)."""
    return to_bytes(presence_element(presence))


def best_location(presence: Presence) -> PidfLocation | None:
    """The location to route on: the first with a geodetic shape, else the first with a
    civic address (document order is the sender's preference, RFC 5491 section 3)."""
    for loc in presence.locations:
        if loc.shapes:
            return loc
    for loc in presence.locations:
        if loc.civic is not None:
            return loc
    return None

