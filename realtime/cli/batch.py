"""`mega-rt batch`: many videos across a local process pool or a Ray cluster (realtime/batch.py)."""

from __future__ import annotations

import os

import click

from realtime.cli.common import fail, refuse_overwriting_inputs
from realtime.cli.video import model_options


@click.command("batch")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Outputs <stem>_mega.mp4/.npz/.jsonl and manifest.json.")  # fmt: skip
@click.option("--workers", type=int, default=None, help="Worker processes (Ray: actors), one model each (default: 1; Ray: one per GPU, else 1).")  # fmt: skip
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS|local", help="Run on a Ray cluster at ADDRESS, or 'local' (Ray on this machine).")  # fmt: skip
@click.option("--retries", type=int, default=3, show_default=True, help="Re-runs of a video whose worker died.")
@click.option("--frame-batch", type=int, default=4, show_default=True, help="Frames whose people share one MEGA call.")
@click.option("--no-render", is_flag=True, help="Results only (no overlay videos, no OpenGL/EGL needed).")
@click.option("--no-progress", is_flag=True)
@model_options
def batch(inputs, out_dir, workers, ray_address, retries, frame_batch, no_render, no_progress, **kw):
    """Process many videos (files, folders, text files of paths): exactly once, resumable.

    A rerun skips the videos whose outputs verify (results and overlay hold every frame) and redoes
    the rest; DIR/manifest.json records per video the weights, settings and status."""
    from pathlib import Path

    from realtime.batch import BatchError, describe_weights, expand_inputs, plan_jobs, run_batch
    from realtime.cli.video import check_model_options, input_files

    check_model_options(kw)
    if kw["boxes"]:
        fail("--boxes holds the boxes of one video: it cannot go with a batch (use a detector)")
    for name, value in (("--workers", workers), ("--frame-batch", frame_batch)):
        if value is not None and value < 1:
            fail(f"{name} {value}: must be at least 1")
    if retries < 0:
        fail(f"--retries {retries}: must be >= 0")
    workers = workers or 1
    if kw["threads"] is None and ray_address is None:
        kw["threads"] = max(1, (os.cpu_count() or 2) // workers - (1 if workers == 1 else 0))
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--out-dir {out_dir}: cannot create ({e.strerror})")
    if not os.access(out_dir, os.W_OK):
        fail(f"--out-dir {out_dir}: is not writable")
    try:
        videos = expand_inputs(inputs, out_dir)
        jobs = plan_jobs(videos, out_dir, overlay=not no_render)
    except BatchError as e:
        fail(str(e))
    outputs = {}
    for j in jobs:
        outputs.update({f"output of {j.key}": j.results, f"overlay of {j.key}": j.overlay})
        outputs[f"jsonl of {j.key}"] = str(Path(j.results).with_suffix(".jsonl"))
    refuse_overwriting_inputs(outputs, {**input_files(kw), **{f"INPUT {v.name}": v for v in videos}})
    weights = describe_weights(kw)
    where = f"Ray {ray_address}" if ray_address else (f"{workers} worker processes" if workers > 1 else "this process")
    click.echo(f"{len(jobs)} videos -> {out_dir}  ({weights['description']}, {where})")
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="batch", unit="video", disable=True if no_progress else None, leave=False)

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = run_batch(
            jobs, kw, out_dir, workers, ray_address, frame_batch, weights, retries, progress, echo=click.echo
        )
    except BatchError as e:
        fail(str(e), 1)
    finally:
        bar.close()
    for line in report.table():
        click.echo(line)
    if report.failed:
        fail(f"{len(report.failed)} of {len(jobs)} videos failed (see above and {Path(out_dir) / 'manifest.json'}); a rerun retries them", 1)  # fmt: skip
