"""Contact sheet of the synthetic ground truth: 16 sampled poses and one frame of a 3-person scene.

    python -m train.synthetic.contact_sheet contact_sheet.png --seed 0

Rows 1-4: four poses of each archetype (standing, walking, reaching, sitting) with sampled shapes and
clothes, turned up to +-50 degrees from the camera. Bottom: frame 0 of `mega-rt synth --people 3` with
the ground-truth boxes and visibility. Needs the shared assets (MEGA_RT_ASSETS) and headless EGL.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from train.io import atomic_write

TILE_W, TILE_H = 240, 320


def pose_tiles(body, renderer, seed: int) -> list[np.ndarray]:
    import cv2
    import torch

    from train.geometry import axis_angle_to_matrix
    from train.render import Camera
    from train.synthetic.appearance import clothing_colors
    from train.synthetic.poses import POSE_KINDS, sample_poses, sample_shapes

    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    kinds = [k for k in POSE_KINDS for _ in range(4)]
    tiles = []
    for kind in kinds:
        pose, _ = sample_poses(1, gen, (kind,))
        shape = sample_shapes(1, gen)
        yaw = math.radians(rng.uniform(-50, 50))
        posed = body.pose(pose, torch.tensor([[0.0, yaw, 0.0]]), shape)
        to_cam = axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))  # body y up -> camera y down, facing us
        verts = (posed.verts[0] @ to_cam.T).numpy()
        lo, hi = verts.min(0), verts.max(0)
        focal = 600.0
        depth = focal * max((hi[1] - lo[1]) / (0.85 * TILE_H), (hi[0] - lo[0]) / (0.85 * TILE_W)) + (hi[2] - lo[2]) / 2
        verts = verts - (lo + hi) / 2 + np.array([0.0, 0.0, depth])
        gradient = np.linspace(235, 180, TILE_H, dtype=np.float32)[:, None, None] * np.array(
            [0.93, 0.96, 1.0], np.float32
        )
        background = np.broadcast_to(gradient, (TILE_H, TILE_W, 3)).astype(np.uint8)
        res = renderer.render(
            verts[None], Camera.centred(TILE_W, TILE_H, focal), clothing_colors(body, rng)[None], background
        )
        tile = np.ascontiguousarray(res.image)
        cv2.putText(tile, kind, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (40, 40, 40), 1, cv2.LINE_AA)
        tiles.append(tile)
    return tiles


def scene_frame(body, seed: int) -> np.ndarray:
    import cv2

    from train.render import MeshRenderer, RendererConfig
    from train.synthetic.scene import SceneConfig, plan_scene, pose_frames, render_scene

    cfg = SceneConfig(width=1280, height=720, frames=1, people=3, seed=seed)
    plan = plan_scene(cfg, body)
    truth = pose_frames(plan, body)
    with MeshRenderer(body.faces, RendererConfig(samples=cfg.msaa)) as renderer:
        image, visibility = next(render_scene(plan, truth, renderer))
    frame = np.ascontiguousarray(image)
    for box, vis in zip(truth.boxes_xyxy[0], visibility):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(frame, (x0, y0), (x1, y1), (255, 60, 60), 2)
        cv2.putText(
            frame, f"vis {vis:.2f}", (x0, max(y0 - 6, 14)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 60, 60), 2, cv2.LINE_AA
        )
    return frame


def contact_sheet(seed: int = 0) -> np.ndarray:
    """(H,W,3) uint8 RGB."""
    import cv2

    from train.render import MeshRenderer, RendererConfig
    from train.synthetic.body import SyntheticBody

    body = SyntheticBody()
    with MeshRenderer(body.faces, RendererConfig(samples=4)) as renderer:
        tiles = pose_tiles(body, renderer, seed)
    grid = np.concatenate([np.concatenate(tiles[r * 4 : r * 4 + 4], 1) for r in range(4)], 0)
    frame = scene_frame(body, seed)
    frame = cv2.resize(
        frame, (grid.shape[1], round(frame.shape[0] * grid.shape[1] / frame.shape[1])), interpolation=cv2.INTER_AREA
    )
    return np.concatenate([grid, frame], 0)


def main(argv=None) -> int:
    import cv2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="contact_sheet.png", type=Path, help="PNG to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.out.parent.is_dir():
        parser.error(f"{args.out.parent}: folder not found")
    sheet = contact_sheet(args.seed)
    try:
        with atomic_write(args.out) as tmp:
            if not cv2.imwrite(str(tmp), sheet[..., ::-1]):
                raise OSError
    except OSError:
        parser.error(f"{args.out}: could not write the PNG (is the name a .png in a writable folder?)")
    print(f"{args.out}: {sheet.shape[1]}x{sheet.shape[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
