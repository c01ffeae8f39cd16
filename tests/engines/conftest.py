"""Fixtures shared by the engine tests: the tiny MEGA config with random weights, and TF32 off for GPU parity."""

from __future__ import annotations

import pytest
import torch

from engines.models import ModelSource, build_models
from train.config import MegaConfig, builtin_config


@pytest.fixture(scope="module")
def cfg():
    return builtin_config("mega_tiny", MegaConfig)


@pytest.fixture(scope="module")
def models(cfg, assets_dir):
    return build_models(ModelSource(cfg, seed=0, config_ref="mega_tiny"), assets_dir)


@pytest.fixture
def no_tf32():
    """The torch reference computes fp32 matmuls and convolutions without TF32, as fp32 plans do."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
