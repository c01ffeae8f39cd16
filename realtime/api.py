"""The Python API: the pipeline's stages (detector, crop, MEGA, pose, read-back) behind one object.

    from realtime import MeshRecovery

    model = MeshRecovery.from_pretrained("hrnet", device="cuda")   # or "demo", or a checkpoint path
    people = model(frame_bgr)                                       # one (H,W,3) uint8 BGR frame
    per_frame = model(frames, boxes=[boxes_xyxy, ...])              # a batch, with your own boxes
    for frame in model.stream("clip.mp4"):                          # a file, camera index or URL
        frame.people

Weights are resolved as for `mega-rt video` (realtime/weights.py); the work per batch is
realtime.pipeline.submit_batch, the same call the CLI's pipeline makes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Person:
    """One person in one frame; camera frame: OpenCV (x right, y down, z forward), metres."""

    box_xyxy: np.ndarray  # (4,) pixels
    score: float
    track_id: int  # -1 without a tracker
    vertices: np.ndarray  # (6890,3) in the camera frame
    faces: np.ndarray  # (13776,3) int, shared by every person
    rotation: np.ndarray  # (3,3) canonical body -> camera
    cam_t: np.ndarray  # (3,) the body's translation in the full image's camera
    joints: np.ndarray | None  # (J,3) camera frame, when a joint regressor was given
    vertex_std: np.ndarray | None  # (6890,) metres, stochastic mode (samples > 1)


@dataclass(frozen=True)
class FramePeople:
    index: int
    image_bgr: np.ndarray
    people: list


class MeshRecovery:
    """MEGA on frames. Build it with `from_pretrained`; call it on frames; `stream` a source."""

    def __init__(self, regressor, faces, weights, detector_spec="yolo11n.pt", det_conf=0.3, det_imgsz=640,
                 joint_regressor=None, device="cpu"):  # fmt: skip
        from realtime.collect import Collector
        from realtime.crop import Cropper
        from realtime.timing import Timer

        spec = regressor.spec
        self.regressor = regressor
        self.faces = faces
        self.weights = weights  # realtime.weights.WeightsChoice: what runs and where it came from
        self.device = regressor.device
        self.detector_spec, self.det_conf, self.det_imgsz = detector_spec, det_conf, det_imgsz
        self.joint_regressor = joint_regressor
        self._cropper = Cropper(spec.input_hw, spec.mean, spec.std, regressor.device)
        self._collector = Collector(regressor.device)
        self._timer = Timer()
        self._detector = None
        self._next_index = 0

    @classmethod
    def from_pretrained(
        cls,
        name: str = "hrnet",
        device: str | None = None,
        mesh_weights: str | None = None,
        samples: int = 1,
        steps: int | None = None,
        seed: int = 0,
        detector: str = "yolo11n.pt",
        det_conf: float = 0.3,
        det_imgsz: int = 640,
        regressor: str | None = None,
        download: bool | None = None,
        precision: str = "auto",
        max_batch: int = 32,
    ) -> MeshRecovery:
        """`name`: an official backbone ('hrnet', 'resnet', 'vit': the cache, fetched on first use),
        'demo' (synthetic people only), or a MEGA checkpoint path. `detector`: YOLO weights (loaded on
        the first call without boxes), 'demo' or 'full-frame'. `regressor`: a J_regressor_*.npy for joints.
        `download=None`: unless MEGA_RT_OFFLINE is set."""
        import torch

        from realtime.infer import build_regressor, load_models
        from realtime.official import BACKBONES
        from realtime.weights import load_regressor_file, resolve_weights
        from train.assets import find_asset
        from train.synthetic.body import TEMPLATE_ASSET, read_template_ply

        if name in BACKBONES:
            choice = resolve_weights("official", name, mesh_weights, download)
        else:
            choice = resolve_weights(name, None, mesh_weights, download)
        if choice.warning:
            import warnings

            warnings.warn(choice.warning, stacklevel=2)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if precision == "auto":
            precision = "fp16" if device.startswith("cuda") else "fp32"
        models, _ = load_models(choice.mega, choice.mesh)
        reg = build_regressor(models, "torch", None, samples, steps, None, max_batch, device, seed, None, precision)
        _, faces = read_template_ply(find_asset(TEMPLATE_ASSET))
        joints = load_regressor_file(regressor).numpy() if regressor else None
        return cls(reg, faces, choice, detector, det_conf, det_imgsz, joints, device)

    def __call__(self, frames, boxes=None):
        """People of one frame (an (H,W,3) uint8 BGR array) -> list[Person]; of a list of frames ->
        list[list[Person]]. `boxes`: (K,4) xyxy pixels for one frame, or one such array per frame;
        without them the detector runs (its tracker gives ids across calls)."""
        single = isinstance(frames, np.ndarray) and frames.ndim == 3
        images = [frames] if single else list(frames)
        if boxes is not None:
            boxes = [boxes] if single else list(boxes)
            if len(boxes) != len(images):
                raise ValueError(f"boxes: {len(boxes)} arrays for {len(images)} frames (one (K,4) array per frame)")
        batch = [self._frame(img) for img in images]
        out = self._people(batch, boxes)
        return out[0] if single else out

    def results(self, images, detector=None) -> list:
        """The pipeline's FrameResult of each (H,W,3) uint8 BGR image: what realtime/overlay.py and the
        sinks take. `detector`: a pipeline detector (frames -> Detections) instead of the model's own."""
        batch = [self._frame(img) for img in images]
        return self._people(batch, None, detections=detector(batch) if detector else None, results=True)

    @staticmethod
    def fit_smpl(
        results: str,
        smpl_model: str,
        smooth_weight: float = 0.0,
        device: str = "cpu",
        out: str | None = None,
        correspondence: str | None = None,
    ):
        """SMPL parameters for every track of a results file (`mega-rt fit`): writes `<stem>_smpl.npz`
        (docs/results-format.md) and returns its arrays. `correspondence`: the SMPL <-> SMPL-X vertex map
        an SMPL-X model needs (`mega-rt fit --correspondence`)."""
        import os

        from realtime.fit_smpl import (
            BodyModel,
            FitConfig,
            FitError,
            fit_results,
            load_correspondence,
            smpl_results_name,
            write_smpl_npz,
        )

        cfg = FitConfig(smooth_weight=smooth_weight, device=device)
        target = out or smpl_results_name(results)
        inputs = [os.path.realpath(p) for p in (results, smpl_model, correspondence) if p]
        if os.path.realpath(target) in inputs:
            raise FitError(f"{target}: is an input; choose another out")
        vertex_map = load_correspondence(correspondence, device) if correspondence else None
        arrays = fit_results(results, BodyModel(smpl_model, cfg.num_betas, device), cfg, correspondence=vertex_map)
        write_smpl_npz(target, arrays)
        return arrays

    def stream(self, source, max_frames: int | None = None, live: bool | None = None):
        """Yield FramePeople for every frame of a file, camera index ('0') or URL; a live source drops
        frames when the model is behind."""
        from realtime.sources import VideoSource

        source = str(source)
        live = (source.isdigit() or "://" in source) if live is None else live
        src = VideoSource(source, live=live, max_frames=max_frames)
        src.start()
        try:
            for frame in src:
                for r in self._people([frame], None, detections=None, results=True):
                    yield FramePeople(frame.index, frame.image_bgr, self._persons(r))
        finally:
            src.stop()

    # -- the stages -------------------------------------------------------------------------------

    def _frame(self, image):
        from realtime.types import Frame

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frame: expected an (H,W,3) uint8 BGR image, got {image.dtype} {image.shape}")
        frame = Frame(self._next_index, np.ascontiguousarray(image), time.perf_counter())
        self._next_index += 1
        return frame

    def _detections(self, batch, boxes):
        from realtime.types import Detections

        if boxes is not None:
            out = []
            for frame, b in zip(batch, boxes):
                b = np.asarray(b, np.float32).reshape(-1, 4)
                out.append(Detections(frame.index, b, np.ones(len(b), np.float32), np.full(len(b), -1, np.int64)))
            return out
        if self._detector is None:
            from realtime.detect import build_detector
            from realtime.weights import resolve_detector

            chosen = resolve_detector(self.detector_spec)
            imgsz = chosen.imgsz if chosen.imgsz and self.det_imgsz == 640 else self.det_imgsz
            self._detector = build_detector(chosen.spec, None, self.det_conf, imgsz, True, str(self.device))
        return self._detector(batch)

    def _people(self, batch, boxes, detections=None, results=False):
        from realtime.pipeline import submit_batch

        dets = detections or self._detections(batch, boxes)
        frame_results = submit_batch(batch, dets, self._cropper, self.regressor, self._collector, self._timer).result()
        return frame_results if results else [self._persons(r) for r in frame_results]

    def _persons(self, r) -> list[Person]:
        people = []
        for i in range(r.boxes_xyxy.shape[0]):
            verts = r.verts_cam[i]
            joints = self.joint_regressor @ verts if self.joint_regressor is not None else None
            people.append(
                Person(
                    r.boxes_xyxy[i].copy(),
                    float(r.scores[i]),
                    int(r.track_ids[i]),
                    verts,
                    self.faces,
                    r.rotmat[i],
                    r.cam_t_full[i],
                    joints,
                    r.vertex_std[i] if r.vertex_std is not None else None,
                )  # fmt: skip
            )
        return people
