"""The three MEGA backbones: official key layouts (full size and mini) and feature parity with the
official code on the mini fixtures."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from train.config import ConfigError, MegaConfig, builtin_config
from train.model.backbone_base import IMAGENET_MEAN, IMAGENET_STD, Backbone
from train.model.backbones import build_backbone, check_backbone_matches_config

NAMES = ("hrnet", "resnet", "vit")

# The mini backbones of the fixtures (manifest `backbones_mini` + `models.cvqmae_<name>.kwargs`).
MINI = {
    "hrnet": MegaConfig(name="mini_hrnet", backbone="hrnet", hrnet_width=8, cond_length=49, cond_dim=120),
    "resnet": MegaConfig(
        name="mini_resnet", backbone="resnet", resnet_blocks=(1, 1, 1, 1), cond_length=49, cond_dim=2048
    ),
    "vit": MegaConfig(
        name="mini_vit",
        backbone="vit",
        vit_embed_dim=64,
        vit_depth=2,
        vit_heads=4,
        vit_patch=16,
        input_height=256,
        input_width=192,
        cond_length=192,
        cond_dim=64,
    ),
}


def official_backbone_keys(path) -> dict[str, tuple[list[int], str]]:
    """`backbone.*` entries of an official key list, prefix removed: name -> (shape, dtype)."""
    out = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        if key.startswith("backbone."):
            out[key[len("backbone.") :]] = (json.loads(shape), dtype)
    return out


def our_keys(model: torch.nn.Module) -> dict[str, tuple[list[int], str]]:
    return {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}


def assert_same_keys(ours: dict, official: dict) -> None:
    missing = sorted(set(official) - set(ours))
    unexpected = sorted(set(ours) - set(official))
    assert not missing and not unexpected, f"missing {missing[:5]}..., unexpected {unexpected[:5]}..."
    wrong = [(k, ours[k], official[k]) for k in official if ours[k] != official[k]]
    assert not wrong, f"shape/dtype differs: {wrong[:5]}"


def mini_reference(reference_dir, name):
    ckpt = torch.load(
        reference_dir / "fixtures" / "checkpoint" / "CVQMAE" / f"mega_{name}", map_location="cpu", weights_only=True
    )
    state = {k.removeprefix("backbone."): v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
    refs = np.load(reference_dir / "fixtures" / "refs" / f"cvqmae_{name}.npz")
    return state, refs["images"], refs["det_backbone_features"]


@pytest.mark.parametrize("name", NAMES)
def test_full_size_state_dict_matches_official_keys(reference_dir, name):
    cfg = builtin_config(f"mega_{name}", MegaConfig)
    with torch.device("meta"):
        model = build_backbone(cfg)
    official = official_backbone_keys(reference_dir / "keys" / f"cvqmae_{name}.txt")
    assert_same_keys(our_keys(model), official)


@pytest.mark.parametrize("name", NAMES)
def test_full_size_declares_shapes_the_official_config_expects(name):
    cfg = builtin_config(f"mega_{name}", MegaConfig)
    with torch.device("meta"):
        model = build_backbone(cfg)
        features = model(torch.empty(2, 3, cfg.input_height, cfg.input_width))
    assert isinstance(model, Backbone)
    assert model.input_hw == (cfg.input_height, cfg.input_width)
    assert tuple(features.shape) == (2, model.channels, *model.feature_hw)
    assert model.mean == IMAGENET_MEAN and model.std == IMAGENET_STD
    check_backbone_matches_config(cfg, model)
    expected = {"hrnet": (720, (7, 7)), "resnet": (2048, (7, 7)), "vit": (1280, (16, 12))}[name]
    assert (model.channels, model.feature_hw) == expected


@pytest.mark.parametrize("name", NAMES)
def test_mini_state_dict_matches_fixture_keys(reference_dir, name):
    model = build_backbone(MINI[name])
    official = official_backbone_keys(reference_dir / "fixtures" / "keys" / f"cvqmae_{name}.txt")
    assert_same_keys(our_keys(model), official)


@pytest.mark.parametrize("name", NAMES)
def test_mini_features_match_official(reference_dir, name):
    torch.manual_seed(0)
    model = build_backbone(MINI[name]).eval()
    state, images, expected = mini_reference(reference_dir, name)
    model.load_state_dict(state, strict=True)
    assert tuple(images.shape[2:]) == model.input_hw
    with torch.inference_mode():
        features = model(torch.from_numpy(images)).numpy()
    assert features.shape == (images.shape[0], model.channels, *model.feature_hw)
    assert features.shape == expected.shape
    # features reach ~35: oneDNN picks its convolution algorithm by CPU and thread count, and the fp32
    # rounding of another algorithm differs by up to ~4e-5 of the feature scale (small features inherit
    # it), so the bound follows the scale
    atol = max(1e-4, 6e-5 * float(np.abs(expected).max()))
    np.testing.assert_allclose(features, expected, rtol=0, atol=atol)
    check_backbone_matches_config(MINI[name], model)


def test_config_mismatch_is_a_clear_error():
    cfg = builtin_config("mega_vit", MegaConfig)
    with torch.device("meta"):
        model = build_backbone(cfg)
    bad = dataclasses.replace(cfg, cond_length=196, cond_dim=1024)
    with pytest.raises(ConfigError, match=r"cond_dim is 1024 .* 1280 channels.*cond_length is 196 .* 16x12 = 192"):
        check_backbone_matches_config(bad, model)


def test_hrnet_rejects_input_sizes_its_fusion_cannot_handle():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_backbone(MegaConfig(backbone="hrnet", hrnet_width=8, input_height=200, input_width=224))


def test_vit_rejects_size_whose_grid_and_position_table_disagree():
    cfg = MegaConfig(backbone="vit", vit_embed_dim=64, vit_depth=1, vit_heads=4, input_height=252, input_width=192)
    with pytest.raises(ValueError, match="position table"):
        build_backbone(cfg)


def test_vit_drop_path_only_acts_in_training():
    cfg = dataclasses.replace(MINI["vit"])
    torch.manual_seed(0)
    model = build_backbone(cfg, drop_path_rate=0.9)
    images = torch.randn(2, 3, 256, 192)
    model.eval()
    with torch.no_grad():
        a, b = model(images), model(images)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    model.train()
    with torch.no_grad():
        outs = [model(images) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
