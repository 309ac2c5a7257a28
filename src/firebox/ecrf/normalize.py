"""Street name and civic value normalization for the LVF (NENA i3 Location Validation Function).

Two spellings of one street must give the same key: ``Mass. Avenue``, ``MASSACHUSETTS AVE``
and ``massachusetts av`` all become ``MASSACHUSETTS AVE``. The rules are those of USPS
Publication 28 (Appendix C1 street suffixes, C2 secondary-unit-free directionals) applied
word by word, so that the reference data and the caller's address go through the very same
function: upper case; apostrophes dropped (``O'Brien`` = ``OBRIEN``); other punctuation is a
word break; every suffix word to its standard abbreviation; directionals to one or two
letters; ordinal words to digits (``FIRST`` = ``1ST``); ``SAINT``/``MOUNT``/``FORT`` to
``ST``/``MT``/``FT``. A configurable alias table then maps whole keys to a canonical key
(``MASS AVE`` = ``MASSACHUSETTS AVE``).

Abbreviating every word (not only the last) is deliberate: the reference data holds names
such as ``Ash Street Pl`` and ``Gold Star Road Pl``, which callers write either way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# USPS Publication 28, Appendix C1: the common suffixes with their accepted variants.
# ``PK`` (for PARK) and ``TPK`` (for TURNPIKE) are not in C1 but are what Cambridge's
# centerlines use, so they are read as variants too.
_SUFFIX_VARIANTS: dict[str, tuple[str, ...]] = {
    "ALY": ("ALLEE", "ALLEY", "ALLY", "ALY"),
    "ANX": ("ANEX", "ANNEX", "ANNX", "ANX"),
    "ARC": ("ARC", "ARCADE"),
    "AVE": ("AV", "AVE", "AVEN", "AVENU", "AVENUE", "AVN", "AVNUE"),
    "BCH": ("BCH", "BEACH"),
    "BLF": ("BLF", "BLUF", "BLUFF"),
    "BLVD": ("BLVD", "BOUL", "BOULEVARD", "BOULV"),
    "BND": ("BEND", "BND"),
    "BR": ("BR", "BRNCH", "BRANCH"),
    "BRG": ("BRDGE", "BRG", "BRIDGE"),
    "BRK": ("BRK", "BROOK"),
    "BYP": ("BYP", "BYPA", "BYPAS", "BYPASS", "BYPS"),
    "CIR": ("CIR", "CIRC", "CIRCL", "CIRCLE", "CRCL", "CRCLE"),
    "CMN": ("CMN", "COMMON"),
    "COR": ("COR", "CORNER"),
    "CRES": ("CRES", "CRESCENT", "CRSENT", "CRSNT"),
    "CSWY": ("CAUSEWAY", "CAUSWA", "CSWY"),
    "CT": ("COURT", "CT"),
    "CTR": ("CEN", "CENT", "CENTER", "CENTR", "CENTRE", "CNTER", "CNTR", "CTR"),
    "CV": ("COVE", "CV"),
    "DR": ("DR", "DRIV", "DRIVE", "DRV"),
    "EXPY": ("EXP", "EXPR", "EXPRESS", "EXPRESSWAY", "EXPW", "EXPY"),
    "EXT": ("EXT", "EXTENSION", "EXTN", "EXTNSN"),
    "FWY": ("FREEWAY", "FREEWY", "FRWAY", "FRWY", "FWY"),
    "GDN": ("GARDEN", "GARDN", "GDN", "GRDEN", "GRDN"),
    "GDNS": ("GARDENS", "GDNS", "GRDNS"),
    "GRN": ("GREEN", "GRN"),
    "GRV": ("GROVE", "GROV", "GRV"),
    "HBR": ("HARB", "HARBOR", "HARBR", "HBR", "HRBOR"),
    "HL": ("HILL", "HL"),
    "HOLW": ("HLLW", "HOLLOW", "HOLLOWS", "HOLW", "HOLWS"),
    "HTS": ("HEIGHTS", "HT", "HTS"),
    "HWY": ("HIGHWAY", "HIGHWY", "HIWAY", "HIWY", "HWAY", "HWY"),
    "IS": ("IS", "ISLAND", "ISLND"),
    "JCT": ("JCT", "JCTION", "JCTN", "JUNCTION", "JUNCTN", "JUNCTON"),
    "KNL": ("KNL", "KNOL", "KNOLL"),
    "LN": ("LANE", "LN"),
    "LNDG": ("LANDING", "LNDG", "LNDNG"),
    "LOOP": ("LOOP", "LOOPS"),
    "MDWS": ("MDW", "MDWS", "MEADOWS", "MEDOWS"),
    "MEWS": ("MEWS",),
    "MNR": ("MANOR", "MNR"),
    "MT": ("MNT", "MOUNT", "MT"),
    "MTN": ("MNTAIN", "MNTN", "MOUNTAIN", "MOUNTIN", "MTIN", "MTN"),
    "PARK": ("PARK", "PK", "PRK"),
    "PATH": ("PATH", "PATHS"),
    "PIKE": ("PIKE", "PIKES"),
    "PKWY": ("PARKWAY", "PARKWY", "PKWAY", "PKWY", "PKY"),
    "PL": ("PL", "PLACE"),
    "PLZ": ("PLAZA", "PLZ", "PLZA"),
    "PT": ("POINT", "PT"),
    "RDG": ("RDG", "RDGE", "RIDGE"),
    "RD": ("RD", "ROAD"),
    "ROW": ("ROW",),
    "RTE": ("ROUTE", "RTE"),
    "RUN": ("RUN",),
    "SKWY": ("SKYWAY", "SKWY"),
    "SQ": ("SQ", "SQR", "SQRE", "SQU", "SQUARE"),
    "ST": ("ST", "STR", "STREET", "STRT"),
    "STA": ("STA", "STATION", "STATN", "STN"),
    "TER": ("TER", "TERR", "TERRACE"),
    "TPKE": ("TPK", "TPKE", "TRNPK", "TURNPIKE", "TURNPK"),
    "TRCE": ("TRACE", "TRACES", "TRCE"),
    "TRL": ("TRAIL", "TRAILS", "TRL", "TRLS"),
    "UPAS": ("UNDERPASS", "UPAS"),
    "VIS": ("VIS", "VIST", "VISTA", "VST", "VSTA"),
    "VLG": ("VILL", "VILLAG", "VILLAGE", "VILLG", "VLG"),
    "VLY": ("VALLEY", "VALLY", "VLLY", "VLY"),
    "VW": ("VIEW", "VW"),
    "WALK": ("WALK", "WALKS"),
    "WAY": ("WAY", "WY"),
    "XING": ("CROSSING", "CRSSNG", "XING"),
}
SUFFIXES: dict[str, str] = {v: std for std, vs in _SUFFIX_VARIANTS.items() for v in vs}
SUFFIX_STANDARD: frozenset[str] = frozenset(_SUFFIX_VARIANTS)

# Publication 28 section 233 (directionals), spelled out or abbreviated.
DIRECTIONALS: dict[str, str] = {
    "NORTH": "N", "SOUTH": "S", "EAST": "E", "WEST": "W",
    "NORTHEAST": "NE", "NORTHWEST": "NW", "SOUTHEAST": "SE", "SOUTHWEST": "SW",
    "N": "N", "S": "S", "E": "E", "W": "W", "NE": "NE", "NW": "NW", "SE": "SE", "SW": "SW",
}  # fmt: skip
DIRECTIONAL_STANDARD: frozenset[str] = frozenset(DIRECTIONALS.values())

_ORDINAL_WORDS = (
    "FIRST SECOND THIRD FOURTH FIFTH SIXTH SEVENTH EIGHTH NINTH TENTH ELEVENTH TWELFTH "
    "THIRTEENTH FOURTEENTH FIFTEENTH SIXTEENTH SEVENTEENTH EIGHTEENTH NINETEENTH TWENTIETH"
).split()


def _ordinal_suffix(n: int) -> str:
    if n % 100 in (11, 12, 13):
        return "TH"
    return {1: "ST", 2: "ND", 3: "RD"}.get(n % 10, "TH")


ORDINALS: dict[str, str] = {w: f"{i}{_ordinal_suffix(i)}" for i, w in enumerate(_ORDINAL_WORDS, 1)}
ORDINALS.update({"THIRTIETH": "30TH", "FORTIETH": "40TH", "FIFTIETH": "50TH"})

#: Words inside names with one usual abbreviation (MOUNT is already a C1 suffix variant).
NAME_WORDS: dict[str, str] = {"SAINT": "ST", "FORT": "FT", "MONSIGNOR": "MSGR", "MSGR": "MSGR"}

#: Default alias table (whole street keys, written any way: they are normalized on use).
DEFAULT_ALIASES: dict[str, str] = {
    "MASS AVE": "MASSACHUSETTS AVE",
    "MASS AV": "MASSACHUSETTS AVE",
    "MASS AVENUE": "MASSACHUSETTS AVE",
    "JOHN F KENNEDY ST": "JFK ST",
    "MSR OBRIEN HWY": "MONSIGNOR OBRIEN HWY",
    "MEM DR": "MEMORIAL DR",
}

_STATE_NAMES = {
    "ALABAMA": "AL", "ALASKA": "AK", "ARIZONA": "AZ", "ARKANSAS": "AR", "CALIFORNIA": "CA",
    "COLORADO": "CO", "CONNECTICUT": "CT", "DELAWARE": "DE", "DISTRICT OF COLUMBIA": "DC",
    "FLORIDA": "FL", "GEORGIA": "GA", "HAWAII": "HI", "IDAHO": "ID", "ILLINOIS": "IL",
    "INDIANA": "IN", "IOWA": "IA", "KANSAS": "KS", "KENTUCKY": "KY", "LOUISIANA": "LA",
    "MAINE": "ME", "MARYLAND": "MD", "MASSACHUSETTS": "MA", "MICHIGAN": "MI",
    "MINNESOTA": "MN", "MISSISSIPPI": "MS", "MISSOURI": "MO", "MONTANA": "MT",
    "NEBRASKA": "NE", "NEVADA": "NV", "NEW HAMPSHIRE": "NH", "NEW JERSEY": "NJ",
    "NEW MEXICO": "NM", "NEW YORK": "NY", "NORTH CAROLINA": "NC", "NORTH DAKOTA": "ND",
    "OHIO": "OH", "OKLAHOMA": "OK", "OREGON": "OR", "PENNSYLVANIA": "PA", "PUERTO RICO": "PR",
    "RHODE ISLAND": "RI", "SOUTH CAROLINA": "SC", "SOUTH DAKOTA": "SD", "TENNESSEE": "TN",
    "TEXAS": "TX", "UTAH": "UT", "VERMONT": "VT", "VIRGINIA": "VA", "WASHINGTON": "WA",
    "WEST VIRGINIA": "WV", "WISCONSIN": "WI", "WYOMING": "WY",
}  # fmt: skip

_APOSTROPHES = re.compile(r"['\u2019`]")
_NON_WORD = re.compile(r"[^0-9A-Z]+")


def clean(value: str | None) -> str:
    """Upper case, apostrophes dropped, any other punctuation or run of whitespace a single
    space: ``" Mt. Auburn  St "`` -> ``"MT AUBURN ST"``."""
    if not value:
        return ""
    upper = _APOSTROPHES.sub("", value.upper())
    return _NON_WORD.sub(" ", upper).strip()


def tokens(*parts: str | None) -> list[str]:
    """The cleaned words of all ``parts`` in order (empty parts skipped)."""
    return [t for p in parts for t in clean(p).split()]


def _word(token: str) -> str:
    for table in (SUFFIXES, DIRECTIONALS, ORDINALS, NAME_WORDS):
        if token in table:
            return table[token]
    return token


@dataclass(frozen=True, slots=True)
class StreetName:
    """A normalized street: ``pre`` directional, ``name``, ``suffix``, ``post`` directional
    (the RFC 5139 PRD / RD / STS / POD split). ``key`` is the whole, used for look-ups."""

    pre: str
    name: str
    suffix: str
    post: str
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        key = " ".join(p for p in (self.pre, self.name, self.suffix, self.post) if p)
        object.__setattr__(self, "key", key)

    def __str__(self) -> str:
        return self.key


def normalize_street(*parts: str | None) -> StreetName:
    """Normalize a street given as one string or as its parts in order (``PRD, RD, STS,
    POD``). The last word is a post-directional / suffix, and the first a pre-directional,
    only when a name word remains, so ``EAST ST`` is a street named EAST and ``PARKWAY`` a
    street named PARKWAY. A repeated suffix (``Education St`` + ``St`` in the data) counts once."""
    words = [_word(t) for t in tokens(*parts)]
    deduped: list[str] = []
    for w in words:
        if deduped and w == deduped[-1] and w in SUFFIX_STANDARD:
            continue
        deduped.append(w)
    words = deduped
    post = suffix = pre = ""
    if len(words) > 1 and words[-1] in DIRECTIONAL_STANDARD:
        post = words.pop()
    if len(words) > 1 and words[-1] in SUFFIX_STANDARD:
        suffix = words.pop()
    if len(words) > 1 and words[0] in DIRECTIONAL_STANDARD:
        pre = words.pop(0)
    return StreetName(pre=pre, name=" ".join(words), suffix=suffix, post=post)


def street_key(*parts: str | None) -> str:
    """``normalize_street(*parts).key``."""
    return normalize_street(*parts).key


class AliasTable:
    """Whole-key street aliases (``MASS AVE`` -> ``MASSACHUSETTS AVE``). Both sides are
    normalized when added, so the table can be written in any spelling. One alias may name
    several canonical streets (data aliases sometimes do); look-ups return all of them."""

    def __init__(self, aliases: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        self._map: dict[str, set[str]] = {}
        items = aliases.items() if isinstance(aliases, Mapping) else aliases
        for alias, canonical in items:
            self.add(alias, canonical)

    def add(self, alias: str, canonical: str) -> None:
        a, c = street_key(alias), street_key(canonical)
        if a and c and a != c:
            self._map.setdefault(a, set()).add(c)

    def lookup(self, key: str) -> frozenset[str]:
        return frozenset(self._map.get(key, ()))

    def update(self, other: AliasTable) -> None:
        """Add every alias of ``other`` (keys are already normalized there)."""
        for alias, canonicals in other._map.items():
            self._map.setdefault(alias, set()).update(canonicals)

    def __len__(self) -> int:
        return len(self._map)


_TOWN_WORDS = {"SAINT": "ST", "MOUNT": "MT", "FORT": "FT"}


def normalize_town(value: str | None) -> str:
    """Municipality (A3) comparison form: cleaned, ``SAINT``/``MOUNT``/``FORT`` abbreviated."""
    return " ".join(_TOWN_WORDS.get(t, t) for t in clean(value).split())


def normalize_state(value: str | None) -> str:
    """State (A1) as its two-letter USPS code when spelled out: ``Massachusetts`` -> ``MA``."""
    c = clean(value)
    return _STATE_NAMES.get(c, c)


def normalize_country(value: str | None) -> str:
    """Country as ISO 3166 alpha-2 (RFC 5139 section 3.1): ``USA``/``United States`` -> ``US``."""
    c = clean(value)
    return {"USA": "US", "UNITED STATES": "US", "UNITED STATES OF AMERICA": "US"}.get(c, c)


_ZIP = re.compile(r"^(\d{5})(?:[- ]?\d{4})?$")


def normalize_zip(value: str | None) -> str:
    """The five-digit ZIP of a ZIP or ZIP+4 (``02139-4307`` -> ``02139``); other postal codes
    come back cleaned."""
    raw = (value or "").strip()
    m = _ZIP.match(raw)
    return m.group(1) if m else clean(raw)


_HNO = re.compile(r"^\s*(\d+)(.*)$", re.DOTALL)
_HNS_DROP = re.compile(r"[^0-9A-Z/]+")


def parse_house_number(hno: str | None, hns: str | None = None) -> tuple[int, str] | None:
    """``(number, suffix)`` from RFC 5139 HNO (+ HNS): ``"12A"`` -> ``(12, "A")``. None when
    HNO does not start with a number (it is then not a house number that ranges can check)."""
    if hno is None:
        return None
    m = _HNO.match(hno)
    if not m:
        return None
    # Keep letters, digits and "/" (for "1/2"); drop spaces, dashes and other punctuation.
    suffix = _HNS_DROP.sub("", f"{m.group(2)}{hns or ''}".upper())
    return int(m.group(1)), suffix
