"""`mega-rt view`: a results file's meshes in 3D over time with Rerun (realtime/view.py)."""

from __future__ import annotations

import click

from realtime.cli.common import fail, refuse_overwriting_inputs


@click.command("view")
@click.argument("results_path", metavar="RESULTS.npz")
@click.option(
    "--video",
    type=click.Path(dir_okay=False),
    default=None,
    help="The video the results came from: its frames behind the boxes.",
)
@click.option(
    "--save",
    "save_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the recording to this .rrd instead of opening the viewer (default without a display: <RESULTS stem>.rrd here).",
)
def view(results_path, video, save_path):
    """Play the meshes of a results file in 3D over time (Rerun): boxes, meshes coloured by sample
    spread or by track, a frame and a time timeline."""
    from pathlib import Path

    from realtime.sinks import SinkError, check_writable
    from realtime.view import ViewError, read_results, spawn_viewer, viewer_display_problem, write_rrd

    try:
        import rerun  # noqa: F401
    except ImportError:
        fail("mega-rt view needs rerun-sdk: pip install -c constraints.txt -e '.[view]'", 1)
    if save_path is not None and Path(save_path).suffix.lower() != ".rrd":
        fail(f"--save {save_path}: must be an .rrd file")
    try:
        results = read_results(results_path)
    except ViewError as e:
        fail(str(e))
    if video is not None and not Path(video).is_file():
        fail(f"--video {video}: no such file")
    if save_path is None:
        problem = viewer_display_problem()
        if problem is not None:
            save_path = f"{Path(results_path).stem}.rrd"
            click.echo(
                f"no display ({problem}): writing {save_path} instead (open it with `rerun {save_path}`)", err=True
            )
    if save_path is not None:
        refuse_overwriting_inputs({"--save": save_path}, {"RESULTS": results_path, "--video": video})
        try:
            check_writable(Path(save_path))
        except SinkError as e:
            fail(str(e))
    try:
        if save_path is None:
            frames = spawn_viewer(results, video)
            click.echo(f"{results_path}: {frames} frames sent to the Rerun viewer")
        else:
            frames = write_rrd(results, save_path, video)
            click.echo(f"wrote {save_path} ({frames} frames, {len(results.frame)} meshes)")
    except ViewError as e:
        fail(str(e))
