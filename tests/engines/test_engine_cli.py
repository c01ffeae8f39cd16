"""`mega-rt export`, `verify` and `bench --backend`: what a user types, what they get back."""

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
    result = _run("export", "--config", "mega_tiny", "--stochastic", "--samples", "2", "--steps", "2", "--batch", "1:2:4")
    assert result.exit_code == 0, result.output
    assert "random weights" in result.stderr and "meaningless" in result.stderr
    folder = _folder(result.stdout)
    assert cache / "engines" in folder.parents
    assert sorted(p.name for p in folder.iterdir()) == ["encode.onnx", "manifest.json", "mesh.onnx", "step.onnx"]
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
        "export", "--config", str(config), "--weights", str(ckpt / "CVQMAE" / "mega_hrnet"),
        "--mesh-weights", str(ckpt / "MESH_VQVAE" / "mesh_vqvae_54"), "--batch", "1:2:2",
    )
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert "det     tokens 0/" in result.stdout
    folder = _folder(result.stdout)
    report_path = tmp_path / "verify.json"
    result = _run("verify", "torch", str(folder), "--batch", "2", "--json", str(report_path))
    assert result.exit_code == 0, result.output
    assert "tokens           identical" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["graphs"]["det"]["verts"]["max_abs"] <= 1e-4
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
        "bench", "--backend", "onnxruntime", "--config", "mega_tiny", "--batch", "2", "--stochastic",
        "--samples", "2", "--steps", "2", "--repeats", "1", "--threads", "1", "--json", str(out),
    )
    assert result.exit_code == 0, result.output
    names = [r["name"] for r in json.loads(out.read_text())["results"]]
    assert names == [
        "onnxruntime det graph",
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
    result = _run("bench", "--backend", "tensorrt", "--config", "mega_tiny")
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
    result = _run("bench", "--backend", "onnxruntime", "--config", "mega_tiny", "--batch", "2", "--repeats", "1")
    assert result.exit_code == 0, result.output
    assert f"engine: {folder} (cached)" in result.output
    assert len(list(folder.parent.iterdir())) == 1  # nothing new was exported
