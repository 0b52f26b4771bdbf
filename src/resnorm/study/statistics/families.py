"""Many verdicts, one error rate: the tests of a study in families, adjusted together.

A study states dozens of verdicts. Tested alone at 5 % each, seven variants that are truly
equal would show a few "a higher" verdicts by chance in every study. So the tests are grouped:

- **primary**: the questions the study was run to answer (the assignment's: own BN vs PyTorch
  BN as an equivalence test, the six variants pairwise on the primary metric, the batch-size
  interaction). Their p-values are adjusted by Holm's step-down method with its Bonferroni
  bound at each step replaced by the exact bound for correlated tests: the step-down max-T
  (minP) adjustment of Westfall & Young (1993), as multcomp does it for contrasts (Hothorn,
  Bretz & Westfall 2008). The pairwise tests share runs (bn − gn and bn − ln both move with
  bn's noise) and images, so they are correlated, and plain Holm, which allows for the worst
  case, holds the family-wise error rate (the chance of even one false verdict in the
  family) well below 5 %: 3.4 % for the demo's 17 tests against 4.6 % for max-T (2,000
  simulated studies; tests/test_statistics_families.py). The correlation of the tests'
  estimates comes from the two-level bootstrap of the runs (`resampling`); under the null
  the p-values are modelled as those of correlated normal statistics (a Gaussian copula,
  simulated). Holm's adjustment is kept beside it (``p_holm``) and used alone where no
  correlation is given. Each member also gets a simultaneous 95 % interval from the same
  bound (single-step max-T; Bonferroni's 1 − α/m with Holm): together the intervals hold
  every member's target with probability >= 95 %, and one that excludes 0 implies that the
  step-down test rejects.
- **exploratory**: everything else (the second metric, recipe and batch-size pairs, pairs a
  plan adds). Benjamini–Hochberg adjusted p-values control the expected share of false
  verdicts among those stated (the false discovery rate) at 5 %.

A member is a contrast result (see `contrasts`) with its raw ``p``; ``test`` says what the p
tests: "difference" (H0: θ = 0; p two-sided) or "equivalence" (H0: |θ| >= ``tolerance``; p
from TOST; in the copula it counts as a two-sided test of its estimate). `adjust` adds
``family``, ``p_adjusted`` with its ``adjustment`` ("max-T", "Holm" or "Benjamini-Hochberg";
and ``p_holm``, ``ci95_simultaneous`` in the primary family) and replaces the verdict with the
adjusted one, keeping the raw one beside it (``verdict_unadjusted`` /
``equivalence_unadjusted``): a direction is stated only when the adjusted test rejects *and*
the raw 95 % interval excludes 0, so no verdict rests on an unadjusted test alone.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from resnorm.study.statistics.contrasts import NOT_COMPUTABLE, equivalence
from resnorm.study.statistics.resampling import Resample, resample_runs

__all__ = ["ALPHA", "PRIMARY", "EXPLORATORY", "NO_DIFFERENCE", "holm", "benjamini_hochberg",
           "interval_at", "correlation", "max_t", "adjust", "adjust_primary"]

ALPHA = 0.05
PRIMARY, EXPLORATORY = "primary", "exploratory"
NO_DIFFERENCE = "no clear difference"
N_SIM = 20000  # null draws for max-T: an adjusted p near 0.05 is known to about ± 0.0015


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
    q = 0.5 + level / 2
    half = float(stats.t.ppf(q, result["df"]) if result.get("df") else stats.norm.ppf(q)) * se
    return [diff - half, diff + half]


def correlation(weights: Sequence[Mapping[str, float]], resample: Resample) -> np.ndarray:
    """The correlation of contrast estimates Σ_r w_r · score_r over the replicates of the
    two-level bootstrap (`weights`: one {run: w} per contrast). A contrast that does not vary
    (identical predictions) gets correlation 0 with the others."""
    column = {name: r for r, name in enumerate(resample.names)}
    w = np.zeros((len(weights), len(column)))
    for j, contrast in enumerate(weights):
        for name, wr in contrast.items():
            w[j, column[name]] = wr
    theta = w @ resample.scores
    theta = theta - theta.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.sum(theta**2, axis=1))
    norm[norm < 1e-12] = np.inf
    corr = (theta @ theta.T) / np.outer(norm, norm)
    np.fill_diagonal(corr, 1.0)
    return corr


def max_t(p: Sequence[float], corr: np.ndarray, alpha: float = ALPHA, n_sim: int = N_SIM,
          rng: np.random.Generator | int | None = 0) -> tuple[list[float], float]:
    """Step-down max-T (minP) adjusted p-values for tests whose statistics are correlated as
    `corr`, and the single-step critical p (a member's simultaneous interval is its
    1 − p_crit interval). Under the null the statistics are simulated as |Z|, Z ~ N(0, corr),
    and each p as the |z| with that two-sided normal p."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    vals, vecs = np.linalg.eigh(corr)
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))  # corr = root @ root.T (rank <= runs)
    # float32: 20,000 draws of a few dozen statistics, where the last digits do not matter
    draws = np.random.default_rng(rng).standard_normal((n_sim, m), dtype=np.float32)
    z = np.abs(draws @ root.T.astype(np.float32))
    order = np.argsort(p, kind="stable")
    # step k tests the k-th smallest p against the largest null |z| of the hypotheses left
    left_max = np.maximum.accumulate(z[:, order][:, ::-1], axis=1)[:, ::-1]
    stepped = np.mean(left_max >= stats.norm.isf(p[order] / 2)[None, :], axis=0)
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    p_crit = 2 * float(stats.norm.sf(np.quantile(left_max[:, 0], 1 - alpha)))
    # never below the raw p (the simulation's noise could put the last step a hair under it)
    return np.maximum(adjusted, p).tolist(), p_crit


def adjust(members: list[dict], family: str, alpha: float = ALPHA,
           corr: np.ndarray | None = None) -> None:
    """Adjust a family's p-values together, in place (see the module notes). Members without a
    p (not computable) are labelled but not counted. `corr`: the correlation of the tested
    members' estimates, in order (primary family: max-T; without it, Holm)."""
    tested = [m for m in members if m.get("p") is not None]
    p = [m["p"] for m in tested]
    for m in members:
        m["family"] = family
        m.setdefault("p_adjusted", None)
    if family != PRIMARY:
        adjusted, level, how = benjamini_hochberg(p), None, "Benjamini-Hochberg"
    elif corr is not None and tested:
        adjusted, p_crit = max_t(p, corr, alpha)
        # exact max-T is never above Holm; its simulation's noise could be, by a hair
        adjusted = np.minimum(adjusted, holm(p)).tolist()
        level, how = 1 - p_crit, "max-T"
    else:
        adjusted, level, how = holm(p), 1 - alpha / max(len(tested), 1), "Holm"
    for m, p_holm, p_adj in zip(tested, holm(p), adjusted):
        m["p_adjusted"], m["adjustment"] = p_adj, how
        if family == PRIMARY:
            m["p_holm"] = p_holm
            m["ci95_simultaneous"] = interval_at(m, level)
        if m.get("test") == "equivalence":
            _decide_equivalence(m, family, alpha)
        else:
            m["verdict_unadjusted"] = m["verdict"]
            if p_adj >= alpha:
                m["verdict"] = NO_DIFFERENCE


def adjust_primary(members: list[dict], weights: Sequence[Mapping[str, float]],
                   runs: Mapping[str, Sequence[Any]], metric: str = "acc", alpha: float = ALPHA,
                   **resample: Any) -> None:
    """Adjust the primary family in place: max-T with the correlation of its tested members'
    estimates over the two-level bootstrap of `runs` (name -> seeds; `resample`: indices,
    cache, rng as for `resampling.resample_runs`); Holm where there is no correlation to
    have (fewer than two tests, runs on other validation sets). `weights`: one {run: w} per
    member, the contrast it estimates."""
    tested = [w for m, w in zip(members, weights) if m.get("p") is not None]
    names = list(dict.fromkeys(n for w in tested for n in w))
    corr = None
    if len(tested) >= 2 and all(n in runs for n in names):
        try:
            corr = correlation(tested, resample_runs({n: runs[n] for n in names}, metric,
                                                     **resample))
        except ValueError:  # runs evaluated on other validation sets: no joint resample
            corr = None
    adjust(members, PRIMARY, alpha, corr)


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
