"""Oracle tests: every from-scratch norm against PyTorch's own ops, in float64.

Tolerances are at the float64 level (1e-10); a failure here is a bug, never a reason to loosen.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from resnorm import norm_functions, norms
from resnorm.norms import (
    BatchInstanceNorm2d,
    BatchNorm2d,
    GroupNorm2d,
    InstanceNorm2d,
    LayerNorm2d,
    NoNorm,
    clamp_gates_,
    gate_parameters,
    make_norm,
)

TOL = dict(rtol=1e-10, atol=1e-10)
DT = torch.float64
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)

shapes = st.tuples(
    st.integers(2, 5),                # N (BN needs more than one value per channel)
    st.sampled_from([1, 3, 16, 64]),  # C
    st.integers(1, 9),                # H
    st.integers(1, 9),                # W
)


def _input(shape, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    # an offset and scale per channel, so a wrong reduction axis cannot pass by accident
    n, c, h, w = shape
    x = torch.randn(shape, generator=g, dtype=DT)
    x = x * torch.rand(1, c, 1, 1, generator=g, dtype=DT).mul(3).add(0.5)
    x = x + torch.randn(1, c, 1, 1, generator=g, dtype=DT) * 2
    return x.requires_grad_(requires_grad)


def _random_affine(layer, c, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(c, generator=g, dtype=DT))
        layer.bias.copy_(torch.randn(c, generator=g, dtype=DT))
    return layer


def _grads(out, *tensors, seed=2):
    g = torch.Generator().manual_seed(seed)
    upstream = torch.randn(out.shape, generator=g, dtype=DT)
    return torch.autograd.grad(out, tensors, upstream)


def _assert_same_fwd_bwd(ours, ref_fn, x, params):
    """ours(x) == ref_fn(x) and the gradients w.r.t. x and params agree."""
    x_ref = x.detach().clone().requires_grad_(True)
    out, ref = ours(x), ref_fn(x_ref)
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(_grads(out, x, *params[0]), _grads(ref, x_ref, *params[1]), **TOL)


# --- BatchNorm ---------------------------------------------------------------------------------

def _bn_pair(c, **kwargs):
    ours = BatchNorm2d(c, **kwargs).to(DT)
    ref = nn.BatchNorm2d(c, **kwargs).to(DT)
    if ours.affine:
        _random_affine(ours, c)
        ref.load_state_dict(ours.state_dict())
    return ours, ref


def _bn_params(ours, ref):
    return (list(ours.parameters()), list(ref.parameters()))


@SETTINGS
@given(shape=shapes, momentum=st.sampled_from([0.1, 0.5, None]))
def test_batchnorm_matches_torch_over_training_steps_and_eval(shape, momentum):
    c = shape[1]
    ours, ref = _bn_pair(c, momentum=momentum)
    for step in range(3):
        x = _input(shape, seed=step)
        _assert_same_fwd_bwd(ours, ref, x, _bn_params(ours, ref))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), **TOL)
    ours.eval(), ref.eval()
    _assert_same_fwd_bwd(ours, ref, _input(shape, seed=9), _bn_params(ours, ref))


@SETTINGS
@given(shape=shapes)
def test_batchnorm_without_running_stats_uses_batch_stats_in_eval(shape):
    ours, ref = _bn_pair(shape[1], track_running_stats=False)
    assert ours.running_mean is None and "running_mean" not in dict(ours.named_buffers())
    for mode in (True, False):
        ours.train(mode), ref.train(mode)
        _assert_same_fwd_bwd(ours, ref, _input(shape), _bn_params(ours, ref))


def test_batchnorm_without_affine():
    ours, ref = _bn_pair(3, affine=False)
    assert ours.weight is None and list(ours.parameters()) == []
    x = _input((4, 3, 5, 6))
    _assert_same_fwd_bwd(ours, ref, x, ([], []))


def test_batchnorm_state_dict_is_interchangeable_with_torch():
    ours, ref = _bn_pair(16)
    assert set(ours.state_dict()) == set(ref.state_dict())
    ref.load_state_dict(ours.state_dict())  # strict: same keys, shapes and dtypes


def test_batchnorm_running_stats_are_buffers_updated_without_autograd():
    layer = BatchNorm2d(3).to(DT)
    layer(_input((4, 3, 5, 5)))
    assert {n for n, _ in layer.named_buffers()} == {
        "running_mean", "running_var", "num_batches_tracked"}
    assert not layer.running_mean.requires_grad and layer.running_mean.grad_fn is None
    assert layer.running_var.grad_fn is None
    assert int(layer.num_batches_tracked) == 1


def test_batchnorm_one_value_per_channel_raises_like_torch():
    x = torch.randn(1, 3, 1, 1, dtype=DT)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm2d(3).to(DT)(x)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm2d(3).to(DT)(x)
    BatchNorm2d(3).to(DT).eval()(x)  # eval uses running statistics: fine


def test_batchnorm_rejects_non_4d_input():
    with pytest.raises(ValueError, match="4D"):
        BatchNorm2d(3)(torch.randn(4, 3))


# --- per-sample norms --------------------------------------------------------------------------

def _per_sample_case(layer, ref_fn, shape):
    c = shape[1]
    _random_affine(layer.to(DT), c)
    ref = lambda x: ref_fn(x, layer.weight, layer.bias)  # noqa: E731
    params = list(layer.parameters())
    for mode in (True, False):  # no running statistics: identical in train and eval
        layer.train(mode)
        _assert_same_fwd_bwd(layer, ref, _input(shape), (params, params))


@SETTINGS
@given(shape=shapes)
def test_instancenorm_matches_torch(shape):
    ref = lambda x, w, b: F.instance_norm(x, eps=1e-5) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)  # noqa: E731,E501
    if shape[2] * shape[3] == 1:
        with pytest.raises(ValueError, match="more than 1 spatial element"):
            InstanceNorm2d(shape[1]).to(DT)(_input(shape))
        with pytest.raises(ValueError, match="more than 1 spatial element"):
            F.instance_norm(_input(shape))
        return
    _per_sample_case(InstanceNorm2d(shape[1]), ref, shape)


@SETTINGS
@given(shape=shapes)
def test_layernorm_matches_group_norm_with_one_group(shape):
    _per_sample_case(LayerNorm2d(shape[1]), lambda x, w, b: F.group_norm(x, 1, w, b, 1e-5), shape)


@SETTINGS
@given(shape=shapes, groups=st.sampled_from([1, 2, 4, 8, 16, 32, 64]))
def test_groupnorm_matches_torch(shape, groups):
    c = shape[1]
    if c % groups:
        with pytest.raises(ValueError, match="divisible"):
            GroupNorm2d(groups, c)
        return
    _per_sample_case(GroupNorm2d(groups, c), lambda x, w, b: F.group_norm(x, groups, w, b, 1e-5),
                     shape)


def test_per_sample_norms_do_not_mix_samples():
    x = _input((3, 4, 5, 5), requires_grad=False)
    for layer in (InstanceNorm2d(4), LayerNorm2d(4), GroupNorm2d(2, 4)):
        layer = layer.to(DT)
        alone = layer(x[1:2])
        torch.testing.assert_close(layer(x)[1:2], alone, **TOL)


# --- BIN ---------------------------------------------------------------------------------------

def _bin_with_gate(c, value):
    layer = _random_affine(BatchInstanceNorm2d(c).to(DT), c)
    with torch.no_grad():
        layer.gate.fill_(value)
    return layer


def test_bin_with_gate_one_is_batchnorm_in_train_and_eval():
    c, shape = 16, (4, 16, 6, 5)
    layer, ref = _bin_with_gate(c, 1.0), nn.BatchNorm2d(c).to(DT)
    ref.load_state_dict({"weight": layer.weight, "bias": layer.bias}, strict=False)
    params = ([layer.weight, layer.bias], [ref.weight, ref.bias])
    for step in range(3):
        _assert_same_fwd_bwd(layer, ref, _input(shape, seed=step), params)
    torch.testing.assert_close(layer.bn.running_mean, ref.running_mean, **TOL)
    torch.testing.assert_close(layer.bn.running_var, ref.running_var, **TOL)
    layer.eval(), ref.eval()
    _assert_same_fwd_bwd(layer, ref, _input(shape, seed=7), params)


def test_bin_with_gate_zero_is_instancenorm_in_train_and_eval():
    c, shape = 3, (4, 3, 7, 4)
    layer = _bin_with_gate(c, 0.0)
    ref = InstanceNorm2d(c).to(DT)
    ref.load_state_dict({"weight": layer.weight, "bias": layer.bias})
    params = ([layer.weight, layer.bias], [ref.weight, ref.bias])
    for mode in (True, False):
        layer.train(mode)
        _assert_same_fwd_bwd(layer, ref, _input(shape), params)


def test_bin_mixes_bn_and_in_by_the_gate():
    c, shape = 16, (4, 16, 5, 5)
    layer = _bin_with_gate(c, 0.0)
    with torch.no_grad():
        layer.gate.copy_(torch.linspace(0, 1, c, dtype=DT))
    x = _input(shape, requires_grad=False)
    x_bn = F.batch_norm(x, None, None, training=True, eps=1e-5)
    x_in = F.instance_norm(x, eps=1e-5)
    rho = layer.gate.view(1, -1, 1, 1)
    expected = (rho * x_bn + (1 - rho) * x_in) * layer.weight.view(1, -1, 1, 1) \
        + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected, **TOL)


def test_bin_gate_trains_and_clamp_keeps_the_same_parameter_in_range():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BatchInstanceNorm2d(8))
    gate = model[1].gate
    optimizer = torch.optim.SGD(model.parameters(), lr=10.0)
    before = gate.detach().clone()
    x = torch.randn(4, 3, 8, 8) * torch.rand(4, 1, 1, 1) * 5  # per-image style: IN helps
    loss = model(x).pow(2).mul(torch.randn(1, 8, 1, 1)).mean()
    loss.backward()
    assert gate.grad is not None and gate.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(gate.detach(), before), "the gate did not change after a step"
    with torch.no_grad():  # push out of range in both directions
        gate[0], gate[1] = 1.7, -0.4
    clamp_gates_(model)
    assert model[1].gate is gate
    assert any(p is gate for p in optimizer.param_groups[0]["params"])
    assert gate.min() >= 0 and gate.max() <= 1
    assert gate[0] == 1 and gate[1] == 0
    assert list(gate_parameters(model)) == [gate]


# --- every path: gradcheck, half precision, channels_last -------------------------------------

FROM_SCRATCH = [
    lambda: BatchNorm2d(4),
    lambda: InstanceNorm2d(4),
    lambda: BatchInstanceNorm2d(4),
    lambda: LayerNorm2d(4),
    lambda: GroupNorm2d(2, 4),
]
IDS = ["bn", "in", "bin", "ln", "gn"]


@pytest.mark.parametrize("factory", FROM_SCRATCH, ids=IDS)
def test_gradcheck(factory):
    layer = factory().to(DT)
    if isinstance(layer, BatchInstanceNorm2d):
        with torch.no_grad():
            layer.gate.copy_(torch.tensor([0.0, 0.3, 0.8, 1.0]))
    _random_affine(layer, 4)
    x = _input((3, 4, 3, 2))
    names = [name for name, _ in layer.named_parameters()]

    def fn(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x,))

    # training mode: the running statistics change each call but never affect the output
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    assert torch.autograd.gradcheck(fn, (x, *params))
    layer.eval()
    assert torch.autograd.gradcheck(fn, (x, *params))


@pytest.mark.parametrize("factory", FROM_SCRATCH, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_use_float32_statistics(factory, dtype):
    torch.manual_seed(0)
    layer_half, layer_f32 = factory(), factory()
    x = (torch.randn(4, 4, 6, 6) * 3 + 100).to(dtype)  # large mean: half stats would be off
    out = layer_half(x)
    assert out.dtype == dtype
    expected = layer_f32(x.float())  # same rounded input, all in float32
    torch.testing.assert_close(out, expected.to(dtype), rtol=0, atol=0)
    for (name, a), (_, b) in zip(layer_half.named_buffers(), layer_f32.named_buffers()):
        assert a.dtype == b.dtype and torch.equal(a, b), name


@pytest.mark.parametrize("factory", FROM_SCRATCH, ids=IDS)
def test_channels_last_input_gives_same_result_and_layout(factory):
    torch.manual_seed(0)
    a, b = factory().to(DT), factory().to(DT)
    x = _input((3, 4, 5, 6), requires_grad=False)
    out = a(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, b(x), **TOL)
    assert out.is_contiguous(memory_format=torch.channels_last)


# --- registry and the "from scratch" rule ------------------------------------------------------

@pytest.mark.parametrize("kind,cls", [
    ("torch_bn", nn.BatchNorm2d), ("bn", BatchNorm2d), ("in", InstanceNorm2d),
    ("bin", BatchInstanceNorm2d), ("ln", LayerNorm2d), ("gn", GroupNorm2d), ("nn", NoNorm),
    ("GN:4", GroupNorm2d),
])
def test_make_norm_resolves_kinds(kind, cls):
    layer = make_norm(kind, 16)
    assert type(layer) is cls


def test_make_norm_group_parameter_and_default():
    assert make_norm("gn", 16).num_groups == norms.DEFAULT_GN_GROUPS
    assert make_norm("gn:4", 32).num_groups == 4


@pytest.mark.parametrize("kind,message", [
    ("batchnorm", "unknown norm kind 'batchnorm'; valid kinds: torch_bn, bn, in, bin, ln, gn, nn"),
    ("bn:3", "takes no parameter"),
    ("gn:x", "must be an integer"),
    ("gn:0", "must be positive"),
])
def test_make_norm_errors_name_the_problem(kind, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_norm(kind, 16)


def test_nonorm_is_identity():
    x = torch.randn(2, 3, 4, 4)
    assert make_norm("nn", 3)(x) is x


FORBIDDEN = {"batch_norm", "instance_norm", "layer_norm", "group_norm", "BatchNorm2d",
             "InstanceNorm2d", "LayerNorm", "GroupNorm", "SyncBatchNorm", "native_batch_norm",
             "native_group_norm", "native_layer_norm", "_batch_norm_impl_index"}


def _torch_attribute_uses(source):
    """Names reached as attributes (e.g. F.group_norm, nn.BatchNorm2d) in `source`."""
    return {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)}


def _modules(package):
    """The package and every module in it."""
    return [package] + [importlib.import_module(info.name) for info in
                        pkgutil.walk_packages(package.__path__, package.__name__ + ".")]


def test_source_of_from_scratch_layers_uses_no_torch_normalization():
    members = [obj for module in _modules(norms) for _, obj in inspect.getmembers(module)
               if (inspect.isclass(obj) or inspect.isfunction(obj))
               and obj.__module__ == module.__name__ and obj.__name__ != "norm_factory"]
    assert len(members) >= 8
    for obj in members:
        used = _torch_attribute_uses(inspect.getsource(obj)) & FORBIDDEN
        assert not used, f"{obj.__name__} uses {used}"
    # the registry's torch_bn entry is the single, intended use of a PyTorch norm
    assert norms.NORM_KINDS["torch_bn"].make is nn.BatchNorm2d


def test_source_of_the_fused_functions_uses_no_torch_normalization():
    source = "\n".join(inspect.getsource(module) for module in _modules(norm_functions))
    used = _torch_attribute_uses(source) & FORBIDDEN
    assert not used, f"norm_functions uses {used}"
    names = {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    assert not names & FORBIDDEN, f"norm_functions names {names & FORBIDDEN}"
    assert {"BatchNormFunction", "GroupNormFunction", "BatchInstanceNormFunction"} <= set(
        dir(norm_functions))


@pytest.mark.parametrize("path", ["fast-eager", "fast-plain", "reference"])
@pytest.mark.parametrize("factory", FROM_SCRATCH, ids=IDS)
def test_forward_and_backward_call_no_torch_normalization(factory, path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a PyTorch normalization op was called")

    for name in ("batch_norm", "instance_norm", "layer_norm", "group_norm",
                 "native_batch_norm", "native_group_norm", "native_layer_norm"):
        monkeypatch.setattr(F, name, forbidden, raising=False)
        monkeypatch.setattr(torch, name, forbidden, raising=False)
    layer = factory()
    layer.reference = path == "reference"
    mode = path.split("-")[1] if path.startswith("fast") else "eager"
    with norm_functions.kernel_mode(mode):
        for training in (True, False):
            layer.train(training)
            layer(torch.randn(3, 4, 5, 5, requires_grad=True)).sum().backward()
