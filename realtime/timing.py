"""Per-stage timing shared by the pipeline threads, the progress bar and `bench pipeline`.

A stage on a CUDA device is timed with a pair of CUDA events on the current stream: the device's own
time for the stage's kernels, and the host never waits for it. The events are read when they have
completed (the progress bar takes those that are done) or at the end (`total_ms`, `percentiles`,
`summary` wait for the rest). Stages without a device, and every stage on a CPU, are wall clock.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque

import numpy as np

MARKS_KEPT = 512  # per event name: seconds of history at any frame rate a pipeline reaches


class Timer:
    def __init__(self):
        self._ms: dict[str, list[float]] = {}
        self._marks: dict[str, deque] = {}  # name -> (perf_counter, value or None) of the latest events
        self._events: list[tuple[str, object, object]] = []  # (stage, start, end) not read yet, in record order
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def stage(self, name: str, device=None):
        if device is not None and getattr(device, "type", "cpu") == "cuda":
            import torch

            stream = torch.cuda.current_stream(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            try:
                yield
            finally:
                end.record(stream)
                with self._lock:
                    self._events.append((name, start, end))
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, 1000 * (time.perf_counter() - t0))

    def add(self, name: str, ms: float):
        with self._lock:
            self._ms.setdefault(name, []).append(ms)

    def mark(self, name: str, value: float | None = None) -> None:
        """An event now (a frame written) with an optional value (its latency in ms), for the rates of
        the last seconds (`recent`); kept apart from the stage figures."""
        with self._lock:
            self._marks.setdefault(name, deque(maxlen=MARKS_KEPT)).append((time.perf_counter(), value))

    def recent(self, name: str, window_s: float = 2.0) -> tuple[float, float | None]:
        """(events per second, mean value) of the events `name` of the last `window_s` seconds; the rate
        is 0 before two of them, the mean None before one with a value."""
        now = time.perf_counter()
        with self._lock:
            marks = [m for m in self._marks.get(name, ()) if now - m[0] <= window_s]
        values = [v for _, v in marks if v is not None]
        span = marks[-1][0] - marks[0][0] if marks else 0.0
        rate = (len(marks) - 1) / span if span > 0 else 0.0
        return rate, float(np.mean(values)) if values else None

    def _read_events(self, wait: bool) -> None:
        """Move completed event pairs into the figures (all of them when `wait`); call with the lock held."""
        done = 0
        for name, start, end in self._events:
            if wait:
                end.synchronize()
            elif not end.query():
                break  # the ones after it were recorded later on the same stream
            self._ms.setdefault(name, []).append(start.elapsed_time(end))
            done += 1
        del self._events[:done]

    def mean_ms(self, last: int | None = None) -> dict[str, float]:
        with self._lock:
            self._read_events(wait=False)
            return {k: float(np.mean(v[-last:] if last else v)) for k, v in self._ms.items() if v}

    def total_ms(self) -> dict[str, float]:
        with self._lock:
            self._read_events(wait=True)
            return {k: float(np.sum(v)) for k, v in self._ms.items()}

    def percentiles(self, name: str, qs=(50, 90, 99)) -> dict[str, float]:
        with self._lock:
            self._read_events(wait=True)
            v = self._ms.get(name, [])
            return {f"p{q}": float(np.percentile(v, q)) for q in qs} if v else {}

    def summary(self) -> str:
        with self._lock:
            self._read_events(wait=True)
        return "  ".join(f"{k} {v:.1f}" for k, v in self.mean_ms().items())
