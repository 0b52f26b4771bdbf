"""What a fresh interpreter imports, in one interpreter for the file (`fresh`):

- a plan without `tune:` never imports Optuna: every module of resnorm imported, an untuned
  plan resolved, designed and through the tuning step (which it skips);
- the study pool's fork server imports its modules (resnorm.study.execution.pool.PRELOAD)
  without asking CUDA anything: had that import touched the driver (a device counted, a
  context made), no worker forked from the server could use the GPU."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The untuned plan of tests/test_tuning.py's sampled space.
UNTUNED = {"threads": 1, "defaults": {"size": 16, "n": 1, "epochs": 1, "batch_size": 8,
                                      "device": "cpu"},
           "runs": [{"name": "bn", "norm": "bn"}, {"name": "gn", "norm": "gn:4"}]}

SCRIPT = f"""
import importlib, json, pkgutil, sys, types, torch
cuda_calls = []
def watch(owner, name):  # every torch entry point to the CUDA driver
    real = getattr(owner, name)
    setattr(owner, name, lambda *a, **k: cuda_calls.append(name) or real(*a, **k))
for name in ('_cuda_getDeviceCount', '_cuda_init'):
    watch(torch._C, name)
for name in ('is_available', 'device_count', 'init', '_lazy_init'):
    watch(torch.cuda, name)
from resnorm.study.execution.pool import PRELOAD
for module in PRELOAD:
    importlib.import_module(module)
preload = dict(cuda_calls=list(cuda_calls), cuda_initialized=torch.cuda.is_initialized(),
               torchmetrics='torchmetrics' in sys.modules)
import resnorm
for m in pkgutil.walk_packages(resnorm.__path__, 'resnorm.'):
    if not m.name.endswith('__main__'):
        importlib.import_module(m.name)
from resnorm.study.plan.parse import parse_plan
from resnorm.study.plan.resolve import plan_design, resolve_runs
from resnorm.study.runner import tune_study
plan = parse_plan({UNTUNED!r})
plan_design(plan, resolve_runs(plan))
study = types.SimpleNamespace(plan=plan)
untuned = dict(skipped=tune_study(study) is study, optuna='optuna' in sys.modules)
print(json.dumps(dict(preload=preload, untuned=untuned)))
"""


@pytest.fixture(scope="module")
def fresh():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_plan_without_tune_never_imports_optuna(fresh):
    assert fresh["untuned"] == {"skipped": True, "optuna": False}


def test_the_fork_server_never_asks_cuda_anything(fresh):
    preload = fresh["preload"]
    assert preload["torchmetrics"]  # the training code: what the server saves each worker
    assert preload["cuda_calls"] == [] and not preload["cuda_initialized"]
