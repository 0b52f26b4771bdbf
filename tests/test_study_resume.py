"""A study killed mid-run (SIGKILL) finishes when the same command runs again: the
interrupted run resumes from its last checkpoint instead of starting over."""
from __future__ import annotations

import csv

import pytest
import torch
import yaml

from forked import Forked, resnorm
from kill_helpers import epochs_logged, kill_when
from resnorm import cli
from resnorm.metrics import TIMING_COLUMNS

PLAN = {
    "synthetic": {"num_classes": 3, "train_per_class": 16, "val_per_class": 4,
                  "side_range": [32, 48]},
    "defaults": {"size": 32, "n": 1, "batch_size": 16, "device": "cpu"},
    "runs": [{"name": "long", "norm": "bn", "epochs": 12},
             {"name": "short", "norm": "gn", "epochs": 1}],
}


def rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]



@pytest.mark.slow
def test_killed_study_resumes_the_interrupted_run(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN))
    study = tmp_path / "s"
    argv = ["study", "--synthetic", str(tmp_path / "synth"), "--plan", str(plan),
            "--out", str(study), "--cache", str(tmp_path / "cache"), "--quiet",
            "--no-gradcam", "--no-report"]
    proc = Forked(resnorm, *argv, stdout=False)
    run = study / "runs" / "long" / "seed-0"
    # Kill the study as soon as the first run has checkpointed an epoch and logged it.
    kill_when(proc, lambda: ((run / "last.pt").exists() and epochs_logged(run) >= 1))
    assert not (run / "final.json").exists(), "the run finished before it could be killed"
    assert (tmp_path / "synth" / "SYNTHETIC.txt").exists()  # --synthetic generated the data
    done_before = rows(run / "metrics.csv")
    assert 1 <= len(done_before) < 12

    torch.set_num_threads(1)
    assert cli.main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert lines[0].split()[1:3] == ["long/seed-0", "completed"] and "resumed in" in lines[0]
    assert lines[1].split()[1:3] == ["short/seed-0", "completed"] and "trained in" in lines[1]
    after = rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in after] == list(range(1, 13))
    assert after[:len(done_before)] == done_before  # the epochs before the kill were kept
    # and a third call has nothing left to do
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.count("(already done)") == 2


@pytest.mark.parametrize("flag", ["--data", "--synthetic"])
def test_missing_source_is_a_usage_error(tmp_path, capsys, flag):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"runs": [{"name": "a"}]}))
    target = tmp_path / "nope"
    if flag == "--synthetic":  # a folder that holds something else is refused, not overwritten
        target.mkdir()
        (target / "keep.txt").write_text("mine")
    code = cli.main(["study", flag, str(target), "--plan", str(plan), "--out",
                     str(tmp_path / "s")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("resnorm study: error:") and "\n" not in err
    if flag == "--synthetic":
        assert (target / "keep.txt").read_text() == "mine"
