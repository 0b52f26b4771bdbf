"""The 6n+2-layer ResNet of He et al. (2016), Section 4.2, with an injected normalization layer.

Layout for n blocks per stage (each block = two 3x3 conv layers):

    conv3x3(3 -> 16) -> norm -> ReLU                      1 layer    (S x S)
    n blocks, 16 filters                                  2n layers  (S x S)
    n blocks, 32 filters, first conv stride 2             2n layers  (S/2 x S/2)
    n blocks, 64 filters, first conv stride 2             2n layers  (S/4 x S/4)
    global mean pool -> fully connected (num_classes)     1 layer

With the paper's option-A shortcut (identity; stride-2 subsampling and zero-padded channels
where the shape changes) the shortcuts have no parameters, so the network has exactly 6n+2
weighted layers. Option B (1x1 projection + norm) is available but adds two layers.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnorm.norms import norm_factory

__all__ = ["ResNet", "BasicBlock", "count_parameters", "count_weighted_layers", "STAGE_WIDTHS"]

STAGE_WIDTHS = (16, 32, 64)
NormLayer = Callable[[int], nn.Module]


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution whose zero padding keeps the size (halves it with stride 2)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially by `stride`, zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def projection_shortcut(in_channels: int, out_channels: int, stride: int,
                        norm_layer: NormLayer) -> nn.Module:
    """Option-B shortcut: 1x1 convolution + norm (adds a weighted layer per stage change)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        norm_layer(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv layers, each followed by the norm, with a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm_layer: NormLayer,
                 shortcut: str = "A", conv_bias: bool = False) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride, bias=conv_bias)
        self.norm1 = norm_layer(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, bias=conv_bias)
        self.norm2 = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = projection_shortcut(in_channels, out_channels, stride, norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with 6n+2 layers for `num_classes` classes and normalization `norm`.

    `norm` is a kind understood by `resnorm.norms.make_norm` ("torch_bn", "bn", "in", "bin",
    "ln", "gn", "gn:8", "nn") or a callable taking a channel count. Convolutions carry a bias
    only when the norm layer has no learnable shift of its own (the "nn" variant), so that
    variant still has a bias per filter; `conv_bias` overrides that choice.
    """

    def __init__(self, n: int, num_classes: int, norm: str | NormLayer = "torch_bn",
                 shortcut: str = "A", conv_bias: bool | None = None) -> None:
        super().__init__()
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        norm_layer = norm_factory(norm) if isinstance(norm, str) else norm
        if conv_bias is None:
            conv_bias = getattr(norm_layer(STAGE_WIDTHS[0]), "bias", None) is None
        self.n, self.num_classes, self.shortcut = n, num_classes, shortcut
        self.norm = norm if isinstance(norm, str) else getattr(norm, "__name__", repr(norm))

        self.conv1 = conv3x3(3, STAGE_WIDTHS[0], bias=conv_bias)
        self.norm1 = norm_layer(STAGE_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        stages, in_channels = [], STAGE_WIDTHS[0]
        for i, width in enumerate(STAGE_WIDTHS):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_channels if j == 0 else width, width, stride if j == 0 else 1,
                                 norm_layer, shortcut, conv_bias) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(STAGE_WIDTHS[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation for the convolutions. Norm layers start from their own
        # reset_parameters (weight 1, bias 0, BIN gate 1, fresh running statistics), whether or
        # not they have weights; the FC layer keeps PyTorch's default.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, H, W) batch, got shape {tuple(x.shape)}")
        if x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"input height and width must be divisible by 4, got "
                             f"{x.shape[2]}x{x.shape[3]}")
        x = self.relu(self.norm1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))

    def gradcam_layers(self) -> list[nn.Module]:
        """The 2n conv layers of the last stage (64x64 maps at 256x256 input), for Grad-CAM."""
        return [conv for block in self.layer3 for conv in (block.conv1, block.conv2)]

    def extra_repr(self) -> str:
        return f"n={self.n}, num_classes={self.num_classes}, norm={self.norm!r}, " \
               f"shortcut={self.shortcut!r}, layers={6 * self.n + 2}"


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_weighted_layers(model: nn.Module) -> int:
    """Number of Conv2d and Linear layers (what the paper counts as depth)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
