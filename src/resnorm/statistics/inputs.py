"""The inputs of a contrast or a ranking: runs as lists of seeds, each seed's predictions on the
one validation set every run shares, and their metric on the whole set and on every bootstrap
resample (cached across calls)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from resnorm.statistics.metrics import as_label_array, count_classes, replicates

__all__ = ["SeedPredictions"]


@dataclass(frozen=True)
class SeedPredictions:
    """One (run, seed)'s best-checkpoint predictions on the shared validation set."""

    seed: int | None
    labels: np.ndarray
    preds: np.ndarray


def seed_arrays(seed: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(seed, SeedPredictions):
        lab, pred = seed.labels, seed.preds
    elif isinstance(seed, np.ndarray):
        raise TypeError(f"{where} is an array: a run is a list of seeds, each a (labels, preds) "
                        "pair or a SeedPredictions (wrap a single seed as [(labels, preds)])")
    else:
        try:
            lab, pred = seed
        except (TypeError, ValueError):
            raise TypeError(f"{where} must be a (labels, preds) pair or a SeedPredictions, "
                            f"got {type(seed).__name__}") from None
    lab, pred = as_label_array(lab, f"{where} labels"), as_label_array(pred, f"{where} preds")
    if lab.shape != pred.shape:
        raise ValueError(f"{where}: labels ({lab.size}) and preds ({pred.size}) differ in length")
    return lab, pred


def normalize_groups(groups: Sequence[Sequence[Any]]
                     ) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """(labels, [[preds per seed] per run]) after checking every seed shares one val set."""
    if isinstance(groups, np.ndarray) or len(groups) == 0:
        raise ValueError("a contrast needs at least one run (a list of seeds)")
    labels: np.ndarray | None = None
    runs: list[list[np.ndarray]] = []
    for r, group in enumerate(groups):
        if isinstance(group, (SeedPredictions, np.ndarray)):
            raise TypeError(f"run {r} must be a list of seeds, got a single "
                            f"{type(group).__name__} (wrap it as [seed])")
        seeds = list(group)
        if not seeds:
            raise ValueError(f"run {r} has no seeds")
        run = []
        for s, seed in enumerate(seeds):
            lab, pred = seed_arrays(seed, f"run {r} seed {s}")
            if labels is None:
                labels = lab
            elif lab.size != labels.size:
                raise ValueError(
                    f"run {r} seed {s} was evaluated on {lab.size} validation images, run 0 "
                    f"seed 0 on {labels.size}: all runs must share one validation set")
            elif not np.array_equal(lab, labels):
                raise ValueError(f"run {r} seed {s} has other validation labels than run 0 "
                                 "seed 0: all runs must share one validation set, in one order")
            run.append(pred)
        runs.append(run)
    return labels, runs


def paired_by_seed(groups: Sequence[Sequence[Any]]) -> tuple[Sequence[Sequence[Any]], bool]:
    """The groups in seed order, and whether they pair by seed: two or more runs, each with
    the same K >= 2 distinct seed ids (SeedPredictions.seed), so seed s of every run shares
    its initialisation draw and data order with seed s of the others."""
    if isinstance(groups, np.ndarray) or len(groups) < 2:
        return groups, False
    ids = []
    for group in groups:
        if isinstance(group, (SeedPredictions, np.ndarray)):
            return groups, False
        seeds = [getattr(s, "seed", None) for s in group]
        if len(seeds) < 2 or None in seeds or len(set(seeds)) != len(seeds):
            return groups, False
        ids.append(seeds)
    if any(sorted(i) != sorted(ids[0]) for i in ids):
        return groups, False
    return [sorted(group, key=lambda s: s.seed) for group in groups], True


def checked_indices(indices: np.ndarray, n: int) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] != n or indices.shape[0] < 2:
        raise ValueError(f"bootstrap indices of shape {indices.shape} do not fit {n} images "
                         "(need (n_boot >= 2, N))")
    return indices


def _key(labels: np.ndarray, preds: np.ndarray, metric: str, indices: np.ndarray) -> tuple:
    h = hashlib.blake2b(labels.tobytes(), digest_size=16)
    h.update(preds.tobytes())
    return (metric, h.hexdigest(), id(indices), indices.shape)


def run_scores(labels: np.ndarray, runs: list[list[np.ndarray]], metric: str,
               indices: np.ndarray, cache: dict | None
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per run: m(r, s) on the whole set, (K_r,), and m*(r, s) on every resample, (K_r, B).
    `cache` (a dict, or None) keeps each (predictions, metric, indices) replicate row."""
    c = count_classes(labels, *(p for run in runs for p in run))
    full_idx = np.arange(labels.size)[None, :]
    full, reps = [], []
    for run in runs:
        full.append(np.array([replicates(labels, p, metric, full_idx, c)[0] for p in run]))
        rows = []
        for p in run:
            key = _key(labels, p, metric, indices) if cache is not None else None
            if key is not None and key in cache:
                rows.append(cache[key][1])
                continue
            rep = replicates(labels, p, metric, indices, c)
            if key is not None:
                cache[key] = (indices, rep)  # keep `indices` alive: its id is in the key
            rows.append(rep)
        reps.append(np.stack(rows))
    return full, reps
