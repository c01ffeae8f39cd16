"""Many streams into one batched model (realtime/multistream.py, `mega-rt stream SRC SRC ...`): CPU, tiny
random-weight MEGA, the full-frame detector and short paced clips written here."""

from __future__ import annotations

import json

import numpy as np
import pytest

TINY = ["--random-weights", "--config", "mega_tiny", "--threads", "1", "--no-progress", "--detector", "full-frame"]


def write_clip(path, frames: int, size_wh=(64, 64), fps: float = 20.0):
    """A clip with a moving bright column (H.264, the pipeline's writer)."""
    from realtime.video_write import VideoWriter

    w, h = size_wh
    writer = VideoWriter(path, size_wh, fps)
    for i in range(frames):
        image = np.full((h, w, 3), 40, np.uint8)
        image[:, (3 * i) % w] = 255
        writer.write(image, i / fps)
    writer.close()
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory, assets_dir):
    d = tmp_path_factory.mktemp("streams")
    return {
        "a": write_clip(d / "a.mp4", 16),
        "b": write_clip(d / "b.mp4", 12, (80, 64)),
        "long": write_clip(d / "long.mp4", 40),
    }


@pytest.fixture(scope="module")
def stages(assets_dir):
    """(detector, regressor, faces) as the CLI builds them for several streams."""
    import torch

    from realtime.detect import FullFrameDetector
    from realtime.infer import build_regressor, load_models
    from train.assets import find_asset
    from train.config import MegaConfig, builtin_config
    from train.synthetic.body import TEMPLATE_ASSET, read_template_ply

    torch.set_num_threads(1)
    models, _ = load_models(random_weights=True, config=builtin_config("mega_tiny", MegaConfig))
    regressor = build_regressor(models, "torch", None, samples=1, max_batch=32, device="cpu", precision="fp32")
    _, faces = read_template_ply(find_asset(TEMPLATE_ASSET))
    return FullFrameDetector(), regressor, faces


class CountingRunner:
    """The real MegaRunner, with its deterministic calls counted and their batch sizes kept."""

    def __init__(self, runner):
        self.runner, self.calls = runner, []

    def deterministic(self, images):
        self.calls.append(images.shape[0])
        return self.runner.deterministic(images)

    def __getattr__(self, name):
        return getattr(self.runner, name)


def _run(opts, stages, reports=None):
    from realtime.multistream import open_source, run_streams

    detector, regressor, faces = stages
    sources = [open_source(s, opts.max_frames) for s in opts.sources]
    return run_streams(
        opts, sources, detector, regressor, faces, report=(reports.append if reports is not None else None)
    )


def test_n_streams_cost_one_mega_call_per_tick(clips, stages, tmp_path):
    """4 paced streams: one MEGA call per tick, most ticks carry several streams' frames, and every
    stream's frames are either written or counted as dropped."""
    from realtime.multistream import StreamOptions

    regressor = stages[1]
    counting = CountingRunner(regressor.runner)
    regressor.runner = counting
    try:
        srcs = (str(clips["a"]), str(clips["a"]), str(clips["b"]), str(clips["a"]))
        opts = StreamOptions(sources=srcs, out_dir=str(tmp_path), overlay=False)
        summary = _run(opts, stages)
    finally:
        regressor.runner = counting.runner
    assert len(counting.calls) == summary.ticks  # one batched call per tick, never one per stream
    assert summary.frames == sum(counting.calls)  # full-frame: one person per frame
    assert summary.ticks < summary.frames and max(counting.calls) == 4
    for s, clip_frames in zip(summary.streams, (16, 16, 12, 16)):
        assert s["status"] == "ended" and s["frames"] > 0
        assert s["frames"] + s["dropped"] == clip_frames, s
        assert set(s["latency_ms"]) == {"p50", "p90", "p99"} and s["latency_ms"]["p99"] >= s["latency_ms"]["p50"]
        with np.load(tmp_path / f"{s['name']}_mega.npz", allow_pickle=False) as z:
            assert int(z["num_frames"]) == s["frames"] and int(z["frames_dropped"]) == s["dropped"]
            assert z["verts"].shape[0] == s["frames"]
            assert np.all(np.diff(z["frame"]) > 0)  # the newest frames, in order
    assert [s["name"] for s in summary.streams] == ["0_a", "1_a", "2_b", "3_a"]


def test_a_full_batch_serves_streams_round_robin(clips, stages):
    """One frame per tick for three streams: none starves (each gets about a third of the ticks)."""
    from realtime.multistream import StreamOptions

    srcs = (str(clips["long"]),) * 3
    summary = _run(StreamOptions(sources=srcs, max_batch=1), stages)
    frames = [s["frames"] for s in summary.streams]
    assert summary.frames_per_tick == 1.0 and summary.ticks == sum(frames)
    assert min(frames) >= max(frames) - 3, frames


def test_a_stream_that_ends_is_reopened_and_one_that_is_gone_fails_alone(clips, stages, tmp_path):
    """A URL that ends is re-opened (its results keep counting frames); a URL whose file is gone gives up
    after the bounded retries, is reported, and the other streams finish with complete outputs."""
    import shutil

    from realtime.multistream import StreamOptions

    gone = tmp_path / "gone.mp4"
    shutil.copy(clips["a"], gone)
    srcs = (f"file://{clips['a']}", str(clips["b"]), f"file://{gone}")
    opts = StreamOptions(
        sources=srcs, out_dir=str(tmp_path), overlay=False, max_frames=30, retries=2, retry_delay_s=0.05
    )
    from realtime.multistream import open_source, run_streams

    detector, regressor, faces = stages
    sources = [open_source(s, opts.max_frames) for s in srcs]
    gone.unlink()  # opened, then removed: once it ends it cannot come back
    reports: list[str] = []
    summary = run_streams(opts, sources, detector, regressor, faces, report=reports.append)
    back, file_stream, dead = summary.streams
    assert back["status"] == "ended" and back["reconnects"] >= 1 and back["frames"] + back["dropped"] >= 16
    assert file_stream["status"] == "ended" and file_stream["reconnects"] == 0
    assert dead["status"] == "failed" and "gave up after 2 re-opens" in dead["error"]
    assert any("re-opened" in line and back["name"] in line for line in reports)
    assert any("re-open 2/2 failed" in line and dead["name"] in line for line in reports)
    with np.load(tmp_path / f"{back['name']}_mega.npz", allow_pickle=False) as z:
        assert int(z["num_frames"]) == back["frames"]
        assert np.all(np.diff(z["frame"]) > 0)  # a re-opened source continues the frame numbers
        assert z["frame"].max() >= 16
    with np.load(tmp_path / f"{file_stream['name']}_mega.npz", allow_pickle=False) as z:
        assert int(z["num_frames"]) == file_stream["frames"] and str(z["status"]) == "ok"


def test_cli_several_sources_write_per_stream_outputs_and_a_summary(clips, tmp_path):
    from click.testing import CliRunner

    from realtime.cli import main

    out, summary = tmp_path / "out", tmp_path / "summary.json"
    args = [
        "stream",
        str(clips["a"]),
        str(clips["b"]),
        "--out-dir",
        str(out),
        "--summary",
        str(summary),
        "--no-render",
        *TINY,
    ]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(summary.read_text())
    assert data["schema"] == "mega-rt-streams/1" and len(data["streams"]) == 2
    for s in data["streams"]:
        assert s["latency_ms"]["p99"] > 0
        assert (out / f"{s['name']}_mega.npz").is_file() and not (out / f"{s['name']}_mega.mp4").exists()
    assert "p99 ms" in result.output and "batched MEGA calls" in result.output


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "give --out-dir DIR"),
        (["--out-dir", "{tmp}", "--out", "{tmp}/x.mp4"], "--show, --out and --results are for one stream"),
        (["--out-dir", "{tmp}", "--boxes", "{a}"], "--boxes holds the boxes of one video"),
        (["--out-dir", "{tmp}", "--tick-frames", "0"], "--tick-frames 0"),
    ],
)
def test_cli_bad_options_are_one_line(clips, tmp_path, extra, message):
    from click.testing import CliRunner

    from realtime.cli import main

    extra = [e.format(tmp=tmp_path, a=clips["a"]) for e in extra]
    result = CliRunner().invoke(main, ["stream", str(clips["a"]), str(clips["b"]), *extra, *TINY])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_cli_a_missing_source_names_it(clips, tmp_path):
    from click.testing import CliRunner

    from realtime.cli import main

    missing = tmp_path / "nope.mp4"
    result = CliRunner().invoke(main, ["stream", str(clips["a"]), str(missing), "--out-dir", str(tmp_path), *TINY])
    assert result.exit_code == 2 and f"{missing}: no such file" in result.output, result.output
