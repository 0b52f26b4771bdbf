"""The study report: one self-contained HTML page (images embedded) and a Markdown twin.

`resnorm report STUDY` reads whatever the study folder holds — finished runs, their curves,
the Grad-CAM summary — and writes STUDY/report.html and STUDY/report.md. Runs that are not
finished are listed, never silently left out. Every observation is generated from numbers
that appear in the report's tables; nothing is canned.

The report is built as a small document model (sections of paragraphs, tables, figures,
bullet lists of plain text) and rendered twice; the HTML renderer escapes every string, so a
class folder named `<script>` stays text.

example:
  resnorm report studies/demo
"""
from __future__ import annotations

import argparse
import base64
import html
import math
import os
import platform
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Union

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from resnorm import __version__
from resnorm.errors import UsageError
from resnorm.fileio import atomic_write_text, read_yaml
from resnorm.gradcam import mpl_text
from resnorm.study import (
    PLAN_FILE,
    DEFAULT_TOLERANCE,
    RunRecord,
    best_run,
    collect_runs,
    read_state,
)

__all__ = ["write_report", "build_report", "render_html", "render_markdown",
           "configure_parser", "run_cli"]

ASSETS = "report_assets"
NORM_ORDER = ("torch_bn", "bn", "in", "bin", "ln", "gn", "nn")
NORM_LABELS = {"torch_bn": "PyTorch BN", "bn": "BN", "in": "IN", "bin": "BIN", "ln": "LN",
               "gn": "GN", "nn": "no norm"}
NORM_COLORS = {"torch_bn": "0.45", "bn": "C0", "in": "C1", "bin": "C2", "ln": "C3", "gn": "C4",
               "nn": "C5"}
# Settings that make two runs "the same experiment" apart from the ones a comparison varies.
RECIPE_KEYS = ("n", "shortcut", "size", "resize", "batch_size", "epochs", "recipe", "optimizer",
               "lr", "momentum", "nesterov", "weight_decay", "schedule", "warmup_epochs",
               "gate_lr_mult", "augment", "patience", "min_delta", "seed")
# What the batch-size comparison may vary besides the batch size (lr by the plan's rule, early
# stopping as the assignment asks).
BATCH_KEYS = ("batch_size", "lr", "patience", "min_delta", "epochs", "warmup_epochs")
CURVE_COLUMNS = ("train_loss", "train_acc", "train_micro_f1", "train_macro_f1",
                 "val_loss", "val_acc", "val_micro_f1", "val_macro_f1")


# --- document model ---------------------------------------------------------------------------

@dataclass
class Bold:
    text: str


Cell = Union[str, Bold]


@dataclass
class Para:
    text: str


@dataclass
class Sub:
    title: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""


@dataclass
class Img:
    path: Path
    caption: str
    narrow: bool = False  # small plots are shown at half width in the HTML


Block = Union[Para, Sub, Bullets, Table, Img]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Section":
        self.blocks.extend(blocks)
        return self


@dataclass
class Report:
    title: str
    subtitle: str
    sections: list[Section]
    root: Path  # the study folder: figure paths are shown relative to it in Markdown


# --- number formatting (tables and observations share it, so the numbers match) --------------

def pct(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def pts(x: float) -> str:
    return f"{100 * x:.1f} points"


def num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def fine_pts(x: float) -> str:
    """A (possibly tiny) accuracy difference in points, without rounding it to zero."""
    p = 100 * x
    if p == 0:
        return "0 points"
    return f"{p:.2f} points" if p >= 0.01 else f"{p:.1e} points"


def fine_pct(x: float) -> str:
    """A (possibly tiny) relative difference in percent, without rounding it to zero."""
    p = 100 * x
    if p == 0:
        return "0%"
    return f"{p:.2f}%" if p >= 0.01 else f"{p:.1e}%"


def secs(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    if x < 120:
        return f"{x:.1f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def val(x: Any) -> str:
    """A config value for a table cell."""
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


# --- reading the study ------------------------------------------------------------------------

def norm_kind(run: RunRecord) -> str:
    """The norm's base kind ('gn' for 'gn:8')."""
    return str(run.config.get("norm", "?")).split(":", 1)[0].lower()


def signature(run: RunRecord, drop: Iterable[str] = ()) -> tuple:
    skip = set(drop)
    return tuple((k, run.config.get(k)) for k in RECIPE_KEYS if k not in skip)


def mean_of(run: RunRecord, column: str) -> float | None:
    values = [r[column] for r in run.rows if column in r and math.isfinite(r[column])]
    return sum(values) / len(values) if values else None


@dataclass
class Roles:
    """Which runs each comparison uses, inferred from their configs (see `find_roles`)."""

    variants: list[RunRecord]
    sanity: tuple[RunRecord, RunRecord] | None
    batch: dict[str, list[RunRecord]]
    literal: list[tuple[RunRecord, RunRecord | None]]


def find_roles(runs: list[RunRecord]) -> Roles:
    """The comparisons the assignment asks for, found from run configs rather than names.

    - variants: the largest group of runs that differ only in their norm (one run per norm);
    - sanity: PyTorch BN and own BN among those variants (or any pair differing only in norm);
    - batch: BN and GN runs that differ from the variants only in batch size, lr, early stopping;
    - literal: runs with the literal recipe, each beside the variant with the same norm.
    """
    configured = [r for r in runs if r.config]
    groups: dict[tuple, list[RunRecord]] = {}
    for r in configured:
        groups.setdefault(signature(r, ["norm"]), []).append(r)
    main_sig = max(groups, key=lambda s: len({norm_kind(r) for r in groups[s]}), default=None)
    variants: list[RunRecord] = []
    for r in groups.get(main_sig, []):
        if norm_kind(r) not in {norm_kind(v) for v in variants}:
            variants.append(r)
    variants.sort(key=lambda r: NORM_ORDER.index(norm_kind(r)) if norm_kind(r) in NORM_ORDER
                  else len(NORM_ORDER))

    by_norm = {norm_kind(v): v for v in variants}
    sanity = (by_norm["torch_bn"], by_norm["bn"]) if {"torch_bn", "bn"} <= set(by_norm) else None
    if sanity is None:
        for group in groups.values():
            a = [r for r in group if norm_kind(r) == "torch_bn"]
            b = [r for r in group if norm_kind(r) == "bn"]
            if a and b:
                sanity = (a[0], b[0])
                break

    batch: dict[str, list[RunRecord]] = {}
    if main_sig is not None:
        ref = variants[0]
        base = signature(ref, ["norm", *BATCH_KEYS])
        for kind in ("bn", "gn"):
            members = [r for r in configured if norm_kind(r) == kind
                       and signature(r, ["norm", *BATCH_KEYS]) == base]
            chosen: dict[Any, RunRecord] = {}
            for r in members:  # one run per batch size; the variant itself wins its size
                bs = r.config.get("batch_size")
                if bs not in chosen or r is by_norm.get(kind):
                    chosen[bs] = r
            if len(chosen) >= 2:
                batch[kind] = sorted(chosen.values(), key=lambda r: r.config.get("batch_size") or 0)

    literal = [(r, by_norm.get(norm_kind(r))) for r in configured
               if str(r.config.get("recipe", "")).lower() == "literal" and r not in variants]
    return Roles(variants, sanity, batch, literal)


def _manifest(runs: list[RunRecord]) -> dict | None:
    """The prepared-data manifest the runs were trained on (from a run's cache folder)."""
    from resnorm.data.cache import read_manifest

    for r in runs:
        for folder in (_nested(r.config, "environment.data_cache"), r.config.get("data"),
                       r.config.get("cache")):
            manifest = read_manifest(Path(folder)) if folder else None
            if manifest is not None:
                return manifest
    return None


# --- plots ------------------------------------------------------------------------------------

def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _style(run: RunRecord) -> dict:
    kind = norm_kind(run)
    return {"color": NORM_COLORS.get(kind, "k"), "linestyle": "--" if kind == "torch_bn" else "-",
            "marker": "o" if len(run.rows) < 20 else None, "markersize": 3}


def plot_overlay(runs: list[RunRecord], path: Path) -> Path:
    """Val accuracy and val loss per epoch, one line per variant."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    for r in runs:
        epochs = [row["epoch"] for row in r.rows]
        label = mpl_text(r.name)
        ax_acc.plot(epochs, [row["val_acc"] for row in r.rows], label=label, **_style(r))
        ax_loss.plot(epochs, [row["val_loss"] for row in r.rows], label=label, **_style(r))
    ax_acc.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_loss.set(title="Validation loss (cross-entropy)", xlabel="epoch", ylabel="loss")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8, ncols=2)
    return _save(fig, path)


def plot_sanity(a: RunRecord, b: RunRecord, path: Path) -> Path:
    """PyTorch BN (dashed) over own BN (solid): train loss, val loss, val accuracy."""
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    for ax, column, title in zip(fig.subplots(1, 3), ("train_loss", "val_loss", "val_acc"),
                                 ("Train loss", "Val loss", "Val accuracy")):
        for run, style in ((b, dict(color="C0", lw=3, alpha=0.5)), (a, dict(color="k", ls="--"))):
            ax.plot([r["epoch"] for r in run.rows], [r[column] for r in run.rows],
                    label=mpl_text(run.name), **style)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(fontsize=8)
    return _save(fig, path)


def _nan(x: float | None) -> float:
    """None as NaN, so matplotlib leaves a gap (and 0.0 stays 0.0)."""
    return float("nan") if x is None else x


def plot_batch(groups: dict[str, list[RunRecord]], path: Path) -> Path:
    """Best-checkpoint val accuracy and time per epoch against batch size, BN vs GN."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_acc, ax_time = fig.subplots(1, 2)
    sizes = sorted({r.config.get("batch_size") for g in groups.values() for r in g})
    for kind, members in groups.items():
        xs = [r.config.get("batch_size") for r in members]
        style = dict(color=NORM_COLORS.get(kind, "k"), marker="o",
                     label=NORM_LABELS.get(kind, kind))
        ax_acc.plot(xs, [_nan(r.score("val", "acc")) for r in members], **style)
        ax_time.plot(xs, [_nan(mean_of(r, "epoch_time_s")) for r in members], **style)
    for ax in (ax_acc, ax_time):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_acc.set(title="Val accuracy (best checkpoint)", ylabel="accuracy")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_time.set(title="Time per epoch", ylabel="seconds")
    return _save(fig, path)


def plot_gates(layers: list[dict], title: str, path: Path) -> Path:
    """Mean gate rho per BIN layer with its min-max range (1 = BN, 0 = IN)."""
    fig = Figure(figsize=(max(6, 0.45 * len(layers) + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    xs = range(len(layers))
    means = [l["mean"] for l in layers]
    ax.errorbar(xs, means, yerr=[[m - l["min"] for m, l in zip(means, layers)],
                                 [l["max"] - m for m, l in zip(means, layers)]],
                fmt="o", color="C2", ecolor="0.6", capsize=3)
    ax.axhline(1.0, color="C0", lw=0.8, ls="--")
    ax.axhline(0.0, color="C1", lw=0.8, ls="--")
    ax.text(len(layers) - 0.5, 1.0, "BN", va="bottom", ha="right", color="C0", fontsize=8)
    ax.text(len(layers) - 0.5, 0.0, "IN", va="bottom", ha="right", color="C1", fontsize=8)
    ax.set_xticks(list(xs), [l["layer"] for l in layers], rotation=60, ha="right", fontsize=7)
    ax.set(ylim=(-0.05, 1.1), ylabel="gate ρ (mean, min–max)", title=title)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


# --- sections ---------------------------------------------------------------------------------

def _lr_rule_text(plan: dict) -> str:
    """The plan's lr rule across batch sizes in words (as the study stated it, if it did)."""
    return plan.get("lr_rule_text") or f"lr_rule: {plan.get('lr_rule', 'not stated')}"


def section_setup(runs, manifest, plan) -> Section:
    s = Section("Setup")
    if plan.get("description"):
        s.add(Para(f"Plan: {plan['description']}"))
    s.add(Sub("Dataset"))
    if manifest is None:
        s.add(Para("The prepared dataset's manifest was not found (no run points to a cache)."))
    else:
        s.add(_dataset_table(manifest))
    s.add(Sub("Machine and versions"))
    s.add(_machine_table(runs))
    s.add(Sub("Recipe per run"))
    s.add(Para(f"Learning rate across batch sizes — {_lr_rule_text(plan)}."))
    s.add(Table(["Run", "Norm", "n", "Batch", "Epochs", "Patience", "Recipe", "Optimizer", "lr",
                 "Schedule", "Weight decay", "Augment", "Seed"],
                [[r.name] + [val(r.config.get(k)) for k in
                             ("norm", "n", "batch_size", "epochs", "patience", "recipe",
                              "optimizer", "lr", "schedule", "weight_decay", "augment", "seed")]
                 for r in runs if r.config]))
    return s


def _dataset_table(m: dict) -> Table:
    splits = m.get("splits", {})
    counts = ", ".join(f"{name} {info.get('count', 0):,}" for name, info in splits.items())
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
        rows.append(["Exact duplicate pairs", _counts(audit.get("exact_pair_counts"))])
        rows.append(["Near-duplicate pairs", _counts(audit.get("near_pair_counts"))
                     + (f" ({rule})" if rule else "")])
        rows.append(["Images with a copy in train", _leaks(audit.get("leaked_into_train"), m)])
    return Table(["", ""], rows)


def _leaks(leaked: dict | None, m: dict) -> str:
    """'valid: 12 of 7,500 (0.2%)' per split: images with an exact or near copy in train."""
    if not leaked:
        return "none"
    parts = []
    for split, n in leaked.items():
        total = m.get("splits", {}).get(split, {}).get("count")
        parts.append(f"{split}: {n:,} of {total:,} ({pct(n / total)})" if total else
                     f"{split}: {n:,}")
    return ", ".join(parts)


def _reason(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry.get("reason", "unknown")).split(":")[0]
    if isinstance(entry, (list, tuple)) and len(entry) > 1:
        return str(entry[1]).split(":")[0]
    return "unknown"


def _counts(d: Any) -> str:
    if not d:
        return "none"
    return ", ".join(f"{k}: {v:,}" for k, v in d.items())


def _machine_table(runs: list[RunRecord]) -> Table:
    import torch

    def distinct(*keys: str) -> str:
        found = []
        for r in runs:
            value = _nested(r.config, *keys)
            if value is not None and str(value) not in found:
                found.append(str(value))
        return ", ".join(found) or "—"

    devices = sorted({f"{_nested(r.config, 'environment.device') or r.config.get('device')} "
                      f"({_nested(r.config, 'environment.device_name') or '?'})"
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


def _nested(d: dict, *keys: str) -> Any:
    for key in keys:
        cur: Any = d
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is not None:
            return cur
    return None


def section_results(runs: list[RunRecord]) -> Section:
    s = Section("Results")
    s.add(Para("Best checkpoint (by val accuracy) evaluated in eval mode on the full train and "
               "val splits without augmentation. Micro F1 equals accuracy for single-label "
               "classification; both are shown because the assignment asks for both."))
    done = [r for r in runs if r.final is not None]
    best = best_run(runs)
    rows = []
    for r in done:
        va = pct(r.score("val", "acc"))
        rows.append([r.name, val(r.config.get("norm")), val(r.config.get("batch_size")), r.status,
                     f"{r.final.get('epochs_run', '—')} ({r.final.get('best_epoch', '—')})",
                     pct(r.score("train", "acc")), pct(r.score("train", "micro_f1")),
                     pct(r.score("train", "macro_f1")),
                     Bold(va) if r is best else va, pct(r.score("val", "micro_f1")),
                     pct(r.score("val", "macro_f1")), secs(r.final.get("wall_time_s")),
                     num(mean_of(r, "images_per_s"), 0), f"{r.final.get('parameters', 0):,}"])
    s.add(Table(["Run", "Norm", "Batch", "Status", "Epochs (best)", "Train acc", "Train micro F1",
                 "Train macro F1", "Val acc", "Val micro F1", "Val macro F1", "Wall time",
                 "Images/s", "Parameters"], rows))
    s.add(*_per_class_table(_comparison_runs(done)))
    missing = [r for r in runs if r.final is None]
    if missing:
        s.add(Sub("Not finished"), Bullets([_missing_text(r) for r in missing]))
    return s


def _comparison_runs(done: list[RunRecord]) -> list[RunRecord]:
    """The norm variants when the study has them, else every finished run."""
    variants = [r for r in find_roles(done).variants if r.ok]
    return variants if len(variants) >= 2 else [r for r in done if r.ok]


def _per_class_table(runs: list[RunRecord]) -> list[Block]:
    """Val F1 per class (rows) and run (columns): where the variants differ."""
    runs = [r for r in runs if isinstance(r.evaluation("val").get("per_class_f1"), list)]
    if not runs:
        return []
    classes = runs[0].final.get("classes") or []
    f1 = [r.evaluation("val")["per_class_f1"] for r in runs]
    rows = []
    for k, name in enumerate(classes):
        rows.append([name] + [pct(v[k]) if k < len(v) else "—" for v in f1])
    return [Sub("Per-class val F1"), Table(["Class"] + [r.name for r in runs], rows)]


def _missing_text(r: RunRecord) -> str:
    if r.status == "failed":
        return f"{r.name}: failed — {r.error or 'see its error.txt'}"
    if r.status == "interrupted":
        return f"{r.name}: interrupted after {len(r.rows)} epoch(s); re-run the study to resume it"
    return f"{r.name}: not started"


def section_curves(runs, roles, assets: Path) -> Section:
    s = Section("Curves")
    shown = [r for r in roles.variants if r.rows]
    if len(shown) >= 2:
        s.add(Img(plot_overlay(shown, assets / "overlay.png"),
                  "Validation accuracy and loss of the norm variants (same recipe, batch size "
                  f"{val(shown[0].config.get('batch_size'))}); PyTorch BN dashed."))
    for r in runs:
        path = _run_curves(r, assets)
        if path is not None:
            s.add(Img(path, f"{r.name}: error (loss), accuracy, micro F1 and macro F1 per epoch, "
                            "train (solid) and val (dashed).", narrow=True))
    if len(s.blocks) == 0:
        s.add(Para("No run has finished an epoch yet."))
    return s


def _run_curves(r: RunRecord, assets: Path) -> Path | None:
    if (r.dir / "curves.png").is_file():
        return r.dir / "curves.png"
    if not r.rows:
        return None
    from resnorm.plots import plot_run_curves

    return plot_run_curves(r.rows, assets / f"curves-{_slug(r.name)}.png", title=mpl_text(r.name))


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


def section_sanity(roles: Roles, tol: dict, assets: Path) -> tuple[Section, dict | None]:
    s = Section("Sanity check: PyTorch BN vs own BN")
    if roles.sanity is None or not all(r.rows for r in roles.sanity):
        s.add(Para("Needs two finished runs that differ only in norm: torch_bn and bn. "
                   "Not available in this study yet."))
        return s, None
    a, b = roles.sanity
    diffs = sanity_diffs(a, b)
    verdict = sanity_verdict(diffs, tol)
    s.add(Para(f"{a.name} uses PyTorch's nn.BatchNorm2d, {b.name} the from-scratch BatchNorm2d. "
               "They share seed, initialisation and data order, so any difference is numerical; "
               "it starts tiny and grows with training, as small differences compound. "
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
    s.add(Para(f"Verdict over {min(len(a.rows), len(b.rows))} epochs: {VERDICTS[verdict]}."))
    s.add(Img(plot_sanity(a, b, assets / "sanity.png"),
              f"{b.name} (thick, light) and {a.name} (dashed) on top of each other."))
    return s, {"a": a, "b": b, "diffs": diffs, "verdict": verdict}


def val_count(run: RunRecord) -> int | None:
    """Validation images behind a run's val accuracy (the sum of its confusion matrix)."""
    confusion = run.evaluation("val").get("confusion")
    return int(sum(map(sum, confusion))) if confusion else None


def _granularity(run: RunRecord) -> str:
    n = val_count(run)
    return f" With {n:,} validation images, one image is {pts(1 / n)} of val accuracy." if n else ""


def section_batch(roles: Roles, plan: dict, assets: Path) -> Section:
    s = Section("Batch size: BN vs GN")
    s.add(Para(f"Learning-rate rule across batch sizes: {_lr_rule_text(plan)}."))
    if not roles.batch:
        s.add(Para("Needs BN or GN runs at two or more batch sizes with otherwise the same "
                   "recipe. Not available in this study yet."))
        return s
    groups = {k: [r for r in g if r.ok] for k, g in roles.batch.items()}
    groups = {k: g for k, g in groups.items() if g}
    if groups:
        s.add(Img(plot_batch(groups, assets / "batch_size.png"),
                  "Best-checkpoint val accuracy and mean time per epoch against batch size."))
    rows = []
    for kind, members in roles.batch.items():
        for r in members:
            rows.append([r.name, NORM_LABELS.get(kind, kind), val(r.config.get("batch_size")),
                         val(r.config.get("lr")), val(r.config.get("patience")), r.status,
                         pct(r.score("val", "acc")), pct(r.score("val", "macro_f1")),
                         val((r.final or {}).get("epochs_run")),
                         val((r.final or {}).get("best_epoch")),
                         secs(mean_of(r, "epoch_time_s")), num(mean_of(r, "images_per_s"), 0)])
    s.add(Table(["Run", "Norm", "Batch", "lr", "Patience", "Status", "Val acc", "Val macro F1",
                 "Epochs run", "Best epoch", "Time/epoch", "Images/s"], rows))
    return s


def batch_spreads(roles: Roles) -> dict[str, dict]:
    """Per norm: the range of val accuracy over batch sizes (finished runs only)."""
    out = {}
    for kind, members in roles.batch.items():
        scored = [(r.config.get("batch_size"), r.score("val", "acc")) for r in members if r.ok]
        scored = [(b, a) for b, a in scored if a is not None]
        if len(scored) >= 2:
            accs = [a for _, a in scored]
            out[kind] = {"spread": max(accs) - min(accs), "sizes": [b for b, _ in scored],
                         "by_size": dict(scored)}
    return out


def bin_gates(run: RunRecord) -> list[dict]:
    """Per BIN layer of the run's best checkpoint: gate statistics (rho per channel)."""
    from resnorm.norms import BatchInstanceNorm2d
    from resnorm.train import load_run_model

    model, _ = load_run_model(run.dir, which="best")
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, BatchInstanceNorm2d):
            g = module.gate.detach().float().cpu()
            layers.append({"layer": name, "channels": g.numel(), "mean": float(g.mean()),
                           "min": float(g.min()), "max": float(g.max()),
                           "below_half": int((g < 0.5).sum())})
    return layers


def section_gates(runs: list[RunRecord], assets: Path) -> tuple[Section, dict | None]:
    s = Section("BIN gates")
    s.add(Para("Each BIN layer mixes BN and IN per channel: "
               "y = γ(ρ·BN(x) + (1−ρ)·IN(x)) + β, "
               "with ρ starting at 1 (pure BN) and clamped to [0, 1]. 1 − ρ is how far a "
               "channel moved toward IN."))
    bins = [r for r in runs if r.ok and norm_kind(r) == "bin" and (r.dir / "best.pt").exists()]
    if not bins:
        s.add(Para("No finished BIN run in this study yet."))
        return s, None
    summary = None
    for r in bins:
        layers = bin_gates(r)
        if not layers:
            continue
        channels = sum(l["channels"] for l in layers)
        overall = sum(l["mean"] * l["channels"] for l in layers) / channels
        below = sum(l["below_half"] for l in layers)
        s.add(Sub(r.name))
        s.add(Img(plot_gates(layers, mpl_text(f"{r.name}: learned gates per layer"),
                             assets / f"gates-{_slug(r.name)}.png"),
                  f"{r.name}: mean gate per layer (points) and its range over channels."))
        s.add(Table(["Layer", "Channels", "Mean ρ", "Min ρ", "Max ρ", "Channels with ρ < 0.5"],
                    [[l["layer"], str(l["channels"]), num(l["mean"]), num(l["min"]), num(l["max"]),
                      str(l["below_half"])] for l in layers]
                    + [[Bold("all layers"), str(channels), Bold(num(overall)), "", "",
                        str(below)]]))
        if summary is None:
            furthest = min(layers, key=lambda l: l["mean"])
            summary = {"run": r.name, "mean": overall, "below": below, "channels": channels,
                       "furthest": furthest}
    return s, summary


def section_gradcam(study: Path, runs: list[RunRecord]) -> tuple[Section, dict | None]:
    import json

    s = Section("Grad-CAM")
    path = study / "gradcam" / "gradcam.json"
    error = read_state(study).get("gradcam_error")
    if error:
        s.add(Para(f"Grad-CAM failed in the last study run: {error} (the traceback was printed "
                   f"there; `resnorm gradcam {study}` retries it)."))
    if not path.is_file():
        s.add(Para("No Grad-CAM results yet (they are made after the runs; `resnorm gradcam "
                   f"{study}`)."))
        return s, None
    g = json.loads(path.read_text())
    s.add(Para(f"Model: run {g['run']} (the study's best by val accuracy, "
               f"{pct(g.get('val_acc'))} on the validation images used here). Gradients of "
               f"the true class's score, taken at the last stage's conv layers "
               f"({', '.join(g.get('target_layers', []))}) and averaged over those layers by "
               f"pytorch-grad-cam; maps at {g.get('map_size')}×{g.get('map_size')}. "
               f"Up to {g.get('per_class')} correctly and {g.get('per_class')} incorrectly "
               "classified validation images per class, a seeded random choice."))
    if g.get("note"):
        s.add(Para(f"Note: {g['note']}."))
    conc = g.get("concentration") or {}
    share = g.get("concentration_top_share", 0.1)
    hits = g.get("gallery_pointing")
    header = ["Images", "Maps", f"Mass in brightest {share:.0%} of pixels (mean)"]
    rows = [["correctly classified", str(sum(len(c["correct"]) for c in g["classes"])),
             pct(conc.get("correct"))],
            ["misclassified", str(sum(len(c["incorrect"]) for c in g["classes"])),
             pct(conc.get("incorrect"))]]
    if hits:
        header.append("Maximum inside the object's box")
        rows[0].append(pct(hits.get("correct")))
        rows[1].append(pct(hits.get("incorrect")))
    s.add(Table(header, rows, caption=f"The galleries' maps below. A flat map scores {share:.0%} "
                "on concentration; a map focused on one spot approaches 100%."))
    if g.get("pointing"):
        s.add(Sub("Pointing game (synthetic boxes)"))
        s.add(Para("Share of validation maps whose maximum falls inside the object's box; "
                   "chance is the boxes' mean share of the image (a map pointing at a random "
                   "pixel)."))
        s.add(Table(["Run", "Norm", "Hits", "Score", "Chance"],
                    [[name, _norm_of(runs, name), f"{p['hits']}/{p['total']}", pct(p["score"]),
                      pct(p.get("chance"))] for name, p in g["pointing"].items()]))
    for c in g["classes"]:
        s.add(Sub(c["name"]))
        if c.get("note"):
            s.add(Para(f"Note: {c['note']}."))
        img = study / "gradcam" / c["png"]
        if img.is_file():
            s.add(Img(img, f"{c['name']}: correctly classified (top row) and misclassified "
                           "(bottom row) validation images, Grad-CAM for the true class."))
    return s, g


def _norm_of(runs: list[RunRecord], name: str) -> str:
    return next((val(r.config.get("norm")) for r in runs if r.name == name), "—")


# --- observations -----------------------------------------------------------------------------

def observations(runs, roles, sanity, tol, spreads, gates, gradcam) -> list[str]:
    """Short statements, each derived from numbers shown in the report's tables."""
    found = [f(runs, roles, sanity, tol, spreads, gates, gradcam) for f in _OBSERVERS]
    items = [o for group in found for o in (group if isinstance(group, list) else [group]) if o]
    return items or ["Nothing to observe yet: no run has finished."]


def _obs_best_worst(runs, roles, *_):
    scored = [(r, r.score("val", "acc")) for r in roles.variants if r.ok]
    scored = [(r, a) for r, a in scored if a is not None]
    if len(scored) < 2:
        return None
    best, b = max(scored, key=lambda t: t[1])
    worst, w = min(scored, key=lambda t: t[1])
    return (f"Among the {len(scored)} norm variants, {best.name} reached the highest val "
            f"accuracy ({pct(b)}) and {worst.name} the lowest ({pct(w)}), "
            f"{pts(b - w)} apart.")


def _obs_generalisation(runs, *_):
    best = best_run(runs)
    if best is None:
        return None
    tr, va = best.score("train", "acc"), best.score("val", "acc")
    if tr is None or va is None:
        return None
    gap = (f"train above val by {pts(tr - va)}" if tr > va else
           f"val above train by {pts(va - tr)}" if va > tr else "no gap")
    return (f"The best run overall, {best.name}, scored {pct(tr)} on train and {pct(va)} on val "
            f"({gap}).")


def _obs_sanity(runs, roles, sanity, tol, *_):
    if sanity is None:
        return None
    pair = f"{sanity['a'].name} and {sanity['b'].name}"
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
        return f"The sanity check held: {start}; {later}."
    if verdict == "drifted":
        return (f"The sanity check held at the start but not throughout: {start}, yet "
                f"{later}; the layers agree, and the runs drift apart as rounding "
                "differences compound.")
    return f"The sanity check failed: {start}."


def _diff_text(d: dict, which: str) -> str:
    return fine_pct(d[which]) + " relative" if d["relative"] else fine_pts(d[which])


def _compare_shown(a: float, b: float, fmt: Callable[[float], str]) -> int:
    """-1, 0 or 1 as a < b, a == b, a > b — equal when the report shows them equal, so that no
    sentence claims a difference its numbers do not show."""
    if fmt(a) == fmt(b):
        return 0
    return -1 if a < b else 1


def _obs_batch(runs, roles, sanity, tol, spreads, *_):
    if not spreads:
        return None
    parts = [f"{NORM_LABELS.get(k, k)}'s val accuracy spans {pts(v['spread'])} over batch sizes "
             f"{', '.join(str(b) for b in v['sizes'])}" for k, v in spreads.items()]
    text = "; ".join(parts) + "."
    if {"bn", "gn"} <= set(spreads):
        order = _compare_shown(spreads["gn"]["spread"], spreads["bn"]["spread"], pts)
        text += " GN was " + {-1: "less sensitive to batch size than BN",
                              0: "about as sensitive to batch size as BN",
                              1: "more sensitive to batch size than BN"}[order] + " in this study."
        small = min(set(spreads["bn"]["by_size"]) & set(spreads["gn"]["by_size"]), default=None)
        if small is not None:
            text += (f" At batch {small}: GN {pct(spreads['gn']['by_size'][small])}, "
                     f"BN {pct(spreads['bn']['by_size'][small])}.")
    return text


def _obs_gates(runs, roles, sanity, tol, spreads, gates, *_):
    if gates is None:
        return None
    f = gates["furthest"]
    return (f"{gates['run']}'s gates ended at a mean ρ of {num(gates['mean'])} (1 = BN, 0 = IN); "
            f"{gates['below']} of {gates['channels']} channels fell below 0.5, and {f['layer']} "
            f"moved furthest toward IN (mean ρ {num(f['mean'])}).")


def _obs_gradcam(runs, roles, sanity, tol, spreads, gates, g):
    if g is None:
        return None
    out = []
    conc, share = g.get("concentration") or {}, g.get("concentration_top_share", 0.1)
    c, i = conc.get("correct"), conc.get("incorrect")
    if c is not None and i is not None:
        rel = {1: "more", -1: "less", 0: "as"}[_compare_shown(c, i, pct)]
        out.append(f"Grad-CAM maps of correctly classified images put {pct(c)} of their mass in "
                   f"their brightest {share:.0%} of pixels, vs {pct(i)} for misclassified images "
                   f"({rel} concentrated when right; a flat map would score {share:.0%}).")
    hits = g.get("gallery_pointing") or {}
    if hits.get("correct") is not None and hits.get("incorrect") is not None:
        out.append(f"In the galleries, the maps' maximum fell inside the object's box for "
                   f"{pct(hits['correct'])} of correctly and {pct(hits['incorrect'])} of "
                   "incorrectly classified images.")
    pointing = {k: v for k, v in (g.get("pointing") or {}).items() if math.isfinite(v["score"])}
    if pointing:
        best = max(pointing, key=lambda k: pointing[k]["score"])
        worst = min(pointing, key=lambda k: pointing[k]["score"])
        top, bottom = pointing[best]["score"], pointing[worst]["score"]
        if _compare_shown(top, bottom, pct) == 0:
            text = (f"In the pointing game, the maps of all {len(pointing)} scored runs hit the "
                    f"object's box equally often ({pct(top)})")
        else:
            text = (f"In the pointing game, {best}'s maps hit the object's box most often "
                    f"({pct(top)}) and {worst}'s least ({pct(bottom)})")
        out.append(text + f"; chance is {pct(pointing[best].get('chance'))}.")
    return out


def _obs_literal(runs, roles, *_):
    out = []
    for lit, ref in roles.literal:
        if not lit.ok:
            continue
        text = (f"The literal recipe ({lit.name}: {val(lit.config.get('optimizer'))}, lr "
                f"{val(lit.config.get('lr'))}) reached {pct(lit.score('val', 'acc'))} val "
                "accuracy")
        if ref is not None and ref.ok:
            text += (f", against {pct(ref.score('valid', 'acc'))} for {ref.name} with the "
                     f"{val(ref.config.get('recipe'))} recipe")
        out.append(text + ".")
    return out


def _obs_problems(runs, *_):
    out = []
    for r in runs:
        if r.status == "diverged":
            at = (r.final or {}).get("diverged_at")
            where = f" at {_where(at)}" if at else ""
            after = ("its numbers are from its best checkpoint before that" if r.evaluation("val")
                     else "it has no checkpoint to evaluate")
            out.append(f"{r.name} diverged{where} (non-finite loss); {after}.")
        elif r.status == "failed":
            out.append(f"{r.name} failed: {r.error}.")
    unfinished = [r.name for r in runs if r.status in ("interrupted", "not started")]
    if unfinished:
        out.append(f"{len(unfinished)} planned run(s) have not finished: {', '.join(unfinished)}.")
    return out


def _where(at: Any) -> str:
    if isinstance(at, dict):
        return ", ".join(f"{k} {v}" for k, v in at.items())
    return f"epoch {at}"


_OBSERVERS: list[Callable] = [_obs_best_worst, _obs_generalisation, _obs_sanity, _obs_batch,
                              _obs_gates, _obs_gradcam, _obs_literal, _obs_problems]


# --- building and rendering -------------------------------------------------------------------

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "run"


def _plan_info(study: Path) -> dict:
    """The study's plan copy with the lr rule in words (as the study stated it)."""
    plan = read_yaml(study / PLAN_FILE)
    state = read_state(study)
    if state.get("lr_rule_text"):
        plan["lr_rule_text"] = state["lr_rule_text"]
    return plan


def build_report(study: str | os.PathLike) -> Report:
    """Read a study folder and build the report's document (plots are written to report_assets/)."""
    study = Path(study)
    if not study.is_dir():
        raise UsageError(f"study folder {study} does not exist")
    runs = collect_runs(study)
    if not runs:
        raise UsageError(f"{study} holds no runs (expected {study}/runs/<name>/ or {PLAN_FILE})")
    assets = study / ASSETS
    assets.mkdir(exist_ok=True)
    plan = _plan_info(study)
    tol = {**DEFAULT_TOLERANCE, **(plan.get("sanity_tolerance") or {})}
    roles = find_roles(runs)

    sanity_section, sanity = section_sanity(roles, tol, assets)
    gates_section, gates = section_gates(runs, assets)
    gradcam_section, gradcam = section_gradcam(study, runs)
    spreads = batch_spreads(roles)
    sections = [
        section_setup(runs, _manifest(runs), plan),
        section_results(runs),
        section_curves(runs, roles, assets),
        sanity_section,
        section_batch(roles, plan, assets),
        gates_section,
        gradcam_section,
        Section("Observations", [Bullets(observations(runs, roles, sanity, tol, spreads, gates,
                                                      gradcam))]),
    ]
    finished = sum(r.final is not None for r in runs)
    subtitle = (f"{finished} of {len(runs)} runs finished · written "
                f"{time.strftime('%Y-%m-%d %H:%M')} by resnorm {__version__}")
    return Report(f"Normalization study: {study.resolve().name}", subtitle, sections, study)


def write_report(study: str | os.PathLike) -> tuple[Path, Path]:
    """Write STUDY/report.html and STUDY/report.md; return their paths."""
    report = build_report(study)
    study = Path(study)
    html_path, md_path = study / "report.html", study / "report.md"
    atomic_write_text(html_path, render_html(report))
    atomic_write_text(md_path, render_markdown(report))
    return html_path, md_path


# HTML: every string goes through esc(); images are embedded as base64 data URIs.
CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222;margin:0;
background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:24px 32px;background:#fff}
h1{margin-bottom:0} .sub{color:#666;margin-top:4px}
h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:40px}
h3{margin:24px 0 8px}
nav ol{columns:2;color:#444}
table{border-collapse:collapse;margin:10px 0 6px;font-size:13px}
th,td{padding:4px 9px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
th{background:#f2f2f2} tr:nth-child(even) td{background:#fbfbfb}
td.n{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:bottom;text-align:left;color:#666;font-size:12px;padding-top:4px}
figure{margin:14px 0} figure img{max-width:100%;border:1px solid #eee}
figure.narrow{display:inline-block;width:49%;vertical-align:top;margin:6px 0}
figcaption{color:#555;font-size:13px}
ul.obs li{margin:6px 0}
.scroll{overflow-x:auto}
"""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


_NUMERIC = re.compile(r"^[-+]?[\d,.]+\s*(%|s|min|h|points|points rel\.)?( \(\S+\))?$|^—$")


def _html_cell(cell: Cell, tag: str, align_numbers: bool = True) -> str:
    text = cell.text if isinstance(cell, Bold) else cell
    inner = f"<b>{esc(text)}</b>" if isinstance(cell, Bold) else esc(text)
    numeric = align_numbers and tag == "td" and _NUMERIC.match(str(text).strip())
    cls = ' class="n"' if numeric else ""
    return f"<{tag}{cls}>{inner}</{tag}>"


def _html_block(block: Block) -> str:
    if isinstance(block, Para):
        return f"<p>{esc(block.text)}</p>"
    if isinstance(block, Sub):
        return f"<h3>{esc(block.title)}</h3>"
    if isinstance(block, Bullets):
        return '<ul class="obs">' + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "" if not any(block.header) else \
            "<thead><tr>" + "".join(_html_cell(h, "th") for h in block.header) + "</tr></thead>"
        keyed = not any(block.header)  # a key/value table: values read as text
        body = "".join("<tr>" + "".join(_html_cell(c, "td", not keyed) for c in row) + "</tr>"
                       for row in block.rows)
        cap = f"<caption>{esc(block.caption)}</caption>" if block.caption else ""
        return f'<div class="scroll"><table>{cap}{head}<tbody>{body}</tbody></table></div>'
    if isinstance(block, Img):
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        cls = ' class="narrow"' if block.narrow else ""
        return (f'<figure{cls}><img src="data:image/png;base64,{data}" alt="{esc(block.caption)}">'
                f"<figcaption>{esc(block.caption)}</figcaption></figure>")
    raise TypeError(f"unknown block {block!r}")


def render_html(report: Report) -> str:
    toc = "".join(f'<li><a href="#s{i}">{esc(s.title)}</a></li>'
                  for i, s in enumerate(report.sections, 1))
    body = "".join(
        f'<section id="s{i}"><h2>{i}. {esc(s.title)}</h2>'
        + "\n".join(_html_block(b) for b in s.blocks) + "</section>\n"
        for i, s in enumerate(report.sections, 1))
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(report.title)}</title><style>{CSS}</style></head>\n"
            f"<body><main><h1>{esc(report.title)}</h1><p class=\"sub\">{esc(report.subtitle)}</p>"
            f"<nav><ol>{toc}</ol></nav>\n{body}</main></body></html>\n")


# Markdown: HTML-escape (markdown passes raw HTML through) and backslash-escape markdown syntax.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|])")


def md_esc(text: Any) -> str:
    return _MD_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def _md_cell(cell: Cell) -> str:
    return f"**{md_esc(cell.text)}**" if isinstance(cell, Bold) else md_esc(cell)


def _md_block(block: Block, root: Path) -> str:
    if isinstance(block, Para):
        return md_esc(block.text)
    if isinstance(block, Sub):
        return f"### {md_esc(block.title)}"
    if isinstance(block, Bullets):
        return "\n".join(f"- {md_esc(i)}" for i in block.items)
    if isinstance(block, Table):
        header = [h or " " for h in block.header]
        lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        if block.caption:
            lines.append(f"\n*{md_esc(block.caption)}*")
        return "\n".join(lines)
    if isinstance(block, Img):
        rel = os.path.relpath(block.path, root).replace(os.sep, "/")
        return f"![{md_esc(block.caption)}]({rel})\n\n*{md_esc(block.caption)}*"
    raise TypeError(f"unknown block {block!r}")


def render_markdown(report: Report) -> str:
    parts = [f"# {md_esc(report.title)}", f"*{md_esc(report.subtitle)}*"]
    for i, s in enumerate(report.sections, 1):
        parts.append(f"## {i}. {md_esc(s.title)}")
        parts.extend(_md_block(b, report.root) for b in s.blocks)
    return "\n\n".join(parts) + "\n"


# --- command line -----------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("example:\n"
                     "  resnorm report studies/demo   # writes studies/demo/report.html, report.md")
    parser.add_argument("study", type=Path, help="the study folder (resnorm study --out)")


def run_cli(args: argparse.Namespace) -> int:
    html_path, md_path = write_report(args.study)
    print(f"report: {html_path}\n        {md_path}")
    return 0
