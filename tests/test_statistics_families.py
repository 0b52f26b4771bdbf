"""resnorm.statistics: families of tests (Holm, max-T, Benjamini–Hochberg), adjusted
verdicts, the best set and the ranking (the family's calibration by simulation is
tests/test_calibration.py).

The simulated studies follow the demo (configs/demo.yaml): seven norm variants (PyTorch BN and
the six), BN and GN at a second batch size, 3 seeds each (paired by seed id, as a study trains
them), 150 validation images of two classes. The generative model is test_statistics.py's:

    correct(r, s, i) ~ Bernoulli(sigmoid(beta_i + delta_r + alpha_rs)),
    beta_i ~ N(MU, SB^2) (image difficulty, shared by every run),  alpha_rs ~ N(0, SA^2),

with MU, SB, SA giving the demo's scale: about 46 % accuracy, a seed-to-seed spread of about
4 points (2.5 from the seed effect, the rest from which images a model gets right by luck).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from resnorm.statistics import (EXPLORATORY, PRIMARY, SeedPredictions, adjust,
                                      benjamini_hochberg, best_set, bootstrap_indices,
                                      equivalence_p, holm, max_t, rank_runs)

MU, SB, SA = -0.2, 1.5, 0.15
N_IMAGES, K = 150, 3
VARIANTS = ["torch_bn", "bn", "in", "bin", "ln", "gn", "nn"]
RUNS = VARIANTS + ["bn_b8", "gn_b8"]
_X, _W = np.polynomial.hermite_e.hermegauss(80)
_W = _W / _W.sum()


def expected_acc(delta: float) -> float:
    """A run's expected accuracy over images and seeds (Gauss–Hermite quadrature)."""
    return float(np.sum(_W * expit(MU + math.hypot(SB, SA) * _X + delta)))


def simulate(rng, deltas: dict[str, float] | None = None, n: int = N_IMAGES,
             runs=RUNS) -> dict[str, list[SeedPredictions]]:
    """One study: per run, K seeds of predictions on the same n images."""
    beta = MU + SB * rng.standard_normal(n)
    labels = np.zeros(n, dtype=np.int64)
    out = {}
    for name in runs:
        alpha = SA * rng.standard_normal(K)
        d = (deltas or {}).get(name, 0.0)
        correct = rng.random((K, n)) < expit(beta[None] + d + alpha[:, None])
        out[name] = [SeedPredictions(s, labels, np.where(c, 0, 1))
                     for s, c in enumerate(correct)]
    return out


# --- the adjustments ---------------------------------------------------------------------------

def test_holm_and_benjamini_hochberg_on_a_worked_example():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> running max
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted p·m/rank = 0.02, 0.02, 0.04, 0.04 -> running min from the top
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert holm([]) == [] and benjamini_hochberg([]) == []


def test_max_t_between_sidak_for_independent_tests_and_no_adjustment_for_identical_ones():
    m = 10
    p = [0.001, 0.004, 0.02, 0.3] + [0.5] * (m - 4)
    independent, crit = max_t(p, np.eye(m), n_sim=200_000)
    sidak = [1 - (1 - x) ** k for x, k in zip(p, range(m, 0, -1))]  # step-down Šidák
    assert independent[:3] == pytest.approx(np.maximum.accumulate(sidak)[:3], rel=0.05)
    assert crit == pytest.approx(1 - 0.95 ** (1 / m), rel=0.05)
    # one test repeated m times is one test: no adjustment at all
    same, crit = max_t(p[:1] * m, np.ones((m, m)), n_sim=200_000)
    assert same == pytest.approx(p[:1] * m, abs=5e-4) and crit == pytest.approx(0.05, rel=0.05)
    # correlated tests sit between the two
    corr = np.full((m, m), 0.5) + 0.5 * np.eye(m)
    mid, _ = max_t(p, corr)
    assert p[0] < mid[0] < independent[0]


def test_max_t_with_a_shared_variance_estimate_follows_the_multivariate_t():
    """One test alone: its adjusted p is its own t p-value, and the critical p the level; two
    identical tests on a t with 4 df: still no adjustment (a normal reference would give a
    far smaller critical p)."""
    from scipy import stats
    t = 3.0
    p = [float(2 * stats.t.sf(t, 4))]
    adjusted, crit = max_t(p, np.eye(1), df=4.0, n_sim=200_000)
    assert adjusted[0] == pytest.approx(p[0], rel=0.05) and crit == pytest.approx(0.05, rel=0.05)
    independent, crit_ind = max_t(p * 5, np.eye(5), df=4.0, n_sim=200_000)
    same, crit_same = max_t(p * 5, np.ones((5, 5)), df=4.0, n_sim=200_000)
    assert same == pytest.approx(p * 5, rel=0.05) and crit_same == pytest.approx(0.05, rel=0.05)
    # five independent statistics sharing one variance estimate: less than Šidák's adjustment
    assert p[0] < independent[0] < 1 - (1 - p[0]) ** 5


def test_the_best_set_keeps_what_the_intervals_cannot_exclude():
    sim = {("a", "b"): [0.01, 0.2], ("a", "c"): [-0.05, 0.1], ("b", "c"): [-0.3, 0.05]}
    assert best_set(["a", "b", "c"], sim) == ["a", "c"]   # b is below a
    assert best_set(["a", "b", "c"], {}) == ["a", "b", "c"]  # nothing excludes
    assert best_set(["a", "b"], {("b", "a"): [-0.2, -0.01]}) == ["a"]


def _member(verdict: str, p: float, diff: float = 0.1) -> dict:
    return {"diff": diff, "ci95": [diff - 0.05, diff + 0.05], "p": p, "se": 0.02, "df": 10.0,
            "verdict": verdict}


def test_a_verdict_stands_only_when_the_adjusted_test_rejects():
    members = [_member("a higher", 0.001), _member("a higher", 0.02), _member("b higher", 0.04),
               _member("no clear difference", 0.5, 0.0), {"p": None, "verdict": "not computable"}]
    adjust(members, PRIMARY)  # no correlation given: Holm
    assert [m["verdict"] for m in members[:4]] == ["a higher", "no clear difference",
                                                   "no clear difference", "no clear difference"]
    assert [m["verdict_unadjusted"] for m in members[:3]] == ["a higher", "a higher",
                                                              "b higher"]
    assert members[0]["p_adjusted"] == pytest.approx(0.004) and members[0]["p"] == 0.001
    assert all(m["family"] == PRIMARY for m in members)
    assert members[4]["p_adjusted"] is None and "ci95_simultaneous" not in members[4]
    # Bonferroni level 1 − 5 %/4 for the 4 tested: wider than the 95 % interval
    lo, hi = members[0]["ci95_simultaneous"]
    assert lo < members[0]["ci95"][0] and hi > members[0]["ci95"][1]
    explore = [_member("a higher", 0.001), _member("a higher", 0.02), _member("a higher", 0.04)]
    adjust(explore, EXPLORATORY)  # BH: 0.003, 0.03, 0.04 all below 5 %
    assert [m["verdict"] for m in explore] == ["a higher"] * 3
    assert all("ci95_simultaneous" not in m and m["adjustment"] == "Benjamini-Hochberg"
               for m in explore)


def test_equivalence_members_follow_their_adjusted_tost():
    close = {**_member("no clear difference", 0.0, 0.001), "test": "equivalence",
             "tolerance": 0.05, "ci95": [-0.02, 0.022]}
    close["p"] = equivalence_p(close, 0.05)
    far = {**_member("a higher", 0.0, 0.3), "test": "equivalence", "tolerance": 0.05}
    far["p"] = equivalence_p(far, 0.05)
    adjust([close, far, _member("a higher", 0.001)], PRIMARY)
    assert close["p"] < 0.05 and close["equivalence"] == "equivalent"
    assert far["p"] == pytest.approx(1.0) and far["equivalence"] == "not equivalent"
    assert close["verdict"] == "no clear difference"  # the difference verdict is left alone


# --- calibration by simulation: tests/test_calibration.py (the family on the study's model) --

# --- the ranking -------------------------------------------------------------------------------

def test_a_clearly_best_variant_is_named_with_probability_near_one():
    """A variant planted 20 points ahead of six equal ones is named best (P(best) >= 0.9) in
    nearly every simulated study, with P(best) near 1 (not 1.00: three seeds leave some doubt,
    which the t at the seed level keeps)."""
    assert expected_acc(1.2) - expected_acc(0.0) == pytest.approx(0.206, abs=0.005)
    rng = np.random.default_rng(11)
    indices = bootstrap_indices(N_IMAGES, 500, rng)
    p_best, crowned = [], 0
    for _ in range(20):
        ranking = rank_runs(simulate(rng, {"bin": 1.2}, runs=VARIANTS), "acc",
                            indices=indices, rng=rng.integers(1 << 31))
        p_best.append(ranking["p_best"]["bin"])
        crowned += ranking["best"] == "bin"
        assert sum(ranking["p_best"].values()) == pytest.approx(1.0)
        assert all(sum(p) == pytest.approx(1.0) for p in ranking["rank_probabilities"].values())
        assert sum(ranking["expected_rank"].values()) == pytest.approx(sum(range(1, 8)))
    assert np.median(p_best) >= 0.95 and crowned >= 18, (np.median(p_best), crowned)


def test_seven_equal_variants_share_the_best_and_none_is_crowned():
    """Over simulated studies each of seven equal variants is best with probability 1/7 on
    average (ties split evenly: predictions of 150 images often tie), and a variant is named
    best (P(best) >= 0.9) in few studies."""
    rng = np.random.default_rng(12)
    indices = bootstrap_indices(N_IMAGES, 500, rng)
    n_studies, crowned = 200, 0
    p_best = np.zeros(len(VARIANTS))
    for _ in range(n_studies):
        ranking = rank_runs(simulate(rng, runs=VARIANTS), "acc", indices=indices,
                            rng=rng.integers(1 << 31))
        p_best += [ranking["p_best"][n] for n in VARIANTS]
        crowned += ranking["best"] is not None
        assert len(ranking["tied"]) >= 2 or ranking["best"] is not None
    p_best /= n_studies
    assert p_best == pytest.approx([1 / 7] * 7, abs=0.04), p_best
    assert crowned / n_studies <= 0.05, crowned


def test_tied_rankings_split_evenly_and_name_no_best():
    labels = np.zeros(60, dtype=np.int64)
    preds = np.where(np.arange(60) % 3 == 0, 1, 0)
    same = [SeedPredictions(s, labels, preds) for s in range(3)]
    ranking = rank_runs({"a": same, "b": same, "c": same}, "acc", n_boot=200)
    assert ranking["p_best"] == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert ranking["expected_rank"] == pytest.approx({"a": 2.0, "b": 2.0, "c": 2.0})
    assert ranking["best"] is None and sorted(ranking["tied"]) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="two or more runs"):
        rank_runs({"a": same}, "acc")
