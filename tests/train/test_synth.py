"""Synthetic scenes, clips and crop shards (train/synthetic/) and the `mega-rt synth` command."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from realtime.cli import main
from tests.helpers import write_scene_clip
from train.data.crops import CropShards
from train.data.joints import synthetic_joint_regressor
from train.geometry import cam_crop_to_full, default_focal, project
from train.render import Camera
from train.synthetic import body as B
from train.synthetic import camera as C
from train.synthetic import crops
from train.synthetic import scene as S
from train.synthetic.appearance import clothing_colors


@pytest.fixture(scope="module")
def video(tmp_path_factory, assets_dir, renderer):
    """One small scene written by the CLI (module-scoped: several tests read it)."""
    out = tmp_path_factory.mktemp("synth") / "scene.mp4"
    result = CliRunner().invoke(
        main, ["synth", str(out), "--people", "2", "--frames", "5", "--seed", "3", "--size", "192x144"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_video_is_readable_with_the_stated_frames_and_size(video):
    import cv2

    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 5 and frames[0].shape == (144, 192, 3)
    assert frames[0].std() > 5  # a background, not a blank frame
    assert not list(video.parent.glob(".*partial*"))  # temp files renamed or removed


def test_ground_truth_arrays_and_metadata(video, model):
    gt = np.load(video.with_suffix(".npz"))
    assert gt["verts_cam"].shape == (5, 2, B.NUM_VERTS, 3) and gt["rotmat"].shape == (5, 2, 3, 3)
    assert gt["cam_t"].shape == (5, 2, 3) and gt["boxes_xyxy"].shape == (5, 2, 4) and gt["visibility"].shape == (5, 2)
    assert "faces" not in gt.files
    assert gt["image_size_wh"].tolist() == [192, 144] and float(gt["fps"]) == 30.0
    focal = default_focal(192, 144)
    assert gt["focal"].tolist() == pytest.approx([focal, focal]) and gt["principal"].tolist() == [96.0, 72.0]
    # verts_cam = verts_canonical @ R^T + cam_t, with the canonical mesh re-posed from the stored parameters
    f, k = 3, 1
    canonical = S.canonical_verts(
        model, torch.from_numpy(gt["body_pose"][f, k : k + 1]), torch.from_numpy(gt["shape"][k : k + 1])
    )[0].numpy()
    rebuilt = canonical @ gt["rotmat"][f, k].T + gt["cam_t"][f, k]
    np.testing.assert_allclose(rebuilt, gt["verts_cam"][f, k], atol=2e-4)
    np.testing.assert_allclose(gt["rotmat"][f, k] @ gt["rotmat"][f, k].T, np.eye(3), atol=1e-5)
    assert (gt["verts_cam"][..., 2] > 1.0).all()  # everyone in front of the camera
    assert ((gt["visibility"] >= 0) & (gt["visibility"] <= 1)).all()


def test_same_seed_same_ground_truth_bytes(video, tmp_path):
    again = tmp_path / "again.mp4"
    other = tmp_path / "other.mp4"
    runner = CliRunner()
    assert (
        runner.invoke(
            main, ["synth", str(again), "--people", "2", "--frames", "5", "--seed", "3", "--size", "192x144"]
        ).exit_code
        == 0
    )
    assert (
        runner.invoke(
            main, ["synth", str(other), "--people", "2", "--frames", "5", "--seed", "4", "--size", "192x144"]
        ).exit_code
        == 0
    )
    a, b, c = (np.load(p.with_suffix(".npz")) for p in (video, again, other))
    assert a.files == b.files
    for name in a.files:
        assert np.array_equal(a[name], b[name]), name
    assert not np.array_equal(a["verts_cam"], c["verts_cam"])


def _one_person_scene(model, seed):
    cfg = S.SceneConfig(width=256, height=192, frames=2, people=1, seed=seed)
    plan = S.plan_scene(cfg, model)
    truth = S.pose_people(
        plan.body_pose[:, 0], plan.global_orient[:, 0], plan.shape.repeat(2, 1), plan.position[:, 0], plan.rig, model
    )
    return plan, truth


def test_ground_truth_box_equals_rendered_alpha_box(model, renderer):
    checked = 0
    for seed in range(6):
        plan, truth = _one_person_scene(model, seed)
        box = truth.boxes_xyxy[0]
        if box[0] <= 0 or box[1] <= 0 or box[2] >= 255 or box[3] >= 191:
            continue  # touches the border: the clipped box is not the silhouette's
        res = renderer.render(truth.verts_cam[:1], plan.rig.camera, plan.colors, plan.background)
        ys, xs = np.nonzero(res.alpha > 0)
        rendered = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
        assert np.abs(rendered - box).max() <= 2.0, (seed, rendered, box)
        assert S.visible_fraction(truth.verts_cam[:1], res.mask, res.depth, plan.rig.camera)[0] == 1.0
        checked += 1
    assert checked >= 3


def test_visibility_drops_for_the_person_behind(model, renderer):
    rig = C.place_camera(320, 240, 400.0, 1.6)
    pose = torch.zeros(2, 23, 3)
    orient = torch.tensor([[0.0, 3.14159, 0.0], [0.0, 3.14159, 0.0]])
    position = np.array([[0.0, rig.near_m], [0.1, rig.near_m + 2.0]])
    truth = S.pose_people(pose, orient, torch.zeros(2, B.NUM_SHAPE), position, rig, model)
    res = renderer.render(truth.verts_cam, rig.camera)
    front, behind = S.visible_fraction(truth.verts_cam, res.mask, res.depth, rig.camera)
    assert front == 1.0 and behind < 0.6
    # feet on the ground plane (world y = 0) for both
    world = truth.verts_cam @ rig.rot_cw + rig.position
    assert np.abs(world[..., 1].min(1)).max() < 1e-4


def test_cam_full_to_crop_inverts_cam_crop_to_full():
    gen = torch.Generator().manual_seed(0)
    cam_t = torch.rand(16, 3, generator=gen) * torch.tensor([4.0, 2.0, 20.0]) + torch.tensor([-2.0, -1.0, 5.0])
    center = torch.rand(16, 2, generator=gen) * 600
    size = torch.rand(16, generator=gen) * 300 + 50
    wh = torch.tensor([[1280.0, 720.0]]).expand(16, 2)
    focal = default_focal(1280, 720)
    crop = C.cam_full_to_crop(cam_t, center, size, wh, focal)
    torch.testing.assert_close(cam_crop_to_full(crop, center, size, wh, focal), cam_t, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("crop_hw", [(224, 224), (256, 192)])
def test_crop_dataset_shards_are_consistent(tmp_path, model, renderer, crop_hw):
    import cv2

    cfg = crops.CropDatasetConfig(samples=3, crop_hw=crop_hw, shard_size=2, seed=5, occluder_prob=0.0, msaa=0)
    shards = crops.write_crop_dataset(tmp_path, cfg, model)
    index = json.loads((tmp_path / "index.json").read_text())
    assert [e["samples"] for e in index["shards"]] == [2, 1] and index["crop_hw"] == list(crop_hw)
    d = np.load(shards[0])
    assert d["images"].shape == (2, *crop_hw, 3) and d["images"].dtype == np.uint8
    assert d["verts_canonical"].shape == (2, B.NUM_VERTS, 3)
    np.testing.assert_allclose(d["verts_canonical"].mean(1), 0, atol=1e-5)
    full = cam_crop_to_full(
        *(torch.from_numpy(d[k]) for k in ("cam_crop", "box_center", "box_size", "img_size_wh", "focal_full"))
    )
    np.testing.assert_allclose(full.numpy(), d["cam_t_full"], rtol=1e-5, atol=1e-4)
    w, h = d["img_size_wh"][0]
    for i in range(2):
        # the mesh, placed by the stored rotation and camera, projects onto the person in the crop
        cam = C.crop_camera(
            Camera.centred(int(w), int(h), float(d["focal_full"][i])),
            d["box_center"][i],
            float(d["box_size"][i]),
            crop_hw,
        )
        verts_cam = d["verts_canonical"][i] @ d["rotmat"][i].T + d["cam_t_full"][i]
        uv = project(torch.from_numpy(verts_cam)[None], torch.tensor([cam.fx, cam.fy]), torch.tensor([cam.cx, cam.cy]))[
            0
        ]
        uv = np.rint(uv.numpy()).astype(int)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < crop_hw[1]) & (uv[:, 1] >= 0) & (uv[:, 1] < crop_hw[0])
        assert inside.mean() > 0.95  # the crop holds the person
        mask = cv2.dilate(d["masks"][i], np.ones((3, 3), np.uint8)).astype(bool)
        assert mask[uv[inside, 1], uv[inside, 0]].all()


def test_crop_reader_reads_the_shards_the_writer_writes(tmp_path, model, renderer, assets_dir):
    import train.data.crops as reader

    assert reader.FORMAT is crops.FORMAT  # one definition of the layout, imported by the reader
    cfg = crops.CropDatasetConfig(samples=3, shard_size=2, seed=2, occluder_prob=0.0, msaa=0)
    crops.write_crop_dataset(tmp_path, cfg, model)
    assert json.loads((tmp_path / crops.INDEX_FILE).read_text())["format"] == crops.FORMAT
    assert not list(tmp_path.glob(".*"))  # temp files renamed
    shards = CropShards(tmp_path, synthetic_joint_regressor(assets_dir).numpy())
    assert len(shards) == 3
    with np.load(tmp_path / crops.SHARD_FILE.format(1)) as written:
        assert sorted(written.files) == sorted(crops.SHARD_ARRAYS)
        sample = shards.raw(2)  # the first sample of the second shard
        assert np.array_equal(sample.image, written["images"][0])
        assert np.array_equal(sample.verts_canonical, written["verts_canonical"][0])
        assert np.array_equal(sample.rotmat, written["rotmat"][0])


def test_crop_reader_refuses_a_shard_without_an_array_of_the_layout(tmp_path, model, renderer, assets_dir):
    from train.data.crops import DatasetError

    crops.write_crop_dataset(tmp_path, crops.CropDatasetConfig(samples=1, seed=2, occluder_prob=0.0, msaa=0), model)
    shard = tmp_path / crops.SHARD_FILE.format(0)
    with np.load(shard) as z:
        arrays = {name: z[name] for name in z.files if name != "cam_t_full"}
    np.savez(shard, **arrays)
    with pytest.raises(DatasetError, match="lacks cam_t_full"):
        CropShards(tmp_path, synthetic_joint_regressor(assets_dir).numpy())


def test_clip_streamed_in_slices_matches_one_slice(tmp_path, model, renderer):
    from train.data.npz import open_npz

    cfg = S.SceneConfig(width=96, height=64, frames=7, people=2, seed=5, msaa=0)
    _, whole = write_scene_clip(tmp_path / "whole.mp4", cfg, model)
    _, sliced = write_scene_clip(tmp_path / "sliced.mp4", cfg, model, chunk_frames=3)
    a, b = np.load(whole), np.load(sliced)
    assert a.files == b.files and a["verts_cam"].shape == (7, 2, B.NUM_VERTS, 3)
    for name in a.files:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)
    # the streamed member is a plain .npy in the zip: the training reader memory-maps it
    np.testing.assert_array_equal(open_npz(sliced)["verts_cam"], b["verts_cam"])
    # and it is the scene posed in one go
    plan = S.plan_scene(cfg, model)
    np.testing.assert_allclose(S.pose_frames(plan, model).verts_cam, a["verts_cam"], atol=1e-5)
    assert not list(tmp_path.glob(".*"))


def test_cli_dataset_mode_writes_shards(tmp_path, renderer):
    out = tmp_path / "crops"
    result = CliRunner().invoke(
        main, ["synth", "--dataset", str(out), "--samples", "2", "--crop", "256x192", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "index.json").read_text())["samples"] == 2
    assert np.load(out / "shard-00000.npz")["images"].shape == (2, 256, 192, 3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["synth"], "give one of OUT.mp4"),
        (["synth", "x.mp4", "--detection-dataset", "d"], "give one of OUT.mp4"),
        (["synth", "--detection-dataset", "d", "--people", "0"], "--people 0"),
        (["synth", "x.mp4", "--size", "12x"], "--size '12x'"),
        (["synth", "x.mp4", "--people", "0"], "--people 0"),
        (["synth", "x.avi"], "must be an .mp4"),
        (["synth", "no/such/folder/x.mp4"], "folder not found"),
        (["synth", "--dataset", "d", "--samples", "0"], "--samples 0"),
    ],
)
def test_cli_bad_input_is_a_one_line_error(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_cli_unwritable_output_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["synth", "--dataset", str(blocker / "crops"), "--samples", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(blocker / "crops") in result.output and len(result.output.strip().splitlines()) == 1


def test_scene_plan_is_plausible(model):
    cfg = S.SceneConfig(width=320, height=180, frames=40, people=4, seed=2)
    plan = S.plan_scene(cfg, model)
    truth = S.pose_people(
        plan.body_pose.flatten(0, 1), plan.global_orient.flatten(0, 1), plan.shape.repeat(cfg.frames, 1),
        plan.position.reshape(-1, 2), plan.rig, model,
    )  # fmt: skip
    boxes = truth.boxes_xyxy.reshape(cfg.frames, cfg.people, 4)
    heights = boxes[..., 3] - boxes[..., 1]
    assert (heights.max(0) > 0.3 * cfg.height).all()  # everyone is seen at a useful size at some point
    assert B.within_limits(plan.body_pose.flatten(0, 1)).all()
    assert plan.background.shape == (180, 320, 3) and plan.background.std() > 5
    assert plan.colors.shape == (4, B.NUM_VERTS, 3) and len({tuple(c[0]) for c in plan.colors}) > 1
    steps = np.linalg.norm(np.diff(plan.position, axis=0), axis=-1)
    assert steps.max() <= 1.6 / cfg.fps + 1e-6  # nobody moves faster than a brisk walk
    assert asdict(truth).keys() >= {"verts_cam", "rotmat", "cam_t", "boxes_xyxy"}


def test_people_look_different_from_the_front_and_from_behind(model):
    # Why: a person whose front looks like their back cannot tell a network which way the body faces
    # (with plain one-colour shirts a model trained on the renders is ~80 degrees off in rotation; with only
    # a face, a neckline and toe caps the demo backbone swaps left and right half the time). Each
    # front shirt vertex is compared with its mirror image behind the body (nearest vertex to the point
    # reflected through the spine's frontal plane); the face must have eyes, the back of the head not.
    verts = model.verts_template
    part = model.vertex_part
    joints = model.joints_rest
    idx = {n: i for i, n in enumerate(B.JOINT_NAMES)}
    torso = torch.isin(part, torch.tensor([idx[n] for n in ("spine2", "spine3", "left_collar", "right_collar")]))
    plane_z = joints[idx["spine3"], 2]
    front = torso & (verts[:, 2] > plane_z + 0.01)
    mirrored = verts[front] * torch.tensor([1.0, 1.0, -1.0]) + torch.tensor([0.0, 0.0, 2 * plane_z])
    behind = torch.nonzero(torso & (verts[:, 2] < plane_z - 0.01))[:, 0]
    partner = behind[torch.cdist(mirrored, verts[behind]).argmin(1)].numpy()
    head = (part == idx["head"]).numpy()
    head_front = head & (verts[:, 2] > joints[idx["head"], 2] + 0.05).numpy()
    head_back = head & (verts[:, 2] < joints[idx["head"], 2] - 0.03).numpy()
    eye = np.array([0.05, 0.04, 0.04], np.float32)
    for seed in range(12):
        colours = clothing_colors(model, np.random.default_rng(seed))
        differs = np.abs(colours[front.numpy()] - colours[partner]).max(-1) > 0.1
        # the back panel: ~30 % of the upper torso (0 with plain shirts, ~2 % with the neckline alone)
        assert differs.mean() > 0.2, (seed, differs.mean())
        is_eye = (colours == eye).all(-1)
        assert is_eye[head_front].sum() >= 6 and not is_eye[head_back].any(), seed
