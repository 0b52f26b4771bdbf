"""Exact resume: a run SIGKILLed mid-epoch and resumed equals an uninterrupted run."""
from __future__ import annotations

import csv
import json
import signal

import pytest
import torch

from forked import Forked
from resnorm.data import make_synthetic, prepare
from resnorm.metrics import TIMING_COLUMNS
from resnorm.train import TrainConfig, train

def train_child(cfg: dict) -> int:
    """One training, as a child process runs it (progress lines on stderr: it is a pipe, not a
    TTY)."""
    train(TrainConfig(**cfg), progress=True)
    return 0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """48 steps per epoch at batch 4: plenty of epoch left when the child is killed at 25 %."""
    base = tmp_path_factory.mktemp("data")
    root = make_synthetic(base / "synth", num_classes=4, train_per_class=48, val_per_class=4,
                          side_range=(32, 48))
    return prepare(root, size=32, out=base / "cache", progress=False)


def settings(data, out) -> dict:
    return dict(data=str(data), out=str(out), size=32, n=1, norm="bin", batch_size=4, epochs=3,
                eval_batch_size=64)


def run_child(cfg: dict, kill_on: str | None = None) -> tuple[int, str]:
    """Run the child; with `kill_on`, SIGKILL it as soon as it prints a line starting so."""
    child = Forked(train_child, cfg, text=True, stdout=False)
    seen = []
    for line in child.stderr:
        seen.append(line)
        if kill_on and line.startswith(kill_on):
            child.send_signal(signal.SIGKILL)
            break
    child.stderr.close()
    return child.wait(timeout=120), "".join(seen)


def completed_epochs(run_dir) -> int:
    return torch.load(run_dir / "last.pt", weights_only=True)["state"]["epoch"]


def metrics_without_timing(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS}
                for row in csv.DictReader(f)]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count as the children
    try:
        reference = train(TrainConfig(**settings(data, tmp_path / "ref")), progress=False)
    finally:
        torch.set_num_threads(before)

    run = tmp_path / "killed"
    cfg = settings(data, run)
    # Killed a quarter into epoch 2: last.pt holds epoch 1, the csv one row.
    code, log = run_child(cfg, kill_on="epoch 2/3 step 12/48")
    assert code == -signal.SIGKILL, log
    assert completed_epochs(run) == 1
    assert len(metrics_without_timing(run)) == 1
    assert not (run / "final.json").exists()

    # The same command again resumes from last.pt and runs to the end.
    code, log = run_child(cfg)
    assert code == 0, log
    assert "resuming after epoch 1/3" in log

    assert metrics_without_timing(run) == metrics_without_timing(tmp_path / "ref")
    final = json.loads((run / "final.json").read_text())
    assert final["eval"] == reference["eval"]
    assert (final["status"], final["epochs_run"], final["best_epoch"]) == \
        (reference["status"], reference["epochs_run"], reference["best_epoch"])
