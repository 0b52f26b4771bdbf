"""The one executor interface: jobs anywhere (not only STUDY/runs/), each outcome recorded
once by the one recorder (study.json's entry, in the section asked for, and a line numbered in
finishing order), outcomes returned in job order, a busy job said but not recorded, a full disk
recorded and then stopping the executor; and the import contracts that keep the study from
importing Grad-CAM and the report."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from resnorm.errors import ResourceError
from resnorm.study.execution import job as training
from resnorm.study.execution.executors import InProcessExecutor, make_executor
from resnorm.study.execution.pool import PoolExecutor
from resnorm.study.plan.parse import parse_plan
from resnorm.study.execution.slurm import SlurmExecutor, SlurmSettings
from resnorm.study.execution.state import OutcomeRecorder, StudyState
from resnorm.study.execution.job import Job, Outcome

ROOT = Path(__file__).resolve().parents[1]
PLAN = parse_plan({"defaults": {"size": 32, "n": 1, "epochs": 1, "device": "cpu"},
                   "runs": [{"name": "bn", "norm": "bn"}]})


def trial(folder: Path, name: str, lr: float) -> Job:
    """A tuning-style job: its folder outside STUDY/runs/."""
    cfg = types.SimpleNamespace(out=str(folder), lr=lr, name=name, device="cpu")
    return Job(types.SimpleNamespace(name=name), 0, cfg, f"tried lr {lr}")


@pytest.fixture
def fake_training(monkeypatch):
    """train_one replaced: 'full' fills the disk, 'held' is another process's, others finish."""
    def fake_train_one(cfg, run_dir, progress, label=None):
        if cfg.name == "full":
            raise ResourceError("no space left on the device")
        return Outcome(label, "completed", "trained", {"epochs_run": 1}, 1.5)

    monkeypatch.setattr(training, "train_one", fake_train_one)


def test_jobs_anywhere_are_recorded_once_in_the_section_asked_for(tmp_path, fake_training):
    study = tmp_path / "study"
    study.mkdir()
    state = StudyState(study, PLAN, "data")
    state.record("bn/seed-0", status="completed")  # the plan's jobs stay as they are
    jobs = [trial(study / "tuning" / "bn" / f"lr-{lr}" / "seed-0", f"bn/lr-{lr}", lr)
            for lr in (0.1, 0.01)]
    lines = []
    executor = make_executor("local", jobs=1, recorder=OutcomeRecorder(state, "tuning"),
                             progress=False)
    assert isinstance(executor, InProcessExecutor)
    outcomes = executor.run(jobs, lines.append)
    assert [o.name for o in outcomes] == ["bn/lr-0.1/seed-0", "bn/lr-0.01/seed-0"]
    saved = json.loads((study / "study.json").read_text())
    assert saved["runs"] == {"bn/seed-0": {"status": "completed"}}
    assert saved["tuning"]["bn/lr-0.01/seed-0"] == {
        "status": "completed", "action": "trained", "seconds": 1.5, "error": None,
        "lr": 0.01, "lr_note": "tried lr 0.01"}
    assert [line.split()[:3] for line in lines] == [["[1/2]", "bn/lr-0.1/seed-0", "completed"],
                                                  ["[2/2]", "bn/lr-0.01/seed-0", "completed"]]


def test_a_busy_job_is_said_not_recorded_and_a_full_disk_stops(tmp_path, fake_training):
    from resnorm.study.execution.locks import run_lock

    state = StudyState(tmp_path, PLAN, "data")
    held, full, never = (trial(tmp_path / n, n, 0.1) for n in ("held", "full", "never"))
    lines = []
    executor = make_executor("inprocess", recorder=OutcomeRecorder(state), progress=False)
    with run_lock(held.dir) as holder:  # this process holds it, as another study would
        assert holder is None
        with pytest.raises(ResourceError, match="no space left"):
            executor.run([held, full, never], lines.append)
    runs = json.loads((tmp_path / "study.json").read_text())["runs"]
    assert list(runs) == ["full/seed-0"] and runs["full/seed-0"]["status"] == "failed"
    assert "busy" in lines[0] and "being trained by" in lines[0]
    assert len(lines) == 2  # "never" was not started


def test_make_executor_kinds(tmp_path):
    recorder = OutcomeRecorder(None)
    assert isinstance(make_executor("local", jobs=3, recorder=recorder), PoolExecutor)
    slurm = make_executor("slurm", recorder=recorder, folder=tmp_path,
                          slurm_settings=SlurmSettings(cluster="debug"))
    assert isinstance(slurm, SlurmExecutor) and slurm.folder == tmp_path
    with pytest.raises(ValueError, match="executor kind must be one of"):
        make_executor("ray", recorder=recorder)


# --- the import contracts -------------------------------------------------------------------

def lint_imports(src: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        pytest.skip("lint-imports is not installed (pip install -e '.[dev]')")
    return subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(src)})


@pytest.mark.slow
def test_the_study_may_not_import_the_report_or_gradcam(tmp_path):
    """The contract is in pyproject.toml, holds for the code, and breaks when a study module
    imports the report."""
    text = (ROOT / "pyproject.toml").read_text()
    assert 'source_modules = ["resnorm.study"]' in text
    assert 'forbidden_modules = ["resnorm.gradcam", "resnorm.report"]' in text
    kept = lint_imports(ROOT / "src")
    assert kept.returncode == 0, kept.stdout[-2000:]
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "resnorm", copy / "resnorm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "resnorm" / "study" / "executors.py", "a") as f:
        f.write("\nfrom resnorm.report import write_report  # an upward import\n")
    broken = lint_imports(copy)
    assert broken.returncode != 0
    assert "resnorm.study is not allowed to import resnorm.report" in broken.stdout
