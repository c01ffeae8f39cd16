"""Geometry conventions and the optional joint regressor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from train import geometry
from train.joints import RegressorError, load_joint_regressor, regress_joints


def test_rot6d_gives_rotations_and_round_trips():
    g = torch.Generator().manual_seed(0)
    rot6d = torch.randn(64, 6, generator=g)
    r = geometry.rot6d_to_matrix(rot6d)
    eye = torch.eye(3).expand(64, 3, 3)
    assert torch.allclose(r @ r.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(64), atol=1e-5)
    # first row is the normalised first 3-vector (pytorch3d's row convention)
    assert torch.allclose(r[:, 0], rot6d[:, :3] / rot6d[:, :3].norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(geometry.rot6d_to_matrix(geometry.matrix_to_rot6d(r)), r, atol=1e-5)


def test_axis_angle_matches_known_rotations():
    r = geometry.axis_angle_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2], [0.0, 0.0, 0.0]]))
    assert torch.allclose(r[0], torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), atol=1e-6)
    assert torch.equal(r[1], torch.eye(3))
    aa = torch.tensor([[0.3, -0.2, 0.5]], requires_grad=True)
    geometry.axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()


def test_cam_crop_to_full_matches_the_official_formula_by_hand():
    # crop camera s=0.8 tx=0.1 ty=-0.2, box centre (700, 300) side 200 in a 1280x720 image, focal 5000
    cam = torch.tensor([[0.8, 0.1, -0.2]])
    t = geometry.cam_crop_to_full(
        cam, torch.tensor([[700.0, 300.0]]), torch.tensor([200.0]), torch.tensor([[1280.0, 720.0]]), 5000.0
    )
    bs = 200 * 0.8
    expected = [2 * (700 - 640) / bs + 0.1, 2 * (300 - 360) / bs - 0.2, 2 * 5000 / bs]
    assert torch.allclose(t, torch.tensor([expected]), atol=1e-5)
    assert geometry.full_image_focal(torch.tensor([[1280.0, 720.0]])).item() == pytest.approx(1000 / 224 * 1280)


def test_projection_and_crop_camera_agree():
    """A point at the crop camera's centre lands at the box centre after cam_crop_to_full + project."""
    img = torch.tensor([[1280.0, 720.0]])
    focal = geometry.full_image_focal(img)
    centre, size = torch.tensor([[900.0, 250.0]]), torch.tensor([180.0])
    t = geometry.cam_crop_to_full(torch.tensor([[0.9, 0.0, 0.0]]), centre, size, img, focal)
    uv = geometry.project(t[:, None, :], focal, img[0] / 2)
    assert torch.allclose(uv[0, 0], centre[0], atol=1e-3)
    # image y grows downwards: a point below the centre (larger y) projects lower (larger v)
    lower = geometry.project(torch.tensor([[[0.0, 0.5, 10.0]]]), 1000.0, torch.tensor([640.0, 360.0]))
    assert lower[0, 0, 1] > 360


def test_procrustes_recovers_a_similarity_transform():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(2, 50, 3, generator=g)
    r = geometry.axis_angle_to_matrix(torch.tensor([[0.2, 1.0, -0.4], [1.5, 0.0, 0.3]]))
    pred = 1.7 * target @ r.transpose(1, 2) + torch.tensor([1.0, -2.0, 0.5])
    assert torch.allclose(geometry.procrustes_align(pred, target), target, atol=1e-4)


def test_regressor_from_npy_npz_and_bad_files(tmp_path):
    reg = np.zeros((17, 6890), np.float32)
    reg[np.arange(17), np.arange(17) * 10] = 1.0
    np.save(tmp_path / "r.npy", reg)
    np.savez(tmp_path / "r.npz", J_regressor=reg)
    verts = torch.randn(2, 6890, 3)
    for name in ("r.npy", "r.npz"):
        j = regress_joints(verts, load_joint_regressor(tmp_path / name))
        assert torch.equal(j, verts[:, np.arange(17) * 10])
    np.save(tmp_path / "bad.npy", np.zeros((17, 100), np.float32))
    with pytest.raises(RegressorError, match="bad.npy.*expected"):
        load_joint_regressor(tmp_path / "bad.npy")
    with pytest.raises(RegressorError, match="not found"):
        load_joint_regressor(tmp_path / "absent.npy")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(RegressorError, match="unsupported"):
        load_joint_regressor(tmp_path / "x.txt")


def test_regressor_from_an_smpl_pkl_model_file_through_smplx(tmp_path):
    pytest.importorskip("smplx")
    g = np.random.default_rng(0)
    parents = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21])
    kintree = np.stack([np.where(parents < 0, 2**32 - 1, parents), np.arange(24)]).astype(np.int64)
    reg = g.random((24, 6890)).astype(np.float32)
    reg /= reg.sum(1, keepdims=True)
    import pickle

    model = dict(
        v_template=g.normal(size=(6890, 3)).astype(np.float32),
        shapedirs=np.zeros((6890, 3, 10), np.float32),
        posedirs=np.zeros((6890, 3, 207), np.float32),
        J_regressor=reg,
        weights=np.full((6890, 24), 1 / 24, np.float32),
        kintree_table=kintree,
        f=g.integers(0, 6890, size=(13776, 3)).astype(np.int64),
    )
    with open(tmp_path / "SMPL_NEUTRAL.pkl", "wb") as f:
        pickle.dump(model, f)
    loaded = load_joint_regressor(tmp_path / "SMPL_NEUTRAL.pkl")
    assert loaded.shape == (24, 6890)
    assert torch.allclose(loaded, torch.from_numpy(reg), atol=1e-6)
