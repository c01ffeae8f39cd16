"""`mega-rt train detector` with `model: some.pt` (fine-tuning) goes through the pipeline's acceptance
check (train/detector.py accept_detector_pt): safe format, allow-listed sha256, or --trust-file."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_DETECTOR = ROOT / "train" / "demo_weights" / "detector.pt"


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _train(config: Path, cwd: Path, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "realtime.cli", "train", "detector", "--config", str(config), *extra],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def test_fine_tuning_from_an_unlisted_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    config = tmp_path / "det.yaml"
    config.write_text(f"stage: detector\nmodel: {evil}\nout_dir: {tmp_path / 'run'}\ndata_dir: {tmp_path / 'data'}\n")
    r = _train(config, tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "refused" in lines[0] and "--trust-file" in lines[0] and "evil.pt" in lines[0], r.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_the_same_check_accepts_what_the_pipeline_accepts(tmp_path, monkeypatch):
    import hashlib
    import json

    import train.detector as det

    kind, record = det.accept_detector_pt(DEMO_DETECTOR)
    assert kind == "safe" and record["format"] == det.SAFE_FORMAT
    other = tmp_path / "other.pt"
    other.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(det.DetectorRefused, match="not on the allow-list"):
        det.accept_detector_pt(other)
    warned = []
    assert det.accept_detector_pt(other, trust_file=True, warn=warned.append) == ("trusted", None)
    assert len(warned) == 1 and "can run code" in warned[0]
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps({"files": {"other.pt": {"sha256": hashlib.sha256(other.read_bytes()).hexdigest()}}}))
    monkeypatch.setattr(det, "ALLOWLIST", listed)
    assert det.accept_detector_pt(other) == ("allow-listed", None)


def test_a_safe_format_start_keeps_its_weights(tmp_path):
    """Fine-tuning from the safe format starts from exactly its weights (handed to ultralytics as a .pt
    made from the record)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from train.detector import DetectorTrainConfig, accept_detector_pt, initial_model

    accepted = accept_detector_pt(DEMO_DETECTOR)
    yolo = initial_model(DetectorTrainConfig(model=str(DEMO_DETECTOR)), tmp_path, accepted)
    state = yolo.model.state_dict()
    for k, v in accepted[1]["state_dict"].items():
        assert (state[k].float() - v.float()).abs().max() == 0, k
