"""Readers of the standard HMR annotation files (one person crop per row).

Two layouts are recognised by their keys:
- SPIN / CLIFF / BEDLAM style (COCO, MPII, Human3.6M, MPI-INF-3DHP training files): `imgname`,
  `center` (N,2), `scale` (N,) with box side = 200 * scale, `pose` or `pose_cam` (N, 72 | 66+), `shape`
  or `betas`; optional `part` (N,24,3) SPIN keypoints (pixels + visibility), `gender`.
- VQ-HPS preprocessing (its 3DPW and EMDB test files): `imgname`, `center`, `scale` with box side =
  200 / scale (it stores the inverse), `root_orient` (N,3), `pose_body` (N,63), `betas`, `gender`,
  optional `j2d` (N,24,3) (the 24 SMPL joints in pixels).
Pose rows are in the camera frame (their global orientation is the camera-frame rotation), which is
what MEGA predicts. Ground-truth meshes come from the user's SMPL model (train/data/smpl.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from train.data.crops import DatasetError, RawSample
from train.data.joints import SPIN_PART_TO_SMPL
from train.data.smpl import SmplBody, body_pose_from
from train.geometry import axis_angle_to_matrix


def _first(data, *names):
    for n in names:
        if n in data:
            return n
    return None


class HmrAnnotations:
    """Random access to one annotation file; images are read from `image_dir` / imgname."""

    def __init__(self, path: str | Path, image_dir: str | Path, smpl: SmplBody):
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: annotation file not found")
        try:
            data = dict(np.load(self.path, allow_pickle=False))
        except ValueError:
            raise DatasetError(
                f"{self.path}: holds Python objects; re-save it with plain arrays (np.savez with str/float arrays)"
            ) from None
        self.image_dir = Path(image_dir)
        self.smpl = smpl
        for key in ("imgname", "center", "scale"):
            if key not in data:
                raise DatasetError(
                    f"{self.path}: missing key {key!r} (expected imgname, center, scale, and pose/shape or root_orient/pose_body/betas)"
                )
        self.imgname = data["imgname"].astype(str)
        n = len(self.imgname)
        self.center = data["center"].astype(np.float32).reshape(n, 2)
        scale = data["scale"].astype(np.float32).reshape(n, -1)[:, 0]
        if "root_orient" in data and "pose_body" in data:  # VQ-HPS layout
            self.layout = "vqhps"
            self.box_size = 200.0 / scale
            poses = np.concatenate([data["root_orient"].reshape(n, 3), data["pose_body"].reshape(n, -1)[:, :63]], 1)
            betas_key, keypoints_key = _first(data, "betas", "shape"), _first(data, "j2d")
        else:
            pose_key = _first(data, "pose", "pose_cam")
            betas_key = _first(data, "shape", "betas")
            if pose_key is None or betas_key is None:
                raise DatasetError(
                    f"{self.path}: no SMPL pose/shape (keys pose|pose_cam and shape|betas, or root_orient+pose_body+betas)"
                )
            self.layout = "spin"
            self.box_size = 200.0 * scale
            poses = data[pose_key].reshape(n, -1)
            keypoints_key = _first(data, "part", "j2d")
        self.global_orient = poses[:, :3].astype(np.float32)
        self.body_pose = body_pose_from(poses)
        self.betas = data[betas_key].astype(np.float32).reshape(n, -1)
        self.gender = data["gender"].astype(str) if "gender" in data else np.full(n, "neutral")
        self.keypoints = data[keypoints_key].astype(np.float32) if keypoints_key else None
        self.keypoint_map = SPIN_PART_TO_SMPL if keypoints_key == "part" else None  # SPIN order -> SMPL joints
        if self.keypoints is not None and (
            self.keypoints.ndim != 3 or self.keypoints.shape[1] < 24 or self.keypoints.shape[2] != 3
        ):
            raise DatasetError(f"{self.path}: keypoints {keypoints_key} must be (N,24,3), got {self.keypoints.shape}")

    def __len__(self) -> int:
        return len(self.imgname)

    def image_path(self, index: int) -> Path:
        name = Path(self.imgname[index])
        return name if name.is_absolute() else self.image_dir / name

    def read_image(self, index: int) -> np.ndarray:
        import cv2

        path = self.image_path(index)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(
                f"{path}: image of {self.path.name} row {index} not found or unreadable (check image_dirs)"
            )
        return image[..., ::-1]  # BGR -> RGB

    def mesh(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Canonical verts (6890,3) and SMPL joints (24,3) of row `index`."""
        verts, joints = self.smpl.canonical(
            torch.from_numpy(self.body_pose[index : index + 1]),
            torch.from_numpy(self.betas[index : index + 1]),
            str(self.gender[index]),
        )
        return verts[0].numpy(), joints[0].numpy()

    def keypoints2d(self, index: int) -> np.ndarray:
        """(24,3) SMPL-joint keypoints in normalised box coordinates, confidence 0 where unlabelled."""
        out = np.zeros((24, 3), np.float32)
        if self.keypoints is None:
            return out
        kp = self.keypoints[index]
        if self.keypoint_map is not None:
            for src, dst in self.keypoint_map.items():
                out[dst] = kp[src]
        else:
            out[:] = kp[:24]
        out[:, :2] = (out[:, :2] - self.center[index]) * 2.0 / self.box_size[index]
        out[:, 2] = np.clip(out[:, 2], 0.0, 1.0)  # VQ-HPS 3DPW stores depth there: any positive value = labelled
        return out

    def raw(self, index: int) -> RawSample:
        verts, joints = self.mesh(index)
        rotmat = axis_angle_to_matrix(torch.from_numpy(self.global_orient[index])).numpy().astype(np.float32)
        return RawSample(
            image=self.read_image(index), box_center=self.center[index], box_size=float(self.box_size[index]),
            verts_canonical=verts.astype(np.float32), joints_canonical=joints.astype(np.float32), rotmat=rotmat,
            joints2d=self.keypoints2d(index),
        )  # fmt: skip
