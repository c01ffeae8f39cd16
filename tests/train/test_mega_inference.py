"""Inference-mode behaviour of MEGA on a tiny random model (no fixtures needed)."""

from __future__ import annotations

import pytest
import torch

from train.config import MegaConfig
from train.model.mega import Mega

TINY = MegaConfig(
    name="tiny",
    backbone="resnet",
    resnet_blocks=(1, 1, 1, 1),
    input_height=64,
    input_width=64,
    emb_dim=32,
    encoder_layers=1,
    decoder_layers=1,
    cond_length=4,
    cond_dim=2048,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Mega(TINY).eval()


def test_same_seed_same_samples_and_q_rides_the_batch(model):
    images = torch.randn(2, 3, 64, 64)
    calls = []
    hook = model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        with torch.inference_mode():
            a, _ = model.generate(
                images, samples=3, steps=4, temperature=2.0, generator=torch.Generator().manual_seed(5)
            )
            b, _ = model.generate(
                images, samples=3, steps=4, temperature=2.0, generator=torch.Generator().manual_seed(5)
            )
            c, _ = model.generate(
                images, samples=3, steps=4, temperature=2.0, generator=torch.Generator().manual_seed(6)
            )
    finally:
        hook.remove()
    assert calls == [2, 2, 2], "the backbone must run once per crop, not once per sample"
    assert a.tokens.shape == (6, 54)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)
    # rotation/camera never see the tokens: identical across the Q samples of one crop
    assert torch.equal(a.rot6d[0], a.rot6d[2]) and not torch.equal(a.rot6d[0], a.rot6d[3])


def test_deterministic_mode_is_batch_independent(model):
    images = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        whole = model(images)
        single = [model(images[i : i + 1]) for i in range(4)]
    for i, out in enumerate(single):
        assert torch.equal(out.tokens[0], whole.tokens[i])
        assert torch.allclose(out.logits[0], whole.logits[i], atol=1e-5)


def test_decoder_only_model_refuses_the_stochastic_mode(model):
    det = Mega(TINY, with_encoder=False).eval()
    with pytest.raises(RuntimeError, match="without its encoder"):
        det.generate(torch.randn(1, 3, 64, 64), samples=2, steps=2)


def test_temperature_zero_single_step_equals_deterministic_argmax(model):
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        det = model(images)
        gen, _ = model.generate(images, samples=1, steps=1, temperature=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(det.tokens, gen.tokens)
