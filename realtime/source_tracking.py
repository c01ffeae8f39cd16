"""Track ids per source over a detector shared by several sources.

A detector that tracks holds one ByteTrack state, which would mix the people of different videos. When
one detector serves many streams (realtime/multistream.py) or one worker runs many videos in turn
(realtime/batch.py), the detector is built untracked and every source gets its own tracker here.
"""

from __future__ import annotations

from realtime.types import Detections


class SourceTracker:
    """ByteTrack of one source at its frame rate; `None` tracker (tracking off) passes detections through.
    Detections that already carry ids (a boxes file with ids, the full-frame detector) keep them."""

    def __init__(self, fps: float, track: bool = True):
        self.tracker = None
        if track:
            from realtime.track import ByteTracker

            self.tracker = ByteTracker(fps)

    def __call__(self, det: Detections) -> Detections:
        if self.tracker is None or (det.count and (det.track_ids >= 0).any()):
            return det
        boxes, scores, ids = self.tracker.update(det.boxes_xyxy, det.scores)  # also on empty frames: tracks age
        return Detections(det.frame_index, boxes, scores, ids)


class TrackedDetector:
    """A detector call (frames -> Detections) with one source's own tracker, for one video at a time."""

    def __init__(self, detector, fps: float, track: bool = True):
        self.detector = detector
        self.track = SourceTracker(fps, track)
        self.name = getattr(detector, "name", "?")

    def __call__(self, frames):
        return [self.track(d) for d in self.detector(frames)]
