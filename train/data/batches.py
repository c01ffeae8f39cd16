"""Whole batches from sample numbers: `dataset[samples]` -> dict of tensors (used with batch_size=None).

A batch is built in one call so that meshes are posed in one batched call; every random choice comes
from the sample number (mixing.py), so batches do not depend on the process or worker that builds them.
Each batch carries `keys` (B,3) = (source, index, flipped) so that stages can cache per-mesh work, and
`mask_noise` (B, N+1) for the token mask (train/masking.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from train.data import augment
from train.data.mixing import Mixer, Sequential, sample_rng

NUM_TOKENS = 54


def _mask_noise(seed: int, samples: Sequence[int], num_tokens: int) -> torch.Tensor:
    return torch.from_numpy(
        np.stack([sample_rng(seed, g, stream=2).random(num_tokens + 1) for g in samples]).astype(np.float32)
    )


class MeshBatches(torch.utils.data.Dataset):
    """Canonical meshes from mesh sources (train/data/meshes.py), mixed by ratio."""

    def __init__(self, sources: Sequence, ratios: Sequence[float] = (), seed: int = 0, num_tokens: int = NUM_TOKENS):
        self.sources = list(sources)
        self.mixer = Mixer([len(s) for s in self.sources], ratios, seed)
        self.seed, self.num_tokens = seed, num_tokens

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def __getitem__(self, samples: Sequence[int]) -> dict[str, torch.Tensor]:
        keys = np.array([self.mixer(g) for g in samples], np.int64).reshape(-1, 2)
        verts = torch.empty(len(keys), 6890, 3)
        for s, source in enumerate(self.sources):
            rows = np.flatnonzero(keys[:, 0] == s)
            if rows.size:
                verts[torch.from_numpy(rows)] = source.verts(keys[rows, 1].tolist())
        keys = np.concatenate([keys, np.zeros((len(keys), 1), np.int64)], 1)
        return {
            "verts_canonical": verts,
            "keys": torch.from_numpy(keys),
            "mask_noise": _mask_noise(self.seed, samples, self.num_tokens),
        }


class TokenBatches(torch.utils.data.Dataset):
    """Token sequences of meshes tokenized once (pre-training reads only tokens), mixed by ratio."""

    def __init__(self, tokens: Sequence[torch.Tensor], ratios: Sequence[float] = (), seed: int = 0):
        self.tokens = [t.long() for t in tokens]
        self.mixer = Mixer([len(t) for t in self.tokens], ratios, seed)
        self.seed, self.num_tokens = seed, self.tokens[0].shape[1]

    def __len__(self) -> int:
        return sum(len(t) for t in self.tokens)

    def __getitem__(self, samples: Sequence[int]) -> dict[str, torch.Tensor]:
        keys = [self.mixer(g) for g in samples]
        return {
            "tokens": torch.stack([self.tokens[s][i] for s, i in keys]),
            "mask_noise": _mask_noise(self.seed, samples, self.num_tokens),
        }


class HmrBatches(torch.utils.data.Dataset):
    """Augmented person crops from image sources (crops.py, hmr_npz.py), mixed by ratio."""

    def __init__(self, sources: Sequence, ratios: Sequence[float], seed: int, input_hw: tuple[int, int], mean, std,
                 symmetry: np.ndarray, joint_mirror: np.ndarray, augment_args: dict | None = None,
                 num_tokens: int = NUM_TOKENS, sequential: bool = False):  # fmt: skip
        self.sources = list(sources)
        sizes = [len(s) for s in self.sources]
        self.mixer = Sequential(sizes) if sequential else Mixer(sizes, ratios, seed)
        self.seed, self.input_hw, self.mean, self.std = seed, tuple(input_hw), mean, std
        self.symmetry, self.joint_mirror = np.asarray(symmetry), np.asarray(joint_mirror)
        self.augment_args = augment_args  # None: no augmentation (evaluation)
        self.num_tokens = num_tokens

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def item(self, source: int, index: int, sample: int) -> dict[str, np.ndarray]:
        raw = self.sources[source].raw(index)
        if self.augment_args is None:
            aug = augment.Augmentation()
        else:
            aug = augment.sample_augmentation(sample_rng(self.seed, sample, stream=3), **self.augment_args)
        crop = augment.warp_crop(raw.image, raw.box_center, raw.box_size, self.input_hw, aug)
        verts, joints, rotmat = augment.augment_3d(
            raw.verts_canonical, raw.joints_canonical, raw.rotmat, aug, self.symmetry, self.joint_mirror
        )
        return {
            "images": augment.normalise_image(crop, self.mean, self.std),
            "verts_canonical": np.ascontiguousarray(verts, np.float32),
            "joints_canonical": np.ascontiguousarray(joints, np.float32),
            "rotmat": rotmat,
            "joints2d": augment.augment_keypoints(raw.joints2d, aug, self.joint_mirror),
            "keys": np.array([source, index, int(aug.flip)], np.int64),
        }

    def __getitem__(self, samples: Sequence[int]) -> dict[str, torch.Tensor]:
        items = [self.item(*self.mixer(g), g) for g in samples]
        batch = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
        batch["mask_noise"] = _mask_noise(self.seed, samples, self.num_tokens)
        return batch


class StepSampler(torch.utils.data.Sampler):
    """Yields, for steps [start, stop), this process's sample numbers of every micro-step."""

    def __init__(self, start: int, stop: int, batch_size: int, grad_accum: int, rank: int, world: int):
        from train.data.mixing import micro_batch_samples

        self._range = lambda step, micro: micro_batch_samples(step, micro, rank, batch_size, grad_accum, world)
        self.start, self.stop, self.grad_accum = start, stop, grad_accum

    def __iter__(self):
        for step in range(self.start, self.stop):
            for micro in range(self.grad_accum):
                yield list(self._range(step, micro))

    def __len__(self) -> int:
        return (self.stop - self.start) * self.grad_accum
