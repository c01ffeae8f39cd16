"""HRNet as MEGA uses it: the HRNet pose network (W48) plus strided downsampling of every branch to 1/32.

Layout (width W; W48 in the released model):
    stem      two stride-2 3x3 convs at 64 channels (1/4 resolution), layer1 = 4 Bottlenecks -> 256 ch
    stage2    1 module,  branches W, 2W            (1/4, 1/8)
    stage3    4 modules, branches W, 2W, 4W        (.., 1/16)
    stage4    3 modules, branches W, 2W, 4W, 8W    (.., 1/32)
              each module: 4 BasicBlocks per branch, then every output branch sums all inputs
              (1x1 conv + BN + nearest upsampling from lower resolutions, chains of stride-2 3x3
              convs from higher ones) followed by ReLU
    head      downsample_stage_1/2/3 = 3/2/1 x (stride-2 3x3 conv, BN, ReLU) bring branches 1-3 to
              1/32; concatenated with branch 4 in branch order -> 15W channels (720 at 7x7 for 224x224)

`final_layer` (the pose heatmap conv, W -> 24 SMPL joints on the 1/4 branch) is part of the official
checkpoints but MEGA never calls it; it is kept so the weights load strictly. It is what the official
backbone was pre-trained with (2D joint heatmaps), and `mega-rt train backbone` trains it the same way
(`heatmaps`) before MEGA's image-conditioned stage. Attribute names mirror the official module so that
`state_dict()` keys equal the official `backbone.*` keys.
"""

from __future__ import annotations

import torch
from torch import nn

from train.model.backbone_base import IMAGENET_MEAN, IMAGENET_STD
from train.model.resnet import Bottleneck

BN_MOMENTUM = 0.1
BLOCKS_PER_BRANCH = 4
# (modules, branches) of stages 2, 3, 4
STAGES = ((1, 2), (4, 3), (3, 4))
NUM_JOINTS = 24  # channels of `final_layer`: the SMPL joints


def _conv_bn(in_ch: int, out_ch: int, stride: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),  # PyTorch's default momentum, 0.1 like everywhere else
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity skip (HRNet branches never change width inside a branch)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


def _fuse_path(channels: list[int], src: int, dst: int) -> nn.Module:
    """Brings branch `src` to the resolution and width of branch `dst`."""
    if src == dst:
        return nn.Identity()  # the official code stores None here; neither has weights
    if src > dst:  # lower resolution: 1x1 conv + BN, then nearest upsampling
        return nn.Sequential(
            nn.Conv2d(channels[src], channels[dst], 1, bias=False),
            nn.BatchNorm2d(channels[dst]),
            nn.Upsample(scale_factor=2 ** (src - dst), mode="nearest"),
        )
    # higher resolution: (dst - src) stride-2 convs; only the last changes width and has no ReLU
    steps = dst - src
    return nn.Sequential(
        *[
            _conv_bn(channels[src], channels[dst] if k == steps - 1 else channels[src], 2, relu=k < steps - 1)
            for k in range(steps)
        ]
    )


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by all-to-all sum fusion."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c) for _ in range(BLOCKS_PER_BRANCH)]) for c in channels
        )
        n = len(channels)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(_fuse_path(channels, src, dst) for src in range(n)) for dst in range(n)
        )
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for paths in self.fuse_layers:
            # summed in branch order, as the official module does
            y = paths[0](xs[0])
            for path, x in zip(paths[1:], xs[1:]):
                y = y + path(x)
            out.append(self.relu(y))
        return out


class _Stage(nn.Sequential):
    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        for module in self:
            xs = module(xs)
        return xs


def _transition(prev: list[int], cur: list[int]) -> nn.ModuleList:
    """Existing branches: identity (or a 3x3 conv when the width changes); the new branch is made
    from the lowest-resolution previous branch by a stride-2 conv."""
    layers: list[nn.Module] = []
    for i, c in enumerate(cur):
        if i < len(prev):
            layers.append(nn.Identity() if prev[i] == c else _conv_bn(prev[i], c, 1, relu=True))
        else:
            steps = i + 1 - len(prev)
            layers.append(
                nn.Sequential(
                    *[_conv_bn(prev[-1], c if k == steps - 1 else prev[-1], 2, relu=True) for k in range(steps)]
                )
            )
    return nn.ModuleList(layers)


def _downsample_to_last(channels: int, steps: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(steps):
        layers += [
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class HRNet(nn.Module):
    """HRNet-W`width` trunk returning (B, 15*width, H/32, W/32) features."""

    def __init__(self, width: int = 48, input_hw: tuple[int, int] = (224, 224)) -> None:
        super().__init__()
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        if self.input_hw[0] % 32 or self.input_hw[1] % 32:
            # branch fusion upsamples by exact powers of two; other sizes do not line up
            raise ValueError(f"HRNet input size must be a multiple of 32, got {self.input_hw}")
        widths = [width * 2**i for i in range(4)]

        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(Bottleneck(64, 64), Bottleneck(256, 64), Bottleneck(256, 64), Bottleneck(256, 64))

        prev = [256]
        for s, (modules, branches) in enumerate(STAGES, start=2):
            cur = widths[:branches]
            setattr(self, f"transition{s - 1}", _transition(prev, cur))
            setattr(self, f"stage{s}", _Stage(*[HighResolutionModule(cur) for _ in range(modules)]))
            prev = cur

        self.final_layer = nn.Conv2d(width, NUM_JOINTS, 1)  # pose heatmaps: backbone pre-training only

        self.downsample_stage_1 = _downsample_to_last(widths[0], 3)
        self.downsample_stage_2 = _downsample_to_last(widths[1], 2)
        self.downsample_stage_3 = _downsample_to_last(widths[2], 1)

        self.feature_hw = (self.input_hw[0] // 32, self.input_hw[1] // 32)
        self.channels = sum(widths)
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD

    def branches(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The four stage-4 branches (1/4, 1/8, 1/16, 1/32 resolution)."""
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for transition, stage in (
            (self.transition1, self.stage2),
            (self.transition2, self.stage3),
            (self.transition3, self.stage4),
        ):
            xs = [t(xs[i] if i < len(xs) else xs[-1]) for i, t in enumerate(transition)]
            xs = stage(xs)
        return xs

    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 24, H/4, W/4) joint heatmaps: the pose network the backbone comes from."""
        return self.final_layer(self.branches(images)[0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_from_branches(self.branches(images))

    def features_from_branches(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """The four branches -> MEGA's (B, 15C, H/32, W/32) features (what forward returns)."""
        return torch.cat(
            [self.downsample_stage_1(xs[0]), self.downsample_stage_2(xs[1]), self.downsample_stage_3(xs[2]), xs[3]],
            dim=1,
        )
