"""Fused autograd Functions behind the from-scratch norms: the fast path of `resnorm.norms`.

The readable composite code of `resnorm.norms` (the reference path) lets autograd
differentiate `var_mean`, the scale/shift and the output map op by op: about ten passes over
the activations per layer, and a slow Welford kernel on CPU. Here each norm is one
`torch.autograd.Function` with the analytic backward, and each direction makes two passes
over the activations:

    forward   moments:     per-(sample, channel) sum(x) and sum(x^2) over (H, W)
              map:         y = x * scale + shift, normalization and affine folded into one
                           scale and shift per channel (BN) or per (sample, channel)
    backward  grad sums:   per-(sample, channel) sum(g) and sum(g * x) over (H, W)
              input grad:  dx = a * g + b * x + c, with per-(sample, channel) coefficients

Everything between the two passes is arithmetic on (N, C)-sized tensors. For
x_hat = (x - mean) * rstd, statistics over a set R of M elements, y = w * x_hat + b and
u = g * w:

    dx = rstd * (u - mean_R(u) - x_hat * mean_R(u * x_hat))
    dw = sum(g * x_hat),  db = sum(g)   (per channel)

and sum_hw(g * x_hat) = rstd * (sum_hw(g * x) - mean * sum_hw(g)), so x_hat is never stored.
BN reduces the per-(sample, channel) sums over the batch, GN/LN over the channels of a group,
IN not at all; BIN is the gated sum of a BN and an IN term. The Functions are
`once_differentiable`: a double backward raises a clear error.

Each direction of each norm is one kernel (`kernels.Kernel`) in two versions built from the
same code: eager, from passes tuned for PyTorch's eager CPU ops, and plain, which
`torch.compile` fuses into one loop per pass (C++ on CPU, Triton on CUDA), about as fast as
PyTorch's own norm kernels; `set_kernel_mode` and `plan_kernels` choose between them.

Statistics are float32 for float16/bfloat16 inputs (as PyTorch's kernels under autocast) and
the input's dtype otherwise; outputs and input gradients have the input's dtype and memory
format (channels_last in, channels_last out, with no hidden copies).

Modules, top down: batch, group, bin (the Functions) | kernels (selection, compiling) |
passes (over the activations) | math (on (N, C)-sized tensors, shared with the reference path).
"""
from resnorm.norm_functions.batch import BatchNormFunction
from resnorm.norm_functions.bin import BatchInstanceNormFunction
from resnorm.norm_functions.group import GroupNormFunction
from resnorm.norm_functions.kernels import (KERNEL_MODES, get_kernel_mode, kernel_mode,
                                            plan_kernels, planned_kernels, set_kernel_mode)
from resnorm.norm_functions.math import (bin_mix, check_batch_size, check_instance_size, fold,
                                         mean_var_from_sums, upcast)
from resnorm.norm_functions.passes import affine_map

__all__ = [
    "KERNEL_MODES",
    "set_kernel_mode",
    "get_kernel_mode",
    "kernel_mode",
    "plan_kernels",
    "planned_kernels",
    "mean_var_from_sums",
    "check_batch_size",
    "check_instance_size",
    "upcast",
    "fold",
    "bin_mix",
    "affine_map",
    "BatchNormFunction",
    "GroupNormFunction",
    "BatchInstanceNormFunction",
]
