"""The Renderer stage (realtime/overlay.py): the GL-side composite gives the pixels of `MeshRenderer.render`
plus boxes, ids and the std legend; and the render-stage benchmark runs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from realtime import overlay_bench
from realtime.overlay import OverlayRenderer, draw_legend, std_colors
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
