"""Contrasts of runs: an estimate with a 95 % interval that counts seeds *and* images.

A study trains every run of its plan with K seeds and evaluates each (run, seed) on one fixed
validation set. A score such as "GN beats BN by 1.2 points" then carries two kinds of noise:

- **seeds** (training randomness): another seed gives another model;
- **images**: the N validation images are a sample of the population of images. The same N
  images are shared by every run and seed, so the image noise is *paired* across them.

The target of a contrast θ = Σ_r w_r · μ_r, where μ_r is the expected metric of run r over
seeds and over the image population. The estimate is θ̂ = Σ_r w_r · mean_s m(r, s), with
m(r, s) the metric of run r seed s on the whole validation set.

**Variance (K_r ≥ 2 seeds).** Write m(r, s) = μ_r + a_rs + c_r + u_rs: a seed effect a_rs
(variance σ²_r), an image-sample error c_r common to all seeds of run r (and correlated
across runs: the images are shared), and a seed-by-image error u_rs (which images this
particular model gets right by luck). Then

    Var(θ̂) = Σ_r w_r² σ²_r / K_r + Var_img(Σ_r w_r (c_r + mean_s u_rs)).

The seed sample variance S_r² estimates σ²_r + Var(u_r) (the common c_r cancels), and the
paired image bootstrap variance V_img of Σ_r w_r · mean_s m*(r, s) estimates the second term,
which *also* contains Σ_r w_r² Var(u_r) / K_r. Counting both would count the seed-by-image
noise twice, so it is removed once, from the image part: with V1(r, s) the bootstrap variance
of one m*(r, s) and V̄(r) that of mean_s m*(r, s), mean_s V1(r, s) − V̄(r) = Var(u_r)(K_r − 1)/K_r
gives Var̂(u_r), and

    Var(θ̂) = Σ_r w_r² S_r² / K_r + V_c,   V_c = max(V_img − Σ_r w_r² Var̂(u_r) / K_r, 0),

V_c the variance of the image-sample error the seeds share. (Flooring S_r² at Var̂(u_r) — as
the truncation did in effect — made the 95 % intervals cover 97-99.6 % in simulation; S_r²
itself is unbiased and its 2 df are in the t. Only seeds that score exactly the same, S_r² = 0,
get Var̂(u_r) in its place: their seed-by-image luck is still there. The report's comparisons
moderate S_r² across runs instead, see `model`.) Both parts are measured well
where they are large: S_r² from the seeds (K_r − 1 df), V_c from N images. (An earlier
version subtracted Var̂(u_r) from S_r² and truncated at 0: with 2 or 3 seeds S_r² falls
below it by chance, the seed term vanished and the df, taken from the untruncated S_r²,
jumped towards N − 1: the tail of such tests rejected twice as often as it should.) The 95 %
CI is θ̂ ± t_df · √Var with Welch–Satterthwaite df from the same parts: each seed term has
K_r − 1 df, V_c has N − 1. The p-value is two-sided from the same t. This is each run's *own*
seed variance; the report pools it across a study's runs (`model`, `joint`). A run with one
seed has no S_r²: it contributes no seed term (its seed-to-seed spread is not counted, and the
result's ``method`` says so).

**Paired by seed.** When every run of a contrast was trained with the same K ≥ 2 seed ids
(`SeedPredictions.seed`), seed s of each run shares its initialisation draw and data order with
seed s of the others (own BN and PyTorch BN with one seed are nearly the same model). The
contrast is then taken within each seed, D_s = Σ_r w_r m(r, s), and the formula above is
applied to the one "run" D: its seed term is S²_D/K with K − 1 df, and the image term the
shared part of the bootstrap variance of mean_s D*_s. Seeds are independent blocks, so this is valid
whether or not the runs' seed effects are correlated, and much tighter when they are.

**All runs with one seed.** Nothing measures seed noise, so the target becomes the difference
*conditional on the trained models* (their expected metric over the image population). The CI
is the percentile interval of the paired image bootstrap; the p-value inverts it
(2·min(P*(θ* ≤ 0), P*(θ* ≥ 0)), with the usual +1 correction), except for a two-run accuracy
(or micro F1) difference, where it is McNemar's exact test on the discordant images. The
verdict always comes from the CI, so at the margin McNemar's p may disagree with it. ``se`` is
then the bootstrap standard deviation and ``df`` None (a normal reference, for intervals at
other levels: see `families`).

**Degenerate inputs.** Zero variance (e.g. identical predictions) gives CI [θ̂, θ̂]; the
verdict is "no clear difference" with p = 1 when θ̂ = 0, else the sign's verdict with p = 0.
An empty validation set gives a result with ``verdict`` "not computable", a ``reason`` and
None in place of the numbers (JSON-friendly: never NaN). Runs evaluated on validation sets of
different sizes or labels raise ValueError.

The bootstrap indices are drawn once per call from ``rng`` (default: seed 0, so a study's
summary is reproducible) and shared by every run and seed of the contrast (paired). Pass the
same ``indices`` (see `bootstrap_indices`) to several calls to pair them with each other too,
and a dict as ``cache`` to reuse per-(run, seed) replicates across calls.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import stats

from resnorm.statistics.inputs import (checked_indices, normalize_groups,
                                             paired_by_seed, run_scores, seed_arrays)
from resnorm.statistics.metrics import (DEFAULT_N_BOOT, bootstrap_indices, check_metric,
                                              metric_value)

__all__ = ["NOT_COMPUTABLE", "INTERACTION_VERDICT", "contrast", "compare", "interaction",
           "summarize", "equivalence", "equivalence_p"]

NOT_COMPUTABLE = "not computable"
INTERACTION_VERDICT = "{}'s small-batch recipe loses less"  # .format(group)
_ZERO_SD = 1e-8        # a standard error below this is zero (floating-point residue of
                       # variances that cancel: 1e-6 points)
_ZERO_DIFF = 1e-12     # a contrast estimate below this in size is zero


def _not_computable(reason: str, seeds: list[int], metric: str, **extra) -> dict:
    return {"diff": None, "ci95": None, "p": None, "verdict": NOT_COMPUTABLE, "reason": reason,
            "method": f"{metric}: not computable ({reason})", "seeds": seeds, "metric": metric,
            **extra}


def _verdict(lo: float, hi: float, pos: str, neg: str) -> str:
    if lo > 0:
        return pos
    if hi < 0:
        return neg
    return "no clear difference"


def _weights(weights: Sequence[float], runs: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (runs,):
        raise ValueError(f"{runs} runs but {w.size} weights")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite")
    return w


def contrast(groups: Sequence[Sequence[Any]], weights: Sequence[float], metric: str = "acc", *,
             n_boot: int = DEFAULT_N_BOOT, rng: np.random.Generator | int | None = 0,
             indices: np.ndarray | None = None, cache: dict | None = None,
             labels_pos: str = "positive", labels_neg: str = "negative") -> dict:
    """θ̂ = Σ_r w_r · mean_s m(r, s) with a 95 % CI counting seed and image noise.

    `groups`: one entry per run, each a list of seeds, each a ``(labels, preds)`` pair or a
    `SeedPredictions`; every seed must carry the same validation labels. `weights`: one per
    run. `indices`: bootstrap indices to use (else `bootstrap_indices(N, n_boot, rng)`).
    `cache`: a dict reused across calls to keep per-(run, seed) replicates. `labels_pos` /
    `labels_neg`: the verdict when the CI lies above / below 0.

    Returns ``{"diff", "ci95": [lo, hi], "p", "verdict", "method", "seeds": [K_r...], "metric",
    "se", "df", "means" (per run, over seeds), "n_images", "n_boot"}`` (``df`` None for the
    percentile interval), or a "not computable" result (see the module notes) for an empty
    validation set.
    """
    check_metric(metric)
    groups, paired = paired_by_seed(groups)
    labels, runs = normalize_groups(groups)
    w = _weights(weights, len(runs))
    seeds = [len(run) for run in runs]
    n = labels.size
    if n == 0:
        return _not_computable("the validation set is empty", seeds, metric, n_images=0)
    indices = checked_indices(bootstrap_indices(n, n_boot, rng) if indices is None
                              else indices, n)
    full, reps = run_scores(labels, runs, metric, indices, cache)
    means = [math.fsum(m) / len(m) for m in full]  # order-free: permuted seeds, same mean
    diff = math.fsum(wr * mr for wr, mr in zip(w, means))
    if abs(diff) < _ZERO_DIFF:
        diff = 0.0
    t_star = sum(wr * rep.mean(axis=0) for wr, rep in zip(w, reps))  # paired: same rows
    base = {"diff": diff, "seeds": seeds, "means": means, "metric": metric, "n_images": n,
            "n_boot": indices.shape[0]}
    if all(k == 1 for k in seeds):
        return _percentile_result(base, t_star, runs, labels, w, labels_pos, labels_neg)
    if paired:  # one unit per seed: the contrast within the seed, D_s = Σ_r w_r m(r, s)
        units = [(1.0, np.einsum("r,rs->s", w, np.asarray(full)),
                  np.einsum("r,rsb->sb", w, np.stack(reps)))]
    else:
        units = list(zip(w, full, reps))
    var, s2_terms, image_part = _variance(units, t_star)
    return _t_result(base, var, s2_terms, image_part, paired, labels_pos, labels_neg)


def _variance(units: list[tuple[float, np.ndarray, np.ndarray]], t_star: np.ndarray
              ) -> tuple[float, list[tuple[float, int]], float]:
    """Var(θ̂) = Σ w² S²/K + V_c (see the module notes), the seed terms with their df, and the
    image-common part V_c. `units`: (w, m (K,), m* (K, B)) each."""
    s2_terms, var_u_part = [], 0.0
    for wr, m, rep in units:
        k = m.size
        if k < 2:
            continue
        var_u = _var_u(rep)
        s2 = float(np.var(m, ddof=1))
        if s2 < _ZERO_SD**2:  # seeds that score exactly the same: their luck still counts
            s2 = var_u
        var_u_part += wr**2 * var_u / k
        s2_terms.append((wr**2 * s2 / k, k - 1))
    image_part = max(float(np.var(t_star, ddof=1)) - var_u_part, 0.0)
    return sum(t for t, _ in s2_terms) + image_part, s2_terms, image_part


def _var_u(rep: np.ndarray) -> float:
    """The seed-by-image variance of one seed's score, from its K >= 2 seeds' replicates."""
    k = rep.shape[0]
    v1 = float(np.mean(np.var(rep, axis=1, ddof=1)))
    vbar = float(np.var(rep.mean(axis=0), ddof=1))
    return max((v1 - vbar) * k / (k - 1), 0.0)


def seed_variance(m: np.ndarray, rep: np.ndarray) -> tuple[float, float]:
    """(σ̂², S²) of one unit with K >= 2 seeds: m (K,) on the whole set, m* (K, B) on the
    resamples. S² is the seeds' sample variance, σ̂² = max(S² − Var̂(u), 0) the seed effect's
    variance without the seed-by-image noise (for the ranking's draws, which add the image
    noise from the resamples)."""
    s2 = float(np.var(m, ddof=1))
    return max(s2 - _var_u(rep), 0.0), s2


def _t_result(base: dict, var: float, s2_terms: list[tuple[float, int]], image_part: float,
              paired: bool, pos: str, neg: str) -> dict:
    """The t interval and p from the variance, with Welch–Satterthwaite df."""
    diff, n, seeds = base["diff"], base["n_images"], base["seeds"]
    se = math.sqrt(var)
    # df: each seed term is as uncertain as the S² it comes from (K_r − 1 df), the image
    # part has N − 1; the same parts as the variance (none truncated away from it)
    denom = sum(s2k**2 / d for s2k, d in s2_terms) + image_part**2 / max(n - 1, 1)
    df = max(float(var ** 2 / denom if denom > 0 else n - 1), 1.0)
    method = (f"{base['metric']}: mean over seeds with a 95 % t interval (Welch–Satterthwaite "
              f"df {df:.1f}) from each run's own seed variance plus the image-sample variance "
              f"its seeds share (a paired image bootstrap, {base['n_boot']} replicates), the "
              "seed-by-image noise counted once")
    if paired:
        method += ("; paired by seed (every run was trained with the same seeds, so the "
                   "contrast is taken within each seed)")
    one_seed = [r for r, k in enumerate(seeds) if k == 1]
    if one_seed:
        method += (f"; run(s) {', '.join(map(str, one_seed))} have one seed and contribute no "
                   "seed-variance term, so their seed-to-seed spread is not counted")
    if se < _ZERO_SD:
        lo = hi = diff
        p = 1.0 if diff == 0 else 0.0
        se = 0.0
        method += " (zero variance: the interval is the estimate itself)"
    else:
        half = float(stats.t.ppf(0.975, df)) * se
        lo, hi = diff - half, diff + half
        p = float(2 * stats.t.sf(abs(diff) / se, df))
    return {**base, "ci95": [lo, hi], "p": p, "se": se, "df": df,
            "verdict": _verdict(lo, hi, pos, neg), "method": method + "."}


def _percentile_result(base: dict, t_star: np.ndarray, runs: list[list[np.ndarray]],
                       labels: np.ndarray, w: np.ndarray, pos: str, neg: str) -> dict:
    """Every run has one seed: paired image bootstrap percentile CI (conditional on the
    trained models); p from McNemar for a two-run accuracy difference."""
    diff, n_boot, metric = base["diff"], base["n_boot"], base["metric"]
    method = (f"{metric}: paired image bootstrap percentile interval ({n_boot} replicates), "
              "one seed per run, so conditional on the trained models (seed-to-seed variation "
              "not counted)")
    se = float(np.std(t_star, ddof=1))
    if float(np.ptp(t_star)) < _ZERO_SD:
        lo = hi = diff
        p, se = (1.0 if diff == 0 else 0.0), 0.0
        method += "; zero variance: the interval is the estimate itself"
    else:
        lo, hi = (float(q) for q in np.quantile(t_star, [0.025, 0.975]))
        below, above = int(np.sum(t_star <= 0)), int(np.sum(t_star >= 0))
        p = min(1.0, 2 * (min(below, above) + 1) / (n_boot + 1))
        if metric in ("acc", "micro_f1") and len(runs) == 2 and np.allclose(sorted(w),
                                                                           [-1.0, 1.0]):
            a, b = (runs[0][0], runs[1][0]) if w[0] > 0 else (runs[1][0], runs[0][0])
            p, discordant = _mcnemar(a == labels, b == labels)
            method += f"; p from McNemar's exact test on the {discordant} discordant images"
        else:
            method += "; p from inverting the bootstrap percentile interval"
    return {**base, "ci95": [lo, hi], "p": p, "se": se, "df": None,
            "verdict": _verdict(lo, hi, pos, neg), "method": method + "."}


def _mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[float, int]:
    """McNemar's exact p (a binomial test on the discordant images) and their count."""
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(correct_b & ~correct_a))
    if only_a + only_b == 0:
        return 1.0, 0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue), only_a + only_b


def compare(a: Sequence[Any], b: Sequence[Any], metric: str = "acc", **kwargs) -> dict:
    """Run a minus run b (weights +1, −1): verdict "a higher", "b higher" or
    "no clear difference" (the CI holds 0). Keyword arguments go to `contrast`."""
    return contrast([a, b], [1.0, -1.0], metric, labels_pos="a higher", labels_neg="b higher",
                    **kwargs)


def interaction(second_small: Sequence[Any], second_large: Sequence[Any],
                first_small: Sequence[Any], first_large: Sequence[Any], metric: str = "acc",
                groups: tuple[str, str] = ("first", "second"), **kwargs) -> dict:
    """Does batch size matter less for the second group of runs than for the first?

    `groups` names the two groups (first, second), e.g. the design's ("BN", "GN").
    Sensitivity of a group to the batch size is defined, signed, as
    ``metric(large batch) − metric(small batch)``: what moving to the small batch costs
    (negative when the small batch does better). The contrast is

        diff = (second_small − second_large) − (first_small − first_large)
             = sens_first − sens_second,

    so a positive value means the second group loses less (or gains more) than the first by
    going to the small batch. Verdict: "<second>'s small-batch recipe loses less"
    (`INTERACTION_VERDICT`) when the CI lies above 0, the first's below 0, "no clear
    difference" when it holds 0: the small-batch runs change their whole recipe (the batch
    size, the lr by the plan's rule or its tuning, the patience), so the verdict is of that
    change, not of the batch size alone. Being a signed statement, it stays well defined
    when both drop or both rise: "loses less" always
    means "the small batch costs it less". The result adds ``sensitivity``: {group: point
    estimate} for both groups.
    """
    first, second = groups
    res = contrast([second_small, second_large, first_small, first_large],
                   [1.0, -1.0, -1.0, 1.0], metric,
                   labels_pos=INTERACTION_VERDICT.format(second),
                   labels_neg=INTERACTION_VERDICT.format(first), **kwargs)
    if res["verdict"] != NOT_COMPUTABLE:
        ss, sl, fs, fl = res["means"]
        res["sensitivity"] = {second: sl - ss, first: fl - fs}
        res["method"] = (f"Interaction ({second}_small − {second}_large) − ({first}_small − "
                         f"{first}_large) = sensitivity_{first} − sensitivity_{second}, "
                         f"sensitivity = large − small batch (positive: {second} is hurt "
                         "less by the small batch); " + res["method"])
    return res


def summarize(group: Sequence[Any], metric: str = "acc", **kwargs) -> dict:
    """One run over its seeds: ``{"mean", "std" (over seeds, None with one seed), "ci95",
    "n" (seeds), "seeds", "method", "metric", "verdict" (only "not computable" for an empty
    validation set, else absent)}``. The CI is `contrast` with the single weight 1 (one seed:
    the image bootstrap percentile interval)."""
    res = contrast([group], [1.0], metric, **kwargs)
    k = res["seeds"][0]
    out = {"mean": res["diff"], "std": None, "ci95": res["ci95"], "n": k,
           "seeds": res["seeds"], "metric": metric, "method": res["method"]}
    if res["verdict"] == NOT_COMPUTABLE:
        out.update(verdict=NOT_COMPUTABLE, reason=res["reason"])
    elif k >= 2:
        out["std"] = float(np.std([metric_value(*seed_arrays(s, "seed"), metric)
                                   for s in group], ddof=1))
    return out


def equivalence(result: dict, tolerance: float, ci_key: str = "ci95") -> str:
    """TOST-style reading of a contrast's interval (`ci_key`, the 95 % CI by default) against
    ±`tolerance`: "equivalent" when it lies inside [−tol, +tol], "not equivalent" when it lies
    wholly above +tol or wholly below −tol, "inconclusive" otherwise; "not computable" for a
    not-computable result."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    ci = result.get(ci_key)
    if result.get("verdict") == NOT_COMPUTABLE or ci is None:
        return NOT_COMPUTABLE
    lo, hi = ci
    if -tolerance <= lo and hi <= tolerance:
        return "equivalent"
    if lo > tolerance or hi < -tolerance:
        return "not equivalent"
    return "inconclusive"


def equivalence_p(result: dict, tolerance: float) -> float | None:
    """The p-value of the two one-sided tests (TOST) of H0 "|θ| ≥ tolerance": the larger of
    P(T ≥ (θ̂ + tol)/se) and P(T ≤ (θ̂ − tol)/se), T a t with the result's df (normal where
    df is None: the one-seed bootstrap). Its 1 − 2α interval lies inside ± tol exactly when it
    is below α. None for a not-computable result."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    diff, se = result.get("diff"), result.get("se")
    if result.get("verdict") == NOT_COMPUTABLE or diff is None or se is None:
        return None
    if se == 0:
        return 0.0 if abs(diff) < tolerance else 1.0
    lower, upper = (diff + tolerance) / se, (diff - tolerance) / se
    if result.get("df"):  # plain calls: a frozen scipy distribution costs a docstring parse
        return float(max(stats.t.sf(lower, result["df"]), stats.t.cdf(upper, result["df"])))
    return float(max(stats.norm.sf(lower), stats.norm.cdf(upper)))
