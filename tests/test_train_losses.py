"""Loss values on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from train import losses


def test_vertex_distance_is_the_mean_euclidean_distance():
    target = torch.zeros(1, 2, 3)
    pred = torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]])  # distances 5 and 1
    assert losses.vertex_distance(pred, target).item() == pytest.approx(3.0)


def test_masked_token_loss_averages_masked_positions_per_sample_then_samples():
    # two classes; logits (0, x) give CE = log(1 + e^x) for target 0 and log(1 + e^-x) for target 1
    logits = torch.tensor([[[0.0, 1.0], [0.0, 2.0], [0.0, 0.0]], [[0.0, 3.0], [0.0, -1.0], [0.0, 5.0]]])
    target = torch.tensor([[0, 1, 1], [1, 1, 0]])
    masked = torch.tensor([[True, True, False], [False, False, False]])
    sample0 = (math.log(1 + math.e) + math.log(1 + math.exp(-2))) / 2  # position 2 is visible: ignored
    expected = (sample0 + 0.0) / 2  # sample 1 has nothing masked: contributes 0
    assert losses.masked_token_loss(logits, target, masked).item() == pytest.approx(expected, rel=1e-6)
    masked[1, 2] = True
    expected = (sample0 + math.log(1 + math.exp(5))) / 2
    assert losses.masked_token_loss(logits, target, masked).item() == pytest.approx(expected, rel=1e-6)


def test_rotation_loss_is_the_frobenius_distance():
    eye = torch.eye(3)
    rz90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    # I - Rz(90) = [[1, 1, 0], [-1, 1, 0], [0, 0, 0]] -> sqrt(4) = 2
    assert losses.rotation_loss(rz90[None], eye[None]).item() == pytest.approx(2.0)
    assert losses.rotation_loss(torch.stack([rz90, eye]), torch.stack([eye, eye])).item() == pytest.approx(1.0)


def test_reprojection_loss_weak_perspective_l1_weighted_by_confidence():
    joints = torch.tensor([[[0.1, 0.2, 5.0], [-0.3, 0.0, 4.0]]])
    cam = torch.tensor([[2.0, 0.1, -0.2]])  # x = s (X + tx), y = s (Y + ty)
    projected = torch.tensor([[[0.4, 0.0], [-0.4, -0.4]]])
    assert torch.allclose(losses.weak_perspective(joints, cam), projected)
    keypoints = torch.tensor([[[0.5, 0.0, 1.0], [0.0, 0.0, 0.0]]])  # second joint unlabelled
    # |0.4 - 0.5| + |0 - 0| over 2 coordinates of 1 labelled joint
    assert losses.reprojection_loss(joints, cam, keypoints).item() == pytest.approx(0.05)
    keypoints[0, 1, 2] = 1.0  # now |-0.4| + |-0.4| counts too: (0.1 + 0.8) / 4
    assert losses.reprojection_loss(joints, cam, keypoints).item() == pytest.approx(0.225)
    assert losses.reprojection_loss(joints, cam, torch.zeros(1, 2, 3)).item() == 0.0
