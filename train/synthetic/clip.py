"""A synthetic clip: a video of a planned scene and its ground truth, written as it is rendered.

    mega-rt synth OUT.mp4 --people 3 --frames 300

OUT.mp4 (written by the `open_video` the caller passes: the CLI's H.264 writer) and OUT.npz (uncompressed, no faces: they are the body's), per frame f and person k:
verts_cam (F,K,6890,3), joints_cam (F,K,24,3), rotmat (F,K,3,3) canonical -> camera, cam_t (F,K,3)
the mesh centroid, boxes_xyxy (F,K,4) the projected mesh's box clipped to the image, visibility (F,K)
the share of the mesh that is seen; the motion: body_pose (F,K,23,3), global_orient_world (F,K,3),
shape (K,NUM_SHAPE); the camera: focal, principal, image_size_wh, fps, camera_rot_cw, camera_position;
and the seed. Conventions as in `train.synthetic.scene`.

Memory stays flat in the clip's length: the scene is posed `chunk_frames` frames at a time, each frame
goes to the encoder as it is rendered and the meshes (nearly all of the ground truth's bytes) stream
into their npz member; the other per-frame arrays are a few MB for thousands of frames and are held.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from train.io import atomic_write
from train.render import MeshRenderer, RendererConfig
from train.synthetic.body import NUM_JOINTS, NUM_VERTS, SyntheticBody
from train.synthetic.scene import SceneConfig, plan_scene, pose_frames, render_scene

# whole multiples of pose_people's batch of 64 bodies: the same batches, so the same bits, as posing the
# clip in one go
CHUNK_FRAMES = 64


class _NpzWriter:
    """An uncompressed .npz (the file `np.savez` writes) built member by member, so that one member can be
    streamed in blocks of rows instead of being held whole. Members are written one at a time."""

    def __init__(self, path: Path):
        self._zip = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True)

    def __enter__(self) -> _NpzWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._zip.close()

    def add(self, name: str, array: np.ndarray) -> None:
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)

    @contextlib.contextmanager
    def stream(self, name: str, shape: tuple[int, ...], dtype) -> Iterator[Callable[[np.ndarray], None]]:
        """Yields `append(block)`; the blocks, stacked along the first axis, must make up `shape` exactly."""
        dtype = np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        rows = 0
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, header)

            def append(block: np.ndarray) -> None:
                nonlocal rows
                block = np.ascontiguousarray(block, dtype)
                if block.shape[1:] != tuple(shape[1:]) or rows + len(block) > shape[0]:
                    raise ValueError(f"{name}: block {block.shape} does not fit {shape} after {rows} rows")
                fh.write(block.data)
                rows += len(block)

            yield append
            if rows != shape[0]:
                raise ValueError(f"{name}: {rows} of {shape[0]} rows written")


def _check_truth(names: tuple[str, ...], frames: int, people: int):
    def verify(path: Path) -> None:
        with np.load(path) as z:
            if z.files != list(names) or z["visibility"].shape != (frames, people):
                raise OSError(f"{path}: the ground truth does not read back as written")

    return verify


def write_scene_video(
    out_path: str | os.PathLike, cfg: SceneConfig, body: SyntheticBody | None = None, progress=None,
    chunk_frames: int = CHUNK_FRAMES, *, open_video: Callable,
) -> tuple[Path, Path]:  # fmt: skip
    """Render the scene to `out_path` (mp4) and its ground truth to the same name with .npz.

    `open_video(path, size_wh, fps)` returns the video writer: `write(image_bgr)`, `close()` (finishes and
    verifies the file, raising when it does not read back) and `abort()`. It is passed in because the
    video codecs live with the pipeline's sinks (realtime.video_write.VideoWriter), above this layer."""
    out_path = Path(out_path)
    npz_path = out_path.with_suffix(".npz")
    body = body or SyntheticBody()
    f_, k_ = cfg.frames, cfg.people
    per_frame = {
        "joints_cam": np.zeros((f_, k_, NUM_JOINTS, 3), np.float32), "rotmat": np.zeros((f_, k_, 3, 3), np.float32),
        "cam_t": np.zeros((f_, k_, 3), np.float32), "boxes_xyxy": np.zeros((f_, k_, 4), np.float32),
        "visibility": np.zeros((f_, k_), np.float32),
    }  # fmt: skip
    names = ("verts_cam", *per_frame, "body_pose", "global_orient_world", "shape", "focal", "principal",
             "image_size_wh", "fps", "camera_rot_cw", "camera_position", "seed")  # fmt: skip
    # the renderer first: without EGL, fail before any work
    with MeshRenderer(body.faces, RendererConfig(samples=cfg.msaa)) as renderer:
        plan = plan_scene(cfg, body)
        cam = plan.rig.camera
        with (
            atomic_write(npz_path, verify=_check_truth(names, f_, k_)) as tmp_npz,
            atomic_write(out_path) as tmp_video,
        ):
            writer = open_video(tmp_video, (cfg.width, cfg.height), cfg.fps)
            try:
                with _NpzWriter(tmp_npz) as npz:
                    with npz.stream("verts_cam", (f_, k_, NUM_VERTS, 3), np.float32) as append_verts:
                        for start in range(0, f_, chunk_frames):
                            truth = pose_frames(plan, body, start, start + chunk_frames)
                            append_verts(truth.verts_cam)
                            stop = start + len(truth.verts_cam)
                            for name in ("joints_cam", "rotmat", "cam_t", "boxes_xyxy"):
                                per_frame[name][start:stop] = getattr(truth, name)
                            for f, (frame, vis) in enumerate(render_scene(plan, truth, renderer), start):
                                writer.write(np.ascontiguousarray(frame[..., ::-1]))  # RGB -> BGR
                                per_frame["visibility"][f] = vis
                                if progress:
                                    progress(f + 1)
                    for name, array in per_frame.items():
                        npz.add(name, array)
                    npz.add("body_pose", plan.body_pose.numpy())
                    npz.add("global_orient_world", plan.global_orient.numpy())
                    npz.add("shape", plan.shape.numpy())
                    npz.add("focal", np.array([cam.fx, cam.fy], np.float32))
                    npz.add("principal", np.array([cam.cx, cam.cy], np.float32))
                    npz.add("image_size_wh", np.array([cam.width, cam.height], np.int64))
                    npz.add("fps", np.float32(cfg.fps))
                    npz.add("camera_rot_cw", plan.rig.rot_cw.astype(np.float32))
                    npz.add("camera_position", plan.rig.position.astype(np.float32))
                    npz.add("seed", np.int64(cfg.seed))
            except BaseException:
                writer.abort()
                raise
            writer.close()
    return out_path, npz_path
