"""The training mask schedule of the pre-training and HMR stages, as a pure function of noise.

Each sample brings its own uniform noise (N+1 values, drawn from its sample number, see
train/data/mixing.py): the first is tau ~ U[0,1), giving M = floor(N cos(pi tau / 2)) masked tokens
(`train.sampling.pretrain_mask_count`, the paper's schedule); the other N rank the positions, and the
M lowest-ranked are masked. Per-sample noise rather than the official one-tau-per-batch keeps the loss
a function of each sample alone, so any split across processes computes the same thing.
"""

from __future__ import annotations

import torch

from train.sampling import pretrain_mask_count


def training_mask(noise: torch.Tensor) -> torch.Tensor:
    """noise (B, N+1) uniform in [0,1) -> masked (B, N) bool with M_b = floor(N cos(pi noise[b,0] / 2))."""
    num_tokens = noise.shape[1] - 1
    count = pretrain_mask_count(num_tokens, noise[:, 0])  # (B,)
    rank = noise[:, 1:].argsort(dim=1).argsort(dim=1)  # position -> its rank among the row's noise
    return rank < count[:, None]
