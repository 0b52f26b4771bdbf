"""Many verdicts, one error rate: the tests of a study in families, adjusted together.

A study states dozens of verdicts. Tested alone at 5 % each, seven variants that are truly
equal would show a few "a higher" verdicts by chance in every study. So the tests are grouped:

- **primary**: the questions the study was run to answer (the assignment's: own BN vs PyTorch
  BN as an equivalence test, the six variants pairwise on the primary metric, the batch-size
  interaction). They are tested jointly by the step-down max-T (minP) method of Westfall &
  Young (1993), as multcomp does it for contrasts (Hothorn, Bretz & Westfall 2008): the
  pairwise tests share runs (bn − gn and bn − ln both move with bn's noise), images and the
  pooled seed variance, so they are correlated, and the critical value comes from the joint
  null distribution of their statistics, drawn from the study's model itself (`null`: each
  statistic over the variance draws the model allows, `max_t_null`). Holm's adjustment,
  which allows for any dependence, is kept beside it (``p_holm``) and used alone where there
  is no model. Each member also gets a simultaneous interval at the max-T level
  (Bonferroni's 1 − α/m with Holm) and the smallest difference it would detect with 80 %
  power at that level (``mde_points``, from the noncentral t). How closely the family-wise
  rate holds is measured by simulation: of the demo's design and harder ones in
  tests/test_calibration.py, of each study's own design in its report (`calibration`).
- **exploratory**: everything else (the second metric, recipe and batch-size pairs, pairs a
  plan adds). Benjamini–Hochberg adjusted p-values control the expected share of false
  verdicts among those stated (the false discovery rate) at 5 %.

A member is a contrast result (see `contrasts`, `joint`) with its raw ``p``; ``test`` says what
the p tests: "difference" (H0: θ = 0; p two-sided) or "equivalence" (H0: |θ| >= ``tolerance``;
p from TOST; in the joint null it counts as a two-sided test of its estimate). `adjust` adds
``family``, ``p_adjusted`` with its ``adjustment`` ("max-T", "Holm" or "Benjamini-Hochberg";
and ``p_holm``, ``ci95_simultaneous`` in the primary family) and replaces the verdict with the
adjusted one, keeping the raw one beside it (``verdict_unadjusted`` /
``equivalence_unadjusted``): a direction is stated only when the adjusted test rejects *and*
the raw 95 % interval excludes 0, so no verdict rests on an unadjusted test alone.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
from scipy import special, stats

from resnorm.statistics.contrasts import NOT_COMPUTABLE, equivalence
from resnorm.statistics.model import detectable_effect

__all__ = ["ALPHA", "PRIMARY", "EXPLORATORY", "NO_DIFFERENCE", "POWER", "holm",
           "benjamini_hochberg", "interval_at", "max_t", "max_t_null", "adjust"]

ALPHA = 0.05
POWER = 0.8   # the power at which a family's detectable effect is stated
PRIMARY, EXPLORATORY = "primary", "exploratory"
NO_DIFFERENCE = "no clear difference"
N_SIM = 20000  # null draws for `max_t`: an adjusted p near 0.05 is known to ± 0.0015


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: with p sorted ascending, the i-th (1-based) becomes
    max over j <= i of min(1, (m − j + 1)·p_(j)). A test rejects at α when its adjusted p is
    below α."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted.tolist()


def benjamini_hochberg(p: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (scipy's false_discovery_control)."""
    if len(p) == 0:
        return []
    return np.asarray(stats.false_discovery_control(np.asarray(p, dtype=np.float64),
                                                    method="bh")).tolist()


def interval_at(result: dict, level: float) -> list[float] | None:
    """The contrast's estimate ± the two-sided `level` quantile × its standard error: a t with
    the result's df, or the normal for the one-seed bootstrap (df None; its extreme
    percentiles would rest on a handful of replicates). None when not computable."""
    diff, se = result.get("diff"), result.get("se")
    if result.get("verdict") == NOT_COMPUTABLE or diff is None or se is None:
        return None
    if se == 0:
        return [diff, diff]
    half = _quantile(result.get("df"), (1 - level) / 2) * se
    return [diff - half, diff + half]


def _quantile(df: float | None, tail: float) -> float:
    """The upper `tail` quantile of a t with `df` (the normal's for None)."""
    return float(_t_isf(tail, df))


def max_t(p: Sequence[float], corr: np.ndarray, alpha: float = ALPHA, n_sim: int = N_SIM,
          rng: np.random.Generator | int | None = 0, df: float | None = None
          ) -> tuple[list[float], float]:
    """Step-down max-T (minP) adjusted p-values for tests whose statistics are correlated as
    `corr`, and the single-step critical p (a member's simultaneous interval is its estimate
    ± the t quantile of that p × its se). Under the null the statistics are simulated as
    |T|, T = Z / √W, Z ~ N(0, corr) and W ~ χ²_df / df shared by every test (W = 1 for df
    None: normal statistics). A study's family uses `max_t_null` on the model's own draws
    (`null`); this is the textbook multivariate t."""
    vals, vecs = np.linalg.eigh(corr)
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))  # corr = root @ root.T (rank <= runs)
    normal, gen = _null_normals(len(p), n_sim, rng)
    # einsum, not BLAS: on a busy machine BLAS threads wait on each other for this small
    # product (40 ms against 4)
    z = np.abs(np.einsum("ij,jk->ik", root.astype(np.float32), normal))
    if df:
        z /= np.sqrt(gen.chisquare(df, size=n_sim) / df).astype(np.float32)
    return max_t_null(p, 2 * _t_sf_array(z, df), alpha)


def max_t_null(p: Sequence[float], null_p: np.ndarray, alpha: float = ALPHA
               ) -> tuple[list[float], float]:
    """Step-down minP (Westfall & Young 1993) adjusted p-values of the raw `p` from their
    joint null `null_p` (tests × draws of each test's p under H0), and the single-step
    critical p: the α quantile of the draws' smallest p (a member's simultaneous interval is
    its estimate ± its t quantile at that p × its se)."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    # step k tests the k-th smallest p against the smallest null p of the hypotheses left
    left_min = np.minimum.accumulate(np.asarray(null_p)[order[::-1]], axis=0)[::-1]
    stepped = np.mean(left_min <= p[order][:, None], axis=1)
    adjusted = np.empty(p.size)
    adjusted[order] = np.maximum.accumulate(stepped)
    p_crit = float(np.quantile(left_min[0], alpha)) if p.size else alpha
    # never below the raw p (the simulation's noise could put the last step a hair under it)
    return np.maximum(adjusted, p).tolist(), p_crit


def _null_normals(m: int, n_sim: int, rng: np.random.Generator | int | None
                  ) -> tuple[np.ndarray, np.random.Generator]:
    """(m, n_sim) standard normals (float32, tests along axis 0: 20,000 draws of a few dozen
    statistics, where the last digits do not matter) and the generator for what follows.
    A fixed integer seed gives the same draws every call: kept, not drawn again."""
    if isinstance(rng, (int, np.integer)):
        return _cached_normals(m, n_sim, int(rng)), np.random.default_rng([int(rng), 1])
    gen = np.random.default_rng(rng)
    return gen.standard_normal((m, n_sim), dtype=np.float32), gen


@functools.lru_cache(maxsize=8)
def _cached_normals(m: int, n_sim: int, seed: int) -> np.ndarray:
    normal = np.random.default_rng(seed).standard_normal((m, n_sim), dtype=np.float32)
    normal.setflags(write=False)
    return normal


def _t_isf(q: np.ndarray | float, df: float | None) -> np.ndarray:
    """The upper-q quantile of a t with `df` (normal for None); scipy.special, not the slower
    scipy.stats wrappers: the calibration suite calls this for thousands of studies."""
    q = np.asarray(q, dtype=np.float64)
    t = -special.ndtri(q) if not df or not np.isfinite(df) else -special.stdtrit(df, q)
    return np.where(q <= 0, np.inf, t)  # stdtrit(df, 0) is +inf, not −inf


def _t_sf_array(x: np.ndarray, df: float | None) -> np.ndarray:
    return special.ndtr(-x) if not df else special.stdtr(df, -x)


def adjust(members: list[dict], family: str, alpha: float = ALPHA,
           corr: np.ndarray | None = None, df: float | None = None,
           null_p: np.ndarray | None = None) -> None:
    """Adjust a family's p-values together, in place (see the module notes). Members without a
    p (not computable) are labelled but not counted. Primary family: max-T on `null_p` (the
    tested members' joint null p-values, tests × draws: `null.null_p_values`), else on `corr`
    and `df` as for `max_t`, else Holm."""
    tested = [m for m in members if m.get("p") is not None]
    p = [m["p"] for m in tested]
    for m in members:
        m["family"] = family
        m.setdefault("p_adjusted", None)
    if family != PRIMARY:
        adjusted, p_crit, how = benjamini_hochberg(p), alpha, "Benjamini-Hochberg"
    elif tested and (null_p is not None or corr is not None):
        adjusted, p_crit = (max_t_null(p, null_p, alpha) if null_p is not None
                            else max_t(p, corr, alpha, df=df))
        how = "max-T"
    else:
        adjusted, p_crit, how = holm(p), alpha / max(len(tested), 1), "Holm"
    for m, p_holm, p_adj in zip(tested, holm(p), adjusted):
        m["p_adjusted"], m["adjustment"] = p_adj, how
        if m.get("se") is not None and m.get("verdict") != NOT_COMPUTABLE:
            m["mde_points"] = 100 * float(detectable_effect(m["se"], m.get("df") or np.inf,
                                                            p_crit, POWER))
        if family == PRIMARY:
            m["p_holm"] = p_holm
            m["ci95_simultaneous"] = interval_at(m, 1 - p_crit)
        if m.get("test") == "equivalence":
            _decide_equivalence(m, family, alpha)
        else:
            m["verdict_unadjusted"] = m["verdict"]
            if p_adj >= alpha:
                m["verdict"] = NO_DIFFERENCE


def _decide_equivalence(m: dict, family: str, alpha: float) -> None:
    """"equivalent" when the adjusted TOST rejects |θ| >= tol; "not equivalent" when the
    simultaneous interval lies wholly outside ± tol (primary family only: an exploratory
    member has no adjusted test of that); else "inconclusive"."""
    tol = m["tolerance"]
    m["equivalence_unadjusted"] = equivalence(m, tol)
    if m["p_adjusted"] < alpha:
        m["equivalence"] = "equivalent"
    elif family == PRIMARY and equivalence(m, tol, "ci95_simultaneous") == "not equivalent":
        m["equivalence"] = "not equivalent"
    else:
        m["equivalence"] = "inconclusive"
