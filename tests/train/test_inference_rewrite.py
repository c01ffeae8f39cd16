"""BatchNorm folding + channels_last keep the network's outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from train.config import MegaConfig
from train.model.inference import fold_batchnorm, prepare_for_inference
from train.model.mega import Mega


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)


@pytest.mark.parametrize(
    "backbone,extra",
    [("hrnet", {"hrnet_width": 8, "cond_dim": 120}), ("resnet", {"resnet_blocks": (1, 1, 1, 1), "cond_dim": 2048})],
)
def test_folded_channels_last_model_gives_the_same_outputs(backbone, extra):
    cfg = MegaConfig(
        name="t",
        backbone=backbone,
        emb_dim=32,
        encoder_layers=1,
        decoder_layers=1,
        input_height=64,
        input_width=64,
        cond_length=4,
        **extra,
    )
    torch.manual_seed(0)
    model = Mega(cfg, with_encoder=False).eval()
    _randomise_bn(model)
    images = torch.randn(2, 3, 64, 64)
    fast = prepare_for_inference(model, images[:1])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules()), "every BN should be folded"
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the original must stay untouched"
    with torch.inference_mode():
        ref, got = model(images), fast(images.contiguous(memory_format=torch.channels_last))
    assert (ref.logits - got.logits).abs().max() < 1e-4
    assert torch.equal(ref.tokens, got.tokens)
    assert (ref.rot6d - got.rot6d).abs().max() < 1e-4


def test_folding_refuses_a_training_model():
    with pytest.raises(RuntimeError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train())


def test_bn_not_after_its_conv_is_left_alone():
    # a BN over a different channel count than the preceding conv must not be folded into it
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(5)).eval()
    assert fold_batchnorm(m) == 0
