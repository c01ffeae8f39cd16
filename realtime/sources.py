"""Frame sources: a reader thread that decodes into a bounded queue.

File mode reads ahead (the queue fills, the reader blocks: nothing is dropped). Live mode (a camera, a
URL, or a file played at its own rate) keeps only the newest frames: when the consumer is behind,
the oldest queued frame is dropped and counted, so latency never grows with a queue. Frames OpenCV
cannot decode are skipped and counted; a run of `max_bad` failures in a row ends the stream (a
truncated file).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np

from realtime.types import Frame


class SourceError(RuntimeError):
    """The input cannot be opened or is not a video; one line for the user."""


_END = object()
DEFAULT_FPS = 30.0


def fps_or_default(fps: float | None, default: float = DEFAULT_FPS) -> float:
    """A reported frame rate, or `default` where it is missing or implausible (OpenCV reports 0, NaN or
    thousands for streams and some containers)."""
    return float(fps) if fps and 0 < fps < 1000 else default


def open_capture(spec: str):
    """cv2.VideoCapture for a file path, a camera index ("0") or a URL; SourceError if it does not open."""
    import cv2

    if spec.isdigit():
        cap = cv2.VideoCapture(int(spec))
        if not cap.isOpened():
            raise SourceError(f"camera {spec}: cannot be opened (no such camera, or it is busy)")
        return cap, True
    is_url = "://" in spec
    if not is_url:
        path = Path(spec)
        if not path.exists():
            raise SourceError(f"{spec}: no such file")
        if path.is_dir():
            raise SourceError(f"{spec}: is a folder, not a video")
    cap = cv2.VideoCapture(spec)
    if not cap.isOpened():
        raise SourceError(f"{spec}: not a video OpenCV can read")
    return cap, is_url


class VideoSource:
    """Open at construction (errors early, in the caller's thread); `start()` launches the reader."""

    def __init__(
        self,
        spec: str,
        live: bool = False,
        pace: bool = False,
        read_ahead: int = 16,
        max_frames: int | None = None,
        max_bad: int = 50,
    ):
        import cv2

        self.spec = str(spec)
        self.cap, is_stream = open_capture(self.spec)
        self.live = live or is_stream
        self.pace = pace  # play a file at its own frame rate (stream mode on a file)
        self.fps = fps_or_default(self.cap.get(cv2.CAP_PROP_FPS))
        self.frame_count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.max_frames = max_frames
        self.max_bad = max_bad
        # the first frame decides the size; a file without one is not a video
        ok, first = self.cap.read()
        if not ok or first is None or first.ndim != 3:
            self.cap.release()
            raise SourceError(f"{self.spec}: no decodable frame (not a video, or empty)")
        self.height, self.width = first.shape[:2]
        self._first = first
        self.queue: queue.Queue = queue.Queue(maxsize=1 if self.live else read_ahead)
        self.skipped = 0  # undecodable frames
        self.dropped = 0  # live mode: frames dropped because the pipeline was behind
        self.read = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> "VideoSource":
        self._thread = threading.Thread(target=self._run, name="source", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            # unblock a reader waiting on a full queue
            while self._thread.is_alive():
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
        self.cap.release()

    def __iter__(self):
        """Frames until the end of the input (or stop()); raises the reader's error, if any."""
        while True:
            item = self.queue.get()
            if item is _END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def _put(self, item):
        if not self.live or item is _END:
            while not self._stop.is_set():
                try:
                    self.queue.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue
            if item is _END:  # make room for the end marker so the consumer never hangs
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    pass
                self.queue.put_nowait(item)
            return
        while True:  # live: replace the oldest frame instead of waiting
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _run(self):
        try:
            index, bad, image = 0, 0, self._first
            t_start = time.perf_counter()
            while not self._stop.is_set():
                if self.max_frames is not None and self.read >= self.max_frames:
                    break
                if image is not None and image.shape == (self.height, self.width, 3) and image.dtype == np.uint8:
                    if self.pace:
                        wait = t_start + index / self.fps - time.perf_counter()
                        if wait > 0:
                            time.sleep(wait)
                    self._put(Frame(index, image, time.perf_counter()))
                    self.read += 1
                    bad = 0
                elif image is not None or index < self.frame_count:
                    self.skipped += 1
                    bad += 1
                    if bad >= self.max_bad:
                        break
                index += 1
                ok, image = self.cap.read()
                if not ok:
                    image = None
                    if not (self.frame_count and index < self.frame_count) or self.live:
                        break  # the end (or a stream that stopped)
        except BaseException as e:  # handed to the consumer
            self.error = e
        finally:
            self._put(_END)
