"""`mega-rt app`: the local web app (realtime/app/)."""

from __future__ import annotations

import click

from realtime.cli.common import fail


@click.command("app")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=int, default=7860, show_default=True)
@click.option(
    "--weights",
    default=None,
    metavar="hrnet|resnet|vit|demo|PATH",
    help="MEGA weights (default: the official HRNet when cached, else the demo weights, with a warning).",
)
@click.option("--detector", default="yolo11n.pt", show_default=True, help="YOLO weights, 'demo' or 'full-frame'.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
@click.option("--max-upload-mb", type=int, default=200, show_default=True, help="Largest upload accepted.")
@click.option("--max-frames", type=int, default=900, show_default=True, help="Frames of an upload that run.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Where the app's temporary folder goes (default: the system's).",
)
def app(host, port, weights, detector, device, max_upload_mb, max_frames, workdir):
    """A local web app: upload a video or open the webcam; overlay, tracks, 3D view, downloads."""
    import os

    from realtime.app.config import AppConfig, AppLimits

    if not 1 <= port <= 65535:
        fail(f"--port {port}: expected 1 to 65535")
    if max_upload_mb < 1 or max_frames < 1:
        fail("--max-upload-mb and --max-frames must be at least 1")
    if weights is None:
        from realtime.official import installed

        weights = "hrnet" if installed("hrnet") else "demo"
    elif weights not in ("hrnet", "resnet", "vit", "demo") and not os.path.isfile(weights):
        fail(f"--weights {weights}: not hrnet, resnet, vit, demo nor a file")
    config = AppConfig(host, port, weights, detector, device, workdir, AppLimits(max_upload_mb, max_frames))
    from realtime.app.ui import launch

    try:
        launch(config)
    except OSError as e:  # the port is taken, or the address does not exist here
        fail(f"--host {host} --port {port}: cannot listen ({e}); choose another --port", 1)
