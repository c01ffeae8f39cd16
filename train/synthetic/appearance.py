"""What a synthetic scene looks like: procedural backgrounds and the clothes people wear.

- Backgrounds (`sample_background_style`, `render_background`): a sky with clouds, a backdrop of
  buildings or trees, and a tiled, asphalt or grass ground, ray-traced for the scene's `CameraRig` so
  the ground's perspective matches the people standing on it. Fine texture fades with distance before
  it aliases.
- Clothing (`clothing_colors`): per-vertex colours for skin, hair, shirt, trousers or shorts and shoes,
  with cues that tell the front of a person from the back.

Randomness: a numpy Generator, passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from train.synthetic.body import JOINT_NAMES, SyntheticBody
from train.synthetic.camera import CameraRig

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

    sky = [
        ((0.78, 0.86, 0.95), (0.35, 0.55, 0.85)),
        ((0.85, 0.85, 0.86), (0.62, 0.65, 0.70)),
        ((0.98, 0.82, 0.65), (0.45, 0.50, 0.72)),
    ]
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
    [
        [0.98, 0.84, 0.73],
        [0.92, 0.74, 0.60],
        [0.80, 0.60, 0.45],
        [0.63, 0.45, 0.33],
        [0.45, 0.31, 0.22],
        [0.33, 0.22, 0.16],
    ],
    np.float32,
)
_HAIR = np.array(
    [
        [0.06, 0.05, 0.05],
        [0.20, 0.12, 0.07],
        [0.40, 0.26, 0.13],
        [0.80, 0.65, 0.40],
        [0.60, 0.60, 0.60],
        [0.55, 0.22, 0.10],
    ],
    np.float32,
)
_PANTS = np.array(
    [[0.15, 0.22, 0.40], [0.08, 0.08, 0.09], [0.62, 0.55, 0.40], [0.35, 0.35, 0.37], [0.30, 0.20, 0.15]], np.float32
)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return (v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)).astype(np.float32)


def clothing_colors(body: SyntheticBody, rng: np.random.Generator) -> np.ndarray:
    """(V,3) RGB per-vertex colours: skin, hair, a shirt, trousers or shorts, shoes, and a face.

    The front of a person must look different from the back, as it does on real people: without that
    the renders are front/back ambiguous and a network cannot learn which way a body faces. So the
    face has eyes, brows and a mouth, the shirt's neckline dips lower in front than behind, some shirts
    carry a chest print, and shoes have a pale toe cap.
    """
    part = body.vertex_part.cpu().numpy()
    verts = body.verts_template.cpu().numpy()
    joints = body.joints_rest.cpu().numpy()
    idx = {n: i for i, n in enumerate(JOINT_NAMES)}
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
    torso = [
        idx[n] for n in ("spine1", "spine2", "spine3", "left_collar", "right_collar", "left_shoulder", "right_shoulder")
    ]
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
    # backbone to learn which way a body faces from (its heatmaps swapped left and right on half the test
    # crops without it); a large back panel is a cue it can see, though not enough on its own (the
    # backbone's `side_swaps` log still shows about half of the test crops swapped)
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
