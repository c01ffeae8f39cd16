"""Fixture files for the training tests (not collected: no test_ prefix)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import torch

from train.geometry import axis_angle_to_matrix
from train.synthetic import body as body_lib
from train.synthetic.poses import sample_poses, sample_shapes


def write_smpl_model(path, rig, regressor, fmt="pkl"):
    """A small SMPL-format model with the keys smplx reads: the synthetic template as v_template, its
    skinning weights, 10 smooth shape directions, no pose correctives."""
    rng = np.random.default_rng(0)
    verts = rig.verts_template.astype(np.float64)
    shapedirs = np.zeros((6890, 3, 10))
    shapedirs[:, 1, 0] = 0.05 * (verts[:, 1] - verts[:, 1].mean())  # beta 0: taller
    shapedirs[:, :, 1:] = 0.002 * rng.standard_normal((6890, 3, 9))
    parents = np.array(body_lib.PARENTS, np.int64)
    kintree = np.stack([np.where(parents < 0, 4294967295, parents), np.arange(24)]).astype(np.int64)
    data = dict(
        v_template=verts, shapedirs=shapedirs, posedirs=np.zeros((6890, 3, 207)), J_regressor=regressor.double().numpy(),
        weights=rig.skin_weights.astype(np.float64), kintree_table=kintree, f=rig.faces.astype(np.int64),
    )  # fmt: skip
    if fmt == "pkl":
        with open(path, "wb") as fh:
            pickle.dump(data, fh)
    else:
        np.savez(path, **data)
    return path


def write_crop_fixture(folder, rig, count=6, seed=0):
    """A crop dataset in the format train/synthetic/crops.py writes (plain images: the reader only moves pixels)."""
    from train.synthetic.crops import FORMAT, INDEX_FILE, SHARD_FILE

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    body = body_lib.SyntheticBody(rig)
    pose, _ = sample_poses(count, gen)
    verts = body.pose(pose, torch.zeros(count, 3), sample_shapes(count, gen)).verts
    verts = (verts - verts.mean(1, keepdim=True)).numpy()
    rng = np.random.default_rng(seed)
    rot = axis_angle_to_matrix(
        torch.from_numpy(rng.normal(0, 0.3, (count, 3))).float() + torch.tensor([np.pi, 0, 0])
    ).numpy()
    arrays = dict(
        images=rng.integers(0, 255, (count, 224, 224, 3), dtype=np.uint8), masks=np.zeros((count, 224, 224), np.uint8),
        verts_canonical=verts.astype(np.float32), rotmat=rot.astype(np.float32), cam_crop=np.zeros((count, 3), np.float32),
        cam_t_full=np.tile(np.array([0.2, 0.1, 6.0], np.float32), (count, 1)), box_center=np.tile(np.array([700, 380], np.float32), (count, 1)),
        box_size=np.full(count, 400, np.float32), img_size_wh=np.tile(np.array([1280, 720], np.float32), (count, 1)),
        focal_full=np.full(count, 1000 / 224 * 1280, np.float32), body_pose=pose.numpy(), shape=np.zeros((count, 5), np.float32),
        visibility=np.ones(count, np.float32), pose_kind=np.zeros(count, np.int64),
    )  # fmt: skip
    half = count // 2
    entries = []
    for i, rows in enumerate((slice(0, half), slice(half, count))):
        np.savez(folder / SHARD_FILE.format(i), **{k: v[rows] for k, v in arrays.items()})
        entries.append({"file": SHARD_FILE.format(i), "samples": len(range(count)[rows])})
    index = {"format": FORMAT, "crop_hw": [224, 224], "image_wh": [1280, 720], "samples": count, "shards": entries}
    (folder / INDEX_FILE).write_text(json.dumps(index))
    return arrays
