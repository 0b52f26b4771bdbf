"""Which runs' seed spread may be pooled with the others' (`model`): a run that is not
comparable is kept out of the pool (its own variance, prior df 0) and named, with why.

- **a diverged seed**: its best checkpoint before the divergence is scored, so the run's
  seed spread is that of a failure, not of training noise;
- **another recipe**: a run trained by a recipe that most runs do not use (the literal
  recipe beside the default one) is another training procedure, whose seed spread says
  nothing about the others' (SGD at 1e-4 barely moves the initial weights: its seeds differ
  by a fraction of the others');
- **at chance level**: a run whose accuracy is not above what predicting the most frequent
  class scores (a one-sided test at 5 % over its seeds' images: the seeds of a run that
  learns nothing differ by little but binomial luck).

One such run in the pool drags the pooled variance down (a run that learns nothing: 7.5 % of
studies made a false claim instead of 5 %) or up (a diverged seed: the detectable effect rose
from 15.6 to 25.8 points) for every comparison (issue 39).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Mapping, Sequence

import numpy as np

from resnorm.statistics.inputs import SeedPredictions

__all__ = ["not_comparable", "runs_not_comparable"]

_Z95 = 1.6449  # the one-sided 95 % normal quantile


def not_comparable(accuracy: Mapping[str, Sequence[float]], n_images: int,
                   chance: float | None = None, diverged: Mapping[str, int] | None = None,
                   recipes: Mapping[str, str] | None = None) -> dict[str, str]:
    """{run: why} for the runs kept out of the pool. `accuracy`: each run's seeds' accuracy
    on the `n_images` evaluated images; `chance`: the accuracy of always predicting the most
    frequent class (None: not checked); `diverged`: diverged seeds per run; `recipes`: each
    run's recipe name."""
    out: dict[str, str] = {}
    main = _main_recipe(recipes or {})
    for name, accs in accuracy.items():
        n_div = (diverged or {}).get(name, 0)
        recipe = (recipes or {}).get(name)
        if n_div:
            out[name] = f"{n_div} diverged seed{'s' if n_div > 1 else ''}"
        elif main is not None and recipe is not None and recipe != main:
            out[name] = f"recipe {recipe}, not the study's {main}"
        elif chance is not None and _at_chance(accs, n_images, chance):
            out[name] = (f"at chance level: not above the {100 * chance:.0f} % of always "
                         "predicting the most frequent class")
    return out


def _main_recipe(recipes: Mapping[str, str]) -> str | None:
    """The recipe most runs use; None on a tie (no run is set apart by its recipe)."""
    counts = Counter(recipes.values()).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def _at_chance(accs: Sequence[float], n_images: int, chance: float) -> bool:
    """The mean accuracy over seeds is not above `chance` by a one-sided 5 % test of
    binomial guessing on the seeds' images (K × N of them)."""
    if not accs or n_images <= 0:
        return False
    mean = sum(accs) / len(accs)
    se = math.sqrt(chance * (1 - chance) / (n_images * len(accs)))
    return mean <= chance + _Z95 * se


def runs_not_comparable(runs: Mapping[str, Sequence[SeedPredictions]],
                        diverged: Mapping[str, int] | None = None,
                        recipes: Mapping[str, str] | None = None) -> dict[str, str]:
    """`not_comparable` from the runs' predictions on one evaluated set: each seed's accuracy,
    chance the share of the most frequent class among the labels."""
    labels = next(iter(runs.values()))[0].labels
    accuracy = {n: [float(np.mean(s.labels == s.preds)) for s in seeds]
                for n, seeds in runs.items()}
    chance = float(np.bincount(labels).max() / labels.size) if labels.size else None
    return not_comparable(accuracy, int(labels.size), chance, diverged, recipes)
