"""The training mask schedule: M = floor(N cos(pi tau / 2)) masked tokens, tau ~ U[0,1), per sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from train.data.mixing import sample_rng
from train.masking import training_mask

N = 54


def _noise(count: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(
        np.stack([sample_rng(seed, g, stream=2).random(N + 1) for g in range(count)]).astype(np.float32)
    )


def test_each_row_masks_floor_n_cos_pi_tau_over_2_tokens():
    noise = _noise(500)
    masked = training_mask(noise)
    expected = torch.floor(N * torch.cos(math.pi * noise[:, 0] / 2)).long()
    assert torch.equal(masked.sum(1), expected)


def test_official_visible_count_differs_by_at_most_one():
    # the official code keeps remain = int(N (1 - cos(pi tau / 2))) visible, i.e. N - ceil(N cos): the
    # paper's floor masks one token fewer whenever N cos is not an integer
    tau = torch.rand(2000, generator=torch.Generator().manual_seed(1))
    paper_masked = torch.floor(N * torch.cos(math.pi * tau / 2))
    official_masked = N - torch.floor(N * (1 - torch.cos(math.pi * tau / 2)))
    assert ((official_masked - paper_masked) >= 0).all() and ((official_masked - paper_masked) <= 1).all()


def test_mask_count_distribution_matches_the_cosine_schedule():
    # P(M >= m) = P(cos(pi tau / 2) >= m / N) = (2 / pi) arccos(m / N)
    masked = training_mask(_noise(20000)).sum(1).double()
    for m in (1, 10, 27, 40, 50, 54):
        empirical = (masked >= m).double().mean().item()
        assert abs(empirical - 2 / math.pi * math.acos(m / N)) < 0.012, m
    # E[M] = E[floor(N cos)] ~ N * 2/pi - 1/2
    assert abs(masked.mean().item() - (N * 2 / math.pi - 0.5)) < 0.4


def test_masked_positions_are_uniform_over_the_sequence():
    masked = training_mask(_noise(20000)).double()
    per_position = masked.mean(0)
    assert (per_position - per_position.mean()).abs().max() < 0.025


def test_same_sample_number_same_mask():
    assert torch.equal(training_mask(_noise(64, seed=3)), training_mask(_noise(64, seed=3)))
    assert not torch.equal(training_mask(_noise(64, seed=3)), training_mask(_noise(64, seed=4)))


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_full_mask_prob_masks_every_token_of_that_share_and_keeps_the_schedule_on_the_rest(p):
    noise = _noise(20000, seed=5)
    masked = training_mask(noise, full_mask_prob=p)
    u = noise[:, 0]
    full = u < p
    assert masked[full].all()
    # the others: the paper's count at tau = (u - p) / (1 - p), which is U[0,1) again
    tau = (u[~full] - p) / (1 - p)
    assert torch.equal(masked[~full].sum(1), torch.floor(N * torch.cos(math.pi * tau / 2)).long())
    assert abs(masked.all(1).double().mean().item() - p) < 0.012
    # the rest keep the cosine schedule's distribution: E[M] ~ N * 2/pi - 1/2
    assert abs(masked[~full].sum(1).double().mean().item() - (N * 2 / math.pi - 0.5)) < 0.5


def test_the_papers_schedule_almost_never_masks_every_token_and_p_zero_is_that_schedule():
    noise = _noise(20000, seed=6)
    # M = N needs cos(pi tau / 2) == 1: in float32, tau < ~2e-4
    assert training_mask(noise).all(1).double().mean().item() < 0.001
    assert torch.equal(training_mask(noise, full_mask_prob=0.0), training_mask(noise))
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="full_mask_prob"):
            training_mask(noise, full_mask_prob=bad)
