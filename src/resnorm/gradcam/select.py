"""Choosing what a gallery shows: the assignment's classes matched to the dataset's folders,
and a seeded pick of correctly and incorrectly classified validation images per class."""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from resnorm.errors import UsageError

# The seven classes the assignment asks to visualise (Part 2 item 7).
ASSIGNMENT_CLASSES = (
    "Cattle Egret",
    "Coppersmith Barbet",
    "Indian Peacock",
    "Red Wattled Lapwing",
    "Ruddy Shelduck",
    "White Breasted Kingfisher",
    "White Breasted Waterhen",
)
PER_CLASS = 5


def normalize_class_name(name: str) -> str:
    """A key that ignores case, spaces, hyphens and underscores: "Red-Wattled_lapwing" ->
    "redwattledlapwing"."""
    return re.sub(r"[\s_\-]+", "", name).lower()


def match_classes(wanted: Sequence[str], available: Sequence[str]) -> tuple[list[str], list[str]]:
    """Folder names from `available` for each of `wanted`, and the wanted names not found.

    Matching ignores case, spaces, hyphens and underscores ("Cattle Egret" finds
    "Cattle-Egret"). The result keeps the order of `wanted`.
    """
    by_key = {normalize_class_name(c): c for c in available}
    found, missing = [], []
    for name in wanted:
        folder = by_key.get(normalize_class_name(name))
        if folder is None:
            missing.append(name)
        elif folder not in found:
            found.append(folder)
    return found, missing


def select_examples(labels: np.ndarray, preds: np.ndarray, class_index: int, k: int,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of up to k correctly and k incorrectly classified images of one class.

    A seeded sample (seeded by `seed` and the class index, so adding a class does not change
    another class's picks), returned in dataset order. Fewer when fewer exist.
    """
    of_class = labels == class_index
    correct = np.flatnonzero(of_class & (preds == labels))
    incorrect = np.flatnonzero(of_class & (preds != labels))
    rng = np.random.default_rng([seed, class_index])

    def sample(candidates: np.ndarray) -> np.ndarray:
        if len(candidates) <= k:
            return candidates
        return np.sort(rng.choice(candidates, size=k, replace=False))

    return sample(correct), sample(incorrect)


def choose_classes(classes: Sequence[str], wanted: Sequence[str] | None) -> tuple[list[str], str]:
    """Folder names to draw, and a note when the assignment's classes are not all present."""
    if wanted:
        found, missing = match_classes(wanted, classes)
        if missing:
            raise UsageError(f"--classes: no class folder matches {', '.join(missing)} "
                             f"(classes: {', '.join(classes)})")
        return found, ""
    found, missing = match_classes(ASSIGNMENT_CLASSES, classes)
    if not found:
        fallback = list(classes[: len(ASSIGNMENT_CLASSES)])
        return fallback, ("none of the assignment's classes are in this dataset; "
                          f"showing the first {len(fallback)} classes instead")
    note = f"not in this dataset: {', '.join(missing)}" if missing else ""
    return found, note
