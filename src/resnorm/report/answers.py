"""The answer sheet, the report's first section: the assignment's items in its order, each
answered in at most two sentences with its 95 % interval and its verdict, from the numbers of
the study's summary (summary.json) and of its Grad-CAM summary (gradcam.json). An item the
plan did not run is named as not run. The sections after it hold the tables each answer rests
on; what an answer states, the Observations do not state again."""
from __future__ import annotations

from typing import Callable

from resnorm.report.document import Bold, Para, Section, Table
from resnorm.report.faithfulness import paired_ci, share_ci, variants_of
from resnorm.report.format import (METRIC_WORDS, ci_pct, diff_ci, metric_label, p_value, pts,
                                   signed_pts, val)
from resnorm.report.observations import Facts, difference_text
from resnorm.report.roles import group_labels, norm_kind
from resnorm.report.summary import primary_metric
from resnorm.report.verdicts import ADJUSTMENTS
from resnorm.study.execution.records import RunRecord
from resnorm.statistics import INTERACTION_VERDICT

__all__ = ["TITLE", "section_answers", "ITEMS"]

TITLE = "Answer sheet"
SCORED = ("acc", "micro_f1", "macro_f1")


def _baseline(f: Facts) -> RunRecord | None:
    """The Part 1.1 model: the design's sanity reference, else the first PyTorch-BN run that
    is not a literal-recipe run."""
    literal = {lit.name for lit, _ in f.roles.literal}
    if f.roles.sanity is not None:
        return f.roles.sanity[0]
    return next((r for r in f.runs if norm_kind(r) == "torch_bn" and r.name not in literal),
                None)


def _inflated(f: Facts, split: str) -> str:
    return " (inflated)" if ((f.summary.get("splits") or {}).get(split) or {}).get(
        "inflated") else ""


def answer_baseline(f: Facts) -> str:
    """1.1: train, val (and test) accuracy, micro and macro F1 of the PyTorch-BN model."""
    run = _baseline(f)
    if run is None:
        return "Not run: the plan has no run with PyTorch's BatchNorm (norm torch_bn)."
    if not run.ok:
        return f"Not finished: {run.name} is {run.status_text}."
    splits = [s for s in ("train", "val", "test") if f.stat(run.name, f"{s}_acc")]
    scores = "; ".join(
        f"{split}{_inflated(f, split)} " + ", ".join(
            f"{METRIC_WORDS[m]} {ci_pct(f.stat(run.name, f'{split}_{m}'))}" for m in SCORED)
        for split in splits)
    text = (f"{run.name} (PyTorch's nn.BatchNorm2d, {len(run.done)} seed(s)): {scores}; "
            "curves under Curves.")
    return text + _literal_sentence(f)


def _literal_sentence(f: Facts) -> str:
    """' The literal recipe (...) reached ...': the first literal-recipe run beside its twin."""
    for lit, ref in f.roles.literal:
        if not lit.ok or ref is None or not ref.ok:
            continue
        metric = primary_metric(f.summary)
        c = f.comparison(lit.name, ref.name, metric)
        return (f" The assignment's literal recipe ({lit.name}: "
                f"{val(f.roles.setting(lit, 'optimizer'))}, lr "
                f"{val(f.roles.setting(lit, 'lr'))}) reached "
                f"{ci_pct(f.stat(lit.name, metric))} {metric_label(metric)}: "
                f"{difference_text(c, lit.name, ref.name)}.")
    return ""


def answer_sanity(f: Facts) -> str:
    """2.4: own BN against PyTorch BN, the equivalence test and the curves."""
    eq = f.summary.get("sanity")
    if f.roles.sanity is None or not eq:
        return ("Not run: the plan has no sanity pair (design: sanity: [torch_bn, bn]) with "
                "both runs finished.")
    a, b = eq["a"], eq["b"]
    word = EQUIVALENCE_ANSWERS.get(eq.get("equivalence"), "not computable")
    text = (f"Own BN ({b}) and PyTorch BN ({a}) are {word} in "
            f"{metric_label(eq.get('metric', 'val_acc'))} within ± {pts(eq['tolerance'])}: "
            f"{a} − {b} {diff_ci(eq)}, equivalence test p {p_value(eq.get('p_adjusted'))} "
            f"({ADJUSTMENTS.get(eq.get('adjustment'), 'adjusted')}, primary family).")
    if f.sanity is None:
        return text
    seed = f" (seed {f.sanity['seed']})" if f.sanity.get("seed") is not None else ""
    return text + f" Curve by curve{seed}: {CURVE_VERDICTS[f.sanity['verdict']]}."


CURVE_VERDICTS = {"held": "the curves agree within tolerance at every epoch",
                  "drifted": "the curves agree after epoch 1 and drift apart beyond tolerance "
                             "later, as rounding differences compound",
                  "failed": "the curves differ beyond tolerance already after epoch 1"}
EQUIVALENCE_ANSWERS = {"equivalent": "EQUIVALENT", "not equivalent": "NOT equivalent",
                       "inconclusive": "neither shown equivalent nor different"}


def answer_variants(f: Facts) -> str:
    """2.5: the six variants: their ranking, the best set, how many pairs differ."""
    rk = f.summary.get("ranking") or {}
    if "best_set" not in rk:
        why = rk.get("reason") or "the plan compares fewer than two norm variants"
        return f"Not run: {why} (design: variants)."
    metric = rk["metric"]
    stats = f.summary.get("runs", {})
    mean = lambda n: ((stats.get(n) or {}).get(metric) or {}).get("mean")  # noqa: E731
    order = sorted((n for n in rk["runs"] if mean(n) is not None), key=lambda n: -mean(n))
    ranked = ", ".join(f"{n} {ci_pct(stats[n][metric])}" for n in order)
    best = ", ".join(sorted(rk["best_set"], key=lambda n: -(mean(n) or 0)))
    left = "; ".join((rk.get("left_out") or {}).values())
    text = (f"By {metric_label(metric)}: {ranked}; the best set (the runs the primary "
            f"family's simultaneous intervals cannot put below another) is {{{best}}}"
            f"{f' (not ranked: {left})' if left else ''}.")
    pairs = [c for c in f.summary.get("comparisons", [])
             if c.get("family") == "primary" and c["metric"] == metric
             and c.get("diff") is not None]
    called = sum(c["verdict"] in ("a higher", "b higher") for c in pairs)
    mde = ((f.summary.get("families") or {}).get("primary") or {}).get("mde_points")
    detect = f"; the family detects about {mde:.1f} points with 80 % power" if mde else ""
    return text + (f" {called} of the {len(pairs)} pairs differ after adjustment (each under "
                   f"Observations){detect}." if pairs else "")


def answer_batch(f: Facts) -> str:
    """2.6: is GN less sensitive to the batch size than BN? Each group's change and the
    interaction."""
    inter = f.summary.get("interaction")
    if not inter:
        return ("Not run: the plan has no BN and GN runs at two batch sizes (design: batch).")
    small, large = inter["batch_sizes"]
    names = inter["runs"]
    labels = dict(zip(inter["groups"], group_labels(inter)))
    changes = "; ".join(
        f"{labels[g]} {names[f'{g}_small']} − {names[f'{g}_large']} "
        f"{diff_ci(f.comparison(names[f'{g}_small'], names[f'{g}_large'], inter['metric']) or {})}"
        for g in reversed(inter["groups"]))
    one, two = group_labels(inter)
    move = f"the move from the batch-{large} to the batch-{small} recipe costs"
    verdict = {INTERACTION_VERDICT.format(two): f"{move} {two} less than {one}",
               INTERACTION_VERDICT.format(one): f"{move} {one} less than {two}"}.get(
        inter.get("verdict"), f"whether {move} {two} less than {one} is not distinguishable "
                              "at this scale")
    if inter.get("verdict") == "no clear difference" and inter.get("verdict_unadjusted") not in (
            None, "no clear difference"):
        verdict += " after adjustment"
    return (f"From batch {large} to {small} in {metric_label(inter['metric'])}: {changes}. "
            f"Interaction ({two}'s change − {one}'s) {diff_ci(inter)}, p "
            f"{p_value(inter.get('p_adjusted'))} adjusted (primary family): {verdict}"
            f"{_whole_change(f, names, inter)}.")


def _whole_change(f: Facts, names: dict, inter: dict) -> str:
    """'; the small-batch runs also change lr, patience (...)': the interaction is of all that
    changes with the batch size in the plan, not of the batch size alone."""
    group = inter["groups"][0]
    c = f.comparison(names[f"{group}_small"], names[f"{group}_large"], inter["metric"]) or {}
    others = [x.strip() for x in str(c.get("differs_in") or "").split(",")
              if x.strip() and x.strip() != "batch_size"]
    return (f"; the small-batch runs also change {', '.join(others)}, so it is of that whole "
            "change" if others else "")


def answer_gradcam(f: Facts) -> str:
    """2.7: Grad-CAM of the best model: how faithful its maps are, and their mass on black
    corners."""
    g = f.gradcam
    if g is None:
        return "Not run: no Grad-CAM results (`resnorm gradcam STUDY` makes them)."
    best = variants_of(g)[0]
    who = f"{g['run']} (the run with the highest mean val accuracy)"
    faith = best.get("faithfulness") or {}
    if faith.get("images"):
        gain = paired_ci(faith["road_gradcam"], faith["road_random"])
        text = (f"Maps of {who}, galleries under Grad-CAM: on {faith['images']} correctly "
                f"classified images ROAD rates them {_points(gain)} of the true class's "
                f"probability above a random map: {_faithful_word(gain)}.")
    else:
        text = f"Maps of {who}, galleries under Grad-CAM; their faithfulness was not measured."
    return text + " " + _corner_sentence(best.get("corners") or {})


def _faithful_word(ci) -> str:
    if ci is None:
        return "too few images for an interval"
    _, lo, hi = ci
    if lo > 0:
        return "faithful (the model uses what they point at)"
    if hi < 0:
        return "less faithful than a random map"
    return "not distinguishable from a random map at this scale"


def _corner_sentence(c: dict) -> str:
    if not c.get("images_with_corners"):
        return ("No validation image has flat black corners, so no map can rest on them."
                if c else "Black corners were not measured.")
    if not c.get("cam_share"):
        return f"{c['images_with_corners']:,} validation images have black corners (unscored)."
    excess = paired_ci(c["cam_share"], c["area_share"])
    return (f"On the {c['images_with_corners']:,} of {c.get('total', 0):,} validation images "
            f"with black corners the maps put {share_ci(c['cam_share'])} of their mass on the "
            f"corners, which cover {share_ci(c['area_share'])} of the image "
            f"({_points(excess)}): {_corner_word(excess)}.")


def _points(ci) -> str:
    """'+16.9 points (95 % CI +12.4 to +21.5)' from (mean, lo, hi) as fractions."""
    if ci is None:
        return "— points (too few images for an interval)"
    return (f"{signed_pts(ci[0])} points (95 % CI {signed_pts(ci[1])} to "
            f"{signed_pts(ci[2])})")


def _corner_word(ci) -> str:
    if ci is None:
        return "too few images for an interval"
    if ci[1] > 0:
        return "more than their share, so the model looks at the black corners"
    if ci[2] < 0:
        return "less than their share"
    return "not distinguishable from their share at this scale"


ITEMS: list[tuple[str, str, Callable[[Facts], str]]] = [
    ("1.1", "ResNet with PyTorch's BN: accuracy, micro and macro F1 on train and val",
     answer_baseline),
    ("2.4", "Sanity check: own BN against PyTorch's", answer_sanity),
    ("2.5", "The six variants BN, IN, BIN, LN, GN, NN compared", answer_variants),
    ("2.6", "Batch size: is GN less sensitive to it than BN?", answer_batch),
    ("2.7", "Grad-CAM of the best model", answer_gradcam),
]


def section_answers(f: Facts) -> Section:
    """The assignment's items in order, one row each: the item, what it asks, the answer."""
    rows = [[Bold(item), question, answer(f)] for item, question, answer in ITEMS]
    return Section(TITLE, [
        Para("The assignment's items in its order, answered from this study's own numbers: "
             "scores in % as mean ± 95 % CI half-width, differences in points with their "
             "95 % CI; a difference is stated only when its family's adjusted test rejects "
             "(see Comparisons). The sections below hold the tables behind each answer."),
        Table(["Item", "Asked", "Answer"], rows)])
