"""Resampling a study's runs together, for what depends on all of them at once (how the
family's tests move together; which run is best). Each replicate resamples the validation
images once, the same for every run and seed (paired, as in `contrasts`), and then the seed
level in one of two ways:

- ``"bootstrap"`` (the two-level bootstrap): each run's K seeds are drawn with replacement.
  Runs trained with the same seed ids are paired by seed (seed s of every run shares its
  initialisation draw and data order), so they draw the *same* seed positions; otherwise
  each run draws its own. A run's score is the mean of its drawn seeds on the resampled
  images. Its spread is right to about (K − 1)/K, which is enough for how tests *correlate*.
- ``"t"``: a run's score is the mean of all its seeds on the resampled images plus a draw
  of its seed-to-seed uncertainty, σ̂/√K times a t with K − 1 df, σ̂² the seed effect's
  variance as the contrasts estimate it (the seed-by-image noise counted once). With 3 seeds
  a seed bootstrap is too coarse for *how likely* a run is to lead: a run ahead on all three
  seeds is ahead in every resample, P = 1.00; the t (the posterior of a mean with unknown
  variance) keeps the uncertainty that three seeds leave. The draws are independent across
  runs: when seed effects are shared (paired seeds) this overstates the noise of a
  difference, erring towards "tied".

With one seed per run only the images are resampled: scores are those of the trained models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from resnorm.statistics.contrasts import seed_variance
from resnorm.statistics.inputs import (checked_indices, normalize_groups,
                                             paired_by_seed, run_scores)
from resnorm.statistics.metrics import DEFAULT_N_BOOT, bootstrap_indices, check_metric

__all__ = ["Resample", "resample_runs", "SEED_LEVELS"]

SEED_LEVELS = ("bootstrap", "t")
_DECIMALS = 12  # scores equal to this many decimals tie (a mean of counts, summed in any order)


@dataclass(frozen=True)
class Resample:
    """Replicate scores of named runs: `scores[r, b]` is run `names[r]` on replicate b."""

    names: list[str]
    scores: np.ndarray
    seeds: list[int]
    paired_by_seed: bool  # the seed draws were shared by every run
    seed_level: str


def resample_runs(runs: Mapping[str, Sequence[Any]], metric: str = "acc", *,
                  n_boot: int = DEFAULT_N_BOOT, rng: np.random.Generator | int | None = 0,
                  indices: np.ndarray | None = None, cache: dict | None = None,
                  seed_level: str = "bootstrap") -> Resample:
    """Replicate scores of `runs` (name -> list of seeds, as for `contrasts.contrast`) on
    `metric`, the seed level by `seed_level` (see the module notes). `indices`: image
    resamples shared with the contrasts (else drawn from `rng`); the seed draws come from
    `rng` too, so the result is reproducible."""
    check_metric(metric)
    if seed_level not in SEED_LEVELS:
        raise ValueError(f"seed_level must be one of {', '.join(SEED_LEVELS)}, got {seed_level!r}")
    names = list(runs)
    groups, paired = paired_by_seed([runs[name] for name in names])
    labels, preds = normalize_groups(groups)
    if labels.size == 0:
        raise ValueError("no samples: the validation set is empty")
    gen = np.random.default_rng(rng)
    indices = checked_indices(bootstrap_indices(labels.size, n_boot, gen) if indices is None
                              else indices, labels.size)
    full, reps = run_scores(labels, preds, metric, indices, cache)
    seeds = [len(p) for p in preds]
    if seed_level == "t":
        scores, paired = _t_scores(full, reps, gen), False
    else:
        scores = _bootstrap_scores(reps, _seed_draws(seeds, paired, indices.shape[0], gen))
    return Resample(names, np.round(scores, _DECIMALS), seeds, paired, seed_level)


def _seed_draws(seeds: list[int], paired: bool, n_boot: int,
                gen: np.random.Generator) -> list[np.ndarray]:
    """Per run, (B, K_r) seed positions drawn with replacement; the same draw for every run
    when they pair by seed."""
    if paired:
        shared = gen.integers(0, seeds[0], size=(n_boot, seeds[0]))
        return [shared] * len(seeds)
    return [gen.integers(0, k, size=(n_boot, k)) for k in seeds]


def _bootstrap_scores(reps: list[np.ndarray], draws: list[np.ndarray]) -> np.ndarray:
    """(R, B): run r's score on replicate b = the mean over its drawn seeds of m*(r, s, b)."""
    out = []
    for rep, draw in zip(reps, draws):  # rep (K, B), draw (B, K)
        out.append(rep[draw, np.arange(rep.shape[1])[:, None]].mean(axis=1))
    return np.stack(out)


def _t_scores(full: list[np.ndarray], reps: list[np.ndarray],
              gen: np.random.Generator) -> np.ndarray:
    """(R, B): the mean over all seeds on each image resample, plus σ̂/√K · t_{K−1}."""
    out = []
    for m, rep in zip(full, reps):  # m (K,), rep (K, B)
        score = rep.mean(axis=0)
        k = m.size
        if k >= 2:
            sigma2, _ = seed_variance(m, rep)
            score = score + math.sqrt(sigma2 / k) * gen.standard_t(k - 1, size=score.size)
        out.append(score)
    return np.stack(out)
