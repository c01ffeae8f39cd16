"""Reading a `mega-rt video` results file (docs/results-format.md) and its `*_smpl.npz` fit, per track."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RESULTS_SCHEMA = "mega-rt-results/1"
SMPL_SCHEMA = "mega-rt-smpl/1"  # the *_smpl.npz of realtime/fit_smpl.py


class AnimError(ValueError):
    """An input that cannot be exported; the message names the file and the fix."""


def _load(path: Path, what: str) -> dict:
    if not path.is_file():
        raise AnimError(f"{path}: {what} not found")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise AnimError(f"{path}: not a {what} ({str(e)[:100]})") from None
    if not hasattr(z, "files"):
        raise AnimError(f"{path}: not a {what} (an .npy array, not an .npz)")
    return z


class Results:
    """The arrays of one results file; `verts` reads rows lazily (the file may be large)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._z = _load(self.path, "mega-rt results file (.npz of mega-rt video --results)")
        files = set(self._z.files)
        schema = str(self._z["schema"]) if "schema" in files else None
        if schema != RESULTS_SCHEMA:
            raise AnimError(f"{self.path}: not a mega-rt results file (schema {schema!r}, expected {RESULTS_SCHEMA!r})")
        missing = [k for k in ("frame", "track_id", "verts", "faces", "fps") if k not in files]
        if missing:
            raise AnimError(
                f"{self.path}: results file without {', '.join(missing)}; write it again with mega-rt video"
            )
        self.frame = self._z["frame"].astype(np.int64)
        self.track_id = self._z["track_id"].astype(np.int64)
        self.faces = self._z["faces"].astype(np.int64)
        self.fps = float(self._z["fps"])
        self._verts = self._z["verts"]
        self.num_verts = int(self._verts.shape[1])
        self.has_std = "vertex_std" in files

    def track_ids(self) -> list[int]:
        return sorted(int(t) for t in np.unique(self.track_id))

    def rows_of(self, track: int) -> np.ndarray:
        """The rows of one track in frame order; one row per frame (the first when a frame repeats an id)."""
        rows = np.flatnonzero(self.track_id == track)
        rows = rows[np.argsort(self.frame[rows], kind="stable")]
        _, first = np.unique(self.frame[rows], return_index=True)
        return rows[first]

    def verts(self, rows: np.ndarray) -> np.ndarray:
        return self._verts[rows].astype(np.float32)

    def vertex_std(self, rows: np.ndarray) -> np.ndarray | None:
        return self._z["vertex_std"][rows].astype(np.float32) if self.has_std else None


def read_results(path: str | Path) -> Results:
    return Results(path)


class SmplFit:
    """The arrays of a `*_smpl.npz` (realtime/fit_smpl.py), by track."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        z = _load(self.path, "SMPL fit (.npz of mega-rt fit)")
        schema = str(z["schema"]) if "schema" in z.files else None
        if schema != SMPL_SCHEMA:
            raise AnimError(
                f"{self.path}: not an SMPL fit of mega-rt fit (schema {schema!r}, expected {SMPL_SCHEMA!r})"
            )
        self.arrays = {k: z[k] for k in z.files}
        self.parents = self.arrays["parents"].astype(np.int64)
        self.fps = float(self.arrays["fps"])

    def track_ids(self) -> list[int]:
        return [int(t) for t in self.arrays["tracks"]]

    def track(self, track: int) -> dict:
        """frame (T,), global_orient (T,3), body_pose (T,P), transl (T,3), rest_joints (J,3), rest_verts (V,3)."""
        a = self.arrays
        rows = np.flatnonzero(a["track_id"] == track)
        rows = rows[np.argsort(a["frame"][rows], kind="stable")]
        k = self.track_ids().index(track)
        out = {key: a[key][rows] for key in ("frame", "global_orient", "body_pose", "transl", "joints", "row")}
        out.update(rest_joints=a["rest_joints"][k], rest_verts=a["rest_verts"][k], betas=a["track_betas"][k])
        return out
