"""Person detection and tracking: ultralytics YOLO, an exported detector graph, the whole frame, or
precomputed boxes; ByteTrack ids.

    detector = build_detector("train/demo_weights/detector.pt")   # or yolo11n.pt, a .yaml, a .onnx, an engine folder
    detections = detector(frames)                   # one Detections(boxes_xyxy, scores, track_ids) per frame

A detector takes the frames of a batch at once (one network call on all of them, one read-back of all
their boxes) and returns host-side (numpy) Detections in frame order; the tracker then sees the frames
one by one, in order.

YOLO detections and boxes files without ids go through the same tracker (realtime/track.py), so ids
behave alike whichever produced the boxes; a detector that tracks returns only confirmed tracks.

No detector file runs code. An ultralytics `.pt` is a pickle that can, so a `.pt` is loaded only when
train/detector.py `accept_detector_pt` accepts it (the one check, shared with `mega-rt train detector`):
mega-rt's safe format (a model yaml and tensors, read with `torch.load(weights_only=True)`), a sha256 on
the allow-list of official ultralytics files (train/detector_allowlist.json; a name such as `yolo11n.pt`
is downloaded first and checked), or a file the user vouches for (`--trust-file`, with a warning).

On a CUDA device an accepted `.pt` runs as a GraphDetector on the torch backend in this process (the
letterbox, the fp16 network and batched NMS on the device, one copy of the boxes to the host); on the
CPU it runs behind ultralytics' `predict`, which is faster there (measured on the demo detector at 320 px,
1280x720 frames in batches of 4, one thread: about 22 ms per frame against 46 ms for the graph). ONNX files
hold no code; an engine folder from `mega-rt export --detector` (or its .onnx) runs as a GraphDetector
on the torch, onnxruntime or TensorRT backend, anything else ultralytics exports runs behind its own
`YOLO(path)`. Every detector's boxes go through the same host-side ByteTracker.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from realtime.errors import DetectorError
from realtime.types import Detections, Frame


def _empty(index: int) -> Detections:
    return Detections(index, np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def track_frames(frames: list[Frame], counts, boxes_xyxy: np.ndarray, scores: np.ndarray, tracker) -> list[Detections]:
    """Per-frame Detections from a batch's boxes, stored frame after frame (`counts[i]` rows for frame i),
    through the tracker in frame order (also on frames with no boxes: lost tracks age); ids -1 without one."""
    out, start = [], 0
    for frame, n in zip(frames, counts):
        boxes, conf = boxes_xyxy[start : start + n], scores[start : start + n]
        start += n
        if tracker is not None:
            boxes, conf, ids = tracker.update(boxes, conf)
        else:
            ids = np.full(len(conf), -1, np.int64)
        out.append(
            _empty(frame.index)
            if len(boxes) == 0
            else Detections(frame.index, np.ascontiguousarray(boxes), np.ascontiguousarray(conf), ids)
        )
    return out


class FullFrameDetector:
    """One 'person' covering the whole frame (track id 0): for clips framed on a single person."""

    name = "full-frame"

    def __call__(self, frames: list[Frame]) -> list[Detections]:
        return [self._one(f) for f in frames]

    @staticmethod
    def _one(frame: Frame) -> Detections:
        h, w = frame.image_bgr.shape[:2]
        return Detections(
            frame.index,
            np.array([[0.0, 0.0, w - 1.0, h - 1.0]], np.float32),
            np.ones(1, np.float32),
            np.zeros(1, np.int64),
        )


class BoxesDetector:
    """Precomputed boxes from an npz file.

    Two layouts: the ground truth `mega-rt synth` writes (`boxes_xyxy` (F,K,4), optional `visibility`
    (F,K): person k is track k, boxes of people less than `min_visibility` visible are left out), or
    flat rows (`frame` (M,), `boxes_xyxy` (M,4), optional `track_id` (M,), `score` (M,)), e.g. another
    detector's output, or a results file of `mega-rt video` (which names the column `box_xyxy`, one row
    per person and frame), so a run can be repeated on the same boxes. Ids in the file are kept as they
    are; rows without ids (no `track_id`, or all -1) are tracked with ByteTrack at `frame_rate` unless
    `track` is off (then ids stay -1).
    """

    name = "boxes"

    def __init__(
        self, path, min_visibility: float = 0.15, min_size: float = 8.0, track: bool = True, frame_rate: float = 30.0
    ):
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise DetectorError(f"{path}: no such boxes file") from None
        except Exception as e:
            raise DetectorError(f"{path}: not a boxes npz ({e.__class__.__name__}: {e})") from None
        if "boxes_xyxy" not in data and "box_xyxy" in data and "frame" in data:
            data["boxes_xyxy"] = data["box_xyxy"]  # a mega-rt results file: its rows are boxes too
        if "boxes_xyxy" not in data:
            raise DetectorError(f"{path}: has no boxes_xyxy array (or frame + box_xyxy rows of a mega-rt results file)")
        boxes = data["boxes_xyxy"].astype(np.float32)
        if boxes.ndim not in (2, 3) or boxes.shape[-1] != 4:
            raise DetectorError(
                f"{path}: boxes_xyxy has shape {boxes.shape}; expected (frames, people, 4) or (rows, 4)"
            )
        for key in ("frame", "track_id", "score") if boxes.ndim == 2 else ():
            if key in data and data[key].shape != (len(boxes),):
                raise DetectorError(f"{path}: {key} has shape {data[key].shape} but boxes_xyxy has {len(boxes)} rows")
        from realtime.crop import BoxCheck

        self.check = BoxCheck()  # the boxes no crop can use, dropped per frame (its size known) and counted
        self.by_frame: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.tracker = None
        if boxes.ndim == 3:
            f, k = boxes.shape[:2]
            vis = data.get("visibility", np.ones((f, k), np.float32))
            for i in range(f):
                size = np.minimum(boxes[i, :, 2] - boxes[i, :, 0], boxes[i, :, 3] - boxes[i, :, 1])
                tiny = (size > 0) & (size < min_size)  # unusable boxes stay, for self.check to count
                keep = (vis[i] >= min_visibility) & ~tiny
                self.by_frame[i] = (boxes[i][keep], np.ones(keep.sum(), np.float32), np.arange(k)[keep])
        elif boxes.ndim == 2 and "frame" in data:
            frames = data["frame"].astype(np.int64)
            ids = data.get("track_id", np.full(len(frames), -1)).astype(np.int64)
            scores = data.get("score", np.ones(len(frames), np.float32)).astype(np.float32)
            for i in np.unique(frames):
                sel = frames == i
                self.by_frame[int(i)] = (boxes[sel], scores[sel], ids[sel])
            if track and len(ids) and (ids == -1).all():
                from realtime.track import ByteTracker

                self.tracker = ByteTracker(frame_rate)
        else:
            raise DetectorError(f"{path}: boxes_xyxy must be (frames, people, 4), or (rows, 4) with a frame array")

    def __call__(self, frames: list[Frame]) -> list[Detections]:
        return [self._one(f) for f in frames]

    def _one(self, frame: Frame) -> Detections:
        b, s, t = self.by_frame.get(
            frame.index, (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        )
        b, s, t = self.check(b, frame.image_bgr.shape[1], frame.image_bgr.shape[0], s, t)
        if self.tracker is not None:  # also on frames without rows: lost tracks age
            b, s, t = self.tracker.update(b, s)
        if len(b) == 0:
            return _empty(frame.index)
        return Detections(frame.index, b.copy(), s.copy(), t.copy())


class YoloDetector:
    """ultralytics YOLO (predict), person class only, tracked by our ByteTracker (ids persist across calls)."""

    name = "yolo"

    def __init__(
        self,
        weights: str,
        conf: float = 0.3,
        imgsz: int = 640,
        device: str | None = None,
        track: bool = True,
        frame_rate: float = 30.0,
        trust_file: bool = False,
    ):
        try:
            from ultralytics import YOLO
        except ImportError as e:
            raise DetectorError(f"ultralytics is not installed ({e}): pip install 'mega-rt[detect]'") from None
        # the tracker first: a missing `lap` is a one-line error before any model loads, and it imports
        # ultralytics.trackers, one of the lazy imports that must happen before an EGL context (below)
        self.tracker = None
        if track:
            from realtime.track import ByteTracker

            self.tracker = ByteTracker(frame_rate)
        path = Path(weights)
        offline = _offline()
        if path.suffix in (".pt", ".onnx", ".engine") and not path.exists() and (offline or path.parent != Path(".")):
            raise DetectorError(
                f"detector weights {weights}: not found{' (offline: YOLO_OFFLINE is set)' if offline else ''}; "
                "pass a local weights file, or --detector full-frame, or --boxes FILE"
            )
        try:
            if path.suffix == ".pt":
                self.model = load_pt(_downloaded(path), trust_file)
            else:
                self.model = YOLO(str(weights), task="detect")
        except DetectorError:
            raise
        except Exception as e:  # ultralytics raises many kinds (download, parse, format)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise DetectorError(
                f"detector {weights}: cannot be loaded ({msg}); pass a local weights file, or --detector full-frame, or --boxes FILE"
            ) from None
        self.conf, self.imgsz, self.device, self.track = conf, imgsz, device, track
        # one warm-up call does ultralytics' lazy imports (torchvision, triton; the trackers came with
        # ByteTracker above) now: importing triton after an EGL context exists crashes (seen with Mesa),
        # and the first frame should not pay it
        _keep_torch_threads()
        self.model.predict(
            np.zeros((64, 64, 3), np.uint8),
            classes=[0],
            imgsz=64,
            verbose=False,
            **({"device": device} if device else {}),
        )

    def __call__(self, frames: list[Frame]) -> list[Detections]:
        import torch

        if not frames:
            return []
        kw = dict(classes=[0], conf=self.conf, imgsz=self.imgsz, verbose=False)
        if self.device:
            kw["device"] = self.device
        _keep_torch_threads()
        results = self.model.predict([f.image_bgr for f in frames], **kw)
        per_frame = [r.boxes.data[:, :5] if r.boxes is not None else None for r in results]  # x0 y0 x1 y1 conf
        counts = [0 if d is None else int(d.shape[0]) for d in per_frame]
        present = [d for d in per_frame if d is not None]
        # every frame's boxes in one read-back (ultralytics keeps them on the device it ran on)
        rows = torch.cat(present).float().cpu().numpy() if present else np.zeros((0, 5), np.float32)
        return track_frames(frames, counts, rows[:, :4], rows[:, 4], self.tracker)


def _downloaded(path: Path) -> Path:
    """A bare official name (yolo11n.pt) not here yet: ultralytics' download, to be checked like any file."""
    if path.exists() or path.parent != Path("."):
        return path
    from ultralytics.utils.downloads import attempt_download_asset

    return Path(attempt_download_asset(str(path)))


def _accepted(path: Path, trust_file: bool) -> tuple[str, dict | None]:
    """train.detector.accept_detector_pt (the one acceptance check of detector .pt files) in the
    pipeline's words."""
    import click

    from train.detector import DetectorRefused, accept_detector_pt

    try:
        return accept_detector_pt(path, trust_file, warn=lambda line: click.echo(line, err=True))
    except DetectorRefused as e:
        hint = "; pass a local weights file, or --detector full-frame, or --boxes FILE" if not path.is_file() else ""
        raise DetectorError(f"{e}{hint}") from None


def load_pt(path: Path, trust_file: bool = False):
    """An ultralytics YOLO from a .pt that cannot run code: the safe format, an allow-listed official file,
    or (`trust_file`) any file, with a warning. Otherwise a one-line DetectorError that says why and what to do."""
    from ultralytics import YOLO

    from train.detector import ultralytics_yolo

    kind, record = _accepted(path, trust_file)
    return ultralytics_yolo(record) if kind == "safe" else YOLO(str(path), task="detect")


def pt_graph_detector(
    path: Path, imgsz: int, device, conf: float = 0.3, track: bool = True, frame_rate: float = 30.0,
    trust_file: bool = False,
) -> "GraphDetector":  # fmt: skip
    """An accepted detector .pt as a GraphDetector on the torch backend in this process (fp16 on CUDA):
    letterbox, network, NMS on the device for the frame batch and one copy of the boxes to the host."""
    import torch

    from engines.backends.base import BackendError
    from engines.detector import DetectorEngine, torch_graph
    from train.detector import safe_detector_record

    kind, record = _accepted(path, trust_file)
    if record is None:  # an allow-listed or trusted ultralytics pickle: its network, as a plain record
        record = safe_detector_record(load_pt(path, trust_file=True).model)
    device = torch.device(device or "cpu")
    try:
        backend, info = torch_graph(record, imgsz, "fp16" if device.type == "cuda" else "fp32", device)
    except BackendError as e:
        raise DetectorError(f"{path}: {e}") from None
    return GraphDetector(DetectorEngine(backend, info, str(path)), conf=conf, track=track, frame_rate=frame_rate)


class GraphDetector:
    """The detector as an engine graph (engines/detector.py) on any backend: letterbox, network, decoding
    and NMS on the device for the whole frame batch, one copy of every frame's boxes to the host, then
    our ByteTracker as for YOLO."""

    name = "graph"

    def __init__(self, engine, conf: float = 0.3, track: bool = True, frame_rate: float = 30.0):
        self.tracker = None
        if track:
            from realtime.track import ByteTracker

            self.tracker = ByteTracker(frame_rate)
        self.engine, self.conf = engine, conf
        self.name = f"graph ({engine.backend.name}, {engine.info.imgsz}px)"
        # one warm-up call: torchvision's lazy imports now, before any EGL context exists (as YOLO's)
        engine.detect([np.zeros((64, 64, 3), np.uint8)], conf)

    def __call__(self, frames: list[Frame]) -> list[Detections]:
        if not frames:
            return []
        rows = self.engine.detect([f.image_bgr for f in frames], self.conf)
        counts = np.bincount(rows[:, 0].astype(np.int64), minlength=len(frames))
        return track_frames(frames, counts, rows[:, 1:5], rows[:, 5], self.tracker)


def _keep_torch_threads():
    """ultralytics' select_device sets torch's CPU threads to its NUM_THREADS (cores - 1) on every
    predictor set-up; resetting them back and forth costs 4x on YOLO itself (OpenMP pool rebuilt), so
    make its value ours."""
    import torch
    import ultralytics.utils.torch_utils as tu

    tu.NUM_THREADS = torch.get_num_threads()


def build_detector(
    spec: str | None,
    boxes_path=None,
    conf: float = 0.3,
    imgsz: int = 640,
    track: bool = True,
    device: str | None = None,
    frame_rate: float = 30.0,
    backend: str | None = None,
    trust_file: bool = False,
    threads: int | None = None,
):
    """`--boxes FILE` wins; then 'full-frame'; then a detector engine folder (or its .onnx / .plan) on
    `backend`; anything else names YOLO weights (.pt/.yaml/.onnx/.engine). `frame_rate` is the video's
    (ByteTrack keeps a lost track for a fixed time, ~1 s)."""
    if boxes_path is not None:
        return BoxesDetector(boxes_path, track=track, frame_rate=frame_rate)
    if spec in (None, "", "full-frame"):
        return FullFrameDetector()
    if Path(spec).is_dir() or Path(spec).suffix in (".onnx", ".plan"):
        from engines.backends.base import BackendError
        from engines.detector import detector_manifest, load_detector
        from engines.manifest import EngineMismatch

        try:
            if Path(spec).is_dir() or detector_manifest(spec) is not None:
                engine = load_detector(spec, backend, device, threads)
                return GraphDetector(engine, conf=conf, track=track, frame_rate=frame_rate)
        except (BackendError, EngineMismatch) as e:
            raise DetectorError(str(e)) from None
    path = Path(spec)
    if path.suffix == ".pt" and str(device or "cpu").startswith("cuda"):
        # on a GPU the graph (one batched letterbox, fp16 network and NMS on the device) beats ultralytics'
        # per-call predict; on a CPU ultralytics' predict is faster (it letterboxes to the frame's aspect
        # with cv2), so it stays there
        if not path.exists() and path.parent == Path(".") and not _offline():
            path = _downloaded(path)
        return pt_graph_detector(path, imgsz, device, conf, track, frame_rate, trust_file)
    return YoloDetector(
        spec, conf=conf, imgsz=imgsz, device=device, track=track, frame_rate=frame_rate, trust_file=trust_file
    )


def _offline() -> bool:
    return os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true")


def keep_largest(det: Detections, max_people: int | None) -> Detections:
    """At most `max_people` detections, the largest boxes first (the rest are far away or spurious)."""
    if max_people is None or det.count <= max_people:
        return det
    b = det.boxes_xyxy
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep = np.argsort(-area, kind="stable")[:max_people]
    return Detections(det.frame_index, b[keep], det.scores[keep], det.track_ids[keep])
