"""An SMPL-format model file, meshes posed with it from known parameters, and a results file holding
them (the layout of docs/results-format.md). Not collected: no test_ prefix."""

from __future__ import annotations

import numpy as np
import torch

from tests.train.fixtures import write_smpl_model
from train.data.joints import synthetic_joint_regressor
from train.geometry import axis_angle_to_matrix
from train.synthetic import body as body_lib

FPS = 25.0


def smpl_model_file(folder, assets_dir):
    rig = body_lib.load_rig(assets_dir)
    return write_smpl_model(folder / "SMPL_NEUTRAL.pkl", rig, synthetic_joint_regressor(assets_dir))


def known_motion(model, frames: int, seed: int):
    """Parameters of a person walking in front of the camera (upright: a half turn about x) and its meshes."""
    from realtime.fit_smpl import matrix_to_axis_angle

    g = torch.Generator().manual_seed(seed)
    pose = 0.3 * torch.randn(1, 69, generator=g) + 0.04 * torch.randn(frames, 69, generator=g).cumsum(0)
    upright = axis_angle_to_matrix(torch.tensor([[np.pi, 0.0, 0.0]]))
    orient = matrix_to_axis_angle(upright @ axis_angle_to_matrix(0.25 * torch.randn(frames, 3, generator=g)))
    transl = torch.tensor([0.3 * seed - 0.3, 0.2, 4.0]) + 0.03 * torch.randn(frames, 3, generator=g).cumsum(0)
    betas = torch.randn(1, model.num_betas, generator=g)
    with torch.no_grad():
        verts, joints = model.forward(orient, pose, betas.expand(frames, -1), transl)
    return dict(global_orient=orient, body_pose=pose, transl=transl, betas=betas[0], verts=verts, joints=joints)


def write_results(path, verts, frame, track_id, faces, fps=FPS, vertex_std=None):
    verts = np.asarray(verts, np.float32)
    arrays = dict(
        schema=np.array("mega-rt-results/1"), frame=np.asarray(frame, np.int32), track_id=np.asarray(track_id, np.int64),
        verts=verts.astype(np.float16), faces=np.asarray(faces, np.int32), fps=np.float32(fps),
        image_size_wh=np.array([640, 480], np.int32), focal=np.float32(1000 / 224 * 640), samples=np.int32(1 if vertex_std is None else 8),
    )  # fmt: skip
    if vertex_std is not None:
        arrays["vertex_std"] = np.asarray(vertex_std, np.float16)
    np.savez(path, **arrays)
    return path
