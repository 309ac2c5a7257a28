"""The population-weighted Poisson call load (firebox.sim.load), sans-I/O: towns drawn in
proportion to population, the rate the issue's Massachusetts average gives, a surge ten
times that, seeded determinism, points inside their town."""

from __future__ import annotations

import math

import pytest
from shapely.geometry import Point, box

from firebox.sim.load import MA_CALLS_PER_DAY, MA_POPULATION_2010, CallGenerator, LoadModel, TownWeight


def towns() -> list[TownWeight]:
    return [TownWeight("big", 90_000, box(0, 0, 1, 1), "p1"), TownWeight("small", 10_000, box(2, 0, 3, 1), "p2"),
            TownWeight("empty", 0, box(4, 0, 5, 1), "p3")]  # fmt: skip


def test_massachusetts_population_gives_the_state_average_and_a_surge_is_ten_times_it():
    model = LoadModel(MA_POPULATION_2010)
    assert model.per_day == pytest.approx(MA_CALLS_PER_DAY)
    assert sum(model.hourly) == pytest.approx(MA_CALLS_PER_DAY)
    day = sum(model.rate(h * 3600.0) * 3600.0 for h in range(24))
    assert day == pytest.approx(MA_CALLS_PER_DAY)
    surge = LoadModel(MA_POPULATION_2010, surge=10.0)
    assert surge.rate(0.0) == pytest.approx(10 * model.rate(0.0))


def test_calls_follow_population_and_the_rate():
    model = LoadModel(100_000 * 100, surge=10.0)  # a rate high enough to count on
    gen = CallGenerator(model, towns(), seed=5)
    calls = gen.due(3600.0)
    expected = gen.expected(0.0, 3600.0)
    # Poisson: the count within 5 standard deviations of the mean
    assert abs(len(calls) - expected) < 5 * math.sqrt(expected), (len(calls), expected)
    share = sum(1 for c in calls if c.town_id == "big") / len(calls)
    assert abs(share - 0.9) < 5 * math.sqrt(0.9 * 0.1 / len(calls))
    assert not any(c.town_id == "empty" for c in calls)
    assert all(c.at <= 3600.0 for c in calls) and [c.at for c in calls] == sorted(c.at for c in calls)
    for c in calls[:200]:
        town = next(t for t in towns() if t.id == c.town_id)
        assert town.geometry.contains(Point(c.lon, c.lat))
        assert c.psap_id == town.psap_id


def test_the_hour_profile_is_followed():
    model = LoadModel(100_000 * 300, start_hour=0.0)
    gen = CallGenerator(model, towns(), seed=9)
    calls = gen.due(24 * 3600.0)
    night = sum(1 for c in calls if 4 * 3600 <= c.at < 5 * 3600)  # the quietest hour
    evening = sum(1 for c in calls if 17 * 3600 <= c.at < 18 * 3600)  # the busiest
    assert evening > 2 * night
    assert night == pytest.approx(model.hourly[4] * 1, rel=0.25)


def test_the_same_seed_gives_the_same_calls_and_time_is_an_argument():
    a = CallGenerator(LoadModel(1_000_000, surge=10), towns(), seed=3)
    b = CallGenerator(LoadModel(1_000_000, surge=10), towns(), seed=3)
    first = a.due(600.0)
    # asking in steps gives the same calls as asking once
    stepped = [c for t in range(60, 601, 60) for c in b.due(float(t))]
    assert first == stepped and first
    c = CallGenerator(LoadModel(1_000_000, surge=10), towns(), seed=4)
    assert c.due(600.0) != first


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="population"):
        LoadModel(0)
    with pytest.raises(ValueError, match="surge"):
        LoadModel(10, surge=0)
    with pytest.raises(ValueError, match="towns"):
        CallGenerator(LoadModel(10), [TownWeight("x", 0, box(0, 0, 1, 1))])
