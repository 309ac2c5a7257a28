"""Validation of CAP 1.2 messages and of the IPAWS profile's rules, each problem a
``restapi.Problem`` naming the element by its path (``alert.info[1].area[0].polygon[2]``) and
the rule it breaks.

CAP 1.2 (OASIS Standard, 1 July 2010):

* section 3.2.1 ``<alert>``: ``identifier``, ``sender``, ``sent``, ``status``, ``msgType``,
  ``scope`` required; ``identifier`` and ``sender`` without spaces, commas, ``<`` or ``&``;
  ``restriction`` when the scope is Restricted, ``addresses`` when Private; ``references``
  ``sender,identifier,sent`` groups;
* section 3.2.2 ``<info>``: ``category`` (one at least), ``event``, ``urgency``,
  ``severity``, ``certainty`` required, each from its enumeration; ``responseType`` too;
* section 3.2.3 ``<resource>``: ``resourceDesc`` and ``mimeType`` required;
* section 3.2.4 ``<area>``: ``areaDesc`` required; a ``<polygon>`` is whitespace-separated
  WGS 84 ``lat,lon`` pairs, four at least, the first and last the same; a ``<circle>`` is
  ``lat,lon radius``; ``ceiling`` only with ``altitude``;
* section 3.3.3: every date-time ``YYYY-MM-DDThh:mm:ss`` with a numeric offset, UTC as
  ``-00:00``, no "Z" (and, by the schema's pattern, no fractional seconds).

The IPAWS profile (OASIS "Common Alerting Protocol, v. 1.2 USA Integrated Public Alert and
Warning System Profile Version 1.0", Committee Specification 01, section 3, the profile's
element requirements):

* ``<code>IPAWSv1.0</code>`` names the profile;
* ``<references>`` is required for an Update or a Cancel;
* every ``<info>`` needs ``<expires>``;
* an ``<eventCode>`` ``SAME`` (three letters, the EAS event code) and a ``<parameter>``
  ``EAS-ORG`` (the EAS originator code: ``PEP``, ``CIV``, ``WXR`` or ``EAS``) are required for
  EAS; each ``<area>`` needs a ``<geocode>`` ``SAME`` (six digits ``PSSCCC``);
* ``CMAMtext`` is the WEA text, at most 90 characters; ``CMAMlongtext`` (added by IPAWS-OPEN
  for WEA 3.0) at most 360: the two lengths of 47 CFR 10.430; ``WEAHandling`` one of the
  IPAWS-OPEN values (``Imminent Threat``, ``Public Safety``, ``Child Abduction``,
  ``Presidential``, ``State/Local Test``);
* a ``<polygon>`` carried to WEA has at most ``MAX_POLYGON_POINTS`` coordinate pairs (the
  limit of the Federal Alert Gateway to CMSP Gateway interface, J-STD-101).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from firebox.cap.message import (
    Alert,
    Area,
    Category,
    Certainty,
    Info,
    MsgType,
    ResponseType,
    Scope,
    Severity,
    Status,
    Urgency,
    parse_datetime,
)
from firebox.restapi import Problem

__all__ = [
    "EAS_ORIGINATORS",
    "IPAWS_CODE",
    "MAX_POLYGON_POINTS",
    "WEA_HANDLING",
    "WEA_LONG_TEXT",
    "WEA_SHORT_TEXT",
    "CapInvalid",
    "check",
    "validate",
    "validate_cap",
    "validate_ipaws",
]

IPAWS_CODE: Final = "IPAWSv1.0"
#: WEA text lengths, characters (47 CFR 10.430).
WEA_SHORT_TEXT: Final = 90
WEA_LONG_TEXT: Final = 360
MAX_POLYGON_POINTS: Final = 100
EAS_ORIGINATORS: Final = frozenset({"PEP", "CIV", "WXR", "EAS"})
WEA_HANDLING: Final = frozenset({"Imminent Threat", "Public Safety", "Child Abduction", "Presidential",
                                 "State/Local Test"})  # fmt: skip

_RESTRICTED = re.compile(r"[\s,<&]")
_SAME_EVENT = re.compile(r"[A-Z]{3}")
_SAME_GEOCODE = re.compile(r"\d{6}")
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_PAIR = re.compile(rf"({_NUMBER}),({_NUMBER})")
_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")  # RFC 3066


class CapInvalid(ValueError):
    """A message that breaks CAP 1.2 or the IPAWS profile; ``problems`` lists each."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def _enum(problems: list[Problem], path: str, value: str | None, allowed: Iterable[str], section: str) -> None:
    values = [str(v) for v in allowed]
    if not value:
        problems.append(Problem(path, f"required (CAP 1.2 section {section})"))
    elif value not in values:
        problems.append(Problem(path, f"must be one of {', '.join(values)}, not {value[:40]!r} (CAP 1.2 section {section})"))


def _required(problems: list[Problem], path: str, value: str | None, section: str) -> bool:
    if not value:
        problems.append(Problem(path, f"required, and not empty (CAP 1.2 section {section})"))
        return False
    return True


def _datetime(problems: list[Problem], path: str, value: str | None) -> None:
    if value is None:
        return
    try:
        parse_datetime(value)
    except ValueError as exc:
        problems.append(Problem(path, str(exc)))


def _polygon(problems: list[Problem], path: str, text: str, max_points: int | None) -> None:
    pairs = text.split()
    coords = []
    for i, pair in enumerate(pairs):
        m = _PAIR.fullmatch(pair)
        if m is None:
            problems.append(Problem(path, f"point {i + 1} {pair[:40]!r} is not 'lat,lon' (CAP 1.2 section 3.2.4)"))
            return
        lat, lon = float(m.group(1)), float(m.group(2))
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            problems.append(Problem(path, f"point {i + 1} {pair!r}: latitude must be in [-90, 90] and longitude in "
                                          f"[-180, 180] (WGS 84 lat,lon; CAP 1.2 section 3.2.4)"))  # fmt: skip
            return
        coords.append((lat, lon))
    if len(coords) < 4:
        problems.append(Problem(path, f"has {len(coords)} points; at least 4 are required (CAP 1.2 section 3.2.4)"))
        return
    if coords[0] != coords[-1]:
        problems.append(Problem(path, f"is not closed: the first point {pairs[0]} and the last {pairs[-1]} must be the "
                                      f"same (CAP 1.2 section 3.2.4)"))  # fmt: skip
    if max_points is not None and len(coords) > max_points:
        problems.append(Problem(path, f"has {len(coords)} points; IPAWS carries at most {max_points} to WEA "
                                      f"(J-STD-101)"))  # fmt: skip


def _circle(problems: list[Problem], path: str, text: str) -> None:
    parts = text.split()
    m = _PAIR.fullmatch(parts[0]) if len(parts) == 2 else None
    try:
        radius = float(parts[1]) if m else -1.0
    except ValueError:
        radius = -1.0
    if m is None or radius < 0 or not (-90 <= float(m.group(1)) <= 90 and -180 <= float(m.group(2)) <= 180):
        problems.append(Problem(path, f"must be 'lat,lon radius' (radius in km, not negative; CAP 1.2 section 3.2.4), "
                                      f"not {text[:60]!r}"))  # fmt: skip


def _area(problems: list[Problem], path: str, area: Area, max_points: int | None) -> None:
    _required(problems, f"{path}.areaDesc", area.area_desc, "3.2.4")
    for i, polygon in enumerate(area.polygons):
        _polygon(problems, f"{path}.polygon[{i}]", polygon, max_points)
    for i, circle in enumerate(area.circles):
        _circle(problems, f"{path}.circle[{i}]", circle)
    for i, code in enumerate(area.geocodes):
        _required(problems, f"{path}.geocode[{i}].valueName", code.value_name, "3.2.4")
        _required(problems, f"{path}.geocode[{i}].value", code.value, "3.2.4")
    for name in ("altitude", "ceiling"):
        value = getattr(area, name)
        if value is not None:
            try:
                float(value)
            except ValueError:
                problems.append(Problem(f"{path}.{name}", f"must be a number of feet, not {value[:40]!r} (CAP 1.2 section 3.2.4)"))
    if area.ceiling is not None and area.altitude is None:
        problems.append(Problem(f"{path}.ceiling", "only with altitude (CAP 1.2 section 3.2.4)"))


def _info(problems: list[Problem], path: str, info: Info, max_points: int | None) -> None:
    if info.language is not None and not _LANGUAGE.fullmatch(info.language):
        problems.append(Problem(f"{path}.language", f"must be an RFC 3066 language tag, not {info.language[:40]!r} "
                                                    f"(CAP 1.2 section 3.2.2)"))  # fmt: skip
    if not info.categories:
        problems.append(Problem(f"{path}.category", "at least one is required (CAP 1.2 section 3.2.2)"))
    for i, category in enumerate(info.categories):
        _enum(problems, f"{path}.category[{i}]", category, Category, "3.2.2")
    _required(problems, f"{path}.event", info.event, "3.2.2")
    for i, response in enumerate(info.response_types):
        _enum(problems, f"{path}.responseType[{i}]", response, ResponseType, "3.2.2")
    _enum(problems, f"{path}.urgency", info.urgency, Urgency, "3.2.2")
    _enum(problems, f"{path}.severity", info.severity, Severity, "3.2.2")
    _enum(problems, f"{path}.certainty", info.certainty, Certainty, "3.2.2")
    for name in ("effective", "onset", "expires"):
        _datetime(problems, f"{path}.{name}", getattr(info, name))
    for kind, pairs in (("eventCode", info.event_codes), ("parameter", info.parameters)):
        for i, pair in enumerate(pairs):
            _required(problems, f"{path}.{kind}[{i}].valueName", pair.value_name, "3.2.2")
    for i, res in enumerate(info.resources):
        _required(problems, f"{path}.resource[{i}].resourceDesc", res.resource_desc, "3.2.3")
        _required(problems, f"{path}.resource[{i}].mimeType", res.mime_type, "3.2.3")
        if res.size is not None and not res.size.isdigit():
            problems.append(Problem(f"{path}.resource[{i}].size", f"must be a whole number of bytes, not {res.size[:20]!r}"))
    for i, area in enumerate(info.areas):
        _area(problems, f"{path}.area[{i}]", area, max_points)


def validate_cap(alert: Alert) -> list[Problem]:
    """What breaks CAP 1.2 itself (empty if nothing)."""
    return _validate_cap(alert, None)


def _validate_cap(alert: Alert, max_points: int | None) -> list[Problem]:
    problems: list[Problem] = []
    for name in ("identifier", "sender"):
        value = getattr(alert, name)
        if _required(problems, f"alert.{name}", value, "3.2.1") and _RESTRICTED.search(value):
            problems.append(Problem(f"alert.{name}", "must not contain spaces, commas, '<' or '&' (CAP 1.2 section 3.2.1)"))
    if _required(problems, "alert.sent", alert.sent, "3.2.1"):
        _datetime(problems, "alert.sent", alert.sent)
    _enum(problems, "alert.status", alert.status, Status, "3.2.1")
    _enum(problems, "alert.msgType", alert.msg_type, MsgType, "3.2.1")
    _enum(problems, "alert.scope", alert.scope, Scope, "3.2.1")
    if alert.scope == Scope.RESTRICTED and not alert.restriction:
        problems.append(Problem("alert.restriction", "required when the scope is Restricted (CAP 1.2 section 3.2.1)"))
    if alert.scope == Scope.PRIVATE and not alert.addresses:
        problems.append(Problem("alert.addresses", "required when the scope is Private (CAP 1.2 section 3.2.1)"))
    for i, ref in enumerate(alert.references):
        for part in ("sender", "identifier"):
            if _RESTRICTED.search(getattr(ref, part)):
                problems.append(Problem(f"alert.references[{i}]", f"{part} {getattr(ref, part)[:40]!r} has a restricted "
                                                                  f"character (CAP 1.2 section 3.2.1)"))  # fmt: skip
        _datetime(problems, f"alert.references[{i}]", ref.sent)
    for i, info in enumerate(alert.infos):
        _info(problems, f"alert.info[{i}]", info, max_points)
    return problems


def validate_ipaws(alert: Alert, *, max_polygon_points: int = MAX_POLYGON_POINTS) -> list[Problem]:
    """What breaks CAP 1.2 or the IPAWS profile v1.0 (empty if nothing)."""
    problems = _validate_cap(alert, max_polygon_points)
    if IPAWS_CODE not in alert.codes:
        problems.append(Problem("alert.code", f"must include {IPAWS_CODE} (IPAWS profile v1.0 section 3)"))
    if alert.msg_type in (MsgType.UPDATE, MsgType.CANCEL) and not alert.references:
        problems.append(Problem("alert.references", f"required for a {alert.msg_type} (IPAWS profile v1.0 section 3)"))
    if not alert.infos and alert.msg_type in (MsgType.ALERT, MsgType.UPDATE):
        problems.append(Problem("alert.info", f"an {alert.msg_type} needs at least one info block (IPAWS profile v1.0 section 3)"))
    for i, info in enumerate(alert.infos):
        path = f"alert.info[{i}]"
        if not info.expires:
            problems.append(Problem(f"{path}.expires", "required (IPAWS profile v1.0 section 3)"))
        same = [c for c in info.event_codes if c.value_name == "SAME"]
        if not same:
            problems.append(Problem(f"{path}.eventCode", "an eventCode SAME (the 3-letter EAS event code) is required "
                                                         "(IPAWS profile v1.0 section 3)"))  # fmt: skip
        for c in same:
            if not _SAME_EVENT.fullmatch(c.value):
                problems.append(Problem(f"{path}.eventCode.SAME", f"must be 3 capital letters, not {c.value[:20]!r}"))
        org = info.parameter("EAS-ORG")
        if org is None:
            problems.append(Problem(f"{path}.parameter.EAS-ORG", "required (IPAWS profile v1.0 section 3)"))
        elif org not in EAS_ORIGINATORS:
            problems.append(Problem(f"{path}.parameter.EAS-ORG", f"must be one of {', '.join(sorted(EAS_ORIGINATORS))}, "
                                                                  f"not {org[:20]!r} (47 CFR 11.31)"))  # fmt: skip
        for name, limit in (("CMAMtext", WEA_SHORT_TEXT), ("CMAMlongtext", WEA_LONG_TEXT)):
            text = info.parameter(name)
            if text is not None and len(text) > limit:
                problems.append(Problem(f"{path}.parameter.{name}", f"has {len(text)} characters; WEA carries at most "
                                                                     f"{limit} (47 CFR 10.430)"))  # fmt: skip
            if text is not None and not text.strip():
                problems.append(Problem(f"{path}.parameter.{name}", "must not be empty"))
        handling = info.parameter("WEAHandling")
        if handling is not None and handling not in WEA_HANDLING:
            problems.append(Problem(f"{path}.parameter.WEAHandling", f"must be one of {', '.join(sorted(WEA_HANDLING))}, "
                                                                      f"not {handling[:40]!r}"))  # fmt: skip
        if not info.areas and alert.msg_type != MsgType.CANCEL:
            problems.append(Problem(f"{path}.area", "at least one area is required (IPAWS profile v1.0 section 3)"))
        for j, area in enumerate(info.areas):
            codes = [g for g in area.geocodes if g.value_name == "SAME"]
            if not codes:
                problems.append(Problem(f"{path}.area[{j}].geocode", "a geocode SAME (6-digit PSSCCC) is required "
                                                                     "(IPAWS profile v1.0 section 3)"))  # fmt: skip
            for g in codes:
                if not _SAME_GEOCODE.fullmatch(g.value):
                    problems.append(Problem(f"{path}.area[{j}].geocode.SAME", f"must be 6 digits PSSCCC, not {g.value[:20]!r}"))
    return problems


def validate(alert: Alert, *, ipaws: bool = True) -> list[Problem]:
    """``validate_ipaws`` (or ``validate_cap`` when ``ipaws`` is False)."""
    return validate_ipaws(alert) if ipaws else validate_cap(alert)


def check(alert: Alert, *, ipaws: bool = True) -> Alert:
    """``alert``, or ``CapInvalid`` listing every problem."""
    problems = validate(alert, ipaws=ipaws)
    if problems:
        raise CapInvalid(problems)
    return alert
