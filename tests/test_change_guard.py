"""The automatic rollback guard: probes in the change's scope, the answer ratio, outages."""

from __future__ import annotations

import pytest

from firebox.change.core import CanaryScope
from firebox.change.guard import Guard, GuardConfig, GuardInput, GuardState, ProbeSample, input_from_monitor

CONFIG = GuardConfig(window=300.0, probe_failures=2, max_drop=0.2, min_settled=10)


def test_failing_probes_in_scope_roll_back():
    guard = Guard("chg-1", started=100.0, scope=CanaryScope(sources=("carrier-a",)), config=CONFIG,
                  ingress_sources={"bcf.example": "carrier-a"})  # fmt: skip
    fail = [ProbeSample("bcf.example", "boston", False, 110.0, "rejected")]
    assert guard.observe(GuardInput(111.0, probes=fail)).state is GuardState.WATCHING
    fail2 = fail + [ProbeSample("bcf.example", "boston", False, 120.0, "rejected")]
    verdict = guard.observe(GuardInput(121.0, probes=fail2))
    assert verdict.state is GuardState.ROLLBACK and "2 test calls in a row from bcf.example to boston" in verdict.reason
    # final: later looks keep the verdict
    assert guard.observe(GuardInput(500.0)).state is GuardState.ROLLBACK


def test_probes_outside_scope_or_before_the_change_do_not_count():
    guard = Guard("chg-1", started=100.0, scope=CanaryScope(psaps=("cambridge",)), config=CONFIG)
    probes = [ProbeSample("bcf.example", "boston", False, t, "no answer") for t in (110.0, 120.0, 130.0)]
    probes += [ProbeSample("bcf.example", "cambridge", False, t, "no answer") for t in (50.0, 60.0)]
    probes += [ProbeSample("bcf.example", "cambridge", True, 140.0), ProbeSample("bcf.example", "cambridge", False, 150.0)]
    assert guard.observe(GuardInput(151.0, probes=probes)).state is GuardState.WATCHING
    assert guard.observe(GuardInput(401.0)).state is GuardState.PASSED


def test_full_promotion_counts_every_probe():
    guard = Guard("chg-2", started=0.0, scope=None, config=CONFIG)
    probes = [ProbeSample("ingress-x", "worcester", False, t) for t in (1.0, 2.0)]
    assert guard.observe(GuardInput(3.0, probes=probes)).state is GuardState.ROLLBACK


@pytest.mark.parametrize(("ratio", "settled", "state"), [
    (0.70, 40, GuardState.ROLLBACK),  # under 0.95 x 0.8 = 0.76
    (0.80, 40, GuardState.WATCHING),
    (0.10, 5, GuardState.WATCHING),  # too few calls to judge
])  # fmt: skip
def test_answer_ratio_drop(ratio, settled, state):
    guard = Guard("chg-3", started=0.0, baseline=0.95, config=CONFIG)
    verdict = guard.observe(GuardInput(10.0, answer_ratio=ratio, settled=settled))
    assert verdict.state is state
    if state is GuardState.ROLLBACK:
        assert "fell below 0.76" in verdict.reason


def test_outage_naming_the_change_rolls_back():
    guard = Guard("chg-4", started=0.0, config=CONFIG)
    assert guard.observe(GuardInput(5.0, outage_changes=["chg-other"])).state is GuardState.WATCHING
    assert guard.observe(GuardInput(6.0, outage_changes=["chg-4"])).state is GuardState.ROLLBACK


def test_input_from_monitor_shapes():
    figures = {
        "scopes": {"statewide": {"all": {"entered": 50, "answered": 30, "rerouted": 5, "failed": 5, "answer_ratio": 0.75}}},
        "probes": [{"id": "p1", "ingress": "bcf.example", "psap": "boston", "placed": 12.5, "at": 13.0,
                    "outcome": "rejected"}, {"ingress": "bcf.example", "psap": "boston", "placed": "bad"}],
    }  # fmt: skip
    outages = {"current": [{"config_change": "chg-9"}, {"config_change": None}], "recent": []}
    inp = input_from_monitor(figures, outages, 20.0)
    assert (inp.answer_ratio, inp.settled, inp.outage_changes) == (0.75, 40, ["chg-9"])
    assert inp.probes == [ProbeSample("bcf.example", "boston", False, 12.5, "rejected")]


def test_config_checked():
    with pytest.raises(ValueError):
        GuardConfig(max_drop=1.5)
