"""GML encoding of the geodetic shapes (RFC 5491 section 5; OGC 06-142 PIDF-LO geoshape).

``parse_shape`` reads any of Point, Polygon, Circle, Ellipse, ArcBand; it accepts each in
both the GML namespace and the PIDF-LO geoshape namespace (clients in the field put
``gml:Circle`` as often as ``gs:Circle``), tolerates ``<pos>`` written with commas, accepts
``posList`` as well as ``pos`` rings, and converts radian angles and kilometre lengths.
``shape_element`` writes the canonical form: Point and Polygon in GML, the rest in ``gs``.
Errors are ``GmlError`` with a message fit to put in a LoST or HELD error.
"""

from __future__ import annotations

import math

from lxml import etree

from firebox.location.shapes import (
    ArcBand,
    Circle,
    Ellipse,
    Point,
    Polygon,
    Shape,
    ShapeError,
)
from firebox.xmlsafe import local_name, namespace, text

NS_GML = "http://www.opengis.net/gml"
NS_GS = "http://www.opengis.net/pidflo/1.0"
SHAPE_NAMESPACES = frozenset({NS_GML, NS_GS})
SHAPE_NAMES = frozenset({"Point", "Polygon", "Circle", "Ellipse", "ArcBand"})

SRS_2D = "urn:ogc:def:crs:EPSG::4326"
_SRS_ACCEPTED = frozenset(
    {
        SRS_2D,
        "urn:ogc:def:crs:EPSG:6.6:4326",
        "urn:ogc:def:crs:EPSG:4326",
        "EPSG:4326",
        "http://www.opengis.net/def/crs/EPSG/0/4326",
        "http://www.opengis.net/gml/srs/epsg.xml#4326",
    }
)
UOM_METRE = "urn:ogc:def:uom:EPSG::9001"
UOM_DEGREE = "urn:ogc:def:uom:EPSG::9102"
_UOM_LENGTH = {UOM_METRE: 1.0, "urn:ogc:def:uom:EPSG::9036": 1000.0, "m": 1.0, "km": 1000.0}
_UOM_ANGLE = {UOM_DEGREE: 1.0, "urn:ogc:def:uom:EPSG::9101": 180.0 / math.pi, "deg": 1.0}


class GmlError(ValueError):
    """A shape that cannot be read; ``str()`` names the element and the problem."""


def is_shape_element(el: etree._Element) -> bool:
    return local_name(el) in SHAPE_NAMES and namespace(el) in SHAPE_NAMESPACES


def _numbers(raw: str, where: str) -> list[float]:
    parts = raw.replace(",", " ").split()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise GmlError(f"{where}: '{raw[:80]}' is not a list of numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise GmlError(f"{where}: coordinates must be finite numbers")
    return values


def _child(el: etree._Element, name: str) -> etree._Element | None:
    for child in el:
        if local_name(child) == name:
            return child
    return None


def _required(el: etree._Element, name: str) -> etree._Element:
    child = _child(el, name)
    if child is None:
        raise GmlError(f"{local_name(el)}: missing <{name}>")
    return child


def _check_srs(el: etree._Element, inherited: str | None) -> None:
    srs = el.get("srsName") or inherited
    if srs is None:
        raise GmlError(f"{local_name(el)}: missing srsName (expected {SRS_2D})")
    if srs not in _SRS_ACCEPTED:
        raise GmlError(f"{local_name(el)}: unsupported srsName '{srs}' (expected {SRS_2D})")


def _point_from_pos(pos: etree._Element) -> Point:
    values = _numbers(text(pos), "pos")
    if len(values) not in (2, 3):
        raise GmlError(f"pos: expected 'latitude longitude', got {len(values)} numbers")
    try:
        return Point(lat=values[0], lon=values[1])
    except ShapeError as exc:
        raise GmlError(f"pos: {exc}") from None


def _measure(el: etree._Element, name: str, table: dict[str, float], default_uom: str) -> float:
    child = _required(el, name)
    values = _numbers(text(child), name)
    if len(values) != 1:
        raise GmlError(f"{name}: expected one number")
    uom = child.get("uom") or default_uom
    if uom not in table:
        raise GmlError(f"{name}: unsupported uom '{uom}'")
    return values[0] * table[uom]


def _center(el: etree._Element) -> Point:
    holder = _child(el, "center")
    pos = _child(holder, "pos") if holder is not None else _child(el, "pos")
    if pos is None:
        raise GmlError(f"{local_name(el)}: missing <pos> of the centre")
    return _point_from_pos(pos)


def _ring(polygon: etree._Element) -> list[Point]:
    exterior = _child(polygon, "exterior")
    if exterior is None:
        exterior = _child(polygon, "outerBoundaryIs")
    if exterior is None:
        raise GmlError("Polygon: missing <exterior>")
    ring = _child(exterior, "LinearRing")
    if ring is None:
        raise GmlError("Polygon: <exterior> has no <LinearRing>")
    pos_list = _child(ring, "posList")
    if pos_list is not None:
        values = _numbers(text(pos_list), "posList")
        dim = int(pos_list.get("srsDimension") or 2)
        if dim not in (2, 3) or len(values) % dim:
            raise GmlError(f"posList: {len(values)} numbers do not make {dim}-D positions")
        try:
            return [Point(lat=values[i], lon=values[i + 1]) for i in range(0, len(values), dim)]
        except ShapeError as exc:
            raise GmlError(f"posList: {exc}") from None
    return [_point_from_pos(p) for p in ring if local_name(p) == "pos"]


def parse_shape(el: etree._Element, *, srs_name: str | None = None) -> Shape:
    """Read one shape element. ``srs_name`` is an srsName inherited from an enclosing element."""
    name = local_name(el)
    if not is_shape_element(el):
        raise GmlError(f"<{name}> is not a geodetic shape (expected one of {sorted(SHAPE_NAMES)})")
    _check_srs(el, srs_name)
    try:
        if name == "Point":
            return _point_from_pos(_required(el, "pos"))
        if name == "Polygon":
            return Polygon(exterior=tuple(_ring(el)))
        if name == "Circle":
            return Circle(center=_center(el), radius=_measure(el, "radius", _UOM_LENGTH, UOM_METRE))
        if name == "Ellipse":
            return Ellipse(
                center=_center(el),
                semi_major=_measure(el, "semiMajorAxis", _UOM_LENGTH, UOM_METRE),
                semi_minor=_measure(el, "semiMinorAxis", _UOM_LENGTH, UOM_METRE),
                orientation=_measure(el, "orientation", _UOM_ANGLE, UOM_DEGREE),
            )
        return ArcBand(
            center=_center(el),
            inner_radius=_measure(el, "innerRadius", _UOM_LENGTH, UOM_METRE),
            outer_radius=_measure(el, "outerRadius", _UOM_LENGTH, UOM_METRE),
            start_angle=_measure(el, "startAngle", _UOM_ANGLE, UOM_DEGREE),
            opening_angle=_measure(el, "openingAngle", _UOM_ANGLE, UOM_DEGREE),
        )
    except ShapeError as exc:
        raise GmlError(f"{name}: {exc}") from None


def _fmt(value: float) -> str:
    # Shortest round-tripping form; whole numbers without a trailing ".0".
    v = float(value)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def _pos(parent: etree._Element, p: Point) -> None:
    etree.SubElement(parent, f"{{{NS_GML}}}pos").text = f"{_fmt(p.lat)} {_fmt(p.lon)}"


def _measure_el(parent: etree._Element, name: str, value: float, uom: str) -> None:
    el = etree.SubElement(parent, f"{{{NS_GS}}}{name}", uom=uom)
    el.text = _fmt(value)


def shape_element(shape: Shape, parent: etree._Element | None = None) -> etree._Element:
    """The canonical XML element for ``shape`` (a SubElement of ``parent`` when given)."""
    if isinstance(shape, (Point, Polygon)):
        ns, prefix = NS_GML, "gml"
    else:
        ns, prefix = NS_GS, "gs"
    tag = f"{{{ns}}}{type(shape).__name__}"
    nsmap = {prefix: ns, "gml": NS_GML}
    el = (
        etree.Element(tag, nsmap=nsmap)
        if parent is None
        else etree.SubElement(parent, tag, nsmap=nsmap)
    )
    el.set("srsName", SRS_2D)
    if isinstance(shape, Point):
        _pos(el, shape)
    elif isinstance(shape, Polygon):
        ring = etree.SubElement(etree.SubElement(el, f"{{{NS_GML}}}exterior"), f"{{{NS_GML}}}LinearRing")
        for p in shape.exterior:
            _pos(ring, p)
    else:
        _pos(el, shape.center)
        if isinstance(shape, Circle):
            _measure_el(el, "radius", shape.radius, UOM_METRE)
        elif isinstance(shape, Ellipse):
            _measure_el(el, "semiMajorAxis", shape.semi_major, UOM_METRE)
            _measure_el(el, "semiMinorAxis", shape.semi_minor, UOM_METRE)
            _measure_el(el, "orientation", shape.orientation, UOM_DEGREE)
        else:
            _measure_el(el, "innerRadius", shape.inner_radius, UOM_METRE)
            _measure_el(el, "outerRadius", shape.outer_radius, UOM_METRE)
            _measure_el(el, "startAngle", shape.start_angle, UOM_DEGREE)
            _measure_el(el, "openingAngle", shape.opening_angle, UOM_DEGREE)
    return el


def find_shape(container: etree._Element) -> etree._Element | None:
    """The first shape element among ``container``'s children, if any."""
    for child in container:
        if is_shape_element(child):
            return child
    return None
