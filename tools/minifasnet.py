"""MiniFASNetV2 and MiniFASNetV1SE (Silent-Face-Anti-Spoofing, Minivision) as torch modules, written here.

Used only by ``tools/convert_silent_face.py`` (and the test that pins the shipped ONNX graphs to them); the
package itself runs the ONNX graphs with ONNX Runtime and never imports torch.

The network is MobileFaceNet-like (80x80 input, 3 output logits):

    conv1      3x3 stride 2, 3 -> 32, BN, PReLU                        80 -> 40
    conv2_dw   3x3 depthwise, BN, PReLU
    conv_23    bottleneck 32 -> 64, stride 2                            40 -> 20
    conv_3     4 residual bottlenecks at 64
    conv_34    bottleneck 64 -> 128, stride 2                           20 -> 10
    conv_4     6 residual bottlenecks at 128
    conv_45    bottleneck 128 -> 128, stride 2                          10 -> 5
    conv_5     2 residual bottlenecks at 128
    conv_6_sep 1x1, 128 -> 512, BN, PReLU
    conv_6_dw  5x5 depthwise (no padding), BN                           5 -> 1
    linear 512 -> 128 (no bias), BatchNorm1d, prob 128 -> 3 (no bias)

A bottleneck ("Depth_Wise" upstream) is 1x1 expand (BN, PReLU), 3x3 depthwise (BN, PReLU), 1x1 project
(BN, no activation), plus the input when it is residual. The expanded widths were pruned per block and
differ between the two networks: they are read from the state dict's shapes. V1SE puts a
squeeze-and-excitation gate (global average, 1x1 conv, BN, ReLU, 1x1 conv, BN, sigmoid) after the
projection of the last block of each residual stage, before the residual sum.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn


class ConvBlock(nn.Module):
    """conv (no bias) + BN, then PReLU unless ``act`` is False (upstream's Linear_block)."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.prelu(x) if self.prelu is not None else x


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(reduced)
        self.fc2 = nn.Conv2d(reduced, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(dim=(2, 3), keepdim=True)
        g = torch.relu(self.bn1(self.fc1(g)))
        return x * torch.sigmoid(self.bn2(self.fc2(g)))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, inner: int, stride: int, residual: bool, se: int = 0) -> None:
        super().__init__()
        self.conv = ConvBlock(cin, inner)
        self.conv_dw = ConvBlock(inner, inner, 3, stride, 1, groups=inner)
        self.project = ConvBlock(inner, cout, act=False)
        self.se_module = SqueezeExcite(cout, se) if se else None
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y if self.residual else y


class Stage(nn.Module):
    """Residual bottlenecks at one width (upstream's Residual, whose blocks sit in ``model``)."""

    def __init__(self, channels: int, inners: list[int], se: dict[int, int]) -> None:
        super().__init__()
        self.model = nn.Sequential(
            *[Bottleneck(channels, channels, w, 1, True, se.get(i, 0)) for i, w in enumerate(inners)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MiniFASNet(nn.Module):
    """Both variants: ``widths`` maps each bottleneck ("conv_23", "conv_3.3", ...) to its expanded width,
    ``se`` each SE-gated block to its reduced width (empty for V2)."""

    def __init__(self, widths: dict[str, int], se: dict[str, int], classes: int = 3, embedding: int = 128) -> None:
        super().__init__()

        def stage(name: str, channels: int) -> Stage:
            count = sum(1 for k in widths if k.startswith(name + "."))
            return Stage(
                channels,
                [widths[f"{name}.{i}"] for i in range(count)],
                {i: se[f"{name}.{i}"] for i in range(count) if f"{name}.{i}" in se},
            )

        self.conv1 = ConvBlock(3, 32, 3, 2, 1)
        self.conv2_dw = ConvBlock(32, 32, 3, 1, 1, groups=32)
        self.conv_23 = Bottleneck(32, 64, widths["conv_23"], 2, False)
        self.conv_3 = stage("conv_3", 64)
        self.conv_34 = Bottleneck(64, 128, widths["conv_34"], 2, False)
        self.conv_4 = stage("conv_4", 128)
        self.conv_45 = Bottleneck(128, 128, widths["conv_45"], 2, False)
        self.conv_5 = stage("conv_5", 128)
        self.conv_6_sep = ConvBlock(128, 512)
        self.conv_6_dw = ConvBlock(512, 512, 5, 1, 0, groups=512, act=False)
        self.linear = nn.Linear(512, embedding, bias=False)
        self.bn = nn.BatchNorm1d(embedding)
        self.prob = nn.Linear(embedding, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (
            self.conv1,
            self.conv2_dw,
            self.conv_23,
            self.conv_3,
            self.conv_34,
            self.conv_4,
            self.conv_45,
            self.conv_5,
            self.conv_6_sep,
            self.conv_6_dw,
        ):
            x = layer(x)
        return self.prob(self.bn(self.linear(torch.flatten(x, 1))))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a .pth file, without DataParallel's "module." prefix."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in state.items()}


def widths_of(state: dict[str, torch.Tensor]) -> tuple[dict[str, int], dict[str, int]]:
    """(expanded width per bottleneck, reduced width per SE gate) read from the weights' shapes."""
    widths, se = {}, {}
    for key, value in state.items():
        m = re.fullmatch(r"(conv_\d+)(?:\.model\.(\d+))?\.conv\.conv\.weight", key)
        if m:
            widths[m[1] if m[2] is None else f"{m[1]}.{m[2]}"] = int(value.shape[0])
        m = re.fullmatch(r"(conv_\d+)\.model\.(\d+)\.se_module\.fc1\.weight", key)
        if m:
            se[f"{m[1]}.{m[2]}"] = int(value.shape[0])
    return widths, se


def load(path: str | Path) -> MiniFASNet:
    """The network of a Silent-Face .pth file (V2 or V1SE: the shapes decide), in eval mode; every weight
    of the file must be used and every parameter of the module filled (strict)."""
    state = read_state_dict(path)
    net = MiniFASNet(*widths_of(state))
    net.load_state_dict(state, strict=True)
    return net.eval()
