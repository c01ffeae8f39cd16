"""mega-rt train, mega-rt eval and mega-rt score."""

from __future__ import annotations

import click

from realtime.cli.common import fail, parse_samples, train_errors


@click.command("train")
@click.argument("stage", required=False, type=click.Choice(["tokenizer", "backbone", "pretrain", "hmr", "detector"]))
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Flat YAML of a TrainConfig (e.g. configs/train_hmr_synthetic.yaml) or, for detector, a DetectorTrainConfig.",
)
@click.option(
    "--recipe",
    "recipe_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Run a recipe's steps in order instead (e.g. configs/recipes/synthetic_demo.yaml); finished steps are skipped.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="STEP.FIELD=VALUE",
    help="--recipe: change one field of one step (repeatable), e.g. --set hmr_6.steps=100.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="--recipe: print the planned steps (stage, config, the fields set, out_dir) and run nothing.",
)
@click.option(
    "--package", is_flag=True, help="--recipe: also run its package steps (they replace the shipped demo weights)."
)
@click.option("--resume", is_flag=True, help="Continue the run in the config's out_dir from its checkpoint.pt.")
@click.option("--out", "out_dir", default=None, help="Override out_dir.")
@click.option(
    "--stop-after",
    type=int,
    default=None,
    help="Stop (with a checkpoint) after N steps of this invocation; continue with --resume.",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Override threads (CPU threads per process; with --recipe, of every run and eval).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to OUT/scalars.jsonl).")
@click.option(
    "--trust-file",
    is_flag=True,
    help="detector: fine-tune from a model .pt that is neither an allow-listed official file nor the safe format (it is a pickle: it can run code).",
)
def train_cmd(
    stage, config_path, recipe_path, sets, dry_run, package, resume, out_dir, stop_after, threads, no_progress,
    trust_file,
):  # fmt: skip
    """Train one stage: tokenizer (Mesh-VQ-VAE), backbone (HRNet on 2D joint heatmaps), pretrain
    (masked tokens), hmr (MEGA from images); detector (ultralytics YOLO on synthetic scenes, for the
    offline demo of the detector path; see train/detector.py). Or run a recipe, the ordered runs that
    make a set of weights: `mega-rt train --recipe configs/recipes/synthetic_demo.yaml` (docs/training.md).

    Runs alone or under `torchrun --nproc_per_node N` (DDP; nccl on GPU, gloo on CPU). Writes
    OUT/checkpoint.pt (every checkpoint_every steps and on SIGTERM/SIGINT), OUT/final.pt,
    OUT/scalars.jsonl and OUT/metrics.json.
    """
    if recipe_path is not None:
        if stage or config_path or resume or out_dir or stop_after is not None:
            fail("--recipe runs its own steps: give it without STAGE, --config, --resume, --out or --stop-after")
        _run_recipe(recipe_path, sets, dry_run, package, threads, no_progress)
        return
    if sets or dry_run or package:
        fail("--set, --dry-run and --package belong to --recipe FILE")
    if stage is None or config_path is None:
        fail("give STAGE --config FILE (one run) or --recipe FILE (a chain of runs)")
    import dataclasses
    import json
    from pathlib import Path

    from train.config import ConfigError, TrainConfig, load_config

    if stage == "detector":
        _train_detector(config_path, resume, out_dir, threads, no_progress, trust_file)
        return
    from train.loop import Interrupted, train

    try:
        cfg = load_config(config_path, TrainConfig)
    except ConfigError as e:
        fail(str(e))
    if cfg.stage != stage:
        fail(
            f"{config_path}: is a config for stage {cfg.stage!r}, not {stage!r} (use `mega-rt train {cfg.stage} --config {config_path}`)"
        )
    overrides = {k: v for k, v in (("out_dir", out_dir), ("threads", threads)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    if stop_after is not None and stop_after < 1:
        fail(f"--stop-after {stop_after}: must be at least 1")
    try:
        result = train(
            cfg,
            resume=resume,
            progress=not no_progress,
            stop_after=stop_after,
            config_text=Path(config_path).read_text(),
        )
    except Interrupted as e:
        fail(str(e), 130)
    except train_errors() as e:
        fail(str(e).strip("'\""))
    import os

    if os.environ.get("RANK", "0") == "0":  # under torchrun, one report
        click.echo(json.dumps({k: result[k] for k in ("stage", "steps_done", "steps_total", "samples_per_s")}))
        if result["steps_done"] == cfg.steps:
            click.echo(f"wrote {Path(cfg.out_dir) / 'final.pt'} and metrics.json")


def _run_recipe(recipe_path, sets, dry_run, package, threads, no_progress):
    from train import recipe as recipes

    try:
        recipe = recipes.load_recipe(recipe_path, sets, threads)
    except train_errors() as e:
        fail(str(e))
    if dry_run:
        click.echo("\n".join(recipes.plan(recipe, package)))
        return
    from train.detector import DetectorTrainingError
    from train.loop import Interrupted
    from train.render import RendererUnavailable

    try:
        recipes.run(recipe, package=package, progress=not no_progress, echo=click.echo)
    except Interrupted as e:
        fail(f"{e}; run the recipe again to continue", 130)
    except KeyboardInterrupt:
        fail("interrupted; run the recipe again to continue", 130)
    except (DetectorTrainingError, RendererUnavailable) as e:
        fail(str(e), 1)
    except train_errors() as e:
        fail(str(e).strip("'\""))
    click.echo(f"recipe {recipe_path}: every step done")


def _train_detector(config_path, resume, out_dir, threads, no_progress, trust_file=False):
    import dataclasses
    import json
    from pathlib import Path

    from train.config import ConfigError, load_config
    from train.detector import DetectorTrainConfig, DetectorTrainingError, train_detector

    try:
        cfg = load_config(config_path, DetectorTrainConfig)
    except ConfigError as e:
        fail(str(e))
    overrides = {k: v for k, v in (("out_dir", out_dir), ("threads", threads)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    try:
        metrics = train_detector(
            cfg, resume=resume, progress=not no_progress, config_text=Path(config_path).read_text(),
            trust_file=trust_file, warn=lambda line: click.echo(line, err=True),
        )  # fmt: skip
    except DetectorTrainingError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail(
            f"interrupted; `mega-rt train detector --config {config_path} --resume` continues from the last epoch", 130
        )
    click.echo(
        json.dumps(
            {k: v for k, v in metrics.items() if k.startswith("metrics/") or k in ("epochs", "wall_s_this_invocation")}
        )
    )
    click.echo(f"wrote {metrics['weights']} and metrics.json")


@click.command("eval")
@click.argument("stage", type=click.Choice(["tokenizer", "hmr"]))
@click.option(
    "--weights",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Checkpoint to evaluate (tokenizer or MEGA final.pt, or official weights).",
)
@click.option(
    "--tokenizer",
    "tokenizer_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="hmr: the Mesh-VQ-VAE that decodes MEGA's tokens.",
)
@click.option(
    "--crops",
    "crop_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="hmr: synthetic crop dataset(s) (mega-rt synth --dataset).",
)
@click.option(
    "--npz",
    "npz_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="hmr: a 3DPW/EMDB test file as the VQ-HPS preprocessing writes it (or a SPIN-style file).",
)
@click.option(
    "--image-dir", default=".", show_default=True, help="hmr --npz: folder the npz's imgname paths are relative to."
)
@click.option("--smpl-model", default="", help="hmr --npz: SMPL model file or folder (ground-truth meshes).")
@click.option(
    "--regressor",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="J_regressor .npy/.npz (24 or 17 x 6890); default for synthetic data: the body's own joints.",
)
@click.option(
    "--synthetic-meshes", type=int, default=500, show_default=True, help="tokenizer: held-out synthetic meshes."
)
@click.option(
    "--seed",
    type=int,
    default=12345,
    show_default=True,
    help="Seed of the held-out meshes and of the stochastic samples.",
)
@click.option(
    "--samples",
    "samples_text",
    default="1,5,10",
    show_default=True,
    help="hmr: Q values for the stochastic mode ('' = deterministic only).",
)
@click.option("--steps", type=int, default=None, help="hmr: T decoding steps (default: the config's).")
@click.option(
    "--temperature", type=float, default=None, help="hmr: max sampling temperature A (default: the config's)."
)
@click.option("--batch", type=int, default=16, show_default=True)
@click.option("--limit", type=int, default=None, help="Evaluate only the first N samples.")
@click.option(
    "--mean-mesh-from",
    "mean_from",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Crop dataset(s) whose mean mesh is the baseline (the training set).",
)
@click.option("--threads", type=int, default=None)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="hmr: MEGA under bf16 autocast (the CPU speed option; the tokenizer stays fp32).",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON."
)
def eval_cmd(
    stage,
    weights,
    tokenizer_path,
    crop_dirs,
    npz_path,
    image_dir,
    smpl_model,
    regressor,
    synthetic_meshes,
    seed,
    samples_text,
    steps,
    temperature,
    batch,
    limit,
    mean_from,
    threads,
    precision,
    json_path,
):
    """PVE, MPJPE, PA-MPJPE (mm): the tokenizer's reconstruction, or MEGA deterministic and stochastic
    (best-of-Q, mean-of-Q, per-vertex std) on synthetic crops or 3DPW/EMDB npz files."""
    import torch

    from train.evaluate import evaluate_hmr_files, evaluate_tokenizer_file
    from train.io import write_json_atomic

    if threads:
        torch.set_num_threads(threads)
    if batch < 1:
        fail(f"--batch {batch}: must be at least 1")
    samples = parse_samples(samples_text)
    try:
        from train.joints import load_joint_regressor

        joint_reg = load_joint_regressor(regressor) if regressor else None
        if stage == "tokenizer":
            result = evaluate_tokenizer_file(weights, synthetic_meshes, seed, batch, limit, joint_reg, mean_from)
        else:
            if tokenizer_path is None:
                fail("eval hmr needs --tokenizer (the Mesh-VQ-VAE checkpoint that decodes MEGA's tokens)")
            if bool(crop_dirs) == bool(npz_path):
                fail("eval hmr: give either --crops DIR (synthetic) or --npz FILE (3DPW/EMDB), not both or neither")
            if npz_path and joint_reg is None:
                fail(
                    "eval hmr --npz: give --regressor J_regressor.npy (the H36M 17 x 6890 or SMPL 24 x 6890 regressor)"
                )
            from tqdm import tqdm

            with tqdm(desc="eval", unit="crop", disable=None) as bar:

                def progress(done, total):
                    bar.total = total
                    bar.update(done - bar.n)

                result = evaluate_hmr_files(
                    weights, tokenizer_path, crop_dirs, npz_path, image_dir, smpl_model, joint_reg, samples, steps, temperature,
                    seed, batch, limit, mean_from, precision, progress,
                )  # fmt: skip
    except train_errors() as e:
        fail(str(e).strip("'\""))
    for k, v in result.items():
        click.echo(f"{k:32s} {v:10.2f}" if isinstance(v, float) else f"{k:32s} {v}")
    if json_path:
        write_json_atomic(json_path, result)
        click.echo(f"wrote {json_path}")


@click.command("score")
@click.argument("results", type=click.Path(dir_okay=False))
@click.argument("truth", type=click.Path(dir_okay=False))
@click.option(
    "--regressor",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="J_regressor .npy/.npz (J x 6890) for MPJPE; default: the synthetic body's own 24 joints.",
)
@click.option(
    "--min-iou",
    type=float,
    default=0.5,
    show_default=True,
    help="A detection matches a person at this box IoU or more.",
)
@click.option(
    "--min-visibility",
    type=float,
    default=0.15,
    show_default=True,
    help="People less visible than this are not expected.",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON."
)
def score_cmd(results, truth, regressor, min_iou, min_visibility, json_path):
    """Score a `mega-rt video` results file (RESULTS.npz) against the ground truth of the `mega-rt synth`
    clip it ran on (TRUTH.npz): detection recall/precision, id switches, PVE/MPJPE/PA-MPJPE and camera
    translation error (mm) of the matched people. Any detector: people are matched by box IoU."""
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
        fail(str(e))
    except train_errors() as e:
        fail(str(e).strip("'\""))
    for k, v in result.items():
        click.echo(f"{k:20s} {v:10.3f}" if isinstance(v, float) else f"{k:20s} {v}")
    if json_path:
        from train.io import write_json_atomic

        write_json_atomic(json_path, result)
        click.echo(f"wrote {json_path}")
