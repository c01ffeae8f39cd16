"""Evaluation metrics against hand-computed values (Procrustes included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from train import metrics

SQUARE = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, -2.0, 0.0]])
IDENTITY_REG = torch.eye(4)


def _rz(deg: float) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_pve_ignores_translation_and_measures_per_vertex_distance():
    gt = SQUARE[None]
    assert metrics.pve(gt + torch.tensor([5.0, -1.0, 2.0]), gt).item() == pytest.approx(0.0, abs=1e-6)
    doubled = 2 * gt  # every vertex moves by its distance from the centre: 1, 1, 2, 2
    assert metrics.pve(doubled, gt).item() == pytest.approx(1.5)


def test_mpjpe_uses_the_regressor_on_centred_meshes():
    reg = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # joints: centre of 0-1, vertex 2
    gt = SQUARE[None]
    pred = gt.clone()
    pred[0, 2, 1] += 4.0  # vertex 2 up by 4 -> centroid up by 1 -> joint 0 off by 1, joint 1 by 3
    assert metrics.mpjpe(pred, gt, reg).item() == pytest.approx(2.0)


def test_pa_mpjpe_removes_scale_rotation_translation():
    gt = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]])
    pred = 0.7 * gt @ _rz(40).T + torch.tensor([0.3, -2.0, 1.0])
    assert metrics.pa_mpjpe(pred, gt, IDENTITY_REG).item() == pytest.approx(0.0, abs=1e-6)
    assert metrics.mpjpe(pred, gt, IDENTITY_REG).item() > 0.1


def test_pa_mpjpe_of_a_mirrored_tetrahedron_matches_umeyama():
    # a reflection cannot be undone by a rotation: compare with an independent numpy Umeyama
    gt = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    pred = gt * np.array([-1.0, 1.0, 1.0]) + np.array([0.1, 0.2, 0.3])
    mp, mg = pred.mean(0), gt.mean(0)
    p, g = pred - mp, gt - mg
    u, s, vt = np.linalg.svd(p.T @ g)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1, 1, d]) @ vt
    scale = (s * np.array([1, 1, d])).sum() / (p**2).sum()
    aligned = scale * p @ rot + mg
    expected = np.linalg.norm(aligned - gt, axis=1).mean()
    got = metrics.pa_mpjpe(
        torch.tensor(pred[None], dtype=torch.float32), torch.tensor(gt[None], dtype=torch.float32), IDENTITY_REG
    )
    assert expected > 0.1 and got.item() == pytest.approx(expected, rel=1e-5)


def test_stochastic_best_mean_and_spread_of_two_hypotheses():
    gt = torch.tensor([[[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]])
    hyps = torch.stack([gt[0], 2 * gt[0]])[None]  # exact, and every vertex 1 away
    out = metrics.stochastic_errors(hyps, gt, torch.eye(2))
    assert out["best_pve"].item() == pytest.approx(0.0)
    assert out["sample_pve"].item() == pytest.approx(0.5)
    assert out["mean_pve"].item() == pytest.approx(0.5)  # the mean mesh is 1.5 x gt
    assert out["vertex_std"].item() == pytest.approx(0.5)  # each hypothesis is 0.5 from the mean
    assert out["best_mpjpe"].item() == pytest.approx(0.0)
