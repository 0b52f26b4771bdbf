"""RunDir: the one owner of a run folder's file names, writes, fresh start and reads."""
from __future__ import annotations

import numpy as np

from resnorm.rundir import (CLAIM_FILE, ERROR_FILE, FINAL_FILE, LOCK_FILE, LOG_FILE, RUN_FILES,
                            RunDir)


def test_clear_removes_the_runs_own_files_and_nothing_else(tmp_path):
    run = RunDir(tmp_path)
    for name in RUN_FILES:
        run.path(name).write_text("old")
    (tmp_path / "events.out.tfevents.1.host").write_text("old")
    (tmp_path / ".last.pt.tmp-123").write_text("torn write of a killed process")
    others = ["notes.txt", LOG_FILE, LOCK_FILE, CLAIM_FILE, ".other.tmp-1"]
    for name in others:
        (tmp_path / name).write_text("not the run's")
    (tmp_path / "gradcam").mkdir()
    run.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others + ["gradcam"])
    assert "predictions.npz" in RUN_FILES and ERROR_FILE in RUN_FILES


def test_readers_answer_empty_for_a_run_not_yet_written(tmp_path):
    run = RunDir(tmp_path / "none")
    assert run.final() is None and run.config() == {} and run.metrics() == []
    assert run.predictions() is None and not run.started and not run.finished
    run.clear()  # no folder: nothing to do


def test_writes_are_atomic_main_only_and_read_back(tmp_path):
    RunDir(tmp_path, is_main=False).write_final({"status": "completed"})
    RunDir(tmp_path, is_main=False).write_config({"norm": "bn"}, {"device": "cpu"})
    assert list(tmp_path.iterdir()) == []  # under DDP only rank 0 writes
    run = RunDir(tmp_path)
    run.write_config({"norm": "bn", "seed": 3}, {"device": "cpu"})
    run.write_final({"status": "completed", "confusion": [[1, 0], [0, 2]]})
    run.write_predictions({"val": {"labels": [0, 1], "preds": [0, 0], "probs": np.eye(2)}})
    assert run.config() == {"norm": "bn", "seed": 3, "environment": {"device": "cpu"}}
    assert run.final()["confusion"] == [[1, 0], [0, 2]] and run.finished and run.started
    assert "[1, 0]" in run.path(FINAL_FILE).read_text()  # a confusion row per line
    assert run.predictions()["val"]["preds"].tolist() == [0, 0]
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_torn_final_json_reads_as_unfinished(tmp_path):
    (tmp_path / FINAL_FILE).write_text('{"status": "compl')
    (tmp_path / "config.yaml").write_text("norm: [\n")
    run = RunDir(tmp_path)
    assert run.final() is None and run.config() == {}
