"""The optimizer and the learning-rate schedule of a run.

Parameter groups: conv and linear weights get weight decay; biases and norm weights/biases
do not (the usual practice: decaying a norm's scale only fights the normalisation); BIN gates
(rho) get no weight decay and lr x gate_lr_mult (10, as in Nam & Kim) and are clamped to [0,1]
after every optimizer step (in the training loop). The schedule is applied per step.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from resnorm.norms import gate_parameters
from resnorm.train.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer over three parameter groups (see the module docstring).

    Each group carries `lr_mult`; the schedule scales `lr * lr_mult`.
    """
    gates = {id(p) for p in gate_parameters(model)}
    decay, no_decay, gate = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in gates:
            gate.append(p)
        elif p.ndim >= 2:  # conv and linear weights
            decay.append(p)
        else:  # biases, norm weights and biases
            no_decay.append(p)
    groups = [
        dict(name="weights", params=decay, weight_decay=cfg.weight_decay, lr_mult=1.0),
        dict(name="biases_and_norms", params=no_decay, weight_decay=0.0, lr_mult=1.0),
        dict(name="bin_gates", params=gate, weight_decay=0.0, lr_mult=cfg.gate_lr_mult),
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = cfg.lr * g["lr_mult"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based)."""
    if step < warmup_steps:  # linear warm-up: the first step already takes a small step
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":  # He et al.: divide by 10 at 50% and 75% of training
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following `lr_factor` (its state is plain numbers)."""
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        return lr_factor(step, total, warmup, cfg.schedule)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
