"""The business-line registry: every PSAP's and agency's 10-digit lines (NANP), who answers
each and when, and a periodic check that each line's route through the PSTN gateway is up.

A 911 call the ESInet cannot deliver to any PSAP ends on a business line (NENA-STA-010.3
section 4.2: the ESRP's last-resort route must reach a person), and the public status page
tells people which lines to dial while 911 is out. Both need to know which line is
answered *now* and which gateway route works, hence:

* ``Hours``: weekly ranges in a time zone (``"Mon-Fri 08:00-17:00"``, ``"Sat 22:00-06:00"``
  crossing midnight) or ``24/7``; ``is_open(now)``.
* ``BusinessLine`` entries and ``BusinessLineRegistry``: built from the deployment's PSAP
  ``business_line`` values (a PSAP's line is staffed around the clock) plus an optional YAML
  file of agency lines (a police desk, a fire station), whose entries replace a PSAP entry of
  the same number. ``answering_at(now)``, ``last_resort(psap_id, now, health)``,
  ``ranked(psap_id, now, health)`` (every line, usable ones first).
* ``RegistryLastResort``: the ESRP's route of last resort (``esrp.policy.LastResortLines``)
  from the registry and the gateway check's health.
* ``GatewayCheck``: sans-I/O, per line an RFC 3261 OPTIONS (section 11) to its PSTN gateway
  route every ``period`` seconds, ``UP``/``DOWN`` with hysteresis (``TRANSITIONS``).
* ``GatewayChecker``: the asyncio adapter sending real OPTIONS over UDP through
  ``firebox.sip.transport`` and ``firebox.esrp.outbound`` (RFC 3261 17.1.2 client
  transactions).

The YAML file::

    time_zone: America/New_York        # default for every line
    lines:
      - number: "603-555-0150"
        owner: pd-town-03             # a PSAP id or an agency id
        answered_by: Ashford Police desk
        hours: 24/7                   # or a list: ["Mon-Fri 08:00-17:00", "Sat 09:00-12:00"]
        towns: [town-03]              # the towns whose public it serves (status page)
        gateway: gw2.example.net:5060 # optional: another PSTN gateway for this line
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from firebox.deployment import Deployment, _format_loc, _line_for, _line_map, _ten_digit
from firebox.esrp.policy import LastResortLine, business_line_uri

__all__ = [
    "TRANSITIONS",
    "BusinessLine",
    "BusinessLineError",
    "BusinessLineRegistry",
    "CheckRequest",
    "GatewayCheck",
    "GatewayChecker",
    "Hours",
    "LineChange",
    "LineHealth",
    "RankedLine",
    "RegistryLastResort",
    "load_lines_yaml",
    "parse_hours",
    "ten_digit",
]

log = logging.getLogger(__name__)

DEFAULT_TIME_ZONE = "America/New_York"
_DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEK: Final = 7 * 24 * 60  # minutes
_RANGE = re.compile(
    r"^\s*(?P<d1>[A-Za-z]{3})(?:\s*-\s*(?P<d2>[A-Za-z]{3}))?\s+"
    r"(?P<h1>\d{1,2}):(?P<m1>\d{2})\s*-\s*(?P<h2>\d{1,2}):(?P<m2>\d{2})\s*$"
)


class BusinessLineError(ValueError):
    """A business-line file or entry is invalid; ``problems`` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def ten_digit(number: str) -> str:
    """The 10 digits of a NANP number (``603-555-0150``, ``+1 603 555 0150``); ``ValueError``
    naming it otherwise (NPA and NXX cannot start with 0 or 1)."""
    return _ten_digit(str(number))


# --- hours ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hours:
    """When a line (or a station) is staffed: ``ranges`` of minutes of the week
    (0 = Monday 00:00, end exclusive, end may pass the week's end) in ``tz``; ``None``
    ranges is 24/7."""

    tz: str = DEFAULT_TIME_ZONE
    ranges: tuple[tuple[int, int], ...] | None = None
    text: str = "24/7"

    @classmethod
    def always(cls, tz: str = DEFAULT_TIME_ZONE) -> Hours:
        return cls(tz, None, "24/7")

    @property
    def is_always(self) -> bool:
        return self.ranges is None

    def is_open(self, now: float) -> bool:
        if self.ranges is None:
            return True
        local = datetime.fromtimestamp(now, UTC).astimezone(ZoneInfo(self.tz))
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        # A range crossing Sunday midnight also holds at the week's start.
        return any(lo <= minute < hi or lo <= minute + _WEEK < hi for lo, hi in self.ranges)


def parse_hours(spec: str | Iterable[str], tz: str = DEFAULT_TIME_ZONE) -> Hours:
    """``"24/7"`` or weekly ranges ``"Mon-Fri 08:00-17:00"``, ``"Sat 22:00-06:00"`` (an end at
    or before the start runs into the next day); ``ValueError`` naming the bad part."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"'{tz}' is not an IANA time zone like America/New_York") from None
    specs = [spec] if isinstance(spec, str) else list(spec)
    if not specs:
        raise ValueError("no hours given (use 24/7 or ranges like 'Mon-Fri 08:00-17:00')")
    if any(s.strip().lower() in ("24/7", "always") for s in specs):
        if len(specs) > 1:
            raise ValueError("24/7 cannot be combined with other ranges")
        return Hours.always(tz)
    ranges: list[tuple[int, int]] = []
    for s in specs:
        m = _RANGE.match(s)
        if m is None:
            raise ValueError(f"'{s}' is not 24/7 or a range like 'Mon-Fri 08:00-17:00'")
        d1 = m["d1"].lower()
        d2 = (m["d2"] or m["d1"]).lower()
        if d1 not in _DAYS or d2 not in _DAYS:
            raise ValueError(f"'{s}': days are Mon Tue Wed Thu Fri Sat Sun")
        h1, m1, h2, m2 = int(m["h1"]), int(m["m1"]), int(m["h2"]), int(m["m2"])
        if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
            raise ValueError(f"'{s}': times are 00:00..24:00")
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if end <= start:
            end += 1440  # into the next day
        first, last = _DAYS.index(d1), _DAYS.index(d2)
        days = range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)]
        ranges += [(d * 1440 + start, d * 1440 + end) for d in days]
    return Hours(tz, tuple(sorted(ranges)), ", ".join(s.strip() for s in specs))


# --- the registry ---------------------------------------------------------------------------


class OwnerKind(StrEnum):
    PSAP = "psap"
    AGENCY = "agency"


@dataclass(frozen=True, slots=True)
class BusinessLine:
    """A 10-digit line: its owner (a PSAP or agency id), who answers it and when, the towns
    whose public it serves, and the PSTN gateway to reach it by (``None``: the default)."""

    number: str
    owner: str
    answered_by: str
    hours: Hours = field(default_factory=Hours.always)
    kind: OwnerKind = OwnerKind.AGENCY
    towns: tuple[str, ...] = ()
    gateway: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "number", ten_digit(self.number))

    @property
    def display(self) -> str:
        """``(603) 555-0150``, as people dial it."""
        n = self.number
        return f"({n[:3]}) {n[3:6]}-{n[6:]}"

    @property
    def tel(self) -> str:
        """The RFC 3966 URI, for a phone's dialer link."""
        return f"tel:+1{self.number}"

    def uri(self, default_gateway: str) -> str:
        """Its SIP URI through its gateway (``business_line_uri``)."""
        return business_line_uri(self.number, self.gateway or default_gateway)

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number, "display": self.display, "tel": self.tel, "owner": self.owner,
            "kind": self.kind.value, "answered_by": self.answered_by, "hours": self.hours.text,
            "time_zone": self.hours.tz, "towns": list(self.towns),
        }  # fmt: skip


class LineHealth(StrEnum):
    UNKNOWN = "unknown"  # not checked yet: counted as usable, a line is better than none
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class RankedLine:
    """A line as the last-resort route sees it at one time: usable (answered now, route
    not known to be down) or not, and why."""

    line: BusinessLine
    usable: bool
    note: str
    health: LineHealth = LineHealth.UNKNOWN


class BusinessLineRegistry:
    """The lines, by number; read-only once built."""

    def __init__(self, lines: Iterable[BusinessLine]) -> None:
        self._by_number: dict[str, BusinessLine] = {}
        for line in lines:
            # A later entry replaces an earlier one of the same number (the YAML file
            # refines what the deployment says of a PSAP's line).
            self._by_number[line.number] = line
        self._by_owner: dict[str, list[BusinessLine]] = {}
        for line in self._by_number.values():
            self._by_owner.setdefault(line.owner, []).append(line)

    def __len__(self) -> int:
        return len(self._by_number)

    def __iter__(self) -> Any:
        return iter(self._by_number.values())

    def get(self, number: str) -> BusinessLine | None:
        try:
            return self._by_number.get(ten_digit(number))
        except ValueError:
            return None

    def for_owner(self, owner: str) -> list[BusinessLine]:
        return list(self._by_owner.get(owner, ()))

    def for_town(self, town_id: str) -> list[BusinessLine]:
        """Agency lines naming ``town_id`` among their towns."""
        return [line for line in self._by_number.values() if town_id in line.towns]

    def answering_at(self, now: float) -> list[BusinessLine]:
        """The lines someone answers at ``now`` (a POSIX time)."""
        return [line for line in self._by_number.values() if line.hours.is_open(now)]

    def last_resort(
        self, psap_id: str, now: float, health: Mapping[str, LineHealth] | None = None
    ) -> list[BusinessLine]:
        """The lines of ``psap_id`` an undeliverable call may end on at ``now``: answered
        now and whose gateway route is not known to be down; PSAP lines before agency
        lines of the same owner. The ESRP's last-resort route (NENA-STA-010.3 4.2)."""
        health = health or {}
        lines = [
            line for line in self.for_owner(psap_id)
            if line.hours.is_open(now) and health.get(line.number, LineHealth.UNKNOWN) is not LineHealth.DOWN
        ]  # fmt: skip
        return sorted(lines, key=lambda line: line.kind is not OwnerKind.PSAP)

    def ranked(
        self, psap_id: str, now: float, health: Mapping[str, LineHealth] | None = None, *, town_lines: bool = True
    ) -> list[RankedLine]:
        """Every line a call for ``psap_id`` may end on, in the order to try them: answered
        at ``now`` over a route not known to be down first, the others after (never left
        out: a line nobody is known to answer beats no destination). Within each, the PSAP's
        own lines, then its agency lines, then (``town_lines``) the agency lines of the towns
        its own lines serve (a town's police desk during a 911 outage). Sans-I/O: ``health``
        is what the gateway check last said, by number."""
        health = health or {}
        own = self.for_owner(psap_id)
        towns = {t for line in own for t in line.towns}
        picked = sorted(own, key=lambda line: line.kind is not OwnerKind.PSAP)
        if town_lines and towns:
            seen = {line.number for line in picked}
            picked += [line for line in self._by_number.values()
                       if line.number not in seen and line.kind is OwnerKind.AGENCY and towns.intersection(line.towns)]  # fmt: skip
        out: list[RankedLine] = []
        for line in picked:
            h = health.get(line.number, LineHealth.UNKNOWN)
            if not line.hours.is_open(now):
                out.append(RankedLine(line, False, f"nobody answers now (hours {line.hours.text})", h))
            elif h is LineHealth.DOWN:
                out.append(RankedLine(line, False, "its PSTN gateway route is down", h))
            else:
                out.append(RankedLine(line, True, f"answered {line.hours.text}, route {h.value}", h))
        return sorted(out, key=lambda r: not r.usable)  # stable: the order above holds within each

    def uris(self, default_gateway: str) -> dict[str, str]:
        """Number -> SIP URI through its gateway, for the ``GatewayCheck``."""
        return {n: line.uri(default_gateway) for n, line in self._by_number.items()}

    @classmethod
    def from_deployment(
        cls, dep: Deployment, extra: str | Path | None = None, *, time_zone: str = DEFAULT_TIME_ZONE
    ) -> BusinessLineRegistry:
        """Every PSAP's ``business_line`` (answered 24/7 by the PSAP, for its towns), then
        the lines of the YAML file ``extra`` (relative to the deployment file)."""
        lines = [
            BusinessLine(p.business_line, p.id, f"{p.name} (administrative line)", Hours.always(time_zone),
                         OwnerKind.PSAP, tuple(p.towns))  # fmt: skip
            for p in dep.psaps
        ]
        if extra is not None:
            psap_ids = {p.id for p in dep.psaps}
            lines += load_lines_yaml(dep.resolve(Path(extra)), psap_ids=psap_ids)
        return cls(lines)


class RegistryLastResort:
    """The ESRP's route of last resort from the registry (``firebox.esrp.policy.LastResortLines``):
    for a PSAP at a time, up to ``max_lines`` of ``BusinessLineRegistry.ranked`` as SIP URIs
    through their gateways (``default_gateway`` unless the line names its own).

    ``health`` gives the gateway check's latest verdicts (``GatewayCheck.healths``); without
    it every route counts as not checked. Each line past the first costs a caller the
    no-answer timeout, hence ``max_lines``; the usable ones come first, so the limit drops
    the least promising."""

    def __init__(
        self, registry: BusinessLineRegistry, default_gateway: str,
        health: Callable[[], Mapping[str, LineHealth]] | None = None, *, max_lines: int = 3, town_lines: bool = True,
    ) -> None:  # fmt: skip
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1 (a last resort is never empty)")
        self.registry = registry
        self.default_gateway = default_gateway
        self.health = health
        self.max_lines = max_lines
        self.town_lines = town_lines

    def __call__(self, psap: Any, now: datetime) -> list[LastResortLine]:
        health = self.health() if self.health is not None else None
        ranked = self.registry.ranked(psap.psap_id, now.timestamp(), health, town_lines=self.town_lines)
        out = []
        for r in ranked[: self.max_lines]:
            try:
                uri = r.line.uri(self.default_gateway)
            except ValueError:
                log.warning("business line %s: no SIP URI through %s", r.line.number, r.line.gateway or self.default_gateway)
                continue
            note = f"{r.line.display}, {r.line.answered_by}: {r.note}"
            out.append(LastResortLine(uri, r.usable, note, checked=r.health is LineHealth.UP))
        return out


class _LineModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    number: str
    owner: str = Field(pattern=r"^[A-Za-z0-9._\-]+$")
    answered_by: str = Field(min_length=1)
    hours: str | list[str] = "24/7"
    time_zone: str | None = None
    towns: list[str] = []
    gateway: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\-\[\]:]+$")

    @field_validator("number", mode="before")
    @classmethod
    def _number(cls, v: object) -> str:
        return ten_digit(str(v))


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    time_zone: str = DEFAULT_TIME_ZONE
    lines: list[_LineModel] = []


def load_lines_yaml(path: str | Path, *, psap_ids: Iterable[str] = ()) -> list[BusinessLine]:
    """The lines of a YAML file (see the module's docstring); ``BusinessLineError`` lists
    every problem with its line in the file. An owner in ``psap_ids`` makes a PSAP line."""
    p = Path(path)
    source = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise BusinessLineError([f"{source}: cannot read: {exc.strerror}"]) from None
    return parse_lines_yaml(text, source, psap_ids=psap_ids)


def parse_lines_yaml(text: str, source: str = "business_lines.yaml", *, psap_ids: Iterable[str] = ()) -> list[BusinessLine]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise BusinessLineError([f"{source}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]) from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise BusinessLineError([f"{source}: expected a mapping with 'lines' at the top level"])
    lines_at = dict(_line_map(node)) if node is not None else {}

    def where(loc: tuple[Any, ...]) -> str:
        line = _line_for(lines_at, loc)
        return f"{source}{f' line {line}' if line else ''}: {_format_loc(loc)}"

    try:
        model = _FileModel.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            problems.append(f"{where(loc)}: {msg}")
        raise BusinessLineError(problems) from None
    psaps = set(psap_ids)
    out: list[BusinessLine] = []
    problems = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(model.lines):
        try:
            hours = parse_hours(entry.hours, entry.time_zone or model.time_zone)
        except ValueError as exc:
            problems.append(f"{where(('lines', i, 'hours'))}: {exc}")
            continue
        if entry.number in seen:
            problems.append(f"{where(('lines', i, 'number'))}: {entry.number} is also lines[{seen[entry.number]}]")
            continue
        seen[entry.number] = i
        kind = OwnerKind.PSAP if entry.owner in psaps else OwnerKind.AGENCY
        out.append(BusinessLine(entry.number, entry.owner, entry.answered_by, hours, kind, tuple(entry.towns), entry.gateway))
    if problems:
        raise BusinessLineError(problems)
    return out


# --- the gateway check, sans-I/O ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """Send an OPTIONS to ``uri`` now; answer with ``seq``."""

    seq: int
    number: str
    uri: str
    at: float


@dataclass(frozen=True, slots=True)
class LineChange:
    number: str
    old: LineHealth
    new: LineHealth
    at: float
    detail: str


#: An OPTIONS answer that shows the route reaches a SIP element which can take the call:
#: 2xx (RFC 3261 11.2), or 405/501 from a gateway that does not do OPTIONS but is there.
OK_STATUSES: Final = frozenset({405, 501})

#: (health, check succeeded) -> (next health, checks in a row needed). Hysteresis: one
#: failure does not take a line down, nor one success bring a down line back.
TRANSITIONS: Final[Mapping[tuple[LineHealth, bool], tuple[LineHealth, str]]] = {
    (LineHealth.UNKNOWN, True): (LineHealth.UP, "one"),
    (LineHealth.UNKNOWN, False): (LineHealth.DOWN, "down_after"),
    (LineHealth.UP, True): (LineHealth.UP, "one"),
    (LineHealth.UP, False): (LineHealth.DOWN, "down_after"),
    (LineHealth.DOWN, True): (LineHealth.UP, "up_after"),
    (LineHealth.DOWN, False): (LineHealth.DOWN, "one"),
}


@dataclass(slots=True)
class _Line:
    number: str
    uri: str
    next_at: float
    health: LineHealth = LineHealth.UNKNOWN
    successes: int = 0  # in a row
    failures: int = 0  # in a row
    pending: CheckRequest | None = None
    last_at: float | None = None
    last_status: int | None = None
    last_detail: str = ""
    since: float | None = None


class GatewayCheck:
    """Per line, an OPTIONS to its gateway route every ``period`` seconds (the lines spread
    evenly over the period); an answer not in within ``timeout`` is a failure. ``up_after``
    successes / ``down_after`` failures in a row change a line's health (``TRANSITIONS``)."""

    def __init__(
        self, uris: Mapping[str, str], *, period: float = 60.0, timeout: float = 5.0,
        down_after: int = 2, up_after: int = 2, start: float = 0.0,
    ) -> None:  # fmt: skip
        if period <= 0 or timeout <= 0 or timeout > period:
            raise ValueError(f"need 0 < timeout <= period, not timeout={timeout} period={period}")
        if down_after < 1 or up_after < 1:
            raise ValueError("down_after and up_after must be at least 1")
        self.period, self.timeout = period, timeout
        self.runs = {"one": 1, "down_after": down_after, "up_after": up_after}
        n = max(len(uris), 1)
        self._lines = {
            ten_digit(num): _Line(ten_digit(num), uri, start + period * i / n)
            for i, (num, uri) in enumerate(sorted(uris.items()))
        }
        self._pending: dict[int, _Line] = {}
        self._seq = 0

    def health(self, number: str) -> LineHealth:
        line = self._lines.get(ten_digit(number))
        return line.health if line is not None else LineHealth.UNKNOWN

    def healths(self) -> dict[str, LineHealth]:
        return {n: line.health for n, line in self._lines.items()}

    def due(self, now: float) -> list[CheckRequest]:
        out = []
        for line in self._lines.values():
            if line.pending is None and now >= line.next_at:
                self._seq += 1
                req = CheckRequest(self._seq, line.number, line.uri, now)
                line.pending = req
                # Keep the cadence: the next check is a period after this one was due.
                line.next_at = max(line.next_at + self.period, now)
                self._pending[req.seq] = line
                out.append(req)
        return out

    def answered(self, seq: int, status: int, now: float, reason: str = "") -> list[LineChange]:
        ok = 200 <= status < 300 or status in OK_STATUSES
        return self._result(seq, ok, now, status, f"SIP {status} {reason}".strip())

    def failed(self, seq: int, detail: str, now: float) -> list[LineChange]:
        return self._result(seq, False, now, None, detail)

    def expire(self, now: float) -> list[LineChange]:
        """Checks not answered within ``timeout`` fail."""
        changes: list[LineChange] = []
        for seq, line in list(self._pending.items()):
            assert line.pending is not None
            if now - line.pending.at >= self.timeout:
                changes += self._result(seq, False, now, None, f"no answer within {self.timeout:g} s")
        return changes

    def next_wakeup(self) -> float:
        times = [line.next_at for line in self._lines.values() if line.pending is None]
        times += [line.pending.at + self.timeout for line in self._pending.values() if line.pending is not None]
        return min(times, default=float("inf"))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            n: {"health": line.health.value, "since": line.since, "checked": line.last_at,
                "status": line.last_status, "detail": line.last_detail, "uri": line.uri}
            for n, line in self._lines.items()
        }  # fmt: skip

    def _result(self, seq: int, ok: bool, now: float, status: int | None, detail: str) -> list[LineChange]:
        line = self._pending.pop(seq, None)
        if line is None:
            return []  # late (already expired) or unknown: the check was judged already
        line.pending = None
        line.last_at, line.last_status, line.last_detail = now, status, detail
        if ok:
            line.successes, line.failures = line.successes + 1, 0
        else:
            line.failures, line.successes = line.failures + 1, 0
        target, run = TRANSITIONS[(line.health, ok)]
        streak = line.successes if ok else line.failures
        if target is line.health or streak < self.runs[run]:
            return []
        old, line.health, line.since = line.health, target, now
        log.log(logging.WARNING if target is LineHealth.DOWN else logging.INFO,
                "business line %s route %s -> %s: %s", line.number, old.value, target.value, detail)  # fmt: skip
        return [LineChange(line.number, old, target, now, detail)]


# --- the asyncio adapter --------------------------------------------------------------------


class GatewayChecker:
    """Runs a ``GatewayCheck``: real OPTIONS over UDP from its own socket on ``host``
    (port 0: any free one), each in an RFC 3261 non-INVITE client transaction (retransmits
    on Timer E); ``on_change`` gets every ``LineChange``."""

    def __init__(
        self, check: GatewayCheck, *, host: str = "127.0.0.1", port: int = 0,
        on_change: Callable[[LineChange], None] | None = None, clock: Callable[[], float] = time.time,
        max_sleep: float = 1.0, resolve: Callable[[str], tuple[str, int, str] | None] | None = None,
    ) -> None:  # fmt: skip
        #: Where a line's URI is sent (the node's SIP resolver); None: the URI's own host.
        self.resolve = resolve
        self.check = check
        self.host, self.port = host, port
        self.on_change = on_change
        self.clock = clock
        self.max_sleep = max_sleep
        self.changes: list[LineChange] = []
        self._server: Any = None
        self._outbound: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from firebox.esrp.outbound import Outbound
        from firebox.sip.transport import start_sip_server

        self._server = await start_sip_server(self._on_message, self.host, self.port, transports=("udp",))
        self.port = self._server.addresses["udp"][1]
        self._outbound = Outbound(lambda message, address: self._server.send(message, address),
                                  self.resolve or (lambda uri: None))  # fmt: skip
        self._task = asyncio.create_task(self._run(), name="business-line gateway check")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._outbound is not None:
            self._outbound.close()
        if self._server is not None:
            await self._server.close()
            self._server = None

    def _on_message(self, message: Any, source: Any) -> None:
        from firebox.sip.message import Request, make_response

        if isinstance(message, Request):
            # Not a UAS for anything: OPTIONS is answered (RFC 3261 11.2), the rest refused.
            status = 200 if message.method == "OPTIONS" else 405
            if message.method != "ACK":
                self._server.reply(make_response(message, status, headers=[("Allow", "OPTIONS")]), source)
            return
        self._outbound.on_response(message)

    def _emit(self, changes: list[LineChange]) -> None:
        for change in changes:
            self.changes.append(change)
            del self.changes[:-1000]
            if self.on_change is not None:
                try:
                    self.on_change(change)
                except Exception:  # noqa: BLE001 -- a listener bug must not stop the checks
                    log.exception("business line change listener failed")

    def options(self, req: CheckRequest) -> Any:
        from firebox.sip.headers import Headers
        from firebox.sip.message import Request
        from firebox.sip.proxy import new_branch

        h = Headers()
        h.add("Via", f"SIP/2.0/UDP {self.host}:{self.port};branch={new_branch()};rport")
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:line-check@{self.host}:{self.port}>;tag={secrets.token_hex(6)}")
        h.add("To", f"<{req.uri}>")
        h.add("Call-ID", f"{secrets.token_hex(10)}@{self.host}")
        h.add("CSeq", "1 OPTIONS")
        h.add("Accept", "application/sdp")
        h.add("Content-Length", "0")
        return Request("OPTIONS", req.uri, h)

    async def _run(self) -> None:
        while True:
            now = self.clock()
            for req in self.check.due(now):
                self._send(req)
            self._emit(self.check.expire(now))
            wait = self.check.next_wakeup() - self.clock()
            await asyncio.sleep(min(self.max_sleep, max(0.01, wait)))

    def _send(self, req: CheckRequest) -> None:
        def answered(response: Any) -> None:
            self._emit(self.check.answered(req.seq, response.status, self.clock(), response.reason))

        def failed() -> None:
            self._emit(self.check.failed(req.seq, "no answer (transaction timed out) or transport error", self.clock()))

        try:
            self._outbound.request(self.options(req), answered, failed)
        except Exception as exc:  # noqa: BLE001 -- one bad line must not stop the others
            log.exception("business line check of %s not sent", req.number)
            self._emit(self.check.failed(req.seq, f"not sent: {exc}", self.clock()))
