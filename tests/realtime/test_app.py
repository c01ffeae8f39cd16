"""The web app's parts without a browser: settings bounds, upload refusals, the temporary folder, the
views of a finished job (GLB, track table)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from realtime.app.config import AppInputError, AppLimits, RunSettings
from realtime.app.uploads import check_upload
from realtime.app.workspace import Workspace

LIMITS = AppLimits(max_upload_mb=1, max_frames=4)


def _write_video(path: Path, frames: int = 6, size=(64, 48)) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(frames):
            image = rng.integers(0, 255, (size[1], size[0], 3), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture
def workspace(tmp_path):
    with Workspace(str(tmp_path)) as ws:
        yield ws


def test_settings_from_the_page_are_bounded():
    s = RunSettings.from_page(0.4, 8.0, 0, True, 0, AppLimits())
    assert (s.det_conf, s.samples, s.steps, s.smooth, s.max_people) == (0.4, 8, None, True, None)
    for bad, word in (((1.5, 1, 0, False, 0), "confidence"), ((0.3, 0, 0, False, 0), "samples"),
                      ((0.3, 99, 0, False, 0), "samples"), ((0.3, 2, 99, False, 0), "steps"),
                      ((0.3, 1, 0, False, 999), "max people"), ((None, 1, 0, False, 0), "numbers")):  # fmt: skip
        with pytest.raises(AppInputError, match=word):
            RunSettings.from_page(*bad, AppLimits())


def test_a_video_upload_opens_with_the_frame_limit(workspace):
    path = _write_video(workspace.gradio / "clip.mp4")
    source = check_upload(path, workspace, LIMITS)
    try:
        assert (source.width, source.height, source.max_frames) == (64, 48, 4)
    finally:
        source.stop()


def test_uploads_that_are_refused_say_why(workspace, tmp_path):
    with pytest.raises(AppInputError, match="drop a video"):
        check_upload(None, workspace, LIMITS)
    outside = _write_video(tmp_path / "outside.mp4")
    with pytest.raises(AppInputError, match="outside.mp4: not a file uploaded to this app"):
        check_upload(outside, workspace, LIMITS)
    link = workspace.gradio / "link.mp4"
    link.symlink_to(outside)  # a link out of the folder is outside too
    with pytest.raises(AppInputError, match="not a file uploaded"):
        check_upload(link, workspace, LIMITS)
    big = workspace.gradio / "big.mp4"
    big.write_bytes(b"\0" * (2 * 2**20))
    with pytest.raises(AppInputError, match="big.mp4: 2 MB is over the upload limit of 1 MB"):
        check_upload(big, workspace, LIMITS)
    text = workspace.gradio / "notes.txt"
    text.write_text("hello")
    with pytest.raises(AppInputError, match="notes.txt: not a video file; upload one of .mp4"):
        check_upload(text, workspace, LIMITS)
    fake = workspace.gradio / "fake.mp4"
    fake.write_text("not a video at all")
    with pytest.raises(AppInputError, match="fake.mp4: not a video that can be decoded"):
        check_upload(fake, workspace, LIMITS)


def test_the_workspace_is_one_folder_removed_at_the_end(tmp_path):
    ws = Workspace(str(tmp_path))
    job = ws.new_job()
    assert ws.contains(job) and job.parent == ws.jobs and ws.root.parent == tmp_path.resolve()
    assert not ws.contains(tmp_path) and not ws.contains("/etc/passwd")
    old = os.environ.get("GRADIO_TEMP_DIR")
    try:
        ws.use_for_gradio()
        assert os.environ["GRADIO_TEMP_DIR"] == str(ws.gradio)
    finally:
        os.environ.pop("GRADIO_TEMP_DIR") if old is None else os.environ.__setitem__("GRADIO_TEMP_DIR", old)
    ws.close()
    assert not ws.root.exists() and list(tmp_path.iterdir()) == []


def test_all_interfaces_are_said_in_one_line():
    from realtime.app.ui import bind_note

    assert bind_note("127.0.0.1", 7860) is None
    assert bind_note("0.0.0.0", 7860).startswith("listening on all interfaces (0.0.0.0)")


def _results(path: Path, stochastic: bool) -> Path:
    """A results npz of two frames (2 people, then 1) in the pipeline's schema."""
    from realtime.sinks import ResultsSink
    from realtime.types import Frame, FrameResult
    from train.assets import find_asset
    from train.synthetic.body import TEMPLATE_ASSET, read_template_ply

    verts_template, faces = read_template_ply(find_asset(TEMPLATE_ASSET))
    sink = ResultsSink(path, {"fps": np.float32(10)}, faces)
    for index, people in ((0, 2), (1, 1)):
        verts = np.stack([verts_template + [0.5 * k, 0, 3.0] for k in range(people)]).astype(np.float32)
        std = np.full((people, verts.shape[1]), 0.02, np.float32) if stochastic else None
        sink.write(FrameResult(Frame(index, np.zeros((48, 64, 3), np.uint8), 0.0), np.tile([[1, 2, 30, 40]], (people, 1)).astype(np.float32),
                               np.full(people, 0.9, np.float32), np.arange(people), np.zeros((people, 1, 54), np.int16),
                               np.tile(np.eye(3, dtype=np.float32), (people, 1, 1)), np.zeros((people, 3), np.float32),
                               verts.mean(axis=1), verts, std, 100.0))  # fmt: skip
    sink.close(True, {"num_frames": np.int32(2)})
    return path


@pytest.mark.parametrize("stochastic", [False, True])
def test_a_frame_becomes_a_glb_of_its_people(tmp_path, assets_dir, stochastic):
    import trimesh

    from realtime.app.meshes import frame_glb, track_table

    results = _results(tmp_path / "r.npz", stochastic)
    assert frame_glb(results, 0, tmp_path / "f0.glb") == 2
    assert frame_glb(results, 5, tmp_path / "f5.glb") == 0 and not (tmp_path / "f5.glb").exists()
    scene = trimesh.load(tmp_path / "f0.glb", force="scene")
    meshes = list(scene.geometry.values())
    assert [m.vertices.shape for m in meshes] == [(6890, 3), (6890, 3)]
    assert np.all(meshes[0].vertices[:, 2] < 0)  # in front of the camera is -z in glTF
    colours = meshes[0].visual.vertex_colors[:, :3]
    if stochastic:  # 2 cm of spread on the 0-10 cm TURBO scale: one blue-ish colour everywhere
        assert len(np.unique(colours, axis=0)) == 1 and colours[0, 2] > colours[0, 0]
    rows = track_table(results)
    assert [r[:4] for r in rows] == [[0, 2, 0, 1], [1, 1, 0, 0]]
    assert rows[0][6] == ("2.0" if stochastic else "-")


def test_the_cli_refuses_bad_options_in_one_line():
    from click.testing import CliRunner

    from realtime.cli import main

    result = CliRunner().invoke(main, ["app", "--port", "0"])
    assert result.exit_code == 2 and "--port 0: expected 1 to 65535" in result.output
    result = CliRunner().invoke(main, ["app", "--weights", "nowhere.pt"])
    assert result.exit_code == 2 and "--weights nowhere.pt: not hrnet" in result.output
