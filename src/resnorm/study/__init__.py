"""The study: a plan of runs, trained and compared (Grad-CAM and the report read it; the
whole `resnorm study` pipeline is resnorm.pipeline, on the floor above).

Three rooms: plan/ (the plan, its design, the manifest, options, tune settings), execution/
(executors, the pool, SLURM, locks, capacity, state, records) and tuning/ (the tune: phase);
beside them runner (prepare, tune and train a plan's jobs), datasets (the data once per size)
and cli (`resnorm study`'s flags). The statistics are their own package, resnorm.statistics.

The names below import lazily: importing `resnorm.study.execution.records` (as the report and Grad-CAM
do) must not pull the runner and training in with it.
"""
from __future__ import annotations

import importlib

_LAZY = {"load_plan": "resnorm.study.plan.parse",
         "parse_plan": "resnorm.study.plan.parse", "Plan": "resnorm.study.plan.parse",
         "RunSpec": "resnorm.study.plan.parse", "resolve_runs": "resnorm.study.plan.resolve",
         "collect_runs": "resnorm.study.execution.records",
         "RunRecord": "resnorm.study.execution.records", "best_run": "resnorm.study.execution.records"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'resnorm.study' has no attribute {name!r}")
