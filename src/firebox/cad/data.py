"""Tables the CAD is given: the fire alarm box registry and the units at their stations.

The CAD keeps no geography of its own: a box number is looked up in a table passed in (the
demo state's boxes, or a real registry such as Boston's ``fire_alarm_boxes.geojson``), and
units are placed at stations that someone else drew.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from firebox.cad.model import CadError, Unit, UnitKind, UnitStatus
from firebox.location.shapes import Point


@dataclass(frozen=True, slots=True)
class AlarmBox:
    """A street fire alarm box: its number, where it stands ("CHARTER at SALEM STS"), its
    point, the fire district that answers it, and its response assignment (the running
    card that says which companies go: Boston's ``RESPONDARE``)."""

    number: str
    location: str
    point: Point
    district: str | None = None
    town: str | None = None
    assignment: str | None = None


BoxTable = Mapping[str, AlarmBox]


class _DemoBox(Protocol):
    number: int
    location: str
    district: str
    town: str
    lon: float
    lat: float


def boxes_from_demo(boxes: Iterable[_DemoBox]) -> dict[str, AlarmBox]:
    """The box table of a generated demo state (``DemoState.boxes``)."""
    return {
        str(b.number): AlarmBox(str(b.number), b.location, Point(lat=b.lat, lon=b.lon), b.district, b.town)
        for b in boxes
    }


def load_boxes_geojson(
    path: str | Path,
    *,
    number_field: str = "BOX",
    location_field: str = "LOCATION",
    district_field: str | None = "DISTRICT",
    assignment_field: str | None = "RESPONDARE",
    town: str | None = None,
) -> dict[str, AlarmBox]:
    """A box table from a GeoJSON file of Point features (the field names default to the
    City of Boston's box registry). A feature without a number or a point raises
    ``CadError`` naming it; a number seen twice keeps the first and is not an error (the
    registry lists some boxes at two mounts)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CadError(f"{path}: cannot read a GeoJSON box table: {exc}") from exc
    table: dict[str, AlarmBox] = {}
    for n, feat in enumerate(doc.get("features") or []):
        props: dict[str, Any] = feat.get("properties") or {}
        geom = feat.get("geometry") or {}
        number = str(props.get(number_field) or "").strip()
        if not number or geom.get("type") != "Point":
            raise CadError(f"{path}: feature {n}: needs a {number_field} and a Point geometry")
        lon, lat = (float(c) for c in geom["coordinates"][:2])
        district = props.get(district_field) if district_field else None
        assignment = str(props.get(assignment_field) or "").strip() if assignment_field else ""
        table.setdefault(number, AlarmBox(
            number, str(props.get(location_field) or "").strip(), Point(lat=lat, lon=lon),
            str(district).strip() if district else None, town, assignment or None,
        ))  # fmt: skip
    return table


@dataclass(frozen=True, slots=True)
class Station:
    """A fire or police station: where units are housed."""

    id: str
    kind: str  # "fire" or "police"
    name: str
    lon: float
    lat: float


def load_stations_geojson(path: str | Path) -> list[Station]:
    """Stations from a GeoJSON file of Point features with ``id``, ``kind`` (fire or police)
    and ``name`` (as the demo state writes ``stations.geojson``). A feature without them
    raises ``CadError`` naming it."""
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CadError(f"{path}: cannot read a GeoJSON station table: {exc}") from exc
    stations: list[Station] = []
    for n, feat in enumerate(doc.get("features") or []):
        props: dict[str, Any] = feat.get("properties") or {}
        geom = feat.get("geometry") or {}
        kind = str(props.get("kind") or "").strip().lower()
        if not props.get("id") or kind not in ("fire", "police") or geom.get("type") != "Point":
            raise CadError(f"{path}: feature {n}: needs an id, a kind (fire or police) and a Point geometry")
        lon, lat = (float(c) for c in geom["coordinates"][:2])
        stations.append(Station(str(props["id"]), kind, str(props.get("name") or props["id"]), lon, lat))
    return stations


class _DemoStation(Protocol):
    id: str
    kind: str  # "fire" or "police"
    name: str
    lon: float
    lat: float


def units_from_stations(stations: Iterable[_DemoStation]) -> list[Unit]:
    """A fleet placed at the demo state's stations, numbered in station order: every fire
    station has an engine and an ambulance, the first of each town (``...-1``) also a ladder;
    every police station two cars. All start available at their station."""
    units: list[Unit] = []
    counters: dict[UnitKind, int] = {}

    def add(kind: UnitKind, prefix: str, station: _DemoStation) -> None:
        counters[kind] = counters.get(kind, 0) + 1
        uid = f"{prefix}{counters[kind]}"
        units.append(Unit(
            id=uid, kind=kind, station=station.id, status=UnitStatus.AVAILABLE,
            position=Point(lat=station.lat, lon=station.lon), name=f"{kind.value.title()} {counters[kind]}",
        ))  # fmt: skip

    for s in stations:
        if s.kind == "fire":
            add(UnitKind.ENGINE, "E", s)
            if s.id.endswith("-1"):
                add(UnitKind.LADDER, "L", s)
            add(UnitKind.AMBULANCE, "A", s)
        elif s.kind == "police":
            add(UnitKind.POLICE_CAR, "P", s)
            add(UnitKind.POLICE_CAR, "P", s)
    return units
