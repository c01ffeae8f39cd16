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


def test_joint_heatmaps_peak_at_the_keypoints_pixel_with_the_given_spread():
    # an 8x8 map over the crop: normalised x = -1 + (2i + 1)/8 is the centre of pixel column i
    joints2d = torch.tensor([[[-1 + 5 / 8, -1 + 3 / 8, 1.0]]])  # centre of pixel (x=2, y=1)
    maps = losses.joint_heatmaps(joints2d, (8, 8), sigma=1.0)
    assert maps.shape == (1, 1, 8, 8)
    assert maps[0, 0, 1, 2].item() == pytest.approx(1.0)
    assert maps[0, 0, 1, 3].item() == pytest.approx(math.exp(-0.5))  # one pixel away: exp(-1/(2 sigma^2))
    assert maps[0, 0, 2, 3].item() == pytest.approx(math.exp(-1.0))
    assert int(maps.flatten().argmax()) == 1 * 8 + 2


def test_heatmap_loss_averages_labelled_in_crop_joints_then_samples():
    joints2d = torch.tensor([
        [[0.0, 0.0, 1.0], [0.5, 0.5, 0.0], [1.5, 0.0, 1.0]],  # joint 1 unlabelled, joint 2 outside the crop
        [[0.25, -0.25, 1.0], [-0.5, 0.5, 1.0], [0.0, 0.0, 1.0]],
    ])  # fmt: skip
    target = losses.joint_heatmaps(joints2d, (6, 6), 1.2)
    assert losses.heatmap_loss(target, joints2d, 1.2).item() == pytest.approx(0.0, abs=1e-12)
    pred = target.clone()
    pred[0, 1] += 3.0  # the unlabelled joint: ignored
    pred[0, 2] += 3.0  # outside the crop: ignored
    pred[0, 0] += 0.5  # MSE 0.25 on the only counted joint of sample 0
    pred[1, 2] += 1.0  # MSE 1 on one of three joints of sample 1
    expected = (0.25 + 1.0 / 3) / 2
    assert losses.heatmap_loss(pred, joints2d, 1.2).item() == pytest.approx(expected, rel=1e-6)


def test_heatmap_joint_error_is_the_argmax_distance_in_heatmap_pixels():
    from train.stages import heatmap_joint_error

    joints2d = torch.tensor([[[-1 + 5 / 8, -1 + 3 / 8, 1.0], [-1 + 1 / 8, -1 + 1 / 8, 1.0], [0.0, 0.0, 0.0]]])
    maps = torch.zeros(1, 3, 8, 8)
    maps[0, 0, 1, 2] = 1.0  # exactly on the keypoint: 0 px
    maps[0, 1, 4, 3] = 1.0  # keypoint at pixel (0, 0), peak at x=3, y=4: 5 px away
    maps[0, 2, 7, 7] = 1.0  # unlabelled: ignored
    assert heatmap_joint_error(maps, joints2d).item() == pytest.approx(2.5)


def test_heatmap_side_swaps_counts_crops_whose_left_and_right_maps_fit_the_mirrored_labels():
    # Why: joint error alone hides a backbone that puts left and right joints on either side at
    # random; this share is ~0.5 for such a network and 0 for one that sees the facing.
    from train.stages import heatmap_side_swaps

    mirror = [0, 2, 1, 4, 3]  # a centre joint, then two left/right pairs
    # keypoints at heatmap pixels: centre (4, 4), left pair at x=1, right pair at x=6
    px = torch.tensor([[4, 4], [1, 2], [6, 2], [1, 6], [6, 6]], dtype=torch.float32)
    joints2d = torch.cat([(px + 0.5) / 4 - 1, torch.ones(5, 1)], -1).repeat(3, 1, 1)
    maps = torch.zeros(3, 5, 8, 8)
    for j, (x, y) in enumerate(px.long().tolist()):
        maps[0, j, y, x] = 1.0  # crop 0: every map on its own joint
        xm, ym = px[mirror[j]].long().tolist()
        maps[1, j, ym, xm] = 1.0  # crop 1: every map on its partner (left and right swapped)
    joints2d[2, 1:, 2] = 0.0  # crop 2: side joints unlabelled -> not judged
    assert heatmap_side_swaps(maps, joints2d, mirror, min_joints=2).item() == pytest.approx(0.5)
    assert heatmap_side_swaps(maps[:1], joints2d[:1], mirror, min_joints=2).item() == 0.0
    assert heatmap_side_swaps(maps[1:2], joints2d[1:2], mirror, min_joints=2).item() == 1.0
    assert heatmap_side_swaps(maps[2:], joints2d[2:], mirror, min_joints=2).isnan()


def test_yaw_of_rotation_is_the_heading_of_the_bodys_forward_axis_in_the_camera_x_z_plane():
    from train.geometry import yaw_of_rotation

    def turn_about_y(deg):  # the body turned about the camera's vertical axis
        a = math.radians(deg)
        return torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])

    for deg in (0.0, 30.0, 90.0, -120.0, 179.0):
        assert math.degrees(yaw_of_rotation(turn_about_y(deg)).item()) == pytest.approx(deg, abs=1e-4)
    # an in-plane roll (the camera turning about its optical axis) leaves the heading of a body facing away
    roll = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert yaw_of_rotation(roll @ turn_about_y(0.0)).item() == pytest.approx(0.0, abs=1e-6)
    # SMPL's up axis (+y) against the camera's (y down): a 180-degree turn about x faces the camera
    flip_x = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    assert abs(math.degrees(yaw_of_rotation(flip_x).item())) == pytest.approx(180.0)


def test_yaw_bins_cover_the_circle_and_the_loss_is_the_cross_entropy_of_the_true_bin():
    yaw = torch.tensor([-math.pi, -math.pi + 1e-3, -0.01, 0.0, 0.5 * math.pi - 1e-3, math.pi - 1e-4, math.pi])
    assert losses.yaw_bin_targets(yaw, 4).tolist() == [0, 0, 1, 2, 2, 3, 0]  # +pi is -pi
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    true = torch.tensor([-3.0, 0.2])  # bins 0 and 2
    expected = (-torch.log_softmax(logits, -1)[[0, 1], [0, 2]]).mean()
    assert losses.yaw_bin_loss(logits, true).item() == pytest.approx(expected.item())


def test_yaw_from_logits_is_the_circular_mean_of_the_bin_centres_and_errors_wrap():
    sharp = torch.full((1, 8), -50.0)
    sharp[0, 5] = 50.0  # bin 5 of 8: centre -pi + 5.5 * pi / 4 = 3 pi / 8
    assert losses.yaw_from_logits(sharp).item() == pytest.approx(3 * math.pi / 8, abs=1e-5)
    # two neighbouring bins across +-pi average to pi, not to 0
    across = torch.full((1, 8), -50.0)
    across[0, [0, 7]] = 50.0
    assert abs(losses.yaw_from_logits(across).item()) == pytest.approx(math.pi, abs=1e-5)
    assert losses.angle_error_deg(
        torch.tensor([math.radians(170.0)]), torch.tensor([math.radians(-170.0)])
    ).item() == pytest.approx(20.0, abs=1e-4)
    assert losses.angle_error_deg(
        torch.tensor([0.0, 0.0]), torch.tensor([math.pi / 2, math.pi])
    ).item() == pytest.approx(135.0)


def test_root_relative_joint_loss_subtracts_the_true_root_then_averages_distances():
    true = torch.tensor([[[1.0, 2.0, 3.0], [1.0, 2.0, 4.0], [4.0, 6.0, 3.0]]])  # root-relative: 0, (0,0,1), (3,4,0)
    pred = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])  # errors 0, 0, 5
    assert losses.root_relative_joint_loss(pred, true).item() == pytest.approx(5 / 3)
    # a second sample with every joint off by (0, 0, 2): the mean is over joints and samples
    true2 = torch.cat([true, torch.zeros(1, 3, 3)])
    pred2 = torch.cat([pred, torch.tensor([[[0.0, 0.0, 2.0]] * 3])])
    assert losses.root_relative_joint_loss(pred2, true2).item() == pytest.approx((5 / 3 + 2) / 2)
