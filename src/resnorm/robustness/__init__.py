"""Beyond accuracy: every trained run on corrupted held-out images (Hendrycks & Dietterich's
15 corruptions at severities 1-5), as trained and with BN's statistics adapted at test time
(Schneider et al. 2020), with intervals and verdicts on the study's statistics.

Modules, top down (each imports only modules below it; nothing here imports torch until it
evaluates, so the report reads the results without it):
  cli          `resnorm robustness STUDY`: the step on a finished study, then the report
  step         the study's step: the corrupted set once, one evaluation job per finished
               (run, seed) through the study's executors (`Evaluation`, a study JobWork)
  summary      summary.json's `robustness`: per-run numbers, the robustness family, the
               exploratory comparisons per corruption
  evaluate     one (run, seed) scored as trained and adapted (scores.npz, result.json)
  measures     a run's numbers with intervals on the seed-variance model; mCE
  adaptation   BN's running statistics re-estimated on unlabeled images, on a copy
  corrupted    the corrupted set: made once per dataset and size, cached, shared
  results      STUDY/robustness as data
  corruptions  the 15 corruptions from the maintained `imagecorruptions-imaug` library

The plan's section is parsed by resnorm.study.plan.robustness_settings; the design's
robustness question by resnorm.study.plan.design.robustness_question; the report's section
is resnorm.report.robustness. docs/robustness.md says what is measured and how.
"""
