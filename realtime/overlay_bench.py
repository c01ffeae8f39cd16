"""Render-stage benchmark: ms per frame of `OverlayRenderer` on a synthetic scene of walking people.

    mega-rt bench render --people 1,3,40 [--size 1280x720] [--std]

Only `OverlayRenderer(faces)` and `FrameResult` are used: the figure is the render stage of the pipeline
and nothing else (no model, no encoder).
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np


def scene(people: int, width: int, height: int, seed: int = 0, with_std: bool = False):
    """A FrameResult of `people` walking bodies spread over a (height, width) frame, and the faces."""
    import torch

    from realtime.types import Frame, FrameResult
    from train.synthetic.body import SyntheticBody, load_rig
    from train.synthetic.poses import walking_poses

    model = SyntheticBody(load_rig())
    gen = torch.Generator().manual_seed(seed)
    posed = max(people, 1)  # an empty frame keeps the shapes of a full one
    pose = walking_poses(posed, gen)
    yaw = (torch.rand(posed, generator=gen) * 2 - 1) * math.pi
    out = model.pose(pose, torch.stack([torch.zeros(posed), yaw, torch.zeros(posed)], 1))
    verts = (out.verts - out.joints[:, :1]).numpy()[:people] * np.array([1.0, -1.0, -1.0], np.float32)  # y up -> y down
    focal = 1.2 * max(width, height)
    cols = max(1, math.ceil(math.sqrt(people * width / height)))
    rows = max(1, math.ceil(people / cols))
    depth = focal * 1.9 / (height / rows)  # a body fills about 90% of its row
    at = np.zeros((people, 3), np.float32)
    for i in range(people):
        r, c = divmod(i, cols)
        at[i] = (
            ((c + 0.5) / cols - 0.5) * width * depth / focal,
            ((r + 0.5) / rows - 0.5) * height * depth / focal,
            depth + 0.3 * (i % 3),
        )
    verts_cam = (verts + at[:, None]).astype(np.float32)
    u = focal * verts_cam[..., 0] / verts_cam[..., 2] + width / 2
    v = focal * verts_cam[..., 1] / verts_cam[..., 2] + height / 2
    boxes = np.stack([u.min(1), v.min(1), u.max(1), v.max(1)], 1).astype(np.float32)
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(110, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    vertex_std = None
    if with_std:  # spread grows towards the hands and feet, as sample spread does
        spread = np.linalg.norm(verts, axis=-1)
        vertex_std = (0.12 * spread / spread.max()).astype(np.float32)
    result = FrameResult(
        frame=Frame(index=0, image_bgr=image, captured_s=time.perf_counter()),
        boxes_xyxy=boxes,
        scores=np.ones(people, np.float32),
        track_ids=np.arange(people),
        tokens=np.zeros((people, 1, 54), np.int16),
        rotmat=np.broadcast_to(np.eye(3, dtype=np.float32), (people, 3, 3)).copy(),
        cam_crop=np.zeros((people, 3), np.float32),
        cam_t_full=at,
        verts_cam=verts_cam,
        vertex_std=vertex_std,
        focal=focal,
    )
    return result, model.faces.numpy()


def bench_overlay(
    people: int, width: int = 1280, height: int = 720, frames: int = 30, warmup: int = 3, with_std: bool = False
) -> dict:
    """Times `OverlayRenderer.__call__` on one scene; returns {"people", "width", "height", "ms_median", "ms_mean", "cpu_ms_median"}."""
    from realtime.overlay import OverlayRenderer

    result, faces = scene(people, width, height, with_std=with_std)
    renderer = OverlayRenderer(faces)
    try:
        for _ in range(warmup):
            renderer(result)
        times, cpu = [], []
        for _ in range(frames):
            t0, c0 = time.perf_counter(), time.process_time()
            renderer(result)
            times.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    finally:
        renderer.close()
    return {
        "people": people,
        "width": width,
        "height": height,
        "ms_median": statistics.median(times),
        "ms_mean": statistics.fmean(times),
        "cpu_ms_median": statistics.median(cpu),  # all threads of the process (a software GL renders in them)
    }
