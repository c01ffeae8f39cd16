"""The files' world frame and the rotation conversions the writers share.

The results are in OpenCV's camera frame (x right, y down, z forward). glTF, BVH and the OBJ/PC2 pair
are Y-up with +Z toward the viewer, so world = diag(1, -1, -1) @ camera: a half turn about x (a proper
rotation), which keeps the camera at the origin looking down -Z as a glTF camera does.
"""

from __future__ import annotations

import numpy as np

CAM_TO_WORLD = np.diag([1.0, -1.0, -1.0]).astype(np.float32)


def to_world(points_cam: np.ndarray) -> np.ndarray:
    """(..., 3) camera-frame points -> world."""
    return np.asarray(points_cam, np.float32) * np.array([1.0, -1.0, -1.0], np.float32)


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3), Rodrigues."""
    aa = np.asarray(axis_angle, np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = aa / np.where(angle > 1e-12, angle, 1.0)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    s, c = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def matrix_to_quaternion_xyzw(rotmat: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 4) unit quaternions in glTF's order (x, y, z, w), w >= 0."""
    m = np.asarray(rotmat, np.float64)
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = np.stack(
        [
            np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1], 1 + trace], -1),
            np.stack([1 + 2 * m[..., 0, 0] - trace, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
            np.stack([m[..., 0, 1] + m[..., 1, 0], 1 + 2 * m[..., 1, 1] - trace, m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
            np.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 + 2 * m[..., 2, 2] - trace, m[..., 1, 0] - m[..., 0, 1]], -1),
        ],
        -2,
    )  # fmt: skip
    size = np.stack(
        [1 + trace, 1 + 2 * m[..., 0, 0] - trace, 1 + 2 * m[..., 1, 1] - trace, 1 + 2 * m[..., 2, 2] - trace], -1
    )
    q = np.take_along_axis(cands, size.argmax(-1)[..., None, None].repeat(4, -1), -2)[..., 0, :]
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:] < 0, -q, q)


def matrix_to_euler_zxy(rotmat: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) angles (z, x, y) in radians with R = Rz(z) @ Rx(x) @ Ry(y), BVH's
    `Zrotation Xrotation Yrotation` channel order."""
    m = np.asarray(rotmat, np.float64)
    x = np.arcsin(np.clip(m[..., 2, 1], -1.0, 1.0))
    y = np.arctan2(-m[..., 2, 0], m[..., 2, 2])
    z = np.arctan2(-m[..., 0, 1], m[..., 1, 1])
    return np.stack([z, x, y], -1)
