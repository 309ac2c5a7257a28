"""The CAD domain: incidents and units, their states and the transitions between them.

Sans-I/O: nothing here reads a clock, a file or a socket. Every change takes the time it
happens (``at``, an aware UTC ``datetime``) and who did it (``actor``), and is appended to the
incident's timeline, so that the timeline alone tells the incident's story.

States are enums and the allowed moves between them are tables (``INCIDENT_TRANSITIONS``,
``UNIT_TRANSITIONS``): a move that is not in the table raises ``TransitionError`` naming the
record, both states, and the moves that would have been allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from firebox.location.civic import CIVIC_ELEMENTS, CivicAddress
from firebox.location.shapes import Point


class CadError(ValueError):
    """A request the CAD refuses; ``str()`` says what and why."""


class NotFound(CadError):
    """No incident, unit or box by that identifier."""


class TransitionError(CadError):
    """A state change that the transition table does not allow."""


# --- incident types -------------------------------------------------------------------------


class IncidentType(StrEnum):
    FIRE = "fire"
    EMS = "ems"
    POLICE = "police"


class IncidentSubtype(StrEnum):
    STRUCTURE_FIRE = "structure fire"
    VEHICLE_FIRE = "vehicle fire"
    BRUSH_FIRE = "brush fire"
    ALARM_BOX = "alarm box"
    FIRE_ALARM = "fire alarm"
    MEDICAL = "medical"
    CARDIAC_ARREST = "cardiac arrest"
    TRAFFIC_COLLISION = "traffic collision"
    ASSAULT = "assault"
    BURGLARY = "burglary"
    DISTURBANCE = "disturbance"
    OTHER = "other"


#: The incident types a subtype may be filed under (a traffic collision is a police or an
#: EMS incident depending on injuries; ``OTHER`` goes anywhere).
SUBTYPE_TYPES: dict[IncidentSubtype, frozenset[IncidentType]] = {
    IncidentSubtype.STRUCTURE_FIRE: frozenset({IncidentType.FIRE}),
    IncidentSubtype.VEHICLE_FIRE: frozenset({IncidentType.FIRE}),
    IncidentSubtype.BRUSH_FIRE: frozenset({IncidentType.FIRE}),
    IncidentSubtype.ALARM_BOX: frozenset({IncidentType.FIRE}),
    IncidentSubtype.FIRE_ALARM: frozenset({IncidentType.FIRE}),
    IncidentSubtype.MEDICAL: frozenset({IncidentType.EMS}),
    IncidentSubtype.CARDIAC_ARREST: frozenset({IncidentType.EMS}),
    IncidentSubtype.TRAFFIC_COLLISION: frozenset({IncidentType.POLICE, IncidentType.EMS}),
    IncidentSubtype.ASSAULT: frozenset({IncidentType.POLICE}),
    IncidentSubtype.BURGLARY: frozenset({IncidentType.POLICE}),
    IncidentSubtype.DISTURBANCE: frozenset({IncidentType.POLICE}),
    IncidentSubtype.OTHER: frozenset(IncidentType),
}


def check_type(type_: IncidentType, subtype: IncidentSubtype) -> None:
    if type_ not in SUBTYPE_TYPES[subtype]:
        allowed = ", ".join(sorted(SUBTYPE_TYPES[subtype]))
        raise CadError(f"subtype: {subtype.value!r} is not a {type_.value} incident (it is: {allowed})")


def check_priority(priority: int) -> int:
    """Priority 1 (most urgent) to 5."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 5:
        raise CadError(f"priority: must be an integer from 1 (most urgent) to 5, not {priority!r}")
    return priority


# --- states and transition tables --------------------------------------------------------------


class IncidentStatus(StrEnum):
    NEW = "new"
    DISPATCHED = "dispatched"
    ON_SCENE = "on scene"
    CLOSED = "closed"


#: Allowed incident moves. A new incident may be closed without a dispatch (a false alarm, a
#: duplicate); a closed incident stays closed (a new call makes a new incident, linked later).
INCIDENT_TRANSITIONS: dict[IncidentStatus, frozenset[IncidentStatus]] = {
    IncidentStatus.NEW: frozenset({IncidentStatus.DISPATCHED, IncidentStatus.CLOSED}),
    IncidentStatus.DISPATCHED: frozenset({IncidentStatus.ON_SCENE, IncidentStatus.CLOSED}),
    IncidentStatus.ON_SCENE: frozenset({IncidentStatus.CLOSED}),
    IncidentStatus.CLOSED: frozenset(),
}


class UnitKind(StrEnum):
    ENGINE = "engine"
    LADDER = "ladder"
    RESCUE = "rescue"
    AMBULANCE = "ambulance"
    POLICE_CAR = "police car"
    CHIEF = "chief"


class UnitStatus(StrEnum):
    AVAILABLE = "available"
    DISPATCHED = "dispatched"
    EN_ROUTE = "en route"
    ON_SCENE = "on scene"
    CLEARED = "cleared"  # cleared from the scene, returning
    OUT_OF_SERVICE = "out of service"


#: Allowed unit moves. A dispatched unit may be cancelled before it rolls (back to available)
#: or on the way (cleared); a unit may report on scene without having reported en route (the
#: button is often skipped); a returning (cleared) unit may be sent to a new incident.
UNIT_TRANSITIONS: dict[UnitStatus, frozenset[UnitStatus]] = {
    UnitStatus.AVAILABLE: frozenset({UnitStatus.DISPATCHED, UnitStatus.OUT_OF_SERVICE}),
    UnitStatus.DISPATCHED: frozenset(
        {UnitStatus.EN_ROUTE, UnitStatus.ON_SCENE, UnitStatus.CLEARED, UnitStatus.AVAILABLE}
    ),
    UnitStatus.EN_ROUTE: frozenset({UnitStatus.ON_SCENE, UnitStatus.CLEARED}),
    UnitStatus.ON_SCENE: frozenset({UnitStatus.CLEARED}),
    UnitStatus.CLEARED: frozenset(
        {UnitStatus.AVAILABLE, UnitStatus.DISPATCHED, UnitStatus.OUT_OF_SERVICE}
    ),
    UnitStatus.OUT_OF_SERVICE: frozenset({UnitStatus.AVAILABLE}),
}

#: Unit states in which the unit is committed to an incident.
COMMITTED = frozenset({UnitStatus.DISPATCHED, UnitStatus.EN_ROUTE, UnitStatus.ON_SCENE})


def _check_move(what: str, table: dict[Any, frozenset[Any]], old: StrEnum, new: StrEnum) -> None:
    if new not in table[old]:
        allowed = ", ".join(sorted(s.value for s in table[old])) or "none: it is final"
        raise TransitionError(
            f"{what}: cannot go from {old.value!r} to {new.value!r} "
            f"(allowed from {old.value!r}: {allowed})"
        )


# --- records ---------------------------------------------------------------------------------


class SourceKind(StrEnum):
    CALL = "call"  # a 911 call (or text) answered by a call-taker
    ALARM_BOX = "alarm box"  # a street fire alarm box pulled
    WALK_IN = "walk-in"  # a person at a firehouse or station, entered by hand


@dataclass(slots=True)
class Source:
    """Where the incident came from: a call (with its callback number), a box (its number),
    or a walk-in (the station where the person walked in)."""

    kind: SourceKind
    box: str | None = None
    station: str | None = None
    callback: str | None = None


@dataclass(slots=True)
class Location:
    """Where the incident is: a point and/or a civic address, a free-text description (a box's
    "CHARTER at SALEM STS"), whether the civic address validated against the LVF, and where
    the location came from (``pidf``, ``box``, ``lvf``, ``station``, ``given``)."""

    point: Point | None = None
    civic: CivicAddress | None = None
    description: str | None = None
    validated: bool | None = None  # None: not checked
    method: str = "given"


@dataclass(slots=True)
class CallLink:
    """A 911 call tied to the incident: its i3 Call Identifier and the Incident Tracking
    Identifier the BCF gave it (NENA-STA-010.3 section 2.1.7-2.1.8), its callback number."""

    call_id: str
    linked_at: datetime
    incident_tracking_id: str | None = None
    callback: str | None = None


@dataclass(slots=True)
class NarrativeEntry:
    at: datetime
    author: str
    text: str


class Action(StrEnum):
    """What a timeline entry records."""

    CREATED = "created"
    STATUS = "status"
    PRIORITY = "priority"
    LOCATION = "location"
    CALL_LINKED = "call linked"
    NARRATIVE = "narrative"
    DISPATCHED = "dispatched"
    UNIT_STATUS = "unit status"
    CLOSED = "closed"


@dataclass(slots=True)
class TimelineEntry:
    at: datetime
    actor: str
    action: Action
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Incident:
    id: str  # urn:emergency:uid:incidentid:<unique>:<fqdn>
    type: IncidentType
    subtype: IncidentSubtype
    priority: int
    status: IncidentStatus
    location: Location
    source: Source
    created_at: datetime
    updated_at: datetime
    calls: list[CallLink] = field(default_factory=list)
    narrative: list[NarrativeEntry] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    units: list[str] = field(default_factory=list)  # every unit ever dispatched, in order
    disposition: str | None = None
    closed_at: datetime | None = None

    def record(self, at: datetime, actor: str, action: Action, **detail: Any) -> TimelineEntry:
        entry = TimelineEntry(_aware(at), _actor(actor), action, detail)
        self.timeline.append(entry)
        self.updated_at = entry.at
        return entry

    def move(self, new: IncidentStatus, at: datetime, actor: str, **detail: Any) -> None:
        """Change status along ``INCIDENT_TRANSITIONS``; recorded on the timeline."""
        _check_move(f"incident {self.id}", INCIDENT_TRANSITIONS, self.status, new)
        old, self.status = self.status, new
        self.record(at, actor, Action.STATUS, old=old.value, new=new.value, **detail)

    def add_narrative(self, text: str, at: datetime, actor: str) -> NarrativeEntry:
        if not isinstance(text, str) or not text.strip():
            raise CadError("narrative text must be a non-empty string")
        entry = NarrativeEntry(_aware(at), _actor(actor), text.strip())
        self.narrative.append(entry)
        self.record(at, actor, Action.NARRATIVE, text=entry.text)
        return entry

    @property
    def open(self) -> bool:
        return self.status is not IncidentStatus.CLOSED


@dataclass(slots=True)
class Unit:
    id: str  # the call sign, "E12"
    kind: UnitKind
    station: str
    status: UnitStatus
    position: Point | None = None
    name: str | None = None
    incident_id: str | None = None  # the incident the unit is committed to
    updated_at: datetime | None = None

    def move(self, new: UnitStatus, at: datetime) -> UnitStatus:
        """Change status along ``UNIT_TRANSITIONS``; returns the old status. The caller
        records the change on the incident concerned (a unit has no timeline of its own: the
        audit trail has every change)."""
        _check_move(f"unit {self.id}", UNIT_TRANSITIONS, self.status, new)
        old, self.status = self.status, new
        self.updated_at = _aware(at)
        return old


def _aware(at: datetime) -> datetime:
    """Times are aware and UTC: a naive time is a bug in the caller, said so here."""
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise CadError(f"time must be an aware datetime, not {at!r}")
    return at.astimezone(UTC)


def _actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip():
        raise CadError("actor must name who did it (a non-empty string)")
    return actor.strip()


# --- JSON form (storage and the HTTP API) ---------------------------------------------------


def _t(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _pt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def point_to_json(p: Point | None) -> dict[str, float] | None:
    return None if p is None else {"lat": p.lat, "lon": p.lon}


def point_from_json(value: Any, member: str = "point") -> Point | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"lat", "lon"}:
        raise CadError(f"{member}: must be an object with lat and lon")
    try:
        return Point(lat=float(value["lat"]), lon=float(value["lon"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CadError(f"{member}: needs numeric lat and lon ({exc})") from exc


def civic_to_json(c: CivicAddress | None) -> dict[str, str] | None:
    return None if c is None else dict(c.items())


def civic_from_json(value: Any, member: str = "civic") -> CivicAddress | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CadError(f"{member}: must be an object of RFC 5139 elements")
    unknown = sorted(set(value) - set(CIVIC_ELEMENTS))
    if unknown:
        raise CadError(f"{member}: not RFC 5139 civic address elements: {', '.join(unknown)}")
    bad = sorted(k for k, v in value.items() if not isinstance(v, str))
    if bad:
        raise CadError(f"{member}: element values must be strings: {', '.join(bad)}")
    return CivicAddress(**{k: v for k, v in value.items() if v.strip()})


def incident_to_json(i: Incident) -> dict[str, Any]:
    loc = i.location
    return {
        "id": i.id,
        "type": i.type.value,
        "subtype": i.subtype.value,
        "priority": i.priority,
        "status": i.status.value,
        "location": {
            "point": point_to_json(loc.point),
            "civic": civic_to_json(loc.civic),
            "description": loc.description,
            "validated": loc.validated,
            "method": loc.method,
        },
        "source": {
            "kind": i.source.kind.value,
            "box": i.source.box,
            "station": i.source.station,
            "callback": i.source.callback,
        },
        "created_at": _t(i.created_at),
        "updated_at": _t(i.updated_at),
        "closed_at": _t(i.closed_at),
        "disposition": i.disposition,
        "units": list(i.units),
        "calls": [
            {"call_id": c.call_id, "linked_at": _t(c.linked_at),
             "incident_tracking_id": c.incident_tracking_id, "callback": c.callback}
            for c in i.calls
        ],
        "narrative": [{"at": _t(n.at), "author": n.author, "text": n.text} for n in i.narrative],
        "timeline": [
            {"at": _t(e.at), "actor": e.actor, "action": e.action.value, "detail": e.detail}
            for e in i.timeline
        ],
    }  # fmt: skip


def incident_from_json(d: dict[str, Any]) -> Incident:
    loc, src = d["location"], d["source"]
    return Incident(
        id=d["id"],
        type=IncidentType(d["type"]),
        subtype=IncidentSubtype(d["subtype"]),
        priority=d["priority"],
        status=IncidentStatus(d["status"]),
        location=Location(
            point=point_from_json(loc["point"]), civic=civic_from_json(loc["civic"]),
            description=loc["description"], validated=loc["validated"], method=loc["method"],
        ),
        source=Source(SourceKind(src["kind"]), src["box"], src["station"], src["callback"]),
        created_at=_pt(d["created_at"]),  # type: ignore[arg-type]
        updated_at=_pt(d["updated_at"]),  # type: ignore[arg-type]
        closed_at=_pt(d["closed_at"]),
        disposition=d["disposition"],
        units=list(d["units"]),
        calls=[
            CallLink(c["call_id"], _pt(c["linked_at"]), c["incident_tracking_id"], c["callback"])  # type: ignore[arg-type]
            for c in d["calls"]
        ],
        narrative=[NarrativeEntry(_pt(n["at"]), n["author"], n["text"]) for n in d["narrative"]],  # type: ignore[arg-type]
        timeline=[
            TimelineEntry(_pt(e["at"]), e["actor"], Action(e["action"]), e["detail"])  # type: ignore[arg-type]
            for e in d["timeline"]
        ],
    )  # fmt: skip


def unit_to_json(u: Unit) -> dict[str, Any]:
    return {
        "id": u.id, "kind": u.kind.value, "station": u.station, "status": u.status.value,
        "position": point_to_json(u.position), "name": u.name, "incident_id": u.incident_id,
        "updated_at": _t(u.updated_at),
    }  # fmt: skip


def unit_from_json(d: dict[str, Any]) -> Unit:
    return Unit(
        id=d["id"], kind=UnitKind(d["kind"]), station=d["station"], status=UnitStatus(d["status"]),
        position=point_from_json(d["position"]), name=d["name"], incident_id=d["incident_id"],
        updated_at=_pt(d["updated_at"]),
    )  # fmt: skip
