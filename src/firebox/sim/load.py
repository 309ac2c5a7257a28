"""A population-weighted Poisson 911 call load, sans-I/O.

Calls arrive as a non-homogeneous Poisson process whose rate follows the hour of the day
(``firebox.monitor.watch.massachusetts_profile``: the issue's Massachusetts average of about
8,800 calls a day, NENA/FCC public figure, scaled by the served population against the 2010
census total of Massachusetts) times a ``surge`` factor (a surge is ten times the normal
rate). Each call comes from a town drawn in proportion to its population, at a point drawn
uniformly inside the town's boundary.

Sans-I/O: a seeded ``random.Random``; time is an argument (scenario seconds since the load
began). ``CallGenerator.due(t)`` returns every call whose arrival time is at or before
``t``. Arrivals use thinning (Lewis and Shedler, 1979): candidates at the day's peak rate,
each kept with probability rate(t)/peak, so the hour profile is followed exactly.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shapely.geometry import Point as ShapelyPoint
from shapely.prepared import prep

from firebox.monitor.watch import massachusetts_profile

__all__ = [
    "MA_CALLS_PER_DAY",
    "MA_POPULATION_2010",
    "SURGE",
    "CallGenerator",
    "LoadModel",
    "PlannedCall",
    "TownWeight",
    "towns_from_deployment",
    "towns_from_state",
]

#: Massachusetts 911 calls a day (2023, about 3.5 million a year; issue 6).
MA_CALLS_PER_DAY = 8800.0
#: Massachusetts 2010 census population (the MassGIS towns' POP2010 sum).
MA_POPULATION_2010 = 6_547_629
#: A surge is ten times the normal rate (issue 6).
SURGE = 10.0
#: Tries at drawing a point inside a town's boundary before taking a point on its surface.
MAX_POINT_TRIES = 200


@dataclass(frozen=True, slots=True)
class TownWeight:
    """A town the load draws callers from: its population and boundary (lon/lat)."""

    id: str
    population: int
    geometry: Any  # a shapely geometry
    psap_id: str | None = None  # the PSAP the deployment assigns it (None: unknown)


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One call of the load: when (scenario seconds), from where, and who calls."""

    n: int
    at: float
    town_id: str
    lon: float
    lat: float
    identity: str  # a tel: URI (555 numbers: never a real subscriber)
    psap_id: str | None


def identity(n: int) -> str:
    return f"tel:+1{300 + n // 10_000 % 600:03d}555{n % 10_000:04d}"


@dataclass(frozen=True, slots=True)
class LoadModel:
    """The expected calls per hour of the day for ``population`` people, times ``surge``."""

    population: int
    surge: float = 1.0
    per_day_ma: float = MA_CALLS_PER_DAY
    start_hour: float = 17.0  # the busiest hours of the profile

    def __post_init__(self) -> None:
        if self.population <= 0:
            raise ValueError(f"population must be > 0, not {self.population}")
        if self.surge <= 0:
            raise ValueError(f"surge must be > 0, not {self.surge}")
        if not 0 <= self.start_hour < 24:
            raise ValueError(f"start_hour must be in [0, 24), not {self.start_hour}")

    @property
    def per_day(self) -> float:
        """Calls a day at the normal rate for this population."""
        return self.per_day_ma * self.population / MA_POPULATION_2010

    @property
    def hourly(self) -> tuple[float, ...]:
        return massachusetts_profile(self.per_day)

    def rate(self, t: float) -> float:
        """Calls per second at scenario time ``t`` (seconds after ``start_hour``)."""
        hour = int((self.start_hour + t / 3600.0) % 24)
        return self.hourly[hour] * self.surge / 3600.0

    @property
    def peak(self) -> float:
        return max(self.hourly) * self.surge / 3600.0


class CallGenerator:
    """Poisson arrivals of ``model`` from ``towns`` (weighted by population), seeded."""

    def __init__(self, model: LoadModel, towns: Sequence[TownWeight], *, seed: int = 0) -> None:
        towns = [t for t in towns if t.population > 0]
        if not towns:
            raise ValueError("towns: no town with a population above 0")
        self.model = model
        self.towns = list(towns)
        self.rng = random.Random(seed)
        total = 0
        self._cumulative: list[int] = []
        for t in self.towns:
            total += t.population
            self._cumulative.append(total)
        self._total = total
        self._prepared = {t.id: prep(t.geometry) for t in self.towns}
        self._next_at = 0.0
        self._n = 0
        self._advance()

    def _advance(self) -> None:
        """The next accepted arrival after the current one (thinning)."""
        peak = self.model.peak
        t = self._next_at
        while True:  # ends: each candidate is kept with probability rate/peak > 0
            t += self.rng.expovariate(peak)
            if self.rng.random() * peak <= self.model.rate(t):
                self._next_at = t
                return

    def town(self) -> TownWeight:
        """A town drawn in proportion to population."""
        return self.towns[bisect.bisect_right(self._cumulative, self.rng.randrange(self._total))]

    def point_in(self, town: TownWeight) -> tuple[float, float]:
        minx, miny, maxx, maxy = town.geometry.bounds
        prepared = self._prepared[town.id]
        for _ in range(MAX_POINT_TRIES):
            x, y = self.rng.uniform(minx, maxx), self.rng.uniform(miny, maxy)
            if prepared.contains(ShapelyPoint(x, y)):
                return x, y
        p = town.geometry.point_on_surface()  # a sliver of a town: its surface point
        return p.x, p.y

    def due(self, t: float) -> list[PlannedCall]:
        """Every call arriving at or before scenario time ``t``, in order."""
        out: list[PlannedCall] = []
        while self._next_at <= t:
            town = self.town()
            lon, lat = self.point_in(town)
            self._n += 1
            out.append(PlannedCall(self._n, self._next_at, town.id, lon, lat, identity(self._n), town.psap_id))
            self._advance()
        return out

    def expected(self, t0: float, t1: float, step: float = 60.0) -> float:
        """Calls expected between ``t0`` and ``t1`` (numeric integral of the rate)."""
        if t1 <= t0:
            return 0.0
        n = max(1, math.ceil((t1 - t0) / step))
        h = (t1 - t0) / n
        return sum(self.model.rate(t0 + (i + 0.5) * h) * h for i in range(n))


def towns_from_state(state: Any) -> list[TownWeight]:
    """The demo state's towns (``firebox.demo.state.DemoState``)."""
    return [TownWeight(t.id, t.population, t.geometry, t.psap_id) for t in state.towns]


def towns_from_deployment(dep: Any, index: Any) -> list[TownWeight]:
    """A deployment's towns: the boundaries of its ``urn:service:sos`` layer weighted by
    their ``population`` attribute (every boundary weighs 1 when none has one), each
    assigned to the PSAP whose queue URI it names."""
    layer = index.layer("urn:service:sos")
    if layer is None:
        raise ValueError("the deployment has no urn:service:sos layer: no towns to draw callers from")
    by_uri = {p.uri: p.id for p in dep.psaps}
    out = []
    for b in layer.boundaries:
        props = b.attrs or {}
        pop = props.get("population")
        out.append(TownWeight(str(b.id), int(pop) if isinstance(pop, (int, float)) and pop > 0 else 1, b.geometry,
                              by_uri.get(b.uri)))  # fmt: skip
    return out


def total_population(towns: Iterable[TownWeight]) -> int:
    return sum(t.population for t in towns)
