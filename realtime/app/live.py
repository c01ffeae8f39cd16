"""Webcam frames through the same stages as a video (the model, its detector and tracker, the One-Euro
smoother, the overlay renderer), one frame at a time on one thread: the overlay renderer's GL context
belongs to the thread that made it. The frame rate shown is that of the frames this side finished."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from realtime.app.config import RunSettings
from realtime.app.models import ModelCache, build_detector_for

LIVE_FPS = 30.0  # the tracker's and smoother's clock: a browser camera does not say its rate


class LiveProcessor:
    def __init__(self, models: ModelCache, window: int = 20):
        self.models = models
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live")
        self._finished: deque = deque(maxlen=window)
        self._state_key = None
        self._detector = self._smoother = self._renderer = None

    def __call__(self, image_rgb: np.ndarray, settings: RunSettings) -> tuple[np.ndarray, str]:
        """(overlay RGB, one status line) of one webcam frame."""
        return self._pool.submit(self._process, image_rgb, settings).result()

    def _process(self, image_rgb, settings: RunSettings):
        from realtime.detect import keep_largest
        from realtime.overlay import OverlayRenderer
        from realtime.smooth import OneEuroSmoother

        t0 = time.perf_counter()
        model = self.models.get(settings.samples, settings.steps)
        key = (id(model), settings.det_conf, settings.smooth)
        if key != self._state_key:  # new settings: a new tracker and smoother
            self._detector, _ = build_detector_for(model, settings.det_conf, LIVE_FPS)
            self._smoother = OneEuroSmoother(LIVE_FPS) if settings.smooth else None
            self._state_key = key
            self._finished.clear()
        detector = self._detector

        def detect(batch):
            return [keep_largest(d, settings.max_people) for d in detector(batch)]

        bgr = np.ascontiguousarray(np.asarray(image_rgb, np.uint8)[..., :3][..., ::-1])
        r = model.results([bgr], detector=detect)[0]
        if self._smoother is not None:
            verts, cam_t = self._smoother(r.frame.index, r.track_ids, r.verts_cam, r.cam_t_full, r.vertex_std)
            r = replace(r, verts_cam=verts, cam_t_full=cam_t)
        if self._renderer is None:
            self._renderer = OverlayRenderer(model.faces)
        overlay_rgb = np.ascontiguousarray(self._renderer(r)[..., ::-1])
        now = time.perf_counter()
        self._finished.append(now)
        return overlay_rgb, self._status(len(r.boxes_xyxy), 1000 * (now - t0))

    def _status(self, people: int, ms: float) -> str:
        fps = (len(self._finished) - 1) / (self._finished[-1] - self._finished[0]) if len(self._finished) > 1 else 0.0
        return f"live: {fps:.1f} fps, {ms:.0f} ms per frame, {people} {'person' if people == 1 else 'people'}"

    def close(self) -> None:
        def release():
            if self._renderer is not None:
                self._renderer.close()

        self._pool.submit(release).result()
        self._pool.shutdown()
