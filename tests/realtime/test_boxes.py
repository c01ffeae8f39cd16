"""`--boxes`: a `mega-rt video` results file gives its own boxes and ids back, frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.detect import BoxesDetector
from realtime.errors import DetectorError
from realtime.types import Frame


def _frames(n):
    return [Frame(index=i, image_bgr=np.zeros((120, 160, 3), np.uint8), captured_s=0.0) for i in range(n)]


def test_a_results_file_is_read_as_boxes_rows(tmp_path):
    path = tmp_path / "run.npz"
    boxes = np.array([[10, 20, 50, 90], [60, 10, 90, 80], [12, 22, 52, 92]], np.float32)
    np.savez(
        path,
        frame=np.array([0, 0, 2], np.int32),
        box_xyxy=boxes,
        track_id=np.array([3, 5, 3]),
        score=np.array([0.9, 0.8, 0.7], np.float32),
    )
    det = BoxesDetector(path)(_frames(3))
    assert [d.count for d in det] == [2, 0, 1]
    np.testing.assert_array_equal(det[0].boxes_xyxy, boxes[:2])
    assert det[0].track_ids.tolist() == [3, 5] and det[2].track_ids.tolist() == [3]
    np.testing.assert_allclose(det[0].scores, [0.9, 0.8])


def test_a_file_without_boxes_names_both_layouts(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, box_xyxy=np.zeros((2, 4), np.float32))  # no frame column: not rows
    with pytest.raises(DetectorError, match="box_xyxy rows of a mega-rt results file"):
        BoxesDetector(path)
