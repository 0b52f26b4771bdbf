"""resnorm.statistics: metrics, paired bootstrap replicates, contrasts and their verdicts.

The calibration tests simulate whole studies from a generative model in which every noise
source of a real study is present: an image difficulty shared by all runs (paired images), a
run effect, a seed effect per (run, seed) and per-(seed, image) luck:

    correct(r, s, i) ~ Bernoulli(sigmoid(beta_i + delta_r + alpha_rs)),
    beta_i ~ N(MU, SB^2),  alpha_rs ~ N(0, SA^2).

The true accuracy difference is computed from the model by Gauss-Hermite quadrature (over
images and seeds, or over images alone for fixed models when K = 1).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from resnorm.statistics import (INTERACTION_VERDICT, SeedPredictions, bootstrap_indices,
                                compare, contrast, equivalence, interaction, metric_replicates,
                                metric_value, summarize)

MU, SB, SA = 0.8, 1.5, 0.15
_X, _W = np.polynomial.hermite_e.hermegauss(80)
_W = _W / _W.sum()


def _expected_acc(delta: float, alpha=0.0, alpha_sd: float = 0.0):
    """E over images (and seeds, when alpha_sd > 0) of sigmoid(beta + delta + alpha)."""
    alpha = np.atleast_1d(np.asarray(alpha, dtype=float))
    z = MU + math.hypot(SB, alpha_sd) * _X[None] + delta + alpha[:, None]
    return np.sum(_W * expit(z), axis=1)


def _simulate_study(rng, n, k, deltas, alpha_sd):
    """Runs as lists of (labels, preds) seeds (2 classes; class 0 is right), plus the seed
    effects drawn."""
    beta = MU + SB * rng.standard_normal(n)
    labels = np.zeros(n, dtype=np.int64)
    runs, alphas = [], []
    for d in deltas:
        al = alpha_sd * rng.standard_normal(k)
        correct = rng.random((k, n)) < expit(beta[None] + d + al[:, None])
        runs.append([(labels, np.where(c, 0, 1)) for c in correct])
        alphas.append(al)
    return runs, alphas


def _random_preds(rng, n, c, p_right):
    labels = rng.integers(0, c, n)
    return labels, np.where(rng.random(n) < p_right, labels, rng.integers(0, c, n))


def _direct(labels, preds, metric):
    classes = np.union1d(labels, preds)
    if metric == "acc":
        return float(np.mean(labels == preds))
    tp = np.array([np.sum((labels == c) & (preds == c)) for c in classes])
    fp = np.array([np.sum((labels != c) & (preds == c)) for c in classes])
    fn = np.array([np.sum((labels == c) & (preds != c)) for c in classes])
    if metric == "micro_f1":
        return 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
    return float(np.mean(2 * tp / (2 * tp + fp + fn)))  # only classes that occur


# --- metrics --------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["acc", "micro_f1", "macro_f1"])
def test_metric_value_matches_direct_computation(metric):
    rng = np.random.default_rng(1)
    for n, c in [(50, 3), (200, 10), (37, 40)]:  # with 40 classes some never occur
        labels, preds = _random_preds(rng, n, c, 0.6)
        assert metric_value(labels, preds, metric) == pytest.approx(_direct(labels, preds,
                                                                           metric), abs=1e-12)


def test_micro_f1_equals_accuracy():
    labels, preds = _random_preds(np.random.default_rng(2), 300, 7, 0.5)
    assert metric_value(labels, preds, "micro_f1") == pytest.approx(
        metric_value(labels, preds, "acc"), abs=1e-12)


# torchmetrics 1.9: multiclass_f1_score(preds, target, num_classes=4, average="macro")
TORCHMETRICS_MACRO_F1 = [
    ([0, 0, 1, 1], [0, 1, 1, 1], 0.7333333),  # classes 2, 3 absent: left out of the mean
    ([0, 0, 1, 2], [0, 0, 0, 0], 0.2222222),  # classes 1, 2 never predicted: they count as 0
]


@pytest.mark.parametrize("labels,preds,ref", TORCHMETRICS_MACRO_F1)
def test_macro_f1_follows_torchmetrics(labels, preds, ref):
    """Reference values from torchmetrics (importing it here would cost seconds per run)."""
    assert metric_value(np.array(labels), np.array(preds), "macro_f1") == pytest.approx(
        ref, abs=1e-6)


def test_unknown_metric_and_empty_set():
    with pytest.raises(ValueError, match="valid metrics"):
        metric_value([0], [0], "top5")
    with pytest.raises(ValueError, match="empty"):
        metric_value([], [], "acc")


# --- replicates -----------------------------------------------------------------------------

def test_bootstrap_indices_shape_range_and_determinism():
    idx = bootstrap_indices(30, 50, 7)
    assert idx.shape == (50, 30) and idx.min() >= 0 and idx.max() < 30
    np.testing.assert_array_equal(idx, bootstrap_indices(30, 50, 7))
    assert not np.array_equal(idx, bootstrap_indices(30, 50, 8))


@pytest.mark.parametrize("metric,c", [("acc", 5), ("micro_f1", 5), ("macro_f1", 5),
                                      ("macro_f1", 300)])  # 300 classes: chunked bincount
def test_replicates_match_metric_on_each_resample(metric, c):
    rng = np.random.default_rng(4)
    labels, preds = _random_preds(rng, 120, c, 0.6)
    idx = bootstrap_indices(120, 120, rng)
    reps = metric_replicates(labels, preds, metric, idx)
    expected = [_direct(labels[row], preds[row], metric) for row in idx]
    np.testing.assert_allclose(reps, expected, atol=1e-12)


# --- calibration by simulation --------------------------------------------------------------

N_IMAGES, N_STUDIES = 400, 1000


@pytest.mark.parametrize("k,delta_a,alpha_sd", [(3, 0.3, SA), (3, 0.0, SA),
                                                (1, 0.3, SA), (1, 0.0, 0.0)])
def test_ci_coverage_by_simulation(k, delta_a, alpha_sd):
    """95 % CIs cover the true difference in 93-97 % of simulated studies; with no true
    difference the verdict is "no clear difference" as often. With K = 1 the target is the
    difference of the two trained models' expected accuracies over the image population."""
    rng = np.random.default_rng(2024)
    idx = bootstrap_indices(N_IMAGES, 400 if k > 1 else 1000, rng)  # reused: each study is new
    truth = float(_expected_acc(delta_a, alpha_sd=alpha_sd)[0]
                  - _expected_acc(0.0, alpha_sd=alpha_sd)[0])
    covered = no_difference = 0
    for _ in range(N_STUDIES):
        runs, alphas = _simulate_study(rng, N_IMAGES, k, (delta_a, 0.0), alpha_sd)
        res = compare(*runs, "acc", indices=idx)
        target = truth if k > 1 else float(_expected_acc(delta_a, alphas[0])[0]
                                           - _expected_acc(0.0, alphas[1])[0])
        lo, hi = res["ci95"]
        covered += lo <= target <= hi
        no_difference += res["verdict"] == "no clear difference"
    assert 0.93 <= covered / N_STUDIES <= 0.97
    if delta_a == 0.0:
        assert 0.93 <= no_difference / N_STUDIES <= 0.97
    else:
        assert no_difference / N_STUDIES < 0.9  # it does detect a 5-point difference at times


# --- degenerate inputs ----------------------------------------------------------------------

def _finite(res):
    for key in ("diff", "p"):
        assert math.isfinite(res[key])
    assert all(math.isfinite(v) for v in res["ci95"])


@pytest.mark.parametrize("k", [1, 3])
def test_identical_predictions_give_a_zero_width_interval(k):
    rng = np.random.default_rng(5)
    seeds = [_random_preds(np.random.default_rng(6), 100, 4, 0.7) for _ in range(k)]
    res = compare(seeds, list(seeds), "macro_f1", rng=rng, n_boot=200)
    _finite(res)
    assert res["diff"] == 0 and res["ci95"] == [0.0, 0.0] and res["p"] == 1.0
    assert res["verdict"] == "no clear difference"


@pytest.mark.parametrize("k", [1, 3])
def test_nonzero_difference_with_zero_variance(k):
    labels = np.arange(50) % 5
    right, wrong = (labels, labels), (labels, (labels + 1) % 5)
    res = compare([right] * k, [wrong] * k, "acc", n_boot=100)
    assert res["diff"] == 1.0 and res["ci95"] == [1.0, 1.0] and res["p"] == 0.0
    assert res["verdict"] == "a higher"
    assert compare([wrong] * k, [right] * k, "acc", n_boot=100)["verdict"] == "b higher"


@pytest.mark.parametrize("k", [1, 2, 3])
def test_few_seeds_give_finite_results(k):
    rng = np.random.default_rng(7)
    runs, _ = _simulate_study(rng, 200, k, (0.5, 0.0), SA)
    for metric in ("acc", "macro_f1"):
        res = compare(*runs, metric, n_boot=300)
        _finite(res)
        assert res["seeds"] == [k, k]
        assert res["ci95"][0] <= res["diff"] <= res["ci95"][1]
        assert ("percentile" in res["method"]) == (k == 1)


def test_one_seed_accuracy_p_is_mcnemar():
    rng = np.random.default_rng(8)
    runs, _ = _simulate_study(rng, 300, 1, (0.4, 0.0), 0.0)
    res = compare(*runs, "acc", n_boot=500)
    (la, pa), (_, pb) = runs[0][0], runs[1][0]
    only_a = int(np.sum((pa == la) & (pb != la)))
    only_b = int(np.sum((pb == la) & (pa != la)))
    assert res["p"] == pytest.approx(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    assert "McNemar" in res["method"]
    assert "McNemar" not in compare(*runs, "macro_f1", n_boot=500)["method"]


def test_mixed_seed_counts_say_which_runs_lack_a_seed_term():
    runs, _ = _simulate_study(np.random.default_rng(9), 200, 3, (0.3, 0.0), SA)
    res = compare(runs[0], runs[1][:1], "acc", n_boot=300)
    _finite(res)
    assert res["seeds"] == [3, 1]
    assert "run(s) 1 have one seed" in res["method"]


def test_empty_validation_set_is_not_computable():
    empty = (np.array([], dtype=int), np.array([], dtype=int))
    res = compare([empty], [empty], "acc")
    assert res["verdict"] == "not computable" and "empty" in res["reason"]
    assert res["diff"] is None and res["ci95"] is None and res["p"] is None
    assert equivalence(res, 0.01) == "not computable"
    assert summarize([empty])["verdict"] == "not computable"


def test_mismatched_inputs_raise():
    a = (np.zeros(10, dtype=int), np.zeros(10, dtype=int))
    b = (np.zeros(12, dtype=int), np.zeros(12, dtype=int))
    with pytest.raises(ValueError, match="10 validation images|12 validation images"):
        compare([a], [b])
    with pytest.raises(ValueError, match="same validation set|share one validation set"):
        compare([a], [(np.ones(10, dtype=int), np.zeros(10, dtype=int))])
    with pytest.raises(ValueError, match="differ in length"):
        compare([a], [(np.zeros(10, dtype=int), np.zeros(9, dtype=int))])
    with pytest.raises(ValueError, match="weights"):
        contrast([[a], [a]], [1.0])
    with pytest.raises(ValueError, match="no seeds"):
        compare([a], [])
    with pytest.raises(TypeError, match="list of seeds"):
        compare(a, [a])


# --- data types, caching, summaries ---------------------------------------------------------

def test_seed_predictions_and_cache_give_the_same_result():
    runs, _ = _simulate_study(np.random.default_rng(10), 150, 3, (0.2, 0.0), SA)
    # seed None: not paired by seed (see test_runs_with_the_same_seeds_pair_by_seed)
    as_dc = [[SeedPredictions(None, lab, pred) for lab, pred in run] for run in runs]
    idx = bootstrap_indices(150, 300, 0)
    plain = compare(*runs, "macro_f1", indices=idx)
    cache: dict = {}
    assert compare(*as_dc, "macro_f1", indices=idx, cache=cache) == plain
    assert compare(*as_dc, "macro_f1", indices=idx, cache=cache) == plain
    assert len(cache) == 6


def test_summarize():
    runs, _ = _simulate_study(np.random.default_rng(11), 300, 3, (0.0,), SA)
    s = summarize(runs[0], "acc", n_boot=300)
    accs = [metric_value(lab, pred) for lab, pred in runs[0]]
    assert s["mean"] == pytest.approx(np.mean(accs)) and s["std"] == pytest.approx(
        np.std(accs, ddof=1))
    assert s["n"] == 3 and s["ci95"][0] < s["mean"] < s["ci95"][1]
    one = summarize(runs[0][:1], "acc", n_boot=300)
    assert one["std"] is None and one["n"] == 1 and "percentile" in one["method"]
    assert one["ci95"][0] < one["mean"] < one["ci95"][1]


def test_equivalence_outcomes():
    def res(lo, hi):
        return {"diff": (lo + hi) / 2, "ci95": [lo, hi], "verdict": "no clear difference"}
    assert equivalence(res(-0.004, 0.006), 0.01) == "equivalent"
    assert equivalence(res(0.012, 0.03), 0.01) == "not equivalent"
    assert equivalence(res(-0.05, -0.02), 0.01) == "not equivalent"
    assert equivalence(res(-0.004, 0.02), 0.01) == "inconclusive"
    with pytest.raises(ValueError):
        equivalence(res(0, 0), -1)
    # on real contrasts: two runs of one model are equivalent within 5 points; a 20-point
    # gap is not; a handful of images cannot tell
    runs, _ = _simulate_study(np.random.default_rng(12), 3000, 3, (0.0, 0.0), 0.05)
    assert equivalence(compare(*runs, n_boot=300), 0.05) == "equivalent"
    runs, _ = _simulate_study(np.random.default_rng(12), 3000, 3, (1.5, 0.0), 0.05)
    assert equivalence(compare(*runs, n_boot=300), 0.05) == "not equivalent"
    runs, _ = _simulate_study(np.random.default_rng(12), 40, 3, (0.0, 0.0), 0.05)
    assert equivalence(compare(*runs, n_boot=300), 0.05) == "inconclusive"


GN_LESS, BN_LESS = INTERACTION_VERDICT.format("GN"), INTERACTION_VERDICT.format("BN")


@pytest.mark.parametrize("deltas,verdict", [
    ((0.0, 0.0, -1.0, 0.0), GN_LESS),                 # BN drops with small batches, GN not
    ((-1.0, 0.0, 0.0, 0.0), BN_LESS),                 # GN drops, BN not
    ((-0.5, 0.0, -0.5, 0.0), "no clear difference"),  # both drop alike
    ((0.2, 0.0, 1.0, 0.0), BN_LESS),                  # both rise; BN gains more (signed)
    ((-0.2, 0.0, -1.2, 0.0), GN_LESS),                # both drop; BN drops more
])
def test_interaction_verdicts_on_planted_effects(deltas, verdict):
    """deltas: logit effects of (gn_small, gn_large, bn_small, bn_large)."""
    runs, _ = _simulate_study(np.random.default_rng(13), 1500, 3, deltas, 0.05)
    res = interaction(*runs, "acc", groups=("BN", "GN"), n_boot=300)
    assert res["verdict"] == verdict  # worded by the groups' names
    sens = res["sensitivity"]
    assert res["diff"] == pytest.approx(sens["BN"] - sens["GN"])
    if verdict == GN_LESS:
        assert sens["GN"] < sens["BN"]


def test_equal_seed_scores_do_not_cancel_the_image_noise():
    """Three seeds that happen to score the same (S² = 0) yet predict different images: the
    interval still counts their seed-by-image luck, measured on the images (it once came
    out zero-width here)."""
    rng = np.random.default_rng(7)
    n = 150
    labels = rng.integers(0, 10, n)

    def seed_with_acc(correct: int):
        preds = (labels + 1) % 10
        right = rng.permutation(n)[:correct]
        preds[right] = labels[right]
        return labels, preds

    a = [seed_with_acc(64) for _ in range(3)]   # 42.7 % each
    b = [seed_with_acc(40) for _ in range(3)]   # 26.7 % each
    res = compare(a, b, "acc")
    lo, hi = res["ci95"]
    assert res["diff"] == pytest.approx(24 / 150)
    image_only = compare([a[0]], [b[0]], "acc")["ci95"]
    assert lo < res["diff"] < hi
    assert hi - lo > 0.5 * (image_only[1] - image_only[0]) > 0


def test_paired_by_seed_coverage_by_simulation():
    """Runs trained with the same seed ids pair by seed: still 93-97 % coverage when the seeds
    of the two runs are in fact independent (pairing then gains nothing, and costs nothing)."""
    rng = np.random.default_rng(2025)
    idx = bootstrap_indices(N_IMAGES, 400, rng)
    truth = float(_expected_acc(0.3, alpha_sd=SA)[0] - _expected_acc(0.0, alpha_sd=SA)[0])
    covered = 0
    for _ in range(N_STUDIES):
        runs, _ = _simulate_study(rng, N_IMAGES, 3, (0.3, 0.0), SA)
        runs = [[SeedPredictions(s, lab, pred) for s, (lab, pred) in enumerate(run)]
                for run in runs]
        res = compare(*runs, "acc", indices=idx)
        covered += res["ci95"][0] <= truth <= res["ci95"][1]
    assert "paired by seed" in res["method"]
    assert 0.93 <= covered / N_STUDIES <= 0.97


def test_runs_with_the_same_seeds_pair_by_seed():
    """Own BN and PyTorch BN with the same seed are nearly the same model: paired by seed, their
    difference is known to a fraction of a point even though the seeds differ by several."""
    rng = np.random.default_rng(3)
    n = 400
    labels = rng.integers(0, 10, n)
    a, b = [], []
    for seed, skill in enumerate((0.35, 0.5, 0.65)):  # seeds far apart
        right = rng.random(n) < skill
        preds = np.where(right, labels, (labels + 1) % 10)
        twin = preds.copy()
        flip = rng.choice(n, 3, replace=False)  # the twin differs on 3 images
        twin[flip] = (twin[flip] + 2) % 10
        a.append(SeedPredictions(seed, labels, preds))
        b.append(SeedPredictions(seed, labels, twin))
    paired = compare(a, b, "acc")
    unpaired = compare([SeedPredictions(None, x.labels, x.preds) for x in a],
                       [SeedPredictions(None, x.labels, x.preds) for x in b], "acc")
    assert "paired by seed" in paired["method"] and "paired by seed" not in unpaired["method"]
    lo, hi = paired["ci95"]
    assert lo <= 0 <= hi or abs(paired["diff"]) <= 3 / n
    assert hi - lo < 0.03 < unpaired["ci95"][1] - unpaired["ci95"][0]
    assert equivalence(paired, 0.02) == "equivalent"
    assert equivalence(unpaired, 0.02) == "inconclusive"
