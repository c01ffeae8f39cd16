"""Static shapes for graphs and compile: fixed-length stochastic step graphs, batch buckets with the
padded rows dropped, torch.compile and CUDA graphs through build_regressor and the CLI.

The fixed-length steps are compared token for token with the reference sampler (`Mega.generate` over
`train.sampling`) with explicit noise, on random weights of mega_tiny and on the official-format
fixtures with the official network's counts and noise. CUDA tests are marked `gpu`.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from engines import adapters
from engines.models import torch_backends
from engines.runner import BATCH_BUCKETS, MegaRunner, bucket_for, pad_rows
from train import sampling


def _images(cfg, batch, seed=0):
    return adapters.example_inputs("oneshot", batch, cfg, seed=seed)["images"]


def _noise(rows, cfg, steps, temperature, seed):
    """Pre-scaled (token, confidence) Gumbel noise per step, as train.sampling.generate takes it."""
    g = torch.Generator().manual_seed(seed)
    n, s = cfg.seq_length, cfg.num_embeddings
    return [
        (
            sampling.step_temperature(t, steps, temperature) * sampling.gumbel((rows, n, s), g),
            sampling.step_temperature(t, steps, temperature) * sampling.gumbel((rows, n), g),
        )
        for t in range(1, steps + 1)
    ]


def _fixed_runner(models, cfg, samples, steps, counts=None, **kw):
    before = [0, *(counts or sampling.visible_counts(cfg.seq_length, steps))[:-1]]
    names = ["encode", *dict.fromkeys(adapters.fixed_step_name(k) for k in before), "mesh"]
    backends = torch_backends(models, names, samples=samples)
    return MegaRunner(backends, cfg.seq_length, cfg.num_embeddings, samples, steps, cfg.temperature, **kw)


# ---- the schedule the fixed-length graphs are built for -----------------------------------------------
def test_fixed_step_graphs_are_the_counts_visible_before_each_step():
    assert adapters.fixed_step_graphs(54, 5) == ("step_v0", "step_v2", "step_v10", "step_v22", "step_v37")
    counts = sampling.visible_counts(54, 3)
    assert adapters.fixed_step_graphs(54, 3) == tuple(adapters.fixed_step_name(k) for k in [0, *counts[:-1]])
    assert adapters.fixed_step_count("step_v37") == 37 and adapters.fixed_step_count("step") is None
    assert adapters.graph_io("step_v10") == adapters.GRAPHS["step"]


def test_fixed_step_encoder_runs_over_the_visible_tokens_only(models, cfg):
    """1 + K positions per step (cls + the K visible tokens), against N + 1 for the full-length step."""
    lengths: list[int] = []
    hook = models.full.encoder.transformer.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    try:
        _fixed_runner(models, cfg, 2, 5).stochastic(_images(cfg, 1), generator=torch.Generator().manual_seed(0))
        fixed, lengths[:] = list(lengths), []
        full = torch_backends(models, adapters.STOCHASTIC_GRAPHS, samples=2)
        MegaRunner(full, cfg.seq_length, cfg.num_embeddings, 2, 5).stochastic(
            _images(cfg, 1), generator=torch.Generator().manual_seed(0)
        )
    finally:
        hook.remove()
    assert fixed == [1 + k for k in (0, 2, 10, 22, 37)]
    assert lengths == [cfg.seq_length + 1] * 5


# ---- token for token with the reference sampler -----------------------------------------------------
@pytest.mark.parametrize("steps", [5, 3])
@pytest.mark.parametrize("samples", [1, 4])
def test_fixed_length_steps_equal_the_reference_sampler(models, cfg, steps, samples):
    images = _images(cfg, 2, seed=steps)
    noise = _noise(2 * samples, cfg, steps, 1.5, seed=10 * steps + samples)
    with torch.inference_mode():
        ref, ref_history = models.full.generate(images, samples=samples, steps=steps, noise=noise)
    got = _fixed_runner(models, cfg, samples, steps).stochastic(images, noise=noise)
    for t, (a, b) in enumerate(zip(got.history, ref_history, strict=True)):
        assert torch.equal(a.long(), b), f"step {t + 1}"
    assert torch.equal(got.tokens.long(), ref.tokens)
    # and with the generator: the runner draws the noise the sampler draws
    with torch.inference_mode():
        ref, _ = models.full.generate(images, samples=samples, steps=steps, generator=torch.Generator().manual_seed(7))
    got = _fixed_runner(models, cfg, samples, steps).stochastic(images, generator=torch.Generator().manual_seed(7))
    assert torch.equal(got.tokens.long(), ref.tokens)


@pytest.fixture(scope="module")
def official(reference_dir, assets_dir):
    from tests.reference import mini_config
    from train.checkpoint import load_mega
    from train.model.mesh_vqvae import MeshVQVAE

    manifest = json.loads((reference_dir / "fixtures" / "manifest.json").read_text())
    cfg = mini_config(manifest, "cvqmae_hrnet")
    ckpt = reference_dir / "fixtures" / "checkpoint"
    model, _ = load_mega(ckpt / "CVQMAE" / "mega_hrnet", cfg)
    mesh = MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(ckpt / "MESH_VQVAE" / "mesh_vqvae_54").eval()
    return manifest, cfg, model, mesh


@pytest.mark.parametrize("setting", ["gen_T5_temp1", "gen_T5_temp4.5", "gen_T1_temp0"])
def test_fixed_length_steps_reproduce_every_official_step(official, reference_dir, setting):
    """The official network, its visible counts and its noise: every step's tokens as the official code's."""
    from engines.backends.torch_backend import TorchBackend
    from tests.reference import replay_official_noise

    manifest, cfg, model, mesh = official
    rng = manifest["rng"]["cvqmae_hrnet"][setting]
    steps, temp, q = rng["nb_steps"], rng["gen_temp"], manifest["samples"]
    noise = replay_official_noise(rng["calls"], rng["np_seed"], [temp * (1 - (s + 1) / steps) for s in range(steps)], q)
    counts = sampling.official_visible_counts(cfg.seq_length, steps)
    ref = np.load(reference_dir / "fixtures" / "refs" / "cvqmae_hrnet.npz")
    backends = {
        "encode": TorchBackend(adapters.EncodeGraph(model, q), *adapters.graph_specs("encode", cfg), "encode"),
        "mesh": TorchBackend(adapters.MeshDecoderGraph(mesh), *adapters.graph_specs("mesh", cfg), "mesh"),
    }
    for k in [0, *counts[:-1]]:
        name = adapters.fixed_step_name(k)
        backends[name] = TorchBackend(adapters.StepGraph(model, k), *adapters.graph_specs(name, cfg), name)
    runner = MegaRunner(backends, cfg.seq_length, cfg.num_embeddings, q, steps, temp)
    got = runner.stochastic(torch.from_numpy(ref["images"][:1]), noise=noise, counts=counts)
    for t, tokens in enumerate(got.history):
        np.testing.assert_array_equal(tokens.numpy(), ref[f"{setting}_steps_tokens"][t], err_msg=f"step {t + 1}")
    np.testing.assert_array_equal(got.tokens.numpy(), ref[f"{setting}_tokens"])


def test_a_fixed_step_graph_exports_to_onnx_with_the_step_signature(models, cfg, tmp_path):
    """Same inputs and outputs as `step`, constant top-k widths (the K visible tokens and the N + 1 reveal)."""
    import onnx
    from onnx import numpy_helper

    from engines.load import load_backend
    from engines.models import graph_module
    from engines.onnx_export import export_graph

    graph = adapters.fixed_step_name(10)
    feeds = adapters.example_inputs(graph, 2, cfg, samples=2, seed=3)
    assert feeds["visible"].sum(1).tolist() == [10] * 4
    path = tmp_path / f"{graph}.onnx"
    export_graph(graph_module(graph, models), feeds, adapters.GRAPHS["step"].outputs, path)
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == list(adapters.GRAPHS["step"].inputs)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    ks = sorted(int(inits[n.input[1]].item()) for n in model.graph.node if n.op_type == "TopK")
    assert ks == [10, cfg.seq_length + 1]
    got = load_backend(path).run(feeds)
    want = torch_backends(models, [graph])[graph].run(feeds)
    assert torch.equal(got["next_tokens"], want["next_tokens"]) and torch.equal(
        got["next_visible"], want["next_visible"]
    )


# ---- batch buckets ----------------------------------------------------------------------------------
def test_bucket_choice_and_padding():
    assert [bucket_for(n) for n in (1, 2, 3, 5, 9, 17, 33, 64)] == [1, 2, 4, 8, 16, 32, 64, 64]
    with pytest.raises(ValueError, match="above the largest bucket 64"):
        bucket_for(65)
    x = torch.arange(6.0).reshape(3, 2)
    padded = pad_rows(x, 4)
    assert padded.shape == (4, 2) and torch.equal(padded[:3], x) and not padded[3].any()
    assert pad_rows(x, 3) is x


@pytest.mark.parametrize("batch", [3, 5])
def test_bucketed_oneshot_equals_unpadded(models, cfg, batch):
    backends = torch_backends(models, ["oneshot"])
    plain = MegaRunner(backends, cfg.seq_length, cfg.num_embeddings)
    bucketed = MegaRunner(backends, cfg.seq_length, cfg.num_embeddings, buckets=BATCH_BUCKETS)
    images = _images(cfg, batch, seed=batch)
    want = {k: v.clone() for k, v in plain.deterministic(images).items()}
    got = bucketed.deterministic(images)
    assert got["tokens"].shape[0] == batch and got["verts"].shape[0] == batch
    assert torch.equal(got["tokens"], want["tokens"])
    for k in ("rotmat", "cam_crop", "verts"):
        assert (got[k] - want[k]).abs().max() <= 1e-5, k


@pytest.mark.parametrize("fixed", [False, True])
def test_bucketed_stochastic_q2_equals_unpadded(models, cfg, fixed):
    """3 crops padded to 4: the padded rows get zero noise, so the real rows draw what an unpadded call draws."""
    q, steps = 2, 5
    graphs = (
        ("encode", *adapters.fixed_step_graphs(cfg.seq_length, steps), "mesh") if fixed else adapters.STOCHASTIC_GRAPHS
    )
    backends = torch_backends(models, graphs, samples=q)
    plain = MegaRunner(backends, cfg.seq_length, cfg.num_embeddings, q, steps)
    bucketed = MegaRunner(backends, cfg.seq_length, cfg.num_embeddings, q, steps, buckets=BATCH_BUCKETS)
    images = _images(cfg, 3, seed=4)
    want = plain.stochastic(images, generator=torch.Generator().manual_seed(2))
    got = bucketed.stochastic(images, generator=torch.Generator().manual_seed(2))
    assert got.tokens.shape == (3 * q, cfg.seq_length) and got.rotmat.shape == (3, 3, 3)
    assert len(got.history) == steps and all(h.shape[0] == 3 * q for h in got.history)
    assert torch.equal(got.tokens, want.tokens)
    assert (got.verts - want.verts).abs().max() <= 1e-5
    assert (got.cam_crop - want.cam_crop).abs().max() <= 1e-5


# ---- build_regressor: compile, CUDA graphs, options ---------------------------------------------------
def _crops(cfg, n, seed=0):
    from realtime.types import Crops

    images = _images(cfg, n, seed)
    return Crops(images, torch.zeros(n, 2), torch.ones(n), torch.zeros(n, dtype=torch.long), torch.tensor([64.0, 64.0]))


@pytest.mark.slow  # inductor compiles the oneshot graph: about 110 s on 2 shared CPU cores
def test_compiled_regressor_on_cpu_matches_eager(models, cfg):
    """--compile default on the CPU (inductor + the system C compiler), 3 crops padded to 4, 1e-4 of eager."""
    from realtime.infer import build_regressor

    eager = build_regressor(models, device="cpu")
    compiled = build_regressor(models, device="cpu", compile="default")
    assert compiled.runner.buckets == BATCH_BUCKETS and eager.runner.buckets is None
    crops = _crops(cfg, 3, seed=8)
    with torch.inference_mode():
        want, got = eager(crops), compiled(crops)
    assert got.verts_canonical.shape == (3, 6890, 3) and got.tokens.shape == (3, 1, cfg.seq_length)
    assert torch.equal(got.tokens, want.tokens)
    assert (got.verts_canonical - want.verts_canonical).abs().max() <= 1e-4
    assert (got.rotmat - want.rotmat).abs().max() <= 1e-4


def test_the_stochastic_regressor_runs_the_fixed_length_steps(models, cfg):
    from realtime.infer import build_regressor

    fixed = build_regressor(models, samples=2, steps=5, device="cpu")
    full = build_regressor(models, samples=2, steps=5, device="cpu", fixed_steps=False)
    assert set(fixed.runner.backends) == {"encode", "mesh", *adapters.fixed_step_graphs(cfg.seq_length, 5)}
    assert set(full.runner.backends) == set(adapters.STOCHASTIC_GRAPHS)
    crops = _crops(cfg, 2, seed=9)
    a, b = fixed(crops), full(crops)
    assert torch.equal(a.tokens, b.tokens) and a.vertex_std.shape == (2, 6890)


def test_graph_options_refuse_what_cannot_run(models):
    from realtime.infer import RegressorOptionError, graph_options

    assert graph_options("cpu", "torch", None, None) == (False, None)
    assert graph_options("cpu", "torch", False, True) == (False, "default")
    with pytest.raises(RegressorOptionError, match="--cuda-graphs needs a CUDA device"):
        graph_options("cpu", "torch", True, None)
    with pytest.raises(RegressorOptionError, match="unknown torch.compile mode 'fastest'"):
        graph_options("cpu", "torch", None, "fastest")
    with pytest.raises(RegressorOptionError, match="--compile applies to the torch backend"):
        graph_options("cpu", "onnxruntime", None, "default")


def test_cuda_graphs_asked_on_the_cpu_is_one_line(tmp_path):
    from realtime.cli import main

    clip = tmp_path / "clip.mp4"
    from realtime.gpu_check import write_plain_clip

    write_plain_clip(clip, people=1, frames=2, size="64x48")
    for command in ("video", "stream"):
        args = (
            [command, str(clip)]
            if command == "video"
            else [command, "--camera", str(clip), "--results", str(tmp_path / "r.npz")]
        )
        result = CliRunner().invoke(
            main,
            [*args, "--random-weights", "--device", "cpu", "--cuda-graphs", "--boxes", str(clip.with_suffix(".npz"))],
        )
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert lines[-1] == "Error: --cuda-graphs needs a CUDA device (the device is cpu); drop it or use --device cuda"
        assert "Traceback" not in result.output


# ---- GPU ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_graph_regressor_per_bucket_equals_eager(models, cfg, no_tf32):
    from realtime.infer import build_regressor

    eager = build_regressor(models, device="cuda", cuda_graphs=False)
    graphed = build_regressor(models, device="cuda")  # on by default on CUDA
    assert graphed.runner.buckets == BATCH_BUCKETS and graphed.runner.backends["oneshot"].cuda_graphs
    for n in (3, 3, 5, 1):  # the second 3 replays bucket 4's graph with the same result
        crops = dataclasses.replace(_crops(cfg, n, seed=n), images=_images(cfg, n, seed=n).cuda())
        a, b = eager(crops), graphed(crops)
        assert b.tokens.shape[0] == n and torch.equal(a.tokens, b.tokens)
        assert (a.verts_canonical - b.verts_canonical).abs().max() <= 1e-4
    assert len(graphed.runner.backends["oneshot"]._captured) == 3  # buckets 4, 8, 1


@pytest.mark.gpu
def test_captured_stochastic_loop_with_the_seeded_generator_equals_eager(models, cfg, no_tf32):
    """A full bucket (2 crops): the replayed loop draws from the Regressor's generator what eager draws."""
    q, steps = 2, 5
    names = ("encode", *adapters.fixed_step_graphs(cfg.seq_length, steps), "mesh")
    eager = MegaRunner(
        torch_backends(models, names, samples=q, device="cuda"), cfg.seq_length, cfg.num_embeddings, q, steps
    )
    graphed = MegaRunner(
        eager.backends, cfg.seq_length, cfg.num_embeddings, q, steps, buckets=BATCH_BUCKETS, graph_loop=True
    )
    images = _images(cfg, 2, seed=5).cuda()
    gen_a = torch.Generator(device="cuda").manual_seed(3)
    gen_b = torch.Generator(device="cuda").manual_seed(3)
    for _ in range(2):  # capture + first replay, then a replay from the advanced generator
        want = eager.stochastic(images, generator=gen_a)
        got = graphed.stochastic(images, generator=gen_b)
        assert torch.equal(got.tokens, want.tokens)
    assert len(graphed._loops) == 1
