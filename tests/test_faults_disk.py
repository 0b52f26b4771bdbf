"""Faults from a full disk or a dying worker: one line, a non-zero exit, nothing half-written.

`prepare` on a tiny tmpfs (mounted by the test; skipped where it cannot be: not root, no
permission): too little space is refused up front; a disk that fills up anyway, a worker
killed by SIGBUS writing its memory map, or a worker killed by SIGKILL end the command within
seconds, leave no temp folder, and a clean prepare works afterwards. Training writes: a
checkpoint or metrics write that fails for lack of space keeps the previous file loadable,
and a run stopped that way exits with one line and continues with `--resume`.
"""
from __future__ import annotations

import errno
import importlib
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from resnorm.checkpoint import load_checkpoint, save_checkpoint, write_checkpoint
from resnorm.cli import main
from resnorm.data import load_cache, make_synthetic, prepare
from resnorm.errors import EXIT_RESOURCE, EXIT_USAGE, DiskFullError
from resnorm.rundir import RunDir

prep = importlib.import_module("resnorm.data.prepare")  # the module, not the function
pool = importlib.import_module("resnorm.data.decode_pool")

SIZE = 32                 # 3 KiB a row: 128 images need ~400 KiB
TINY = "300k"             # the tmpfs that is too small


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """128 small images: enough for two decode workers (32 files each at least)."""
    return make_synthetic(tmp_path_factory.mktemp("faults") / "synth", num_classes=4,
                          train_per_class=24, val_per_class=8, side_range=(32, 48))


@pytest.fixture
def tiny_disk(tmp_path) -> Path:
    """A 300 KiB tmpfs, unmounted after the test."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TINY}", "tmpfs",
                               str(mountpoint)], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


@pytest.fixture
def fork_workers(monkeypatch):
    """Decode workers forked from this process, so that a patched worker function is theirs
    too (Python 3.14 starts them from a fork server by default)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method to patch the decode worker")
    real = multiprocessing.get_context
    monkeypatch.setattr(multiprocessing, "get_context", lambda method=None: real("fork"))


def prepare_cli(data: Path, out: Path, capsys, workers: int = 2) -> tuple[int, list[str], float]:
    """`resnorm prepare` in this process: exit code, stderr lines, seconds."""
    capsys.readouterr()
    start = time.monotonic()
    code = main(["prepare", str(data), "--size", str(SIZE), "--out", str(out),
                 "--workers", str(workers), "--quiet"])
    seconds = time.monotonic() - start
    return code, capsys.readouterr().err.splitlines(), seconds


def assert_clean_prepare_works(data: Path, out: Path, capsys) -> None:
    code, err, _ = prepare_cli(data, out, capsys)
    assert (code, err) == (0, [])
    cache = load_cache(out)
    assert len(cache.splits["train"]) == 96 and len(cache.splits["val"]) == 32
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def lie_about_free_space(monkeypatch) -> None:
    """Make the up-front check pass, so that the disk fills up during the build."""
    monkeypatch.setattr(prep, "free_bytes", lambda path: 1 << 40)


# --- prepare ------------------------------------------------------------------------------

def test_too_little_space_is_refused_before_decoding(dataset, tiny_disk, tmp_path, capsys):
    code, err, _ = prepare_cli(dataset, tiny_disk / "cache", capsys)
    assert code == EXIT_USAGE and len(err) == 1, err
    assert "not enough disk space" in err[0] and "needs" in err[0] and "free" in err[0]
    assert str(tiny_disk) in err[0]
    assert list(tiny_disk.iterdir()) == []
    assert_clean_prepare_works(dataset, tmp_path / "roomy", capsys)


def test_a_disk_that_fills_up_during_prepare_fails_in_one_line(dataset, tiny_disk, tmp_path,
                                                               capsys, monkeypatch):
    lie_about_free_space(monkeypatch)  # the image files are reserved up front: ENOSPC here
    code, err, seconds = prepare_cli(dataset, tiny_disk / "cache", capsys)
    assert code == EXIT_RESOURCE and len(err) == 1, err
    assert "disk filled up" in err[0] and str(tiny_disk / "cache") in err[0]
    assert list(tiny_disk.iterdir()) == [] and seconds < 20
    monkeypatch.undo()
    assert_clean_prepare_works(dataset, tmp_path / "roomy", capsys)


def test_a_worker_killed_by_sigbus_on_a_full_disk_ends_prepare(dataset, tiny_disk, tmp_path,
                                                               capsys, monkeypatch):
    # A file system that cannot reserve space gets a sparse file: the first row a worker
    # writes past the end of the disk through the memory map kills it with SIGBUS.
    lie_about_free_space(monkeypatch)
    monkeypatch.setattr(pool, "_allocate", lambda path, n: open(path, "wb").truncate(n))
    code, err, seconds = prepare_cli(dataset, tiny_disk / "cache", capsys)
    assert code == EXIT_RESOURCE and len(err) == 1, err
    assert "SIGBUS" in err[0] and "full disk" in err[0]
    assert list(tiny_disk.iterdir()) == [] and seconds < 20
    monkeypatch.undo()
    assert_clean_prepare_works(dataset, tmp_path / "roomy", capsys)


def test_a_worker_killed_mid_way_ends_prepare_within_seconds(dataset, tmp_path, capsys,
                                                             monkeypatch, fork_workers):
    real = pool._decode_task

    def killed_on_the_40th_image(task):
        if task[:2] == ("train", 40):
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer does
        return real(task)
    monkeypatch.setattr(pool, "_decode_task", killed_on_the_40th_image)
    out = tmp_path / "cache"
    code, err, seconds = prepare_cli(dataset, out, capsys)
    assert code == EXIT_RESOURCE and len(err) == 1, err
    assert "killed by SIGKILL" in err[0] and "memory" in err[0]
    assert seconds < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no cache, no temp folder
    monkeypatch.undo()
    assert_clean_prepare_works(dataset, out, capsys)


@pytest.mark.parametrize("fault, message", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "disk filled up"),
    (MemoryError(), "out of memory"),
], ids=["ENOSPC", "MemoryError"])
def test_a_worker_failing_mid_way_ends_prepare_in_one_line(dataset, tmp_path, capsys,
                                                           monkeypatch, fork_workers, fault,
                                                           message):
    real = pool._decode_task

    def fails_on_the_40th_image(task):
        if task[:2] == ("train", 40):
            raise fault
        return real(task)
    monkeypatch.setattr(pool, "_decode_task", fails_on_the_40th_image)
    code, err, seconds = prepare_cli(dataset, tmp_path / "cache", capsys)
    assert code == EXIT_RESOURCE and len(err) == 1 and message in err[0], err
    assert seconds < 20 and list(tmp_path.iterdir()) == []


# --- training writes ----------------------------------------------------------------------

def state(n: int) -> dict:
    return {"weights": torch.arange(n, dtype=torch.float32), "epoch": n}


def no_temp_files(folder: Path) -> bool:
    return not [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def test_a_checkpoint_write_failing_for_space_keeps_the_previous_one(tmp_path, monkeypatch):
    files = RunDir(tmp_path)
    write_checkpoint(files, "last.pt", state(10))
    fileio = importlib.import_module("resnorm.fileio")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(fileio.os, "fsync", full)  # NFS and quotas report it as late as this
    with pytest.raises(DiskFullError, match="no space left.*last.pt.*--resume"):
        write_checkpoint(files, "last.pt", state(20))
    with pytest.raises(DiskFullError, match="metrics.csv"):
        files.write_metrics([])
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_checkpoint_on_a_real_full_disk_keeps_the_previous_one(tiny_disk):
    files = RunDir(tiny_disk)
    write_checkpoint(files, "last.pt", state(10_000))              # ~40 KiB
    with pytest.raises(DiskFullError, match=f"no space left on the device of {tiny_disk}"):
        write_checkpoint(files, "last.pt", state(100_000))         # ~400 KiB: does not fit
    with pytest.raises(OSError) as raised:                         # the function level
        save_checkpoint(state(100_000), tiny_disk / "last.pt")
    assert raised.value.errno == errno.ENOSPC
    assert load_checkpoint(tiny_disk / "last.pt")["epoch"] == 10_000
    assert no_temp_files(tiny_disk)


def test_a_run_stopped_by_a_full_disk_exits_in_one_line_and_resumes(dataset, tmp_path, capsys,
                                                                    monkeypatch, one_thread):
    checkpoint = importlib.import_module("resnorm.checkpoint")
    real, saves = checkpoint.save_checkpoint, []

    def fills_up_on_the_second_epoch(state, path):
        saves.append(Path(path).name)
        if saves.count("last.pt") == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(state, path)
    monkeypatch.setattr(checkpoint, "save_checkpoint", fills_up_on_the_second_epoch)
    cache = prepare(dataset, size=SIZE, out=tmp_path / "cache", workers=1, progress=False)
    run = tmp_path / "run"
    args = ["train", "--data", str(cache), "--size", str(SIZE), "--out", str(run),
            "--norm", "bn", "--n", "1", "--batch-size", "32", "--epochs", "2",
            "--eval-batch-size", "64", "--device", "cpu", "--quiet"]
    capsys.readouterr()
    assert main(args) == EXIT_RESOURCE
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.startswith("epoch ")]  # the epoch lines of a --quiet run
    assert len(err) == 1 and err[0].startswith("resnorm train: error: no space left"), err
    assert "last.pt" in err[0] and "--resume" in err[0]
    assert load_checkpoint(run / "last.pt")["state"]["epoch"] == 1 and no_temp_files(run)
    assert not (run / "final.json").exists()
    monkeypatch.undo()
    assert main(args + ["--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["state"]["epoch"] == 2
    assert (run / "final.json").exists()


def test_any_command_reports_a_full_disk_in_one_line(tmp_path, capsys, monkeypatch):
    def writes_a_report(args):  # e.g. a library writing its own file on a full disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "curves.png"))
    monkeypatch.setattr(prep, "run_cli", writes_a_report)
    assert main(["prepare", str(tmp_path)]) == EXIT_RESOURCE
    err = capsys.readouterr().err.splitlines()
    assert err == [f"resnorm prepare: error: no space left on the device "
                   f"({tmp_path / 'curves.png'}): {os.strerror(errno.ENOSPC)}"]


def test_a_full_disk_stops_a_study_instead_of_failing_every_run(dataset, tmp_path, capsys,
                                                                monkeypatch, one_thread):
    """A full disk would fail every later run too: the study records it and stops (exit 4,
    one line); re-running continues once there is space."""
    import json

    import yaml

    checkpoint = importlib.import_module("resnorm.checkpoint")
    real = checkpoint.save_checkpoint

    def disk_full(state, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(checkpoint, "save_checkpoint", disk_full)
    cache = prepare(dataset, size=SIZE, out=tmp_path / "cache", workers=1, progress=False)
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"defaults": {"size": SIZE, "n": 1, "epochs": 1,
                                                 "batch_size": 32, "device": "cpu"},
                                    "runs": [{"name": "a", "norm": "bn"},
                                             {"name": "b", "norm": "gn"}]}))
    study = tmp_path / "study"
    args = ["study", "--data", str(cache), "--plan", str(plan), "--out", str(study), "--quiet"]
    capsys.readouterr()
    assert main(args) == EXIT_RESOURCE
    out, err = capsys.readouterr()
    err = [line for line in err.splitlines() if not line.startswith("epoch ")]
    assert len(err) == 1 and err[0].startswith("resnorm study: error: no space left"), err
    assert "[1/2] a/seed-0" in out and "b/seed-0" not in out  # b was not tried
    state = json.loads((study / "study.json").read_text())
    assert state["runs"]["a/seed-0"]["status"] == "failed"
    assert "no space left" in state["runs"]["a/seed-0"]["error"]
    monkeypatch.setattr(checkpoint, "save_checkpoint", real)
    assert main(args) == 0
    assert (study / "runs" / "b" / "seed-0" / "final.json").exists()
