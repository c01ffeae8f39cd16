"""Views of a finished job's results npz: one frame's meshes as a GLB, the per-track table, and one
frame of the overlay video."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# OpenCV camera (x right, y down, z forward) -> glTF (y up, the viewer looks down -z)
CV_TO_GLTF = np.diag([1.0, -1.0, -1.0]).astype(np.float32)

TRACK_COLUMNS = ["track", "frames", "first frame", "last frame", "mean score", "mean distance (m)", "mean spread (cm)"]


def frame_count(results_npz) -> int:
    with np.load(results_npz, allow_pickle=False) as z:
        return int(z["num_frames"])


def frame_glb(results_npz, frame: int, out_path: Path) -> int:
    """Write the meshes of `frame` as one GLB (vertex colours: the per-vertex spread where the results
    have samples, else one colour per track, as on the overlay); returns how many people it holds."""
    import trimesh

    from realtime.overlay import std_colors
    from train.io import atomic_write
    from train.render import DEFAULT_COLORS

    with np.load(results_npz, allow_pickle=False) as z:
        rows = np.flatnonzero(z["frame"] == frame)
        if rows.size == 0:
            return 0
        verts = z["verts"][rows].astype(np.float32) @ CV_TO_GLTF
        faces = z["faces"]
        track_ids = z["track_id"][rows]
        vertex_std = z["vertex_std"][rows].astype(np.float32) if "vertex_std" in z.files else None
    if vertex_std is not None:
        rgb = std_colors(vertex_std)[..., ::-1]  # the overlay's BGR map, as RGB
    else:
        rgb = np.broadcast_to(DEFAULT_COLORS[np.maximum(track_ids, 0) % len(DEFAULT_COLORS)][:, None], verts.shape)
    rgba = np.concatenate([rgb, np.ones(rgb.shape[:2] + (1,), np.float32)], axis=-1)
    meshes = [
        trimesh.Trimesh(v, faces, vertex_colors=(c * 255).astype(np.uint8), process=False) for v, c in zip(verts, rgba)
    ]
    data = trimesh.Scene(meshes).export(file_type="glb")
    with atomic_write(out_path, verify=_check_glb) as tmp:
        tmp.write_bytes(data)
    return len(meshes)


def _check_glb(path: Path) -> None:
    if path.read_bytes()[:4] != b"glTF":
        raise OSError(f"{path}: the GLB writer produced no glTF header")


def track_table(results_npz) -> list[list]:
    """One row per track (TRACK_COLUMNS): its frames, mean detector score, mean distance, mean spread."""
    with np.load(results_npz, allow_pickle=False) as z:
        frames, ids, scores, depth = z["frame"], z["track_id"], z["score"], z["cam_t"][:, 2]
        spread = z["vertex_std"].astype(np.float32).mean(axis=1) if "vertex_std" in z.files else None
    rows = []
    for tid in np.unique(ids):
        m = ids == tid
        mean_spread = f"{100 * spread[m].mean():.1f}" if spread is not None else "-"
        rows.append([int(tid), int(m.sum()), int(frames[m].min()), int(frames[m].max()),
                     round(float(scores[m].mean()), 3), round(float(depth[m].mean()), 2), mean_spread])  # fmt: skip
    return rows


def overlay_frame(overlay_mp4, frame: int) -> np.ndarray | None:
    """Frame `frame` of the overlay video as RGB (the spread's heat-map in the stochastic mode), or None."""
    from realtime.video_read import open_reader

    reader = open_reader(str(Path(overlay_mp4)))
    try:
        for i, decoded in enumerate(reader.frames()):
            if i == frame:
                return np.ascontiguousarray(decoded.image_bgr[..., ::-1])
    finally:
        reader.close()
    return None
