"""The paper's schedules and the sampler, as pure functions (no network needed)."""

from __future__ import annotations

import math

import pytest
import torch

from train import sampling

N, S = 54, 512


@pytest.mark.parametrize("steps", range(1, 21))
def test_visible_counts_follow_the_paper(steps):
    counts = sampling.visible_counts(N, steps)
    assert len(counts) == steps
    for t, n in enumerate(counts[:-1], start=1):
        assert n == math.floor(N * (1 - math.cos(math.pi * t / (2 * steps))))
    assert counts[-1] == N
    assert all(a <= b for a, b in zip(counts, counts[1:]))


def test_official_counts_differ_as_documented():
    # official generate(): masked = max(1, floor(N cos(pi t / 2T))) -> 51, 43, 31, 16, 1 masked for T=5
    assert sampling.official_visible_counts(N, 5) == [3, 11, 23, 38, 53]
    # paper: n_t = floor(N (1 - cos)) rounds the other way: 2.6 -> 2 visible after step 1
    assert sampling.visible_counts(N, 5) == [2, 10, 22, 37, 54]


def test_temperature_schedule():
    assert sampling.step_temperature(1, 5, 1.0) == pytest.approx(0.8)
    assert sampling.step_temperature(5, 5, 1.0) == 0.0
    assert sampling.step_temperature(1, 2, 10.0) == pytest.approx(5.0)


def test_pretrain_mask_count():
    tau = torch.tensor([0.0, 0.5, 0.999])
    assert sampling.pretrain_mask_count(N, tau).tolist() == [54, math.floor(54 * math.cos(math.pi / 4)), 0]


def _random_logits(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, N, S, generator=g) * 3


@pytest.mark.parametrize("steps", [1, 2, 5, 8])
def test_generate_reveals_everything_and_never_changes_revealed_tokens(steps):
    g = torch.Generator().manual_seed(1)
    calls = []

    def logits_fn(tokens, visible):
        calls.append(visible.sum(1))
        return torch.randn(tokens.shape[0], N, S, generator=g)

    final, history = sampling.generate(logits_fn, 3, N, S, steps, 4.5, generator=torch.Generator().manual_seed(2))
    counts = sampling.visible_counts(N, steps)
    assert len(history) == steps
    previous = None
    for t, tokens in enumerate(history):
        visible = tokens != sampling.MASKED
        # masked positions hold MASKED; a revealed 0 is possible but rare, so count with the call log
        if t + 1 < steps:
            assert torch.equal(calls[t + 1], torch.full((3,), counts[t]))
        if previous is not None:
            was = previous != sampling.MASKED
            assert torch.equal(tokens[was & visible], previous[was & visible])
            assert not (was & ~visible).any(), "a revealed token was masked again"
        previous = tokens
    assert torch.equal(final, history[-1])


def test_sample_step_reveals_exactly_n_and_keeps_visible():
    logits = _random_logits(4)
    tokens = torch.zeros(4, N, dtype=torch.long)
    visible = torch.zeros(4, N, dtype=torch.bool)
    tokens[:, :5] = torch.arange(5) + 100
    visible[:, :5] = True
    g = torch.Generator().manual_seed(3)
    new_tokens, new_visible = sampling.sample_step(
        logits, tokens, visible, 20, sampling.gumbel((4, N, S), g), sampling.gumbel((4, N), g)
    )
    assert new_visible.sum(1).tolist() == [20] * 4
    assert new_visible[:, :5].all()
    assert torch.equal(new_tokens[:, :5], tokens[:, :5])
    assert (new_tokens[~new_visible] == sampling.MASKED).all()


def test_temperature_zero_is_argmax():
    logits = _random_logits(2, seed=5)
    zeros = torch.zeros(2, N, S), torch.zeros(2, N)
    final, _ = sampling.generate(lambda t, v: logits, 2, N, S, 1, 0.0, noise=[zeros])
    assert torch.equal(final, logits.argmax(-1))


def test_reveal_uses_highest_confidence():
    logits = _random_logits(1, seed=7)
    tokens = torch.zeros(1, N, dtype=torch.long)
    visible = torch.zeros(1, N, dtype=torch.bool)
    _, new_visible = sampling.sample_step(logits, tokens, visible, 10, torch.zeros(1, N, S), torch.zeros(1, N))
    top = logits.max(-1).values.topk(10).indices
    assert set(new_visible[0].nonzero().flatten().tolist()) == set(top[0].tolist())


def test_same_seed_same_result_different_seed_different_result():
    logits = _random_logits(2, seed=9)

    def run(seed):
        return sampling.generate(lambda t, v: logits, 2, N, S, 5, 1.0, generator=torch.Generator().manual_seed(seed))[0]

    assert torch.equal(run(11), run(11))
    assert not torch.equal(run(11), run(12))


def test_gumbel_statistics():
    g = sampling.gumbel((200_000,), torch.Generator().manual_seed(0))
    assert torch.isfinite(g).all()
    assert g.mean().item() == pytest.approx(0.5772, abs=0.01)  # Euler-Mascheroni
    assert g.var().item() == pytest.approx(math.pi**2 / 6, rel=0.03)
