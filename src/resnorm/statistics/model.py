"""The study's seed-variance model: one fit over every run of a study, from which each contrast
(a − b, the batch-size interaction) gets its standard error and df, and the family its
correlation, in closed form.

A run r with K_r seeds has the per-seed scores m(r, s) on the whole evaluated set, with

    m(r, s) = μ_r + a_rs + u_rs + c_r

(see `contrasts`): a seed effect a_rs, the seed-by-image luck u_rs, and an image-sample error
c_r common to the run's seeds and correlated across runs (the images are shared). The seeds'
sample variance S_r² (K_r − 1 df) estimates Var(a_rs + u_rs); the image-common part is known
to about N df from the images: its covariance C (runs × runs) is the paired image bootstrap
covariance of the runs' seed means less the seed-by-image part, which the bootstrap measures
too. So, without truncating anything,

    Var(Σ_r w_r m̄_r) = Σ_r w_r² σ̃²_r / K_r + wᵀ C w.

**Moderated seed variance** (empirical Bayes, Smyth 2004, as limma does it for genes): with 3
seeds each S_r² has 2 df, and a t with 2 df makes every interval ±4.3 SE wide. The runs of a
study share one training procedure, so their seed variances are alike but need not be equal:
they are modelled as drawn from a scaled inverse χ² with d0 df around s0², both estimated
from all runs' S_r² (Smyth's moments on log S²), and each run's variance is the posterior

    σ̃²_r = (d0 · s0² + d_r · S_r²) / (d0 + d_r),   d_r = K_r − 1.

A variant that spreads more than the others moves the estimate of d0 down and keeps more of
its own S_r²; where the runs look alike d0 is large and the variances would pool fully. d0 is
capped at `D0_MAX` = 1.5 df (three quarters of a 3-seed run's own): 9 runs of 2 df cannot tell
a variant at 2.5× the seed SD from chance, so Smyth's d0 is nearly always large, and a full
pool would put such a variant's tests at three times their nominal tail. The cap was chosen
by the calibration suite (tests/test_calibration.py) as the largest at which those tests stay
within 2× of nominal (2.0: 2.03×; 1.5: 1.9×) while a 14.8-point gap is still found in over
60 % of the demo's studies (0.68). It is a compromise the data cannot settle: the pool buys
df, the run's own spread buys robustness.

**df.** s0² is the runs' pooled variance Σ_r d_r S_r² / Σ_r d_r (unbiased; limma's mean of
log S² is far noisier with a handful of runs), so a contrast's variance estimate is a sum
c_1 S_1² + ... + c_R S_R² + wᵀ C w of independent parts with K_r − 1 and N − 1 df, and its df
is Welch–Satterthwaite's over them: never more than the Σ_r (K_r − 1) df the seeds have, plus
what the image part adds.

The family's correlation follows from the same fit: Cov(θ̂_j, θ̂_k) = Σ_r w_jr w_kr σ̃²_r/K_r
+ w_jᵀ C w_k. Everything here is numpy on a few small arrays, so a simulation of thousands of
studies runs the very functions the report uses (`moments_from_correct` gives the moments of
accuracy in closed form: the limit of the bootstrap's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import special

__all__ = ["MODEL_NAME", "D0_MAX", "ImageMoments", "SeedModel", "moments_from_replicates",
           "moments_from_correct", "fit_seed_model", "seed_prior", "contrast_arrays",
           "contrast_correlation", "detectable_effect"]

MODEL_NAME = ("moderated seed variance (empirical Bayes across runs, limma-style) with the "
              "paired image variance")
D0_MAX = 1.5          # the prior's df at most (see the notes)
_FLOOR = 1e-5         # S² below this share of the median is floored (limma's offset)


@dataclass(frozen=True)
class ImageMoments:
    """The image side of the model: per run the seed-by-image variance of one seed's score
    (`var_u`, (R,)) and the covariance of the runs' image-common parts (`cov_c`, (R, R)), from
    `n_images` images."""

    var_u: np.ndarray
    cov_c: np.ndarray
    n_images: int


def moments_from_replicates(reps: Sequence[np.ndarray], n_images: int) -> ImageMoments:
    """From paired bootstrap replicates m*(r, s, b) ((K_r, B) per run, the same image
    resamples for every run): Var(u_r) = (mean_s V*(m_rs) − V*(m̄_r)) K/(K − 1), and C the
    covariance of the seed means m̄*_r less Var(u_r)/K_r on the diagonal."""
    means = np.stack([rep.mean(axis=0) for rep in reps])
    var_u = np.array([_var_u(np.var(rep, axis=1, ddof=1).mean(), np.var(rep.mean(axis=0),
                                                                            ddof=1), rep.shape[0])
                      for rep in reps])
    return _moments(np.atleast_2d(np.cov(means)), var_u, np.array([r.shape[0] for r in reps]),
                    n_images)


def moments_from_correct(correct: np.ndarray) -> ImageMoments:
    """The same moments for accuracy in closed form from per-image correctness (R, K, N) (the
    bootstrap's limit: the variance of a mean over N resampled images is the images'
    variance / N)."""
    y = np.asarray(correct, dtype=np.float64)
    r, k, n = y.shape
    ybar = y.mean(axis=1)                              # (R, N): seed mean per image
    centred = ybar - ybar.mean(axis=1, keepdims=True)
    cov = centred @ centred.T / n**2
    v1 = y.var(axis=2).mean(axis=1) / n               # one seed's score, per run
    return _moments(cov, _var_u(v1, np.diag(cov), k), np.full(r, k), n)


def _var_u(v1, vbar, k):
    return (v1 - vbar) * k / (k - 1) if np.all(np.asarray(k) > 1) else np.zeros_like(v1)


def _moments(cov: np.ndarray, var_u: np.ndarray, k: np.ndarray, n: int) -> ImageMoments:
    var_u = np.clip(var_u, 0.0, None)
    # not projected onto the covariances: clipping its noise directions would bias every
    # contrast's image part upwards; a contrast's own image variance is clipped at 0 instead
    return ImageMoments(var_u, cov - np.diag(var_u / k), int(n))


@dataclass(frozen=True)
class SeedModel:
    """A study's fit: per run its mean over seeds, seeds K, raw and moderated seed variance
    with the moderated one's own and prior parts; the prior (s0², d0); the image moments."""

    names: list[str]
    means: np.ndarray
    k: np.ndarray
    s2: np.ndarray
    s2_mod: np.ndarray
    prior_share: np.ndarray   # λ_r: the share of σ̃²_r that is the prior s0²
    s0sq: float
    d0: float
    df_prior: float           # the df s0² rests on: Σ_r (K_r − 1)
    moments: ImageMoments

    @property
    def name(self) -> str:
        return MODEL_NAME

    def index(self, weights: dict[str, float]) -> np.ndarray:
        w = np.zeros(len(self.names))
        for name, wr in weights.items():
            w[self.names.index(name)] += wr
        return w


def seed_prior(s2: np.ndarray, d: np.ndarray, d0_max: float = D0_MAX) -> tuple[float, float]:
    """(s0², d0): Smyth's (2004) moment estimates of the scaled inverse-χ² prior of the seed
    variances `s2` with `d` df each (runs with d = 0 carry no information), d0 capped at
    `d0_max`. With fewer than two informative runs: s0² their pooled variance, d0 = 0."""
    s2, d = np.asarray(s2, dtype=np.float64), np.asarray(d, dtype=np.float64)
    keep = d > 0
    s2, d = s2[keep], d[keep]
    if s2.size == 0:
        return 0.0, 0.0
    pooled = float(np.sum(d * s2) / np.sum(d))
    if s2.size < 2 or pooled <= 0:
        return pooled, 0.0
    s2 = np.maximum(s2, _FLOOR * max(float(np.median(s2)), 1e-300))
    e = np.log(s2) - special.digamma(d / 2) + np.log(d / 2)
    excess = float(np.var(e, ddof=1) - np.mean(special.polygamma(1, d / 2)))
    d0 = 2 * _trigamma_inverse(excess) if excess > 0 else math.inf
    # the prior's centre is the pooled variance (unbiased, χ² with Σ d df when the runs are
    # alike) rather than limma's mean of log S², which with a handful of runs is far noisier
    return pooled, min(d0, d0_max)


def _trigamma_inverse(x: float) -> float:
    """y with trigamma(y) = x (limma's Newton iteration)."""
    if x > 1e7:
        return 1 / math.sqrt(x)
    if x < 1e-6:
        return 1 / x
    y = 0.5 + 1 / x
    for _ in range(50):
        tri = float(special.polygamma(1, y))
        step = tri * (1 - tri / x) / float(special.polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def fit_seed_model(names: Sequence[str], scores: Sequence[np.ndarray], moments: ImageMoments,
                   d0_max: float = D0_MAX) -> SeedModel:
    """Fit the model to per-run seed scores m(r, s) ((K_r,) each) and the image moments."""
    k = np.array([len(m) for m in scores], dtype=np.float64)
    means = np.array([float(np.mean(m)) for m in scores])
    s2 = np.array([float(np.var(m, ddof=1)) if len(m) > 1 else 0.0 for m in scores])
    d = k - 1
    s0sq, d0 = seed_prior(s2, d, d0_max)
    share = np.where(d0 + d > 0, d0 / np.maximum(d0 + d, 1e-300), 1.0)
    s2_mod = share * s0sq + (1 - share) * s2
    return SeedModel(list(names), means, k, s2, s2_mod, share, s0sq, d0, float(d.sum()),
                     moments)


def _parts(model: SeedModel, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coef (J, R), image (J,)): a contrast's variance estimate is Σ_r coef_jr S_r² + image_j
    (s0² is the pooled Σ_r d_r S_r² / Σ_r d_r)."""
    a = w**2 / model.k                                   # (J, R): w_r² / K_r
    d = model.k - 1
    pool = d / max(float(d.sum()), 1.0)
    coef = np.outer(a @ model.prior_share, pool) + a * (1 - model.prior_share)
    image = np.clip(np.einsum("jr,rq,jq->j", w, model.moments.cov_c, w), 0.0, None)
    return coef, image


def contrast_arrays(model: SeedModel, w: np.ndarray) -> dict[str, np.ndarray]:
    """Contrasts θ = W μ (W: (J, R) weights) under the model: estimate, standard error, df
    and the variance's seed and image parts (`seed`, `image`), arrays of J.

    The variance estimate is a sum of the runs' independent S_r² (s0² is their pooled mean)
    and the image part, so its df is Welch–Satterthwaite's over those: S_r² with K_r − 1 df,
    the image part with N − 1, each part's size taken from the moderated variances."""
    w = np.atleast_2d(w)
    coef, image = _parts(model, w)
    d = model.k - 1
    seed = (coef * model.s2).sum(axis=1)
    var = seed + image
    n_df = max(model.moments.n_images - 1, 1)
    # the df from the moderated variances: plugging in the raw S² (2 df each) would bias it
    # low, the more so the noisier they are
    smooth = coef * model.s2_mod
    scale = var / np.maximum(smooth.sum(axis=1) + image, 1e-300)
    denom = ((smooth * scale[:, None])**2 / np.where(d > 0, d, np.inf)).sum(axis=1) \
        + (image * scale)**2 / n_df
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(denom > 0, var**2 / denom, n_df)
    return {"diff": w @ model.means, "se": np.sqrt(np.clip(var, 0, None)),
            "df": np.maximum(df, 1.0), "seed": seed, "image": image}


def contrast_correlation(model: SeedModel, w: np.ndarray) -> np.ndarray:
    """The correlation of the contrasts' estimates W μ̂ under the model (J, J); a contrast of
    zero variance gets correlation 0 with the others."""
    w = np.atleast_2d(w)
    cov = (w * (model.s2_mod / model.k)) @ w.T + w @ model.moments.cov_c @ w.T
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    sd[sd < 1e-12] = np.inf
    corr = cov / np.outer(sd, sd)
    np.fill_diagonal(corr, 1.0)
    return corr


def detectable_effect(se: np.ndarray, df: np.ndarray, p_crit: float,
                      power: float = 0.8) -> np.ndarray:
    """The smallest true difference that a two-sided test at level `p_crit` detects with
    probability `power`: (t_{1 − p_crit/2} + t_power) · se, with the test's df."""
    se, df = np.asarray(se, dtype=np.float64), np.asarray(df, dtype=np.float64)
    # scipy.special's t quantiles (stdtrit: the inverse cdf): the scipy.stats wrappers cost
    # a hundred times more, and the calibration suite calls this for thousands of studies
    return (special.stdtrit(df, 1 - p_crit / 2) + special.stdtrit(df, power)) * se
