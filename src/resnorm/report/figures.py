"""The report's matplotlib figures, written as PNG files to the study's report_assets/ (and,
while `vector_figures()` is on, as SVG beside each: the PDF's figures are vectors)."""
from __future__ import annotations

import contextvars
import re
from contextlib import contextmanager
from pathlib import Path

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from resnorm.norms import norm_info
from resnorm.plots import mpl_text, plot_run_curves
from resnorm.report.roles import norm_kind, seeds_mean_of
from resnorm.rundir import CURVES_FILE, RunDir
from resnorm.study.execution.records import RunRecord


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "run"


# On while a report is built for the PDF: SVG costs time that the HTML does not need.
_VECTOR = contextvars.ContextVar("resnorm_vector_figures", default=False)


@contextmanager
def vector_figures(on: bool = True):
    """While on, every figure is also saved as SVG beside its PNG (see `vector_of`)."""
    token = _VECTOR.set(on)
    try:
        yield
    finally:
        _VECTOR.reset(token)


def vector_of(png: Path) -> Path | None:
    """The SVG saved beside `png` with it (None when there is none, or an older one)."""
    svg = png.with_suffix(".svg")
    if svg.is_file() and png.is_file() and svg.stat().st_mtime >= png.stat().st_mtime:
        return svg
    return None


def save_figure(fig: Figure, path: Path) -> Path:
    """The figure as PNG at `path` (and as SVG beside it while `vector_figures` is on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    if _VECTOR.get():  # after the PNG: an SVG older than its PNG is a stale one
        with rc_context({"svg.fonttype": "none"}):  # text as text: sharp, searchable
            fig.savefig(path.with_suffix(".svg"))
    return path


def _style(run: RunRecord) -> dict:
    kind = norm_info(norm_kind(run))
    return {"color": kind.color, "linestyle": kind.linestyle,
            "marker": "o" if len(run.rows) < 20 else None, "markersize": 3}


def plot_overlay(runs: list[RunRecord], path: Path) -> Path:
    """Val accuracy and val loss per epoch, one line per variant: the mean over its seeds,
    with a band from the lowest to the highest seed."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    for r in runs:
        label = mpl_text(r.name)
        for ax, column in ((ax_acc, "val_acc"), (ax_loss, "val_loss")):
            epochs, mean, lo, hi = r.curve(column)
            style = _style(r)
            ax.plot(epochs, mean, label=label, **style)
            if len(r.done) > 1:
                ax.fill_between(epochs, lo, hi, color=style["color"], alpha=0.15, lw=0)
    ax_acc.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_loss.set(title="Validation loss (cross-entropy)", xlabel="epoch", ylabel="loss")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8, ncols=2)
    return save_figure(fig, path)


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
    return save_figure(fig, path)


def _nan(x: float | None) -> float:
    """None as NaN, so matplotlib leaves a gap (and 0.0 stays 0.0)."""
    return float("nan") if x is None else x


def plot_batch(groups: dict[str, list[RunRecord]], batch: dict[str, int], path: Path,
               runs_stats: dict, metric: str = "val_acc") -> Path:
    """Best-checkpoint `metric` (mean over seeds with 95 % CI bars, from `runs_stats`, the
    summary's "runs") and time per epoch against each run's (global) `batch` size, one line
    per batch group."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_acc, ax_time = fig.subplots(1, 2)
    sizes = sorted({batch[r.name] for g in groups.values() for r in g})
    for members in groups.values():
        xs = [batch[r.name] for r in members]
        kind = norm_info(norm_kind(members[0]))
        style = dict(color=kind.color, marker="o", label=kind.label)
        split, what = metric.split("_", 1)
        means = [_nan(r.score(split, what)) for r in members]
        cis = [(runs_stats.get(r.name, {}).get(metric) or {}).get("ci95") or [m, m]
               for r, m in zip(members, means)]
        ax_acc.errorbar(xs, means, yerr=[[max(m - _nan(c[0]), 0) for m, c in zip(means, cis)],
                                         [max(_nan(c[1]) - m, 0) for m, c in zip(means, cis)]],
                        capsize=3, **style)
        ax_time.plot(xs, [_nan(seeds_mean_of(r, "epoch_time_s")) for r in members], **style)
    for ax in (ax_acc, ax_time):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_acc.set(title=f"{metric.split('_')[0].capitalize()} accuracy (best checkpoint, 95 % CI)",
               ylabel="accuracy")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_time.set(title="Time per epoch", ylabel="seconds")
    return save_figure(fig, path)


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
    return save_figure(fig, path)


def run_curves(r: RunRecord, assets: Path) -> Path | None:
    """The run's curves figure: the one training drew, else drawn from its metrics (None
    before its first epoch). A PNG even for the PDF: drawn 10 inches wide and shown at half
    a page's width there, it is ~300 dpi, and redrawing every run as SVG costs seconds."""
    drawn = RunDir(r.dir).path(CURVES_FILE)
    if drawn.is_file():
        return drawn
    if not r.rows:
        return None
    return plot_run_curves(r.rows, assets / f"curves-{slug(r.name)}.png", title=mpl_text(r.name))


def plot_ranking(ranking: dict, runs: dict, path: Path) -> Path:
    """The ranked runs by mean score, each with its 95 % interval (summary `runs` entries):
    the best set in colour, the runs the family's intervals exclude from best in grey."""
    metric, chosen = ranking["metric"], set(ranking.get("best_set") or [])
    entries = {n: (runs.get(n) or {}).get(metric) or {} for n in ranking["runs"]}
    order = sorted((n for n in ranking["runs"] if entries[n].get("mean") is not None),
                   key=lambda n: entries[n]["mean"])
    fig = Figure(figsize=(7, 0.4 * len(order) + 1.4), layout="constrained")
    ax = fig.subplots()
    for i, name in enumerate(order):
        e = entries[name]
        lo, hi = e.get("ci95") or (e["mean"], e["mean"])
        color = "C0" if name in chosen else "0.6"
        ax.errorbar(100 * e["mean"], i, xerr=[[100 * (e["mean"] - lo)], [100 * (hi - e["mean"])]],
                    fmt="o", color=color, capsize=3)
    ax.set_yticks(range(len(order)), [mpl_text(n) for n in order])
    ax.set(xlabel=f"{metric} (%)", title="best set in colour")
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)
