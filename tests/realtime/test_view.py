"""`mega-rt view` (realtime/view.py): a results file as a Rerun recording, read back with Rerun's own
reader (rerun.chunk.RrdReader): the meshes' vertex count and positions, every frame on the timeline,
the colours, the video's frames; and bad input is one line with exit code 2. No viewer is spawned: the
tests either pass --save or run without a display."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

pytest.importorskip("rerun", reason="mega-rt view needs rerun-sdk (the `view` extra)")

FPS = 10.0
SIZE_WH = (320, 240)
FRAMES = 5
TRACKS = (3, 5)
ABSENT = (2, 5)  # (frame, track): track 5 is not in frame 2


def _cli(args):
    from click.testing import CliRunner

    from realtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def template(assets_dir):
    from train.assets import find_asset
    from train.synthetic.body import TEMPLATE_ASSET, read_template_ply

    verts, faces = read_template_ply(find_asset(TEMPLATE_ASSET))
    return np.asarray(verts, np.float32), np.asarray(faces)


def write_results(path, template, stochastic: bool):
    """A results file as the pipeline's writer (ResultsSink) makes it: two tracks walking away."""
    from realtime.sinks import ResultsSink
    from realtime.types import Frame, FrameResult

    verts, faces = template
    rng = np.random.default_rng(0)
    meta = dict(fps=np.float32(FPS), image_size_wh=np.array(SIZE_WH, np.int32), focal=np.float32(1428.6),
                source="clip.mp4", weights="random", samples=np.int32(8 if stochastic else 1))  # fmt: skip
    sink = ResultsSink(path, meta, faces)
    for f in range(FRAMES):
        ids = np.array([t for t in TRACKS if (f, t) != ABSENT])
        k = len(ids)
        placed = verts[None] + np.stack([[0.5 * t - 2.0, 0.0, 5.0 + 0.1 * f] for t in ids]).astype(np.float32)[:, None]
        sink.write(FrameResult(
            frame=Frame(f, np.zeros((2, 2, 3), np.uint8), 0.0), boxes_xyxy=np.tile([[40.0, 30.0, 120.0, 220.0]], (k, 1)).astype(np.float32) + 100 * np.arange(k)[:, None],
            scores=np.ones(k, np.float32), track_ids=ids, tokens=np.zeros((k, 1, 54), np.int32),
            rotmat=np.tile(np.eye(3, dtype=np.float32), (k, 1, 1)), cam_crop=np.zeros((k, 3), np.float32),
            cam_t_full=np.zeros((k, 3), np.float32), verts_cam=placed,
            vertex_std=rng.uniform(0, 0.12, placed.shape[:2]).astype(np.float32) if stochastic else None, focal=1428.6,
        ))  # fmt: skip
    sink.close(
        True, dict(num_frames=np.int32(FRAMES), frames_skipped=np.int32(0), frames_dropped=np.int32(0), status="ok")
    )
    return path


@pytest.fixture(scope="module", params=[False, True], ids=["deterministic", "stochastic"])
def results(request, tmp_path_factory, template):
    return write_results(tmp_path_factory.mktemp("results") / "clip_mega.npz", template, request.param)


def read_rrd(path) -> dict:
    """entity -> component -> [(frame or None for static, value)] of an .rrd file, by Rerun's reader."""
    from rerun.chunk import RrdReader

    out: dict = defaultdict(lambda: defaultdict(list))
    for chunk in RrdReader(str(path)).stream():
        batch = chunk.to_record_batch()
        frames = batch.column("frame").to_pylist() if "frame" in batch.schema.names else [None] * batch.num_rows
        times = batch.column("time").to_pylist() if "time" in batch.schema.names else [None] * batch.num_rows
        for name in batch.schema.names:
            if ":" not in name:
                continue  # row ids and timelines
            for f, t, value in zip(frames, times, batch.column(name).to_pylist()):
                out[chunk.entity_path][name].append((f, t, value))
    return out


def logged_at(rrd: dict, entity: str, component: str) -> dict:
    return {f: v for f, _, v in rrd[entity][component] if f is not None}


def test_save_writes_every_frame_and_the_meshes_of_the_results(results, tmp_path):
    from realtime.overlay import std_colors
    from train.render import DEFAULT_COLORS

    out = tmp_path / "clip.rrd"
    r = _cli(["view", results, "--save", out])
    assert r.exit_code == 0, r.output
    assert f"wrote {out} ({FRAMES} frames" in r.output
    rrd = read_rrd(out)
    with np.load(results) as z:
        verts, frame, track, std = z["verts"], z["frame"], z["track_id"], z.get("vertex_std")
        faces = z["faces"]
    # the timeline: every frame, with its time in seconds
    boxes = rrd["/world/camera/image/boxes"]["Boxes2D:centers"]
    assert sorted(f for f, _, _ in boxes) == list(range(FRAMES))
    assert [t.total_seconds() for f, t, _ in sorted(boxes, key=lambda x: x[0])] == pytest.approx(
        [f / FPS for f in range(FRAMES)]
    )
    assert [len(v) for f, _, v in sorted(boxes, key=lambda x: x[0])] == [2, 2, 1, 2, 2]
    for t in TRACKS:
        entity = f"/world/people/track_{t}"
        triangles = [v for f, _, v in rrd[entity]["Mesh3D:triangle_indices"] if f is None]
        assert len(triangles) == 1 and np.array_equal(np.array(triangles[0]), faces)
        positions = logged_at(rrd, entity, "Mesh3D:vertex_positions")
        colors = logged_at(rrd, entity, "Mesh3D:vertex_colors")
        assert sorted(positions) == list(range(FRAMES))
        for f in range(FRAMES):
            rows = np.nonzero((frame == f) & (track == t))[0]
            if (f, t) == ABSENT:
                assert rows.size == 0 and positions[f] == [], "a person gone from a frame is drawn there"
                continue
            (row,) = rows
            got = np.array(positions[f], np.float32)
            assert got.shape == (6890, 3)
            np.testing.assert_array_equal(got, verts[row].astype(np.float32))
            want_colors = (
                np.rint(std_colors(std[row : row + 1].astype(np.float32))[0, :, ::-1] * 255)
                if std is not None
                else np.broadcast_to(np.rint(DEFAULT_COLORS[t % len(DEFAULT_COLORS)] * 255), (6890, 3))
            )
            rgb = (np.array(colors[f], np.uint64)[:, None] >> np.array([24, 16, 8], np.uint64)) & 0xFF  # RGBA32
            np.testing.assert_array_equal(rgb, want_colors.astype(np.uint64))


def test_normals_point_out_of_the_body_whichever_way_faces_wind(template):
    from realtime.view import outward_normals

    verts, faces = template
    normals = outward_normals(verts, faces)
    np.testing.assert_allclose(outward_normals(verts, np.ascontiguousarray(faces[:, ::-1])), normals, atol=1e-4)
    # most of a body's surface faces away from its centre (not all: the arms' inner sides face it)
    out_of_centre = np.einsum("ij,ij->i", normals, verts - verts.mean(0))
    assert (out_of_centre > 0).mean() > 0.6


def test_without_a_display_it_writes_an_rrd_here(results, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    r = _cli(["view", results])
    assert r.exit_code == 0, r.output
    assert "no display" in r.output and (tmp_path / "clip_mega.rrd").is_file()
    from realtime.view import rrd_frames

    assert rrd_frames(tmp_path / "clip_mega.rrd") == list(range(FRAMES))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


def write_video(path, size_wh, frames: int):
    from realtime.video_write import VideoWriter

    writer = VideoWriter(path, size_wh, FPS)
    for i in range(frames):
        writer.write(np.full((size_wh[1], size_wh[0], 3), 40 * i, np.uint8))
    writer.close()
    return path


def test_video_frames_are_logged_behind_the_boxes(template, tmp_path):
    import cv2

    results = write_results(tmp_path / "r.npz", template, stochastic=False)
    video = write_video(tmp_path / "clip.mp4", SIZE_WH, FRAMES)
    out = tmp_path / "with_video.rrd"
    r = _cli(["view", results, "--video", video, "--save", out])
    assert r.exit_code == 0, r.output
    rrd = read_rrd(out)
    images = logged_at(rrd, "/world/camera/image", "EncodedImage:blob")
    assert sorted(images) == list(range(FRAMES))
    for f, blob in images.items():  # frame f of the video (grey level 40 f) at frame f of the timeline
        image = cv2.imdecode(np.array(blob[0], np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (SIZE_WH[1], SIZE_WH[0], 3) and abs(image.mean() - 40 * f) < 3
    (resolution,) = [v for f, _, v in rrd["/world/camera"]["Pinhole:resolution"] if f is None]
    assert np.array(resolution).ravel().tolist() == list(SIZE_WH)


def _bad_case(case, tmp_path, template):
    good = write_results(tmp_path / "good.npz", template, stochastic=False)
    if case == "text":
        (tmp_path / "x.npz").write_text("frame,box\n0,1 2 3 4\n")
        return [tmp_path / "x.npz"], "not a mega-rt results file"
    if case == "other_schema":
        with np.load(good) as z:
            arrays = {k: z[k] for k in z.files}
        np.savez(tmp_path / "v2.npz", **{**arrays, "schema": np.array("mega-rt-results/2")})
        return [tmp_path / "v2.npz"], "mega-rt-results/2"
    if case == "ground_truth":
        np.savez(tmp_path / "gt.npz", frame=np.zeros(1, np.int32), boxes_xyxy=np.zeros((1, 4), np.float32))
        return [tmp_path / "gt.npz"], "no schema"
    if case == "missing":
        return [tmp_path / "nope.npz"], "no such file"
    if case == "save_not_rrd":
        return [good, "--save", tmp_path / "o.mp4"], "must be an .rrd"
    if case == "save_over_input":  # a link to the results file itself
        (tmp_path / "link.rrd").symlink_to(good)
        return [good, "--save", tmp_path / "link.rrd"], "would be overwritten"
    if case == "video_of_another_size":
        video = write_video(tmp_path / "small.mp4", (160, 120), 2)
        return [good, "--video", video, "--save", tmp_path / "o.rrd"], "160x120"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["text", "other_schema", "ground_truth", "missing", "save_not_rrd", "save_over_input", "video_of_another_size"],
)
def test_bad_input_is_one_line_exit_2(case, tmp_path, template):
    args, words = _bad_case(case, tmp_path, template)
    r = _cli(["view", *args])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o.rrd").exists()


def test_results_view_reads_a_memory_map_of_the_rows(results):
    """Long runs are GBs of vertices: the rows are read where the file holds them, not loaded."""
    from realtime.view import read_results

    res = read_results(results)
    assert isinstance(res.verts, np.memmap) and res.frame_count == FRAMES
