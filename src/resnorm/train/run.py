"""A whole training run in three steps: `setup_run` (the run folder, the data, the model and
what a resume restores), `fit` (the epoch loop: train, validate, record, checkpoint) and
`finish` (the best checkpoint evaluated on every split, final.json, curves.png). `train` runs
the three.

A run folder holds config.yaml (fully resolved, with versions, device and git commit),
metrics.csv (one row per epoch), TensorBoard events, last.pt (every epoch), best.pt (best val
accuracy), predictions.npz and final.json (the best checkpoint evaluated in eval mode on
train, val and test) and curves.png; resnorm.rundir.RunDir names, writes and reads them.
What a checkpoint holds: resnorm.checkpoint.Checkpoint.

Resume: running the same command again continues from last.pt exactly (same metrics.csv as an
uninterrupted run, on CPU); a finished run is left alone and says so (train.resume).

A non-finite training loss ends the run: final.json says "diverged" with the epoch and step,
and DivergedError is raised (exit code 3 on the command line). Under fp16 (amp auto on a GPU
without native bf16) steps the GradScaler skips are counted per epoch (metrics.csv
`skipped_steps`), not taken for divergence; a collapsed loss scale is (train.loop).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from resnorm.checkpoint import Checkpoint, write_checkpoint
from resnorm.distributed import DistInfo, barrier, broadcast_buffers_, in_turn, init_from_env
from resnorm.errors import DivergedError, UsageError
from resnorm.model import ResNet
from resnorm.norm_functions import plan_kernels, planned_kernels
from resnorm.rundir import BEST_FILE, CURVES_FILE, FINAL_FILE, LAST_FILE, RunDir
from resnorm.train.config import TrainConfig, device_type, resolve_config
from resnorm.train.final import evaluate_best, final_record
from resnorm.train.loop import NonFiniteLoss, TrainParts, evaluate, train_one_epoch
from resnorm.train.optim import build_optimizer, build_scheduler
from resnorm.train.progress import RunOutput, log
from resnorm.train.resume import RESUME_MODES, checkpoint_to_resume, finished_run
from resnorm.train.runtime import (Runtime, distributed_record, environment, load_data,
                                   make_stream, prepare_model)

SCORE_KEYS = ("loss", "acc", "micro_f1", "macro_f1")  # per split in metrics.csv


def train(cfg: TrainConfig | Mapping[str, Any], *, resume: str = "auto",
          progress: bool = True, epoch_lines: bool = True, data_note: bool = True) -> dict:
    """Train one run into `cfg.out` and return its final.json contents.

    resume: "auto" continues from last.pt when there is one (and returns a finished run's
    final.json untouched); "require" fails unless there is something to continue; "restart"
    deletes the run's own files first (RunDir.clear). Raises UsageError for invalid settings
    and DivergedError (after writing final.json) when the training loss becomes non-finite.
    `progress`: the bar or lines within an epoch; `epoch_lines`: a line per epoch;
    `data_note`: the warning line on val/test images with a copy in train (a study says it
    once for all its runs).
    """
    # The norm kernels' plan (set once the run's size is known) ends with the run: the next
    # run in this process, or a caller's own setting, is not decided by this one.
    with planned_kernels(None, None):
        ctx = setup_run(cfg, resume=resume, progress=progress, data_note=data_note)
        if ctx.finished is not None:
            return ctx.finished
        return finish(ctx, fit(ctx, progress=progress, epoch_lines=epoch_lines))


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


@dataclass
class RunContext:
    """Everything a run's epochs use, built once by `setup_run`. For a run that had finished
    before, only `cfg`, `files`, `info` and `finished` (its final.json) are set."""

    cfg: TrainConfig
    files: RunDir
    info: DistInfo
    finished: dict | None = None
    data: Any = None                 # resnorm.data.PreparedData, as the run scores it
    rt: Runtime | None = None
    parts: TrainParts | None = None
    train_stream: Any = None
    val_stream: Any = None
    model_args: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)  # config.yaml's `distributed:` record
    state: RunState = field(default_factory=RunState)

    def checkpoint(self) -> Checkpoint:
        """The run as it stands, for last.pt / best.pt."""
        p = self.parts
        return Checkpoint.capture(
            model=p.model, optimizer=p.optimizer, scheduler=p.scheduler, scaler=p.scaler,
            config=dataclasses.asdict(self.cfg), model_args=self.model_args,
            classes=list(self.data.classes), distributed=self.record,
            state=dataclasses.asdict(self.state))


def setup_run(cfg: TrainConfig | Mapping[str, Any], *, resume: str = "auto",
              progress: bool = True, data_note: bool = True) -> RunContext:
    """Check the settings and the run folder, load the data, build the model and its
    optimizer, and restore a resumed run's state from last.pt (or start the folder afresh)."""
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    cfg = resolve_config(cfg)
    # Processes: under torchrun join the group (once per process); only rank 0 prints and
    # writes files. Single-process runs never touch torch.distributed.
    info = init_from_env(device_type(cfg.device))
    files = RunDir(cfg.out, info.is_main)
    # A finished run is left alone: re-running a study or a command is a no-op.
    finished = finished_run(files, cfg, resume, info)
    if finished is not None:
        return RunContext(cfg, files, info, finished=finished)
    checkpoint = checkpoint_to_resume(files, cfg, resume, info)
    barrier()  # every rank has looked at the folder before rank 0 clears or writes it

    # Data: decoded once into the uint8 cache; its classes fix the output layer.
    data = in_turn(info, lambda: load_data(cfg, progress and info.is_main))  # one at a time
    cfg = dataclasses.replace(cfg, num_classes=len(data.classes))
    if checkpoint is not None and checkpoint.classes != data.classes:
        raise UsageError(f"the dataset's classes differ from those {files.dir} was trained on")
    ctx = RunContext(cfg, files, info, data=data, rt=Runtime.for_config(cfg),
                     record=distributed_record(cfg, info))
    _build_training(ctx)
    _start_or_resume(ctx, checkpoint, announce_data=data_note)
    return ctx


def _build_training(ctx: RunContext) -> None:
    """The model (seeded: runs with one seed start from the same weights, on every rank), the
    batch streams, the norm kernels' plan, the optimizer, lr schedule and loss scaler."""
    cfg, rt, info = ctx.cfg, ctx.rt, ctx.info
    torch.manual_seed(cfg.seed)
    ctx.model_args = dict(n=cfg.n, num_classes=cfg.num_classes, norm=cfg.norm,
                          shortcut=cfg.shortcut)
    model, trainer = prepare_model(ResNet(**ctx.model_args), cfg, rt, info)
    ctx.train_stream = make_stream(ctx.data, "train", cfg, rt, training=True, info=info)
    ctx.val_stream = make_stream(ctx.data, "val", cfg, rt, training=False, info=info)
    # From-scratch norms: compile their kernels only if this run is long enough to pay it back
    # (steps x first-stage activation, batch x 16 x S x S; see norm_functions.plan_kernels).
    plan_kernels(cfg.epochs * len(ctx.train_stream), cfg.batch_size * 16 * cfg.size ** 2)
    optimizer = build_optimizer(model, cfg)
    ctx.parts = TrainParts(model, trainer, optimizer,
                           build_scheduler(optimizer, cfg, len(ctx.train_stream)),
                           torch.amp.GradScaler(rt.device.type, enabled=rt.amp is torch.float16),
                           info)


def _start_or_resume(ctx: RunContext, checkpoint: Checkpoint | None, announce_data: bool) -> None:
    """Resume: everything the next epoch depends on comes from last.pt; else start clean (the
    folder's old run files removed, config.yaml written). Says what it did."""
    files, is_main = ctx.files, ctx.info.is_main
    if is_main and ctx.rt.amp_warning:
        log(f"warning: {ctx.rt.amp_warning}")
    if checkpoint is not None:
        p = ctx.parts
        checkpoint.restore(p.model, p.optimizer, p.scheduler, p.scaler)
        ctx.state = RunState(**checkpoint.state)
        if is_main:
            log(f"{files.dir}: resuming after epoch {ctx.state.epoch}/{ctx.cfg.epochs}")
    else:
        if is_main and announce_data and ctx.data.leak_note():
            log(f"warning: {ctx.data.leak_note()}")
        files.clear()
        files.write_config({**dataclasses.asdict(ctx.cfg), "distributed": ctx.record},
                           environment(ctx.rt, ctx.data))
    files.write_metrics(ctx.state.history)  # the csv always matches the checkpoint
    if is_main and ctx.info.enabled:
        log(f"{files.dir}: {ctx.info.world_size} processes ({ctx.info.backend}), batch "
            f"{ctx.cfg.batch_size} per process = {ctx.record['global_batch_size']} per step, "
            f"BN statistics: {ctx.record['bn_statistics']}")


def fit(ctx: RunContext, *, progress: bool = True,
        epoch_lines: bool = True) -> NonFiniteLoss | None:
    """Train epoch after epoch until the run completes or stops early (None), or diverges:
    then the NonFiniteLoss that says where."""
    cfg, state, parts = ctx.cfg, ctx.state, ctx.parts
    out = RunOutput(ctx.files, progress=progress, epoch_lines=epoch_lines, epochs=cfg.epochs,
                    every=1 if ctx.rt.device.type == "cpu" else 25, first_epoch=state.epoch + 1)
    try:
        while state.status == "running":
            epoch, started = state.epoch + 1, time.perf_counter()
            # Train: one pass over the augmented batches, in train mode.
            train_stats, lr, train_s = train_one_epoch(parts, ctx.train_stream, ctx.rt,
                                                       out.progress, epoch, state.step,
                                                       cfg.num_classes)
            state.step += len(ctx.train_stream)
            # Validate in eval mode (running statistics), no augmentation. Every rank
            # evaluates (and rank 0 saves) the same model: rank 0's running statistics.
            broadcast_buffers_(parts.model)
            val_stats = evaluate(parts.model, ctx.val_stream, cfg.num_classes, ctx.rt)
            epoch_s = time.perf_counter() - started
            state.elapsed_s += epoch_s
            # Record: the csv row; the best epoch and early stopping follow val accuracy.
            row = _epoch_row(ctx, epoch, lr, train_stats, val_stats, train_s, epoch_s)
            improved = state.record(row, cfg)
            # Checkpoint: best first, then last, so last.pt never points past a best.pt.
            saved = ctx.checkpoint()
            if improved:
                write_checkpoint(ctx.files, BEST_FILE, saved)
            write_checkpoint(ctx.files, LAST_FILE, saved)
            ctx.files.write_metrics(state.history)
            out.epoch_done(row, improved, _skipped_note(ctx, row))
    except NonFiniteLoss as exc:
        return exc
    finally:
        out.close()
    return None


def _epoch_row(ctx: RunContext, epoch: int, lr: float, train_stats: dict, val_stats: dict,
               train_s: float, epoch_s: float) -> dict:
    """The epoch's metrics.csv row (images/s: every rank's training images per second)."""
    images = ctx.train_stream.num_samples * ctx.info.world_size
    return {"epoch": epoch, "lr": lr,
            **{f"train_{k}": train_stats[k] for k in SCORE_KEYS},
            **{f"val_{k}": val_stats[k] for k in SCORE_KEYS},
            "epoch_time_s": round(epoch_s, 3), "images_per_s": round(images / train_s, 1),
            "skipped_steps": train_stats["skipped_steps"]}


def _skipped_note(ctx: RunContext, row: dict) -> str | None:
    """fp16 only: steps the loss scaler skipped (overflowing gradients, step not taken)."""
    if not row["skipped_steps"]:
        return None
    return (f"epoch {row['epoch']}/{ctx.cfg.epochs}: {row['skipped_steps']} of "
            f"{len(ctx.train_stream)} steps skipped by the fp16 loss scaler (non-finite "
            f"gradients; scale now {ctx.parts.scaler.get_scale():g})")


def finish(ctx: RunContext, diverged: NonFiniteLoss | None = None) -> dict:
    """Evaluate the best checkpoint, write predictions.npz, curves.png and final.json; return
    final.json. A diverged run is recorded (status and where), then DivergedError raised."""
    started = time.perf_counter()
    status = "diverged" if diverged is not None else ctx.state.status
    results, kept = evaluate_best(ctx.files, ctx.parts, ctx.data, ctx.cfg, ctx.rt)
    ctx.files.write_predictions(kept)  # before final.json, whose presence marks a finished run
    final = final_record(ctx.cfg, ctx.state, ctx.parts.model, ctx.data, results, status,
                         wall_time_s=ctx.state.elapsed_s + time.perf_counter() - started)
    if diverged is not None:
        final["diverged_at"] = diverged.where
    _write_curves(ctx)
    ctx.files.write_final(final)  # last: its presence marks the run finished
    if diverged is not None:
        raise DivergedError(f"{diverged} (global step {diverged.where['global_step']}); "
                            f"see {ctx.files.path(FINAL_FILE)}")
    if ctx.files.is_main:
        val = results.get("val", {})
        log(f"{ctx.files.dir}: {status} after {ctx.state.epoch} epochs; best epoch "
            f"{ctx.state.best_epoch}: val acc {val.get('acc', float('nan')):.4f}, macro F1 "
            f"{val.get('macro_f1', float('nan')):.4f}")
    return final


def _write_curves(ctx: RunContext) -> None:
    """curves.png: the run's learning curves (matplotlib only when a run ends)."""
    if ctx.files.is_main:
        from resnorm.plots import plot_run_curves

        cfg = ctx.cfg
        with ctx.files.writing(CURVES_FILE) as path:
            plot_run_curves(ctx.state.history, path,
                            title=f"{cfg.name} ({cfg.norm}, n={cfg.n}, batch {cfg.batch_size})")
