"""A planted truth: under a pure contrast change x' = (x − m)·c + m (ImageNet-C's contrast, m
the image's channel means), a ResNet whose layers are IN keeps its accuracy, because IN after
the linear stem convolution removes an affine intensity change up to zero-padding borders and
uint8 rounding; the same ResNet with BN, whose training statistics no longer fit, loses far
more. (What adapting BN's statistics wins back is an empirical question, not planted: the
studies measure it.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnorm.model import ResNet
from resnorm.robustness.corruptions import corrupt_image

pytestmark = pytest.mark.usefixtures("one_thread")

SEVERITY = 4  # contrast c = 0.1: a tenth of the intensity range left


def stripes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 3, 32, 32) images of horizontal (class 0) or vertical (class 1) stripes of
    random period, phase, colour and intensity range."""
    labels = rng.integers(0, 2, n)
    ar = np.arange(32)
    out = np.empty((n, 3, 32, 32), np.uint8)
    for i, label in enumerate(labels):
        period = rng.integers(4, 9)
        wave = ((ar + rng.integers(0, period)) % period < period / 2).astype(float)
        image = np.outer(wave, np.ones(32)) if label == 0 else np.outer(np.ones(32), wave)
        low, high = rng.uniform(0, 100), rng.uniform(150, 255)
        colour = rng.uniform(0.5, 1.0, 3)[:, None, None]
        out[i] = np.clip((low + (high - low) * image)[None] * colour, 0, 255).astype(np.uint8)
    return out, labels


def as_input(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).float() / 127.5 - 1


def trained(norm: str, x: np.ndarray, y: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ResNet(1, 2, norm=norm)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    inputs, targets = as_input(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    for _ in range(25):
        idx = torch.randint(0, len(inputs), (32,), generator=gen)
        loss = F.cross_entropy(model(inputs[idx]), targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((model(as_input(x)).argmax(1).numpy() == y).mean())


def test_in_loses_far_less_than_bn_under_a_contrast_change():
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_test, y_test) = (stripes(n, rng) for n in (256, 120))
    x_contrast = np.stack([corrupt_image(x, "contrast", SEVERITY, i)
                           for i, x in enumerate(x_test)])
    bn, inn = trained("bn", x_train, y_train), trained("in", x_train, y_train)
    drop = {name: accuracy(m, x_test, y_test) - accuracy(m, x_contrast, y_test)
            for name, m in (("bn", bn), ("in", inn))}
    assert accuracy(bn, x_test, y_test) > 0.95 and accuracy(inn, x_test, y_test) > 0.95
    assert drop["bn"] > 0.25 and drop["in"] < drop["bn"] / 3, drop
