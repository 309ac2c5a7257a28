"""Public alerts of 9-1-1 outages, sans-I/O (firebox issue 7): the monitor's outage updates
in, CAP 1.2 drafts out, through an approval workflow. Time is an argument everywhere.

What the public is told follows one *picture*: the PSAPs whose callers cannot reach 9-1-1,
from the confirmed outages that affect the public (scope ``psap``, ``region``, ``statewide``;
``element`` when the element serves every PSAP; an ingress (the detector's element key
``ingress <name>``) affects every PSAP *partly*: some callers' calls fail until their carrier
moves to another way in, so a draft is made for a person to judge, never sent at once by
policy; any other element outage is handled by rerouting and never reaches the public). The outages are fed in batches
(``on_outages(updates, now)``, one ``Detector.evaluate`` at a time), so that a statewide
outage that clears while a regional one opens reads as a narrowing, not an all-clear and a
new alert.

One *chain* of CAP messages follows the picture (CAP 1.2 section 3.2.1 ``msgType`` and
``references``):

* a picture appears: ``Alert``;
* its towns change: ``Update``, referencing every earlier message of the chain;
* it empties: the chain ends with a ``Cancel`` referencing the chain, carrying all-clear
  ``<info>`` blocks (``responseType`` ``AllClear``, ``urgency`` ``Past``). CAP 1.2 section
  3.2.1 defines Cancel as cancelling the referenced messages: IPAWS stops disseminating them
  and feeds and aggregators take them down, and the AllClear info (section 3.2.2: "the
  subject event no longer poses a threat") tells the channels that show a cancellation why.
  ``AlertPolicy.clear_as = ClearMode.UPDATE`` sends an ``Update`` with the same all-clear info
  instead, for operators whose channels only display Alerts and Updates.
* before a sent message expires while its outage goes on, an ``Update`` renews it.

A draft is only ever published once approved (``DraftState``: draft -> approved -> sent;
withdrawn when a newer picture supersedes it before approval; rejected by a person).
``AlertPolicy.two_person`` requires two distinct approvers; ``auto_send_statewide`` approves at
once a draft of a statewide picture, or one that narrows or ends a statewide alert already
sent (the public was told the whole state is without 9-1-1: correcting that is as urgent).
Every transition is recorded with who and when. The final message is built when approved:
its ``sent`` is the approval time, which later messages cite in their references.

Texts come from templates in English and Spanish (``TEMPLATES``); the WEA texts
(``CMAMtext``, 90 characters, and ``CMAMlongtext``, 360: 47 CFR 10.430) are chosen, for each
language, as the first template that fits, from the fullest (town names, business line) to
the tersest (a fixed sentence that always fits): a text is never cut mid-word. The area is one
``<area>`` listing the towns, with one ``<polygon>`` per town (per part of a town of several
parts) that covers the town with at most ``max_polygon_points`` points (``cover_polygons``);
a statewide picture uses the state's outline. Each message is validated against CAP 1.2 and
the IPAWS profile (``firebox.cap.ipaws``); one that does not validate cannot be approved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any, Final
from zoneinfo import ZoneInfo

import shapely
from shapely import affinity
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from firebox.cap import ipaws
from firebox.cap.message import (
    Alert,
    Area,
    Category,
    Certainty,
    Info,
    MsgType,
    Reference,
    ResponseType,
    Severity,
    Status,
    Urgency,
    ValuePair,
    format_datetime,
)
from firebox.restapi import Problem

__all__ = [
    "TEMPLATES",
    "AlertArea",
    "AlertDraft",
    "AlertManager",
    "AlertPolicy",
    "AlertPsap",
    "AlertTown",
    "ApprovalError",
    "ClearMode",
    "DraftState",
    "Transition",
    "cover_polygons",
    "fit_text",
]

#: The SAME event code of a 9-1-1 outage: "911 Telephone Outage Emergency" (47 CFR 11.31).
SAME_911_OUTAGE: Final = "TOE"
#: The detector's key for an ingress's element outage: ``ingress <name>``.
INGRESS_PREFIX: Final = "ingress "
POLICY_USER: Final = "policy:auto_send_statewide"
SYSTEM_USER: Final = "firebox"


# --- the area: towns, PSAPs, regions -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertTown:
    """A town: its boundary (shapely, lon/lat), the PSAP that answers its 9-1-1 calls, and
    its SAME geocode (``PSSCCC``; a county's code serves each of its towns) if known."""

    id: str
    name: str
    geometry: BaseGeometry
    psap_id: str
    same: str | None = None

    @property
    def title(self) -> str:
        # MassGIS writes names in capitals; "North Attleborough", "Manchester-By-The-Sea".
        return self.name.title() if self.name.isupper() else self.name


@dataclass(frozen=True, slots=True)
class AlertPsap:
    """A PSAP and its 10-digit business line, the number the public is told to call."""

    id: str
    name: str
    business_line: str

    @property
    def line(self) -> str:
        d = self.business_line
        return f"{d[:3]}-{d[3:6]}-{d[6:]}"


@dataclass
class AlertArea:
    """What the alerts speak of: the towns, the PSAPs, the regions (PSAP id -> region, as
    the detector has them), the elements whose outage affects PSAPs (element id -> the PSAP
    ids it serves; an element not listed affects no caller directly), the state's name and
    SAME code (``0SS000``: a whole state), and its time zone for the texts."""

    name: str
    towns: Mapping[str, AlertTown]
    psaps: Mapping[str, AlertPsap]
    regions: Mapping[str, str] = field(default_factory=dict)
    elements: Mapping[str, frozenset[str]] = field(default_factory=dict)
    state_same: str | None = None
    timezone: str = "America/New_York"

    def __post_init__(self) -> None:
        problems = []
        for p in self.psaps.values():
            if not (len(p.business_line) == 10 and p.business_line.isdigit()):
                problems.append(f"PSAP {p.id}: business_line must be 10 digits, not {p.business_line!r}")
        for t in self.towns.values():
            if t.psap_id not in self.psaps:
                problems.append(f"town {t.id} ({t.name}): unknown PSAP {t.psap_id!r}")
            if t.same is not None and not (len(t.same) == 6 and t.same.isdigit()):
                problems.append(f"town {t.id} ({t.name}): SAME geocode must be 6 digits, not {t.same!r}")
        for psap_id in self.regions:
            if psap_id not in self.psaps:
                problems.append(f"regions: unknown PSAP {psap_id!r}")
        if self.state_same is not None and not (len(self.state_same) == 6 and self.state_same.isdigit()):
            problems.append(f"state_same must be 6 digits, not {self.state_same!r}")
        ZoneInfo(self.timezone)  # ZoneInfoNotFoundError names a bad zone
        if problems:
            raise ValueError("; ".join(problems))

    def psaps_affected(self, outage: Mapping[str, Any]) -> frozenset[str]:
        """The PSAPs whose callers an outage (``Outage.as_dict()``) cuts off from 9-1-1."""
        scope, key = outage.get("scope"), str(outage.get("key"))
        everyone = frozenset(self.psaps)
        if scope == "psap":
            return frozenset({key}) & everyone
        if scope == "region":
            return frozenset(p for p, r in self.regions.items() if r == key)
        if scope == "statewide":
            return everyone
        if scope == "element":
            if self.partial(outage):
                return everyone  # any caller's carrier may come in that way
            return everyone if self.elements.get(key, frozenset()) >= everyone else frozenset()
        return frozenset()

    @staticmethod
    def partial(outage: Mapping[str, Any]) -> bool:
        """True for an outage that cuts off only some of its PSAPs' callers: an ingress
        (``firebox.monitor.detector`` keys them ``ingress <name>``), one of several ways in."""
        return outage.get("scope") == "element" and str(outage.get("key")).startswith(INGRESS_PREFIX)

    def towns_of(self, psaps: Iterable[str]) -> list[AlertTown]:
        wanted = set(psaps)
        return sorted((t for t in self.towns.values() if t.psap_id in wanted), key=lambda t: t.name)

    @cached_property
    def outline(self) -> BaseGeometry:
        return shapely.union_all([shapely.make_valid(t.geometry) for t in self.towns.values()])

    @classmethod
    def from_demo(cls, state: Any, *, state_same: str | None = None, regions: Mapping[str, str] | None = None,
                  elements: Mapping[str, frozenset[str]] | None = None) -> AlertArea:  # fmt: skip
        """The area of a ``firebox.demo.state.DemoState`` (its towns have no SAME codes: the
        state's ``state_same``, if given, stands for all)."""
        towns = {t.id: AlertTown(t.id, t.name, t.geometry, t.psap_id) for t in state.towns}
        psaps = {p.id: AlertPsap(p.id, p.name, p.business_line) for p in state.psaps}
        return cls(state.name, towns, psaps, dict(regions or {}), dict(elements or {}), state_same)


def cover_polygons(geometry: BaseGeometry, max_points: int = ipaws.MAX_POLYGON_POINTS,
                   decimals: int = 5) -> list[str]:  # fmt: skip
    """CAP ``<polygon>`` texts (``lat,lon`` pairs, closed; CAP 1.2 section 3.2.4) that together
    cover ``geometry`` (lon/lat), each with at most ``max_points`` points.

    Each part's outer ring (CAP polygons have no holes) is buffered by ``t`` and simplified
    (Douglas-Peucker, tolerance ``t / 2``, so the simplified ring stays at least ``t / 2``
    outside the town), in a plane where a degree of longitude is scaled by the cosine of the
    latitude so that ``t`` is the same distance both ways; ``t`` starts near 5 m and grows
    until the polygon, rounded to ``decimals`` places, has few enough points and covers the
    part (checked, not assumed)."""
    geometry = shapely.make_valid(geometry)
    parts = [g for g in shapely.get_parts(geometry) if g.geom_type == "Polygon" and not g.is_empty]
    if not parts:
        for g in shapely.get_parts(geometry):
            parts += [p for p in shapely.get_parts(g) if p.geom_type == "Polygon"]
    out = []
    for part in parts:
        k = math.cos(math.radians(part.centroid.y))
        shell = Polygon(part.exterior)
        local = affinity.scale(shell, xfact=k, yfact=1.0, origin=(0, 0))
        tolerance = 5e-5  # degrees of latitude: about 5.5 m
        for _ in range(40):
            grown = local.buffer(tolerance, join_style="bevel").simplify(tolerance / 2, preserve_topology=True)
            grown = affinity.scale(grown, xfact=1 / k, yfact=1.0, origin=(0, 0))
            ring = [(round(y, decimals), round(x, decimals)) for x, y in grown.exterior.coords]
            candidate = Polygon([(x, y) for y, x in ring])
            if len(ring) <= max_points and candidate.is_valid and candidate.covers(part):
                out.append(" ".join(f"{lat},{lon}" for lat, lon in ring))
                break
            tolerance *= 1.4
        else:
            raise ValueError(f"cannot cover a part of {part.area:.6f} square degrees with {max_points} points")
    return out


# --- texts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Templates:
    """One language's texts. ``{area}``, ``{lines}``, ``{since}``, ``{until}`` are filled in;
    ``wea``/``wea_long`` and ``clear_wea``/``clear_wea_long`` list variants, fullest first,
    the last one fixed (it always fits)."""

    language: str
    event: str
    sender_name: str
    headline: str
    description: str
    instruction: str
    clear_headline: str
    clear_description: str
    clear_instruction: str
    wea: tuple[str, ...]
    wea_long: tuple[str, ...]
    clear_wea: tuple[str, ...]
    clear_wea_long: tuple[str, ...]
    and_: str
    more: str  # "{first} and {n} more towns"
    count: str  # "{n} towns"
    here: str  # "your area"
    line_at: str  # "{name} at {line}"
    time_format: str


TEMPLATES: Final[dict[str, Templates]] = {
    "en-US": Templates(
        language="en-US", event="911 Telephone Outage", sender_name="{state} 9-1-1",
        headline="911 outage in {area}", clear_headline="911 service restored in {area}",
        description="Since {since}, calls to 9-1-1 from {area} may not go through.",
        instruction="If you have an emergency, call {lines}. If you cannot get through, pull a street fire alarm "
                    "box or go to a fire or police station.",
        clear_description="9-1-1 service in {area} was restored at {until}.",
        clear_instruction="Call 9-1-1 for emergencies as usual.",
        wea=("911 outage in {area}. For emergencies call {line} or go to a fire or police station.",
             "911 down in {area}. Emergency? Call {line} or go to a fire/police station.",
             "911 down in your area. Emergency? Call {line} or go to a fire/police station.",
             "911 down in {area}. Emergency? Go to a fire or police station.",
             "911 is down. In an emergency go to a fire or police station."),
        wea_long=("911 is not working in {area} since {since}. If you have an emergency, call {lines}. If you cannot "
                  "get through, pull a street fire alarm box or go to a fire or police station.",
                  "911 is not working in {area}. If you have an emergency, call {numbers}. If you cannot get "
                  "through, pull a street fire alarm box or go to a fire or police station.",
                  "911 is not working in {area}. If you have an emergency, pull a street fire alarm box or go to a "
                  "fire or police station.",
                  "911 is not working in your area. If you have an emergency, pull a street fire alarm box or go to "
                  "a fire or police station."),
        clear_wea=("911 service is restored in {area}. Call 911 for emergencies.",
                   "911 restored in {area}. Call 911 for emergencies.",
                   "911 service is restored. Call 911 for emergencies."),
        clear_wea_long=("911 service in {area} was restored at {until}. Call 911 for emergencies as usual.",
                        "911 service in {area} is restored. Call 911 for emergencies as usual.",
                        "911 service is restored. Call 911 for emergencies as usual."),
        and_=" and ", more="{first} and {n} more towns", count="{n} towns", here="your area",
        line_at="{name} at {line}", time_format="%-I:%M %p",
    ),
    "es-US": Templates(
        language="es-US", event="Interrupción del 911", sender_name="9-1-1 de {state}",
        headline="Interrupción del 911 en {area}", clear_headline="Servicio 911 restablecido en {area}",
        description="Desde las {since}, las llamadas al 9-1-1 desde {area} podrían no conectarse.",
        instruction="Si tiene una emergencia, llame al {lines}. Si no logra comunicarse, active una caja de alarma "
                    "de incendio en la calle o vaya a una estación de bomberos o de policía.",
        clear_description="El servicio 9-1-1 en {area} se restableció a las {until}.",
        clear_instruction="En emergencias, llame al 9-1-1 como de costumbre.",
        wea=("911 fuera de servicio en {area}. Emergencias: llame al {line} o vaya a bomberos o policía.",
             "Sin 911 en {area}. Emergencia: llame al {line} o vaya a bomberos o policía.",
             "Sin 911 en su zona. Emergencia: llame al {line} o vaya a bomberos o policía.",
             "Sin 911 en {area}. Emergencia: vaya a una estación de bomberos o policía.",
             "El 911 no funciona. Emergencia: vaya a una estación de bomberos o policía."),
        wea_long=("El 911 no funciona en {area} desde las {since}. Si tiene una emergencia, llame al {lines}. Si no "
                  "logra comunicarse, active una caja de alarma de incendio o vaya a una estación de bomberos o de "
                  "policía.",
                  "El 911 no funciona en {area}. Si tiene una emergencia, llame al {numbers}. Si no logra "
                  "comunicarse, active una caja de alarma de incendio o vaya a una estación de bomberos o de policía.",
                  "El 911 no funciona en {area}. Si tiene una emergencia, active una caja de alarma de incendio o "
                  "vaya a una estación de bomberos o de policía.",
                  "El 911 no funciona en su zona. Si tiene una emergencia, active una caja de alarma de incendio o "
                  "vaya a una estación de bomberos o de policía."),
        clear_wea=("El servicio 911 está restablecido en {area}. En emergencias llame al 911.",
                   "911 restablecido en {area}. En emergencias llame al 911.",
                   "El servicio 911 está restablecido. En emergencias llame al 911."),
        clear_wea_long=("El servicio 911 en {area} se restableció a las {until}. En emergencias llame al 911 como de "
                        "costumbre.",
                        "El servicio 911 en {area} está restablecido. En emergencias llame al 911 como de costumbre.",
                        "El servicio 911 está restablecido. En emergencias llame al 911 como de costumbre."),
        and_=" y ", more="{first} y {n} localidades más", count="{n} localidades", here="su zona",
        line_at="{name} al {line}", time_format="%H:%M",
    ),
}  # fmt: skip


def fit_text(variants: Sequence[str], limit: int, values: Sequence[Mapping[str, str]]) -> str:
    """The first variant, filled with the first ``values`` that make it fit ``limit``
    characters (variants in order; for each, the values in order, fullest first). A variant
    that needs a value not given is skipped. ``ValueError`` if nothing fits: the last variant
    is meant to be a fixed text that does."""
    for variant in variants:
        for v in values:
            try:
                text = variant.format_map(v)
            except KeyError:
                continue
            if len(text) <= limit:
                return text
    raise ValueError(f"no text variant fits in {limit} characters: {variants[-1]!r}")


def _join(names: Sequence[str], and_: str) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + and_ + names[-1]


def _area_names(t: Templates, towns: Sequence[AlertTown], statewide: bool, state: str) -> list[str]:
    """Ways to name the area, fullest first."""
    if statewide:
        return [state]
    names = [x.title for x in towns]
    out = [_join(names, t.and_)]
    if len(names) > 2:
        out.append(t.more.format(first=names[0], n=len(names) - 1))
        out.append(t.count.format(n=len(names)))
    return out


# --- drafts and the workflow -------------------------------------------------------------------


class DraftState(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    SENT = "sent"
    WITHDRAWN = "withdrawn"
    REJECTED = "rejected"


class ClearMode(StrEnum):
    CANCEL = "cancel"
    UPDATE = "update"


#: (state, action) -> next state; anything else is refused with the draft's state named.
TRANSITIONS: Final[Mapping[tuple[DraftState, str], DraftState]] = {
    (DraftState.DRAFT, "approve"): DraftState.DRAFT,  # two-person: the first of two
    (DraftState.DRAFT, "approved"): DraftState.APPROVED,
    (DraftState.DRAFT, "withdraw"): DraftState.WITHDRAWN,
    (DraftState.DRAFT, "reject"): DraftState.REJECTED,
    (DraftState.APPROVED, "sent"): DraftState.SENT,
}


@dataclass(frozen=True, slots=True)
class Transition:
    state: DraftState
    by: str
    at: float
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "by": self.by, "at": format_datetime(self.at), "note": self.note}


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """How alerts are written and approved. ``sender``: the CAP sender (globally unique,
    e.g. an address at the authority's domain); ``expires_after``: seconds a message stays
    in force (IPAWS requires ``<expires>``; an open outage is renewed ``renew_before`` seconds
    earlier by an Update)."""

    sender: str
    id_prefix: str = "FIREBOX"
    status: Status = Status.ACTUAL
    auto_send_statewide: bool = False
    two_person: bool = False
    clear_as: ClearMode = ClearMode.CANCEL
    expires_after: float = 6 * 3600.0
    renew_before: float = 1800.0
    web: str | None = None
    contact: str | None = None
    eas_org: str = "CIV"
    wea_handling: str = "Public Safety"
    languages: tuple[str, ...] = ("en-US", "es-US")
    max_polygon_points: int = ipaws.MAX_POLYGON_POINTS

    def __post_init__(self) -> None:
        if not self.sender or any(c in self.sender for c in " ,<&"):
            raise ValueError(f"sender must be non-empty, without spaces, commas, '<' or '&': {self.sender!r}")
        if unknown := [lang for lang in self.languages if lang not in TEMPLATES]:
            raise ValueError(f"no templates for {unknown}; known: {sorted(TEMPLATES)}")
        if not 0 < self.renew_before < self.expires_after:
            raise ValueError("0 < renew_before < expires_after is required")


@dataclass(slots=True)
class AlertDraft:
    """One CAP message of a chain, from draft to sent. ``alert`` is the preview until
    approval, then the message as sent (``xml``: its bytes, signed if a signer is set);
    ``problems``: what CAP 1.2 / IPAWS validation found (a draft with problems cannot be
    approved)."""

    id: str
    chain: str
    msg_type: MsgType
    clear: bool
    towns: tuple[str, ...]
    psaps: tuple[str, ...]
    statewide: bool
    outages: tuple[str, ...]
    created: float
    alert: Alert
    problems: list[Problem]
    #: The area the message speaks of: the picture's, or for an all-clear the last one told.
    area_psaps: tuple[str, ...] = ()
    area_statewide: bool = False
    state: DraftState = DraftState.DRAFT
    approvals: list[str] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    xml: bytes | None = None
    sent_at: float | None = None

    @property
    def target(self) -> tuple[tuple[str, ...], bool]:
        return self.towns, self.statewide

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "chain": self.chain, "msgType": self.msg_type.value, "clear": self.clear,
            "state": self.state.value, "towns": list(self.towns), "psaps": list(self.psaps),
            "statewide": self.statewide, "outages": list(self.outages), "created": format_datetime(self.created),
            "sent": self.alert.sent if self.state in (DraftState.APPROVED, DraftState.SENT) else None,
            "references": [str(r) for r in self.alert.references], "approvals": list(self.approvals),
            "headline": self.alert.infos[0].headline if self.alert.infos else None,
            "problems": [p.to_json() for p in self.problems],
            "transitions": [t.as_dict() for t in self.transitions],
        }  # fmt: skip


class ApprovalError(ValueError):
    """An approval (or rejection) refused; ``str()`` says why."""


@dataclass(slots=True)
class _Chain:
    id: str
    drafts: list[AlertDraft] = field(default_factory=list)

    def published(self) -> list[AlertDraft]:
        """Messages final (approved or sent): what later messages reference."""
        return [d for d in self.drafts if d.state in (DraftState.APPROVED, DraftState.SENT)]


class AlertManager:
    """The alert workflow for one ``AlertArea`` under one ``AlertPolicy``. ``signer``: bytes
    of an unsigned CAP message -> the signed bytes (``functools.partial(dsig.sign,
    key_pem=..., cert_pem=...)``), or None to publish unsigned.

    Feed it ``on_outages(updates, now)`` (``Outage.as_dict()`` snapshots, one detector
    evaluation at a time) and ``tick(now)`` now and then (renewals); a person calls
    ``approve`` / ``reject``; the I/O side publishes ``take_outbox()`` and calls ``sent``.

    ``store`` (``firebox.alerting.store``), when given, keeps every draft and is shared by the
    nodes of a cluster: a draft is claimed under its drafting key (a node that drafts second
    adopts the first node's draft), every transition is written back, and a draft is read
    again before each action on it. ``node`` (this node's id) keeps identifiers unique."""

    def __init__(self, area: AlertArea, policy: AlertPolicy, *,
                 signer: Callable[[bytes], bytes] | None = None, store: Any = None,
                 node: str | None = None) -> None:  # fmt: skip
        self.area = area
        self.policy = policy
        self.signer = signer
        self.store = store
        self.node = node
        self.drafts: dict[str, AlertDraft] = {}
        self.outages: dict[str, dict[str, Any]] = {}
        self.chain: _Chain | None = None
        self._outbox: list[AlertDraft] = []
        self._seq = 0
        self._chains = 0

    # --- inputs ---------------------------------------------------------------------------

    def on_outages(self, outages: Iterable[Mapping[str, Any]], now: float) -> list[AlertDraft]:
        """Outage snapshots (``Outage.as_dict()``, or ``OutageUpdate.outage``) in; the drafts
        made (already approved if the policy sends them at once)."""
        for o in outages:
            oid = str(o.get("id"))
            if o.get("state") == "cleared":
                self.outages.pop(oid, None)
            else:
                self.outages[oid] = dict(o)
        return self._reconcile(now)

    def tick(self, now: float) -> list[AlertDraft]:
        """Renew a sent message about to expire while its outage goes on (an Update)."""
        last = self._last_final()
        if last is None or last.clear or self._pending() is not None:
            return []
        expires = datetime.fromisoformat(last.alert.infos[0].expires or "").timestamp()
        if now < expires - self.policy.renew_before:
            return []
        psaps, statewide, outage_ids = self._picture()
        if not psaps:
            return []
        return [self._draft(MsgType.UPDATE, psaps, statewide, outage_ids, now, note="renewal before expiry")]

    def approve(self, draft_id: str, user: str, now: float) -> AlertDraft:
        """``user`` approves; with enough approvals the message is final (sent = ``now``),
        signed, and queued for publication. ``KeyError`` for an unknown draft,
        ``ApprovalError`` naming why otherwise."""
        draft = self._refresh(self.drafts[draft_id])
        user = user.strip()
        if not user:
            raise ApprovalError("an approval needs the approver's user name")
        self._allowed(draft, "approve")
        if draft.problems:
            raise ApprovalError(f"draft {draft.id} does not validate: " + "; ".join(str(p) for p in draft.problems))
        if user in draft.approvals:
            raise ApprovalError(f"{user} already approved draft {draft.id}; a second, different person must approve")
        needed = 2 if self.policy.two_person else 1
        if len(draft.approvals) + 1 < needed:
            draft.approvals.append(user)
            draft.transitions.append(Transition(DraftState.DRAFT, user, now, f"approval 1 of {needed}"))
            return self._persist(draft)
        self._finalize(draft, user, now, f"approval {len(draft.approvals) + 1} of {needed}")
        draft.approvals.append(user)
        return self._persist(draft)

    def reject(self, draft_id: str, user: str, now: float, reason: str = "") -> AlertDraft:
        draft = self._refresh(self.drafts[draft_id])
        if not user.strip():
            raise ApprovalError("a rejection needs the user's name")
        self._allowed(draft, "reject")
        draft.state = DraftState.REJECTED
        draft.transitions.append(Transition(DraftState.REJECTED, user.strip(), now, reason))
        return self._persist(draft)

    def take_outbox(self) -> list[AlertDraft]:
        """Approved messages to publish, oldest first (each once)."""
        out, self._outbox = self._outbox, []
        return out

    def sent(self, draft_id: str, now: float, note: str = "") -> AlertDraft:
        """The publisher has published ``draft_id``."""
        draft = self._refresh(self.drafts[draft_id])
        self._allowed(draft, "sent")
        draft.state = DraftState.SENT
        draft.sent_at = now
        draft.transitions.append(Transition(DraftState.SENT, SYSTEM_USER, now, note))
        return self._persist(draft)

    # --- the shared store ------------------------------------------------------------------

    def _persist(self, draft: AlertDraft) -> AlertDraft:
        if self.store is not None:
            self.store.save(draft)
        return draft

    def _refresh(self, draft: AlertDraft) -> AlertDraft:
        """The draft as the store has it, if another node moved it on (more transitions)."""
        stored = self.store.get(draft.id) if self.store is not None else None
        if stored is not None and len(stored.transitions) > len(draft.transitions):
            draft.state, draft.approvals, draft.transitions = stored.state, stored.approvals, stored.transitions
            draft.alert, draft.xml, draft.sent_at = stored.alert, stored.xml, stored.sent_at
        return draft

    def _adopt(self, draft: AlertDraft, last_final: AlertDraft | None) -> AlertDraft:
        """Claim the draft under its drafting key; if another node drafted it first, take
        that one (its identifier and chain) instead."""
        from firebox.alerting.store import draft_key

        assert self.chain is not None
        key = draft_key(last_final.id if last_final else None, draft.msg_type, draft.outages, draft.towns,
                        draft.statewide, draft.clear)  # fmt: skip
        held = self.store.claim(key, draft)
        if held.id == draft.id:
            return draft
        held.problems = ipaws.validate_ipaws(held.alert, max_polygon_points=self.policy.max_polygon_points)
        self.chain.id = held.chain
        return held

    # --- internals ------------------------------------------------------------------------

    def _allowed(self, draft: AlertDraft, action: str) -> None:
        if (draft.state, action) not in TRANSITIONS:
            last = draft.transitions[-1] if draft.transitions else None
            why = f" ({last.note})" if last is not None and last.note and last.state is draft.state else ""
            raise ApprovalError(f"draft {draft.id} is {draft.state.value}{why}: cannot {action}")

    def _picture(self) -> tuple[frozenset[str], bool, tuple[str, ...]]:
        psaps: set[str] = set()
        whole: set[str] = set()  # PSAPs whose every caller is cut off
        ids = []
        for oid, o in sorted(self.outages.items()):
            if o.get("state") != "confirmed":
                continue
            affected = self.area.psaps_affected(o)
            if affected:
                psaps |= affected
                if not self.area.partial(o):
                    whole |= affected
                ids.append(oid)
        # "Statewide" (sent at once by policy) only when every PSAP is wholly cut off; a
        # partial picture over the whole state waits for a person.
        statewide = bool(whole) and whole >= set(self.area.psaps)
        return frozenset(psaps), statewide, tuple(ids)

    def _pending(self) -> AlertDraft | None:
        if self.chain is None:
            return None
        return next((d for d in self.chain.drafts if d.state is DraftState.DRAFT), None)

    def _last_final(self) -> AlertDraft | None:
        if self.chain is None:
            return None
        final = self.chain.published()
        return final[-1] if final else None

    def _reconcile(self, now: float) -> list[AlertDraft]:
        psaps, statewide, outage_ids = self._picture()
        towns = tuple(t.id for t in self.area.towns_of(psaps))
        target = (towns, statewide)
        chain = self.chain
        latest = chain.drafts[-1] if chain and chain.drafts else None
        last_final = self._last_final()
        if latest is not None and latest.state is not DraftState.WITHDRAWN and latest.target == target:
            return []  # nothing new to say (or a person already decided)
        if not towns:
            if chain is None:
                return []
            pending = self._pending()
            if pending is not None:
                self._withdraw(pending, now, "the outage ended before the alert was sent")
            if last_final is None or last_final.clear:
                self.chain = None  # nothing public to cancel
                return []
            clear_type = MsgType.CANCEL if self.policy.clear_as is ClearMode.CANCEL else MsgType.UPDATE
            return [self._draft(clear_type, frozenset(), False, outage_ids, now, clear=True)]
        pending = self._pending()
        if pending is not None:
            self._withdraw(pending, now, "superseded: the affected area changed")
        if last_final is not None and not last_final.clear and last_final.target == target:
            return []  # back to what the public was last told
        if chain is None or (last_final is not None and last_final.clear):
            self._chains += 1
            self.chain = _Chain(f"{self.policy.id_prefix}-chain-{format_datetime(now)[:19].replace(':', '')}-{self._chains}")
        msg_type = MsgType.UPDATE if self._last_final() is not None else MsgType.ALERT
        return [self._draft(msg_type, psaps, statewide, outage_ids, now)]

    def _withdraw(self, draft: AlertDraft, now: float, note: str) -> None:
        draft = self._refresh(draft)
        if draft.state is not DraftState.DRAFT:
            return  # another node's approver decided first
        draft.state = DraftState.WITHDRAWN
        draft.transitions.append(Transition(DraftState.WITHDRAWN, SYSTEM_USER, now, note))
        self._persist(draft)

    def _draft(self, msg_type: MsgType, psaps: frozenset[str], statewide: bool, outage_ids: tuple[str, ...],
               now: float, *, clear: bool = False, note: str = "") -> AlertDraft:  # fmt: skip
        assert self.chain is not None
        last_final = self._last_final()
        if clear:
            assert last_final is not None
            psaps, statewide = frozenset(last_final.area_psaps), last_final.area_statewide  # the area last told
        self._seq += 1
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
        node = f"-{self.node}" if self.node else ""
        ident = f"{self.policy.id_prefix}-{stamp}{node}-{self._seq}"
        towns = self.area.towns_of(psaps)
        alert = self._build(ident, msg_type, towns, psaps, statewide, now, clear=clear)
        draft = AlertDraft(
            id=ident, chain=self.chain.id, msg_type=msg_type, clear=clear,
            towns=() if clear else tuple(t.id for t in towns), psaps=() if clear else tuple(sorted(psaps)),
            statewide=False if clear else statewide, outages=outage_ids, created=now, alert=alert,
            problems=ipaws.validate_ipaws(alert, max_polygon_points=self.policy.max_polygon_points),
            area_psaps=tuple(sorted(psaps)), area_statewide=statewide,
        )  # fmt: skip
        draft.transitions.append(Transition(DraftState.DRAFT, SYSTEM_USER, now,
                                            note or f"{msg_type.value} drafted for outages {', '.join(outage_ids) or '(none)'}"))  # fmt: skip
        if self.store is not None:
            adopted = self._adopt(draft, last_final)
            if adopted is not draft:  # another node's: its workflow, not ours
                self.drafts[adopted.id] = adopted
                self.chain.drafts.append(adopted)
                return adopted
        self.drafts[ident] = draft
        self.chain.drafts.append(draft)
        was_statewide = last_final is not None and last_final.statewide
        if self.policy.auto_send_statewide and (statewide or was_statewide) and not draft.problems:
            self._finalize(draft, POLICY_USER, now, "statewide: sent at once by policy")
            draft.approvals.append(POLICY_USER)
        return self._persist(draft)

    def _finalize(self, draft: AlertDraft, user: str, now: float, note: str) -> None:
        towns = self.area.towns_of(draft.area_psaps)
        final = self._build(draft.id, draft.msg_type, towns, frozenset(draft.area_psaps), draft.area_statewide, now,
                            clear=draft.clear)  # fmt: skip
        problems = ipaws.validate_ipaws(final, max_polygon_points=self.policy.max_polygon_points)
        if problems:
            draft.problems = problems
            raise ApprovalError(f"draft {draft.id} does not validate: " + "; ".join(str(p) for p in problems))
        xml = final.to_xml()
        draft.alert, draft.xml = final, self.signer(xml) if self.signer else xml
        draft.state = DraftState.APPROVED
        draft.transitions.append(Transition(DraftState.APPROVED, user, now, note))
        self._outbox.append(draft)

    def _references(self, ident: str) -> tuple[Reference, ...]:
        assert self.chain is not None
        return tuple(d.alert.reference for d in self.chain.published() if d.id != ident)

    # --- the message ----------------------------------------------------------------------

    def _build(self, ident: str, msg_type: MsgType, towns: Sequence[AlertTown], psaps: frozenset[str],
               statewide: bool, now: float, *, clear: bool) -> Alert:  # fmt: skip
        p = self.policy
        start = self._since(psaps)
        infos = tuple(self._info(TEMPLATES[lang], towns, psaps, statewide, now, start, clear) for lang in p.languages)
        return Alert(
            identifier=ident, sender=p.sender, sent=format_datetime(now), status=p.status.value,
            msg_type=msg_type.value, scope="Public", codes=(ipaws.IPAWS_CODE,),
            references=self._references(ident) if msg_type is not MsgType.ALERT else (),
            incidents=self.chain.id if self.chain else None, infos=infos,
        )  # fmt: skip

    def _since(self, psaps: frozenset[str]) -> float | None:
        starts = []
        for o in self.outages.values():
            if o.get("state") == "confirmed" and self.area.psaps_affected(o) & psaps and o.get("start"):
                starts.append(datetime.fromisoformat(str(o["start"]).replace("Z", "+00:00")).timestamp())
        return min(starts) if starts else None

    def _area(self, towns: Sequence[AlertTown], statewide: bool) -> Area:
        a = self.area
        if statewide:
            polygons = cover_polygons(a.outline, self.policy.max_polygon_points)
            return Area(a.name, tuple(polygons), geocodes=tuple(ValuePair("SAME", s) for s in [a.state_same] if s))
        polygons = [poly for t in towns for poly in cover_polygons(t.geometry, self.policy.max_polygon_points)]
        codes = sorted({t.same for t in towns if t.same}) or ([a.state_same] if a.state_same else [])
        desc = ", ".join(t.title for t in towns)
        return Area(desc, tuple(polygons), geocodes=tuple(ValuePair("SAME", c) for c in codes))

    def _info(self, t: Templates, towns: Sequence[AlertTown], psaps: frozenset[str], statewide: bool, now: float,
              start: float | None, clear: bool) -> Info:  # fmt: skip
        p, a = self.policy, self.area
        zone = ZoneInfo(a.timezone)
        since = datetime.fromtimestamp(start if start is not None else now, zone).strftime(t.time_format)
        until = datetime.fromtimestamp(now, zone).strftime(t.time_format)
        lines = [a.psaps[x] for x in sorted(psaps) if x in a.psaps]
        names = _area_names(t, towns, statewide, a.name)
        fill: list[dict[str, str]] = []
        for n in names:
            base = {"area": n, "since": since, "until": until}
            full = dict(base, lines=_join([t.line_at.format(name=x.name, line=x.line) for x in lines], t.and_),
                        numbers=_join([x.line for x in lines], t.and_))  # fmt: skip
            if len(lines) == 1:
                full["line"] = lines[0].line
            fill.append(full)
            fill.append(dict(full, lines=full["numbers"]))
        area_all = fill[0]
        if clear:
            headline = t.clear_headline.format_map(area_all)
            description, instruction = t.clear_description.format_map(area_all), t.clear_instruction
            short = fit_text(t.clear_wea, ipaws.WEA_SHORT_TEXT, fill)
            long = fit_text(t.clear_wea_long, ipaws.WEA_LONG_TEXT, fill)
        else:
            # CAP 1.2 section 3.2.2: a headline SHOULD be under 160 characters.
            headline = fit_text([t.headline], 160, fill)
            description = t.description.format_map(area_all)
            instruction = t.instruction.format_map(area_all)
            short = fit_text(t.wea, ipaws.WEA_SHORT_TEXT, fill)
            long = fit_text(t.wea_long, ipaws.WEA_LONG_TEXT, fill)
        return Info(
            language=t.language, categories=(Category.INFRA.value, Category.SAFETY.value), event=t.event,
            response_types=(ResponseType.ALL_CLEAR.value,) if clear else (ResponseType.EXECUTE.value,),
            urgency=(Urgency.PAST if clear else Urgency.IMMEDIATE).value,
            severity=(Severity.MINOR if clear else Severity.SEVERE).value, certainty=Certainty.OBSERVED.value,
            event_codes=(ValuePair("SAME", SAME_911_OUTAGE),),
            effective=format_datetime(now), onset=None if clear or start is None else format_datetime(start),
            expires=format_datetime(now + p.expires_after), sender_name=t.sender_name.format(state=a.name),
            headline=headline, description=description, instruction=instruction, web=p.web, contact=p.contact,
            parameters=(ValuePair("EAS-ORG", p.eas_org), ValuePair("WEAHandling", p.wea_handling),
                        ValuePair("CMAMtext", short), ValuePair("CMAMlongtext", long)),
            areas=(self._area(towns, statewide),),
        )  # fmt: skip

