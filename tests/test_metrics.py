"""Metrics: torchmetrics-backed scores against hand computation, the meter, metrics.csv."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resnorm.metrics import (METRICS_COLUMNS, EpochMeter, classification_report,
                             read_metrics_csv, write_metrics_csv)


def reference_scores(preds: np.ndarray, target: np.ndarray, num_classes: int) -> dict:
    """Accuracy, per-class/macro F1 and confusion computed by hand with numpy."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (target, preds), 1)
    tp = np.diag(confusion).astype(float)
    fp = confusion.sum(0) - tp
    fn = confusion.sum(1) - tp
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    present = denom > 0  # classes that occur as a target or a prediction
    return {"acc": (preds == target).mean(), "per_class_f1": f1,
            "macro_f1": f1[present].mean(), "confusion": confusion}


labels = st.integers(min_value=2, max_value=6).flatmap(
    lambda c: st.tuples(st.just(c), st.lists(st.tuples(st.integers(0, c - 1),
                                                       st.integers(0, c - 1)),
                                             min_size=1, max_size=60)))


@settings(max_examples=60, deadline=None)
@given(labels)
def test_scores_match_hand_computation_and_micro_f1_equals_accuracy(case):
    num_classes, pairs = case
    preds = np.array([p for p, _ in pairs])
    target = np.array([t for _, t in pairs])
    got = classification_report(torch.from_numpy(preds), torch.from_numpy(target), num_classes)
    ref = reference_scores(preds, target, num_classes)

    # Single-label classification: every error is one FP and one FN, so micro F1 == accuracy.
    assert got["micro_f1"] == pytest.approx(got["acc"], abs=1e-6)
    assert got["acc"] == pytest.approx(ref["acc"], abs=1e-6)
    assert got["macro_f1"] == pytest.approx(ref["macro_f1"], abs=1e-6)
    assert np.allclose(got["per_class_f1"], ref["per_class_f1"], atol=1e-6)
    assert got["confusion"] == ref["confusion"].tolist()


def test_confusion_rows_are_true_classes_and_macro_skips_absent_classes():
    # class 2 never occurs (neither true nor predicted): macro F1 averages classes 0 and 1 only
    target = torch.tensor([0, 0, 0, 1])
    preds = torch.tensor([0, 0, 1, 1])
    got = classification_report(preds, target, num_classes=3)
    assert got["confusion"] == [[2, 1, 0], [0, 1, 0], [0, 0, 0]]
    f1_0, f1_1 = 2 * 2 / (2 * 2 + 0 + 1), 2 * 1 / (2 * 1 + 1 + 0)
    assert got["per_class_f1"] == pytest.approx([f1_0, f1_1, 0.0], abs=1e-6)
    assert got["macro_f1"] == pytest.approx((f1_0 + f1_1) / 2, abs=1e-6)
    assert got["acc"] == 0.75


def test_meter_over_batches_equals_one_pass_and_weights_loss_by_batch_size():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(23, 5, generator=g)
    target = torch.randint(0, 5, (23,), generator=g)
    meter = EpochMeter(5)
    losses, sizes = [0.5, 2.0, 1.0], [10, 10, 3]
    start = 0
    for loss, size in zip(losses, sizes):
        meter.update(torch.tensor(loss), logits[start:start + size], target[start:start + size])
        start += size
    whole = classification_report(logits.argmax(1), target, 5)
    got = meter.compute()
    assert got["loss"] == pytest.approx(sum(l * s for l, s in zip(losses, sizes)) / 23)
    for key in ("acc", "micro_f1", "macro_f1", "per_class_f1", "confusion"):
        assert got[key] == whole[key]
    running_loss, running_acc = meter.running()
    assert running_loss == pytest.approx(got["loss"])
    assert running_acc == pytest.approx(got["acc"])


def test_scores_are_short_floats_and_empty_meter_is_an_error():
    got = classification_report(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2)
    assert repr(got["acc"]) == "0.6666667"  # float32 score, written without float64 noise
    with pytest.raises(ValueError, match="no samples"):
        EpochMeter(3).compute()


def _row(epoch: int) -> dict:
    row = {c: 0.1 * epoch + i / 7 for i, c in enumerate(METRICS_COLUMNS)}
    row["epoch"] = epoch
    return row


def test_metrics_csv_round_trip(tmp_path):
    rows = [_row(1), _row(2)]
    path = tmp_path / "metrics.csv"
    write_metrics_csv(rows, path)
    header = path.read_text().splitlines()[0]
    assert header == ",".join(METRICS_COLUMNS)
    back = read_metrics_csv(path)
    assert back == rows  # shortest-repr floats read back exactly
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temp file left


def test_metrics_csv_with_nan_and_missing_columns(tmp_path):
    row = _row(1) | {"val_loss": math.nan}
    write_metrics_csv([row], tmp_path / "m.csv")
    assert math.isnan(read_metrics_csv(tmp_path / "m.csv")[0]["val_loss"])
    (tmp_path / "bad.csv").write_text("epoch,lr\n1,0.1\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_metrics_csv(tmp_path / "bad.csv")
