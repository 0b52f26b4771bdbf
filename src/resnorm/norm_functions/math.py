"""Arithmetic on (N, C)-sized tensors shared by the kernels and the layers' reference path:
the statistics dtype, statistics from sums, size checks, the affine fold, the BIN mix and
the coefficients of the input gradient. Nothing here passes over the activations."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

HALF = (torch.float16, torch.bfloat16)


def upcast(t: Tensor) -> Tensor:
    """t in the statistics dtype: float32 for half types (as PyTorch's kernels under
    autocast), unchanged otherwise."""
    return t.float() if t.dtype in HALF else t


def mean_var_from_sums(total: Tensor, total_sq: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Mean and biased variance from a sum, a sum of squares and the element count.

    One pass of sums rather than two passes or Welford's: `torch.var_mean` is not vectorized
    on CPU (benchmarks/RESULTS.md, "Measurements behind the eager kernels"), the two sums
    fuse into one loop when compiled, and sums are what a cross-process sync all-reduces.
    E[x^2] - E[x]^2 loses about log10(1 + mean^2 / var) of float32's 7 digits to cancellation
    (Flax's `use_fast_variance` default makes the same trade); conv outputs in a normalized
    network have |mean| of the order of their std. Rounding can make the difference slightly
    negative: clamp at 0.
    """
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0)
    return mean, var


def check_batch_size(x: Tensor) -> None:
    """Batch statistics need more than one value per channel, as in nn.BatchNorm2d."""
    if x.shape[0] * x.shape[2] * x.shape[3] == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {list(x.shape)}"
        )


def check_instance_size(x: Tensor) -> None:
    """Instance statistics need more than one value per (sample, channel)."""
    if x.shape[2] * x.shape[3] == 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input size {list(x.shape)}"
        )


def per_channel(t: Tensor, channels: int) -> Tensor:
    """(N, G) group values repeated for the channels of each group: (N, C)."""
    n, groups = t.shape
    if groups == channels:
        return t
    return t.unsqueeze(2).expand(n, groups, channels // groups).reshape(n, channels)


def fold(mean: Tensor, rstd: Tensor, weight: Tensor | float | None,
         bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """(x - mean) * rstd * weight + bias as x * scale + shift.

    Shapes broadcast: statistics per channel (C,) or per (sample, channel) (N, C), the
    affine per channel. One scale and one shift keep the output map to one multiply-add and
    x's memory format.
    """
    scale = rstd if weight is None else rstd * weight
    shift = -mean * scale
    return scale, shift if bias is None else shift + bias


def bin_mix(gate: Tensor, bn_mean: Tensor, bn_rstd: Tensor, in_mean: Tensor, in_rstd: Tensor,
            weight: Tensor | None, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """BIN's weight * (gate * x_hat_BN + (1 - gate) * x_hat_IN) + bias as x * scale + shift.

    gate * (x - m1) * r1 + (1 - gate) * (x - m2) * r2 is one affine map of x per
    (sample, channel): mix the two normalizations' scales and shifts, then fold in the
    affine. BN statistics per channel (C,), IN statistics per (sample, channel) (N, C).
    """
    bn_scale, bn_shift = fold(bn_mean, bn_rstd, gate, None)
    in_scale, in_shift = fold(in_mean, in_rstd, 1 - gate, None)
    scale, shift = bn_scale + in_scale, bn_shift + in_shift
    if weight is not None:
        scale, shift = scale * weight, shift * weight
    if bias is not None:
        shift = shift + bias
    return scale, shift


def input_grad_coefficients(s_g: Tensor, s_gxhat: Tensor, mean: Tensor, rstd: Tensor,
                            w: Tensor | float, group_mean: Callable[[Tensor], Tensor]
                            ) -> tuple[Tensor, Tensor, Tensor]:
    """a, b, c of dx = a * g + b * x + c for y = w * x_hat + bias with statistics of x.

    `s_g`, `s_gxhat`: sum(g) and sum(g * x_hat), per (sample, channel) or per channel;
    `group_mean(t)` averages such sums over the elements each statistic was taken over and
    broadcasts the result back to the statistics' shape.
    """
    p = group_mean(w * s_g)         # mean over the group of u = g * w
    q = group_mean(w * s_gxhat)     # mean over the group of u * x_hat
    # rstd * (u - p - x_hat * q) with x_hat = (x - mean) * rstd, collected by powers of x
    rq = rstd * q
    return rstd * w, -rstd * rq, rstd * (rq * mean - p)


def weight_or_one(weight: Tensor | None) -> Tensor | float:
    return 1.0 if weight is None else weight


def param_grad(t: Tensor, param: Tensor | None) -> Tensor | None:
    """A parameter's gradient in the parameter's dtype (None without the parameter)."""
    return None if param is None else t.to(param.dtype)
