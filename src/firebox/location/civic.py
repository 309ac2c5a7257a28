"""Civic addresses (RFC 5139, the PIDF-LO civicAddress format used by RFC 4119 and LoST).

US usage follows NENA: A1 state (MA), A2 county, A3 municipality, A4 neighbourhood or
community, RD/STS/PRD/POD the street name, suffix, pre- and post-directional, HNO/HNS the
house number and suffix, PC the ZIP code.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from lxml import etree

from firebox.xmlsafe import local_name, text

NS_CIVIC = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"

#: RFC 5139 element names, in schema order (serialization follows it).
CIVIC_ELEMENTS: tuple[str, ...] = (
    "country", "A1", "A2", "A3", "A4", "A5", "A6", "PRM", "POM", "PRD", "POD", "STS",
    "HNO", "HNS", "LMK", "LOC", "FLR", "NAM", "PC", "BLD", "UNIT", "ROOM", "SEAT", "PLC",
    "PCN", "POBOX", "ADDCODE", "RD", "RDSEC", "RDBR", "RDSUBBR",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CivicAddress:
    """One civic address; every element optional, as in RFC 5139. Field names are the XML
    element names so that LoST ``locationValidation`` can name them directly."""

    country: str | None = None
    A1: str | None = None
    A2: str | None = None
    A3: str | None = None
    A4: str | None = None
    A5: str | None = None
    A6: str | None = None
    PRM: str | None = None
    POM: str | None = None
    PRD: str | None = None
    POD: str | None = None
    STS: str | None = None
    HNO: str | None = None
    HNS: str | None = None
    LMK: str | None = None
    LOC: str | None = None
    FLR: str | None = None
    NAM: str | None = None
    PC: str | None = None
    BLD: str | None = None
    UNIT: str | None = None
    ROOM: str | None = None
    SEAT: str | None = None
    PLC: str | None = None
    PCN: str | None = None
    POBOX: str | None = None
    ADDCODE: str | None = None
    RD: str | None = None
    RDSEC: str | None = None
    RDBR: str | None = None
    RDSUBBR: str | None = None

    def items(self) -> list[tuple[str, str]]:
        """The elements that are present, in schema order."""
        return [(f.name, v) for f in fields(self) if (v := getattr(self, f.name)) is not None]

    def present(self) -> list[str]:
        """Names of the elements that are present, in schema order."""
        return [name for name, _ in self.items()]

    @classmethod
    def from_element(cls, el: etree._Element) -> CivicAddress:
        """Read a ``civicAddress`` element. Unknown children (extensions) are ignored;
        empty elements count as absent."""
        values: dict[str, str] = {}
        for child in el:
            name = local_name(child)
            if name in CIVIC_ELEMENTS:
                value = text(child)
                if value:
                    values[name] = value
        return cls(**values)

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        """A ``ca:civicAddress`` element (a SubElement of ``parent`` when given)."""
        tag = f"{{{NS_CIVIC}}}civicAddress"
        if parent is None:
            el = etree.Element(tag, nsmap={"ca": NS_CIVIC})
        else:
            el = etree.SubElement(parent, tag, nsmap={"ca": NS_CIVIC})
        for name, value in self.items():
            etree.SubElement(el, f"{{{NS_CIVIC}}}{name}").text = value
        return el

    def one_line(self) -> str:
        """A human-readable single line, e.g. ``12 N MAIN ST, SPRINGFIELD, MA 01103``."""
        street = " ".join(
            v for v in (self.HNO, self.HNS, self.PRD, self.RD, self.STS, self.POD) if v
        )
        parts = [p for p in (street, self.A3, " ".join(v for v in (self.A1, self.PC) if v)) if p]
        return ", ".join(parts)
