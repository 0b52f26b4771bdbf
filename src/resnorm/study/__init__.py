"""The study: a plan of runs, trained and compared (Grad-CAM and the report read it; the
whole `resnorm study` pipeline is resnorm.pipeline, on the floor above).

plan (the YAML plan) | records (the study folder as data) | runner (prepare and train a plan's
jobs) | executors (in-process, jobs: --jobs K, slurm: --executor slurm) | state (study.json,
the outcome recorder) | training (one job) | cli (`resnorm study`'s flags) | statistics.

The names below import lazily: importing `resnorm.study.records` (as the report and Grad-CAM
do) must not pull the runner and training in with it.
"""
from __future__ import annotations

import importlib

_LAZY = {"load_plan": "resnorm.study.plan",
         "parse_plan": "resnorm.study.plan", "Plan": "resnorm.study.plan",
         "RunSpec": "resnorm.study.plan", "resolve_fields": "resnorm.study.plan",
         "collect_runs": "resnorm.study.records",
         "RunRecord": "resnorm.study.records", "best_run": "resnorm.study.records"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'resnorm.study' has no attribute {name!r}")
