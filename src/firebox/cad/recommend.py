"""Unit recommendation: the nearest available unit of the right kind for each need of an
incident, with the candidates and the reason each was or was not chosen.

An incident's needs come from its response plan (``RESPONSE_PLANS``, a table by subtype, and
``DEFAULT_PLANS`` by type): a list of slots, each a set of unit kinds that can fill it (a
structure fire needs an engine and a ladder; a medical call an ambulance). A slot already
filled by a unit committed to the incident is not recommended again.

Distance is the geodesic distance on the WGS84 ellipsoid (``pyproj.Geod``) from the unit's
position to the incident's point: a straight-line proxy for travel time that needs no road
graph. Ties (same distance to the millimetre) go to the smaller unit id, so the same state
always gives the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pyproj import Geod

from firebox.cad.model import (
    COMMITTED,
    Incident,
    IncidentSubtype,
    IncidentType,
    Unit,
    UnitKind,
    UnitStatus,
)

_GEOD = Geod(ellps="WGS84")

Slot = frozenset[UnitKind]

DEFAULT_PLANS: dict[IncidentType, tuple[Slot, ...]] = {
    IncidentType.FIRE: (frozenset({UnitKind.ENGINE}),),
    IncidentType.EMS: (frozenset({UnitKind.AMBULANCE}),),
    IncidentType.POLICE: (frozenset({UnitKind.POLICE_CAR}),),
}

RESPONSE_PLANS: dict[IncidentSubtype, tuple[Slot, ...]] = {
    IncidentSubtype.STRUCTURE_FIRE: (
        frozenset({UnitKind.ENGINE}), frozenset({UnitKind.ENGINE}),
        frozenset({UnitKind.LADDER}), frozenset({UnitKind.CHIEF}),
    ),
    # A box pulled at a street corner: one engine and a ladder until someone sees a fire.
    IncidentSubtype.ALARM_BOX: (frozenset({UnitKind.ENGINE}), frozenset({UnitKind.LADDER})),
    IncidentSubtype.FIRE_ALARM: (frozenset({UnitKind.ENGINE}), frozenset({UnitKind.LADDER})),
    IncidentSubtype.VEHICLE_FIRE: (frozenset({UnitKind.ENGINE}),),
    IncidentSubtype.BRUSH_FIRE: (frozenset({UnitKind.ENGINE}),),
    IncidentSubtype.MEDICAL: (frozenset({UnitKind.AMBULANCE}),),
    # Cardiac arrest: the closest engine often arrives first with a defibrillator.
    IncidentSubtype.CARDIAC_ARREST: (
        frozenset({UnitKind.AMBULANCE}), frozenset({UnitKind.ENGINE, UnitKind.RESCUE}),
    ),
    IncidentSubtype.TRAFFIC_COLLISION: (
        frozenset({UnitKind.POLICE_CAR}), frozenset({UnitKind.AMBULANCE}),
    ),
}  # fmt: skip


def plan_for(incident: Incident) -> tuple[Slot, ...]:
    return RESPONSE_PLANS.get(incident.subtype) or DEFAULT_PLANS[incident.type]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One unit considered for a slot: its distance in metres (None when either end has no
    position) and, when it was not eligible, why."""

    unit_id: str
    kind: UnitKind
    status: UnitStatus
    distance_m: float | None
    excluded: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "unit": self.unit_id, "kind": self.kind.value, "status": self.status.value,
            "distance_m": None if self.distance_m is None else round(self.distance_m, 1),
            "excluded": self.excluded,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class SlotChoice:
    """One need of the incident: the kinds that fill it, the unit recommended (None when no
    unit is eligible, or when ``filled_by`` a unit already committed), and the candidates
    in rank order (eligible first, nearest first), excluded ones after them."""

    kinds: tuple[UnitKind, ...]
    unit_id: str | None
    filled_by: str | None
    candidates: tuple[Candidate, ...]
    reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "kinds": [k.value for k in self.kinds], "unit": self.unit_id,
            "filled_by": self.filled_by, "reason": self.reason,
            "candidates": [c.to_json() for c in self.candidates],
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Recommendation:
    incident_id: str
    slots: tuple[SlotChoice, ...] = field(default_factory=tuple)

    @property
    def unit_ids(self) -> list[str]:
        """The units recommended, in slot order."""
        return [s.unit_id for s in self.slots if s.unit_id is not None]

    def to_json(self) -> dict[str, object]:
        return {
            "incident": self.incident_id, "units": self.unit_ids,
            "slots": [s.to_json() for s in self.slots],
        }  # fmt: skip


def distances(incident: Incident, units: Sequence[Unit]) -> list[float | None]:
    """Geodesic metres from each unit to the incident's point (None without positions);
    one vectorised ``Geod.inv`` call for all units."""
    point = incident.location.point
    placed = [i for i, u in enumerate(units) if u.position is not None]
    out: list[float | None] = [None] * len(units)
    if point is None or not placed:
        return out
    lons = np.array([units[i].position.lon for i in placed])  # type: ignore[union-attr]
    lats = np.array([units[i].position.lat for i in placed])  # type: ignore[union-attr]
    _, _, dist = _GEOD.inv(lons, lats, np.full(lons.shape, point.lon), np.full(lats.shape, point.lat))
    for i, d in zip(placed, np.atleast_1d(dist).tolist()):
        out[i] = float(d)
    return out


def recommend(incident: Incident, units: Iterable[Unit]) -> Recommendation:
    """For each slot of the incident's plan, the nearest available unit of a kind that fills
    it. A unit is recommended for one slot at most; units committed to this incident fill
    their slots first."""
    pool = sorted(units, key=lambda u: u.id)
    dist = dict(zip((u.id for u in pool), distances(incident, pool)))
    committed = [
        u for u in pool if u.incident_id == incident.id and u.status in COMMITTED
    ]
    taken: set[str] = set()
    choices: list[SlotChoice] = []
    for slot in plan_for(incident):
        kinds = tuple(sorted(slot))
        filler = next((u for u in committed if u.kind in slot and u.id not in taken), None)
        if filler is not None:
            taken.add(filler.id)
            choices.append(SlotChoice(kinds, None, filler.id, (), f"{filler.id} is {filler.status.value}"))
            continue
        candidates = [
            Candidate(u.id, u.kind, u.status, dist[u.id], _excluded(u, dist[u.id], taken, incident))
            for u in pool
            if u.kind in slot
        ]
        # Eligible first, then nearest, then the smaller id: a total order, so deterministic.
        candidates.sort(key=lambda c: (
            c.excluded is not None,
            c.distance_m if c.distance_m is not None else float("inf"),
            c.unit_id,
        ))  # fmt: skip
        best = candidates[0] if candidates and candidates[0].excluded is None else None
        if best is not None:
            taken.add(best.unit_id)
            d = best.distance_m
            reason = (
                f"nearest available {best.kind.value}" + (f", {d / 1000:.2f} km" if d is not None else "")
            )
        elif incident.location.point is None:
            reason = "the incident has no point to measure from: choose by hand"
        else:
            reason = f"no available {' or '.join(k.value for k in kinds)}"
        choices.append(SlotChoice(kinds, best.unit_id if best else None, None, tuple(candidates), reason))
    return Recommendation(incident.id, tuple(choices))


def _excluded(unit: Unit, distance: float | None, taken: set[str], incident: Incident) -> str | None:
    if unit.status is not UnitStatus.AVAILABLE:
        where = f" to {unit.incident_id}" if unit.incident_id else ""
        return f"not available ({unit.status.value}{where})"
    if unit.id in taken:
        return "recommended for another need of this incident"
    if distance is None:
        return "no position" if unit.position is None else "the incident has no point"
    return None
