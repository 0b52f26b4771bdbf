"""A study's contrasts under one model (`model`): fitted once to every run's seeds, then each
contrast a result as `contrasts.contrast` gives it (``diff``, ``ci95``, ``p``, ``verdict``,
``se``, ``df``, ``method``, ...), and the family's correlation from the same fit.

From predictions (the report): `fit_runs` resamples the images once for all runs (the paired
bootstrap of `contrasts`) to measure the image side, and `paired_fit` fits the within-seed
difference of two runs trained with the same seeds (own BN and PyTorch BN with one seed are
nearly the same model: their difference is known far better seed by seed than from two
separate spreads). From per-image correctness (a simulation): `model.moments_from_correct`
and `model.fit_seed_model` give the same fit in closed form; `results` is then shared.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import special

from resnorm.statistics.families import PRIMARY, adjust
from resnorm.statistics.inputs import (checked_indices, normalize_groups,
                                             paired_by_seed, run_scores)
from resnorm.statistics.metrics import DEFAULT_N_BOOT, bootstrap_indices, check_metric
from resnorm.statistics.model import (MODEL_NAME, ImageMoments, SeedModel, contrast_arrays,
                                      fit_seed_model, moments_from_replicates)
from resnorm.statistics.null import N_SIM, null_p_values

__all__ = ["fit_runs", "paired_fit", "fit_paired", "results", "weight_matrix", "adjust_model"]

_ZERO_SD = 1e-12


def _scores(runs: Sequence[Sequence[Any]], metric: str, n_boot: int, rng: Any,
            indices: np.ndarray | None, cache: dict | None):
    labels, preds = normalize_groups(runs)
    if labels.size == 0:
        raise ValueError("no samples: the validation set is empty")
    indices = checked_indices(bootstrap_indices(labels.size, n_boot, rng) if indices is None
                              else indices, labels.size)
    full, reps = run_scores(labels, preds, metric, indices, cache)
    return labels.size, full, reps


def fit_runs(runs: Mapping[str, Sequence[Any]], metric: str = "acc", *,
             n_boot: int = DEFAULT_N_BOOT, rng: np.random.Generator | int | None = 0,
             indices: np.ndarray | None = None, cache: dict | None = None,
             excluded: Mapping[str, str] | None = None) -> SeedModel:
    """The model fitted to `runs` (name -> list of seeds, as for `contrasts.contrast`, all on
    one validation set) on `metric`, the runs in `excluded` (name -> why) kept out of the
    pool. Raises ValueError for runs on other validation sets."""
    check_metric(metric)
    names = list(runs)
    n, full, reps = _scores([runs[name] for name in names], metric, n_boot, rng, indices, cache)
    return fit_seed_model(names, full, moments_from_replicates(reps, n), excluded)


def paired_fit(a: Sequence[Any], b: Sequence[Any], metric: str = "acc", *,
               n_boot: int = DEFAULT_N_BOOT, rng: np.random.Generator | int | None = 0,
               indices: np.ndarray | None = None, cache: dict | None = None
               ) -> SeedModel | None:
    """The model of the one unit D_s = m(a, s) − m(b, s) when `a` and `b` were trained with
    the same K >= 2 seed ids (its own seed variance, K − 1 df, nothing pooled); None when
    they were not."""
    check_metric(metric)
    groups, paired = paired_by_seed([a, b])
    if not paired:
        return None
    n, full, reps = _scores(groups, metric, n_boot, rng, indices, cache)
    return fit_paired(full[0] - full[1], moments_from_replicates([reps[0] - reps[1]], n))


def fit_paired(d: np.ndarray, moments: ImageMoments) -> SeedModel:
    """The one-unit model of per-seed differences `d` (K,) with their image moments."""
    return fit_seed_model(["difference"], [d], moments, pool=False)


def weight_matrix(model: SeedModel, weights: Sequence[Mapping[str, float]]) -> np.ndarray:
    """(J, R): one row per contrast {run: w} over the model's runs."""
    return np.stack([model.index(dict(w)) for w in weights]) if weights else \
        np.zeros((0, len(model.names)))


def results(model: SeedModel, weights: Sequence[Mapping[str, float]], metric: str = "acc",
            labels: Sequence[tuple[str, str]] | None = None) -> list[dict]:
    """Each contrast {run: w} under `model` as a contrast result with a 95 % t interval and
    two-sided p (`labels`: per contrast the verdicts when the interval lies above / below 0;
    default "a higher" / "b higher")."""
    if not weights:
        return []
    w = weight_matrix(model, weights)
    arr = contrast_arrays(model, w)
    diff, se, df = arr["diff"], arr["se"], arr["df"]
    zero = se < _ZERO_SD
    safe = np.where(zero, 1.0, se)
    half = np.where(zero, 0.0, special.stdtrit(df, 0.975) * se)
    p = np.where(zero, (np.abs(diff) < _ZERO_SD).astype(float),
                 2 * special.stdtr(df, -np.abs(diff) / safe))
    out = []
    for j, contrast in enumerate(weights):
        pos, neg = (labels or [])[j] if labels else ("a higher", "b higher")
        lo, hi = float(diff[j] - half[j]), float(diff[j] + half[j])
        verdict = pos if lo > 0 else neg if hi < 0 else "no clear difference"
        seeds = [int(model.k[model.names.index(n)]) for n in contrast]
        out.append({"diff": float(diff[j]), "ci95": [lo, hi], "p": float(p[j]),
                    "se": float(se[j]), "df": float(df[j]), "verdict": verdict,
                    "seeds": seeds, "metric": metric, "n_images": model.moments.n_images,
                    "model": MODEL_NAME, "paired": model.names == ["difference"],
                    "method": _method(model, metric, float(df[j]))})
    return out


def _method(model: SeedModel, metric: str, df: float) -> str:
    if len(model.names) == 1:
        pooled = ("the within-seed difference of two runs trained with the same seeds, its "
                  f"own seed-to-seed variance ({int(model.k[0]) - 1} df)")
    else:
        prior = "∞" if not np.isfinite(model.d0) else f"{model.d0:.1f}"
        pooled = (f"each run's seed-to-seed variance moderated towards the "
                  f"{int(model.pooled.sum())} pooled runs' variance (prior df {prior}, the "
                  f"data's 95 % lower bound, from {model.df_prior:.0f} seed df in all)")
        if model.excluded:
            pooled += "; " + ", ".join(f"{n} ({why})" for n, why in model.excluded.items()) \
                + " kept out of the pool, each with its own variance"
    return (f"{metric}: mean over seeds with a 95 % t interval (df {df:.1f}) from {pooled}, "
            "plus the image-sample variance the runs share (a paired image bootstrap), the "
            "seed-by-image noise counted once.")


def adjust_model(members: list[dict], weights: Sequence[Mapping[str, float]],
                 model: SeedModel | None, alpha: float = 0.05, n_sim: int = N_SIM,
                 rng: np.random.Generator | None = None) -> None:
    """Adjust the primary family in place, jointly under `model`: step-down max-T on the
    tested members' joint null drawn from the model itself (`null`: per statistic, over the
    variance draws the model allows; `n_sim` draws seeded from the study unless `rng` is
    given); Holm where there is no model, fewer than two tests, or a member's runs are not
    in it."""
    tested = [(m, w) for m, w in zip(members, weights) if m.get("p") is not None]
    if (model is None or len(tested) < 2
            or not all(n in model.names for _, w in tested for n in w)):
        adjust(members, PRIMARY, alpha)
        return
    w = weight_matrix(model, [w for _, w in tested])
    df = np.array([m.get("df") or np.inf for m, _ in tested])
    adjust(members, PRIMARY, alpha, null_p=null_p_values(model, w, df, n_sim, rng))
