"""The study's tests in families (summary.json `families`): which are primary (the sanity
equivalence, the primary pairs on the primary metric, the batch-size interaction) and which
exploratory, each family adjusted (resnorm.statistics.families, jointly on the study's
model for the primary one), what each can detect, and the texts that say how it was done and
how well it held in simulation (tests/test_calibration.py)."""
from __future__ import annotations

import numpy as np

from resnorm.report.format import metric_label
from resnorm import statistics as st

__all__ = ["adjust_families", "weights", "BEST_SET_METHOD"]

MAX_T_METHOD = ("Primary family ({m} tests): {questions}. The tests are made jointly: each "
                "run's seed-to-seed variance is moderated towards the study's pooled seed "
                "variance (empirical Bayes, as limma does; a run that spreads more keeps "
                "part of its own), and the step-down max-T method (Westfall & Young 1993) "
                "takes its critical value from the tests' joint distribution under that model "
                "(a multivariate t). In 2,000 simulated studies of the demo's design with "
                "seven equal variants the chance of even one false verdict in the family was "
                "{fwer}, and a single test's tail at the family's level held within 2× of "
                "nominal (tests/test_calibration.py); plain Holm's p is beside it. The "
                "simultaneous intervals, from the same critical value, held every member's "
                "true value together in 94–95 % of those studies: read them as about 94 %.")
HOLM_METHOD = ("Primary family ({m} tests): {questions}. Holm's step-down adjustment of the "
               "p-values keeps the chance of even one false verdict in the family at or below "
               "5 % as far as each test's own p is right; the simultaneous intervals, at the "
               "Bonferroni level 1 − 5 %/{m}, hold every member's true value together with "
               "about that probability (Holm can reject where such an interval still touches "
               "0: the verdict follows the test).")
CALIBRATED_FWER = ("5.2–6.4 % (equal seed spreads or two variants at 2.5× the others', 150 or "
                   "2,000 images, a run × image interaction)")
BEST_SET_METHOD = ("The runs that cannot be excluded from best: a run is left out only when "
                   "another is above it by the primary family's simultaneous interval of "
                   "their difference (Hsu's multiple comparisons with the best); the set "
                   "held the truly best run in about 95 % of simulated studies "
                   "(tests/test_calibration.py). A pair outside the family excludes nothing.")
EXPLORATORY_METHOD = ("Exploratory (every other comparison: the second metric, the other "
                      "split, recipe and batch-size pairs, pairs the plan adds): "
                      "Benjamini–Hochberg adjusted p-values, which keep the expected share of "
                      "false verdicts among those stated at 5 %; read them as leads, not "
                      "findings.")


def adjust_families(out: dict, pairs: list[tuple[str, str]], metric: str, from_plan: bool,
                    model: st.SeedModel | None) -> dict:
    """Label every test primary or exploratory and adjust each family (see
    resnorm.statistics.families); returns the families' description."""
    keys = {frozenset(p) for p in pairs}
    primary = [c for c in out["comparisons"]
               if c["metric"] == metric and frozenset((c["a"], c["b"])) in keys]
    exploratory = [c for c in out["comparisons"] if not any(c is p for p in primary)]
    primary += [x for x in (out["sanity"], out["interaction"]) if x]
    st.adjust_model(primary, [weights(m) for m in primary], model)
    st.adjust(exploratory, st.EXPLORATORY)
    tested = [m for m in primary if m.get("p") is not None]
    adjustment = tested[0]["adjustment"] if tested else None
    questions = _questions(out, keys, metric, from_plan)
    method = MAX_T_METHOD if adjustment == "max-T" else HOLM_METHOD
    return {"alpha": st.ALPHA, "metric": metric, "power": st.POWER,
            "primary": {"size": len(tested), "questions": questions, "adjustment": adjustment,
                        "mde_points": _median_mde(tested),
                        "largest_gap_points": _largest_gap(tested),
                        "method": method.format(m=len(tested), questions="; ".join(questions),
                                                fwer=CALIBRATED_FWER)},
            "exploratory": {"size": sum(c.get("p") is not None for c in exploratory),
                            "mde_points": _median_mde([c for c in exploratory
                                                       if c.get("p") is not None]),
                            "method": EXPLORATORY_METHOD}}


def _median_mde(members: list[dict]) -> float | None:
    """The family's detectable effect: the median over its difference tests (points)."""
    mde = [m["mde_points"] for m in members
           if m.get("test") != "equivalence" and m.get("mde_points") is not None]
    return float(np.median(mde)) if mde else None


def _largest_gap(members: list[dict]) -> float | None:
    """The largest observed difference among the family's difference tests (points)."""
    gaps = [abs(m["diff"]) for m in members
            if m.get("test") != "equivalence" and m.get("diff") is not None]
    return 100 * max(gaps) if gaps else None


def _questions(out: dict, keys: set[frozenset], metric: str, from_plan: bool) -> list[str]:
    """The primary family's questions in words."""
    runs = {name for pair in keys for name in pair}
    pairs = (f"the plan's {len(keys)} primary pair(s)" if from_plan else
             f"the {len(runs)} norm variants pairwise ({len(keys)} pairs)")
    return ((["own BN vs PyTorch BN (an equivalence test)"] if out["sanity"] else [])
            + [f"{pairs} on {metric_label(metric)}"]
            + ([_interaction_question(out["interaction"])] if out["interaction"] else []))


def _interaction_question(inter: dict) -> str:
    first, second = inter["labels"]
    return f"the batch-size interaction ({second} vs {first})"


def weights(member: dict) -> dict[str, float]:
    """A test's contrast as {run: weight}: a − b, or the interaction's four runs."""
    r = member.get("runs")
    if r:  # the interaction: (second small − second large) − (first small − first large)
        first, second = member["groups"]
        terms = [(r[f"{second}_small"], 1.0), (r[f"{second}_large"], -1.0),
                 (r[f"{first}_small"], -1.0), (r[f"{first}_large"], 1.0)]
    else:
        terms = [(member["a"], 1.0), (member["b"], -1.0)]
    out: dict[str, float] = {}
    for name, w in terms:
        out[name] = out.get(name, 0.0) + w
    return out
