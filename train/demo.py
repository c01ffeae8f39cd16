"""The demo weights: a small MEGA + Mesh-VQ-VAE trained on synthetic data on a CPU, shipped in the package
(train/demo_weights/) so the main job runs before a user fetches the official weights.

They are the `final.pt` of the tokenizer and hmr stages of the configs train/train_demo_weights.sh runs, stored in
float16 to halve their size (float32 when loaded) with their configs embedded, and a manifest that
records the command that made them and what they measured. Reproduce with
`train/train_demo_weights.sh` (EXPORT_DEMO_WEIGHTS=1), which lays the run out as runs/demo/{tokenizer,hmr}.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

DEMO_DIR = Path(__file__).resolve().parent / "demo_weights"
MEGA_FILE, TOKENIZER_FILE, MANIFEST_FILE = "mega.pt", "tokenizer.pt", "manifest.json"


def demo_weights(folder: Path = DEMO_DIR) -> tuple[Path, Path]:
    """(MEGA checkpoint, tokenizer checkpoint) of the shipped demo; an error naming the fix if absent."""
    from train.checkpoint import CheckpointError

    mega, tokenizer = folder / MEGA_FILE, folder / TOKENIZER_FILE
    if not (mega.is_file() and tokenizer.is_file()):
        raise CheckpointError(f"{folder}: demo weights missing; rebuild them with train/train_demo_weights.sh")
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
    tmp = dest.with_name(dest.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(dest)
    return dest


def export(run_dir: Path, dest: Path = DEMO_DIR, extra: dict | None = None) -> dict:
    """run_dir/{tokenizer,hmr}/final.pt -> dest/{tokenizer,mega}.pt + manifest.json."""
    files = {TOKENIZER_FILE: run_dir / "tokenizer" / "final.pt", MEGA_FILE: run_dir / "hmr" / "final.pt"}
    manifest = {"source": str(run_dir), "command": "train/train_demo_weights.sh", "files": {}, **(extra or {})}
    for name, src in files.items():
        if not src.is_file():
            raise FileNotFoundError(f"{src}: not found; train the stage first (train/train_demo_weights.sh)")
        out = half_copy(src, dest / name)
        manifest["files"][name] = {"bytes": out.stat().st_size, "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}
    (dest / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def evaluation_summary(eval_dir: Path) -> dict:
    """The figures of `mega-rt eval` JSON files in `eval_dir`, and whether the demo's targets are met:
    tokenizer PVE <= 10 mm; HMR deterministic PVE <= half the PVE of the mean training mesh."""
    figures = {p.stem: json.loads(p.read_text()) for p in sorted(eval_dir.glob("*.json"))}
    tok, hmr = figures.get("tokenizer_demo_fp16", {}), figures.get("hmr_demo_fp16", {})
    targets = {}
    if "pve" in tok:
        targets["tokenizer_pve_le_10mm"] = tok["pve"] <= 10.0
    if "det_pve" in hmr and "baseline_constant_pve" in hmr:
        # the target: always predicting the mean (camera-frame) training mesh
        targets["hmr_det_pve_le_half_mean_mesh"] = hmr["det_pve"] <= 0.5 * hmr["baseline_constant_pve"]
    if "det_pve" in hmr and "baseline_gt_rotation_pve" in hmr:
        # stricter, reported too: the mean canonical mesh given each crop's true rotation
        targets["hmr_det_pve_le_half_mean_mesh_with_true_rotation"] = hmr["det_pve"] <= 0.5 * hmr["baseline_gt_rotation_pve"]
        targets["hmr_det_pve_canonical_le_half_mean_mesh"] = hmr["det_pve_canonical"] <= 0.5 * hmr["baseline_pve_canonical"]
    return {"eval": figures, "targets": targets}


if __name__ == "__main__":
    # python -m train.demo RUN_DIR [EVAL_DIR]: export the weights, then (with EVAL_DIR) record the figures
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/synthetic")
    if len(sys.argv) > 2:
        manifest = json.loads((DEMO_DIR / MANIFEST_FILE).read_text())
        manifest.update(evaluation_summary(Path(sys.argv[2])))
        (DEMO_DIR / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    else:
        manifest = export(run)
    print(json.dumps({k: v for k, v in manifest.items() if k != "eval"}, indent=1))
