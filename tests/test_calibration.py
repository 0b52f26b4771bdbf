"""The calibration of the report's verdicts, by simulation: studies of the issue-39 scenarios
(tests/calibration_sim.py: the demo's design, one variant at 4× the seed SD at 150 and 1,500
images and with 2 seeds, a run that learns nothing, a diverged seed) put through the very
functions the report calls (tests/calibration_rates.py). The checks (`rate_failures`,
`power_failure`) are functions, so that tests/test_calibration_bugs.py runs the same ones
against planted bugs.

Targets (issue 39), each with its Monte Carlo standard error (SE) at the number of studies
run (`STUDIES`: 200 by default, `make calibrate` 5,000):

- the family-wise rate of a false directional verdict <= 5 % + 2 SE, in every scenario;
- each variant's tail (raw p below the family's per-test level 0.05/17, over its null
  tests, ÷ that level) <= 1.5 + 2 SE;
- simultaneous coverage of every member's true value >= 93 % − 2 SE;
- the best set holds every truly best run >= 95 % − 2 SE;
- power at the stated detectable effect (the demo's median, planted between bn and bin)
  0.80 ± (0.03 + 2 SE);
- "equivalent" for the sanity pair placed AT its margin <= 5 % (adjusted), and its raw TOST
  at 5 % rejects at most 5 % + 2 SE there (the TOST's own size, exact for a t).

Where the model falls short of a target by more than the Monte Carlo error in the long run,
the shortfall is listed in `KNOWN_SHORTFALLS` with its measurement (benchmarks/RESULTS.md):
no data-driven pooling of 2-df seed variances can keep the tests of a variant at 4× the seed
SD at their nominal tail when its seeds happen to agree (not even no pooling at all:
Welch's test itself is at 2× there). A failure not in that list fails the suite.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from calibration_rates import (INTERACTION, PAIRS, SCENARIOS, TAIL, Rates, gap_shift,
                               scenario)
from calibration_sim import RUNS, draw
from resnorm.statistics import (SeedPredictions, bootstrap_indices, fit_runs, fit_seed_model,
                                moments_from_correct, results)

STUDIES = int(os.environ.get("RESNORM_SUITE_STUDIES", "200"))
POWER_STUDIES = STUDIES
# (scenario, target) -> the long run's measurement: see the module notes
KNOWN_SHORTFALLS = {  # measured at 5,000 studies (benchmarks/RESULTS.md, issue 39)
    ("one variant at 4x the seed SD", "fwer"): "6.7 % ± 0.4",
    ("one variant at 4x the seed SD", "tail"): "nn's tests 12.6× nominal",
    ("one variant at 4x the seed SD", "coverage"): "92.6 % ± 0.4",
    ("one variant at 4x the seed SD", "best_set"): "93.4 % ± 0.4",
    ("4x, N = 1,500", "fwer"): "6.9 % ± 0.4",
    ("4x, N = 1,500", "tail"): "nn's tests 12.5× nominal",
    ("4x, N = 1,500", "coverage"): "92.0 % ± 0.4",
    ("4x, N = 1,500", "best_set"): "93.1 % ± 0.4",
    ("4x, 2 seeds", "fwer"): "7.2 % ± 0.4",
    ("4x, 2 seeds", "tail"): "nn's tests 19.8× nominal",
    ("4x, 2 seeds", "coverage"): "90.1 % ± 0.4",
    ("4x, 2 seeds", "best_set"): "92.9 % ± 0.4",
}


def rate_failures(name: str, r: Rates) -> dict[str, str]:
    """{target: what failed} for scenario `name`'s rates."""
    out = {}
    if r.fwer > 0.05 + 2 * r.se(0.05):
        out["fwer"] = f"false 'higher' in {r.fwer:.3f} of studies (SE {r.se(0.05):.3f})"
    tails = {v: t for v, t in r.tail.items() if t > 1.5 + 2 * r.tail_se(v)}
    if tails:
        out["tail"] = f"tails ÷ nominal {tails}"
    if r.coverage < 0.93 - 2 * r.se(0.93):
        out["coverage"] = f"simultaneous coverage {r.coverage:.3f} (SE {r.se(0.93):.3f})"
    if r.best_set < 0.95 - 2 * r.se(0.95):
        out["best_set"] = f"best set {r.best_set:.3f} (SE {r.se(0.95):.3f})"
    if r.false_equivalent > 0.05:
        out["false_equivalent"] = f"'equivalent' at the margin {r.false_equivalent:.3f}"
    if r.tost_at_margin > 0.05 + 2 * r.se(0.05):
        out["tost"] = f"raw TOST at the margin {r.tost_at_margin:.3f} (SE {r.se(0.05):.3f})"
    return out


def power_failure(studies: int = POWER_STUDIES, run=scenario) -> str | None:
    """bin planted above bn by the demo's stated (median) detectable effect: found by the
    adjusted family in 0.80 ± (0.03 + 2 SE) of studies. `run`: the rates (cached or not)."""
    stated = run("demo design", studies).mde_points
    r = run("demo design", studies, (("bin", gap_shift(stated)),), ("bn", "bin", "b higher"))
    if abs(r.power - 0.80) > 0.03 + 2 * r.se(0.80):
        return f"power {r.power:.3f} at the stated {stated:.1f} points (SE {r.se(0.80):.3f})"
    return None


def print_rates(name: str, r: Rates) -> None:
    print(f"{name}: studies {r.studies}, fwer {r.fwer:.4f} ± {r.se(r.fwer):.4f}, tails "
          f"{ {v: round(t, 2) for v, t in r.tail.items()} }, coverage {r.coverage:.4f}, "
          f"best set {r.best_set:.4f}, equivalent {r.false_equivalent:.4f}, raw TOST "
          f"{r.tost_at_margin:.4f}, detectable {r.mde_points:.1f} points")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_targets_hold_in_every_scenario_but_the_known_shortfalls(name):
    r = scenario(name, STUDIES)
    print_rates(name, r)
    failed = rate_failures(name, r)
    new = {t: why for t, why in failed.items() if (name, t) not in KNOWN_SHORTFALLS}
    assert not new, new


@pytest.mark.slow
def test_power_at_the_stated_detectable_effect_is_80_percent():
    failure = power_failure()
    assert failure is None, failure


def test_a_run_kept_out_of_the_pool_does_not_move_the_others_detectable_effect():
    """A diverged seed (scored at chance) in ln: the other pairs' detectable effect stays
    within 15 % of the demo's (it rose by 65 % when the run was pooled, issue 39)."""
    demo = scenario("demo design", STUDIES).mde_points
    diverged = scenario("one diverged seed", STUDIES).mde_points
    assert diverged <= 1.15 * demo, (demo, diverged)


def test_closed_form_moments_are_the_bootstraps():
    """The suite's closed-form image moments are the limit of the report's bootstrap: on one
    study the two fits give the same standard errors to within the bootstrap's noise."""
    rng = np.random.default_rng(5)
    correct = draw(rng, 1, n=300)[0]
    labels = np.zeros(300, dtype=np.int64)
    runs = {name: [SeedPredictions(s, labels, np.where(c, 0, 1)) for s, c in enumerate(run)]
            for name, run in zip(RUNS, correct)}
    boot = fit_runs(runs, "acc", indices=bootstrap_indices(300, 4000, rng))
    closed = fit_seed_model(RUNS, list(correct.mean(axis=2)), moments_from_correct(correct))
    np.testing.assert_allclose(boot.means, closed.means)
    np.testing.assert_allclose(boot.s2_mod, closed.s2_mod)
    se_boot = [r["se"] for r in results(boot, PAIRS + [INTERACTION])]
    se_closed = [r["se"] for r in results(closed, PAIRS + [INTERACTION])]
    np.testing.assert_allclose(se_boot, se_closed, rtol=0.03)

