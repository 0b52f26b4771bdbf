"""resnorm.study.statistics: families of tests (Holm, max-T, Benjamini–Hochberg), adjusted
verdicts, and the ranking — with the demo's primary family calibrated by simulation.

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

from resnorm.study.statistics import (EXPLORATORY, PRIMARY, SeedPredictions, adjust,
                                      adjust_primary, benjamini_hochberg, bootstrap_indices,
                                      compare, equivalence_p, holm, interaction, max_t,
                                      rank_runs)

MU, SB, SA = -0.2, 1.5, 0.15
N_IMAGES, K = 150, 3
VARIANTS = ["torch_bn", "bn", "in", "bin", "ln", "gn", "nn"]
SIX = VARIANTS[1:]
RUNS = VARIANTS + ["bn_b8", "gn_b8"]
TOLERANCE = 0.05  # the demo's sanity tolerance (5 points)
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


def primary_family(study: dict, indices: np.ndarray) -> list[dict]:
    """The demo's primary family, adjusted as the report adjusts it: the sanity equivalence,
    the six variants pairwise, the batch-size interaction."""
    kw = {"indices": indices, "cache": {}}
    sanity = compare(study["torch_bn"], study["bn"], "acc", **kw)
    sanity.update(a="torch_bn", b="bn", test="equivalence", tolerance=TOLERANCE,
                  p=equivalence_p(sanity, TOLERANCE))
    members, weights = [sanity], [{"torch_bn": 1.0, "bn": -1.0}]
    for i, a in enumerate(SIX):
        for b in SIX[i + 1:]:
            members.append({**compare(study[a], study[b], "acc", **kw), "a": a, "b": b})
            weights.append({a: 1.0, b: -1.0})
    members.append(interaction(study["gn_b8"], study["gn"], study["bn_b8"], study["bn"],
                               "acc", **kw))
    weights.append({"gn_b8": 1.0, "gn": -1.0, "bn_b8": -1.0, "bn": 1.0})
    adjust_primary(members, weights, study, "acc", **kw)
    return members


DIRECTIONAL = ("a higher", "b higher", "GN less sensitive", "BN less sensitive")


def said_higher(members: list[dict], key: str = "verdict") -> list[bool]:
    """Which difference tests state a direction (the equivalence test states none: its
    `verdict` is the raw difference verdict it does not use)."""
    return [m.get(key) in DIRECTIONAL for m in members if m.get("test") != "equivalence"]


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
    # correlated tests sit between the two, never below the raw p nor above Holm
    corr = np.full((m, m), 0.5) + 0.5 * np.eye(m)
    mid, _ = max_t(p, corr)
    assert all(x <= a <= h + 1e-9 for x, a, h in zip(p, mid, holm(p)))
    assert mid[0] < independent[0]


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


# --- calibration by simulation -----------------------------------------------------------------

N_NULL_STUDIES = 600


def test_primary_family_wise_error_by_simulation():
    """Seven equal variants (and equal batch-size runs): the chance of at least one "higher"
    verdict in the primary family is about 5 % (3-7 %). Unadjusted, the 16 difference tests
    give one in about a third of the studies; plain Holm, which allows for any dependence,
    sits lower than max-T (these tests are positively correlated)."""
    rng = np.random.default_rng(2026)
    indices = bootstrap_indices(N_IMAGES, 400, rng)  # reused: every study draws new data
    adjusted = holm_only = raw = 0
    for _ in range(N_NULL_STUDIES):
        members = [m for m in primary_family(simulate(rng), indices)
                   if m.get("test") != "equivalence"]
        adjusted += any(said_higher(members))
        holm_only += any(m["verdict_unadjusted"] in DIRECTIONAL and m["p_holm"] < 0.05
                         for m in members)
        raw += any(said_higher(members, "verdict_unadjusted"))
    rates = [x / N_NULL_STUDIES for x in (adjusted, holm_only, raw)]
    message = (f"family-wise error over {N_NULL_STUDIES} studies: max-T {rates[0]:.3f}, Holm "
               f"{rates[1]:.3f}, unadjusted {rates[2]:.3f}")
    print(message)
    assert 0.03 <= rates[0] <= 0.07, message
    assert rates[1] <= rates[0] and rates[2] > 0.2, message


def test_power_for_a_planted_difference_by_simulation():
    """One variant planted better by 7 points and one by 15 (the demo's gaps between variants
    are 5-20 points), the others equal: how often the primary family says so (the power), and
    false verdicts among the equal ones still at most about 5 %. With 3 seeds and 150 images
    a pair's difference has a standard error of about 4 points, so even 15 points is found
    only at times: more seeds or images are what would find it."""
    deltas = {"gn": 0.4, "bin": 0.85}
    gaps = [expected_acc(d) - expected_acc(0.0) for d in deltas.values()]
    assert gaps == pytest.approx([0.070, 0.148], abs=0.005)
    rng = np.random.default_rng(7)
    indices = bootstrap_indices(N_IMAGES, 400, rng)
    n_studies, found, found_raw, false = 200, np.zeros(2), np.zeros(2), 0
    equal = {"bn", "in", "ln", "nn"}
    for _ in range(n_studies):
        members = primary_family(simulate(rng, deltas), indices)
        by_pair = {(m.get("a"), m.get("b")): m for m in members}
        for k, pair in enumerate([("bn", "gn"), ("bn", "bin")]):
            found[k] += by_pair[pair]["verdict"] == "b higher"
            found_raw[k] += by_pair[pair]["verdict_unadjusted"] == "b higher"
        false += any(said_higher([m for m in members if {m.get("a"), m.get("b")} <= equal]))
    power, raw = found / n_studies, found_raw / n_studies
    message = (f"power over {n_studies} studies: {100 * gaps[0]:.1f} points {power[0]:.2f} "
               f"(unadjusted {raw[0]:.2f}), {100 * gaps[1]:.1f} points {power[1]:.2f} "
               f"(unadjusted {raw[1]:.2f}); a false verdict among the equal variants in "
               f"{false / n_studies:.3f} of the studies")
    print(message)
    assert 0.05 < power[0] < power[1] and all(power <= raw), message
    assert false / n_studies <= 0.07, message


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
