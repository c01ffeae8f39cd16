"""Joint sets: a vertex -> joint regressor for the synthetic body, and the 2D keypoint maps of HMR files.

Metrics and the 2D reprojection loss need joints from *vertices* (a predicted mesh has no skeleton).
For the synthetic body the joint centre of part k is, by construction (train/synthetic/body.py), the centroid of
the band of vertices where part k meets its parent; the same average over the posed vertices is a
linear regressor (24, 6890) that follows the mesh wherever it goes. Real data brings its own regressor
(SMPL's J_regressor, or the H36M one for evaluation: `train.joints.load_joint_regressor`).
"""

from __future__ import annotations

import numpy as np
import torch

from train.synthetic import body as body_lib

# SPIN / CLIFF `part` keypoints (24): the joints with an SMPL counterpart -> SMPL joint index.
# The LSP hips sit lower and wider than SMPL's, which the 2D camera loss tolerates (as in SPIN).
SPIN_PART_TO_SMPL = {
    0: 8,  # right ankle
    1: 5,  # right knee
    2: 2,  # right hip
    3: 1,  # left hip
    4: 4,  # left knee
    5: 7,  # left ankle
    6: 21,  # right wrist
    7: 19,  # right elbow
    8: 17,  # right shoulder
    9: 16,  # left shoulder
    10: 18,  # left elbow
    11: 20,  # left wrist
    12: 12,  # neck
    14: 0,  # pelvis (MPII)
}


def synthetic_joint_regressor(assets_dir=None) -> torch.Tensor:
    """(24, 6890) float32, rows sum to 1: joint k = mean of the vertices on the part-k / parent boundary."""
    from train import assets

    verts, faces = body_lib.read_template_ply(assets.find_asset(body_lib.TEMPLATE_ASSET, assets_dir))
    member = body_lib.read_segmentation(assets.find_asset(body_lib.SEGMENTATION_ASSET, assets_dir), len(verts))
    edges = body_lib.mesh_edges(faces)
    a, b = edges[:, 0], edges[:, 1]
    reg = np.zeros((body_lib.NUM_JOINTS, len(verts)), np.float64)
    for k in range(1, body_lib.NUM_JOINTS):
        p = body_lib.PARENTS[k]
        cross = (member[a, k] & member[b, p]) | (member[a, p] & member[b, k])
        band = np.unique(np.concatenate([a[cross], b[cross]]))
        reg[k, band] = 1.0 / band.size
    reg[0] = reg[[1, 2, 3]].mean(0)  # the pelvis: its three children's centres, as the rig
    return torch.from_numpy(reg.astype(np.float32))
