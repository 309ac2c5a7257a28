"""Routes of the demo's local page (see ``static/``): state, towns as GeoJSON, live stats
(LoST lookups per PSAP; SIP calls per PSAP queue from the PSAP agents and the ESRP).

The towns are the finest boundary layer the node has (police, else the PSAP layer); each is
coloured by the PSAP the ``urn:service:sos`` layer gives its representative point, so the
page shows exactly what the ECRF would answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import shapely
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

if TYPE_CHECKING:
    from firebox.node import Node

STATIC = Path(__file__).parent / "static"
#: Simplification tolerance for drawing (degrees, about 20 m): the page is a picture, not data.
DRAW_TOLERANCE = 0.0002


def towns_geojson(node: Node) -> dict[str, Any]:
    index = node.index
    layer = index.layer("urn:service:sos.police") or index.layer("urn:service:sos")
    sos = index.layer("urn:service:sos")
    psap_by_uri = {p.uri: p.id for p in node.deployment.psaps}
    features = []
    if layer is not None:
        reps = shapely.point_on_surface(layer.geometries)
        psap_idx = (
            sos.locate_xy(shapely.get_x(reps), shapely.get_y(reps)) if sos is not None else None
        )
        for i, b in enumerate(layer.boundaries):
            psap_uri = sos.boundaries[psap_idx[i]].uri if sos is not None and psap_idx[i] >= 0 else None
            geom = shapely.simplify(b.geometry, DRAW_TOLERANCE, preserve_topology=True)
            features.append(
                {
                    "type": "Feature",
                    "properties": {
                        "id": b.id,
                        "name": b.name,
                        "population": b.attrs.get("population"),
                        "psap_id": psap_by_uri.get(psap_uri or "", None),
                    },
                    "geometry": shapely.geometry.mapping(geom),
                }
            )
    return {"type": "FeatureCollection", "features": features}


def page_routes(node: Node) -> list[Any]:
    dep = node.deployment
    cache: dict[str, Any] = {}

    def bbox() -> list[float]:
        layer = node.index.layer("urn:service:sos") or next(iter(node.index.layers.values()), None)
        if layer is None:
            return [-180.0, -90.0, 180.0, 90.0]
        return list(shapely.total_bounds(layer.geometries))

    async def index(_: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def state(_: Request) -> Response:
        return JSONResponse(
            {
                "authority": dep.authority.name,
                "bbox": bbox(),
                "services": node.index.services(),
                "psaps": [{"id": p.id, "name": p.name, "uri": p.uri} for p in dep.psaps],
            }
        )

    async def towns(_: Request) -> Response:
        if "towns" not in cache:
            cache["towns"] = towns_geojson(node)
        return JSONResponse(cache["towns"])

    async def stats(_: Request) -> Response:
        from firebox.node import call_totals, psap_call_counts

        s = node.stats
        calls = {r["id"]: r for r in psap_call_counts(node)}
        return JSONResponse(
            {
                "towns": len(node.index.layer("urn:service:sos.police") or []),
                "queries": s.answered,
                "errors": s.errors,
                "sip": node.core is not None or node.agents is not None,
                "calls": call_totals(node),
                "psaps": [
                    {
                        "id": p.id,
                        "name": p.name,
                        "towns": len(p.towns),
                        "business_line": p.business_line,
                        "queries": s.per_uri.get(p.uri, 0),
                        "calls": {k: v for k, v in calls[p.id].items() if k not in ("id", "name", "uri")},
                    }
                    for p in dep.psaps
                ],
            }
        )

    return [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/towns.geojson", towns),
        Route("/api/stats", stats),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
