"""The Renderer stage (realtime/overlay.py): the GL-side composite gives the pixels of `MeshRenderer.render`
plus boxes, ids and the std legend; ids and the fps/latency HUD are sized from the frame and outlined;
the HUD's figures come from the pipeline's timer; and the render-stage benchmark runs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from realtime import overlay_bench
from realtime.overlay import (
    TEXT_HEIGHT,
    OverlayRenderer,
    draw_boxes,
    draw_hud,
    draw_legend,
    hud_rect,
    std_colors,
)
from realtime.types import HudStats
from train.render import DEFAULT_COLORS, Camera, RendererUnavailable


@pytest.fixture(scope="module")
def scene(assets_dir):
    return overlay_bench.scene(3, 1280, 720, with_std=True)


@pytest.fixture(scope="module")
def overlay(scene):
    _, faces = scene
    try:
        o = OverlayRenderer(faces, draw_boxes=False)
    except RendererUnavailable as e:
        pytest.skip(str(e))
    yield o
    o.close()


def assert_close_pixels(got: np.ndarray, want: np.ndarray):
    assert got.shape == want.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.mean() < 1.0 and np.percentile(diff, 99.9) <= 3, (diff.mean(), np.percentile(diff, 99.9), diff.max())


def composite_on_the_host(o: OverlayRenderer, r) -> np.ndarray:
    """The overlay as `MeshRenderer.render` composites it (numpy), the reference for the GL-side path."""
    h, w = r.frame.image_bgr.shape[:2]
    cam = Camera.centred(w, h, r.focal)
    if r.vertex_std is not None:
        colors = std_colors(r.vertex_std, o.std_max)
    else:
        colors = DEFAULT_COLORS[np.maximum(r.track_ids, 0) % len(DEFAULT_COLORS)][:, ::-1]
    image = o.renderer.render(r.verts_cam, cam, colors, r.frame.image_bgr, o.opacity).image
    if r.vertex_std is not None:
        draw_legend(image, o.std_max)
    return image


@pytest.mark.parametrize("opacity", [0.85, 1.0])
@pytest.mark.parametrize("with_std", [False, True])
def test_overlay_matches_the_host_composite(overlay, scene, opacity, with_std):
    r, _ = scene
    r = r if with_std else dataclasses.replace(r, vertex_std=None)
    overlay.opacity = opacity
    try:
        got = overlay(r)
        want = composite_on_the_host(overlay, r)
    finally:
        overlay.opacity = 0.85
    assert_close_pixels(got, want)
    assert (got != r.frame.image_bgr).any(axis=-1).mean() > 0.1


def test_no_people_leaves_the_frame_unchanged(overlay, scene):
    r, _ = scene
    empty = dataclasses.replace(
        r,
        boxes_xyxy=r.boxes_xyxy[:0],
        scores=r.scores[:0],
        track_ids=r.track_ids[:0],
        verts_cam=r.verts_cam[:0],
        vertex_std=None,
    )
    out = overlay(empty)
    assert np.array_equal(out, r.frame.image_bgr) and out is not r.frame.image_bgr


def test_odd_frame_sizes_and_boxes(scene):
    _, faces = scene
    r, _ = overlay_bench.scene(3, 641, 359)
    try:
        o = OverlayRenderer(faces)
    except RendererUnavailable as e:
        pytest.skip(str(e))
    with_boxes = o(r)
    o.draw_boxes = False
    plain = o(r)
    assert with_boxes.shape == (359, 641, 3)
    assert_close_pixels(plain, composite_on_the_host(o, r))
    # the box outlines are drawn in the box colour (BGR 0, 200, 255) on their corners
    x0, y0 = np.clip(r.boxes_xyxy[0, :2].astype(int), 0, [640, 358])
    assert tuple(with_boxes[y0, x0]) == (0, 200, 255)
    o.close()


def changed_rect(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive, of the pixels where two images differ; None when they are equal."""
    ys, xs = np.nonzero((a != b).any(axis=-1))
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else None


def test_hud_changes_the_hud_region_only(overlay, scene):
    r, _ = scene
    hud = HudStats(fps=23.4, latency_ms=87.0)
    plain = overlay(r)
    with_hud = overlay(dataclasses.replace(r, hud=hud))
    x0, y0, x1, y1 = hud_rect(hud, r.frame.image_bgr.shape[0])
    changed = (plain != with_hud).any(axis=-1)
    inside = np.zeros_like(changed)
    inside[max(y0, 0) : y1, max(x0, 0) : x1] = True
    assert changed[inside].mean() > 0.05, "no HUD text drawn"
    assert not changed[~inside].any(), "the HUD changed pixels outside its region"
    # the figures are there as text about TEXT_HEIGHT of the frame high
    cx0, cy0, cx1, cy1 = changed_rect(plain, with_hud)
    assert 0.8 * TEXT_HEIGHT <= (cy1 - cy0) / 720 <= 1.8 * TEXT_HEIGHT


@pytest.mark.parametrize("shade", [0, 255])
def test_hud_reads_on_black_and_on_white(shade):
    """White strokes over a dark outline: both show on any background."""
    image = np.full((480, 640, 3), shade, np.uint8)
    draw_hud(image, HudStats(fps=9.5, latency_ms=None))
    x0, y0, x1, y1 = hud_rect(HudStats(fps=9.5, latency_ms=None), 480)
    region = image[max(y0, 0) : y1, max(x0, 0) : x1].max(axis=-1)
    assert (region >= 230).sum() > 30 and (region <= 25).sum() > 30


@pytest.mark.parametrize("height", [240, 720, 2160])
def test_the_outline_hugs_the_letters(height):
    """The dark outline follows each letter along the whole line (it does not drift off the text)."""
    import cv2

    from realtime.overlay import outline_px, text_style

    image = np.full((height, height * 16 // 9, 3), 128, np.uint8)
    draw_hud(image, HudStats(fps=142.0, latency_ms=1431.0))
    grey = image.max(axis=-1)
    bright, dark = (grey >= 170).astype(np.uint8), grey <= 60  # thin strokes: anti-aliased below white
    reach = 2 * (outline_px(text_style(height)[1]) + 1) + 1
    near_letters = cv2.dilate(bright, np.ones((reach, reach), np.uint8)).astype(bool)
    assert dark.sum() > 50 and not (dark & ~near_letters).any()


def id_pixels(height: int) -> tuple[int, int]:
    """(height, width) of the drawn track id "7" of one box on a grey frame `height` high (16:9)."""
    width = height * 16 // 9
    box = np.array([[0.3 * width, 0.2 * height, 0.6 * width, 0.9 * height]], np.float32)
    with_id, without_id = (np.full((height, width, 3), 128, np.uint8) for _ in range(2))
    draw_boxes(with_id, box, np.array([7]))
    draw_boxes(without_id, box, np.array([-1]))  # untracked: the box alone
    x0, y0, x1, y1 = changed_rect(with_id, without_id)
    assert box[0, 0] <= x0 and box[0, 1] <= y0 and x1 <= box[0, 2], "the id is drawn inside its box"
    return y1 - y0, x1 - x0


def test_track_ids_scale_with_the_frame():
    small, large = id_pixels(720), id_pixels(1440)
    assert 0.8 * TEXT_HEIGHT * 720 <= small[0] <= 1.6 * TEXT_HEIGHT * 720, small
    assert 1.7 <= large[0] / small[0] <= 2.3 and 1.6 <= large[1] / small[1] <= 2.4, (small, large)


def test_hud_figures_come_from_the_timer(monkeypatch):
    """Frames written every 40 ms with latencies 100 and 120 ms: 25 fps, 110 ms over the window."""
    from realtime import timing

    clock = [100.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    timer = timing.Timer()
    assert timer.recent("frame") == (0.0, None)
    for i in range(11):
        timer.mark("frame", 100.0 if i % 2 else 120.0)
        clock[0] += 0.04
    fps, latency = timer.recent("frame", window_s=2.0)
    assert fps == pytest.approx(25.0) and latency == pytest.approx(110.0, abs=2.0)
    clock[0] += 10.0  # nothing written for 10 s: no rate to show
    assert timer.recent("frame", window_s=2.0) == (0.0, None)
    assert timer.mean_ms() == {}, "events are kept apart from the stage figures"


def test_video_draws_the_hud_only_when_asked(assets_dir, tmp_path):
    """`video --hud` and the default (off) on the same input differ in the HUD's corner; stream's default
    is on."""
    import cv2
    from click.testing import CliRunner

    from realtime.cli import main
    from realtime.cli.video import stream
    from realtime.video_write import VideoWriter

    clip = tmp_path / "clip.mp4"
    w, h = 320, 240
    writer = VideoWriter(clip, (w, h), 10.0)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(3):
        writer.write(np.dstack([xx % 256, yy % 256, np.full_like(xx, 60 * i)]).astype(np.uint8))
    writer.close()
    tiny = ["--random-weights", "--threads", "1", "--no-progress", "--detector", "full-frame"]
    frames = {}
    for flag in ("--hud", None):
        out = tmp_path / f"{flag or 'default'}.mp4"
        args = ["video", str(clip), "--out", str(out), "--results", str(out.with_suffix(".npz")), *tiny]
        r = CliRunner().invoke(main, args + ([flag] if flag else []))
        assert r.exit_code == 0, r.output
        cap = cv2.VideoCapture(str(out))
        frames[flag] = [cap.read()[1] for _ in range(3)]
        cap.release()
    x0, y0, x1, y1 = hud_rect(HudStats(fps=999.9, latency_ms=99999.0), h)
    for with_hud, plain in zip(frames["--hud"], frames[None]):
        diff = np.abs(with_hud.astype(np.int16) - plain.astype(np.int16)).max(axis=-1)
        inside = np.zeros(diff.shape, bool)
        inside[max(y0, 0) : y1, max(x0, 0) : x1] = True
        # lossy H.264 moves every pixel a little; the HUD's strokes move its corner by far more
        assert diff[inside].mean() > 8 * diff[~inside].mean() + 5, (diff[inside].mean(), diff[~inside].mean())
    assert next(p for p in stream.params if p.name == "hud").default is True


def test_bench_render_prints_ms_per_frame(assets_dir, tmp_path):
    from click.testing import CliRunner

    from realtime.cli import main

    j = tmp_path / "render.json"
    r = CliRunner().invoke(
        main, ["bench", "render", "--people", "0,2", "--size", "320x180", "--frames", "2", "--json", str(j)]
    )
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("render ")]
    assert [line.split()[3] for line in lines] == ["0", "2"] and all("ms/frame" in line for line in lines)
    assert [f["people"] for f in json.loads(j.read_text())["results"]] == [0, 2]
    r = overlay_bench.bench_overlay(1, 320, 180, frames=2, warmup=1)
    assert r["ms_median"] > 0 and r["cpu_ms_median"] >= 0


def test_bench_render_rejects_bad_input():
    from click.testing import CliRunner

    from realtime.cli import main

    for args, word in ((["--size", "8x8"], "--size"), (["--people", "a"], "--people"), (["--frames", "0"], "--frames")):
        r = CliRunner().invoke(main, ["bench", "render", *args])
        assert r.exit_code == 2 and word in r.output and "Traceback" not in r.output
