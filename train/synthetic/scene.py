"""Synthetic scenes with exact ground truth: people from `train.body` over procedural backgrounds.

Two products:
- a video (`write_scene_video`): K people walking or gesturing in front of a static camera at human
  height, with per frame and person the mesh in camera coordinates, its global rotation and
  translation, a 2D box and a visibility fraction (`OUT.npz`, no faces);
- a crop dataset (`write_crop_dataset`): person-centred crops at the backbone input size with the
  canonical mesh, rotation and weak-perspective crop camera, in npz shards for training.

Frames (world and camera):
- world: metres, +y up, ground plane y = 0; the camera sits at (0, height, 0) and looks along +z,
  pitched down. The body's own axes (see train/synthetic/body.py) are world axes before its yaw.
- camera: OpenCV (x right, y down, z forward), as `train.geometry`. `verts_cam = verts_canonical @ R^T
  + cam_t` where `verts_canonical` is the posed mesh without global rotation and centred on its vertex
  mean (as MEGA's training data), so `cam_t` is the mesh centroid in the camera frame.
- the default focal length is the pipeline's assumption, 1000 / 224 * max(W, H) px with the principal
  point at the image centre (`train.geometry.full_image_focal`), so ground truth and predictions share
  one camera.

Randomness: a torch.Generator for the bodies and a numpy Generator for the scene, both from the seed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from train.render import Camera, MeshRenderer, RendererConfig
from train.synthetic import body as body_lib
from train.geometry import axis_angle_to_matrix, project

NOMINAL_HEIGHT_M = 1.75  # framing: the nearest person is about 80 % of the image height


def default_focal(width: int, height: int) -> float:
    """The pipeline's focal length for a W x H frame (official MEGA demo): 1000 / 224 * max(W, H)."""
    return 1000.0 / 224.0 * max(width, height)


def cam_full_to_crop(
    cam_t: torch.Tensor, box_center: torch.Tensor, box_size: torch.Tensor, img_size_wh: torch.Tensor, focal
) -> torch.Tensor:
    """Inverse of `train.geometry.cam_crop_to_full`: camera translation (B,3) -> crop camera (s, tx, ty)."""
    tz = cam_t[..., 2]
    s = 2 * focal / (box_size * tz)
    tx = cam_t[..., 0] - (box_center[..., 0] - img_size_wh[..., 0] / 2.0) * tz / focal
    ty = cam_t[..., 1] - (box_center[..., 1] - img_size_wh[..., 1] / 2.0) * tz / focal
    return torch.stack([s, tx, ty], -1)


# ----------------------------------------------------------------------------------------------------
# Camera placement


@dataclass(frozen=True)
class CameraRig:
    camera: Camera
    rot_cw: np.ndarray  # (3,3) world -> camera rotation
    position: np.ndarray  # (3,) camera centre in the world
    near_m: float  # ground depth range where people are placed
    far_m: float

    def world_to_cam(self, points: np.ndarray) -> np.ndarray:
        return (points - self.position) @ self.rot_cw.T

    def half_width_at(self, depth: float, margin_m: float = 0.4) -> float:
        """Lateral half-extent (m) of the ground strip that stays in view at `depth`."""
        return max(depth * (self.camera.width / 2.0) / self.camera.fx - margin_m, 0.0)


def _rot_cw(pitch: float) -> np.ndarray:
    forward = np.array([0.0, -math.sin(pitch), math.cos(pitch)])
    up = np.array([0.0, math.cos(pitch), math.sin(pitch)])
    right = np.cross(forward, up)  # facing +z with +y up, right is -x
    return np.stack([right, -up, forward])  # rows: camera x (right), y (down), z (forward) in world


def place_camera(width: int, height: int, focal: float, camera_height: float) -> CameraRig:
    """A camera at `camera_height` pitched so that the nearest person (~80 % of the frame) is centred."""
    near = focal * NOMINAL_HEIGHT_M / (0.8 * height)
    head = math.atan((NOMINAL_HEIGHT_M - camera_height) / near)
    feet = -math.atan(camera_height / near)
    pitch = -(head + feet) / 2  # > 0 looks down
    camera = Camera.centred(width, height, focal)
    return CameraRig(camera, _rot_cw(pitch), np.array([0.0, camera_height, 0.0]), near, 2.2 * near)


# ----------------------------------------------------------------------------------------------------
# Procedural background (RGB)


def _value_noise(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A small random tile; looked up with wrap-around and bilinear filtering, it is smooth noise."""
    return rng.random((size, size)).astype(np.float32)


def _lookup(tile: np.ndarray, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
    import cv2

    n = tile.shape[0]
    mx = (np.mod(x / period, 1.0) * n).astype(np.float32)
    my = (np.mod(y / period, 1.0) * n).astype(np.float32)
    return cv2.remap(tile, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _hash01(ix: np.ndarray, iz: np.ndarray, salt: int) -> np.ndarray:
    h = (ix.astype(np.int64) * 73856093) ^ (iz.astype(np.int64) * 19349663) ^ salt
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / 65535.0


@dataclass(frozen=True)
class BackgroundStyle:
    sky_horizon: tuple[float, float, float]
    sky_zenith: tuple[float, float, float]
    ground: tuple[float, float, float]
    ground_kind: str  # tiles | asphalt | grass
    tile_m: float
    backdrop: str  # buildings | trees | open
    backdrop_m: float  # distance of the backdrop
    fog_m: float  # distance at which half the colour is haze
    brightness: float
    salt: int


def sample_background_style(rng: np.random.Generator, rig: CameraRig) -> BackgroundStyle:
    def jitter(c, amount=0.06):
        return tuple(float(np.clip(v + rng.uniform(-amount, amount), 0, 1)) for v in c)

    sky = [((0.78, 0.86, 0.95), (0.35, 0.55, 0.85)), ((0.85, 0.85, 0.86), (0.62, 0.65, 0.70)), ((0.98, 0.82, 0.65), (0.45, 0.50, 0.72))]
    horizon, zenith = sky[rng.integers(len(sky))]
    kind = ("tiles", "asphalt", "grass")[rng.integers(3)]
    ground = {"tiles": (0.62, 0.58, 0.54), "asphalt": (0.36, 0.36, 0.38), "grass": (0.30, 0.48, 0.22)}[kind]
    return BackgroundStyle(
        sky_horizon=jitter(horizon), sky_zenith=jitter(zenith), ground=jitter(ground, 0.08), ground_kind=kind,
        tile_m=float(rng.uniform(0.4, 1.2)), backdrop=("buildings", "trees", "open")[rng.choice(3, p=[0.55, 0.3, 0.15])],
        backdrop_m=float(rig.far_m * rng.uniform(1.3, 2.5)), fog_m=float(rig.far_m * rng.uniform(6, 16)),
        brightness=float(rng.uniform(0.8, 1.1)), salt=int(rng.integers(1 << 30)),
    )  # fmt: skip


def render_background(rig: CameraRig, style: BackgroundStyle, rng: np.random.Generator) -> np.ndarray:
    """(H,W,3) uint8 RGB: sky, a backdrop (buildings or trees) and a textured ground, seen by `rig`."""
    cam = rig.camera
    u, v = np.meshgrid(np.arange(cam.width, dtype=np.float32), np.arange(cam.height, dtype=np.float32))
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], -1) @ rig.rot_cw.astype(np.float32)
    dx, dy, dz = rays[..., 0], rays[..., 1], rays[..., 2]
    cam_y = float(rig.position[1])
    noise = [_value_noise(rng) for _ in range(3)]

    # sky: gradient by elevation plus soft clouds
    elevation = np.clip(dy / np.sqrt(dx**2 + dy**2 + dz**2), 0, 1)[..., None]
    horizon, zenith = np.array(style.sky_horizon, np.float32), np.array(style.sky_zenith, np.float32)
    image = horizon + (zenith - horizon) * np.sqrt(elevation)
    # clouds on a plane 1 km up, faded towards the horizon where they would alias
    t_cloud = 1000.0 / np.maximum(dy, 0.02)
    clouds = _lookup(noise[0], dx * t_cloud, dz * t_cloud, 900.0)[..., None]
    image = image + 0.35 * np.clip(clouds - 0.45, 0, 1) * np.clip((elevation - 0.03) * 15, 0, 1)

    # ground
    sees_ground = dy < -1e-6
    t_ground = np.where(sees_ground, cam_y / np.maximum(-dy, 1e-6), 0.0)  # 0 where the ray never lands
    gx, gz = dx * t_ground, dz * t_ground
    footprint = t_ground / (cam.fx * np.maximum(-dy, 1e-3))  # metres per pixel on the ground
    g = np.array(style.ground, np.float32)
    if style.ground_kind == "tiles":
        s = style.tile_m
        ix, iz = np.floor(gx / s), np.floor(gz / s)
        fx_, fz_ = gx / s - ix, gz / s - iz
        grout = (np.minimum(np.minimum(fx_, 1 - fx_), np.minimum(fz_, 1 - fz_)) < 0.03).astype(np.float32)
        shade = 0.85 + 0.3 * _hash01(ix, iz, style.salt) - 0.35 * grout
        detail = np.clip(1 - footprint / (0.3 * s), 0, 1)  # fade fine detail before it aliases
        tex = 1 + detail * (shade - 1)
    else:
        coarse = _lookup(noise[1], gx, gz, 9.0)
        fine = _lookup(noise[2], gx, gz, 0.9)
        detail = np.clip(1 - footprint / 0.05, 0, 1)
        tex = 0.8 + 0.35 * coarse + detail * 0.25 * (fine - 0.5)
    ground_rgb = g * tex[..., None]

    # backdrop plane at z = backdrop_m: buildings (with windows) or a tree line
    sees_back = dz > 1e-6
    t_back = np.where(sees_back, (style.backdrop_m - rig.position[2]) / np.maximum(dz, 1e-6), 0.0)
    bx, by = dx * t_back, cam_y + dy * t_back
    back_rgb = None
    if style.backdrop == "buildings":
        lot = np.floor(bx / 9.0)
        top = 5 + 18 * _hash01(lot, lot * 0 + 7, style.salt)
        hue = _hash01(lot, lot * 0 + 3, style.salt)
        wall = np.stack([0.55 + 0.3 * hue, 0.5 + 0.2 * _hash01(lot, lot + 1, style.salt), 0.45 + 0.25 * (1 - hue)], -1)
        window = ((np.mod(bx, 2.2) < 1.2) & (np.mod(by, 3.2) > 1.2) & (by > 2.5)).astype(np.float32)[..., None]
        back_rgb = wall * (1 - 0.45 * window) + 0.08 * window
        covered = sees_back & (by >= 0) & (by <= top)
    elif style.backdrop == "trees":
        top = 6 + 6 * _lookup(noise[0], bx, bx * 0, 25.0) + 2 * _lookup(noise[1], bx, bx * 0, 4.0)
        leaf = _lookup(noise[2], bx, by, 2.0)[..., None]
        back_rgb = np.array([0.16, 0.32, 0.14], np.float32) * (0.7 + 0.6 * leaf)
        covered = sees_back & (by >= 0) & (by <= top)
    else:
        covered = np.zeros_like(bx, bool)

    fog_colour = horizon
    is_ground = sees_ground & ~(covered & (t_back < t_ground))
    haze = 1 - np.exp(-t_ground / style.fog_m)[..., None]
    image = np.where(is_ground[..., None], ground_rgb * (1 - haze) + fog_colour * haze, image)
    if back_rgb is not None:
        show = (covered & ~is_ground)[..., None]
        haze_b = 1 - math.exp(-style.backdrop_m / style.fog_m)
        image = np.where(show, back_rgb * (1 - haze_b) + fog_colour * haze_b, image)

    image = image * style.brightness + rng.normal(0, 0.012, image.shape).astype(np.float32)  # sensor grain
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# Clothing colours


_SKIN = np.array(
    [[0.98, 0.84, 0.73], [0.92, 0.74, 0.60], [0.80, 0.60, 0.45], [0.63, 0.45, 0.33], [0.45, 0.31, 0.22], [0.33, 0.22, 0.16]],
    np.float32,
)
_HAIR = np.array(
    [[0.06, 0.05, 0.05], [0.20, 0.12, 0.07], [0.40, 0.26, 0.13], [0.80, 0.65, 0.40], [0.60, 0.60, 0.60], [0.55, 0.22, 0.10]],
    np.float32,
)
_PANTS = np.array([[0.15, 0.22, 0.40], [0.08, 0.08, 0.09], [0.62, 0.55, 0.40], [0.35, 0.35, 0.37], [0.30, 0.20, 0.15]], np.float32)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return (v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)).astype(np.float32)


def clothing_colors(body: body_lib.SyntheticBody, rng: np.random.Generator) -> np.ndarray:
    """(V,3) RGB per-vertex colours: skin, hair, a shirt, trousers or shorts, shoes, and a face.

    The front of a person must look different from the back, as it does on real people: without that
    the renders are front/back ambiguous and a network cannot learn which way a body faces. So the
    face has eyes, brows and a mouth, the shirt's neckline dips lower in front than behind, some shirts
    carry a chest print, and shoes have a pale toe cap.
    """
    part = body.vertex_part.cpu().numpy()
    verts = body.verts_template.cpu().numpy()
    joints = body.joints_rest.cpu().numpy()
    idx = {n: i for i, n in enumerate(body_lib.JOINT_NAMES)}
    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] + rng.uniform(-0.03, 0.03, 3), 0, 1)
    shirt = _hsv_to_rgb(rng.random(), rng.uniform(0.15, 0.85), rng.uniform(0.25, 0.95))
    if rng.random() < 0.7:  # denim, black, khaki, grey, brown
        pants = np.clip(_PANTS[rng.integers(len(_PANTS))] * rng.uniform(0.8, 1.2), 0, 1)
    else:
        pants = _hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.7), rng.uniform(0.2, 0.7))
    shoes = np.array([0.9, 0.9, 0.88] if rng.random() < 0.3 else [0.08, 0.07, 0.07], np.float32) * rng.uniform(0.8, 1.0)
    hair = _HAIR[rng.integers(len(_HAIR))]
    colours = np.empty((len(part), 3), np.float32)
    colours[:] = skin
    torso = [idx[n] for n in ("spine1", "spine2", "spine3", "left_collar", "right_collar", "left_shoulder", "right_shoulder")]
    is_shirt = np.isin(part, torso)
    colours[is_shirt] = shirt
    if rng.random() < 0.6:  # long sleeves
        colours[np.isin(part, [idx["left_elbow"], idx["right_elbow"]])] = shirt
    legs = [idx[n] for n in ("pelvis", "left_hip", "right_hip")]
    if rng.random() < 0.75:  # trousers, else shorts
        legs += [idx["left_knee"], idx["right_knee"]]
    colours[np.isin(part, legs)] = pants
    feet = np.isin(part, [idx[n] for n in ("left_ankle", "right_ankle", "left_foot", "right_foot")])
    colours[feet] = shoes
    # toe caps: the front third of each foot, a contrasting tone
    toe = np.isin(part, [idx["left_foot"], idx["right_foot"]]) & (verts[:, 2] > joints[idx["left_foot"], 2] + 0.03)
    colours[toe] = np.where(shoes.mean() > 0.5, shoes * 0.55, np.clip(shoes + 0.55, 0, 1))
    # neckline: skin in a crew (shallow) or V (deep) opening on the front of the shirt only
    neck = joints[idx["neck"]]
    dip = rng.uniform(0.04, 0.14)
    front = verts[:, 2] > neck[2] + 0.02
    opening = (neck[1] - verts[:, 1]) < dip * (1 - np.abs(verts[:, 0] - neck[0]) / 0.10) - 0.01
    colours[is_shirt & front & opening] = skin
    if rng.random() < 0.45:  # a chest print
        chest = joints[idx["spine3"]]
        print_rgb = _hsv_to_rgb(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.2, 1.0))
        width, height, lift = rng.uniform(0.05, 0.10), rng.uniform(0.04, 0.09), rng.uniform(-0.06, 0.04)
        on_print = (np.abs(verts[:, 0] - chest[0]) < width) & (np.abs(verts[:, 1] - chest[1] - lift) < height)
        colours[is_shirt & ~(front & opening) & on_print & (verts[:, 2] > chest[2] + 0.05)] = print_rgb
    # a jersey panel across the upper back, always, in the tone that contrasts most with the shirt: the
    # face, neckline and toe caps are a few pixels in a 128-px crop, too small for the demo's tiny
    # backbone to learn which way a body faces from (session 5: its heatmaps swapped left and right on
    # half the test crops); a large back panel is a cue it can see. (Session 5: not enough on its own; the
    # 3000-step backbone still swapped left and right on 49 % of test crops, its `side_swaps` log.)
    spine3 = joints[idx["spine3"]]
    on_back = (np.abs(verts[:, 0] - spine3[0]) < 0.12) & (np.abs(verts[:, 1] - spine3[1] + 0.03) < 0.11)
    panel = np.float32(0.08) if shirt.mean() > 0.5 else np.float32(0.92)
    colours[is_shirt & on_back & (verts[:, 2] < spine3[2] - 0.02)] = panel
    # hair: the top and, longer hair, the back of the head
    head = part == idx["head"]
    rel_y = verts[:, 1] - joints[idx["head"], 1]
    back = np.clip((joints[idx["head"], 2] + 0.02 - verts[:, 2]) / 0.08, 0, 1)  # 0 at the face, 1 at the back
    hairline = 0.135 - back * rng.uniform(0.10, 0.17)
    colours[head & (rel_y > hairline)] = hair
    # face, placed from the nose tip (the front-most head vertex below the brow)
    face = head & (rel_y < 0.12)
    nose = verts[np.flatnonzero(face)[np.argmax(verts[face, 2])]]
    d = verts - nose
    for side in (-1.0, 1.0):
        eye = face & (np.hypot(d[:, 0] - side * 0.032, d[:, 1] - 0.032) < 0.0095) & (d[:, 2] > -0.05)
        colours[eye] = (0.05, 0.04, 0.04)
        brow = face & (np.abs(d[:, 0] - side * 0.034) < 0.018) & (np.abs(d[:, 1] - 0.052) < 0.005) & (d[:, 2] > -0.05)
        colours[brow] = hair * 0.8
    mouth = face & (np.abs(d[:, 0]) < 0.022) & (np.abs(d[:, 1] + 0.040) < 0.006) & (d[:, 2] > -0.04)
    colours[mouth] = skin * np.array([0.75, 0.45, 0.45], np.float32)
    return colours


# ----------------------------------------------------------------------------------------------------
# Scene planning: where everyone is in every frame (no rendering)


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


def plan_scene(cfg: SceneConfig, body: body_lib.SyntheticBody) -> ScenePlan:
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    focal = cfg.focal or default_focal(cfg.width, cfg.height)
    rig = place_camera(cfg.width, cfg.height, focal, camera_height=float(rng.uniform(1.4, 1.8)))
    background = render_background(rig, sample_background_style(rng, rig), rng)
    f_, k_ = cfg.frames, cfg.people
    body_pose = torch.zeros(f_, k_, body_lib.NUM_JOINTS - 1, 3)
    global_orient = torch.zeros(f_, k_, 3)
    position = np.zeros((f_, k_, 2))
    for k in range(k_):
        if rng.random() < cfg.walker_share:
            speed = float(rng.uniform(0.9, 1.6))
            position[:, k], yaw = _walk_path(rng, rig, f_, cfg.fps, speed)
            body_pose[:, k], _ = body_lib.walking_sequence(f_, gen, cfg.fps, speed)
        else:
            z = rng.uniform(rig.near_m, rig.far_m)
            position[:, k] = (rng.uniform(-1, 1) * rig.half_width_at(z, 0.8), z)
            t = np.arange(f_) / cfg.fps
            # mostly facing the camera (yaw pi), turning slowly
            yaw = math.pi + rng.uniform(-1.2, 1.2) + 0.5 * np.sin(2 * math.pi * t / rng.uniform(6, 12) + rng.uniform(0, 6.3))
            kinds = ("sitting",) if rng.random() < 0.15 else ("standing", "standing", "reaching")
            body_pose[:, k] = body_lib.gesture_sequence(f_, gen, kinds, frames_per_key=int(rng.integers(20, 45)))
        global_orient[:, k, 1] = torch.as_tensor(yaw, dtype=torch.float32)
    shape = body_lib.sample_shapes(k_, gen)
    colors = np.stack([clothing_colors(body, rng) for _ in range(k_)])
    return ScenePlan(rig, background, colors, body_pose, global_orient, shape, position)


@dataclass
class PeopleTruth:
    """Per frame and person, all in the camera frame (arrays (F,K,...))."""

    verts_cam: np.ndarray  # (F,K,V,3) float32
    joints_cam: np.ndarray  # (F,K,24,3)
    rotmat: np.ndarray  # (F,K,3,3) canonical -> camera
    cam_t: np.ndarray  # (F,K,3) mesh centroid in the camera frame
    boxes_xyxy: np.ndarray  # (F,K,4) projected mesh box, clipped to the image


def pose_people(
    body_pose: torch.Tensor,
    global_orient: torch.Tensor,
    shape: torch.Tensor,
    position: np.ndarray,
    rig: CameraRig,
    body: body_lib.SyntheticBody,
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
    uv = _project(arrays["verts_cam"], cam)
    lo, hi = uv.min(1), uv.max(1)
    boxes = np.concatenate([lo, hi], -1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, cam.width - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, cam.height - 1)
    return PeopleTruth(boxes_xyxy=boxes.astype(np.float32), **arrays)


def _project(verts_cam: np.ndarray, cam: Camera) -> np.ndarray:
    """`train.geometry.project` for numpy arrays (...,N,3) -> (...,N,2)."""
    points = torch.from_numpy(np.ascontiguousarray(verts_cam, np.float32))
    uv = project(points.reshape(-1, *points.shape[-2:]), torch.tensor([cam.fx, cam.fy]), torch.tensor([cam.cx, cam.cy]))
    return uv.reshape(*points.shape[:-1], 2).numpy()


def canonical_verts(body: body_lib.SyntheticBody, body_pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
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
    uv = np.rint(_project(verts_cam, cam)).astype(np.int64)
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


def _tmp_path(path: Path) -> Path:
    # keeps the suffix: OpenCV picks the container from it
    return path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")


def write_scene_video(
    out_path: str | os.PathLike, cfg: SceneConfig, body: body_lib.SyntheticBody | None = None, progress=None
) -> tuple[Path, Path]:
    """Render the scene to `out_path` (mp4) and its ground truth to the same name with .npz."""
    import cv2

    out_path = Path(out_path)
    npz_path = out_path.with_suffix(".npz")
    body = body or body_lib.SyntheticBody()
    tmp_video, tmp_npz = _tmp_path(out_path), _tmp_path(npz_path)
    writer = None
    # the renderer first: without EGL, fail before any work
    with MeshRenderer(body.faces, RendererConfig(samples=cfg.msaa)) as renderer:
        try:
            plan = plan_scene(cfg, body)
            f_, k_ = cfg.frames, cfg.people
            truth = pose_people(
                plan.body_pose.flatten(0, 1), plan.global_orient.flatten(0, 1), plan.shape.repeat(f_, 1),
                plan.position.reshape(-1, 2), plan.rig, body,
            )  # fmt: skip
            truth = PeopleTruth(**{n: a.reshape(f_, k_, *a.shape[1:]) for n, a in asdict(truth).items()})
            visibility = np.zeros((f_, k_), np.float32)
            writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), cfg.fps, (cfg.width, cfg.height))
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write an mp4 video at {tmp_video} (no mp4v encoder?)")
            for f, (frame, vis) in enumerate(render_scene(plan, truth, renderer)):
                writer.write(np.ascontiguousarray(frame[..., ::-1]))  # RGB -> BGR
                visibility[f] = vis
                if progress:
                    progress(f + 1)
            writer.release()
            cam = plan.rig.camera
            with open(tmp_npz, "wb") as fh:
                np.savez(
                    fh, verts_cam=truth.verts_cam, joints_cam=truth.joints_cam, rotmat=truth.rotmat, cam_t=truth.cam_t,
                    boxes_xyxy=truth.boxes_xyxy, visibility=visibility,
                    body_pose=plan.body_pose.numpy(), global_orient_world=plan.global_orient.numpy(),
                    shape=plan.shape.numpy(),
                    focal=np.array([cam.fx, cam.fy], np.float32), principal=np.array([cam.cx, cam.cy], np.float32),
                    image_size_wh=np.array([cam.width, cam.height], np.int64), fps=np.float32(cfg.fps),
                    camera_rot_cw=plan.rig.rot_cw.astype(np.float32),
                    camera_position=plan.rig.position.astype(np.float32), seed=np.int64(cfg.seed),
                )  # fmt: skip
            os.replace(tmp_video, out_path)
            os.replace(tmp_npz, npz_path)
        finally:
            if writer is not None:
                writer.release()
            for p in (tmp_video, tmp_npz):
                p.unlink(missing_ok=True)
    return out_path, npz_path


# ----------------------------------------------------------------------------------------------------
# Crop dataset for training


@dataclass(frozen=True)
class CropDatasetConfig:
    samples: int = 1000
    crop_hw: tuple[int, int] = (224, 224)  # backbone input (height, width): (224, 224) or (256, 192)
    image_wh: tuple[int, int] = (1280, 720)  # the full frame the crop is cut from (sets the focal length)
    shard_size: int = 256
    seed: int = 0
    occluder_prob: float = 0.3  # a second person, partly in front or behind
    box_scale: tuple[float, float] = (1.1, 1.35)  # square box side / person's extent
    msaa: int = 4

    def __post_init__(self):
        if self.crop_hw not in ((224, 224), (256, 192)):
            raise ValueError(f"crop_hw must be (224, 224) or (256, 192), got {self.crop_hw}")


DATASET_FORMAT = "mega-rt-synth-crops/1"


def crop_camera(full: Camera, box_center: np.ndarray, box_size: float, crop_hw: tuple[int, int]) -> Camera:
    """The camera that sees exactly the crop: u' = (u - c) * S / b + S / 2 (the usual affine cropper,
    pixel centres at integers), S = crop height; a 256x192 crop is the middle 192 columns of 256."""
    side, width = crop_hw
    k = side / box_size
    cx = (full.cx - box_center[0]) * k + side / 2 - (side - width) / 2
    cy = (full.cy - box_center[1]) * k + side / 2
    return Camera(width, side, full.fx * k, full.fy * k, cx, cy, full.near, full.far)


def _sample_crop(cfg: CropDatasetConfig, body, renderer, rng: np.random.Generator, gen: torch.Generator) -> dict:
    w, h = cfg.image_wh
    rig = place_camera(w, h, default_focal(w, h), float(rng.uniform(1.3, 1.9)))
    people = 2 if rng.random() < cfg.occluder_prob else 1
    body_pose, kinds = body_lib.sample_poses(people, gen)
    shape = body_lib.sample_shapes(people, gen)
    orient = torch.zeros(people, 3)
    orient[:, 1] = torch.from_numpy(rng.uniform(0, 2 * math.pi, people)).float()
    tilt = torch.from_numpy(rng.normal(0, math.radians(6), (people, 2))).float()  # lean a little
    orient = torch.stack([tilt[:, 0], orient[:, 1], tilt[:, 1]], 1)
    z = rng.uniform(rig.near_m, rig.far_m)
    pos = np.zeros((people, 2))
    pos[0] = (rng.uniform(-1, 1) * rig.half_width_at(z), z)
    if people == 2:  # an occluder beside the person, nearer or farther
        pos[1] = (pos[0, 0] + rng.choice([-1, 1]) * rng.uniform(0.3, 0.9), z + rng.choice([-1, 1]) * rng.uniform(1.0, 3.0))
    truth = pose_people(body_pose, orient, shape, pos, rig, body)

    uv = _project(truth.verts_cam[0], rig.camera)
    (x0, y0), (x1, y1) = uv.min(0), uv.max(0)
    aspect = cfg.crop_hw[0] / cfg.crop_hw[1]
    box_size = max(y1 - y0, (x1 - x0) * aspect) * rng.uniform(*cfg.box_scale)
    box_center = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + rng.normal(0, 0.04 * box_size, 2)
    cam = crop_camera(rig.camera, box_center, box_size, cfg.crop_hw)
    crop_rig = CameraRig(cam, rig.rot_cw, rig.position, rig.near_m, rig.far_m)
    background = render_background(crop_rig, sample_background_style(rng, rig), rng)
    colors = np.stack([clothing_colors(body, rng) for _ in range(people)])
    res = renderer.render(truth.verts_cam, cam, colors, background)
    full_wh = torch.tensor([w, h], dtype=torch.float32)
    cam_crop = cam_full_to_crop(
        torch.from_numpy(truth.cam_t[:1]), torch.from_numpy(box_center[None]).float(), torch.tensor([box_size]).float(),
        full_wh[None], float(rig.camera.fx),
    )[0]  # fmt: skip
    return dict(
        images=res.image, masks=(res.mask == 1).astype(np.uint8),
        verts_canonical=canonical_verts(body, body_pose[:1], shape[:1])[0].numpy(),
        rotmat=truth.rotmat[0], cam_crop=cam_crop.numpy(), cam_t_full=truth.cam_t[0],
        box_center=box_center.astype(np.float32), box_size=np.float32(box_size),
        img_size_wh=np.array([w, h], np.float32), focal_full=np.float32(rig.camera.fx),
        body_pose=body_pose[0].numpy(), shape=shape[0].numpy(),
        visibility=visible_fraction(truth.verts_cam, res.mask, res.depth, cam)[0],
        pose_kind=np.int64(body_lib.POSE_KINDS.index(kinds[0])),
    )  # fmt: skip


def write_crop_dataset(
    out_dir: str | os.PathLike, cfg: CropDatasetConfig, body: body_lib.SyntheticBody | None = None, progress=None
) -> list[Path]:
    """Write `cfg.samples` crops as npz shards plus `index.json`; returns the shard paths.

    Shard arrays (N = samples in the shard): images (N,H,W,3) uint8 RGB, masks (N,H,W) uint8,
    verts_canonical (N,6890,3), rotmat (N,3,3), cam_crop (N,3) = (s, tx, ty) such that
    `cam_crop_to_full(cam_crop, box_center, box_size, img_size_wh, focal_full)` == cam_t_full (N,3),
    box_center (N,2), box_size (N,), img_size_wh (N,2), focal_full (N,), body_pose (N,23,3),
    shape (N,5), visibility (N,), pose_kind (N,) (index into POSE_KINDS).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = body or body_lib.SyntheticBody()
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    shards, entries, done = [], [], 0
    with MeshRenderer(body.faces, RendererConfig(samples=cfg.msaa)) as renderer:
        while done < cfg.samples:
            n = min(cfg.shard_size, cfg.samples - done)
            rows = []
            for _ in range(n):
                rows.append(_sample_crop(cfg, body, renderer, rng, gen))
                done += 1
                if progress:
                    progress(done)
            path = out_dir / f"shard-{len(shards):05d}.npz"
            tmp = _tmp_path(path)
            with open(tmp, "wb") as fh:
                np.savez(fh, **{key: np.stack([r[key] for r in rows]) for key in rows[0]})
            os.replace(tmp, path)
            shards.append(path)
            entries.append({"file": path.name, "samples": n})
    index = {
        "format": DATASET_FORMAT, "crop_hw": list(cfg.crop_hw), "image_wh": list(cfg.image_wh), "seed": cfg.seed,
        "samples": cfg.samples, "shards": entries, "pose_kinds": list(body_lib.POSE_KINDS),
        "shape_names": list(body_lib.SHAPE_NAMES),
        "conventions": "verts_cam = verts_canonical @ rotmat.T + cam_t_full (OpenCV camera frame, metres); "
        "crop pixel = (full pixel - box_center) * H / box_size + H / 2 (256x192: middle 192 of 256 columns); images RGB",
    }  # fmt: skip
    tmp = _tmp_path(out_dir / "index.json")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out_dir / "index.json")
    return shards
