"""Kernel selection: each direction of each norm runs as eager ops, as its plain version, or
compiled (one `torch.compile` per activation shape), by mode and by the run's plan.

`set_kernel_mode` (or the environment variable RESNORM_NORM_KERNELS) picks "auto" (default),
"eager", "compiled" (always) or "plain" (the versions written for the compiler, run
uncompiled: tests, debugging). In "auto", a training run says up front what it will do
(`plan_kernels(total_steps=, elements_per_call=)`, or the `planned_kernels` context manager)
and the kernels are compiled from the first call only when the run is long enough to pay the
compile back; without a plan a kernel is compiled once it has run COMPILE_AFTER_CALLS times
on large activations. Inside a model that is itself being compiled, the plain versions are
traced into the model's graph.
"""
from __future__ import annotations

import contextlib
import os
import types
import warnings
from typing import Callable, Iterator

import torch
from torch import Tensor

from resnorm.norm_functions.passes import EAGER, PLAIN

__all__ = ["KERNEL_MODES", "set_kernel_mode", "get_kernel_mode", "kernel_mode", "plan_kernels",
           "planned_kernels", "Kernel"]

# torch >= 2.3 spelling, with the older one as a fallback
_is_compiling = getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling

KERNEL_MODES = ("auto", "eager", "compiled", "plain")

# "auto" without a plan compiles a kernel once it has run COMPILE_AFTER_CALLS times on
# activations of at least COMPILE_MIN_NUMEL elements; with a plan (what training does) it
# decides once, from the run's work, before the first step: compiled when total_steps x
# elements_per_call (the first-stage activation, batch x 16 x H x W) reaches
# COMPILE_MIN_WORK, ~10,000 steps at 64x64 / batch 32 on a CPU, ~600 at 256x256 on a GPU.
# Why a plan, and these numbers: benchmarks/RESULTS.md, "Speed where users feel it".
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


_KERNELS: list["Kernel"] = []


def _bind(direction: Callable, passes) -> Callable:
    """direction(*args, passes) as a function of the kernel's arguments alone."""
    def kernel(*args):
        return direction(*args, passes)

    kernel.__name__ = kernel.__qualname__ = direction.__name__.lstrip("_")
    return kernel


def _clone(fn: Callable) -> Callable:
    """`fn` with a code object of its own: dynamo keeps its compiled versions per code object."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__,
                              fn.__defaults__, fn.__closure__)


class Kernel:
    """One direction of one norm, built from `direction(*args, passes)`: the eager version
    runs it with the EAGER passes (or is `eager`, a version tuned further), the plain version
    with the PLAIN passes, and the compiled versions are `torch.compile` of the plain one.

    The first argument is the activation that decides the choice. Compiled versions are kept
    per (C, H, W, dtype, device, layout, non-tensor arguments), each from its own copy of the
    plain function: torch._dynamo recompiles one function at most 8 times before it runs it
    eagerly, and a study can run IN, LN and GN at three sizes in one process. Within one key
    the batch dimension is dynamic, so every batch size shares a compiled kernel.
    """

    def __init__(self, direction: Callable, eager: Callable | None = None) -> None:
        self.eager = eager or _bind(direction, EAGER)
        self.plain = _bind(direction, PLAIN)
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
                # dynamic=False: static C, H, W give the fastest loops; only N is symbolic.
                compiled = self._compiled[key] = torch.compile(_clone(self.plain), dynamic=False)
            return compiled(*args)
        except Exception as err:  # no C++ compiler, no Triton, an unsupported platform, ...
            if strict:
                raise
            _state["compile_failed"] = True
            warnings.warn(f"resnorm: compiled norm kernels unavailable, using eager ones "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:200]})",
                          RuntimeWarning, stacklevel=3)
            return self.eager(*args)
