"""`mega-rt video` and `mega-rt stream`, the CLI side of realtime/pipeline.py, and the options `bench pipeline` shares.

Exit codes: 0 success
(also when nobody was detected), 1 runtime failure, 2 bad usage or input (missing file, not a video,
camera that does not open, unwritable output, missing weights), 130 interrupted (outputs finalised).
"""

from __future__ import annotations

import os

import click

from realtime.cli.common import fail, mega_config

EXIT_INTERRUPTED = 130


def model_options(f):
    """Options shared by video, stream and bench pipeline (weights, backend, detector, stochastic mode)."""
    opts = [
        click.option(
            "--weights",
            type=click.Path(dir_okay=False),
            default=None,
            help="MEGA checkpoint (official CVQMAE/mega_* or own); default: the demo weights.",
        ),
        click.option(
            "--mesh-weights",
            type=click.Path(dir_okay=False),
            default=None,
            help="Mesh-VQ-VAE checkpoint (MESH_VQVAE/mesh_vqvae_54 or own).",
        ),
        click.option(
            "--random-weights",
            is_flag=True,
            help="Run on random weights of --config (plumbing tests; the meshes mean nothing).",
        ),
        click.option(
            "--config",
            "config_ref",
            default="mega_tiny",
            show_default=True,
            help="Config of --random-weights (name or YAML).",
        ),
        click.option(
            "--backend",
            type=click.Choice(["torch", "onnxruntime", "tensorrt"]),
            default="torch",
            show_default=True,
            help="MEGA backend; onnxruntime/tensorrt need --engine.",
        ),
        click.option(
            "--engine",
            type=click.Path(exists=True, file_okay=False),
            default=None,
            help="Engine folder from `mega-rt export` (its weights are used).",
        ),
        click.option(
            "--precision",
            type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
            default="auto",
            show_default=True,
            help="torch backend: MEGA's compute precision (LayerNorm/softmax stay fp32); auto = fp16 on CUDA, fp32 on CPU (bf16 is ~2x faster on CPUs with avx512_bf16). Engines carry their own.",
        ),
        click.option(
            "--samples",
            type=int,
            default=1,
            show_default=True,
            help="Q > 1: stochastic mode, mean mesh coloured by per-vertex std.",
        ),
        click.option("--steps", type=int, default=None, help="T decoding steps (stochastic; default: the config's)."),
        click.option(
            "--temperature",
            type=float,
            default=None,
            help="Max sampling temperature (stochastic; default: the config's).",
        ),
        click.option(
            "--detector",
            default="yolo11n.pt",
            show_default=True,
            help="YOLO weights (.pt/.yaml/.onnx/.engine) or 'full-frame'.",
        ),
        click.option(
            "--boxes",
            type=click.Path(dir_okay=False),
            default=None,
            help="Precomputed boxes npz instead of a detector: rows frame, boxes_xyxy, optional track_id, score; a mega-rt synth ground truth; or a mega-rt results file.",
        ),
        click.option("--det-conf", type=float, default=0.3, show_default=True, help="Detector confidence threshold."),
        click.option("--det-imgsz", type=int, default=640, show_default=True, help="Detector input size."),
        click.option(
            "--no-track", is_flag=True, help="No ByteTrack (ids are -1 unless --boxes has them; no smoothing)."
        ),
        click.option("--max-people", type=int, default=None, help="Keep the N largest people per frame."),
        click.option(
            "--smooth/--no-smooth",
            default=False,
            show_default=True,
            help="One-Euro smoothing per track (variance-aware with --samples).",
        ),
        click.option("--max-frames", type=int, default=None, help="Stop after N frames."),
        click.option("--batch", "max_batch", type=int, default=32, show_default=True, help="Most crops per MEGA call."),
        click.option("--device", default=None, help="cpu or cuda (default: cuda when available)."),
        click.option(
            "--cuda-graphs/--no-cuda-graphs",
            "cuda_graphs",
            default=None,
            help="Replay MEGA as CUDA graphs, one per batch bucket 1/2/4/../64 (torch, tensorrt; default: on with a CUDA device).",
        ),
        click.option(
            "--compile",
            "compile_mode",
            type=click.Choice(["default", "reduce-overhead", "max-autotune"]),
            default=None,
            is_flag=False,
            flag_value="default",
            help="torch backend: torch.compile MEGA in this mode (bare --compile: default; off unless given).",
        ),
        click.option("--threads", type=int, default=None, help="torch CPU threads."),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of the stochastic samples (and random weights).",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _fps(cap) -> float:
    """The capture's frame rate, 30 where it reports none (as VideoSource): the tracker's clock."""
    import cv2

    from realtime.sources import fps_or_default

    return fps_or_default(cap.get(cv2.CAP_PROP_FPS))


def source_fps(spec: str) -> float:
    """Frame rate of a file (opened and closed again); 30 for a camera or URL, not connected to twice
    (live input drops frames when behind anyway, so its nominal rate is only a guess of the tracker's)."""
    from realtime.sources import DEFAULT_FPS, SourceError, open_capture

    if spec.isdigit() or "://" in spec:
        return DEFAULT_FPS
    try:
        cap, _ = open_capture(spec)
    except SourceError:
        return DEFAULT_FPS  # the source itself reports the error later, in its own words
    try:
        return _fps(cap)
    finally:
        cap.release()


def video_fps(path: str) -> float:
    """Frame rate of an input video, checked before any model loads: a file that does not open is a
    one-line error naming it."""
    from realtime.sources import SourceError, open_capture

    try:
        cap, _ = open_capture(path)
    except SourceError as e:
        fail(str(e))
    try:
        return _fps(cap)
    finally:
        cap.release()


def build_stages(kw: dict, fps: float | None = None):
    """(detector, regressor, faces, description) from the shared options; one-line errors otherwise.
    `fps`: the input's frame rate, for the tracker (None: the tracker's default)."""
    import torch

    from engines.backends.base import BackendError
    from engines.manifest import EngineMismatch
    from realtime.detect import DetectorError, build_detector
    from realtime.infer import RegressorOptionError, WeightsMissing, build_regressor, graph_options, load_models
    from train.assets import AssetError
    from train.checkpoint import CheckpointError
    from train.synthetic.body import TEMPLATE_ASSET, read_template_ply

    device = kw["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    if kw["threads"]:
        torch.set_num_threads(kw["threads"])
    elif device == "cpu":
        # decode, render and encode run beside torch: OpenMP threads on every core then spin against
        # them (measured on 2 cores: 1 torch thread 10.2 fps, 2 threads 3.0 fps end to end)
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 2))
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda: no CUDA GPU is visible to torch")
    try:  # before anything loads: options that do not go together are one line
        graph_options(device, kw["backend"], kw.get("cuda_graphs"), kw.get("compile_mode"))
    except RegressorOptionError as e:
        fail(str(e))
    if kw["samples"] < 1 or (kw["steps"] is not None and kw["steps"] < 1):
        fail("--samples and --steps must be at least 1")
    if kw["max_people"] is not None and kw["max_people"] < 1:
        fail("--max-people must be at least 1")
    if kw["max_frames"] is not None and kw["max_frames"] < 1:
        fail("--max-frames must be at least 1")
    if kw["max_batch"] < 1:
        fail("--batch must be at least 1")
    for opt in ("weights", "mesh_weights", "boxes"):
        if kw[opt] and not os.path.isfile(kw[opt]):
            fail(f"--{opt.replace('_', '-')} {kw[opt]}: no such file")
    if kw["random_weights"] and kw["weights"]:
        fail("--random-weights and --weights exclude each other")
    try:
        from train.assets import find_asset

        _, faces = read_template_ply(find_asset(TEMPLATE_ASSET))
        threads = torch.get_num_threads()
        detector = build_detector(
            None if kw["boxes"] else kw["detector"],
            kw["boxes"],
            kw["det_conf"],
            kw["det_imgsz"],
            not kw["no_track"],
            device if device != "cpu" else "cpu",
            fps,
        )
        torch.set_num_threads(threads)  # importing ultralytics may change torch's thread count
        models, what = (None, f"engine {kw['engine']}")
        if kw["engine"] is None:
            cfg = None
            if kw["random_weights"]:
                cfg = mega_config(kw["config_ref"])
            models, what = load_models(kw["weights"], kw["mesh_weights"], kw["random_weights"], cfg, kw["seed"])
        precision = kw.get("precision", "auto")
        if precision == "auto":
            precision = "fp16" if device.startswith("cuda") else "fp32"
        if precision == "fp16" and not device.startswith("cuda"):
            fail("--precision fp16 needs a CUDA GPU; on a CPU use bf16 or fp32")
        if precision != "fp32" and kw["engine"] is not None and kw.get("precision") != "auto":
            fail(
                "--precision applies to the torch backend without --engine; an engine runs in the precision it was exported with"
            )
        regressor = build_regressor(models, kw["backend"], kw["engine"], kw["samples"], kw["steps"], kw["temperature"], kw["max_batch"], device,
                                    kw["seed"], kw["threads"], precision, kw.get("cuda_graphs"), kw.get("compile_mode"))  # fmt: skip
    except (WeightsMissing, DetectorError, CheckpointError, RegressorOptionError) as e:
        fail(str(e))
    except (AssetError, BackendError, EngineMismatch) as e:
        fail(str(e), 1)
    if kw["random_weights"]:
        click.echo(
            "warning: random weights - the meshes are noise; for real ones see `mega-rt fetch --weights official`",
            err=True,
        )
    return detector, regressor, faces, what


def run_with_progress(options, kw, detector, regressor, faces, progress_label: str, no_progress: bool):
    from tqdm import tqdm

    from realtime.pipeline import run_pipeline
    from realtime.sinks import SinkError
    from realtime.sources import SourceError, VideoSource
    from train.render import RendererUnavailable

    try:
        source = VideoSource(options.source, live=options.live, pace=options.pace, max_frames=kw["max_frames"])
    except SourceError as e:
        fail(str(e))
    total = source.frame_count if not source.live else None
    if total and kw["max_frames"]:
        total = min(total, kw["max_frames"])
    bar = tqdm(
        total=total or None, desc=progress_label, unit="frame", disable=True if no_progress else None, leave=False
    )
    t0 = [None]

    def progress(done, timer):
        import time

        if t0[0] is None:
            t0[0] = time.perf_counter()
        bar.update(done - bar.n)
        if done % 5 == 0:
            ms = timer.mean_ms(last=20)
            elapsed = time.perf_counter() - t0[0]
            post = {"fps": f"{(done - 1) / elapsed:.1f}" if elapsed > 0 and done > 1 else "-"}
            post.update({k: f"{v:.0f}ms" for k, v in ms.items()})
            bar.set_postfix(post, refresh=False)

    try:
        summary = run_pipeline(options, source, detector, regressor, faces, progress=progress)
    except (SinkError, SourceError) as e:
        source.stop()
        fail(str(e))
    except RendererUnavailable as e:
        source.stop()
        fail(str(e), 1)
    finally:
        bar.close()
    return summary


def _report(summary, options):
    click.echo(summary.line())
    if summary.frames and not summary.people:
        click.echo("note: nobody was detected in any frame (the outputs hold the plain video and empty results)")
    for p in summary.outputs:
        click.echo(f"wrote {p}")
    if summary.status == "interrupted":
        raise SystemExit(EXIT_INTERRUPTED)


@click.command("video")
@click.argument("input_path", metavar="IN")
@click.option(
    "--out", default=None, type=click.Path(dir_okay=False), help="Overlay video (default: <IN stem>_mega.mp4 here)."
)
@click.option(
    "--results",
    default=None,
    type=click.Path(dir_okay=False),
    help="Results npz (+ .jsonl beside it; default: OUT with .npz).",
)
@click.option(
    "--export-meshes",
    "export_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Write one mesh per track and frame into DIR/track_<id>/.",
)
@click.option("--export-format", type=click.Choice(["obj", "ply"]), default="obj", show_default=True)
@click.option("--frame-batch", type=int, default=4, show_default=True, help="Frames whose people share one MEGA call.")
@click.option("--no-progress", is_flag=True)
@model_options
def video(input_path, out, results, export_dir, export_format, frame_batch, no_progress, **kw):
    """Process a whole video file: overlay mp4 (input fps and size) + results npz/jsonl."""
    from pathlib import Path

    from realtime.pipeline import PipelineOptions
    from realtime.sinks import SinkError, check_writable

    fps = video_fps(input_path)
    out = out or f"{Path(input_path).stem}_mega.mp4"
    if Path(out).suffix.lower() != ".mp4":
        fail(f"--out {out}: must be an .mp4 file")
    results = results or str(Path(out).with_suffix(".npz"))
    try:
        for p in (out, results):
            check_writable(Path(p))
    except SinkError as e:
        fail(str(e))
    if frame_batch < 1:
        fail("--frame-batch must be at least 1")
    detector, regressor, faces, what = build_stages(kw, fps)
    click.echo(
        f"{input_path} -> {out}, {results}  ({what}, backend {kw['backend']}, {'Q=%d stochastic' % kw['samples'] if kw['samples'] > 1 else 'deterministic'}, detector {getattr(detector, 'name', '?')})"
    )
    options = PipelineOptions(
        source=input_path, out=out, results=results, export_dir=export_dir, export_format=export_format, max_people=kw["max_people"],
        max_frames=kw["max_frames"], frame_batch=frame_batch, smooth=kw["smooth"], meta={"weights": what},
    )  # fmt: skip
    _report(run_with_progress(options, kw, detector, regressor, faces, "video", no_progress), options)


@click.command("stream")
@click.option(
    "--camera",
    "camera",
    default=None,
    help="Camera index (0), a URL (rtsp://, http://) or a file played at its own rate.",
)
@click.option("--show/--no-show", default=None, help="Live window (default: on when a display exists).")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also record the overlay to this mp4.")
@click.option("--results", default=None, type=click.Path(dir_okay=False), help="Also write the results npz.")
@click.option("--no-progress", is_flag=True)
@model_options
def stream(camera, show, out, results, no_progress, **kw):
    """Live input: stays real time by dropping frames when behind; latency percentiles on exit."""
    from pathlib import Path

    from realtime.pipeline import PipelineOptions
    from realtime.sinks import SinkError, check_writable

    if camera is None:
        fail("give --camera 0 (a camera index), a URL or a video file")
    if show is None:
        show = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if not (show or out or results):
        fail("nothing to do: no display for --show; record with --out OUT.mp4 and/or --results OUT.npz")
    try:
        for p in (out, results):
            if p:
                check_writable(Path(p))
    except SinkError as e:
        fail(str(e))
    is_file = not camera.isdigit() and "://" not in camera
    detector, regressor, faces, what = build_stages(kw, source_fps(camera))
    options = PipelineOptions(source=camera, live=True, pace=is_file, out=out, results=results, show=show, max_people=kw["max_people"],
                              max_frames=kw["max_frames"], smooth=kw["smooth"], meta={"weights": what})  # fmt: skip
    summary = run_with_progress(options, kw, detector, regressor, faces, "stream", no_progress)
    _report(summary, options)


def official_weights_help() -> str:
    """What `mega-rt fetch --weights official` prints (no network: the record is large and licensed)."""
    from train.assets import cache_dir

    dest = cache_dir() / "weights"
    return "\n".join([
        "The official MEGA checkpoints are in Zenodo record 14974141: https://zenodo.org/records/14974141",
        "Download its archive(s) in a browser or with `wget https://zenodo.org/records/14974141/files/<NAME>?download=1`, unpack, and keep:",
        "  CVQMAE/mega_hrnet (or mega_resnet, mega_vit)  - MEGA",
        "  MESH_VQVAE/mesh_vqvae_54                      - the Mesh-VQ-VAE tokenizer",
        f"Suggested place: {dest}/ (the cache; $MEGA_RT_CACHE moves it). Then run, e.g.:",
        f"  mega-rt video IN.mp4 --weights {dest}/CVQMAE/mega_hrnet --mesh-weights {dest}/MESH_VQVAE/mesh_vqvae_54",
        "Check the record's licence before use. Without them, mega-rt runs on the demo weights in train/demo_weights/.",
    ])  # fmt: skip
