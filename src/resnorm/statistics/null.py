"""The family's joint null, drawn from the seed-variance model itself (`model`): what the
contrasts' t statistics look like together when no run differs, for step-down max-T
(`families.max_t_null`).

Each draw makes one study under the model and puts it through the model's own estimator:

- each pooled run's true seed variance σ*_r² from the prior (a scaled inverse χ² with d0 df
  around s0²; equal to s0² when d0 = ∞); a run kept out of the pool, or every run when the
  data vouch for no pooling (d0 = 0), at its own S_r²;
- the contrasts' estimates θ* = W m̄*, m̄*_r = σ*_r/√K_r · z_r plus the image-common part
  (normal with the model's image covariance, shared by the runs: the images are paired);
- each run's seed variance S*_r² = σ*_r² χ²_{K_r − 1}/(K_r − 1), the image part's estimate with
  its N − 1 df, and each contrast's standard error from them with the model's own pooling
  weights, so that two contrasts sharing a run share its S*_r²;
- T*_j = θ*_j / se*_j, and its p on the t with the contrast's df (as the observed p is).

So the null carries, per statistic, the variance draws the model allows: a variant whose
spread the prior lets differ makes its tests' null wider. (One shared χ² for all statistics,
as before, is the model only when every run spreads alike.) The draws are seeded from the
study (`study_rng`): the same study gives the same adjusted p, another study fresh draws.
"""
from __future__ import annotations

import hashlib

import numpy as np
from scipy import special

from resnorm.statistics.model import SeedModel, contrast_parts

__all__ = ["null_p_values", "null_statistics", "study_rng", "p_from_t"]

N_SIM = 20000  # null draws: an adjusted p near 0.05 is known to about ± 0.0015


def study_rng(model: SeedModel, salt: str = "") -> np.random.Generator:
    """A generator seeded from the study's fit (names, seeds' means and variances, images):
    reproducible for one study, fresh for another."""
    h = hashlib.blake2b(salt.encode(), digest_size=8)
    h.update("\0".join(model.names).encode())
    for arr in (model.means, model.s2, model.k, model.moments.cov_c, model.moments.var_u):
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    h.update(str(model.moments.n_images).encode())
    return np.random.default_rng(int.from_bytes(h.digest(), "little"))


def null_statistics(model: SeedModel, w: np.ndarray, n_sim: int = N_SIM,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """|T*| (J, n_sim): the contrasts W (J, R) under H0, drawn from the model (see the notes).
    float32: the last digits of a few dozen statistics' draws do not matter."""
    rng = study_rng(model) if rng is None else rng
    w = np.atleast_2d(w).astype(np.float32)
    r = len(model.names)
    sigma2 = _variance_draws(model, n_sim, rng)                         # (R, S)
    z = rng.standard_normal((2 * r, n_sim), dtype=np.float32)
    seeds = np.sqrt(sigma2 / model.k[:, None].astype(np.float32)) * z[:r]
    # einsum, not BLAS: on a busy machine BLAS threads wait on each other for these small
    # products (ten times slower)
    theta = np.einsum("jr,rs->js", w, seeds + np.einsum("rq,qs->rs", _image_root(model), z[r:]))
    s2 = sigma2 * _chi2_over_df(model.k - 1, n_sim, rng)
    coef, image = contrast_parts(model, w)
    n_df = max(model.moments.n_images - 1, 1)
    var = np.einsum("jr,rs->js", coef.astype(np.float32), s2)
    var += image.astype(np.float32)[:, None] * _chi2_over_df(np.array([n_df]), n_sim, rng)
    return np.abs(theta) / np.sqrt(np.maximum(var, 1e-30))


def _chi2_over_df(d: np.ndarray, n_sim: int, rng: np.random.Generator) -> np.ndarray:
    """(len(d), n_sim) draws of χ²_d / d (0 where d = 0), by gamma draws of one shape per
    distinct d (numpy's chisquare with an array of df is several times slower)."""
    out = np.zeros((len(d), n_sim), dtype=np.float32)
    for df in np.unique(d[d > 0]):
        rows = np.flatnonzero(d == df)
        shape = float(df) / 2
        out[rows] = rng.standard_gamma(shape, (rows.size, n_sim), dtype=np.float32) / shape
    return out


def null_p_values(model: SeedModel, w: np.ndarray, df: np.ndarray, n_sim: int = N_SIM,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """(J, n_sim) two-sided p-values of the null statistics, each on its contrast's t."""
    return p_from_t(null_statistics(model, w, n_sim, rng), df)


def _variance_draws(model: SeedModel, n_sim: int, rng: np.random.Generator) -> np.ndarray:
    """(R, n_sim) true seed variances: from the prior for the pooled runs (s0² d0 / χ²_d0),
    each run's own S² where the prior has no df (kept out of the pool, or d0 = 0)."""
    r = len(model.names)
    own = np.repeat(model.s2[:, None].astype(np.float32), n_sim, axis=1)
    if not np.isfinite(model.d0):
        drawn = np.full((r, n_sim), model.s0sq, dtype=np.float32)
    elif model.d0 > 0:
        drawn = model.s0sq / np.maximum(_chi2_over_df(np.full(r, model.d0), n_sim, rng), 1e-30)
    else:
        return own
    return np.where(model.pooled[:, None], drawn, own)


def _image_root(model: SeedModel) -> np.ndarray:
    """R with R Rᵀ the image covariance's positive part (its noise directions clipped)."""
    vals, vecs = np.linalg.eigh(model.moments.cov_c)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))).astype(np.float32)


_GRID = np.linspace(0.0, 1.0, 513)


def p_from_t(t_abs: np.ndarray, df: np.ndarray) -> np.ndarray:
    """2 · P(T_df > |t|) row by row (df per row), by interpolating log p on a fine grid in
    log(1 + t): a hundred times faster than the t's cdf on every draw, and exact to about
    1e-4 of p (the null's own Monte Carlo error at 20,000 draws is ten times that)."""
    t_abs = np.atleast_2d(t_abs)
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), (t_abs.shape[0],))
    out = np.empty_like(t_abs, dtype=np.float64)
    for j, (row, nu) in enumerate(zip(t_abs, df)):
        top = np.log1p(-special.stdtrit(nu, 1e-13))  # |t| beyond: p below 2e-13
        x = _GRID * top
        logp = np.log(np.maximum(2 * special.stdtr(nu, -np.expm1(x)), 1e-300))
        out[j] = np.exp(np.interp(np.log1p(row.astype(np.float64)), x, logp, right=logp[-1]))
    return out
