"""The image backbones of MEGA and the one way to build them from a `MegaConfig`.

Every backbone declares its shapes, so nothing downstream retypes them:

    input_hw    (H, W)  the crop size it was built for
    feature_hw  (h, w)  the grid of its output features for that crop
    channels    C       feature channels
    mean, std           ImageNet RGB normalisation its inputs must have
    forward(images (B,3,H,W), normalised) -> features (B,C,h,w)

Its `state_dict()` keys are the official checkpoint's `backbone.*` keys with `backbone.` removed
(the MEGA model holds it as attribute `backbone`).

    hrnet   HRNet-W48 + strided downsampling to 1/32, 15W = 720 channels, 7x7 at 224x224
    resnet  ResNet-50 trunk, 2048 channels, 7x7 at 224x224
    vit     ViTPose-H, 1280 channels, 16x12 at 256x192
"""

from __future__ import annotations

import torch

from train.config import ConfigError, MegaConfig
from train.model.backbone_base import Backbone


def build_backbone(cfg: MegaConfig, drop_path_rate: float | None = None) -> torch.nn.Module:
    """The backbone `cfg.backbone` names, shaped by cfg, randomly initialised.

    `drop_path_rate` only concerns the ViT in training mode (stochastic depth); `None` keeps the
    official 0.55. It has no effect in eval mode.
    """
    input_hw = (cfg.input_height, cfg.input_width)
    if cfg.backbone == "hrnet":
        from train.model.hrnet import HRNet

        return HRNet(width=cfg.hrnet_width, input_hw=input_hw)
    if cfg.backbone == "resnet":
        from train.model.resnet import ResNet

        return ResNet(blocks=cfg.resnet_blocks, input_hw=input_hw)
    if cfg.backbone == "vit":
        from train.model.vit import ViT

        kwargs = {} if drop_path_rate is None else {"drop_path_rate": drop_path_rate}
        return ViT(
            input_hw=input_hw,
            patch_size=cfg.vit_patch,
            embed_dim=cfg.vit_embed_dim,
            depth=cfg.vit_depth,
            num_heads=cfg.vit_heads,
            **kwargs,
        )
    raise ConfigError(f"unknown backbone {cfg.backbone!r} (hrnet, resnet or vit)")


def check_backbone_matches_config(cfg: MegaConfig, backbone: Backbone) -> None:
    """Raise ConfigError unless the decoder's image-token settings fit what `backbone` produces.

    The decoder embeds `cond_dim`-channel features as `cond_length` image tokens (row-major h*w).
    """
    h, w = backbone.feature_hw
    problems = []
    if cfg.cond_dim != backbone.channels:
        problems.append(f"cond_dim is {cfg.cond_dim} but the backbone gives {backbone.channels} channels")
    if cfg.cond_length != h * w:
        problems.append(
            f"cond_length is {cfg.cond_length} but the backbone gives a {h}x{w} = {h * w} feature grid "
            f"for {backbone.input_hw[0]}x{backbone.input_hw[1]} inputs"
        )
    if problems:
        raise ConfigError(
            f"config {cfg.name!r} ({cfg.backbone}): "
            + "; ".join(problems)
            + f". Set cond_dim: {backbone.channels} and cond_length: {h * w}, or change the input size."
        )
