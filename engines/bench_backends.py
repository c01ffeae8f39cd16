"""`mega-rt bench backend`: per-stage ms and crops/s of the exported graphs on one backend.

Deterministic: the `oneshot` graph (backbone + decoder + argmax + mesh decode, one launch per batch).
Stochastic: `encode` once per batch, `step` T times (Q samples per crop in the batch dimension), `mesh`
once; per-stage medians and the total. Random weights of a shipped config: speed does not depend on
the values. ONNX/TensorRT engines are taken from the engine cache, exported there on first use; the
torch backend runs the graphs over the models the video pipeline serves (`prepare_for_serving`).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from engines.bench import BenchResult, bench_result, time_calls


def find_or_export(cfg, spec, seed: int = 0, root: Path | None = None, assets_dir=None, progress=print) -> Path:
    """An engine folder for random weights of `cfg`: a cached export of the same format, precision and
    mode (and Q, T) whose batch range covers `spec.batch`, else a new export into the cache."""
    from engines.export import export_engine, folder_for
    from engines.manifest import EngineMismatch, Manifest, check_files
    from engines.models import ModelSource, build_models, random_weights, weights_hash

    runtime_key = ""
    if spec.format != "onnx":
        from engines.trt_build import runtime_info

        runtime_key = runtime_info().key
    folder = folder_for(cfg, weights_hash(random_weights(seed), cfg), spec, root, runtime_key)
    # any cached engine of these weights whose batch range covers the wanted one will do
    lo, hi = spec.batch[0], spec.batch[2]
    for candidate in [folder] + [m.parent for m in sorted(folder.parent.glob("*/manifest.json"))]:
        try:
            manifest = Manifest.read(candidate)
            same = (manifest.format, manifest.precision, manifest.mode) == (
                spec.format,
                spec.precision,
                "stochastic" if spec.stochastic else "deterministic",
            )
            if spec.stochastic:
                same = same and (manifest.samples, manifest.steps) == (spec.samples, spec.steps)
            if runtime_key and (manifest.tensorrt or {}).get("version") is None:
                same = False
            if not (same and manifest.batch[0] <= lo and manifest.batch[2] >= hi):
                continue
            check_files(manifest, candidate)
            if runtime_key:
                from engines.manifest import check_runtime
                from engines.trt_build import runtime_info

                info = runtime_info()
                check_runtime(manifest, candidate, info.tensorrt_version, info.compute_capability, info.gpu_name)
            progress(f"engine: {candidate} (cached)")
            return candidate
        except EngineMismatch:
            continue
    progress(f"engine: exporting into {folder}")
    models = build_models(ModelSource(cfg, seed=seed), assets_dir)
    return export_engine(models, spec, root, progress=progress, parity=False).folder


def bench_backend(
    backend: str,
    cfg,
    batches=(1, 8),
    samples: int = 8,
    steps: int = 5,
    repeats: int = 5,
    warmup: int = 1,
    stochastic: bool = False,
    precision: str = "fp32",
    engine: Path | None = None,
    threads: int | None = None,
    device: str = "cpu",
    compile: bool = False,
    cuda_graphs: bool = False,
    assets_dir=None,
    progress=print,
) -> tuple[list[BenchResult], dict]:
    """Figures for `backend` (torch | onnxruntime | tensorrt); returns (results, meta)."""
    from engines.adapters import ONESHOT_GRAPHS, STOCHASTIC_GRAPHS, example_inputs, fixed_step_graphs
    from engines.export import ExportSpec
    from engines.load import load_graph_backends
    from engines.manifest import Manifest
    from engines.models import ModelSource, build_models, prepare_for_serving, torch_backends
    from engines.runner import MegaRunner

    lo, hi = min(batches), max(batches)
    meta: dict = {"backend": backend, "precision": precision, "config": cfg.name}
    runners = {}
    models = None
    for mode in ("deterministic", "stochastic") if stochastic else ("deterministic",):
        if backend == "torch":
            if models is None:
                models = prepare_for_serving(build_models(ModelSource(cfg, seed=0), assets_dir), warn=progress)
            names = STOCHASTIC_GRAPHS if mode == "stochastic" else ONESHOT_GRAPHS
            graphs = torch_backends(models, names, precision, samples, device, compile, cuda_graphs)
            runners[mode] = MegaRunner(graphs, cfg.seq_length, cfg.num_embeddings, samples, steps, cfg.temperature)
            if mode == "stochastic":  # the same loop on the fixed-length step graphs, timed beside it
                names = ("encode", *dict.fromkeys(fixed_step_graphs(cfg.seq_length, steps)), "mesh")
                graphs = torch_backends(models, names, precision, samples, device, compile, cuda_graphs)
                runners["fixed"] = MegaRunner(
                    graphs, cfg.seq_length, cfg.num_embeddings, samples, steps, cfg.temperature
                )
            continue
        spec = ExportSpec(
            format="tensorrt" if backend == "tensorrt" else "onnx",
            precision=precision,
            batch=(lo, hi, hi),
            stochastic=mode == "stochastic",
            samples=samples,
            steps=steps,
        )
        folder = (
            Path(engine) if engine is not None else find_or_export(cfg, spec, assets_dir=assets_dir, progress=progress)
        )
        manifest = Manifest.read(folder)
        if (manifest.mode == "stochastic") != (mode == "stochastic"):
            raise ValueError(f"{folder} is a {manifest.mode} engine; give one --engine per mode, or no --engine")
        backends = load_graph_backends(folder, manifest, backend, threads=threads, cuda_graphs=cuda_graphs)
        runners[mode] = MegaRunner(
            backends, cfg.seq_length, cfg.num_embeddings, manifest.samples, manifest.steps or steps, cfg.temperature
        )
        meta[f"{mode}_engine"] = str(folder)

    results: list[BenchResult] = []
    oneshot = runners["deterministic"]
    dev = next(iter(oneshot.backends.values())).device
    with torch.inference_mode():
        for b in batches:
            images = example_inputs("oneshot", b, cfg, device=dev)["images"]
            r = bench_result(
                f"{backend} oneshot graph",
                b,
                time_calls(lambda: oneshot.deterministic(images), repeats, warmup, dev),
                b,
            )
            progress(r.line())
            results.append(r)
            if not stochastic:
                continue
            for key, label in (("stochastic", ""), ("fixed", " fixed-length")):
                if key in runners:
                    results += _bench_stochastic(
                        runners[key], images, b, f"{backend}{label}", repeats, warmup, dev, progress
                    )
    return results, meta


def _bench_stochastic(runner, images, b, label, repeats, warmup, dev, progress) -> list[BenchResult]:
    """encode / T steps / mesh medians and the total of one runner's stochastic loop."""
    results = []
    gen = torch.Generator(device=dev).manual_seed(0)
    stages: dict[str, list[float]] = {"encode": [], "step": [], "mesh": []}

    def run():
        t = {}
        runner.stochastic(images, generator=gen, timings=t)
        for k, v in t.items():
            stages[k].append(v)

    total = time_calls(run, repeats, warmup, dev)
    for k in stages:
        stages[k] = stages[k][warmup:]  # drop the warm-up calls
    for name, times in (
        ("encode (once per crop)", stages["encode"]),
        (f"step x{runner.steps} (Q={runner.samples})", stages["step"]),
        (f"mesh decode (Q={runner.samples})", stages["mesh"]),
    ):
        r = bench_result(f"{label} stoch {name}", b, times, b)
        progress(r.line())
        results.append(r)
    r = bench_result(
        f"{label} stochastic total",
        b,
        total,
        b,
        samples=runner.samples,
        steps=runner.steps,
        step_ms=round(statistics.median(stages["step"]) / runner.steps, 2),
    )
    progress(r.line())
    results.append(r)
    return results
