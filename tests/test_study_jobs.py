"""`resnorm study --jobs K`: runs trained in parallel processes give the results the sequential
study gives, a failed or crashed job is recorded while the others finish (also within a
--shard), a re-run skips the finished runs, Ctrl-C stops the running jobs, and torchrun
refuses --jobs > 1."""
from __future__ import annotations

import csv
import json
import os
import time
import types

import pytest
import yaml

from resnorm import cli
from resnorm.study.execution import pool as study_jobs
from resnorm.metrics import TIMING_COLUMNS
from resnorm.study.execution.state import OutcomeRecorder
from resnorm.study.execution.job import Job, Outcome

pytestmark = pytest.mark.usefixtures("one_thread")

PLAN = {
    "threads": 1,  # one thread per job as in the sequential study: results are bit-identical
    "defaults": {"size": 32, "n": 1, "epochs": 1, "batch_size": 16, "device": "cpu"},
    "runs": [{"name": "gn", "norm": "gn"},
             {"name": "too_big", "norm": "bn", "batch_size": 512},  # fails: fewer images
             {"name": "bn", "norm": "bn"}],
}
GOOD = ("gn", "bn")


def argv(data, plan, out, jobs):
    return ["study", "--data", str(data), "--plan", str(plan), "--out", str(out), "--quiet",
            "--no-gradcam", "--no-report", "--jobs", str(jobs)]


def summary(text):
    """The study's line per job, by run name (one seed: 'bn/seed-0' is run 'bn')."""
    return {line.split()[1].removesuffix("/seed-0"): line for line in text.splitlines()
            if line.startswith("[")}


def results(run):
    final = json.loads((run / "final.json").read_text())
    with open(run / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS}
                for r in csv.DictReader(f)]
    return final["status"], final["eval"], rows


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "plan.yaml"
    path.write_text(yaml.safe_dump(PLAN))
    return path


@pytest.mark.slow
def test_jobs_match_the_sequential_study_and_rerun_skips(synth_cache, plan_file, tmp_path,
                                                        capsys):
    seq, par = tmp_path / "seq", tmp_path / "par"
    assert cli.main(argv(synth_cache.path, plan_file, seq, 1)) == 1
    capsys.readouterr()
    assert cli.main(argv(synth_cache.path, plan_file, par, 2)) == 1
    out, err = capsys.readouterr()
    lines = summary(out)
    assert sorted(lines) == ["bn", "gn", "too_big"]  # one line per run, in completion order
    assert all(lines[n].split()[2] == "completed" and "trained in" in lines[n] for n in GOOD)
    assert "fewer than one batch" in lines["too_big"]
    assert "1 job(s) failed: too_big/seed-0" in err
    for name in GOOD:
        assert results(par / "runs" / name / "seed-0") == results(seq / "runs" / name / "seed-0")
        log = (par / "runs" / name / "seed-0" / "train.log").read_text()
        assert "1 torch thread(s)" in log and "epoch 1/1" in log  # the run's own output
    state = json.loads((par / "study.json").read_text())
    assert {n: e["status"] for n, e in state["runs"].items()} == \
        {"gn/seed-0": "completed", "bn/seed-0": "completed", "too_big/seed-0": "failed"}
    assert "fewer than one batch" in state["runs"]["too_big/seed-0"]["error"]
    assert "Traceback" in (par / "runs" / "too_big" / "seed-0" / "error.txt").read_text()

    # a re-run skips the finished runs (no process for them) and retries the failed one
    before = {n: (par / "runs" / n / "seed-0" / "best.pt").stat().st_mtime_ns for n in GOOD}
    assert cli.main(argv(synth_cache.path, plan_file, par, 2)) == 1
    lines = summary(capsys.readouterr().out)
    assert all("(already done)" in lines[n] for n in GOOD)
    assert "fewer than one batch" in lines["too_big"]
    assert {n: (par / "runs" / n / "seed-0" / "best.pt").stat().st_mtime_ns for n in GOOD} == before


def crashing_job(cfg, run_dir, progress, label):
    """A job whose worker process dies without a word for run 'too_big' (as if killed)."""
    if cfg.name == "too_big":
        os._exit(9)
    return study_jobs.train_locked(cfg, run_dir, progress, label)


@pytest.mark.slow
def test_a_crashed_job_is_a_failed_run_and_the_others_finish(synth_cache, tmp_path,
                                                            monkeypatch, capsys):
    """...also within a shard: --shard 0/2 trains runs 0 and 2 (gn, too_big) with 2 jobs."""
    monkeypatch.setattr(study_jobs, "_run_job", crashing_job)
    out_dir = tmp_path / "s"
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({**PLAN, "runs": [{"name": "gn", "norm": "gn"},
                                                     {"name": "other", "norm": "gn"},
                                                     PLAN["runs"][1]]}))
    assert cli.main([*argv(synth_cache.path, plan, out_dir, 2), "--shard", "0/2"]) == 1
    lines = summary(capsys.readouterr().out)
    assert sorted(lines) == ["gn", "too_big"] and not (out_dir / "runs" / "other").exists()
    assert "exit code 9" in lines["too_big"] and lines["gn"].split()[2] == "completed"
    state = json.loads((out_dir / "study.json").read_text())
    assert state["runs"]["too_big/seed-0"]["status"] == "failed"
    assert "exit code 9" in (out_dir / "runs" / "too_big" / "seed-0" / "error.txt").read_text()


def test_jobs_threads_and_usage_errors(synth_cache, plan_file, tmp_path, monkeypatch, capsys):
    assert study_jobs.job_threads(4, 3) == 3            # the plan's threads win
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert study_jobs.job_threads(3, None) == 2 and study_jobs.job_threads(16, None) == 1
    assert cli.main(argv(synth_cache.path, plan_file, tmp_path / "a", 0)) == 2
    assert "--jobs must be a positive integer" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")          # as under torchrun
    assert cli.main(argv(synth_cache.path, plan_file, tmp_path / "b", 2)) == 2
    err = capsys.readouterr().err.strip()
    assert "torchrun" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()


def sleeping_job(cfg, run_dir, progress, label):
    """Job 'slow' notes its worker's pid, then trains 'forever'; the others finish at once."""
    if cfg.name == "slow":
        (run_dir / "pid").write_text(str(os.getpid()))
        time.sleep(600)
    return Outcome(label, "completed", "trained", None, 0.1)


@pytest.mark.slow
def test_ctrl_c_stops_the_running_jobs(tmp_path, monkeypatch):
    """An interrupt in the parent while a job trains (here: as the other job's line is said)
    terminates that job's worker; the interrupt goes on up."""
    monkeypatch.setattr(study_jobs, "_run_job", sleeping_job)
    jobs = [Job(types.SimpleNamespace(name=name), 0,
                types.SimpleNamespace(name=name, out=str(tmp_path / name), lr=0.1), "")
            for name in ("slow", "quick")]
    pid_file = tmp_path / "slow" / "pid"

    def say(line):
        if line.startswith("["):  # quick's outcome: interrupt once slow is surely training
            deadline = time.monotonic() + 120
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            raise KeyboardInterrupt

    executor = study_jobs.PoolExecutor(OutcomeRecorder(None), 2, 1, progress=False)
    with pytest.raises(KeyboardInterrupt):
        executor.run(jobs, say)
    with pytest.raises(ProcessLookupError):  # terminated and reaped, not left training
        os.kill(int(pid_file.read_text()), 0)

