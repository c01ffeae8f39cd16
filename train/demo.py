"""The demo weights: a small MEGA + Mesh-VQ-VAE trained on synthetic data on a CPU, shipped in the package
(train/demo_weights/) so the main job runs before a user fetches the official weights.

They are the `final.pt` of the tokenizer and hmr stages of configs/train_*_synthetic.yaml, stored in
float16 to halve their size (float32 when loaded) with their configs embedded, and a manifest that
records the command that made them and what they measured. Reproduce with
`scripts/train_demo_weights.sh`, then `python -m train.demo runs/synthetic`.
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
        raise CheckpointError(f"{folder}: demo weights missing; rebuild them with scripts/train_demo_weights.sh")
    return mega, tokenizer


def half_copy(src: Path, dest: Path) -> Path:
    """Copy a checkpoint with floating-point tensors stored as float16 (loaders cast back to float32)."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    ckpt["stored_dtype"] = "float16"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(dest)
    return dest


def export(run_dir: Path, dest: Path = DEMO_DIR, extra: dict | None = None) -> dict:
    """run_dir/{tokenizer,hmr}/final.pt -> dest/{tokenizer,mega}.pt + manifest.json."""
    files = {TOKENIZER_FILE: run_dir / "tokenizer" / "final.pt", MEGA_FILE: run_dir / "hmr" / "final.pt"}
    manifest = {"source": str(run_dir), "files": {}, **(extra or {})}
    for name, src in files.items():
        if not src.is_file():
            raise FileNotFoundError(f"{src}: not found; train the stage first (scripts/train_demo_weights.sh)")
        out = half_copy(src, dest / name)
        manifest["files"][name] = {"bytes": out.stat().st_size, "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}
    (dest / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


if __name__ == "__main__":
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/synthetic")
    extra = json.loads(Path(sys.argv[2]).read_text()) if len(sys.argv) > 2 else None
    print(json.dumps(export(run, extra=extra), indent=1))
