"""The statistics behind a study's verdicts: intervals that count seeds *and* images, families
of tests adjusted together, and a ranking with its uncertainty.

Pure numpy + scipy.stats (no torch), so the report and any tool can use it cheaply. By concern:

  metrics     accuracy, micro and macro F1 of predictions, on the whole validation set or on
              every bootstrap resample of it
  inputs      runs as lists of seeds' predictions on the one validation set they share
  contrasts   a weighted sum of runs (a − b, the batch-size interaction) with a 95 % interval
              over seeds and images, its p and verdict; the equivalence test
  resampling  the two-level bootstrap of a study's runs (seeds, then images; paired)
  model       the study's seed-variance model: each run's seed variance moderated towards
              the runs' pool (empirical Bayes), the shared image variance; contrasts' se,
              df and correlation in closed form
  joint       the model fitted to a study's predictions, its contrasts as results
  prior       the prior of the runs' seed variances: s0² pooled, d0 the data's 95 % lower
              bound (profile likelihood)
  comparable  which runs are kept out of the pool (a diverged seed, another recipe, chance)
  null        the family's joint null drawn from the model: per statistic, over the
              variance draws the model allows, seeded from the study
  families    step-down max-T (on the model's null) and Holm (primary family),
              Benjamini–Hochberg (exploratory) adjusted p-values, simultaneous intervals,
              detectable effects (noncentral t), adjusted verdicts
  calibration a study's own design simulated: its family's error rate, coverage, best set,
              false equivalence and power at the detectable effect, with Monte Carlo SEs
  ranking     the best set (Hsu's MCB from the simultaneous intervals); P(best) and
              expected rank per run
  intervals   plain-sample intervals: a mean (t), a share (Wilson), a difference of means
              (Welch)
"""
from resnorm.statistics.contrasts import (INTERACTION_VERDICT, NOT_COMPUTABLE, compare,
                                          contrast, equivalence,
                                                equivalence_p, interaction, summarize)
from resnorm.statistics.families import (ALPHA, EXPLORATORY, NO_DIFFERENCE, POWER,
                                               PRIMARY, adjust, benjamini_hochberg, holm,
                                               interval_at, max_t, max_t_null)
from resnorm.statistics.inputs import SeedPredictions
from resnorm.statistics.intervals import t_interval, welch_difference, wilson_interval
from resnorm.statistics.metrics import (DEFAULT_N_BOOT, METRICS, bootstrap_indices,
                                              metric_replicates, metric_value)
from resnorm.statistics.joint import (adjust_model, fit_runs, paired_fit, results,
                                            weight_matrix)
from resnorm.statistics.model import (MODEL_NAME, SeedModel, contrast_correlation,
                                            detectable_effect, fit_seed_model,
                                            moments_from_correct)
from resnorm.statistics.ranking import BEST_THRESHOLD, best_or_tied, best_set, rank_runs
from resnorm.statistics.comparable import not_comparable, runs_not_comparable
from resnorm.statistics.null import null_p_values, null_statistics, study_rng
from resnorm.statistics.calibration import NULL_DRAWS as CALIBRATION_NULL_DRAWS
from resnorm.statistics.calibration import FamilyDesign, calibrate
from resnorm.statistics.resampling import Resample, resample_runs

__all__ = [
    "METRICS", "DEFAULT_N_BOOT", "NOT_COMPUTABLE", "INTERACTION_VERDICT", "ALPHA", "PRIMARY", "EXPLORATORY",
    "NO_DIFFERENCE", "BEST_THRESHOLD",
    "SeedPredictions", "metric_value", "bootstrap_indices", "metric_replicates",
    "contrast", "compare", "interaction", "summarize", "equivalence", "equivalence_p",
    "holm", "benjamini_hochberg", "interval_at", "max_t", "max_t_null", "adjust", "POWER",
    "not_comparable", "runs_not_comparable", "null_p_values", "null_statistics", "study_rng",
    "FamilyDesign", "calibrate", "CALIBRATION_NULL_DRAWS",
    "MODEL_NAME", "SeedModel", "fit_seed_model", "moments_from_correct", "contrast_correlation",
    "detectable_effect", "fit_runs", "paired_fit", "adjust_model", "results", "weight_matrix",
    "best_set",
    "Resample", "resample_runs", "rank_runs", "best_or_tied",
    "t_interval", "wilson_interval", "welch_difference",
]
