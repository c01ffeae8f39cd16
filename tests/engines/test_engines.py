"""Export and backends: the ONNX graphs compute what PyTorch computes, the fixed-shape stochastic step is
the reference sampler, manifests say what an engine is and mismatches are refused.

Most tests use `configs/mega_tiny.yaml` (random weights, ResNet-(1,1,1,1) at 64x64, emb 64) so that an
export takes seconds; the official-fixture test drives the exported step with the official network's
weights, counts and noise. TensorRT tests are marked and skipped where TensorRT is missing.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from engines import adapters
from engines.backends.base import BackendError, BackendUnavailable
from engines.export import ExportSpec, export_engine
from engines.load import load_backend, load_graph_backends, load_runner
from engines.manifest import EngineMismatch, Manifest, check_files, check_runtime
from engines.models import ModelSource, build_models, prepare_for_serving, torch_backends
from engines.runner import MegaRunner
from train import sampling
from train.config import config_hash

Q, T = 3, 4  # samples and steps of the stochastic test engine


@pytest.fixture(scope="module")
def engines_root(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def oneshot_fp32(models, engines_root):
    # parity measured inside the export too: one test checks that it is recorded
    return export_engine(
        models, ExportSpec(precision="fp32", batch=(1, 2, 8), parity_batch=3), engines_root, progress=lambda m: None
    )


@pytest.fixture(scope="module")
def oneshot_fp16(models, engines_root):
    return export_engine(
        models, ExportSpec(precision="fp16", batch=(1, 2, 8)), engines_root, progress=lambda m: None, parity=False
    )


@pytest.fixture(scope="module")
def stoch_fp32(models, engines_root):
    spec = ExportSpec(precision="fp32", batch=(1, 2, 4), stochastic=True, samples=Q, steps=T)
    return export_engine(models, spec, engines_root, progress=lambda m: None, parity=False)


@pytest.fixture(autouse=True)
def fp32_reference_without_tf32(no_tf32):
    """GPU parity in every test here: the torch reference runs without TF32 (tests/engines/conftest.py)."""


def _images(cfg, batch, seed=0):
    return adapters.example_inputs("oneshot", batch, cfg, seed=seed)["images"]


# ---- deterministic graph --------------------------------------------------------------------------
def test_oneshot_onnx_matches_the_pytorch_model(oneshot_fp32, models, cfg):
    ort = load_backend(oneshot_fp32.folder / "oneshot.onnx")
    images = _images(cfg, 3)  # traced at 2 crops: 3 proves the batch axis is symbolic
    out = ort.run({"images": images})
    with torch.inference_mode():
        ref = models.oneshot(images)
        verts = models.mesh_vqvae.decode(ref.tokens)
    assert torch.equal(out["tokens"].long(), ref.tokens)
    assert (out["verts"] - verts).abs().max() <= 1e-4
    assert (out["rotmat"] - ref.rotmat).abs().max() <= 1e-5
    assert (out["rot6d"] - ref.rot6d).abs().max() <= 1e-5
    assert (out["cam_crop"] - ref.cam_crop).abs().max() <= 1e-5
    assert out["tokens"].dtype == torch.int32 and out["verts"].shape == (3, 6890, 3)


def test_oneshot_graph_is_one_static_graph_with_a_symbolic_batch(oneshot_fp32):
    model = onnx.load(str(oneshot_fp32.folder / "oneshot.onnx"))
    ops = {n.op_type for n in model.graph.node}
    # data-dependent control flow or shapes would break TensorRT profiles and CUDA graphs
    assert not ops & {"Loop", "If", "NonZero", "Unique", "RandomUniform", "RandomNormal", "Multinomial", "Bernoulli"}
    assert {"Conv", "ArgMax", "LayerNormalization"} <= ops
    assert model.opset_import[0].version == 18
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name


def test_export_records_parity_in_the_manifest(oneshot_fp32):
    parity = Manifest.read(oneshot_fp32.folder).parity
    assert parity["backend"] == "onnxruntime" and parity["batch"] == 3
    oneshot = parity["graphs"]["oneshot"]
    assert oneshot["tokens"]["mismatched"] == 0
    assert oneshot["verts"]["max_abs"] <= 1e-4


def test_fp16_graph_is_fp16_with_layernorm_and_softmax_in_fp32(oneshot_fp16, stoch_fp32, models):
    model = onnx.shape_inference.infer_shapes(onnx.load(str(oneshot_fp16.folder / "oneshot.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.input)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    conv_types = {types[n.input[0]] for n in model.graph.node if n.op_type == "Conv"}
    assert conv_types == {onnx.TensorProto.FLOAT16}
    norm_types = {types[n.input[0]] for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax")}
    assert norm_types == {onnx.TensorProto.FLOAT}
    # inputs and outputs stay fp32/int32 whatever the precision inside
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]


def test_fp16_oneshot_graph_stays_close_to_fp32(oneshot_fp16, models, cfg):
    """Random weights: measures the fp16 error (the 2 mm target needs trained weights)."""
    out = load_backend(oneshot_fp16.folder / "oneshot.onnx").run({"images": _images(cfg, 4, seed=3)})
    ref = torch_backends(models, ["oneshot"])["oneshot"].run({"images": _images(cfg, 4, seed=3)})
    agree = (out["tokens"] == ref["tokens"]).float().mean().item()
    assert agree >= 0.98
    rows = (out["tokens"] == ref["tokens"]).all(1)
    assert rows.any()
    vert_err = (out["verts"][rows] - ref["verts"][rows]).abs().max().item()
    assert vert_err <= 2e-3, f"fp16 vertex error {vert_err:.2g}"
    assert (out["rotmat"] - ref["rotmat"]).abs().max() <= 2e-3
    assert (out["cam_crop"] - ref["cam_crop"]).abs().max() <= 2e-3


# ---- the fixed-shape stochastic step ------------------------------------------------------------
def test_step_graph_equals_the_reference_sampler(models, cfg, stoch_fp32):
    """StepGraph (torch and onnxruntime) == Mega.step_logits + train.sampling.sample_step."""
    feeds = adapters.example_inputs("step", 4, cfg, samples=2, seed=5)
    feeds["num_visible"] = torch.tensor([1, 20, 54, 33, 0, 27, 40, 12], dtype=torch.int32).clamp(
        min=feeds["visible"].sum(1).int()
    )
    feeds["temperature"] = torch.tensor([0.0, 0.5, 1.0, 4.5, 0.8, 1.0, 2.0, 0.1])
    with torch.inference_mode():
        tokens, visible = feeds["tokens"].long(), feeds["visible"]
        logits = models.full.step_logits(feeds["image_tokens"], tokens, visible)
        t = feeds["temperature"]
        ref_tokens, ref_visible = sampling.sample_step(
            logits,
            tokens,
            visible,
            feeds["num_visible"].long(),
            feeds["token_noise"] * t[:, None, None],
            feeds["confidence_noise"] * t[:, None],
        )
    for backend in (torch_backends(models, ["step"])["step"], load_backend(stoch_fp32.folder / "step.onnx")):
        out = backend.run(feeds)
        assert torch.equal(out["next_tokens"].long(), ref_tokens), backend.name
        assert torch.equal(out["next_visible"], ref_visible), backend.name
        assert out["next_visible"].sum(1).tolist() == feeds["num_visible"].tolist()


@pytest.mark.parametrize("temperature", [1.0, 4.5])
def test_fixed_shape_loop_equals_mega_generate_token_for_token(models, cfg, temperature):
    """Same generator seed -> same noise -> the same tokens at every step as Mega.generate."""
    images = _images(cfg, 2, seed=11)
    with torch.inference_mode():
        ref, ref_history = models.full.generate(
            images, samples=Q, steps=T, temperature=temperature, generator=torch.Generator().manual_seed(4)
        )
    runner = MegaRunner(
        torch_backends(models, adapters.STOCHASTIC_GRAPHS, samples=Q),
        cfg.seq_length,
        cfg.num_embeddings,
        Q,
        T,
        temperature,
    )
    got = runner.stochastic(images, generator=torch.Generator().manual_seed(4))
    for t, (a, b) in enumerate(zip(got.history, ref_history)):
        assert torch.equal(a.long(), b), f"step {t + 1}"
    assert torch.equal(got.tokens.long(), ref.tokens)
    assert torch.equal(got.rot6d, ref.rot6d[::Q])


def test_encode_graph_repeats_image_tokens_crop_major(stoch_fp32, models, cfg):
    """Rows b*Q .. b*Q+Q-1 are crop b's samples, as Mega.generate's repeat_interleave orders them."""
    images = _images(cfg, 3, seed=13)
    out = load_backend(stoch_fp32.folder / "encode.onnx").run({"images": images})
    with torch.inference_mode():
        want = models.full.decoder.image_tokens(models.full.image_features(images)).repeat_interleave(Q, dim=0)
    assert out["image_tokens"].shape == (3 * Q, cfg.cond_length, cfg.emb_dim)
    assert (out["image_tokens"] - want).abs().max() <= 1e-5
    assert out["rot6d"].shape == (3, 6)  # pose stays per crop


def test_onnxruntime_loop_reproduces_pytorch_samples(stoch_fp32, models, cfg):
    runner = load_runner(stoch_fp32.folder)
    assert (runner.samples, runner.steps) == (Q, T)
    images = _images(cfg, 2, seed=12)
    got = runner.stochastic(images, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        ref, _ = models.full.generate(images, samples=Q, steps=T, generator=torch.Generator().manual_seed(9))
        ref_verts = models.mesh_vqvae.decode(ref.tokens)
    assert torch.equal(got.tokens.long(), ref.tokens)
    assert (got.verts - ref_verts).abs().max() <= 1e-4
    assert (got.rotmat - ref.rotmat[::Q]).abs().max() <= 1e-5
    assert (got.cam_crop - ref.cam_crop[::Q]).abs().max() <= 1e-5
    # different seeds give different samples (the noise really is an input)
    other = runner.stochastic(images, generator=torch.Generator().manual_seed(10))
    assert not torch.equal(other.tokens, got.tokens)


# ---- the official network's steps through the exported step graph --------------------------------
@pytest.fixture(scope="module")
def official(reference_dir, assets_dir, tmp_path_factory):
    from tests.reference import mini_config  # the fixture's config, defined once in the parity tests
    from train.checkpoint import load_mega
    from train.model.mesh_vqvae import MeshVQVAE

    manifest = json.loads((reference_dir / "fixtures" / "manifest.json").read_text())
    cfg = mini_config(manifest, "cvqmae_hrnet")
    ckpt = reference_dir / "fixtures" / "checkpoint"
    model, _ = load_mega(ckpt / "CVQMAE" / "mega_hrnet", cfg)
    mesh = MeshVQVAE.from_assets(assets_dir=assets_dir).load_official(ckpt / "MESH_VQVAE" / "mesh_vqvae_54").eval()
    step = adapters.StepGraph(model)
    path = tmp_path_factory.mktemp("official") / "step.onnx"
    from engines.onnx_export import export_graph

    export_graph(step, adapters.example_inputs("step", 2, cfg), adapters.GRAPHS["step"].outputs, path)
    return manifest, cfg, model, mesh, path


@pytest.mark.parametrize("setting", ["gen_T5_temp1", "gen_T5_temp4.5", "gen_T1_temp0"])
def test_exported_step_reproduces_every_official_step(official, reference_dir, setting):
    from engines.backends.torch_backend import TorchBackend
    from tests.reference import replay_official_noise

    manifest, cfg, model, mesh, step_path = official
    rng = manifest["rng"]["cvqmae_hrnet"][setting]
    steps, temp, q = rng["nb_steps"], rng["gen_temp"], manifest["samples"]
    noise = replay_official_noise(rng["calls"], rng["np_seed"], [temp * (1 - (s + 1) / steps) for s in range(steps)], q)
    ref = np.load(reference_dir / "fixtures" / "refs" / "cvqmae_hrnet.npz")
    images = torch.from_numpy(ref["images"][:1])
    specs = {g: adapters.graph_specs(g, cfg) for g in ("encode", "mesh")}
    backends = {
        "encode": TorchBackend(adapters.EncodeGraph(model, q), *specs["encode"], "encode"),
        "step": load_backend(step_path),  # the exported graph under test
        "mesh": TorchBackend(adapters.MeshDecoderGraph(mesh), *specs["mesh"], "mesh"),
    }
    runner = MegaRunner(backends, cfg.seq_length, cfg.num_embeddings, q, steps, temp)
    got = runner.stochastic(images, noise=noise, counts=sampling.official_visible_counts(cfg.seq_length, steps))
    for t, tokens in enumerate(got.history):
        np.testing.assert_array_equal(tokens.numpy(), ref[f"{setting}_steps_tokens"][t], err_msg=f"step {t + 1}")
    np.testing.assert_array_equal(got.tokens.numpy(), ref[f"{setting}_tokens"])
    assert np.abs(got.verts.numpy() - ref[f"{setting}_vertices"]).max() <= 1e-4


# ---- precision helpers ------------------------------------------------------------------------------
def test_fp32_softmax_attention_computes_the_reference_attention():
    from train.model.transformer import Attention

    torch.manual_seed(0)
    attn = Attention(64, 4).eval()
    x = torch.randn(3, 10, 64)
    attend = torch.rand(3, 10) < 0.6
    attend[:, 0] = True
    with torch.no_grad():
        a = attn(x, attend)
        b = adapters.Fp32SoftmaxAttention(attn)(x, attend)
    assert (a - b).abs().max() <= 1e-5


def test_cast_for_precision_keeps_layernorm_in_fp32_and_leaves_the_model_alone(models):
    half = adapters.cast_for_precision(models.full, "fp16")
    norms = [m for m in half.modules() if isinstance(m, adapters.Fp32LayerNorm)]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in half.modules())
    assert half.decoder.head.weight.dtype == torch.float16
    assert models.full.decoder.head.weight.dtype == torch.float32  # a copy was cast
    assert adapters.cast_for_precision(models.full, "fp32") is models.full


# ---- loading, manifests, refusals ---------------------------------------------------------------------
def test_manifest_says_what_the_engine_is(stoch_fp32, models, cfg):
    m = Manifest.read(stoch_fp32.folder)
    assert (m.format, m.precision, m.mode, m.samples, m.steps) == ("onnx", "fp32", "stochastic", Q, T)
    assert m.mega_config_hash == config_hash(cfg) and m.weights_hash == models.weights_hash
    assert m.weights["mega"] == {"random_seed": 0}
    assert m.normalisation["mean"] == [0.485, 0.456, 0.406] and m.normalisation["input_hw"] == [64, 64]
    # rows of the per-sample graphs are crops x Q
    assert m.graphs["encode"]["profile"]["images"] == [[1, 3, 64, 64], [2, 3, 64, 64], [4, 3, 64, 64]]
    assert [s[0] for s in m.graphs["step"]["profile"]["token_noise"]] == [Q, 2 * Q, 4 * Q]
    assert "mega-rt export" in m.rebuild_command and "--stochastic" in m.rebuild_command
    assert str(stoch_fp32.folder).startswith(str(stoch_fp32.folder.parents[2]))  # inside the engine root
    check_files(m, stoch_fp32.folder)


def test_engine_of_an_older_manifest_format_is_refused_with_its_rebuild_command(oneshot_fp32, tmp_path):
    """Engines in a user's cache from a build whose graphs had other names are refused, not half-loaded."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(oneshot_fp32.folder, old)
    data = json.loads((old / "manifest.json").read_text())
    data["format_version"] = 1
    data["graphs"] = {"det": {**data["graphs"]["oneshot"], "file": "det.onnx"}}
    (old / "oneshot.onnx").rename(old / "det.onnx")
    (old / "manifest.json").write_text(json.dumps(data))
    for load in (Manifest.read, load_runner, load_graph_backends):
        with pytest.raises(EngineMismatch) as e:
            load(old)
        message = str(e.value)
        assert (
            "\n" not in message and "manifest format 1" in message and f"rebuild: {data['rebuild_command']}" in message
        )


def test_export_into_an_older_engine_folder_replaces_its_graphs(models, tmp_path):
    from engines.export import engine_folder

    spec = ExportSpec(batch=(1, 1, 2))
    folder = engine_folder(models, spec, tmp_path)
    folder.mkdir(parents=True)
    (folder / "det.onnx").write_bytes(b"a graph of another name")
    (folder / "manifest.json").write_text(json.dumps({"format_version": 1}))
    result = export_engine(models, spec, tmp_path, progress=lambda m: None, parity=False)
    assert result.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "oneshot.onnx"]
    assert Manifest.read(folder).format_version == 2


def test_oneshot_model_shares_the_weights_and_folds_the_empty_encoder(models, cfg):
    assert models.oneshot.encoder is None
    assert models.oneshot.backbone is models.full.backbone and models.oneshot.decoder is models.full.decoder
    images = _images(cfg, 2, seed=4)
    with torch.inference_mode():
        a, b = models.full(images), models.oneshot(images)  # the full model runs its encoder on nothing visible
    assert (a.logits - b.logits).abs().max() <= 1e-5 and torch.equal(a.tokens, b.tokens)


def test_prepare_for_serving_folds_batchnorm_into_channels_last_with_the_same_outputs(cfg, assets_dir):
    plain = build_models(ModelSource(cfg, seed=3), assets_dir)
    images = _images(cfg, 2, seed=6)
    with torch.inference_mode():
        ref = plain.oneshot(images)
    served = prepare_for_serving(build_models(ModelSource(cfg, seed=3), assets_dir), warn=pytest.fail)
    backbone = served.oneshot.backbone
    assert backbone is served.full.backbone
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    conv = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = served.oneshot(images)
    assert torch.equal(got.tokens, ref.tokens) and (got.rotmat - ref.rotmat).abs().max() <= 1e-4


def test_prepare_for_serving_says_when_the_fold_cannot_be_applied(cfg, assets_dir, monkeypatch):
    from train.model import inference

    def refuse(model, example=None, atol=1e-3):
        raise RuntimeError("fold_batchnorm needs a model in eval mode")

    monkeypatch.setattr(inference, "prepare_for_inference", refuse)
    models = build_models(ModelSource(cfg, seed=0), assets_dir)
    backbone = models.full.backbone
    lines = []
    assert prepare_for_serving(models, warn=lines.append) is models
    assert models.full.backbone is backbone and models.oneshot.backbone is backbone
    assert len(lines) == 1 and "not applied" in lines[0] and "eval mode" in lines[0]


def test_load_backend_picks_the_backend_by_artefact(oneshot_fp32, models, tmp_path):
    assert load_backend(oneshot_fp32.folder / "oneshot.onnx").name == "onnxruntime"
    assert load_backend(oneshot_fp32.folder, "oneshot").name == "onnxruntime"
    assert load_backend("torch", "oneshot", models=models).name == "torch"
    (tmp_path / "oneshot.bin").write_bytes(b"x")
    with pytest.raises(BackendError, match="unknown artefact"):
        load_backend(tmp_path / "oneshot.bin")
    with pytest.raises(BackendError, match="name a graph"):
        load_backend(oneshot_fp32.folder)


def test_a_plan_needs_tensorrt_and_says_which_extra(oneshot_fp32, tmp_path, monkeypatch):
    import sys

    folder = tmp_path / "plan"
    folder.mkdir()
    (folder / "oneshot.plan").write_bytes(b"not a plan")
    (folder / "manifest.json").write_text((oneshot_fp32.folder / "manifest.json").read_text())
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as if not installed, even on a GPU machine
    with pytest.raises(BackendUnavailable, match=r"mega-rt\[tensorrt\]"):
        load_backend(folder / "oneshot.plan")


def _stand_in_tensorrt(calls: dict):
    """Just enough of the TensorRT builder API for engines.trt_build.build_plan, recording what it is given."""
    import types
    from types import SimpleNamespace as NS

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def add_optimization_profile(self, profile):
            calls["profile"] = profile.shapes

        def create_timing_cache(self, blob):
            calls["cache_in"] = blob
            return NS(serialize=lambda: b"cache-out")

        def set_timing_cache(self, cache, ignore_mismatch):
            calls["ignore_mismatch"] = ignore_mismatch
            return True

        def clear_flag(self, flag):
            calls.setdefault("cleared", []).append(flag)

    class Profile:
        shapes: dict = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes = {**self.shapes, name: (lo, opt, hi)}

    network = NS(num_inputs=1, get_input=lambda i: NS(name="crops"))
    builder = NS(create_network=lambda flags: network, create_builder_config=Config, create_optimization_profile=Profile,
                 build_serialized_network=lambda net, config: b"plan-bytes")  # fmt: skip
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99-stand-in"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.NetworkDefinitionCreationFlag = NS(STRONGLY_TYPED=0)
    trt.BuilderFlag = NS(TF32="tf32")
    trt.MemoryPoolType = NS(WORKSPACE="workspace")
    trt.Builder = lambda logger: builder
    trt.OnnxParser = lambda net, logger: NS(parse_from_file=lambda path: True, num_errors=0)
    return trt


def test_trt_build_plan_writes_plan_and_timing_cache_with_a_stand_in_tensorrt(tmp_path, monkeypatch):
    """The builder's plumbing (profile, workspace, atomic plan and cache files) runs without a GPU."""
    import sys

    from engines import trt_build

    calls: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _stand_in_tensorrt(calls))
    monkeypatch.setattr(trt_build, "_LOGGER", None)  # the process-wide logger must not keep the stand-in
    (tmp_path / "timing.cache").write_bytes(b"cache-in")
    shapes = {"crops": ((1, 3, 64, 64), (2, 3, 64, 64), (8, 3, 64, 64))}
    target = trt_build.PlanTarget(tmp_path / "out" / "oneshot.plan", shapes, 1 << 30, tmp_path / "timing.cache")
    logged = []
    info = trt_build.build_plan(tmp_path / "oneshot.onnx", target, log=logged.append)
    assert (tmp_path / "out" / "oneshot.plan").read_bytes() == b"plan-bytes"
    assert (tmp_path / "timing.cache").read_bytes() == b"cache-out" and calls["cache_in"] == b"cache-in"
    assert calls["workspace"] == 1 << 30 and calls["profile"] == shapes and calls["ignore_mismatch"] is False
    assert calls["cleared"] == ["tf32"]  # an fp32 plan is built without TF32
    assert info == {
        "seconds": info["seconds"],
        "bytes": len(b"plan-bytes"),
        "timing_cache": str(tmp_path / "timing.cache"),
    }
    assert logged and "oneshot.plan" in logged[0]
    assert not list(tmp_path.rglob("*.partial*"))


def test_missing_onnxruntime_names_the_extra(oneshot_fp32, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailable, match=r"mega-rt\[onnx\]"):
        load_backend(oneshot_fp32.folder / "oneshot.onnx")


def test_plan_for_another_tensorrt_or_gpu_is_refused_with_the_rebuild_command(oneshot_fp32):
    m = Manifest.read(oneshot_fp32.folder)
    m.format = "tensorrt"
    m.tensorrt = {"version": "10.16.0", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}
    check_runtime(m, "f", "10.16.0", "8.9")  # same runtime and GPU: accepted
    for version, cc in (("11.1.0", "8.9"), ("10.16.0", "9.0")):
        with pytest.raises(EngineMismatch) as e:
            check_runtime(m, "f", version, cc, "NVIDIA H100")
        message = str(e.value)
        assert "\n" not in message and "rebuild: mega-rt export --format onnx" in message


def test_engine_for_another_config_or_weights_is_refused(oneshot_fp32):
    with pytest.raises(EngineMismatch, match="config"):
        load_runner(oneshot_fp32.folder, expect_config_hash="0" * 16)
    with pytest.raises(EngineMismatch, match="weights"):
        load_runner(oneshot_fp32.folder, expect_weights_hash="0" * 16)


def test_edited_graph_file_is_refused(oneshot_fp32, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(oneshot_fp32.folder, copy)
    with open(copy / "oneshot.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(EngineMismatch, match="does not match its manifest"):
        load_graph_backends(copy)


def test_backends_check_their_inputs(oneshot_fp32, cfg):
    backend = load_backend(oneshot_fp32.folder / "oneshot.onnx")
    with pytest.raises(BackendError, match="missing"):
        backend.run({})
    with pytest.raises(BackendError, match="float64"):
        backend.run({"images": _images(cfg, 1).double()})
    with pytest.raises(BackendError, match="shape"):
        backend.run({"images": torch.zeros(1, 3, 32, 32)})


def test_verify_compares_two_backends(stoch_fp32):
    from engines.verify import verify_pair

    lines = []
    report = verify_pair("torch", str(stoch_fp32.folder), batch=2, progress=lines.append)
    assert report["graphs"]["step"]["next_tokens"]["mismatched"] == 0
    assert report["graphs"]["mesh"]["verts"]["max_abs"] <= 1e-4
    assert report["loop"]["tokens"]["mismatched"] == 0 and report["loop"]["verts"]["max_abs"] <= 1e-4
    assert any("encode" in line and "max" in line for line in lines)


# ---- GPU / TensorRT (skipped on CPU machines) ----------------------------------------------------------
@pytest.mark.gpu
def test_torch_backend_cuda_graph_replay_equals_eager(models, cfg):
    eager = torch_backends(models, ["oneshot"], device="cuda")["oneshot"]
    graphed = torch_backends(models, ["oneshot"], device="cuda", cuda_graphs=True)["oneshot"]
    for seed in (0, 1):  # the second call replays the captured graph with new inputs
        images = _images(cfg, 2, seed=seed).cuda()
        a, b = eager.run({"images": images}), graphed.run({"images": images})
        assert torch.equal(a["tokens"], b["tokens"])
        assert (a["verts"] - b["verts"]).abs().max() <= 1e-4


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_oneshot_plan_matches_pytorch(models, cfg, engines_root, precision):
    result = export_engine(
        models,
        ExportSpec(format="tensorrt", precision=precision, batch=(1, 2, 8)),
        engines_root,
        progress=lambda m: None,
    )
    m = Manifest.read(result.folder)
    assert m.tensorrt["version"] and m.tensorrt["compute_capability"]
    backend = load_backend(result.folder / "oneshot.plan")
    ref = torch_backends(models, ["oneshot"], device="cuda")["oneshot"]
    images = _images(cfg, 3).cuda()
    out, want = backend.run({"images": images}), ref.run({"images": images})
    tol = 1e-4 if precision == "fp32" else 2e-3
    assert (out["tokens"] == want["tokens"]).float().mean() >= (1.0 if precision == "fp32" else 0.98)
    assert (out["rotmat"] - want["rotmat"]).abs().max() <= tol
    graphed = load_backend(result.folder / "oneshot.plan", cuda_graphs=True)
    for _ in range(2):
        again = graphed.run({"images": images})
    assert torch.equal(again["tokens"], out["tokens"])


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_stochastic_loop_reproduces_pytorch(models, cfg, engines_root):
    spec = ExportSpec(format="tensorrt", precision="fp32", batch=(1, 2, 4), stochastic=True, samples=Q, steps=T)
    result = export_engine(models, spec, engines_root, progress=lambda m: None)
    loop = Manifest.read(result.folder).parity["loop"]
    assert loop["tokens"]["mismatched"] == 0 and loop["verts"]["max_abs"] <= 1e-3


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_torch_tensorrt_oneshot_plan_runs_on_the_tensorrt_backend(models, cfg, engines_root):
    pytest.importorskip("torch_tensorrt", reason="needs torch-tensorrt (pip install 'mega-rt[tensorrt]')")
    result = export_engine(
        models,
        ExportSpec(format="torch-tensorrt", precision="fp32", batch=(1, 2, 4)),
        engines_root,
        progress=lambda m: None,
    )
    parity = Manifest.read(result.folder).parity["graphs"]["oneshot"]
    assert parity["tokens"]["mismatched"] == 0


def test_step_graph_sorts_with_a_constant_k(stoch_fp32, cfg):
    """TensorRT and torch-tensorrt need TopK's K at build time; the reveal sort is N + 1 wide."""
    from onnx import numpy_helper

    model = onnx.load(str(stoch_fp32.folder / "step.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    ks = [inits.get(n.input[1]) for n in model.graph.node if n.op_type == "TopK"]
    assert len(ks) == 1 and ks[0] is not None and ks[0].tolist() == [cfg.seq_length + 1]


@pytest.mark.gpu
def test_whole_stochastic_loop_replays_as_one_cuda_graph(models, cfg):
    runner = MegaRunner(
        torch_backends(models, adapters.STOCHASTIC_GRAPHS, samples=Q, device="cuda"),
        cfg.seq_length,
        cfg.num_embeddings,
        Q,
        T,
    )
    images = _images(cfg, 2).cuda()
    torch.cuda.manual_seed(0)
    replay = runner.capture_stochastic(images)
    first = replay(images).tokens.clone()
    second = replay(images).tokens.clone()
    assert first.shape == (2 * Q, cfg.seq_length) and (first > 0).any()
    assert not torch.equal(first, second)  # the generator advances on every replay: new samples


# ---- fp16 with trained weights (the demo weights) on synthetic test crops --------------------------
def test_fp16_oneshot_graph_within_2mm_on_synthetic_crops_with_demo_weights(tmp_path, assets_dir):
    """The fp16 target: with trained weights, the fp16 ONNX oneshot graph (onnxruntime) puts the
    camera-oriented vertices of synthetic test crops within 2 mm (mean per-vertex distance) of fp32
    PyTorch. Crops whose fp16 argmax picks another token are counted (trained logits have margins,
    random ones do not, which is why the random-weights test above cannot show this)."""
    from click.testing import CliRunner

    from realtime.cli import main
    from train.config import TrainConfig
    from train.demo import DEMO_DIR
    from train.stages import hmr_dataset

    if not (DEMO_DIR / "mega.pt").is_file():
        pytest.skip(
            f"demo weights not installed in {DEMO_DIR} (mega-rt train --recipe configs/recipes/synthetic_demo.yaml --package)"
        )
    crops = tmp_path / "crops"
    result = CliRunner().invoke(main, ["synth", "--dataset", str(crops), "--samples", "12", "--seed", "2024"])
    assert result.exit_code == 0, result.output
    models = build_models(ModelSource(None, DEMO_DIR / "mega.pt", DEMO_DIR / "tokenizer.pt"), assets_dir)
    data = hmr_dataset(
        TrainConfig(stage="hmr"),
        models.cfg,
        models.full.backbone,
        augment=False,
        crop_dirs=(str(crops),),
        sequential=True,
    )
    images = data[list(range(12))]["images"]
    engine = export_engine(
        models,
        ExportSpec(precision="fp16", batch=(1, 4, 16)),
        tmp_path / "engines",
        progress=lambda m: None,
        parity=False,
    )
    out = load_backend(engine.folder / "oneshot.onnx").run({"images": images})
    ref = torch_backends(models, ["oneshot"])["oneshot"].run({"images": images})

    def oriented(o):
        v = o["verts"] @ o["rotmat"].transpose(1, 2)
        return v - v.mean(1, keepdim=True)

    per_crop_mm = 1000 * (oriented(out) - oriented(ref)).norm(dim=-1).mean(-1)
    token_agreement = (out["tokens"] == ref["tokens"]).float().mean().item()
    print(f"fp16 vs fp32 on 12 synthetic crops: mean {per_crop_mm.mean():.2f} mm, max {per_crop_mm.max():.2f} mm, "
          f"tokens agree {100 * token_agreement:.1f}%")  # fmt: skip
    assert per_crop_mm.mean() <= 2.0


def test_bf16_torch_oneshot_keeps_the_mesh_decoder_in_fp32(models, cfg):
    """bf16 (the CPU speed option): the network runs in bf16, the vertices come from the fp32 decoder."""
    images = _images(cfg, 3, seed=9)
    out = torch_backends(models, ["oneshot"], "bf16")["oneshot"].run({"images": images})
    ref = torch_backends(models, ["oneshot"])["oneshot"].run({"images": images})
    with torch.no_grad():
        exact = models.mesh_vqvae.decode(out["tokens"].long())
    torch.testing.assert_close(out["verts"], exact, rtol=0, atol=1e-6)
    assert (out["rotmat"] - ref["rotmat"]).abs().max() <= 0.05
    assert (out["cam_crop"] - ref["cam_crop"]).abs().max() <= 0.05
