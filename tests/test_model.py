"""The 6n+2-layer ResNet against the ResNet paper (He et al. 2016, Section 4.2, Table 6)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from resnorm.model import ResNet, count_parameters, count_weighted_layers
from resnorm.norms import NORM_KINDS, BatchInstanceNorm2d, NoNorm

ALL_KINDS = [*NORM_KINDS, "gn:4"]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_option_a_has_exactly_6n_plus_2_weighted_layers(n):
    model = ResNet(n, 25, norm="bn")
    assert count_weighted_layers(model) == 6 * n + 2
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1


def test_option_b_adds_one_projection_per_stage_change():
    model = ResNet(2, 25, norm="bn", shortcut="B")
    assert count_weighted_layers(model) == 6 * 2 + 2 + 2


@pytest.mark.parametrize("n,classes,expected", [
    (3, 10, 269_722),  # Table 6: ResNet-20 on CIFAR-10, "0.27M"
    (2, 25, 173_481),  # the assignment's network
    (5, 10, 464_154),  # Table 6: ResNet-32, "0.46M"
    (9, 10, 853_018),  # Table 6: ResNet-56, "0.85M"
])
@pytest.mark.parametrize("norm", ["torch_bn", "bn"])
def test_parameter_counts_match_the_paper(n, classes, expected, norm):
    assert count_parameters(ResNet(n, classes, norm=norm)) == expected


def test_own_bn_model_mirrors_torch_bn_model_exactly():
    torch.manual_seed(0)
    ours = ResNet(1, 5, norm="bn")
    torch.manual_seed(0)
    ref = ResNet(1, 5, norm="torch_bn")
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name  # same seed -> same initialisation
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,maps", [(256, (256, 128, 64)), (64, (64, 32, 16))])
def test_stage_sizes_and_output_shape(size, maps):
    model = ResNet(1, 25, norm="bn").eval()
    seen = {}
    for name in ("layer1", "layer2", "layer3"):
        getattr(model, name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:])))
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 25)
    assert seen == {"layer1": (16, maps[0], maps[0]), "layer2": (32, maps[1], maps[1]),
                    "layer3": (64, maps[2], maps[2])}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_gradcam_layers_are_the_2n_convs_of_the_last_stage(n):
    model = ResNet(n, 25, norm="bn").eval()
    layers = model.gradcam_layers()
    assert len(layers) == 2 * n
    assert all(isinstance(layer, nn.Conv2d) and layer.out_channels == 64 for layer in layers)
    last_stage_convs = [m for m in model.layer3.modules() if isinstance(m, nn.Conv2d)]
    assert layers == last_stage_convs
    if n == 1:  # one 256x256 forward is enough to check the map size
        shapes = []
        for layer in layers:
            layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[2:])))
        with torch.no_grad():
            model(torch.randn(1, 3, 256, 256))
        assert shapes == [(64, 64)] * 2


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_norm_kind_trains_forward_and_backward(kind):
    torch.manual_seed(0)
    model = ResNet(1, 5, norm=kind)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert count_weighted_layers(model) == 8


def test_convs_have_bias_only_without_a_norm_shift():
    no_norm = ResNet(1, 5, norm="nn")
    assert all(m.bias is not None for m in no_norm.modules() if isinstance(m, nn.Conv2d))
    assert any(isinstance(m, NoNorm) for m in no_norm.modules())
    bn = ResNet(1, 5, norm="bn")
    assert all(m.bias is None for m in bn.modules() if isinstance(m, nn.Conv2d))


def test_bin_model_has_a_gate_per_norm_layer():
    model = ResNet(1, 5, norm="bin")
    bins = [m for m in model.modules() if isinstance(m, BatchInstanceNorm2d)]
    assert len(bins) == 1 + 2 * 3  # stem + two per block
    assert all(torch.equal(m.gate, torch.ones_like(m.gate)) for m in bins)


def test_same_seed_same_weights_different_seed_different_weights():
    def weights(seed):
        torch.manual_seed(seed)
        return torch.cat([p.detach().flatten() for p in ResNet(1, 5, norm="gn").parameters()])

    assert torch.equal(weights(3), weights(3))
    assert not torch.equal(weights(3), weights(4))


def test_he_initialisation_of_convolutions():
    torch.manual_seed(0)
    conv = ResNet(3, 10, norm="bn").layer3[1].conv1
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)


@pytest.mark.parametrize("kwargs,message", [
    (dict(n=0, num_classes=10), "n must be an integer >= 1"),
    (dict(n=2, num_classes=1), "num_classes must be an integer >= 2"),
    (dict(n=2, num_classes=10, norm="batch"), "unknown norm kind"),
    (dict(n=2, num_classes=10, shortcut="C"), "shortcut must be"),
])
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet(**kwargs)


def test_input_size_not_divisible_by_4_is_rejected():
    model = ResNet(1, 5, norm="bn")
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(2, 3, 30, 30))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(2, 1, 32, 32))


def _train_float64(norm, steps=20):
    torch.manual_seed(0)
    model = ResNet(1, 5, norm=norm).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 3, 16, 16, generator=g, dtype=torch.float64)
        y = torch.randint(0, 5, (8,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_own_bn_trains_exactly_like_torch_bn_in_float64():
    # The study's sanity check, without float32 rounding: 20 SGD steps from the same seed
    # leave the two models equal to float64 precision (parameters and running statistics).
    ours, ref = _train_float64("bn"), _train_float64("torch_bn")
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
