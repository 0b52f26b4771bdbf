"""The four passes over the activations every kernel is built from, in two sets:

    moments     per-(sample, channel) sum(x) and sum(x^2) over (H, W)
    map         y = x * scale + shift, with (C,) or (N, C) coefficients
    grad_sums   per-(sample, channel) sum(g) and sum(g * x) over (H, W)
    input_grad  dx = a * g + b * x + c, with (C,) or (N, C) coefficients

PLAIN is written for `torch.compile`, which fuses each pass into one loop; EAGER is tuned for
PyTorch's eager CPU ops (which ops are vectorized for which layout: benchmarks/RESULTS.md,
"Measurements behind the eager kernels") and computes the same values.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from resnorm.norm_functions.math import upcast


class Passes(NamedTuple):
    moments: Callable[[Tensor], tuple[Tensor, Tensor]]
    map: Callable[[Tensor, Tensor, Tensor], Tensor]
    grad_sums: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    input_grad: Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def cpu_nchw(t: Tensor) -> bool:
    return t.device.type == "cpu" and t.is_contiguous()


def cpu_autocast_enabled() -> bool:
    try:  # torch >= 2.4, with the older spelling as a fallback
        return torch.is_autocast_enabled("cpu")
    except TypeError:
        return torch.is_autocast_cpu_enabled()


def nc11(t: Tensor) -> Tensor:
    """Coefficients of shape (C,) or (N, C) as (1 or N, C, 1, 1), to broadcast over a map
    (reshape: a view of the (N, C) tensors the kernels make, in half the time of t[..., None])."""
    return t.view(1, -1, 1, 1) if t.dim() == 1 else t.reshape(t.shape[0], t.shape[1], 1, 1)


# --- plain -----------------------------------------------------------------------------------

def moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(sample, channel) sum(x) and sum(x^2) over (H, W): (N, C) each."""
    xs = upcast(x)
    return xs.sum((2, 3)), (xs * xs).sum((2, 3))


def affine_map(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """y = x * scale + shift with (C,) or (N, C) coefficients, in x's dtype and layout."""
    return (upcast(x) * nc11(scale) + nc11(shift)).to(x.dtype)


def grad_sums(g: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(sample, channel) sum(g) and sum(g * x) over (H, W): (N, C) each."""
    gs, xs = upcast(g), upcast(x)
    return gs.sum((2, 3)), (gs * xs).sum((2, 3))


def input_grad(g: Tensor, x: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """dx = a * g + b * x + c with (C,) or (N, C) coefficients, in x's dtype and layout (x
    first: elementwise results take the layout of their first operand)."""
    return (upcast(x) * nc11(b) + upcast(g) * nc11(a) + nc11(c)).to(x.dtype)


PLAIN = Passes(moments, affine_map, grad_sums, input_grad)


# --- eager -----------------------------------------------------------------------------------

def moments_eager(x: Tensor) -> tuple[Tensor, Tensor]:
    xs = upcast(x)
    if cpu_nchw(xs):
        # NCHW: the vectorized norm kernel sums squares faster than (x * x).sum();
        # channels_last the other way round.
        return xs.sum((2, 3)), torch.linalg.vector_norm(xs, dim=(2, 3)).square()
    return moments(xs)


def map_eager(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    xs, scale, shift = upcast(x), nc11(scale), nc11(shift)
    if cpu_nchw(xs):
        # On CPU, addcmul with two operands broadcast along the contiguous H*W axis falls back
        # to a scalar loop; a multiply and an in-place add are each vectorized.
        y = torch.mul(xs, scale)
        y.add_(shift)
    else:
        y = torch.addcmul(shift, xs, scale)
    return y.to(x.dtype)


def grad_sums_eager(g: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    gs, xs = upcast(g), upcast(x)
    # CPU autocast would run vecdot in bfloat16 (a backward normally runs outside autocast).
    if cpu_nchw(gs) and cpu_nchw(xs) and not cpu_autocast_enabled():
        # vecdot over flattened planes beats (g * x).sum(); flatten is a view only for
        # NCHW-contiguous tensors.
        return gs.sum((2, 3)), torch.linalg.vecdot(gs.flatten(2), xs.flatten(2))
    return grad_sums(gs, xs)


def input_grad_eager(g: Tensor, x: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    gs, xs = upcast(g), upcast(x)
    # Allocate in x's layout: the incoming gradient's layout is whatever the layer above chose.
    dx = torch.empty_like(xs)
    if cpu_nchw(xs):  # as in map_eager: three vectorized passes beat two scalar ones on CPU
        torch.mul(gs, nc11(a), out=dx)
        dx.add_(nc11(c))
    else:
        torch.addcmul(nc11(c), gs, nc11(a), out=dx)
    dx.addcmul_(xs, nc11(b))
    return dx.to(x.dtype)


EAGER = Passes(moments_eager, map_eager, grad_sums_eager, input_grad_eager)
