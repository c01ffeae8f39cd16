"""Training losses as small functions; each stage returns a dict of named terms (see train/stages.py).

Every term is a mean over samples of a per-sample quantity, so the gradient of a batch split across
processes (DDP averages them) equals the gradient of the whole batch in one process.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def vertex_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance per vertex (the official Mesh-VQ-VAE reconstruction loss, metres)."""
    return (pred - target).norm(dim=-1).mean()


def masked_token_loss(logits: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the masked tokens only: per sample the mean over its masked positions, then
    the mean over samples (a sample with nothing masked contributes 0).

    logits (B,N,S), target (B,N) long, masked (B,N) bool.
    """
    ce = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), reduction="none").view(target.shape)
    m = masked.to(ce.dtype)
    per_sample = (ce * m).sum(1) / m.sum(1).clamp(min=1)
    return per_sample.mean()


def rotation_loss(rotmat_pred: torch.Tensor, rotmat_gt: torch.Tensor) -> torch.Tensor:
    """Euclidean (Frobenius) distance between rotation matrices, mean over samples."""
    return (rotmat_pred - rotmat_gt).flatten(1).norm(dim=1).mean()


def weak_perspective(points: torch.Tensor, cam_crop: torch.Tensor) -> torch.Tensor:
    """(B,J,3) camera-oriented points, cam (B,3) = (s, tx, ty) -> (B,J,2) normalised box coordinates."""
    return cam_crop[:, None, :1] * (points[..., :2] + cam_crop[:, None, 1:])


def reprojection_loss(joints_cam: torch.Tensor, cam_crop: torch.Tensor, joints2d: torch.Tensor) -> torch.Tensor:
    """L1 between projected joints and keypoints (B,J,3: x, y, confidence), confidence-weighted.

    Per sample: sum over joints of conf * |dx| + conf * |dy|, divided by 2 * sum(conf); then the mean
    over samples (samples without any labelled joint contribute 0).
    """
    conf = joints2d[..., 2]
    err = (weak_perspective(joints_cam, cam_crop) - joints2d[..., :2]).abs().sum(-1)  # (B,J)
    return ((err * conf).sum(1) / (2 * conf.sum(1)).clamp(min=1e-8)).mean()


def joint_heatmaps(joints2d: torch.Tensor, hw: tuple[int, int], sigma: float) -> torch.Tensor:
    """(B,J,3) keypoints in normalised box coordinates ([-1, 1] across the crop) -> (B,J,H,W) Gaussians
    of peak 1 and std `sigma` heatmap pixels, centred where the keypoint falls on the pixel grid."""
    h, w = hw
    u = (joints2d[..., 0] + 1) * (w / 2) - 0.5  # pixel centres sit at 0.5, 1.5, ... of the [0, w] span
    v = (joints2d[..., 1] + 1) * (h / 2) - 0.5
    xs = torch.arange(w, dtype=joints2d.dtype, device=joints2d.device)
    ys = torch.arange(h, dtype=joints2d.dtype, device=joints2d.device)
    gx = torch.exp(-((xs - u[..., None]) ** 2) / (2 * sigma**2))  # (B,J,W)
    gy = torch.exp(-((ys - v[..., None]) ** 2) / (2 * sigma**2))  # (B,J,H)
    return gy[..., :, None] * gx[..., None, :]


def heatmap_loss(heatmaps: torch.Tensor, joints2d: torch.Tensor, sigma: float) -> torch.Tensor:
    """Pose-network heatmap MSE: per sample, the mean squared error of each labelled joint's map that
    lies inside the crop (confidence-weighted), averaged over those joints; then the mean over samples.
    Joints outside the crop have no peak to learn, so they are left out rather than taught "nothing"."""
    target = joint_heatmaps(joints2d.float(), heatmaps.shape[-2:], sigma)
    inside = (joints2d[..., :2].abs() <= 1).all(-1)
    weight = joints2d[..., 2] * inside  # (B,J)
    err = ((heatmaps.float() - target) ** 2).mean(dim=(-2, -1))  # (B,J)
    return ((err * weight).sum(1) / weight.sum(1).clamp(min=1e-8)).mean()


def yaw_bin_targets(yaw: torch.Tensor, bins: int) -> torch.Tensor:
    """(B,) yaw radians -> (B,) long bin indices; bin k covers [-pi + k w, -pi + (k + 1) w), w = 2 pi / bins."""
    return torch.floor((yaw + math.pi) * (bins / (2 * math.pi))).long().remainder(bins)


def yaw_bin_loss(logits: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B,K) yaw-bin logits against the bins of the true (B,) yaw, mean over samples."""
    return F.cross_entropy(logits.float(), yaw_bin_targets(yaw, logits.shape[-1]))


def yaw_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B,K) yaw-bin logits -> (B,) radians: the circular mean of the bin centres under the softmax."""
    k = logits.shape[-1]
    centres = (torch.arange(k, device=logits.device, dtype=torch.float32) + 0.5) * (2 * math.pi / k) - math.pi
    p = logits.float().softmax(-1)
    return torch.atan2((p * centres.sin()).sum(-1), (p * centres.cos()).sum(-1))


def angle_error_deg(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of two (B,) angle batches (radians), wrapped to [0, 180] degrees."""
    return torch.rad2deg(torch.atan2(torch.sin(pred - true), torch.cos(pred - true)).abs()).mean()


def root_relative_joint_loss(joints_pred: torch.Tensor, joints_true: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance (metres) between (B,J,3) predicted root-relative joints and the true
    joints made root-relative (joint 0 subtracted), over joints and samples."""
    return (joints_pred.float() - (joints_true - joints_true[:, :1])).norm(dim=-1).mean()
