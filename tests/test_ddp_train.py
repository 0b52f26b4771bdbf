"""`torchrun --nproc_per_node=2 -m resnorm train` on CPU (gloo, loopback) against one process.

The maths: with synced BN statistics, no augmentation and the same global batch, a step of
2 ranks x batch B sees the same 2B images as one process with batch 2B (BatchStream deals
each step's slice of the shared permutation out to the ranks), normalizes them with the same
statistics, and DDP's gradient average equals the single process's batch-mean gradient; the
lr is the same (the default recipe scales it with the global batch). So metrics.csv agrees up
to float32 rounding, not bit for bit: sums are taken in another order (and the synced BN runs
the composite rather than the fused path). The rounding differences grow with every step -
after 10 steps they reach ~1e-4 relative in the losses, as much as the same single-process
run differs between the fused and the composite BN path - so epoch 1 is compared tightly and
epoch 2 loosely.

Exactly equal: a 2-rank run killed mid-epoch and resumed, and the uninterrupted 2-rank run
(every rank reloads last.pt; the data order depends only on seed and epoch); the number of
images every evaluation counts (each rank evaluates a disjoint, unpadded block); and, for a
checkpoint, the confusion matrices whoever evaluates it.

What differs, by design: without --sync-bn each rank's BN sees only its own B images; with
augmentation each rank draws its own crops and flips (the stream seeds them by rank).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from resnorm.data import load_cache, make_synthetic, prepare
from resnorm.errors import UsageError
from resnorm.metrics import TIMING_COLUMNS
from resnorm.train import TrainConfig, load_run_model, train
from resnorm.train.loop import evaluate
from resnorm.train.runtime import Runtime, make_stream

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = [pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed"),
              pytest.mark.slow]

# What the 2-rank run and the single-process run share; they differ only in the batch per
# process (8 on each of 2 ranks vs 16 in one) and in sync_bn (a no-op in one process).
SHARED = dict(size=32, n=1, norm="bn", epochs=2, augment=False, eval_batch_size=16)
GLOBAL_BATCH = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_train(data, out, *, kill_on: str | None = None) -> tuple[int, str]:
    """`torchrun -m resnorm -- train ...` with 2 CPU processes; with `kill_on`, SIGKILL the
    whole launch (agent and workers) as soon as it prints a line starting so."""
    flags = ["--data", str(data), "--out", str(out), "--batch-size", str(GLOBAL_BATCH // 2),
             "--sync-bn", "--device", "cpu"]
    for key, value in SHARED.items():
        flag = "--" + key.replace("_", "-")
        flags += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) \
            else [flag, str(value)]
    # `--` ends torchrun's own options: its parser would take `--n` for an abbreviation.
    command = [str(TORCHRUN), "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "resnorm", "--", "train", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    lines = []
    try:
        for line in child.stdout:
            lines.append(line)
            if kill_on and line.startswith(kill_on):
                os.killpg(child.pid, signal.SIGKILL)
                _kill_workers_of(out)
                break
        return child.wait(timeout=180), "".join(lines)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.stdout.close()


def _kill_workers_of(out) -> None:
    """SIGKILL every process whose command line names `out`: torchrun's workers are not all
    in its process group, and one left alive would go on training after the "crash"."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if str(out).encode() in cmdline:
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def rows(run_dir) -> list[dict]:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if k not in TIMING_COLUMNS}
                for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def odd_cache(tmp_path_factory):
    """5 classes x (17 train + 7 val) images at 32x32: 85 and 35 images, which 2 ranks cannot
    split evenly (so evaluation padding, were there any, would count images twice)."""
    base = tmp_path_factory.mktemp("odd")
    root = make_synthetic(base / "synth", num_classes=5, train_per_class=17, val_per_class=7,
                          side_range=(32, 40))
    return load_cache(prepare(root, size=32, out=base / "cache", workers=1, progress=False))


@pytest.fixture(scope="module")
def runs(odd_cache, tmp_path_factory):
    """A 2-rank run; another killed in epoch 2 and resumed; the single-process reference."""
    base = tmp_path_factory.mktemp("ddp")
    code, log = torchrun_train(odd_cache.path, base / "ddp")
    assert code == 0, log
    # progress lines come at 25/50/75 % of an epoch: epoch 1 is saved, epoch 2 half done
    code, killed_log = torchrun_train(odd_cache.path, base / "resumed",
                                      kill_on="epoch 2/2 step")
    assert code != 0, killed_log
    assert torch.load(base / "resumed" / "last.pt", weights_only=True)["state"]["epoch"] == 1
    code, resumed_log = torchrun_train(odd_cache.path, base / "resumed")
    assert code == 0, resumed_log
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker (OMP_NUM_THREADS=1)
    try:
        train(TrainConfig(data=str(odd_cache.path), out=str(base / "one"),
                          batch_size=GLOBAL_BATCH, device="cpu", **SHARED), progress=False)
    finally:
        torch.set_num_threads(threads)
    return dict(ddp=base / "ddp", one=base / "one", resumed=base / "resumed", log=log,
                resumed_log=resumed_log)


def test_only_rank_0_reports(runs):
    log = runs["log"]
    assert log.count("completed after 2 epochs") == 1          # rank 0 prints, rank 1 not
    assert log.count("epoch 2/2 lr") == 1
    assert sum(line.startswith("{") for line in log.splitlines()) == 1
    final = json.loads((runs["ddp"] / "final.json").read_text())
    assert final["status"] == "completed" and final["epochs_run"] == 2
    assert not any(p.name.startswith(".") for p in runs["ddp"].iterdir())  # no temp files


def test_a_killed_two_rank_run_resumes_exactly(runs):
    assert "resuming after epoch 1/2" in runs["resumed_log"]
    assert rows(runs["resumed"]) == rows(runs["ddp"])
    final, resumed = (json.loads((runs[k] / "final.json").read_text()) for k in ("ddp",
                                                                                 "resumed"))
    assert resumed["eval"] == final["eval"]


def test_a_two_rank_run_is_not_taken_over_by_one_process(runs, odd_cache):
    cfg = TrainConfig(data=str(odd_cache.path), out=str(runs["ddp"]),
                      batch_size=GLOBAL_BATCH // 2, sync_bn=True, device="cpu", **SHARED)
    with pytest.raises(UsageError, match="trained by 2 process.*launch it with 2"):
        train(cfg, progress=False)


def test_config_records_world_size_batches_and_bn_statistics(runs):
    ddp, one = runs["ddp"], runs["one"]
    saved = yaml.safe_load((ddp / "config.yaml").read_text())
    assert saved["batch_size"] == GLOBAL_BATCH // 2 and saved["sync_bn"] is True
    assert saved["distributed"] == {"world_size": 2, "batch_size_per_rank": GLOBAL_BATCH // 2,
                                    "global_batch_size": GLOBAL_BATCH,
                                    "bn_statistics": "global", "backend": "gloo"}
    single = yaml.safe_load((one / "config.yaml").read_text())
    assert single["distributed"]["world_size"] == 1
    # the default recipe's lr follows the global batch, so both runs take the same steps
    assert saved["lr"] == single["lr"] == pytest.approx(0.1 * GLOBAL_BATCH / 128)


def test_metrics_equal_one_process_with_the_global_batch(runs):
    got, want = rows(runs["ddp"]), rows(runs["one"])
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == [1, 2]
    assert got[0].keys() == want[0].keys()
    # epoch 1 (5 steps): float32 rounding only
    for key in got[0]:
        assert got[0][key] == pytest.approx(want[0][key], rel=1e-4, abs=1e-6), key
    # epoch 2: the rounding differences have grown; losses within 0.2 %, scores within one
    # of the 35 val images
    for key in got[1]:
        tolerance = dict(rel=2e-3) if key.endswith("loss") else dict(abs=1 / 35)
        assert got[1][key] == pytest.approx(want[1][key], **tolerance), key


def test_evaluation_counts_every_image_exactly_once(runs, odd_cache):
    ddp = runs["ddp"]
    final = json.loads((ddp / "final.json").read_text())
    for split in ("train", "val"):
        confusion = torch.tensor(final["eval"][split]["confusion"])  # named as in the data
        assert confusion.sum() == len(odd_cache.splits[split])          # no padding
        assert confusion.sum(dim=1).tolist() == torch.bincount(
            torch.as_tensor(odd_cache.splits[split].labels), minlength=5).tolist()
    # The same checkpoint evaluated by one process: the same confusion matrices.
    model, config = load_run_model(ddp, "best")
    cfg = TrainConfig(**config)
    rt = Runtime(torch.device("cpu"), None, False)
    for split in ("train", "val"):
        alone = evaluate(model, make_stream(odd_cache, split, cfg, rt, training=False), 5, rt)
        assert alone["confusion"] == final["eval"][split]["confusion"]
        assert alone["loss"] == pytest.approx(final["eval"][split]["loss"], rel=1e-5)
