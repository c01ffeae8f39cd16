"""mega-rt export and mega-rt verify: graphs, engines and their parity."""

from __future__ import annotations

import click

from realtime.cli.common import fail, mega_config, parse_range


@click.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "tensorrt", "torch-tensorrt"]),
    default="onnx",
    show_default=True,
    help="Artefact to build.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "bf16"]),
    default=None,
    help="Precision inside the graphs (default: fp32 for onnx, fp16 for TensorRT).",
)
@click.option(
    "--batch",
    "batch_text",
    default="1:8:32",
    show_default=True,
    help="Crops per call MIN:OPT:MAX (the TensorRT optimization profile).",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="MEGA checkpoint (official CVQMAE/mega_* or our own).",
)
@click.option(
    "--mesh-weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Mesh-VQ-VAE checkpoint (MESH_VQVAE/mesh_vqvae_54); random when absent.",
)
@click.option(
    "--config",
    "config_ref",
    default=None,
    help="Config name (mega_hrnet, mega_tiny, ...) or YAML path; without --weights: random weights.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of random weights.")
@click.option(
    "--stochastic", is_flag=True, help="Export the stochastic graphs (encode, step, mesh) instead of the oneshot graph."
)
@click.option("--steps", type=int, default=None, help="T decoding steps (default: the config's).")
@click.option(
    "--samples", type=int, default=8, show_default=True, help="Q samples per crop (baked into the encode graph)."
)
@click.option(
    "--temperature",
    type=float,
    default=None,
    help="Max sampling temperature A recorded for the runner (default: the config's).",
)
@click.option("--workspace", type=float, default=4.0, show_default=True, help="TensorRT workspace limit in GiB.")
@click.option("--opset", type=click.IntRange(17, 20), default=18, show_default=True, help="ONNX opset.")
@click.option(
    "--out",
    "out_root",
    type=click.Path(file_okay=False),
    default=None,
    help="Engine root (default: the cache's engines/ folder).",
)
@click.option("--no-parity", is_flag=True, help="Skip running the graphs against PyTorch.")
@click.option("--threads", type=int, default=None, help="CPU threads for tracing and the parity run.")
@click.option(
    "--detector",
    "detector_weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Export this person detector (safe format, e.g. train/demo_weights/detector.pt) instead of MEGA; --batch counts frames.",
)
@click.option("--det-imgsz", type=int, default=640, show_default=True, help="Detector input size (with --detector).")
def export_cmd(
    fmt,
    precision,
    batch_text,
    weights,
    mesh_weights,
    config_ref,
    seed,
    stochastic,
    steps,
    samples,
    temperature,
    workspace,
    opset,
    out_root,
    no_parity,
    threads,
    detector_weights,
    det_imgsz,
):
    """Export MEGA to ONNX / TensorRT engines in the engine cache, with a manifest and measured parity."""
    from pathlib import Path

    batch = parse_range(batch_text)
    precision = precision or ("fp32" if fmt == "onnx" else "fp16")
    if detector_weights is not None:
        _export_detector(detector_weights, fmt, precision, det_imgsz, batch, opset, workspace, out_root, threads)
        return
    if weights is None and config_ref is None:
        fail(
            "no weights: pass --weights CVQMAE/mega_hrnet (Zenodo record 14974141), or --config mega_hrnet "
            "(or mega_tiny, or a YAML file) to export random weights for speed and plumbing tests"
        )
    import torch

    from engines.backends.base import BackendError
    from engines.export import ExportSpec, export_engine
    from engines.manifest import EngineMismatch
    from engines.models import ModelSource, build_models
    from engines.onnx_export import ExportError
    from engines.trt_build import BuildError
    from train.assets import AssetError
    from train.checkpoint import CheckpointError

    if threads:
        torch.set_num_threads(threads)
    cfg = mega_config(config_ref) if config_ref else None
    try:  # check the options, and that TensorRT can run here, before the (slow) model building
        ExportSpec(
            format=fmt,
            precision=precision,
            batch=batch,
            stochastic=stochastic,
            samples=samples,
            steps=steps or 1,
            opset=opset,
        )
        if fmt != "onnx":
            from engines.trt_build import runtime_info

            runtime_info()
    except ValueError as e:
        fail(str(e))
    except BackendError as e:
        fail(str(e), 1)
    if weights is None:
        click.echo(
            f"warning: random weights of {cfg.name} (seed {seed}): the outputs are meaningless; use --weights for a real model",
            err=True,
        )
    if mesh_weights is None:
        click.echo(
            "warning: random Mesh-VQ-VAE weights: vertices are meaningless; use --mesh-weights MESH_VQVAE/mesh_vqvae_54",
            err=True,
        )
    try:
        source = ModelSource(
            cfg, Path(weights) if weights else None, Path(mesh_weights) if mesh_weights else None, seed, config_ref
        )
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
        result = export_engine(
            models, spec, Path(out_root) if out_root else None, progress=click.echo, parity=not no_parity
        )
    except (CheckpointError, AssetError, ExportError, BuildError, BackendError, EngineMismatch, ValueError) as e:
        fail(str(e), 1)
    m = result.manifest
    click.echo("")
    click.echo(
        f"built {m.mode} {m.format} engine ({m.precision}, batch {':'.join(map(str, m.batch))}"
        + (f", Q={m.samples} T={m.steps}" if m.mode == "stochastic" else "")
        + f") in {result.seconds:.1f} s"
    )
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
            click.echo(
                f"    loop    tokens {lp['tokens']['mismatched']}/{lp['tokens']['numel']} differ, verts max {lp['verts']['max_abs']:.2g}"
            )
    click.echo(f"  rebuild  {m.rebuild_command}")


@click.command()
@click.argument("reference")
@click.argument("candidate")
@click.option("--batch", type=int, default=2, show_default=True, help="Crops per call.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random test inputs.")
@click.option("--threads", type=int, default=None, help="CPU threads (torch and onnxruntime).")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the differences as JSON."
)
def verify(reference, candidate, batch, seed, threads, json_path):
    """Compare two backends on the same inputs: max/mean differences of every output.

    REFERENCE and CANDIDATE are engine folders, graph files (.onnx, .plan) or backend names (torch,
    onnxruntime, tensorrt) applied to the other argument's engine, e.g. `mega-rt verify torch ENGINE_DIR`.
    """
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
        fail(str(e).strip("'\""), 1)
    if json_path:
        from train.io import write_json_atomic

        write_json_atomic(json_path, report)
        click.echo(f"wrote {json_path}")


def _export_detector(weights, fmt, precision, imgsz, batch, opset, workspace, out_root, threads):
    """`mega-rt export --detector FILE`: the detector graph into its own engine folder."""
    from pathlib import Path

    import torch

    from engines.backends.base import BackendError
    from engines.detector import DetectorExportSpec, export_detector
    from engines.onnx_export import ExportError
    from engines.trt_build import BuildError

    if threads:
        torch.set_num_threads(threads)
    try:
        spec = DetectorExportSpec(fmt, precision, imgsz, batch, opset, workspace)
    except ValueError as e:
        fail(str(e))
    try:
        result = export_detector(weights, spec, Path(out_root) if out_root else None, progress=click.echo)
    except BackendError as e:
        fail(str(e))
    except (ExportError, BuildError) as e:
        fail(str(e), 1)
    click.echo(f"wrote {result.folder} ({result.seconds:.1f} s); use it with --detector {result.folder}")
