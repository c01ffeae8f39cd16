"""No detector file runs code: pickles are refused unless allow-listed or trusted; the demo detector is
pickle-free; boxes files never unpickle."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _video(path: Path) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    for i in range(2):
        w.write(np.full((64, 96, 3), 40 * i, np.uint8))
    w.release()
    return path


def _run(args, tmp_path, assets_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["MEGA_RT_ASSETS"] = str(assets_dir)
    return subprocess.run(
        [sys.executable, "-m", "realtime.cli", *map(str, args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_evil_pickle_detector_is_refused_without_running(tmp_path, assets_dir):
    import pickle

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    r = _run(
        ["video", _video(tmp_path / "in.mp4"), "--out", tmp_path / "o.mp4", "--detector", evil, "--no-progress"],
        tmp_path,
        assets_dir,
    )
    assert r.returncode != 0
    assert not marker.exists()
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "pickle that can run code" in lines[0] and "--trust-file" in lines[0] and "evil.pt" in lines[0]


@pytest.fixture(scope="module")
def random_yolo_pt(tmp_path_factory):
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("yolo") / "random.pt"
    YOLO("yolo11n.yaml", task="detect").save(str(path))
    return path


def test_unlisted_ultralytics_pt_is_refused_then_trusted(tmp_path, assets_dir, random_yolo_pt):
    video = _video(tmp_path / "in.mp4")
    args = [
        "video",
        video,
        "--out",
        tmp_path / "o.mp4",
        "--detector",
        random_yolo_pt,
        "--no-progress",
        "--max-frames",
        "1",
    ]
    refused = _run(args, tmp_path, assets_dir)
    assert refused.returncode == 2
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{random_yolo_pt}: refused" in lines[0], refused.stderr
    trusted = _run(args + ["--trust-file", "--det-imgsz", "64"], tmp_path, assets_dir)
    assert trusted.returncode == 0, trusted.stderr
    assert "warning:" in trusted.stderr and "--trust-file" in trusted.stderr
    assert (tmp_path / "o.mp4").is_file()


def test_allowlisted_sha_loads_without_trust(tmp_path, random_yolo_pt, monkeypatch):
    import train.detector
    from realtime.detect import DetectorError, load_pt

    with pytest.raises(DetectorError, match="not on the allow-list"):
        load_pt(random_yolo_pt)
    listed = tmp_path / "list.json"
    sha = hashlib.sha256(random_yolo_pt.read_bytes()).hexdigest()
    listed.write_text(json.dumps({"files": {"random.pt": {"sha256": sha, "source": "test"}}}))
    monkeypatch.setattr(train.detector, "ALLOWLIST", listed)
    assert load_pt(random_yolo_pt).model is not None


def test_allowlist_entries_are_sha256_digests():
    from train.detector import allowed_sha256

    digests = allowed_sha256()
    assert "yolo11n.pt" in digests.values()
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in digests)


def test_demo_detector_is_safe_format_and_matches_its_manifest():
    from train.demo import DEMO_DIR
    from train.detector import read_safe_detector

    path = DEMO_DIR / "detector.pt"
    record = read_safe_detector(path)  # torch.load(weights_only=True)
    assert record is not None and record["yaml"]["nc"] == 1
    manifest = json.loads((DEMO_DIR / "detector.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["bytes"] == path.stat().st_size


def test_safe_format_round_trip_keeps_the_outputs(tmp_path):
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics import YOLO

    from train.detector import (
        DetectorTrainingError,
        check_same_outputs,
        read_safe_detector,
        safe_detector_record,
        write_safe_detector,
    )

    model = YOLO("yolo11n.yaml", task="detect").model
    record = safe_detector_record(model.half())  # as ultralytics stores its weights
    dest = write_safe_detector(record, tmp_path / "safe.pt", check=lambda back: check_same_outputs(model, back, 64))
    back = read_safe_detector(dest)
    assert check_same_outputs(model, back, 64) == 0.0
    head = [k for k in back["state_dict"] if k.startswith("model.23.cv3.") and k.endswith(".bias")]  # class scores
    for k in head:
        back["state_dict"][k] = back["state_dict"][k] + 1.0
    with pytest.raises(DetectorTrainingError, match="differs from its source"):
        check_same_outputs(model, back, 64)
    assert read_safe_detector(tmp_path / "missing.pt") is None
    torch.save({"format": "other"}, tmp_path / "other.pt")
    assert read_safe_detector(tmp_path / "other.pt") is None


def test_boxes_file_with_objects_is_not_unpickled(tmp_path):
    from realtime.detect import BoxesDetector, DetectorError

    path = tmp_path / "boxes.npz"
    np.savez(path, boxes_xyxy=np.array([{"a": 1}], dtype=object), frame=np.zeros(1))
    with pytest.raises(DetectorError, match="not a boxes npz"):
        BoxesDetector(path)
