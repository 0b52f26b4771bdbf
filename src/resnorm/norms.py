"""Normalization layers written from scratch: BN, IN, BIN, LN, GN and a no-norm placeholder.

Every layer here computes its statistics with plain tensor ops (no `F.batch_norm`,
`F.group_norm`, ... — tests check the source) and is verified against PyTorch's own ops in
float64. `make_norm(kind, num_channels)` is the one resolver the model uses; `torch_bn` is the
only kind that is PyTorch's built-in (the Part 1.1 baseline).

Two paths compute the same function:
- the fast path (default): one `torch.autograd.Function` per layer with the analytic backward
  (`resnorm.norm_functions`), whose passes over the activations run as eager ops, or are compiled
  into fused loops when a training run is long enough to pay the compile back
  (`norm_functions.plan_kernels`, `set_kernel_mode`), so a layer costs about what PyTorch's
  built-in kernel does;
- the reference path (`layer.reference = True`, or `use_reference(model)`): the readable
  composite code below, differentiated op by op by autograd. Tests check the fast path
  against it and both against PyTorch.

BN and BIN take `sync=True` (or `enable_sync_(model)`): under torch.distributed with several
processes, training takes the batch statistics over every process's batch
(`resnorm.distributed.sync_batch_mean_var`, differentiable), so N processes with batch B
compute what one process with batch N*B computes. Synced layers take the reference path.

Shared conventions:
- inputs are (N, C, H, W); statistics are computed in float32 when the input is float16 or
  bfloat16 (as PyTorch's kernels do under autocast), and the output has the input's dtype;
- normalization and affine are folded into one per-(sample, channel) scale and shift, so the
  output keeps the input's memory format (channels_last in, channels_last out).
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from resnorm.distributed import is_distributed, sync_batch_mean_var
from resnorm.norm_functions import (
    BatchInstanceNormFunction,
    BatchNormFunction,
    GroupNormFunction,
    check_batch_size,
    check_instance_size,
)

__all__ = [
    "BatchNorm2d",
    "InstanceNorm2d",
    "BatchInstanceNorm2d",
    "LayerNorm2d",
    "GroupNorm2d",
    "NoNorm",
    "NORM_KINDS",
    "make_norm",
    "norm_factory",
    "gate_parameters",
    "clamp_gates_",
    "DEFAULT_GN_GROUPS",
    "use_reference",
    "enable_sync_",
]

# Group count for GN when a kind says just "gn". The GN paper's default (32 groups) does not
# divide the 16-channel first stage; 8 groups gives 2/4/8 channels per group in the 16/32/64
# stages, between IN (1 channel per group) and LN (all channels). Override with "gn:G".
DEFAULT_GN_GROUPS = 8


# --- shared math of the reference path -------------------------------------------------------

def _stats_dtype_input(x: Tensor) -> Tensor:
    """The input in the dtype statistics are computed in (float32 for half types)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_4d(x: Tensor, layer: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{layer} expects a 4D (N, C, H, W) input, got shape {tuple(x.shape)}")


def _scale_shift(x: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor | None,
                 bias: Tensor | None) -> Tensor:
    """y = (x - mean) * rstd * weight + bias, as one scale and one shift broadcast over x.

    `mean` and `rstd` broadcast against x as (1 or N, C, 1, 1). Folding the affine into the
    scale keeps this to one multiply-add over the activations and preserves x's memory format.
    """
    return _affine_map(x, rstd, -mean * rstd, weight, bias)


def _affine_map(x: Tensor, scale: Tensor, shift: Tensor, weight: Tensor | None,
                bias: Tensor | None) -> Tensor:
    """y = (x * scale + shift) * weight + bias, folded into one multiply-add over x."""
    if weight is not None:
        w = weight.view(1, -1, 1, 1)
        scale, shift = scale * w, shift * w
    if bias is not None:
        shift = shift + bias.view(1, -1, 1, 1)
    return x * scale + shift


def group_stats(x: Tensor, num_groups: int, eps: float) -> tuple[Tensor, Tensor]:
    """Per-sample mean and 1/std over groups of channels, expanded to shape (N, C, 1, 1).

    num_groups == C is instance norm, num_groups == 1 is layer norm. The variance is biased
    (divides by the element count), as in every reference definition.
    """
    n, c = x.shape[:2]
    grouped = x.reshape(n, num_groups, -1)
    var, mean = torch.var_mean(grouped, dim=2, unbiased=False, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    per_group = c // num_groups
    # Expand the group statistics to channels so the affine folds into one scale/shift.
    expand = lambda t: t.repeat_interleave(per_group, dim=1).view(n, c, 1, 1)  # noqa: E731
    return expand(mean), expand(rstd)


def instance_stats(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and 1/std, shape (N, C, 1, 1)."""
    if x.shape[2] * x.shape[3] == 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input size {list(x.shape)}"
        )
    var, mean = torch.var_mean(x, dim=(2, 3), unbiased=False, keepdim=True)
    return mean, torch.rsqrt(var + eps)


def batch_stats(x: Tensor) -> tuple[Tensor, Tensor, int]:
    """Per-channel mean and biased variance over (N, H, W), shape (C,), and the element count."""
    count = x.shape[0] * x.shape[2] * x.shape[3]
    if count == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {list(x.shape)}"
        )
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    return mean, var, count


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
        """Mean and 1/std this layer normalizes x with (batch or running), shape (1, C, 1, 1),
        differentiable. In training this also updates the running statistics."""
        if self._uses_batch_stats():
            mean, var, count = sync_batch_mean_var(x) if self._syncs() else batch_stats(x)
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, count)
        else:
            mean, var = self.running_mean, self.running_var
        rstd = torch.rsqrt(var + self.eps)
        return mean.view(1, -1, 1, 1), rstd.view(1, -1, 1, 1)

    def _forward_reference(self, x: Tensor) -> Tensor:
        xs = _stats_dtype_input(x)
        mean, rstd = self.reference_stats(xs)
        return _scale_shift(xs, mean, rstd, self.weight, self.bias).to(x.dtype)

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
        xs = _stats_dtype_input(x)
        mean, rstd = instance_stats(xs, self.eps)
        return _scale_shift(xs, mean, rstd, self.weight, self.bias).to(x.dtype)

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
        xs = _stats_dtype_input(x)
        mean, rstd = group_stats(xs, self.num_groups, self.eps)
        return _scale_shift(xs, mean, rstd, self.weight, self.bias).to(x.dtype)

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
        xs = _stats_dtype_input(x)
        bn_mean, bn_rstd = self.bn.reference_stats(xs)
        in_mean, in_rstd = instance_stats(xs, self.eps)
        # rho*(x-m1)*r1 + (1-rho)*(x-m2)*r2 is one affine map of x per (sample, channel):
        # mix the two normalizations' scales and shifts instead of two normalized maps.
        rho = self.gate.view(1, -1, 1, 1)
        scale = rho * bn_rstd + (1 - rho) * in_rstd
        shift = -(rho * bn_mean * bn_rstd + (1 - rho) * in_mean * in_rstd)
        return _affine_map(xs, scale, shift, self.weight, self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class NoNorm(nn.Identity):
    """The no-normalization (NN) variant: passes activations through unchanged."""

    def __init__(self, num_channels: int | None = None) -> None:
        super().__init__()


# --- registry --------------------------------------------------------------------------------

def _make_gn(num_channels: int, groups: int = DEFAULT_GN_GROUPS) -> nn.Module:
    return GroupNorm2d(groups, num_channels)


# kind -> (constructor taking the channel count first, parameter accepted after ':')
NORM_KINDS: dict[str, tuple[Callable[..., nn.Module], str | None]] = {
    "torch_bn": (nn.BatchNorm2d, None),
    "bn": (BatchNorm2d, None),
    "in": (InstanceNorm2d, None),
    "bin": (BatchInstanceNorm2d, None),
    "ln": (LayerNorm2d, None),
    "gn": (_make_gn, "groups"),
    "nn": (NoNorm, None),
}


def norm_factory(kind: str) -> Callable[[int], nn.Module]:
    """Resolve a kind such as "bn" or "gn:4" to a callable taking a channel count."""
    if not isinstance(kind, str):
        raise ValueError(f"norm kind must be a string, got {kind!r}")
    name, _, param = kind.strip().lower().partition(":")
    if name not in NORM_KINDS:
        valid = ", ".join(NORM_KINDS)
        raise ValueError(f"unknown norm kind {kind!r}; valid kinds: {valid} (e.g. gn:8)")
    constructor, param_name = NORM_KINDS[name]
    if not param:
        return constructor
    if param_name is None:
        raise ValueError(f"norm kind {name!r} takes no parameter, got {kind!r}")
    try:
        value = int(param)
    except ValueError:
        raise ValueError(f"norm kind {kind!r}: {param_name} must be an integer") from None
    if value < 1:
        raise ValueError(f"norm kind {kind!r}: {param_name} must be positive")
    return lambda num_channels: constructor(num_channels, value)


def make_norm(kind: str, num_channels: int) -> nn.Module:
    """Build the normalization layer `kind` (see NORM_KINDS) for `num_channels` channels."""
    return norm_factory(kind)(num_channels)


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
