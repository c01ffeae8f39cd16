"""The live window of `mega-rt stream` (realtime/display.py): it opens on a real X server and shows the
overlay the recording holds; without a display, or with a stale DISPLAY, the run says so in one line
and the recording goes on. The X server is an Xvfb the tests start themselves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, write_scene_clip

TINY = ["--random-weights", "--config", "mega_tiny", "--threads", "1", "--no-progress"]


def _free_display() -> int:
    """A display number with no server (no lock file, no socket)."""
    for n in range(90, 200):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    pytest.skip("no free X display number in 90..199")


@pytest.fixture
def xvfb():
    """DISPLAY of an Xvfb started for the test (640x480, 24 bit), stopped after it. -noreset: a server
    resets when its last client leaves and refuses connections meanwhile (each probe and screenshot)."""
    if shutil.which("Xvfb") is None or shutil.which("xwd") is None:
        pytest.skip("Xvfb and xwd are needed (apt-get install xvfb x11-apps)")
    n = _free_display()
    server = subprocess.Popen(
        ["Xvfb", f":{n}", "-screen", "0", "640x480x24", "-nolisten", "tcp", "-noreset"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    from realtime.display import x_connects

    try:
        deadline = time.monotonic() + 20
        while x_connects(f":{n}") is not True:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"Xvfb :{n} did not start")
            time.sleep(0.1)
        yield f":{n}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def read_xwd(data: bytes) -> np.ndarray:
    """An xwd dump (ZPixmap, 24 or 32 bits per pixel, TrueColor masks) -> (H,W,3) uint8 BGR."""
    header = np.frombuffer(data[:100], ">u4").astype(np.int64)
    header_size, pixmap_format, width, height = header[0], header[2], header[4], header[5]
    byte_order, bits_per_pixel, bytes_per_line = header[7], header[11], header[12]
    red_mask, green_mask, blue_mask, ncolors = header[14], header[15], header[16], header[19]
    assert pixmap_format == 2 and bits_per_pixel in (24, 32), (pixmap_format, bits_per_pixel)
    start = header_size + 12 * ncolors
    raw = np.frombuffer(data[start : start + height * bytes_per_line], np.uint8).reshape(height, bytes_per_line)
    step = bits_per_pixel // 8
    pixel_bytes = raw[:, : width * step].reshape(height, width, step).astype(np.uint32)
    if byte_order == 1:  # MSBFirst
        pixel_bytes = pixel_bytes[..., ::-1]
    pixels = sum(pixel_bytes[..., i] << (8 * i) for i in range(step))
    channels = []
    for mask in (blue_mask, green_mask, red_mask):
        shift = (int(mask) & -int(mask)).bit_length() - 1
        channels.append(((pixels & int(mask)) >> shift).astype(np.uint8))
    return np.stack(channels, -1)


def _screenshot(display: str) -> np.ndarray:
    dump = subprocess.run(["xwd", "-root", "-silent", "-display", display], capture_output=True, timeout=30, check=True)
    return read_xwd(dump.stdout)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return dict(env, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", YOLO_OFFLINE="1", **extra)


def _read_frames(path) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


@pytest.fixture(scope="module")
def still_clip(tmp_path_factory, assets_dir):
    """A 320x240 clip of one synthetic frame held for 30 frames at 6 fps (5 s) and its boxes repeated:
    every frame's overlay is the same picture, so a screenshot at any moment can be checked."""
    import cv2

    from train.synthetic.scene import SceneConfig

    folder = tmp_path_factory.mktemp("still")
    video, npz = write_scene_clip(
        folder / "src.mp4", SceneConfig(width=320, height=240, frames=1, people=2, seed=3, fps=6.0)
    )
    frame = _read_frames(video)[0]
    out = folder / "still.mp4"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 6.0, (320, 240))
    for _ in range(30):
        writer.write(frame)
    writer.release()
    with np.load(npz) as z:
        boxes = np.repeat(z["boxes_xyxy"][:1], 30, axis=0)
    np.savez(folder / "still_boxes.npz", boxes_xyxy=boxes)
    return out, folder / "still_boxes.npz", frame


def test_display_problem_names_the_reason(monkeypatch):
    from realtime.display import display_problem, gui_framework

    if not gui_framework():
        assert display_problem({"DISPLAY": ":0"}) == "this OpenCV has no GUI (a headless build)"
        return
    assert display_problem({}) == "neither DISPLAY nor WAYLAND_DISPLAY is set"
    n = _free_display()
    assert display_problem({"DISPLAY": f":{n}"}) == f"cannot connect to the X display :{n}"


def test_a_display_on_xvfb_is_usable(xvfb):
    from realtime.display import display_problem

    assert display_problem({"DISPLAY": xvfb}) is None


@pytest.mark.parametrize("show", [["--show"], []])
def test_a_stale_display_records_on(tmp_path, still_clip, show):
    """DISPLAY names no server: exit 0, one line saying the window is off, and a complete recording."""
    video, boxes, _ = still_clip
    n = _free_display()
    out, results = tmp_path / "o.mp4", tmp_path / "o.npz"
    cmd = [sys.executable, "-m", "realtime.cli", "stream", "--camera", video, "--boxes", boxes, "--max-frames", "6"]
    done = subprocess.run(
        [str(a) for a in [*cmd, *show, "--out", out, "--results", results, *TINY]],
        env=_env(DISPLAY=f":{n}"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    line = (
        f"no display (cannot connect to the X display :{n}): --show is off; recording continues to {out} and {results}"
    )
    assert done.stderr.count(line) == 1, done.stderr
    with np.load(results) as z:
        written, dropped = int(z["num_frames"]), int(z["frames_dropped"])
        assert str(z["status"]) == "ok"
    assert written + dropped == 6 and written > 0
    assert len(_read_frames(out)) == written


def test_no_display_and_nothing_to_record_is_one_line(still_clip):
    video, boxes, _ = still_clip
    cmd = [sys.executable, "-m", "realtime.cli", "stream", "--camera", str(video), "--boxes", str(boxes), "--show"]
    done = subprocess.run([*cmd, *TINY], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: no display (neither DISPLAY nor WAYLAND_DISPLAY is set) for --show; record with --out OUT.mp4 and/or --results OUT.npz"
    ]


def test_the_window_shows_the_recorded_overlay(tmp_path, xvfb, still_clip):
    """A real --show window on Xvfb: a screenshot taken while it runs holds the overlay the --out mp4
    recorded (within the mp4's coding error), not the plain frame."""
    import cv2

    video, boxes, frame = still_clip
    out = tmp_path / "o.mp4"
    cmd = [sys.executable, "-m", "realtime.cli", "stream", "--camera", video, "--boxes", boxes, "--show", "--out", out]
    run = subprocess.Popen(
        [str(a) for a in [*cmd, *TINY]], env=_env(DISPLAY=xvfb), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    shots = []
    try:
        deadline = time.monotonic() + 240
        while run.poll() is None and time.monotonic() < deadline:
            shot = _screenshot(xvfb)
            if shot.any():  # the root is black until the window maps and draws
                shots.append(shot)
            time.sleep(0.3)
        stdout, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr.decode()
    assert b"no display" not in stderr
    assert shots, "the window never appeared on the X server"
    overlay = _read_frames(out)[-1]

    def located(shot):
        scores = cv2.matchTemplate(shot, overlay, cv2.TM_SQDIFF)
        y, x = np.unravel_index(np.argmin(scores), scores.shape)
        return shot[y : y + overlay.shape[0], x : x + overlay.shape[1]]

    best = min((located(s) for s in shots), key=lambda region: np.abs(region.astype(int) - overlay).mean())
    assert np.abs(best.astype(int) - overlay).mean() < 4.0  # the mp4's coding error
    # where the overlay changed the frame (boxes, ids, meshes) the window must show it, not the frame;
    # compared blurred, as the mp4 codes 1-pixel lines with large errors
    window, recorded, plain = (cv2.GaussianBlur(a, (7, 7), 0).astype(int) for a in (best, overlay, frame))
    changed = np.abs(recorded - plain).max(-1) > 15
    assert changed.sum() > 200, changed.sum()
    to_overlay = np.abs(window - recorded)[changed].mean()
    to_frame = np.abs(window - plain)[changed].mean()
    assert to_overlay < to_frame / 2, (to_overlay, to_frame)
