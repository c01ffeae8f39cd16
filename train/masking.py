"""The training mask schedule of the pre-training and HMR stages, as a pure function of noise.

Each sample brings its own uniform noise (N+1 values, drawn from its sample number, see
train/data/mixing.py): the first is tau ~ U[0,1), giving M = floor(N cos(pi tau / 2)) masked tokens
(`train.sampling.pretrain_mask_count`, the paper's schedule); the other N rank the positions, and the
M lowest-ranked are masked. Per-sample noise rather than the official one-tau-per-batch keeps the loss
a function of each sample alone, so any split across processes computes the same thing.

`full_mask_prob` p (hmr's `full_mask_prob`, 0 = the paper) masks every token of a sample with
probability p: the first noise value u decides (u < p), and the others keep the paper's schedule with
tau = (u - p) / (1 - p), which is again U[0,1) given u >= p. The paper's schedule almost never masks
all N (M = N needs cos(pi tau / 2) = 1: tau = 0, or in float32 tau < ~2e-4, 1 sample in 5000; M = N - 1
in about 12 %), yet all-masked is the whole of deterministic inference; p trains that case directly,
where the image is the only evidence.
"""

from __future__ import annotations

import torch

from train.sampling import pretrain_mask_count


def training_mask(noise: torch.Tensor, full_mask_prob: float = 0.0) -> torch.Tensor:
    """noise (B, N+1) uniform in [0,1) -> masked (B, N) bool with M_b = floor(N cos(pi noise[b,0] / 2)),
    or, with full_mask_prob p > 0, all N masked where noise[b,0] < p and the schedule on the rest."""
    if not 0.0 <= full_mask_prob < 1.0:
        raise ValueError(f"full_mask_prob must be in [0, 1), got {full_mask_prob}")
    num_tokens = noise.shape[1] - 1
    u = noise[:, 0]
    tau = ((u - full_mask_prob) / (1.0 - full_mask_prob)).clamp(min=0.0) if full_mask_prob else u
    count = pretrain_mask_count(num_tokens, tau)  # (B,)
    if full_mask_prob:
        count = torch.where(u < full_mask_prob, torch.full_like(count, num_tokens), count)
    rank = noise[:, 1:].argsort(dim=1).argsort(dim=1)  # position -> its rank among the row's noise
    return rank < count[:, None]
