"""Quality checks of a service boundary layer, before an ECRF answers from it.

NENA's NG9-1-1 GIS data model (NENA-STA-006) asks that the service boundaries of one service
cover the authority's area with no gaps and no overlaps, so that every location maps to
exactly one PSAP (or responding agency). This module finds what keeps a
layer from that, with enough detail (ids, areas in m², a representative point) to fix it:

- invalid geometry (``shapely.is_valid_reason``): repaired with ``shapely.make_valid`` keeping
  the polygonal part, and reported as a warning, never silently;
- missing, empty or non-polygonal geometry; coordinates outside lon/lat range (a wrong CRS);
- missing or duplicate ids, missing service URIs;
- overlaps between boundaries (STRtree candidate pairs, then their interiors), with the
  overlap area on the WGS84 ellipsoid (``area_m2``); overlaps under ``sliver_m2`` are only counted;
- gaps: holes in the union of all boundaries, and optionally the parts of an expected outline
  that no boundary covers.

Pure computation: no I/O besides logging each repair; the caller prints or serializes the report.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

log = logging.getLogger(__name__)

#: Overlaps and gaps smaller than this (m²) are slivers: counted, not reported one by one.
DEFAULT_SLIVER_M2 = 1.0
#: At most this many findings of one kind are listed; the rest are summed into one finding.
MAX_LISTED = 200

_E2 = 0.00669437999014  # WGS84 first eccentricity squared
_A = 6_378_137.0  # WGS84 semi-major axis (m)
_Q_POLE = (1 - _E2) * (1 / (1 - _E2) - math.log((1 - math.sqrt(_E2)) / (1 + math.sqrt(_E2))) / (2 * math.sqrt(_E2)))
_R_AUTHALIC = _A * math.sqrt(_Q_POLE / 2)  # the sphere with the ellipsoid's area
_GAUSS3 = ((0.5 - math.sqrt(0.15), 5 / 18), (0.5, 8 / 18), (0.5 + math.sqrt(0.15), 5 / 18))
_POLYGONAL = ("Polygon", "MultiPolygon")
_REASON_POINT = re.compile(r"\[\s*(-?[\d.eE+-]+)\s+(-?[\d.eE+-]+)\s*\]")


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class FindingKind(str, Enum):
    INVALID_GEOMETRY = "invalid_geometry"
    MISSING_GEOMETRY = "missing_geometry"
    EMPTY_GEOMETRY = "empty_geometry"
    NON_POLYGONAL = "non_polygonal"
    OUT_OF_RANGE = "out_of_range"
    MISSING_ID = "missing_id"
    DUPLICATE_ID = "duplicate_id"
    MISSING_URI = "missing_uri"
    OVERLAP = "overlap"
    GAP = "gap"
    OUTLINE_GAP = "outline_gap"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem. ``ids`` are the boundaries involved; ``point`` is (lon, lat)."""

    kind: FindingKind
    severity: Severity
    message: str
    ids: tuple[str, ...] = ()
    area_m2: float | None = None
    point: tuple[float, float] | None = None
    repaired: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "severity": self.severity.value,
            "message": self.message,
            "ids": list(self.ids),
            "area_m2": self.area_m2,
            "point": list(self.point) if self.point is not None else None,
            "repaired": self.repaired,
        }


@dataclass
class QualityReport:
    """What ``check_boundaries`` found. ``geometries`` holds the checked geometries with
    repairs applied (None where a feature has no usable polygon); it is not serialized."""

    service: str
    features: int
    findings: list[Finding] = field(default_factory=list)
    overlap_slivers: int = 0
    gap_slivers: int = 0
    sliver_m2: float = DEFAULT_SLIVER_M2
    source: str | None = None
    geometries: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object), repr=False, compare=False)

    # --- views ---------------------------------------------------------------------------

    def of_kind(self, kind: FindingKind) -> list[Finding]:
        return [f for f in self.findings if f.kind is kind]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def repaired(self) -> list[Finding]:
        return [f for f in self.findings if f.repaired]

    @property
    def ok(self) -> bool:
        """True when nothing is left unrepaired (warnings allowed)."""
        return not self.errors

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.kind.value for f in self.findings))

    # --- output --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "source": self.source,
            "features": self.features,
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "repaired": len(self.repaired),
            "overlap_slivers": self.overlap_slivers,
            "gap_slivers": self.gap_slivers,
            "sliver_m2": self.sliver_m2,
            "counts": self.counts(),
            "findings": [f.to_dict() for f in self.findings],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def summary(self) -> str:
        """One line, e.g. for a server's start-up log."""
        where = f" ({self.source})" if self.source else ""
        status = "ok" if self.ok else f"{len(self.errors)} errors"
        parts = [f"{self.service}{where}: {self.features} boundaries, {status}"]
        if self.warnings:
            parts.append(f"{len(self.warnings)} warnings ({len(self.repaired)} repaired)")
        if self.overlap_slivers or self.gap_slivers:
            parts.append(
                f"{self.overlap_slivers} overlap and {self.gap_slivers} gap slivers < {self.sliver_m2:g} m²"
            )
        return ", ".join(parts)

    def table(self) -> Any:
        """A rich ``Table`` of the findings (rich is imported here, for the CLI only)."""
        from rich.table import Table

        style = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "blue"}
        table = Table(show_lines=False)
        # Ids and points are in the messages (and in the JSON): keep the table narrow.
        table.add_column("severity", no_wrap=True)
        table.add_column("kind", no_wrap=True)
        table.add_column("area m²", no_wrap=True, justify="right")
        table.add_column("message", overflow="fold", ratio=1)
        for f in self.findings:
            table.add_row(
                f"[{style[f.severity]}]{f.severity.value}[/]",
                f.kind.value,
                f"{f.area_m2:,.1f}" if f.area_m2 is not None else "",
                f.message,
            )
        return table


# --- helpers -----------------------------------------------------------------------------


def _authalic_sin(phi: np.ndarray) -> np.ndarray:
    """sin of the authalic latitude of geodetic ``phi`` (radians) on WGS84: R_a² sin β is
    the area of the ellipsoid between the equator and ``phi`` per radian of longitude."""
    e = math.sqrt(_E2)
    s = np.sin(phi)
    q = (1 - _E2) * (s / (1 - _E2 * s * s) - np.log((1 - e * s) / (1 + e * s)) / (2 * e))
    return q / _Q_POLE


def _ring_integral(xy: np.ndarray) -> float:
    """|∮ sin β dλ| (radians²) around a closed lon/lat ring whose edges are straight in
    lon/lat, as GEOS and the index treat them (Green's theorem, each edge integrated by
    3-point Gauss-Legendre with φ linear along it). Additive: pieces sum to the whole, and a
    zero-width sliver (a path out and back) has zero area, which a geodesic area (edges as
    great-circle arcs) would not give."""
    lam = np.radians(xy[:, 0])
    phi = np.radians(xy[:, 1])
    dl = np.diff(lam)
    dp = np.diff(phi)
    acc = np.zeros_like(dl)
    for t, w in _GAUSS3:
        acc += w * _authalic_sin(phi[:-1] + t * dp)
    return abs(float(np.sum(dl * acc)))


def area_m2(geom: BaseGeometry | None) -> float:
    """Area (m²) of a lon/lat (Multi)Polygon on the WGS84 ellipsoid; 0 for anything else."""
    if geom is None or geom.is_empty:
        return 0.0
    total = 0.0
    for poly in shapely.get_parts(geom):
        if poly.geom_type != "Polygon" or poly.is_empty:
            continue
        total += _ring_integral(np.asarray(poly.exterior.coords)[:, :2])
        total -= sum(_ring_integral(np.asarray(r.coords)[:, :2]) for r in poly.interiors)
    return max(total, 0.0) * _R_AUTHALIC**2


def areas_m2(geoms: Sequence[BaseGeometry | None] | np.ndarray) -> np.ndarray:
    """``area_m2`` of each geometry."""
    return np.array([area_m2(g) for g in geoms], dtype=float)


def polygonal_part(geom: BaseGeometry | None) -> BaseGeometry | None:
    """The Polygon/MultiPolygon part of ``geom`` (None if it has none)."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in _POLYGONAL:
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in _POLYGONAL and not p.is_empty]
    if not parts:
        return None
    merged = shapely.union_all(parts)
    return merged if merged.geom_type in _POLYGONAL and not merged.is_empty else None


def _point(geom: BaseGeometry) -> tuple[float, float]:
    p = shapely.point_on_surface(geom)
    return (round(float(p.x), 7), round(float(p.y), 7))


def _label(ids: Sequence[str], names: Sequence[str], i: int) -> str:
    name = names[i] if i < len(names) and names[i] else ""
    return f"{name} (id {ids[i]})" if name else f"id {ids[i]}"


# --- the check ---------------------------------------------------------------------------


def check_boundaries(
    ids: Sequence[Any],
    names: Sequence[Any],
    geometries: Sequence[BaseGeometry | None] | np.ndarray,
    service: str,
    *,
    uris: Sequence[str | None] | None = None,
    outline: BaseGeometry | None = None,
    sliver_m2: float = DEFAULT_SLIVER_M2,
    source: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> QualityReport:
    """Check one service's boundaries (lon/lat). ``uris`` given means a missing URI is an
    error; ``outline`` (the authority's area) adds gaps against it. ``on_step`` is called
    with a label before each step, for progress display."""
    n = len(geometries)
    if len(ids) != n or len(names) != n or (uris is not None and len(uris) != n):
        raise ValueError(
            f"ids ({len(ids)}), names ({len(names)}), geometries ({n})"
            + (f" and uris ({len(uris)})" if uris is not None else "")
            + " must have the same length"
        )
    if sliver_m2 < 0:
        raise ValueError(f"sliver_m2 must be >= 0, not {sliver_m2}")
    step = on_step or (lambda _label: None)
    sids = ["" if i is None else str(i) for i in ids]
    snames = ["" if x is None else str(x) for x in names]
    report = QualityReport(service=service, features=n, sliver_m2=sliver_m2, source=source)
    add = report.findings.append

    step("checking geometry")
    geoms = np.array(list(geometries), dtype=object)
    _check_geometry(geoms, sids, snames, add)
    report.geometries = geoms

    step("checking ids and URIs")
    _check_ids(sids, snames, uris, add)

    usable = np.flatnonzero(np.array([g is not None for g in geoms], dtype=bool))
    step("finding overlaps")
    report.overlap_slivers = _check_overlaps(geoms, usable, sids, snames, sliver_m2, add)
    step("finding gaps")
    report.gap_slivers = _check_gaps(geoms[usable], outline, sliver_m2, add)
    return report


def _check_geometry(geoms: np.ndarray, ids: list[str], names: list[str], add: Callable[[Finding], None]) -> None:
    """Replace each geometry in ``geoms`` by its usable polygonal form (or None), reporting."""
    for i, g in enumerate(geoms):
        who = _label(ids, names, i)
        if g is None:
            add(Finding(FindingKind.MISSING_GEOMETRY, Severity.ERROR, f"{who}: no geometry", (ids[i],)))
            continue
        if g.is_empty:
            add(Finding(FindingKind.EMPTY_GEOMETRY, Severity.ERROR, f"{who}: empty geometry", (ids[i],)))
            geoms[i] = None
            continue
        if g.geom_type not in _POLYGONAL:
            part = polygonal_part(g) if g.geom_type == "GeometryCollection" else None
            if part is None:
                add(Finding(
                    FindingKind.NON_POLYGONAL, Severity.ERROR,
                    f"{who}: a {g.geom_type} cannot be a service boundary", (ids[i],),
                ))
                geoms[i] = None
                continue
            add(Finding(
                FindingKind.NON_POLYGONAL, Severity.WARNING,
                f"{who}: kept the polygonal part of a GeometryCollection", (ids[i],),
                point=_point(part), repaired=True,
            ))
            log.warning("%s: kept the polygonal part of a GeometryCollection", who)
            g = geoms[i] = part
        if shapely.is_valid(g):
            continue
        reason = shapely.is_valid_reason(g)
        m = _REASON_POINT.search(reason)
        where = (float(m.group(1)), float(m.group(2))) if m else None
        if m:
            reason = f"{reason[:m.start()].strip()} at {where[0]:.6f}, {where[1]:.6f}"
        fixed = polygonal_part(shapely.make_valid(g))
        if fixed is None:
            add(Finding(
                FindingKind.INVALID_GEOMETRY, Severity.ERROR,
                f"{who}: {reason}; make_valid left no polygon", (ids[i],), point=where,
            ))
            geoms[i] = None
            continue
        area = float(areas_m2([fixed])[0])
        msg = f"{who}: {reason}; repaired with make_valid ({area / 1e6:,.3f} km² kept)"
        log.warning("%s", msg)
        add(Finding(
            FindingKind.INVALID_GEOMETRY, Severity.WARNING, msg, (ids[i],),
            area_m2=area, point=where, repaired=True,
        ))
        geoms[i] = fixed
    present = [k for k, g in enumerate(geoms) if g is not None]
    if present:
        b = shapely.bounds(geoms[present].astype(object))
        bad = (b[:, 0] < -180) | (b[:, 2] > 180) | (b[:, 1] < -90) | (b[:, 3] > 90)
        for i in np.flatnonzero(bad)[:MAX_LISTED]:
            k = present[i]
            add(Finding(
                FindingKind.OUT_OF_RANGE, Severity.ERROR,
                f"{_label(ids, names, k)}: coordinates outside lon/lat range "
                f"(bounds {', '.join(f'{v:.6g}' for v in b[i])}): is the CRS right?",
                (ids[k],),
            ))


def _check_ids(ids: list[str], names: list[str], uris: Sequence[str | None] | None, add: Callable[[Finding], None]) -> None:
    seen: dict[str, list[int]] = {}
    for i, x in enumerate(ids):
        if not x.strip():
            add(Finding(FindingKind.MISSING_ID, Severity.ERROR, f"feature #{i} {names[i]!r}: no id", ()))
        else:
            seen.setdefault(x, []).append(i)
    for x, where in seen.items():
        if len(where) > 1:
            listed = ", ".join(f"#{k} {names[k]!r}" for k in where)
            add(Finding(
                FindingKind.DUPLICATE_ID, Severity.ERROR,
                f"id {x} is used by {len(where)} features: {listed}", (x,),
            ))
    if uris is None:
        return
    missing = [i for i, u in enumerate(uris) if u is None or not str(u).strip()]
    for i in missing[:MAX_LISTED]:
        add(Finding(FindingKind.MISSING_URI, Severity.ERROR, f"{_label(ids, names, i)}: no service URI", (ids[i],)))
    if len(missing) > MAX_LISTED:
        rest = missing[MAX_LISTED:]
        add(Finding(
            FindingKind.MISSING_URI, Severity.ERROR,
            f"{len(rest)} more features have no service URI", tuple(ids[i] for i in rest),
        ))


def _check_overlaps(
    geoms: np.ndarray, usable: np.ndarray, ids: list[str], names: list[str], sliver_m2: float,
    add: Callable[[Finding], None],
) -> int:
    """Report pairs whose interiors intersect; return the number of sliver overlaps."""
    if usable.size < 2:
        return 0
    g = geoms[usable]
    shapely.prepare(g)
    tree = shapely.STRtree(g)
    a, b = tree.query(g, predicate="intersects")  # prepared, fast; includes mere touching
    keep = a < b
    a, b = a[keep], b[keep]
    if a.size == 0:
        return 0
    # DE-9IM interior/interior: 'F' means the pair only touches along borders.
    interior = np.array([m[0] != "F" for m in shapely.relate(g[a], g[b])], dtype=bool)
    a, b = a[interior], b[interior]
    if a.size == 0:
        return 0
    inter = shapely.intersection(g[a], g[b])
    inter = np.array([polygonal_part(x) for x in inter], dtype=object)
    areas = areas_m2(inter)
    slivers = int(np.count_nonzero(areas < sliver_m2)) if sliver_m2 > 0 else int(np.count_nonzero(areas == 0))
    big = np.flatnonzero(areas >= sliver_m2) if sliver_m2 > 0 else np.flatnonzero(areas > 0)
    big = big[np.argsort(-areas[big], kind="stable")]
    for k in big[:MAX_LISTED]:
        i, j = int(usable[a[k]]), int(usable[b[k]])
        pt = _point(inter[k])
        add(Finding(
            FindingKind.OVERLAP, Severity.ERROR,
            f"{_label(ids, names, i)} and {_label(ids, names, j)} overlap by {areas[k]:,.1f} m² "
            f"around {pt[0]:.6f}, {pt[1]:.6f}",
            (ids[i], ids[j]), area_m2=round(float(areas[k]), 3), point=pt,
        ))
    if big.size > MAX_LISTED:
        rest = big[MAX_LISTED:]
        add(Finding(
            FindingKind.OVERLAP, Severity.ERROR,
            f"{rest.size} more overlapping pairs ({areas[rest].sum():,.1f} m² in all)",
            area_m2=round(float(areas[rest].sum()), 3),
        ))
    return slivers


def _check_gaps(geoms: np.ndarray, outline: BaseGeometry | None, sliver_m2: float, add: Callable[[Finding], None]) -> int:
    """Holes in the union of the boundaries, and parts of ``outline`` left uncovered."""
    if geoms.size == 0:
        return 0
    union = shapely.union_all(geoms)
    polys = [p for p in shapely.get_parts(union) if p.geom_type == "Polygon"]
    holes = [shapely.Polygon(r) for p in polys for r in p.interiors]
    slivers = _report_gaps(holes, FindingKind.GAP, "a hole in the coverage", sliver_m2, add)
    if outline is not None:
        outline = polygonal_part(outline if outline.is_valid else shapely.make_valid(outline))
        if outline is not None:
            # Holes were reported already; fill them so each gap is reported once.
            filled = shapely.union_all([shapely.Polygon(p.exterior) for p in polys])
            rest = shapely.difference(outline, filled)
            parts = [p for p in shapely.get_parts(rest) if p.geom_type == "Polygon" and not p.is_empty]
            slivers += _report_gaps(parts, FindingKind.OUTLINE_GAP, "a part of the outline no boundary covers", sliver_m2, add)
    return slivers


def _report_gaps(
    parts: list[BaseGeometry], kind: FindingKind, what: str, sliver_m2: float, add: Callable[[Finding], None]
) -> int:
    if not parts:
        return 0
    areas = areas_m2(parts)
    big = np.flatnonzero(areas >= sliver_m2) if sliver_m2 > 0 else np.flatnonzero(areas > 0)
    big = big[np.argsort(-areas[big], kind="stable")]
    for k in big[:MAX_LISTED]:
        pt = _point(parts[k])
        add(Finding(
            kind, Severity.ERROR,
            f"{what}: {areas[k]:,.1f} m² around {pt[0]:.6f}, {pt[1]:.6f}",
            area_m2=round(float(areas[k]), 3), point=pt,
        ))
    if big.size > MAX_LISTED:
        rest = big[MAX_LISTED:]
        add(Finding(kind, Severity.ERROR, f"{rest.size} more gaps ({areas[rest].sum():,.1f} m² in all)",
                    area_m2=round(float(areas[rest].sum()), 3)))
    return int(areas.size - big.size)
