"""Built-in architectures (plain torch modules; any user module of the same op set works too).

Inputs are float images in [0, 1], NCHW, 32x32 (1 channel for digits, 3 for CIFAR-10).
No input normalisation layer: the first layer sees the pixels, so the 8-bit input quantisation
(scale 1/255) is exact.
"""
from __future__ import annotations

import torch
from torch import nn as tnn

from hwsim.errors import AxlabError

ARCHS = ("minnet", "resnet8", "resnet24")


class MinNet(tnn.Module):
    """Thesis Table 4.2: conv3x3x32, maxpool2, conv3x3x64, maxpool2, flatten, dense64, dense10.

    No padding, ReLU after every layer but the last. 32x32 input -> 30 -> 15 -> 13 -> 6.
    """

    def __init__(self, in_ch: int = 3, num_classes: int = 10, size: int = 32) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(in_ch, 32, 3)
        self.conv2 = tnn.Conv2d(32, 64, 3)
        self.pool = tnn.MaxPool2d(2)
        side = ((size - 2) // 2 - 2) // 2
        if side < 1:
            raise AxlabError(f"minnet needs images of at least 10x10 pixels (two unpadded 3x3 convs and two 2x2 "
                             f"pools), got {size}x{size}")
        self.fc1 = tnn.Linear(64 * side * side, 64)
        self.fc2 = tnn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


class BasicBlock(tnn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut (identity, or 1x1 conv when shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            # MLPerf Tiny ResNet8 uses a plain 1x1 strided conv on the shortcut
            self.short = tnn.Conv2d(cin, cout, 1, stride, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.short is None else self.short(x)
        return torch.relu(y + s)


class CifarResNet(tnn.Module):
    """CIFAR-style ResNet: conv3x3x16-BN-ReLU, 3 stages (16/32/64 filters, stride 1/2/2) of
    basic blocks, global average pool, dense."""

    def __init__(self, blocks: tuple[int, int, int], in_ch: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(in_ch, 16, 3, 1, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(16)
        layers: list[tnn.Module] = []
        cin = 16
        for stage, (n, cout) in enumerate(zip(blocks, (16, 32, 64))):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                layers.append(BasicBlock(cin, cout, stride))
                cin = cout
        self.layers = tnn.Sequential(*layers)
        self.pool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


def build_model(arch: str, in_ch: int = 3, num_classes: int = 10, size: int = 32) -> tnn.Module:
    """A fresh float model. ``resnet8``: one basic block per stage (MLPerf Tiny);
    ``resnet24``: 4/4/3 blocks (1 + 22 + 1 = 24 weighted layers, shortcuts not counted)."""
    if arch == "minnet":
        return MinNet(in_ch, num_classes, size)
    if arch == "resnet8":
        return CifarResNet((1, 1, 1), in_ch, num_classes)
    if arch == "resnet24":
        return CifarResNet((4, 4, 3), in_ch, num_classes)
    raise AxlabError(f"unknown model architecture {arch!r} (known: {', '.join(ARCHS)})")
