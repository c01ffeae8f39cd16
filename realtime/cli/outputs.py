"""`mega-rt fit` (SMPL parameters from the meshes of a results file) and `mega-rt export-anim` (glTF,
BVH, PC2 animation files)."""

from __future__ import annotations

import click

from realtime.cli.common import fail, refuse_overwriting_inputs


def run_fit(results: str, smpl_model: str, out: str | None, cfg, tracks=None) -> str:
    """Fit and write `<results stem>_smpl.npz` (or `out`); prints per-track errors and meshes/s."""
    from pathlib import Path

    from realtime.anim.results import AnimError
    from realtime.fit_smpl import BodyModel, FitError, fit_results, smpl_results_name, write_smpl_npz

    target = out or str(smpl_results_name(results))
    if Path(target).suffix.lower() != ".npz":
        fail(f"--out {target}: must be an .npz file")
    refuse_overwriting_inputs({"--out": target}, {"RESULTS": results, "--smpl-model": smpl_model})
    try:
        model = BodyModel(smpl_model, cfg.num_betas, cfg.device)
        arrays = fit_results(results, model, cfg, tracks, log=click.echo)
    except (FitError, AnimError) as e:
        fail(str(e))
    meshes, seconds = len(arrays["row"]), float(arrays["fit_seconds"])
    err = arrays["fit_error"]
    mean_mm = f"{1000 * err.mean():.2f} mm" if len(err) else "-"
    click.echo(
        f"fitted {model.kind.upper()} to {meshes} meshes of {len(arrays['tracks'])} track(s) in {seconds:.1f} s "
        f"({meshes / max(seconds, 1e-9):.1f} meshes/s on {cfg.device}); mean vertex error {mean_mm}"
    )
    try:
        write_smpl_npz(target, arrays)
    except OSError as e:
        fail(f"{target}: cannot write ({e})", 1)
    click.echo(f"wrote {target}")
    return target


def fit_config(num_betas: int, iterations: int, smooth_weight: float, device: str | None):
    import torch

    from realtime.fit_smpl import FitConfig

    if num_betas < 1 or iterations < 1 or smooth_weight < 0:
        fail("--num-betas and --iterations must be >= 1, --smooth-weight >= 0")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {device}: no CUDA GPU is visible; use --device cpu")
    return FitConfig(num_betas=num_betas, iterations=iterations, smooth_weight=smooth_weight, device=device)


def fit_options(f):
    for option in reversed(
        [
            click.option("--num-betas", type=int, default=10, show_default=True, help="Shape coefficients fitted (one vector per track)."),
            click.option("--iterations", type=int, default=20, show_default=True, help="L-BFGS steps per round (two rounds)."),
            click.option("--smooth-weight", type=float, default=0.0, show_default=True, help="Weight of the vertex acceleration between consecutive frames (0: none)."),
        ]
    ):  # fmt: skip
        f = option(f)
    return f


@click.command("fit")
@click.argument("results", metavar="RESULTS.npz", type=click.Path(dir_okay=False))
@click.option(
    "--smpl-model",
    required=True,
    type=click.Path(),
    help="SMPL (or SMPL-X) model .pkl/.npz, or a folder with SMPL_NEUTRAL.pkl.",
)
@click.option(
    "--out", default=None, type=click.Path(dir_okay=False), help="Default: <RESULTS stem>_smpl.npz beside it."
)
@click.option("--track", "tracks", type=int, multiple=True, help="Fit only this track id (repeatable).")
@fit_options
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
def fit(results, smpl_model, out, tracks, num_betas, iterations, smooth_weight, device):
    """SMPL parameters (pose, shape, translation per track) fitted to the meshes of a results file."""
    cfg = fit_config(num_betas, iterations, smooth_weight, device)
    run_fit(results, smpl_model, out, cfg, list(tracks) or None)


@click.command("export-anim")
@click.argument("results", metavar="RESULTS.npz", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["glb", "bvh", "pc2"]), required=True)
@click.option("--track", "tracks", type=int, multiple=True, help="Export only this track id (repeatable).")
@click.option(
    "--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Folder (default: beside RESULTS)."
)
@click.option(
    "--smpl",
    default=None,
    type=click.Path(dir_okay=False),
    help="The SMPL fit (default: <RESULTS stem>_smpl.npz when present).",
)
@click.option("--no-smpl", is_flag=True, help="Ignore any SMPL fit (glb: a vertex animation of the exact meshes).")
def export_anim(results, fmt, tracks, out_dir, smpl, no_smpl):
    """Animation files: glb (skinned with an SMPL fit, else morph targets), bvh (needs the fit), pc2 + obj."""
    from pathlib import Path

    from realtime.anim.export import choose_tracks, export_anim, find_fit, output_paths
    from realtime.anim.results import AnimError, Results

    try:
        res = Results(results)
        chosen = choose_tracks(res, list(tracks))
        fit = None if no_smpl else find_fit(res.path, smpl)
        folder = Path(out_dir) if out_dir else res.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        outputs = {f"output {p.name}": p for p in output_paths(res, fmt, chosen, folder)}
        refuse_overwriting_inputs(outputs, {"RESULTS": results, "--smpl": fit.path if fit else None})
        paths = export_anim(res, fmt, chosen, folder, fit, warn=lambda m: click.echo(m, err=True))
    except AnimError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write into {out_dir or Path(results).parent}: {e}", 1)
    for p in paths:
        click.echo(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB)")
