"""Frame sources: a reader thread that decodes into a bounded queue (realtime/video_read.py decodes).

File mode reads ahead (the queue fills, the reader blocks: nothing is dropped). Live mode (a camera, a
URL, or a file played at its own rate) keeps only the newest frames: when the consumer is behind,
the oldest queued frame is dropped and counted, so latency never grows with a queue. Every source
frame becomes one Frame with its source timestamp; one the decoder rejects is a stand-in (the last good
image), counted in `skipped`, so the outputs stay frame for frame in step with the input. A run of
`max_bad` stand-ins in a row ends the stream (a file cut short, a broken stream).
"""

from __future__ import annotations

import queue
import threading
import time

from realtime.types import Frame
from realtime.video_read import DEFAULT_FPS, SourceError, fps_or_default, open_reader

__all__ = ["DEFAULT_FPS", "SourceError", "VideoSource", "fps_or_default"]

_END = object()


class VideoSource:
    """Open at construction (errors early, in the caller's thread); `start()` launches the reader.

    `decode`: "cpu", "nvdec" (FFmpeg's CUDA decoder; a SourceError where the build or the machine lacks
    it; streams it cannot take fall back to the CPU decoder) or "auto" (nvdec where it opens)."""

    def __init__(
        self,
        spec: str,
        live: bool = False,
        pace: bool = False,
        read_ahead: int = 16,
        max_frames: int | None = None,
        max_bad: int = 50,
        decode: str = "cpu",
    ):
        self.spec = str(spec)
        self.reader = open_reader(self.spec, decode)
        self.live = live or self.reader.live
        self.pace = pace  # play a file at its own frame rate (stream mode on a file)
        self.fps = self.reader.fps
        self.rate = self.reader.rate  # exact (a Fraction) where the container says; None otherwise
        self.frame_count = self.reader.frame_count
        self.max_frames = max_frames
        self.max_bad = max_bad
        self._frames = self.reader.frames()
        # the first frame decides the size; an input without one is not a video
        try:
            first = next(self._frames, None)
        except Exception as e:  # noqa: BLE001 - a decoder or network error, in one line
            self.reader.close()
            raise SourceError(f"{self.spec}: cannot read the first frame ({e})") from None
        if first is None or first.stand_in:
            self.reader.close()
            raise SourceError(f"{self.spec}: no decodable frame (not a video, or empty)")
        self.height, self.width = first.image_bgr.shape[:2]
        self._first = first
        self.queue: queue.Queue = queue.Queue(maxsize=1 if self.live else read_ahead)
        self.dropped = 0  # live mode: frames dropped because the pipeline was behind
        self.read = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def skipped(self) -> int:
        """Source frames that could not be decoded (each was passed on as a stand-in)."""
        return self.reader.skipped

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
        self.reader.close()

    def __iter__(self):
        """Frames until the end of the input (or stop()); raises the reader's error, if any."""
        while True:
            item = self.queue.get()
            if item is _END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def poll(self):
        """The next queued frame without waiting: a Frame, None (none yet), or StopIteration at the end
        (the reader's error raised instead, if any). For a consumer that serves several sources."""
        try:
            item = self.queue.get_nowait()
        except queue.Empty:
            return None
        if item is _END:
            self.queue.put_nowait(_END)  # stays ended for the next poll
            if self.error is not None:
                raise self.error
            raise StopIteration
        return item

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

    def _frames_from_first(self):
        yield self._first
        yield from self._frames

    def _run(self):
        import av

        try:
            bad = 0
            t_start = time.perf_counter()
            for index, decoded in enumerate(self._frames_from_first()):
                if self._stop.is_set() or (self.max_frames is not None and self.read >= self.max_frames):
                    break
                bad = bad + 1 if decoded.stand_in else 0
                if bad >= self.max_bad:
                    break
                if self.pace:
                    at = decoded.time_s if decoded.time_s is not None else index / self.fps
                    wait = t_start + at - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                image = decoded.image_bgr
                self._put(Frame(index, image, time.perf_counter(), decoded.time_s, decoded.stand_in))
                self.read += 1
        except av.error.FFmpegError as e:  # a stream that broke off: the frames so far stand
            if not self.live:
                self.error = SourceError(f"{self.spec}: reading stopped ({e.strerror or e})")
        except BaseException as e:  # handed to the consumer
            self.error = e
        finally:
            self._put(_END)
