"""The person detector as one more engine graph: the YOLO network exported to ONNX (-> TensorRT plan)
and run on any backend (torch, onnxruntime, TensorRT), with the letterbox before it and the decoding
and NMS after it on the same device.

    folder = export_detector("train/demo_weights/detector.pt", DetectorExportSpec(imgsz=320)).folder
    graph = load_detector(folder, backend="onnxruntime")            # DetectorEngine
    rows = graph.detect([frame_bgr, ...], conf=0.3)                 # (K, 6) host rows: frame, x0 y0 x1 y1, score

The graph itself is only the network (`images` (B,3,S,S) float32 RGB in [0,1] -> `preds` (B,4+nc,A)
float32: boxes as centre x, y, width, height in input pixels, then class scores), so every backend runs
the same fixed-shape tensor program. The letterbox has ultralytics' LetterBox geometry (scale to fit,
centred, padded with 114) so the boxes match ultralytics' predict; NMS is torchvision's batched_nms with
one group per frame. Weights come only from the safe detector format (train/detector.py SAFE_FORMAT).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engines.backends.base import BackendError, TensorSpec
from engines.manifest import EngineMismatch, Manifest, check_files

GRAPH, INPUT, OUTPUT = "detector", "images", "preds"
PAD_VALUE = 114.0  # ultralytics' LetterBox padding grey
FORMATS = ("onnx", "tensorrt")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


class DetectorGraph(nn.Module):
    """The export-only detector graph: the fused YOLO network at a fixed precision, float32 at both ends."""

    def __init__(self, model: nn.Module, precision: str = "fp32"):
        super().__init__()
        model = copy.deepcopy(model).float().eval()
        model = (
            model.fuse(verbose=False) if hasattr(model, "fuse") else model
        )  # conv+bn folded, as ultralytics' predict
        model.model[-1].export = True  # the head returns its decoded predictions alone
        self.dtype = PRECISIONS[precision]
        self.model = model.to(self.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.to(self.dtype)).float()


@dataclass(frozen=True)
class DetectorInfo:
    """What the graph is: input side, classes, anchors (the fixed shapes of its tensors)."""

    imgsz: int
    names: dict
    strides: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def num_anchors(self) -> int:
        return sum((self.imgsz // int(s)) ** 2 for s in self.strides)

    def specs(self) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
        return (
            {INPUT: TensorSpec(INPUT, "float32", (-1, 3, self.imgsz, self.imgsz))},
            {OUTPUT: TensorSpec(OUTPUT, "float32", (-1, 4 + self.num_classes, self.num_anchors))},
        )

    def as_dict(self) -> dict:
        return {"imgsz": self.imgsz, "names": {str(k): v for k, v in self.names.items()}, "strides": list(self.strides)}

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorInfo":
        return cls(int(d["imgsz"]), {int(k): v for k, v in d["names"].items()}, tuple(float(s) for s in d["strides"]))


def read_weights(path) -> dict:
    """The SAFE_FORMAT record of a detector file, or a one-line BackendError saying what to do."""
    from train.detector import read_safe_detector

    record = read_safe_detector(path)
    if record is None:
        raise BackendError(
            f"{path}: not a detector in mega-rt's safe format (an ultralytics .pt is a pickle and is not exported "
            "from); use train/demo_weights/detector.pt or the final.pt of `mega-rt train detector`"
        )
    return record


def check_imgsz(imgsz: int, strides) -> None:
    top = int(max(strides))
    if imgsz < top or imgsz % top:
        raise BackendError(f"detector input size {imgsz}: must be a multiple of {top} (the network's largest stride)")


def torch_graph(record: dict, imgsz: int, precision: str = "fp32", device=None):
    """(TorchBackend of the detector graph, DetectorInfo) from a SAFE_FORMAT record."""
    from engines.backends.torch_backend import TorchBackend
    from train.detector import detection_model

    info = DetectorInfo(imgsz, dict(record["names"]), tuple(record["stride"]))
    check_imgsz(imgsz, info.strides)
    ins, outs = info.specs()
    backend = TorchBackend(DetectorGraph(detection_model(record), precision), ins, outs, GRAPH, device or "cpu")
    return backend, info


def _frames_tensor(frames_bgr, device) -> list[torch.Tensor]:
    """Frames (numpy (H,W,3) uint8 BGR, or device tensors, or one (N,H,W,3) tensor) as device uint8 tensors."""
    if isinstance(frames_bgr, torch.Tensor):
        return list(frames_bgr.to(device, non_blocking=True).unbind(0))
    return [
        f.to(device, non_blocking=True) if isinstance(f, torch.Tensor) else torch.from_numpy(f).to(device)
        for f in frames_bgr
    ]


def letterbox(frames_bgr, imgsz: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames -> (images (N,3,S,S) float32 RGB in [0,1], geometry (N,6): gain x, gain y, pad x, pad y,
    width, height), on `device`. ultralytics' LetterBox: scale to fit (each side rounded), centre,
    pad with 114; bilinear resize without antialiasing (cv2's INTER_LINEAR), rounded to uint8 levels.
    Frames of one size are resized in one call."""
    import torch.nn.functional as F

    frames = _frames_tensor(frames_bgr, device)
    n = len(frames)
    images = torch.full((n, 3, imgsz, imgsz), PAD_VALUE, dtype=torch.float32, device=device)
    geometry = []
    by_shape: dict[tuple, list[int]] = {}
    for i, f in enumerate(frames):
        by_shape.setdefault(tuple(f.shape[:2]), []).append(i)
    for (h, w), rows in by_shape.items():
        r = min(imgsz / h, imgsz / w)
        new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
        left, top = round((imgsz - new_w) / 2 - 0.1), round((imgsz - new_h) / 2 - 0.1)
        x = torch.stack([frames[i] for i in rows]).permute(0, 3, 1, 2).flip(1).float()  # BGR -> RGB, NCHW
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False).round_().clamp_(0, 255)
        images[rows, :, top : top + new_h, left : left + new_w] = x
        for i in rows:
            geometry.append((i, [new_w / w, new_h / h, float(left), float(top), float(w), float(h)]))
    geometry = torch.tensor([g for _, g in sorted(geometry)], dtype=torch.float32).to(device, non_blocking=True)
    return images.div_(255.0), geometry


def postprocess(
    preds: torch.Tensor,
    geometry: torch.Tensor,
    conf: float,
    iou: float = 0.7,
    max_det: int = 300,
    class_id: int = 0,
) -> torch.Tensor:
    """preds (N,4+nc,A) -> rows (K,6) [frame, x0, y0, x1, y1, score] in frame pixels, on the device,
    grouped by frame and best first. As ultralytics' NMS: each anchor's best class, kept when it is
    `class_id` and scores above `conf`; NMS per frame; at most `max_det` per frame; clipped to the frame."""
    from torchvision.ops import batched_nms

    scores, best = preds[:, 4:, :].max(1)  # (N, A)
    frame, anchor = ((scores > conf) & (best == class_id)).nonzero(as_tuple=True)
    xywh = preds[frame, :4, anchor]
    boxes = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    score = scores[frame, anchor]
    keep = batched_nms(boxes, score, frame, iou)  # best first
    keep = keep[torch.sort(frame[keep], stable=True).indices]  # grouped by frame, best first within
    f = frame[keep]
    counts = torch.bincount(f, minlength=preds.shape[0])
    rank = torch.arange(len(keep), device=preds.device) - (counts.cumsum(0) - counts)[f]
    keep, f = keep[rank < max_det], f[rank < max_det]
    g = geometry[f]
    boxes = (boxes[keep] - g[:, [2, 3, 2, 3]]) / g[:, [0, 1, 0, 1]]
    boxes = torch.minimum(boxes.clamp_(min=0), g[:, [4, 5, 4, 5]])
    return torch.cat([f[:, None].float(), boxes, score[keep, None]], 1)


class DetectorEngine:
    """A detector graph on one backend, with its letterbox and postprocess on the backend's device."""

    def __init__(self, backend, info: DetectorInfo, source: str = ""):
        self.backend, self.info, self.source = backend, info, source

    @property
    def device(self) -> torch.device:
        return self.backend.device

    def detect_device(self, frames_bgr, conf: float, iou: float = 0.7, max_det: int = 300) -> torch.Tensor:
        """Frames -> (K,6) rows on the device (frame, x0, y0, x1, y1, score); no copy to the host."""
        images, geometry = letterbox(frames_bgr, self.info.imgsz, self.device)
        preds = self.backend.run({INPUT: images})[OUTPUT].to(self.device)
        return postprocess(preds, geometry, conf, iou, max_det)

    def detect(self, frames_bgr, conf: float, iou: float = 0.7, max_det: int = 300):
        """The rows of `detect_device` on the host (numpy float32), in one copy."""
        return self.detect_device(frames_bgr, conf, iou, max_det).cpu().numpy()


# --- export -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorExportSpec:
    format: str = "onnx"
    precision: str = "fp32"
    imgsz: int = 640
    batch: tuple[int, int, int] = (1, 4, 8)  # frames per call: min, opt, max (the TensorRT profile)
    opset: int = 18
    workspace_gib: float = 2.0

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"detector format {self.format!r}: use {', '.join(FORMATS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"detector precision {self.precision!r}: use fp32 or fp16")
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"batch {lo}:{opt}:{hi}: need 1 <= min <= opt <= max")

    def name(self, runtime_key: str = "") -> str:
        lo, opt, hi = self.batch
        return "-".join(
            [self.format, self.precision, f"s{self.imgsz}", f"b{lo}-{opt}-{hi}"]
            + ([runtime_key] if runtime_key else [])
        )


@dataclass
class DetectorExport:
    folder: Path
    manifest: Manifest
    seconds: float


def export_detector(weights, spec: DetectorExportSpec, root: Path | None = None, progress=print) -> DetectorExport:
    """A safe-format detector -> `<root>/detector-<sha8>/<spec name>/` with detector.onnx (and
    detector.plan for TensorRT) and a manifest of mode "detector" (engines.manifest)."""
    from engines.export import engines_root, software_versions
    from engines.onnx_export import export_graph, file_sha256

    t_start = time.perf_counter()
    weights = Path(weights).resolve()
    record = read_weights(weights)
    sha = file_sha256(weights)
    trt_info = None
    if spec.format == "tensorrt":
        from engines.trt_build import runtime_info

        trt_info = runtime_info()
    cuda = torch.cuda.is_available()
    # fp16 is traced on the GPU where there is one (half convolutions on a CPU are slow, not wrong)
    module, info = torch_graph(
        record, spec.imgsz, spec.precision, "cuda" if cuda and spec.precision == "fp16" else "cpu"
    )
    root = Path(root) if root is not None else engines_root()
    folder = root / f"detector-{sha[:8]}" / spec.name(trt_info.key if trt_info else "")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)  # a half-rewritten folder must not look valid
    progress(f"detector: exporting ONNX ({spec.precision}, {spec.imgsz}x{spec.imgsz}, opset {spec.opset})")
    example = torch.rand(2, 3, spec.imgsz, spec.imgsz, generator=torch.Generator().manual_seed(0)).to(module.device)
    entry = export_graph(module.module, {INPUT: example}, (OUTPUT,), folder / f"{GRAPH}.onnx", spec.opset)
    entry["onnx"] = entry["file"]
    profile = {INPUT: [[b, 3, spec.imgsz, spec.imgsz] for b in spec.batch]}
    if trt_info is not None:
        from engines.trt_build import PlanTarget, build_plan

        progress(f"detector: building TensorRT {trt_info.tensorrt_version} plan for {trt_info.gpu_name}")
        target = PlanTarget(
            folder / f"{GRAPH}.plan",
            {INPUT: tuple(tuple(s) for s in profile[INPUT])},
            int(spec.workspace_gib * (1 << 30)),
            engines_root() / "timing" / f"{trt_info.key}.cache",
        )
        entry.update(build_plan(folder / f"{GRAPH}.onnx", target, log=progress), file=f"{GRAPH}.plan")
        entry["sha256"] = file_sha256(folder / entry["file"])
    entry.update(profile=profile, detector=info.as_dict())
    lo, opt, hi = spec.batch
    manifest = Manifest(
        format=spec.format,
        precision=spec.precision,
        mode="detector",
        graphs={GRAPH: entry},
        batch=list(spec.batch),
        mega_config={},
        mega_config_hash="",
        mesh_config={},
        mesh_config_hash="",
        weights={"detector": {"path": str(weights), "sha256": sha}},
        weights_hash=sha,
        normalisation={
            "layout": "NCHW",
            "channels": "RGB",
            "scale": 1 / 255,
            "input_hw": [spec.imgsz, spec.imgsz],
            "letterbox": {"pad_value": PAD_VALUE, "centre": True},
        },  # fmt: skip
        software=software_versions(spec.opset),
        rebuild_command=(
            f"mega-rt export --detector {weights} --format {spec.format} --precision {spec.precision} "
            f"--det-imgsz {spec.imgsz} --batch {lo}:{opt}:{hi}"
        ),
        tensorrt=(
            {
                "version": trt_info.tensorrt_version,
                "gpu_name": trt_info.gpu_name,
                "compute_capability": trt_info.compute_capability,
                "workspace_bytes": int(spec.workspace_gib * (1 << 30)),
            }
            if trt_info
            else None
        ),  # fmt: skip
    )
    manifest.parity = _parity(folder / entry["onnx"], module, spec.imgsz)
    progress(f"detector: onnxruntime vs torch max |preds| difference {manifest.parity.get('onnxruntime_max_abs', '-')}")
    manifest.write(folder)
    return DetectorExport(folder, manifest, time.perf_counter() - t_start)


def _parity(onnx_path: Path, module, imgsz: int) -> dict:
    """The exported ONNX against the torch graph on one random batch (skipped without onnxruntime)."""
    from engines.backends.base import BackendUnavailable
    from engines.backends.onnxruntime_backend import OnnxRuntimeBackend

    try:
        ort = OnnxRuntimeBackend(onnx_path, GRAPH, providers=["CPUExecutionProvider"])
    except BackendUnavailable:
        return {}
    x = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(1))
    want = module.run({INPUT: x.to(module.device)})[OUTPUT].float().cpu()
    got = ort.run({INPUT: x})[OUTPUT]
    return {"onnxruntime_max_abs": float((want - got).abs().max()), "batch": 2}


# --- loading ----------------------------------------------------------------------------------------


def detector_manifest(path) -> tuple[Path, Manifest] | None:
    """(folder, manifest) when `path` is a detector engine folder or a graph file inside one, else None."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not (folder / "manifest.json").is_file():
        return None
    manifest = Manifest.read(folder)
    return (folder, manifest) if manifest.mode == "detector" else None


def load_detector(path, backend: str | None = None, device=None, threads: int | None = None) -> DetectorEngine:
    """A detector engine folder (or its .onnx / .plan) on `backend`: torch (rebuilt from the safe
    weights the manifest names, fp16 on CUDA), onnxruntime (the .onnx) or tensorrt (the .plan).
    Default: the one the folder was exported for."""
    from engines.load import load_backend

    found = detector_manifest(path)
    if found is None:
        raise EngineMismatch(
            f"{path}: not a detector engine (no manifest of mode 'detector'); make one with `mega-rt export --detector FILE`"
        )
    folder, manifest = found
    check_files(manifest, folder)
    entry = manifest.graphs[GRAPH]
    info = DetectorInfo.from_dict(entry["detector"])
    backend = backend or ("onnxruntime" if manifest.format == "onnx" else "tensorrt")
    if backend == "torch":
        from engines.onnx_export import file_sha256

        w = manifest.weights["detector"]
        if not Path(w["path"]).is_file() or file_sha256(w["path"]) != w["sha256"]:
            raise EngineMismatch(
                f"{folder}: the torch backend rebuilds from {w['path']}, which is missing or changed; rebuild: {manifest.rebuild_command}"
            )
        device = torch.device(device or "cpu")
        graph, _ = torch_graph(read_weights(w["path"]), info.imgsz, "fp16" if device.type == "cuda" else "fp32", device)
    elif backend == "onnxruntime":
        graph = load_backend(folder / entry["onnx"], GRAPH, threads=threads)
    elif backend == "tensorrt":
        if manifest.format != "tensorrt":
            raise BackendError(
                f"{folder} holds an ONNX detector; build a plan with `mega-rt export --detector FILE --format tensorrt`"
            )
        graph = load_backend(folder / entry["file"], GRAPH)
    else:
        raise BackendError(f"unknown backend {backend!r} (torch, onnxruntime, tensorrt)")
    return DetectorEngine(graph, info, str(folder))


def time_detector(engine: DetectorEngine, frames_bgr, conf: float = 0.3, repeats: int = 5) -> dict:
    """Median ms per call and per frame of the whole detector step (letterbox, network, NMS, the copy
    to the host) on a batch of frames, after one warm-up call."""
    import statistics

    engine.detect(frames_bgr, conf)
    times = []
    for _ in range(repeats):
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
        t0 = time.perf_counter()
        engine.detect(frames_bgr, conf)  # ends in the copy to the host: the device is done
        times.append((time.perf_counter() - t0) * 1000)
    ms = statistics.median(times)
    return {"ms_per_call": round(ms, 2), "ms_per_frame": round(ms / len(frames_bgr), 2), "frames": len(frames_bgr)}
