"""What every image backbone shares, below the backbones and their builder: the protocol, the input
normalisation and the stride arithmetic (train/model/backbones.py builds them; hrnet, resnet and vit
import only this)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class Backbone(Protocol):
    """What MEGA needs from an image backbone (all three are plain `nn.Module`s with these)."""

    input_hw: tuple[int, int]
    feature_hw: tuple[int, int]
    channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def halve_ceil(n: int, times: int) -> int:
    """Size after `times` stride-2 layers with "same" padding (3x3 pad 1, 7x7 pad 3, pool 3 pad 1)."""
    for _ in range(times):
        n = (n + 1) // 2
    return n
