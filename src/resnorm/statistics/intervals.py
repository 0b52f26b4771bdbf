"""Intervals of plain samples (no images to bootstrap): a mean over seeds or over maps, a share
of hits, a difference of two means. The report prints these beside the contrasts' intervals."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

__all__ = ["t_interval", "wilson_interval", "welch_difference"]


def _finite(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and math.isfinite(v)],
                      dtype=np.float64)


def t_interval(values: Sequence[float | None]) -> tuple[float, float, float] | None:
    """(mean, lo, hi): the mean of `values` (one score over seeds, or over maps) with its 95 %
    Student t interval; None for fewer than two finite values."""
    x = _finite(values)
    if x.size < 2:
        return None
    mean = float(x.mean())
    half = float(stats.t.ppf(0.975, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


def wilson_interval(hits: int, total: int) -> tuple[float, float, float] | None:
    """(share, lo, hi): hits / total with its Wilson 95 % interval (good near 0 and 1 and for
    few trials, where the normal interval is not); None for no trials."""
    if not total:
        return None
    ci = stats.binomtest(int(hits), int(total)).proportion_ci(0.95, method="wilson")
    return hits / total, float(ci.low), float(ci.high)


def welch_difference(a: Sequence[float | None], b: Sequence[float | None]
                     ) -> tuple[float, float, float] | None:
    """(mean(a) − mean(b), lo, hi) with Welch's 95 % interval (unequal variances); None with
    fewer than two finite values on either side."""
    x, y = _finite(a), _finite(b)
    if x.size < 2 or y.size < 2:
        return None
    ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
    return float(x.mean() - y.mean()), float(ci.low), float(ci.high)
