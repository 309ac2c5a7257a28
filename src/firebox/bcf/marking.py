"""What the BCF does to an emergency request crossing the border (NENA-STA-010.3 section 4.1).

Sans-I/O: ``mark(request, ...)`` takes a parsed request and returns a rewritten copy plus what
was changed; identifiers come from a factory so that tests are deterministic.

* Recognition (``emergency_service``): an INVITE or MESSAGE whose Request-URI or To names
  ``urn:service:sos`` or one of its sub-services (RFC 5031), a misdialled form of it
  (``urn:service:SOS``, ``urn:service:911``, ``urn:service:sos.`` ...), or the dial string 911
  (``tel:911``, ``sip:911@host;user=phone``). ``urn:service:test.sos`` is the i3 test call and
  is kept as it is. A valid sub-service (``urn:service:sos.fire``) is kept; every other form
  becomes ``urn:service:sos``, in the Request-URI and in To alike.
* Identifiers: Call-Info ``<urn:emergency:uid:callid:ID:FQDN>;purpose=emergency-CallId`` and
  ``<urn:emergency:uid:incidentid:ID:FQDN>;purpose=emergency-IncidentId``, and the source
  ``<sip:SOURCE@FQDN>;purpose=emergency-source``. Call-Info values already present (another
  element's) are kept after ours.
* ``Resource-Priority`` (RFC 4412, the ``esnet`` namespace of RFC 7135): ``esnet.0`` to
  ``esnet.2`` are kept; every other value (other namespaces, esnet.3/4 which an originating
  network must not claim, malformed tokens) is removed; ``esnet.1`` is added when none remain.
* ``Supported: replaces`` (RFC 3891) is added so that PSAPs can transfer the call.
* The body passes through byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from firebox.logging.events import new_call_id, new_incident_id
from firebox.sip import AbsoluteUri, Request, SipParseError, SipUri, parse_name_addr, parse_uri, split_list

SOS = "urn:service:sos"
TEST_SOS = "urn:service:test.sos"
#: Sub-services of urn:service:sos registered with IANA (RFC 5031 section 4.2).
SOS_SUBSERVICES = frozenset(
    {"ambulance", "animal-control", "fire", "gas", "marine", "mountain", "physician", "poison", "police"}
)
#: Methods that start an emergency conversation (a call, or text to 911).
EMERGENCY_METHODS = frozenset({"INVITE", "MESSAGE"})
#: Resource-Priority values an originating network may set on an emergency call.
KEPT_PRIORITIES = ("esnet.0", "esnet.1", "esnet.2")
DEFAULT_PRIORITY = "esnet.1"

_DIAL_911 = re.compile(r"^\+?(?:1)?9-?1-?1$")
_SERVICE_MISDIALS = frozenset({"911", "sos911", "emergency", "sos-911", "e911", "sos."})


class CallKind(StrEnum):
    EMERGENCY = "emergency"
    TEST = "test"  # urn:service:test.sos: an i3 test call
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Recognized:
    kind: CallKind
    service: str  # the service URN the call leaves the BCF with
    misdialled: bool  # the caller's URI was not already that URN


def _service_of(uri_text: str) -> Recognized | None:
    """What ``uri_text`` (a Request-URI or To URI) means, or None when it is no emergency
    target. Never raises: an unparseable URI is simply not recognized here."""
    try:
        uri = parse_uri(uri_text.strip())
    except SipParseError:
        return None
    if isinstance(uri, AbsoluteUri):
        scheme, rest = uri.scheme.lower(), uri.opaque.strip()
        if scheme == "urn":
            low = rest.lower()
            if not low.startswith("service:"):
                return None
            name = low[len("service:") :]
            if name == "test.sos" or name.startswith("test.sos."):
                return Recognized(CallKind.TEST, f"urn:service:{name}", False)
            if name == "sos":
                return Recognized(CallKind.EMERGENCY, SOS, rest != "service:sos")
            if name.startswith("sos.") and name[4:] in SOS_SUBSERVICES:
                service = f"urn:service:{name}"
                return Recognized(CallKind.EMERGENCY, service, rest != f"service:{name}")
            if name.startswith("sos") or name in _SERVICE_MISDIALS:
                return Recognized(CallKind.EMERGENCY, SOS, True)
            return None
        if scheme == "tel":
            number = rest.split(";", 1)[0]
            return Recognized(CallKind.EMERGENCY, SOS, True) if _DIAL_911.match(number) else None
        return None
    assert isinstance(uri, SipUri)
    user = (uri.user or "").split(";", 1)[0]
    if _DIAL_911.match(user) or user.lower() == "sos":
        return Recognized(CallKind.EMERGENCY, SOS, True)
    return None


def recognize(request: Request) -> Recognized | None:
    """Whether ``request`` is an emergency (or test) call, from its Request-URI first, then
    its To (a carrier may put the dialled digits in either)."""
    if request.method.upper() not in EMERGENCY_METHODS:
        return None
    found = _service_of(request.uri)
    if found is None:
        to = request.headers.get("To")
        if to:
            try:
                found = _service_of(str(parse_name_addr(to).uri))
            except SipParseError:
                found = None
    return found


def clean_priorities(values: list[str]) -> tuple[list[str], list[str]]:
    """The Resource-Priority values kept and those removed (RFC 4412, RFC 7135)."""
    kept: list[str] = []
    removed: list[str] = []
    for value in values:
        v = value.strip().lower()
        if v in KEPT_PRIORITIES and v not in kept:
            kept.append(v)
        elif v:
            removed.append(value.strip())
    return kept, removed


@dataclass(slots=True)
class Marked:
    """A request as it leaves the BCF, with the identifiers given to it and every change made
    (each a short sentence, for the call's log)."""

    request: Request
    kind: CallKind
    service: str
    call_id: str
    incident_id: str
    source_id: str
    changes: list[str] = field(default_factory=list)


def _to_with(to_value: str, service: str) -> str:
    """The To header value naming ``service``, keeping display name and parameters."""
    try:
        addr = parse_name_addr(to_value)
    except SipParseError:
        return f"<{service}>"
    return str(replace(addr, uri=AbsoluteUri("urn", service[len("urn:") :])))


def mark(
    request: Request,
    recognized: Recognized,
    *,
    fqdn: str,
    source_id: str,
    call_id_factory: Callable[[str], str] = new_call_id,
    incident_id_factory: Callable[[str], str] = new_incident_id,
) -> Marked:
    """The marked copy of an emergency ``request`` (see the module docstring)."""
    headers = request.headers.copy()
    changes: list[str] = []
    service = recognized.service
    uri = request.uri
    if recognized.kind is CallKind.EMERGENCY and uri != service:
        changes.append(f"Request-URI {uri} -> {service}")
        uri = service
    to = headers.get("To")
    if to is not None and recognized.kind is CallKind.EMERGENCY:
        new_to = _to_with(to, service)
        if new_to != to:
            headers.set("To", new_to)
            changes.append(f"To {to} -> {new_to}")

    call_id = call_id_factory(fqdn)
    incident_id = incident_id_factory(fqdn)
    existing = headers.get_all("Call-Info")
    headers.remove("Call-Info")
    ours = [
        f"<{call_id}>;purpose=emergency-CallId",
        f"<{incident_id}>;purpose=emergency-IncidentId",
        f"<sip:{source_id}@{fqdn}>;purpose=emergency-source",
    ]
    for value in ours + existing:
        headers.add("Call-Info", value)
    changes.append(f"Call-Info: call {call_id}, incident {incident_id}, source {source_id}")

    given = [v for line in headers.get_lines("Resource-Priority") for v in split_list(line)]
    kept, removed = clean_priorities(given)
    if removed:
        changes.append(f"Resource-Priority removed: {', '.join(removed)}")
    if not kept:
        kept = [DEFAULT_PRIORITY]
        changes.append(f"Resource-Priority {DEFAULT_PRIORITY} added")
    if kept != given:
        headers.set("Resource-Priority", ", ".join(kept))

    supported = [v.strip().lower() for v in headers.get_all("Supported")]
    if "replaces" not in supported:
        headers.add("Supported", "replaces")
        changes.append("Supported: replaces added")

    out = Request(request.method, uri, headers, request.body, request.version)
    return Marked(out, recognized.kind, service, call_id, incident_id, source_id, changes)
