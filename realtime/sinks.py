"""Sinks: the overlay mp4, a live window, the results file and per-track mesh sequences.

Files are written to a temporary name beside the target and renamed on success, so an existing output
is never replaced by a broken one; an interrupted run (Ctrl-C, SIGTERM) finalises what it has and
renames too. An error (a full disk, a file too large, an I/O error) is one SinkError line naming the
file; the temporary files are removed and the old outputs stay untouched. The overlay video is
re-opened and its frames counted before it is renamed (realtime/video_write.py writes it).

Results npz (schema "mega-rt-results/1"), one row per person and frame (M rows):
    frame (M,) int32, track_id (M,) int64 (-1 untracked), box_xyxy (M,4) f32, score (M,) f32,
    tokens (M,S,54) int16 (S = 1, or the Q samples), rotmat (M,3,3) f32 canonical->camera,
    cam_crop (M,3) f32, cam_t (M,3) f32 full-image camera translation (m), verts (M,6890,3) f16 camera
    frame (m), vertex_std (M,6890) f16 (stochastic only), joints_cam (M,J,3) f32 (with a joint
    regressor: J_regressor @ the float32 vertices), and per file: schema, fps, image_size_wh, focal (px;
    principal point at the image centre), num_frames, frames_skipped, frames_dropped, samples, steps,
    source, weights, faces (13776,3) int32 (and regressor, regressor_sha256 with joints_cam).
The JSONL summary has one line per frame: {"frame", "people": [{"track_id", "box", "score", "cam_t"}]},
flushed as it goes.

The per-row arrays are not held in memory: every `chunk_rows` rows (256), and at least every
`SPILL_EVERY_S` seconds however few rows came, they are appended to raw files in a hidden spill folder
beside the target, `.<stem>.<pid>.spill/<key>.bin` (C order, the dtypes above), and at close the npz is
streamed together from them. A process killed outright (SIGKILL, power loss) cannot finalise: the spill
folder, the `.partial` files and any old outputs stay as they were. The rows of every chunk spilled so
far are in the .bin files (the last may be cut short), e.g.
`np.fromfile(".o.123.spill/verts.bin", np.float16).reshape(-1, 6890, 3)`, the .partial.jsonl has every
frame, and the .partial.mp4 (fragmented) plays up to its last fragment. While a run writes, it holds a
lock on each of its temporary files; the next run beside the same target lists the unlocked ones (a
dead run's) and never deletes them, moving one aside when its own temporary name is the same (containers
reuse pids). Delete them when done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from realtime.types import FrameResult
from realtime.video_write import SinkError, VideoWriter, info_line, write_failure
from train.io import atomic_write, temp_path

__all__ = ["SinkError", "Mp4Sink", "ResultsSink", "MeshExportSink", "WindowSink", "check_writable", "spill_path"]

RESULTS_SCHEMA = "mega-rt-results/1"
SPILL_EVERY_S = 2.0  # a short run killed outright still leaves its rows in the spill folder
# the per-row arrays, in file order, and their shapes when nobody was seen (vertex_std is then absent)
ROW_DTYPES = {"frame": np.int32, "track_id": np.int64, "box_xyxy": np.float32, "score": np.float32, "tokens": np.int16, "rotmat": np.float32,
              "cam_crop": np.float32, "cam_t": np.float32, "verts": np.float16, "vertex_std": np.float16, "joints_cam": np.float32}  # fmt: skip
EMPTY_SHAPES = {"frame": (0,), "track_id": (0,), "box_xyxy": (0, 4), "score": (0,), "tokens": (0, 1, 54), "rotmat": (0, 3, 3), "cam_crop": (0, 3),
                "cam_t": (0, 3), "verts": (0, 6890, 3)}  # fmt: skip


def _lock(path: Path) -> int:
    """Hold an exclusive lock on `path` (file or folder) until the fd is closed: this run is alive."""
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _held_by_a_live_run(path: Path) -> bool:
    try:
        fd = _lock(path)
    except BlockingIOError:
        return True
    except OSError:
        return False
    _unlock(fd)
    return False


def leftovers(path: Path) -> list[Path]:
    """Temporary files and spill folders of `path` that no running process holds (a killed run's)."""
    folder = path.parent if str(path.parent) else Path(".")
    patterns = [f".{path.stem}.*.partial{path.suffix}"]
    if path.suffix == ".npz":
        patterns += [f".{path.stem}.*.partial.jsonl", f".{path.stem}.*.spill"]
    found = {p for pattern in patterns for p in folder.glob(pattern)}
    return sorted(p for p in found if not _held_by_a_live_run(p))


def note_leftovers(path: Path) -> list[Path]:
    """List a killed run's leftovers beside `path` in one line; move aside the one this run's own temporary
    name would overwrite. Returns them (after the move)."""
    own = {temp_path(path), spill_path(path), temp_path(path.with_suffix(".jsonl"))}
    found = []
    for p in leftovers(path):
        if p in own:
            n = 1
            while (aside := p.with_name(p.name.replace(f".{os.getpid()}.", f".{os.getpid()}-killed{n}.", 1))).exists():
                n += 1
            try:
                p.rename(aside)
                p = aside
            except OSError as e:
                raise SinkError(f"{p}: a killed run's file is in the way and cannot be moved ({e.strerror})") from None
        found.append(p)
    if found:
        info_line(f"note: a killed run left {', '.join(p.name for p in found)} in {path.parent}: the .partial.mp4 plays up to "
              "the kill, a .spill folder holds its rows (docs/results-format.md); delete them when done")  # fmt: skip
    return found


class _HeldWrite:
    """A `train.io.atomic_write` held open for a whole run: write to `tmp` (train.io.temp_path, which
    keeps the suffix), then `commit()` renames it over the target or `discard()` removes it. The
    temporary file is created and locked at once, so the next run knows this one is alive."""

    def __init__(self, path: Path):
        self.path = path
        self._cm = atomic_write(path)
        self.tmp = self._cm.__enter__()
        self._lock = None
        try:
            self.tmp.touch()
            self._lock = _lock(self.tmp)
        except OSError as e:
            self.discard()
            raise SinkError(write_failure(path, e, "create a temporary file beside it")) from None

    def commit(self) -> None:
        try:
            self._cm.__exit__(None, None, None)
        except OSError as e:
            raise SinkError(write_failure(self.path, e, "finish")) from None
        finally:
            _unlock(self._lock)

    def discard(self) -> None:
        err = _Discarded()
        self._cm.__exit__(_Discarded, err, None)  # atomic_write removes the temporary file and re-raises: not here
        _unlock(self._lock)


class _Discarded(Exception):
    """Thrown into a held atomic_write to make it remove its temporary file."""


def spill_path(path: Path) -> Path:
    """The hidden folder beside `path` where ResultsSink spills its rows until close."""
    return path.with_name(f".{path.stem}.{os.getpid()}.spill")


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
    """The overlay video (H.264, fragmented mp4, the source's size, rate and timestamps)."""

    def __init__(self, path, fps: float, size_wh: tuple[int, int]):
        self.path = Path(path)
        check_writable(self.path)
        note_leftovers(self.path)
        self._out = _HeldWrite(self.path)
        self.tmp = self._out.tmp
        try:
            self.writer = VideoWriter(self.tmp, size_wh, fps, name=self.path)
        except BaseException:
            self._out.discard()
            raise
        self.frames = 0

    def write(self, r: FrameResult):
        self.writer.write(r.overlay, r.frame.time_s)
        self.frames += 1

    def close(self, ok: bool):
        if not (ok and self.frames > 0):
            self.writer.abort()
            self._out.discard()
            return
        try:
            self.writer.close()  # re-opens the file and counts its frames
        except BaseException:
            self._out.discard()
            raise
        self._out.commit()


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
    """Rows spilled to disk in chunks as they come; the npz is assembled from the spill at close.

    RAM holds at most `chunk_rows` rows (`buffered_rows` never exceeds it): a 10-minute video of three
    people is GBs of float16 vertices, and a crash must not lose what was already written.
    """

    def __init__(self, path, meta: dict, faces: np.ndarray, chunk_rows: int = 256, joint_regressor=None):
        """`joint_regressor`: a (J, 6890) float32 tensor (train.joints.load_joint_regressor) that adds
        `joints_cam` (M, J, 3) to every row; None: no joints."""
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.path = Path(path)
        check_writable(self.path)
        note_leftovers(self.path)
        self.spill_dir = spill_path(self.path)
        self.jsonl_path = self.path.with_suffix(".jsonl")
        self.meta = meta
        self.faces = faces.astype(np.int32)
        self.chunk_rows = chunk_rows
        self.joint_regressor = joint_regressor
        self.buffered_rows = 0  # rows in RAM, waiting for the next spill
        self.peak_buffered_rows = 0
        self.frames = 0
        self._buffer: dict[str, list[np.ndarray]] = {k: [] for k in ROW_DTYPES}
        self._spilled: dict[str, tuple[int, tuple[int, ...]]] = {}  # key -> (rows on disk, shape of a row)
        self._closed = False
        self._last_spill = time.monotonic()
        self._spill_lock = None
        try:
            self.spill_dir.mkdir()  # note_leftovers moved a dead run's folder of this name aside
            self._spill_lock = _lock(self.spill_dir)
            self._jsonl_out = _HeldWrite(self.jsonl_path)
            self.jsonl = open(self._jsonl_out.tmp, "w")
        except (OSError, SinkError) as e:
            _unlock(self._spill_lock)
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            if isinstance(e, SinkError):
                raise
            raise SinkError(write_failure(self.path, e, "create temporary files beside it")) from None

    def write(self, r: FrameResult):
        k = r.boxes_xyxy.shape[0]
        self.frames += 1
        try:
            self.jsonl.write(json.dumps({"frame": r.frame.index, "people": [
                {"track_id": int(r.track_ids[i]), "box": [round(float(v), 1) for v in r.boxes_xyxy[i]], "score": round(float(r.scores[i]), 3),
                 "cam_t": [round(float(v), 4) for v in r.cam_t_full[i]]} for i in range(k)]}) + "\n")  # fmt: skip
            self.jsonl.flush()
        except OSError as e:
            raise SinkError(write_failure(self.jsonl_path, e)) from None
        if k == 0:
            if self.buffered_rows and time.monotonic() - self._last_spill > SPILL_EVERY_S:
                self._spill()
            return
        columns = _row_columns(r, self.joint_regressor)
        start = 0
        while start < k:  # a frame may straddle a chunk boundary: split it so the bound holds exactly
            take = min(k - start, self.chunk_rows - self.buffered_rows)
            for key, a in columns.items():
                self._buffer[key].append(a[start : start + take])
            self.buffered_rows += take
            self.peak_buffered_rows = max(self.peak_buffered_rows, self.buffered_rows)
            start += take
            if self.buffered_rows >= self.chunk_rows:
                self._spill()
        if self.buffered_rows and time.monotonic() - self._last_spill > SPILL_EVERY_S:
            self._spill()

    def close(self, ok: bool, final_meta: dict | None = None):
        if self._closed:
            return
        self._closed = True
        try:
            self.jsonl.close()
        except OSError as e:
            self._discard()
            raise SinkError(write_failure(self.jsonl_path, e)) from None
        if not ok:
            self._discard()
            return
        try:
            self._spill()
            with atomic_write(self.path) as tmp:
                self._assemble(tmp, {**self.meta, **(final_meta or {})})
            self._jsonl_out.commit()
        except OSError as e:
            self._discard()
            raise SinkError(write_failure(self.path, e, "write the results")) from None
        except BaseException:
            self._discard()
            raise
        _unlock(self._spill_lock)
        shutil.rmtree(self.spill_dir, ignore_errors=True)

    def _spill(self):
        """Append the buffered rows to one raw file per key; the OS has them once this returns."""
        self._last_spill = time.monotonic()
        if self.buffered_rows == 0:
            return
        try:
            for key, parts in self._buffer.items():
                if not parts:
                    continue
                rows, row_shape = self._spilled.get(key, (0, parts[0].shape[1:]))
                with open(self.spill_dir / f"{key}.bin", "ab") as fh:
                    for a in parts:
                        if a.shape[1:] != row_shape:  # np.fromfile could not tell: the file would be garbage
                            raise SinkError(
                                f"{self.path}: {key} rows changed shape from {row_shape} to {a.shape[1:]} mid-run"
                            )
                        fh.write(np.ascontiguousarray(a).data)
                        rows += a.shape[0]
                self._spilled[key] = (rows, row_shape)
                parts.clear()
        except OSError as e:
            raise SinkError(
                write_failure(self.path, e, f"write the results (spilling rows to {self.spill_dir.name})")
            ) from None
        self.buffered_rows = 0
        counts = {n for n, _ in self._spilled.values()}
        if len(counts) > 1:  # e.g. vertex_std on some rows only: the arrays would not line up
            raise SinkError(f"{self.path}: the result arrays have different row counts {sorted(counts)}")

    def _assemble(self, tmp: Path, meta: dict):
        """Write the npz to `tmp`, streaming each spilled array (never whole in memory)."""
        import zipfile

        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, dtype in ROW_DTYPES.items():
                if key in self._spilled:
                    rows, row_shape = self._spilled[key]
                    _stream_npy(zf, key, self.spill_dir / f"{key}.bin", np.dtype(dtype), (rows, *row_shape))
                elif key in EMPTY_SHAPES:  # vertex_std stays absent in deterministic runs
                    _write_npy(zf, key, np.zeros(EMPTY_SHAPES[key], dtype))
                elif key == "joints_cam" and self.joint_regressor is not None:
                    _write_npy(zf, key, np.zeros((0, self.joint_regressor.shape[0], 3), dtype))
            for key, value in meta.items():
                _write_npy(zf, key, np.asarray(value))
            _write_npy(zf, "schema", np.asarray(RESULTS_SCHEMA))
            _write_npy(zf, "faces", self.faces)

    def _discard(self):
        self._jsonl_out.discard()
        _unlock(self._spill_lock)
        shutil.rmtree(self.spill_dir, ignore_errors=True)


def _row_columns(r: FrameResult, joint_regressor=None) -> dict[str, np.ndarray]:
    """One frame's rows, one array per npz key, in the file's dtypes."""
    k = r.boxes_xyxy.shape[0]
    cols = dict(frame=np.full(k, r.frame.index), track_id=r.track_ids, box_xyxy=r.boxes_xyxy, score=r.scores, tokens=r.tokens,
                rotmat=r.rotmat, cam_crop=r.cam_crop, cam_t=r.cam_t_full, verts=r.verts_cam)  # fmt: skip
    if r.vertex_std is not None:
        cols["vertex_std"] = r.vertex_std
    if joint_regressor is not None:  # from the float32 vertices, before they are stored as float16
        import torch

        from train.joints import regress_joints

        verts = torch.from_numpy(np.ascontiguousarray(r.verts_cam, dtype=np.float32))
        cols["joints_cam"] = regress_joints(verts, joint_regressor).numpy()
    return {key: np.asarray(a).astype(ROW_DTYPES[key], copy=False) for key, a in cols.items()}


def _write_npy(zf, key: str, array: np.ndarray) -> None:
    with zf.open(f"{key}.npy", "w", force_zip64=True) as out:
        np.lib.format.write_array(out, array, allow_pickle=False)


def _stream_npy(zf, key: str, src: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """`key`.npy from a raw spill file: the header np.save would write, then the bytes in blocks."""
    expected = int(np.prod(shape)) * dtype.itemsize
    if src.stat().st_size != expected:  # a short write (disk full) must not become a silently shifted array
        raise SinkError(f"{src}: holds {src.stat().st_size} bytes, expected {expected} for {key} {shape}")
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": tuple(int(n) for n in shape),
    }
    # force_zip64: the size is not known to zipfile up front and may pass 4 GiB (verts of long videos)
    with zf.open(f"{key}.npy", "w", force_zip64=True) as out, open(src, "rb") as fh:
        np.lib.format.write_array_header_1_0(out, header)
        shutil.copyfileobj(fh, out, 1 << 20)


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
            try:
                d.mkdir(exist_ok=True)
            except OSError as e:
                raise SinkError(write_failure(d, e, "create the folder")) from None
            name = f"frame_{r.frame.index:06d}" + (f"_{i}" if tid < 0 else "")
            std = r.vertex_std[i] if r.vertex_std is not None else None
            target = d / f"{name}.{self.fmt}"
            try:
                (write_ply if self.fmt == "ply" else write_obj)(target, r.verts_cam[i], self.faces, std)
            except OSError as e:  # atomic_write removed the partial file; the meshes before it are whole
                raise SinkError(write_failure(target, e)) from None
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
    with atomic_write(path) as tmp, open(tmp, "w") as fh:
        fh.write("# mega-rt mesh, OpenCV camera frame (x right, y down, z forward), metres\n")
        v = np.asarray(verts, np.float32)
        fh.write(("v %.5f %.5f %.5f\n" * len(v)) % tuple(v.ravel().tolist()))
        fh.write(_obj_faces(faces))


def write_ply(path: Path, verts: np.ndarray, faces: np.ndarray, vertex_std=None) -> None:
    verts = np.asarray(verts, np.float32)
    props = "property float x\nproperty float y\nproperty float z\n" + (
        "property float std\n" if vertex_std is not None else ""
    )
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(verts)}\n{props}element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    vdata = verts if vertex_std is None else np.concatenate([verts, np.asarray(vertex_std, np.float32)[:, None]], 1)
    fdata = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", 3)])
    fdata["n"], fdata["idx"] = 3, faces
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header.encode())
        fh.write(vdata.astype("<f4").tobytes())
        fh.write(fdata.tobytes())
