"""mega-rt bench: three benchmarks, one command each.

mega-rt bench model          the PyTorch MEGA the pipeline serves (random weights): crops/s, decode ms, stochastic ms
mega-rt bench backend        the exported graphs on torch, onnxruntime or TensorRT, every stage timed
mega-rt bench pipeline IN    the whole video pipeline on IN: end-to-end fps and per-stage ms
mega-rt bench detector       the person detector graph on torch, onnxruntime (and TensorRT): ms per frame
"""

from __future__ import annotations

import click

from realtime.cli.common import fail, mega_config, parse_batches, refuse_overwriting_inputs
from realtime.cli.video import (
    build_stages,
    check_decode,
    check_model_options,
    decode_option,
    input_files,
    model_options,
    run_with_progress,
    video_fps,
)


@click.group("bench")
def bench():
    """Benchmark the model, an inference backend, the render stage, or the whole video pipeline."""


def _shared_options(f):
    """Options of `bench model` and `bench backend` (random weights of a shipped config, timed crops)."""
    opts = [
        click.option(
            "--config",
            "config_name",
            default="mega_hrnet",
            show_default=True,
            help="Shipped config: mega_hrnet, mega_resnet, mega_vit or mega_tiny.",
        ),
        click.option(
            "--batch",
            "batch_text",
            default="1,8",
            show_default=True,
            help="Comma-separated batch sizes (crops per call).",
        ),
        click.option("--samples", default=8, show_default=True, help="Q hypotheses per crop (stochastic)."),
        click.option("--steps", default=5, show_default=True, help="T decoding steps (stochastic)."),
        click.option("--repeats", default=5, show_default=True, help="Timed repeats per figure (median reported)."),
        click.option("--threads", default=None, type=int, help="torch CPU threads (default: torch's choice)."),
        click.option("--device", default=None, help="cpu or cuda (default: cuda when available)."),
        click.option(
            "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON."
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _device(device: str | None) -> str:
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {device}: no CUDA GPU is visible to torch; use --device cpu")
    return device


def _write_json(json_path: str, figures: dict) -> None:
    from train.io import write_json_atomic

    write_json_atomic(json_path, figures)
    click.echo(f"wrote {json_path}")


def _host_meta(**meta) -> dict:
    import platform

    import torch

    return dict(meta, threads=torch.get_num_threads(), torch=torch.__version__, cpu=platform.processor())


@bench.command("model")
@_shared_options
@click.option(
    "--stochastic/--no-stochastic", default=True, show_default=True, help="Include the stochastic (Q x T) figures."
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "bf16"]),
    default="fp32",
    show_default=True,
    help="Autocast precision: bf16 (CPU/GPU) or fp16 (GPU).",
)
def bench_model_cmd(
    config_name, batch_text, samples, steps, repeats, threads, device, json_path, stochastic, precision
):
    """The PyTorch MEGA as the pipeline serves it (BN folded, channels_last): deterministic crops/s,
    Mesh-VQ-VAE decode ms and stochastic ms per crop, on random weights of --config."""
    import torch

    from engines.bench import bench_model, results_json
    from train.assets import AssetError
    from train.config import ConfigError

    batches = parse_batches(batch_text)
    if threads:
        torch.set_num_threads(threads)
    device = _device(device)
    if precision == "fp16" and not device.startswith("cuda"):
        fail("--precision fp16: fp16 autocast needs a CUDA device; on a CPU use --precision bf16 (or fp32)")
    mega_config(config_name)  # a one-line error for an unknown name, before any work
    click.echo(
        f"torch {torch.__version__}  device {device}  threads {torch.get_num_threads()}  config {config_name}  precision {precision}"
    )
    try:
        results = bench_model(
            config_name,
            batches,
            samples,
            steps,
            repeats,
            device=device,
            stochastic=stochastic,
            precision=precision,
            progress=click.echo,
        )
    except (AssetError, ConfigError) as e:
        fail(str(e))
    if json_path:
        _write_json(
            json_path, results_json(results, **_host_meta(config=config_name, precision=precision, device=device))
        )


@bench.command("backend")
@click.option(
    "--backend", type=click.Choice(["torch", "onnxruntime", "tensorrt"]), default="torch", show_default=True,
    help="Where the graphs run; torch runs them over the models the pipeline serves.",
)  # fmt: skip
@_shared_options
@click.option("--stochastic", is_flag=True, help="Also time the stochastic loop (encode, T steps, mesh).")
@click.option(
    "--engine",
    "engine_path",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Engine folder to time (default: the cached one for --config, exported on first use).",
)
@click.option(
    "--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto", show_default=True,
    help="Graph precision; auto = what the pipeline and `mega-rt export` use (torch: fp16 on CUDA, fp32 on CPU; onnxruntime fp32; tensorrt fp16).",
)  # fmt: skip
@click.option(
    "--compile", "compile_", type=click.Choice(["default", "reduce-overhead", "max-autotune"]), default=None,
    is_flag=False, flag_value="default", help="torch backend: torch.compile the graphs in this mode (bare --compile: default).",
)  # fmt: skip
@click.option("--cuda-graphs", is_flag=True, help="torch/tensorrt backends on CUDA: replay CUDA graphs per batch size.")
def bench_backend_cmd(
    backend,
    config_name,
    batch_text,
    samples,
    steps,
    repeats,
    threads,
    device,
    json_path,
    stochastic,
    engine_path,
    precision,
    compile_,
    cuda_graphs,
):
    """The MEGA graphs on one backend, every stage timed: the oneshot graph, and with --stochastic the
    encode / step / mesh loop. Random weights of --config; ONNX and TensorRT engines come from the cache."""
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
    if backend == "tensorrt":
        if not torch.cuda.is_available():
            fail(f"--backend {backend}: no CUDA GPU is visible to torch")
        device = "cuda"
    device = _device(device)
    if precision == "auto":
        precision = {"onnxruntime": "fp32", "tensorrt": "fp16"}.get(backend) or (
            "fp16" if device.startswith("cuda") else "fp32"
        )
    if backend == "torch" and precision == "fp16" and not device.startswith("cuda"):
        fail("--precision fp16 on the torch backend needs a CUDA device; on a CPU use bf16 or fp32")
    cfg = mega_config(config_name)
    click.echo(
        f"backend {backend}  precision {precision}  device {device}  threads {torch.get_num_threads()}  config {cfg.name}"
    )
    try:
        results, meta = bench_backend(
            backend, cfg, batches, samples, steps, repeats, stochastic=stochastic, precision=precision,
            engine=Path(engine_path) if engine_path else None, threads=threads, device=device,
            compile=compile_, cuda_graphs=cuda_graphs, progress=click.echo,
        )  # fmt: skip
    except (BackendError, EngineMismatch, AssetError, ValueError) as e:
        fail(str(e), 1)
    if json_path:
        _write_json(json_path, results_json(results, **_host_meta(**meta, device=device)))


@bench.command("pipeline")
@click.argument("input_path", metavar="IN")
@click.option("--render/--no-render", default=True, show_default=True, help="Include rendering and mp4 encoding.")
@click.option("--frame-batch", type=int, default=4, show_default=True, help="Frames whose people share one MEGA call.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON."
)
@decode_option
@model_options
def bench_pipeline_cmd(input_path, render, frame_batch, json_path, decode, **kw):
    """End-to-end fps and per-stage ms of `mega-rt video` on IN, with its options (outputs go to a
    temporary folder)."""
    import tempfile
    from pathlib import Path

    import torch

    from realtime.pipeline import PipelineOptions

    check_model_options(kw)
    if frame_batch < 1:
        fail(f"--frame-batch {frame_batch}: must be at least 1")
    refuse_overwriting_inputs({"--json": json_path}, input_files(kw, IN=input_path))
    decode = check_decode(decode)
    detector, regressor, faces, what = build_stages(kw, video_fps(input_path))
    with tempfile.TemporaryDirectory() as tmp:
        options = PipelineOptions(source=input_path, out=str(Path(tmp) / "o.mp4") if render else None, results=str(Path(tmp) / "o.npz"),
                                  max_people=kw["max_people"], max_frames=kw["max_frames"], frame_batch=frame_batch, smooth=kw["smooth"],
                                  meta={"weights": what, **kw["run_meta"]}, joint_regressor=kw["joint_regressor"])  # fmt: skip
        s = run_with_progress(options, kw, detector, regressor, faces, "bench", True, decode)
    click.echo(
        f"{input_path}: {what}, backend {kw['backend']}, device {regressor.device}, threads {torch.get_num_threads()}, samples {kw['samples']}"
    )
    click.echo(s.line())
    if json_path:
        figures = dict(input=input_path, frames=s.frames, people=s.people, fps=s.fps, wall_s=s.wall_s, stage_ms_per_frame=s.stage_ms,
                       latency_ms=s.latency_ms, weights=what, samples=kw["samples"], decode=decode, **kw["run_meta"])  # fmt: skip
        _write_json(json_path, _host_meta(**figures))


@bench.command("render")
@click.option("--people", "people_text", default="1,3,40", show_default=True, help="Comma-separated people per frame.")
@click.option("--size", default="1280x720", show_default=True, help="Frame size WxH.")
@click.option("--frames", type=int, default=30, show_default=True, help="Timed frames per figure (median reported).")
@click.option("--std", is_flag=True, help="Colour the meshes by a per-vertex spread, as the stochastic mode does.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON."
)
def bench_render_cmd(people_text, size, frames, std, json_path):
    """The render stage alone: ms per frame of the overlay (meshes composited over the frame, boxes, legend)
    on a synthetic scene of walking people."""
    from realtime.cli.common import parse_size
    from realtime.overlay_bench import bench_overlay
    from train.render import RendererUnavailable

    try:
        people = tuple(int(x) for x in people_text.split(","))
    except ValueError:
        fail(f"--people {people_text!r}: expected comma-separated integers, e.g. 1,3,40")
    if min(people) < 0 or frames < 1:
        fail("--people must be >= 0 and --frames >= 1")
    width, height = parse_size(size, "--size")
    figures = []
    try:
        for n in people:
            r = bench_overlay(n, width, height, frames, with_std=std)
            click.echo(
                f"render {width}x{height} people {n:<3d} {r['ms_median']:8.2f} ms/frame (median; mean {r['ms_mean']:.2f}; process CPU {r['cpu_ms_median']:.2f} ms)"
            )
            figures.append(r)
    except RendererUnavailable as e:
        fail(str(e), 1)
    if json_path:
        _write_json(json_path, _host_meta(results=figures, std=std))


@bench.command("detector")
@click.option(
    "--detector",
    "weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Safe-format detector (default: the demo detector).",
)
@click.option("--det-imgsz", "imgsz", type=int, default=320, show_default=True, help="Detector input size.")
@click.option("--frame-batch", type=int, default=4, show_default=True, help="Frames per detector call.")
@click.option("--size", default="1280x720", show_default=True, help="Frame size WxH.")
@click.option(
    "--backends", "backends_text", default="torch,onnxruntime", show_default=True, help="Comma-separated backends."
)
@click.option("--repeats", default=5, show_default=True, help="Timed repeats per figure (median reported).")
@click.option("--threads", default=None, type=int, help="CPU threads of torch and onnxruntime.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON."
)
def bench_detector_cmd(weights, imgsz, frame_batch, size, backends_text, repeats, threads, device, json_path):
    """The detector step (device letterbox, network, NMS, one copy to the host) per backend, on synthetic frames."""
    import tempfile

    import numpy as np
    import torch

    from engines.backends.base import BackendError
    from engines.detector import DetectorExportSpec, export_detector, load_detector, time_detector
    from train.config import parse_size
    from train.demo import DEMO_DIR

    device = _device(device)
    if threads:
        torch.set_num_threads(threads)
    w, h = parse_size(size)
    backends = [b.strip() for b in backends_text.split(",") if b.strip()]
    weights = weights or str(DEMO_DIR / "detector.pt")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(max(1, frame_batch))]
    figures = {}
    try:
        with tempfile.TemporaryDirectory() as root:
            fmt = "tensorrt" if "tensorrt" in backends else "onnx"
            spec = DetectorExportSpec(
                fmt, "fp16" if fmt == "tensorrt" else "fp32", imgsz, (1, len(frames), max(8, len(frames)))
            )
            folder = export_detector(weights, spec, root, progress=lambda m: None).folder
            for name in backends:
                engine = load_detector(folder, name, device if name == "torch" else None, threads)
                figures[name] = time_detector(engine, frames, repeats=repeats)
                figures[name]["device"] = str(engine.device)
                click.echo(
                    f"detector {name:12s} {engine.device}: {figures[name]['ms_per_frame']:.1f} ms/frame ({figures[name]['ms_per_call']:.1f} ms per call of {len(frames)} frames {w}x{h} at {imgsz}px)"
                )
    except (BackendError, ValueError) as e:
        fail(str(e))
    if json_path:
        _write_json(json_path, {"detector": figures, **_host_meta(imgsz=imgsz, size=[w, h], weights=weights)})
