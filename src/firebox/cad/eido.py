"""EIDO export: an incident as an Emergency Incident Data Object (NENA-STA-021.1a-2022), the
JSON object NG9-1-1 functional elements pass incidents in (call handling to CAD, CAD to CAD,
to responders).

Structure (section numbers of NENA-STA-021.1a):

* the top-level object (2.4): ``$id`` is the Incident Tracking Identifier, ``eidoVersion``
  "1.0", ``issuingElementIdentification`` the CAD's element identifier, then one incident
  component and arrays of the other data components;
* every data component opens with the common prologue (``$id``, ``lastUpdateTimeStamp``,
  ``updatedByAgencyReference``, ``updatedByAgentReference``) and points at other components
  by ``{"$ref": "<their $id>"}``, never by nesting, so each is written once;
* agent (2.5) for each person or automaton on the incident's timeline, agency (2.6) for the
  CAD's agency, incident (2.9) with disposition (2.14), call (2.10; its ``$id`` is the i3
  Call Identifier) with call back (2.11) and the caller as a person (2.16), dispatch (2.13)
  for each dispatch action, notes (2.15) for the narrative, location (2.18; the PIDF-LO by
  value, RFC 4119) for the incident and for each unit's position, emergency resource (2.20)
  for each unit sent.

Component ``$id`` values other than the call's and the agency's are UUIDv5 of the incident
identifier and the component's local name, so the same incident exports the same ids each
time (a receiver can tell an update from a new component). Timestamps are NENA-STA-010.3
section 2.3 ones (RFC 3339, milliseconds, UTC offset).

Each export is validated against ``eido.schema.json`` (firebox's own JSON Schema, draft
2020-12, written from the standard's structure) and its references are checked to resolve;
``EidoError`` lists every problem by its JSON path.

Registry values (incident type, status, unit status, resource type, roles) follow the
names of the STA-021 registries (section 3) as tables below; they are firebox's reading,
not copied from the IANA registries.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from firebox.cad.model import (
    Action,
    Incident,
    IncidentStatus,
    IncidentType,
    SourceKind,
    Unit,
    UnitKind,
    UnitStatus,
)
from firebox.location.pidf import PidfLocation, Presence, serialize_pidf

EIDO_VERSION = "1.0"

#: Incident Type registry (3.2) by firebox incident type.
INCIDENT_TYPE_REGISTRY: dict[IncidentType, str] = {
    IncidentType.FIRE: "Fire",
    IncidentType.EMS: "EMS",
    IncidentType.POLICE: "Law",
}
#: Incident Status registry (3.3).
INCIDENT_STATUS_REGISTRY: dict[IncidentStatus, str] = {
    IncidentStatus.NEW: "Pending",
    IncidentStatus.DISPATCHED: "Dispatched",
    IncidentStatus.ON_SCENE: "OnScene",
    IncidentStatus.CLOSED: "Closed",
}
#: Primary Unit Status registry (3.9).
UNIT_STATUS_REGISTRY: dict[UnitStatus, str] = {
    UnitStatus.AVAILABLE: "Available",
    UnitStatus.DISPATCHED: "Dispatched",
    UnitStatus.EN_ROUTE: "Enroute",
    UnitStatus.ON_SCENE: "OnScene",
    UnitStatus.CLEARED: "Cleared",
    UnitStatus.OUT_OF_SERVICE: "OutOfService",
}
#: Emergency Resource Type registry (3.11).
RESOURCE_TYPE_REGISTRY: dict[UnitKind, str] = {
    UnitKind.ENGINE: "Engine",
    UnitKind.LADDER: "Ladder",
    UnitKind.RESCUE: "Rescue",
    UnitKind.AMBULANCE: "Ambulance",
    UnitKind.POLICE_CAR: "PatrolCar",
    UnitKind.CHIEF: "Chief",
}
#: Agent Role registry (3.6) by what the agent did on the timeline.
AGENT_ROLES: dict[Action, str] = {
    Action.CREATED: "Call Taking",
    Action.CALL_LINKED: "Call Taking",
    Action.DISPATCHED: "Dispatching",
    Action.UNIT_STATUS: "Responding",
}


def common_priority(priority: int) -> int:
    """incidentCommonPriorityNumber (2.9) runs 0-10 with 10 the most urgent; firebox's
    priority runs 1 (most urgent) to 5: 1 -> 10, 2 -> 8, ... 5 -> 2."""
    return 12 - 2 * priority


@dataclass(frozen=True, slots=True)
class EidoProblem:
    """One thing wrong with an EIDO: where (a JSON path, ``$.incidentComponent...``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class EidoError(ValueError):
    def __init__(self, problems: list[EidoProblem]):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


# --- validation --------------------------------------------------------------------------


@cache
def schema() -> dict[str, Any]:
    """firebox's EIDO JSON Schema (package data ``eido.schema.json``)."""
    text = resources.files("firebox.cad").joinpath("eido.schema.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    Draft202012Validator.check_schema(doc)
    return doc


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def validate(doc: Any) -> list[EidoProblem]:
    """Every problem of ``doc`` as an EIDO: schema violations (deepest first, by path), then
    references that resolve to no component and ``$id`` values used twice."""
    problems = [
        EidoProblem(e.json_path, _message(e))
        for e in sorted(_validator().iter_errors(doc), key=lambda e: (e.json_path, e.message))
    ]
    if isinstance(doc, dict):
        problems.extend(_reference_problems(doc))
    return problems


def check(doc: Any) -> None:
    """Raise ``EidoError`` naming every problem of ``doc``."""
    problems = validate(doc)
    if problems:
        raise EidoError(problems)


def _message(error: Any) -> str:
    if error.validator == "unevaluatedProperties":
        # jsonschema says "Unevaluated properties are not allowed ('x' was unexpected)".
        return f"{error.message} (not a member of this EIDO component)"
    return str(error.message)


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}" if re.fullmatch(r"[A-Za-z_@][\w@]*", k) else f"{path}[{k!r}]")
    elif isinstance(node, list):
        for n, v in enumerate(node):
            yield from _walk(v, f"{path}[{n}]")


def _reference_problems(doc: dict[str, Any]) -> list[EidoProblem]:
    ids: dict[str, str] = {}
    problems: list[EidoProblem] = []
    for path, node in _walk(doc, "$"):
        if isinstance(node, dict) and isinstance(node.get("$id"), str) and path != "$":
            if node["$id"] in ids:
                problems.append(EidoProblem(f"{path}['$id']", f"{node['$id']!r} is also the $id of {ids[node['$id']]}"))
            ids.setdefault(node["$id"], path)
    for path, node in _walk(doc, "$"):
        ref = node.get("$ref") if isinstance(node, dict) and len(node) == 1 else None
        if isinstance(ref, str) and ref not in ids:
            problems.append(EidoProblem(f"{path}['$ref']", f"{node['$ref']!r} is the $id of no component"))
    return problems


# --- export ------------------------------------------------------------------------------


def _ts(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds")


def _r(target: str) -> dict[str, str]:
    return {"$ref": target}


class _Builder:
    def __init__(self, incident: Incident, agency: str):
        self.incident = incident
        self.agency = agency

    def cid(self, local: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.incident.id}#{local}"))

    def agent_id(self, actor: str) -> str:
        if "@" in actor:
            return actor
        return f"{re.sub(r'[^A-Za-z0-9._-]+', '.', actor).strip('.').lower() or 'agent'}@{self.agency}"

    def prologue(self, cid: str, at: datetime, actor: str | None = None) -> dict[str, Any]:
        p: dict[str, Any] = {
            "$id": cid,
            "lastUpdateTimeStamp": _ts(at),
            "updatedByAgencyReference": _r(self.agency),
        }
        if actor is not None:
            p["updatedByAgentReference"] = _r(self.agent_id(actor))
        return p


def export_incident(
    incident: Incident, units: Mapping[str, Unit], *, agency: str, issuer: str
) -> dict[str, Any]:
    """The EIDO of ``incident`` (``units`` by id: the records of the units it names),
    issued by ``issuer`` (the CAD's element identifier) for ``agency`` (the agency
    identifier, a domain name). Validated before it is returned (``EidoError``)."""
    i, b = incident, _Builder(incident, agency)
    first = i.timeline[0] if i.timeline else None
    last_actor = i.timeline[-1].actor if i.timeline else None

    # Agents (2.5): everyone on the timeline, with the roles their actions show.
    roles: dict[str, list[str]] = {}
    last_seen: dict[str, datetime] = {}
    for e in i.timeline:
        r = roles.setdefault(e.actor, [])
        role = AGENT_ROLES.get(e.action)
        if e.action is Action.UNIT_STATUS and (e.detail.get("new") == "dispatched" or "why" in e.detail):
            role = None  # the dispatcher's own dispatch or close, not a responder's report
        if role == "Call Taking" and i.source.kind is not SourceKind.CALL:
            role = "Dispatching"  # a box or walk-in is entered by a dispatcher or the system
        if role and role not in r:
            r.append(role)
        last_seen[e.actor] = e.at
    agents = [
        {**b.prologue(b.agent_id(actor), last_seen[actor], actor),
         "agentRoleRegistryText": r or ["Other"], "agencyReference": _r(agency)}
        for actor, r in roles.items()
    ]  # fmt: skip
    agency_component = {
        **b.prologue(agency, i.updated_at, last_actor),
        "agencyRoleDescriptionRegistryText": ["CallReceiving", "Dispatch"],
        "agencyType": ["psap"],
        "incidentOwningAgencyIndicator": True,
    }

    # Locations (2.18): the incident's, and each unit's position.
    locations: list[dict[str, Any]] = []
    incident_loc = _location(b, "location", i.location.point, i.location.civic,
                             i.location.description, _location_type(i), i.updated_at, i.location.method)  # fmt: skip
    if incident_loc is not None:
        locations.append(incident_loc)

    # Calls (2.10), their call backs (2.11) and callers (2.16).
    calls, callbacks, persons = [], [], []
    for n, link in enumerate(i.calls):
        call: dict[str, Any] = {
            **b.prologue(link.call_id, link.linked_at, first.actor if first and n == 0 else None),
            "standardPrimaryCallType": "emergency",
            "direction": "incoming",
            "callStartTimestamp": _ts(link.linked_at),
            # The CAD sees a call once a call-taker has it: it was answered.
            "callStateRegistryText": "callAnswered",
        }
        if link.incident_tracking_id and link.incident_tracking_id != i.id:
            call["relatedCallIdentifier"] = [link.incident_tracking_id]
        if link.callback:
            cb_id, person_id = b.cid(f"callback-{n}"), b.cid(f"caller-{n}")
            uri = link.callback if re.match(r"^(tel|sip|sips):", link.callback) else f"tel:{link.callback}"
            callbacks.append({**b.prologue(cb_id, link.linked_at), "callBackInformationUri": [uri]})
            persons.append({
                **b.prologue(person_id, link.linked_at),
                "personIncidentRoleRegistryText": ["Caller"],
                "callIdentifier": [link.call_id],
                "callBackReference": _r(cb_id),
            })  # fmt: skip
            call["callBackReference"] = _r(cb_id)
            call["personReference"] = [_r(person_id)]
        if n == 0 and incident_loc is not None and i.source.kind is SourceKind.CALL:
            call["locationReference"] = [_r(incident_loc["$id"])]
        calls.append(call)

    # Notes (2.15): the narrative, HTML5 text as the standard asks.
    notes = [
        {**b.prologue(b.cid(f"note-{n}"), e.at, e.author),
         "notesActionComments": html.escape(e.text), "agentReference": _r(b.agent_id(e.author))}
        for n, e in enumerate(i.narrative)
    ]  # fmt: skip

    # Emergency resources (2.20): each unit sent, in its status on this incident.
    resources_: list[dict[str, Any]] = []
    resource_ids: dict[str, str] = {}
    for uid in i.units:
        unit = units.get(uid)
        if unit is None:
            raise EidoError([EidoProblem("$.emergencyResourceComponent", f"unit {uid} of the incident has no record")])
        entries = [e for e in i.timeline if e.action is Action.UNIT_STATUS and e.detail.get("unit") == uid]
        status = UnitStatus(entries[-1].detail["new"]) if entries else unit.status
        rid = resource_ids[uid] = b.cid(f"unit-{uid}")
        res: dict[str, Any] = {
            **b.prologue(rid, entries[-1].at if entries else i.updated_at, entries[-1].actor if entries else None),
            "emergencyResourceTypeCommonRegistryText": RESOURCE_TYPE_REGISTRY[unit.kind],
            "emergencyResourceTypeInternalText": unit.kind.value,
            "emergencyResourceName": unit.name or unit.id,
            "primaryUnitStatusRegistryText": UNIT_STATUS_REGISTRY[status],
            "unitStatusInternal": [status.value],
        }  # fmt: skip
        if unit.position is not None:
            loc = _location(b, f"unit-{uid}-position", unit.position, None, f"{unit.id} position",
                            "Unit", unit.updated_at or i.updated_at, "gps")  # fmt: skip
            assert loc is not None
            locations.append(loc)
            res["unitLocationReference"] = _r(loc["$id"])
        if incident_loc is not None and status in (UnitStatus.DISPATCHED, UnitStatus.EN_ROUTE):
            res["unitDestinationReference"] = _r(incident_loc["$id"])
        resources_.append(res)

    # Dispatch (2.13): one per dispatch action.
    dispatches = [
        {**b.prologue(b.cid(f"dispatch-{n}"), e.at, e.actor),
         "agencyReference": _r(agency), "agentReference": _r(b.agent_id(e.actor)),
         "emergencyResourceReference": [_r(resource_ids[u]) for u in e.detail["units"]]}
        for n, e in enumerate(x for x in i.timeline if x.action is Action.DISPATCHED)
    ]  # fmt: skip

    # The incident (2.9), with its disposition (2.14) once closed.
    component: dict[str, Any] = {
        **b.prologue(b.cid("incident"), i.updated_at, last_actor),
        "incidentTypeCommonRegistryText": INCIDENT_TYPE_REGISTRY[i.type],
        "incidentTypeInternalCode": i.subtype.name,
        "incidentTypeInternalText": i.subtype.value,
        "incidentStatusCommonRegistryText": [INCIDENT_STATUS_REGISTRY[i.status]],
        "incidentStatusInternalText": [i.status.value],
        "incidentCommonPriorityNumber": common_priority(i.priority),
        "incidentPriorityInternalText": f"P{i.priority}",
    }
    if agents:
        component["agentReference"] = [_r(a["$id"]) for a in agents]
    if incident_loc is not None:
        component["locationReference"] = [_r(incident_loc["$id"])]
    if persons:
        component["personReference"] = [_r(p["$id"]) for p in persons]
    if notes:
        component["notesReference"] = [_r(n["$id"]) for n in notes]
    if i.source.box:
        component["beatOrDispatchGroupText"] = f"box {i.source.box}"
    if i.status is IncidentStatus.CLOSED and i.disposition:
        component["dispositionComponent"] = [{
            **b.prologue(b.cid("disposition"), i.closed_at or i.updated_at, last_actor),
            "dispositionCommonRegistryCode": i.disposition,
            "dispositionPrimaryIndicator": True,
        }]  # fmt: skip

    doc: dict[str, Any] = {
        **b.prologue(i.id, i.updated_at, last_actor),
        "eidoVersion": EIDO_VERSION,
        "issuingElementIdentification": issuer,
        "incidentComponent": component,
        "agencyComponent": [agency_component],
    }
    for name, items in (
        ("callComponent", calls), ("callbackComponent", callbacks),
        ("dispatchComponent", dispatches), ("agentComponent", agents),
        ("notesComponent", notes), ("locationComponent", locations),
        ("personComponent", persons), ("emergencyResourceComponent", resources_),
    ):  # fmt: skip
        if items:
            doc[name] = items
    check(doc)
    return doc


def _location_type(i: Incident) -> str:
    """Location Type registry (3.5): the caller's location when it came with the call."""
    return "Caller" if i.location.method.startswith("pidf") else "Incident"


def _location(
    b: _Builder, local: str, point: Any, civic: Any, description: str | None,
    kind: str, at: datetime, method: str,
) -> dict[str, Any] | None:  # fmt: skip
    if point is None and civic is None and not description:
        return None
    loc: dict[str, Any] = {**b.prologue(b.cid(local), at), "locationTypeDescriptionRegistryText": kind}
    if point is not None or civic is not None:
        presence = Presence(
            entity=f"pres:{b.incident.id}",
            locations=[PidfLocation(shapes=[point] if point is not None else [], civic=civic, method=method)],
        )
        loc["locationByValue"] = serialize_pidf(presence).decode("utf-8")
    if description:
        loc["locationDescriptionText"] = description
    return loc
