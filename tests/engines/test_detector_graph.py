"""The detector as an engine graph: same boxes as ultralytics' predict, onnxruntime equal to torch,
one backend call per frame batch, and the TensorRT build (GPU only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_DETECTOR = ROOT / "train" / "demo_weights" / "detector.pt"
IMGSZ = 320


def _iou(a, b):
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, assets_dir):
    """Five consecutive frames of a `mega-rt synth` clip of three people (rendered in its own process)."""
    import cv2

    out = tmp_path_factory.mktemp("synth") / "clip.mp4"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEGA_RT_ASSETS": str(assets_dir), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "realtime.cli", "synth", str(out), "--people", "3", "--frames", "5",
                    "--seed", "21"], check=True, env=env, capture_output=True, timeout=300)  # fmt: skip
    cap = cv2.VideoCapture(str(out))
    return [cap.read()[1] for _ in range(5)]


@pytest.fixture(scope="module")
def frames(clip):
    """Three frames of different sizes."""
    import cv2

    return [clip[0], cv2.resize(clip[1], (640, 360)), clip[1][:500, :900].copy()]


@pytest.fixture(scope="module")
def record():
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from engines.detector import read_weights

    return read_weights(DEMO_DETECTOR)


@pytest.fixture(scope="module")
def torch_engine(record):
    from engines.detector import DetectorEngine, torch_graph

    return DetectorEngine(*torch_graph(record, IMGSZ))


@pytest.mark.parametrize("batch", [1, 3])
def test_graph_detector_matches_ultralytics_predict(frames, record, torch_engine, batch):
    from train.detector import ultralytics_yolo

    yolo = ultralytics_yolo(record)
    rows = torch_engine.detect(frames[:batch], conf=0.3)
    found = 0
    for i, frame in enumerate(frames[:batch]):
        want = yolo.predict(frame, imgsz=IMGSZ, conf=0.3, classes=[0], verbose=False)[0].boxes.data.numpy()
        got = rows[rows[:, 0] == i]
        assert len(got) == len(want), (got, want)
        iou = _iou(got[:, 1:5], want[:, :4])
        assert (iou.max(1) > 0.99).all(), iou
        np.testing.assert_allclose(np.sort(got[:, 5]), np.sort(want[:, 4]), atol=0.02)
        found += len(got)
    assert found >= batch  # synthetic people are there to be found


def test_an_accepted_pt_as_the_graph_gives_ultralytics_boxes_and_track_ids(clip):
    """What a .pt runs as on CUDA (there in fp16; here fp32 on the CPU): per frame the boxes of
    ultralytics' predict and, through the same host ByteTracker, the same ids."""
    from realtime.detect import GraphDetector, YoloDetector, pt_graph_detector
    from realtime.types import Frame

    graph = pt_graph_detector(DEMO_DETECTOR, IMGSZ, "cpu", conf=0.3, frame_rate=25.0)
    yolo = YoloDetector(str(DEMO_DETECTOR), conf=0.3, imgsz=IMGSZ, device="cpu", frame_rate=25.0)
    assert isinstance(graph, GraphDetector) and graph.engine.backend.name == "torch"
    seen = 0
    for start in (0, 2, 4):  # batches of 2, 2 and 1 frames, in order: the trackers see the same sequence
        batch = [Frame(i, clip[i], 0.0) for i in range(start, min(start + 2, len(clip)))]
        for got, want in zip(graph(batch), yolo(batch)):
            assert got.frame_index == want.frame_index and got.count == want.count
            if want.count:
                iou = _iou(got.boxes_xyxy, want.boxes_xyxy)  # the tracker's boxes: the raw ones are checked above
                assert (iou.max(1) > 0.97).all(), iou
                assert got.track_ids.tolist() == want.track_ids[iou.argmax(1)].tolist()
            seen += want.count
    assert seen >= 3  # confirmed tracks were reported


def test_a_pickle_is_refused_before_it_becomes_a_graph(tmp_path):
    import pickle

    from realtime.detect import DetectorError, pt_graph_detector

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    with pytest.raises(DetectorError, match="pickle that can run code"):
        pt_graph_detector(evil, IMGSZ, "cpu")
    assert not marker.exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.gpu
def test_on_cuda_a_pt_runs_as_the_fp16_graph(frames, torch_engine):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; none is visible to torch")
    from realtime.detect import GraphDetector, build_detector

    detector = build_detector(str(DEMO_DETECTOR), imgsz=IMGSZ, device="cuda", track=False)
    assert isinstance(detector, GraphDetector) and detector.engine.device.type == "cuda"
    assert next(detector.engine.backend.module.parameters()).dtype == torch.float16
    want, got = torch_engine.detect(frames, conf=0.3), detector.engine.detect(frames, conf=0.3)
    assert got.shape == want.shape
    np.testing.assert_allclose(got[:, 1:5], want[:, 1:5], atol=2.0)


def test_on_the_cpu_a_pt_runs_behind_ultralytics_predict():
    from realtime.detect import YoloDetector, build_detector

    assert isinstance(build_detector(str(DEMO_DETECTOR), imgsz=IMGSZ, device="cpu", track=False), YoloDetector)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from engines.detector import DetectorExportSpec, export_detector

    return export_detector(
        DEMO_DETECTOR,
        DetectorExportSpec(imgsz=IMGSZ, batch=(1, 2, 4)),
        tmp_path_factory.mktemp("eng"),
        progress=lambda m: None,
    )


def test_onnxruntime_detector_equals_torch(frames, torch_engine, exported):
    from engines.detector import load_detector

    assert exported.manifest.mode == "detector" and exported.manifest.parity["onnxruntime_max_abs"] < 1e-2
    ort = load_detector(exported.folder, "onnxruntime", threads=1)
    assert ort.backend.name == "onnxruntime"
    want, got = torch_engine.detect(frames, conf=0.3), ort.detect(frames, conf=0.3)
    assert got.shape == want.shape
    np.testing.assert_allclose(got[:, 0], want[:, 0])
    np.testing.assert_allclose(got[:, 1:5], want[:, 1:5], atol=0.1)
    np.testing.assert_allclose(got[:, 5], want[:, 5], atol=1e-3)


def test_detector_folder_runs_once_per_frame_batch(frames, exported):
    from realtime.detect import GraphDetector, build_detector
    from realtime.types import Frame

    for backend in ("torch", "onnxruntime"):
        detector = build_detector(str(exported.folder), backend=backend, device="cpu", threads=1, imgsz=IMGSZ)
        assert isinstance(detector, GraphDetector) and detector.engine.backend.name == backend
        calls = []
        run = detector.engine.backend.run
        detector.engine.backend.run = lambda feeds, stream=None: calls.append(feeds["images"].shape[0]) or run(feeds)
        dets = detector([Frame(i, f, 0.0) for i, f in enumerate(frames)])
        assert calls == [3]
        assert [d.frame_index for d in dets] == [0, 1, 2] and sum(d.count for d in dets) >= 3


def test_changed_detector_graph_is_refused(exported, tmp_path):
    import shutil

    from realtime.detect import DetectorError, build_detector

    folder = tmp_path / "copy"
    shutil.copytree(exported.folder, folder)
    with open(folder / "detector.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DetectorError, match="does not match its manifest"):
        build_detector(str(folder), backend="onnxruntime")


@pytest.mark.tensorrt
def test_tensorrt_detector_plan_matches_torch(frames, torch_engine, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'mega-rt[tensorrt]', NVIDIA GPU)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from engines.detector import DetectorExportSpec, export_detector, load_detector

    result = export_detector(
        DEMO_DETECTOR, DetectorExportSpec("tensorrt", "fp16", IMGSZ, (1, 2, 4)), tmp_path, progress=print
    )
    trt = load_detector(result.folder, "tensorrt")
    want, got = torch_engine.detect(frames, conf=0.3), trt.detect(frames, conf=0.3)
    assert got.shape == want.shape
    np.testing.assert_allclose(got[:, 1:5], want[:, 1:5], atol=2.0)
