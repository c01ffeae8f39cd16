"""The synthetic crop dataset: person-centred crops at the backbone input size with exact ground truth.

    mega-rt synth --dataset DIR --samples 1000 [--crop 256x192]

Each crop is its own scene: one person (sometimes with a second one beside them, nearer or farther) in
a random pose, shape, heading and distance, with clothes and a background, cut from a full frame of
`image_wh` whose camera is the pipeline's (`train.geometry.default_focal`). Layout, read by
`train.data.crops`:

    DIR/index.json         FORMAT, crop size, frame size, seed, the shards and their sample counts,
                           the pose kinds, the shape names and the conventions
    DIR/shard-NNNNN.npz    uncompressed npz (memory-mapped by the reader), SHARD_ARRAYS per sample

Shard arrays (N = samples in the shard): images (N,H,W,3) uint8 RGB, masks (N,H,W) uint8,
verts_canonical (N,6890,3), rotmat (N,3,3), cam_crop (N,3) = (s, tx, ty) such that
`cam_crop_to_full(cam_crop, box_center, box_size, img_size_wh, focal_full)` == cam_t_full (N,3),
box_center (N,2), box_size (N,), img_size_wh (N,2), focal_full (N,), body_pose (N,23,3),
shape (N,5), visibility (N,), pose_kind (N,) (index into POSE_KINDS).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from train.geometry import default_focal
from train.io import atomic_write, write_json_atomic
from train.render import MeshRenderer, RendererConfig
from train.synthetic.appearance import clothing_colors, render_background, sample_background_style
from train.synthetic.body import SHAPE_NAMES, SyntheticBody
from train.synthetic.camera import CameraRig, cam_full_to_crop, crop_camera, place_camera, project_points
from train.synthetic.poses import POSE_KINDS, sample_poses, sample_shapes
from train.synthetic.scene import canonical_verts, pose_people, visible_fraction

FORMAT = "mega-rt-synth-crops/1"  # bump when the layout or the meaning of an array changes
INDEX_FILE = "index.json"
SHARD_FILE = "shard-{:05d}.npz"
SHARD_ARRAYS = (
    "images", "masks", "verts_canonical", "rotmat", "cam_crop", "cam_t_full", "box_center", "box_size",
    "img_size_wh", "focal_full", "body_pose", "shape", "visibility", "pose_kind",
)  # fmt: skip
CONVENTIONS = (
    "verts_cam = verts_canonical @ rotmat.T + cam_t_full (OpenCV camera frame, metres); "
    "crop pixel = (full pixel - box_center) * H / box_size + H / 2 (256x192: middle 192 of 256 columns); images RGB"
)


@dataclass(frozen=True)
class CropDatasetConfig:
    samples: int = 1000
    crop_hw: tuple[int, int] = (224, 224)  # backbone input (height, width): (224, 224) or (256, 192)
    image_wh: tuple[int, int] = (1280, 720)  # the full frame the crop is cut from (sets the focal length)
    shard_size: int = 256
    seed: int = 0
    occluder_prob: float = 0.3  # a second person, partly in front or behind
    box_scale: tuple[float, float] = (1.1, 1.35)  # square box side / person's extent
    msaa: int = 4

    def __post_init__(self):
        if self.crop_hw not in ((224, 224), (256, 192)):
            raise ValueError(f"crop_hw must be (224, 224) or (256, 192), got {self.crop_hw}")


def _sample_crop(cfg: CropDatasetConfig, body, renderer, rng: np.random.Generator, gen: torch.Generator) -> dict:
    w, h = cfg.image_wh
    rig = place_camera(w, h, default_focal(w, h), float(rng.uniform(1.3, 1.9)))
    people = 2 if rng.random() < cfg.occluder_prob else 1
    body_pose, kinds = sample_poses(people, gen)
    shape = sample_shapes(people, gen)
    orient = torch.zeros(people, 3)
    orient[:, 1] = torch.from_numpy(rng.uniform(0, 2 * math.pi, people)).float()
    tilt = torch.from_numpy(rng.normal(0, math.radians(6), (people, 2))).float()  # lean a little
    orient = torch.stack([tilt[:, 0], orient[:, 1], tilt[:, 1]], 1)
    z = rng.uniform(rig.near_m, rig.far_m)
    pos = np.zeros((people, 2))
    pos[0] = (rng.uniform(-1, 1) * rig.half_width_at(z), z)
    if people == 2:  # an occluder beside the person, nearer or farther
        pos[1] = (
            pos[0, 0] + rng.choice([-1, 1]) * rng.uniform(0.3, 0.9),
            z + rng.choice([-1, 1]) * rng.uniform(1.0, 3.0),
        )
    truth = pose_people(body_pose, orient, shape, pos, rig, body)

    uv = project_points(truth.verts_cam[0], rig.camera)
    (x0, y0), (x1, y1) = uv.min(0), uv.max(0)
    aspect = cfg.crop_hw[0] / cfg.crop_hw[1]
    box_size = max(y1 - y0, (x1 - x0) * aspect) * rng.uniform(*cfg.box_scale)
    box_center = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + rng.normal(0, 0.04 * box_size, 2)
    cam = crop_camera(rig.camera, box_center, box_size, cfg.crop_hw)
    crop_rig = CameraRig(cam, rig.rot_cw, rig.position, rig.near_m, rig.far_m)
    background = render_background(crop_rig, sample_background_style(rng, rig), rng)
    colors = np.stack([clothing_colors(body, rng) for _ in range(people)])
    res = renderer.render(truth.verts_cam, cam, colors, background)
    full_wh = torch.tensor([w, h], dtype=torch.float32)
    cam_crop = cam_full_to_crop(
        torch.from_numpy(truth.cam_t[:1]), torch.from_numpy(box_center[None]).float(), torch.tensor([box_size]).float(),
        full_wh[None], float(rig.camera.fx),
    )[0]  # fmt: skip
    return dict(
        images=res.image, masks=(res.mask == 1).astype(np.uint8),
        verts_canonical=canonical_verts(body, body_pose[:1], shape[:1])[0].numpy(),
        rotmat=truth.rotmat[0], cam_crop=cam_crop.numpy(), cam_t_full=truth.cam_t[0],
        box_center=box_center.astype(np.float32), box_size=np.float32(box_size),
        img_size_wh=np.array([w, h], np.float32), focal_full=np.float32(rig.camera.fx),
        body_pose=body_pose[0].numpy(), shape=shape[0].numpy(),
        visibility=visible_fraction(truth.verts_cam, res.mask, res.depth, cam)[0],
        pose_kind=np.int64(POSE_KINDS.index(kinds[0])),
    )  # fmt: skip


def _check_shard(samples: int):
    def verify(path: Path) -> None:
        with np.load(path) as z:
            if sorted(z.files) != sorted(SHARD_ARRAYS) or len(z["box_size"]) != samples:
                raise OSError(
                    f"{path}: holds {sorted(z.files)}, expected the {samples} samples of {sorted(SHARD_ARRAYS)}"
                )

    return verify


def write_crop_dataset(
    out_dir: str | os.PathLike, cfg: CropDatasetConfig, body: SyntheticBody | None = None, progress=None
) -> list[Path]:
    """Write `cfg.samples` crops as npz shards plus `index.json` (layout above); returns the shard paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = body or SyntheticBody()
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    shards, entries, done = [], [], 0
    with MeshRenderer(body.faces, RendererConfig(samples=cfg.msaa)) as renderer:
        while done < cfg.samples:
            n = min(cfg.shard_size, cfg.samples - done)
            rows = []
            for _ in range(n):
                rows.append(_sample_crop(cfg, body, renderer, rng, gen))
                done += 1
                if progress:
                    progress(done)
            path = out_dir / SHARD_FILE.format(len(shards))
            with atomic_write(path, verify=_check_shard(n)) as tmp:
                np.savez(tmp, **{key: np.stack([r[key] for r in rows]) for key in rows[0]})
            shards.append(path)
            entries.append({"file": path.name, "samples": n})
    index = {
        "format": FORMAT, "crop_hw": list(cfg.crop_hw), "image_wh": list(cfg.image_wh), "seed": cfg.seed,
        "samples": cfg.samples, "shards": entries, "pose_kinds": list(POSE_KINDS), "shape_names": list(SHAPE_NAMES),
        "conventions": CONVENTIONS,
    }  # fmt: skip
    write_json_atomic(out_dir / INDEX_FILE, index)
    return shards
