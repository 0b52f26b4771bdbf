"""Observations: short statements, each derived from numbers shown in the report's tables.

Each observer gets the `Facts` the sections computed (the runs, their roles, the study's
summary with its intervals, the sanity check, the BIN gates, the Grad-CAM summary) and returns
a sentence, a list of sentences or None; it computes nothing the tables do not show. The
primary family comes first and names the multiplicity method once. A difference between runs
is stated only when its family's adjusted test rejects (and marked exploratory outside the
primary family); otherwise the sentence says it is not distinguishable at this scale, with the
interval.

Each fact is stated once, where it belongs: the answers to the assignment's questions are on
the answer sheet (resnorm.report.answers), and no comparison is stated by two observations
(tests/test_report_answers.py checks both on a study of every role).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from resnorm.report.calibration import calibration_clause
from resnorm.report.format import ci_pct, diff_ci, metric_label, num, pct, signed_pts
from resnorm.report.gallery_data import gallery_tiles, hit_counts, mean_ci, proportion_ci
from resnorm.report.roles import Roles
from resnorm.report.summary import primary_metric
from resnorm.report.verdicts import detectable_text
from resnorm.study.execution.records import RunRecord, best_run
from resnorm.statistics import welch_difference


@dataclass
class Facts:
    runs: list[RunRecord]
    roles: Roles
    summary: dict
    sanity: dict | None
    tol: dict
    gates: dict | None
    gradcam: dict | None

    def stat(self, name: str, metric: str = "val_acc") -> dict | None:
        return (self.summary.get("runs", {}).get(name) or {}).get(metric)

    def comparison(self, a: str, b: str, metric: str = "val_acc") -> dict | None:
        """The summary's a − b (or b − a, negated) comparison of `metric`."""
        for c in self.summary.get("comparisons", []):
            if c["metric"] != metric:
                continue
            if (c["a"], c["b"]) == (a, b):
                return c
            if (c["a"], c["b"]) == (b, a):
                return _flipped(c)
        return None


def _flipped(c: dict) -> dict:
    flip = {"a higher": "b higher", "b higher": "a higher"}
    out = {**c, "a": c["b"], "b": c["a"], "verdict": flip.get(c["verdict"], c["verdict"])}
    if "verdict_unadjusted" in c:
        out["verdict_unadjusted"] = flip.get(c["verdict_unadjusted"], c["verdict_unadjusted"])
    if c.get("diff") is not None:
        out["diff"] = -c["diff"]
    for key in ("ci95", "ci95_simultaneous"):
        if c.get(key):
            out[key] = [-c[key][1], -c[key][0]]
    return out


def observations(facts: Facts) -> list[str]:
    """Short statements, each derived from numbers shown in the report's tables."""
    found = [f(facts) for f in _OBSERVERS]
    items = [o for group in found for o in (group if isinstance(group, list) else [group]) if o]
    return items or ["Nothing to observe yet: no run has finished."]


def difference_text(c: dict | None, a: str, b: str) -> str:
    """'bn higher than gn by +3.1 points (95 % CI ...)' when the family's adjusted test
    rejects, else 'not distinguishable at this scale (difference ..., 95 % CI ...)' ("after
    adjustment" when the raw interval alone excludes 0); "(exploratory)" outside the primary
    family."""
    if c is None or c.get("diff") is None:
        reason = (c or {}).get("reason", "no comparison was made")
        return f"not comparable ({reason})"
    if c["verdict"] == "b higher":  # say it the way round that reads as a gain
        return difference_text(_flipped(c), b, a)
    label = " (exploratory)" if c.get("family") == "exploratory" else ""
    if c["verdict"] == "a higher":
        return f"{a} higher than {b} by {diff_ci(c)}{label}"
    after = (" after adjustment" if c.get("verdict_unadjusted") not in (None, c["verdict"])
             else "")
    return f"not distinguishable at this scale{after} (difference {diff_ci(c)}){label}"


def _obs_families(f: Facts):
    """The multiplicity method, named once: the later sentences say primary or exploratory."""
    fam = f.summary.get("families") or {}
    primary, explore = fam.get("primary"), fam.get("exploratory")
    if not primary or not primary.get("size"):
        return None
    held = calibration_clause(f.summary.get("calibration"))
    how = (f"a joint step-down max-T test on the study's seed-variance model ({held})"
           if primary.get("adjustment") == "max-T"
           else "Holm's step-down adjustment, which keeps the chance of even one false verdict "
                "among them at or below about 5 %")
    return (f"The study's questions form the primary family ({'; '.join(primary['questions'])}"
            f"): {primary['size']} tests with {how}. The other "
            f"{(explore or {}).get('size', 0)} comparisons are exploratory, with "
            "Benjamini–Hochberg adjusted p-values, and labelled so below. A difference is "
            "stated only when its family's adjusted test rejects.")


def _obs_primary_pairs(f: Facts):
    """The primary pairs that differ after adjustment, and how many the raw tests would add."""
    metric = primary_metric(f.summary)
    pairs = [c for c in f.summary.get("comparisons", [])
             if c.get("family") == "primary" and c["metric"] == metric
             and c.get("diff") is not None]
    if not pairs:
        return None
    called = [c for c in pairs if c["verdict"] in ("a higher", "b higher")]
    raw_only = sum(c.get("verdict_unadjusted") in ("a higher", "b higher") for c in pairs) \
        - len(called)
    text = (f"Primary family, {metric_label(metric)}: {len(called)} of the {len(pairs)} "
            "pairs differ")
    if called:
        text += ": " + "; ".join(difference_text(c, c["a"], c["b"]) for c in called)
    if raw_only > 0:
        text += (f". {raw_only} more would have been called on unadjusted 95 % intervals "
                 "alone; after adjustment, not distinguishable at this scale")
    return text + "."


def _obs_detectable(f: Facts):
    """First: what the study could detect (and that it could not, when so)."""
    return detectable_text(f.summary)


def _obs_generalisation(f: Facts):
    best = best_run(f.runs)
    if best is None:
        return None
    tr, va = f.stat(best.name, "train_acc"), f.stat(best.name, "val_acc")
    if not tr or not va:
        return None
    te = f.stat(best.name, "test_acc")
    inflated = [s for s, c in (f.summary.get("splits") or {}).items() if c.get("inflated")]
    test = "test" if "test" in inflated else "the held-out test split"
    scores = (f"{ci_pct(tr)} on train, {ci_pct(va)} on val (which chose its epochs) and "
              f"{ci_pct(te)} on {test}" if te else f"{ci_pct(tr)} on train and {ci_pct(va)} on val")
    note = (f"; its {' and '.join(inflated)} scores are inflated: they include images with a "
            "copy in train" if inflated else "")
    return (f"The run with the highest mean val accuracy, {best.name}, scored {scores} "
            f"(accuracy, mean ± 95 % CI half-width){note}.")


def _compare_shown(a: float, b: float, fmt: Callable[[float], str]) -> int:
    """-1, 0 or 1 as a < b, a == b, a > b — equal when the report shows them equal, so that no
    sentence claims a difference its numbers do not show."""
    if fmt(a) == fmt(b):
        return 0
    return -1 if a < b else 1


def _obs_gates(f: Facts):
    gates = f.gates
    if gates is None:
        return None
    f = gates["furthest"]
    return (f"{gates['run']}'s gates ended at a mean ρ of {num(gates['mean'])} (1 = BN, 0 = IN); "
            f"{gates['below']} of {gates['channels']} channels fell below 0.5, and {f['layer']} "
            f"moved furthest toward IN (mean ρ {num(f['mean'])}).")


def _obs_gradcam(f: Facts):
    g = f.gradcam
    if g is None:
        return None

    out = []
    share = g.get("concentration_top_share", 0.1)
    tiles = gallery_tiles(g)
    conc = {k: [t["concentration"] for t in v if t.get("concentration") is not None]
            for k, v in tiles.items()}
    if conc["correct"] and conc["incorrect"]:
        text = (f"Grad-CAM maps of correctly classified images put {mean_ci(conc['correct'])} "
                f"of their mass in their brightest {share:.0%} of pixels, vs "
                f"{mean_ci(conc['incorrect'])} for misclassified images (a flat map would score "
                f"{share:.0%})")
        d = welch_difference(conc["correct"], conc["incorrect"])
        if d is not None:
            diff, lo, hi = d
            span = f"{signed_pts(diff)} points, 95 % CI {signed_pts(lo)} to {signed_pts(hi)}"
            # one test outside the study's families: BH over a family of one is the raw test
            text += (f": {'more' if lo > 0 else 'less'} concentrated when right ({span}; "
                     "exploratory, Welch)" if lo > 0 or hi < 0 else
                     f": not distinguishable at this scale (difference {span})")
        out.append(text + ".")
    hits = {k: hit_counts(v) for k, v in tiles.items()}
    if hits["correct"][1] and hits["incorrect"][1]:
        out.append(f"In the galleries, the maps' maximum fell inside the object's box for "
                   f"{proportion_ci(*hits['correct'])} of correctly and "
                   f"{proportion_ci(*hits['incorrect'])} of incorrectly classified images.")
    pointing = {k: v for k, v in (g.get("pointing") or {}).items() if math.isfinite(v["score"])}
    if pointing:
        best = max(pointing, key=lambda k: pointing[k]["score"])
        worst = min(pointing, key=lambda k: pointing[k]["score"])
        top, bottom = pointing[best]["score"], pointing[worst]["score"]
        if _compare_shown(top, bottom, pct) == 0:
            text = (f"In the pointing game, the maps of all {len(pointing)} scored runs hit the "
                    f"object's box equally often ({_share(pointing[best])})")
        else:
            text = (f"In the pointing game, {best}'s maps hit the object's box most often "
                    f"({_share(pointing[best])}) and {worst}'s least "
                    f"({_share(pointing[worst])}; Wilson 95 % intervals)")
        out.append(text + f"; chance is {pct(pointing[best].get('chance'))}.")
    return out


def _share(p: dict) -> str:

    return proportion_ci(p["hits"], p["total"])


def _obs_problems(f: Facts):
    out = []
    for r in f.runs:
        for t in r.trials:
            who = r.name if len(r.trials) == 1 else f"{r.name} (seed {t.seed})"
            if t.status == "diverged":
                at = (t.final or {}).get("diverged_at")
                where = f" at {_where(at)}" if at else ""
                after = ("its best checkpoint before that is scored with the run's other "
                         "seeds" if t.evaluation("val")
                         else "it has no checkpoint to score, so its run's mean is over the "
                              "seeds that survived")
                out.append(f"{who} diverged{where} (non-finite loss); {after}.")
            elif t.status == "failed":
                out.append(f"{who} failed: {t.error}.")
    unfinished = [r.name for r in f.runs if r.trials and all(
        t.status in ("interrupted", "not started") for t in r.trials)] + [
        r.name for r in f.runs if not r.trials]
    if unfinished:
        out.append(f"{len(unfinished)} planned run(s) have not finished: {', '.join(unfinished)}.")
    absent = [c for c in f.summary.get("comparisons", [])
              if c["metric"] == "val_acc" and c.get("diff") is None]
    if absent:
        out.append(f"{len(absent)} comparison(s) could not be made; the first: {absent[0]['a']} "
                   f"vs {absent[0]['b']} ({absent[0].get('reason')}).")
    return out


def _where(at: Any) -> str:
    if isinstance(at, dict):
        return ", ".join(f"{k} {v}" for k, v in at.items())
    return f"epoch {at}"


# The assignment's questions (the sanity check, the ranking and best set, the batch-size
# interaction, the literal recipe, Grad-CAM's faithfulness and corners) are answered once, on
# the answer sheet (resnorm.report.answers); these state what the answers rest on or add.
_OBSERVERS: list[Callable[[Facts], Any]] = [
    _obs_detectable, _obs_families, _obs_primary_pairs, _obs_generalisation, _obs_gates,
    _obs_gradcam, _obs_problems]
