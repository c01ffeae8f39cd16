"""Tracking on any detections (realtime/track.py, BoxesDetector without ids, YOLO predict + ByteTrack).

Ground truth from the project's own synthetic clip (per-person boxes and visibility); realistic
detections made from it: boxes jittered by a few % of their size, rows shuffled, ~10 % missed, a few
low-score false positives, no ids. The tracker must give every person one id.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.helpers import write_scene_clip

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")

try:  # at collection, before any test makes an EGL context: importing triton (via torchvision) after one crashes
    import torchvision.ops  # noqa: F401
    import ultralytics.trackers  # noqa: F401
except ImportError:
    pass

pytest.importorskip("ultralytics")
pytest.importorskip("lap")

FPS = 25.0
MIN_VIS = 0.15  # BoxesDetector's default: people less visible than this are not "detectable"


@pytest.fixture(scope="module")
def gt_clip(tmp_path_factory, assets_dir):
    """3 people, 30 frames, 320x240: (video, ground-truth npz)."""
    from train.synthetic.scene import SceneConfig

    out = tmp_path_factory.mktemp("track") / "clip.mp4"
    return write_scene_clip(out, SceneConfig(width=320, height=240, frames=30, people=3, seed=7, fps=FPS))


def noisy_detections(gt_npz, seed: int = 0, jitter: float = 0.03, miss: float = 0.1, false_positives: float = 0.3):
    """Flat detector-like rows from the ground truth: (frame (M,), boxes (M,4), score (M,), person (M,)),
    person -1 for a false positive (kept only for checking, never given to the tracker)."""
    rng = np.random.default_rng(seed)
    with np.load(gt_npz) as z:
        gt, vis, (w, h) = z["boxes_xyxy"].astype(np.float32), z["visibility"], z["image_size_wh"].tolist()
    frames, boxes, scores, people = [], [], [], []
    for f in range(gt.shape[0]):
        rows = []
        for k in range(gt.shape[1]):
            if vis[f, k] < MIN_VIS or rng.random() < miss:
                continue
            b = gt[f, k]
            size = np.array([b[2] - b[0], b[3] - b[1]] * 2, np.float32)
            rows.append((b + rng.normal(0, jitter, 4).astype(np.float32) * size, rng.uniform(0.5, 0.95), k))
        if rng.random() < false_positives:  # background clutter: small, low score, anywhere
            x, y, s = rng.uniform(0, w - 30), rng.uniform(0, h - 50), rng.uniform(15, 30)
            rows.append((np.array([x, y, x + s, y + 1.6 * s], np.float32), rng.uniform(0.05, 0.2), -1))
        for i in rng.permutation(len(rows)):
            frames.append(f)
            boxes.append(rows[i][0])
            scores.append(rows[i][1])
            people.append(rows[i][2])
    return (
        np.array(frames, np.int64),
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(scores, np.float32),
        np.array(people, np.int64),
    )


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), -1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], -1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def identity_report(gt_npz, tracked: dict[int, tuple[np.ndarray, np.ndarray]]):
    """Match each frame's tracked boxes to the ground truth (greedy, best IoU first, IoU >= 0.5) and
    return ({person: [id per matched frame, in frame order]}, number of tracked rows matching nobody)."""
    with np.load(gt_npz) as z:
        gt, vis = z["boxes_xyxy"].astype(np.float32), z["visibility"]
    ids_of = {k: [] for k in range(gt.shape[1])}
    unmatched = 0
    for f, (boxes, ids) in sorted(tracked.items()):
        people = np.flatnonzero(vis[f] >= MIN_VIS)
        iou = _iou(boxes, gt[f, people]) if len(boxes) and len(people) else np.zeros((len(boxes), len(people)))
        matched = 0
        while iou.size and iou.max() >= 0.5:
            r, c = np.unravel_index(iou.argmax(), iou.shape)
            ids_of[int(people[c])].append(int(ids[r]))
            iou[r, :], iou[:, c] = -1, -1
            matched += 1
        unmatched += len(boxes) - matched
    return ids_of, unmatched


def assert_one_id_per_person(ids_of: dict[int, list[int]], unmatched: int):
    dominant = {}
    for k, ids in ids_of.items():
        assert len(ids) >= 10, f"person {k} tracked in only {len(ids)} frames"
        values, counts = np.unique(ids, return_counts=True)
        dominant[k] = int(values[counts.argmax()])
        assert counts.max() >= 0.9 * len(ids), f"person {k}: ids {ids}"
    assert len(set(dominant.values())) == len(dominant), f"people share an id: {dominant}"
    switches = sum(int(np.count_nonzero(np.diff(ids))) for ids in ids_of.values())
    assert switches <= 1, f"{switches} id switches: {ids_of}"
    assert unmatched <= 2, f"{unmatched} tracked boxes match no person (false positives tracked)"


def test_bytetracker_gives_each_person_one_id(gt_clip):
    from realtime.track import ByteTracker

    _, npz = gt_clip
    frames, boxes, scores, _ = noisy_detections(npz)
    tracker, tracked = ByteTracker(FPS), {}
    for f in range(int(np.load(npz)["boxes_xyxy"].shape[0])):
        b, s, ids = tracker.update(boxes[frames == f], scores[frames == f])
        assert b.shape == (len(ids), 4) and s.shape == ids.shape and ids.dtype == np.int64 and (ids >= 0).all()
        assert len(set(ids.tolist())) == len(ids)  # one box per id and frame
        tracked[f] = (b, ids)
    assert_one_id_per_person(*identity_report(npz, tracked))


@pytest.mark.parametrize("ids_column", ["absent", "all -1"])
def test_boxes_file_without_ids_is_tracked(gt_clip, tmp_path, ids_column):
    from realtime.detect import BoxesDetector
    from realtime.types import Frame

    _, npz = gt_clip
    frames, boxes, scores, _ = noisy_detections(npz, seed=1)
    extra = {} if ids_column == "absent" else {"track_id": np.full(len(frames), -1, np.int64)}
    np.savez(tmp_path / "dets.npz", frame=frames, boxes_xyxy=boxes, score=scores, **extra)
    det = BoxesDetector(tmp_path / "dets.npz", frame_rate=FPS)
    tracked = {}
    for f in range(int(np.load(npz)["boxes_xyxy"].shape[0])):
        (d,) = det([Frame(f, np.zeros((240, 320, 3), np.uint8), 0.0)])
        assert d.boxes_xyxy.shape == (d.count, 4) and d.track_ids.dtype == np.int64 and (d.track_ids >= 0).all()
        tracked[f] = (d.boxes_xyxy, d.track_ids)
    assert_one_id_per_person(*identity_report(npz, tracked))


def test_boxes_file_with_ids_keeps_them_and_no_track_leaves_minus_one(tmp_path):
    from realtime.detect import build_detector
    from realtime.types import Frame

    frames = np.array([0, 0, 1, 1, 2], np.int64)
    boxes = np.array(
        [[10, 10, 50, 90], [100, 20, 140, 100], [12, 10, 52, 90], [300, 5, 310, 9], [11, 11, 51, 91]], np.float32
    )
    ids = np.array([7, 3, 7, 4, 7], np.int64)  # one-frame id 4 and a tiny box: a tracker would drop it
    np.savez(tmp_path / "ids.npz", frame=frames, boxes_xyxy=boxes, track_id=ids, score=np.full(5, 0.2, np.float32))
    np.savez(tmp_path / "no_ids.npz", frame=frames, boxes_xyxy=boxes)
    with_ids, untracked = (
        build_detector(None, tmp_path / "ids.npz"),
        build_detector(None, tmp_path / "no_ids.npz", track=False),
    )
    assert with_ids.tracker is None and untracked.tracker is None
    for f in range(3):
        frame = Frame(f, np.zeros((240, 320, 3), np.uint8), 0.0)
        (a,), (b,) = with_ids([frame]), untracked([frame])
        np.testing.assert_array_equal(a.boxes_xyxy, boxes[frames == f])
        assert a.track_ids.tolist() == ids[frames == f].tolist()
        np.testing.assert_array_equal(b.boxes_xyxy, boxes[frames == f])
        assert b.track_ids.tolist() == [-1] * int((frames == f).sum())


def test_frame_rate_scales_how_long_a_lost_track_is_kept():
    from realtime.track import ByteTracker

    assert ByteTracker(30.0)._tracker.max_frames_lost == 30
    assert ByteTracker(60.0)._tracker.max_frames_lost == 60
    assert ByteTracker(0.0)._tracker.max_frames_lost == 30  # unknown rate: the 30 fps default


@pytest.mark.parametrize("track", [True, False], ids=["track", "no-track"])
def test_yolo_predict_then_track_returns_consistent_detections(gt_clip, track):
    """Random-weight yolo11n.yaml (no download) through predict + ByteTracker. Random weights detect
    nobody, so the head's person logit is raised to make it fire everywhere: boxes then reach the tracker."""
    import cv2

    from realtime.detect import YoloDetector
    from realtime.types import Frame

    video, _ = gt_clip
    det = YoloDetector("yolo11n.yaml", imgsz=160, device="cpu", track=track, frame_rate=FPS)
    backend = det.model.predictor.model  # AutoBackend; the torch model it runs is its .model
    heads = [m for m in getattr(backend, "model", backend).modules() if type(m).__name__ == "Detect"]
    assert heads, "no Detect head in the warmed-up predictor's model"
    with torch.no_grad():
        for conv in heads[0].cv3:
            conv[-1].bias[0] = 8.0  # person probability ~1 at every anchor
    cap = cv2.VideoCapture(str(video))
    frames = [Frame(i, cap.read()[1], 0.0) for i in range(4)]
    dets = det(frames[:1]) + det(frames[1:])  # one frame, then a batch of three in one predict call
    seen = []
    for i, d in enumerate(dets):
        assert (
            d.frame_index == i
            and d.boxes_xyxy.shape == (d.count, 4)
            and d.scores.shape == d.track_ids.shape == (d.count,)
        )
        assert d.boxes_xyxy.dtype == d.scores.dtype == np.float32 and d.track_ids.dtype == np.int64
        assert ((d.track_ids >= 0) if track else (d.track_ids == -1)).all()
        seen.append(d.count)
    assert len(dets) == 4 and min(seen) > 0
