"""Video I/O (realtime/video_read.py, video_write.py, sources.py, the Mp4Sink): exact sizes and rates,
timestamps, stand-ins for undecodable frames, files cut by a kill, inputs that crash other readers,
live URLs, and write failures (a full disk, a file-size limit) that must never replace an old output.

Anything that may crash the interpreter or needs a process limit runs in a subprocess.
"""

from __future__ import annotations

import errno
import http.server
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ASSETS, ROOT

PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

# a FrameResult with nobody in it, whose overlay is `image`, for the sinks (no model, no renderer)
RESULT_OF = """
import numpy as np
from realtime.types import Frame, FrameResult
def result_of(i, image, time_s=None, people=0):
    z = np.zeros((people, 4), np.float32)
    v = np.zeros((people, 6890, 3), np.float32)
    return FrameResult(Frame(i, image, 0.0, time_s), z, z[:, 0], np.zeros(people, np.int64), np.zeros((people, 1, 54), np.int32),
                       np.zeros((people, 3, 3), np.float32), z[:, :3], z[:, :3], v, None, 1.0, overlay=image)
"""


def _run_py(code: str, *args, timeout=120, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", textwrap.dedent(code), *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, preexec_fn=preexec)  # fmt: skip


def _gradient(w: int, h: int, i: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    img[..., 2] = (i * 7) % 256
    return img


def _write_clip(path: Path, size_wh=(160, 120), frames=20, rate=Fraction(25), times=None) -> None:
    from realtime.video_write import VideoWriter

    w = VideoWriter(path, size_wh, rate)
    for i in range(frames):
        w.write(_gradient(*size_wh, i), None if times is None else times[i])
    assert w.close() == frames


def _leftovers(folder: Path, keep=()) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ---- the writer and the reader


def test_odd_size_and_ntsc_rate_read_back_exactly(tmp_path):
    import av

    from realtime.video_read import FileReader

    out = tmp_path / "odd.mp4"
    _write_clip(out, (641, 359), frames=12, rate=Fraction(30000, 1001))
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == Fraction(30000, 1001)
    reader = FileReader(str(out))
    frames = list(reader.frames())
    reader.close()
    assert (reader.width, reader.height) == (641, 359) and reader.rate == Fraction(30000, 1001)
    assert len(frames) == 12 and all(f.image_bgr.shape == (359, 641, 3) for f in frames)
    assert [round(f.time_s * 30000 / 1001) for f in frames] == list(range(12))
    # lossy, but the picture is the one written (the padding did not shift it)
    err = np.abs(frames[5].image_bgr.astype(int) - _gradient(641, 359, 5).astype(int)).mean()
    assert err < 6, err


def test_variable_frame_rate_timestamps_are_kept(tmp_path):
    from realtime.sources import VideoSource

    times = [0.0, 0.04, 0.1, 0.5, 0.52, 1.25, 1.3, 2.0]
    _write_clip(tmp_path / "vfr.mp4", frames=len(times), times=times)
    source = VideoSource(str(tmp_path / "vfr.mp4")).start()
    frames = list(source)
    source.stop()
    assert [f.index for f in frames] == list(range(len(times)))
    np.testing.assert_allclose([f.time_s for f in frames], times, atol=1e-4)


def test_a_writer_killed_outright_leaves_a_file_that_plays_up_to_the_cut(tmp_path):
    from realtime.video_read import FileReader

    code = (
        RESULT_OF
        + """
import sys, time
from realtime.sinks import Mp4Sink
sink = Mp4Sink(sys.argv[1], 30.0, (160, 120))
rng = np.random.default_rng(0)
for i in range(120):
    img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    sink.write(result_of(i, img, i / 30))
print("handed over", flush=True)
time.sleep(600)
"""
    )
    proc = subprocess.Popen(
        [PY, "-c", code, str(tmp_path / "o.mp4")], env=ENV, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "handed over"
        time.sleep(3)  # the encoder thread catches up; fragments reach the file
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert not (tmp_path / "o.mp4").exists()
    (partial,) = tmp_path.glob(".o.*.partial.mp4")
    reader = FileReader(str(partial))
    frames = list(reader.frames())
    reader.close()
    assert len(frames) >= 25 and reader.skipped == 0


def test_a_bottom_up_uncompressed_avi_reads_upright(tmp_path):
    """OpenCV's FFmpeg backend dies on these (malloc: unaligned tcache chunk); a crash fails this test."""
    import av

    avi = tmp_path / "raw.avi"
    with av.open(str(avi), "w") as c:
        s = c.add_stream("rawvideo", rate=25)
        s.width, s.height, s.pix_fmt = 160, 120, "bgr24"
        for _ in range(6):
            img = np.zeros((120, 160, 3), np.uint8)
            img[:60] = (0, 0, 255)  # top half red, bottom half blue
            img[60:] = (255, 0, 0)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    # FFmpeg writes a top-down bitmap (negative height); the common kind (VirtualDub, Windows) is bottom-up
    data = bytearray(avi.read_bytes())
    at = data.index(b"strf") + 8
    w, h = struct.unpack_from("<ii", data, at + 4)
    assert h == -120
    struct.pack_into("<i", data, at + 8, -h)
    row, flipped, pos = w * 3, 0, data.index(b"movi")
    while (j := min((k for k in (data.find(b"00db", pos), data.find(b"00dc", pos)) if k >= 0), default=-1)) >= 0:
        size = struct.unpack_from("<I", data, j + 4)[0]
        if size == row * 120:
            data[j + 8 : j + 8 + size] = (
                np.frombuffer(bytes(data[j + 8 : j + 8 + size]), np.uint8).reshape(120, row)[::-1].tobytes()
            )
            flipped += 1
        pos = j + 8 + size
    assert flipped == 6
    avi.write_bytes(bytes(data))
    code = """
import sys
from realtime.sources import VideoSource
src = VideoSource(sys.argv[1]).start()
frames = list(src)
src.stop()
f = frames[0].image_bgr
print(len(frames), f.shape, f[0, 0].tolist(), f[-1, 0].tolist(), src.skipped)
"""
    r = _run_py(code, avi)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[0] == "6 (120, 160, 3) [0, 0, 255] [255, 0, 0] 0"


def test_undecodable_frames_become_counted_stand_ins(tmp_path):
    import av

    from realtime.sources import VideoSource

    path = tmp_path / "mjpeg.avi"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        for i in range(10):
            for p in s.encode(av.VideoFrame.from_ndarray(_gradient(64, 48, i * 5), format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(path)) as c:
        spans = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(path.read_bytes())
    for pos, size in spans[4:6]:  # frames 4 and 5: no JPEG data left in them
        data[pos : pos + size] = bytes(size)
    path.write_bytes(bytes(data))
    source = VideoSource(str(path)).start()
    frames = list(source)
    source.stop()
    assert [f.index for f in frames] == list(range(10))  # one frame per source frame
    assert [f.stand_in for f in frames] == [False] * 4 + [True, True] + [False] * 4
    assert source.skipped == 2
    np.testing.assert_array_equal(frames[4].image_bgr, frames[3].image_bgr)  # the last good image
    assert frames[6].time_s == pytest.approx(0.6)


def test_an_mp4_cut_before_its_index_says_truncated(tmp_path):
    import av

    from realtime.sources import SourceError, VideoSource

    path = tmp_path / "cut.mp4"
    with av.open(str(path), "w") as c:  # a plain (not fragmented) mp4: its index is written last
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        for i in range(25):
            for p in s.encode(av.VideoFrame.from_ndarray(_gradient(160, 120, i), format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = path.read_bytes()
    assert data.rfind(b"moov") > data.find(b"mdat")
    path.write_bytes(data[: data.rfind(b"moov") - 4])
    with pytest.raises(SourceError, match=r"cut\.mp4: truncated: the file's index \(moov box\) is missing"):
        VideoSource(str(path))


def test_an_http_url_is_read_as_a_live_source(tmp_path):
    from realtime.sources import VideoSource

    _write_clip(tmp_path / "clip.mp4", frames=15)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
        source = VideoSource(url, read_ahead=16)
        assert source.live and (source.width, source.height) == (160, 120)
        source.start()
        frames = []
        for f in source:
            frames.append(f)
            time.sleep(0.005)
        source.stop()
        assert len(frames) + source.dropped == 15 and len(frames) >= 1
        assert [f.index for f in frames] == sorted({f.index for f in frames})
    finally:
        server.shutdown()
        server.server_close()


def test_a_missing_camera_is_one_line_without_opencv_noise(tmp_path):
    r = subprocess.run(
        [PY, "-m", "realtime.cli", "stream", "--camera", "7", "--detector", "full-frame", "--random-weights", "--config", "mega_tiny",
         "--threads", "1", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "o.mp4")],
        env={**ENV, "MEGA_RT_ASSETS": str(ASSETS)}, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("warning: random weights")]
    assert r.returncode == 2, r.stderr[-2000:]
    assert lines == ["Error: camera 7: cannot be opened (no such camera, or it is busy)"]
    assert _leftovers(tmp_path) == []


def test_without_an_nvidia_gpu_the_encoder_is_libx264():
    import torch

    from realtime.video_write import pick_encoder

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: h264_nvenc may rightly be picked (the gpu tests cover it)")
    assert pick_encoder(640, 360) == "libx264"


@pytest.mark.gpu
def test_with_an_nvidia_gpu_the_encoder_is_nvenc_and_the_video_reads_back(tmp_path):
    import av
    import torch

    from realtime.video_write import pick_encoder

    if not torch.cuda.is_available() or "h264_nvenc" not in av.codecs_available:
        pytest.skip("needs an NVIDIA GPU and an FFmpeg build with h264_nvenc")
    assert pick_encoder(640, 360) == "h264_nvenc"
    _write_clip(tmp_path / "nv.mp4", (640, 360), frames=10)


# ---- messages that say what is wrong


def test_a_1x1_video_is_written_and_reads_back_1x1(tmp_path):
    from realtime.video_read import FileReader

    _write_clip(tmp_path / "dot.mp4", (1, 1), frames=3)
    reader = FileReader(str(tmp_path / "dot.mp4"))
    frames = list(reader.frames())
    assert len(frames) == 3 and frames[0].image_bgr.shape == (1, 1, 3)


def test_an_output_where_no_file_can_be_created_says_so(tmp_path):
    from realtime.sinks import Mp4Sink, SinkError

    with pytest.raises(SinkError) as e:
        Mp4Sink("/proc/x.mp4", 25.0, (64, 48))
    msg = str(e.value)
    assert msg.startswith("/proc/x.mp4: cannot create") and "mp4v" not in msg and "\n" not in msg


# ---- killed runs' leftovers


def test_a_killed_runs_leftovers_are_listed_kept_and_moved_out_of_the_way(tmp_path, caplog):
    import logging

    from realtime.sinks import Mp4Sink, ResultsSink, spill_path
    from train.io import temp_path

    dead_other = tmp_path / ".o.999999.partial.mp4"
    dead_other.write_bytes(b"killed run")
    dead_same_pid = temp_path(tmp_path / "o.mp4")  # containers reuse pids: this run's own temporary name
    dead_same_pid.write_bytes(b"killed run, same pid")
    dead_spill = spill_path(tmp_path / "o.npz")
    dead_spill.mkdir()
    (dead_spill / "verts.bin").write_bytes(b"\1" * 64)
    live = ResultsSink(tmp_path / "o2.npz", {}, np.zeros((1, 3), np.int64))
    live_spill = spill_path(tmp_path / "o2.npz")
    os.rename(live_spill, tmp_path / ".o.123.spill")  # a running writer's folder, locked: not listed
    with caplog.at_level(logging.INFO, logger="mega_rt.video"):
        sink = Mp4Sink(tmp_path / "o.mp4", 25.0, (64, 48))
        results = ResultsSink(tmp_path / "o.npz", {}, np.zeros((1, 3), np.int64))
    notes = [r.getMessage() for r in caplog.records if "killed run" in r.getMessage()]
    assert len(notes) == 2 and dead_other.name in notes[0] and "o.123.spill" not in " ".join(notes), notes
    assert dead_other.read_bytes() == b"killed run"
    (aside,) = [p for p in tmp_path.glob(f".o.{os.getpid()}-killed*.partial.mp4")]
    assert aside.read_bytes() == b"killed run, same pid"
    (spill_aside,) = tmp_path.glob(f".o.{os.getpid()}-killed*.spill")
    assert (spill_aside / "verts.bin").read_bytes() == b"\1" * 64
    os.rename(tmp_path / ".o.123.spill", live_spill)
    for s in (sink, results, live):
        s.close(False)


def test_a_short_run_spills_its_rows_within_seconds(tmp_path, monkeypatch):
    import realtime.sinks as sinks

    exec(RESULT_OF, namespace := {})
    monkeypatch.setattr(sinks, "SPILL_EVERY_S", 0.0)
    sink = sinks.ResultsSink(tmp_path / "s.npz", {}, np.zeros((1, 3), np.int64))
    sink.write(namespace["result_of"](0, np.zeros((4, 4, 3), np.uint8), people=2))
    assert (sink.spill_dir / "verts.bin").stat().st_size == 2 * 6890 * 3 * 2  # on disk, far below a chunk
    sink.close(False)


# ---- write failures: one line, no partial file, the old output untouched

FILL_UNTIL_FAILURE = (
    RESULT_OF
    + """
import resource, signal, sys
from realtime.sinks import MeshExportSink, Mp4Sink, ResultsSink, SinkError
kind, target, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
rng = np.random.default_rng(0)
faces = np.zeros((1, 3), np.int64)
sink = None
try:
    sink = {"video": lambda: Mp4Sink(target, 25.0, (320, 240)), "results": lambda: ResultsSink(target, {}, faces, chunk_rows=4),
            "meshes": lambda: MeshExportSink(target, faces, "ply")}[kind]()
    for i in range(150):
        img = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        sink.write(result_of(i, img, i / 25, people=0 if kind == "video" else 2))
    sink.close(True)
except SinkError as e:
    if sink is not None:
        sink.close(False)
    print(e, file=sys.stderr)
    sys.exit(3)
"""
)


@pytest.mark.parametrize("kind,limit", [("video", 300_000), ("results", 300_000), ("meshes", 50_000)])  # a ply is 83 kB
def test_a_file_size_limit_fails_in_one_line_and_keeps_the_old_output(tmp_path, kind, limit):
    target = tmp_path / {"video": "o.mp4", "results": "o.npz", "meshes": "meshes"}[kind]
    if kind == "meshes":
        target.mkdir()
    else:
        target.write_bytes(b"the previous output")
    r = _run_py(FILL_UNTIL_FAILURE, kind, target, limit)
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    lines = [line for line in r.stderr.splitlines() if line.strip() and "H.264 with" not in line]
    assert len(lines) == 1 and "larger than the file system or the process limit allows" in lines[0], r.stderr[-2000:]
    if kind == "meshes":
        assert not list(target.rglob(".*partial*"))  # the mesh being written is gone, the whole ones stay
    else:
        assert target.read_bytes() == b"the previous output"
        assert _leftovers(tmp_path, {target.name}) == []


def test_a_full_disk_fails_in_one_line_and_keeps_the_old_output(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or 'not permitted'})")
    try:
        for kind, name in (("video", "o.mp4"), ("results", "o.npz")):
            (mnt / name).write_bytes(b"the previous output")
            r = _run_py(FILL_UNTIL_FAILURE, kind, mnt / name, 0)
            assert r.returncode == 3, (kind, r.stderr[-2000:])
            assert os.strerror(errno.ENOSPC) not in r.stderr and "the disk is full" in r.stderr
            assert (mnt / name).read_bytes() == b"the previous output"
        assert _leftovers(mnt, {"o.mp4", "o.npz"}) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
