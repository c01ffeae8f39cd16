"""Write the files the Blender proof imports, and what their vertices must be: run with the project's
Python (torch, smplx, pygltflib), `python -m tests.blender.make_files DIR`; test_blender_import.py reads
DIR with bpy in its own environment (`make test-blender`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from realtime.anim.world import to_world
from realtime.cli import main
from realtime.fit_smpl import BodyModel
from tests.helpers import ASSETS
from tests.realtime.smpl_fixtures import FPS, known_motion, smpl_model_file, write_results

TRACK = 3
FRAMES = np.array([2, 3, 4, 6, 7])  # a gap at frame 5


def make(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model = BodyModel(smpl_model_file(folder, ASSETS))
    truth = known_motion(model, len(FRAMES), seed=8)
    verts = truth["verts"].numpy()
    std = np.abs(np.random.default_rng(1).normal(0, 0.03, verts.shape[:2]))
    results = write_results(folder / "clip_mega.npz", verts, FRAMES, [TRACK] * len(FRAMES), model.faces, vertex_std=std)
    run = CliRunner()
    for args in (
        ["fit", str(results), "--smpl-model", str(folder / "SMPL_NEUTRAL.pkl"), "--device", "cpu"],
        ["export-anim", str(results), "--format", "glb", "--out", str(folder / "skinned")],
        ["export-anim", str(results), "--format", "glb", "--no-smpl", "--out", str(folder / "morph")],
        ["export-anim", str(results), "--format", "bvh", "--out", str(folder / "bvh")],
        ["export-anim", str(results), "--format", "pc2", "--out", str(folder / "pc2")],
    ):
        r = run.invoke(main, args)
        print(r.output.strip())
        if r.exit_code:
            raise SystemExit(f"mega-rt {' '.join(args[:1])} failed: {r.output}{r.stderr}")
    fit = np.load(folder / "clip_mega_smpl.npz")
    with torch.no_grad():
        fitted, _ = model.forward(
            *(torch.from_numpy(fit[k]) for k in ("global_orient", "body_pose", "betas", "transl"))
        )
    exact = to_world(verts.astype(np.float16).astype(np.float32))
    np.savez(
        folder / "expected.npz", frames=FRAMES, fps=np.float32(FPS), skinned=to_world(fitted.numpy()), exact=exact,
        joints=to_world(fit["joints"]), rest_verts=fit["rest_verts"][0], joint_names=np.array(_names(len(fit["parents"]))),
    )  # fmt: skip


def _names(count):
    from realtime.anim.glb import joint_names

    return joint_names(count)


if __name__ == "__main__":
    make(Path(sys.argv[1]))
