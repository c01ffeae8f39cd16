"""The loaded models, one per (samples, steps): built once by the Python API and kept, so that a change
of settings on the page does not reload the weights every time."""

from __future__ import annotations

import threading
from collections import OrderedDict

from realtime.app.config import AppConfig


class ModelCache:
    def __init__(self, config: AppConfig, keep: int = 2):
        self.config = config
        self.keep = keep
        self._models: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, samples: int, steps: int | None):
        """A realtime.MeshRecovery for these settings (the least recently used one is let go past `keep`)."""
        from realtime import MeshRecovery

        key = (samples, steps)
        with self._lock:
            if key not in self._models:
                self._models[key] = MeshRecovery.from_pretrained(
                    self.config.weights,
                    device=self.config.device,
                    samples=samples,
                    steps=steps,
                    detector=self.config.detector,
                )
                while len(self._models) > self.keep:
                    self._models.popitem(last=False)
            self._models.move_to_end(key)
            return self._models[key]


def build_detector_for(model, det_conf: float, fps: float):
    """A fresh detector (own tracker state) as the model would build it, at this confidence and frame rate."""
    from realtime.detect import build_detector
    from realtime.weights import resolve_detector

    chosen = resolve_detector(model.detector_spec)
    imgsz = chosen.imgsz if chosen.imgsz and model.det_imgsz == 640 else model.det_imgsz
    device = str(model.device)
    return build_detector(chosen.spec, None, det_conf, imgsz, True, device, fps), chosen
