"""BIN's fused autograd Function: the gated sum of a BN and an IN normalization, one pass of
moments serving both statistics."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from resnorm.norm_functions.kernels import Kernel
from resnorm.norm_functions.math import (bin_mix, input_grad_coefficients, mean_var_from_sums,
                                         param_grad, weight_or_one)


def _bin_forward(x, gate, weight, bias, running_mean, running_var, eps, passes):
    """y; the BN mean, var, rstd (batch, or running when given), shape (C,); the IN mean and
    rstd, shape (N, C)."""
    n, _, h, w = x.shape
    total, total_sq = passes.moments(x)
    in_mean, in_var = mean_var_from_sums(total, total_sq, h * w)
    in_rstd = torch.rsqrt(in_var + eps)
    if running_mean is None:
        # A synchronized BIN all-reduces these two per-channel sums and the count here.
        bn_mean, bn_var = mean_var_from_sums(total.sum(0), total_sq.sum(0), n * h * w)
    else:
        bn_mean, bn_var = running_mean, running_var
    bn_rstd = torch.rsqrt(bn_var + eps)
    scale, shift = bin_mix(gate, bn_mean, bn_rstd, in_mean, in_rstd, weight, bias)
    return passes.map(x, scale, shift), bn_mean, bn_var, bn_rstd, in_mean, in_rstd


def _bin_backward(grad, x, gate, weight, bn_mean, bn_rstd, in_mean, in_rstd, batch_stats,
                  passes):
    """dx, dgate, dweight, dbias."""
    n, _, h, w_ = x.shape
    w = weight_or_one(weight)
    s_g, s_gx = passes.grad_sums(grad, x)                 # (N, C)
    s_gxhat_bn = bn_rstd * (s_gx - bn_mean * s_g)         # sum_hw(g * x_hat_BN)
    s_gxhat_in = in_rstd * (s_gx - in_mean * s_g)         # sum_hw(g * x_hat_IN)
    # the IN term; then the BN term, whose statistics depend on x only when they are the batch's
    spatial = h * w_
    a, b, c = input_grad_coefficients(s_g, s_gxhat_in, in_mean, in_rstd, w * (1 - gate),
                                      lambda t: t / spatial)
    if batch_stats:
        count = n * spatial
        a_bn, b_bn, c_bn = input_grad_coefficients(s_g.sum(0), s_gxhat_bn.sum(0), bn_mean,
                                                   bn_rstd, w * gate, lambda t: t / count)
        b, c = b + b_bn, c + c_bn
    else:
        a_bn = bn_rstd * w * gate
    dx = passes.input_grad(grad, x, a + a_bn, b, c)
    d_gate = (w * (s_gxhat_bn - s_gxhat_in)).sum(0)
    d_weight = (gate * s_gxhat_bn + (1 - gate) * s_gxhat_in).sum(0)
    return dx, d_gate, d_weight, s_g.sum(0)


bin_forward = Kernel(_bin_forward)
bin_backward = Kernel(_bin_backward)


class BatchInstanceNormFunction(torch.autograd.Function):
    """BIN: y = w * (gate * x_hat_BN + (1 - gate) * x_hat_IN) + b.

    The BN branch as in BatchNormFunction: with `running_mean` and `running_var` None it uses
    the batch's statistics and (y, bn_mean, bn_var) is returned, else the running statistics
    and y alone. The IN branch always uses the instance statistics.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, gate: Tensor, weight: Tensor | None,
                bias: Tensor | None, running_mean: Tensor | None, running_var: Tensor | None,
                eps: float):
        y, bn_mean, bn_var, bn_rstd, in_mean, in_rstd = bin_forward(
            x, gate, weight, bias, running_mean, running_var, eps)
        ctx.save_for_backward(x, gate, weight, bn_mean, bn_rstd, in_mean, in_rstd)
        ctx.batch_stats = running_mean is None
        if not ctx.batch_stats:
            return y
        ctx.mark_non_differentiable(bn_mean, bn_var)
        ctx.set_materialize_grads(False)
        return y, bn_mean, bn_var

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor | None, *_):
        if grad is None:
            return None, None, None, None, None, None, None
        x, gate, weight, bn_mean, bn_rstd, in_mean, in_rstd = ctx.saved_tensors
        dx, d_gate, d_weight, d_bias = bin_backward(grad, x, gate, weight, bn_mean, bn_rstd,
                                                    in_mean, in_rstd, ctx.batch_stats)
        return (dx, d_gate.to(gate.dtype), param_grad(d_weight, weight),
                param_grad(d_bias, weight), None, None, None)
