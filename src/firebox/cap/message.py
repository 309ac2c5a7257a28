"""CAP 1.2 messages, sans-I/O: dataclasses for ``<alert>``, ``<info>``, ``<resource>`` and
``<area>`` (OASIS Common Alerting Protocol Version 1.2, section 3.2: the data dictionary),
``Alert.to_xml()`` and ``parse_cap(bytes)`` (namespace ``urn:oasis:names:tc:emergency:cap:1.2``,
section 3.4).

Values are kept as the text the XML carries (enumerated values, dates, polygons), so that a
message that breaks a rule still parses and ``firebox.cap.ipaws.validate`` can name every
wrong element; the enums below hold the allowed values. ``parse_cap`` itself only refuses
what is not a CAP 1.2 document: not XML, another root or namespace, an element the schema
does not have, or elements out of the schema's order (section 3.4: every group is an
``xs:sequence``).

Dates and times (section 3.3.3) are written ``YYYY-MM-DDThh:mm:ss-00:00``: whole seconds,
a numeric offset, UTC as ``-00:00`` ("Z" MUST NOT be used).

``<references>`` (section 3.2.1) lists earlier messages as ``sender,identifier,sent``
separated by whitespace: ``Reference`` and ``format_references`` / ``parse_references``.

An enveloped XML signature (section 3.3.4.1; ``firebox.cap.dsig``) is the last child of
``<alert>``; ``parse_cap`` keeps it verbatim in ``Alert.signature``, but ``to_xml`` never
writes it back: a signature covers the exact bytes signed, so a signed message is stored and
published as the bytes ``dsig.sign`` returned, never re-serialized.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from lxml import etree

from firebox.restapi import Problem
from firebox.xmlsafe import XmlError, parse_xml

__all__ = [
    "CAP_NS",
    "DSIG_NS",
    "Alert",
    "Area",
    "CapError",
    "Category",
    "Certainty",
    "Info",
    "MsgType",
    "Reference",
    "Resource",
    "ResponseType",
    "Scope",
    "Severity",
    "Status",
    "Urgency",
    "ValuePair",
    "format_datetime",
    "format_references",
    "parse_cap",
    "parse_datetime",
    "parse_references",
]

CAP_NS: Final = "urn:oasis:names:tc:emergency:cap:1.2"
DSIG_NS: Final = "http://www.w3.org/2000/09/xmldsig#"
_C = f"{{{CAP_NS}}}"


# --- enumerations (section 3.2) --------------------------------------------------------------


class Status(StrEnum):
    ACTUAL = "Actual"
    EXERCISE = "Exercise"
    SYSTEM = "System"
    TEST = "Test"
    DRAFT = "Draft"


class MsgType(StrEnum):
    ALERT = "Alert"
    UPDATE = "Update"
    CANCEL = "Cancel"
    ACK = "Ack"
    ERROR = "Error"


class Scope(StrEnum):
    PUBLIC = "Public"
    RESTRICTED = "Restricted"
    PRIVATE = "Private"


class Category(StrEnum):
    GEO = "Geo"
    MET = "Met"
    SAFETY = "Safety"
    SECURITY = "Security"
    RESCUE = "Rescue"
    FIRE = "Fire"
    HEALTH = "Health"
    ENV = "Env"
    TRANSPORT = "Transport"
    INFRA = "Infra"
    CBRNE = "CBRNE"
    OTHER = "Other"


class ResponseType(StrEnum):
    SHELTER = "Shelter"
    EVACUATE = "Evacuate"
    PREPARE = "Prepare"
    EXECUTE = "Execute"
    AVOID = "Avoid"
    MONITOR = "Monitor"
    ASSESS = "Assess"
    ALL_CLEAR = "AllClear"
    NONE = "None"


class Urgency(StrEnum):
    IMMEDIATE = "Immediate"
    EXPECTED = "Expected"
    FUTURE = "Future"
    PAST = "Past"
    UNKNOWN = "Unknown"


class Severity(StrEnum):
    EXTREME = "Extreme"
    SEVERE = "Severe"
    MODERATE = "Moderate"
    MINOR = "Minor"
    UNKNOWN = "Unknown"


class Certainty(StrEnum):
    OBSERVED = "Observed"
    LIKELY = "Likely"
    POSSIBLE = "Possible"
    UNLIKELY = "Unlikely"
    UNKNOWN = "Unknown"


# --- dates (section 3.3.3) -------------------------------------------------------------------

#: The CAP 1.2 schema's dateTime pattern: whole seconds and a numeric offset, no "Z".
DATETIME_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[-+]\d{2}:\d{2}")


def format_datetime(value: datetime | float) -> str:
    """A CAP date-time (section 3.3.3): whole seconds, numeric offset, UTC as ``-00:00``.
    ``value`` a timezone-aware datetime or POSIX seconds."""
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    if value.tzinfo is None:
        raise ValueError("a CAP date-time needs a timezone (section 3.3.3)")
    value = value.replace(microsecond=0)
    offset = value.utcoffset() or timedelta(0)
    if offset == timedelta(0):
        return value.strftime("%Y-%m-%dT%H:%M:%S") + "-00:00"
    return value.isoformat(timespec="seconds")


def parse_datetime(text: str) -> datetime:
    """A CAP date-time to an aware datetime; ``ValueError`` naming the expected form."""
    if not DATETIME_RE.fullmatch(text):
        raise ValueError(f"must be a date-time like 2026-03-10T14:05:00-00:00 (whole seconds, numeric offset, "
                         f"no 'Z'; CAP 1.2 section 3.3.3), not {text[:40]!r}")  # fmt: skip
    return datetime.fromisoformat(text)


# --- references (section 3.2.1) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    """One earlier message: its ``sender``, ``identifier`` and ``sent`` (the exact text)."""

    sender: str
    identifier: str
    sent: str

    def __str__(self) -> str:
        return f"{self.sender},{self.identifier},{self.sent}"


def format_references(refs: Iterable[Reference]) -> str:
    return " ".join(str(r) for r in refs)


def parse_references(text: str) -> tuple[Reference, ...]:
    """``sender,identifier,sent`` groups separated by whitespace; ``ValueError`` naming the
    first group that is not three comma-separated parts."""
    out = []
    for group in text.split():
        parts = group.split(",")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{group[:80]!r} is not sender,identifier,sent")
        out.append(Reference(*parts))
    return tuple(out)


# --- the data dictionary (section 3.2) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValuePair:
    """``<valueName>`` / ``<value>`` of ``eventCode``, ``parameter`` and ``geocode``."""

    value_name: str
    value: str


@dataclass(frozen=True, slots=True)
class Resource:
    """``<resource>`` (section 3.2.3); ``mime_type`` is required in CAP 1.2."""

    resource_desc: str
    mime_type: str
    size: str | None = None
    uri: str | None = None
    deref_uri: str | None = None
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class Area:
    """``<area>`` (section 3.2.4). ``polygons``: each the text of a ``<polygon>``
    ("lat,lon lat,lon ..." closed); ``circles``: "lat,lon radius-km"."""

    area_desc: str
    polygons: tuple[str, ...] = ()
    circles: tuple[str, ...] = ()
    geocodes: tuple[ValuePair, ...] = ()
    altitude: str | None = None
    ceiling: str | None = None


@dataclass(frozen=True, slots=True)
class Info:
    """``<info>`` (section 3.2.2), in the schema's order."""

    categories: tuple[str, ...]
    event: str
    urgency: str
    severity: str
    certainty: str
    language: str | None = "en-US"
    response_types: tuple[str, ...] = ()
    audience: str | None = None
    event_codes: tuple[ValuePair, ...] = ()
    effective: str | None = None
    onset: str | None = None
    expires: str | None = None
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    web: str | None = None
    contact: str | None = None
    parameters: tuple[ValuePair, ...] = ()
    resources: tuple[Resource, ...] = ()
    areas: tuple[Area, ...] = ()

    def parameter(self, name: str) -> str | None:
        """The value of the first ``<parameter>`` named ``name``."""
        return next((p.value for p in self.parameters if p.value_name == name), None)


@dataclass(frozen=True, slots=True)
class Alert:
    """``<alert>`` (section 3.2.1). ``signature``: the enveloped ``ds:Signature`` of a parsed
    message, verbatim (``to_xml`` leaves it out; ``firebox.cap.dsig`` signs ``to_xml()``)."""

    identifier: str
    sender: str
    sent: str
    status: str
    msg_type: str
    scope: str
    source: str | None = None
    restriction: str | None = None
    addresses: str | None = None
    codes: tuple[str, ...] = ()
    note: str | None = None
    references: tuple[Reference, ...] = ()
    incidents: str | None = None
    infos: tuple[Info, ...] = ()
    signature: bytes | None = field(default=None, compare=False)

    @property
    def reference(self) -> Reference:
        """This message as a later one references it."""
        return Reference(self.sender, self.identifier, self.sent)

    def to_element(self) -> etree._Element:
        root = etree.Element(_C + "alert", nsmap={None: CAP_NS})
        _text(root, "identifier", self.identifier)
        _text(root, "sender", self.sender)
        _text(root, "sent", self.sent)
        _text(root, "status", self.status)
        _text(root, "msgType", self.msg_type)
        _text(root, "source", self.source)
        _text(root, "scope", self.scope)
        _text(root, "restriction", self.restriction)
        _text(root, "addresses", self.addresses)
        for code in self.codes:
            _text(root, "code", code)
        _text(root, "note", self.note)
        if self.references:
            _text(root, "references", format_references(self.references))
        _text(root, "incidents", self.incidents)
        for info in self.infos:
            _info_element(root, info)
        return root

    def to_xml(self) -> bytes:
        """The message as UTF-8 XML with a declaration (section 3.3.1: UTF-8)."""
        return etree.tostring(self.to_element(), xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _text(parent: etree._Element, name: str, value: str | None) -> None:
    if value is not None:
        etree.SubElement(parent, _C + name).text = value


def _pairs(parent: etree._Element, name: str, pairs: Sequence[ValuePair]) -> None:
    for pair in pairs:
        el = etree.SubElement(parent, _C + name)
        _text(el, "valueName", pair.value_name)
        _text(el, "value", pair.value)


def _info_element(root: etree._Element, info: Info) -> None:
    el = etree.SubElement(root, _C + "info")
    _text(el, "language", info.language)
    for category in info.categories:
        _text(el, "category", category)
    _text(el, "event", info.event)
    for response in info.response_types:
        _text(el, "responseType", response)
    _text(el, "urgency", info.urgency)
    _text(el, "severity", info.severity)
    _text(el, "certainty", info.certainty)
    _text(el, "audience", info.audience)
    _pairs(el, "eventCode", info.event_codes)
    for name in ("effective", "onset", "expires", "sender_name", "headline", "description", "instruction", "web",
                 "contact"):  # fmt: skip
        _text(el, _CAMEL.get(name, name), getattr(info, name))
    _pairs(el, "parameter", info.parameters)
    for res in info.resources:
        r = etree.SubElement(el, _C + "resource")
        for name in ("resource_desc", "mime_type", "size", "uri", "deref_uri", "digest"):
            _text(r, _CAMEL[name], getattr(res, name))
    for area in info.areas:
        a = etree.SubElement(el, _C + "area")
        _text(a, "areaDesc", area.area_desc)
        for polygon in area.polygons:
            _text(a, "polygon", polygon)
        for circle in area.circles:
            _text(a, "circle", circle)
        _pairs(a, "geocode", area.geocodes)
        _text(a, "altitude", area.altitude)
        _text(a, "ceiling", area.ceiling)


_CAMEL = {"sender_name": "senderName", "resource_desc": "resourceDesc", "mime_type": "mimeType", "size": "size",
          "uri": "uri", "deref_uri": "derefUri", "digest": "digest"}  # fmt: skip


# --- parsing ---------------------------------------------------------------------------------

#: Each group's children in the schema's order (section 3.4); "*" repeatable.
_ORDER: Final[dict[str, tuple[str, ...]]] = {
    "alert": ("identifier", "sender", "sent", "status", "msgType", "source", "scope", "restriction", "addresses",
              "code*", "note", "references", "incidents", "info*"),
    "info": ("language", "category*", "event", "responseType*", "urgency", "severity", "certainty", "audience",
             "eventCode*", "effective", "onset", "expires", "senderName", "headline", "description", "instruction",
             "web", "contact", "parameter*", "resource*", "area*"),
    "resource": ("resourceDesc", "mimeType", "size", "uri", "derefUri", "digest"),
    "area": ("areaDesc", "polygon*", "circle*", "geocode*", "altitude", "ceiling"),
    "pair": ("valueName", "value"),
}  # fmt: skip


class CapError(ValueError):
    """A document that is not a CAP 1.2 message; ``problems`` name each wrong element by
    its path (``alert.info[0].area[1]``)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = list(problems)


class _Reader:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def children(self, el: etree._Element, group: str, path: str) -> dict[str, list[etree._Element]]:
        """The children by local name, checking names, order and repetition."""
        order = _ORDER[group]
        names = [n.rstrip("*") for n in order]
        out: dict[str, list[etree._Element]] = {n: [] for n in names}
        last = -1
        for child in el:
            if not isinstance(child.tag, str):
                continue
            qname = etree.QName(child)
            if group == "alert" and qname.namespace == DSIG_NS and qname.localname == "Signature":
                continue  # section 3.3.4.1: an enveloped signature
            if qname.namespace != CAP_NS or qname.localname not in names:
                self.problems.append(Problem(path, f"unexpected element {qname.text} (CAP 1.2 section 3.4 schema)"))
                continue
            index = names.index(qname.localname)
            if index < last:
                self.problems.append(Problem(f"{path}.{qname.localname}",
                                             f"out of order: must come before {names[last]} (CAP 1.2 section 3.4)"))  # fmt: skip
            elif index == last and not order[index].endswith("*"):
                self.problems.append(Problem(f"{path}.{qname.localname}", "appears more than once (CAP 1.2 section 3.4)"))
            last = max(last, index)
            out[qname.localname].append(child)
        return out

    @staticmethod
    def one(kids: dict[str, list[etree._Element]], name: str) -> str | None:
        found = kids[name]
        return (found[0].text or "").strip() if found else None

    @staticmethod
    def many(kids: dict[str, list[etree._Element]], name: str) -> tuple[str, ...]:
        return tuple((el.text or "").strip() for el in kids[name])

    def pairs(self, kids: dict[str, list[etree._Element]], name: str, path: str) -> tuple[ValuePair, ...]:
        out = []
        for i, el in enumerate(kids[name]):
            sub = self.children(el, "pair", f"{path}.{name}[{i}]")
            out.append(ValuePair(self.one(sub, "valueName") or "", self.one(sub, "value") or ""))
        return tuple(out)


def parse_cap(data: bytes | str) -> Alert:
    """A CAP 1.2 ``<alert>`` from XML; ``CapError`` naming each structural problem (values
    are checked by ``firebox.cap.ipaws.validate``)."""
    try:
        root = parse_xml(data)
    except XmlError as exc:
        raise CapError([Problem("", f"not XML: {exc}")]) from exc
    qname = etree.QName(root)
    if qname.localname != "alert" or qname.namespace != CAP_NS:
        raise CapError([Problem("", f"the root element must be {{{CAP_NS}}}alert, not {qname.text}")])
    r = _Reader()
    kids = r.children(root, "alert", "alert")
    references: tuple[Reference, ...] = ()
    raw_refs = r.one(kids, "references")
    if raw_refs is not None:
        try:
            references = parse_references(raw_refs)
        except ValueError as exc:
            r.problems.append(Problem("alert.references", f"{exc} (CAP 1.2 section 3.2.1)"))
    infos = []
    for i, el in enumerate(kids["info"]):
        path = f"alert.info[{i}]"
        k = r.children(el, "info", path)
        resources = []
        for j, rel in enumerate(k["resource"]):
            rk = r.children(rel, "resource", f"{path}.resource[{j}]")
            resources.append(Resource(r.one(rk, "resourceDesc") or "", r.one(rk, "mimeType") or "", r.one(rk, "size"),
                                      r.one(rk, "uri"), r.one(rk, "derefUri"), r.one(rk, "digest")))  # fmt: skip
        areas = []
        for j, ael in enumerate(k["area"]):
            apath = f"{path}.area[{j}]"
            ak = r.children(ael, "area", apath)
            areas.append(Area(r.one(ak, "areaDesc") or "", r.many(ak, "polygon"), r.many(ak, "circle"),
                              r.pairs(ak, "geocode", apath), r.one(ak, "altitude"), r.one(ak, "ceiling")))  # fmt: skip
        infos.append(Info(
            categories=r.many(k, "category"), event=r.one(k, "event") or "", urgency=r.one(k, "urgency") or "",
            severity=r.one(k, "severity") or "", certainty=r.one(k, "certainty") or "", language=r.one(k, "language"),
            response_types=r.many(k, "responseType"), audience=r.one(k, "audience"),
            event_codes=r.pairs(k, "eventCode", path), effective=r.one(k, "effective"), onset=r.one(k, "onset"),
            expires=r.one(k, "expires"), sender_name=r.one(k, "senderName"), headline=r.one(k, "headline"),
            description=r.one(k, "description"), instruction=r.one(k, "instruction"), web=r.one(k, "web"),
            contact=r.one(k, "contact"), parameters=r.pairs(k, "parameter", path), resources=tuple(resources),
            areas=tuple(areas),
        ))  # fmt: skip
    if r.problems:
        raise CapError(r.problems)
    signature = root.find(f"{{{DSIG_NS}}}Signature")
    return Alert(
        identifier=r.one(kids, "identifier") or "", sender=r.one(kids, "sender") or "", sent=r.one(kids, "sent") or "",
        status=r.one(kids, "status") or "", msg_type=r.one(kids, "msgType") or "", scope=r.one(kids, "scope") or "",
        source=r.one(kids, "source"), restriction=r.one(kids, "restriction"), addresses=r.one(kids, "addresses"),
        codes=r.many(kids, "code"), note=r.one(kids, "note"), references=references,
        incidents=r.one(kids, "incidents"), infos=tuple(infos),
        signature=None if signature is None else etree.tostring(signature),
    )  # fmt: skip
