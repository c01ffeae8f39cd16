"""`mega-rt fit` (SMPL parameters from the meshes of a results file) and `mega-rt export-anim` (glTF,
BVH, PC2 animation files)."""

from __future__ import annotations

import click

from realtime.cli.common import fail, refuse_overwriting_inputs


def load_fit_inputs(smpl_model: str, correspondence: str | None, cfg, mesh_verts: int | None = None):
    """The body model and vertex map (or None), read and checked against meshes of `mesh_verts` vertices
    when known; a one-line error otherwise."""
    from realtime.fit_smpl import BodyModel, FitError, fit_topology, load_correspondence

    try:
        model = BodyModel(smpl_model, cfg.num_betas, cfg.device)
        vertex_map = load_correspondence(correspondence, cfg.device) if correspondence else None
        if mesh_verts is not None:
            fit_topology(model, mesh_verts, vertex_map, "mega-rt results")
    except FitError as e:
        fail(str(e))
    return model, vertex_map


def fit_before_run(results: str, smpl_model: str, correspondence: str | None, device: str | None, inputs: dict):
    """`video --fit-smpl`: everything the fit needs, checked before the video runs (the output
    `<results stem>_smpl.npz` replaces no input; model and correspondence read and matched to MEGA's
    meshes) -> run_fit's arguments after RESULTS."""
    from pathlib import Path

    from realtime.cli.common import same_file
    from realtime.fit_smpl import smpl_results_name
    from train.joints import NUM_VERTS

    if not Path(smpl_model).exists():
        fail(f"--fit-smpl {smpl_model}: SMPL model not found (an SMPL .pkl/.npz, or a folder with SMPL_NEUTRAL.pkl)")
    target = str(smpl_results_name(results))
    for name, path in {**inputs, "--fit-smpl": smpl_model, "--correspondence": correspondence}.items():
        if path and same_file(target, path):
            fail(f"the SMPL fit {target} (named after --results) is the input {name} {path}; choose another --results")
    cfg = fit_config(10, 20, 0.0, device)
    model, vertex_map = load_fit_inputs(smpl_model, correspondence, cfg, NUM_VERTS)
    return target, model, vertex_map, cfg


def run_fit(results: str, target: str, model, vertex_map, cfg, tracks=None) -> str:
    """Fit and write `target`; prints per-track errors and meshes/s."""
    from realtime.anim.results import AnimError
    from realtime.fit_smpl import FitError, fit_results, write_smpl_npz

    try:
        arrays = fit_results(results, model, cfg, tracks, log=click.echo, correspondence=vertex_map)
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


CORRESPONDENCE_HELP = (
    "SMPL-X only: the vertex map between SMPL and SMPL-X, smplx's smpl2smplx_deftrafo_setup.pkl (or "
    "smplx2smpl_...), or an .npz with a dense `matrix` or CSR `data`/`indices`/`indptr`/`shape`."
)


def fit_options(f):
    # the defaults of FitConfig (realtime/fit_smpl.py imports torch: not at CLI start)
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
@click.option("--correspondence", default=None, type=click.Path(dir_okay=False), help=CORRESPONDENCE_HELP)
@click.option("--track", "tracks", type=int, multiple=True, help="Fit only this track id (repeatable).")
@fit_options
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
def fit(results, smpl_model, out, correspondence, tracks, num_betas, iterations, smooth_weight, device):
    """SMPL parameters (pose, shape, translation per track) fitted to the meshes of a results file."""
    from pathlib import Path

    from realtime.fit_smpl import smpl_results_name

    cfg = fit_config(num_betas, iterations, smooth_weight, device)
    target = out or str(smpl_results_name(results))
    if Path(target).suffix.lower() != ".npz":
        fail(f"--out {target}: must be an .npz file")
    inputs = {"RESULTS": results, "--smpl-model": smpl_model, "--correspondence": correspondence}
    refuse_overwriting_inputs({"--out": target}, inputs)
    model, vertex_map = load_fit_inputs(smpl_model, correspondence, cfg)
    run_fit(results, target, model, vertex_map, cfg, list(tracks) or None)


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
