"""--regressor: joints regressed from the vertices into the results file (realtime/sinks.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tests.helpers import write_scene_clip

TINY = ["--random-weights", "--config", "mega_tiny", "--threads", "1", "--no-progress", "--no-render"]


def _cli(args):
    from click.testing import CliRunner

    from realtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, assets_dir):
    from train.synthetic.scene import SceneConfig

    out = tmp_path_factory.mktemp("joints") / "clip.mp4"
    try:
        return write_scene_clip(out, SceneConfig(width=160, height=128, frames=3, people=2, seed=5, fps=25.0))
    except Exception as e:  # no EGL
        pytest.skip(f"cannot render the synthetic clip: {e}")


def _random_regressor(path, joints=7):
    rng = np.random.default_rng(1)
    reg = rng.random((joints, 6890)).astype(np.float32)
    reg /= reg.sum(1, keepdims=True)  # weights that sum to one per joint, as the SMPL regressors'
    np.save(path, reg)
    return reg


def test_joints_are_the_regressor_applied_to_each_rows_vertices(clip, tmp_path):
    video, boxes = clip
    reg = _random_regressor(tmp_path / "J_regressor_test.npy")
    r = _cli(
        [
            "video",
            video,
            "--boxes",
            boxes,
            "--results",
            tmp_path / "o.npz",
            "--regressor",
            tmp_path / "J_regressor_test.npy",
            *TINY,
        ]
    )
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "o.npz") as z:
        verts, joints = z["verts"].astype(np.float32), z["joints_cam"]
        assert len(z["frame"]) > 0 and joints.shape == (len(z["frame"]), 7, 3) and joints.dtype == np.float32
        # the file's vertices are float16; the joints come from the float32 ones before rounding
        np.testing.assert_allclose(joints, np.einsum("jv,mvc->mjc", reg, verts), rtol=2e-3, atol=2e-3)
        assert str(z["regressor"]) == "J_regressor_test.npy"
        assert (
            str(z["regressor_sha256"]) == hashlib.sha256((tmp_path / "J_regressor_test.npy").read_bytes()).hexdigest()
        )
    assert not np.allclose(joints[0], joints[-1])  # each row its own joints, not one row copied


def test_without_a_regressor_the_file_has_no_joints(clip, tmp_path):
    video, boxes = clip
    r = _cli(["video", video, "--boxes", boxes, "--results", tmp_path / "o.npz", "--max-frames", 1, *TINY])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "o.npz") as z:
        assert "joints_cam" not in z.files and "regressor" not in z.files


@pytest.mark.parametrize("case", ["shape", "pickle", "missing"])
def test_a_bad_regressor_file_is_one_line_exit_2(clip, tmp_path, case):
    video, boxes = clip
    path = tmp_path / {"shape": "J.npy", "pickle": "J.pkl", "missing": "none.npy"}[case]
    if case == "shape":
        np.save(path, np.ones((4, 100), np.float32))
    elif case == "pickle":
        path.write_bytes(b"\x80\x04K\x01.")
    r = _cli(["video", video, "--boxes", boxes, "--results", tmp_path / "o.npz", "--regressor", path, *TINY])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in r.output
    assert not (tmp_path / "o.npz").exists()


def test_bench_pipeline_takes_a_regressor_and_records_what_ran(clip, tmp_path):
    """The --json figures say which weights, detector and regressor ran, as the results file does."""
    import json

    video, boxes = clip
    _random_regressor(tmp_path / "J.npy")
    tiny = ["--random-weights", "--config", "mega_tiny", "--threads", "1", "--no-render"]
    args = ["bench", "pipeline", video, "--boxes", boxes, "--max-frames", 1, "--regressor", tmp_path / "J.npy"]
    r = _cli([*args, *tiny, "--json", tmp_path / "b.json"])
    assert r.exit_code == 0, r.output
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["weights_source"] == "random" and figures["detector_source"] == "boxes"
    assert figures["regressor"] == "J.npy" and len(figures["regressor_sha256"]) == 64
