"""Classification metrics for a training run: accuracy, micro/macro F1, per-class F1, confusion.

The scores come from torchmetrics (`multiclass_accuracy`, `multiclass_f1_score`); this module
accumulates what they need — a confusion matrix — with the loss in one per-epoch meter, and
reads/writes `metrics.csv`.

Notes on the definitions:
- For single-label classification, micro-averaged F1 equals accuracy: summed over classes,
  every wrong prediction is one false positive (for the predicted class) and one false negative
  (for the true class), so micro precision = micro recall = correct / total. Both columns are
  reported because the assignment asks for both; `tests/test_metrics.py` checks the identity.
- Macro F1 is the unweighted mean of per-class F1 over the classes that occur in the targets or
  the predictions (torchmetrics leaves out classes with no true, predicted or missed example,
  rather than counting them as 0 the way scikit-learn does). In `per_class_f1` such a class
  reads 0.
- The confusion matrix has true classes as rows and predicted classes as columns.

`EpochMeter` keeps only sum-reducible state on the device (loss sum, sample count, confusion
matrix), so a step costs no host synchronisation and, under DDP, the states of all ranks add
up: `compute()` all-reduces them when `torch.distributed` is initialised.
"""
from __future__ import annotations

import csv
import io
import math
import os
from typing import Iterable

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from resnorm.distributed import all_reduce_sum
from resnorm.fileio import atomic_write_text

__all__ = [
    "EpochMeter",
    "classification_report",
    "scores_from_confusion",
    "METRICS_COLUMNS",
    "TIMING_COLUMNS",
    "LATER_COLUMNS",
    "write_metrics_csv",
    "read_metrics_csv",
]

# Columns of metrics.csv, one row per epoch (epochs counted from 1).
METRICS_COLUMNS = (
    "epoch", "lr",
    "train_loss", "train_acc", "train_micro_f1", "train_macro_f1",
    "val_loss", "val_acc", "val_micro_f1", "val_macro_f1",
    "epoch_time_s", "images_per_s",
    "skipped_steps",
)
# The columns that measure the machine rather than the run (they differ run to run).
TIMING_COLUMNS = ("epoch_time_s", "images_per_s")
# Columns added after the first release, with the value a row without them means: files
# written before still read, and rows kept from before (a resumed run's history) still write.
# skipped_steps: optimizer steps the fp16 loss scaler skipped that epoch (train.loop); last,
# so a reader that takes the columns it knows by name reads the file as before.
LATER_COLUMNS = {"skipped_steps": 0}


def _f32(t: Tensor) -> float:
    """A float32 score as the Python float with the same shortest repr (0.3, not 0.30000001)."""
    return float(str(np.float32(t.item())))


def scores_from_confusion(confusion: Tensor) -> dict:
    """Accuracy, micro/macro F1 and per-class F1 (torchmetrics) of a (C, C) confusion matrix.

    The matrix is expanded back into (target, prediction) pairs, one per sample, and handed to
    torchmetrics' functional metrics: the counts are all a single-label classifier's scores
    depend on.
    """
    c = confusion.shape[0]
    pairs = torch.repeat_interleave(torch.arange(c * c, device=confusion.device),
                                    confusion.flatten())
    target, preds = pairs // c, pairs % c
    kw = dict(num_classes=c, validate_args=False)
    return {
        "acc": _f32(multiclass_accuracy(preds, target, average="micro", **kw)),
        "micro_f1": _f32(multiclass_f1_score(preds, target, average="micro", **kw)),
        "macro_f1": _f32(multiclass_f1_score(preds, target, average="macro", **kw)),
        "per_class_f1": [_f32(v) for v in multiclass_f1_score(preds, target, average="none",
                                                              **kw)],
    }


class EpochMeter:
    """Loss and classification scores accumulated over the batches of one epoch (or one pass).

    The state is three sum-reducible tensors on the device: the loss sum, the sample count and
    the confusion matrix. `update` only adds to them (no host synchronisation: `index_add_`
    rather than `bincount`, which reads its input's maximum back on CUDA); `running()` (loss
    and accuracy so far) and `compute()` (everything, through torchmetrics) read them back.
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        device = torch.device(device)
        # float64 sums keep the epoch loss exact enough to compare runs; MPS has no float64.
        sum_dtype = torch.float32 if device.type == "mps" else torch.float64
        self.num_classes = num_classes
        self.loss_sum = torch.zeros((), dtype=sum_dtype, device=device)
        self.count = torch.zeros((), dtype=torch.int64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, loss: Tensor, output: Tensor, target: Tensor) -> None:
        """Add one batch: `loss` is the batch mean, `output` logits (B, C) or labels (B,)."""
        preds = output.argmax(dim=1) if output.dim() == 2 else output
        self.loss_sum += loss.detach().to(self.loss_sum.dtype) * target.numel()
        self.count += target.numel()
        cells = target.long() * self.num_classes + preds.long()  # row = true, column = predicted
        self.confusion.view(-1).index_add_(0, cells, torch.ones_like(cells))

    def running(self) -> tuple[float, float]:
        """Mean loss and accuracy so far on this process (one host synchronisation)."""
        count = max(int(self.count), 1)
        return float(self.loss_sum) / count, int(self.confusion.trace()) / count

    def compute(self) -> dict:
        """Loss, accuracy, micro/macro F1, per-class F1 and confusion matrix as plain Python
        (summed over all ranks under torch.distributed)."""
        count = int(all_reduce_sum(self.count.clone()))  # clones: the meter keeps its own
        if count == 0:
            raise ValueError("no samples were added to this meter")
        confusion = all_reduce_sum(self.confusion.clone())
        return {"loss": float(all_reduce_sum(self.loss_sum.clone())) / count,
                **scores_from_confusion(confusion), "confusion": confusion.tolist()}


def classification_report(preds: Tensor, target: Tensor, num_classes: int,
                           loss: float = math.nan) -> dict:
    """`EpochMeter.compute()` for labels already in hand (e.g. a whole split's predictions)."""
    meter = EpochMeter(num_classes, preds.device)
    meter.update(torch.tensor(loss, device=preds.device), preds, target)
    return meter.compute()


# --- metrics.csv ------------------------------------------------------------------------------

def write_metrics_csv(rows: Iterable[dict], path: str | os.PathLike) -> None:
    """Write one row per epoch with METRICS_COLUMNS, atomically (`fileio.atomic_write_text`).

    Floats are written with Python's shortest round-trip repr, so two runs that computed the
    same numbers write the same text.
    """
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] if k in row or k not in LATER_COLUMNS else LATER_COLUMNS[k]
                         for k in METRICS_COLUMNS})
    atomic_write_text(path, buffer.getvalue())


def read_metrics_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a metrics.csv with `epoch` as int and every other column as float; a file
    from before a LATER_COLUMNS column reads as if it held the column's default."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(METRICS_COLUMNS) - set(reader.fieldnames or ()) - set(LATER_COLUMNS)
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        return [{**{k: float(v) for k, v in LATER_COLUMNS.items()},
                 **{k: int(v) if k == "epoch" else float(v) for k, v in row.items()}}
                for row in reader]

