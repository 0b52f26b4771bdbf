"""The report's first sections: Setup (dataset, machine and versions, recipe per run), Results
(scores of every run, per-class F1, runs not finished) and Curves."""
from __future__ import annotations

import math
import os
import platform
from collections import Counter
from pathlib import Path
from typing import Any

from resnorm import __version__
from resnorm.data.cache import split_label
from resnorm.report.document import Block, Bold, Bullets, Img, Para, Section, Sub, Table
from resnorm.report.figures import plot_overlay, run_curves
from resnorm.report.format import ci_pct, lr_rule_text, num, pct, secs, val
from resnorm.report.roles import Roles, nested, seeds_mean_of
from resnorm.study.execution.locks import held_by
from resnorm.study.execution.records import RunRecord, best_run
from resnorm.statistics import t_interval


def section_setup(runs, manifest, plan, summary: dict, roles: Roles) -> Section:
    s = Section("Setup")
    if plan.get("description"):
        s.add(Para(f"Plan: {plan['description']}"))
    s.add(Sub("Dataset"))
    if manifest is None:
        s.add(Para("The prepared dataset's manifest was not found (no run points to a cache)."))
    else:
        s.add(_dataset_table(manifest, summary.get("splits") or {}))
    s.add(Para(_split_roles(summary.get("splits") or {}, manifest)))
    s.add(Sub("Machine and versions"))
    s.add(_machine_table(runs))
    s.add(Sub("Recipe per run"))
    tuned = " Tuned: each variant and batch run at its own lr, chosen on val (see Tuning)."
    s.add(Para(f"Learning rate across batch sizes — {lr_rule_text(plan)}."
               + (tuned if plan.get("tune") else "")))
    s.add(Table(["Run", "Norm", "n", "Batch", "Epochs", "Patience", "Recipe", "Optimizer", "lr",
                 "Schedule", "Weight decay", "Augment", "Seeds"],
                [[r.name] + [val(roles.setting(r, k)) for k in
                             ("norm", "n", "batch_size", "epochs", "patience", "recipe",
                              "optimizer", "lr", "schedule", "weight_decay", "augment")]
                 + [", ".join(str(t.seed) for t in r.trials)]
                 for r in runs if r.name in roles.resolved]))
    return s


def _split_roles(splits: dict, manifest: dict | None) -> str:
    """What each split did in the study, in words."""
    val_name = split_label(manifest or {}, "val")
    text = (f"Splits: train fits the models; {val_name} chooses each run's best epoch, early "
            "stopping and the best variant, so its scores carry selection bias (they flatter "
            "the runs a little)")
    if "test" in splits:
        return text + ("; test is scored once per run, at the end, and chooses nothing: its "
                       "scores are the held-out estimate.")
    if val_name != "val":
        return text + ("; there is no other held-out split (the dataset has no val/ folder), so "
                       "no score here is free of selection.")
    return text + "; the dataset has no test split, so no score here is free of selection."


def _scored_rows(m: dict, splits: dict) -> list[list[str]]:
    """Per evaluated split: how many images were scored, and what happened to those with a
    copy in train (left out, or kept and inflating the scores)."""
    rows = []
    for split, c in splits.items():
        name = split_label(m, split)
        if c.get("inflated"):
            text = (f"all {c['images']:,}, {c['leaked']:,} of them with an exact or near copy "
                    f"in train, kept (keep_leaked): {name} scores are INFLATED")
        elif c["leaked"]:
            choice = " and of choosing epochs" if split == "val" else ""
            text = (f"{c['scored']:,} of {c['images']:,}: {c['leaked']:,} left out of every "
                    f"score{choice} (an exact or near copy in train)")
        else:
            text = f"all {c['images']:,} (none has a copy in train)"
        rows.append([f"Scored {name} images", text])
    return rows


def _dataset_table(m: dict, splits: dict) -> Table:
    counts = ", ".join(f"{split_label(m, name)} {info.get('count', 0):,}"
                       for name, info in m.get("splits", {}).items())
    params = m.get("params", {})
    kind = "SYNTHETIC stand-in (resnorm synth)" if m.get("synthetic") else "real images"
    rows = [["Source", f"{m.get('root', '?')} — {kind}"],
            ["Classes", str(len(m.get("classes", [])))],
            ["Images", counts or "—"],
            ["Prepared as", f"{params.get('size', '?')}×{params.get('size', '?')} "
                            f"({params.get('resize', '?')})"]]
    rows.append(["Ignored files", f"{len(m.get('ignored', []))} (hidden or not an image)"])
    skipped = m.get("skipped", [])
    reasons = Counter(_reason(s) for s in skipped)
    why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
    rows.append(["Skipped files", f"{len(skipped)} ({why})" if skipped else "0"])
    audit = m.get("audit")
    if isinstance(audit, dict):
        rule = audit.get("near_rule") or (f"dHash distance <= {audit['near_threshold_bits']} "
                                          "bits" if "near_threshold_bits" in audit else None)
        rows.append(["Exact duplicate pairs", _pair_counts(audit.get("exact_pair_counts"))])
        rows.append(["Near-duplicate pairs", _pair_counts(audit.get("near_pair_counts"))
                     + (f" ({rule})" if rule else "")])
        rows.append(["Images with a copy in train", _leaks(audit.get("leaked_into_train"), m)])
        if audit.get("black_corners"):  # the fill of rotations/shifts: a cue besides the bird
            rows.append(["Images with flat black corners",
                         _leaks(audit["black_corners"]["images"], m)
                         + f" ({audit['black_corners']['rule']})"])
    return Table(["", ""], rows + _scored_rows(m, splits))


def _leaks(leaked: dict | None, m: dict) -> str:
    """'val: 12 of 7,500 (0.2%)' per split: images with an exact or near copy in train."""
    if not leaked:
        return "none"
    parts = []
    for split, n in leaked.items():
        total = m.get("splits", {}).get(split, {}).get("count")
        name = split_label(m, split)
        parts.append(f"{name}: {n:,} of {total:,} ({pct(n / total)})" if total else
                     f"{name}: {n:,}")
    return ", ".join(parts)


def _reason(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry.get("reason", "unknown")).split(":")[0]
    if isinstance(entry, (list, tuple)) and len(entry) > 1:
        return str(entry[1]).split(":")[0]
    return "unknown"


def _pair_counts(d: Any) -> str:
    """'train/val: 1,133, train/train: 1': pairs per combination of splits."""
    if not d:
        return "none"
    return ", ".join(f"{k}: {v:,}" for k, v in d.items())


def _machine_table(runs: list[RunRecord]) -> Table:
    import torch

    def distinct(*keys: str) -> str:
        found = []
        for r in runs:
            value = nested(r.config, *keys)
            if value is not None and str(value) not in found:
                found.append(str(value))
        return ", ".join(found) or "—"

    devices = sorted({f"{nested(r.config, 'environment.device') or r.config.get('device')} "
                      f"({nested(r.config, 'environment.device_name') or '?'})"
                      for r in runs if r.config})
    rows = [["Runs trained on", ", ".join(devices) or "—"],
            ["Platform (training)", distinct("environment.platform")],
            ["Mixed precision (training)", distinct("environment.amp")],
            ["Versions (training)", "torch " + distinct("environment.torch") + ", resnorm "
             + distinct("environment.resnorm") + ", git " + distinct("environment.git_commit")],
            ["Report written on", f"{platform.node() or '?'}: {platform.platform()}, "
                                  f"{os.cpu_count()} CPU cores, Python "
                                  f"{platform.python_version()}, torch {torch.__version__}, "
                                  f"resnorm {__version__}"]]
    return Table(["", ""], rows)


def section_results(runs: list[RunRecord], summary: dict, roles: Roles) -> Section:
    s = Section("Results")
    seeds = sorted({len(r.done) for r in runs if r.done})
    splits = summary.get("splits") or {}
    has_test = "test" in splits
    s.add(Para("Best checkpoint (by val accuracy) of each seed evaluated in eval mode on the "
               f"train split and the scored images of val{' and test' if has_test else ''} "
               "(see Setup) without augmentation; "
               "each score is the mean over the run's finished seeds ± half the width of its "
               "95 % interval (seeds and images; see Comparisons for the method). A diverged "
               "seed is counted under Diverged and scored at its best checkpoint before the "
               "divergence (a seed without one is named in the run's method). Seeds per "
               f"run: {', '.join(map(str, seeds)) or '—'}. Micro F1 equals accuracy for "
               "single-label classification; both are shown because the assignment asks for "
               "both. " + _selection_note(splits)))
    done = [r for r in runs if r.final is not None]
    best = best_run(runs)
    stats = summary.get("runs", {})
    val_mark = " †" if (splits.get("val") or {}).get("inflated") else ""
    test_mark = " †" if (splits.get("test") or {}).get("inflated") else ""
    rows = [_results_row(r, stats.get(r.name, {}), roles, r is best, has_test) for r in done]
    test_heads = [f"Test acc{test_mark}", f"Test macro F1{test_mark}"] if has_test else []
    s.add(Table(["Run", "Norm", "Batch", "Seeds", "Diverged", "Status", "Epochs (best)",
                 "Train acc",
                 "Train micro F1", "Train macro F1", f"Val acc{val_mark}",
                 f"Val micro F1{val_mark}", f"Val macro F1{val_mark}", *test_heads,
                 "Wall time", "Images/s", "Parameters"], rows))
    if val_mark or test_mark:
        s.add(Para("† Inflated: these splits include images with an exact or near copy in "
                   "train (kept on request, keep_leaked), so part of these scores was measured "
                   "on what the models trained on. They are not held-out scores."))
    if any(len(r.done) > 1 for r in done):
        s.add(Para("Epochs (best) are those of the run's representative seed: the one whose "
                   "val accuracy is closest to the run's mean. Wall time and images/s are means "
                   "over seeds."))
    s.add(*_per_class_table(_comparison_runs(done, roles)))
    missing = [r for r in runs if r.final is None or any(not t.ok for t in r.trials)]
    if missing:
        s.add(Sub("Not finished"), Bullets([_missing_text(r) for r in missing]))
    return s


def _results_row(r: RunRecord, entry: dict, roles: Roles, best: bool, has_test: bool) -> list:
    """A run's row of the results table: its settings, then each score ± its half-width."""
    cell = lambda metric: ci_pct(entry.get(metric))  # noqa: E731
    va = cell("val_acc")
    test = [cell("test_acc"), cell("test_macro_f1")] if has_test else []
    return [r.name, val(roles.setting(r, "norm")), val(roles.setting(r, "batch_size")),
            str(len(r.done)), str(entry.get("diverged", 0)), r.status_text,
            f"{r.final.get('epochs_run', '—')} ({r.final.get('best_epoch', '—')})",
            cell("train_acc"), cell("train_micro_f1"), cell("train_macro_f1"),
            Bold(va) if best else va, cell("val_micro_f1"), cell("val_macro_f1"),
            *test, secs(_mean_final(r, "wall_time_s")),
            num(seeds_mean_of(r, "images_per_s"), 0), f"{r.final.get('parameters', 0):,}"]


def _selection_note(splits: dict) -> str:
    """What the val and test columns measure: val chose epochs (selection bias), test did not."""
    if "test" in splits:
        c = splits["test"]
        return (f"Val chose each seed's best epoch (and early stopping), so val scores carry "
                f"selection bias; test ({c['scored']:,} images) was scored once per run and "
                "chose nothing: its scores are the held-out estimate.")
    return ("Val chose each seed's best epoch (and early stopping), so val scores carry "
            "selection bias; the dataset has no test split to give a held-out estimate.")


def _mean_final(r: RunRecord, key: str) -> float | None:
    values = [t.final.get(key) for t in r.done if isinstance(t.final.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def _comparison_runs(done: list[RunRecord], roles: Roles) -> list[RunRecord]:
    """The norm variants when the study has them, else every finished run."""
    variants = [r for r in roles.variants if r.ok]
    return variants if len(variants) >= 2 else [r for r in done if r.ok]


def _per_class_table(runs: list[RunRecord]) -> list[Block]:
    """Val F1 per class (rows) and run (columns): where the variants differ. Mean over seeds
    ± half the 95 % t interval over seeds (with one seed: the value, no interval)."""
    runs = [r for r in runs if all(isinstance(t.evaluation("val").get("per_class_f1"), list)
                                   for t in r.done)]
    if not runs:
        return []
    classes = runs[0].final.get("classes") or []
    rows = []
    for k, name in enumerate(classes):
        rows.append([name] + [_seed_mean_ci([t.evaluation("val")["per_class_f1"][k]
                                             for t in r.done
                                             if k < len(t.evaluation("val")["per_class_f1"])])
                              for r in runs])
    note = ("mean over seeds ± half the 95 % t interval over seeds" if
            any(len(r.done) > 1 for r in runs) else
            "one seed per run, so no interval: these rest on the few val images of each class")
    return [Sub("Per-class val F1"), Para(f"Per class: {note}."),
            Table(["Class"] + [r.name for r in runs], rows)]


def _seed_mean_ci(values: list[float]) -> str:
    ci = t_interval(values)
    if ci is None:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        return pct(finite[0]) if finite else "—"
    return f"{100 * ci[0]:.1f} ± {100 * (ci[2] - ci[0]):.1f}"


def _missing_text(r: RunRecord) -> str:
    parts = []
    for t in r.trials:
        if t.ok:
            continue
        who = f"{r.name} (seed {t.seed})" if len(r.trials) > 1 else r.name
        if t.status == "failed":
            parts.append(f"{who}: failed — {t.error or 'see its error.txt'}")
        elif (holder := held_by(t.dir)) is not None:
            parts.append(f"{who}: being trained by {holder} ({len(t.rows)} epoch(s) so far)")
        elif t.status == "interrupted":
            parts.append(f"{who}: interrupted after {len(t.rows)} epoch(s); re-run the study "
                         "to resume it")
        elif t.status == "diverged":
            parts.append(f"{who}: diverged (non-finite loss); "
                         + ("scored at its best checkpoint before that" if t.evaluation("val")
                            else "no checkpoint to score: its run's mean is over the others"))
        else:
            parts.append(f"{who}: not started")
    return "; ".join(parts) or f"{r.name}: not started"


def section_curves(runs, roles, assets: Path) -> Section:
    s = Section("Curves")
    shown = [r for r in roles.variants if r.rows]
    if len(shown) >= 2:
        s.add(Img(plot_overlay(shown, assets / "overlay.png"),
                  "Validation accuracy and loss of the norm variants (same recipe, batch size "
                  f"{val(roles.setting(shown[0], 'batch_size'))}); PyTorch BN dashed."))
    if len(shown) >= 2 and any(len(r.done) > 1 for r in shown):
        s.blocks[-1].caption += " Lines: mean over seeds; bands: lowest to highest seed."
    for r in runs:
        path = run_curves(r, assets)
        if path is not None:
            rep = r.representative
            which = (f" (seed {rep.seed}, the representative of its {len(r.done)} seeds)"
                     if len(r.done) > 1 else "")
            s.add(Img(path, f"{r.name}{which}: error (loss), accuracy, micro F1 and macro F1 "
                            "per epoch, train (solid) and val (dashed).", narrow=True))
    if len(s.blocks) == 0:
        s.add(Para("No run has finished an epoch yet."))
    return s
