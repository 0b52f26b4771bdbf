"""The statistics behind a study's verdicts: intervals that count seeds *and* images.

A study trains every run of its plan with K seeds and evaluates each (run, seed) on one fixed
validation set. A score such as "GN beats BN by 1.2 points" then carries two kinds of noise:

- **seeds** (training randomness): another seed gives another model;
- **images**: the N validation images are a sample of the population of images. The same N
  images are shared by every run and seed, so the image noise is *paired* across them.

Pure numpy + scipy.stats (no torch), so the report and any tool can use it cheaply.

Metrics (`METRICS`), for single-label multiclass predictions:

- ``acc``: the fraction of images predicted correctly.
- ``micro_f1``: 2·TP / (2·TP + FP + FN) summed over classes. For single-label predictions every
  error is one FP and one FN, so it equals ``acc``; it is still computed as micro F1.
- ``macro_f1``: the mean of per-class F1 = 2·tp / (2·tp + fp + fn), following torchmetrics'
  ``multiclass_f1_score(average="macro")`` (checked against torchmetrics 1.9 in the tests):
  a class with no true, no predicted sample (tp + fp + fn = 0) is left out of the mean; a class
  that occurs but is never predicted correctly counts as 0. The class count therefore does not
  change the score and need not be given.

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
noise twice, so it is removed once, from the seed part: with V1(r, s) the bootstrap variance
of one m*(r, s) and V̄(r) that of mean_s m*(r, s), mean_s V1(r, s) − V̄(r) = Var(u_r)(K_r − 1)/K_r
gives Var̂(u_r), the seed effect's variance is estimated as σ̂²_r = max(S_r² − Var̂(u_r), 0)
(the usual truncated moment estimator of a variance component), and

    Var(θ̂) = Σ_r w_r² σ̂²_r / K_r + V_img.

The truncation keeps the estimate at least V_img: with 2 or 3 seeds, S_r² is itself very
noisy (2 df for 3 seeds) and can fall below Var̂(u_r) by chance — subtracting the seed-by-image
term from the total instead could then cancel the image noise and give a zero-width interval
for two visibly different sets of predictions. The 95 % CI is θ̂ ± t_df · √Var with
Welch–Satterthwaite df from the parts: each seed term w_r² σ̂²_r/K_r has K_r − 1 df, V_img has
N − 1. The p-value is two-sided
from the same t. A run with one seed has no S_r²: it contributes no seed term (its seed-to-seed
spread is not counted, and the result's ``method`` says so).

**Paired by seed.** When every run of a contrast was trained with the same K ≥ 2 seed ids
(`SeedPredictions.seed`), seed s of each run shares its initialisation draw and data order with
seed s of the others (own BN and PyTorch BN with one seed are nearly the same model). The
contrast is then taken within each seed, D_s = Σ_r w_r m(r, s), and the formula above is
applied to the one "run" D: its seed term is max(S²_D − Var̂(u_D), 0)/K with K − 1 df, and the
image term the bootstrap variance of mean_s D*_s. Seeds are independent blocks, so this is valid
whether or not the runs' seed effects are correlated, and much tighter when they are.

**All runs with one seed.** Nothing measures seed noise, so the target becomes the difference
*conditional on the trained models* (their expected metric over the image population). The CI
is the percentile interval of the paired image bootstrap; the p-value inverts it
(2·min(P*(θ* ≤ 0), P*(θ* ≥ 0)), with the usual +1 correction), except for a two-run accuracy
(or micro F1) difference, where it is McNemar's exact test on the discordant images. The
verdict always comes from the CI, so at the margin McNemar's p may disagree with it.

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

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats

__all__ = [
    "METRICS",
    "t_interval",
    "SeedPredictions",
    "metric_value",
    "bootstrap_indices",
    "metric_replicates",
    "contrast",
    "compare",
    "interaction",
    "summarize",
    "equivalence",
]

METRICS = ("acc", "micro_f1", "macro_f1")
NOT_COMPUTABLE = "not computable"
DEFAULT_N_BOOT = 2000
_ZERO_SD = 1e-12       # a standard error below this is zero (floating-point residue)
_ZERO_DIFF = 1e-12     # a contrast estimate below this in size is zero
_CHUNK_CELLS = 1 << 22  # bincount cells per chunk of replicates (bounds memory for many classes)


@dataclass(frozen=True)
class SeedPredictions:
    """One (run, seed)'s best-checkpoint predictions on the shared validation set."""

    seed: int | None
    labels: np.ndarray
    preds: np.ndarray


# --- metrics --------------------------------------------------------------------------------

def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")


def _scores(metric: str, n: int, tp: np.ndarray, n_true: np.ndarray | None = None,
            n_pred: np.ndarray | None = None) -> np.ndarray:
    """Scores from counts. `tp` is (B,) total correct for acc/micro, else (B, C) per class with
    `n_true`/`n_pred` (B, C) class counts among the true labels / predictions."""
    if metric == "acc":
        return tp / n
    if metric == "micro_f1":
        fp = fn = n - tp  # every error is one false positive and one false negative
        return 2 * tp / (2 * tp + fp + fn)
    denom = n_true + n_pred  # = 2tp + fp + fn per class
    present = denom > 0      # torchmetrics leaves out classes with tp + fp + fn = 0
    f1 = np.divide(2 * tp, denom, out=np.zeros(denom.shape), where=present)
    return f1.sum(axis=-1) / present.sum(axis=-1)


def _replicates(labels: np.ndarray, preds: np.ndarray, metric: str, indices: np.ndarray,
                num_classes: int) -> np.ndarray:
    """The metric on every row of `indices` (B, N) -> (B,) float64."""
    n_boot, n = indices.shape
    if metric in ("acc", "micro_f1"):
        correct = labels == preds
        # the count of correct images in each replicate (chunks bound the temporaries)
        rows = max(1, _CHUNK_CELLS // max(n, 1))
        tp = np.concatenate([np.count_nonzero(correct[indices[i:i + rows]], axis=1)
                             for i in range(0, n_boot, rows)]).astype(np.float64)
        return _scores(metric, n, tp)
    c = num_classes
    codes = labels.astype(np.int64) * c + preds.astype(np.int64)  # row = true, column = pred
    rows = max(1, _CHUNK_CELLS // (c * c))
    out = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        block = indices[start:start + rows]
        b = block.shape[0]
        cells = codes[block] + (np.arange(b, dtype=np.int64) * (c * c))[:, None]
        conf = np.bincount(cells.ravel(), minlength=b * c * c).reshape(b, c, c)
        tp = np.diagonal(conf, axis1=1, axis2=2)
        out[start:start + b] = _scores(metric, n, tp, conf.sum(axis=2), conf.sum(axis=1))
    return out


def _num_classes(*arrays: np.ndarray) -> int:
    return int(max((a.max() for a in arrays if a.size), default=0)) + 1


def _as_label_array(a: Any, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of class indices, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.mod(a, 1) == 0):
            raise ValueError(f"{what} must hold integer class indices")
        a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{what} holds a negative class index")
    return a.astype(np.int64, copy=False)


def metric_value(labels: Any, preds: Any, metric: str = "acc") -> float:
    """`metric` ("acc", "micro_f1", "macro_f1") of one set of predictions. Empty: ValueError."""
    _check_metric(metric)
    labels, preds = _as_label_array(labels, "labels"), _as_label_array(preds, "preds")
    if labels.shape != preds.shape:
        raise ValueError(f"labels ({labels.size}) and preds ({preds.size}) differ in length")
    if labels.size == 0:
        raise ValueError("no samples: a metric of an empty set is not defined")
    full = np.arange(labels.size)[None, :]
    return float(_replicates(labels, preds, metric, full, _num_classes(labels, preds))[0])


def bootstrap_indices(n: int, n_boot: int = DEFAULT_N_BOOT,
                      rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """(n_boot, n) image indices drawn with replacement: one resample of the validation set per
    row. Use the same array for every run and seed (paired bootstrap)."""
    if n < 0 or n_boot < 1:
        raise ValueError(f"need n >= 0 and n_boot >= 1, got n={n}, n_boot={n_boot}")
    rng = np.random.default_rng(rng)
    dtype = np.int32 if n < 2**31 else np.int64
    return rng.integers(0, max(n, 1), size=(n_boot, n), dtype=dtype)


def metric_replicates(labels: Any, preds: Any, metric: str, indices: np.ndarray,
                      num_classes: int | None = None) -> np.ndarray:
    """`metric` of (labels, preds) on every bootstrap replicate in `indices` -> (n_boot,).

    Confusion counts per replicate come from one np.bincount of label·C + pred offset by the
    replicate number (in chunks, so memory stays bounded for many classes); accuracy and micro
    F1 need only the count of correct images."""
    _check_metric(metric)
    labels, preds = _as_label_array(labels, "labels"), _as_label_array(preds, "preds")
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] != labels.size or labels.size != preds.size:
        raise ValueError(f"indices of shape {indices.shape} do not fit {labels.size} labels and "
                         f"{preds.size} preds")
    if labels.size == 0:
        raise ValueError("no samples: a metric of an empty set is not defined")
    c = num_classes if num_classes is not None else _num_classes(labels, preds)
    return _replicates(labels, preds, metric, indices, c)


# --- inputs ---------------------------------------------------------------------------------

def _seed_arrays(seed: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(seed, SeedPredictions):
        lab, pred = seed.labels, seed.preds
    elif isinstance(seed, np.ndarray):
        raise TypeError(f"{where} is an array: a run is a list of seeds, each a (labels, preds) "
                        "pair or a SeedPredictions (wrap a single seed as [(labels, preds)])")
    else:
        try:
            lab, pred = seed
        except (TypeError, ValueError):
            raise TypeError(f"{where} must be a (labels, preds) pair or a SeedPredictions, "
                            f"got {type(seed).__name__}") from None
    lab, pred = _as_label_array(lab, f"{where} labels"), _as_label_array(pred, f"{where} preds")
    if lab.shape != pred.shape:
        raise ValueError(f"{where}: labels ({lab.size}) and preds ({pred.size}) differ in length")
    return lab, pred


def _normalize_groups(groups: Sequence[Sequence[Any]]
                      ) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """(labels, [[preds per seed] per run]) after checking every seed shares one val set."""
    if isinstance(groups, np.ndarray) or len(groups) == 0:
        raise ValueError("a contrast needs at least one run (a list of seeds)")
    labels: np.ndarray | None = None
    runs: list[list[np.ndarray]] = []
    for r, group in enumerate(groups):
        if isinstance(group, (SeedPredictions, np.ndarray)):
            raise TypeError(f"run {r} must be a list of seeds, got a single "
                            f"{type(group).__name__} (wrap it as [seed])")
        seeds = list(group)
        if not seeds:
            raise ValueError(f"run {r} has no seeds")
        run = []
        for s, seed in enumerate(seeds):
            lab, pred = _seed_arrays(seed, f"run {r} seed {s}")
            if labels is None:
                labels = lab
            elif lab.size != labels.size:
                raise ValueError(
                    f"run {r} seed {s} was evaluated on {lab.size} validation images, run 0 "
                    f"seed 0 on {labels.size}: all runs must share one validation set")
            elif not np.array_equal(lab, labels):
                raise ValueError(f"run {r} seed {s} has other validation labels than run 0 "
                                 "seed 0: all runs must share one validation set, in one order")
            run.append(pred)
        runs.append(run)
    return labels, runs


def _paired_by_seed(groups: Sequence[Sequence[Any]]) -> tuple[Sequence[Sequence[Any]], bool]:
    """The groups in seed order, and whether they pair by seed: two or more runs, each with
    the same K >= 2 distinct seed ids (SeedPredictions.seed), so seed s of every run shares
    its initialisation draw and data order with seed s of the others."""
    if isinstance(groups, np.ndarray) or len(groups) < 2:
        return groups, False
    ids = []
    for group in groups:
        if isinstance(group, (SeedPredictions, np.ndarray)):
            return groups, False
        seeds = [getattr(s, "seed", None) for s in group]
        if len(seeds) < 2 or None in seeds or len(set(seeds)) != len(seeds):
            return groups, False
        ids.append(seeds)
    if any(sorted(i) != sorted(ids[0]) for i in ids):
        return groups, False
    return [sorted(group, key=lambda s: s.seed) for group in groups], True


def _key(labels: np.ndarray, preds: np.ndarray, metric: str, indices: np.ndarray) -> tuple:
    h = hashlib.blake2b(labels.tobytes(), digest_size=16)
    h.update(preds.tobytes())
    return (metric, h.hexdigest(), id(indices), indices.shape)


# --- contrasts ------------------------------------------------------------------------------

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
    "se", "df", "means" (per run, over seeds), "n_images", "n_boot"}`` (``se``/``df`` None for
    the percentile interval), or a "not computable" result (see the module notes) for an empty validation set.
    """
    _check_metric(metric)
    groups, paired = _paired_by_seed(groups)
    labels, runs = _normalize_groups(groups)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(runs),):
        raise ValueError(f"{len(runs)} runs but {w.size} weights")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite")
    seeds = [len(run) for run in runs]
    n = labels.size
    if n == 0:
        return _not_computable("the validation set is empty", seeds, metric, n_images=0)

    if indices is None:
        indices = bootstrap_indices(n, n_boot, rng)
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] != n or indices.shape[0] < 2:
        raise ValueError(f"bootstrap indices of shape {indices.shape} do not fit {n} images "
                         "(need (n_boot >= 2, N))")
    n_boot = indices.shape[0]
    c = _num_classes(labels, *(p for run in runs for p in run))
    full_idx = np.arange(n)[None, :]

    # m(r, s) on the full set and m*(r, s) on every replicate
    full: list[list[float]] = []
    reps: list[np.ndarray] = []  # per run: (K_r, n_boot)
    for run in runs:
        full.append([float(_replicates(labels, p, metric, full_idx, c)[0]) for p in run])
        rows = []
        for p in run:
            key = _key(labels, p, metric, indices) if cache is not None else None
            if key is not None and key in cache:
                rows.append(cache[key][1])
                continue
            rep = _replicates(labels, p, metric, indices, c)
            if key is not None:
                cache[key] = (indices, rep)  # keep `indices` alive: its id is in the key
            rows.append(rep)
        reps.append(np.stack(rows))

    means = [math.fsum(m) / len(m) for m in full]  # order-free: permuted seeds, same mean
    diff = math.fsum(wr * mr for wr, mr in zip(w, means))
    if abs(diff) < _ZERO_DIFF:
        diff = 0.0
    t_star = sum(wr * rep.mean(axis=0) for wr, rep in zip(w, reps))  # paired: same rows
    one_seed = [r for r, k in enumerate(seeds) if k == 1]
    base = {"diff": diff, "seeds": seeds, "means": means, "metric": metric, "n_images": n,
            "n_boot": n_boot}

    if len(one_seed) == len(runs):
        return _percentile_result(base, t_star, runs, labels, w, metric, n_boot,
                                  labels_pos, labels_neg)

    if paired:  # one unit per seed: the contrast within the seed, D_s = Σ_r w_r m(r, s)
        units = [(1.0, len(full[0]), np.einsum("r,rs->s", w, np.asarray(full)),
                  np.einsum("r,rsb->sb", w, np.stack(reps)))]
    else:
        units = list(zip(w, seeds, (np.asarray(m) for m in full), reps))
    seed_parts = []  # (variance term, the S² term it is estimated from, df) per unit, K >= 2
    for wr, k, m, rep in units:
        if k < 2:
            continue
        v1 = float(np.mean(np.var(rep, axis=1, ddof=1)))
        vbar = float(np.var(rep.mean(axis=0), ddof=1))
        var_u = (v1 - vbar) * k / (k - 1)  # the seed-by-image noise of one seed
        s2 = float(np.var(m, ddof=1))
        seed_parts.append((wr**2 * max(s2 - var_u, 0.0) / k, wr**2 * s2 / k, k - 1))
    image_part = float(np.var(t_star, ddof=1))
    var = sum(v for v, _, _ in seed_parts) + image_part
    se = math.sqrt(var)
    # df: each seed term is as uncertain as the S² it comes from (K_r − 1 df)
    denom = sum(s2k**2 / d for _, s2k, d in seed_parts) + image_part**2 / max(n - 1, 1)
    df = var ** 2 / denom if denom > 0 else float(n - 1)
    df = max(float(df), 1.0)

    method = (f"{metric}: mean over seeds with a 95 % t interval (Welch–Satterthwaite df "
              f"{df:.1f}) from the seed variance plus a paired image bootstrap ({n_boot} "
              "replicates), the seed-by-image noise counted once")
    if paired:
        method += ("; paired by seed (every run was trained with the same seeds, so the "
                   "contrast is taken within each seed)")
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
            "verdict": _verdict(lo, hi, labels_pos, labels_neg), "method": method + "."}


def _percentile_result(base: dict, t_star: np.ndarray, runs: list[list[np.ndarray]],
                       labels: np.ndarray, w: np.ndarray, metric: str, n_boot: int,
                       pos: str, neg: str) -> dict:
    """Every run has one seed: paired image bootstrap percentile CI (conditional on the
    trained models); p from McNemar for a two-run accuracy difference."""
    diff = base["diff"]
    method = (f"{metric}: paired image bootstrap percentile interval ({n_boot} replicates), "
              "one seed per run, so conditional on the trained models (seed-to-seed variation "
              "not counted)")
    if float(np.ptp(t_star)) < _ZERO_SD:
        lo = hi = diff
        p = 1.0 if diff == 0 else 0.0
        method += "; zero variance: the interval is the estimate itself"
    else:
        lo, hi = (float(q) for q in np.quantile(t_star, [0.025, 0.975]))
        below, above = int(np.sum(t_star <= 0)), int(np.sum(t_star >= 0))
        p = min(1.0, 2 * (min(below, above) + 1) / (n_boot + 1))
        mcnemar = (metric in ("acc", "micro_f1") and len(runs) == 2
                   and np.allclose(sorted(w), [-1.0, 1.0]))
        if mcnemar:
            a, b = (runs[0][0], runs[1][0]) if w[0] > 0 else (runs[1][0], runs[0][0])
            ca, cb = a == labels, b == labels
            only_a, only_b = int(np.sum(ca & ~cb)), int(np.sum(cb & ~ca))
            p = (float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
                 if only_a + only_b else 1.0)
            method += (f"; p from McNemar's exact test on the {only_a + only_b} discordant "
                       "images")
        else:
            method += "; p from inverting the bootstrap percentile interval"
    return {**base, "ci95": [lo, hi], "p": p, "se": None, "df": None,
            "verdict": _verdict(lo, hi, pos, neg), "method": method + "."}


def compare(a: Sequence[Any], b: Sequence[Any], metric: str = "acc", **kwargs) -> dict:
    """Run a minus run b (weights +1, −1): verdict "a higher", "b higher" or
    "no clear difference" (the CI holds 0). Keyword arguments go to `contrast`."""
    return contrast([a, b], [1.0, -1.0], metric, labels_pos="a higher", labels_neg="b higher",
                    **kwargs)


def interaction(gn_small: Sequence[Any], gn_large: Sequence[Any], bn_small: Sequence[Any],
                bn_large: Sequence[Any], metric: str = "acc", **kwargs) -> dict:
    """Does batch size matter less for GN than for BN?

    Sensitivity of a norm to the batch size is defined, signed, as
    ``metric(large batch) − metric(small batch)``: what moving to the small batch costs
    (negative when the small batch does better). The contrast is

        diff = (gn_small − gn_large) − (bn_small − bn_large) = sens_BN − sens_GN,

    so a positive value means GN loses less (or gains more) than BN by going to the small
    batch. Verdict: "GN less sensitive" when the CI lies above 0, "BN less sensitive" below 0,
    "no clear difference" when it holds 0. Being a signed statement, it stays well defined
    when both norms drop or both rise: "less sensitive" always means "the small batch costs it
    less". The result adds ``sensitivity``: {"gn": ..., "bn": ...} point estimates.
    """
    res = contrast([gn_small, gn_large, bn_small, bn_large], [1.0, -1.0, -1.0, 1.0], metric,
                   labels_pos="GN less sensitive", labels_neg="BN less sensitive", **kwargs)
    if res["verdict"] != NOT_COMPUTABLE:
        gs, gl, bs, bl = res["means"]
        res["sensitivity"] = {"gn": gl - gs, "bn": bl - bs}
        res["method"] = ("Interaction (gn_small − gn_large) − (bn_small − bn_large) = "
                         "sensitivity_BN − sensitivity_GN, sensitivity = large − small batch "
                         "(positive: GN is hurt less by the small batch); " + res["method"])
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
        out["std"] = float(np.std([metric_value(*_seed_arrays(s, "seed"), metric)
                                   for s in group], ddof=1))
    return out


def equivalence(result: dict, tolerance: float) -> str:
    """TOST-style reading of a contrast's 95 % CI against ±`tolerance`: "equivalent" when the
    CI lies inside [−tol, +tol], "not equivalent" when it lies wholly above +tol or wholly
    below −tol, "inconclusive" otherwise; "not computable" for a not-computable result."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    ci = result.get("ci95")
    if result.get("verdict") == NOT_COMPUTABLE or ci is None:
        return NOT_COMPUTABLE
    lo, hi = ci
    if -tolerance <= lo and hi <= tolerance:
        return "equivalent"
    if lo > tolerance or hi < -tolerance:
        return "not equivalent"
    return "inconclusive"



def t_interval(values: Sequence[float]) -> tuple[float, float, float] | None:
    """(mean, lo, hi): the mean of `values` (one score over seeds, or over maps) with its 95 %
    Student t interval; None for fewer than two finite values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size < 2:
        return None
    mean = float(x.mean())
    half = float(stats.t.ppf(0.975, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half
