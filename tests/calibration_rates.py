"""The rates the calibration suite checks, measured over simulated studies (calibration_sim)
put through the very functions the report calls: the runs kept out of the pool
(`not_comparable`), the seed-variance model (`fit_seed_model`, image moments in closed form:
the limit of the report's bootstrap), the contrasts under it (`results`), the sanity pair
seed by seed (`fit_paired`), the family adjusted jointly (`adjust_model`) and the best set.
tests/test_calibration.py asserts the targets on them; benchmarks/calibration.py prints the
table.

Per scenario (`Rates`): the family-wise rate of a false directional verdict, each variant's
tail (raw p below the family's per-test level, over its tests, ÷ that level), simultaneous
coverage of every member's true value, the best set holding every truly best run, "equivalent"
for the sanity pair placed at the margin (after adjustment, and the raw TOST at 5 %), the
family's median detectable effect; each rate with its Monte Carlo standard error.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import zlib

import numpy as np
from scipy import optimize

from calibration_sim import (CHANCE, INTERACTION, K, N_IMAGES, RUNS, SIX, TOLERANCE, draw,
                             expected_acc, wide_sa)
from resnorm.statistics import (INTERACTION_VERDICT, adjust_model, best_set, equivalence_p,
                                fit_seed_model, moments_from_correct, results)
from resnorm.statistics.comparable import not_comparable
from resnorm.statistics.joint import fit_paired

TAIL = 0.05 / 17       # the family's per-test level (17 members)
NULL_DRAWS = 2000      # each simulated study's max-T null (the report draws 20,000)
BATCH = 100
PAIRS = [{a: 1.0, b: -1.0} for i, a in enumerate(SIX) for b in SIX[i + 1:]]
SANITY = {"torch_bn": 1.0, "bn": -1.0}
INTERACTION_LABELS = (INTERACTION_VERDICT.format("GN"), INTERACTION_VERDICT.format("BN"))
DIRECTIONAL = ("a higher", "b higher", *INTERACTION_LABELS)
WIDE = "nn"
# The table (issue 39): 3 seeds and 150 images unless stated.
SCENARIOS = {
    "demo design": {},
    "one variant at 4x the seed SD": {"sa": {WIDE: wide_sa(4, N_IMAGES)}},
    "4x, N = 1,500": {"sa": {WIDE: wide_sa(4, 1500)}, "n": 1500},
    "4x, 2 seeds": {"sa": {WIDE: wide_sa(4, N_IMAGES)}, "k": 2},
    "a non-learning run (the literal recipe), N = 1,500": {
        "n": 1500, "runs": RUNS + ["literal"], "chance": ("literal",)},
    "one diverged seed": {"diverged": {"ln": 1}},
}


@functools.lru_cache(maxsize=None)
def margin_shift(tolerance: float = TOLERANCE) -> float:
    """The logit shift that puts PyTorch BN `tolerance` above own BN (at the margin)."""
    return optimize.brentq(lambda d: expected_acc(d) - expected_acc(0.0) - tolerance, 0.0, 2.0)


@functools.lru_cache(maxsize=None)
def level_shift(sa: float) -> float:
    """The logit shift that keeps a run with seed effect SD `sa` at the others' mean accuracy
    (a wider seed effect moves the mean of a sigmoid)."""
    return optimize.brentq(lambda d: expected_acc(d, sa) - expected_acc(0.0), -2.0, 2.0)


def gap_shift(points: float) -> float:
    """The logit shift that puts a run `points` above the others."""
    return optimize.brentq(lambda d: 100 * (expected_acc(d) - expected_acc(0.0)) - points,
                           0.0, 5.0)


def excluded_runs(correct: np.ndarray, runs: list[str], kw: dict) -> dict[str, str]:
    """The runs the report would keep out of the pool, from what it knows of each."""
    accuracy = {name: list(acc) for name, acc in zip(runs, correct.mean(axis=2))}
    recipes = {name: "literal" if name == "literal" else "default" for name in runs}
    return not_comparable(accuracy, correct.shape[-1], CHANCE, kw.get("diverged"), recipes)


def primary_family(correct: np.ndarray, runs: list[str] = RUNS, kw: dict | None = None,
                   null_draws: int = NULL_DRAWS, seed: int = 0
                   ) -> tuple[list[dict], list[dict], object]:
    """One study's primary family as the report builds it, from its (runs, seeds, images)
    correctness: the sanity equivalence (seed by seed), the six variants pairwise, the
    batch-size interaction, adjusted together under the study's model."""
    model = fit_seed_model(runs, list(correct.mean(axis=2)), moments_from_correct(correct),
                           excluded_runs(correct, runs, kw or {}))
    d = correct[0].astype(np.float64) - correct[1]
    sanity = results(fit_paired(d.mean(axis=1), moments_from_correct(d[None])),
                     [{"difference": 1.0}])[0]
    sanity.update(a="torch_bn", b="bn", test="equivalence", tolerance=TOLERANCE,
                  p=equivalence_p(sanity, TOLERANCE))
    pairs = [{**r, "a": a, "b": b} for r, (a, b) in zip(results(model, PAIRS),
                                                        [tuple(w) for w in PAIRS])]
    inter = results(model, [INTERACTION], labels=[INTERACTION_LABELS])
    members = [sanity] + pairs + inter
    adjust_model(members, [SANITY] + PAIRS + [INTERACTION], model, n_sim=null_draws,
                 rng=np.random.default_rng(seed))
    return members, pairs, model


@dataclasses.dataclass
class Rates:
    studies: int
    fwer: float
    tail: dict[str, float]            # per variant: its tests' raw tail ÷ TAIL
    coverage: float
    best_set: float
    false_equivalent: float           # adjusted, sanity pair at the margin
    tost_at_margin: float             # raw TOST p < 5 % at the margin
    mde_points: float                 # the family's median detectable effect, median
    rest_tail: float                  # the tail of the null tests without the WIDE variant
    power: float | None = None        # the planted pair found (planted scenarios)

    def se(self, rate: float) -> float:
        """The Monte Carlo standard error of a rate over these studies."""
        return math.sqrt(max(rate * (1 - rate), 1e-12) / self.studies)

    def tail_se(self, variant: str) -> float:
        """The Monte Carlo SE of a variant's tail ratio (its 5 tests per study; they are
        correlated, so this is a lower bound)."""
        rate = self.tail[variant] * TAIL
        return math.sqrt(max(rate * (1 - rate), TAIL * (1 - TAIL)) / (5 * self.studies)) / TAIL


def _truths(kw: dict, runs: list[str], deltas: dict[str, float]) -> np.ndarray:
    """Each run's true mean accuracy (a diverged seed scores chance)."""
    k = kw.get("k", K)
    out = []
    for name in runs:
        if name in kw.get("chance", ()):
            out.append(CHANCE)
            continue
        sa = kw.get("sa", {}).get(name, 0.15)
        acc = expected_acc(deltas.get(name, 0.0), sa)
        lost = kw.get("diverged", {}).get(name, 0)
        out.append((acc * (k - lost) + CHANCE * lost) / k)
    return np.array(out)


@functools.lru_cache(maxsize=None)
def scenario(name: str, studies: int, planted: tuple = (), found: tuple | None = None) -> Rates:
    """Rates over `studies` simulated studies of scenario `name` (SCENARIOS) with the sanity
    pair at the margin and `planted` (run, logit shift) effects; `found`: the (a, b, verdict)
    whose rate is the power."""
    kw = dict(SCENARIOS[name])
    runs = kw.get("runs", RUNS)
    deltas = {"torch_bn": margin_shift(), **{n: level_shift(sa) for n, sa in
                                             kw.get("sa", {}).items()}, **dict(planted)}
    truth = _truths(kw, runs, deltas)
    theta = {tuple(w): float(sum(c * truth[runs.index(n)] for n, c in w.items()))
             for w in [SANITY] + PAIRS + [INTERACTION]}
    best = {n for n in SIX if truth[runs.index(n)] >= max(truth[runs.index(m)] for m in SIX)
            - 1e-12}
    seed = zlib.crc32(repr((name, planted)).encode())
    rng = np.random.default_rng(seed)
    counts = dict(fwer=0, cover=0, best=0, eq=0, tost=0, found=0)
    tails: dict[str, list] = {v: [] for v in SIX + ["rest"]}
    mde = []
    for b in range(math.ceil(studies / BATCH)):
        size = min(BATCH, studies - b * BATCH)
        for i, correct in enumerate(draw(rng, size, deltas=deltas, **kw)):
            members, pairs, model = primary_family(correct, runs, kw, seed=seed + b * BATCH + i)
            _count(members, pairs, model, theta, best, found, counts, tails, mde)
    return Rates(studies, counts["fwer"] / studies,
                 {v: float(np.mean(t)) / TAIL for v, t in tails.items() if t and v in SIX},
                 counts["cover"] / studies, counts["best"] / studies, counts["eq"] / studies,
                 counts["tost"] / studies, float(np.median(mde)),
                 float(np.mean(tails["rest"])) / TAIL, counts["found"] / studies if found else None)


def _count(members, pairs, model, theta, best, found, counts, tails, mde) -> None:
    """One study's contribution to the rates."""
    weights = [SANITY] + PAIRS + [INTERACTION]
    null = [m for m, w in zip(members[1:], weights[1:]) if abs(theta[tuple(w)]) < 1e-9]
    counts["fwer"] += any(m["verdict"] in DIRECTIONAL for m in null)
    counts["cover"] += all(lo <= theta[tuple(w)] <= hi for m, w in zip(members, weights)
                           for lo, hi in [m["ci95_simultaneous"]])
    chosen = best_set(SIX, {(m["a"], m["b"]): m["ci95_simultaneous"] for m in pairs})
    counts["best"] += best <= set(chosen)
    counts["eq"] += members[0]["equivalence"] == "equivalent"
    counts["tost"] += members[0]["p"] < 0.05
    for v in SIX:
        tails[v] += [m["p"] < TAIL for m in pairs
                     if v in (m["a"], m["b"]) and abs(theta[(m["a"], m["b"])]) < 1e-9]
    tails["rest"] += [m["p"] < TAIL for m in pairs
                      if WIDE not in (m["a"], m["b"]) and abs(theta[(m["a"], m["b"])]) < 1e-9]
    kept = [m["mde_points"] for m in pairs
            if not ({m["a"], m["b"]} & set(model.excluded))]
    mde.append(float(np.median(kept)))
    if found:
        a, b, verdict = found
        counts["found"] += next(m for m in pairs if (m["a"], m["b"]) == (a, b))["verdict"] \
            == verdict
