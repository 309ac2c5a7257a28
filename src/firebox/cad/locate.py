"""Location search for incidents entered by hand: a person walks into a firehouse, a
dispatcher types what they say ("12 main st springfield", "box 1037", "central fire"), and
gets validated candidates to choose from.

Each address candidate is checked the way an i3 element checks a civic location: a LoST
``findService`` for ``urn:service:sos`` with ``validateLocation`` (RFC 5222 sections 8 and
8.4.2; NENA-STA-010.3 section 4.4, the LVF) asked of the ECRF in-process, which answers with
the element-by-element ``valid``/``invalid``/``unchecked`` lists and the PSAP that serves the
address. The point comes from the LVF itself (LoST does not return geocodes), and the
responding agencies of the emergency service zone (``urn:service:sos.fire``, ``.police``,
``.ambulance``, whichever the ECRF has) from further ``findService`` queries by that point.

Landmarks are places the CAD already knows exactly: its fire alarm boxes and its stations.

An address that does not validate is still a candidate (marked so): the emergency is real
even when the address is not in the street data. Nothing here raises on bad input.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from firebox.cad.data import AlarmBox
from firebox.ecrf.normalize import clean, normalize_state, normalize_street, normalize_town, normalize_zip
from firebox.location.civic import CivicAddress
from firebox.location.shapes import Point
from firebox.lost.messages import (
    FindService,
    FindServiceResponse,
    ListServices,
    ListServicesResponse,
    LocationValidation,
    Profile,
)
from firebox.lost.messages import Location as LostLocation

__all__ = [
    "Candidate",
    "CandidateKind",
    "Landmark",
    "LocationCheck",
    "LocationSearch",
    "Serving",
    "landmarks_from",
]

log = logging.getLogger(__name__)

SOS = "urn:service:sos"
#: The services of an emergency service zone, asked by point when the ECRF has them.
ZONE_SERVICES = ("urn:service:sos.fire", "urn:service:sos.police", "urn:service:sos.ambulance")
_NUMBER = re.compile(r"^(\d+)([A-Z]?)$")
_ZIP = re.compile(r"^\d{5}(\d{4})?$")


class CandidateKind(StrEnum):
    ADDRESS = "address"  # the address as typed
    STREET = "street"  # a street the LVF knows that completes what was typed
    LANDMARK = "landmark"  # a fire alarm box or a station


@dataclass(frozen=True, slots=True)
class Serving:
    """One LoST mapping (RFC 5222 section 8.3): who serves the location for ``service``."""

    service: str
    name: str | None
    uri: str | None
    source_id: str

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "name": self.name, "uri": self.uri, "source_id": self.source_id}


@dataclass(frozen=True, slots=True)
class Landmark:
    """A place the CAD knows exactly: ``ref`` is ``box:<number>`` or ``station:<id>``."""

    ref: str
    name: str
    point: Point
    kind: str  # "box" or "station"
    words: frozenset[str] = field(default=frozenset(), compare=False)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One location to choose. ``validated``: True when the LVF validated the address (or it
    is a landmark), False when it did not, None when there is no LVF to ask."""

    label: str
    kind: CandidateKind
    point: Point | None
    validated: bool | None
    civic: CivicAddress | None = None
    validation: LocationValidation | None = None
    serving: tuple[Serving, ...] = ()
    landmark: str | None = None

    @property
    def psap(self) -> Serving | None:
        return next((s for s in self.serving if s.service == SOS), None)

    def to_json(self) -> dict[str, Any]:
        v = self.validation
        return {
            "label": self.label, "kind": self.kind.value, "validated": self.validated,
            "point": {"lat": self.point.lat, "lon": self.point.lon} if self.point else None,
            "civic": {k: getattr(self.civic, k) for k in self.civic.present()} if self.civic else None,
            "validation": {"valid": list(v.valid), "invalid": list(v.invalid), "unchecked": list(v.unchecked)} if v else None,
            "psap": self.psap.to_json() if self.psap else None,
            "zone": [s.to_json() for s in self.serving if s.service != SOS],
            "landmark": self.landmark,
        }  # fmt: skip


@dataclass(slots=True)
class LocationCheck:
    """One civic address checked: the candidate, and the LoST exchange that checked it (for
    the i3 log: ``LostQueryLogEvent``/``LostResponseLogEvent``)."""

    candidate: Candidate
    query: FindService | None = None
    response: Any = None


def landmarks_from(boxes: Mapping[str, AlarmBox] = {}, stations: Iterable[Any] = ()) -> list[Landmark]:  # noqa: B006 -- read only
    """Landmarks from the CAD's box table and stations (anything with ``id``, ``name``,
    ``lat``, ``lon``, as ``firebox.cad.data.Station`` and the demo state's)."""
    out = [_landmark(f"box:{b.number}", f"box {b.number}: {b.location}" + (f", {b.town}" if b.town else ""), b.point, "box")
           for b in boxes.values()]  # fmt: skip
    for s in stations:
        out.append(_landmark(f"station:{s.id}", f"{s.name} ({s.id})", Point(lat=s.lat, lon=s.lon), "station"))
    return out


def _landmark(ref: str, name: str, point: Point, kind: str) -> Landmark:
    return Landmark(ref, name, point, kind, frozenset(clean(name).split()) | {clean(ref.split(":", 1)[1])})


class LocationSearch:
    """Location search over an LVF (``firebox.ecrf.lvf.Lvf``), an ECRF
    (``firebox.ecrf.service.Ecrf``, asked in-process with the LoST messages it would get over
    HTTP) and landmarks. Either of ``lvf``/``ecrf`` may be None: without an LVF addresses are
    unchecked, without an ECRF no PSAP is named."""

    def __init__(self, lvf: Any = None, ecrf: Any = None, *, landmarks: Iterable[Landmark] = ()):
        self.lvf = lvf
        self.ecrf = ecrf
        self.landmarks: dict[str, Landmark] = {lm.ref: lm for lm in landmarks}
        self._towns: set[str] = set(getattr(lvf, "towns", ()) or ())
        self._states: set[str] = set(getattr(lvf, "states", ()) or ())
        # Each street once per town: (key, name, town, label as the data writes it).
        streets: dict[tuple[str, str], tuple[str, str, str, str]] = {}
        for seg in getattr(lvf, "segments", ()) or ():
            streets.setdefault((seg.street.key, seg.town), (seg.street.key, seg.street.name, seg.town, seg.label))
        self._streets = sorted(streets.values())
        self._zone: tuple[str, ...] = ()
        if ecrf is not None:
            answer = ecrf.handle(ListServices(), datetime.now().astimezone())
            if isinstance(answer, ListServicesResponse):
                self._zone = tuple(s for s in ZONE_SERVICES if s in answer.services)

    # --- parsing ----------------------------------------------------------------------------

    def parse(self, text: str) -> CivicAddress | None:
        """A civic address from one line as people write it: ``12 Main St Springfield MA
        01101`` -> HNO 12, RD "Main St", A3 "SPRINGFIELD", A1 "MA", PC "01101". The town is
        recognised only when the LVF knows it (the longest run of last words that is one)."""
        words = clean(text).split()
        if not words:
            return None
        parts: dict[str, str] = {}
        if len(words) > 1 and _ZIP.match(words[-1]):
            parts["PC"] = normalize_zip(words.pop())
        if len(words) > 1 and (normalize_state(words[-1]) in self._states):
            parts["A1"] = normalize_state(words.pop())
        m = _NUMBER.match(words[0])
        if m and len(words) > 1:
            parts["HNO"] = m.group(1)
            if m.group(2):
                parts["HNS"] = m.group(2)
            words = words[1:]
        for n in range(min(4, len(words) - 1), 0, -1):
            town = normalize_town(" ".join(words[-n:]))
            if town in self._towns:
                parts["A3"] = town
                words = words[:-n]
                break
        if words:
            parts["RD"] = " ".join(words)
        return CivicAddress(**parts) if "RD" in parts or "A3" in parts else None

    # --- searching --------------------------------------------------------------------------

    def search(self, text: str, *, now: datetime, limit: int = 8) -> list[Candidate]:
        """Candidates for ``text``, best first: the address as typed when it validates,
        landmarks whose names hold every word typed, streets the LVF knows that complete
        what was typed (each checked with the house number), and the address as typed when
        it does not validate (still a choice, marked so)."""
        if not clean(text):
            return []
        exact: list[Candidate] = []
        streets: list[Candidate] = []
        typed: Candidate | None = None
        civic = self.parse(text)
        if civic is not None and civic.RD is not None:
            typed = self.check(civic, now).candidate
            if typed.validated:
                exact.append(typed)
            for key, town, label in self._completions(civic, limit):
                c = CivicAddress(HNO=civic.HNO, HNS=civic.HNS, RD=label, A3=town, A1=civic.A1)
                streets.append(self.check(c, now, kind=CandidateKind.STREET).candidate)
            streets.sort(key=lambda c: not c.validated)
        marks = self._landmarks(text, limit, now)
        out = exact + marks + streets
        if typed is not None and not typed.validated and (typed.civic and typed.civic.HNO or not out):
            out.append(typed)  # as typed, unvalidated: still a choice
        seen: set[Any] = set()
        unique = []
        for c in out:
            # The same place twice (typed "main", the data's "Main St") is shown once.
            key = (c.point.lat, c.point.lon) if c.validated and c.point else c.label
            if key not in seen:
                seen.add(key)
                unique.append(c)
        return unique[:limit]

    def check(self, civic: CivicAddress, now: datetime, *, kind: CandidateKind = CandidateKind.ADDRESS) -> LocationCheck:
        """Validate ``civic``: ``findService`` with ``validateLocation`` to the ECRF, the point
        from the LVF, the zone's agencies by that point."""
        query = response = None
        validation: LocationValidation | None = None
        serving: list[Serving] = []
        if self.ecrf is not None:
            query = FindService([LostLocation("walk-in", Profile.CIVIC.value, civic=civic)], service=SOS, validate_location=True)
            response = self.ecrf.handle(query, now)
            if isinstance(response, FindServiceResponse):
                validation = response.validation
                serving += [_serving(m) for m in response.mappings]
        point: Point | None = None
        validated: bool | None = None
        if self.lvf is not None:
            result = self.lvf.validate(civic)
            validated, point = result.valid, result.point
            if validation is None:
                validation = result.validation
            if result.valid and result.segment is not None:
                # The street as the reference data writes it (what units will find on signs).
                seg = result.segment
                civic = replace(civic, PRD=None, RD=seg.label, STS=None, POD=None, A3=civic.A3 or seg.town)
        if point is not None:
            serving += self.serving(point, now, services=self._zone)
        label = _label(civic)
        return LocationCheck(Candidate(label, kind, point, validated, civic, validation, tuple(serving)), query, response)

    def serving(self, point: Point, now: datetime, *, services: Iterable[str] = (SOS, *ZONE_SERVICES)) -> list[Serving]:
        """Who serves ``point``: one mapping per service the ECRF has (by point, RFC 5222
        section 8, geodetic-2d profile)."""
        if self.ecrf is None:
            return []
        out: list[Serving] = []
        for service in services:
            answer = self.ecrf.handle(FindService([LostLocation("p", Profile.GEODETIC_2D.value, shape=point)], service=service), now)
            if isinstance(answer, FindServiceResponse) and not answer.warnings:  # a substitution is not this service
                out += [_serving(m) for m in answer.mappings]
        return out

    def landmark(self, ref: str, now: datetime) -> Candidate | None:
        """The landmark ``ref`` (``box:1037``, ``station:fs-01``) as a candidate."""
        lm = self.landmarks.get(ref)
        if lm is None:
            return None
        return Candidate(lm.name, CandidateKind.LANDMARK, lm.point, True, serving=tuple(self.serving(lm.point, now)), landmark=lm.ref)

    def _landmarks(self, text: str, limit: int, now: datetime) -> list[Candidate]:
        words = clean(text).split()
        if words and words[0] in ("BOX", "STATION"):
            words = words[1:] or words
        found = [lm for lm in self.landmarks.values() if all(w in lm.words or any(x.startswith(w) for x in lm.words) for w in words)]
        found.sort(key=lambda lm: (lm.kind != "box", lm.name))
        return [c for lm in found[:limit] if (c := self.landmark(lm.ref, now)) is not None]

    def _completions(self, civic: CivicAddress, limit: int) -> list[tuple[str, str, str]]:
        """Streets (key, town, label) whose name starts with what was typed, in the town typed."""
        sn = normalize_street(civic.RD)
        if not sn.name:
            return []
        town = normalize_town(civic.A3) if civic.A3 else None
        out = []
        for key, name, t, label in self._streets:
            if town is not None and t != town:
                continue
            if key == sn.key or key.startswith(sn.key) or (name.startswith(sn.name) and (not sn.suffix or key.endswith(sn.suffix))):
                out.append((key, t, label))
                if len(out) >= limit * 4:
                    break
        out.sort(key=lambda s: (s[0] != sn.key, len(s[0]), s[1]))
        return out[:limit]


def _serving(m: Any) -> Serving:
    return Serving(m.service, m.display_names[0][0] if m.display_names else None, m.uris[0] if m.uris else None, m.source_id)


def _label(civic: CivicAddress) -> str:
    street = " ".join(p for p in (civic.HNO, civic.HNS, civic.PRD, civic.RD, civic.STS, civic.POD) if p)
    return ", ".join(p for p in (street, civic.A3, civic.A1) if p)
