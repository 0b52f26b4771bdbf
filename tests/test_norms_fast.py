"""The fast path of the norms (fused autograd Functions) against the reference path and PyTorch.

test_norms.py checks the layers' default path against PyTorch; here the fast path is checked
against the readable reference path (and BIN's gate gradient against PyTorch's BN and IN), the
Functions alone by gradcheck, and half precision, channels_last and torch.compile. Float64
comparisons are at 1e-10 (a failure is a bug). Each kernel set is checked: "eager" (tuned for
eager CPU ops), "plain" (the code the compiler sees, run uncompiled) and, in slow tests,
"compiled". Speed is measured by benchmarks/norm_speed.py, never here.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from resnorm import norm_functions as nf
from resnorm.model import ResNet
from resnorm.norm_functions import (
    BatchInstanceNormFunction,
    BatchNormFunction,
    GroupNormFunction,
    kernel_mode,
)
from resnorm.norm_functions import group, kernels
from resnorm.norms import (
    BatchInstanceNorm2d,
    BatchNorm2d,
    GroupNorm2d,
    InstanceNorm2d,
    LayerNorm2d,
    clamp_gates_,
    make_norm,
    use_reference,
)

TOL = dict(rtol=1e-10, atol=1e-10)
DT = torch.float64
C = 8
FACTORIES = {
    "bn": lambda: BatchNorm2d(C),
    "bn_momentum_none": lambda: BatchNorm2d(C, momentum=None),
    "bn_no_running_stats": lambda: BatchNorm2d(C, track_running_stats=False),
    "bn_no_affine": lambda: BatchNorm2d(C, affine=False),
    "in": lambda: InstanceNorm2d(C),
    "in_no_affine": lambda: InstanceNorm2d(C, affine=False),
    "ln": lambda: LayerNorm2d(C),
    "gn": lambda: GroupNorm2d(4, C),
    "gn_no_affine": lambda: GroupNorm2d(2, C, affine=False),
    "bin": lambda: BatchInstanceNorm2d(C),
}
KERNELS = ["eager", "plain"]


def _input(shape, seed=0, channels_last=False, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    x = torch.randn(shape, generator=g, dtype=DT)
    # an offset and scale per channel and per sample, so wrong reduction axes cannot pass
    x = x * torch.rand(1, c, 1, 1, generator=g, dtype=DT).mul(3).add(0.5)
    x = x + torch.randn(n, c, 1, 1, generator=g, dtype=DT)
    x = x + torch.randn(1, c, 1, 1, generator=g, dtype=DT) * 2
    x = x.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(True)


def _randomize(layer, seed=1):
    """Random affine parameters and, for BIN, gates spread over [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name == "gate":
                p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype))
                p[0], p[1] = 0.0, 1.0
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


def _pair(kind):
    """The same layer twice: fast path and reference path, float64."""
    fast = _randomize(FACTORIES[kind]().to(DT))
    ref = use_reference(_randomize(FACTORIES[kind]().to(DT)))
    return fast, ref


def _step(layer, x, seed):
    """Output and gradients w.r.t. the input and every parameter for a random upstream."""
    out = layer(x)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=DT)
    params = [p for p in layer.parameters()]
    grads = torch.autograd.grad(out, [x, *params], upstream.to(out.dtype))
    return out, grads


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("kind", list(FACTORIES))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_fast_path_equals_reference_over_training_steps_and_eval(kind, kernels, channels_last):
    fast, ref = _pair(kind)
    shape = (3, C, 5, 4)
    with kernel_mode(kernels):
        # the running statistics evolve over three steps, then eval uses them
        for seed, mode in enumerate((True, True, True, False, False)):
            fast.train(mode), ref.train(mode)
            x = _input(shape, seed=seed, channels_last=channels_last)
            x_ref = x.detach().clone().requires_grad_(True)
            out, grads = _step(fast, x, seed)
            out_ref, grads_ref = _step(ref, x_ref, seed)
            torch.testing.assert_close(out, out_ref, **TOL)
            for a, b in zip(grads, grads_ref):
                torch.testing.assert_close(a, b, **TOL)
            for (name, a), (_, b) in zip(fast.named_buffers(), ref.named_buffers()):
                torch.testing.assert_close(a, b, **TOL, msg=name)
            if channels_last:
                assert out.is_contiguous(memory_format=torch.channels_last)
                assert grads[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kernels", KERNELS)
def test_bin_gate_gradient_matches_torch_composite(kernels):
    """d loss / d gate against PyTorch's own BN and IN mixed by the gate."""
    layer = _randomize(BatchInstanceNorm2d(C).to(DT))
    x = _input((4, C, 6, 5))
    with kernel_mode(kernels):
        out, grads = _step(layer, x, seed=3)
    gate = layer.gate.detach().clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    rho = gate.view(1, -1, 1, 1)
    x_bn, x_in = F.batch_norm(x_ref, None, None, training=True), F.instance_norm(x_ref)
    mixed = rho * x_bn + (1 - rho) * x_in
    ref = mixed * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    upstream = torch.randn(ref.shape, generator=torch.Generator().manual_seed(3), dtype=DT)
    ref_grads = torch.autograd.grad(ref, [x_ref, gate], upstream)
    torch.testing.assert_close(out, ref, **TOL)
    names = [name for name, _ in layer.named_parameters()]
    torch.testing.assert_close(grads[0], ref_grads[0], **TOL)
    torch.testing.assert_close(grads[1 + names.index("gate")], ref_grads[1], **TOL)


# --- the Functions on their own ------------------------------------------------------------------

def _params(seed=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(C, generator=g, dtype=DT).requires_grad_(True) for _ in range(2)]


@pytest.mark.parametrize("kernels", KERNELS)
def test_gradcheck_batch_norm_function(kernels):
    x = _input((3, C, 3, 2))
    weight, bias = _params()
    running_mean = torch.randn(C, dtype=DT)
    running_var = torch.rand(C, dtype=DT) + 0.5
    with kernel_mode(kernels):
        assert torch.autograd.gradcheck(
            lambda x, w, b: BatchNormFunction.apply(x, w, b, None, None, 1e-5)[0],
            (x, weight, bias))
        assert torch.autograd.gradcheck(
            lambda x, w, b: BatchNormFunction.apply(x, w, b, running_mean, running_var, 1e-5),
            (x, weight, bias))
        assert torch.autograd.gradcheck(  # no affine
            lambda x: BatchNormFunction.apply(x, None, None, None, None, 1e-5)[0], (x,))


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("groups", [1, 2, C])
def test_gradcheck_group_norm_function(kernels, groups):
    x = _input((2, C, 3, 2))
    weight, bias = _params()
    with kernel_mode(kernels):
        assert torch.autograd.gradcheck(
            lambda x, w, b: GroupNormFunction.apply(x, w, b, groups, 1e-5), (x, weight, bias))


@pytest.mark.parametrize("kernels", KERNELS)
def test_gradcheck_batch_instance_norm_function(kernels):
    x = _input((3, C, 3, 2))
    weight, bias = _params()
    gate = torch.rand(C, dtype=DT, generator=torch.Generator().manual_seed(6)).requires_grad_(True)
    running_mean = torch.randn(C, dtype=DT)
    running_var = torch.rand(C, dtype=DT) + 0.5
    with kernel_mode(kernels):
        assert torch.autograd.gradcheck(
            lambda x, r, w, b: BatchInstanceNormFunction.apply(x, r, w, b, None, None, 1e-5)[0],
            (x, gate, weight, bias))
        assert torch.autograd.gradcheck(
            lambda x, r, w, b: BatchInstanceNormFunction.apply(x, r, w, b, running_mean,
                                                               running_var, 1e-5),
            (x, gate, weight, bias))


@pytest.mark.parametrize("kind", ["bn", "in", "ln", "gn", "bin"])
def test_double_backward_raises_a_clear_error(kind):
    layer = FACTORIES[kind]().to(DT)
    x = _input((3, C, 3, 3))
    (grad_x,) = torch.autograd.grad(layer(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_x.sum().backward()


# --- precision and memory format -----------------------------------------------------------------

@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("kind", ["bn", "in", "ln", "gn", "bin"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_float32_statistics_and_gradients(kind, dtype, kernels):
    """Half in, half out; statistics and the gradient math in float32: the result is the
    float32 computation on the same (rounded) input, rounded once."""
    torch.manual_seed(0)
    layer_half = _randomize(FACTORIES[kind]())
    layer_f32 = _randomize(FACTORIES[kind]())
    x = (torch.randn(4, C, 6, 6) * 3 + 50).to(dtype).requires_grad_(True)
    x32 = x.detach().float().requires_grad_(True)
    upstream = torch.randn(4, C, 6, 6).to(dtype)
    with kernel_mode(kernels):
        out = layer_half(x)
        out.backward(upstream)
        expected = layer_f32(x32)
        expected.backward(upstream.float())
    assert out.dtype == dtype and x.grad.dtype == dtype
    torch.testing.assert_close(out, expected.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(x.grad, x32.grad.to(dtype), rtol=0, atol=0)
    for (name, p), (_, q) in zip(layer_half.named_parameters(), layer_f32.named_parameters()):
        assert p.grad.dtype == torch.float32
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("kind", ["bn", "in", "ln", "gn", "bin"])
def test_cpu_autocast_gives_half_output_from_float32_statistics(kind):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, C, 3, padding=1)
    norm, twin = _randomize(make_norm(kind, C)), _randomize(make_norm(kind, C))
    x = torch.randn(4, 3, 8, 8) * 4 + 30
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        out = norm(h)
    assert h.dtype == out.dtype == torch.bfloat16
    torch.testing.assert_close(out, twin(h.float()).to(torch.bfloat16), rtol=0, atol=0)
    for (name, a), (_, b) in zip(norm.named_buffers(), twin.named_buffers()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    out.float().pow(2).mean().backward()
    assert all(p.grad.dtype == torch.float32 for p in norm.parameters())


class _RecordOps(TorchDispatchMode):
    """Records (op name, output) for every op dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls.append((str(func.overloadpacket.__name__), out))
        return out


COPIES = {"clone", "contiguous", "_to_copy", "copy_", "copy"}


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("kind", ["bn", "in", "ln", "gn", "bin"])
def test_channels_last_has_no_hidden_copies(kind, kernels):
    """Every activation-sized tensor made in forward and backward is channels_last, and none
    is a copy of another."""
    layer = _randomize(FACTORIES[kind]())
    x = torch.randn(4, C, 6, 5).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    upstream = torch.randn(4, C, 6, 5).contiguous(memory_format=torch.channels_last)
    with kernel_mode(kernels), _RecordOps() as rec:
        (grad_x,) = torch.autograd.grad(layer(x), x, upstream)
    full = [(name, t) for name, t in rec.calls
            if isinstance(t, torch.Tensor) and t.numel() == x.numel() and t.dim() == 4]
    assert full, "no activation-sized op recorded"
    for name, t in full:
        assert name not in COPIES, f"{name} copies an activation"
        assert t.is_contiguous(memory_format=torch.channels_last), f"{name} is not channels_last"
    assert grad_x.is_contiguous(memory_format=torch.channels_last)


# --- kernel selection ----------------------------------------------------------------------------

def test_kernel_mode_is_validated_and_restored():
    before = nf.get_kernel_mode()
    with pytest.raises(ValueError, match="kernel mode must be one of auto, eager"):
        nf.set_kernel_mode("fast")
    with kernel_mode("eager"):
        assert nf.get_kernel_mode() == "eager"
    assert nf.get_kernel_mode() == before


def test_auto_mode_falls_back_to_eager_kernels_when_compiling_fails(monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(kernels, "COMPILE_MIN_NUMEL", 1)
    monkeypatch.setattr(kernels, "COMPILE_AFTER_CALLS", 0)
    monkeypatch.setitem(kernels._state, "compile_failed", False)
    monkeypatch.setattr(group.group_forward, "_compiled", {})
    layer = _randomize(GroupNorm2d(4, C).to(DT))
    ref = use_reference(_randomize(GroupNorm2d(4, C).to(DT)))
    x = _input((2, C, 3, 3))
    with kernel_mode("auto"), pytest.warns(RuntimeWarning, match="no C.. compiler here"):
        out = layer(x)
    torch.testing.assert_close(out, ref(x), **TOL)
    assert kernels._state["compile_failed"]
    with kernel_mode("compiled"), pytest.raises(RuntimeError, match="no C.. compiler here"):
        layer(x)  # asked for explicitly: the error is not hidden


def test_use_reference_switches_every_norm_of_a_model():
    model = ResNet(1, 5, norm="bin")
    norms = [m for m in model.modules() if isinstance(m, (BatchInstanceNorm2d, BatchNorm2d))]
    assert norms and not any(m.reference for m in norms)
    assert use_reference(model) is model and all(m.reference for m in norms)
    use_reference(model, False)
    assert not any(m.reference for m in norms)


# --- compiled kernels and torch.compile ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bn", "gn", "bin"])
def test_compiled_kernels_equal_reference(kind):
    """The kernels inductor compiles (float64, so any reordering stays within 1e-10)."""
    fast, ref = _pair(kind)
    with kernel_mode("compiled"):
        for mode in (True, True, False):
            fast.train(mode), ref.train(mode)
            x = _input((3, C, 5, 4), seed=int(mode))
            x_ref = x.detach().clone().requires_grad_(True)
            out, grads = _step(fast, x, seed=1)
            out_ref, grads_ref = _step(ref, x_ref, seed=1)
            torch.testing.assert_close(out, out_ref, **TOL)
            for a, b in zip(grads, grads_ref):
                torch.testing.assert_close(a, b, **TOL)


def _tiny_model(kind):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), make_norm(kind, C), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, 3))


def _compiled_training_matches_eager(kind):
    eager, compiled_model = _tiny_model(kind), _tiny_model(kind)
    step = torch.compile(compiled_model)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        x = torch.randn(4, 3, 8, 8, generator=g) * 2 + 1
        y = torch.randint(0, 3, (4,), generator=g)
        for model, fn in ((eager, eager), (compiled_model, step)):
            model.zero_grad()
            F.cross_entropy(fn(x), y).backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
            clamp_gates_(model)
    for (name, a), b in zip(eager.state_dict().items(), compiled_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    eager.eval(), compiled_model.eval()
    x = torch.randn(2, 3, 8, 8, generator=g)
    torch.testing.assert_close(step(x), eager(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["bn", "gn"])
def test_torch_compile_trains_like_eager(kind):
    _compiled_training_matches_eager(kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["in", "ln", "bin"])
def test_torch_compile_trains_like_eager_other_norms(kind):
    _compiled_training_matches_eager(kind)
