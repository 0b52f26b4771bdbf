"""Curves of a training run (matplotlib, no display needed).

`plot_run_curves(rows, path)` draws the four panels the assignment asks for — error
(cross-entropy loss), accuracy, micro F1 and macro F1 against epoch, train and val — from the
rows of a run's `metrics.csv` (`resnorm.metrics.read_metrics_csv`). Figures are built with
`matplotlib.figure.Figure` directly, so nothing here touches pyplot's global state or needs a
GUI backend.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure

__all__ = ["CURVE_PANELS", "mpl_text", "plot_run_curves"]

# (metrics.csv column suffix, panel title): train_<suffix> and val_<suffix> are drawn together.
CURVE_PANELS = (
    ("loss", "Error (cross-entropy loss)"),
    ("acc", "Accuracy"),
    ("micro_f1", "Micro F1"),
    ("macro_f1", "Macro F1"),
)
SPLIT_STYLES = (("train", "-"), ("val", "--"))


def mpl_text(text: str) -> str:
    """`text` with '$' escaped for matplotlib (unescaped pairs start mathtext)."""
    return str(text).replace("$", r"\$")


def plot_run_curves(rows: Sequence[dict], path: str | os.PathLike,
                    title: str | None = None) -> Path:
    """Save a 2x2 figure of loss, accuracy, micro F1 and macro F1 per epoch; return the path.

    `rows` are metrics.csv rows (dicts with `epoch`, `train_loss`, `val_loss`, ...). An empty
    list still writes a figure (with empty axes), so a run that diverged in its first epoch has
    a curves file like every other run.
    """
    # Fixed margins rather than a layout engine: the panels and their labels are the same in
    # every run's figure, and constrained layout would lay the figure out three times (as
    # long as a tiny run's training; every report draws the runs without a curves.png too).
    fig = Figure(figsize=(10, 7))
    fig.subplots_adjust(left=0.065, right=0.985, bottom=0.075, top=0.91 if title else 0.95,
                        wspace=0.16, hspace=0.32)
    axes = fig.subplots(2, 2).flat
    epochs = [int(r["epoch"]) for r in rows]
    for ax, (key, panel_title) in zip(axes, CURVE_PANELS):
        for split, style in SPLIT_STYLES:
            values = [float(r[f"{split}_{key}"]) for r in rows]
            ax.plot(epochs, values, style, marker="o" if len(rows) < 20 else None,
                    markersize=3, label=split)
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if key != "loss":
            ax.set_ylim(-0.02, 1.02)
        ax.legend()
    if title:
        fig.suptitle(title)
    # Temp file + rename: a reader (or a killed run) never sees half a PNG.
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    os.replace(tmp, path)
    return path
