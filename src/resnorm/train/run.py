"""A whole training run: the run folder, resuming, the epoch loop around train_one_epoch,
early stopping, and the final evaluation; and loading a trained run's model back.

A run folder holds config.yaml (fully resolved, with versions, device and git commit),
metrics.csv (one row per epoch), TensorBoard events, last.pt (every epoch), best.pt (best val
accuracy), final.json (the best checkpoint evaluated in eval mode on train, val and test) and
curves.png. Checkpoints hold only tensors and plain containers and load with
weights_only=True.

Resume: running the same command again continues from last.pt exactly (same metrics.csv as an
uninterrupted run, on CPU); a finished run is left alone and says so. `--resume` insists on a
checkpoint, `--restart` deletes the run's files and starts over. A config that differs from
the run's (other than data/cache paths, device, amp, channels_last, compile, compile_mode,
eval batch size) is refused. A run resumes only with the world size it was started with.

A non-finite training loss ends the run: final.json says "diverged" with the epoch and step,
and DivergedError is raised (exit code 3 on the command line). Under fp16 (amp auto on a GPU
without native bf16) steps the GradScaler skips are counted per epoch (metrics.csv
`skipped_steps`), not taken for divergence; a collapsed loss scale is (train.loop).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from resnorm.checkpoint import RunFiles, load_checkpoint
from resnorm.distributed import DistInfo, barrier, broadcast_buffers_, in_turn, init_from_env
from resnorm.errors import DivergedError, UsageError
from resnorm.model import ResNet, count_parameters
from resnorm.norm_functions import plan_kernels, planned_kernels
from resnorm.train.config import FIELD_NAMES, RESUMABLE_CHANGES, TrainConfig, resolve_config
from resnorm.train.config import device_type
from resnorm.train.loop import (NonFiniteLoss, TrainParts, evaluate, predict_all,
                               train_one_epoch)
from resnorm.train.optim import build_optimizer, build_scheduler
from resnorm.train.progress import Progress, _epoch_line, _log_scalars, _tensorboard, log
from resnorm.train.runtime import (Runtime, _compiled, distributed_record, environment, load_data,
                                   make_stream, sync_batch_norms)

RESUME_MODES = ("auto", "require", "restart")
SCORE_KEYS = ("loss", "acc", "micro_f1", "macro_f1")  # per split in metrics.csv


def train(cfg: TrainConfig | Mapping[str, Any], *, resume: str = "auto",
          progress: bool = True, epoch_lines: bool = True, data_note: bool = True) -> dict:
    """Train one run into `cfg.out` and return its final.json contents.

    resume: "auto" continues from last.pt when there is one (and returns a finished run's
    final.json untouched); "require" fails unless there is something to continue; "restart"
    deletes the run's files first. Raises UsageError for invalid settings and DivergedError
    (after writing final.json) when the training loss becomes non-finite. `progress`: the
    bar or lines within an epoch; `epoch_lines`: a line per epoch; `data_note`: the warning
    line on val/test images with a copy in train (a study says it once for all its runs).
    """
    # The norm kernels' plan (set once the run's size is known) ends with the run: the next
    # run in this process, or a caller's own setting, is not decided by this one.
    with planned_kernels(None, None):
        return _train(cfg, resume=resume, progress=progress, epoch_lines=epoch_lines,
                      data_note=data_note)


def _train(cfg: TrainConfig | Mapping[str, Any], *, resume: str, progress: bool,
           epoch_lines: bool, data_note: bool) -> dict:
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    cfg = resolve_config(cfg)
    # Processes: under torchrun join the group (once per process); only rank 0 prints and
    # writes files. Single-process runs never touch torch.distributed.
    info = init_from_env(device_type(cfg.device))
    is_main = info.is_main
    files = RunFiles(Path(cfg.out).expanduser(), is_main)

    # A finished run is left alone: re-running a study or a command is a no-op.
    final = _finished_run(files, cfg, resume, info)
    if final is not None:
        return final
    checkpoint = _checkpoint_to_resume(files, cfg, resume, info)
    barrier()  # every rank has looked at the folder before rank 0 clears or writes it

    # Data: decoded once into the uint8 cache; its classes fix the output layer.
    data = in_turn(info, lambda: load_data(cfg, progress and is_main))  # one builder at a time
    cfg = dataclasses.replace(cfg, num_classes=len(data.classes))
    if checkpoint is not None and checkpoint["classes"] != data.classes:
        raise UsageError(f"the dataset's classes differ from those {files.dir} was trained on")
    rt = Runtime.for_config(cfg)
    if is_main and rt.amp_warning:
        log(f"warning: {rt.amp_warning}")
    if is_main and data_note and checkpoint is None and data.leak_note():
        log(f"warning: {data.leak_note()}")

    # Model, seeded: runs with one seed start from the same weights (on every rank).
    torch.manual_seed(cfg.seed)
    model_args = dict(n=cfg.n, num_classes=cfg.num_classes, norm=cfg.norm, shortcut=cfg.shortcut)
    model = ResNet(**model_args).to(rt.device)
    if cfg.sync_bn:  # batch statistics over every rank's batch (a no-op in one process)
        model = sync_batch_norms(model)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Evaluation runs the plain model (each rank on its own block of a split, no collectives
    # inside); training goes through DDP, which averages the gradients over ranks.
    eval_forward = _compiled(model, cfg)
    forward = eval_forward
    if info.enabled:
        # (DDP also sends rank 0's buffers to every rank before each training forward, so
        # per-rank running statistics restart from rank 0's at every step.)
        ddp = DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        forward = _compiled(ddp, cfg)
    train_stream = make_stream(data, "train", cfg, rt, training=True, info=info)
    val_stream = make_stream(data, "valid", cfg, rt, training=False, info=info)
    # From-scratch norms: compile their kernels only if this run is long enough to pay it back
    # (steps x first-stage activation, batch x 16 x S x S; see norm_functions.plan_kernels).
    plan_kernels(cfg.epochs * len(train_stream), cfg.batch_size * 16 * cfg.size ** 2)
    optimizer = build_optimizer(model, cfg)
    parts = TrainParts(model, forward, optimizer,
                       build_scheduler(optimizer, cfg, len(train_stream)),
                       torch.amp.GradScaler(rt.device.type, enabled=rt.amp is torch.float16),
                       eval_forward=eval_forward, info=info)
    record = distributed_record(cfg, info)

    # Resume: everything the next epoch depends on comes from last.pt; else start clean.
    if checkpoint is not None:
        parts.restore(checkpoint)
        state = RunState(**checkpoint["state"])
        if is_main:
            log(f"{files.dir}: resuming after epoch {state.epoch}/{cfg.epochs}")
    else:
        state = RunState()
        files.clear()
        files.write_config({**dataclasses.asdict(cfg), "distributed": record},
                           environment(rt, data))
    files.write_metrics(state.history)  # the csv always matches the checkpoint
    if is_main and info.enabled:
        log(f"{files.dir}: {info.world_size} processes ({info.backend}), batch "
            f"{cfg.batch_size} per process = {record['global_batch_size']} per step, "
            f"BN statistics: {record['bn_statistics']}")

    def snapshot() -> dict:
        return {"format": "resnorm-run", "version": 1, "config": dataclasses.asdict(cfg),
                "model_args": model_args, "classes": list(data.classes), "distributed": record,
                **parts.state_dict(), "state": dataclasses.asdict(state)}

    show = Progress(progress and is_main, cfg.epochs, every=1 if rt.device.type == "cpu" else 25)
    writer = _tensorboard(files, purge_step=state.epoch + 1 if state.epoch else None)
    try:
        while state.status == "running":
            epoch = state.epoch + 1
            started = time.perf_counter()

            # One pass over the augmented training batches, in train mode.
            train_stats, lr, train_s = train_one_epoch(parts, train_stream, rt, show, epoch,
                                                       state.step, cfg.num_classes)
            state.step += len(train_stream)

            # Validation in eval mode (running statistics), no augmentation. Every rank
            # evaluates (and rank 0 saves) the same model: rank 0's running statistics.
            broadcast_buffers_(model)
            val_stats = evaluate(eval_forward, val_stream, cfg.num_classes, rt)
            epoch_s = time.perf_counter() - started
            state.elapsed_s += epoch_s

            # Bookkeeping: the csv row, best epoch, early stopping, status.
            row = {"epoch": epoch, "lr": lr,
                   **{f"train_{k}": train_stats[k] for k in SCORE_KEYS},
                   **{f"val_{k}": val_stats[k] for k in SCORE_KEYS},
                   "epoch_time_s": round(epoch_s, 3),
                   "images_per_s": round(train_stream.num_samples * info.world_size / train_s,
                                         1),
                   "skipped_steps": train_stats["skipped_steps"]}
            improved = state.record(row, cfg)

            # Checkpoints: best first, then last, so last.pt never points past a best.pt.
            saved = snapshot()  # built once: both files hold the same state
            if improved:
                files.save("best.pt", saved)
            files.save("last.pt", saved)
            files.write_metrics(state.history)
            _log_scalars(writer, row)
            if is_main and epoch_lines:
                log(_epoch_line(row, cfg.epochs, improved))
                if row["skipped_steps"]:  # fp16 only: overflowing gradients, step not taken
                    log(f"epoch {epoch}/{cfg.epochs}: {row['skipped_steps']} of "
                        f"{len(train_stream)} steps skipped by the fp16 loss scaler (non-finite "
                        f"gradients; scale now {parts.scaler.get_scale():g})")
    except NonFiniteLoss as exc:
        _finish(files, cfg, state, parts, data, rt, "diverged", exc.where)
        raise DivergedError(f"{exc} (global step {exc.where['global_step']}); "
                            f"see {files.path('final.json')}") from None
    finally:
        show.close()
        if writer is not None:
            writer.close()
    return _finish(files, cfg, state, parts, data, rt, state.status)


@dataclass
class RunState:
    """Where a run is: what a resume needs besides the model, optimizer and schedule."""

    epoch: int = 0                   # epochs completed
    step: int = 0                    # optimizer steps taken
    history: list = field(default_factory=list)  # metrics.csv rows
    best_acc: float = -1.0           # best val accuracy so far
    best_epoch: int | None = None
    bad_epochs: int = 0              # epochs since the last improvement (early stopping)
    status: str = "running"          # running | completed | early_stopped
    elapsed_s: float = 0.0           # training wall time over all sessions

    def record(self, row: dict, cfg: TrainConfig) -> bool:
        """Add an epoch's row; update best and early stopping. True if val accuracy improved."""
        self.history.append(row)
        self.epoch = row["epoch"]
        improved = row["val_acc"] > self.best_acc + cfg.min_delta or self.best_epoch is None
        if improved:
            self.best_acc, self.best_epoch, self.bad_epochs = row["val_acc"], self.epoch, 0
        else:
            self.bad_epochs += 1
        if self.epoch >= cfg.epochs:
            self.status = "completed"
        elif cfg.patience and self.bad_epochs >= cfg.patience:
            self.status = "early_stopped"
        return improved


def _mismatches(cfg: TrainConfig, saved: Mapping[str, Any]) -> list[str]:
    """Settings of `cfg` that differ from a saved run's config (ignoring RESUMABLE_CHANGES)."""
    out = []
    for name in FIELD_NAMES:
        if name in RESUMABLE_CHANGES or (name == "num_classes" and cfg.num_classes is None):
            continue
        if name in saved and saved[name] != getattr(cfg, name):
            out.append(f"{name}: {saved[name]!r} -> {getattr(cfg, name)!r}")
    return out


def _refuse_mismatch(files: RunFiles, cfg: TrainConfig, saved: Mapping[str, Any]) -> None:
    diff = _mismatches(cfg, saved)
    if diff:
        raise UsageError(f"{files.dir} holds a run with other settings ({'; '.join(diff)}); "
                         f"use another --out, or --restart to discard it")


def _refuse_other_world_size(files: RunFiles, saved: Mapping[str, Any], info: DistInfo) -> None:
    """A run is continued (or found finished) only by as many processes as trained it: the
    world size sets the global batch, the lr of the default recipe and each rank's data."""
    record = saved.get("distributed") or {}
    world_size = record.get("world_size", 1)
    if world_size != info.world_size:
        raise UsageError(f"{files.dir} was trained by {world_size} process(es) (global batch "
                         f"{record.get('global_batch_size', saved.get('batch_size'))}), not "
                         f"{info.world_size}; launch it with {world_size} process(es) in all "
                         f"(torchrun), or --restart to discard it")


def _finished_run(files: RunFiles, cfg: TrainConfig, resume: str,
                  info: DistInfo = DistInfo()) -> dict | None:
    """final.json of a finished run in the folder (the same run, else UsageError), or None.

    A diverged run stays diverged: DivergedError again, so the exit code says so again.
    """
    final = files.read_final()
    if final is None or resume == "restart":
        return None
    try:
        saved = yaml.safe_load(files.path("config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        saved = {}
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


def _checkpoint_to_resume(files: RunFiles, cfg: TrainConfig, resume: str,
                          info: DistInfo = DistInfo()) -> dict | None:
    """last.pt of an interrupted run of the same config, or None to start from scratch.
    Under torchrun every rank reads it (the run folder is on a shared filesystem)."""
    last = files.path("last.pt")
    if resume == "require" and not last.exists():
        raise UsageError(f"--resume: nothing to resume, {last} does not exist")
    if resume == "restart" or not last.exists():
        return None
    checkpoint = load_checkpoint(last)
    _refuse_other_world_size(files, checkpoint, info)
    _refuse_mismatch(files, cfg, checkpoint["config"])
    return checkpoint


def evaluate_best(files: RunFiles, parts: TrainParts, data, cfg: TrainConfig,
                  rt: Runtime) -> tuple[dict, dict]:
    """best.pt evaluated in eval mode on every split (train as "train", valid as "val"):
    the scores per split, and the per-image predictions per split (rank 0's, see below).

    Under torchrun every rank loads it (after rank 0 has written it) and evaluates its block
    of each split; the scores are summed over ranks. The per-image predictions are then rank
    0's own pass over the whole of val and test (train is left out: the statistics need it
    only for one-seed train intervals, not worth a second pass over 30,000 images)."""
    barrier()
    if not files.path("best.pt").exists():
        return {}, {}
    parts.model.load_state_dict(load_checkpoint(files.path("best.pt"), rt.device)["model"])
    results, kept = {}, {}
    single = parts.info.world_size == 1
    for split, key in (("train", "train"), ("valid", "val"), ("test", "test")):
        if split in data.splits and len(data.splits[split]):
            stream = make_stream(data, split, cfg, rt, training=False, info=parts.info)
            keep = {} if single else None
            results[key] = evaluate(parts.eval_forward, stream, cfg.num_classes, rt, keep)
            if not single and files.is_main and key != "train":
                keep = predict_all(parts.eval_forward,
                                   make_stream(data, split, cfg, rt, training=False),
                                   cfg.num_classes, rt)
            if keep is not None:
                kept[key] = keep
    return results, kept


def _finish(files: RunFiles, cfg: TrainConfig, state: RunState, parts: TrainParts, data,
            rt: Runtime, status: str, diverged_at: dict | None = None) -> dict:
    """Evaluate the best checkpoint, write final.json and curves.png; return final.json."""
    started = time.perf_counter()
    results, kept = evaluate_best(files, parts, data, cfg, rt)
    files.write_predictions(kept)  # before final.json, whose presence marks the run finished
    final = {
        "name": cfg.name,
        "status": status,
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "wall_time_s": round(state.elapsed_s + time.perf_counter() - started, 3),
        "parameters": count_parameters(parts.model),
        "classes": list(data.classes),
        "splits": data.split_counts(),  # images scored per split, and those left out
        "eval": results,
    }
    if diverged_at is not None:
        final["diverged_at"] = diverged_at
    files.write_final(final, state.history,
                      title=f"{cfg.name} ({cfg.norm}, n={cfg.n}, batch {cfg.batch_size})")
    if files.is_main and status != "diverged":
        val = results.get("val", {})
        log(f"{files.dir}: {status} after {state.epoch} epochs; best epoch {state.best_epoch}: "
            f"val acc {val.get('acc', math.nan):.4f}, macro F1 {val.get('macro_f1', math.nan):.4f}")
    return final


# --- using a trained run ---------------------------------------------------------------------

def load_run_model(run_dir: str | os.PathLike, which: str = "best",
                   map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a run from best.pt (or last.pt), in eval mode, with its config."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    checkpoint = load_checkpoint(Path(run_dir) / f"{which}.pt", map_location)
    model = ResNet(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, dict(checkpoint["config"])
