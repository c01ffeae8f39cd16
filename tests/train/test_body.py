"""The synthetic body (train/synthetic/body.py: rig derived from the shared assets, LBS, shape, joint limits)
and its pose prior (train/synthetic/poses.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from train.synthetic import body as B
from train.synthetic import poses as P


@pytest.fixture(scope="module")
def rig(assets_dir):
    return B.load_rig(assets_dir)


@pytest.fixture(scope="module")
def model(rig):
    return B.SyntheticBody(rig)


def _deg(x):
    return math.radians(x)


def test_template_axes_and_units_are_as_documented(rig):
    v, j = rig.verts_template, rig.joints_rest
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.5 < height < 1.65  # metres
    idx = B.JOINT_NAMES.index
    assert j[idx("head"), 1] > j[idx("pelvis"), 1] > j[idx("left_ankle"), 1]  # +y up
    assert j[idx("left_foot"), 2] > j[idx("left_ankle"), 2] + 0.05  # toes point +z: the body faces +z
    assert j[idx("left_wrist"), 0] > 0.2 > -0.2 > j[idx("right_wrist"), 0]  # left is +x


def test_rig_shapes_tree_and_weights(rig):
    assert rig.verts_template.shape == (B.NUM_VERTS, 3) and rig.faces.shape == (13776, 3)
    assert rig.faces.min() == 0 and rig.faces.max() == B.NUM_VERTS - 1
    w = rig.skin_weights
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    assert (w >= 0).all() and ((w > 0).sum(1) <= 4).all()
    assert (w.max(1) == 1).mean() > 0.3  # most of each segment is rigid; only bands near joints blend
    # a joint lies between its parent and its child along a limb
    j, idx = rig.joints_rest, B.JOINT_NAMES.index
    assert j[idx("left_hip"), 1] > j[idx("left_knee"), 1] > j[idx("left_ankle"), 1]
    assert j[idx("left_shoulder"), 1] > j[idx("left_elbow"), 1] > j[idx("left_wrist"), 1]
    assert [B.PARENTS[idx(n)] for n in ("left_elbow", "head", "right_knee")] == [
        idx("left_shoulder"),
        idx("neck"),
        idx("right_hip"),
    ]


def test_rig_is_cached_by_asset_hash(assets_dir, rig):
    again = B.load_rig(assets_dir)  # second call reads the cache file
    cached = list((B.assets.cache_dir() / "body").glob(f"rig-v{B.RIG_VERSION}-*.npz"))
    assert cached
    for field in B.BodyRig.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(again, field), getattr(rig, field))


def test_rig_cache_is_written_whole(assets_dir, rig, tmp_path, monkeypatch):
    monkeypatch.setenv("MEGA_RT_CACHE", str(tmp_path))
    derived = B.load_rig(assets_dir)
    folder = tmp_path / "body"
    assert [p.name for p in folder.iterdir()] == [
        p.name for p in folder.glob(f"rig-v{B.RIG_VERSION}-*.npz")
    ]  # no temp file left
    assert len(list(folder.iterdir())) == 1
    with np.load(next(folder.iterdir())) as z:
        assert sorted(z.files) == sorted(B.BodyRig.__dataclass_fields__)
        np.testing.assert_array_equal(z["skin_weights"], derived.skin_weights)


def test_zero_pose_and_neutral_shape_return_the_template_exactly(model):
    zeros = torch.zeros(3, 23, 3)
    for shape in (None, torch.zeros(3, B.NUM_SHAPE)):
        out = model.pose(zeros, torch.zeros(3, 3), shape)
        assert torch.equal(out.verts, model.verts_template.expand(3, -1, -1))
        assert torch.equal(out.joints, model.joints_rest.expand(3, -1, -1))


def test_global_orient_rotates_about_the_pelvis(model):
    orient = torch.tensor([[0.3, 1.2, -0.4]])
    out = model.pose(torch.zeros(1, 23, 3), orient)
    rot = B.axis_angle_to_matrix(orient)[0]
    root = model.joints_rest[0]
    torch.testing.assert_close(out.verts[0], (model.verts_template - root) @ rot.T + root, atol=1e-5, rtol=0)


def _edges(rig):
    return torch.from_numpy(B.mesh_edges(rig.faces))


def test_lbs_keeps_rigid_segment_edge_lengths_within_2_percent(model, rig):
    pose, _ = P.sample_poses(48, torch.Generator().manual_seed(0))
    verts = model.pose(pose, torch.zeros(48, 3)).verts
    e = _edges(rig)
    part = torch.from_numpy(rig.vertex_part)
    rigid_vertex = torch.from_numpy(rig.skin_weights.max(1) > 0.999)
    rigid = rigid_vertex[e[:, 0]] & rigid_vertex[e[:, 1]] & (part[e[:, 0]] == part[e[:, 1]])
    assert rigid.float().mean() > 0.25
    rest = (model.verts_template[e[:, 0]] - model.verts_template[e[:, 1]]).norm(dim=-1)
    posed = (verts[:, e[:, 0]] - verts[:, e[:, 1]]).norm(dim=-1)
    stretch = (posed / rest - 1).abs()[:, rigid]
    assert stretch.max() < 0.02


def test_knees_and_elbows_bend_the_anatomical_way_without_tearing(model, rig):
    pose = torch.zeros(1, 23, 3)
    j = B.JOINT_NAMES.index
    for side in ("left_", "right_"):
        pose[0, j(side + "knee") - 1, 0] = _deg(90)
        pose[0, j(side + "elbow") - 1, 0] = _deg(-90)
    assert B.within_limits(pose).all()
    out = model.pose(pose, torch.zeros(1, 3))
    for side in ("left_", "right_"):
        # knees fold backwards (the ankle goes to -z), elbows forwards (the wrist goes to +z)
        assert out.joints[0, j(side + "ankle"), 2] < model.joints_rest[j(side + "ankle"), 2] - 0.25
        assert out.joints[0, j(side + "wrist"), 2] > model.joints_rest[j(side + "wrist"), 2] + 0.15
    e = _edges(rig)
    rest = (model.verts_template[e[:, 0]] - model.verts_template[e[:, 1]]).norm(dim=-1)
    posed = (out.verts[0, e[:, 0]] - out.verts[0, e[:, 1]]).norm(dim=-1)
    assert (posed - rest).abs().max() < 0.03  # metres: the skin creases, it does not tear


def test_shape_scales_stature_limbs_and_girth(model):
    idx = B.JOINT_NAMES.index
    zeros = torch.zeros(1, 23, 3)

    def posed(**log_scales):
        shape = torch.zeros(1, B.NUM_SHAPE)
        for name, value in log_scales.items():
            shape[0, B.SHAPE_NAMES.index(name)] = value
        return model.pose(zeros, torch.zeros(1, 3), shape)

    def height(out):
        return float(out.verts[0, :, 1].max() - out.verts[0, :, 1].min())

    base = posed()
    assert height(posed(stature=math.log(1.1))) == pytest.approx(1.1 * height(base), rel=1e-4)
    legs = posed(leg_length=0.1)
    thigh = lambda o: float((o.joints[0, idx("left_knee")] - o.joints[0, idx("left_hip")]).norm())  # noqa: E731
    assert thigh(legs) == pytest.approx(math.exp(0.1) * thigh(base), rel=1e-4)
    wide = posed(girth=0.15)
    waist = lambda o: float(o.verts[0, :, 0].max() - o.verts[0, :, 0].min())  # noqa: E731
    assert waist(wide) > 1.05 * waist(base)
    assert height(wide) == pytest.approx(height(base), rel=0.01)


def test_pose_is_differentiable(model):
    pose = (0.1 * torch.randn(2, 23, 3, generator=torch.Generator().manual_seed(1))).requires_grad_()
    shape = torch.zeros(2, B.NUM_SHAPE, requires_grad=True)
    orient = torch.zeros(2, 3, requires_grad=True)
    out = model.pose(pose, orient, shape)
    (out.verts.square().sum() + out.joints.sum()).backward()
    for t in (pose, shape, orient):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_limits_are_one_sided_for_hinges_and_mirrored_left_right():
    lim = torch.rad2deg(B.JOINT_LIMITS)
    j = lambda n: B.JOINT_NAMES.index(n) - 1  # noqa: E731
    for side in ("left_", "right_"):
        assert lim[j(side + "knee"), 0, 0] >= 0 and lim[j(side + "knee"), 0, 1] > 120
        assert lim[j(side + "elbow"), 0, 1] <= 0 and lim[j(side + "elbow"), 0, 0] < -120
    # mirror about x: (x, y, z) -> (x, -y, -z)
    torch.testing.assert_close(lim[j("right_shoulder"), 0], lim[j("left_shoulder"), 0])
    torch.testing.assert_close(lim[j("right_shoulder"), 2], -lim[j("left_shoulder"), 2].flip(0))


def test_sampler_respects_joint_limits_and_is_seeded():
    for kind in P.POSE_KINDS:
        pose, kinds = P.sample_poses(256, torch.Generator().manual_seed(7), (kind,))
        assert set(kinds) == {kind}
        assert B.within_limits(pose).all(), kind
    a, ka = P.sample_poses(32, torch.Generator().manual_seed(3))
    b, kb = P.sample_poses(32, torch.Generator().manual_seed(3))
    c, _ = P.sample_poses(32, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and ka == kb and not torch.equal(a, c)
    assert set(ka) == set(P.POSE_KINDS)


def test_sampled_archetypes_look_like_their_names(model):
    j = B.JOINT_NAMES.index
    gen = torch.Generator().manual_seed(5)
    sit, _ = P.sample_poses(64, gen, ("sitting",))
    out = model.pose(sit, torch.zeros(64, 3)).joints
    # sitting: thighs roughly horizontal (knee near hip height), shins hanging down
    assert ((out[:, j("left_knee"), 1] - out[:, j("left_hip"), 1]).abs() < 0.2).float().mean() > 0.9
    reach, _ = P.sample_poses(64, gen, ("reaching",))
    out = model.pose(reach, torch.zeros(64, 3)).joints
    raised = torch.maximum(out[:, j("left_wrist"), 1], out[:, j("right_wrist"), 1]) > model.joints_rest[j("spine3"), 1]
    assert raised.float().mean() > 0.6  # a hand above the chest in most reaching poses


def test_motion_sequences_are_smooth_and_within_limits():
    gen = torch.Generator().manual_seed(11)
    gesture = P.gesture_sequence(120, gen)
    walk, phase = P.walking_sequence(120, gen, fps=30.0, speed=1.3)
    # radians per frame at 30 fps: a knee in swing turns ~350 deg/s, a gesture far slower
    for seq, max_step in ((gesture, 0.08), (walk, 0.25)):
        assert seq.shape == (120, 23, 3) and B.within_limits(seq).all()
        assert (seq[1:] - seq[:-1]).abs().max() < max_step
    # left and right thighs swing in opposition
    hip_l, hip_r = walk[:, B.JOINT_NAMES.index("left_hip") - 1, 0], walk[:, B.JOINT_NAMES.index("right_hip") - 1, 0]
    assert torch.corrcoef(torch.stack([hip_l, hip_r]))[0, 1] < -0.9
    assert phase[-1] - phase[0] == pytest.approx(2 * math.pi * 1.3 * 119 / 30 / 1.4, rel=1e-4)


def test_bspline_stays_inside_its_keyframes():
    keys = torch.rand(12, 5, generator=torch.Generator().manual_seed(0))
    frames = P.bspline_interpolate(keys, 80, 10)
    assert (frames >= keys.min(0).values - 1e-6).all() and (frames <= keys.max(0).values + 1e-6).all()
    with pytest.raises(ValueError):
        P.bspline_interpolate(keys[:5], 80, 10)


def test_symmetry_map_pairs_left_with_right(rig):
    sym, part, v = rig.symmetry, rig.vertex_part, rig.verts_template
    mirror_part = np.array(B.JOINT_MIRROR)
    assert (part[sym] == mirror_part[part]).all()
    assert (sym[sym] == np.arange(B.NUM_VERTS)).mean() > 0.88
    round_trip = np.linalg.norm(v[sym[sym]] - v, axis=1)
    assert np.percentile(round_trip, 95) < 0.015
    left = part == B.JOINT_NAMES.index("left_elbow")
    assert (v[sym[left], 0] < 0).all() and (v[left, 0] > 0).all()
