"""Dataset readers on fixture-sized files the tests write: synthetic crop shards, CLIFF/SPIN- and
VQ-HPS-style annotation files with images, AMASS animations posed by an SMPL-format model file, and
the augmentations' consistency between image, keypoints and 3D ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.train.fixtures import write_crop_fixture, write_smpl_model
from train.data import augment
from train.data.crops import CropShards, DatasetError
from train.data.hmr_npz import HmrAnnotations
from train.data.joints import SPIN_PART_TO_SMPL, synthetic_joint_regressor
from train.data.meshes import AmassMeshes, SyntheticMeshes
from train.data.mixing import Mixer, Sequential, micro_batch_samples
from train.data.smpl import SmplBody, SmplError
from train.geometry import axis_angle_to_matrix
from train.synthetic import body as body_lib


@pytest.fixture(scope="module")
def rig(assets_dir):
    return body_lib.load_rig(assets_dir)


@pytest.fixture(scope="module")
def regressor(assets_dir):
    return synthetic_joint_regressor(assets_dir)


@pytest.fixture(scope="module")
def smpl_file(tmp_path_factory, rig, regressor):
    return write_smpl_model(tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.pkl", rig, regressor)


# ---- SMPL and AMASS ------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pkl", "npz"])
def test_smpl_model_file_poses_canonical_meshes(tmp_path, rig, regressor, fmt):
    smpl = SmplBody(write_smpl_model(tmp_path / f"model.{fmt}", rig, regressor, fmt))
    pose = torch.zeros(2, 69)
    pose[1, 3 * 17 + 2] = -1.2  # right shoulder: arm up
    betas = torch.zeros(2, 10)
    betas[1, 0] = 1.0
    verts, joints = smpl.canonical(pose, betas)
    assert verts.shape == (2, 6890, 3) and joints.shape == (2, 24, 3)
    template = torch.from_numpy(rig.verts_template)
    assert torch.allclose(verts[0], template - template.mean(0), atol=1e-5)  # rest pose = the template, centred
    assert verts.mean(1).abs().max() < 1e-5
    assert (verts[1] - verts[0]).norm(dim=-1).max() > 0.1


def test_smpl_errors_name_the_file(tmp_path):
    with pytest.raises(SmplError, match="smpl_model"):
        SmplBody("")
    with pytest.raises(SmplError, match="not found"):
        SmplBody(tmp_path / "nope.pkl")
    bad = tmp_path / "bad.npz"
    np.savez(bad, v_template=np.zeros((3, 3)))
    with pytest.raises(SmplError, match="missing key"):
        SmplBody(bad).model()


def test_amass_folder_reader_strides_frames_and_skips_shape_files(tmp_path, smpl_file):
    rng = np.random.default_rng(1)
    seq = tmp_path / "CMU" / "01"
    seq.mkdir(parents=True)
    np.savez(
        seq / "01_01_poses.npz",
        poses=0.2 * rng.standard_normal((10, 156)),
        betas=rng.standard_normal(16),
        gender="neutral",
    )
    np.savez(
        seq / "01_02_poses.npz",
        poses=0.2 * rng.standard_normal((4, 72)),
        betas=rng.standard_normal(10),
        gender="female",
    )
    np.savez(seq / "shape.npz", betas=np.zeros(16), gender="neutral")  # AMASS's shape-only file
    meshes = AmassMeshes(tmp_path, SmplBody(smpl_file), stride=2)
    assert len(meshes) == 5 + 2
    verts = meshes.verts([0, 6, 3])
    assert verts.shape == (3, 6890, 3) and verts.mean(1).abs().max() < 1e-5
    # SMPL-H rows keep the 21 body joints; SMPL's two hand joints stay at rest
    assert meshes.body_pose.shape == (7, 69) and (meshes.body_pose[:5, 63:] == 0).all()


def test_synthetic_meshes_are_canonical_and_reproducible(assets_dir):
    a, b = SyntheticMeshes(6, seed=3), SyntheticMeshes(6, seed=3)
    va = a.verts([0, 5])
    assert torch.equal(va, b.verts([0, 5]))
    assert va.mean(1).abs().max() < 1e-5


# ---- synthetic crop shards -----------------------------------------------------------------------
def test_crop_reader_reads_every_shard_and_projects_keypoints(tmp_path, rig, regressor):
    arrays = write_crop_fixture(tmp_path / "crops", rig)
    crops = CropShards(tmp_path / "crops", regressor.numpy())
    assert len(crops) == 6
    s = crops.raw(4)  # second shard
    assert np.array_equal(s.image, arrays["images"][4]) and np.array_equal(
        s.verts_canonical, arrays["verts_canonical"][4]
    )
    assert s.box_size == 224 and np.allclose(s.box_center, 112)
    # keypoint = perspective projection of the camera-frame joint, in box units
    joint_cam = regressor.numpy() @ arrays["verts_canonical"][4] @ arrays["rotmat"][4].T + arrays["cam_t_full"][4]
    u = joint_cam[:, :2] / joint_cam[:, 2:] * arrays["focal_full"][4] + np.array([640, 360])
    assert np.allclose(s.joints2d[:, :2], (u - arrays["box_center"][4]) * 2 / 400, atol=1e-5)
    assert (s.joints2d[:, 2] == 1).all()


def test_crop_reader_reads_what_the_synth_writer_writes(tmp_path, regressor):
    synth = pytest.importorskip("train.synthetic.crops")
    from train.render import RendererUnavailable

    try:
        synth.write_crop_dataset(tmp_path / "real", synth.CropDatasetConfig(samples=2, shard_size=1, msaa=0))
    except RendererUnavailable as e:
        pytest.skip(f"no headless renderer: {e}")
    crops = CropShards(tmp_path / "real", regressor.numpy())
    s = crops.raw(1)
    assert len(crops) == 2 and s.image.shape == (224, 224, 3)
    # the person fills the box: most joints project inside it
    assert (np.abs(s.joints2d[:, :2]) < 1).mean() > 0.9


def test_crop_reader_errors_name_the_folder(tmp_path, regressor):
    with pytest.raises(DatasetError, match="mega-rt synth --dataset"):
        CropShards(tmp_path, regressor.numpy())
    (tmp_path / "index.json").write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(DatasetError, match="format"):
        CropShards(tmp_path, regressor.numpy())


# ---- HMR annotation files ------------------------------------------------------------------------
def _write_images(folder, names, size=(480, 640)):
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        img = np.full((*size, 3), 30 * i, np.uint8)
        img[200:240, 300:340] = (0, 0, 255)  # a red square (BGR) at x 300..339, y 200..239
        cv2.imwrite(str(folder / name), img)


def test_spin_style_file_gives_meshes_boxes_and_mapped_keypoints(tmp_path, smpl_file):
    _write_images(tmp_path / "images", ["a.jpg", "b.jpg"])
    rng = np.random.default_rng(2)
    pose = 0.1 * rng.standard_normal((2, 72)).astype(np.float32)
    part = np.zeros((2, 24, 3), np.float32)
    part[:, :, :2] = [320, 220]
    part[:, 6] = [320 + 50, 220, 1]  # right wrist (SPIN 6 -> SMPL 21): half a box to the right
    part[:, 12] = [320, 220 - 100, 1]  # neck (SPIN 12 -> SMPL 12): a whole box-half up
    np.savez(tmp_path / "coco.npz", imgname=np.array(["a.jpg", "b.jpg"]), center=np.array([[320, 220]] * 2, np.float32),
             scale=np.array([0.5, 0.5], np.float32), pose=pose, shape=np.zeros((2, 10), np.float32), part=part)  # fmt: skip
    data = HmrAnnotations(tmp_path / "coco.npz", tmp_path / "images", SmplBody(smpl_file))
    s = data.raw(1)
    assert data.layout == "spin" and s.box_size == pytest.approx(100.0)  # 200 * scale
    assert s.image.shape == (480, 640, 3) and s.image[220, 320, 0] > 200  # RGB: the square is red
    assert np.allclose(s.rotmat, axis_angle_to_matrix(torch.from_numpy(pose[1, :3])).numpy(), atol=1e-6)
    assert s.verts_canonical.shape == (6890, 3) and np.abs(s.verts_canonical.mean(0)).max() < 1e-5
    assert np.allclose(s.joints2d[21], [1.0, 0.0, 1.0]) and np.allclose(s.joints2d[12], [0.0, -2.0, 1.0])
    labelled = {dst for src, dst in SPIN_PART_TO_SMPL.items()}
    assert all(s.joints2d[j, 2] == 0 for j in range(24) if j not in labelled)  # unmapped: no label
    assert s.joints2d[[j for j in labelled if j not in (12, 21)], 2].sum() == 0  # part's own zeros


def test_vqhps_style_file_uses_the_inverse_scale(tmp_path, smpl_file):
    _write_images(tmp_path / "seq", ["image_00000.jpg"])
    j2d = np.zeros((1, 24, 3), np.float32)
    j2d[0, :, :2] = [320 + 75, 220]
    j2d[0, :, 2] = 5.3  # 3DPW's files hold the depth there
    np.savez(tmp_path / "3DPW_test.npz", imgname=np.array([str(tmp_path / "seq" / "image_00000.jpg")]),
             center=np.array([[320, 220]], np.float32), scale=np.array([200 / 150.0], np.float32),
             root_orient=np.array([[np.pi, 0, 0]], np.float32), pose_body=np.zeros((1, 63), np.float32),
             betas=np.zeros((1, 10), np.float32), gender=np.array(["male"]), j2d=j2d)  # fmt: skip
    data = HmrAnnotations(tmp_path / "3DPW_test.npz", "/nonexistent", SmplBody(smpl_file))  # absolute imgname
    s = data.raw(0)
    assert data.layout == "vqhps" and s.box_size == pytest.approx(150.0)  # 200 / scale
    assert np.allclose(s.joints2d[0], [1.0, 0.0, 1.0])
    assert np.allclose(s.rotmat, np.diag([1.0, -1.0, -1.0]), atol=1e-6)


def test_annotation_errors_name_the_file(tmp_path, smpl_file):
    np.savez(tmp_path / "x.npz", imgname=np.array(["a.jpg"]), center=np.zeros((1, 2)))
    with pytest.raises(DatasetError, match="x.npz: missing key 'scale'"):
        HmrAnnotations(tmp_path / "x.npz", tmp_path, SmplBody(smpl_file))
    np.savez(tmp_path / "y.npz", imgname=np.array(["a.jpg"]), center=np.zeros((1, 2)), scale=np.ones(1),
             pose=np.zeros((1, 72)), shape=np.zeros((1, 10)))  # fmt: skip
    data = HmrAnnotations(tmp_path / "y.npz", tmp_path, SmplBody(smpl_file))
    with pytest.raises(DatasetError, match="a.jpg"):
        data.raw(0)


# ---- augmentation --------------------------------------------------------------------------------
def _fit_weak_perspective(points_xy: np.ndarray, keypoints: np.ndarray) -> float:
    """RMS residual of the best x = s (X + t) fit (s, t free); rotation-invariant, unlike a max."""
    a = np.zeros((2 * len(points_xy), 3))
    a[0::2, 0], a[1::2, 0] = points_xy[:, 0], points_xy[:, 1]
    a[0::2, 1], a[1::2, 2] = 1, 1
    sol, *_ = np.linalg.lstsq(a, keypoints.reshape(-1), rcond=None)
    return float(np.sqrt(np.mean((a @ sol - keypoints.reshape(-1)) ** 2)))


@pytest.mark.parametrize(
    "aug",
    [
        augment.Augmentation(),
        augment.Augmentation(flip=True),
        augment.Augmentation(rotation_rad=0.6, box_scale=1.2),
        augment.Augmentation(flip=True, rotation_rad=-0.4, box_scale=0.8),
    ],  # fmt: skip
    ids=["none", "flip", "rotate-scale", "all"],
)
def test_augmented_3d_truth_projects_onto_augmented_keypoints(tmp_path, rig, regressor, aug):
    write_crop_fixture(tmp_path / "crops", rig, count=2)
    s = CropShards(tmp_path / "crops", regressor.numpy()).raw(0)
    mirror = np.asarray(body_lib.JOINT_MIRROR)
    verts, joints, rotmat = augment.augment_3d(
        s.verts_canonical, s.joints_canonical, s.rotmat, aug, rig.symmetry, mirror
    )
    keypoints = augment.augment_keypoints(s.joints2d, aug, mirror)
    base = _fit_weak_perspective((s.joints_canonical @ s.rotmat.T)[:, :2], s.joints2d[:, :2])
    # flips and rotations are isometries of both sides; the box scale magnifies the keypoints only
    residual = _fit_weak_perspective((joints @ rotmat.T)[:, :2], keypoints[:, :2])
    assert residual == pytest.approx(base / aug.box_scale, rel=1e-3, abs=1e-5)
    assert np.allclose(rotmat @ rotmat.T, np.eye(3), atol=1e-5) and np.linalg.det(rotmat) == pytest.approx(1, abs=1e-5)
    # the regressor still finds the joints on the re-labelled mesh (the mirror map is a symmetry)
    assert np.abs(regressor.numpy() @ verts - joints).max() < 0.03


def test_crop_warp_moves_pixels_where_the_keypoints_go():
    image = np.zeros((400, 400, 3), np.uint8)
    image[95:106, 295:306] = 255  # a white dot at (300, 100)
    aug = augment.Augmentation(flip=True, rotation_rad=0.5, box_scale=1.1)
    crop = augment.warp_crop(image, np.array([200.0, 200.0]), 300.0, (64, 64), aug)
    kp = augment.augment_keypoints(np.array([[(300 - 200) * 2 / 300, (100 - 200) * 2 / 300, 1.0]] + [[0, 0, 0]] * 23, np.float32),
                                   aug, np.arange(24))  # fmt: skip
    x, y = kp[0, 0] * 32 + 32, kp[0, 1] * 32 + 32
    ys, xs = np.nonzero(crop[..., 0] > 128)
    assert abs(xs.mean() - x) < 1.0 and abs(ys.mean() - y) < 1.0


# ---- mixing --------------------------------------------------------------------------------------
def test_mixer_is_a_pure_function_of_seed_and_sample_number():
    a, b = Mixer([10, 30], (0.5, 0.5), seed=1), Mixer([10, 30], (0.5, 0.5), seed=1)
    assert [a(g) for g in range(200)] == [b(g) for g in reversed(range(200))][::-1]
    sources = np.array([a(g)[0] for g in range(4000)])
    assert abs(sources.mean() - 0.5) < 0.03  # the ratios, not the sizes


def test_one_source_visits_every_sample_once_per_pass():
    mix = Mixer([25], seed=4)
    assert sorted(mix(g)[1] for g in range(25)) == list(range(25))
    assert [mix(g)[1] for g in range(25)] != [mix(g)[1] for g in range(25, 50)]  # reshuffled


def test_micro_batches_of_all_processes_tile_the_global_batch():
    one = list(micro_batch_samples(3, 0, 0, 16, 1, 1))
    split = [g for micro in range(2) for rank in range(2) for g in micro_batch_samples(3, micro, rank, 16, 2, 2)]
    assert one == split == list(range(48, 64))
    assert [Sequential([2, 3])(g) for g in range(5)] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]


def test_mean_training_meshes_are_the_canonical_and_camera_frame_means(tmp_path, rig):
    from train.evaluate import mean_training_mesh

    arrays = write_crop_fixture(tmp_path / "crops", rig, count=6, seed=4)
    means = mean_training_mesh([str(tmp_path / "crops")])
    verts, rot = arrays["verts_canonical"].astype(np.float64), arrays["rotmat"].astype(np.float64)
    oriented = np.einsum("bvj,bij->bvi", verts, rot)
    oriented -= oriented.mean(1, keepdims=True)
    np.testing.assert_allclose(means.canonical.numpy(), verts.mean(0), atol=1e-6)
    np.testing.assert_allclose(means.camera.numpy(), oriented.mean(0), atol=1e-6)
    # the fixture's rotations are near a half turn about x: the camera-frame mean is not the canonical one
    assert np.abs(means.camera.numpy() - verts.mean(0)).max() > 0.1
