"""The demo weights: a small MEGA + Mesh-VQ-VAE trained on synthetic data on a CPU, shipped in the package
(train/demo_weights/) so the main job runs before a user fetches the official weights, and the YOLO
detector of synthetic people.

They are the `final.pt` of the last tokenizer and hmr runs of the recipe configs/recipes/synthetic_demo.yaml,
stored in float16 to halve their size (float32 when loaded) with their configs embedded, and a manifest that
records the command that made them and what they measured. Reproduce with
`mega-rt train --recipe configs/recipes/synthetic_demo.yaml --package` (docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from train.io import atomic_write, write_json_atomic

DEMO_DIR = Path(__file__).resolve().parent / "demo_weights"
MEGA_FILE, TOKENIZER_FILE, MANIFEST_FILE = "mega.pt", "tokenizer.pt", "manifest.json"
DETECTOR_FILE, DETECTOR_MANIFEST = "detector.pt", "detector.json"
RECIPE = "configs/recipes/synthetic_demo.yaml"
COMMAND = f"mega-rt train --recipe {RECIPE} --package"


def demo_weights(folder: Path = DEMO_DIR) -> tuple[Path, Path]:
    """(MEGA checkpoint, tokenizer checkpoint) of the shipped demo; an error naming the fix if absent."""
    from train.checkpoint import CheckpointError

    mega, tokenizer = folder / MEGA_FILE, folder / TOKENIZER_FILE
    if not (mega.is_file() and tokenizer.is_file()):
        raise CheckpointError(f"{folder}: demo weights missing; rebuild them with `{COMMAND}`")
    return mega, tokenizer


def half_copy(src: Path, dest: Path) -> Path:
    """Copy a checkpoint with floating-point tensors stored as float16 (loaders cast back to float32)."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    # keys that name one tensor (the Mesh-VQ-VAE's encoder.model.* / decoder.model.*) must stay one
    # tensor, or torch.save would store them twice
    halves: dict[tuple, torch.Tensor] = {}
    ckpt["model"] = {
        k: halves.setdefault((v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)), v.half())
        if v.is_floating_point() else v
        for k, v in ckpt["model"].items()
    }  # fmt: skip
    ckpt["stored_dtype"] = "float16"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest) as tmp:
        torch.save(ckpt, tmp)
    return dest


def _file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def export(tokenizer_src: Path, mega_src: Path, dest: Path = DEMO_DIR, extra: dict | None = None) -> dict:
    """A tokenizer and a MEGA final.pt -> dest/{tokenizer,mega}.pt (float16) + manifest.json."""
    sources = {TOKENIZER_FILE: Path(tokenizer_src), MEGA_FILE: Path(mega_src)}
    manifest = {"recipe": RECIPE, "command": COMMAND, "source": {k: str(v) for k, v in sources.items()}, "files": {}}
    for name, src in sources.items():
        if not src.is_file():
            raise FileNotFoundError(f"{src}: not found; train the run first (`mega-rt train --recipe {RECIPE}`)")
        manifest["files"][name] = _file_record(half_copy(src, dest / name))
    manifest.update(extra or {})
    write_json_atomic(dest / MANIFEST_FILE, manifest)
    return manifest


def export_detector(src: Path, dest: Path = DEMO_DIR) -> dict:
    """A `mega-rt train detector` run's final.pt (and the metrics.json beside it) -> dest/detector.pt +
    detector.json. The pipeline's score of the shipped detector (`score_*`, measured with `mega-rt score`)
    is kept only while the file is the one it was measured on."""
    src = Path(src)
    metrics_path = src.parent / "metrics.json"
    for p in (src, metrics_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not found; train the detector first (`mega-rt train --recipe {RECIPE}`)")
    metrics = json.loads(metrics_path.read_text())
    from train.detector import read_safe_detector

    if read_safe_detector(src) is None:
        raise FileNotFoundError(
            f"{src}: not a detector in the safe format; train it again with `mega-rt train --recipe {RECIPE}`"
        )
    out = dest / DETECTOR_FILE
    with atomic_write(out) as tmp:
        shutil.copyfile(src, tmp)
    record = _file_record(out)
    old_path = dest / DETECTOR_MANIFEST
    old = json.loads(old_path.read_text()) if old_path.is_file() else {}
    kept = {k: v for k, v in old.items() if k.startswith("score_")} if old.get("sha256") == record["sha256"] else {}
    manifest = {
        "file": DETECTOR_FILE,
        "what": "ultralytics YOLO11n trained from yolo11n.yaml on synthetic scenes; finds synthetic people only",
        "recipe": RECIPE, "command": COMMAND, "source": str(src),
        "validation": {k: v for k, v in metrics.items() if k.startswith("metrics/")},
        "train_wall_s": metrics.get("wall_s_this_invocation"),
        **kept, **record,
    }  # fmt: skip
    write_json_atomic(old_path, manifest)
    return manifest


def evaluation_summary(figures: dict[str, dict]) -> dict:
    """The figures of `mega-rt eval` results by name, and whether the demo's targets are met by the
    shipped files: tokenizer PVE <= 10 mm; HMR deterministic PVE <= half the PVE of the mean training mesh."""
    tok, hmr = figures.get("tokenizer_demo_fp16", {}), figures.get("hmr_demo_fp16", {})
    targets = {}
    if "pve" in tok:
        targets["tokenizer_pve_le_10mm"] = tok["pve"] <= 10.0
    if "det_pve" in hmr and "baseline_constant_pve" in hmr:
        # always predicting the mean (camera-frame) training mesh
        targets["hmr_det_pve_le_half_mean_mesh"] = hmr["det_pve"] <= 0.5 * hmr["baseline_constant_pve"]
    if "det_pve" in hmr and "baseline_gt_rotation_pve" in hmr:
        # stricter, reported too: the mean canonical mesh given each crop's true rotation
        targets["hmr_det_pve_le_half_mean_mesh_with_true_rotation"] = (
            hmr["det_pve"] <= 0.5 * hmr["baseline_gt_rotation_pve"]
        )
        targets["hmr_det_pve_canonical_le_half_mean_mesh"] = (
            hmr["det_pve_canonical"] <= 0.5 * hmr["baseline_pve_canonical"]
        )
    return {"eval": dict(sorted(figures.items())), "targets": targets}
