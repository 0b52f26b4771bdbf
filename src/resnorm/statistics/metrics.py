"""Metrics of single-label multiclass predictions, on the whole set or on bootstrap resamples.

- ``acc``: the fraction of images predicted correctly.
- ``micro_f1``: 2·TP / (2·TP + FP + FN) summed over classes. For single-label predictions every
  error is one FP and one FN, so it equals ``acc``; it is still computed as micro F1.
- ``macro_f1``: the mean of per-class F1 = 2·tp / (2·tp + fp + fn), following torchmetrics'
  ``multiclass_f1_score(average="macro")`` (checked against torchmetrics 1.9 in the tests):
  a class with no true, no predicted sample (tp + fp + fn = 0) is left out of the mean; a class
  that occurs but is never predicted correctly counts as 0. The class count therefore does not
  change the score and need not be given.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["METRICS", "DEFAULT_N_BOOT", "metric_value", "bootstrap_indices",
           "metric_replicates"]

METRICS = ("acc", "micro_f1", "macro_f1")
DEFAULT_N_BOOT = 2000
_CHUNK_CELLS = 1 << 22  # bincount cells per chunk of replicates (bounds memory for many classes)


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")


def _scores(metric: str, n: int, tp: np.ndarray, n_true: np.ndarray | None = None,
            n_pred: np.ndarray | None = None) -> np.ndarray:
    """Scores from counts. `tp` is (B,) total correct for acc/micro, else (B, C) per class with
    `n_true`/`n_pred` (B, C) class counts among the true labels / predictions."""
    if metric == "acc":
        return tp / n
    if metric == "micro_f1":
        fp = fn = n - tp  # every error is one false positive and one false negative
        return 2 * tp / (2 * tp + fp + fn)
    denom = n_true + n_pred  # = 2tp + fp + fn per class
    present = denom > 0      # torchmetrics leaves out classes with tp + fp + fn = 0
    f1 = np.divide(2 * tp, denom, out=np.zeros(denom.shape), where=present)
    return f1.sum(axis=-1) / present.sum(axis=-1)


def replicates(labels: np.ndarray, preds: np.ndarray, metric: str, indices: np.ndarray,
               num_classes: int) -> np.ndarray:
    """The metric on every row of `indices` (B, N) -> (B,) float64 (inputs already checked)."""
    n_boot, n = indices.shape
    if metric in ("acc", "micro_f1"):
        correct = labels == preds
        # the count of correct images in each replicate (chunks bound the temporaries)
        rows = max(1, _CHUNK_CELLS // max(n, 1))
        tp = np.concatenate([np.count_nonzero(correct[indices[i:i + rows]], axis=1)
                             for i in range(0, n_boot, rows)]).astype(np.float64)
        return _scores(metric, n, tp)
    c = num_classes
    codes = labels.astype(np.int64) * c + preds.astype(np.int64)  # row = true, column = pred
    rows = max(1, _CHUNK_CELLS // (c * c))
    out = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        block = indices[start:start + rows]
        b = block.shape[0]
        cells = codes[block] + (np.arange(b, dtype=np.int64) * (c * c))[:, None]
        conf = np.bincount(cells.ravel(), minlength=b * c * c).reshape(b, c, c)
        tp = np.diagonal(conf, axis1=1, axis2=2)
        out[start:start + b] = _scores(metric, n, tp, conf.sum(axis=2), conf.sum(axis=1))
    return out


def count_classes(*arrays: np.ndarray) -> int:
    return int(max((a.max() for a in arrays if a.size), default=0)) + 1


def as_label_array(a: Any, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of class indices, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.mod(a, 1) == 0):
            raise ValueError(f"{what} must hold integer class indices")
        a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{what} holds a negative class index")
    return a.astype(np.int64, copy=False)


def metric_value(labels: Any, preds: Any, metric: str = "acc") -> float:
    """`metric` ("acc", "micro_f1", "macro_f1") of one set of predictions. Empty: ValueError."""
    check_metric(metric)
    labels, preds = as_label_array(labels, "labels"), as_label_array(preds, "preds")
    if labels.shape != preds.shape:
        raise ValueError(f"labels ({labels.size}) and preds ({preds.size}) differ in length")
    if labels.size == 0:
        raise ValueError("no samples: a metric of an empty set is not defined")
    full = np.arange(labels.size)[None, :]
    return float(replicates(labels, preds, metric, full, count_classes(labels, preds))[0])


def bootstrap_indices(n: int, n_boot: int = DEFAULT_N_BOOT,
                      rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """(n_boot, n) image indices drawn with replacement: one resample of the validation set per
    row. Use the same array for every run and seed (paired bootstrap)."""
    if n < 0 or n_boot < 1:
        raise ValueError(f"need n >= 0 and n_boot >= 1, got n={n}, n_boot={n_boot}")
    rng = np.random.default_rng(rng)
    dtype = np.int32 if n < 2**31 else np.int64
    return rng.integers(0, max(n, 1), size=(n_boot, n), dtype=dtype)


def metric_replicates(labels: Any, preds: Any, metric: str, indices: np.ndarray,
                      num_classes: int | None = None) -> np.ndarray:
    """`metric` of (labels, preds) on every bootstrap replicate in `indices` -> (n_boot,).

    Confusion counts per replicate come from one np.bincount of label·C + pred offset by the
    replicate number (in chunks, so memory stays bounded for many classes); accuracy and micro
    F1 need only the count of correct images."""
    check_metric(metric)
    labels, preds = as_label_array(labels, "labels"), as_label_array(preds, "preds")
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] != labels.size or labels.size != preds.size:
        raise ValueError(f"indices of shape {indices.shape} do not fit {labels.size} labels and "
                         f"{preds.size} preds")
    if labels.size == 0:
        raise ValueError("no samples: a metric of an empty set is not defined")
    c = num_classes if num_classes is not None else count_classes(labels, preds)
    return replicates(labels, preds, metric, indices, c)
