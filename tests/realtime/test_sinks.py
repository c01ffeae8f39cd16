"""The results writer (realtime/sinks.py, ResultsSink): rows spilled in chunks, the npz streamed at close.
(The overlay video and every sink's write failures: tests/realtime/test_video_io.py.)

FrameResult objects are fed to the sink directly (no model); the reference is what np.concatenate of
the same rows gives.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from realtime.sinks import EMPTY_SHAPES, RESULTS_SCHEMA, ROW_DTYPES, ResultsSink, SinkError, spill_path
from realtime.types import Frame, FrameResult

V = 6890
FACES = np.arange(30, dtype=np.int64).reshape(10, 3)
META = dict(fps=np.float32(25.0), image_size_wh=np.array([320, 240], np.int32), source="clip.mp4", weights="random")
FINAL = dict(num_frames=np.int32(0), status="ok")


def _result(index: int, people: int, rng, samples: int = 1, stochastic: bool = False) -> FrameResult:
    k = people
    return FrameResult(
        frame=Frame(index, np.zeros((2, 2, 3), np.uint8), 0.0),
        boxes_xyxy=rng.uniform(0, 300, (k, 4)).astype(np.float32), scores=rng.uniform(0, 1, k).astype(np.float32),
        track_ids=rng.integers(-1, 9, k), tokens=rng.integers(0, 512, (k, samples, 54)).astype(np.int32),
        rotmat=rng.normal(size=(k, 3, 3)).astype(np.float32), cam_crop=rng.normal(size=(k, 3)).astype(np.float32),
        cam_t_full=rng.normal(size=(k, 3)).astype(np.float32), verts_cam=rng.normal(size=(k, V, 3)).astype(np.float32),
        vertex_std=rng.uniform(0, 0.1, (k, V)).astype(np.float32) if stochastic else None, focal=500.0,
    )  # fmt: skip


def _reference(results: list[FrameResult]) -> dict[str, np.ndarray]:
    """The arrays the old in-memory writer produced: np.concatenate of each column in the file's dtype."""
    cols = {
        "frame": [np.full(len(r.scores), r.frame.index) for r in results], "track_id": [r.track_ids for r in results],
        "box_xyxy": [r.boxes_xyxy for r in results], "score": [r.scores for r in results], "tokens": [r.tokens for r in results],
        "rotmat": [r.rotmat for r in results], "cam_crop": [r.cam_crop for r in results], "cam_t": [r.cam_t_full for r in results],
        "verts": [r.verts_cam for r in results],
    }  # fmt: skip
    if results[0].vertex_std is not None:
        cols["vertex_std"] = [r.vertex_std for r in results]
    return {k: np.concatenate(v).astype(ROW_DTYPES[k]) for k, v in cols.items()}


def _run(path, results, chunk_rows, ok=True):
    sink = ResultsSink(path, META, FACES, chunk_rows=chunk_rows)
    peak = 0
    for r in results:
        sink.write(r)
        assert sink.buffered_rows <= sink.chunk_rows
        peak = max(peak, sink.buffered_rows)
    sink.close(ok, dict(FINAL, num_frames=np.int32(len(results))))
    return sink, peak


def _leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_rows_across_chunk_boundaries_load_as_the_concatenated_reference(tmp_path):
    rng = np.random.default_rng(0)
    people = [int(n) for n in rng.integers(0, 4, 40)] + [3, 3, 0, 1]  # 0..3 people, frames straddling chunks
    results = [_result(i, n, rng) for i, n in enumerate(people)]
    _run(tmp_path / "o.npz", results, chunk_rows=5)
    ref = _reference(results)
    with np.load(tmp_path / "o.npz") as z:
        assert "vertex_std" not in z.files
        for k, v in ref.items():
            assert z[k].dtype == v.dtype and z[k].shape == v.shape, k
            np.testing.assert_array_equal(z[k], v, err_msg=k)
        assert str(z["schema"]) == RESULTS_SCHEMA and str(z["source"]) == "clip.mp4" and str(z["status"]) == "ok"
        assert int(z["num_frames"]) == len(results) and z["faces"].dtype == np.int32
        np.testing.assert_array_equal(z["faces"], FACES)
    lines = (tmp_path / "o.jsonl").read_text().splitlines()
    assert [len(json.loads(line)["people"]) for line in lines] == people
    assert _leftovers(tmp_path, {"o.npz", "o.jsonl"}) == []


def test_streamed_entries_are_byte_identical_to_np_save(tmp_path):
    """The hand-written .npy header and raw bytes are what np.save would have written."""
    rng = np.random.default_rng(1)
    results = [_result(i, 2, rng) for i in range(7)]
    _run(tmp_path / "o.npz", results, chunk_rows=3)
    ref = _reference(results)
    with zipfile.ZipFile(tmp_path / "o.npz") as zf:
        for k in ("verts", "tokens", "frame"):
            buf = io.BytesIO()
            np.save(buf, ref[k])
            assert zf.read(f"{k}.npy") == buf.getvalue(), k


def test_stochastic_rows_keep_vertex_std_and_all_samples(tmp_path):
    rng = np.random.default_rng(2)
    results = [_result(i, n, rng, samples=3, stochastic=True) for i, n in enumerate([2, 0, 3, 1, 3, 2])]
    _run(tmp_path / "q.npz", results, chunk_rows=4)
    ref = _reference(results)
    with np.load(tmp_path / "q.npz") as z:
        assert z["vertex_std"].dtype == np.float16 and z["vertex_std"].shape == (11, V)
        assert z["tokens"].shape == (11, 3, 54)
        for k, v in ref.items():
            np.testing.assert_array_equal(z[k], v, err_msg=k)


def test_zero_people_gives_the_documented_empty_arrays(tmp_path):
    rng = np.random.default_rng(3)
    results = [_result(i, 0, rng) for i in range(5)]
    _run(tmp_path / "z.npz", results, chunk_rows=4)
    with np.load(tmp_path / "z.npz") as z:
        assert "vertex_std" not in z.files
        for k, shape in EMPTY_SHAPES.items():
            assert z[k].shape == shape and z[k].dtype == ROW_DTYPES[k], k
        assert int(z["num_frames"]) == 5
    assert _leftovers(tmp_path, {"z.npz", "z.jsonl"}) == []


def test_failed_run_keeps_the_old_target_and_leaves_no_temporaries(tmp_path):
    old = tmp_path / "keep.npz"
    old.write_bytes(b"old results")
    rng = np.random.default_rng(4)
    sink, _ = _run(old, [_result(i, 3, rng) for i in range(6)], chunk_rows=4, ok=False)
    assert old.read_bytes() == b"old results"
    assert not sink.spill_dir.exists()
    assert _leftovers(tmp_path, {"keep.npz"}) == []


def test_rows_in_memory_never_exceed_one_chunk(tmp_path):
    rng = np.random.default_rng(5)
    sink = ResultsSink(tmp_path / "m.npz", META, FACES, chunk_rows=2)
    for i in range(10):
        sink.write(_result(i, 3, rng))  # every frame is larger than a chunk
        assert sink.buffered_rows <= sink.chunk_rows
    assert sink.peak_buffered_rows == sink.chunk_rows
    assert (sink.spill_dir / "verts.bin").stat().st_size == 30 * V * 3 * 2  # everything is on disk already
    sink.close(True, FINAL)
    with np.load(tmp_path / "m.npz") as z:
        assert z["verts"].shape == (30, V, 3)


def test_rows_that_change_shape_mid_run_are_a_one_line_error(tmp_path):
    rng = np.random.default_rng(6)
    sink = ResultsSink(tmp_path / "s.npz", META, FACES, chunk_rows=2)
    sink.write(_result(0, 2, rng, samples=1))
    with pytest.raises(SinkError, match="tokens rows changed shape"):
        sink.write(_result(1, 2, rng, samples=3))
    sink.close(False)
    assert _leftovers(tmp_path, set()) == []


def test_a_dead_run_spill_folder_with_the_same_pid_is_kept_apart(tmp_path):
    """Containers reuse pids: rows a SIGKILLed run left under the same name must neither end up in this
    file nor be deleted (they are the killed run's only copy)."""
    stale = spill_path(tmp_path / "p.npz")
    stale.mkdir()
    (stale / "verts.bin").write_bytes(b"\0" * 4096)
    rng = np.random.default_rng(7)
    results = [_result(i, 1, rng) for i in range(3)]
    _run(tmp_path / "p.npz", results, chunk_rows=2)
    with np.load(tmp_path / "p.npz") as z:
        np.testing.assert_array_equal(z["verts"], _reference(results)["verts"])
    (aside,) = tmp_path.glob(".p.*-killed1.spill")
    assert (aside / "verts.bin").read_bytes() == b"\0" * 4096
