"""From a raw sample (an image, a person box and the ground truth) to a model input, augmented.

Coordinates: a person box (centre c, side b, pixels) defines normalised crop coordinates
x_n = (u - c) * 2 / b, so the box spans [-1, 1] vertically (a W < H input keeps the middle W columns,
as `train.synthetic.camera.crop_camera`). 2D keypoints are kept in these coordinates, which is where MEGA's
weak-perspective camera projects: x_n = s * ((R J)_xy + (tx, ty)).

Augmentations act on x_n as x' = k Rot(theta) F x (F: horizontal flip; k = 1 / box scale factor), and
on the 3D ground truth consistently:
- flip: the camera-frame mesh is mirrored (x -> -x) and its vertices re-labelled left <-> right with
  the body's symmetry map, so R' = M R M and verts' = (M verts)[symmetry], M = diag(-1, 1, 1);
- rotation: the camera turns about its optical axis, R' = Rz(theta) R (the image y axis points down,
  like the camera's, so the 2D and 3D rotations share one matrix);
- scale: the box grows or shrinks; nothing in 3D changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIRROR = np.diag([-1.0, 1.0, 1.0]).astype(np.float32)


@dataclass(frozen=True)
class Augmentation:
    flip: bool = False
    rotation_rad: float = 0.0
    box_scale: float = 1.0
    color_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def linear(self) -> np.ndarray:
        """The 2x2 map of normalised coordinates, k Rot(theta) F."""
        c, s = np.cos(self.rotation_rad), np.sin(self.rotation_rad)
        m = np.array([[c, -s], [s, c]]) / self.box_scale
        if self.flip:
            m = m @ np.diag([-1.0, 1.0])
        return m


def sample_augmentation(rng: np.random.Generator, scale: float, rotation_deg: float, rotation_prob: float,
                        flip_prob: float, color: float) -> Augmentation:  # fmt: skip
    """SPIN's recipe: scale ~ N(1, s) clipped to [1-s, 1+s]; rotation ~ N(0, r) clipped to +-2r, applied
    with probability `rotation_prob`; flip with `flip_prob`; per-channel colour gain U[1-c, 1+c].
    Draws a fixed number of values, so each sample's stream does not depend on the settings."""
    u = rng.random(6)
    normal = rng.standard_normal(2)
    box_scale = float(np.clip(1 + normal[0] * scale, 1 - scale, 1 + scale))
    rotation = (
        float(np.clip(normal[1] * rotation_deg, -2 * rotation_deg, 2 * rotation_deg)) if u[0] < rotation_prob else 0.0
    )
    gains = tuple(float(1 - color + 2 * color * g) for g in u[3:6])
    return Augmentation(
        flip=bool(u[1] < flip_prob), rotation_rad=np.deg2rad(rotation), box_scale=box_scale, color_gain=gains
    )


def crop_matrix(box_center: np.ndarray, box_size: float, out_hw: tuple[int, int], aug: Augmentation) -> np.ndarray:
    """2x3 affine: source pixels -> output pixels (for cv2.warpAffine)."""
    h, w = out_hw
    lin = aug.linear() * (h / float(box_size))
    offset = -lin @ np.asarray(box_center, np.float64) + np.array([w / 2.0, h / 2.0])
    return np.concatenate([lin, offset[:, None]], 1)


def warp_crop(image: np.ndarray, box_center, box_size: float, out_hw: tuple[int, int], aug: Augmentation) -> np.ndarray:
    """(H,W,3) uint8 RGB crop of the box, augmented; outside the source image is black."""
    import cv2

    h, w = out_hw
    box_center = np.asarray(box_center, np.float64)
    # warpAffine samples bilinearly, which aliases when shrinking a lot: pre-shrink with an area filter
    shrink = float(box_size) * aug.box_scale / h
    if shrink > 1.5:
        factor = 1.0 / shrink
        image = cv2.resize(np.ascontiguousarray(image), None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        box_center, box_size = box_center * factor, box_size * factor
    matrix = crop_matrix(box_center, box_size, out_hw, aug)
    out = cv2.warpAffine(
        np.ascontiguousarray(image), matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    if aug.color_gain != (1.0, 1.0, 1.0):
        out = np.clip(out.astype(np.float32) * np.asarray(aug.color_gain, np.float32), 0, 255).astype(np.uint8)
    return out


def rotation_z(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], np.float32)


def augment_3d(verts_canonical: np.ndarray, joints_canonical: np.ndarray, rotmat: np.ndarray, aug: Augmentation,
               symmetry: np.ndarray, joint_mirror: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The 3D ground truth after `aug` (see the module docstring)."""
    if aug.flip:
        verts_canonical = (verts_canonical * MIRROR.diagonal())[symmetry]
        joints_canonical = (joints_canonical * MIRROR.diagonal())[joint_mirror]
        rotmat = MIRROR @ rotmat @ MIRROR
    if aug.rotation_rad:
        rotmat = rotation_z(aug.rotation_rad) @ rotmat
    return verts_canonical, joints_canonical, rotmat.astype(np.float32)


def augment_keypoints(joints2d: np.ndarray, aug: Augmentation, joint_mirror: np.ndarray) -> np.ndarray:
    """(J,3) normalised keypoints with confidence -> the same after `aug` (left/right swapped on flip)."""
    out = joints2d.astype(np.float32).copy()
    if aug.flip:
        out = out[joint_mirror]
    out[:, :2] = joints2d[joint_mirror if aug.flip else slice(None), :2] @ aug.linear().T
    return out.astype(np.float32)


def normalise_image(crop: np.ndarray, mean, std) -> np.ndarray:
    """(H,W,3) uint8 RGB -> (3,H,W) float32 normalised as the backbone declares."""
    x = crop.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))
