"""ResNet-50 as MEGA uses it: torchvision's resnet50 without avgpool/fc, as an `nn.Sequential`.

The official code builds `nn.Sequential(*list(resnet50().children())[:-2])`, so its weights live under
`0.*` (conv1), `1.*` (bn1) and `4.*`..`7.*` (layer1..layer4); children 2 and 3 are the parameter-free
ReLU and max-pool. We write the network out here (same layers, same names, same arithmetic) so that
the core package does not need torchvision. A 224x224 crop gives 2048 channels on a 7x7 grid.
"""

from __future__ import annotations

import torch
from torch import nn

from train.model.backbone_base import IMAGENET_MEAN, IMAGENET_STD, halve_ceil

BN_MOMENTUM = 0.1  # torchvision's (and PyTorch's) default


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (carries the stride, "ResNet v1.5") -> 1x1 x4, plus a projected or identity skip."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + skip)


def _res_layer(in_channels: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_channels, planes, stride)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """Bottleneck ResNet trunk; `blocks=(3, 4, 6, 3)` is ResNet-50. Output stride 32.

    Children are named "0".."7" like the official `nn.Sequential` (2 = ReLU, 3 = max-pool).
    """

    def __init__(self, blocks: tuple[int, ...] = (3, 4, 6, 3), input_hw: tuple[int, int] = (224, 224)) -> None:
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"resnet_blocks must be four positive counts, got {tuple(blocks)}")
        layers: list[nn.Module] = [
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        in_channels = 64
        for planes, n, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2)):
            layers.append(_res_layer(in_channels, planes, n, stride))
            in_channels = planes * Bottleneck.expansion
        for i, layer in enumerate(layers):
            self.add_module(str(i), layer)

        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        # stem conv, max-pool and the three strided stages each map n -> ceil(n / 2)
        self.feature_hw = (halve_ceil(self.input_hw[0], 5), halve_ceil(self.input_hw[1], 5))
        self.channels = in_channels
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self._init_weights()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for layer in self.children():
            x = layer(x)
        return x

    def _init_weights(self) -> None:
        # torchvision's initialisation, so an untrained model starts where the official one would
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
