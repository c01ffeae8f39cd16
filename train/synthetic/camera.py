"""The camera of a synthetic scene: where it stands in the world, what a crop of it sees, projection.

Frames:
- world: metres, +y up, ground plane y = 0; the camera sits at (0, height, 0) and looks along +z,
  pitched down. The body's own axes (see train/synthetic/body.py) are world axes before its yaw.
- camera: OpenCV (x right, y down, z forward), as `train.geometry`.
- the focal length a scene uses by default is the pipeline's (`train.geometry.default_focal`) with the
  principal point at the image centre, so ground truth and predictions share one camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from train.geometry import project
from train.render import Camera

NOMINAL_HEIGHT_M = 1.75  # framing: the nearest person is about 80 % of the image height


def cam_full_to_crop(
    cam_t: torch.Tensor, box_center: torch.Tensor, box_size: torch.Tensor, img_size_wh: torch.Tensor, focal
) -> torch.Tensor:
    """Inverse of `train.geometry.cam_crop_to_full`: camera translation (B,3) -> crop camera (s, tx, ty)."""
    tz = cam_t[..., 2]
    s = 2 * focal / (box_size * tz)
    tx = cam_t[..., 0] - (box_center[..., 0] - img_size_wh[..., 0] / 2.0) * tz / focal
    ty = cam_t[..., 1] - (box_center[..., 1] - img_size_wh[..., 1] / 2.0) * tz / focal
    return torch.stack([s, tx, ty], -1)


@dataclass(frozen=True)
class CameraRig:
    camera: Camera
    rot_cw: np.ndarray  # (3,3) world -> camera rotation
    position: np.ndarray  # (3,) camera centre in the world
    near_m: float  # ground depth range where people are placed
    far_m: float

    def world_to_cam(self, points: np.ndarray) -> np.ndarray:
        return (points - self.position) @ self.rot_cw.T

    def half_width_at(self, depth: float, margin_m: float = 0.4) -> float:
        """Lateral half-extent (m) of the ground strip that stays in view at `depth`."""
        return max(depth * (self.camera.width / 2.0) / self.camera.fx - margin_m, 0.0)


def _rot_cw(pitch: float) -> np.ndarray:
    forward = np.array([0.0, -math.sin(pitch), math.cos(pitch)])
    up = np.array([0.0, math.cos(pitch), math.sin(pitch)])
    right = np.cross(forward, up)  # facing +z with +y up, right is -x
    return np.stack([right, -up, forward])  # rows: camera x (right), y (down), z (forward) in world


def place_camera(width: int, height: int, focal: float, camera_height: float) -> CameraRig:
    """A camera at `camera_height` pitched so that the nearest person (~80 % of the frame) is centred."""
    near = focal * NOMINAL_HEIGHT_M / (0.8 * height)
    head = math.atan((NOMINAL_HEIGHT_M - camera_height) / near)
    feet = -math.atan(camera_height / near)
    pitch = -(head + feet) / 2  # > 0 looks down
    camera = Camera.centred(width, height, focal)
    return CameraRig(camera, _rot_cw(pitch), np.array([0.0, camera_height, 0.0]), near, 2.2 * near)


def crop_camera(full: Camera, box_center: np.ndarray, box_size: float, crop_hw: tuple[int, int]) -> Camera:
    """The camera that sees exactly the crop: u' = (u - c) * S / b + S / 2 (the usual affine cropper,
    pixel centres at integers), S = crop height; a 256x192 crop is the middle 192 columns of 256."""
    side, width = crop_hw
    k = side / box_size
    cx = (full.cx - box_center[0]) * k + side / 2 - (side - width) / 2
    cy = (full.cy - box_center[1]) * k + side / 2
    return Camera(width, side, full.fx * k, full.fy * k, cx, cy, full.near, full.far)


def project_points(verts_cam: np.ndarray, cam: Camera) -> np.ndarray:
    """`train.geometry.project` for numpy arrays (...,N,3) -> (...,N,2)."""
    points = torch.from_numpy(np.ascontiguousarray(verts_cam, np.float32))
    uv = project(points.reshape(-1, *points.shape[-2:]), torch.tensor([cam.fx, cam.fy]), torch.tensor([cam.cx, cam.cy]))
    return uv.reshape(*points.shape[:-1], 2).numpy()
