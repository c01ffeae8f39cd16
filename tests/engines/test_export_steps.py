"""Stochastic exports carry the fixed-length step graphs (`step_v{K}`): listed in the manifest, taken
by the runner on onnxruntime, checked by the parity figures against the full-length torch step."""

from __future__ import annotations

import pytest
import torch

from engines import adapters
from engines.export import ExportSpec, export_engine
from engines.load import load_runner
from engines.manifest import Manifest
from train import sampling

pytest.importorskip("onnxruntime")

Q, T = 2, 5


@pytest.fixture(scope="module")
def engine(models, tmp_path_factory):
    spec = ExportSpec(precision="fp32", batch=(1, 2, 4), stochastic=True, samples=Q, steps=T)
    return export_engine(models, spec, tmp_path_factory.mktemp("engines"), progress=lambda m: None)


def test_the_manifest_lists_one_fixed_length_step_per_step(engine, cfg):
    fixed = adapters.fixed_step_graphs(cfg.seq_length, T)
    assert len(fixed) == T
    m = Manifest.read(engine.folder)
    assert sorted(m.graphs) == sorted(["encode", "step", *fixed, "mesh"])
    for g in fixed:
        assert (engine.folder / m.graphs[g]["file"]).is_file()
        assert [s[0] for s in m.graphs[g]["profile"]["token_noise"]] == [Q, 2 * Q, 4 * Q]  # crops x Q rows
        assert m.parity["graphs"][g]["next_tokens"]["mismatched"] == 0
    loop = m.parity["loop"]
    assert loop["fixed_length_steps"] == T and loop["tokens"]["mismatched"] == 0 and loop["tokens"]["numel"] > 0


def test_the_exported_folder_gives_the_torch_reference_tokens(engine, models, cfg):
    runner = load_runner(engine.folder)
    counts = [0, *sampling.visible_counts(cfg.seq_length, T)[:-1]]
    assert [runner.step_backend(k).graph for k in counts] == list(adapters.fixed_step_graphs(cfg.seq_length, T))
    images = adapters.example_inputs("encode", 2, cfg, seed=21)["images"]
    got = runner.stochastic(images, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref, _ = models.full.generate(images, samples=Q, steps=T, generator=torch.Generator().manual_seed(5))
    assert torch.equal(got.tokens.long(), ref.tokens)
    assert (got.verts - models.mesh_vqvae.decode(ref.tokens)).abs().max() <= 1e-4


def test_other_step_counts_fall_back_to_the_full_length_step(engine, models, cfg):
    """--steps other than the export's: the counts have no fixed graph, the full-length step runs them."""
    runner = load_runner(engine.folder)
    runner.steps = 3
    images = adapters.example_inputs("encode", 1, cfg, seed=22)["images"]
    got = runner.stochastic(images, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        ref, _ = models.full.generate(images, samples=Q, steps=3, generator=torch.Generator().manual_seed(6))
    assert torch.equal(got.tokens.long(), ref.tokens)
