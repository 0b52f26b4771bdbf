"""BN's fused autograd Function: statistics per channel over (N, H, W)."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from resnorm.norm_functions.kernels import Kernel
from resnorm.norm_functions.math import (fold, input_grad_coefficients, mean_var_from_sums,
                                         param_grad, weight_or_one)


def _bn_forward(x, weight, bias, running_mean, running_var, eps, passes):
    """y and the per-channel mean, var, rstd it was normalized with: the batch's own when
    `running_mean` is None, else the running statistics."""
    if running_mean is None:
        total, total_sq = passes.moments(x)
        # A synchronized BN all-reduces these two per-channel sums and the count here.
        mean, var = mean_var_from_sums(total.sum(0), total_sq.sum(0),
                                       x.shape[0] * x.shape[2] * x.shape[3])
    else:
        mean, var = running_mean, running_var
    rstd = torch.rsqrt(var + eps)
    return (passes.map(x, *fold(mean, rstd, weight, bias)), mean, var, rstd)


def _bn_backward(grad, x, mean, rstd, weight, batch_stats, passes):
    """dx, dweight = sum(g * x_hat), dbias = sum(g)."""
    s_g, s_gx = passes.grad_sums(grad, x)
    s_g = s_g.sum(0)
    s_gxhat = rstd * (s_gx.sum(0) - mean * s_g)
    w = weight_or_one(weight)
    if batch_stats:
        # A synchronized BN all-reduces s_g and s_gxhat (and uses the global count) here,
        # for dx only: DDP already sums the parameter gradients.
        count = x.shape[0] * x.shape[2] * x.shape[3]
        a, b, c = input_grad_coefficients(s_g, s_gxhat, mean, rstd, w, lambda t: t / count)
    else:  # constant statistics (eval): dx = g * rstd * w
        a = rstd * w
        b = c = torch.zeros_like(a)
    return passes.input_grad(grad, x, a, b, c), s_gxhat, s_g


bn_forward = Kernel(_bn_forward)
bn_backward = Kernel(_bn_backward)


class BatchNormFunction(torch.autograd.Function):
    """BN's normalization and affine.

    With `running_mean` and `running_var` None, normalizes with the batch's statistics and
    returns (y, mean, var) (mean and biased var per channel, for the running averages, not
    differentiable); otherwise normalizes with the running statistics and returns y alone.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, weight: Tensor | None, bias: Tensor | None,
                running_mean: Tensor | None, running_var: Tensor | None, eps: float):
        y, mean, var, rstd = bn_forward(x, weight, bias, running_mean, running_var, eps)
        ctx.save_for_backward(x, mean, rstd, weight)
        ctx.batch_stats = running_mean is None
        if not ctx.batch_stats:
            return y
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor | None, *_):
        if grad is None:
            return None, None, None, None, None, None
        x, mean, rstd, weight = ctx.saved_tensors
        dx, d_weight, d_bias = bn_backward(grad, x, mean, rstd, weight, ctx.batch_stats)
        return dx, param_grad(d_weight, weight), param_grad(d_bias, weight), None, None, None
