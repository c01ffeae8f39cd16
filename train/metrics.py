"""Evaluation metrics in the official MEGA protocol (mega/utils/eval.py), per sample, in metres.

Meshes are compared after centring both on their vertex mean (MEGA predicts no translation; its
ground truth is centred the same way). Joints come from a regressor (J, 6890) applied to the centred
meshes. Multiply by 1000 for the millimetres the papers report.
"""

from __future__ import annotations

import torch

from train.geometry import procrustes_align


def _centred(verts: torch.Tensor) -> torch.Tensor:
    return verts - verts.mean(-2, keepdim=True)


def pve(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,V,3) x2 -> (B,) mean per-vertex error."""
    return (_centred(pred) - _centred(gt)).norm(dim=-1).mean(-1)


def mpjpe(pred: torch.Tensor, gt: torch.Tensor, regressor: torch.Tensor) -> torch.Tensor:
    """(B,V,3) x2, regressor (J,V) -> (B,) mean per-joint error."""
    return (regressor @ _centred(pred) - regressor @ _centred(gt)).norm(dim=-1).mean(-1)


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor, regressor: torch.Tensor) -> torch.Tensor:
    """(B,) mean per-joint error after similarity (Procrustes) alignment of the predicted joints."""
    pj, gj = regressor @ pred, regressor @ gt
    return (procrustes_align(pj.double(), gj.double()).to(gj.dtype) - gj).norm(dim=-1).mean(-1)


def mesh_errors(pred: torch.Tensor, gt: torch.Tensor, regressor: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"pve", "mpjpe", "pa_mpjpe"} -> (B,) each."""
    return {"pve": pve(pred, gt), "mpjpe": mpjpe(pred, gt, regressor), "pa_mpjpe": pa_mpjpe(pred, gt, regressor)}


def stochastic_errors(samples: torch.Tensor, gt: torch.Tensor, regressor: torch.Tensor) -> dict[str, torch.Tensor]:
    """samples (B,Q,V,3), gt (B,V,3) -> per-sample (B,) figures of Q hypotheses:

    `best_<m>`: the best of the Q hypotheses for metric m (each metric takes its own best, as the
    official evaluation); `mean_<m>`: the error of the mean mesh of the Q hypotheses;
    `sample_<m>`: the average error of one hypothesis; `vertex_std`: per vertex, the RMS distance of
    the Q hypotheses to their mean, averaged over vertices.
    """
    b, q = samples.shape[:2]
    flat = mesh_errors(samples.flatten(0, 1), gt.repeat_interleave(q, 0), regressor)
    mean_mesh = _centred(samples).mean(1)
    out = {}
    for name, err in flat.items():
        err = err.view(b, q)
        out[f"best_{name}"] = err.min(1).values
        out[f"sample_{name}"] = err.mean(1)
    for name, err in mesh_errors(mean_mesh, gt, regressor).items():
        out[f"mean_{name}"] = err
    spread = (_centred(samples) - mean_mesh[:, None]).pow(2).sum(-1).mean(1).sqrt()  # (B,V)
    out["vertex_std"] = spread.mean(-1)
    return out
