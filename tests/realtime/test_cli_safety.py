"""`mega-rt video` / `stream` / `bench pipeline` on bad input: outputs never replace inputs, every bad
option value is one line with exit 2, unusable boxes are dropped and counted, results-only runs
without OpenGL, and one OpenCV build provides cv2."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, write_scene_clip

BENCH_TINY = ["--random-weights", "--config", "mega_tiny", "--threads", "1"]
TINY = [*BENCH_TINY, "--no-progress"]


def _cli(args):
    from click.testing import CliRunner

    from realtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _one_line_error(result, code: int = 2) -> str:
    """The error line of a refused run; fails unless it is exactly one line without a traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory, assets_dir):
    """A 4-frame 160x120 synthetic clip of 2 people and its ground truth (boxes_xyxy (4,2,4))."""
    from train.synthetic.scene import SceneConfig

    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    video, npz = write_scene_clip(out, SceneConfig(width=160, height=120, frames=4, people=2, seed=3, fps=25.0))
    return video, npz


@pytest.fixture
def work(tmp_path, clip, monkeypatch):
    """A folder holding in.mp4 and boxes.npz (copies of the clip), the current directory."""
    shutil.copy(clip[0], tmp_path / "in.mp4")
    shutil.copy(clip[1], tmp_path / "boxes.npz")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---- outputs never overwrite inputs ---------------------------------------------------------------
@pytest.mark.parametrize(
    "args, names",
    [
        (["video", "in.mp4", "--boxes", "boxes.npz", "--out", "in.mp4"], ("--out in.mp4", "IN in.mp4")),
        (["video", "in.mp4", "--boxes", "boxes.npz", "--results", "boxes.npz"], ("--results boxes.npz", "--boxes")),
        (["video", "in.mp4", "--boxes", "in_mega.npz"], ("--results in_mega.npz", "--boxes in_mega.npz")),
        (["video", "in.mp4", "--boxes", "boxes.npz", "--out", "link.mp4"], ("--out link.mp4", "IN in.mp4")),
        (["video", "in.mp4", "--boxes", "boxes.npz", "--results", "hard.npz"], ("--results hard.npz", "--boxes")),
        (["video", "in.mp4", "--boxes", "boxes.npz", "--results", "sub/../boxes.npz"], ("--results", "--boxes")),
        (["video", "in.mp4", "--boxes", "in_mega.npz", "--no-render"], ("--results in_mega.npz", "--boxes")),
        (["stream", "--camera", "in.mp4", "--boxes", "boxes.npz", "--out", "in.mp4"], ("--out in.mp4", "--camera")),
        (["stream", "--camera", "in.mp4", "--boxes", "boxes.npz", "--results", "boxes.npz"], ("--results", "--boxes")),
        (["bench", "pipeline", "in.mp4", "--boxes", "boxes.npz", "--json", "boxes.npz"], ("--json", "--boxes")),
    ],
)
def test_an_output_that_is_an_input_is_refused(work, args, names):
    """Refused before any work (exit 2, one line naming both), the input byte for byte as it was."""
    shutil.copy("boxes.npz", "in_mega.npz")
    os.symlink("in.mp4", "link.mp4")
    os.link("boxes.npz", "hard.npz")
    os.mkdir("sub")
    before = {p: _digest(p) for p in ("in.mp4", "boxes.npz", "in_mega.npz")}
    line = _one_line_error(_cli([*args, *(BENCH_TINY if args[0] == "bench" else TINY)]))
    assert "would be overwritten" in line and all(n in line for n in names), line
    assert {p: _digest(p) for p in before} == before
    assert sorted(os.listdir(".")) == sorted(["in.mp4", "boxes.npz", "in_mega.npz", "link.mp4", "hard.npz", "sub"])


def test_a_boxes_file_of_another_name_is_not_refused(work):
    """The check compares files, not names: a results file beside a differently named boxes file runs."""
    result = _cli(["video", "in.mp4", "--boxes", "boxes.npz", "--no-render", "--max-frames", 2, *TINY])
    assert result.exit_code == 0, result.output
    assert os.path.isfile("in_mega.npz") and os.path.isfile("in_mega.jsonl")


# ---- one line for every bad option value ----------------------------------------------------------
@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--det-conf", "1.5"], "--det-conf 1.5"),
        (["--det-conf", "-0.1"], "--det-conf -0.1"),
        (["--threads", "-1"], "--threads -1"),
        (["--threads", "0"], "--threads 0"),
        (["--device", "banana"], "--device 'banana'"),
        (["--det-imgsz", "0"], "--det-imgsz 0"),
        (["--det-imgsz", "7"], "--det-imgsz 7"),
        (["--det-imgsz", "-32"], "--det-imgsz -32"),
        (["--temperature", "-1"], "--temperature -1"),
        (["--temperature", "nan"], "--temperature nan"),
        (["--samples", "1000"], "--samples 1000"),
        (["--samples", "0"], "--samples 0"),
        (["--samples", "4", "--steps", "1000"], "--steps 1000"),
        (["--results", "r.txt"], "--results r.txt: must be an .npz"),
        (["--out", "o.avi"], "--out o.avi: must be an .mp4"),
        (["--no-render", "--out", "o.mp4"], "--no-render"),
        (["--max-people", "0"], "--max-people 0"),
        (["--frame-batch", "0"], "--frame-batch 0"),
    ],
)
def test_a_bad_option_value_is_one_line(work, extra, needle):
    args = ["video", "in.mp4", "--boxes", "boxes.npz", *TINY, *extra]
    if "--threads" in extra:  # the bad value replaces TINY's
        args.remove("--threads")
        args.remove("1")
    line = _one_line_error(_cli(args))
    assert needle in line, line
    assert not os.path.exists("in_mega.mp4") and not os.path.exists("in_mega.npz")


def test_a_text_file_as_weights_is_one_whole_line(work):
    with open("w.pt", "w") as fh:
        fh.write("these are not weights\n")
    line = _one_line_error(_cli(["video", "in.mp4", "--boxes", "boxes.npz", "--weights", "w.pt", "--mesh-weights", "w.pt", "--no-progress"]))  # fmt: skip
    assert "w.pt: not a readable PyTorch checkpoint" in line and line.endswith("torch.save writes)"), line


def test_bad_stream_and_bench_options_are_one_line(work):
    line = _one_line_error(_cli(["stream", "--camera", "in.mp4", "--device", "banana", "--out", "o.mp4", *TINY]))
    assert "--device 'banana'" in line
    line = _one_line_error(_cli(["stream", "--camera", "in.mp4", "--results", "r.txt", *TINY]))
    assert "--results r.txt" in line
    line = _one_line_error(_cli(["stream", "--camera", "in.mp4", "--no-render", "--show", "--results", "r.npz", *TINY]))
    assert "--no-render" in line
    line = _one_line_error(_cli(["bench", "pipeline", "in.mp4", "--det-imgsz", "100", *BENCH_TINY]))
    assert "--det-imgsz 100" in line


# ---- boxes no crop can use ------------------------------------------------------------------------
def test_box_faults_by_hand():
    from realtime.crop import BoxCheck, box_faults

    boxes = np.array(
        [
            [10, 10, 50, 100],  # fine
            [-20, -20, 5, 5],  # partly inside: fine (the crop pads)
            [np.inf, 0, 20, 30],
            [0, -np.inf, 20, 30],
            [np.nan, 1, 2, 3],
            [30, 30, 10, 60],  # inverted
            [30, 30, 30, 60],  # zero width
            [200, 10, 260, 90],  # right of a 160-wide frame
            [10, -90, 50, -1],  # above it
        ],
        np.float32,
    )
    assert box_faults(boxes, 160, 120).tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3]
    check = BoxCheck()
    kept, ids = check(boxes, 160, 120, np.arange(9))
    assert ids.tolist() == [0, 1] and kept.shape == (2, 4)
    check(boxes[:1], 160, 120)
    assert check.note() == "7 boxes dropped (3 not finite, 2 inverted or zero-area, 2 outside the frame)"
    assert BoxCheck().note() is None


def test_unusable_boxes_are_dropped_and_counted_once(work):
    """A boxes file with inf / NaN / inverted / empty / off-frame boxes and rows for frames the clip does
    not have: only the usable box becomes a person, and one warning line says how many were dropped."""
    rows = [
        (0, [20, 10, 80, 110]),
        (0, [np.inf, 0, 20, 30]),
        (1, [-np.inf, 0, 20, 30]),
        (1, [np.nan, 1, 20, 30]),
        (2, [60, 60, 10, 100]),
        (2, [40, 40, 40, 90]),
        (3, [500, 500, 600, 700]),  # a phantom wholly outside the 160x120 frame
        (9, [20, 10, 80, 110]),
        (-1, [20, 10, 80, 110]),
    ]
    np.savez("bad.npz", frame=np.array([f for f, _ in rows]), boxes_xyxy=np.array([b for _, b in rows], np.float32))
    for track in ([], ["--no-track"]):
        result = _cli(["video", "in.mp4", "--boxes", "bad.npz", "--no-render", "--results", "r.npz", *track, *TINY])
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.output.splitlines() if line.startswith("warning: --boxes")]
        assert warnings == [
            "warning: --boxes bad.npz: 6 boxes dropped (3 not finite, 2 inverted or zero-area, 1 outside the frame); "
            "2 boxes on frames the video does not have (< 0 or >= 4)"
        ], result.output
        with np.load("r.npz") as z:
            assert z["frame"].tolist() == [0] and np.allclose(z["box_xyxy"], [[20, 10, 80, 110]])
            assert np.isfinite(z["verts"].astype(np.float32)).all()


def test_a_clean_boxes_file_gives_no_warning(work):
    result = _cli(["video", "in.mp4", "--boxes", "boxes.npz", "--no-render", *TINY])
    assert result.exit_code == 0 and "warning: --boxes" not in result.output, result.output


@pytest.mark.parametrize(
    "arrays, needle",
    [
        (dict(frame=np.zeros(2, np.int32), boxes_xyxy=np.zeros((2, 3), np.float32)), "shape (2, 3)"),
        (dict(boxes_xyxy=np.zeros((4, 2, 5), np.float32)), "shape (4, 2, 5)"),
        (dict(frame=np.zeros(3, np.int32), boxes_xyxy=np.ones((2, 4), np.float32)), "frame has shape (3,)"),
        (dict(frame=np.zeros(2, np.int32), boxes_xyxy=np.ones((2, 4)), track_id=np.zeros(5)), "track_id"),
    ],
)
def test_a_misshaped_boxes_file_is_one_line(work, arrays, needle):
    np.savez("b.npz", **arrays)
    line = _one_line_error(_cli(["video", "in.mp4", "--boxes", "b.npz", "--no-render", *TINY]))
    assert "b.npz" in line and needle in line, line


# ---- score refuses another clip's results ---------------------------------------------------------
def test_score_refuses_results_of_another_clip(work):
    from realtime.score import ScoreError, score_results

    result = _cli(["video", "in.mp4", "--boxes", "boxes.npz", "--no-render", "--results", "r.npz", *TINY])
    assert result.exit_code == 0, result.output
    assert score_results("r.npz", "boxes.npz")["people_matched"] > 0  # its own clip scores
    with np.load("boxes.npz") as z:
        truth = {k: z[k] for k in z.files}
    np.savez("wider.npz", **{**truth, "image_size_wh": np.array([320, 240])})
    with pytest.raises(ScoreError, match="frames of 160x120 but wider.npz is 320x240"):
        score_results("r.npz", "wider.npz")
    np.savez("longer.npz", **{k: np.concatenate([v, v]) if k in ("boxes_xyxy", "verts_cam", "visibility") else v for k, v in truth.items()})  # fmt: skip
    line = _one_line_error(_cli(["score", "r.npz", "longer.npz"]))
    assert "covers 4 frames but longer.npz has 8" in line, line


# ---- results without OpenGL -----------------------------------------------------------------------
_NO_GL = (
    "import sys; sys.modules['moderngl'] = None; sys.modules['glcontext'] = None; from realtime.cli import main; main()"
)


def test_no_render_runs_where_opengl_cannot(work):
    """With moderngl made unimportable: the default run is one line and exit 1, --no-render writes the results."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", YOLO_OFFLINE="1")
    base = [sys.executable, "-c", _NO_GL, "video", "in.mp4", "--boxes", "boxes.npz", *TINY]
    # a renderer that fails at once ends the run at once (not after the threads' join timeouts)
    done = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "moderngl is not installed" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not os.path.exists("in_mega.mp4")
    done = subprocess.run([*base, "--no-render"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "in.mp4 -> in_mega.npz" in done.stdout and not os.path.exists("in_mega.mp4")
    with np.load("in_mega.npz") as z:
        assert int(z["num_frames"]) == 4 and len(z["frame"]) > 0
    assert len(open("in_mega.jsonl").read().splitlines()) == 4


# ---- one OpenCV build ---------------------------------------------------------------------------
def test_one_distribution_provides_cv2():
    """opencv-python and opencv-python-headless both unpack into cv2/: with two, whichever was installed
    last wins, and the Qt one aborts the process on a window without a display."""
    from importlib import metadata

    owners = sorted(
        {d.metadata["Name"] for d in metadata.distributions() if any(str(f).startswith("cv2/") for f in d.files or ())}
    )
    assert owners == ["opencv-python"], owners


def test_the_project_names_one_opencv_build():
    text = (ROOT / "pyproject.toml").read_text() + (ROOT / "constraints.txt").read_text()
    assert "opencv-python-headless" not in text and "opencv-python" in text
