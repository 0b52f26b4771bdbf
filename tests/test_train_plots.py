"""Per-run curves: four panels (loss, accuracy, micro F1, macro F1), train and val."""
from __future__ import annotations

from resnorm.metrics import METRICS_COLUMNS
from resnorm.plots import CURVE_PANELS, plot_run_curves

PNG = b"\x89PNG\r\n\x1a\n"


def test_curves_png_for_some_epochs_and_for_none(tmp_path):
    rows = [{c: 1.0 / epoch for c in METRICS_COLUMNS} | {"epoch": epoch} for epoch in (1, 2, 3)]
    assert plot_run_curves(rows, tmp_path / "curves.png", title="bn") == tmp_path / "curves.png"
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG
    plot_run_curves([], tmp_path / "empty.png")  # a run that diverged in its first epoch
    assert (tmp_path / "empty.png").read_bytes()[:8] == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "empty.png"]


def test_every_panel_reads_a_train_and_a_val_column():
    for key, _ in CURVE_PANELS:
        assert f"train_{key}" in METRICS_COLUMNS and f"val_{key}" in METRICS_COLUMNS
