"""Which sample comes next: a pure function of (seed, sample number), so data order survives resumes.

Sample number g counts samples from the start of the run (step * batch_size + offset). Its source is
drawn with the mixing ratios from a generator keyed by (seed, g); within a source, g walks that
source's shuffled order, reshuffled every pass (epoch) with a generator keyed by (seed, source, epoch).
Nothing depends on how many processes read the data or where a run was stopped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sample_rng(seed: int, sample: int, stream: int = 0) -> np.random.Generator:
    """The generator of one sample's randomness (augmentation, masks); `stream` separates uses."""
    return np.random.default_rng([seed, sample, stream])


class Mixer:
    """Maps sample numbers to (source, index) for sources of the given sizes and shares."""

    def __init__(self, sizes: Sequence[int], ratios: Sequence[float] = (), seed: int = 0):
        if not sizes or min(sizes) < 1:
            raise ValueError(f"every data source needs at least one sample, got sizes {list(sizes)}")
        ratios = np.asarray(ratios if len(ratios) else sizes, np.float64)
        if len(ratios) != len(sizes) or (ratios < 0).any() or ratios.sum() <= 0:
            raise ValueError(f"need one non-negative mixing ratio per source ({len(sizes)}), got {list(ratios)}")
        self.sizes = [int(s) for s in sizes]
        self.cumulative = np.cumsum(ratios / ratios.sum())
        self.seed = seed
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def _order(self, source: int, epoch: int) -> np.ndarray:
        key = (source, epoch)
        if key not in self._orders:
            if len(self._orders) > 4 * len(self.sizes):  # keep only recent epochs
                self._orders.clear()
            rng = np.random.default_rng([self.seed, source, epoch, 0x5EED])
            self._orders[key] = rng.permutation(self.sizes[source])
        return self._orders[key]

    def source_of(self, sample: int) -> int:
        if len(self.sizes) == 1:
            return 0
        u = sample_rng(self.seed, sample, stream=1).random()
        return int(min(np.searchsorted(self.cumulative, u, side="right"), len(self.sizes) - 1))

    def __call__(self, sample: int) -> tuple[int, int]:
        source = self.source_of(sample)
        size = self.sizes[source]
        return source, int(self._order(source, sample // size)[sample % size])


class Sequential:
    """Sample g -> the g-th sample of the sources laid end to end (evaluation: every sample once, in order)."""

    def __init__(self, sizes: Sequence[int]):
        self.sizes = [int(s) for s in sizes]
        self.starts = np.cumsum([0] + self.sizes)

    def __call__(self, sample: int) -> tuple[int, int]:
        if not 0 <= sample < self.starts[-1]:
            raise IndexError(f"sample {sample} out of range ({self.starts[-1]} samples)")
        source = int(np.searchsorted(self.starts, sample, side="right")) - 1
        return source, sample - int(self.starts[source])


def micro_batch_samples(step: int, micro: int, rank: int, batch_size: int, grad_accum: int, world: int) -> range:
    """Sample numbers of one process's share of one micro-step.

    The global batch of optimiser step `step` is samples [step*B, (step+1)*B); micro-step m takes a
    contiguous B/A of them, split into W contiguous parts by rank. So W processes with accumulation
    read exactly the samples one process would read in one big step.
    """
    per = batch_size // (grad_accum * world)
    start = step * batch_size + micro * (batch_size // grad_accum) + rank * per
    return range(start, start + per)
