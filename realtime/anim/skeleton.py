"""The SMPL skeleton of a fitted track, posed per frame in the world frame (world.py).

Joint k's world transform is [R_k | p_k] with the rest body (zero pose, the track's shape) as bind pose:
the root's rotation is CAM_TO_WORLD @ global_orient and its position CAM_TO_WORLD @ (j0 + transl); every
other joint turns by its body-pose rotation about its rest offset from its parent. Linear blend skinning of
the shaped rest vertices with these transforms is the fitted SMPL mesh less its pose correctives (smplx's
posedirs), which glTF skinning cannot carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from realtime.anim.world import CAM_TO_WORLD, axis_angle_to_matrix, to_world


@dataclass(frozen=True)
class PosedSkeleton:
    parents: np.ndarray  # (J,) -1 for the root
    rest_joints: np.ndarray  # (J,3) bind pose (the shaped body at rest), rest frame, metres
    offsets: np.ndarray  # (J,3) rest offset from the parent (the root's: its rest position)
    local_rot: np.ndarray  # (T,J,3,3) rotation of each joint in its parent's frame (the root's: in the world)
    root_pos: np.ndarray  # (T,3) world position of the root joint, metres
    frame: np.ndarray  # (T,) source frame numbers


def posed_skeleton(track: dict, parents: np.ndarray) -> PosedSkeleton:
    """From SmplFit.track(): per-frame local rotations and the root's world position."""
    count = len(track["frame"])
    joints = len(parents)
    aa = np.zeros((count, joints, 3))
    body = track["body_pose"].reshape(count, -1, 3)
    aa[:, 0] = track["global_orient"]
    aa[:, 1 : 1 + body.shape[1]] = body
    local = axis_angle_to_matrix(aa)
    local[:, 0] = CAM_TO_WORLD.astype(np.float64) @ local[:, 0]
    rest = track["rest_joints"].astype(np.float64)
    offsets = rest.copy()
    offsets[1:] = rest[1:] - rest[parents[1:]]
    root = to_world(rest[0] + track["transl"]).astype(np.float64)
    return PosedSkeleton(parents, rest, offsets, local, root, track["frame"])


def world_transforms(skel: PosedSkeleton) -> tuple[np.ndarray, np.ndarray]:
    """(T,J,3,3) world rotations and (T,J,3) world positions of every joint (forward kinematics)."""
    count, joints = skel.local_rot.shape[:2]
    rot = np.zeros((count, joints, 3, 3))
    pos = np.zeros((count, joints, 3))
    rot[:, 0], pos[:, 0] = skel.local_rot[:, 0], skel.root_pos
    for k in range(1, joints):
        p = skel.parents[k]
        rot[:, k] = rot[:, p] @ skel.local_rot[:, k]
        pos[:, k] = pos[:, p] + (rot[:, p] @ skel.offsets[k])
    return rot, pos


def skin(skel: PosedSkeleton, rest_verts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(T,V,3) world vertices by linear blend skinning of the rest vertices (bind: joint k at rest_joints[k])."""
    rot, pos = world_transforms(skel)
    local = rest_verts[None, None].astype(np.float64) - skel.rest_joints[None, :, None]  # (1,J,V,3)
    per_joint = (
        np.einsum("tjab,tjvb->tjva", rot, np.broadcast_to(local, (len(rot),) + local.shape[1:])) + pos[:, :, None]
    )
    return np.einsum("vj,tjva->tva", weights.astype(np.float64), per_joint).astype(np.float32)
