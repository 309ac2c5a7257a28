"""Loading boundary layers from GIS files (GeoJSON, GeoPackage, Shapefile, anything GDAL reads).

Files are read with pyogrio (GDAL) into shapely geometries, reprojected to WGS84 lon/lat
(EPSG:4326, the CRS of PIDF-LO and LoST, RFC 5491 / RFC 5222) with pyproj, checked by
``firebox.gis.quality`` (invalid geometry repaired and reported, never silently) and built
into a ``BoundaryLayer`` for one service URN.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from string import Formatter
from typing import Any

import numpy as np
import pyogrio
import pyogrio.errors
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from shapely.geometry.base import BaseGeometry

from firebox.gis.index import Boundary, BoundaryLayer
from firebox.gis.quality import (
    DEFAULT_SLIVER_M2,
    Finding,
    FindingKind,
    QualityReport,
    Severity,
    check_boundaries,
)

log = logging.getLogger(__name__)

WGS84 = CRS.from_epsg(4326)
CRS84 = CRS.from_user_input("OGC:CRS84")
#: GeoJSON files, whose features carry an ``id`` member (RFC 7946 section 3.2) that GDAL
#: turns into the feature id when it is an integer (and into an ``id`` field when a string).
_GEOJSON_SUFFIXES = {".geojson", ".json", ".geojsonl", ".geojsons"}


class LayerError(ValueError):
    """A GIS file could not be read as a boundary layer; the message says what and where."""


def _is_wgs84(crs: CRS) -> bool:
    return crs.equals(WGS84, ignore_axis_order=True) or crs.equals(CRS84)


def _python(value: Any) -> Any:
    """numpy scalars to Python ones, so attributes serialize as JSON."""
    return value.item() if isinstance(value, np.generic) else value


def to_wgs84(geoms: np.ndarray, crs: Any) -> np.ndarray:
    """``geoms`` reprojected from ``crs`` (anything pyproj accepts) to lon/lat."""
    src = crs if isinstance(crs, CRS) else CRS.from_user_input(crs)
    if _is_wgs84(src):
        return geoms
    tr = Transformer.from_crs(src, WGS84, always_xy=True)

    def project(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, project)


def read_features(
    path: str | Path, layer: str | int | None = None
) -> tuple[np.ndarray, dict[str, list[Any]], str | None]:
    """Read every feature of ``path`` (one ``layer`` of a multi-layer file).

    Returns (geometries as a shapely object array in EPSG:4326 lon/lat, 2D; None where a
    feature has no geometry), the attribute columns by name (Python values), and the source
    CRS as GDAL reports it (None when the file has none: then lon/lat is assumed, as
    RFC 7946 GeoJSON always is). For GeoJSON, each feature's ``id`` member is the ``id``
    column (a FIPS code for US counties); other drivers' feature ids are in ``fid`` unless a
    field has that name.
    """
    path = Path(path)
    if not path.exists():
        raise LayerError(f"{path}: no such file")
    try:
        meta, fids, wkb, fields = pyogrio.raw.read(path, layer=layer, return_fids=True)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        hint = ""
        try:
            names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
            if layer is not None and len(names):
                hint = f" (layers: {', '.join(names)})"
        except pyogrio.errors.DataSourceError:
            pass
        raise LayerError(f"{path}: cannot read{f' layer {layer!r}' if layer is not None else ''}: {exc}{hint}") from None
    except pyogrio.errors.GeometryError as exc:
        raise LayerError(f"{path}: {exc}") from None

    geoms = shapely.from_wkb(wkb, on_invalid="warn")
    geoms = np.asarray(geoms, dtype=object)
    present = np.array([g is not None for g in geoms], dtype=bool)
    if present.any():
        geoms[present] = shapely.force_2d(geoms[present].astype(object))

    columns: dict[str, list[Any]] = {}
    for name, values in zip(meta["fields"], fields):
        columns[str(name)] = [_python(v) for v in values.tolist()]
    fid_list = [int(f) for f in fids.tolist()] if fids is not None else list(range(len(geoms)))
    if _is_geojson(path) and "id" not in columns:
        columns["id"] = [str(f) for f in fid_list]
    if "fid" not in columns:
        columns["fid"] = fid_list

    crs = meta.get("crs")
    if crs is None:
        log.info("%s: no CRS given; reading coordinates as lon/lat", path)
    elif present.any():
        try:
            geoms[present] = to_wgs84(geoms[present], crs)
        except CRSError as exc:
            raise LayerError(f"{path}: cannot reproject from {crs!r}: {exc}") from None
    return geoms, columns, crs


def _is_geojson(path: Path) -> bool:
    # By name: asking GDAL (read_info) would parse a GeoJSON file a second time.
    return path.suffix.lower() in _GEOJSON_SUFFIXES


def read_outline(path: str | Path, layer: str | int | None = None) -> BaseGeometry:
    """The union of every polygon in ``path`` (an authority's expected coverage)."""
    geoms, _, _ = read_features(path, layer)
    polys = [g if g.is_valid else shapely.make_valid(g) for g in geoms if g is not None and not g.is_empty]
    if not polys:
        raise LayerError(f"{path}: no polygon to use as an outline")
    return shapely.union_all(polys)


def _column(columns: Mapping[str, list[Any]], attr: str, what: str, path: Path) -> list[Any]:
    if attr not in columns:
        have = ", ".join(sorted(columns)) or "none"
        raise LayerError(f"{path}: no {what} attribute {attr!r} (attributes: {have})")
    return columns[attr]


def _ident(value: Any) -> str | None:
    """An attribute value as an id string: 12.0 becomes "12"; None and NaN become None."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    text = str(value).strip()
    return text or None


def _template_fields(template: str) -> list[str]:
    try:
        return [f for _, f, _, _ in Formatter().parse(template) if f]
    except ValueError as exc:
        raise LayerError(f"URI template {template!r} is malformed: {exc}") from None


def load_boundary_layer(
    path: str | Path,
    service: str,
    id_attr: str,
    name_attr: str,
    uri_attr: str | None = None,
    uri_template: str | None = None,
    layer: str | int | None = None,
    *,
    outline: BaseGeometry | str | Path | None = None,
    sliver_m2: float = DEFAULT_SLIVER_M2,
    on_step: Callable[[str], None] | None = None,
) -> tuple[BoundaryLayer, QualityReport]:
    """Read ``path`` as the boundaries of ``service`` and check them.

    Each feature's URI comes from ``uri_attr`` or from ``uri_template`` formatted with the
    feature's attributes plus ``id`` and ``name`` (e.g. ``"sip:{id}@psap.example"``).
    Repaired geometry is used and reported; features with no usable polygon or no id are
    left out of the layer (and are errors in the report). Missing attributes raise
    ``LayerError`` naming the ones the file has.
    """
    path = Path(path)
    if uri_attr is not None and uri_template is not None:
        raise LayerError("give uri_attr or uri_template, not both")
    if on_step is not None:
        on_step(f"reading {path.name}")
    geoms, columns, crs = read_features(path, layer)
    n = len(geoms)
    raw_ids = _column(columns, id_attr, "id", path)
    raw_names = _column(columns, name_attr, "name", path)
    ids = [_ident(v) for v in raw_ids]
    names = ["" if v is None else str(v) for v in raw_names]

    uris: list[str | None] | None
    if uri_attr is not None:
        uris = [_ident(v) for v in _column(columns, uri_attr, "URI", path)]
    elif uri_template is not None:
        wanted = set(_template_fields(uri_template)) - {"id", "name"}
        missing = sorted(wanted - set(columns))
        if missing:
            raise LayerError(
                f"{path}: URI template {uri_template!r} names {', '.join(missing)}, "
                f"which the file does not have (attributes: {', '.join(sorted(columns))})"
            )
        uris = []
        for i in range(n):
            values = {k: columns[k][i] for k in wanted}
            if ids[i] is None or any(v is None for v in values.values()):
                uris.append(None)
                continue
            uris.append(uri_template.format_map({**values, "id": ids[i], "name": names[i]}))
    else:
        uris = None

    if isinstance(outline, (str, Path)):
        outline = read_outline(outline)
    report = check_boundaries(
        [i or "" for i in ids], names, geoms, service,
        uris=uris, outline=outline, sliver_m2=sliver_m2, source=str(path), on_step=on_step,
    )
    if uris is None:
        # One finding, not one per feature: the layer as a whole has no URI source.
        report.findings.append(Finding(
            FindingKind.MISSING_URI, Severity.ERROR,
            f"no URI attribute or template given: none of the {n} boundaries has a service URI",
        ))

    # ``id``/``fid`` are feature ids (see read_features), already the boundary's id or noise.
    skip = {id_attr, name_attr, "id", "fid"} | ({uri_attr} if uri_attr else set())
    boundaries: list[Boundary] = []
    for i in range(n):
        geom = report.geometries[i]
        if geom is None or ids[i] is None:
            continue
        attrs = {k: v[i] for k, v in columns.items() if k not in skip}
        uri = uris[i] if uris is not None else None
        boundaries.append(Boundary(ids[i], names[i], uri or "", geom, attrs))
    dropped = n - len(boundaries)
    if dropped:
        log.error("%s: %d of %d features left out of %s (see the quality report)", path, dropped, n, service)
    log.info("%s: %d boundaries for %s (CRS %s)", path, len(boundaries), service, crs or "lon/lat assumed")
    return BoundaryLayer(service, boundaries, name=path.stem), report
