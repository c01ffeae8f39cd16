"""Sinks: the overlay mp4, a live window, the results file and per-track mesh sequences.

Files are written to a temporary name beside the target and renamed on success, so an existing output
is never replaced by a broken one; an interrupted run (Ctrl-C, SIGTERM) finalises what it has and
renames too. An error leaves the temporary files removed and the old outputs untouched.

Results npz (schema "mega-rt-results/1"), one row per person and frame (M rows):
    frame (M,) int32, track_id (M,) int64 (-1 untracked), box_xyxy (M,4) f32, score (M,) f32,
    tokens (M,S,54) int16 (S = 1, or the Q samples), rotmat (M,3,3) f32 canonical->camera,
    cam_crop (M,3) f32, cam_t (M,3) f32 full-image camera translation (m), verts (M,6890,3) f16 camera
    frame (m), vertex_std (M,6890) f16 (stochastic only), and per file: schema, fps, image_size_wh,
    focal (px; principal point at the image centre), num_frames, frames_skipped, frames_dropped,
    samples, steps, source, weights, faces (13776,3) int32.
The JSONL summary has one line per frame: {"frame", "people": [{"track_id", "box", "score", "cam_t"}]},
flushed as it goes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from realtime.types import FrameResult

RESULTS_SCHEMA = "mega-rt-results/1"


class SinkError(RuntimeError):
    """An output cannot be written; one line for the user."""


def tmp_path(path: Path) -> Path:
    # keeps the suffix: OpenCV picks the container from it
    return path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")


def check_writable(path: Path) -> None:
    """Fail before any work when the output's folder is missing or read-only."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise SinkError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise SinkError(f"{path}: folder {folder} is not writable")
    if path.is_dir():
        raise SinkError(f"{path}: is a folder")


class Mp4Sink:
    def __init__(self, path, fps: float, size_wh: tuple[int, int]):
        import cv2

        self.path = Path(path)
        check_writable(self.path)
        self.tmp = tmp_path(self.path)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, tuple(size_wh))
        if not self.writer.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise SinkError(f"{self.path}: OpenCV cannot write an mp4 here (no mp4v encoder?)")
        self.frames = 0

    def write(self, r: FrameResult):
        self.writer.write(np.ascontiguousarray(r.overlay))
        self.frames += 1

    def close(self, ok: bool):
        self.writer.release()
        if ok and self.frames > 0:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class WindowSink:
    name = "mega-rt"

    def __init__(self):
        self.closed_by_user = False

    def write(self, r: FrameResult):
        import cv2

        cv2.imshow(self.name, r.overlay)
        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
            self.closed_by_user = True

    def close(self, ok: bool):
        import cv2

        try:
            cv2.destroyWindow(self.name)
        except cv2.error:
            pass


class ResultsSink:
    """Rows kept in memory (float16 vertices: 41 kB per person and frame), written at close."""

    def __init__(self, path, meta: dict, faces: np.ndarray):
        self.path = Path(path)
        check_writable(self.path)
        self.tmp = tmp_path(self.path)
        self.jsonl_path = self.path.with_suffix(".jsonl")
        self.jsonl_tmp = tmp_path(self.jsonl_path)
        self.jsonl = open(self.jsonl_tmp, "w")
        self.meta = meta
        self.faces = faces.astype(np.int32)
        self.rows: dict[str, list] = {k: [] for k in ("frame", "track_id", "box_xyxy", "score", "tokens", "rotmat", "cam_crop", "cam_t", "verts", "vertex_std")}
        self.frames = 0

    def write(self, r: FrameResult):
        k = r.boxes_xyxy.shape[0]
        self.frames += 1
        self.jsonl.write(json.dumps({"frame": r.frame.index, "people": [
            {"track_id": int(r.track_ids[i]), "box": [round(float(v), 1) for v in r.boxes_xyxy[i]], "score": round(float(r.scores[i]), 3),
             "cam_t": [round(float(v), 4) for v in r.cam_t_full[i]]} for i in range(k)]}) + "\n")  # fmt: skip
        self.jsonl.flush()
        if k == 0:
            return
        rows = self.rows
        rows["frame"].append(np.full(k, r.frame.index, np.int32))
        rows["track_id"].append(r.track_ids.astype(np.int64))
        rows["box_xyxy"].append(r.boxes_xyxy.astype(np.float32))
        rows["score"].append(r.scores.astype(np.float32))
        rows["tokens"].append(r.tokens.astype(np.int16))
        rows["rotmat"].append(r.rotmat.astype(np.float32))
        rows["cam_crop"].append(r.cam_crop.astype(np.float32))
        rows["cam_t"].append(r.cam_t_full.astype(np.float32))
        rows["verts"].append(r.verts_cam.astype(np.float16))
        if r.vertex_std is not None:
            rows["vertex_std"].append(r.vertex_std.astype(np.float16))

    def close(self, ok: bool, final_meta: dict | None = None):
        self.jsonl.close()
        if not ok:
            self.tmp.unlink(missing_ok=True)
            self.jsonl_tmp.unlink(missing_ok=True)
            return
        empty = {"frame": (0,), "track_id": (0,), "box_xyxy": (0, 4), "score": (0,), "tokens": (0, 1, 54), "rotmat": (0, 3, 3), "cam_crop": (0, 3), "cam_t": (0, 3), "verts": (0, 6890, 3)}
        dtypes = {"frame": np.int32, "track_id": np.int64, "tokens": np.int16, "verts": np.float16}
        arrays = {}
        for k, v in self.rows.items():
            if v:
                arrays[k] = np.concatenate(v)
            elif k in empty:
                arrays[k] = np.zeros(empty[k], dtypes.get(k, np.float32))
        meta = {**self.meta, **(final_meta or {})}
        for k, v in meta.items():
            arrays[k] = np.asarray(v)
        arrays["schema"] = np.asarray(RESULTS_SCHEMA)
        arrays["faces"] = self.faces
        with open(self.tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(self.tmp, self.path)
        os.replace(self.jsonl_tmp, self.jsonl_path)


class MeshExportSink:
    """DIR/track_<id>/frame_<n>.obj (or .ply): one mesh per tracked person and frame, written as it goes."""

    def __init__(self, folder, faces: np.ndarray, fmt: str = "obj"):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"{folder}: cannot create ({e.strerror})") from None
        if not os.access(self.folder, os.W_OK):
            raise SinkError(f"{folder}: is not writable")
        self.faces, self.fmt = faces.astype(np.int64), fmt
        self.files = 0

    def write(self, r: FrameResult):
        for i in range(r.verts_cam.shape[0]):
            tid = int(r.track_ids[i])
            d = self.folder / (f"track_{tid:04d}" if tid >= 0 else "untracked")
            d.mkdir(exist_ok=True)
            name = f"frame_{r.frame.index:06d}" + (f"_{i}" if tid < 0 else "")
            std = r.vertex_std[i] if r.vertex_std is not None else None
            (write_ply if self.fmt == "ply" else write_obj)(d / f"{name}.{self.fmt}", r.verts_cam[i], self.faces, std)
            self.files += 1

    def close(self, ok: bool):
        pass


_FACE_TEXT: dict[int, str] = {}


def _obj_faces(faces: np.ndarray) -> str:
    key = id(faces)
    if key not in _FACE_TEXT:  # the same faces every frame: format them once
        _FACE_TEXT[key] = ("f %d %d %d\n" * len(faces)) % tuple((faces + 1).ravel().tolist())
    return _FACE_TEXT[key]


def write_obj(path: Path, verts: np.ndarray, faces: np.ndarray, vertex_std=None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write("# mega-rt mesh, OpenCV camera frame (x right, y down, z forward), metres\n")
        v = np.asarray(verts, np.float32)
        fh.write(("v %.5f %.5f %.5f\n" * len(v)) % tuple(v.ravel().tolist()))
        fh.write(_obj_faces(faces))
    os.replace(tmp, path)


def write_ply(path: Path, verts: np.ndarray, faces: np.ndarray, vertex_std=None) -> None:
    verts = np.asarray(verts, np.float32)
    props = "property float x\nproperty float y\nproperty float z\n" + ("property float std\n" if vertex_std is not None else "")
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(verts)}\n{props}element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    vdata = verts if vertex_std is None else np.concatenate([verts, np.asarray(vertex_std, np.float32)[:, None]], 1)
    fdata = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", 3)])
    fdata["n"], fdata["idx"] = 3, faces
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(header.encode())
        fh.write(vdata.astype("<f4").tobytes())
        fh.write(fdata.tobytes())
    os.replace(tmp, path)
