"""Pure geometry: rotations, cameras, projection, Procrustes.

Conventions, defined here once and used by the renderer, the synthetic scenes and the pipeline:
- Camera frame = OpenCV: x right, y down, z forward (points in front of the camera have z > 0).
- Image frame: pixel (u, v) with u to the right and v down; u = fx * x / z + cx, v = fy * y / z + cy.
- A predicted mesh in camera coordinates is `verts_cam = verts_canonical @ R^T + cam_t_full`, as the
  official MEGA demo renders it (its 180-degree flip about x converts this frame to OpenGL's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt; rows b1, b2, b1 x b2 (pytorch3d's convention)."""
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def matrix_to_rot6d(rotmat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two rows (inverse of `rot6d_to_matrix` on rotations)."""
    return rotmat[..., :2, :].reshape(*rotmat.shape[:-2], 6)


def yaw_of_rotation(rotmat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) canonical -> camera rotations -> (...) radians in (-pi, pi]: the heading of the body's
    forward axis (canonical +z, where SMPL's body faces) in the camera's x-z plane. 0: the body faces
    away from the camera (its back is seen), pi: it faces the camera, +pi/2: it faces the image's right.
    The one quantity a heatmap network need not learn (a joint's peak is the same whichever way the body
    faces) and MEGA's rotation cannot do without."""
    return torch.atan2(rotmat[..., 0, 2], rotmat[..., 2, 2])


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle (Rodrigues) -> (..., 3, 3); differentiable, exact at zero."""
    angle = axis_angle.norm(dim=-1, keepdim=True).unsqueeze(-1)  # (...,1,1)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*x.shape, 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(skew)
    small = angle < 1e-4
    safe = torch.where(small, torch.ones_like(angle), angle)
    # sin(t)/t and (1-cos t)/t^2 with their Taylor series near 0
    a = torch.where(small, 1 - angle**2 / 6, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - angle**2 / 24, (1 - torch.cos(safe)) / safe**2)
    return eye + a * skew + b * (skew @ skew)


def rotate(verts: torch.Tensor, rotmat: torch.Tensor) -> torch.Tensor:
    """(B,V,3) rotated by (B,3,3): (R v^T)^T."""
    return verts @ rotmat.transpose(-1, -2)


# MEGA's camera model (official demo): a 224 px crop seen with a 1000 px focal length; the full image's
# focal length scales with its longer side, the principal point is the image centre.
CROP_FOCAL = 1000.0
CROP_SIZE = 224


def default_focal(width: int, height: int, crop_focal: float = CROP_FOCAL, crop_size: int = CROP_SIZE) -> float:
    """Focal length in pixels of a W x H image: crop_focal / crop_size * max(W, H) (the only copy of the rule)."""
    return crop_focal / crop_size * max(width, height)


def full_image_focal(
    img_size_wh: torch.Tensor, crop_focal: float = CROP_FOCAL, crop_size: int = CROP_SIZE
) -> torch.Tensor:
    """`default_focal` for (..., 2) image sizes (W, H) as a tensor."""
    return crop_focal / crop_size * img_size_wh.max(dim=-1).values


def cam_crop_to_full(
    cam_crop: torch.Tensor,
    box_center: torch.Tensor,
    box_size: torch.Tensor,
    img_size_wh: torch.Tensor,
    focal_length: torch.Tensor | float,
) -> torch.Tensor:
    """Weak-perspective crop camera (s, tx, ty) -> full-image translation (B,3), official demo formula.

    The principal point is the image centre; `box_size` is the side of the square crop box in pixels.
    """
    img_w, img_h = img_size_wh[..., 0], img_size_wh[..., 1]
    cx, cy = box_center[..., 0], box_center[..., 1]
    bs = box_size * cam_crop[..., 0] + 1e-9
    tz = 2 * focal_length / bs
    tx = 2 * (cx - img_w / 2.0) / bs + cam_crop[..., 1]
    ty = 2 * (cy - img_h / 2.0) / bs + cam_crop[..., 2]
    return torch.stack([tx, ty, tz], dim=-1)


def project(points_cam: torch.Tensor, focal: torch.Tensor | float, principal: torch.Tensor) -> torch.Tensor:
    """Perspective projection of (B,N,3) camera-frame points to (B,N,2) pixels.

    `focal` is a scalar, (B,) or (B,2) (fx, fy); `principal` is (2,) or (B,2).
    """
    focal = torch.as_tensor(focal, dtype=points_cam.dtype, device=points_cam.device)
    if focal.ndim == 0:
        focal = focal.expand(2)
    if focal.ndim == 1 and focal.shape[0] != 2:
        focal = focal[:, None].expand(-1, 2)
    principal = torch.as_tensor(principal, dtype=points_cam.dtype, device=points_cam.device)
    if focal.ndim == 2:
        focal = focal[:, None, :]
    if principal.ndim == 2:
        principal = principal[:, None, :]
    z = points_cam[..., 2:3].clamp(min=1e-6)
    return points_cam[..., :2] / z * focal + principal


def procrustes_align(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Similarity-align `pred` (B,N,3) to `target` (B,N,3) (scale, rotation, translation); returns aligned pred."""
    mu_p = pred.mean(1, keepdim=True)
    mu_t = target.mean(1, keepdim=True)
    p = pred - mu_p
    t = target - mu_t
    var_p = (p**2).sum((1, 2))
    k = p.transpose(1, 2) @ t  # (B,3,3)
    u, s, vh = torch.linalg.svd(k)
    d = torch.sign(torch.linalg.det(u @ vh))
    z = torch.ones_like(s)
    z[:, -1] = d
    rot = (u * z[:, None, :]) @ vh  # applied as p @ rot
    scale = (s * z).sum(-1) / var_p.clamp(min=1e-12)
    return scale[:, None, None] * (p @ rot) + mu_t
