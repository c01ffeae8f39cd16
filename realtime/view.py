"""`mega-rt view`: a results file played in 3D over time with Rerun (rerun-sdk, the `view` extra).

What a recording holds, in the results' own camera frame (OpenCV: x right, y down, z forward, metres):

    world                       view coordinates RDF (static)
    world/camera                the full-image pinhole of the results' focal length and image size (static)
    world/camera/image          the input video's frames (with --video), JPEG
    world/camera/image/boxes    every person's box, labelled with its track id, in the track's colour
    world/people/track_<id>     one mesh per track (untracked_<i> for people without an id): triangles
                                once (static), vertex positions and normals per frame, coloured by the
                                per-vertex sample spread (results of --samples Q) or by the track

Timelines: `frame` (the source frame number) and `time` (frame / fps, seconds). Every frame the run
processed is on them; a mesh whose person is gone in a frame is logged empty there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RRD_APPLICATION = "mega-rt"
JPEG_QUALITY = 85
ROW_KEYS = ("frame", "track_id", "box_xyxy", "verts")
FILE_KEYS = ("schema", "fps", "image_size_wh", "focal", "num_frames", "faces")


class ViewError(ValueError):
    """Bad input to `mega-rt view`: one line naming the file and the fix."""


@dataclass(frozen=True)
class Results:
    """The parts of a results file the view shows; per-row arrays may be read-only memory maps."""

    path: Path
    frame: np.ndarray  # (M,) int32, ascending
    track_id: np.ndarray  # (M,) int64, -1 untracked
    box_xyxy: np.ndarray  # (M,4) float32 pixels
    verts: np.ndarray  # (M,V,3) float16 metres, camera frame
    vertex_std: np.ndarray | None  # (M,V) float16 metres (stochastic results only)
    faces: np.ndarray  # (F,3) int32
    fps: float
    image_size_wh: tuple[int, int]
    focal: float
    frame_count: int  # frames on the timeline: 0 .. frame_count - 1

    def rows_of(self, frame: int) -> slice:
        lo, hi = np.searchsorted(self.frame, [frame, frame + 1])
        return slice(int(lo), int(hi))


def read_results(path: str | Path) -> Results:
    """A `mega-rt video` / `stream` results npz (docs/results-format.md); ViewError for anything else."""
    from realtime.sinks import RESULTS_SCHEMA
    from train.data.npz import open_npz

    path = Path(path)
    if not path.is_file():
        raise ViewError(f"{path}: no such file" if not path.exists() else f"{path}: is a folder, not a results file")
    try:
        z = open_npz(path)
    except Exception as e:  # not a zip, a truncated one, a member holding pickles
        raise ViewError(
            f"{path}: not a mega-rt results file ({e.__class__.__name__}); pass the .npz that `mega-rt video` writes"
        ) from None
    if "schema" not in z:
        hint = " (a `mega-rt synth` ground truth?)" if "boxes_xyxy" in z or "verts_cam" in z else ""
        raise ViewError(
            f"{path}: not a mega-rt results file{hint}: it has no schema; pass the .npz that `mega-rt video` writes"
        )
    schema = _scalar(z["schema"])
    if schema != RESULTS_SCHEMA:
        raise ViewError(
            f"{path}: results of format {schema!r}; this mega-rt reads {RESULTS_SCHEMA!r}: "
            "write them again with this version's `mega-rt video`"
        )
    missing = [k for k in (*ROW_KEYS, *FILE_KEYS) if k not in z]
    if missing:
        raise ViewError(f"{path}: a damaged results file: no {', '.join(missing)}; write it again with `mega-rt video`")
    frame, track_id, box, verts, faces = z["frame"], z["track_id"], z["box_xyxy"], z["verts"], z["faces"]
    vertex_std = z.get("vertex_std")
    m = len(frame)
    shapes_ok = (
        frame.ndim == 1 and track_id.shape == (m,) and box.shape == (m, 4) and verts.ndim == 3 and verts.shape[0] == m
        and verts.shape[2] == 3 and faces.ndim == 2 and faces.shape[1] == 3
        and (vertex_std is None or vertex_std.shape == verts.shape[:2])
    )  # fmt: skip
    if not shapes_ok:
        raise ViewError(f"{path}: a damaged results file: its per-row arrays disagree in shape")
    if len(faces) and (faces.min() < 0 or faces.max() >= verts.shape[1]):
        raise ViewError(f"{path}: a damaged results file: faces index vertices the meshes do not have")
    if m and (np.any(np.diff(frame) < 0) or frame[0] < 0):
        raise ViewError(f"{path}: a damaged results file: rows are not ordered by frame")
    fps = float(_scalar(z["fps"]))
    w, h = (int(v) for v in np.asarray(z["image_size_wh"]))
    if not (fps > 0 and w > 0 and h > 0 and float(_scalar(z["focal"])) > 0):
        raise ViewError(f"{path}: a damaged results file: fps, image size or focal length is not positive")
    processed = sum(int(_scalar(z[k])) for k in ("num_frames", "frames_skipped", "frames_dropped") if k in z)
    return Results(
        path=path, frame=frame, track_id=track_id, box_xyxy=box, verts=verts, vertex_std=vertex_std, faces=faces,
        fps=fps, image_size_wh=(w, h), focal=float(_scalar(z["focal"])),
        frame_count=max(processed, int(frame[-1]) + 1 if m else 0),
    )  # fmt: skip


def _scalar(a: np.ndarray):
    return np.asarray(a)[()].item() if np.asarray(a).dtype.kind != "U" else str(np.asarray(a)[()])


def video_frames(path: str | Path, results: Results) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, BGR image) of the input video, checked to be the size the results were made at."""
    from realtime.video_read import FileReader, SourceError

    try:
        reader = FileReader(str(path))
    except SourceError as e:
        raise ViewError(f"--video {e}") from None
    if (reader.width, reader.height) != results.image_size_wh:
        reader.close()
        w, h = results.image_size_wh
        raise ViewError(
            f"--video {path}: {reader.width}x{reader.height}, but {results.path} was made from a {w}x{h} video; "
            "pass the video the results came from"
        )

    def frames():
        try:
            for i, decoded in enumerate(reader.frames()):
                yield i, decoded.image_bgr
        finally:
            reader.close()

    return frames()


def track_colors_rgb8(track_ids: np.ndarray) -> np.ndarray:
    """(K,3) uint8: the overlay's colour of each track (untracked people take the first)."""
    from train.render import DEFAULT_COLORS

    return np.rint(DEFAULT_COLORS[np.maximum(track_ids, 0) % len(DEFAULT_COLORS)] * 255).astype(np.uint8)


def outward_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V,3) unit vertex normals pointing out of the closed mesh, whichever way its faces wind."""
    from train.render import vertex_normals

    normals = vertex_normals(verts[None], faces)[0]
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    volume = np.einsum("ij,ij->", v0.astype(np.float64), np.cross(v1, v2).astype(np.float64))
    return -normals if volume < 0 else normals


def log_recording(rec, results: Results, video: str | Path | None = None) -> int:
    """Log the results (and the video's frames) into the Rerun recording `rec`; returns the frames logged."""
    import rerun as rr

    from realtime.overlay import STD_MAX_M, std_colors

    w, h = results.image_size_wh
    rec.log("world", rr.ViewCoordinates.RDF, static=True)
    rec.log("world/camera", rr.Pinhole(focal_length=results.focal, width=w, height=h, camera_xyz=rr.ViewCoordinates.RDF,
                                        image_plane_distance=1.0), static=True)  # fmt: skip
    frames = video_frames(video, results) if video is not None else iter(())
    next_image = next(frames, None)
    faces = np.ascontiguousarray(results.faces, np.uint32)
    shown: set[str] = set()  # mesh entities with vertices at the previous frame
    known: set[str] = set()  # mesh entities whose triangles are logged
    for f in range(results.frame_count):
        rec.set_time("frame", sequence=f)
        rec.set_time("time", duration=f / results.fps)
        while next_image is not None and next_image[0] < f:
            next_image = next(frames, None)
        if next_image is not None and next_image[0] == f:
            rec.log("world/camera/image", rr.Image(next_image[1], color_model="BGR").compress(JPEG_QUALITY))
        rows = results.rows_of(f)
        ids = np.asarray(results.track_id[rows])
        colors = track_colors_rgb8(ids)
        rec.log("world/camera/image/boxes", rr.Boxes2D(array=np.asarray(results.box_xyxy[rows], np.float32),
                array_format=rr.Box2DFormat.XYXY, labels=[str(i) if i >= 0 else "" for i in ids], colors=colors))  # fmt: skip
        now: set[str] = set()
        untracked = 0
        for k, row in enumerate(range(rows.start, rows.stop)):
            if ids[k] >= 0:
                entity = f"world/people/track_{int(ids[k])}"
            else:
                entity, untracked = f"world/people/untracked_{untracked}", untracked + 1
            if entity in now:  # a repeated id within one frame (a boxes file may have them): keep both
                entity = f"{entity}_{row}"
            now.add(entity)
            verts = np.asarray(results.verts[row], np.float32)
            if entity not in known:
                rec.log(entity, rr.Mesh3D.from_fields(triangle_indices=faces), static=True)
                known.add(entity)
            if results.vertex_std is not None:
                std = np.asarray(results.vertex_std[row], np.float32)
                vertex_colors = np.rint(std_colors(std[None], STD_MAX_M)[0, :, ::-1] * 255).astype(np.uint8)
            else:
                vertex_colors = np.broadcast_to(colors[k], verts.shape)
            rec.log(entity, rr.Mesh3D.from_fields(vertex_positions=verts, vertex_normals=outward_normals(verts, faces),
                                                  vertex_colors=vertex_colors))  # fmt: skip
        for entity in shown - now:  # the person is gone: no vertices, nothing drawn
            rec.log(entity, rr.Mesh3D.from_fields(vertex_positions=np.zeros((0, 3), np.float32)))
        shown = now
    return results.frame_count


def new_recording(results: Results):
    import rerun as rr

    return rr.RecordingStream(RRD_APPLICATION, recording_id=f"{results.path.stem}")


def write_rrd(results: Results, out: str | Path, video: str | Path | None = None) -> int:
    """The recording as an .rrd file, written under a temporary name, read back and renamed; frames logged."""
    from train.io import atomic_write

    def verify(tmp: Path) -> None:
        timeline = rrd_frames(tmp)
        if len(timeline) != results.frame_count:
            raise ViewError(f"{out}: the recording read back has {len(timeline)} frames, not {results.frame_count}")

    with atomic_write(out, verify) as tmp:
        rec = new_recording(results)
        rec.save(str(tmp))
        try:
            frames = log_recording(rec, results, video)
        finally:
            rec.flush()
            rec.disconnect()
    return frames


def spawn_viewer(results: Results, video: str | Path | None = None) -> int:
    """Start the Rerun viewer and stream the recording to it; frames logged."""
    rec = new_recording(results)
    rec.spawn()
    try:
        return log_recording(rec, results, video)
    finally:
        rec.flush()


def viewer_display_problem(env: dict | None = None) -> str | None:
    """None when the Rerun viewer (a native window) can open; else why not, in a few words."""
    import os
    import sys

    from realtime.display import x_connects

    env = dict(os.environ if env is None else env)
    if not sys.platform.startswith("linux"):
        return None
    x_display, wayland = env.get("DISPLAY", ""), env.get("WAYLAND_DISPLAY", "")
    if not x_display and not wayland:
        return "neither DISPLAY nor WAYLAND_DISPLAY is set"
    if not wayland and x_connects(x_display) is False:
        return f"cannot connect to the X display {x_display}"
    return None


def rrd_frames(path: str | Path) -> list[int]:
    """The frame numbers on the `frame` timeline of an .rrd file (Rerun's own reader), ascending."""
    from rerun.chunk import RrdReader

    frames: set[int] = set()
    for chunk in RrdReader(str(path)).stream():
        if "frame" in chunk.timeline_names:
            frames.update(chunk.to_record_batch().column("frame").to_pylist())
    return sorted(frames)
