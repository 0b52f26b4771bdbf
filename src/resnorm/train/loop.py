"""One epoch of training, evaluation, and the divergence check: the inner loop of a run.

train_one_epoch reads top to bottom, one comment per step; resnorm.train.run calls it once per
epoch and handles checkpoints, metrics and resuming around it.

Divergence under fp16 (the GradScaler) versus skipped steps. The scaler multiplies the loss
before backward so that small fp16 gradients do not flush to zero; when a scaled gradient
overflows (inf/NaN) it skips that optimizer step and halves the scale (and doubles it again
after 2000 clean steps). Such a skipped step is the scaler at work, not divergence: the
weights stay as they were, the step is counted (`skipped_steps`, a metrics.csv column) and
training goes on. Divergence is still caught, in two ways:
- a non-finite loss, in every precision (the loss is float32: cross-entropy runs in float32
  under autocast). In a skipped step the loss itself is finite, only the scaled gradients
  overflow; a non-finite loss means the forward pass overflowed or the weights are broken,
  which no scale fixes (it acts on the backward only), and the forward in train mode has
  already written the inf into BN running statistics, which never recover from it.
- fp16: a loss scale below MIN_LOSS_SCALE (1.0) at the end of an epoch. The scale gets
  there only through an overflow at scale 1, i.e. gradients that overflow fp16 unscaled
  (|g| > 65504) or are NaN, step after step: a run that no longer trains (every step
  skipped) ends up there whatever its epoch length, while the usual start-up (a handful of
  skips from 65536 down to a workable scale) never comes near it. ("Every step of an epoch
  skipped" was the alternative; it misfires on short epochs, where all of the first
  epoch's few steps can be the start-up, and misses a run that skips 99 % of its steps.)
Skipped steps are found on the device (the scaler's found-inf flags, summed without a host
sync) and read back once at the end of the epoch.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnorm.data import BatchStream
from resnorm.distributed import DistInfo, all_reduce_min, is_distributed
from resnorm.metrics import EpochMeter
from resnorm.norms import clamp_gates_
from resnorm.train.progress import Progress
from resnorm.train.runtime import Runtime

MIN_LOSS_SCALE = 1.0  # fp16: a loss scale below this at an epoch's end is divergence (above)

@dataclass
class TrainParts:
    """What a training step touches: the model (whose state a checkpoint saves), what training
    calls (the same model, or it wrapped in DDP under torchrun), the optimizer, the per-step lr
    schedule and the fp16 loss scaler, and this process's place among the ranks."""

    model: nn.Module
    trainer: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    info: DistInfo = DistInfo()


def train_one_epoch(parts: TrainParts, stream: BatchStream, rt: Runtime, show: Progress,
                    epoch: int, global_step: int, num_classes: int) -> tuple[dict, float, float]:
    """Train for one epoch; return (scores, lr of its last step, seconds spent). The scores
    include `skipped_steps`: optimizer steps the fp16 loss scaler skipped (0 without fp16).

    Raises NonFiniteLoss at the first non-finite loss (checked whenever the host reads from
    the device anyway, and at the end of the epoch), and LossScaleCollapsed when the fp16
    loss scale has fallen below MIN_LOSS_SCALE by the end of the epoch (module docstring).
    """
    parts.trainer.train()  # the DDP wrapper and the model inside it
    stream.set_epoch(epoch - 1)
    # Under DDP a rank must not stop alone mid-epoch (the others would wait for it in the
    # gradient all-reduce): divergence is checked by all ranks together at the epoch's end.
    check_early = not parts.info.enabled
    meter = EpochMeter(num_classes, rt.device)
    first_bad = torch.full((), -1, dtype=torch.long, device=rt.device)
    skipped = torch.zeros((), dtype=torch.long, device=rt.device)  # steps the scaler skipped
    show.start(epoch, len(stream))
    started = time.perf_counter()
    for step, (x, y) in enumerate(stream, 1):
        lr = parts.optimizer.param_groups[0]["lr"]  # this step's (the schedule moves after it)
        loss, logits, skip = train_step(parts, x, y, rt, first=global_step + step == 1)
        if skip is not None:
            skipped += skip
        # Statistics accumulate on the device: no host synchronisation here.
        meter.update(loss, logits, y)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
        # Read back only when the display needs numbers; check for divergence then. Under
        # DDP the numbers shown are rank 0's batches', the speed is all ranks' images.
        if show.wants(step):
            if check_early:
                _raise_if_diverged(first_bad, epoch, global_step)
            loss_so_far, acc_so_far = meter.running()
            seen = step * stream.batch_size * stream.world_size
            show.update(step, loss_so_far, acc_so_far, seen / (time.perf_counter() - started))
    _raise_if_diverged(_first_bad_on_any_rank(first_bad), epoch, global_step)
    # fp16: a scale that has collapsed means the gradients overflow even unscaled. (The scale
    # is the same on every rank: DDP's gradients, hence the overflows, are.)
    scaler = parts.scaler
    if scaler.is_enabled() and scaler.get_scale() < MIN_LOSS_SCALE:
        raise LossScaleCollapsed(epoch, len(stream), global_step + len(stream),
                                 scaler.get_scale(), int(skipped))
    stats = meter.compute()  # synchronises, so the time below includes all device work
    stats["skipped_steps"] = int(skipped)
    show.close()
    return stats, lr, time.perf_counter() - started


def train_step(parts: TrainParts, x: torch.Tensor, y: torch.Tensor, rt: Runtime,
               first: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One optimizer step on a batch: (loss, logits, and under fp16 a device tensor that is 1
    when the loss scaler skipped the step, else None). `first`: the run's very first step."""
    optimizer, scaler = parts.optimizer, parts.scaler
    # Forward under autocast; cross-entropy is computed in float32 either way.
    with rt.autocast():
        logits = parts.trainer(x)
        loss = F.cross_entropy(logits, y)
    # Backward and update (the scaler only acts for fp16: it unscales the gradients in
    # step(), so any gradient clipping would go after an explicit scaler.unscale_, and
    # skips the step when they overflowed; counted on the device, no host sync).
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    skipped = _step_skipped(scaler, optimizer, loss.device) if scaler.is_enabled() else None
    scaler.update()
    # BIN gates stay in [0, 1]: clamped in place, so the optimizer keeps the same tensor.
    clamp_gates_(parts.model)
    # Per-step schedule: warm-up and decay are smooth whatever the epoch count.
    _schedule_step(parts.scheduler, quiet=scaler.is_enabled() and first)
    return loss, logits, skipped


@torch.no_grad()
def evaluate(model: nn.Module, stream, num_classes: int, rt: Runtime | None = None,
             keep: dict | None = None) -> dict:
    """Loss and scores of `model` over `stream` in eval mode (see EpochMeter.compute).

    `keep`, a dict, receives the per-image results in stream order as CPU tensors: "labels",
    "preds" and "probs" (softmax, float32), for the study's paired statistics.
    """
    rt = rt or Runtime(torch.device("cpu"), None, False)
    meter = EpochMeter(num_classes, rt.device)
    kept = _Kept(num_classes) if keep is not None else None
    for y, logits, loss in _eval_batches(model, stream, rt):
        meter.update(loss, logits, y)
        if kept is not None:
            kept.add(y, logits)
    if keep is not None:
        keep.update(kept.result())
    return meter.compute()


@torch.no_grad()
def predict_all(model: nn.Module, stream, num_classes: int, rt: Runtime) -> dict:
    """The per-image results of `evaluate(..., keep=)` alone, without its scores (which are
    reduced over ranks): for one rank's pass over a whole split."""
    kept = _Kept(num_classes)
    for y, logits, _ in _eval_batches(model, stream, rt):
        kept.add(y, logits)
    return kept.result()


def _eval_batches(model: nn.Module, stream, rt: Runtime):
    """(y, logits, loss) per batch of `stream`, the model in eval mode meanwhile (the loss
    under autocast too, as in training)."""
    was_training = model.training
    model.eval()
    try:
        for x, y in stream:
            with rt.autocast():
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            yield y, logits, loss
    finally:
        model.train(was_training)


class _Kept:
    """Per-image labels and softmax probabilities, kept on the device: one copy to the host
    at the end."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes, self.labels, self.probs = num_classes, [], []

    def add(self, y: torch.Tensor, logits: torch.Tensor) -> None:
        self.labels.append(y)
        self.probs.append(torch.softmax(logits.float(), dim=1))

    def result(self) -> dict:
        probs = (torch.cat(self.probs).cpu() if self.probs
                 else torch.zeros(0, self.num_classes, dtype=torch.float32))
        labels = torch.cat(self.labels).cpu() if self.labels else torch.zeros(0, dtype=torch.long)
        return {"labels": labels, "probs": probs, "preds": probs.argmax(dim=1)}


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int, global_step: int,
                 message: str | None = None) -> None:
        super().__init__(message or f"non-finite loss at epoch {epoch}, step {step}")
        self.where = {"epoch": epoch, "step": step, "global_step": global_step}


class LossScaleCollapsed(NonFiniteLoss):
    """fp16: the loss scale fell below MIN_LOSS_SCALE; `where` is the epoch's last step."""

    def __init__(self, epoch: int, step: int, global_step: int, scale: float,
                 skipped: int) -> None:
        super().__init__(epoch, step, global_step,
                         f"non-finite fp16 gradients: the loss scale fell to {scale:.3g} in "
                         f"epoch {epoch} ({skipped} of {step} steps skipped)")


def _step_skipped(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer,
                  device: torch.device) -> torch.Tensor:
    """1 (a device tensor) if scaler.step just skipped the step: its found-inf flags, read
    before update() clears them. (`_found_inf_per_device` is GradScaler's own accessor, used
    by update(); tests/test_amp_auto.py checks it against a real scaler.)"""
    flags = scaler._found_inf_per_device(optimizer).values()
    return (sum(flag.to(device) for flag in flags) > 0).long()


def _schedule_step(scheduler, quiet: bool) -> None:
    """scheduler.step(); `quiet` for a run's very first step under fp16, which the scaler may
    have skipped: torch would warn that the schedule stepped before the optimizer did. The
    schedule counts steps taken or skipped alike, so it stays a function of the step."""
    if not quiet:
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        scheduler.step()


def _first_bad_on_any_rank(first_bad: torch.Tensor) -> torch.Tensor:
    """The first step at which any rank saw a non-finite loss (-1: none), on every rank."""
    if not is_distributed():
        return first_bad
    none = torch.iinfo(torch.long).max
    earliest = all_reduce_min(torch.where(first_bad < 0, none, first_bad))
    return torch.where(earliest == none, -1, earliest)


def _raise_if_diverged(first_bad: torch.Tensor, epoch: int, global_step: int) -> None:
    bad = int(first_bad)
    if bad >= 0:
        raise NonFiniteLoss(epoch, bad, global_step + bad)
