"""The web app in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright
against `mega-rt app` on a local port, with the demo weights and detector on a synthetic clip; the
webcam is Chromium's fake camera playing a y4m of the same clip. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, write_scene_clip

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
# the closed network refuses Chromium's background connections; without these flags it waits on them
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _y4m(video: Path, out: Path) -> Path:
    import av

    with av.open(str(video)) as src, av.open(str(out), "w", format="yuv4mpegpipe") as dst:
        stream = None
        for frame in src.decode(video=0):
            if stream is None:
                stream = dst.add_stream("rawvideo", rate=10)
                stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, "yuv420p"
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory, assets_dir):
    pytest.importorskip("ultralytics", reason="the demo detector runs on ultralytics (extra detect)")
    from train.synthetic.scene import SceneConfig

    folder = tmp_path_factory.mktemp("app_clip")
    try:
        video, _ = write_scene_clip(
            folder / "clip.mp4", SceneConfig(width=320, height=240, frames=6, people=1, seed=0, fps=10.0)
        )
    except Exception as e:  # no EGL
        pytest.skip(f"cannot render the synthetic clip: {e}")
    return video, _y4m(video, folder / "clip.y4m")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, clip):
    pytest.importorskip("gradio", reason="the web app needs gradio (extra app)")
    workdir = tmp_path_factory.mktemp("app_work")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "realtime.cli", "app", "--port", str(port), "--weights", "demo", "--detector", "demo",
           "--device", "cpu", "--workdir", str(workdir)]  # fmt: skip
    log = open(workdir.parent / "app.log", "w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.seek(0)
                pytest.fail(f"the app did not start: {log.read()[-2000:]}")
            time.sleep(0.5)
    yield url, workdir
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    assert list(workdir.iterdir()) == [], "the app left files in its temporary folder"


PAGE_TIMEOUT_MS = 120_000  # Playwright's 30 s default is short for a loaded 2-core machine


@pytest.fixture(scope="module")
def browser(clip):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (extra app)")
    if not CHROMIUM.is_file():
        pytest.skip(f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
    fake_camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                   f"--use-file-for-fake-video-capture={clip[1]}"]  # fmt: skip
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + fake_camera)
        context = b.new_context()
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        yield context
        b.close()


def _not_blank(png: bytes, min_colours: int = 200) -> int:
    import io

    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colours = len(np.unique(pixels, axis=0))
    assert colours >= min_colours and pixels.std(axis=0).max() > 10, f"{colours} colours: the region looks blank"
    return colours


def test_an_upload_plays_shows_its_meshes_and_downloads(browser, app_url, clip, tmp_path):
    url, workdir = app_url
    page = browser.new_page()
    glbs = []
    page.on("response", lambda r: glbs.append(r) if r.url.endswith(".glb") else None)
    page.goto(url)
    page.set_input_files("#upload input[type=file]", str(clip[0]))
    page.wait_for_selector("#upload >> text=clip.mp4")
    t0 = time.perf_counter()
    page.click("#run")
    page.wait_for_selector("#overlay video", timeout=90_000)
    page.wait_for_function("() => document.querySelector('#overlay video').readyState >= 2", timeout=30_000)
    print(f"upload to playable overlay: {time.perf_counter() - t0:.1f} s")
    duration = page.evaluate("() => document.querySelector('#overlay video').duration")
    assert 0.55 < duration < 0.75  # 6 frames at 10 fps
    src = page.evaluate("() => document.querySelector('#overlay video').src")
    assert str(workdir.resolve()) in src  # served from the app's own folder
    page.evaluate("() => document.querySelector('#overlay video').play()")
    page.wait_for_function("() => document.querySelector('#overlay video').currentTime > 0.2", timeout=10_000)
    assert "6 frames, 6 people-frames" in page.inner_text("#status")
    table = page.locator("#tracks")
    page.wait_for_function("() => /mean spread/.test(document.querySelector('#tracks').innerText)", timeout=10_000)
    assert re.search(r"(^|\s)0\s+6\s+0\s+5\s", table.inner_text()), table.inner_text()  # track 0: 6 frames, 0 to 5

    page.wait_for_selector("#view3d canvas", timeout=30_000)
    page.wait_for_timeout(1500)  # the viewer draws after loading
    assert glbs and all(r.status == 200 for r in glbs) and glbs[0].body()[:4] == b"glTF"
    _not_blank(page.locator("#view3d canvas").screenshot(), min_colours=20)

    page.evaluate("() => document.querySelector('#overlay video').pause()")
    shot = tmp_path / "overlay.png"
    page.locator("#overlay video").screenshot(path=str(shot))
    _not_blank(shot.read_bytes())

    links = page.eval_on_selector_all("#downloads a", "as => as.map(a => a.href)")
    by_suffix = {Path(h).suffix: h for h in links}
    assert set(by_suffix) == {".npz", ".jsonl", ".pc2", ".obj", ".glb"}
    assert page.request.get(by_suffix[".pc2"]).body()[:12] == b"POINTCACHE2\x00"  # Blender's Mesh Cache format
    import pygltflib

    gltf = pygltflib.GLTF2.load_from_bytes(page.request.get(by_suffix[".glb"]).body())
    assert gltf.meshes and gltf.accessors[gltf.meshes[0].primitives[0].attributes.POSITION].count == 6890
    npz = tmp_path / "r.npz"
    npz.write_bytes(page.request.get(by_suffix[".npz"]).body())
    with np.load(npz, allow_pickle=False) as z:
        assert z["verts"].shape == (6, 6890, 3) and int(z["num_frames"]) == 6
    lines = page.request.get(by_suffix[".jsonl"]).text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(6))
    page.close()


def test_a_file_that_is_not_a_video_is_refused_on_the_page(browser, app_url, tmp_path):
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is text, not a video")
    page = browser.new_page()
    page.goto(app_url[0])
    page.set_input_files("#upload input[type=file]", str(fake))
    page.wait_for_selector("#upload >> text=holiday.mp4")
    page.click("#run")
    page.wait_for_selector("text=holiday.mp4: not a video that can be decoded", timeout=30_000)
    page.close()


def test_the_webcam_streams_through_the_pipeline_with_its_fps(browser, app_url):
    page = browser.new_page()
    page.goto(app_url[0])
    page.get_by_role("tab", name="Webcam").click()
    page.get_by_text("Click to Access Webcam").click()
    page.locator("#camera button", has_text="Record").click()
    t0 = time.perf_counter()
    page.wait_for_function(
        "() => /[1-9][0-9.]* fps/.test(document.querySelector('#live-status').innerText)", timeout=60_000
    )
    status = page.inner_text("#live-status")
    print(f"webcam: first live fps after {time.perf_counter() - t0:.1f} s: {status}")
    assert "1 person" in status
    _not_blank(page.locator("#live img").screenshot())
    page.locator("#camera button", has_text="Stop").click()
    page.close()
