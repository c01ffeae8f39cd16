"""`mega-rt export`, `verify`, `bench model` and `bench backend`: what a user types, what they get back."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from realtime.cli import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEGA_RT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _folder(output: str):
    from pathlib import Path

    line = next(line for line in output.splitlines() if line.strip().startswith("folder"))
    return Path(line.split(None, 1)[1])


def test_export_without_weights_or_config_says_what_to_pass(cache):
    result = _run("export")
    assert result.exit_code == 2
    assert "--weights" in result.output and "--config mega_hrnet" in result.output
    assert "Traceback" not in result.output


def test_export_random_tiny_stochastic_writes_into_the_cache_with_a_summary(cache):
    from engines.adapters import fixed_step_graphs

    result = _run(
        "export", "--config", "mega_tiny", "--stochastic", "--samples", "2", "--steps", "2", "--batch", "1:2:4"
    )
    assert result.exit_code == 0, result.output
    assert "random weights" in result.stderr and "meaningless" in result.stderr
    folder = _folder(result.stdout)
    assert cache / "engines" in folder.parents
    fixed = [f"{g}.onnx" for g in fixed_step_graphs(54, 2)]  # mega_tiny's 54 tokens, T = 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["encode.onnx", "manifest.json", "mesh.onnx", "step.onnx", *fixed]
    )
    assert "loop    tokens 0/" in result.stdout  # the whole loop reproduced PyTorch
    assert "rebuild  mega-rt export --format onnx --precision fp32 --batch 1:2:4 --stochastic" in result.stdout


def test_export_official_checkpoint_then_verify_against_torch(cache, reference_dir, assets_dir, tmp_path):
    """The HRNet fixture (official format, strict loading) through export, then `mega-rt verify`."""
    from tests.reference import mini_config
    from train.config import config_to_dict

    manifest = json.loads((reference_dir / "fixtures" / "manifest.json").read_text())
    config = tmp_path / "mini_hrnet.yaml"
    config.write_text(yaml.safe_dump(config_to_dict(mini_config(manifest, "cvqmae_hrnet"))))
    ckpt = reference_dir / "fixtures" / "checkpoint"
    result = _run(
        "export",
        "--config",
        str(config),
        "--weights",
        str(ckpt / "CVQMAE" / "mega_hrnet"),
        "--mesh-weights",
        str(ckpt / "MESH_VQVAE" / "mesh_vqvae_54"),
        "--batch",
        "1:2:2",
    )
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert "oneshot tokens 0/" in result.stdout
    folder = _folder(result.stdout)
    report_path = tmp_path / "verify.json"
    result = _run("verify", "torch", str(folder), "--batch", "2", "--json", str(report_path))
    assert result.exit_code == 0, result.output
    assert "tokens           identical" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["graphs"]["oneshot"]["verts"]["max_abs"] <= 1e-4
    assert report["reference"] == "torch" and report["candidate"] == "onnxruntime"


def test_verify_refuses_engines_of_different_weights(cache):
    folders = []
    for seed in ("0", "1"):
        result = _run("export", "--config", "mega_tiny", "--seed", seed, "--batch", "1:1:2", "--no-parity")
        assert result.exit_code == 0, result.output
        folders.append(str(_folder(result.stdout)))
    result = _run("verify", *folders)
    assert result.exit_code == 1
    assert "different configs or weights" in result.output


def test_bench_backend_onnxruntime_reports_stages_and_json(cache, tmp_path):
    out = tmp_path / "bench.json"
    result = _run(
        "bench",
        "backend",
        "--backend",
        "onnxruntime",
        "--config",
        "mega_tiny",
        "--batch",
        "2",
        "--stochastic",
        "--samples",
        "2",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert result.exit_code == 0, result.output
    names = [r["name"] for r in json.loads(out.read_text())["results"]]
    assert names == [
        "onnxruntime oneshot graph",
        "onnxruntime stoch encode (once per crop)",
        "onnxruntime stoch step x2 (Q=2)",
        "onnxruntime stoch mesh decode (Q=2)",
        "onnxruntime stochastic total",
    ]
    meta = json.loads(out.read_text())["meta"]
    assert meta["backend"] == "onnxruntime" and meta["threads"] == 1


def test_bench_tensorrt_without_a_gpu_is_a_one_line_error(cache):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = _run("bench", "backend", "--backend", "tensorrt", "--config", "mega_tiny")
    assert result.exit_code == 2
    assert "no CUDA GPU" in result.output and "Traceback" not in result.output


def test_export_tensorrt_where_it_cannot_run_says_why_before_building(cache):
    import importlib.util

    import torch

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT can run here")
    result = _run("export", "--config", "mega_hrnet", "--format", "tensorrt")
    assert result.exit_code == 1
    assert "mega-rt[tensorrt]" in result.output or "CUDA GPU" in result.output
    assert "building the PyTorch models" not in result.output  # refused before the slow part


def test_bench_reuses_a_cached_engine_whose_batch_range_covers_the_request(cache):
    result = _run("export", "--config", "mega_tiny", "--batch", "1:4:4", "--no-parity")
    assert result.exit_code == 0, result.output
    folder = _folder(result.stdout)
    result = _run(
        "bench", "backend", "--backend", "onnxruntime", "--config", "mega_tiny", "--batch", "2", "--repeats", "1"
    )
    assert result.exit_code == 0, result.output
    assert f"engine: {folder} (cached)" in result.output
    assert len(list(folder.parent.iterdir())) == 1  # nothing new was exported


def test_bench_lists_its_benchmarks():
    result = _run("bench", "--help")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].strip().splitlines()]
    assert listed == ["backend", "detector", "model", "pipeline", "render"]


def test_bench_model_times_the_served_model_and_writes_json(cache, tmp_path):
    out = tmp_path / "model.json"
    result = _run("bench", "model", "--config", "mega_tiny", "--batch", "1", "--repeats", "1", "--samples", "2", "--steps", "2",
                  "--threads", "1", "--device", "cpu", "--json", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert [r["name"] for r in figures["results"]] == [
        "deterministic (MEGA)", "mesh-vqvae decode", "deterministic + decode", "stochastic Q=2 T=2 +decode",
    ]  # fmt: skip
    assert figures["meta"]["config"] == "mega_tiny" and figures["meta"]["threads"] == 1
    assert "warning" not in result.output  # the BN fold applied


def test_bench_model_fp16_on_a_cpu_is_a_one_line_error():
    result = _run("bench", "model", "--config", "mega_tiny", "--device", "cpu", "--precision", "fp16")
    assert result.exit_code == 2
    assert "needs a CUDA device" in result.output and len(result.output.strip().splitlines()) == 1


def test_bench_commands_take_only_their_own_options():
    result = _run("bench", "model", "--max-frames", "3")
    assert result.exit_code == 2 and "No such option '--max-frames'" in result.output
    result = _run("bench", "model", "--engine", "x")
    assert result.exit_code == 2 and "No such option '--engine'" in result.output


def test_bench_backend_torch_runs_the_served_models(cache, monkeypatch):
    """The torch backend times the models the pipeline runs: they pass through prepare_for_serving, which
    says so when the BN fold cannot be applied (forced here) instead of silently timing another network."""
    from train.model import inference

    def refuse(model, example=None, atol=1e-3):
        raise RuntimeError("inference rewrite changed the outputs (max abs diff 1); not using it")

    monkeypatch.setattr(inference, "prepare_for_inference", refuse)
    result = _run(
        "bench",
        "backend",
        "--backend",
        "torch",
        "--config",
        "mega_tiny",
        "--batch",
        "1",
        "--repeats",
        "1",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "warning: BatchNorm folding / channels_last not applied" in result.output
    assert "torch oneshot graph" in result.output and "precision fp32" in result.output


def test_bench_pipeline_names_a_missing_input_before_loading_a_detector(tmp_path):
    result = _run("bench", "pipeline", str(tmp_path / "nope.mp4"))  # the default detector would need a download
    assert result.exit_code == 2
    assert "nope.mp4: no such file" in result.output and "detector" not in result.output
