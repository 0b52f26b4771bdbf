"""How stable a choice among candidates is under the noise of the finite validation set: a
bootstrap over the val images of the candidates' scores (a tuning phase's trials).

Each candidate has a score (the tuning phase's: the median of its last epochs' val scores,
averaged over its seeds) and, per seed, the per-image val predictions of its best checkpoint.
The epochs behind the median have no stored per-image predictions, so the bootstrap moves each
score by what resampling the images does to its best checkpoint's metric: on resample b,

    score_c(b) = score_c + mean over seeds of [metric_c,s(b) − metric_c,s(all images)],

with the same resampled images for every candidate (paired: they were scored on the same
val images). The share of resamples in which each candidate scores highest (ties: the first
in the order given, so pass the candidates in the order the choice breaks ties) says how
often the same val noise would have changed the choice.
The noise of training (another seed) is not in it: with one seed per trial it cannot be.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from resnorm.statistics.metrics import bootstrap_indices, metric_replicates, metric_value

__all__ = ["choice_shares"]


def choice_shares(labels: np.ndarray, preds: Sequence[Sequence[np.ndarray]],
                  scores: Sequence[float], metric: str = "acc", n_boot: int = 1000,
                  rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """The share of `n_boot` image resamples in which each candidate has the highest score.

    `labels`: (N,) the val labels; `preds[c]`: candidate c's per-seed (N,) predictions;
    `scores[c]`: its score on all images; on a tie the earlier candidate wins. Returns (C,)
    shares summing to 1."""
    labels = np.asarray(labels)
    if not preds or len(preds) != len(scores) or any(not p for p in preds):
        raise ValueError("need one score and at least one seed's predictions per candidate")
    index = bootstrap_indices(labels.size, n_boot, rng)
    moved = np.empty((len(preds), n_boot))
    for c, (seeds, score) in enumerate(zip(preds, scores)):
        shifts = [metric_replicates(labels, p, metric, index) - metric_value(labels, p, metric)
                  for p in seeds]
        moved[c] = float(score) + np.mean(shifts, axis=0)
    winners = np.argmax(moved, axis=0)  # the earlier candidate on ties
    return np.bincount(winners, minlength=len(preds)) / n_boot
