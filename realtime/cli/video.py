"""`mega-rt video` and `mega-rt stream`, the CLI side of realtime/pipeline.py, and the options `bench pipeline` shares.

Exit codes: 0 success
(also when nobody was detected), 1 runtime failure, 2 bad usage or input (missing file, not a video,
camera that does not open, unwritable output, missing weights), 130 interrupted (outputs finalised).
"""

from __future__ import annotations

import os

import click

from realtime.cli.common import fail, mega_config, refuse_overwriting_inputs

EXIT_INTERRUPTED = 130


def model_options(f):
    """Options shared by video, stream and bench pipeline (weights, backend, detector, stochastic mode)."""
    opts = [
        click.option(
            "--weights",
            default=None,
            metavar="official|demo|PATH",
            help="MEGA weights: 'official' (the cache; fetched on first use), 'demo' (synthetic people only) or a checkpoint file; default: official when cached or fetchable, else demo (with a warning).",
        ),
        click.option(
            "--backbone",
            type=click.Choice(["hrnet", "resnet", "vit"]),
            default=None,
            help="Which official MEGA (default hrnet).",
        ),
        click.option("--no-download", is_flag=True, help="Never download weights (also MEGA_RT_OFFLINE=1)."),
        click.option(
            "--mesh-weights",
            type=click.Path(dir_okay=False),
            default=None,
            help="Mesh-VQ-VAE checkpoint (default: the one of the official or demo weights).",
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
            help="YOLO weights (.pt/.yaml/.onnx/.engine), a detector engine folder of `mega-rt export --detector` (run on --backend), or 'full-frame'.",
        ),
        click.option(
            "--trust-file",
            is_flag=True,
            help="Load a --detector .pt that is neither an allow-listed official file nor the safe format (it is a pickle: it can run code).",
        ),
        click.option(
            "--boxes",
            type=click.Path(dir_okay=False),
            default=None,
            help="Precomputed boxes npz instead of a detector: rows frame, boxes_xyxy, optional track_id, score; a mega-rt synth ground truth; or a mega-rt results file.",
        ),
        click.option(
            "--regressor",
            type=click.Path(dir_okay=False),
            default=None,
            metavar="FILE",
            help="Joint regressor J_regressor_*.npy/.npz (J x 6890): adds joints_cam (M,J,3) to the results file.",
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


MAX_SAMPLES = 64  # Q hypotheses: each one is T full MEGA passes per person; more only runs longer
MAX_STEPS = 64  # T decoding steps: past the token count a step has nothing left to reveal


def default_cpu_threads(cores: int) -> int:
    """torch threads for the pipeline on a CPU: decode, render and encode run beside torch, so on many
    cores two are left to them; but on two cores one torch thread leaves MEGA, the stage that bounds the
    frame rate, half the machine while the others need less than that (`bench pipeline`, 2 cores, demo
    weights, 3 people at 720p: 2 threads 9.0 fps, 1 thread 7.1-8.0 fps)."""
    return max(min(2, cores), cores - 2)


def check_model_options(kw: dict) -> None:
    """One line (exit 2) for any shared option value that cannot run, before a file is opened or a
    model loaded."""
    import math
    import re

    device = kw["device"]
    if device is not None and not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        fail(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if kw["threads"] is not None and kw["threads"] < 1:
        fail(f"--threads {kw['threads']}: must be at least 1 (leave it out for the default)")
    if not 1 <= kw["samples"] <= MAX_SAMPLES:
        fail(f"--samples {kw['samples']}: expected 1 (deterministic) to {MAX_SAMPLES} hypotheses")
    if kw["steps"] is not None and not 1 <= kw["steps"] <= MAX_STEPS:
        fail(f"--steps {kw['steps']}: expected 1 to {MAX_STEPS} decoding steps")
    if kw["temperature"] is not None and not (math.isfinite(kw["temperature"]) and kw["temperature"] >= 0):
        fail(f"--temperature {kw['temperature']}: expected a finite number >= 0 (0: no sampling noise)")
    if not 0.0 <= kw["det_conf"] <= 1.0:
        fail(f"--det-conf {kw['det_conf']}: a confidence threshold is between 0 and 1")
    if kw["det_imgsz"] < 32 or kw["det_imgsz"] % 32:
        fail(
            f"--det-imgsz {kw['det_imgsz']}: expected a positive multiple of 32 (the detector's stride), e.g. 320 or 640"
        )
    for opt, name in (("max_people", "--max-people"), ("max_frames", "--max-frames"), ("max_batch", "--batch")):
        if kw[opt] is not None and kw[opt] < 1:
            fail(f"{name} {kw[opt]}: must be at least 1")
    for opt in ("weights", "mesh_weights", "boxes", "regressor"):
        if kw[opt] and not (opt == "weights" and kw[opt] in ("official", "demo")) and not os.path.isfile(kw[opt]):
            fail(f"--{opt.replace('_', '-')} {kw[opt]}: no such file")
    if kw["random_weights"] and kw["weights"]:
        fail("--random-weights and --weights exclude each other")


def input_files(kw: dict, **named) -> dict:
    """The files a run reads, by the option that names them: `named` (e.g. IN=path) and the shared
    options' files (weights, boxes, a detector or config file, an engine folder's files)."""
    from pathlib import Path

    files = dict(named)
    for opt in ("weights", "mesh_weights", "boxes", "regressor", "detector", "config_ref"):
        path = kw.get(opt)
        if path and os.path.isfile(path):
            files["--config" if opt == "config_ref" else f"--{opt.replace('_', '-')}"] = path
    if kw.get("engine") and os.path.isdir(kw["engine"]):
        for f in sorted(Path(kw["engine"]).iterdir()):
            if f.is_file():
                files[f"--engine file {f.name}:"] = f
    return files


def results_name(results: str) -> str:
    """--results must name an .npz (its .jsonl goes beside it): a one-line error otherwise."""
    from pathlib import Path

    if Path(results).suffix.lower() != ".npz":
        fail(f"--results {results}: must be an .npz file (the .jsonl summary is written beside it)")
    return results


def output_files(out: str | None, results: str | None, export_dir: str | None = None) -> dict:
    """The files a run writes, by the option that names them (the .jsonl beside --results included)."""
    from pathlib import Path

    jsonl = str(Path(results).with_suffix(".jsonl")) if results else None
    return {"--out": out, "--results": results, "--results' .jsonl": jsonl, "--export-meshes": export_dir}


def _boxes_note(detector, boxes_path: str | None, frame_count: int) -> None:
    """One warning line for the --boxes rows that were dropped or never reached, if any."""
    check = getattr(detector, "check", None)
    if not boxes_path or check is None:
        return
    notes = [check.note()] if check.note() else []
    frames = list(getattr(detector, "by_frame", {}).items())
    missing = sum(len(rows[0]) for f, rows in frames if f < 0 or (frame_count > 0 and f >= frame_count))
    if missing:
        notes.append(f"{missing} boxes on frames the video does not have (< 0 or >= {frame_count})")
    if notes:
        click.echo(f"warning: --boxes {boxes_path}: {'; '.join(notes)}", err=True)


def source_fps(spec: str) -> float:
    """The tracker's clock: a file's frame rate, 30 for a camera or URL (realtime/video_read.py)."""
    from realtime.video_read import nominal_fps

    return nominal_fps(spec)


def video_fps(path: str) -> float:
    """Frame rate of an input video, checked before any model loads: a file that does not open is a
    one-line error naming it."""
    from realtime.video_read import SourceError, input_fps

    try:
        return input_fps(path)
    except SourceError as e:
        fail(str(e))


def joint_regressor(path: str | None):
    """(the (J, 6890) tensor, its results-file fields) of --regressor; (None, {}) without one."""
    if not path:
        return None, {}
    from pathlib import Path

    from realtime.weights import load_regressor_file
    from train.assets import sha256_of
    from train.joints import RegressorError

    try:
        regressor = load_regressor_file(path)
    except RegressorError as e:
        fail(str(e) if str(e).startswith("--regressor") else f"--regressor {e}")
    return regressor, {"regressor": Path(path).name, "regressor_sha256": sha256_of(Path(path))}


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

    check_model_options(kw)
    device = kw["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    if kw["threads"]:
        torch.set_num_threads(kw["threads"])
    elif device == "cpu":
        torch.set_num_threads(default_cpu_threads(os.cpu_count() or 2))
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {device}: no CUDA GPU is visible to torch")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        fail(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    kw["joint_regressor"], kw["regressor_meta"] = joint_regressor(kw.get("regressor"))
    try:  # before anything loads: options that do not go together are one line
        graph_options(device, kw["backend"], kw.get("cuda_graphs"), kw.get("compile_mode"))
    except RegressorOptionError as e:
        fail(str(e))
    try:
        from realtime.weights import resolve_for_cli
        from train.assets import find_asset

        _, faces = read_template_ply(find_asset(TEMPLATE_ASSET))
        chosen = resolve_for_cli(kw)
        kw["run_meta"] = {**chosen.weights.meta(), **chosen.detector.meta(), **kw["regressor_meta"]}
        det_imgsz = chosen.detector.imgsz if chosen.detector.imgsz and kw["det_imgsz"] == 640 else kw["det_imgsz"]
        threads = torch.get_num_threads()
        detector = build_detector(
            chosen.detector.spec,
            kw["boxes"],
            kw["det_conf"],
            det_imgsz,
            not kw["no_track"],
            device if device != "cpu" else "cpu",
            fps,
            backend=kw["backend"],
            trust_file=kw.get("trust_file", False),
            threads=kw["threads"],
        )
        torch.set_num_threads(threads)  # importing ultralytics may change torch's thread count
        models, what = (None, f"engine {kw['engine']}")
        if kw["engine"] is None:
            cfg = None
            if kw["random_weights"]:
                cfg = mega_config(kw["config_ref"])
            models, what = load_models(chosen.weights.mega, chosen.weights.mesh, kw["random_weights"], cfg, kw["seed"])
            what = chosen.weights.description if chosen.weights.source != "random" else what
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
    for line in chosen.warnings():
        click.echo(line, err=True)
    return detector, regressor, faces, what


def decode_option(f):
    """--decode of video and bench pipeline (realtime/video_read.py)."""
    return click.option(
        "--decode",
        type=click.Choice(["cpu", "nvdec", "auto"]),
        default="cpu",
        show_default=True,
        help="Video decoder: FFmpeg on the CPU, nvdec (FFmpeg's CUDA decoder; needs an NVIDIA GPU and a CUDA-enabled FFmpeg) or auto (nvdec where it opens).",
    )(f)


def check_decode(decode: str) -> str:
    """'cpu' or 'nvdec' for --decode, before any model loads; one line (exit 2) where nvdec cannot run."""
    from realtime.video_read import nvdec_problem, resolve_decode

    if decode == "nvdec" and (problem := nvdec_problem()):
        fail(f"--decode nvdec: {problem}; use --decode cpu (or auto)")
    return resolve_decode(decode)


def run_with_progress(options, kw, detector, regressor, faces, progress_label: str, no_progress: bool, decode="cpu"):
    from tqdm import tqdm

    from realtime.pipeline import run_pipeline
    from realtime.sinks import SinkError
    from realtime.sources import SourceError, VideoSource
    from train.render import RendererUnavailable

    try:
        source = VideoSource(
            options.source, live=options.live, pace=options.pace, max_frames=kw["max_frames"], decode=decode
        )
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
    _boxes_note(detector, kw["boxes"], source.frame_count)
    return summary


def _report(summary, options):
    click.echo(summary.line())
    if summary.frames and not summary.people:
        click.echo("note: nobody was detected in any frame (the outputs hold the plain video and empty results)")
    for p in summary.outputs:
        click.echo(f"wrote {p}")
    if summary.status == "interrupted":
        raise SystemExit(EXIT_INTERRUPTED)


def check_video_outputs(input_path: str, out, results, export_dir, no_render: bool, kw: dict) -> tuple:
    """(out, results) of `mega-rt video` with their defaults; one line (exit 2) for an output that
    cannot be written or would replace an input."""
    from pathlib import Path

    if no_render and out:
        fail(f"--out {out} and --no-render exclude each other: --no-render writes no overlay video")
    stem = Path(input_path).stem
    if not no_render:
        out = out or f"{stem}_mega.mp4"
        if Path(out).suffix.lower() != ".mp4":
            fail(f"--out {out}: must be an .mp4 file")
    results = results_name(results or (str(Path(out).with_suffix(".npz")) if out else f"{stem}_mega.npz"))
    check_outputs(output_files(out, results, export_dir), input_files(kw, IN=input_path), out, results)
    return out, results


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
@click.option(
    "--no-render",
    is_flag=True,
    help="Results only (no overlay video, no OpenGL/EGL needed); default results: <IN stem>_mega.npz.",
)
@click.option(
    "--fit-smpl",
    "fit_smpl",
    default=None,
    type=click.Path(),
    help="After the run, fit SMPL to every track with this model file: <results stem>_smpl.npz (see mega-rt fit).",
)
@click.option(
    "--correspondence",
    default=None,
    type=click.Path(dir_okay=False),
    help="With --fit-smpl and an SMPL-X model: see mega-rt fit.",
)
@click.option("--no-progress", is_flag=True)
@click.option(
    "--hud/--no-hud", default=False, show_default=True, help="Draw the end-to-end fps and latency on the overlay."
)
@decode_option
@model_options
def video(
    input_path,
    out,
    results,
    export_dir,
    export_format,
    frame_batch,
    no_render,
    fit_smpl,
    correspondence,
    no_progress,
    hud,
    decode,
    **kw,
):
    """Process a whole video file: overlay mp4 (input fps and size) + results npz/jsonl."""

    from realtime.pipeline import PipelineOptions

    check_model_options(kw)
    if frame_batch < 1:
        fail(f"--frame-batch {frame_batch}: must be at least 1")
    out, results = check_video_outputs(input_path, out, results, export_dir, no_render, kw)
    if fit_smpl:
        from realtime.cli.outputs import fit_before_run

        fit_inputs = fit_before_run(results, fit_smpl, correspondence, kw["device"], input_files(kw, IN=input_path))
    elif correspondence:
        fail("--correspondence goes with --fit-smpl")
    decode = check_decode(decode)
    fps = video_fps(input_path)
    detector, regressor, faces, what = build_stages(kw, fps)
    targets = ", ".join(p for p in (out, results) if p)
    click.echo(
        f"{input_path} -> {targets}  ({what}, backend {kw['backend']}, {'Q=%d stochastic' % kw['samples'] if kw['samples'] > 1 else 'deterministic'}, detector {getattr(detector, 'name', '?')})"
    )
    options = PipelineOptions(
        source=input_path, out=out, results=results, export_dir=export_dir, export_format=export_format, max_people=kw["max_people"],
        max_frames=kw["max_frames"], frame_batch=frame_batch, smooth=kw["smooth"], hud=hud, meta={"weights": what, **kw["run_meta"]},
        joint_regressor=kw["joint_regressor"],
    )  # fmt: skip
    _report(run_with_progress(options, kw, detector, regressor, faces, "video", no_progress, decode), options)
    if fit_smpl:
        from realtime.cli.outputs import run_fit

        run_fit(results, *fit_inputs)


def check_outputs(outputs: dict, inputs: dict, *files) -> None:
    """One line (exit 2) for an output that would replace an input, or a file that cannot be written there."""
    from pathlib import Path

    from realtime.sinks import SinkError, check_writable

    refuse_overwriting_inputs(outputs, inputs)
    try:
        for p in files:
            if p:
                check_writable(Path(p))
    except SinkError as e:
        fail(str(e))


def check_stream_outputs(camera: str, show, out, results, no_render: bool, kw: dict) -> bool:
    """Whether the live window opens; one line (exit 2) for outputs that cannot be written or would
    replace an input, and one line when there is no display but a recording to go on with."""
    from pathlib import Path

    from realtime.display import display_problem
    from realtime.video_read import SourceError, is_camera, open_reader

    if no_render and (show or out):
        fail("--no-render writes results only: it excludes --show and --out")
    if out and Path(out).suffix.lower() != ".mp4":
        fail(f"--out {out}: must be an .mp4 file")
    if results:
        results_name(results)
    is_file = not camera.isdigit() and "://" not in camera
    check_outputs(
        output_files(out, results), input_files(kw, **({"--camera": camera} if is_file else {})), out, results
    )
    if no_render or show is False:
        if not (out or results):
            fail("nothing to do: no window; record with --out OUT.mp4 and/or --results OUT.npz")
        return False
    if is_camera(camera):  # a missing camera is the first problem to name: before the display probe or a model loads
        try:
            open_reader(camera).close()
        except SourceError as e:
            fail(str(e))
    problem = display_problem()
    if problem is None:
        return True
    if not (out or results):
        fail(f"no display ({problem}) for --show; record with --out OUT.mp4 and/or --results OUT.npz")
    targets = " and ".join(p for p in (out, results) if p)
    click.echo(f"no display ({problem}): --show is off; recording continues to {targets}", err=True)
    return False


@click.command("stream")
@click.argument("sources", nargs=-1, metavar="[SRC]...")
@click.option(
    "--camera",
    "camera",
    default=None,
    help="Camera index (0), a URL (rtsp://, http://) or a file played at its own rate (also as SRC; several SRC share one batched model).",
)
@click.option("--show/--no-show", default=None, help="Live window (default: on when a display exists).")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also record the overlay to this mp4.")
@click.option("--results", default=None, type=click.Path(dir_okay=False), help="Also write the results npz.")
@click.option("--no-render", is_flag=True, help="Results only (no window, no overlay, no OpenGL/EGL needed).")
@click.option(
    "--out-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Several SRC: one overlay <n>_<name>_mega.mp4 and one results .npz per stream in DIR.",
)
@click.option("--summary", "summary_path", default=None, type=click.Path(dir_okay=False), help="Several SRC: JSON summary (per stream frames, drops, re-opens, latency percentiles).")  # fmt: skip
@click.option("--tick-frames", type=int, default=None, help="Several SRC: most streams per batched call (default: all; round-robin when more have a frame).")  # fmt: skip
@click.option("--retries", type=int, default=3, show_default=True, help="Several SRC: re-opens of a camera or URL that ends.")  # fmt: skip
@click.option("--retry-delay", type=float, default=1.0, show_default=True, help="Seconds before the first re-open; the k-th waits k times as long.")  # fmt: skip
@click.option("--no-progress", is_flag=True)
@click.option(
    "--hud/--no-hud", default=True, show_default=True, help="Draw the end-to-end fps and latency on the overlay."
)
@model_options
def stream(sources, camera, show, out, results, no_render, out_dir, summary_path, tick_frames, retries, retry_delay, no_progress, hud, **kw):  # fmt: skip
    """Live input: stays real time by dropping frames when behind; latency percentiles on exit.

    Several SRC (cameras, URLs, files at their fps) run one reader each and one shared model: each
    tick batches the newest frame of every stream; outputs, tracking and counters per stream."""
    from realtime.pipeline import PipelineOptions

    specs = list(sources) + ([camera] if camera is not None else [])
    if not specs:
        fail("give a source: SRC or --camera 0 (a camera index), a URL or a video file")
    if len(specs) > 1 or out_dir is not None or summary_path is not None:
        if show or out or results:
            fail("several streams (or --out-dir/--summary) write per stream into --out-dir: --show, --out and --results are for one stream")  # fmt: skip
        from realtime.cli.streams import open_streams, run_many

        check_model_options(kw)
        files = {f"SRC {s}": s for s in specs if not s.isdigit() and "://" not in s}
        sources = open_streams(specs, kw, out_dir, summary_path, no_render, tick_frames, retries, retry_delay, input_files(kw, **files))  # fmt: skip
        stage_kw = {**kw, "no_track": True}  # one detector for all streams: each stream tracks its own people
        stages = build_stages(stage_kw, None)
        run_many(specs, sources, stages, {**kw, "run_meta": stage_kw["run_meta"]}, out_dir, summary_path, no_render, no_progress, tick_frames, retries, retry_delay)  # fmt: skip
        return
    camera = specs[0]
    check_model_options(kw)
    show = check_stream_outputs(camera, show, out, results, no_render, kw)
    is_file = not camera.isdigit() and "://" not in camera
    detector, regressor, faces, what = build_stages(kw, source_fps(camera))
    options = PipelineOptions(source=camera, live=True, pace=is_file, out=out, results=results, show=show, max_people=kw["max_people"],
                              max_frames=kw["max_frames"], smooth=kw["smooth"], hud=hud, meta={"weights": what, **kw["run_meta"]},
                              joint_regressor=kw["joint_regressor"])  # fmt: skip
    summary = run_with_progress(options, kw, detector, regressor, faces, "stream", no_progress)
    _report(summary, options)
