"""Writing the overlay video: H.264 in a fragmented mp4 through PyAV (FFmpeg), encoded on its own thread.

- H.264 yuv420p plays in browsers and QuickTime. `h264_nvenc` is used where the FFmpeg build has it and
  it opens (an NVIDIA GPU); otherwise libx264. One info line says which.
- The input's size: 4:2:0 H.264 cannot code an odd width or height (its cropping works in steps of two),
  so an odd size is padded by one edge pixel for the encoder and the true size is kept in the
  container's metadata, which mega-rt's reader crops back to (other players show the extra pixel).
- The input's frame rate and timestamps: frames carry their source time, so a variable rate is kept.
- Fragmented mp4 (an index per fragment, none at the end): a file cut by a kill or a crash still
  plays up to its last fragment.
- `write` only hands the frame to a bounded queue; the encoder thread converts, encodes and muxes. An
  error there (disk full, file too large) is raised as one SinkError line by the next `write` or
  `close`. `close` re-opens the finished file and counts its frames before it reports success.
"""

from __future__ import annotations

import errno
import functools
import logging
import queue
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from realtime.video_read import SIZE_TAG

log = logging.getLogger("mega_rt.video")

MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+use_metadata_tags"
FRAGMENT_S = 1.0  # a kill loses at most about this much video
KEYFRAME_EVERY_S = 2.0
NVENC, X264 = "h264_nvenc", "libx264"
_END = object()

_WHY = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than the file system or the process limit allows",
    errno.EIO: "input/output error",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.ENOENT: "the folder does not take new files",
}


class SinkError(RuntimeError):
    """An output cannot be written; one line for the user."""


def write_failure(path, e: BaseException, what: str = "write") -> str:
    """One line naming the file and why a write failed (ENOSPC, EFBIG, EIO, ... in words)."""
    code = getattr(e, "errno", None)
    why = _WHY.get(code) or getattr(e, "strerror", None) or str(e)
    return f"{path}: cannot {what} ({why})"


def info_line(message: str) -> None:
    """An info line on stderr, also where the application configured no logging."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    log.info(message)


@functools.cache
def _nvenc_opens(width: int, height: int) -> bool:
    import av

    if NVENC not in av.codecs_available:
        return False
    try:
        ctx = av.CodecContext.create(NVENC, "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = width, height, "yuv420p", Fraction(1, 30)
        ctx.open()
    except av.error.FFmpegError as e:  # the build has it, the machine has no NVIDIA GPU (or driver)
        log.debug("h264_nvenc does not open (%s); using libx264", e)
        return False
    return True


def pick_encoder(width: int, height: int) -> str:
    """h264_nvenc where it opens at this size, else libx264."""
    return NVENC if _nvenc_opens(width, height) else X264


def count_frames(path) -> int:
    """Frames that decode from a video file (0 when it does not open)."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return 0
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            return sum(1 for _ in c.decode(stream))
    except av.error.FFmpegError:
        return 0


class VideoWriter:
    """An mp4 of BGR frames at `size_wh`, `rate` frames per second (a Fraction keeps 30000/1001 exact; a
    float is read as the nearest fraction with a denominator up to 1001000, which recovers 30000/1001).

    `write(image, time_s)`: `time_s` is the frame's source time (seconds from the start; None: frame
    number / rate). `close()` finishes and verifies the file; `abort()` stops without verifying."""

    def __init__(self, path, size_wh: tuple[int, int], rate: Fraction | float, queue_frames: int = 8,
                 encoder: str | None = None, threads: int = 0, name=None):  # fmt: skip
        import av

        self.path = Path(path)
        self.name = Path(name) if name else self.path  # what messages call the file (the target of a temporary file)
        self.width, self.height = (int(v) for v in size_wh)
        if self.width < 1 or self.height < 1:
            raise SinkError(f"{self.name}: cannot write a {self.width}x{self.height} video")
        rate = Fraction(rate).limit_denominator(1001 * 1000) if rate and rate > 0 else Fraction(30)
        self.rate = rate
        self.coded_wh = (self.width + self.width % 2, self.height + self.height % 2)
        self.encoder = encoder or pick_encoder(*self.coded_wh)
        # a time base that holds the source's timestamps to the microsecond, and every frame of `rate`
        self.time_base = Fraction(1, 90000) if (90000 / rate).denominator == 1 else 1 / rate / 1000
        try:
            self.container = av.open(
                str(self.path),
                "w",
                format="mp4",
                options={"movflags": MOVFLAGS, "frag_duration": str(int(FRAGMENT_S * 1e6))},
            )
        except av.error.FFmpegError as e:
            raise SinkError(write_failure(self.name, e, "create the video")) from None
        try:
            if self.coded_wh != (self.width, self.height):
                self.container.metadata[SIZE_TAG] = f"{self.width}x{self.height}"
            self.stream = self.container.add_stream(self.encoder, rate=rate)
            self.stream.width, self.stream.height = self.coded_wh
            self.stream.pix_fmt = "yuv420p"
            self.stream.time_base = self.time_base
            ctx = self.stream.codec_context
            ctx.time_base = self.time_base
            ctx.options = {"preset": "veryfast"} if self.encoder == X264 else {"preset": "p4"}
            ctx.gop_size = max(1, round(KEYFRAME_EVERY_S * rate))
            ctx.thread_count = threads  # 0: FFmpeg/x264 pick from the cores
            ctx.thread_type = "AUTO"
            ctx.open()
        except av.error.FFmpegError as e:
            self.container.close()
            raise SinkError(
                f"{self.name}: the {self.encoder} encoder does not open at {self.width}x{self.height} ({e})"
            ) from None
        padded = f", coded as {self.coded_wh[0]}x{self.coded_wh[1]} (H.264 4:2:0 needs even sizes; mega-rt reads it back at {self.width}x{self.height})" if self.coded_wh != (self.width, self.height) else ""  # fmt: skip
        info_line(
            f"{self.name.name}: H.264 with {self.encoder}, {self.width}x{self.height} at {float(rate):.3f} fps{padded}"
        )
        self.frames = 0  # handed over
        self.encoded = 0
        self._last_pts = -1
        self._error: SinkError | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self._thread = threading.Thread(target=self._encode_loop, name="encoder", daemon=True)
        self._thread.start()

    def write(self, image_bgr: np.ndarray, time_s: float | None = None) -> None:
        if self._error is not None:
            raise self._error
        if image_bgr.shape != (self.height, self.width, 3) or image_bgr.dtype != np.uint8:
            raise SinkError(
                f"{self.name}: frame {self.frames} is {image_bgr.shape} {image_bgr.dtype}, the video is ({self.height}, {self.width}, 3) uint8"
            )
        pts = round(time_s / self.time_base) if time_s is not None else round(self.frames / self.rate / self.time_base)
        pts = max(pts, self._last_pts + 1)  # a repeated or backwards timestamp would be refused by the muxer
        self._last_pts = pts
        self._put((np.ascontiguousarray(image_bgr), pts))
        self.frames += 1

    def _put(self, item) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise SinkError(f"{self.name}: the encoder stopped") from None

    def _encode_loop(self) -> None:
        import av

        pad = (self.coded_wh[1] - self.height, self.coded_wh[0] - self.width)
        try:
            while True:
                item = self._queue.get()
                if item is _END or self._stop.is_set():
                    break
                image, pts = item
                if any(pad):
                    image = np.pad(image, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                frame.pts, frame.time_base = pts, self.time_base
                for packet in self.stream.encode(frame):
                    self.container.mux(packet)
                self.encoded += 1
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        except (av.error.FFmpegError, OSError) as e:
            self._error = SinkError(write_failure(self.name, e))
            while True:  # unblock a producer waiting on the full queue; it sees the error next
                try:
                    if self._queue.get(timeout=0.2) is _END:
                        break
                except queue.Empty:
                    break

    def close(self) -> int:
        """Finish the file; SinkError when any frame did not make it. Returns the frames in the file."""
        import av

        try:
            self._put(_END)
            self._thread.join()
        except SinkError:
            self._thread.join(timeout=5)
        try:
            self.container.close()  # writes the last fragment
        except (av.error.FFmpegError, OSError) as e:
            self._error = self._error or SinkError(write_failure(self.name, e))
        if self._error is not None:
            raise self._error
        found = count_frames(self.path)
        if found != self.frames:
            raise SinkError(f"{self.name}: {found} of {self.frames} frames read back from the finished video")
        return found

    def abort(self) -> None:
        """Stop without finishing the file (the caller removes it)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.put(_END, timeout=0.1)
            except queue.Full:
                continue
            self._thread.join(timeout=5)
        try:
            self.container.close()
        except Exception:  # the file is about to be removed; its state does not matter
            pass
