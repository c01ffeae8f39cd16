"""Training losses as small functions; each stage returns a dict of named terms (see train/stages.py).

Every term is a mean over samples of a per-sample quantity, so the gradient of a batch split across
processes (DDP averages them) equals the gradient of the whole batch in one process.
"""

from __future__ import annotations

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
