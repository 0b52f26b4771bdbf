"""The statistics behind a study's verdicts: intervals that count seeds *and* images.

Pure numpy + scipy.stats (no torch), so the report and any tool can use it cheaply. By concern:

  metrics     accuracy, micro and macro F1 of predictions, on the whole validation set or on
              every bootstrap resample of it
  inputs      runs as lists of seeds' predictions on the one validation set they share
  contrasts   a weighted sum of runs (a − b, the batch-size interaction) with a 95 % interval
              over seeds and images, its p and verdict; the equivalence test
  intervals   plain-sample intervals: a mean (t), a share (Wilson), a difference of means
              (Welch)
"""
from resnorm.study.statistics.contrasts import (NOT_COMPUTABLE, compare, contrast, equivalence,
                                                equivalence_p, interaction, summarize)
from resnorm.study.statistics.inputs import SeedPredictions
from resnorm.study.statistics.intervals import t_interval, welch_difference, wilson_interval
from resnorm.study.statistics.metrics import (DEFAULT_N_BOOT, METRICS, bootstrap_indices,
                                              metric_replicates, metric_value)

__all__ = [
    "METRICS", "DEFAULT_N_BOOT", "NOT_COMPUTABLE",
    "SeedPredictions", "metric_value", "bootstrap_indices", "metric_replicates",
    "contrast", "compare", "interaction", "summarize", "equivalence", "equivalence_p",
    "t_interval", "wilson_interval", "welch_difference",
]
