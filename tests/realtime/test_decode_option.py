"""--decode cpu|nvdec|auto of video and bench pipeline (realtime/video_read.py)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import write_scene_clip

TINY = ["--random-weights", "--config", "mega_tiny", "--threads", "1"]


def _cli(args):
    from click.testing import CliRunner

    from realtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _no_nvdec():
    from realtime.video_read import nvdec_problem

    if nvdec_problem() is None:
        pytest.skip("FFmpeg's CUDA decoder opens here: the refusal is for machines without it")


@pytest.fixture(scope="module")
def clip(tmp_path_factory, assets_dir):
    from train.synthetic.scene import SceneConfig

    out = tmp_path_factory.mktemp("decode") / "clip.mp4"
    try:
        return write_scene_clip(out, SceneConfig(width=160, height=128, frames=2, people=1, seed=2, fps=25.0))
    except Exception as e:  # no EGL
        pytest.skip(f"cannot render the synthetic clip: {e}")


@pytest.mark.parametrize("command", ["video", "bench pipeline"])
def test_nvdec_without_a_gpu_is_one_line_exit_2(clip, tmp_path, command):
    _no_nvdec()
    video, boxes = clip
    results = tmp_path / "o.npz"
    extra = ["--results", results, "--no-progress"] if command == "video" else ["--json", tmp_path / "b.json"]
    r = _cli([*command.split(), video, "--boxes", boxes, "--decode", "nvdec", "--no-render", *extra, *TINY])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "--decode nvdec" in errors[0] and "--decode cpu" in errors[0]
    assert "Traceback" not in r.output and not results.exists() and not (tmp_path / "b.json").exists()


def test_nvdec_with_an_ffmpeg_without_cuda_says_so(clip, monkeypatch):
    import av.codec.hwaccel

    from realtime.sources import SourceError, VideoSource

    monkeypatch.setattr(av.codec.hwaccel, "hwdevices_available", lambda: ["drm"])
    with pytest.raises(SourceError, match="FFmpeg build has no CUDA device support"):
        VideoSource(clip[0], decode="nvdec")


def test_auto_decodes_on_the_cpu_where_nvdec_does_not_open(clip, tmp_path):
    _no_nvdec()
    video, boxes = clip
    r = _cli(
        [
            "bench",
            "pipeline",
            video,
            "--boxes",
            boxes,
            "--decode",
            "auto",
            "--no-render",
            "--json",
            tmp_path / "b.json",
            *TINY,
        ]
    )
    assert r.exit_code == 0, r.output
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["decode"] == "cpu" and figures["frames"] == 2


def test_an_unknown_decoder_is_refused():
    from realtime.video_read import resolve_decode

    with pytest.raises(ValueError, match="decode must be one of"):
        resolve_decode("vaapi")
    r = _cli(["video", "x.mp4", "--decode", "vaapi"])
    assert r.exit_code == 2 and "'vaapi' is not one of" in r.output
