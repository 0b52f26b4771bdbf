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
they are modelled as drawn from a scaled inverse χ² with d0 df around s0² (`prior`: s0² the
runs' pooled variance, d0 the data's 95 % lower bound, so that a run that spreads more than
the others keeps its own spread unless the data vouch for pooling it), and each run's
variance is the posterior

    σ̃²_r = (d0 · s0² + d_r · S_r²) / (d0 + d_r),   d_r = K_r − 1.

**Runs kept out of the pool** (`excluded`: name -> why; `comparable` decides, the report
names them): a run at chance level, one trained by a recipe that does not learn, one with a
diverged seed. Their spread says nothing about the others' (a diverged seed's, or a run that
predicts one class, would drag the pool up or down): they keep their own S_r² (prior df 0)
and add nothing to s0².

**df.** a contrast's variance estimate is a sum c_1 S_1² + ... + c_R S_R² + wᵀ C w of
independent parts with K_r − 1 and N − 1 df (s0² is a sum of the pooled runs' S_r²), and its
df is Welch–Satterthwaite's over them: never more than the Σ_r (K_r − 1) df the seeds have,
plus what the image part adds. The family's joint null (`null`) draws the runs' variances from
the prior itself, so the heterogeneity the prior allows is in the family's critical value.

The family's correlation follows from the same fit: Cov(θ̂_j, θ̂_k) = Σ_r w_jr w_kr σ̃²_r/K_r
+ w_jᵀ C w_k. Everything here is numpy on a few small arrays, so a simulation of thousands of
studies runs the very functions the report uses (`moments_from_correct` gives the moments of
accuracy in closed form: the limit of the bootstrap's).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy import special

from resnorm.statistics.prior import seed_prior

__all__ = ["MODEL_NAME", "ImageMoments", "SeedModel", "moments_from_replicates",
           "moments_from_correct", "fit_seed_model", "seed_prior", "contrast_arrays",
           "contrast_correlation", "contrast_parts", "detectable_effect"]

MODEL_NAME = ("moderated seed variance (empirical Bayes across runs, limma-style, the prior's "
              "df the data's 95 % lower bound; runs that are not comparable kept out) with the "
              "paired image variance")


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
    with the moderated one's own and prior parts; the prior (s0², d0); the image moments; the
    runs kept out of the pool (`excluded`, name -> why: own variance, prior df 0)."""

    names: list[str]
    means: np.ndarray
    k: np.ndarray
    s2: np.ndarray
    s2_mod: np.ndarray
    prior_share: np.ndarray   # λ_r: the share of σ̃²_r that is the prior s0²
    s0sq: float
    d0: float
    df_prior: float           # the df s0² rests on: Σ_r (K_r − 1) over the pooled runs
    moments: ImageMoments
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def pooled(self) -> np.ndarray:
        """(R,) bool: the runs whose seed variance is pooled."""
        return np.array([n not in self.excluded for n in self.names])

    @property
    def prior_df(self) -> np.ndarray:
        """(R,) the prior's df each run's variance is moderated with (0: its own alone)."""
        return np.where(self.pooled, self.d0, 0.0)

    @property
    def name(self) -> str:
        return MODEL_NAME

    def index(self, weights: dict[str, float]) -> np.ndarray:
        w = np.zeros(len(self.names))
        for name, wr in weights.items():
            w[self.names.index(name)] += wr
        return w


def fit_seed_model(names: Sequence[str], scores: Sequence[np.ndarray], moments: ImageMoments,
                   excluded: Mapping[str, str] | None = None, *, pool: bool = True) -> SeedModel:
    """Fit the model to per-run seed scores m(r, s) ((K_r,) each) and the image moments. Runs
    in `excluded` (name -> why) keep their own variance; `pool=False` pools none (one unit,
    e.g. the within-seed difference of two runs)."""
    k = np.array([len(m) for m in scores], dtype=np.float64)
    means = np.array([float(np.mean(m)) for m in scores])
    s2 = np.array([float(np.var(m, ddof=1)) if len(m) > 1 else 0.0 for m in scores])
    excluded = {n: why for n, why in (excluded or {}).items() if n in names}
    pooled = np.array([pool and n not in excluded for n in names])
    d = k - 1
    s0sq, d0 = seed_prior(s2[pooled], d[pooled]) if pooled.any() else (0.0, 0.0)
    share = np.where(pooled, _prior_share(d0, d), 0.0)
    s2_mod = share * s0sq + (1 - share) * s2
    return SeedModel(list(names), means, k, s2, s2_mod, share, s0sq, d0,
                     float(d[pooled].sum()), moments, excluded)


def _prior_share(d0: float, d: np.ndarray) -> np.ndarray:
    """d0 / (d0 + d_r): 1 where d0 = ∞ or the run has one seed (d_r = 0)."""
    if not np.isfinite(d0):
        return np.ones_like(d)
    return np.where(d > 0, d0 / np.maximum(d0 + d, 1e-300), 1.0)


def contrast_parts(model: SeedModel, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coef (J, R), image (J,)): a contrast's variance estimate is Σ_r coef_jr S_r² + image_j
    (s0² is the pooled Σ_r d_r S_r² / Σ_r d_r)."""
    a = w**2 / model.k                                   # (J, R): w_r² / K_r
    d = (model.k - 1) * model.pooled
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
    coef, image = contrast_parts(model, w)
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
    """The smallest true difference that a two-sided t test at level `p_crit` with `df` df
    detects with probability `power`, estimated from the test's `se`: the noncentrality at
    which a noncentral t exceeds the critical t that often (the far tail left out: at most
    1e-3 here), times se, over the median of se/σ (√(χ²_df median / df): the estimated se is
    below the true one in more than half the studies, so nc · se alone falls short of the
    power more often than not). The usual (t_{1 − p/2} + t_power) · se is the normal's
    answer and falls shorter still with few df: at it the power was 72 %, not 80 % (issue 39).
    """
    se, df = np.asarray(se, dtype=np.float64), np.asarray(df, dtype=np.float64)
    df = np.where(np.isfinite(df), df, 1e7)
    # scipy.special, not scipy.stats: the calibration suite calls this for thousands of studies
    crit = -special.stdtrit(df, p_crit / 2)  # the lower tail: 1 − p/2 rounds to 1 for tiny p
    median_se = np.sqrt(special.chdtri(df, 0.5) / df)
    # nctdtrinc's search takes seconds to minutes beyond a critical t of ~1e4 (1 df, tiny
    # p): there the normal part of the noncentral t is negligible beside its noncentrality,
    # nc = crit · √(χ²_df quantile at `power` / df) (0.004 % off at crit 637, 1 df)
    far = crit > 100
    nc = np.where(far, crit * np.sqrt(special.chdtri(df, 1 - power) / df),
                  special.nctdtrinc(df, 1 - power, np.where(far, 1.0, crit)))
    return nc * se / median_se
