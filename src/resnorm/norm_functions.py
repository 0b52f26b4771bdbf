"""Fused autograd Functions behind the from-scratch norms: the fast path of `resnorm.norms`.

The readable composite code in `norms.py` (the reference path) lets autograd differentiate
`var_mean`, the scale/shift and the output map op by op: about ten passes over the activations
per layer, and a slow Welford kernel on CPU. Here each norm is one `torch.autograd.Function`
with the analytic backward, and each direction makes two passes over the activations:

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

Each direction of each norm is one "kernel" function in two versions: eager, tuned for
PyTorch's eager CPU ops (composed of separate ops, it still makes about twice the passes of a
fused kernel), and plain, which `torch.compile` fuses into one loop per pass (C++ on CPU,
Triton on CUDA), about as fast as PyTorch's own norm kernels. `set_kernel_mode` (or the
environment variable RESNORM_NORM_KERNELS) picks "auto" (default), "eager" or "compiled"
(always). In "auto", a training run says up front what it will do (`plan_kernels(total_steps=,
elements_per_call=)`, or the `planned_kernels` context manager) and the kernels are compiled
from the first call only when the run is long enough to pay the compile back; without a plan
a kernel is compiled once it has run COMPILE_AFTER_CALLS times on large activations.
Inside a model that is itself being compiled, the plain versions are traced into the model's
graph.

Statistics are float32 for float16/bfloat16 inputs (as PyTorch's kernels under autocast) and
the input's dtype otherwise; outputs and input gradients have the input's dtype and memory
format (channels_last in, channels_last out, with no hidden copies).
"""
from __future__ import annotations

import contextlib
import os
import types
import warnings
from typing import Callable, Iterator

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

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
    "BatchNormFunction",
    "GroupNormFunction",
    "BatchInstanceNormFunction",
]

_HALF = (torch.float16, torch.bfloat16)


def _upcast(t: Tensor) -> Tensor:
    """t in the statistics dtype: float32 for half types, unchanged otherwise."""
    return t.float() if t.dtype in _HALF else t


def _cpu_nchw(t: Tensor) -> bool:
    return t.device.type == "cpu" and t.is_contiguous()


# torch >= 2.3 / 2.4 spellings, with the older ones as fallbacks
_is_compiling = getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:
        return torch.is_autocast_cpu_enabled()


# --- kernel selection ------------------------------------------------------------------------

# "plain" runs the versions written for the compiler without compiling them (tests, debugging).
KERNEL_MODES = ("auto", "eager", "compiled", "plain")

# "auto" without a plan compiles a kernel once it has run COMPILE_AFTER_CALLS times on
# activations of at least COMPILE_MIN_NUMEL elements; with a plan (what training does) it
# decides once, from the run's work, before the first step.
#
# Why a plan (2026-12-02, 2-core AMD EPYC, torch 2.14.1, benchmarks/RESULTS.md): compiling is
# far dearer than what it saves on a CPU. One ResNet's GN kernels (forward + backward at three
# stage sizes, 6 compiles) took 38 s with a cold inductor cache and 7 s with a warm one
# (on-disk FX graph cache, on by default: $TORCHINDUCTOR_CACHE_DIR, else
# /tmp/torchinductor_$USER; dynamo still traces every kernel in every process), eval mode
# another 1.6 s / 0.9 s. The eager kernels cost within ~5 % of PyTorch's per step at 32x32 and
# 64x64, the compiled ones save a few ms per 64x64 step at most; the demo (32x32, 150 steps)
# lost 20 s of a 5 s run compiling after 500 calls. So a run compiles only when
# total_steps x elements_per_call (the first-stage activation, batch x 16 x H x W) reaches
# COMPILE_MIN_WORK: 2e10 is ~10,000 steps at 64x64 / batch 32 (tens of minutes of CPU
# training, where ~1 min of compiling is paid back), ~600 steps at 256x256 on a GPU.
COMPILE_MIN_NUMEL = 1 << 18
COMPILE_AFTER_CALLS = 2000
COMPILE_MIN_WORK = 2e10

_state = {"mode": os.environ.get("RESNORM_NORM_KERNELS", "auto"), "compile_failed": False,
          "plan": None}
if _state["mode"] not in KERNEL_MODES:
    raise ValueError(f"RESNORM_NORM_KERNELS must be one of {', '.join(KERNEL_MODES)}, "
                     f"got {_state['mode']!r}")


def plan_kernels(total_steps: int | None, elements_per_call: int | None) -> str | None:
    """Tell the "auto" kernels what the run ahead will do; returns the choice.

    `total_steps`: training steps (forward + backward) the run will take; `elements_per_call`:
    elements of its largest normalized activation (batch x channels x H x W of the first
    stage). The kernels are compiled from their first call on large activations when
    total_steps x elements_per_call >= COMPILE_MIN_WORK ("compiled"), else they stay eager for
    the whole run ("eager"). None for either argument removes the plan (the call-count rule
    applies again) and returns None. Explicit "eager"/"compiled" kernel modes override the plan.
    """
    if total_steps is None or elements_per_call is None:
        _state["plan"] = None
    else:
        work = float(total_steps) * float(elements_per_call)
        _state["plan"] = "compiled" if work >= COMPILE_MIN_WORK else "eager"
    for kernel in _KERNELS:
        kernel.large_calls = 0
    return _state["plan"]


@contextlib.contextmanager
def planned_kernels(total_steps: int | None, elements_per_call: int | None) -> Iterator[str | None]:
    """`plan_kernels` for the block (a training run); the previous plan is restored after."""
    old = _state["plan"]
    try:
        yield plan_kernels(total_steps, elements_per_call)
    finally:
        _state["plan"] = old


def set_kernel_mode(mode: str) -> str:
    """Choose the fast norms' kernels (one of KERNEL_MODES); returns the previous mode."""
    if mode not in KERNEL_MODES:
        raise ValueError(f"kernel mode must be one of {', '.join(KERNEL_MODES)}, got {mode!r}")
    old, _state["mode"] = _state["mode"], mode
    return old


def get_kernel_mode() -> str:
    return _state["mode"]


@contextlib.contextmanager
def kernel_mode(mode: str) -> Iterator[None]:
    """Use `mode` kernels inside the block."""
    old = set_kernel_mode(mode)
    try:
        yield
    finally:
        set_kernel_mode(old)


_KERNELS: list["_Kernel"] = []


class _Kernel:
    """One direction of one norm: an eager implementation, and a plain one to compile.

    The first argument is the activation that decides the choice. Compiled versions are kept
    per (C, H, W, dtype, device, layout, non-tensor arguments), each from its own copy of the
    plain function: torch._dynamo recompiles one function at most 8 times before it runs it
    eagerly, and a study can run IN, LN and GN at three sizes in one process. Within one key
    the batch dimension is dynamic, so every batch size shares a compiled kernel.
    """

    def __init__(self, eager: Callable, plain: Callable) -> None:
        self.eager, self.plain = eager, plain
        self._compiled: dict[tuple, Callable] = {}
        self.large_calls = 0  # calls on activations of >= COMPILE_MIN_NUMEL elements
        _KERNELS.append(self)

    def __call__(self, *args):
        mode = _state["mode"]
        if mode == "auto":
            # the common case first: a planned-eager run pays one dict lookup per call
            plan = _state["plan"]
            if plan == "eager" or _state["compile_failed"] or _is_compiling() \
                    or args[0].numel() < COMPILE_MIN_NUMEL:
                return self.plain(*args) if _is_compiling() else self.eager(*args)
            if plan is None:
                self.large_calls += 1
                if self.large_calls <= COMPILE_AFTER_CALLS:
                    return self.eager(*args)
            return self._call_compiled(args, strict=False)
        if _is_compiling():  # inside a compiled model: trace into its graph
            return self.plain(*args)
        if mode == "compiled":
            return self._call_compiled(args, strict=True)
        if mode == "plain":
            return self.plain(*args)
        return self.eager(*args)

    def _call_compiled(self, args: tuple, strict: bool):
        x = args[0]
        key = (x.shape[1:], x.dtype, x.device, x.is_contiguous(),
               *((a.dtype, a.dim()) if isinstance(a, Tensor) else a for a in args[1:]))
        for t in args:
            if isinstance(t, Tensor) and t.dim() in (2, 4):
                torch._dynamo.maybe_mark_dynamic(t, 0)
        try:
            compiled = self._compiled.get(key)
            if compiled is None:
                plain = types.FunctionType(self.plain.__code__.replace(), self.plain.__globals__,
                                           self.plain.__name__)
                # dynamic=False: static C, H, W give the fastest loops; only N is symbolic.
                compiled = self._compiled[key] = torch.compile(plain, dynamic=False)
            return compiled(*args)
        except Exception as err:  # no C++ compiler, no Triton, an unsupported platform, ...
            if strict:
                raise
            _state["compile_failed"] = True
            warnings.warn(f"resnorm: compiled norm kernels unavailable, using eager ones "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:200]})",
                          RuntimeWarning, stacklevel=3)
            return self.eager(*args)


# --- the four passes over the activations, eager and plain -----------------------------------

def _nc11(t: Tensor) -> Tensor:
    """Coefficients of shape (C,) or (N, C) as (1 or N, C, 1, 1), to broadcast over a map."""
    return t.view(1, -1, 1, 1) if t.dim() == 1 else t[:, :, None, None]


def _moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(sample, channel) sum(x) and sum(x^2) over (H, W): (N, C) each."""
    xs = _upcast(x)
    return xs.sum((2, 3)), (xs * xs).sum((2, 3))


def _moments_eager(x: Tensor) -> tuple[Tensor, Tensor]:
    xs = _upcast(x)
    if _cpu_nchw(xs):
        # Speed (2026-11, 2-core Xeon, (32,16,64,64) fp32): the vectorized norm kernel takes
        # 0.15 ms, as long as a plain sum; (x * x).sum() 0.45 ms. For channels_last it is the
        # other way round (0.72 ms vs 0.42 ms).
        return xs.sum((2, 3)), torch.linalg.vector_norm(xs, dim=(2, 3)).square()
    return _moments(xs)


def _map(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """y = x * scale + shift with (C,) or (N, C) coefficients, in x's dtype and layout."""
    return (_upcast(x) * _nc11(scale) + _nc11(shift)).to(x.dtype)


def _map_eager(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    xs, scale, shift = _upcast(x), _nc11(scale), _nc11(shift)
    if _cpu_nchw(xs):
        # Speed (2026-11, same machine): on CPU, addcmul with two operands broadcast along the
        # contiguous H*W axis falls back to a scalar loop (0.55 ms); a multiply and an in-place
        # add are each vectorized (0.44 ms together).
        y = torch.mul(xs, scale)
        y.add_(shift)
    else:
        y = torch.addcmul(shift, xs, scale)
    return y.to(x.dtype)


def _grad_sums(g: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(sample, channel) sum(g) and sum(g * x) over (H, W): (N, C) each."""
    gs, xs = _upcast(g), _upcast(x)
    return gs.sum((2, 3)), (gs * xs).sum((2, 3))


def _grad_sums_eager(g: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    gs, xs = _upcast(g), _upcast(x)
    # CPU autocast would run vecdot in bfloat16 (a backward normally runs outside autocast).
    if _cpu_nchw(gs) and _cpu_nchw(xs) and not _cpu_autocast_enabled():
        # Speed (2026-11, same machine): vecdot over flattened planes 0.46 ms vs
        # (g * x).sum() 0.67 ms; flatten is a view only for NCHW-contiguous tensors.
        return gs.sum((2, 3)), torch.linalg.vecdot(gs.flatten(2), xs.flatten(2))
    return _grad_sums(gs, xs)


def _input_grad(g: Tensor, x: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """dx = a * g + b * x + c with (C,) or (N, C) coefficients, in x's dtype and layout (x
    first: elementwise results take the layout of their first operand)."""
    return (_upcast(x) * _nc11(b) + _upcast(g) * _nc11(a) + _nc11(c)).to(x.dtype)


def _input_grad_eager(g: Tensor, x: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    gs, xs = _upcast(g), _upcast(x)
    # Allocate in x's layout: the incoming gradient's layout is whatever the layer above chose.
    dx = torch.empty_like(xs)
    if _cpu_nchw(xs):  # as in _map_eager: three vectorized passes beat two scalar ones on CPU
        torch.mul(gs, _nc11(a), out=dx)
        dx.add_(_nc11(c))
    else:
        torch.addcmul(_nc11(c), gs, _nc11(a), out=dx)
    dx.addcmul_(xs, _nc11(b))
    return dx.to(x.dtype)


# The two sets of passes the kernels below are built from.
_EAGER = (_moments_eager, _map_eager, _grad_sums_eager, _input_grad_eager)
_PLAIN = (_moments, _map, _grad_sums, _input_grad)


# --- statistics and backward arithmetic on (N, C)-sized tensors ------------------------------

def mean_var_from_sums(total: Tensor, total_sq: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Mean and biased variance from a sum, a sum of squares and the element count.

    One pass of sums rather than two passes or Welford's: `torch.var_mean` is not vectorized
    on CPU (5.3 ms for (32,16,64,64) fp32 where a sum takes 0.15 ms, 2026-11), the two sums
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


def _per_channel(t: Tensor, channels: int) -> Tensor:
    """(N, G) group values repeated for the channels of each group: (N, C)."""
    n, groups = t.shape
    if groups == channels:
        return t
    return t.unsqueeze(2).expand(n, groups, channels // groups).reshape(n, channels)


def _fold(mean: Tensor, rstd: Tensor, weight: Tensor | float | None,
          bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """(x - mean) * rstd * weight + bias as x * scale + shift."""
    scale = rstd if weight is None else rstd * weight
    shift = -mean * scale
    return scale, shift if bias is None else shift + bias


def _input_grad_coefficients(s_g: Tensor, s_gxhat: Tensor, mean: Tensor, rstd: Tensor,
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


def _weight_or_one(weight: Tensor | None) -> Tensor | float:
    return 1.0 if weight is None else weight


# --- BN --------------------------------------------------------------------------------------

def _bn_forward(x, weight, bias, running_mean, running_var, eps, passes):
    """y and the per-channel mean, var, rstd it was normalized with: the batch's own when
    `running_mean` is None, else the running statistics."""
    moments, affine_map = passes[0], passes[1]
    if running_mean is None:
        total, total_sq = moments(x)
        # A synchronized BN all-reduces these two per-channel sums and the count here.
        mean, var = mean_var_from_sums(total.sum(0), total_sq.sum(0),
                                       x.shape[0] * x.shape[2] * x.shape[3])
    else:
        mean, var = running_mean, running_var
    rstd = torch.rsqrt(var + eps)
    return (affine_map(x, *_fold(mean, rstd, weight, bias)), mean, var, rstd)


def _bn_backward(grad, x, mean, rstd, weight, batch_stats, passes):
    """dx, dweight = sum(g * x_hat), dbias = sum(g)."""
    grad_sums, input_grad = passes[2], passes[3]
    s_g, s_gx = grad_sums(grad, x)
    s_g = s_g.sum(0)
    s_gxhat = rstd * (s_gx.sum(0) - mean * s_g)
    w = _weight_or_one(weight)
    if batch_stats:
        # A synchronized BN all-reduces s_g and s_gxhat (and uses the global count) here,
        # for dx only: DDP already sums the parameter gradients.
        count = x.shape[0] * x.shape[2] * x.shape[3]
        a, b, c = _input_grad_coefficients(s_g, s_gxhat, mean, rstd, w, lambda t: t / count)
    else:  # constant statistics (eval): dx = g * rstd * w
        a = rstd * w
        b = c = torch.zeros_like(a)
    return input_grad(grad, x, a, b, c), s_gxhat, s_g


def _bn_forward_eager(x, weight, bias, running_mean, running_var, eps):
    return _bn_forward(x, weight, bias, running_mean, running_var, eps, _EAGER)


def _bn_forward_plain(x, weight, bias, running_mean, running_var, eps):
    return _bn_forward(x, weight, bias, running_mean, running_var, eps, _PLAIN)


def _bn_backward_eager(grad, x, mean, rstd, weight, batch_stats):
    return _bn_backward(grad, x, mean, rstd, weight, batch_stats, _EAGER)


def _bn_backward_plain(grad, x, mean, rstd, weight, batch_stats):
    return _bn_backward(grad, x, mean, rstd, weight, batch_stats, _PLAIN)


bn_forward = _Kernel(_bn_forward_eager, _bn_forward_plain)
bn_backward = _Kernel(_bn_backward_eager, _bn_backward_plain)


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
        return dx, _param_grad(d_weight, weight), _param_grad(d_bias, weight), None, None, None


def _param_grad(t: Tensor, param: Tensor | None) -> Tensor | None:
    return None if param is None else t.to(param.dtype)


# --- GN, and IN and LN as GN with C and 1 groups ---------------------------------------------

def _group_forward(x, weight, bias, num_groups, eps, passes):
    """y and the per-(sample, group) mean and rstd, shape (N, G)."""
    moments, affine_map = passes[0], passes[1]
    n, c, h, w = x.shape
    total, total_sq = moments(x)
    if num_groups != c:
        total = total.view(n, num_groups, -1).sum(-1)
        total_sq = total_sq.view(n, num_groups, -1).sum(-1)
    mean, var = mean_var_from_sums(total, total_sq, (c // num_groups) * h * w)
    rstd = torch.rsqrt(var + eps)
    scale, shift = _fold(_per_channel(mean, c), _per_channel(rstd, c), weight, bias)
    return affine_map(x, scale, shift), mean, rstd


def _group_backward(grad, x, mean, rstd, weight, passes):
    """dx, dweight = sum(g * x_hat), dbias = sum(g)."""
    grad_sums, input_grad = passes[2], passes[3]
    n, c, h, w = x.shape
    groups = mean.shape[1]
    count = (c // groups) * h * w

    def group_mean(t: Tensor) -> Tensor:
        if groups == c:
            return t / count
        return _per_channel(t.view(n, groups, -1).sum(-1) / count, c)

    mean_c, rstd_c = _per_channel(mean, c), _per_channel(rstd, c)
    s_g, s_gx = grad_sums(grad, x)
    s_gxhat = rstd_c * (s_gx - mean_c * s_g)
    a, b, cc = _input_grad_coefficients(s_g, s_gxhat, mean_c, rstd_c, _weight_or_one(weight),
                                        group_mean)
    return input_grad(grad, x, a, b, cc), s_gxhat.sum(0), s_g.sum(0)


# The eager GN kernels (IN and LN included). At the sizes of a CPU training run (a 32x32
# ResNet's activations are 0.1-0.5 M elements) every eager op costs microseconds of Python and
# dispatch whatever its size, and every pass over the activation evicts others from the cache,
# so these keep both counts low (the arithmetic is that of _group_forward/_group_backward):
#   - the statistics come straight from the (N, G, C // G * H * W) view of an NCHW x (its
#     groups are contiguous blocks), one sum and one vector_norm, with no (N, C) partial sums;
#   - (N, G) values broadcast over (N, G, C // G) views instead of being copied out to (N, C),
#     and the input gradient's per-group coefficients over the (N, G, C // G, H * W) view;
#   - sum(g * x) is taken from g * x written into the buffer that then receives dx.
# About 20 small ops per direction fewer than the shared code above; other layouts
# (channels_last) take the per-(sample, channel) passes of _EAGER.

def _group_forward_eager(x, weight, bias, num_groups, eps):
    xs = _upcast(x)
    n, c, h, w = xs.shape
    cpg = c // num_groups
    count = cpg * h * w
    nchw = _cpu_nchw(xs)
    if nchw:
        flat = xs.view(n, num_groups, count)
        total = flat.sum(-1)
        # vector_norm: the vectorized sum of squares (see _moments_eager)
        total_sq = torch.linalg.vector_norm(flat, dim=-1).square_()
    else:
        total, total_sq = _moments(xs)
        if num_groups != c:
            total = total.view(n, num_groups, cpg).sum(-1)
            total_sq = total_sq.view(n, num_groups, cpg).sum(-1)
    # mean_var_from_sums in fewer ops: var = (sum(x^2) - sum(x) * mean) / count, clamped at 0
    mean = total / count
    rstd = torch.addcmul(total_sq, total, mean, value=-1).clamp_min_(0).div_(count)
    rstd = rstd.add_(eps).rsqrt_()
    mean3, rstd3 = mean.view(n, num_groups, 1), rstd.view(n, num_groups, 1)
    if weight is None:
        scale = rstd3.expand(n, num_groups, cpg).contiguous()
    else:
        scale = rstd3 * weight.view(num_groups, cpg)               # (N, G, C // G)
    if bias is None:
        shift = torch.mul(mean3, scale).neg_()
    else:
        shift = torch.addcmul(bias.view(num_groups, cpg), mean3, scale, value=-1)
    if nchw:  # as _map_eager: a multiply and an in-place add, each vectorized
        y = torch.mul(xs, scale.view(n, c, 1, 1))
        y = y.add_(shift.view(n, c, 1, 1)).to(x.dtype)
    else:
        y = _map_eager(x, scale.view(n, c), shift.view(n, c))
    return y, mean, rstd


def _group_forward_plain(x, weight, bias, num_groups, eps):
    return _group_forward(x, weight, bias, num_groups, eps, _PLAIN)


def _group_backward_eager(grad, x, mean, rstd, weight):
    n, c, h, w = x.shape
    groups = mean.shape[1]
    cpg = c // groups
    count = cpg * h * w
    gs, xs = _upcast(grad), _upcast(x)
    # CPU autocast would run a bfloat16 vecdot (see _grad_sums_eager); mul and sum are safe
    nchw = _cpu_nchw(gs) and _cpu_nchw(xs)
    if nchw:
        dx = torch.empty_like(xs)
        s_g = gs.sum((2, 3))
        s_gx = torch.mul(gs, xs, out=dx).sum((2, 3))              # dx is overwritten below
    else:
        s_g, s_gx = _grad_sums_eager(grad, x)                      # (N, C)
    s_g3 = s_g.view(n, groups, cpg)
    mean3, rstd3 = mean.view(n, groups, 1), rstd.view(n, groups, 1)
    s_gxhat = torch.addcmul(s_gx.view(n, groups, cpg), mean3, s_g3, value=-1).mul_(rstd3)
    # dx = rstd * (u - mean(u) - x_hat * mean(u * x_hat)), u = g * w, means over the group,
    # = a * g + b * x + cc: a = rstd * w per channel; with the group sums of a * s_g
    # (= rstd * sum(u)) and of a * s_gxhat (= rstd * sum(u * x_hat)),
    # b = -rstd^2 mean(u * x_hat) and cc = -b * mean - rstd * mean(u) per (sample, group).
    a = rstd3.expand(n, groups, cpg) if weight is None else rstd3 * weight.view(groups, cpg)
    b = (a * s_gxhat).sum(-1, keepdim=True).mul_(rstd3).div_(-count)    # (N, G, 1)
    cc = torch.addcmul((a * s_g3).sum(-1, keepdim=True).div_(count), b, mean3).neg_()
    if nchw:
        view = (n, groups, cpg, h * w)
        out = dx.view(view)
        torch.mul(gs.view(view), a.unsqueeze(-1), out=out)
        out.add_(cc.unsqueeze(-1))
        out.addcmul_(xs.view(view), b.unsqueeze(-1))
        dx = dx.to(x.dtype)
    else:
        dx = _input_grad_eager(grad, x, a.reshape(n, c), _per_channel(b.view(n, groups), c),
                               _per_channel(cc.view(n, groups), c))
    return dx, s_gxhat.sum(0).view(c), s_g.sum(0)


def _group_backward_plain(grad, x, mean, rstd, weight):
    return _group_backward(grad, x, mean, rstd, weight, _PLAIN)


group_forward = _Kernel(_group_forward_eager, _group_forward_plain)
group_backward = _Kernel(_group_backward_eager, _group_backward_plain)


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
        return dx, _param_grad(d_weight, weight), _param_grad(d_bias, weight), None, None


# --- BIN -------------------------------------------------------------------------------------

def _bin_forward(x, gate, weight, bias, running_mean, running_var, eps, passes):
    """y; the BN mean, var, rstd (batch, or running when given), shape (C,); the IN mean and
    rstd, shape (N, C). One pass of moments serves both statistics."""
    moments, affine_map = passes[0], passes[1]
    n, _, h, w = x.shape
    total, total_sq = moments(x)
    in_mean, in_var = mean_var_from_sums(total, total_sq, h * w)
    in_rstd = torch.rsqrt(in_var + eps)
    if running_mean is None:
        # A synchronized BIN all-reduces these two per-channel sums and the count here.
        bn_mean, bn_var = mean_var_from_sums(total.sum(0), total_sq.sum(0), n * h * w)
    else:
        bn_mean, bn_var = running_mean, running_var
    bn_rstd = torch.rsqrt(bn_var + eps)
    # gate * (x - m1) * r1 + (1 - gate) * (x - m2) * r2 is one affine map of x per
    # (sample, channel): mix the two scales and shifts, then fold in the affine.
    bn_scale, bn_shift = _fold(bn_mean, bn_rstd, gate, None)
    in_scale, in_shift = _fold(in_mean, in_rstd, 1 - gate, None)
    scale, shift = bn_scale + in_scale, bn_shift + in_shift
    if weight is not None:
        scale, shift = scale * weight, shift * weight
    if bias is not None:
        shift = shift + bias
    return affine_map(x, scale, shift), bn_mean, bn_var, bn_rstd, in_mean, in_rstd


def _bin_backward(grad, x, gate, weight, bn_mean, bn_rstd, in_mean, in_rstd, batch_stats,
                  passes):
    """dx, dgate, dweight, dbias."""
    grad_sums, input_grad = passes[2], passes[3]
    n, _, h, w_ = x.shape
    w = _weight_or_one(weight)
    s_g, s_gx = grad_sums(grad, x)                        # (N, C)
    s_gxhat_bn = bn_rstd * (s_gx - bn_mean * s_g)         # sum_hw(g * x_hat_BN)
    s_gxhat_in = in_rstd * (s_gx - in_mean * s_g)         # sum_hw(g * x_hat_IN)
    # the IN term; then the BN term, whose statistics depend on x only when they are the batch's
    spatial = h * w_
    a, b, c = _input_grad_coefficients(s_g, s_gxhat_in, in_mean, in_rstd, w * (1 - gate),
                                       lambda t: t / spatial)
    if batch_stats:
        count = n * spatial
        a_bn, b_bn, c_bn = _input_grad_coefficients(s_g.sum(0), s_gxhat_bn.sum(0), bn_mean,
                                                    bn_rstd, w * gate, lambda t: t / count)
        b, c = b + b_bn, c + c_bn
    else:
        a_bn = bn_rstd * w * gate
    dx = input_grad(grad, x, a + a_bn, b, c)
    d_gate = (w * (s_gxhat_bn - s_gxhat_in)).sum(0)
    d_weight = (gate * s_gxhat_bn + (1 - gate) * s_gxhat_in).sum(0)
    return dx, d_gate, d_weight, s_g.sum(0)


def _bin_forward_eager(x, gate, weight, bias, running_mean, running_var, eps):
    return _bin_forward(x, gate, weight, bias, running_mean, running_var, eps, _EAGER)


def _bin_forward_plain(x, gate, weight, bias, running_mean, running_var, eps):
    return _bin_forward(x, gate, weight, bias, running_mean, running_var, eps, _PLAIN)


def _bin_backward_eager(grad, x, gate, weight, bn_mean, bn_rstd, in_mean, in_rstd, batch_stats):
    return _bin_backward(grad, x, gate, weight, bn_mean, bn_rstd, in_mean, in_rstd,
                         batch_stats, _EAGER)


def _bin_backward_plain(grad, x, gate, weight, bn_mean, bn_rstd, in_mean, in_rstd, batch_stats):
    return _bin_backward(grad, x, gate, weight, bn_mean, bn_rstd, in_mean, in_rstd,
                         batch_stats, _PLAIN)


bin_forward = _Kernel(_bin_forward_eager, _bin_forward_plain)
bin_backward = _Kernel(_bin_backward_eager, _bin_backward_plain)


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
        return (dx, d_gate.to(gate.dtype), _param_grad(d_weight, weight),
                _param_grad(d_bias, weight), None, None, None)
