"""The suite can fail: its own checks, run against bugs planted in the statistics
(tests/planted_bugs.py: the seven of issue 39), catch every one.

- The exact checks of tests/test_statistics_model.py (what the model, its null, the
  detectable effect and the TOST must compute) catch all seven.
- The calibration checks of tests/test_calibration.py, on fewer studies than they run alone
  (`STUDIES`), catch the four whose rates move by more than their Monte Carlo error: max-T on
  the normal (false "higher" in about 16 % of demo studies), the detectable effect at α
  (power about 35 % at it), full pooling (about 15 % with a variant at 4× the seed SD) and TOST
  on the normal (its raw rate at the margin about 9 % against 5 %). The other three barely
  move a rate in these designs (identity correlation makes the family conservative; swapped
  weights and the image part shift the intervals by less than the Monte Carlo error), so
  they are caught by the exact checks alone.
"""
from __future__ import annotations

import pytest

import calibration_rates as rates
import test_statistics_model as exact
from planted_bugs import BUGS
from test_calibration import power_failure, rate_failures

EXACT_CHECKS = [
    exact.test_the_posterior_variance_weights_the_prior_by_its_df,
    exact.test_the_prior_df_is_the_datas_lower_bound,
    exact.test_a_contrasts_variance_counts_seeds_and_images,
    exact.test_the_tost_at_its_margin_has_its_level,
    exact.test_a_repeated_test_is_not_adjusted,
    exact.test_the_null_of_one_test_is_its_t_when_the_runs_spread_alike,
    exact.test_the_family_states_the_detectable_effect_at_its_own_level,
]
STUDIES = 100


def test_the_exact_checks_pass_without_a_bug():
    for check in EXACT_CHECKS:
        check()


@pytest.mark.parametrize("bug", list(BUGS))
def test_an_exact_check_catches_each_planted_bug(bug, monkeypatch):
    BUGS[bug](monkeypatch)
    caught = []
    for check in EXACT_CHECKS:
        try:
            check()
        except AssertionError:
            caught.append(check.__name__)
            break
    assert caught, f"no exact check caught: {bug}"


def _rates(name: str, studies: int = STUDIES, planted: tuple = (), found=None):
    return rates.scenario.__wrapped__(name, studies, planted, found)  # not the cached rates


@pytest.mark.slow
@pytest.mark.parametrize("bug,scenario,target", [
    ("max-T on the normal instead of t", "demo design", "fwer"),
    ("full pooling", "one variant at 4x the seed SD", "fwer"),
    ("TOST on the normal instead of t", "demo design", "tost"),
])
def test_a_calibration_check_catches_the_bugs_that_move_a_rate(bug, scenario, target,
                                                                 monkeypatch):
    studies = 300 if target == "tost" else STUDIES  # TOST's rate moves 5 % -> 9 %
    BUGS[bug](monkeypatch)
    assert target in rate_failures(scenario, _rates(scenario, studies))


@pytest.mark.slow
def test_the_power_check_catches_the_detectable_effect_at_alpha(monkeypatch):
    BUGS["detectable effect at alpha instead of the family's level"](monkeypatch)
    assert power_failure(STUDIES, _rates) is not None
