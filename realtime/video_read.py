"""Reading video: files and network streams (rtsp, http, udp, ...) through PyAV (FFmpeg), cameras through
OpenCV (the PyAV wheels carry no V4L2 input device).

Every decodable frame comes with its timestamp, `time_s` = (pts - the stream's start) * time_base, so a
variable frame rate is kept. A packet the decoder rejects still yields one frame, a stand-in (the last
good image, or black before the first one, `stand_in=True`), so frame numbers, overlay and results stay
in step with the source; the stand-ins are counted in `skipped`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

DEFAULT_FPS = 30.0
NETWORK_TIMEOUT_S = (10.0, 10.0)  # (open, read): a stream that goes silent ends instead of hanging
SIZE_TAG = "mega_rt_size"  # container metadata of our own mp4s whose odd size was padded for the encoder


class SourceError(RuntimeError):
    """The input cannot be opened or is not a video; one line for the user."""


@dataclass(frozen=True)
class Decoded:
    image_bgr: np.ndarray  # (H,W,3) uint8
    time_s: float | None  # seconds from the stream's start (None: the container has no timestamp)
    stand_in: bool = False  # the source frame could not be decoded; this is the last good image (or black)


def fps_or_default(fps: float | None, default: float = DEFAULT_FPS) -> float:
    """A reported frame rate, or `default` where it is missing or implausible (streams and some containers
    report 0, NaN or thousands)."""
    return float(fps) if fps and 0 < fps < 1000 else default


def is_camera(spec: str) -> bool:
    return spec.isdigit()


def is_url(spec: str) -> bool:
    return "://" in spec


DECODERS = ("cpu", "nvdec", "auto")


def nvdec_problem() -> str | None:
    """Why FFmpeg's CUDA decoder cannot run here (None when it can): the FFmpeg build has no CUDA device
    type, or no CUDA device opens (no NVIDIA GPU or driver)."""
    import av
    from av.codec.hwaccel import HWAccel, hwdevices_available

    if "cuda" not in hwdevices_available():
        return "this FFmpeg build has no CUDA device support"
    try:  # opens the device FFmpeg would decode on, without a file
        HWAccel(device_type="cuda", allow_software_fallback=False).create(av.Codec("h264", "r"))
    except av.error.FFmpegError as e:
        return f"no CUDA device opens (no NVIDIA GPU or driver: {e.strerror or e})"
    return None


def resolve_decode(decode: str) -> str:
    """'cpu' or 'nvdec': `auto` is nvdec where it opens, else the CPU decoder."""
    if decode not in DECODERS:
        raise ValueError(f"decode must be one of {DECODERS}, got {decode!r}")
    if decode == "auto":
        return "nvdec" if nvdec_problem() is None else "cpu"
    return decode


def open_reader(spec: str, decode: str = "cpu"):
    """A FileReader (file or URL) or CameraReader ("0"); SourceError when it does not open."""
    spec = str(spec)
    if is_camera(spec):
        return CameraReader(int(spec))
    return FileReader(spec, decode)


def input_fps(spec: str) -> float:
    """Frame rate of a video file (opened and closed again; 30 where it reports none); SourceError if it
    does not open."""
    reader = FileReader(spec)
    reader.close()
    return reader.fps


def nominal_fps(spec: str) -> float:
    """Frame rate of a file; 30 for a camera or URL, not connected to twice (live input drops frames when
    behind anyway, so its nominal rate is only a guess of the tracker's) or a file that does not open (the
    source reports that itself, in its own words)."""
    if is_camera(spec) or is_url(spec):
        return DEFAULT_FPS
    try:
        return input_fps(spec)
    except SourceError:
        return DEFAULT_FPS


def mp4_index_missing(path: Path) -> bool:
    """True for an mp4/mov whose top-level boxes hold media (mdat) but neither the index (moov) nor
    fragments (moof): a recording cut before the writer put its index at the end."""
    seen = set()
    try:
        size_total = path.stat().st_size
        with open(path, "rb") as fh:
            pos = 0
            while pos + 8 <= size_total and len(seen) < 64:
                fh.seek(pos)
                head = fh.read(16)
                size, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if size == 1 and len(head) >= 16:
                    size = int.from_bytes(head[8:16], "big")
                elif size == 0:
                    size = size_total - pos
                if size < 8 or not kind.isalnum() and kind not in (b"free", b"skip"):
                    break
                seen.add(kind.decode("latin-1"))
                pos += size
    except OSError:
        return False
    return "ftyp" in seen and "mdat" in seen and not ({"moov", "moof"} & seen)


class FileReader:
    """A video file or network stream through PyAV. `frames()` yields every source frame once."""

    def __init__(self, spec: str, decode: str = "cpu"):
        import av

        self.spec = spec
        self.live = is_url(spec)
        if not self.live:
            path = Path(spec)
            if not path.exists():
                raise SourceError(f"{spec}: no such file")
            if path.is_dir():
                raise SourceError(f"{spec}: is a folder, not a video")
        kwargs = {}
        if self.live:
            kwargs["timeout"] = NETWORK_TIMEOUT_S
        self.decode = resolve_decode(decode)
        if self.decode == "nvdec":
            from av.codec.hwaccel import HWAccel

            problem = nvdec_problem()
            if problem:
                raise SourceError(f"{spec}: --decode nvdec: {problem}; use --decode cpu (or auto)")
            kwargs["hwaccel"] = HWAccel(device_type="cuda", allow_software_fallback=True)
        try:
            self.container = av.open(spec, **kwargs)
        except av.error.FFmpegError as e:
            raise SourceError(self._open_message(e)) from None
        try:
            if not self.container.streams.video:
                raise SourceError(f"{spec}: has no video stream")
            self.stream = self.container.streams.video[0]
            self.stream.thread_type = "AUTO"  # decoding on FFmpeg's threads, off the reader's
            rate = self.stream.average_rate or self.stream.guessed_rate
            self.rate: Fraction | None = Fraction(rate) if rate and 0 < rate < 1000 else None
            self.fps = fps_or_default(float(self.rate) if self.rate else None)
            self.frame_count = int(self.stream.frames or 0)  # 0: the container does not say
            if not self.frame_count and self.container.duration and self.rate:  # fragmented mp4: an estimate
                self.frame_count = round(self.container.duration / 1e6 * float(self.rate))
            self.time_base = self.stream.time_base
            self.start_pts = self.stream.start_time
            coded = self.stream.codec_context
            self.width, self.height = int(coded.width or 0), int(coded.height or 0)
            tag = self.container.metadata.get(SIZE_TAG, "")
            if "x" in tag:  # our own output of an odd size, padded by one pixel for the encoder
                w, h = (int(v) for v in tag.split("x", 1))
                if 0 < w <= self.width and 0 < h <= self.height:
                    self.width, self.height = w, h
        except BaseException:
            self.container.close()
            raise
        self.skipped = 0
        self.decoded = 0

    def _open_message(self, e) -> str:
        import av

        if isinstance(e, av.error.FileNotFoundError):
            return f"{self.spec}: no such file" if not self.live else f"{self.spec}: not found on the server"
        if isinstance(e, av.error.PermissionError):
            return f"{self.spec}: permission denied"
        if not self.live and mp4_index_missing(Path(self.spec)):
            return (
                f"{self.spec}: truncated: the file's index (moov box) is missing, so no frame can be located; "
                "rebuild it with untrunc and a good recording from the same camera, or re-record"
            )
        if self.live:
            return f"{self.spec}: cannot connect or read the stream ({e.strerror or e})"
        return f"{self.spec}: not a video FFmpeg can read ({e.strerror or e})"

    def _image(self, frame) -> np.ndarray:
        if frame.width == self.width and frame.height == self.height:
            return frame.to_ndarray(format="bgr24")
        if frame.width - self.width in (0, 1) and frame.height - self.height in (0, 1):
            return frame.to_ndarray(format="bgr24")[: self.height, : self.width]  # the padding of an odd size
        return frame.to_ndarray(format="bgr24", width=self.width, height=self.height)  # a stream that changed size

    def _time_s(self, pts) -> float | None:
        if pts is None:
            return None
        if self.start_pts is None:
            self.start_pts = pts
        return float((pts - self.start_pts) * self.time_base)

    def frames(self) -> Iterator[Decoded]:
        import av

        last = None
        for packet in self.container.demux(self.stream):
            if packet.size == 0 and packet.pts is None:  # the end: flush what the decoder holds
                packet = None
            try:
                decoded = packet.decode() if packet is not None else self.stream.codec_context.decode(None)
            except av.error.FFmpegError:
                self.skipped += 1
                image = last if last is not None else np.zeros((self.height, self.width, 3), np.uint8)
                yield Decoded(image, self._time_s(packet.pts if packet is not None else None), stand_in=True)
                continue
            for frame in decoded:
                last = self._image(frame)
                self.decoded += 1
                yield Decoded(last, self._time_s(frame.pts))

    def close(self):
        self.container.close()


class CameraReader:
    """A V4L2 camera through OpenCV, quiet: one SourceError when it does not open, not lines of noise from
    every backend OpenCV would try."""

    live = True
    rate = None

    def __init__(self, index: int):
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # read when OpenCV logs first
        import cv2

        self.spec = str(index)
        backend = cv2.CAP_V4L2 if os.name == "posix" and Path("/dev").is_dir() else cv2.CAP_ANY
        self.cap = cv2.VideoCapture(index, backend)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"camera {index}: cannot be opened (no such camera, or it is busy)")
        self.fps = fps_or_default(self.cap.get(cv2.CAP_PROP_FPS))
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frame_count = 0
        self.skipped = 0
        self.decoded = 0

    def frames(self) -> Iterator[Decoded]:
        t0 = time.perf_counter()
        while True:
            ok, image = self.cap.read()
            if not ok or image is None:
                return  # unplugged or stopped
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            self.height, self.width = image.shape[:2]
            self.decoded += 1
            yield Decoded(np.ascontiguousarray(image[..., :3]), time.perf_counter() - t0)

    def close(self):
        self.cap.release()
