"""Pick a backend by artefact, check its manifest, and assemble the graphs of an engine folder.

    load_backend("…/oneshot.onnx")                  -> OnnxRuntimeBackend
    load_backend("…/oneshot.plan")                  -> TensorRTBackend (manifest checked against this runtime/GPU)
    load_backend("torch", "oneshot", models=models) -> TorchBackend
    load_runner("…/engine-folder")                  -> MegaRunner over all graphs of the folder

A TensorRT plan is refused (EngineMismatch, one line with the rebuild command) when its manifest names
another TensorRT version or compute capability, or - when the caller says what it expects - another
config or other weights. Heavy libraries are imported by the backend that needs them.
"""

from __future__ import annotations

from pathlib import Path

from engines.backends.base import BackendError
from engines.manifest import EngineMismatch, Manifest, check_files, check_model, check_runtime

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PLAN_SUFFIXES = (".plan", ".engine")


def load_backend(
    path_or_name,
    graph: str | None = None,
    *,
    models=None,
    precision: str = "fp32",
    samples: int = 1,
    device=None,
    threads: int | None = None,
    providers: list[str] | None = None,
    cuda_graphs: bool = False,
    compile: bool = False,
    expect_config_hash: str | None = None,
    expect_weights_hash: str | None = None,
):
    """One graph's backend, chosen by what `path_or_name` is (see the module docstring)."""
    if str(path_or_name) == "torch":
        if models is None or graph is None:
            raise BackendError(
                "the torch backend needs the models and a graph name: load_backend('torch', 'oneshot', models=...)"
            )
        from engines.models import torch_backends

        return torch_backends(models, [graph], precision, samples, device, compile, cuda_graphs)[graph]
    path = Path(path_or_name)
    if path.is_dir():
        if graph is None:
            raise BackendError(f"{path} is an engine folder: name a graph, or use load_runner() for all of them")
        manifest = Manifest.read(path)
        path = manifest.graph_path(path, graph)
    if not path.exists():
        raise BackendError(f"{path}: no such engine file (names: a .onnx / .plan file, an engine folder, or 'torch')")
    manifest = Manifest.read(path) if (path.parent / "manifest.json").is_file() else None
    if manifest is not None:
        check_model(manifest, path.parent, expect_config_hash, expect_weights_hash)
    graph = graph or path.stem
    if path.suffix == ".onnx":
        from engines.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, graph, providers=providers, threads=threads)
    if path.suffix in PLAN_SUFFIXES:
        from engines.backends.tensorrt_backend import TensorRTBackend
        from engines.trt_build import runtime_info

        if manifest is None:
            raise EngineMismatch(
                f"{path}: a TensorRT plan without its manifest.json cannot be checked; rebuild with `mega-rt export --format tensorrt`"
            )
        info = runtime_info()
        check_runtime(manifest, path.parent, info.tensorrt_version, info.compute_capability, info.gpu_name)
        entry = manifest.graphs.get(graph, {})
        return TensorRTBackend(path, graph, cuda_graphs=cuda_graphs, tensor_names=entry.get("tensor_names"))
    raise BackendError(
        f"{path}: unknown artefact type {path.suffix!r} (.onnx for onnxruntime, .plan/.engine for TensorRT)"
    )


def load_graph_backends(
    folder, manifest: Manifest | None = None, backend: str | None = None, models=None, **opts
) -> dict:
    """Every graph of an engine folder on one backend (default: the one its format is for).

    `backend="onnxruntime"` on a TensorRT folder runs the ONNX files the plans were built from;
    `backend="torch"` rebuilds the PyTorch models from the manifest (or takes `models`).
    """
    folder = Path(folder)
    manifest = manifest or Manifest.read(folder)
    check_files(manifest, folder)
    backend = backend or ("onnxruntime" if manifest.format == "onnx" else "tensorrt")
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r} ({', '.join(BACKENDS)})")
    if backend == "torch":
        from engines.models import models_from_manifest, torch_backends

        models = models or models_from_manifest(manifest)
        opts = {k: v for k, v in opts.items() if k in ("device", "compile", "cuda_graphs")}
        return torch_backends(models, list(manifest.graphs), manifest.precision, manifest.samples, **opts)
    out = {}
    for graph, entry in manifest.graphs.items():
        if backend == "onnxruntime":
            path = folder / entry.get("onnx", entry["file"])
            if path.suffix != ".onnx":
                raise BackendError(f"{folder}: no ONNX file for {graph}")
            out[graph] = load_backend(path, graph, **{k: v for k, v in opts.items() if k in ("threads", "providers")})
        else:
            if manifest.format == "onnx":
                raise BackendError(f"{folder} holds ONNX graphs; build plans with `mega-rt export --format tensorrt`")
            out[graph] = load_backend(
                folder / entry["file"], graph, **{k: v for k, v in opts.items() if k == "cuda_graphs"}
            )
    return out


def load_runner(
    path,
    backend: str | None = None,
    expect_config_hash: str | None = None,
    expect_weights_hash: str | None = None,
    **opts,
):
    """A MegaRunner over an engine folder (deterministic: oneshot; stochastic: encode, step, mesh)."""
    from engines.runner import MegaRunner

    folder = Path(path)
    folder = folder if folder.is_dir() else folder.parent
    manifest = Manifest.read(folder)
    check_model(manifest, folder, expect_config_hash, expect_weights_hash)
    backends = load_graph_backends(folder, manifest, backend, **opts)
    cfg = manifest.mega_config
    stochastic = manifest.mode == "stochastic"
    return MegaRunner(
        backends,
        cfg["seq_length"],
        cfg["num_embeddings"],
        manifest.samples,
        manifest.steps if stochastic else cfg["steps"],
        manifest.temperature if stochastic else cfg["temperature"],
    )
