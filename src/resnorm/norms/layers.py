"""The normalization layers, written from scratch: BN, IN, BIN, LN, GN and a no-norm
placeholder (see `resnorm.norms` for the two paths every layer has).

The reference path below is composite code that autograd differentiates op by op: the
statistics from `torch.var_mean` (the fast path takes them from sums), then the same fold of
normalization and affine into one scale and shift, and the same output map, as the kernels
(`resnorm.norm_functions.math`, `passes`).
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from resnorm.distributed import is_distributed, sync_batch_mean_var
from resnorm.norm_functions import (BatchInstanceNormFunction, BatchNormFunction,
                                    GroupNormFunction, affine_map, bin_mix, check_batch_size,
                                    check_instance_size, fold, upcast)
from resnorm.norm_functions.math import per_channel

__all__ = ["BatchNorm2d", "InstanceNorm2d", "BatchInstanceNorm2d", "LayerNorm2d", "GroupNorm2d",
           "NoNorm", "gate_parameters", "clamp_gates_", "use_reference", "enable_sync_"]


# --- statistics of the reference path --------------------------------------------------------

def group_stats(x: Tensor, num_groups: int, eps: float) -> tuple[Tensor, Tensor]:
    """Per-sample mean and 1/std over groups of channels, repeated for the channels of each
    group: (N, C) each.

    num_groups == C is instance norm, num_groups == 1 is layer norm. The variance is biased
    (divides by the element count), as in every reference definition.
    """
    n, c = x.shape[:2]
    var, mean = torch.var_mean(x.reshape(n, num_groups, -1), dim=2, unbiased=False)
    return per_channel(mean, c), per_channel(torch.rsqrt(var + eps), c)


def instance_stats(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and 1/std: (N, C) each."""
    check_instance_size(x)
    var, mean = torch.var_mean(x, dim=(2, 3), unbiased=False)
    return mean, torch.rsqrt(var + eps)


def batch_stats(x: Tensor) -> tuple[Tensor, Tensor, int]:
    """Per-channel mean and biased variance over (N, H, W), shape (C,), and the element count."""
    check_batch_size(x)
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    return mean, var, x.shape[0] * x.shape[2] * x.shape[3]


def _check_4d(x: Tensor, layer: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{layer} expects a 4D (N, C, H, W) input, got shape {tuple(x.shape)}")


# --- layers ----------------------------------------------------------------------------------

class _Affine(nn.Module):
    """Per-channel weight (gamma, init 1) and bias (beta, init 0), or neither.

    `reference` (a plain attribute, default False) selects the composite reference path.
    """

    reference: bool = False

    def __init__(self, num_channels: int, affine: bool) -> None:
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels must be positive, got {num_channels}")
        self.num_channels = num_channels
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.empty(num_channels))
            self.bias = nn.Parameter(torch.empty(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_affine()

    def reset_affine(self) -> None:
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def reset_parameters(self) -> None:
        self.reset_affine()

    def _normalize_reference(self, x: Tensor,
                             stats: Callable[[Tensor], tuple[Tensor, Tensor]]) -> Tensor:
        """x normalized by the (mean, rstd) that `stats` takes from it, then the affine."""
        xs = upcast(x)
        mean, rstd = stats(xs)
        return affine_map(xs, *fold(mean, rstd, self.weight, self.bias)).to(x.dtype)


class BatchNorm2d(_Affine):
    """Batch normalization (Ioffe & Szegedy 2015) with the semantics of `nn.BatchNorm2d`.

    Training normalizes with the batch's biased variance and updates the running statistics
    (unbiased variance) as buffers, outside autograd; `momentum=None` keeps a cumulative
    average. Eval uses the running statistics unless `track_running_stats=False`.
    `sync=True`: in training under a process group of several ranks, the statistics are over
    every rank's batch (the running statistics then agree on every rank).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 sync: bool = False) -> None:
        super().__init__(num_features, affine)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.track_running_stats = track_running_stats
        self.sync = sync
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        self.reset_affine()

    def _uses_batch_stats(self) -> bool:
        return self.training or not self.track_running_stats

    def _syncs(self) -> bool:
        """Statistics over all ranks' batches: asked for, training, and several ranks."""
        return self.sync and self.training and is_distributed()

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, count: int) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        unbiased_var = var * (count / (count - 1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, type(self).__name__)
        if self.reference or self._syncs():
            return self._forward_reference(x)
        if not self._uses_batch_stats():
            return BatchNormFunction.apply(x, self.weight, self.bias, self.running_mean,
                                           self.running_var, self.eps)
        check_batch_size(x)
        y, mean, var = BatchNormFunction.apply(x, self.weight, self.bias, None, None, self.eps)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var, x.shape[0] * x.shape[2] * x.shape[3])
        return y

    # reference path

    def reference_stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and 1/std this layer normalizes x with (batch or running), shape (C,),
        differentiable. In training this also updates the running statistics."""
        if self._uses_batch_stats():
            mean, var, count = sync_batch_mean_var(x) if self._syncs() else batch_stats(x)
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, count)
        else:
            mean, var = self.running_mean, self.running_var
        return mean, torch.rsqrt(var + self.eps)

    def _forward_reference(self, x: Tensor) -> Tensor:
        return self._normalize_reference(x, self.reference_stats)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}"
                + (", sync=True" if self.sync else ""))


class InstanceNorm2d(_Affine):
    """Instance normalization (Ulyanov et al. 2016): statistics per sample and channel.

    The same in training and eval (no running statistics), with a per-channel affine.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features, affine)
        self.num_features = num_features
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, type(self).__name__)
        if self.reference:
            return self._forward_reference(x)
        check_instance_size(x)
        return GroupNormFunction.apply(x, self.weight, self.bias, x.shape[1], self.eps)

    def _forward_reference(self, x: Tensor) -> Tensor:
        return self._normalize_reference(x, lambda xs: instance_stats(xs, self.eps))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class GroupNorm2d(_Affine):
    """Group normalization (Wu & He 2018): statistics per sample over groups of channels."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True) -> None:
        super().__init__(num_channels, affine)
        if num_groups < 1 or num_channels % num_groups != 0:
            raise ValueError(
                f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})"
            )
        self.num_groups = num_groups
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, type(self).__name__)
        if x.shape[1] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels, got {x.shape[1]}")
        if self.reference:
            return self._forward_reference(x)
        return GroupNormFunction.apply(x, self.weight, self.bias, self.num_groups, self.eps)

    def _forward_reference(self, x: Tensor) -> Tensor:
        return self._normalize_reference(x, lambda xs: group_stats(xs, self.num_groups, self.eps))

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class LayerNorm2d(GroupNorm2d):
    """Layer normalization (Ba et al. 2016) for images: statistics per sample over (C, H, W),
    with a per-channel affine — GroupNorm with a single group."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(1, num_channels, eps, affine)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.affine}"


class BatchInstanceNorm2d(_Affine):
    """Batch-Instance normalization (Nam & Kim 2018), following the authors' code.

    y = weight * (gate * x_BN + (1 - gate) * x_IN) + bias, with a per-channel gate (rho)
    initialised to 1 (pure BN). The BN branch keeps running statistics and uses them in eval;
    the IN branch always uses instance statistics. The gate is kept in [0, 1] by
    `clamp_gates_` after every optimizer step — it is clamped in place, never re-created, so
    the optimizer keeps training the same tensor.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, sync: bool = False) -> None:
        super().__init__(num_features, affine)
        self.num_features = num_features
        self.eps = eps
        self.bn = BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=False, sync=sync)
        self.gate = nn.Parameter(torch.ones(num_features))

    def reset_parameters(self) -> None:
        self.bn.reset_parameters()
        nn.init.ones_(self.gate)
        self.reset_affine()

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, type(self).__name__)
        if self.reference or self.bn._syncs():
            return self._forward_reference(x)
        bn = self.bn
        if not bn._uses_batch_stats():
            check_instance_size(x)
            return BatchInstanceNormFunction.apply(x, self.gate, self.weight, self.bias,
                                                   bn.running_mean, bn.running_var, self.eps)
        check_batch_size(x)
        check_instance_size(x)
        y, mean, var = BatchInstanceNormFunction.apply(x, self.gate, self.weight, self.bias,
                                                       None, None, self.eps)
        if bn.training and bn.track_running_stats:
            bn._update_running_stats(mean, var, x.shape[0] * x.shape[2] * x.shape[3])
        return y

    def _forward_reference(self, x: Tensor) -> Tensor:
        xs = upcast(x)
        bn_mean, bn_rstd = self.bn.reference_stats(xs)
        in_mean, in_rstd = instance_stats(xs, self.eps)
        scale, shift = bin_mix(self.gate, bn_mean, bn_rstd, in_mean, in_rstd, self.weight,
                               self.bias)
        return affine_map(xs, scale, shift).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class NoNorm(nn.Identity):
    """The no-normalization (NN) variant: passes activations through unchanged."""

    def __init__(self, num_channels: int | None = None) -> None:
        super().__init__()


# --- switches over a model's layers ----------------------------------------------------------

def use_reference(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every from-scratch norm in `model` to the composite reference path (or back)."""
    for module in model.modules():
        if isinstance(module, _Affine):
            module.reference = enabled
    return model


def enable_sync_(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Make every from-scratch BN of `model` (BIN's BN branch included) take its training
    statistics over all ranks (or, with enabled=False, its own batch again). IN, LN and GN
    have per-sample statistics: nothing to sync. PyTorch's nn.BatchNorm2d is left alone (see
    nn.SyncBatchNorm.convert_sync_batchnorm)."""
    for module in model.modules():
        if isinstance(module, BatchNorm2d):
            module.sync = enabled
    return model


# --- BIN gates -------------------------------------------------------------------------------

def gate_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The BIN gates (rho) of a model: trained without weight decay, at their own lr."""
    for module in model.modules():
        if isinstance(module, BatchInstanceNorm2d):
            yield module.gate


@torch.no_grad()
def clamp_gates_(model: nn.Module) -> None:
    """Clamp every BIN gate to [0, 1] in place; call after each optimizer step."""
    for gate in gate_parameters(model):
        gate.clamp_(0.0, 1.0)
