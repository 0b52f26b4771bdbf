"""Observations: short statements, each derived from numbers shown in the report's tables.

Each observer gets the `Facts` the sections computed (the runs, their roles, the study's
summary with its intervals, the sanity check, the BIN gates, the Grad-CAM summary) and returns
a sentence, a list of sentences or None; it computes nothing the tables do not show. The
primary family comes first and names the multiplicity method once. A difference between runs
is stated only when its family's adjusted test rejects (and marked exploratory outside the
primary family); otherwise the sentence says it is not distinguishable at this scale, with the
interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from resnorm.report.format import (ci_pct, diff_ci, fine_pct, fine_pts, metric_label, num,
                                   p_value, pct, pts, signed_pts, val)
from resnorm.report.gallery_data import gallery_tiles, hit_counts, mean_ci, proportion_ci
from resnorm.report.roles import Roles, group_labels
from resnorm.report.summary import primary_metric
from resnorm.report.verdicts import best_sentence, detectable_text
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


def _primary(f: Facts) -> tuple[str, str, str]:
    """The primary metric (test accuracy where there is a test split, else val accuracy) as
    (metric, split, key)."""
    metric = primary_metric(f.summary)
    split, key = metric.split("_", 1)
    return metric, split, key


def _obs_families(f: Facts):
    """The multiplicity method, named once: the later sentences say primary or exploratory."""
    fam = f.summary.get("families") or {}
    primary, explore = fam.get("primary"), fam.get("exploratory")
    if not primary or not primary.get("size"):
        return None
    how = ("a joint step-down max-T test on the study's seed-variance model, which held the "
           "chance of even one false verdict among them near 5 % (3–7 %) in simulated studies"
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


def _obs_ranking(f: Facts):
    rk = f.summary.get("ranking")
    if not rk or "best_set" not in rk:
        return None
    return best_sentence(rk, f.summary.get("runs")) + " (see the ranking under Comparisons)."


def _obs_detectable(f: Facts):
    """First: what the study could detect (and that it could not, when so)."""
    return detectable_text(f.summary)


def _obs_best_worst(f: Facts):
    metric, split, key = _primary(f)
    scored = [(r, r.score(split, key)) for r in _ranked(f) if r.ok]
    scored = [(r, a) for r, a in scored if a is not None]
    if len(scored) < 2:
        return None
    best, _ = max(scored, key=lambda t: t[1])
    worst, _ = min(scored, key=lambda t: t[1])
    c = f.comparison(best.name, worst.name, metric)
    held_out = " (held out: the test split chose nothing)" if split == "test" else ""
    chosen = (f.summary.get("ranking") or {}).get("best_set")
    chance = ("" if chosen is None else "; in the best set" if best.name in chosen
              else "; not in the best set")
    return (f"Among the {len(scored)} norm variants, {best.name} had the highest mean "
            f"{metric_label(metric)}{held_out} ({ci_pct(f.stat(best.name, metric))}{chance}) "
            f"and {worst.name} the lowest ({ci_pct(f.stat(worst.name, metric))}): "
            f"{difference_text(c, best.name, worst.name)}.")


def _ranked(f: Facts) -> list[RunRecord]:
    """The runs the ranking orders (the primary family's), else the norm variants."""
    names = (f.summary.get("ranking") or {}).get("runs")
    if not names:
        return list(f.roles.variants)
    by_name = {r.name: r for r in f.runs}
    return [by_name[n] for n in names if n in by_name]


def _obs_variants_vs_best(f: Facts):
    """Which variants the best one is (and is not) distinguishable from; a lead over every
    other variant is claimed only when every comparison was made and rejected."""
    metric, split, key = _primary(f)
    scored = [r for r in _ranked(f) if r.ok and r.score(split, key) is not None]
    if len(scored) < 3:
        return None
    best = max(scored, key=lambda r: r.score(split, key))
    left_out = list(((f.summary.get("ranking") or {}).get("left_out") or {}))
    tied, untested = [], []
    for name in [r.name for r in scored] + left_out:  # a variant not scored counts too
        if name == best.name:
            continue
        c = f.comparison(best.name, name, metric)
        if c is None or c.get("diff") is None or c["verdict"] == "not computable":
            untested.append(name)
        elif c["verdict"] != "a higher":
            tied.append(name)
    missing = (f" ({', '.join(untested)}: no comparison could be made)" if untested else "")
    if not tied and not untested:
        return (f"{best.name}'s {metric_label(metric)} is above every other variant's after "
                "adjustment (see Comparisons).")
    if not tied:
        return (f"{best.name}'s {metric_label(metric)} is above every other variant it was "
                f"compared with after adjustment{missing}.")
    return (f"{best.name} is not distinguishable at this scale from {', '.join(tied)} in "
            f"{metric_label(metric)} (their adjusted tests do not reject; see Comparisons)"
            f"{missing}.")


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


def _obs_sanity(f: Facts):
    sanity = f.sanity
    if sanity is None:
        return None
    tol = f.tol
    out = []
    eq = sanity.get("equivalence") or {}
    if eq.get("equivalence") in ("equivalent", "not equivalent", "inconclusive"):
        word = {"equivalent": "equivalent", "not equivalent": "not equivalent",
                "inconclusive": "neither shown equivalent nor different"}[eq["equivalence"]]
        out.append(f"Own BN and PyTorch BN are {word} in "
                   f"{metric_label(eq.get('metric', 'val_acc'))} within ± "
                   f"{pts(eq['tolerance'])} (primary family; equivalence test p "
                   f"{p_value(eq.get('p_adjusted'))}, adjusted): {sanity['a'].name} − "
                   f"{sanity['b'].name} {diff_ci(eq)}.")
    pair = f"{sanity['a'].name} and {sanity['b'].name}"
    if sanity.get("seed") is not None:
        pair += f" (seed {sanity['seed']})"
    first = max(sanity["diffs"], key=lambda d: d["first"] - tol["first_epoch"])
    worst_metric = max((d for d in sanity["diffs"] if not d["relative"]),
                       key=lambda d: d["max_diff"])
    worst_loss = max((d for d in sanity["diffs"] if d["relative"]), key=lambda d: d["max_diff"])
    start = (f"after epoch 1 {pair} differ by at most {_diff_text(first, 'first')} "
             f"(on {first['curve']}; tolerance {pts(tol['first_epoch'])} / "
             f"{pct(tol['first_epoch'])})")
    later = (f"over all epochs by up to {fine_pts(worst_metric['max_diff'])} on "
             f"{worst_metric['curve']} (tolerance {pts(tol['metric'])}) and "
             f"{fine_pct(worst_loss['max_diff'])} relative on {worst_loss['curve']} "
             f"(tolerance {pct(tol['loss'])})")
    verdict = sanity["verdict"]
    if verdict == "held":
        out.append(f"The curve check held: {start}; {later}.")
    elif verdict == "drifted":
        out.append(f"The curve check held at the start but not throughout: {start}, yet "
                   f"{later}; the layers agree, and the runs drift apart as rounding "
                   "differences compound.")
    else:
        out.append(f"The curve check failed: {start}.")
    return out


def _diff_text(d: dict, which: str) -> str:
    return fine_pct(d[which]) + " relative" if d["relative"] else fine_pts(d[which])


def _compare_shown(a: float, b: float, fmt: Callable[[float], str]) -> int:
    """-1, 0 or 1 as a < b, a == b, a > b — equal when the report shows them equal, so that no
    sentence claims a difference its numbers do not show."""
    if fmt(a) == fmt(b):
        return 0
    return -1 if a < b else 1


def _obs_batch(f: Facts):
    inter = f.summary.get("interaction")
    if not inter:
        return None
    small, large = inter["batch_sizes"]
    names = inter["runs"]
    first, second = inter["groups"]
    one, two = group_labels(inter)

    def within(group: str) -> str:
        a, b = names[f"{group}_small"], names[f"{group}_large"]
        return difference_text(f.comparison(a, b), a, b)

    text = f"Batch {small} against {large}: {two} {within(second)}; {one} {within(first)}."
    change = _recipe_change(f, names, first)
    verdict = inter.get("verdict")
    if verdict == f"{two} less sensitive":
        text += (f" {two} is less sensitive than {one} to the move from batch {large} to "
                 f"{small}{change}: interaction {diff_ci(inter)}.")
    elif verdict == f"{one} less sensitive":
        text += (f" {one} is less sensitive than {two} to the move from batch {large} to "
                 f"{small}{change}: interaction {diff_ci(inter)}.")
    elif verdict == "no clear difference":
        after = (" after adjustment" if inter.get("verdict_unadjusted") not in (None, verdict)
                 else "")
        text += (f" Whether {two} is less sensitive to the batch size than {one} is not "
                 f"distinguishable at this scale{after} (interaction {diff_ci(inter)}).")
    return text


def _recipe_change(f: Facts, names: dict, group: str) -> str:
    """' (which also changes lr, patience)' when more than the batch size differs between the
    runs at the two sizes: the interaction is then of the whole change, not the batch alone."""
    c = f.comparison(names[f"{group}_small"], names[f"{group}_large"]) or {}
    others = [x.strip() for x in str(c.get("differs_in") or "").split(",")
              if x.strip() and x.strip() != "batch_size"]
    return f" (which also changes {', '.join(others)})" if others else ""


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


def _obs_literal(f: Facts):
    out = []
    for lit, ref in f.roles.literal:
        if not lit.ok:
            continue
        text = (f"The literal recipe ({lit.name}: {val(f.roles.setting(lit, 'optimizer'))}, "
                f"lr {val(f.roles.setting(lit, 'lr'))}) reached {ci_pct(f.stat(lit.name))} "
                "val accuracy")
        if ref is not None and ref.ok:
            text += (f", against {ci_pct(f.stat(ref.name))} for {ref.name} with the "
                     f"{val(f.roles.setting(ref, 'recipe'))} recipe: "
                     f"{difference_text(f.comparison(lit.name, ref.name), lit.name, ref.name)}")
        out.append(text + ".")
    return out


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


_OBSERVERS: list[Callable[[Facts], Any]] = [
    _obs_detectable, _obs_families, _obs_primary_pairs, _obs_ranking, _obs_best_worst, _obs_variants_vs_best,
    _obs_sanity, _obs_batch, _obs_generalisation, _obs_gates, _obs_gradcam, _obs_literal,
    _obs_problems]
