"""Evaluation: tokenizer reconstruction, and MEGA's deterministic and stochastic modes (mm).

HMR figures are computed on camera-oriented meshes, verts = verts_canonical @ R^T with the predicted
rotation for MEGA and the true one for the ground truth, centred on their vertex mean (the official
protocol, train/metrics.py). Stochastic mode draws Q_max hypotheses per crop once; Q < Q_max uses the
first Q of them (independent draws, so any Q of them are a Q-sample), which is why best-of-Q can
only improve with Q. Baselines (`MeanMeshes`): the constant predictor, i.e. always the mean centred
camera-frame training mesh (`baseline_constant_*`: "always predicting the mean training mesh"), and
the mean canonical training mesh turned by the true rotation (`baseline_gt_rotation_*`, a stricter
baseline that is told each crop's rotation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from train import metrics


@dataclass(frozen=True)
class MeanMeshes:
    """(6890,3) means of a training set: canonical meshes, and centred camera-frame meshes."""

    canonical: torch.Tensor
    camera: torch.Tensor


def _mm(sums: dict[str, float], count: int) -> dict[str, float]:
    """Means over samples; metres become mm, `*_deg` stay degrees."""
    return {k: (1.0 if k.endswith("_deg") else 1000.0) * v / max(count, 1) for k, v in sums.items()}


def _add(sums: dict[str, float], values: dict[str, torch.Tensor]) -> None:
    for k, v in values.items():
        sums[k] = sums.get(k, 0.0) + float(v.sum())


@torch.no_grad()
def evaluate_tokenizer(
    tokenizer, verts_batches, regressor: torch.Tensor, mean_mesh: torch.Tensor | None = None
) -> dict:
    """Reconstruction through the tokens (encode -> nearest code -> decode); mm."""
    sums, n, used = {}, 0, set()
    for verts in verts_batches:
        tokens = tokenizer.encode(verts)
        used.update(tokens.flatten().tolist())
        rec = tokenizer.decode(tokens)
        _add(sums, metrics.mesh_errors(rec, verts, regressor))
        if mean_mesh is not None:
            _add(
                sums,
                {
                    f"mean_mesh_{k}": v
                    for k, v in metrics.mesh_errors(mean_mesh.expand_as(verts), verts, regressor).items()
                },
            )
        n += len(verts)
    return {"samples": n, "codes_used": len(used), **_mm(sums, n)}


@torch.no_grad()
def evaluate_hmr(mega, tokenizer, batches, regressor: torch.Tensor, samples: Sequence[int] = (1, 5, 10), steps: int | None = None,
                 temperature: float | None = None, seed: int = 0, mean_mesh: MeanMeshes | None = None,
                 progress: Callable[[int], None] | None = None, precision: str = "fp32") -> dict:  # fmt: skip
    """`batches` yields dicts with images, verts_canonical, rotmat (train/data/batches.py, no augmentation).

    `precision` "bf16": MEGA runs under bf16 autocast (the CPU speed option), the tokenizer in fp32."""
    import contextlib

    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    gen = torch.Generator().manual_seed(seed)
    q_max = max(samples) if samples else 0
    sums, n = {}, 0
    for batch in batches:
        images, gt_can, gt_rot = batch["images"], batch["verts_canonical"], batch["rotmat"]
        gt = gt_can @ gt_rot.transpose(1, 2)
        with autocast():
            out = mega(images)
        pred_can = tokenizer.decode(out.tokens)
        pred = pred_can @ out.rotmat.float().transpose(1, 2)
        values = {f"det_{k}": v for k, v in metrics.mesh_errors(pred, gt, regressor).items()}
        values["det_pve_canonical"] = metrics.pve(pred_can, gt_can)
        cos = ((out.rotmat.float() @ gt_rot.transpose(1, 2)).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
        values["rotation_error_deg"] = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))  # geodesic
        if mean_mesh is not None:
            base = mean_mesh.canonical.expand_as(gt_can)
            values["baseline_pve_canonical"] = metrics.pve(base, gt_can)
            values.update(
                {
                    f"baseline_gt_rotation_{k}": v
                    for k, v in metrics.mesh_errors(base @ gt_rot.transpose(1, 2), gt, regressor).items()
                }
            )
            values.update(
                {
                    f"baseline_constant_{k}": v
                    for k, v in metrics.mesh_errors(mean_mesh.camera.expand_as(gt), gt, regressor).items()
                }
            )
        if q_max:
            with autocast():
                gen_out, _ = mega.generate(images, samples=q_max, steps=steps, temperature=temperature, generator=gen)
            hyp = tokenizer.decode(gen_out.tokens).view(len(images), q_max, -1, 3)
            hyp = hyp @ out.rotmat.float().transpose(1, 2)[:, None]  # the rotation head does not depend on the tokens
            for q in samples:
                values.update({f"q{q}_{k}": v for k, v in metrics.stochastic_errors(hyp[:, :q], gt, regressor).items()})
        _add(sums, values)
        n += len(images)
        if progress:
            progress(n)
    return {"samples": n, **_mm(sums, n)}


def mean_training_mesh(crop_dirs: Sequence[str]) -> MeanMeshes:
    """Mean meshes of synthetic crop datasets: canonical, and camera-frame (each mesh turned by its
    rotation and centred on its vertex mean, as the metrics compare them) -- the baselines' predictions."""
    import json
    from pathlib import Path

    import numpy as np

    from train.data.npz import open_npz

    canonical, camera, count = np.zeros((6890, 3), np.float64), np.zeros((6890, 3), np.float64), 0
    for d in crop_dirs:
        index = json.loads((Path(d) / "index.json").read_text())
        for entry in index["shards"]:
            shard = open_npz(Path(d) / entry["file"])
            verts = np.asarray(shard["verts_canonical"], np.float64)
            oriented = verts @ np.asarray(shard["rotmat"], np.float64).transpose(0, 2, 1)
            canonical += verts.sum(0)
            camera += (oriented - oriented.mean(1, keepdims=True)).sum(0)
            count += len(verts)
    count = max(count, 1)
    return MeanMeshes(
        torch.from_numpy((canonical / count).astype(np.float32)), torch.from_numpy((camera / count).astype(np.float32))
    )


def evaluate_tokenizer_file(weights, synthetic_meshes: int = 500, seed: int = 12345, batch: int = 16, limit: int | None = None,
                            joint_regressor: torch.Tensor | None = None, mean_from: Sequence[str] = ()) -> dict:  # fmt: skip
    """`mega-rt eval tokenizer`: a tokenizer checkpoint on `synthetic_meshes` held-out meshes of `seed`."""
    from train.checkpoint import load_mesh_vqvae
    from train.data.joints import synthetic_joint_regressor
    from train.data.meshes import SyntheticMeshes

    mean_mesh = mean_training_mesh(mean_from) if mean_from else None
    tokenizer, _ = load_mesh_vqvae(weights)
    meshes = SyntheticMeshes(min(limit or synthetic_meshes, synthetic_meshes), seed)
    chunks = (meshes.verts(range(s, min(s + batch, len(meshes)))) for s in range(0, len(meshes), batch))
    regressor = joint_regressor if joint_regressor is not None else synthetic_joint_regressor()
    return evaluate_tokenizer(tokenizer, chunks, regressor, mean_mesh.canonical if mean_mesh is not None else None)


def evaluate_hmr_files(weights, tokenizer_weights, crop_dirs: Sequence[str] = (), npz_path: str | None = None, image_dir: str = ".",
                       smpl_model: str = "", joint_regressor: torch.Tensor | None = None, samples: Sequence[int] = (1, 5, 10),
                       steps: int | None = None, temperature: float | None = None, seed: int = 12345, batch: int = 16,
                       limit: int | None = None, mean_from: Sequence[str] = (), precision: str = "fp32",
                       progress: Callable[[int, int], None] | None = None) -> dict:  # fmt: skip
    """`mega-rt eval hmr`: MEGA and its tokenizer checkpoints on synthetic crop datasets or one 3DPW/EMDB
    npz file; `progress(done, total)` after each batch."""
    from train.checkpoint import load_mega, load_mesh_vqvae
    from train.config import TrainConfig
    from train.data.joints import synthetic_joint_regressor
    from train.stages import hmr_dataset

    mean_mesh = mean_training_mesh(mean_from) if mean_from else None
    mega, mega_cfg = load_mega(weights)
    tokenizer, _ = load_mesh_vqvae(tokenizer_weights)
    cfg = TrainConfig(stage="hmr", smpl_model=smpl_model, seed=seed)
    data = hmr_dataset(cfg, mega_cfg, mega.backbone, augment=False, crop_dirs=tuple(crop_dirs),
                       hmr_npz=(npz_path,) if npz_path else (), image_dirs=(image_dir,) if npz_path else (),
                       sequential=True)  # fmt: skip
    total = min(limit or len(data), len(data))
    batches = (data[list(range(s, min(s + batch, total)))] for s in range(0, total, batch))
    regressor = joint_regressor if joint_regressor is not None else synthetic_joint_regressor()
    return evaluate_hmr(mega, tokenizer, batches, regressor, samples, steps, temperature, seed, mean_mesh,
                        progress=(lambda n: progress(n, total)) if progress else None, precision=precision)  # fmt: skip
