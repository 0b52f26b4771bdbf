"""A ranking with its uncertainty: how likely each run is to be the best, and its expected rank.

One mean score per run crowns one run, however small its lead. Instead the runs are ranked
on every replicate of a resampling of the study (`resampling`, seed level "t": the images
resampled, paired across runs, and each run's seed-to-seed uncertainty drawn from its t);
Agarwal et al. 2021 report rankings this way, rather than a single "best".

``p_best`` is the share of replicates on which a run scores highest (a tie of t runs gives
each 1/t), ``expected_rank`` its mean rank (1 = best; ties share the mean of their ranks), and
``rank_probabilities`` its chance of each rank 1..R. ``best`` names a run only when its
p_best reaches ``threshold`` (0.9); ``tied`` is the smallest set of runs that holds the best
with probability >= threshold (the single best when there is one). P(best) is not a test: a
run can be likely best and yet not distinguishable from the runner-up by the family's test.

With one seed per run only images are resampled: the ranking is then of the trained models,
not of the training recipes (seed-to-seed variation is not counted).

**The best set** (`best_set`, Hsu's multiple comparisons with the best): a run is left out
only when some other run is above it by the primary family's simultaneous interval of their
difference (its upper end below 0). When every interval of the family holds its true value,
as all do together in about 95 % of studies, no run that is truly best is left out: the set
holds the best with about that probability (tests/test_calibration.py measures it). A pair
without a simultaneous interval (not in the family, not computable) excludes nothing. The
report states the best set; P(best) stays in summary.json only (from each run's own seed t,
it was overconfident at small gaps in simulation: see issue 28).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from resnorm.statistics.metrics import DEFAULT_N_BOOT
from resnorm.statistics.resampling import resample_runs

__all__ = ["BEST_THRESHOLD", "rank_runs", "best_or_tied", "best_set"]

BEST_THRESHOLD = 0.9


def rank_runs(runs: Mapping[str, Sequence[Any]], metric: str = "acc", *,
              n_boot: int = DEFAULT_N_BOOT, rng: np.random.Generator | int | None = 0,
              indices: np.ndarray | None = None, cache: dict | None = None,
              threshold: float = BEST_THRESHOLD) -> dict:
    """Rank `runs` (name -> list of seeds, as for `contrasts.contrast`) on `metric`.

    Returns ``{"metric", "runs" (in the order given), "p_best": {run: p}, "expected_rank":
    {run: r}, "rank_probabilities": {run: [P(rank 1), ..., P(rank R)]}, "best" (a run or
    None), "tied": [runs], "threshold", "n_boot", "method"}``. `indices`,
    `rng`, `cache`: as for `resampling.resample_runs`."""
    if len(runs) < 2:
        raise ValueError(f"a ranking needs two or more runs, got {len(runs)}")
    res = resample_runs(runs, metric, n_boot=n_boot, rng=rng, indices=indices, cache=cache,
                        seed_level="t")
    p_best, expected, rank_p = _rank_summary(res.scores)
    names = res.names
    out = {"metric": metric, "runs": names,
           "p_best": dict(zip(names, p_best.tolist())),
           "expected_rank": dict(zip(names, expected.tolist())),
           "rank_probabilities": {n: row.tolist() for n, row in zip(names, rank_p)},
           "threshold": threshold, "n_boot": res.scores.shape[1]}
    out.update(best_or_tied(out["p_best"], threshold))
    out["method"] = _method(out, res.seeds)
    return out


def _rank_summary(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p_best (R,), expected rank (R,) and P(rank j) (R, R) from replicate scores (R, B);
    ties share their ranks equally."""
    above = (scores[None, :, :] > scores[:, None, :]).sum(axis=1)  # runs scoring higher
    tied = (scores[None, :, :] == scores[:, None, :]).sum(axis=1)   # itself included
    p_best = np.mean((above == 0) / tied, axis=1)
    expected = np.mean(above + (tied + 1) / 2, axis=1)
    ranks = np.arange(1, scores.shape[0] + 1)[None, :, None]        # (1, R, 1)
    holds = (above[:, None, :] < ranks) & (ranks <= (above + tied)[:, None, :])
    rank_p = np.mean(holds / tied[:, None, :], axis=2)
    return p_best, expected, rank_p


def best_or_tied(p_best: Mapping[str, float], threshold: float = BEST_THRESHOLD) -> dict:
    """{"best": the run with p_best >= threshold, else None; "tied": the fewest runs, by
    p_best, that together hold the best with probability >= threshold}."""
    order = sorted(p_best, key=lambda n: -p_best[n])
    tied, total = [], 0.0
    for name in order:
        tied.append(name)
        total += p_best[name]
        if total >= threshold - 1e-9:
            break
    best = order[0] if order and p_best[order[0]] >= threshold - 1e-9 else None
    return {"best": best, "tied": tied}


def _method(out: dict, seeds: list[int]) -> str:
    text = (f"{out['n_boot']} replicates, each resampling the evaluated images (the same "
            "resample for every run)")
    if max(seeds) > 1:
        text += (" and drawing each run's seed-to-seed uncertainty from a t with K − 1 df "
                 "around its mean over seeds (with 3 seeds a bootstrap of seeds would call a "
                 "run ahead on all three certain)")
    else:
        text += "; one seed per run, so a ranking of the trained models"
    return text + "; P(best) is the share of replicates on which a run scores highest."


def best_set(names: Sequence[str], simultaneous: Mapping[tuple[str, str], Sequence[float]]
             ) -> list[str]:
    """The runs of `names` that cannot be excluded from best: `simultaneous` maps (a, b) to
    the simultaneous interval [lo, hi] of a − b (either order; missing pairs exclude
    nothing). Run i is out when some j has the interval of i − j wholly below 0."""
    def below(i: str, j: str) -> bool:
        if (i, j) in simultaneous and simultaneous[(i, j)] is not None:
            return simultaneous[(i, j)][1] < 0
        if (j, i) in simultaneous and simultaneous[(j, i)] is not None:
            return simultaneous[(j, i)][0] > 0
        return False
    return [i for i in names if not any(below(i, j) for j in names if j != i)]
