"""Reader of the synthetic crop datasets that `mega-rt synth --dataset DIR` writes (train/synthetic/crops.py,
which defines the layout and its FORMAT).

Layout: DIR/index.json (format, shards, conventions) and DIR/shard-*.npz (uncompressed, memory-mapped
here). Per sample: images (H,W,3) uint8 RGB, verts_canonical (6890,3), rotmat (3,3), cam_t_full (3,),
box_center (2,), box_size, img_size_wh (2,), focal_full — with
verts_cam = verts_canonical @ rotmat.T + cam_t_full in the full frame's OpenCV camera (principal point
at the image centre). The crop is the box resampled to H x H (middle W columns when W < H).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.data.npz import open_npz
from train.synthetic.crops import FORMAT, INDEX_FILE, SHARD_ARRAYS


class DatasetError(ValueError):
    """A dataset file or folder that cannot be read; the message names it and the fix."""


@dataclass(frozen=True)
class RawSample:
    """One person before augmentation. Keypoints are in normalised box coordinates (see augment.py)."""

    image: np.ndarray  # (H,W,3) uint8 RGB: the source image the box lies in
    box_center: np.ndarray  # (2,) pixels of `image`
    box_size: float  # pixels of `image`
    verts_canonical: np.ndarray  # (6890,3) metres, no global rotation, centred on the vertex mean
    joints_canonical: np.ndarray  # (24,3) the SMPL joints in the same frame
    rotmat: np.ndarray  # (3,3) canonical -> camera (OpenCV axes)
    joints2d: np.ndarray  # (24,3) normalised box coordinates + confidence (0 = no label)


class CropShards:
    """Random access to a crop dataset; `joint_regressor` (24, 6890) gives the joints of each mesh."""

    def __init__(self, folder: str | Path, joint_regressor: np.ndarray):
        self.folder = Path(folder)
        index_path = self.folder / INDEX_FILE
        if not index_path.is_file():
            raise DatasetError(
                f"{self.folder}: no {INDEX_FILE} — not a crop dataset (write one with `mega-rt synth --dataset {self.folder}`)"
            )
        index = json.loads(index_path.read_text())
        if index.get("format") != FORMAT:
            raise DatasetError(
                f"{index_path}: format {index.get('format')!r}, expected {FORMAT!r} (regenerate with `mega-rt synth --dataset`)"
            )
        self.crop_hw = tuple(index["crop_hw"])
        self.shards, self.starts = [], [0]
        for entry in index["shards"]:
            path = self.folder / entry["file"]
            if not path.is_file():
                raise DatasetError(f"{path}: shard listed in {INDEX_FILE} is missing (regenerate the dataset)")
            arrays = open_npz(path)
            missing = [name for name in SHARD_ARRAYS if name not in arrays]
            if missing:
                raise DatasetError(
                    f"{path}: shard lacks {', '.join(missing)} (regenerate the dataset with `mega-rt synth --dataset`)"
                )
            if len(arrays["images"]) != entry["samples"]:
                raise DatasetError(f"{path}: {len(arrays['images'])} samples, {INDEX_FILE} says {entry['samples']}")
            self.shards.append(arrays)
            self.starts.append(self.starts[-1] + entry["samples"])
        self.regressor = np.asarray(joint_regressor, np.float32)

    def __len__(self) -> int:
        return self.starts[-1]

    def _locate(self, index: int) -> tuple[dict, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {self.folder} ({len(self)} samples)")
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.shards[shard], index - self.starts[shard]

    def raw(self, index: int) -> RawSample:
        shard, row = self._locate(index)
        verts = np.asarray(shard["verts_canonical"][row], np.float32)
        rotmat = np.asarray(shard["rotmat"][row], np.float32)
        joints = self.regressor @ verts
        # ground-truth keypoints: perspective projection of the camera-frame joints into the box
        joints_cam = joints @ rotmat.T + np.asarray(shard["cam_t_full"][row], np.float32)
        focal = float(shard["focal_full"][row])
        principal = np.asarray(shard["img_size_wh"][row], np.float32) / 2.0
        uv = joints_cam[:, :2] / joints_cam[:, 2:3] * focal + principal
        box_center = np.asarray(shard["box_center"][row], np.float32)
        box_size = float(shard["box_size"][row])
        joints2d = np.concatenate([(uv - box_center) * 2.0 / box_size, np.ones((len(uv), 1), np.float32)], 1)
        h, w = self.crop_hw
        # the stored crop is the box already: centre at (w/2, h/2), side h pixels
        return RawSample(
            image=np.asarray(shard["images"][row]), box_center=np.array([w / 2.0, h / 2.0], np.float32), box_size=float(h),
            verts_canonical=verts, joints_canonical=joints.astype(np.float32), rotmat=rotmat, joints2d=joints2d.astype(np.float32),
        )  # fmt: skip
