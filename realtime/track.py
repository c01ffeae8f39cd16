"""Multi-person tracking on any detections: ultralytics' own ByteTrack, fed boxes and scores directly.

    tracker = ByteTracker(frame_rate=25.0)
    boxes, scores, ids = tracker.update(boxes_xyxy, scores)   # per frame, in order; confirmed tracks only

One implementation for every detector (YOLO, precomputed boxes), so ids behave the same whichever
produced the boxes. The settings are ultralytics' packaged `bytetrack.yaml` defaults.
"""

from __future__ import annotations

import numpy as np

from realtime.errors import DetectorError
from realtime.sources import fps_or_default

REFERENCE_FPS = 30.0  # bytetrack.yaml's track_buffer is a count of frames at 30 fps


class _Dets:
    """The slice of ultralytics' `Boxes` (after `.cpu().numpy()`) that BYTETracker.update reads:
    conf, cls, xyxy, xywh, len() and boolean-mask indexing. No `xywhr` attribute: that would mean OBB."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray):
        self.xyxy, self.conf = xyxy, conf
        self.cls = np.zeros(len(conf), np.float32)  # one class: person

    @property
    def xywh(self) -> np.ndarray:
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return np.concatenate([self.xyxy[:, :2] + wh / 2, wh], 1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, mask) -> _Dets:
        return _Dets(self.xyxy[mask], self.conf[mask])


def _bytetrack_cfg():
    from ultralytics.utils import ROOT, IterableSimpleNamespace

    try:
        from ultralytics.utils import YAML

        load = YAML.load
    except ImportError:  # ultralytics before YAML class
        from ultralytics.utils import yaml_load as load
    return IterableSimpleNamespace(**load(ROOT / "cfg" / "trackers" / "bytetrack.yaml"))


class ByteTracker:
    """ByteTrack over one video: call `update` once per frame, in order (also for frames with no boxes,
    so lost tracks age). Returns the confirmed tracks matched in that frame with ids >= 0, stable over
    the video; a person's first frame is returned only in the first frame of the video (ByteTrack
    confirms a new track on its second sighting)."""

    def __init__(self, frame_rate: float = REFERENCE_FPS):
        try:
            import lap  # noqa: F401  (ByteTrack's assignment; ultralytics would try to pip-install it)
        except ImportError:
            raise DetectorError(
                "ByteTrack needs the `lap` package: pip install 'mega-rt[detect]' (or use --no-track)"
            ) from None
        try:
            from ultralytics.trackers.byte_tracker import BYTETracker
        except ImportError as e:
            raise DetectorError(
                f"tracking needs ultralytics ({e}): pip install 'mega-rt[detect]' (or use --no-track)"
            ) from None
        cfg = _bytetrack_cfg()
        # keep lost tracks for the same time, not the same frame count, whatever the video's rate
        # (older ultralytics took frame_rate itself; scaling the buffer works with either signature)
        fps = fps_or_default(frame_rate, REFERENCE_FPS)
        cfg.track_buffer = max(1, round(cfg.track_buffer * fps / REFERENCE_FPS))
        self.frame_rate = fps
        self._tracker = BYTETracker(cfg)

    def update(self, boxes_xyxy, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K,4) xyxy pixels + (K,) scores of one frame -> (boxes (N,4) float32, scores (N,) float32,
        track ids (N,) int64) of its confirmed tracks, in the order of the input rows."""
        boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
        conf = np.asarray(scores, np.float32).reshape(-1)
        out = self._tracker.update(_Dets(boxes, conf))
        if len(out) == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        idx = out[:, -1].astype(np.int64)
        order = np.argsort(idx)
        idx = idx[order]
        # the detection's own box, not the Kalman state ultralytics reports: crops follow what was
        # detected (the filter lags on fast motion), and a boxes file keeps its boxes
        ids = out[order, 4].astype(np.int64) - 1  # ultralytics counts from 1; ours from 0 like the ground truth
        return boxes[idx], conf[idx], ids
