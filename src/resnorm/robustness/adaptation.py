"""BN's statistics adapted at test time: Schneider et al. (NeurIPS 2020), full adaptation.

A BN layer normalizes at test time with the running mean and variance of the *training*
images; under a covariate shift (noise, blur, fog) those no longer describe what reaches the
layer. Full adaptation replaces them with the statistics of the shifted images themselves,
from unlabeled images only: every layer that keeps running statistics (PyTorch's
nn.BatchNorm2d, resnorm's BatchNorm2d and BIN's BN branch) forgets its running statistics,
averages the batch statistics of the target images (momentum None: a cumulative mean over the
batches, every batch weighted alike) while the rest of the model stays in eval mode, and the
model is then scored in eval mode as usual. Weights, biases and BIN's gates are untouched.
GN, LN and IN have no running statistics: there is nothing to adapt.

`adapted` works on a deep copy: the caller's model, and so the run's checkpoint, never change.
It takes images only: there is no argument through which a label could reach it.
"""
from __future__ import annotations

import copy
from typing import Iterable, Iterator

import torch
from torch import nn

__all__ = ["running_stat_layers", "has_running_stats", "adapted"]


def running_stat_layers(model: nn.Module) -> Iterator[nn.Module]:
    """The layers of `model` that normalize in eval mode with running statistics."""
    for module in model.modules():
        if getattr(module, "track_running_stats", False) \
                and isinstance(getattr(module, "running_mean", None), torch.Tensor):
            yield module


def has_running_stats(model: nn.Module) -> bool:
    return next(running_stat_layers(model), None) is not None


@torch.no_grad()
def adapted(model: nn.Module, images: Iterable[torch.Tensor]) -> nn.Module:
    """A copy of `model` whose running statistics are those of `images` (normalized input
    batches, each of at least two images), in eval mode. `model` itself is not changed."""
    out = copy.deepcopy(model).eval()
    layers = list(running_stat_layers(out))
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average of the batches' statistics
        layer.train()          # batch statistics in, running statistics updated
    seen = 0
    for x in images:
        out(x)
        seen += len(x)
    if layers and not seen:
        raise ValueError("adaptation needs at least one batch of images")
    return out.eval()
