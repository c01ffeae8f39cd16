"""Per-stage wall-clock timing shared by the pipeline threads, the progress bar and `bench-pipeline`.

On CUDA a stage's time is only its own when the stage ends with a synchronisation; `Timer.stage`
synchronises the given device for that reason (at the cost of less overlap on the device).
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np


class Timer:
    def __init__(self):
        self._ms: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def stage(self, name: str, device=None):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if device is not None and getattr(device, "type", "cpu") == "cuda":
                import torch

                torch.cuda.synchronize(device)
            self.add(name, 1000 * (time.perf_counter() - t0))

    def add(self, name: str, ms: float):
        with self._lock:
            self._ms.setdefault(name, []).append(ms)

    def mean_ms(self, last: int | None = None) -> dict[str, float]:
        with self._lock:
            return {k: float(np.mean(v[-last:] if last else v)) for k, v in self._ms.items() if v}

    def total_ms(self) -> dict[str, float]:
        with self._lock:
            return {k: float(np.sum(v)) for k, v in self._ms.items()}

    def percentiles(self, name: str, qs=(50, 90, 99)) -> dict[str, float]:
        with self._lock:
            v = self._ms.get(name, [])
            return {f"p{q}": float(np.percentile(v, q)) for q in qs} if v else {}

    def summary(self) -> str:
        return "  ".join(f"{k} {v:.1f}" for k, v in self.mean_ms().items())
