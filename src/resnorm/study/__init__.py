"""The study: a plan of runs, trained, compared and reported.

plan (the YAML plan) | records (the study folder as data) | runner (run_study) |
jobs (--jobs K) | slurm (--executor slurm) | training (one run of a study) | cli (`resnorm study`).

`from resnorm.study import run_study` works, but lazily: importing `resnorm.study.records`
(as the report and Grad-CAM do) must not pull the runner, training and the report in with it.
"""
from __future__ import annotations

import importlib

_LAZY = {"run_study": "resnorm.study.runner", "load_plan": "resnorm.study.plan",
         "parse_plan": "resnorm.study.plan", "Plan": "resnorm.study.plan",
         "RunSpec": "resnorm.study.plan", "resolve_fields": "resnorm.study.plan",
         "collect_runs": "resnorm.study.records",
         "RunRecord": "resnorm.study.records", "best_run": "resnorm.study.records"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'resnorm.study' has no attribute {name!r}")
