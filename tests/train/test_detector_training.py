"""The synthetic detection dataset (train/synthetic/detection.py) and `mega-rt train detector` (train/detector.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from realtime.cli import main
from train.config import ConfigError, load_config
from train.detector import DetectorTrainConfig
from train.synthetic.detection import DetectionDatasetConfig, write_detection_dataset, yolo_label_lines


def test_yolo_label_lines_by_hand():
    boxes = np.array([[100, 50, 200, 350], [0, 0, 4, 100], [300, 10, 340, 90]], np.float32)
    lines = yolo_label_lines(boxes, np.array([0.9, 1.0, 0.05]), (640, 360), min_visibility=0.1, min_box_px=6)
    # the 4-px-wide sliver and the 5 %-visible person are left out
    assert lines == [f"0 {150 / 640:.6f} {200 / 360:.6f} {100 / 640:.6f} {300 / 360:.6f}"]


@pytest.fixture(scope="module")
def detection_dataset(tmp_path_factory, model, renderer):
    out = tmp_path_factory.mktemp("det")
    index = write_detection_dataset(
        out, DetectionDatasetConfig(samples=4, val_samples=2, image_wh=(160, 96), max_people=3, seed=5), body=model
    )
    return out, index


def test_detection_dataset_layout_and_labels(detection_dataset):
    import cv2

    out, index = detection_dataset
    assert json.loads((out / "index.json").read_text()) == index
    assert index["images"] == {"train": 4, "val": 2} and index["classes"] == ["person"]
    people, images = 0, {}
    for split, n in (("train", 4), ("val", 2)):
        names = sorted(p.stem for p in (out / "images" / split).glob("*.jpg"))
        assert names == sorted(p.stem for p in (out / "labels" / split).glob("*.txt")) and len(names) == n
        for stem in names:
            image = cv2.imread(str(out / "images" / split / f"{stem}.jpg"))
            assert image.shape == (96, 160, 3)
            images[split, stem] = image
            for line in (out / "labels" / split / f"{stem}.txt").read_text().splitlines():
                cls, *box = line.split()
                cx, cy, w, h = map(float, box)
                assert cls == "0" and 0 < w <= 1 and 0 < h <= 1 and 0 <= cx - w / 2 + 1e-6 and cx + w / 2 <= 1 + 1e-6
                people += 1
    assert people == index["labelled_people"] > 0
    # validation scenes are other scenes than the training ones
    assert not any(
        np.array_equal(images["val", v], images["train", t]) for v in ("000000", "000001") for t in ("000000", "000001")
    )
    assert not list(out.rglob(".*partial*"))


def test_detector_config_is_strict(tmp_path):
    good = tmp_path / "d.yaml"
    good.write_text("stage: detector\nepochs: 2\nimgsz: 64\n")
    assert load_config(good, DetectorTrainConfig).epochs == 2
    for text, message in (("stage: hmr\n", "stage must be 'detector'"), ("imgsz: 100\n", "multiple of 32"),
                          ("model: yolo.txt\n", "model yaml"), ("epoch: 3\n", "unknown key")):  # fmt: skip
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(bad, DetectorTrainConfig)


def test_train_detector_end_to_end_writes_weights_the_pipeline_loads(detection_dataset, tmp_path):
    # One epoch at 64 px on six images: proves the path (dataset -> ultralytics -> final.pt with the
    # config embedded -> the pipeline's YOLO detector), not accuracy.
    import torch

    from realtime.detect import build_detector

    data_dir, _ = detection_dataset
    cfg = tmp_path / "det.yaml"
    cfg.write_text(
        f"stage: detector\nout_dir: {tmp_path / 'run'}\ndata_dir: {data_dir}\nepochs: 1\nimgsz: 64\nbatch: 2\nthreads: 1\nmosaic: 0.0\n"
    )
    result = CliRunner().invoke(main, ["train", "detector", "--config", str(cfg), "--no-progress"])
    assert result.exit_code == 0, result.output
    final = tmp_path / "run" / "final.pt"
    ckpt = torch.load(final, map_location="cpu", weights_only=True)  # final.pt is the safe format
    assert ckpt["mega_rt_config"]["epochs"] == 1 and "data_dir" in ckpt["mega_rt_config_text"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stage"] == "detector" and "metrics/mAP50" in metrics
    detector = build_detector(str(final))
    assert detector is not None
    # a second run into the same folder is refused in one line; --resume of a finished run too
    again = CliRunner().invoke(main, ["train", "detector", "--config", str(cfg), "--no-progress"])
    assert again.exit_code == 2 and "already lives here" in again.output and "Traceback" not in again.output
    finished = CliRunner().invoke(main, ["train", "detector", "--config", str(cfg), "--resume", "--no-progress"])
    assert finished.exit_code == 2 and "run is finished" in finished.output and "Traceback" not in finished.output, (
        finished.output
    )


def test_train_detector_without_a_dataset_is_a_one_line_error(tmp_path):
    cfg = tmp_path / "det.yaml"
    cfg.write_text(f"stage: detector\nout_dir: {tmp_path / 'run'}\ndata_dir: {tmp_path / 'none'}\n")
    result = CliRunner().invoke(main, ["train", "detector", "--config", str(cfg)])
    assert result.exit_code == 2 and "--detection-dataset" in result.output and "Traceback" not in result.output


def test_train_detector_with_an_unknown_model_is_a_one_line_error(detection_dataset, tmp_path):
    cfg = tmp_path / "det.yaml"
    cfg.write_text(
        f"stage: detector\nout_dir: {tmp_path / 'run'}\ndata_dir: {detection_dataset[0]}\nmodel: yolo99z.yaml\n"
    )
    result = CliRunner().invoke(main, ["train", "detector", "--config", str(cfg)])
    assert result.exit_code == 2 and "yolo99z.yaml" in result.output and "Traceback" not in result.output, result.output


def test_portable_checkpoint_names_no_folder_of_this_machine(tmp_path):
    from types import SimpleNamespace

    from train.detector import portable_checkpoint

    model = SimpleNamespace(args={"project": str(tmp_path / "runs" / "det"), "data": "rel/data.yaml", "epochs": 3})
    ckpt = {"train_args": {"save_dir": str(tmp_path / "runs" / "det" / "yolo"), "model": "/elsewhere/y.yaml"},
            "model": model, "ema": None, "git": {"root": str(tmp_path)}}  # fmt: skip
    out = portable_checkpoint(ckpt, tmp_path)
    assert out["train_args"] == {"save_dir": "runs/det/yolo", "model": "/elsewhere/y.yaml"}  # only paths under root
    assert model.args == {"project": "runs/det", "data": "rel/data.yaml", "epochs": 3} and "git" not in out
