"""The `mega-rt` command line. Heavy libraries are imported inside each command, so `--help` is instant.

Exit codes: 0 success, 1 runtime failure with a one-line message, 2 bad usage or bad input file.
"""

from __future__ import annotations

import sys

import click


class UserError(click.ClickException):
    """A one-line error for the user (no traceback), exit code 2."""

    exit_code = 2


def _fail(message: str, code: int = 2):
    err = UserError(message)
    err.exit_code = code
    raise err


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mega-rt")
def main():
    """mega-rt: real-time human mesh recovery from video with MEGA."""


@main.command()
def info():
    """Show versions, the compute device and which assets are present."""
    import platform

    from train import assets

    click.echo(f"mega-rt 0.1.0  python {platform.python_version()}")
    try:
        import torch

        dev = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
        click.echo(f"torch {torch.__version__}  device {dev}  threads {torch.get_num_threads()}")
    except ImportError:
        click.echo("torch: not installed (run `make setup`)")
    for mod in ("onnxruntime", "tensorrt", "torch_tensorrt", "cupy", "ultralytics", "moderngl", "cv2"):
        try:
            m = __import__(mod)
            click.echo(f"{mod} {getattr(m, '__version__', '?')}")
        except Exception:
            click.echo(f"{mod}: not installed")
    click.echo(f"asset folders searched: {', '.join(str(d) for d in assets.search_dirs())}")
    status = assets.asset_status()
    ok = sum(v.startswith("ok") for v in status.values())
    click.echo(f"assets: {ok}/{len(status)} present and verified")
    for name, st in status.items():
        if not st.startswith("ok"):
            click.echo(f"  {name}: {st}")
    if ok < len(status):
        click.echo("  -> run `mega-rt fetch` (internet) or set MEGA_RT_ASSETS to a folder that holds them")


@main.command()
@click.option("--dest", type=click.Path(file_okay=False), default=None, help="Folder to download into (default: the user cache).")
@click.option("--base-url", default=None, help="Mirror to fetch from instead of the upstream hosts (files at BASE/<name>).")
@click.option("--weights", "weights_kind", type=click.Choice(["official"]), default=None, help="Print how to get the official MEGA weights (Zenodo 14974141) and where to put them.")
def fetch(dest, base_url, weights_kind):
    """Download the public assets (Mesh-VQ-VAE connection matrices, template, part segmentation), verifying sha256."""
    if weights_kind == "official":
        from realtime.video_commands import official_weights_help

        click.echo(official_weights_help())
        return
    from pathlib import Path

    from tqdm import tqdm

    from train import assets

    bars = []

    def progress_factory(name):
        bar = tqdm(desc=name, unit="B", unit_scale=True, leave=False)
        bars.append(bar)

        def update(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        return update

    try:
        paths = assets.fetch(dest_root=Path(dest) if dest else None, base_url=base_url, progress_factory=progress_factory)
    except assets.AssetError as e:
        _fail(str(e), 1)
    finally:
        for b in bars:
            b.close()
    click.echo(f"{len(paths)} assets verified in {paths[0].parents[1] if paths else dest}")


def _parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(x) for x in text.split(","))
    except ValueError:
        _fail(f"--batch {text!r}: expected comma-separated integers, e.g. 1,8")
    if not batches or min(batches) < 1:
        _fail(f"--batch {text!r}: batch sizes must be >= 1")
    return batches


@main.command("bench", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
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
        _fail(f"bench: unexpected {' '.join(ctx.args)} (options like these need --pipeline IN)")

    import torch

    if backend is not None:
        _bench_backend(config_name, batch_text, samples, steps, repeats, threads, device, bool(stochastic), backend, engine_path, precision, compile_, cuda_graphs, json_path)
        return

    from engines.bench import bench_model, results_json
    from train.assets import AssetError
    from train.config import ConfigError

    batches = _parse_batches(batch_text)
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        _fail("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    if precision == "fp16" and not device.startswith("cuda"):
        _fail("--precision fp16: fp16 autocast needs --device cuda; on a CPU use --precision bf16 (or fp32)")
    click.echo(f"torch {torch.__version__}  device {device}  threads {torch.get_num_threads()}  config {config_name}  precision {precision}")
    try:
        results = bench_model(config_name, batches, samples, steps, repeats, device=device, stochastic=stochastic is not False, precision=precision, progress=click.echo)
    except (AssetError, ConfigError) as e:
        _fail(str(e))
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
            _fail(f"{flag} does not apply to --pipeline (it times whole frames of a video)")
    if precision != "fp32":
        _fail("--precision does not apply to --pipeline: an --engine runs at the precision it was exported with")
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
        elif not _demo_weights_installed():
            click.echo(f"bench --pipeline: no demo weights installed; timing random weights of {config_name} (the same work per frame)")
            random_weights = True
        if random_weights:
            args.append("--random-weights")
    if random_weights:  # bench parsed --config itself: hand it on
        args += ["--config", config_name]
    command = main.commands["bench-pipeline"]
    with command.make_context("--pipeline", args + ctx.args, parent=ctx) as sub:
        command.invoke(sub)


def _demo_weights_installed() -> bool:
    from train.checkpoint import CheckpointError
    from train.demo import demo_weights

    try:
        demo_weights()
    except CheckpointError:
        return False
    return True


def _parse_size(text: str, option: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720); a one-line UserError otherwise."""
    try:
        a, b = (int(p) for p in text.lower().split("x"))
    except ValueError:
        a = b = 0
    if a < 16 or b < 16:
        _fail(f"{option} {text!r}: expected two sizes of at least 16 pixels, like 1280x720")
    return a, b


@main.command()
@click.argument("out", required=False, type=click.Path(dir_okay=False))
@click.option("--people", type=int, default=3, show_default=True, help="People in the scene.")
@click.option("--frames", type=int, default=90, show_default=True, help="Frames to render.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same scene and ground truth.")
@click.option("--size", default="1280x720", show_default=True, help="Frame size WxH.")
@click.option("--fps", type=float, default=30.0, show_default=True)
@click.option("--focal", type=float, default=None, help="Focal length in pixels (default: the pipeline's 1000/224*max(W,H)).")
@click.option("--dataset", "dataset_dir", type=click.Path(file_okay=False), default=None, help="Write training crops into this folder instead of a video.")
@click.option("--detection-dataset", "detection_dir", type=click.Path(file_okay=False), default=None, help="Write person-detection training images (YOLO layout, one scene each, --size, up to --people) into this folder.")
@click.option("--samples", type=int, default=1000, show_default=True, help="Crops (--dataset) or training images (--detection-dataset; plus a tenth as validation images) to write.")
@click.option("--crop", type=click.Choice(["224x224", "256x192"]), default="224x224", show_default=True, help="Crop size HxW: the backbone input (256x192 for ViT).")
def synth(out, people, frames, seed, size, fps, focal, dataset_dir, detection_dir, samples, crop):
    """Render synthetic people with exact ground truth: OUT.mp4 + OUT.npz, a crop dataset (--dataset DIR),
    or a person-detection dataset (--detection-dataset DIR)."""
    from pathlib import Path

    if sum(x is not None for x in (out, dataset_dir, detection_dir)) != 1:
        _fail("give one of OUT.mp4 (a video), --dataset DIR (training crops) or --detection-dataset DIR (detector training images)")
    width, height = _parse_size(size, "--size")
    if focal is not None and focal <= 0:
        _fail(f"--focal {focal}: must be positive")

    from tqdm import tqdm

    from realtime import synth as synth_lib
    from realtime.render import RendererUnavailable
    from train import assets

    try:
        if dataset_dir is not None:
            if samples < 1:
                _fail(f"--samples {samples}: must be at least 1")
            crop_hw = (224, 224) if crop == "224x224" else (256, 192)
            cfg = synth_lib.CropDatasetConfig(samples=samples, crop_hw=crop_hw, image_wh=(width, height), seed=seed)
            with tqdm(total=samples, desc="crops", unit="crop", disable=None) as bar:
                shards = synth_lib.write_crop_dataset(dataset_dir, cfg, progress=lambda n: bar.update(n - bar.n))
            click.echo(f"{samples} crops in {len(shards)} shards in {dataset_dir} (index.json)")
            return
        if detection_dir is not None:
            from realtime.synth_detection import DetectionDatasetConfig, write_detection_dataset

            if samples < 1 or people < 1:
                _fail(f"--samples {samples} --people {people}: both must be at least 1")
            cfg = DetectionDatasetConfig(samples=samples, val_samples=max(1, samples // 10), image_wh=(width, height), max_people=people, seed=seed)
            with tqdm(total=cfg.samples + cfg.val_samples, desc="images", unit="img", disable=None) as bar:
                index = write_detection_dataset(detection_dir, cfg, progress=lambda n: bar.update(n - bar.n))
            click.echo(f"{index['images']['train']} training + {index['images']['val']} validation images, "
                       f"{index['labelled_people']} people, in {detection_dir} (index.json)")
            return
        if people < 1 or frames < 1:
            _fail(f"--people {people} --frames {frames}: both must be at least 1")
        out_path = Path(out)
        if out_path.suffix.lower() != ".mp4":
            _fail(f"{out}: the video must be an .mp4 file")
        if not out_path.parent.is_dir():
            _fail(f"{out_path.parent}: folder not found")
        cfg = synth_lib.SceneConfig(width=width, height=height, frames=frames, people=people, seed=seed, fps=fps, focal=focal)
        with tqdm(total=frames, desc="frames", unit="frame", disable=None) as bar:
            video, npz = synth_lib.write_scene_video(out_path, cfg, progress=lambda n: bar.update(n - bar.n))
        click.echo(f"{video} ({frames} frames, {width}x{height}, {people} people) and ground truth {npz}")
    except (RendererUnavailable, assets.AssetError) as e:
        _fail(str(e), 1)


# ---- export, verify, bench --backend (engines/) -------------------------------------------------
def _mega_config(ref: str):
    """A MegaConfig from a shipped name (configs/<name>.yaml) or a YAML path; one-line error otherwise."""
    from pathlib import Path

    from train.config import CONFIG_DIR, ConfigError, MegaConfig, builtin_config, load_config

    try:
        if ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
            return load_config(ref, MegaConfig)
        if not (CONFIG_DIR / f"{ref}.yaml").is_file():
            shipped = sorted(p.stem for p in CONFIG_DIR.glob("mega_*.yaml"))
            _fail(f"--config {ref!r}: not a shipped config ({', '.join(shipped)}) nor a YAML file")
        return builtin_config(ref, MegaConfig)
    except ConfigError as e:
        _fail(str(e))


def _parse_range(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(x) for x in text.split(":"))
    except ValueError:
        parts = ()
    if len(parts) == 1:
        parts = (parts[0],) * 3
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        _fail(f"--batch {text!r}: expected MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, e.g. 1:8:64")
    return parts


@main.command("export")
@click.option("--format", "fmt", type=click.Choice(["onnx", "tensorrt", "torch-tensorrt"]), default="onnx", show_default=True, help="Artefact to build.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None, help="Precision inside the graphs (default: fp32 for onnx, fp16 for TensorRT).")
@click.option("--batch", "batch_text", default="1:8:32", show_default=True, help="Crops per call MIN:OPT:MAX (the TensorRT optimization profile).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None, help="MEGA checkpoint (official CVQMAE/mega_* or our own).")
@click.option("--mesh-weights", type=click.Path(exists=True, dir_okay=False), default=None, help="Mesh-VQ-VAE checkpoint (MESH_VQVAE/mesh_vqvae_54); random when absent.")
@click.option("--config", "config_ref", default=None, help="Config name (mega_hrnet, mega_tiny, ...) or YAML path; without --weights: random weights.")
@click.option("--seed", default=0, show_default=True, help="Seed of random weights.")
@click.option("--stochastic", is_flag=True, help="Export the stochastic graphs (encode, step, mesh) instead of det.")
@click.option("--steps", type=int, default=None, help="T decoding steps (default: the config's).")
@click.option("--samples", type=int, default=8, show_default=True, help="Q samples per crop (baked into the encode graph).")
@click.option("--temperature", type=float, default=None, help="Max sampling temperature A recorded for the runner (default: the config's).")
@click.option("--workspace", type=float, default=4.0, show_default=True, help="TensorRT workspace limit in GiB.")
@click.option("--opset", type=click.IntRange(17, 20), default=18, show_default=True, help="ONNX opset.")
@click.option("--out", "out_root", type=click.Path(file_okay=False), default=None, help="Engine root (default: the cache's engines/ folder).")
@click.option("--no-parity", is_flag=True, help="Skip running the graphs against PyTorch.")
@click.option("--threads", type=int, default=None, help="CPU threads for tracing and the parity run.")
def export_cmd(fmt, precision, batch_text, weights, mesh_weights, config_ref, seed, stochastic, steps, samples, temperature, workspace, opset, out_root, no_parity, threads):
    """Export MEGA to ONNX / TensorRT engines in the engine cache, with a manifest and measured parity."""
    from pathlib import Path

    batch = _parse_range(batch_text)
    precision = precision or ("fp32" if fmt == "onnx" else "fp16")
    if weights is None and config_ref is None:
        _fail(
            "no weights: pass --weights CVQMAE/mega_hrnet (Zenodo record 14974141), or --config mega_hrnet "
            "(or mega_tiny, or a YAML file) to export random weights for speed and plumbing tests"
        )
    import torch

    from engines.backends.base import BackendError
    from engines.export import ExportSpec, ModelSource, build_models, export_engine
    from engines.manifest import EngineMismatch
    from engines.onnx_export import ExportError
    from engines.trt_build import BuildError
    from train.assets import AssetError
    from train.checkpoint import CheckpointError

    if threads:
        torch.set_num_threads(threads)
    cfg = _mega_config(config_ref) if config_ref else None
    try:  # check the options, and that TensorRT can run here, before the (slow) model building
        ExportSpec(format=fmt, precision=precision, batch=batch, stochastic=stochastic, samples=samples, steps=steps or 1, opset=opset)
        if fmt != "onnx":
            from engines.trt_build import runtime_info

            runtime_info()
    except ValueError as e:
        _fail(str(e))
    except BackendError as e:
        _fail(str(e), 1)
    if weights is None:
        click.echo(f"warning: random weights of {cfg.name} (seed {seed}): the outputs are meaningless; use --weights for a real model", err=True)
    if mesh_weights is None:
        click.echo("warning: random Mesh-VQ-VAE weights: vertices are meaningless; use --mesh-weights MESH_VQVAE/mesh_vqvae_54", err=True)
    try:
        source = ModelSource(cfg, Path(weights) if weights else None, Path(mesh_weights) if mesh_weights else None, seed, config_ref)
        click.echo("building the PyTorch models ...")
        models = build_models(source)
        cfg = models.cfg
        spec = ExportSpec(
            format=fmt,
            precision=precision,
            batch=batch,
            stochastic=stochastic,
            samples=samples,
            steps=steps or cfg.steps,
            temperature=temperature,
            opset=opset,
            workspace_gib=workspace,
        )
        result = export_engine(models, spec, Path(out_root) if out_root else None, progress=click.echo, parity=not no_parity)
    except (CheckpointError, AssetError, ExportError, BuildError, BackendError, EngineMismatch, ValueError) as e:
        _fail(str(e), 1)
    m = result.manifest
    click.echo("")
    click.echo(f"built {m.mode} {m.format} engine ({m.precision}, batch {':'.join(map(str, m.batch))}"
               + (f", Q={m.samples} T={m.steps}" if m.mode == "stochastic" else "") + f") in {result.seconds:.1f} s")
    click.echo(f"  folder   {result.folder}")
    for g, entry in m.graphs.items():
        click.echo(f"  {g:<8} {entry['file']}  {entry['bytes'] / 1e6:.1f} MB")
    parity = m.parity
    if not parity:
        click.echo("  parity   not measured (--no-parity)")
    elif "skipped" in parity:
        click.echo(f"  parity   skipped: {parity['skipped']}")
    else:
        click.echo(f"  parity   {parity['backend']} vs {parity['reference']} at batch {parity['batch']}:")
        for g, outs in parity["graphs"].items():
            figures = [
                f"{o} {v['mismatched']}/{v['numel']} differ" if "mismatched" in v else f"{o} max {v['max_abs']:.2g}"
                for o, v in outs.items()
            ]
            click.echo(f"    {g:<7} " + ", ".join(figures))
        if "loop" in parity:
            lp = parity["loop"]
            click.echo(f"    loop    tokens {lp['tokens_mismatched']}/{lp['tokens_numel']} differ, verts max {lp['verts_max_abs']:.2g}")
    click.echo(f"  rebuild  {m.rebuild_command}")


@main.command()
@click.argument("reference")
@click.argument("candidate")
@click.option("--batch", type=int, default=2, show_default=True, help="Crops per call.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random test inputs.")
@click.option("--threads", type=int, default=None, help="CPU threads (torch and onnxruntime).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the differences as JSON.")
def verify(reference, candidate, batch, seed, threads, json_path):
    """Compare two backends on the same inputs: max/mean differences of every output.

    REFERENCE and CANDIDATE are engine folders, graph files (.onnx, .plan) or backend names (torch,
    onnxruntime, tensorrt) applied to the other argument's engine, e.g. `mega-rt verify torch ENGINE_DIR`.
    """
    import json
    from pathlib import Path

    import torch

    from engines.backends.base import BackendError
    from engines.manifest import EngineMismatch
    from engines.verify import verify_pair

    if threads:
        torch.set_num_threads(threads)
    try:
        report = verify_pair(reference, candidate, batch=batch, seed=seed, threads=threads, progress=click.echo)
    except (BackendError, EngineMismatch, ValueError, KeyError) as e:
        # KeyError's str() is the repr of its message
        _fail(str(e).strip("'\""), 1)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1))
        click.echo(f"wrote {json_path}")


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

    batches = _parse_batches(batch_text)
    if threads:
        torch.set_num_threads(threads)
    if backend == "tensorrt" or device.startswith("cuda"):
        if not torch.cuda.is_available():
            _fail(f"--backend {backend} --device {device}: no CUDA GPU is visible to torch")
        device = "cuda"
    cfg = _mega_config(config_name)
    click.echo(f"backend {backend}  precision {precision}  device {device}  threads {torch.get_num_threads()}  config {cfg.name}")
    try:
        results, meta = bench_backend(
            backend, cfg, batches, samples, steps, repeats, stochastic=stochastic, precision=precision,
            engine=Path(engine_path) if engine_path else None, threads=threads, device=device,
            compile=compile_, cuda_graphs=cuda_graphs, progress=click.echo,
        )
    except (BackendError, EngineMismatch, AssetError, ValueError) as e:
        _fail(str(e), 1)
    if json_path:
        meta.update(device=device, threads=torch.get_num_threads(), torch=torch.__version__, cpu=platform.processor())
        Path(json_path).write_text(json.dumps(results_json(results, **meta), indent=1))
        click.echo(f"wrote {json_path}")


# ---- training and evaluation (train/loop.py, train/evaluate.py) --------------------------------
def _train_errors():
    """The exceptions that mean bad input or a run that cannot go on: one line, no traceback."""
    from train.assets import AssetError
    from train.checkpoint import CheckpointError
    from train.config import ConfigError
    from train.data.crops import DatasetError
    from train.data.smpl import SmplError
    from train.joints import RegressorError
    from train.loop import TrainingError

    return (AssetError, CheckpointError, ConfigError, DatasetError, RegressorError, SmplError, TrainingError, FileNotFoundError)


@main.command("train")
@click.argument("stage", type=click.Choice(["tokenizer", "backbone", "pretrain", "hmr", "detector"]))
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Flat YAML of a TrainConfig (e.g. configs/train_hmr_synthetic.yaml) or, for detector, a DetectorTrainConfig.")
@click.option("--resume", is_flag=True, help="Continue the run in the config's out_dir from its checkpoint.pt.")
@click.option("--out", "out_dir", default=None, help="Override out_dir.")
@click.option("--stop-after", type=int, default=None, help="Stop (with a checkpoint) after N steps of this invocation; continue with --resume.")
@click.option("--threads", type=int, default=None, help="Override threads (CPU threads per process).")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to OUT/scalars.jsonl).")
def train_cmd(stage, config_path, resume, out_dir, stop_after, threads, no_progress):
    """Train one stage: tokenizer (Mesh-VQ-VAE), backbone (HRNet on 2D joint heatmaps), pretrain
    (masked tokens), hmr (MEGA from images); detector (ultralytics YOLO on synthetic scenes, for the
    offline demo of the detector path; see train/detector.py).

    Runs alone or under `torchrun --nproc_per_node N` (DDP; nccl on GPU, gloo on CPU). Writes
    OUT/checkpoint.pt (every checkpoint_every steps and on SIGTERM/SIGINT), OUT/final.pt,
    OUT/scalars.jsonl and OUT/metrics.json.
    """
    import dataclasses
    import json
    from pathlib import Path

    from train.config import ConfigError, TrainConfig, load_config

    if stage == "detector":
        _train_detector(config_path, resume, out_dir, threads, no_progress)
        return
    from train.loop import Interrupted, train

    try:
        cfg = load_config(config_path, TrainConfig)
    except ConfigError as e:
        _fail(str(e))
    if cfg.stage != stage:
        _fail(f"{config_path}: is a config for stage {cfg.stage!r}, not {stage!r} (use `mega-rt train {cfg.stage} --config {config_path}`)")
    overrides = {k: v for k, v in (("out_dir", out_dir), ("threads", threads)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    if stop_after is not None and stop_after < 1:
        _fail(f"--stop-after {stop_after}: must be at least 1")
    try:
        result = train(cfg, resume=resume, progress=not no_progress, stop_after=stop_after, config_text=Path(config_path).read_text())
    except Interrupted as e:
        _fail(str(e), 130)
    except _train_errors() as e:
        _fail(str(e).strip("'\""))
    import os

    if os.environ.get("RANK", "0") == "0":  # under torchrun, one report
        click.echo(json.dumps({k: result[k] for k in ("stage", "steps_done", "steps_total", "samples_per_s")}))
        if result["steps_done"] == cfg.steps:
            click.echo(f"wrote {Path(cfg.out_dir) / 'final.pt'} and metrics.json")


def _train_detector(config_path, resume, out_dir, threads, no_progress):
    import dataclasses
    import json
    from pathlib import Path

    from train.config import ConfigError, load_config
    from train.detector import DetectorTrainConfig, DetectorTrainingError, train_detector

    try:
        cfg = load_config(config_path, DetectorTrainConfig)
    except ConfigError as e:
        _fail(str(e))
    overrides = {k: v for k, v in (("out_dir", out_dir), ("threads", threads)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    try:
        metrics = train_detector(cfg, resume=resume, progress=not no_progress, config_text=Path(config_path).read_text())
    except DetectorTrainingError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail(f"interrupted; `mega-rt train detector --config {config_path} --resume` continues from the last epoch", 130)
    click.echo(json.dumps({k: v for k, v in metrics.items() if k.startswith("metrics/") or k in ("epochs", "wall_s_this_invocation")}))
    click.echo(f"wrote {metrics['weights']} and metrics.json")


def _parse_samples(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = (-1,)
    if any(v < 1 for v in values):
        _fail(f"--samples {text!r}: expected comma-separated positive integers, e.g. 1,5,10 (or an empty string)")
    return values


@main.command("eval")
@click.argument("stage", type=click.Choice(["tokenizer", "hmr"]))
@click.option("--weights", required=True, type=click.Path(exists=True, dir_okay=False), help="Checkpoint to evaluate (tokenizer or MEGA final.pt, or official weights).")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(exists=True, dir_okay=False), default=None, help="hmr: the Mesh-VQ-VAE that decodes MEGA's tokens.")
@click.option("--crops", "crop_dirs", multiple=True, type=click.Path(exists=True, file_okay=False), help="hmr: synthetic crop dataset(s) (mega-rt synth --dataset).")
@click.option("--npz", "npz_path", type=click.Path(exists=True, dir_okay=False), default=None, help="hmr: a 3DPW/EMDB test file as the VQ-HPS preprocessing writes it (or a SPIN-style file).")
@click.option("--image-dir", default=".", show_default=True, help="hmr --npz: folder the npz's imgname paths are relative to.")
@click.option("--smpl-model", default="", help="hmr --npz: SMPL model file or folder (ground-truth meshes).")
@click.option("--regressor", default=None, type=click.Path(exists=True, dir_okay=False), help="J_regressor .npy/.npz (24 or 17 x 6890); default for synthetic data: the body's own joints.")
@click.option("--synthetic-meshes", type=int, default=500, show_default=True, help="tokenizer: held-out synthetic meshes.")
@click.option("--seed", type=int, default=12345, show_default=True, help="Seed of the held-out meshes and of the stochastic samples.")
@click.option("--samples", "samples_text", default="1,5,10", show_default=True, help="hmr: Q values for the stochastic mode ('' = deterministic only).")
@click.option("--steps", type=int, default=None, help="hmr: T decoding steps (default: the config's).")
@click.option("--temperature", type=float, default=None, help="hmr: max sampling temperature A (default: the config's).")
@click.option("--batch", type=int, default=16, show_default=True)
@click.option("--limit", type=int, default=None, help="Evaluate only the first N samples.")
@click.option("--mean-mesh-from", "mean_from", multiple=True, type=click.Path(exists=True, file_okay=False), help="Crop dataset(s) whose mean mesh is the baseline (the training set).")
@click.option("--threads", type=int, default=None)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True, help="hmr: MEGA under bf16 autocast (the CPU speed option; the tokenizer stays fp32).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON.")
def eval_cmd(stage, weights, tokenizer_path, crop_dirs, npz_path, image_dir, smpl_model, regressor, synthetic_meshes, seed, samples_text, steps, temperature, batch, limit, mean_from, threads, precision, json_path):
    """PVE, MPJPE, PA-MPJPE (mm): the tokenizer's reconstruction, or MEGA deterministic and stochastic
    (best-of-Q, mean-of-Q, per-vertex std) on synthetic crops or 3DPW/EMDB npz files."""
    import json
    from pathlib import Path

    import torch

    from train.evaluate import evaluate_hmr, evaluate_tokenizer, mean_training_mesh

    if threads:
        torch.set_num_threads(threads)
    if batch < 1:
        _fail(f"--batch {batch}: must be at least 1")
    samples = _parse_samples(samples_text)
    try:
        from train.checkpoint import load_mega, load_mesh_vqvae
        from train.data.joints import synthetic_joint_regressor
        from train.joints import load_joint_regressor

        joint_reg = load_joint_regressor(regressor) if regressor else None
        mean_mesh = mean_training_mesh(mean_from) if mean_from else None
        if stage == "tokenizer":
            from train.data.meshes import SyntheticMeshes

            tokenizer, _ = load_mesh_vqvae(weights)
            meshes = SyntheticMeshes(min(limit or synthetic_meshes, synthetic_meshes), seed)
            chunks = (meshes.verts(range(s, min(s + batch, len(meshes)))) for s in range(0, len(meshes), batch))
            result = evaluate_tokenizer(tokenizer, chunks, joint_reg if joint_reg is not None else synthetic_joint_regressor(),
                                        mean_mesh.canonical if mean_mesh is not None else None)  # fmt: skip
        else:
            if tokenizer_path is None:
                _fail("eval hmr needs --tokenizer (the Mesh-VQ-VAE checkpoint that decodes MEGA's tokens)")
            if bool(crop_dirs) == bool(npz_path):
                _fail("eval hmr: give either --crops DIR (synthetic) or --npz FILE (3DPW/EMDB), not both or neither")
            if npz_path and joint_reg is None:
                _fail("eval hmr --npz: give --regressor J_regressor.npy (the H36M 17 x 6890 or SMPL 24 x 6890 regressor)")
            from train.config import TrainConfig
            from train.stages import hmr_dataset

            mega, mega_cfg = load_mega(weights)
            tokenizer, _ = load_mesh_vqvae(tokenizer_path)
            cfg = TrainConfig(stage="hmr", smpl_model=smpl_model, seed=seed)
            data = hmr_dataset(cfg, mega_cfg, mega.backbone, augment=False, crop_dirs=tuple(crop_dirs),
                               hmr_npz=(npz_path,) if npz_path else (), image_dirs=(image_dir,) if npz_path else (),
                               sequential=True)  # fmt: skip
            total = min(limit or len(data), len(data))
            batches = (data[list(range(s, min(s + batch, total)))] for s in range(0, total, batch))
            from tqdm import tqdm

            with tqdm(total=total, desc="eval", unit="crop", disable=None) as bar:
                result = evaluate_hmr(
                    mega, tokenizer, batches, joint_reg if joint_reg is not None else synthetic_joint_regressor(), samples, steps,
                    temperature, seed, mean_mesh, progress=lambda n: bar.update(n - bar.n), precision=precision,
                )  # fmt: skip
    except _train_errors() as e:
        _fail(str(e).strip("'\""))
    for k, v in result.items():
        click.echo(f"{k:32s} {v:10.2f}" if isinstance(v, float) else f"{k:32s} {v}")
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))
        click.echo(f"wrote {json_path}")


@main.command("score")
@click.argument("results", type=click.Path(dir_okay=False))
@click.argument("truth", type=click.Path(dir_okay=False))
@click.option("--regressor", default=None, type=click.Path(exists=True, dir_okay=False), help="J_regressor .npy/.npz (J x 6890) for MPJPE; default: the synthetic body's own 24 joints.")
@click.option("--min-iou", type=float, default=0.5, show_default=True, help="A detection matches a person at this box IoU or more.")
@click.option("--min-visibility", type=float, default=0.15, show_default=True, help="People less visible than this are not expected.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON.")
def score_cmd(results, truth, regressor, min_iou, min_visibility, json_path):
    """Score a `mega-rt video` results file (RESULTS.npz) against the ground truth of the `mega-rt synth`
    clip it ran on (TRUTH.npz): detection recall/precision, id switches, PVE/MPJPE/PA-MPJPE and camera
    translation error (mm) of the matched people. Any detector: people are matched by box IoU."""
    import json
    from pathlib import Path

    from realtime.score import ScoreError, score_results

    try:
        if regressor:
            from train.joints import load_joint_regressor

            joint_reg = load_joint_regressor(regressor)
        else:
            from train.data.joints import synthetic_joint_regressor

            joint_reg = synthetic_joint_regressor()
        result = score_results(results, truth, joint_reg, min_iou, min_visibility)
    except ScoreError as e:
        _fail(str(e))
    except _train_errors() as e:
        _fail(str(e).strip("'\""))
    for k, v in result.items():
        click.echo(f"{k:20s} {v:10.3f}" if isinstance(v, float) else f"{k:20s} {v}")
    if json_path:
        tmp = Path(json_path).with_name(Path(json_path).name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(json_path)
        click.echo(f"wrote {json_path}")


# ---- the video pipeline: video, stream, bench-pipeline (realtime/video_commands.py) ---------------
from realtime.video_commands import register as _register_video  # noqa: E402  (click only; no heavy imports)

_register_video(main)


if __name__ == "__main__":
    sys.exit(main())
