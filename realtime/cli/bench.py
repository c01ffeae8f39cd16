"""mega-rt bench: the model, the exported backends and the whole pipeline."""

from __future__ import annotations

import click

from realtime.cli.common import demo_weights_installed, fail, mega_config, parse_batches

@click.command("bench", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--config", "config_name", default="mega_hrnet", show_default=True, help="Shipped config: mega_hrnet, mega_resnet or mega_vit.")
@click.option("--batch", "batch_text", default="1,8", show_default=True, help="Comma-separated batch sizes.")
@click.option("--samples", default=8, show_default=True, help="Q hypotheses per crop (stochastic).")
@click.option("--steps", default=5, show_default=True, help="T decoding steps (stochastic).")
@click.option("--repeats", default=5, show_default=True, help="Timed repeats per figure (median reported).")
@click.option("--threads", default=None, type=int, help="torch CPU threads (default: torch's choice).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option(
    "--stochastic/--no-stochastic",
    default=None,
    help="Include the stochastic (Q x T) figures. Default: on for the plain PyTorch model, off with --backend.",
)
@click.option(
    "--backend",
    type=click.Choice(["torch", "onnxruntime", "tensorrt"]),
    default=None,
    help="Benchmark the exported graphs on this backend (per-stage ms); default: the plain PyTorch model.",
)
@click.option("--engine", "engine_path", type=click.Path(exists=True, file_okay=False), default=None, help="Engine folder to benchmark (default: the cached one for --config, exported on first use).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True, help="Precision: graph precision with --backend; for the plain model, bf16 (CPU/GPU) or fp16 (GPU) autocast.")
@click.option("--compile", "compile_", is_flag=True, help="torch backend: torch.compile the graphs.")
@click.option("--cuda-graphs", is_flag=True, help="torch/tensorrt backends on CUDA: replay CUDA graphs per batch size.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON.")
@click.option(
    "--pipeline",
    "pipeline_path",
    metavar="IN",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Instead: end-to-end fps and per-stage ms of `mega-rt video` on IN (= `bench-pipeline IN`). Uses --device, --threads, "
    "--json, --backend, --engine, and --samples/--steps when given or with --stochastic (else deterministic). Weights: the "
    "engine's with --engine, random ones of --config when --config is given, else the demo weights when installed, else "
    "random weights of --config (said so; the cost per frame is the same). Other `bench-pipeline` options (--detector, "
    "--boxes, --max-frames, --no-render, --weights, ...) may follow.",
)
@click.pass_context
def bench(ctx, config_name, batch_text, samples, steps, repeats, threads, device, stochastic, backend, engine_path, precision, compile_, cuda_graphs, json_path, pipeline_path):
    """Benchmark the model (random weights): deterministic crops/s, mesh decode ms, stochastic ms/crop.

    With --backend, the exported graphs run on torch, onnxruntime or TensorRT and every stage is timed.
    With --pipeline IN, the whole video pipeline is timed instead.
    """
    import json
    import platform

    if pipeline_path is not None:
        _bench_pipeline(ctx, pipeline_path, config_name, samples, steps, threads, device, stochastic, backend, engine_path, precision, json_path)
        return
    if ctx.args:  # extra options are only forwarded to bench-pipeline
        fail(f"bench: unexpected {' '.join(ctx.args)} (options like these need --pipeline IN)")

    import torch

    if backend is not None:
        _bench_backend(config_name, batch_text, samples, steps, repeats, threads, device, bool(stochastic), backend, engine_path, precision, compile_, cuda_graphs, json_path)
        return

    from engines.bench import bench_model, results_json
    from train.assets import AssetError
    from train.config import ConfigError

    batches = parse_batches(batch_text)
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    if precision == "fp16" and not device.startswith("cuda"):
        fail("--precision fp16: fp16 autocast needs --device cuda; on a CPU use --precision bf16 (or fp32)")
    click.echo(f"torch {torch.__version__}  device {device}  threads {torch.get_num_threads()}  config {config_name}  precision {precision}")
    try:
        results = bench_model(config_name, batches, samples, steps, repeats, device=device, stochastic=stochastic is not False, precision=precision, progress=click.echo)
    except (AssetError, ConfigError) as e:
        fail(str(e))
    if json_path:
        meta = dict(config=config_name, precision=precision, device=device, threads=torch.get_num_threads(), torch=torch.__version__, cpu=platform.processor())
        from pathlib import Path

        Path(json_path).write_text(json.dumps(results_json(results, **meta), indent=1))
        click.echo(f"wrote {json_path}")


def _bench_pipeline(ctx, input_path, config_name, samples, steps, threads, device, stochastic, backend, engine_path, precision, json_path):
    """`bench --pipeline IN`: run `bench-pipeline` with bench's shared options mapped onto its own."""
    from click.core import ParameterSource

    def given(name):
        return ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE

    def forwarded(flag):
        return any(a == flag or a.startswith(flag + "=") for a in ctx.args)

    for name, flag in (("batch_text", "--batch"), ("repeats", "--repeats"), ("compile_", "--compile"), ("cuda_graphs", "--cuda-graphs")):
        if given(name):
            fail(f"{flag} does not apply to --pipeline (it times whole frames of a video)")
    if precision != "fp32":
        fail("--precision does not apply to --pipeline: an --engine runs at the precision it was exported with")
    args = [input_path, "--device", device, "--backend", backend or "torch"]
    if threads:
        args += ["--threads", str(threads)]
    if engine_path:
        args += ["--engine", engine_path]
    if json_path:
        args += ["--json", json_path]
    # bench's Q=8 default is for its stochastic figures; a video runs deterministic unless asked
    if stochastic or given("samples"):
        args += ["--samples", str(samples), "--steps", str(steps)]
    random_weights = forwarded("--random-weights")
    if not (engine_path or forwarded("--weights") or random_weights):
        if given("config_name"):
            random_weights = True
        elif not demo_weights_installed():
            click.echo(f"bench --pipeline: no demo weights installed; timing random weights of {config_name} (the same work per frame)")
            random_weights = True
        if random_weights:
            args.append("--random-weights")
    if random_weights:  # bench parsed --config itself: hand it on
        args += ["--config", config_name]
    from realtime.cli.video import bench_pipeline as command

    with command.make_context("--pipeline", args + ctx.args, parent=ctx) as sub:
        command.invoke(sub)


def _bench_backend(config_name, batch_text, samples, steps, repeats, threads, device, stochastic, backend, engine_path, precision, compile_, cuda_graphs, json_path):
    import json
    import platform
    from pathlib import Path

    import torch

    from engines.backends.base import BackendError
    from engines.bench import results_json
    from engines.bench_backends import bench_backend
    from engines.manifest import EngineMismatch
    from train.assets import AssetError

    batches = parse_batches(batch_text)
    if threads:
        torch.set_num_threads(threads)
    if backend == "tensorrt" or device.startswith("cuda"):
        if not torch.cuda.is_available():
            fail(f"--backend {backend} --device {device}: no CUDA GPU is visible to torch")
        device = "cuda"
    cfg = mega_config(config_name)
    click.echo(f"backend {backend}  precision {precision}  device {device}  threads {torch.get_num_threads()}  config {cfg.name}")
    try:
        results, meta = bench_backend(
            backend, cfg, batches, samples, steps, repeats, stochastic=stochastic, precision=precision,
            engine=Path(engine_path) if engine_path else None, threads=threads, device=device,
            compile=compile_, cuda_graphs=cuda_graphs, progress=click.echo,
        )
    except (BackendError, EngineMismatch, AssetError, ValueError) as e:
        fail(str(e), 1)
    if json_path:
        meta.update(device=device, threads=torch.get_num_threads(), torch=torch.__version__, cpu=platform.processor())
        Path(json_path).write_text(json.dumps(results_json(results, **meta), indent=1))
        click.echo(f"wrote {json_path}")

