"""One epoch of training, evaluation, and the divergence check: the inner loop of a run.

train_one_epoch reads top to bottom, one comment per step; resnorm.train.run calls it once per
epoch and handles checkpoints, metrics and resuming around it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnorm.checkpoint import rng_state, set_rng_state
from resnorm.data import BatchStream
from resnorm.distributed import DistInfo, all_reduce_min, is_distributed
from resnorm.metrics import EpochMeter
from resnorm.norms import clamp_gates_
from resnorm.train.progress import Progress
from resnorm.train.runtime import Runtime


@dataclass
class TrainParts:
    """What a training step touches, and what a checkpoint saves besides the run state."""

    model: nn.Module                 # the module whose state_dict is saved
    forward: nn.Module               # training: the same model, DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    eval_forward: nn.Module | None = None  # evaluation: the model, compiled or not (no DDP)
    info: DistInfo = DistInfo()      # this process's place among the ranks

    def __post_init__(self) -> None:
        if self.eval_forward is None:
            self.eval_forward = self.forward

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state()}

    def restore(self, checkpoint: dict) -> None:
        """Load what state_dict saved (the run state in checkpoint["state"] is the caller's)."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint["rng"])


def train_one_epoch(parts: TrainParts, stream: BatchStream, rt: Runtime, show: Progress,
                    epoch: int, global_step: int, num_classes: int) -> tuple[dict, float, float]:
    """Train for one epoch; return (scores, lr of its last step, seconds spent).

    Raises NonFiniteLoss at the first non-finite loss (checked whenever the host reads from
    the device anyway, and at the end of the epoch).
    """
    model, optimizer, scaler = parts.model, parts.optimizer, parts.scaler
    parts.forward.train()  # the DDP/compile wrappers and the model inside them
    stream.set_epoch(epoch - 1)
    # Under DDP a rank must not stop alone mid-epoch (the others would wait for it in the
    # gradient all-reduce): divergence is checked by all ranks together at the epoch's end.
    check_early = not parts.info.enabled
    meter = EpochMeter(num_classes, rt.device)
    first_bad = torch.full((), -1, dtype=torch.long, device=rt.device)
    show.start(epoch, len(stream))
    started = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    for step, (x, y) in enumerate(stream, 1):
        # Forward under autocast; cross-entropy is computed in float32 either way.
        with rt.autocast():
            logits = parts.forward(x)
            loss = F.cross_entropy(logits, y)
        # Backward and update (the scaler only acts for fp16).
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        # BIN gates stay in [0, 1]: clamped in place, so the optimizer keeps the same tensor.
        clamp_gates_(model)
        # Per-step schedule: warm-up and decay are smooth whatever the epoch count.
        lr = optimizer.param_groups[0]["lr"]
        parts.scheduler.step()
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
    stats = meter.compute()  # synchronises, so the time below includes all device work
    show.close()
    return stats, lr, time.perf_counter() - started


@torch.no_grad()
def evaluate(model: nn.Module, stream, num_classes: int, rt: Runtime | None = None) -> dict:
    """Loss and scores of `model` over `stream` in eval mode (see EpochMeter.compute)."""
    rt = rt or Runtime(torch.device("cpu"), None, False)
    was_training = model.training
    model.eval()
    meter = EpochMeter(num_classes, rt.device)
    try:
        for x, y in stream:
            with rt.autocast():
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            meter.update(loss, logits, y)
    finally:
        model.train(was_training)
    return meter.compute()


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int, global_step: int) -> None:
        super().__init__(f"non-finite loss at epoch {epoch}, step {step}")
        self.where = {"epoch": epoch, "step": step, "global_step": global_step}


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
