"""The prior of the runs' seed variances: how far one run's seed variance may be pooled with
the others', estimated from the study's own runs.

Each pooled run r has K_r seeds and their sample variance S_r² with d_r = K_r − 1 df. The
runs' true variances σ_r² are modelled as drawn from a scaled inverse χ² with d0 df around
s0² (Smyth 2004, limma), so that S_r²/s0² ~ F(d_r, d0): d0 = ∞ says the runs spread alike
(pool fully), d0 → 0 that each run spreads its own way (pool nothing).

**d0 is the data's 95 % lower bound, not its point estimate.** With a handful of runs of 2 df
each the point estimate (Smyth's moments, or the maximum likelihood) is ∞ in most studies,
also in those where one variant truly spreads four times more than the others: nine runs
cannot tell (tests/test_calibration.py measures it: pooled at the point estimate, that
variant's tests rejected 15–25 times as often as stated). So the prior counts only as many df
as the data vouch for: the smallest d0 whose profile likelihood (s0² profiled out) is within
χ²₁(0.90)/2 = 1.35 of the maximum, the one-sided 95 % bound of the likelihood-ratio interval.
Like limma's `robust=TRUE` (Phipson et al. 2016), this protects the tests of a run that
spreads more than the rest; unlike a fixed cap it adapts: more runs or more seeds, whose
spreads agree, vouch for more pooling. s0² is the pooled variance Σ d_r S_r² / Σ d_r
(unbiased, and far less noisy than limma's mean of log S² with a handful of runs).
"""
from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["seed_prior", "prior_df_bound", "LR_DROP"]

LR_DROP = 1.3527           # χ²₁(0.90)/2: the one-sided 95 % likelihood-ratio bound
_FLOOR = 1e-5              # S² below this share of the median is floored (limma's offset)
_D0_GRID = np.geomspace(0.02, 2000.0, 64)   # about 20 % apart; above it: ∞
_SCALE_GRID = np.geomspace(1 / 16, 16, 41)  # s0² profiled around the pooled variance


def seed_prior(s2: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """(s0², d0): the pooled variance of `s2` (d df each; runs with d = 0 carry nothing) and the
    prior's df, the data's 95 % lower bound (`prior_df_bound`). Fewer than two informative
    runs: (their pooled variance, 0)."""
    s2, d = np.asarray(s2, dtype=np.float64), np.asarray(d, dtype=np.float64)
    keep = d > 0
    s2, d = s2[keep], d[keep]
    if s2.size == 0:
        return 0.0, 0.0
    pooled = float(np.sum(d * s2) / np.sum(d))
    if s2.size < 2 or pooled <= 0:
        return pooled, 0.0
    return pooled, prior_df_bound(s2, d, pooled)


def prior_df_bound(s2: np.ndarray, d: np.ndarray, pooled: float) -> float:
    """The smallest d0 whose profile log likelihood is within `LR_DROP` of the largest (over
    d0 on a grid and ∞), interpolated on log d0; 0 where even the grid's smallest d0 is."""
    s2 = np.maximum(s2, _FLOOR * max(float(np.median(s2)), 1e-300))
    x = s2[None, :] / (pooled * _SCALE_GRID[:, None])            # (H, R): S²/s0²
    log_scale = np.log(pooled * _SCALE_GRID)[:, None]
    finite = _f_loglik(x[None], d, _D0_GRID[:, None, None]).sum(axis=2) \
        - d.size * log_scale.T                                    # (G, H)
    profile = finite.max(axis=1)
    infinite = float((_chi2_loglik(x, d).sum(axis=1) - d.size * log_scale[:, 0]).max())
    threshold = max(float(profile.max()), infinite) - LR_DROP
    above = np.flatnonzero(profile >= threshold)
    if above.size == 0:
        return float("inf")
    i = int(above[0])
    if i == 0:
        return 0.0
    lo, hi = profile[i - 1], profile[i]
    t = (threshold - lo) / (hi - lo) if hi > lo else 1.0
    return float(np.exp(np.log(_D0_GRID[i - 1]) + t * np.log(_D0_GRID[i] / _D0_GRID[i - 1])))


def _f_loglik(x: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """log density of F(d1, d2) at x (gammaln form: scipy.stats costs a hundred times more)."""
    return (0.5 * d1 * np.log(d1 / d2) + (0.5 * d1 - 1) * np.log(x)
            - 0.5 * (d1 + d2) * np.log1p(d1 * x / d2) - special.betaln(0.5 * d1, 0.5 * d2))


def _chi2_loglik(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """log density of χ²_d / d at x (the F's limit as d2 → ∞)."""
    return (0.5 * d * np.log(0.5 * d) + (0.5 * d - 1) * np.log(x) - 0.5 * d * x
            - special.gammaln(0.5 * d))
