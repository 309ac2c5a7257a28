"""The public 911 status board, sans-I/O: per town, is 911 working, degraded or down, since
when, because of which outages, and what to do instead (the business lines that work, the
nearest staffed fire and police stations, the nearest street fire alarm box).

Inputs (each with ``now``, a POSIX time; no clock inside):

* outages as ``firebox.monitor.detector.Outage.as_dict()`` gives them (``apply_outage``):
  scope ``psap`` (its towns), ``region`` (the towns of every PSAP of it), ``statewide``
  (every town), ``element`` (the PSAPs ``element_psaps`` names for it, else every town:
  a failing ingress can reach any caller). ``confirmed`` is *down*, ``suspected``
  *degraded*, ``cleared`` ends it. An ingress's outage (key ``ingress <name>``) that
  ``element_psaps`` does not tie to PSAPs (one of several ways in, which carriers leave for
  another) makes every town *degraded* at worst:
  some calls may fail until the carrier moves, not every call.
* a PSAP whose calls its alternates take (``set_diverted``: a divert, a full queue) is
  *degraded* for its towns: 911 answers, farther away, perhaps later.
* business-line health from the gateway check (``set_line_health``) and the hours of lines
  and stations (``tick``): what to do instead only lists lines answered now whose route is
  not down, and stations staffed now.

Output: ``records`` (town id -> the published record, a JSON-ready dict), ``version``: an
integer that increases by one exactly when some town's record changes (its status, since,
outages or what to do instead), so that a page can cache its bytes per version; an outage
update that changes no town's record (more calls affected) keeps the version.

Distances are great-circle (haversine, mean Earth radius 6371.0088 km) from the town's
centroid; the nearest candidates are sorted once at construction (numpy), so an update
costs a walk down a short list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, Final

import numpy as np

from firebox.alerting.businesslines import BusinessLine, BusinessLineRegistry, Hours, LineHealth, OwnerKind

__all__ = [
    "BoxInfo",
    "PsapInfo",
    "StationInfo",
    "StatusBoard",
    "TownInfo",
    "TownStatus",
    "board_from_demo",
    "haversine_km",
]

EARTH_RADIUS_KM: Final = 6371.0088
#: Stations sorted per town and kind; beyond these (none staffed now) the whole list is read.
_CANDIDATES: Final = 16


class TownStatus(IntEnum):
    """Worse is higher: a town takes the worst that applies."""

    WORKING = 0
    DEGRADED = 1
    DOWN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


#: Outage state -> what it means for the towns in its scope.
OUTAGE_STATUS: Final[Mapping[str, TownStatus]] = {
    "suspected": TownStatus.DEGRADED,
    "confirmed": TownStatus.DOWN,
}

_SCOPES: Final = frozenset({"psap", "region", "statewide", "element"})


@dataclass(frozen=True, slots=True)
class TownInfo:
    id: str
    name: str
    psap_id: str
    lon: float  # centroid
    lat: float


@dataclass(frozen=True, slots=True)
class PsapInfo:
    id: str
    name: str
    alternates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StationInfo:
    id: str
    kind: str  # "fire" or "police"
    name: str
    address: str
    town: str
    lon: float
    lat: float
    hours: Hours = field(default_factory=Hours.always)


@dataclass(frozen=True, slots=True)
class BoxInfo:
    number: int
    location: str
    town_id: str
    town: str
    lon: float
    lat: float


def haversine_km(lon1: Any, lat1: Any, lon2: Any, lat2: Any) -> Any:
    """Great-circle distance in km (numpy broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _parse_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


@dataclass(slots=True)
class _Open:
    """An open outage as the board keeps it."""

    id: str
    scope: str
    key: str
    status: TownStatus
    start: float
    cause: str


class StatusBoard:
    """See the module's docstring. ``regions``: PSAP id -> region (as the detector's);
    ``element_psaps``: element key -> the PSAP ids it serves; ``box_max_km``: a box farther
    than this from the town's centroid is not offered (no use to someone in the town)."""

    def __init__(
        self,
        towns: Iterable[TownInfo],
        psaps: Iterable[PsapInfo],
        lines: BusinessLineRegistry,
        *,
        regions: Mapping[str, str] | None = None,
        stations: Iterable[StationInfo] = (),
        boxes: Iterable[BoxInfo] = (),
        element_psaps: Mapping[str, Iterable[str]] | None = None,
        box_max_km: float = 5.0,
        now: float = 0.0,
    ) -> None:
        self.towns: dict[str, TownInfo] = {t.id: t for t in towns}
        self.psaps: dict[str, PsapInfo] = {p.id: p for p in psaps}
        unknown = sorted({t.psap_id for t in self.towns.values()} - set(self.psaps))
        if unknown:
            raise ValueError(f"towns name PSAPs not given: {', '.join(unknown)}")
        self.lines = lines
        self.regions = dict(regions or {})
        self.element_psaps = {k: frozenset(v) for k, v in (element_psaps or {}).items()}
        self.box_max_km = box_max_km
        self.stations = list(stations)
        self.boxes = list(boxes)
        self._towns_of_psap: dict[str, list[str]] = {}
        for t in self.towns.values():
            self._towns_of_psap.setdefault(t.psap_id, []).append(t.id)
        self._nearest_precompute()
        self._open: dict[str, _Open] = {}
        self._diverted: dict[str, float] = {}  # PSAP id -> since
        self._health: dict[str, LineHealth] = {}
        self._status: dict[str, TownStatus] = dict.fromkeys(self.towns, TownStatus.WORKING)
        self._since: dict[str, float] = dict.fromkeys(self.towns, now)
        self.version = 0
        self.updated = now
        self.records: dict[str, dict[str, Any]] = {}
        self._publish(now, force=True)

    # --- precomputation -------------------------------------------------------------------

    def _nearest_precompute(self) -> None:
        ids = list(self.towns)
        self._town_ids = ids
        lon = np.array([self.towns[i].lon for i in ids], dtype=float)
        lat = np.array([self.towns[i].lat for i in ids], dtype=float)
        self._near_stations: dict[str, dict[str, list[tuple[int, float]]]] = {i: {} for i in ids}
        for kind in ("fire", "police"):
            idx = np.array([k for k, s in enumerate(self.stations) if s.kind == kind], dtype=int)
            if idx.size == 0 or not ids:
                continue
            slon = np.array([self.stations[k].lon for k in idx])
            slat = np.array([self.stations[k].lat for k in idx])
            d = haversine_km(lon[:, None], lat[:, None], slon[None, :], slat[None, :])
            order = np.argsort(d, axis=1, kind="stable")
            for row, tid in enumerate(ids):
                self._near_stations[tid][kind] = [(int(idx[c]), float(d[row, c])) for c in order[row]]
        self._near_box: dict[str, tuple[int, float] | None] = dict.fromkeys(ids)
        if self.boxes and ids:
            blon = np.array([b.lon for b in self.boxes])
            blat = np.array([b.lat for b in self.boxes])
            for start in range(0, len(ids), 256):  # rows in chunks: bounded memory at any size
                d = haversine_km(lon[start:start + 256, None], lat[start:start + 256, None], blon[None, :], blat[None, :])
                best = np.argmin(d, axis=1)
                for r, b in enumerate(best.tolist()):
                    km = float(d[r, b])
                    self._near_box[ids[start + r]] = (b, km) if km <= self.box_max_km else None

    # --- inputs ---------------------------------------------------------------------------

    def apply_outage(self, outage: Mapping[str, Any], now: float) -> bool:
        """An outage snapshot (``Outage.as_dict()``, or an ``OutageUpdate.outage``); True
        when the version changed. ``ValueError`` names a bad member."""
        for key in ("id", "scope", "key", "state"):
            if key not in outage:
                raise ValueError(f"outage: missing member '{key}'")
        scope, state, oid = str(outage["scope"]), str(outage["state"]), str(outage["id"])
        if scope not in _SCOPES:
            raise ValueError(f"outage {oid}: scope '{scope}' is not one of {', '.join(sorted(_SCOPES))}")
        if state == "cleared":
            self._open.pop(oid, None)
        elif state in OUTAGE_STATUS:
            try:
                start = _parse_time(outage.get("start"))
            except ValueError:
                raise ValueError(f"outage {oid}: start '{outage.get('start')}' is not an ISO 8601 time") from None
            status = OUTAGE_STATUS[state]
            key = str(outage["key"])
            if scope == "element" and key.startswith("ingress ") and key not in self.element_psaps:
                status = min(status, TownStatus.DEGRADED)
            self._open[oid] = _Open(oid, scope, str(outage["key"]), status,
                                    now if start is None else start, str(outage.get("cause") or ""))  # fmt: skip
        else:
            raise ValueError(f"outage {oid}: state '{state}' is not suspected, confirmed or cleared")
        return self._publish(now)

    def set_diverted(self, psap_id: str, diverted: bool, now: float) -> bool:
        """Calls for ``psap_id`` go to its alternates (or no longer do)."""
        if psap_id not in self.psaps:
            raise ValueError(f"unknown PSAP '{psap_id}'")
        if diverted:
            self._diverted.setdefault(psap_id, now)
        else:
            self._diverted.pop(psap_id, None)
        return self._publish(now)

    def set_line_health(self, number: str, health: LineHealth, now: float) -> bool:
        """A business line's gateway route (``GatewayCheck``'s ``LineChange.new``)."""
        line = self.lines.get(number)
        if line is None:
            raise ValueError(f"'{number}' is not a business line of the registry")
        self._health[line.number] = health
        return self._publish(now)

    def tick(self, now: float) -> bool:
        """Hours of lines and stations move on; call every minute or so."""
        return self._publish(now)

    # --- outputs --------------------------------------------------------------------------

    def status(self, town_id: str) -> TownStatus:
        return self._status[town_id]

    def towns_with(self, status: TownStatus) -> list[str]:
        """Town ids with ``status``, sorted."""
        return sorted(t for t, s in self._status.items() if s is status)

    def published(self) -> tuple[int, float, dict[str, dict[str, Any]]]:
        """(version, when it was reached, records) read together: the three are replaced
        at once, so a reader in another thread never sees a mix of two versions."""
        return self._snapshot

    def summary(self) -> dict[str, int]:
        out = {s.label: 0 for s in TownStatus}
        for s in self._status.values():
            out[s.label] += 1
        return out

    def document(self) -> dict[str, Any]:
        """The whole board (``/status/status.json``): towns not working first (down, then
        degraded), then by name."""
        version, updated, records = self._snapshot
        towns = sorted(records.values(), key=lambda r: (-TownStatus[r["status"].upper()], r["name"], r["id"]))
        counts = {s.label: 0 for s in TownStatus}
        for r in towns:
            counts[r["status"]] += 1
        return {"version": version, "updated": _iso(updated), "summary": counts, "towns": towns}

    # --- evaluation -----------------------------------------------------------------------

    def _towns_of(self, o: _Open) -> Iterable[str]:
        if o.scope == "statewide":
            return self.towns
        if o.scope == "psap":
            return self._towns_of_psap.get(o.key, ())
        if o.scope == "region":
            return [t for p, r in self.regions.items() if r == o.key for t in self._towns_of_psap.get(p, ())]
        psaps = self.element_psaps.get(o.key)
        if psaps is None:
            return self.towns
        return [t for p in psaps for t in self._towns_of_psap.get(p, ())]

    def _evaluate(self) -> dict[str, tuple[TownStatus, float | None, list[str]]]:
        """Per town: status, the start of what made it so, the outage ids."""
        worst: dict[str, tuple[TownStatus, float | None, list[str]]] = {
            t: (TownStatus.WORKING, None, []) for t in self.towns
        }
        for o in sorted(self._open.values(), key=lambda o: (o.start, o.id)):
            for t in self._towns_of(o):
                status, start, ids = worst[t]
                ids.append(o.id)
                if o.status > status:
                    worst[t] = (o.status, o.start, ids)
                elif o.status == status and start is not None:
                    worst[t] = (status, min(start, o.start), ids)
        for psap_id, since in self._diverted.items():
            for t in self._towns_of_psap.get(psap_id, ()):
                status, start, ids = worst[t]
                if status < TownStatus.DEGRADED:
                    worst[t] = (TownStatus.DEGRADED, since, ids)
        return worst

    def _publish(self, now: float, *, force: bool = False) -> bool:
        evaluated = self._evaluate()
        for tid, (status, start, _ids) in evaluated.items():
            if status is not self._status[tid]:
                # Since when: the start of the outage that made it so; back to working: now.
                self._since[tid] = start if start is not None and status is not TownStatus.WORKING else now
                self._status[tid] = status
            elif start is not None and status is not TownStatus.WORKING:
                self._since[tid] = start  # an earlier outage of the same weight now counts
        diverted = {t for p in self._diverted for t in self._towns_of_psap.get(p, ())}
        records = {
            tid: self._record(tid, status, self._since[tid], ids, tid in diverted, now)
            for tid, (status, _start, ids) in evaluated.items()
        }
        if not force and records == self.records:
            return False
        self.version += 1
        self.updated = now
        self.records = records
        self._snapshot = (self.version, now, records)
        return True

    def _record(
        self, tid: str, status: TownStatus, since: float, ids: list[str], diverted: bool, now: float
    ) -> dict[str, Any]:
        town = self.towns[tid]
        psap = self.psaps[town.psap_id]
        lines = self._lines_for(town, now)
        fire = self._station(tid, "fire", now)
        police = self._station(tid, "police", now)
        box = self._box(tid)
        return {
            "id": tid, "name": town.name, "status": status.label, "since": _iso(since),
            "psap": {"id": psap.id, "name": psap.name}, "outages": ids,
            "message": _message(town.name, status, psap, diverted, box is not None),
            "instead": {"business_lines": lines, "fire_station": fire, "police_station": police, "alarm_box": box},
        }  # fmt: skip

    def _psap_down(self, psap_id: str) -> bool:
        return any(self._status[t] is TownStatus.DOWN for t in self._towns_of_psap.get(psap_id, ()))

    def _lines_for(self, town: TownInfo, now: float) -> list[dict[str, Any]]:
        """Lines that work now: the town's PSAP's, then its alternates' (a PSAP that is
        itself down after those that are not), then agency lines for the town."""
        psaps = [town.psap_id, *self.psaps[town.psap_id].alternates]
        psaps = sorted(dict.fromkeys(psaps), key=lambda p: self._psap_down(p) if p in self.psaps else True)
        candidates: list[BusinessLine] = [line for p in psaps for line in self.lines.for_owner(p)]
        candidates += [line for line in self.lines.for_town(town.id) if line.kind is OwnerKind.AGENCY]
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for line in candidates:
            if line.number in seen or not line.hours.is_open(now):
                continue
            if self._health.get(line.number, LineHealth.UNKNOWN) is LineHealth.DOWN:
                continue
            seen.add(line.number)
            out.append({**line.as_dict(), "route": self._health.get(line.number, LineHealth.UNKNOWN).value})
        return out

    def _station(self, tid: str, kind: str, now: float) -> dict[str, Any] | None:
        ranked = self._near_stations[tid].get(kind, [])
        for k, km in ranked:
            s = self.stations[k]
            if s.hours.is_open(now):
                return {"id": s.id, "name": s.name, "address": s.address, "town": s.town, "km": round(km, 1),
                        "lon": s.lon, "lat": s.lat, "hours": s.hours.text}  # fmt: skip
        return None

    def _box(self, tid: str) -> dict[str, Any] | None:
        near = self._near_box[tid]
        if near is None:
            return None
        b = self.boxes[near[0]]
        return {"number": b.number, "location": b.location, "town": b.town, "km": round(near[1], 1),
                "lon": b.lon, "lat": b.lat}  # fmt: skip

    def nearest_station(self, town_id: str, kind: str, now: float) -> tuple[StationInfo, float] | None:
        """The nearest station of ``kind`` staffed at ``now`` and its distance (km)."""
        for k, km in self._near_stations[town_id].get(kind, []):
            if self.stations[k].hours.is_open(now):
                return self.stations[k], km
        return None

    def nearest_box(self, town_id: str) -> tuple[BoxInfo, float] | None:
        near = self._near_box[town_id]
        return None if near is None else (self.boxes[near[0]], near[1])


def _message(name: str, status: TownStatus, psap: PsapInfo, diverted: bool, box: bool) -> str:
    """What to tell the public. 911 stays the first thing to try: a call that connects is
    answered, by an alternate PSAP if need be."""
    town = name.title()
    if status is TownStatus.DOWN:
        return (f"911 calls from {town} may not get through. Call 911 first; if it does not connect, "
                "call a business line below, or go to the nearest staffed fire or police station."
                + (" For a fire, pull the fire alarm box." if box else ""))  # fmt: skip
    if status is TownStatus.DEGRADED:
        extra = f" Calls are being answered by the backup of {psap.name}." if diverted else ""
        return (f"911 in {town} is working with problems: calls may take longer to answer.{extra} "
                "Keep calling 911; if it does not connect, call a business line below.")  # fmt: skip
    return f"911 is working in {town}. In an emergency, call 911."


def board_from_demo(
    state: Any,
    lines: BusinessLineRegistry | None = None,
    *,
    regions: Mapping[str, str] | None = None,
    now: float = 0.0,
    **options: Any,
) -> StatusBoard:
    """A board for a ``firebox.demo.state.DemoState``: town centroids, its PSAPs (regions:
    their counties unless given), stations (police headquarters and fire stations are
    career-staffed around the clock), alarm boxes; lines: each PSAP's business line when no
    registry is given."""
    import shapely

    towns = []
    for t in state.towns:
        c = shapely.centroid(t.geometry)
        towns.append(TownInfo(t.id, t.title, t.psap_id, float(c.x), float(c.y)))
    psaps = [PsapInfo(p.id, p.name, tuple(p.alternates)) for p in state.psaps]
    if lines is None:
        lines = BusinessLineRegistry(
            BusinessLine(p.business_line, p.id, f"{p.name} (administrative line)", kind=OwnerKind.PSAP, towns=tuple(p.towns))
            for p in state.psaps
        )
    stations = [StationInfo(s.id, s.kind, s.name.title(), s.address, s.town.title(), s.lon, s.lat) for s in state.stations]
    boxes = [BoxInfo(b.number, b.location, b.town_id, b.town.title(), b.lon, b.lat) for b in state.boxes]
    return StatusBoard(
        towns, psaps, lines, regions=regions if regions is not None else {p.id: p.county for p in state.psaps},
        stations=stations, boxes=boxes, now=now, **options,
    )  # fmt: skip

