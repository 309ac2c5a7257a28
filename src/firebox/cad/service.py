"""The CAD functional element: incidents from calls, fire alarm boxes and walk-ins; unit
recommendation, dispatch and status; the incident's timeline and the CAD's audit trail.

It owns its state through a repository (``firebox.cad.store``) and is given what it does not
own: a geocoder for civic addresses (the LVF, ``firebox.ecrf.lvf``, behind the ``Geocoder``
interface, so that any LVF reachable in-process or over LoST can stand in), the fire alarm
box table, the clock (every method takes ``at``). Each action checks everything first, then
writes the incident, the units and one audit record in one repository transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from firebox.cad.data import AlarmBox
from firebox.cad.eido import export_incident
from firebox.cad.locate import LocationCheck, LocationSearch, Serving
from firebox.cad.logevents import CadLogger
from firebox.cad.model import (
    COMMITTED,
    Action,
    CadError,
    CallLink,
    Incident,
    IncidentStatus,
    IncidentSubtype,
    IncidentType,
    Location,
    NotFound,
    Source,
    SourceKind,
    TransitionError,
    Unit,
    UnitStatus,
    _aware,
    check_priority,
    check_type,
)
from firebox.cad.recommend import Recommendation, recommend
from firebox.cad.store import AuditRecord, CadRepository
from firebox.location.civic import CivicAddress
from firebox.location.pidf import PidfError, Presence, best_location, parse_pidf
from firebox.location.shapes import Point, centroid
from firebox.logging.events import check_uid, new_call_id, new_incident_id

log = logging.getLogger(__name__)

# --- geocoding -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Geocode:
    """The answer for one civic address: valid or not, the elements found invalid (RFC 5222
    section 8.4.2 names), and the point when the address could be placed."""

    valid: bool
    point: Point | None
    invalid: tuple[str, ...] = ()


class Geocoder(Protocol):
    def geocode(self, civic: CivicAddress) -> Geocode: ...


class LvfGeocoder:
    """The LVF (``firebox.ecrf.lvf.Lvf``) as a ``Geocoder``."""

    def __init__(self, lvf: Any):
        self.lvf = lvf

    def geocode(self, civic: CivicAddress) -> Geocode:
        result = self.lvf.validate(civic)
        return Geocode(result.valid, result.point, tuple(result.validation.invalid))


# --- the element -----------------------------------------------------------------------------


class Cad:
    """The CAD of one agency: ``fqdn`` is the element's identifier (in the incident
    identifiers it mints and as the EIDO issuer), ``agency`` the agency's identifier (a
    domain name; the ``fqdn`` when not given)."""

    def __init__(
        self,
        repo: CadRepository,
        *,
        fqdn: str,
        geocoder: Geocoder | None = None,
        boxes: Mapping[str, AlarmBox] | None = None,
        stations: Mapping[str, Point] | None = None,
        agency: str | None = None,
        locator: LocationSearch | None = None,
        log: CadLogger | None = None,
    ):
        self.repo = repo
        self.fqdn = fqdn
        self.agency = agency or fqdn
        self.geocoder = geocoder
        self.boxes: Mapping[str, AlarmBox] = boxes or {}
        self.stations: Mapping[str, Point] = stations or {}
        #: Location search for entries by hand (LVF + ECRF + landmarks); when set, a civic
        #: address by hand is checked through it (LoST validateLocation) instead of ``geocoder``.
        self.locator = locator
        #: The CAD's i3 log events (walk-ins); None: not logged.
        self.log = log

    # --- look-ups ------------------------------------------------------------------------

    def incident(self, incident_id: str) -> Incident:
        found = self.repo.get_incident(incident_id)
        if found is None:
            raise NotFound(f"no incident {incident_id!r}")
        return found

    def unit(self, unit_id: str) -> Unit:
        found = self.repo.get_unit(unit_id)
        if found is None:
            raise NotFound(f"no unit {unit_id!r}")
        return found

    def incidents(self, *, open_only: bool = False) -> list[Incident]:
        return self.repo.incidents(open_only=open_only)

    def units(self) -> list[Unit]:
        return self.repo.units()

    def audit(self, target: str | None = None) -> list[AuditRecord]:
        return self.repo.audit(target)

    # --- units ---------------------------------------------------------------------------

    def add_units(self, units: Iterable[Unit], at: datetime, actor: str) -> None:
        """Put units in service (or replace their records: a roster reload)."""
        with self.repo.transaction():
            for u in units:
                u.updated_at = _aware(at)
                self.repo.put_unit(u)
                self._audit(at, actor, "unit added", u.id, kind=u.kind.value, station=u.station)

    # --- creating incidents -------------------------------------------------------------

    def incident_from_call(
        self,
        *,
        at: datetime,
        actor: str,
        call_id: str,
        type: IncidentType,
        subtype: IncidentSubtype,
        priority: int,
        incident_tracking_id: str | None = None,
        callback: str | None = None,
        pidf: bytes | str | Presence | None = None,
        narrative: str | None = None,
    ) -> Incident:
        """An incident from an answered 911 call: the call's callback number, its location
        (the PIDF-LO's first geodetic shape, else its civic address geocoded by the LVF), and
        its identifiers. The incident takes the call's Incident Tracking Identifier when the
        BCF gave one (NENA-STA-010.3 2.1.8: one identifier follows the incident through every
        element's logs), else a new one."""
        if (why := check_uid(call_id, "callid")) is not None:
            raise CadError(f"call_id: {why}")
        if incident_tracking_id is not None:
            if (why := check_uid(incident_tracking_id, "incidentid")) is not None:
                raise CadError(f"incident_tracking_id: {why}")
            if self.repo.get_incident(incident_tracking_id) is not None:
                raise CadError(
                    f"incident {incident_tracking_id} already exists: link the call to it instead"
                )
        location = self._location_from_pidf(pidf) if pidf is not None else Location(method="none")
        link = CallLink(call_id, _aware(at), incident_tracking_id, callback)
        return self._create(
            at, actor, type, subtype, priority, location,
            Source(SourceKind.CALL, callback=callback), narrative,
            incident_id=incident_tracking_id, calls=[link],
        )  # fmt: skip

    def incident_from_box(
        self,
        box: str | int,
        *,
        at: datetime,
        actor: str = "fire alarm telegraph",
        subtype: IncidentSubtype = IncidentSubtype.ALARM_BOX,
        priority: int = 2,
        unknown_ok: bool = False,
        unknown_point: Point | None = None,
    ) -> Incident:
        """An incident from a street fire alarm box: the box's location from the box table.
        A box not in the table raises ``NotFound``, unless ``unknown_ok``: then the incident
        is made at ``unknown_point`` (what the box itself reported, if anything), marked not
        validated."""
        number = str(box).strip()
        entry = self.boxes.get(number)
        if entry is None and unknown_ok:
            location = Location(point=unknown_point, description=f"box {number}: not in the box table",
                                validated=False, method="box report" if unknown_point else "none")  # fmt: skip
            return self._create(at, actor, IncidentType.FIRE, subtype, priority, location,
                                Source(SourceKind.ALARM_BOX, box=number), None)  # fmt: skip
        if entry is None:
            raise NotFound(f"no fire alarm box {number!r} in the box table ({len(self.boxes)} boxes)")
        location = Location(
            point=entry.point, description=f"box {entry.number}: {entry.location}",
            validated=True, method="box",
        )  # fmt: skip
        narrative = f"response assignment {entry.assignment}" if entry.assignment else None
        return self._create(
            at, actor, IncidentType.FIRE, subtype, priority, location,
            Source(SourceKind.ALARM_BOX, box=entry.number), narrative,
        )  # fmt: skip

    def incident_by_hand(
        self,
        *,
        at: datetime,
        actor: str,
        type: IncidentType,
        subtype: IncidentSubtype,
        priority: int,
        civic: CivicAddress | None = None,
        point: Point | None = None,
        station: str | None = None,
        description: str | None = None,
        narrative: str | None = None,
        landmark: str | None = None,
        text: str | None = None,
        position: str | None = None,
    ) -> Incident:
        """An incident entered by hand: a person walking into a firehouse or station
        (``station``), or a dispatcher's own entry. Where, in order: a ``landmark`` the
        locator knows (``box:1037``, ``station:fs-01``: validated); a civic address, checked
        by the locator (LoST ``findService`` with ``validateLocation``, RFC 5222 section
        8.4.2) or the geocoder (the LVF); a line of ``text`` as typed ("12 main st
        springfield"), parsed into one. An address that does not validate still makes the
        incident (the emergency is real even when the address is not in the MSAG), marked
        not validated and logged, placed at the given point, else at the station the person
        walked into, else nowhere.

        The intake gets an i3 Call Identifier of its own, linked to the incident, and, with
        a ``log``, the log events a call would (``firebox.cad.logevents``)."""
        if station is not None and self.stations and station not in self.stations:
            raise NotFound(f"no station {station!r}")
        location = Location(point=point, civic=civic, description=description, method="given")
        check: LocationCheck | None = None
        serving: tuple[Serving, ...] = ()
        mark = self.locator.landmark(landmark, at) if landmark and self.locator else None
        if landmark and mark is None:
            log.warning("CAD entry by %s: landmark %r is not known; taken as a description", actor, landmark)
            location.description = _join(description, f"landmark {landmark} (not known)")
        if mark is not None:
            location.point, location.validated, location.method = mark.point, True, "landmark"
            location.description = _join(description, mark.label)
            serving = mark.serving
        else:
            if civic is None and text and self.locator is not None:
                civic = location.civic = self.locator.parse(text)
            if civic is None and text:
                location.description = _join(description, text)
            if civic is not None and self.locator is not None:
                check = self.locator.check(civic, at)
                c = check.candidate
                self._place(location, c.validated, c.point, tuple(c.validation.invalid) if c.validation else (),
                            point, description, "lvf")  # fmt: skip
                serving = c.serving
                if c.validated and c.civic is not None:
                    location.civic = c.civic  # the reference data's spelling
            elif civic is not None and self.geocoder is not None:
                g = self.geocoder.geocode(civic)
                self._place(location, g.valid, g.point, g.invalid, point, description, "lvf")
            if civic is not None and location.validated is False:
                log.warning("CAD entry by %s%s: address %r not validated; incident made anyway",
                            actor, f" at station {station}" if station else "", civic)  # fmt: skip
        if location.point is None and station is not None and station in self.stations:
            location.point, location.method = self.stations[station], "station"
        if not serving and location.point is not None and self.locator is not None:
            serving = tuple(self.locator.serving(location.point, at))
        call_id = new_call_id(self.fqdn)
        incident = self._create(
            at, actor, type, subtype, priority, location,
            Source(SourceKind.WALK_IN, station=station), narrative,
            calls=[CallLink(call_id, _aware(at))],
            served_by=[f"{s.service}: {s.name or s.uri}" for s in serving],
        )  # fmt: skip
        if self.log is not None:
            self.log.walk_in(incident, call_id, at=at, agent=actor, position=position, station=station,
                             check=check, serving=serving)  # fmt: skip
        return incident

    @staticmethod
    def _place(location: Location, valid: bool | None, found: Point | None, invalid: tuple[str, ...],
               given: Point | None, description: str | None, method: str) -> None:  # fmt: skip
        location.validated = valid
        if valid and found is not None and given is None:
            location.point, location.method = found, method
        if valid is False:
            why = ", ".join(invalid) or "street or number not found"
            location.description = _join(description, f"address not validated ({why})")

    def _location_from_pidf(self, pidf: bytes | str | Presence) -> Location:
        try:
            presence = pidf if isinstance(pidf, Presence) else parse_pidf(pidf)
        except PidfError as exc:
            raise CadError(f"pidf: {exc}") from exc
        loc = best_location(presence)
        if loc is None:
            return Location(method="pidf", description="the PIDF-LO has no location")
        if loc.shape is not None:
            return Location(point=centroid(loc.shape), civic=loc.civic, method="pidf", validated=None)
        assert loc.civic is not None
        location = Location(civic=loc.civic, method="pidf")
        if self.geocoder is not None:
            g = self.geocoder.geocode(loc.civic)
            location.validated, location.point = g.valid, g.point if g.valid else None
            if g.valid and g.point is not None:
                location.method = "pidf civic, lvf"
        return location

    def _create(
        self,
        at: datetime,
        actor: str,
        type_: IncidentType,
        subtype: IncidentSubtype,
        priority: int,
        location: Location,
        source: Source,
        narrative: str | None,
        *,
        incident_id: str | None = None,
        calls: list[CallLink] | None = None,
        served_by: list[str] | None = None,
    ) -> Incident:
        type_ = _enum(IncidentType, type_, "type")
        subtype = _enum(IncidentSubtype, subtype, "subtype")
        check_type(type_, subtype)
        check_priority(priority)
        at = _aware(at)
        incident = Incident(
            id=incident_id or new_incident_id(self.fqdn), type=type_, subtype=subtype,
            priority=priority, status=IncidentStatus.NEW, location=location, source=source,
            created_at=at, updated_at=at, calls=list(calls or []),
        )  # fmt: skip
        incident.record(
            at, actor, Action.CREATED, source=source.kind.value, type=type_.value,
            subtype=subtype.value, priority=priority, box=source.box, station=source.station,
            calls=[c.call_id for c in incident.calls], location=location.description,
            validated=location.validated, **({"served_by": served_by} if served_by else {}),
        )  # fmt: skip
        if narrative:
            incident.add_narrative(narrative, at, actor)
        with self.repo.transaction():
            self.repo.put_incident(incident)
            self._audit(at, actor, "incident created", incident.id, source=source.kind.value)
        return incident

    # --- changing incidents -------------------------------------------------------------

    def link_call(
        self,
        incident_id: str,
        call_id: str,
        *,
        at: datetime,
        actor: str,
        incident_tracking_id: str | None = None,
        callback: str | None = None,
    ) -> Incident:
        """Tie another call (a second caller for the same fire) to an incident."""
        if (why := check_uid(call_id, "callid")) is not None:
            raise CadError(f"call_id: {why}")
        incident = self._open(incident_id, "link a call to")
        if any(c.call_id == call_id for c in incident.calls):
            raise CadError(f"call {call_id} is already linked to incident {incident_id}")
        incident.calls.append(CallLink(call_id, _aware(at), incident_tracking_id, callback))
        incident.record(at, actor, Action.CALL_LINKED, call_id=call_id, callback=callback)
        return self._save(incident, at, actor, "call linked", call_id=call_id)

    def add_narrative(self, incident_id: str, text: str, *, at: datetime, actor: str) -> Incident:
        incident = self.incident(incident_id)  # notes may be added after closing (reports)
        incident.add_narrative(text, at, actor)
        return self._save(incident, at, actor, "narrative added")

    def set_priority(self, incident_id: str, priority: int, *, at: datetime, actor: str) -> Incident:
        incident = self._open(incident_id, "change the priority of")
        old, incident.priority = incident.priority, check_priority(priority)
        incident.record(at, actor, Action.PRIORITY, old=old, new=priority)
        return self._save(incident, at, actor, "priority", old=old, new=priority)

    def set_status(
        self, incident_id: str, status: IncidentStatus | str, *, at: datetime, actor: str
    ) -> Incident:
        """Move an incident by hand. Closing goes through ``close`` (it releases units)."""
        status = _enum(IncidentStatus, status, "status")
        if status is IncidentStatus.CLOSED:
            return self.close(incident_id, at=at, actor=actor)
        incident = self.incident(incident_id)
        incident.move(status, at, actor)
        return self._save(incident, at, actor, "incident status", status=status.value)

    def close(
        self, incident_id: str, *, at: datetime, actor: str, disposition: str | None = None
    ) -> Incident:
        """Close an incident; units still committed to it are cleared (returning)."""
        incident = self.incident(incident_id)
        if not incident.open:
            raise TransitionError(f"incident {incident_id} is already closed")
        cleared: list[Unit] = []
        for uid in incident.units:
            unit = self.repo.get_unit(uid)
            if unit is not None and unit.incident_id == incident.id and unit.status in COMMITTED:
                old = unit.move(UnitStatus.CLEARED, at)
                unit.incident_id = None
                incident.record(at, actor, Action.UNIT_STATUS, unit=uid, old=old.value,
                                new=UnitStatus.CLEARED.value, why="incident closed")  # fmt: skip
                cleared.append(unit)
        incident.move(IncidentStatus.CLOSED, at, actor)
        incident.disposition = disposition
        incident.closed_at = _aware(at)
        incident.record(at, actor, Action.CLOSED, disposition=disposition,
                        cleared=[u.id for u in cleared])  # fmt: skip
        with self.repo.transaction():
            for unit in cleared:
                self.repo.put_unit(unit)
            return self._save(incident, at, actor, "incident closed", disposition=disposition)

    # --- recommendation and dispatch ------------------------------------------------------

    def recommend(self, incident_id: str) -> Recommendation:
        return recommend(self.incident(incident_id), self.repo.units())

    def dispatch(
        self, incident_id: str, unit_ids: Iterable[str], *, at: datetime, actor: str
    ) -> Incident:
        """Send units to an incident. A unit must be available or returning (cleared from
        another incident); the incident goes from new to dispatched. Every unit is checked
        before any is moved, so a refused dispatch changes nothing."""
        ids = list(dict.fromkeys(unit_ids))
        if not ids:
            raise CadError("units: name at least one unit to dispatch")
        # One transaction from the first read: on PostgreSQL the reads lock the incident and the
        # units, so a second node dispatching the same unit waits, then sees it dispatched.
        with self.repo.transaction():
            incident = self._open(incident_id, "dispatch units to")
            units = [self.unit(uid) for uid in ids]
            for u in units:
                if u.status not in (UnitStatus.AVAILABLE, UnitStatus.CLEARED):
                    where = f" to incident {u.incident_id}" if u.incident_id else ""
                    raise TransitionError(
                        f"unit {u.id} cannot be dispatched: it is {u.status.value}{where}"
                    )
            for u in units:
                old = u.move(UnitStatus.DISPATCHED, at)
                u.incident_id = incident.id
                if u.id not in incident.units:
                    incident.units.append(u.id)
                incident.record(at, actor, Action.UNIT_STATUS, unit=u.id, old=old.value,
                                new=UnitStatus.DISPATCHED.value)  # fmt: skip
            incident.record(at, actor, Action.DISPATCHED, units=ids)
            if incident.status is IncidentStatus.NEW:
                incident.move(IncidentStatus.DISPATCHED, at, actor)
            for u in units:
                self.repo.put_unit(u)
            return self._save(incident, at, actor, "dispatched", units=ids)

    def unit_status(
        self,
        unit_id: str,
        status: UnitStatus | str,
        *,
        at: datetime,
        actor: str,
        position: Point | None = None,
    ) -> Unit:
        """A unit's status from the field (or its dispatcher). A unit on scene takes the
        incident's point as its position (unless it reports one); arriving moves the incident
        to on scene; clearing releases the unit from its incident."""
        status = _enum(UnitStatus, status, "status")
        unit = self.unit(unit_id)
        if status is UnitStatus.DISPATCHED:
            raise TransitionError(f"unit {unit_id}: dispatch it to an incident (POST .../dispatch)")
        incident = self.repo.get_incident(unit.incident_id) if unit.incident_id else None
        old = unit.move(status, at)
        if position is not None:
            unit.position = position
        elif status is UnitStatus.ON_SCENE and incident is not None and incident.location.point:
            unit.position = incident.location.point
        if incident is not None:
            incident.record(at, actor, Action.UNIT_STATUS, unit=unit.id, old=old.value, new=status.value)
            if status is UnitStatus.ON_SCENE and incident.status is IncidentStatus.DISPATCHED:
                incident.move(IncidentStatus.ON_SCENE, at, actor, unit=unit.id)
            if status not in COMMITTED:
                unit.incident_id = None
        with self.repo.transaction():
            self.repo.put_unit(unit)
            if incident is not None:
                self.repo.put_incident(incident)
            self._audit(at, actor, "unit status", unit.id, old=old.value, new=status.value,
                        incident=incident.id if incident else None)  # fmt: skip
        return unit

    # --- EIDO ----------------------------------------------------------------------------

    def eido(self, incident_id: str) -> dict[str, Any]:
        """The incident as a validated EIDO (NENA-STA-021.1a; ``firebox.cad.eido``)."""
        incident = self.incident(incident_id)
        units = {u.id: u for u in self.repo.units()}
        return export_incident(incident, units, agency=self.agency, issuer=self.fqdn)

    # --- helpers ---------------------------------------------------------------------------

    def _open(self, incident_id: str, doing: str) -> Incident:
        incident = self.incident(incident_id)
        if not incident.open:
            raise TransitionError(f"cannot {doing} incident {incident_id}: it is closed")
        return incident

    def _save(self, incident: Incident, at: datetime, actor: str, action: str, **detail: Any) -> Incident:
        with self.repo.transaction():
            self.repo.put_incident(incident)
            self._audit(at, actor, action, incident.id, **detail)
        return incident

    def _audit(self, at: datetime, actor: str, action: str, target: str, **detail: Any) -> None:
        self.repo.append_audit(AuditRecord(_aware(at), actor, action, target, detail))


def _enum(cls: Any, value: Any, member: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(s.value) for s in cls)
        raise CadError(f"{member}: {value!r} is not one of {allowed}") from None


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b
