"""What a run folder already holds, and whether this run may continue it.

Running the same command again continues an interrupted run from last.pt and leaves a finished
one alone; `--resume` (resume="require") insists on a checkpoint, `--restart` ("restart")
starts over. A config that differs from the run's (other than RESUMABLE_CHANGES: data/cache
paths, device, amp, channels_last, compile, compile_mode, eval batch size) is refused, and a
run continues only with the world size it was started with.
"""
from __future__ import annotations

from typing import Any, Mapping

from resnorm.checkpoint import Checkpoint
from resnorm.distributed import DistInfo
from resnorm.errors import DivergedError, UsageError
from resnorm.rundir import LAST_FILE, RunDir
from resnorm.train.config import FIELD_NAMES, RESUMABLE_CHANGES, TrainConfig
from resnorm.train.progress import log

__all__ = ["RESUME_MODES", "mismatches", "finished_run", "checkpoint_to_resume"]

RESUME_MODES = ("auto", "require", "restart")


def mismatches(cfg: TrainConfig, saved: Mapping[str, Any]) -> list[str]:
    """Settings of `cfg` that differ from a saved run's config, as 'name: old -> new'
    (RESUMABLE_CHANGES and an unset num_classes ignored; settings the saved run predates too)."""
    out = []
    for name in FIELD_NAMES:
        if name in RESUMABLE_CHANGES or (name == "num_classes" and cfg.num_classes is None):
            continue
        if name in saved and saved[name] != getattr(cfg, name):
            out.append(f"{name}: {saved[name]!r} -> {getattr(cfg, name)!r}")
    return out


def _refuse_mismatch(files: RunDir, cfg: TrainConfig, saved: Mapping[str, Any]) -> None:
    diff = mismatches(cfg, saved)
    if diff:
        raise UsageError(f"{files.dir} holds a run with other settings ({'; '.join(diff)}); "
                         f"use another --out, or --restart to discard it")


def _refuse_other_world_size(files: RunDir, saved: Mapping[str, Any], info: DistInfo) -> None:
    """A run is continued (or found finished) only by as many processes as trained it: the
    world size sets the global batch, the lr of the default recipe and each rank's data.
    `saved`: the run's config with its `distributed:` record."""
    record = saved.get("distributed") or {}
    world_size = record.get("world_size", 1)
    if world_size != info.world_size:
        raise UsageError(f"{files.dir} was trained by {world_size} process(es) (global batch "
                         f"{record.get('global_batch_size', saved.get('batch_size'))}), not "
                         f"{info.world_size}; launch it with {world_size} process(es) in all "
                         f"(torchrun), or --restart to discard it")


def finished_run(files: RunDir, cfg: TrainConfig, resume: str,
                 info: DistInfo = DistInfo()) -> dict | None:
    """final.json of a finished run in the folder (the same run, else UsageError), or None.

    A diverged run stays diverged: DivergedError again, so the exit code says so again.
    """
    final = files.final()
    if final is None or resume == "restart":
        return None
    saved = files.config()
    _refuse_other_world_size(files, saved, info)
    _refuse_mismatch(files, cfg, saved)
    if files.is_main:
        log(f"{files.dir}: already finished ({final['status']}, {final['epochs_run']} epochs); "
            f"nothing to do (--restart trains it again)")
    if final["status"] == "diverged":
        where = final.get("diverged_at") or {}
        raise DivergedError(f"{files.dir} diverged earlier (non-finite loss at epoch "
                            f"{where.get('epoch')}, step {where.get('step')})")
    return final


def checkpoint_to_resume(files: RunDir, cfg: TrainConfig, resume: str,
                         info: DistInfo = DistInfo()) -> Checkpoint | None:
    """last.pt of an interrupted run of the same config, or None to start from scratch.
    Under torchrun every rank reads it (the run folder is on a shared filesystem)."""
    last = files.path(LAST_FILE)
    if resume == "require" and not last.exists():
        raise UsageError(f"--resume: nothing to resume, {last} does not exist")
    if resume == "restart" or not last.exists():
        return None
    checkpoint = Checkpoint.load(last)
    _refuse_other_world_size(files, {**checkpoint.config, "distributed": checkpoint.distributed},
                             info)
    _refuse_mismatch(files, cfg, checkpoint.config)
    return checkpoint
