"""SMPL through smplx: canonical meshes (no global rotation, centred on the vertex mean) from pose and shape.

The SMPL model is licensed, so users bring the file: a `.pkl` or `.npz` with smplx's keys (v_template,
shapedirs, posedirs, J_regressor, weights, kintree_table, f), or a folder holding
`SMPL_{NEUTRAL,MALE,FEMALE}.pkl` (then each sample's gender picks the file, neutral when unknown).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SMPL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
NUM_BODY_POSE = 69  # 23 joints x 3 (SMPL; SMPL-H/X hands are dropped, the wrists' children stay at rest)


class SmplError(ValueError):
    """An SMPL model file that cannot be used; the message names the file and the fix."""


def load_struct(path: Path):
    from smplx.utils import Struct

    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            data = {}
            for k in z.files:
                try:
                    data[k] = z[k]
                except ValueError:  # an object array (SMPL-X's joint2num, part2num) needs pickle; none is used
                    pass
    elif path.suffix == ".pkl":
        from train.safe_pickle import UnsafePickle, load_data_pickle

        try:
            data = load_data_pickle(path)
        except UnsafePickle as e:
            raise SmplError(str(e)) from None
        if not isinstance(data, dict):
            raise SmplError(f"{path}: not an SMPL model file (a pickle of {type(data).__name__}, not of a dict)")
    else:
        raise SmplError(f"{path}: an SMPL model must be a .pkl or .npz file (or a folder of SMPL_<GENDER>.pkl)")
    missing = [k for k in SMPL_KEYS if k not in data]
    if missing:
        raise SmplError(f"{path}: not an SMPL model file, missing key(s) {', '.join(missing)}")
    return Struct(**data)


class SmplBody:
    """Batched canonical SMPL meshes; one smplx model per gender, built on first use."""

    def __init__(self, model_path: str | Path):
        self.path = Path(model_path)
        if not str(model_path):
            raise SmplError(
                "this data needs an SMPL model: set smpl_model (a .pkl/.npz file or a folder of SMPL_<GENDER>.pkl)"
            )
        if not self.path.exists():
            raise SmplError(f"{self.path}: SMPL model not found (set smpl_model to your SMPL .pkl/.npz file or folder)")
        self._models: dict[str, torch.nn.Module] = {}

    def _file_for(self, gender: str) -> Path:
        if self.path.is_file():
            return self.path
        name = {"m": "MALE", "male": "MALE", "f": "FEMALE", "female": "FEMALE"}.get(gender.lower(), "NEUTRAL")
        for candidate in (
            self.path / f"SMPL_{name}.pkl",
            self.path / f"SMPL_{name}.npz",
            self.path / "SMPL_NEUTRAL.pkl",
        ):
            if candidate.is_file():
                return candidate
        raise SmplError(f"{self.path}: no SMPL_{name}.pkl (or SMPL_NEUTRAL.pkl) in this folder")

    def model(self, gender: str = "neutral") -> torch.nn.Module:
        path = self._file_for(gender)
        key = str(path)
        if key not in self._models:
            import smplx

            struct = load_struct(path)
            num_betas = int(np.asarray(struct.shapedirs).shape[-1])
            self._models[key] = smplx.SMPL(str(path), data_struct=struct, num_betas=num_betas).eval()
        return self._models[key]

    @torch.no_grad()
    def canonical(
        self, body_pose: torch.Tensor, betas: torch.Tensor, gender: str = "neutral"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """body_pose (B,69) axis-angle, betas (B,K) -> verts (B,6890,3), joints (B,24,3), both minus the
        vertex mean (MEGA's canonical frame: no global rotation, centred)."""
        model = self.model(gender)
        k = model.num_betas
        betas = betas.float()
        betas = (
            betas[:, :k]
            if betas.shape[1] >= k
            else torch.cat([betas, betas.new_zeros(len(betas), k - betas.shape[1])], 1)
        )
        out = model(
            betas=betas,
            body_pose=body_pose.float(),
            global_orient=body_pose.new_zeros(len(body_pose), 3).float(),
            transl=body_pose.new_zeros(len(body_pose), 3).float(),
        )
        centre = out.vertices.mean(1, keepdim=True)
        return out.vertices - centre, out.joints[:, :24] - centre


def body_pose_from(poses: np.ndarray) -> np.ndarray:
    """(N, 66 | 72 | 156 | 165) axis-angle rows (global orient first) -> (N, 69) SMPL body pose.

    72: SMPL (the two hand joints kept). 66, SMPL-H (156) and SMPL-X (165): the 21 body joints; SMPL's
    two hand joints, which those models replace with fingers, stay at rest.
    """
    poses = np.asarray(poses, np.float32)
    if poses.ndim != 2 or poses.shape[1] < 66:
        raise ValueError(f"pose rows must hold at least 66 values (global orient + 21 body joints), got {poses.shape}")
    if poses.shape[1] == 72:
        return poses[:, 3:72]
    out = np.zeros((poses.shape[0], NUM_BODY_POSE), np.float32)
    out[:, :63] = poses[:, 3:66]
    return out
