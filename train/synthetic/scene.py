"""Synthetic scenes with exact ground truth: people from `train.synthetic.body` in front of a camera.

A scene is planned first (`plan_scene`: camera, background, clothes, and for every frame each person's
pose, heading and ground position; no rendering), then posed (`pose_people`, `pose_frames`: meshes in
the camera frame, rotations, translations, boxes) and rendered (`render_scene`: frames and the share of
each person that is seen). The clip writer (`train.synthetic.clip`), the crop shards
(`train.synthetic.crops`) and the detection dataset (`train.synthetic.detection`) are built on these.

Ground truth (camera frame, see `train.synthetic.camera`): `verts_cam = verts_canonical @ R^T + cam_t`
where `verts_canonical` is the posed mesh without global rotation and centred on its vertex mean (as
MEGA's training data), so `cam_t` is the mesh centroid in the camera frame.

Randomness: a torch.Generator for the bodies and a numpy Generator for the scene, both from the seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from train.geometry import axis_angle_to_matrix, default_focal
from train.render import Camera, MeshRenderer
from train.synthetic.appearance import clothing_colors, render_background, sample_background_style
from train.synthetic.body import NUM_JOINTS, SyntheticBody
from train.synthetic.camera import CameraRig, place_camera, project_points
from train.synthetic.poses import gesture_sequence, sample_shapes, walking_sequence


@dataclass(frozen=True)
class SceneConfig:
    width: int = 1280
    height: int = 720
    frames: int = 90
    people: int = 3
    seed: int = 0
    fps: float = 30.0
    focal: float | None = None  # None: the pipeline's default_focal(width, height)
    msaa: int = 4
    walker_share: float = 0.7  # the others stand and gesture (sometimes sit-like)


@dataclass
class ScenePlan:
    rig: CameraRig
    background: np.ndarray  # (H,W,3) uint8 RGB
    colors: np.ndarray  # (K,V,3) RGB per-vertex colours
    body_pose: torch.Tensor  # (F,K,23,3)
    global_orient: torch.Tensor  # (F,K,3) world axis-angle
    shape: torch.Tensor  # (K,NUM_SHAPE)
    position: np.ndarray  # (F,K,2) ground position (x, z) of the pelvis


def _walk_path(
    rng: np.random.Generator, rig: CameraRig, frames: int, fps: float, speed: float
) -> tuple[np.ndarray, np.ndarray]:
    """(F,2) ground positions and (F,) headings (yaw) wandering between random waypoints in view."""

    def waypoint():
        z = rng.uniform(rig.near_m, rig.far_m)
        return np.array([rng.uniform(-1, 1) * rig.half_width_at(z), z])

    pos, target = waypoint(), waypoint()
    heading = math.atan2(*(target - pos))
    max_turn = math.radians(90) / fps
    positions, headings = np.zeros((frames, 2)), np.zeros(frames)
    for f in range(frames):
        positions[f], headings[f] = pos, heading
        if np.linalg.norm(target - pos) < 0.8:
            target = waypoint()
        want = math.atan2(*(target - pos))
        turn = (want - heading + math.pi) % (2 * math.pi) - math.pi
        heading += float(np.clip(turn, -max_turn, max_turn))
        pos = pos + speed / fps * np.array([math.sin(heading), math.cos(heading)])  # yaw 0 faces +z
    return positions, headings


def plan_scene(cfg: SceneConfig, body: SyntheticBody) -> ScenePlan:
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    focal = cfg.focal or default_focal(cfg.width, cfg.height)
    rig = place_camera(cfg.width, cfg.height, focal, camera_height=float(rng.uniform(1.4, 1.8)))
    background = render_background(rig, sample_background_style(rng, rig), rng)
    f_, k_ = cfg.frames, cfg.people
    body_pose = torch.zeros(f_, k_, NUM_JOINTS - 1, 3)
    global_orient = torch.zeros(f_, k_, 3)
    position = np.zeros((f_, k_, 2))
    for k in range(k_):
        if rng.random() < cfg.walker_share:
            speed = float(rng.uniform(0.9, 1.6))
            position[:, k], yaw = _walk_path(rng, rig, f_, cfg.fps, speed)
            body_pose[:, k], _ = walking_sequence(f_, gen, cfg.fps, speed)
        else:
            z = rng.uniform(rig.near_m, rig.far_m)
            position[:, k] = (rng.uniform(-1, 1) * rig.half_width_at(z, 0.8), z)
            t = np.arange(f_) / cfg.fps
            # mostly facing the camera (yaw pi), turning slowly
            yaw = (
                math.pi
                + rng.uniform(-1.2, 1.2)
                + 0.5 * np.sin(2 * math.pi * t / rng.uniform(6, 12) + rng.uniform(0, 6.3))
            )
            kinds = ("sitting",) if rng.random() < 0.15 else ("standing", "standing", "reaching")
            body_pose[:, k] = gesture_sequence(f_, gen, kinds, frames_per_key=int(rng.integers(20, 45)))
        global_orient[:, k, 1] = torch.as_tensor(yaw, dtype=torch.float32)
    shape = sample_shapes(k_, gen)
    colors = np.stack([clothing_colors(body, rng) for _ in range(k_)])
    return ScenePlan(rig, background, colors, body_pose, global_orient, shape, position)


@dataclass
class PeopleTruth:
    """Per person, all in the camera frame: arrays (N,...) from `pose_people`, (F,K,...) from `pose_frames`."""

    verts_cam: np.ndarray  # (...,V,3) float32
    joints_cam: np.ndarray  # (...,24,3)
    rotmat: np.ndarray  # (...,3,3) canonical -> camera
    cam_t: np.ndarray  # (...,3) mesh centroid in the camera frame
    boxes_xyxy: np.ndarray  # (...,4) projected mesh box, clipped to the image


def pose_people(
    body_pose: torch.Tensor,
    global_orient: torch.Tensor,
    shape: torch.Tensor,
    position: np.ndarray,
    rig: CameraRig,
    body: SyntheticBody,
    chunk: int = 64,
) -> PeopleTruth:
    """Pose (N,23,3) bodies with world orientation `global_orient` (N,3) and shapes (N,NUM_SHAPE), pelvis
    above the ground position `position` (N,2) = (x, z) and the lowest vertex on the ground."""
    n = body_pose.shape[0]
    rot_cw = torch.from_numpy(rig.rot_cw).float()
    cam_pos = torch.from_numpy(rig.position).float()
    out = {k: [] for k in ("verts_cam", "joints_cam", "rotmat", "cam_t")}
    with torch.no_grad():
        for s in range(0, n, chunk):
            sl = slice(s, s + chunk)
            posed = body.pose(body_pose[sl], global_orient[sl], shape[sl])
            lift = -posed.verts[..., 1].min(1).values  # feet on the ground, whatever the pose
            offset = torch.zeros(posed.verts.shape[0], 1, 3)
            offset[:, 0, 0] = torch.from_numpy(position[sl, 0]).float() - posed.joints[:, 0, 0]
            offset[:, 0, 1] = lift
            offset[:, 0, 2] = torch.from_numpy(position[sl, 1]).float() - posed.joints[:, 0, 2]
            verts_cam = (posed.verts + offset - cam_pos) @ rot_cw.T
            out["verts_cam"].append(verts_cam)
            out["joints_cam"].append((posed.joints + offset - cam_pos) @ rot_cw.T)
            out["rotmat"].append(rot_cw @ axis_angle_to_matrix(global_orient[sl]))
            out["cam_t"].append(verts_cam.mean(1))
    arrays = {k: torch.cat(v).numpy().astype(np.float32) for k, v in out.items()}
    cam = rig.camera
    uv = project_points(arrays["verts_cam"], cam)
    lo, hi = uv.min(1), uv.max(1)
    boxes = np.concatenate([lo, hi], -1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, cam.width - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, cam.height - 1)
    return PeopleTruth(boxes_xyxy=boxes.astype(np.float32), **arrays)


def pose_frames(plan: ScenePlan, body: SyntheticBody, start: int = 0, stop: int | None = None) -> PeopleTruth:
    """The ground truth of frames [start, stop) of a plan, arrays (F,K,...): a clip is posed a slice at a
    time, so its memory does not grow with its length."""
    body_pose = plan.body_pose[start:stop]
    f_, k_ = body_pose.shape[:2]
    truth = pose_people(
        body_pose.flatten(0, 1), plan.global_orient[start:stop].flatten(0, 1), plan.shape.repeat(f_, 1),
        plan.position[start:stop].reshape(-1, 2), plan.rig, body,
    )  # fmt: skip
    return PeopleTruth(**{n: a.reshape(f_, k_, *a.shape[1:]) for n, a in asdict(truth).items()})


def canonical_verts(body: SyntheticBody, body_pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Posed without global rotation, centred on the vertex mean (MEGA's canonical mesh)."""
    with torch.no_grad():
        verts = body.pose(body_pose, torch.zeros(body_pose.shape[0], 3), shape).verts
    return verts - verts.mean(1, keepdim=True)


def visible_fraction(
    verts_cam: np.ndarray, mask: np.ndarray, depth: np.ndarray, cam: Camera, tolerance_m: float = 0.05
) -> np.ndarray:
    """(K,) share of each person's vertices that are in the image and not hidden by another person.

    Self-occlusion does not count. A vertex is hidden when its pixel shows someone else whose surface
    is nearer than the vertex: at a silhouette edge the pixel may show the person behind, which hides
    nothing.
    """
    uv = np.rint(project_points(verts_cam, cam)).astype(np.int64)
    in_front = verts_cam[..., 2] > cam.near
    inside = in_front & (uv[..., 0] >= 0) & (uv[..., 0] < cam.width) & (uv[..., 1] >= 0) & (uv[..., 1] < cam.height)
    rows, cols = uv[..., 1].clip(0, cam.height - 1), uv[..., 0].clip(0, cam.width - 1)
    who, front_z = mask[rows, cols], depth[rows, cols]
    own = np.arange(1, verts_cam.shape[0] + 1)[:, None]
    hidden = (who != own) & (who != 0) & (front_z < verts_cam[..., 2] - tolerance_m)
    return (inside & ~hidden).mean(1).astype(np.float32)


def render_scene(
    plan: ScenePlan, truth: PeopleTruth, renderer: MeshRenderer
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (RGB frame (H,W,3) uint8, visibility (K,)) for every frame."""
    for f in range(truth.verts_cam.shape[0]):
        res = renderer.render(truth.verts_cam[f], plan.rig.camera, plan.colors, plan.background)
        yield res.image, visible_fraction(truth.verts_cam[f], res.mask, res.depth, plan.rig.camera)
