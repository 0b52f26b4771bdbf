"""The comparisons between runs: the sanity check (PyTorch BN vs own BN: an equivalence test on
the primary metric, test accuracy where there is a test split, else val accuracy; and curve by
curve for one seed), batch size (BN vs GN, with the interaction),
and the table of every pair of runs that differ in one setting (from the study's summary)."""
from __future__ import annotations

import math
from pathlib import Path

from types import SimpleNamespace

from resnorm.norms import norm_info
from resnorm.report.document import Bold, Img, Para, Section, Sub, Table
from resnorm.report.figures import plot_batch, plot_sanity
from resnorm.report.verdicts import (detectable_text, p_adjusted, primary_blocks,
                                     ranking_blocks, simultaneous_ci, verdict_cell)
from resnorm.report.format import (ci_pct, diff_ci, fine_pct, fine_pts, lr_rule_text,
                                   metric_label, num, p_value, pct, pts, secs, signed_pts, val)
from resnorm.report.roles import Roles, group_labels, seeds_mean_of, val_count
from resnorm.report.summary import METHOD, primary_metric
from resnorm.study.execution.records import RunRecord
from resnorm.statistics import INTERACTION_VERDICT

CURVE_COLUMNS = ("train_loss", "train_acc", "train_micro_f1", "train_macro_f1",
                 "val_loss", "val_acc", "val_micro_f1", "val_macro_f1")


def _difference(column: str, x: float, y: float) -> float:
    """|x - y|, relative to the larger magnitude for loss curves; inf when not finite."""
    d = abs(x - y)
    if column.endswith("loss"):
        d = d / max(abs(x), abs(y), 1e-12)
    return d if math.isfinite(d) else math.inf


def sanity_diffs(a: RunRecord, b: RunRecord) -> list[dict]:
    """Per curve: the difference after epoch 1 and the largest over the epochs both runs have."""
    out = []
    pairs = list(zip(a.rows, b.rows))
    for column in CURVE_COLUMNS:
        diffs = [(_difference(column, ra[column], rb[column]), ra["epoch"]) for ra, rb in pairs]
        worst, at = max(diffs, key=lambda t: t[0]) if diffs else (0.0, None)
        out.append({"curve": column, "first": diffs[0][0] if diffs else None,
                    "max_diff": worst, "epoch": at, "relative": column.endswith("loss")})
    return out


def sanity_verdict(diffs: list[dict], tol: dict) -> str:
    """'held' (within tolerance throughout), 'drifted' (matched after epoch 1, apart later,
    as rounding differences compound) or 'failed' (apart already after epoch 1)."""
    if not diffs or not all(_within(d, "first", tol) for d in diffs):
        return "failed"
    return "held" if all(_within(d, "max_diff", tol) for d in diffs) else "drifted"


def _within(d: dict, which: str, tol: dict) -> bool:
    limit = tol["first_epoch"] if which == "first" else tol["loss" if d["relative"] else "metric"]
    return d[which] is not None and d[which] <= limit


VERDICTS = {"held": "HELD: the curves agree within tolerance at every epoch",
            "drifted": "the curves agree after epoch 1, so the two layers compute the same "
                       "thing, but drifted apart beyond tolerance later, as rounding "
                       "differences compound over training",
            "failed": "FAILED: the curves differ beyond tolerance already after epoch 1"}


EQUIVALENCE = {"equivalent": "EQUIVALENT: the equivalence test (TOST) rejects a difference "
                              "of ± the tolerance or more, after the primary family's "
                              "adjustment",
               "not equivalent": "NOT EQUIVALENT: the simultaneous 95 % interval of the "
                                 "difference lies outside ± the tolerance",
               "inconclusive": "INCONCLUSIVE: neither equivalence nor a difference beyond the "
                               "tolerance is shown; more seeds or images would decide",
               "not computable": "not computable"}


def _same_seed(a: RunRecord, b: RunRecord):
    """The two runs' trials of their first common finished seed (the curve check compares
    runs with the same initialisation and data order), else their representatives."""
    b_by_seed = {t.seed: t for t in b.done}
    for t in a.done:
        if t.seed in b_by_seed:
            return t, b_by_seed[t.seed]
    return a.representative, b.representative


def section_sanity(roles: Roles, tol: dict, assets: Path, summary: dict
                   ) -> tuple[Section, dict | None]:
    s = Section("Sanity check: PyTorch BN vs own BN")
    if roles.sanity is None or not all(r.rows for r in roles.sanity):
        s.add(Para("Needs two finished runs that differ only in norm: torch_bn and bn. "
                   "Not available in this study yet."))
        return s, None
    a, b = roles.sanity
    eq = summary.get("sanity") or {}
    runs_stats = summary.get("runs", {})
    if eq:
        metric = eq.get("metric", "val_acc")
        s.add(Para(f"Equivalence test on {metric_label(metric)}: {a.name} "
                   f"{ci_pct(runs_stats.get(a.name, {}).get(metric))}, {b.name} "
                   f"{ci_pct(runs_stats.get(b.name, {}).get(metric))}; difference "
                   f"{diff_ci(eq)}, simultaneous 95 % CI {simultaneous_ci(eq)}; tolerance ± "
                   f"{pts(eq['tolerance'])}; TOST p {p_value(eq.get('p'))}, adjusted "
                   f"{p_adjusted(eq)} (primary family). Verdict: "
                   f"{EQUIVALENCE.get(eq.get('equivalence'), '?')}."))
    ta, tb = _same_seed(a, b)
    diffs = sanity_diffs(ta, tb)
    verdict = sanity_verdict(diffs, tol)
    seed = f" (seed {ta.seed})" if ta.seed is not None and ta.seed == tb.seed else ""
    s.add(Para(f"Curve by curve{seed}: {a.name} uses PyTorch's nn.BatchNorm2d, {b.name} the "
               "from-scratch BatchNorm2d. With the same seed they share initialisation and "
               "data order, so any difference is numerical; it starts tiny and grows with "
               "training, as small differences compound. "
               f"Tolerance after epoch 1: {pts(tol['first_epoch'])} on accuracy/F1 and "
               f"{pct(tol['first_epoch'])} relative on loss; over all epochs: "
               f"{pts(tol['metric'])} and {pct(tol['loss'])}." + _granularity(b)))
    rows = []
    for d in diffs:
        fmt = (lambda x: fine_pct(x) + " rel.") if d["relative"] else fine_pts
        yes = lambda ok: "yes" if ok else Bold("no")  # noqa: E731
        rows.append([d["curve"], fmt(d["first"]), yes(_within(d, "first", tol)),
                     fmt(d["max_diff"]), val(d["epoch"]), yes(_within(d, "max_diff", tol))])
    s.add(Table(["Curve", "After epoch 1", "Within", "Largest difference", "At epoch",
                 "Within"], rows))
    s.add(Para(f"Curve verdict over {min(len(ta.rows), len(tb.rows))} epochs: "
               f"{VERDICTS[verdict]}."))
    s.add(Img(plot_sanity(SimpleNamespace(name=a.name + seed, rows=ta.rows),
                          SimpleNamespace(name=b.name + seed, rows=tb.rows),
                          assets / "sanity.png"),
              f"{b.name} (thick, light) and {a.name} (dashed) on top of each other{seed}."))
    return s, {"a": a, "b": b, "diffs": diffs, "verdict": verdict, "seed": ta.seed,
               "equivalence": eq}


def _granularity(run: RunRecord) -> str:
    n = val_count(run)
    return f" With {n:,} validation images, one image is {pts(1 / n)} of val accuracy." if n else ""


INTERACTION = {"no clear difference": "not distinguishable at this scale",
               "not computable": "not computable"}


def _after_adjustment(c: dict) -> str:
    unadjusted = c.get("verdict_unadjusted")
    if c.get("verdict") == "no clear difference" and unadjusted not in (None, c["verdict"]):
        return " after adjustment (the 95 % interval alone excludes 0)"
    return ""


def section_batch(roles: Roles, plan: dict, assets: Path, summary: dict) -> Section:
    norms = roles.design.norms
    labels = [norm_info(norms.get(m.run, g)).label for g, ms in roles.design.batch.items()
              for m in ms[:1]]
    s = Section("Batch size: " + " vs ".join(labels) if labels else "Batch size")
    s.add(Para(f"Learning-rate rule across batch sizes: {lr_rule_text(plan)}."))
    if not roles.batch:
        s.add(Para("Needs the design's batch groups: runs of a norm at two or more batch sizes "
                   "with otherwise the same recipe. Not available in this study yet."))
        return s
    runs_stats = summary.get("runs", {})
    metric = primary_metric(summary)
    groups = {k: [r for r in g if r.ok] for k, g in roles.batch.items()}
    groups = {k: g for k, g in groups.items() if g}
    if groups:
        batch = {r.name: roles.setting(r, "batch_size") for g in groups.values() for r in g}
        s.add(Img(plot_batch(groups, batch, assets / "batch_size.png", runs_stats, metric),
                  f"Best-checkpoint {metric_label(metric)} (mean over seeds, 95 % CI) and mean "
                  "time per epoch against batch size."))
    has_test = "test" in (summary.get("splits") or {})
    records = {r.name: r for members in roles.batch.values() for r in members}
    rows = [_batch_row(records[m.run], roles, runs_stats, has_test)
            for ms in roles.design.batch.values() for m in ms if m.run in records]
    s.add(Table(["Run", "Norm", "Batch", "lr", "Patience", "Status", "Seeds", "Val acc",
                 "Val macro F1", *(["Test acc"] if has_test else []), "Epochs run",
                 "Best epoch", "Time/epoch", "Images/s"], rows))
    inter = summary.get("interaction")
    if inter:
        s.add(Para(_interaction_text(inter)))
    return s


def _batch_row(r: RunRecord, roles: Roles, runs_stats: dict, has_test: bool) -> list[str]:
    """One run of a batch group: its global batch, lr and patience as the study resolved
    them, then its scores."""
    entry = runs_stats.get(r.name, {})
    return [r.name, norm_info(roles.design.norms.get(r.name, "?")).label,
            val(roles.setting(r, "batch_size")), val(roles.setting(r, "lr")),
            val(roles.setting(r, "patience")), r.status_text,
            str(len(r.done)), ci_pct(entry.get("val_acc")), ci_pct(entry.get("val_macro_f1")),
            *([ci_pct(entry.get("test_acc"))] if has_test else []),
            val((r.final or {}).get("epochs_run")), val((r.final or {}).get("best_epoch")),
            secs(seeds_mean_of(r, "epoch_time_s")), num(seeds_mean_of(r, "images_per_s"), 0)]


def _interaction_text(inter: dict) -> str:
    small, large = inter["batch_sizes"]
    first, second = inter["groups"]
    one, two = group_labels(inter)
    sens = inter.get("sensitivity") or {}
    label = metric_label(inter.get("metric", "val_acc"))
    cost = (f" {label[0].upper() + label[1:]} at batch {small} minus at batch {large}: {two} "
            f"{signed_pts(-sens[second])}, {one} {signed_pts(-sens[first])} points." if sens
            else "")
    # what changes with the batch size (lr by the plan's rule, patience) changes too: the
    # test is of that whole change, not of the batch size alone
    whole = "in the move to the small batch (with whatever else changes with it: see the table)"
    verdict = {INTERACTION_VERDICT.format(two): f"{two} loses less than {one} {whole}",
               INTERACTION_VERDICT.format(one): f"{one} loses less than {two} {whole}"}
    return (f"Does the move from the batch-{large} to the batch-{small} recipe cost {two} "
            f"less than {one}? The small-batch runs "
            "also change what the table shows changing with the batch size (the learning rate "
            "by the plan's rule, the patience), so the test is of that whole change, not of the "
            "batch size alone. "
            f"The interaction ({two} at {small} − {two} at {large}) − ({one} at {small} − "
            f"{one} at {large}) in {label} is {diff_ci(inter)}, p {p_value(inter.get('p'))}, "
            f"adjusted {p_adjusted(inter)} (primary family): "
            f"{verdict.get(inter.get('verdict'), INTERACTION.get(inter.get('verdict'), '?'))}"
            f"{_after_adjustment(inter)}.{cost}")


SPLIT_HEADINGS = {"val": "On val (it chose the epochs: selection bias)",
                  "test": "On test (held out: it chose nothing)"}


def section_comparisons(summary: dict, assets: Path) -> Section:
    """What the study could detect (first: it says so when it cannot detect the differences
    it asks about), the primary family (the study's questions, adjusted together, with
    simultaneous intervals), the ranking of the variants as a best set, then every pair of runs that differ in one
    setting (and the plan's `comparisons:`), on val and, where the dataset has one, on test:
    the difference in accuracy and macro F1 with its 95 % CI, raw and adjusted p and the
    adjusted verdict."""
    s = Section("Comparisons")
    detectable = detectable_text(summary)
    if detectable:
        s.add(Para(detectable))
    s.add(Para(METHOD))
    s.add(*primary_blocks(summary))
    s.add(*ranking_blocks(summary, assets))
    pairs: dict[tuple[str, str], dict[str, dict]] = {}
    for c in summary.get("comparisons", []):
        pairs.setdefault((c["a"], c["b"]), {})[c["metric"]] = c
    if not pairs:
        s.add(Para("No two runs of the plan differ in exactly one setting."))
        return s
    explore = (summary.get("families") or {}).get("exploratory") or {}
    if explore.get("method"):
        s.add(Sub("Every pair"), Para(
            explore["method"] + " The primary family's cells carry its adjusted p (above); "
            "a difference marked exploratory is a lead for another study, not a finding."))
    for split, heading in SPLIT_HEADINGS.items():
        metrics = (f"{split}_acc", f"{split}_macro_f1")
        if any(m in by_metric for by_metric in pairs.values() for m in metrics):
            s.add(Sub(heading), _comparison_table(pairs, metrics))
    return s


def _comparison_table(pairs: dict[tuple[str, str], dict[str, dict]],
                      metrics: tuple[str, str]) -> Table:
    rows = []
    for (a, b), by_metric in pairs.items():
        row = [a, b, next(iter(by_metric.values())).get("differs_in", "—")]
        for metric in metrics:
            c = by_metric.get(metric)
            if c is None:
                row += ["—", "—", "—", "—"]
                continue
            row += [diff_ci(c), p_value(c.get("p")), p_adjusted(c), verdict_cell(c, a, b)]
        rows.append(row)
    heads = [f"{metric_label(m, capital=True)} a − b (95 % CI)" for m in metrics]
    return Table(["a", "b", "Differs in", heads[0], "p", "p adjusted", "Verdict", heads[1],
                  "p", "p adjusted", "Verdict"], rows)
