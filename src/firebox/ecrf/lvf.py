"""Location Validation Function (NENA i3 STA-010 section 4.4; LoST ``validateLocation``,
RFC 5222 section 8.4.2): is a civic address one that dispatch can find?

The reference is a street centerline file with address ranges (the MSAG-like data NENA
calls the road centerline layer), optionally with address points. Each RFC 5139 element is
reported ``valid``, ``invalid`` or ``unchecked``: country, A1 (state), A3 (municipality),
RD/PRD/STS/POD (street), HNO (house number) and PC (ZIP) are checked; HNS is checked only
against an address point; every other present element is unchecked.

House numbers follow the centerline convention: each segment has a left and a right range
(``L_From``..``L_To``, ``R_From``..``R_To``) in the direction the line is drawn; a range may
run either way, a side's numbers share the parity of its ends (a side whose ends differ in
parity accepts both), and a missing end (absent, 0 or -1) makes the range the single other
value. A valid address is geocoded by interpolating along its segment and stepping
``setback`` metres to the side of the matching range.

Streets are indexed by normalized key (``firebox.ecrf.normalize``) in a dict, so a
validation is a few dict look-ups plus a scan of one street's segments.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import shapely

from firebox.ecrf.normalize import (
    DEFAULT_ALIASES,
    AliasTable,
    StreetName,
    normalize_country,
    normalize_state,
    normalize_street,
    normalize_town,
    normalize_zip,
    parse_house_number,
)
from firebox.location.civic import CivicAddress
from firebox.location.shapes import Point
from firebox.lost.messages import LocationValidation


class LvfDataError(ValueError):
    """Reference data that cannot be loaded; ``str()`` names the file and what is wrong."""


class Side(StrEnum):
    LEFT = "left"
    RIGHT = "right"


@dataclass(frozen=True, slots=True)
class AddressRange:
    """One side's house numbers, ``first`` at the start of the line, ``last`` at its end."""

    first: int
    last: int

    @property
    def low(self) -> int:
        return min(self.first, self.last)

    @property
    def high(self) -> int:
        return max(self.first, self.last)

    @property
    def parity(self) -> int | None:
        """0 even, 1 odd, None when the ends differ in parity (both accepted)."""
        return self.first % 2 if self.first % 2 == self.last % 2 else None

    def contains(self, number: int) -> bool:
        if not self.low <= number <= self.high:
            return False
        return self.parity is None or number % 2 == self.parity

    def fraction(self, number: int) -> float:
        """Where ``number`` falls between ``first`` (0) and ``last`` (1)."""
        if self.first == self.last:
            return 0.5
        return min(1.0, max(0.0, (number - self.first) / (self.last - self.first)))


def address_range(first: Any, last: Any) -> AddressRange | None:
    """A range from two raw values; absent, non-numeric, 0 and negative values are missing
    (the data uses -1 and 0 for "no addresses on this side")."""
    a, b = _house(first), _house(last)
    if a is None and b is None:
        return None
    return AddressRange(a if a is not None else b, b if b is not None else a)  # type: ignore[arg-type]


def _house(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        n = int(float(value))
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


@dataclass(frozen=True, slots=True)
class StreetSegment:
    """One centerline segment between intersections, with its ranges and ZIPs per side."""

    id: str
    street: StreetName
    label: str  # the street as the data writes it, for display
    town: str  # normalized municipality (A3)
    state: str  # two-letter state (A1)
    left: AddressRange | None
    right: AddressRange | None
    zip_left: str | None
    zip_right: str | None
    coords: tuple[tuple[float, float], ...]  # (lon, lat) in drawing order

    def range(self, side: Side) -> AddressRange | None:
        return self.left if side is Side.LEFT else self.right

    def zip(self, side: Side) -> str | None:
        """The ZIP of ``side``, or of the other side when this one has none."""
        own, other = (
            (self.zip_left, self.zip_right) if side is Side.LEFT else (self.zip_right, self.zip_left)
        )
        return own or other

    def sides_for(self, number: int) -> list[Side]:
        return [s for s in Side if (r := self.range(s)) is not None and r.contains(number)]

    @property
    def geometry(self) -> shapely.LineString:
        return shapely.LineString(self.coords)


@dataclass(frozen=True, slots=True)
class AddressPoint:
    """An address point (NENA site/structure address point): authoritative when present."""

    number: int
    suffix: str
    street: StreetName
    town: str
    point: Point


@dataclass(slots=True)
class LvfResult:
    """The outcome of one validation.

    ``valid`` is true when no element is invalid and the street was found (and the house
    number, when one was given). ``segment``/``side`` are the matched centerline and side,
    ``point`` the geocoded location (only for a valid house number).
    """

    validation: LocationValidation
    valid: bool
    street: str | None = None
    segment: StreetSegment | None = None
    side: Side | None = None
    point: Point | None = None
    address_point: AddressPoint | None = None
    candidates: list[str] = field(default_factory=list)  # street keys considered


@dataclass(frozen=True, slots=True)
class CenterlineFields:
    """Property names of a centerline file; the defaults are Cambridge's schema
    (``TRANS_Centerlines``). ``town``/``state`` fields are used when a feature has them."""

    street_name: str = "Street_Name"
    street_type: str = "Street_Type"
    pre_dir: str | None = None
    post_dir: str | None = None
    l_from: str = "L_From"
    l_to: str = "L_To"
    r_from: str = "R_From"
    r_to: str = "R_To"
    zip_left: str = "ZIP_Left"
    zip_right: str = "ZIP_Right"
    town: str | None = "Town"
    state: str | None = None
    id: str | None = "ID"
    alias: str | None = "Alias"  # comma-separated other names of the street, if any


def _read_features(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise LvfDataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LvfDataError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise LvfDataError(f"{path}: not a GeoJSON FeatureCollection")
    features = doc.get("features")
    if not isinstance(features, list):
        raise LvfDataError(f"{path}: FeatureCollection has no 'features' list")
    return features


def _line_coords(geometry: Any) -> tuple[tuple[float, float], ...] | None:
    """A single line's (lon, lat) coordinates; a MultiLineString is merged, and if its parts
    do not join, its longest part stands for it."""
    if not isinstance(geometry, dict):
        return None
    try:
        geom = shapely.geometry.shape(geometry)
    except (ValueError, TypeError, KeyError, AttributeError, shapely.errors.ShapelyError):
        return None
    if geom.is_empty:
        return None
    if geom.geom_type == "MultiLineString":
        geom = shapely.line_merge(geom)
        if geom.geom_type == "MultiLineString":
            geom = max(geom.geoms, key=lambda g: g.length)
    if geom.geom_type != "LineString":
        return None
    return tuple((float(x), float(y)) for x, y, *_ in geom.coords)


def _text(props: Mapping[str, Any], name: str | None) -> str | None:
    if not name:
        return None
    v = props.get(name)
    if v is None:
        return None
    s = str(v).strip()
    return s or None


_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQ = 111_320.0


def interpolate(
    coords: Sequence[tuple[float, float]], fraction: float, side: Side | None, setback: float
) -> Point:
    """The point ``fraction`` of the way along ``coords`` (lon, lat), stepped ``setback``
    metres to the left or right of the drawing direction. Distances use a local
    equirectangular frame, exact enough over a city block."""
    lon0, lat0 = coords[0]
    kx = _M_PER_DEG_LON_EQ * math.cos(math.radians(lat0))
    xy = [((lon - lon0) * kx, (lat - lat0) * _M_PER_DEG_LAT) for lon, lat in coords]
    lengths = [math.dist(a, b) for a, b in zip(xy, xy[1:])]
    total = sum(lengths)
    if total == 0:
        return Point(lat=lat0, lon=lon0)
    target = fraction * total
    for (ax, ay), (bx, by), length in zip(xy, xy[1:], lengths):
        if length == 0:
            continue
        if target <= length:
            break
        target -= length
    t = min(1.0, target / length)
    x, y = ax + (bx - ax) * t, ay + (by - ay) * t
    if side is not None and setback:
        nx, ny = -(by - ay) / length, (bx - ax) / length  # unit normal to the left
        sign = 1.0 if side is Side.LEFT else -1.0
        x, y = x + sign * setback * nx, y + sign * setback * ny
    return Point(lat=lat0 + y / _M_PER_DEG_LAT, lon=lon0 + x / kx)


_STREET_ELEMENTS = ("PRD", "RD", "STS", "POD")


class Lvf:
    """Civic address validation and geocoding against street centerlines."""

    def __init__(
        self,
        segments: Iterable[StreetSegment],
        *,
        address_points: Iterable[AddressPoint] = (),
        aliases: AliasTable | Mapping[str, str] | None = None,
        country: str = "US",
        setback: float = 8.0,
    ):
        self.segments: list[StreetSegment] = list(segments)
        if aliases is None:
            aliases = AliasTable(DEFAULT_ALIASES)
        self.aliases = aliases if isinstance(aliases, AliasTable) else AliasTable(aliases)
        self.country = normalize_country(country)
        self.setback = setback
        self.skipped: list[str] = []  # features a loader left out, with the reason
        self._by_key: dict[str, list[StreetSegment]] = {}
        # Per street: (low, high, parity, segment, side) of every addressed side, so that a
        # house number is checked with plain integer comparisons.
        self._ranges: dict[str, list[tuple[int, int, int | None, StreetSegment, Side]]] = {}
        self._by_name: dict[str, set[str]] = {}
        self._zips_by_town: dict[str, set[str]] = {}
        self.towns: set[str] = set()
        self.states: set[str] = set()
        for seg in self.segments:
            self._by_key.setdefault(seg.street.key, []).append(seg)
            for side in Side:
                if (r := seg.range(side)) is not None:
                    self._ranges.setdefault(seg.street.key, []).append(
                        (r.low, r.high, r.parity, seg, side)
                    )
            self._by_name.setdefault(seg.street.name, set()).add(seg.street.key)
            self.towns.add(seg.town)
            self.states.add(seg.state)
            zips = self._zips_by_town.setdefault(seg.town, set())
            zips.update(z for z in (seg.zip_left, seg.zip_right) if z)
        self._points: dict[tuple[str, str, int, str], AddressPoint] = {}
        for ap in address_points:
            self._points[(ap.town, ap.street.key, ap.number, ap.suffix)] = ap

    # --- loading ------------------------------------------------------------------------

    @classmethod
    def from_geojson(
        cls,
        path: str | Path,
        *,
        default_town: str | None = None,
        default_state: str | None = None,
        fields: CenterlineFields = CenterlineFields(),
        address_points: Iterable[AddressPoint] = (),
        aliases: Mapping[str, str] | None = None,
        data_aliases: bool = True,
        country: str = "US",
        setback: float = 8.0,
    ) -> Lvf:
        """Load centerlines from a GeoJSON FeatureCollection. A feature's town is its
        ``fields.town`` property when present, else ``default_town``; same for the state.
        Features without a street name, a usable line, or a town are skipped and listed in
        ``skipped``. With ``data_aliases``, the ``fields.alias`` property (comma-separated)
        adds aliases of the feature's street."""
        path = Path(path)
        table = AliasTable(DEFAULT_ALIASES if aliases is None else aliases)
        segments: list[StreetSegment] = []
        skipped: list[str] = []
        for n, feat in enumerate(_read_features(path)):
            props = feat.get("properties") if isinstance(feat, dict) else None
            fid = (feat.get("id") if isinstance(feat, dict) else None) or n
            if not isinstance(props, dict):
                skipped.append(f"feature {fid}: no properties")
                continue
            name = _text(props, fields.street_name)
            street_type = _text(props, fields.street_type)
            street = normalize_street(
                _text(props, fields.pre_dir), name, street_type, _text(props, fields.post_dir)
            )
            if not street.name:
                skipped.append(f"feature {fid}: no street name ({fields.street_name})")
                continue
            coords = _line_coords(feat.get("geometry"))
            if coords is None:
                skipped.append(f"feature {fid}: geometry is not a usable LineString")
                continue
            town = normalize_town(_text(props, fields.town) or default_town)
            if not town:
                skipped.append(f"feature {fid}: no town ({fields.town}) and no default_town")
                continue
            state = normalize_state(_text(props, fields.state) or default_state)
            zl, zr = _text(props, fields.zip_left), _text(props, fields.zip_right)
            segments.append(
                StreetSegment(
                    id=_text(props, fields.id) or str(fid),
                    street=street,
                    label=" ".join(p for p in (name, street_type) if p),
                    town=town,
                    state=state,
                    left=address_range(props.get(fields.l_from), props.get(fields.l_to)),
                    right=address_range(props.get(fields.r_from), props.get(fields.r_to)),
                    zip_left=normalize_zip(zl) if zl else None,
                    zip_right=normalize_zip(zr) if zr else None,
                    coords=coords,
                )
            )
            alias_text = _text(props, fields.alias) if data_aliases else None
            if alias_text:
                for alias in alias_text.split(","):
                    table.add(alias, street.key)
        if not segments:
            raise LvfDataError(f"{path}: no usable street segments ({len(skipped)} skipped)")
        lvf = cls(
            segments, address_points=address_points, aliases=table, country=country, setback=setback
        )
        lvf.skipped = skipped
        return lvf

    @classmethod
    def from_configs(
        cls,
        sources: Iterable[tuple[str | Path, str | None, str | None, str | None]],
        *,
        aliases: Mapping[str, str] | None = None,
        address_points: Iterable[AddressPoint] = (),
        country: str = "US",
    ) -> Lvf:
        """One LVF over several centerline files, as a deployment file lists them: each
        source is ``(path, default town, default state, town attribute)``. The alias table is
        the built-in one plus the deployment's own plus every file's data aliases."""
        table = AliasTable(DEFAULT_ALIASES)
        table.update(AliasTable(aliases or {}))
        segments: list[StreetSegment] = []
        skipped: list[str] = []
        for path, town, state, town_attr in sources:
            part = cls.from_geojson(
                path,
                default_town=town,
                default_state=state,
                fields=replace(CenterlineFields(), town=town_attr),
                aliases={},
                country=country,
            )
            table.update(part.aliases)
            segments.extend(part.segments)
            skipped.extend(f"{Path(path).name}: {s}" for s in part.skipped)
        lvf = cls(segments, address_points=address_points, aliases=table, country=country)
        lvf.skipped = skipped
        return lvf

    # --- look-ups -----------------------------------------------------------------------

    def street_keys(self) -> list[str]:
        return sorted(self._by_key)

    def segments_of(self, street: str) -> list[StreetSegment]:
        """Segments of a street written any way (aliases applied)."""
        keys, _ = self._resolve(normalize_street(street))
        return [s for k in keys for s in self._by_key[k]]

    def _resolve(self, sn: StreetName) -> tuple[list[str], bool]:
        """Street keys for ``sn`` and whether they match it fully. Order: exact key, alias,
        then the same name with the caller's missing parts (suffix, directionals) filled in.
        A name that exists only with other suffix/directionals gives those keys and False."""
        if not sn.name:
            return [], False
        if sn.key in self._by_key:
            return [sn.key], True
        aliased = sorted(k for k in self.aliases.lookup(sn.key) if k in self._by_key)
        if aliased:
            return aliased, True
        same_name = sorted(self._by_name.get(sn.name, ()))
        compatible = [k for k in same_name if _compatible(sn, self._by_key[k][0].street)]
        if compatible:
            return compatible, True
        return same_name, False

    # --- validation ---------------------------------------------------------------------

    def validate(self, civic: CivicAddress) -> LvfResult:
        """Validate ``civic`` element by element (RFC 5222 section 8.4.2)."""
        status: dict[str, str] = {}
        sn = normalize_street(civic.PRD, civic.RD, civic.STS, civic.POD)

        if civic.country is not None:
            ok = normalize_country(civic.country) == self.country
            status["country"] = "valid" if ok else "invalid"
        if civic.A1 is not None:
            status["A1"] = "valid" if normalize_state(civic.A1) in self.states else "invalid"
        town: str | None = None
        if civic.A3 is not None:
            t = normalize_town(civic.A3)
            if t in self.towns:
                town, status["A3"] = t, "valid"
            else:
                status["A3"] = "invalid"

        keys, full = self._resolve(sn) if civic.RD else ([], False)
        segs = [s for k in keys for s in self._by_key[k]]
        if town is not None:
            segs = [s for s in segs if s.town == town]
        if civic.A1 is not None and status["A1"] == "valid":
            state = normalize_state(civic.A1)
            segs = [s for s in segs if s.state == state]
        street_found = bool(segs) and full
        if civic.RD is not None:
            self._mark_street(civic, sn, keys if segs else [], full, status)

        result = LvfResult(
            validation=LocationValidation(), valid=False, candidates=keys,
            street=segs[0].street.key if street_found else None,
        )  # fmt: skip
        hn = parse_house_number(civic.HNO, civic.HNS)
        matches: list[tuple[StreetSegment, Side]] = []
        if civic.HNO is not None:
            if hn is None:
                status["HNO"] = "invalid"  # not a number: no range can hold it
            elif not segs or not street_found:
                # No street, or only a same-named one with another suffix/directional:
                # which street's ranges to check is unknown.
                status["HNO"] = "unchecked"
            else:
                ap = self._address_point(segs, hn)
                if ap is not None:
                    result.address_point, result.point = ap, ap.point
                    status["HNO"] = "valid"
                    if civic.HNS is not None:
                        status["HNS"] = "valid"
                matches = self._number_matches(segs, hn[0])
                if ap is None:
                    status["HNO"] = "valid" if matches else "invalid"

        if civic.PC is not None:
            pc = normalize_zip(civic.PC)
            if matches:
                zips = {m[0].zip(m[1]) for m in matches} - {None}
                if pc in zips:
                    matches = [m for m in matches if m[0].zip(m[1]) == pc]
            elif segs:
                zips = {z for s in segs for z in (s.zip_left, s.zip_right) if z}
            elif town is not None:
                zips = self._zips_by_town.get(town, set())
            else:
                zips = set().union(*self._zips_by_town.values())
            status["PC"] = "unchecked" if not zips else ("valid" if pc in zips else "invalid")

        if matches:
            seg, side = matches[0]
            result.segment, result.side = seg, side
            if result.point is None and street_found:
                rng = seg.range(side)
                assert rng is not None and hn is not None
                result.point = interpolate(seg.coords, rng.fraction(hn[0]), side, self.setback)
        elif result.address_point is not None:
            result.segment = segs[0]

        for name in civic.present():
            status.setdefault(name, "unchecked")
        v = result.validation
        for name in civic.present():
            getattr(v, status[name]).append(name)
        result.valid = (
            not v.invalid
            and street_found
            and (civic.HNO is None or status.get("HNO") == "valid")
        )
        if not result.valid:
            result.point = None
        return result

    def geocode(self, civic: CivicAddress) -> Point | None:
        """The location of a valid civic address with a house number, else None."""
        return self.validate(civic).point

    def _number_matches(
        self, segs: Sequence[StreetSegment], number: int
    ) -> list[tuple[StreetSegment, Side]]:
        """The (segment, side) pairs among ``segs`` whose range holds ``number`` with the
        side's parity, narrowest range first (the most precise block wins overlaps)."""
        wanted = {id(s) for s in segs}
        found = [
            (high - low, seg, side)
            for key in dict.fromkeys(s.street.key for s in segs)
            for low, high, parity, seg, side in self._ranges.get(key, ())
            if low <= number <= high
            and (parity is None or number % 2 == parity)
            and id(seg) in wanted
        ]
        found.sort(key=lambda m: m[0])
        return [(seg, side) for _, seg, side in found]

    def _address_point(
        self, segs: Sequence[StreetSegment], hn: tuple[int, str]
    ) -> AddressPoint | None:
        for key, town in dict.fromkeys((s.street.key, s.town) for s in segs):
            ap = self._points.get((town, key, hn[0], hn[1]))
            if ap is not None:
                return ap
        return None

    def _mark_street(
        self,
        civic: CivicAddress,
        sn: StreetName,
        keys: Sequence[str],
        full: bool,
        status: dict[str, str],
    ) -> None:
        """Mark RD/PRD/STS/POD. Unknown street: RD invalid (and the parts given with it).
        Known name with a wrong suffix or directional: the element holding the wrong part is
        invalid (RD when the caller wrote it inside RD)."""
        present = [e for e in _STREET_ELEMENTS if getattr(civic, e) is not None]
        if not keys:
            for e in present:
                status[e] = "invalid"
            return
        for e in present:
            status[e] = "valid"
        if full:
            return
        found = [self._by_key[k][0].street for k in keys]
        for part, element in (("pre", "PRD"), ("suffix", "STS"), ("post", "POD")):
            given = getattr(sn, part)
            if given and all(getattr(f, part) != given for f in found):
                holder = element if getattr(civic, element) is not None else "RD"
                status[holder] = "invalid"


def _compatible(given: StreetName, known: StreetName) -> bool:
    """``known`` completes ``given``: same name, and each part the caller gave matches."""
    return given.name == known.name and all(
        not getattr(given, p) or getattr(given, p) == getattr(known, p)
        for p in ("pre", "suffix", "post")
    )


# --- address points ---------------------------------------------------------------------

_ADDRESS = re.compile(r"^\s*(\d+)\s*([A-Za-z](?=\s)|1/2)?\s+(.+?)\s*$")


def load_address_points(
    path: str | Path,
    *,
    address_field: str | None = "ADDRESS",
    number_field: str | None = None,
    street_field: str | None = None,
    town_field: str | None = None,
    default_town: str | None = None,
) -> list[AddressPoint]:
    """Address points from a GeoJSON file of Point features: either one ``address_field``
    ("491 Broadway", "12A Main St") or separate ``number_field`` and ``street_field``.
    Features that cannot be read raise ``LvfDataError`` naming the feature."""
    path = Path(path)
    points: list[AddressPoint] = []
    for n, feat in enumerate(_read_features(path)):
        props = feat.get("properties") or {}
        geom = feat.get("geometry") or {}
        where = f"{path}: feature {feat.get('id', n)}"
        if geom.get("type") != "Point":
            raise LvfDataError(f"{where}: geometry is not a Point")
        try:
            lon, lat = (float(c) for c in geom["coordinates"][:2])
            point = Point(lat=lat, lon=lon)
        except (KeyError, TypeError, ValueError) as exc:
            raise LvfDataError(f"{where}: bad Point coordinates: {exc}") from exc
        if number_field and street_field:
            hn = parse_house_number(_text(props, number_field))
            street = _text(props, street_field)
        else:
            m = _ADDRESS.match(_text(props, address_field) or "")
            hn = (int(m.group(1)), (m.group(2) or "").upper()) if m else None
            street = m.group(3) if m else None
        if hn is None or not street:
            raise LvfDataError(f"{where}: no house number and street in its address")
        town = normalize_town(_text(props, town_field) or default_town)
        if not town:
            raise LvfDataError(f"{where}: no town ({town_field}) and no default_town")
        points.append(AddressPoint(hn[0], hn[1], normalize_street(street), town, point))
    return points
