"""Canonical meshes for the tokenizer and pre-training stages (no images).

A source stores pose parameters and poses a whole batch at once (`verts(indices)`), which costs a few
ms per batch; the meshes themselves are never held in memory.
- `SyntheticMeshes`: `count` bodies drawn once from the seed with train/synthetic/poses.py's pose and shape
  samplers (all four pose archetypes), posed with the synthetic rig.
- `AmassMeshes`: every `stride`-th frame of the AMASS / BEDLAM animation npz files under a folder
  (`poses` (T, 66 | 72 | 156 | 165), `betas`, optional `gender`), posed with the user's SMPL model.
Both return meshes without global rotation, centred on the vertex mean (MEGA's canonical frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from train.data.crops import DatasetError
from train.data.smpl import SmplBody, body_pose_from


class SyntheticMeshes:
    name = "synthetic"

    def __init__(self, count: int, seed: int, body=None):
        from train.synthetic.body import SyntheticBody
        from train.synthetic.poses import sample_poses, sample_shapes

        gen = torch.Generator().manual_seed(seed)
        self.body = body if body is not None else SyntheticBody()
        chunks = [sample_poses(min(4096, count - s), gen)[0] for s in range(0, count, 4096)]
        self.body_pose = torch.cat(chunks)
        self.shape = sample_shapes(count, gen)

    def __len__(self) -> int:
        return len(self.body_pose)

    @torch.no_grad()
    def verts(self, indices: Sequence[int]) -> torch.Tensor:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        pose = self.body_pose[idx]
        verts = self.body.pose(pose, torch.zeros(len(idx), 3), self.shape[idx]).verts
        return verts - verts.mean(1, keepdim=True)


class AmassMeshes:
    name = "amass"

    def __init__(self, folder: str | Path, smpl: SmplBody, stride: int = 1):
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(
                f"{folder}: AMASS/BEDLAM folder not found (set amass_dir to a folder of animation .npz files)"
            )
        poses, betas, genders = [], [], []
        for path in sorted(folder.rglob("*.npz")):
            with np.load(path, allow_pickle=False) as z:
                if "poses" not in z.files:  # AMASS ships shape-only files (shape.npz) beside the motions
                    continue
                p = z["poses"][:: max(1, stride)]
                b = z["betas"] if "betas" in z.files else np.zeros(10, np.float32)
                g = str(z["gender"]) if "gender" in z.files else "neutral"
            poses.append(body_pose_from(p))
            b = np.asarray(b, np.float32)
            betas.append(
                np.broadcast_to(b[:10] if b.ndim == 1 else b[:: max(1, stride), :10], (len(p), min(10, b.shape[-1])))
            )
            genders += [g] * len(p)
        if not poses:
            raise DatasetError(f"{folder}: no animation .npz with a 'poses' array found")
        self.body_pose = torch.from_numpy(np.concatenate(poses))
        self.betas = torch.from_numpy(np.concatenate(betas).astype(np.float32))
        self.gender = np.asarray(genders)
        self.smpl = smpl

    def __len__(self) -> int:
        return len(self.body_pose)

    def verts(self, indices: Sequence[int]) -> torch.Tensor:
        idx = np.asarray(list(indices), np.int64)
        out = torch.empty(len(idx), 6890, 3)
        for gender in np.unique(self.gender[idx]):  # one batched SMPL call per gender
            rows = np.flatnonzero(self.gender[idx] == gender)
            sel = torch.from_numpy(idx[rows])
            out[torch.from_numpy(rows)] = self.smpl.canonical(self.body_pose[sel], self.betas[sel], str(gender))[0]
        return out
