"""Spatial index of service boundaries (the data behind an ECRF, NENA i3 section 4.3).

One ``BoundaryLayer`` per service URN (``urn:service:sos``, ``urn:service:sos.police``...),
each an STRtree over valid WGS84 polygons. Point lookups filter STRtree bounding-box
candidates with prepared-geometry ``contains_xy`` (vectorized over any number of points);
a point exactly on a shared border goes to the lowest-indexed boundary that touches it, so
answers are deterministic. For an area (circle, ellipse, arc band, polygon) the boundary with
the greatest overlap wins, as NENA i3 asks of an ECRF given a shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from firebox.location.shapes import Point, Shape, to_geometry


@dataclass(frozen=True, slots=True)
class Boundary:
    """One service boundary: the area a PSAP (or responding agency) serves for a service.

    ``id`` is unique within its layer and becomes the LoST ``sourceId`` and boundary key;
    ``uri`` is the service URI a LoST mapping returns (a PSAP's SIP URI or queue).
    """

    id: str
    name: str
    uri: str
    geometry: BaseGeometry
    attrs: Mapping[str, Any] = field(default_factory=dict)


class BoundaryLayer:
    """The boundaries of one service, indexed. Geometries must already be valid lon/lat
    (``firebox.gis.quality`` repairs and reports; this class does not silently fix)."""

    def __init__(self, service: str, boundaries: Sequence[Boundary], *, name: str | None = None):
        self.service = service
        self.name = name or service
        self.boundaries: list[Boundary] = list(boundaries)
        self._by_id = {b.id: i for i, b in enumerate(self.boundaries)}
        self.geometries = np.array([b.geometry for b in self.boundaries], dtype=object)
        shapely.prepare(self.geometries)
        self.tree = STRtree(self.geometries)

    def __len__(self) -> int:
        return len(self.boundaries)

    def by_id(self, boundary_id: str) -> Boundary | None:
        i = self._by_id.get(boundary_id)
        return None if i is None else self.boundaries[i]

    def locate_xy(self, lons: Iterable[float], lats: Iterable[float]) -> np.ndarray:
        """Index of the boundary containing each (lon, lat), or -1: vectorized."""
        xs = np.asarray(lons, dtype=float)
        ys = np.asarray(lats, dtype=float)
        out = np.full(xs.shape, -1, dtype=np.int64)
        if xs.size == 0 or len(self.boundaries) == 0:
            return out
        pts = shapely.points(xs, ys)
        pi, gi = self.tree.query(pts)  # bounding-box candidates only
        if pi.size == 0:
            return out
        hit = shapely.contains_xy(self.geometries[gi], xs[pi], ys[pi])
        # Reverse so that, on fancy assignment, the lowest candidate index is written last.
        hp, hg = pi[hit][::-1], gi[hit][::-1]
        order = np.lexsort((-hg, hp))  # stable: for each point, highest tree index first
        out[hp[order]] = hg[order]
        missing = out < 0
        if missing.any():
            # A point exactly on a border is not "contained"; intersects counts it.
            mask = missing[pi]
            cand_p, cand_g = pi[mask], gi[mask]
            if cand_p.size:
                edge = shapely.intersects_xy(self.geometries[cand_g], xs[cand_p], ys[cand_p])
                ep, eg = cand_p[edge], cand_g[edge]
                order = np.lexsort((-eg, ep))
                out[ep[order]] = eg[order]
        return out

    def locate_point(self, lon: float, lat: float) -> int:
        """Index of the boundary containing one point, or -1."""
        cands = self.tree.query(shapely.Point(lon, lat))
        if cands.size == 0:
            return -1
        cands = np.sort(cands)
        geoms = self.geometries[cands]
        hit = shapely.contains_xy(geoms, lon, lat)
        if not hit.any():
            hit = shapely.intersects_xy(geoms, lon, lat)
            if not hit.any():
                return -1
        return int(cands[np.argmax(hit)])

    def locate_geometry(self, geom: BaseGeometry) -> int:
        """Index of the boundary for ``geom``: containment for a point, greatest overlap
        (by area; by length for a line) for anything else; -1 when nothing intersects."""
        if geom.geom_type == "Point":
            return self.locate_point(geom.x, geom.y)
        cands = self.tree.query(geom, predicate="intersects")
        if cands.size == 0:
            return -1
        cands = np.sort(cands)
        if cands.size == 1:
            return int(cands[0])
        inter = shapely.intersection(self.geometries[cands], geom)
        measure = shapely.area(inter)
        if not measure.any():
            measure = shapely.length(inter)
        return int(cands[int(np.argmax(measure))])

    def locate(self, shape: Shape | BaseGeometry) -> int:
        """Index of the boundary for a PIDF-LO shape or a shapely geometry, or -1."""
        if isinstance(shape, Point):
            return self.locate_point(shape.lon, shape.lat)
        geom = shape if isinstance(shape, BaseGeometry) else to_geometry(shape)
        return self.locate_geometry(geom)

    def nearest(self, lon: float, lat: float, max_degrees: float) -> int:
        """Index of the nearest boundary within ``max_degrees`` (planar), or -1."""
        idx = self.tree.query_nearest(shapely.Point(lon, lat), max_distance=max_degrees)
        return int(np.min(idx)) if idx.size else -1

    def extent(self) -> BaseGeometry:
        """Union of every boundary (for coverage checks and LoST redirection)."""
        return shapely.union_all(self.geometries)


class ServiceIndex:
    """All boundary layers of one ECRF, by service URN."""

    def __init__(self, layers: Iterable[BoundaryLayer] = ()):
        self.layers: dict[str, BoundaryLayer] = {}
        for layer in layers:
            self.add(layer)

    def add(self, layer: BoundaryLayer) -> None:
        if layer.service in self.layers:
            raise ValueError(f"two boundary layers for service {layer.service}")
        self.layers[layer.service] = layer

    def services(self) -> list[str]:
        return sorted(self.layers)

    def layer(self, service: str) -> BoundaryLayer | None:
        return self.layers.get(service)

    def lookup(self, service: str, shape: Shape | BaseGeometry) -> Boundary | None:
        """The boundary serving ``shape`` for exactly ``service``, or None."""
        layer = self.layers.get(service)
        if layer is None:
            return None
        i = layer.locate(shape)
        return None if i < 0 else layer.boundaries[i]
