"""GN's fused autograd Function, and IN and LN as GN with C and 1 groups: statistics per
sample over groups of channels.

The group arithmetic works on (N, G, C // G) views of the per-(sample, channel) sums, so
(N, G) statistics broadcast over the channels of their group without being copied out to
(N, C). The eager kernels take a shorter route on NCHW CPU tensors, whose groups are
contiguous blocks: statistics straight from the (N, G, C // G * H * W) view, the input
gradient over the (N, G, C // G, H * W) view, and sum(g * x) from g * x written into the
buffer that then receives dx — about 20 small ops per direction fewer (benchmarks/RESULTS.md,
"Goal 2, eager GN/LN/IN kernels with fewer ops").
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from resnorm.norm_functions.kernels import Kernel
from resnorm.norm_functions.math import param_grad, per_channel, upcast
from resnorm.norm_functions.passes import EAGER, cpu_nchw


def group_mean_rstd(total: Tensor, total_sq: Tensor, count: int, eps: float
                    ) -> tuple[Tensor, Tensor]:
    """Per-(sample, group) mean and 1/std from the sums over `count` elements: the variance
    of `mean_var_from_sums`, (sum(x^2) - sum(x) * mean) / count clamped at 0, in fewer ops."""
    mean = total / count
    var = torch.addcmul(total_sq, total, mean, value=-1).clamp_min_(0).div_(count)
    return mean, var.add_(eps).rsqrt_()


def group_fold(mean: Tensor, rstd: Tensor, weight: Tensor | None, bias: Tensor | None,
               channels: int) -> tuple[Tensor, Tensor]:
    """`fold` for (N, G) statistics and a per-channel affine, in two ops on (N, G, C // G)
    views: scale and shift of shape (N, G, C // G), contiguous."""
    n, groups = mean.shape
    per_group = channels // groups
    mean3, rstd3 = mean.view(n, groups, 1), rstd.view(n, groups, 1)
    if weight is None:
        scale = rstd3.expand(n, groups, per_group).contiguous()
    else:
        scale = rstd3 * weight.view(groups, per_group)
    if bias is None:
        shift = torch.mul(mean3, scale).neg_()
    else:
        shift = torch.addcmul(bias.view(groups, per_group), mean3, scale, value=-1)
    return scale, shift


def group_grad_coefficients(s_g: Tensor, s_gx: Tensor, mean: Tensor, rstd: Tensor,
                            weight: Tensor | None, spatial: int
                            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """a (N, G, C // G), b and c (N, G, 1) of dx = a * g + b * x + c, and sum(g * x_hat)
    (N, G, C // G), from the per-(sample, channel) sums s_g = sum(g), s_gx = sum(g * x).

    dx = rstd * (u - mean(u) - x_hat * mean(u * x_hat)), u = g * w, means over the group:
    a = rstd * w per channel; with the group sums of a * s_g (= rstd * sum(u)) and of
    a * s_gxhat (= rstd * sum(u * x_hat)), b = -rstd^2 mean(u * x_hat) and
    c = -b * mean - rstd * mean(u) per (sample, group).
    """
    n, c = s_g.shape
    groups = mean.shape[1]
    count = (c // groups) * spatial
    s_g3 = s_g.view(n, groups, -1)
    mean3, rstd3 = mean.view(n, groups, 1), rstd.view(n, groups, 1)
    s_gxhat = torch.addcmul(s_gx.view(n, groups, -1), mean3, s_g3, value=-1).mul_(rstd3)
    a = rstd3.expand_as(s_g3) if weight is None else rstd3 * weight.view(groups, -1)
    b = (a * s_gxhat).sum(-1, keepdim=True).mul_(rstd3).div_(-count)
    cc = torch.addcmul((a * s_g3).sum(-1, keepdim=True).div_(count), b, mean3).neg_()
    return a, b, cc, s_gxhat


def _group_forward(x, weight, bias, num_groups, eps, passes):
    """y and the per-(sample, group) mean and rstd, shape (N, G)."""
    n, c, h, w = x.shape
    total, total_sq = passes.moments(x)
    if num_groups != c:
        total = total.view(n, num_groups, -1).sum(-1)
        total_sq = total_sq.view(n, num_groups, -1).sum(-1)
    mean, rstd = group_mean_rstd(total, total_sq, (c // num_groups) * h * w, eps)
    scale, shift = group_fold(mean, rstd, weight, bias, c)
    return passes.map(x, scale.view(n, c), shift.view(n, c)), mean, rstd


def _group_backward(grad, x, mean, rstd, weight, passes):
    """dx, dweight = sum(g * x_hat), dbias = sum(g)."""
    n, c, h, w = x.shape
    s_g, s_gx = passes.grad_sums(grad, x)                                # (N, C)
    a, b, cc, s_gxhat = group_grad_coefficients(s_g, s_gx, mean, rstd, weight, h * w)
    dx = passes.input_grad(grad, x, a.reshape(n, c), per_channel(b.view(n, -1), c),
                           per_channel(cc.view(n, -1), c))
    return dx, s_gxhat.sum(0).view(c), s_g.sum(0)


def _group_forward_eager(x, weight, bias, num_groups, eps):
    if not cpu_nchw(x):
        return _group_forward(x, weight, bias, num_groups, eps, EAGER)
    xs = upcast(x)
    n, c = xs.shape[:2]
    flat = xs.view(n, num_groups, -1)
    # vector_norm: the vectorized sum of squares (see passes.moments_eager)
    mean, rstd = group_mean_rstd(flat.sum(-1), torch.linalg.vector_norm(flat, dim=-1).square_(),
                                 flat.shape[-1], eps)
    scale, shift = group_fold(mean, rstd, weight, bias, c)
    # passes.map_eager's NCHW route, without its layout checks (a few µs per call)
    y = torch.mul(xs, scale.view(n, c, 1, 1)).add_(shift.view(n, c, 1, 1))
    return y.to(x.dtype), mean, rstd


def _group_backward_eager(grad, x, mean, rstd, weight):
    if not (cpu_nchw(grad) and cpu_nchw(x)):
        return _group_backward(grad, x, mean, rstd, weight, EAGER)
    gs, xs = upcast(grad), upcast(x)
    n, c, h, w = xs.shape
    groups = mean.shape[1]
    # sum(g * x) from g * x written into the buffer that receives dx below (one 4-D
    # temporary fewer); a mul and a sum, unlike vecdot, are also safe under CPU autocast
    dx = torch.empty_like(xs)
    s_g = gs.sum((2, 3))
    s_gx = torch.mul(gs, xs, out=dx).sum((2, 3))
    a, b, cc, s_gxhat = group_grad_coefficients(s_g, s_gx, mean, rstd, weight, h * w)
    view = (n, groups, c // groups, h * w)
    out = dx.view(view)
    torch.mul(gs.view(view), a.unsqueeze(-1), out=out)
    out.add_(cc.unsqueeze(-1))
    out.addcmul_(xs.view(view), b.unsqueeze(-1))
    return dx.to(x.dtype), s_gxhat.sum(0).view(c), s_g.sum(0)


group_forward = Kernel(_group_forward, eager=_group_forward_eager)
group_backward = Kernel(_group_backward, eager=_group_backward_eager)


class GroupNormFunction(torch.autograd.Function):
    """Per-sample normalization over groups of channels (GN; IN with G = C; LN with G = 1),
    then a per-channel affine."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, weight: Tensor | None, bias: Tensor | None,
                num_groups: int, eps: float) -> Tensor:
        y, mean, rstd = group_forward(x, weight, bias, num_groups, eps)
        ctx.save_for_backward(x, mean, rstd, weight)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor):
        x, mean, rstd, weight = ctx.saved_tensors
        dx, d_weight, d_bias = group_backward(grad, x, mean, rstd, weight)
        return dx, param_grad(d_weight, weight), param_grad(d_bias, weight), None, None
