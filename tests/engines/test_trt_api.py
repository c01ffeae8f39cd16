"""What engines/ asks of TensorRT and torch-tensorrt: the build flags per (TensorRT version, precision),
torch-tensorrt options checked against the function's real signature, and - on a GPU with TensorRT -
the backend's own stream, its kept inputs and one execution context per captured shape."""

from __future__ import annotations

import pytest
import torch

from engines.trt_build import BuildError, BuildFlags, build_flags, checked_options


# ---- build flags: a pure function of the TensorRT version and the precision ---------------------------
@pytest.mark.parametrize(
    "version, precision, network, clear",
    [
        ("10.16.1", "fp32", ("STRONGLY_TYPED",), ("TF32",)),
        ("10.16.1", "fp16", ("STRONGLY_TYPED",), ()),
        ("11.1.0.106", "fp32", (), ("TF32",)),  # 11.x: always strongly typed, the flag is deprecated
        ("11.1.0.106", "fp16", (), ()),
        ("11.4.0", "bf16", (), ()),
    ],
)
def test_build_flags_per_version_and_precision(version, precision, network, clear):
    assert build_flags(version, precision) == BuildFlags(network, clear)


def test_build_flags_refuse_what_mega_rt_does_not_build():
    with pytest.raises(BuildError, match="TensorRT 8.6.1: mega-rt builds with TensorRT 10 or 11"):
        build_flags("8.6.1", "fp32")
    with pytest.raises(BuildError, match="precision 'int8'"):
        build_flags("11.1.0", "int8")


# ---- torch-tensorrt options by name ---------------------------------------------------------------------
def _convert(exported_program, inputs=None, *, arg_inputs=None, workspace_size=0, disable_tf32=False, **kwargs):
    """Shaped like torch-tensorrt's converters: named options, then a catch-all that would swallow the rest."""
    return kwargs


def test_options_the_function_names_pass():
    options = {"arg_inputs": [1], "workspace_size": 1 << 30, "disable_tf32": True}
    assert checked_options(_convert, options, "torch-tensorrt 2.14.0") is options


def test_an_option_the_function_does_not_name_is_one_line_naming_it():
    with pytest.raises(BuildError) as e:
        checked_options(
            _convert,
            {"arg_inputs": [1], "use_explicit_typing": True, "enabled_precisions": {1}},
            "torch-tensorrt 2.14.0",
        )
    message = str(e.value)
    assert "\n" not in message and message.startswith("torch-tensorrt 2.14.0: _convert has no option")
    assert "enabled_precisions, use_explicit_typing" in message


def test_the_options_mega_rt_passes_are_named_by_the_installed_torch_tensorrt():
    torch_trt = pytest.importorskip("torch_tensorrt", reason="needs torch-tensorrt (pip install 'mega-rt[tensorrt]')")
    convert = torch_trt.dynamo.convert_exported_program_to_serialized_trt_engine
    options = {
        "arg_inputs": [],
        "workspace_size": 1,
        "require_full_compilation": True,
        "disable_tf32": True,
        "timing_cache_path": "x",
    }
    checked_options(convert, options, f"torch-tensorrt {torch_trt.__version__}")


# ---- the backend on a GPU --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_plan(assets_dir, tmp_path_factory):
    from engines.export import ExportSpec, export_engine
    from engines.models import ModelSource, build_models
    from train.config import MegaConfig, builtin_config

    cfg = builtin_config("mega_tiny", MegaConfig)
    models = build_models(ModelSource(cfg, seed=0), assets_dir)
    result = export_engine(
        models, ExportSpec(format="tensorrt", precision="fp32", batch=(1, 2, 8)), tmp_path_factory.mktemp("trt"),
        progress=lambda m: None,
    )  # fmt: skip
    return cfg, models, result.folder / "oneshot.plan"


def _images(cfg, batch, seed):
    from engines.adapters import example_inputs

    return example_inputs("oneshot", batch, cfg, seed=seed)["images"]


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_the_backend_enqueues_on_its_own_stream_and_the_caller_sees_the_outputs(tiny_plan, no_tf32):
    from engines.load import load_backend
    from engines.models import torch_backends

    cfg, models, plan = tiny_plan
    backend = load_backend(plan)
    assert backend._stream.cuda_stream not in (0, torch.cuda.default_stream().cuda_stream)
    caller = torch.cuda.Stream()
    want = torch_backends(models, ["oneshot"], device="cuda")["oneshot"].run({"images": _images(cfg, 3, 1).cuda()})
    with torch.cuda.stream(caller):
        # a host tensor: the device copy is a temporary the backend must keep alive until it has run
        out = backend.run({"images": _images(cfg, 3, 1)}, stream=caller)
        tokens = out["tokens"].clone()  # ordered after the engine on the caller's stream, no host sync
    caller.synchronize()
    assert torch.equal(tokens, want["tokens"])
    assert (out["verts"] - want["verts"]).abs().max() <= 1e-4  # fp32 plan without TF32


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_one_execution_context_per_captured_shape(tiny_plan):
    from engines.load import load_backend

    cfg, _, plan = tiny_plan
    eager = load_backend(plan)
    graphed = load_backend(plan, cuda_graphs=True)
    for batch, seed in ((1, 0), (4, 1), (1, 2), (4, 3)):  # the second 1 and 4 replay their graphs
        images = _images(cfg, batch, seed).cuda()
        want = eager.run({"images": images})["tokens"].clone()
        assert torch.equal(graphed.run({"images": images})["tokens"], want)
    contexts = [entry[1] for entry in graphed._graphs.values()]
    assert len(contexts) == 2 and contexts[0] is not contexts[1]
