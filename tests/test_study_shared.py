"""One study folder shared by several `resnorm study` processes: each (run, seed) is trained
exactly once, with the results one study alone gives; a lock left by a dead process is taken
over; the report is written by the process that finishes last."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from forked import Forked, resnorm
from resnorm import cli
from resnorm.study.execution.locks import CLAIM_FILE
from run_results import run_results

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

PLAN = {"threads": 1, "seeds": 2,
        "defaults": {"size": 32, "n": 1, "epochs": 2, "batch_size": 16, "device": "cpu"},
        "runs": [{"name": "bn", "norm": "bn"}, {"name": "gn", "norm": "gn"}]}
LABELS = [f"{run}/seed-{s}" for run in ("bn", "gn") for s in (0, 1)]


def argv(data, plan, out):
    return ["study", "--data", str(data), "--plan", str(plan), "--out", str(out), "--quiet",
            "--no-gradcam"]


def results(study, label):
    return run_results(study / "runs" / label)


def job_lines(text):
    """label -> the study's line for it."""
    return {line.split()[1]: line for line in text.splitlines() if line.startswith("[")}


@pytest.fixture
def plan_file(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(PLAN))
    return path


def test_two_studies_on_one_folder_train_each_job_once(synth_cache, plan_file, tmp_path,
                                                       capsys):
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    procs = [Forked(resnorm, *argv(synth_cache.path, plan_file, shared), text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    trained = {label: 0 for label in LABELS}
    for out, _ in outs:
        for label, line in job_lines(out).items():
            trained[label] += "trained in" in line
            assert "trained in" in line or "being trained by" in line or "already done" in line
    assert trained == {label: 1 for label in LABELS}  # each exactly once, by one of the two
    skipped = "".join(out for out, _ in outs)
    assert f"being trained by {socket.gethostname()}:" in skipped or "already done" in skipped
    # the last process to finish wrote the report, from every job
    assert (shared / "report.html").exists()
    summary = json.loads((shared / "summary.json").read_text())
    assert summary["runs"]["bn"]["seeds"] == [0, 1] and summary["runs"]["gn"]["seeds"] == [0, 1]
    state = json.loads((shared / "study.json").read_text())
    assert sorted(state["runs"]) == LABELS and all(
        e["status"] == "completed" for e in state["runs"].values())

    # the same results as one study alone (its report is not what is compared)
    assert cli.main([*argv(synth_cache.path, plan_file, alone), "--no-report"]) == 0
    capsys.readouterr()
    for label in LABELS:
        assert results(shared, label) == results(alone, label), label


def test_a_stale_lock_of_a_dead_process_is_taken_over(synth_cache, plan_file, tmp_path,
                                                      capsys):
    study = tmp_path / "s"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    folder = study / "runs" / "bn" / "seed-0"
    folder.mkdir(parents=True)
    (folder / CLAIM_FILE).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": int(dead.stdout), "started": "2026-01-01T00:00:00",
         "token": "x"}))
    # seed 0 only: the jobs of bn/seed-0 and gn/seed-0
    assert cli.main([*argv(synth_cache.path, plan_file, study), "--no-report",
                     "--seeds", "1"]) == 0
    lines = job_lines(capsys.readouterr().out)
    assert "trained in" in lines["bn/seed-0"]
    assert not (folder / CLAIM_FILE).exists()  # released when the job was done


def test_a_job_held_by_a_live_process_is_skipped_and_the_report_left_to_it(
        synth_cache, plan_file, tmp_path, capsys):
    from resnorm.study.execution.locks import run_lock

    study = tmp_path / "s"
    folder = study / "runs" / "gn" / "seed-1"
    with run_lock(folder) as holder:  # this test process "trains" gn seed 1
        assert holder is None
        code = cli.main(argv(synth_cache.path, plan_file, study))
    out = capsys.readouterr().out
    assert code == 0
    line = job_lines(out)["gn/seed-1"]
    assert "busy" in line and f"being trained by {socket.gethostname()}:{os.getpid()}" in line
    assert "1 job(s) still being trained by other processes: gn/seed-1" in out
    assert not (study / "report.html").exists()  # left to the process that finishes last
    state = json.loads((study / "study.json").read_text())
    assert "gn/seed-1" not in state["runs"]  # recorded by the process that trains it
