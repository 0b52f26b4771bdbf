"""How well the primary family holds for one study: its own design simulated, at report time.

The error rates a report states are measured, not recalled: `calibrate` simulates studies
of this study's design (its runs, seeds and images, each run's seed variance as fitted, its
image covariance, the runs kept out of the pool) and puts each through the very functions
the report used (`fit_seed_model`, `results`, `fit_paired`, `adjust_model`, `best_set`):

- **null** (`studies` of them): no run truly differs; the sanity pair (if any) sits at its
  margin, + tolerance. Measured: a false directional verdict anywhere in the family; every
  member's simultaneous interval holding its true value; the best set keeping every ranked
  run (all are best); the sanity pair called "equivalent".
- **planted** (half as many): one pair, the one whose detectable effect is the family's
  stated (median) one, planted at that effect. Measured: the pair found, in its direction,
  after adjustment (the power at the stated detectable effect); the best set holding it.

A simulated study draws each run's seed scores as m*_rs = μ_r + c*_r + e*_rs: e* normal with
the run's fitted seed variance, c* the image-common part (normal, the fitted image
covariance, the same for the run's seeds); the image moments are taken as fitted (known to
N − 1 df, against the seeds' K − 1). Each rate comes with its Monte Carlo standard error.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Mapping, Sequence

import numpy as np

from resnorm.statistics.contrasts import equivalence_p
from resnorm.statistics.joint import adjust_model, fit_paired, results
from resnorm.statistics.model import SeedModel, fit_seed_model
from resnorm.statistics.null import study_rng
from resnorm.statistics.ranking import best_set

__all__ = ["FamilyDesign", "calibrate", "NULL_DRAWS"]

NULL_DRAWS = 2000   # each simulated study's max-T null (the report's own family draws 20,000)
DIRECTIONAL = ("a higher", "b higher")


@dataclasses.dataclass(frozen=True)
class FamilyDesign:
    """The primary family of a study as `calibrate` simulates it: the fitted `model`, the
    difference tests' weights ({run: w}, in order) with their verdict labels, the sanity
    pair (`sanity`: {a: 1, b: −1}) with its seed-by-seed model and tolerance, the ranked
    runs, and the pair to plant at the stated detectable effect (`planted`: (a, b, points))."""

    model: SeedModel
    weights: Sequence[Mapping[str, float]]
    labels: Sequence[tuple[str, str]]
    ranked: Sequence[str] = ()
    sanity: Mapping[str, float] | None = None
    sanity_model: SeedModel | None = None
    tolerance: float | None = None
    planted: tuple[str, str, float] | None = None


def calibrate(design: FamilyDesign, studies: int, null_draws: int = NULL_DRAWS,
              rng: np.random.Generator | None = None) -> dict:
    """The rates of the module notes over `studies` null and `studies // 2` planted studies
    of `design`, each {"rate", "se"}; seeded from the study unless `rng` is given."""
    rng = study_rng(design.model, "calibration") if rng is None else rng
    start = time.perf_counter()
    null = _run(design, {}, studies, null_draws, rng)
    out = {"studies": studies, "null_draws": null_draws,
           "fwer": _rate(null["fwer"]), "coverage": _rate(null["cover"]),
           "best_set": _rate(null["best"])}
    if design.sanity is not None:
        out["false_equivalent"] = _rate(null["equivalent"])
        out["tolerance"] = design.tolerance
    if design.planted is not None and studies >= 2:
        a, b, points = design.planted
        planted = _run(design, {a: points / 100}, studies // 2, null_draws, rng)
        out["power"] = {**_rate(planted["found"]), "pair": [a, b], "points": points,
                        "studies": studies // 2}
        out["best_set_planted"] = _rate(planted["best"])
    out["seconds"] = time.perf_counter() - start
    return out


def _rate(hits: list[bool]) -> dict:
    n = len(hits)
    rate = float(np.mean(hits)) if n else float("nan")
    return {"rate": rate, "se": math.sqrt(max(rate * (1 - rate), 0.0) / n) if n else None}


def _run(design: FamilyDesign, shift: Mapping[str, float], studies: int, null_draws: int,
         rng: np.random.Generator) -> dict[str, list[bool]]:
    """Simulate `studies` studies of `design` with the true means 0 but `shift`."""
    model = design.model
    mu = np.array([shift.get(n, 0.0) for n in model.names])
    truth = [float(sum(w * mu[model.names.index(n)] for n, w in ws.items()))
             for ws in design.weights]
    best = {n for n in design.ranked if mu[model.names.index(n)] >= mu.max() - 1e-12}
    weights = ([dict(design.sanity)] if design.sanity else []) + list(design.weights)
    counts: dict[str, list[bool]] = {k: [] for k in ("fwer", "cover", "best", "equivalent",
                                                      "found")}
    for scores, sanity in _draws(design, mu, studies, rng):
        sim = fit_seed_model(model.names, scores, model.moments, model.excluded)
        members = results(sim, list(design.weights), labels=list(design.labels))
        if sanity is not None:
            members.insert(0, sanity)
        adjust_model(members, weights, sim, n_sim=null_draws, rng=rng)
        _count(design, members[1:] if sanity else members, sanity, truth, best, shift,
               counts)
    return counts


def _count(design: FamilyDesign, diffs: list[dict], sanity: dict | None,
           truth: list[float], best: set[str], shift: Mapping[str, float],
           counts: dict[str, list[bool]]) -> None:
    """One simulated study's verdicts against the truth."""
    counts["fwer"].append(any(m["verdict"] not in ("no clear difference", "not computable")
                              and abs(t) < 1e-12 for m, t in zip(diffs, truth)))
    cover = all(m["ci95_simultaneous"][0] <= t <= m["ci95_simultaneous"][1]
                for m, t in zip(diffs, truth) if m.get("ci95_simultaneous"))
    if sanity is not None:
        lo, hi = sanity["ci95_simultaneous"]
        cover = cover and lo <= design.tolerance <= hi
        counts["equivalent"].append(sanity["equivalence"] == "equivalent")
    counts["cover"].append(cover)
    simultaneous = {_pair(w): m.get("ci95_simultaneous")
                    for w, m in zip(design.weights, diffs) if len(w) == 2}
    counts["best"].append(best <= set(best_set(list(design.ranked), simultaneous)))
    if design.planted and shift:
        a, b, _ = design.planted
        j = next(j for j, w in enumerate(design.weights) if _pair(w) in ((a, b), (b, a)))
        want = "a higher" if _pair(design.weights[j]) == (a, b) else "b higher"
        counts["found"].append(diffs[j]["verdict"] == want)


def _pair(w: Mapping[str, float]) -> tuple[str, ...]:
    """(a, b) of a difference a − b."""
    return tuple(sorted(w, key=lambda n: -w[n]))


def _draws(design: FamilyDesign, mu: np.ndarray, studies: int, rng: np.random.Generator):
    """Per simulated study: each run's seed scores, and the sanity member (or None)."""
    model = design.model
    k = model.k.astype(int)
    sd = np.sqrt(np.where(model.pooled, model.s2_mod, model.s2))
    vals, vecs = np.linalg.eigh(model.moments.cov_c)
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))
    for _ in range(studies):
        common = mu + root @ rng.standard_normal(len(mu))
        scores = [common[r] + sd[r] * rng.standard_normal(k[r]) for r in range(len(mu))]
        yield scores, _sanity_member(design, rng)


def _sanity_member(design: FamilyDesign, rng: np.random.Generator) -> dict | None:
    """The sanity pair seed by seed at its margin: the within-seed differences drawn with
    its fitted seed variance and image part, put through `fit_paired` and TOST."""
    paired, tol = design.sanity_model, design.tolerance
    if design.sanity is None or paired is None or tol is None:
        return None
    k = int(paired.k[0])
    common = tol + math.sqrt(max(float(paired.moments.cov_c[0, 0]), 0.0)) * \
        rng.standard_normal()
    d = common + math.sqrt(float(paired.s2[0])) * rng.standard_normal(k)
    res = results(fit_paired(d, paired.moments), [{"difference": 1.0}])[0]
    a, b = _pair(design.sanity)
    res.update(a=a, b=b, test="equivalence", tolerance=tol, p=equivalence_p(res, tol))
    return res
