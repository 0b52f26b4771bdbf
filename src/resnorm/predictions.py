"""A run's per-image predictions of its best checkpoint: the format of RUN/predictions.npz
(numpy only; the run folder, resnorm.rundir.RunDir, names the file and writes it).

Written by the run's final evaluation, read by the study's statistics: the paired image
bootstrap and McNemar's test need to know, image by image, what each (run, seed) predicted on
the same validation set. Per split ("train", "val", "test") the file holds

- ``<split>_labels`` (int16): the true class of each image, in the split's file order;
- ``<split>_preds`` (int16): the predicted class;
- ``<split>_probs`` (float16, val and test only): the softmax probabilities (train would be
  30,000 × 25 numbers for no use of the statistics).

7,500 val images × 25 classes is about 0.4 MB per run.
"""
from __future__ import annotations

import io
import os

import numpy as np

from resnorm.fileio import atomic_write_bytes

__all__ = ["write_predictions", "read_predictions"]

PROB_SPLITS = ("val", "test")


def write_predictions(path: str | os.PathLike, splits: dict[str, dict]) -> None:
    """Write {split: {"labels", "preds", "probs"}} (array-likes) to `path` atomically."""
    arrays = {}
    for split, kept in splits.items():
        arrays[f"{split}_labels"] = np.asarray(kept["labels"]).astype(np.int16)
        arrays[f"{split}_preds"] = np.asarray(kept["preds"]).astype(np.int16)
        if split in PROB_SPLITS and kept.get("probs") is not None:
            arrays[f"{split}_probs"] = np.asarray(kept["probs"]).astype(np.float16)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getbuffer())


def read_predictions(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]] | None:
    """{split: {"labels", "preds"[, "probs"]}} from a predictions file, or None when there is
    none (the run has not finished, or an older resnorm trained it) or it is unreadable."""
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError):
        return None
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        split, _, what = key.rpartition("_")
        out.setdefault(split, {})[what] = value.astype(np.int64) if what != "probs" else value
    return {s: d for s, d in out.items() if "labels" in d and "preds" in d} or None
