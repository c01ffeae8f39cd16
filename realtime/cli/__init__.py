"""The `mega-rt` command line: one module per command group, assembled here.

Heavy libraries are imported inside each command, so `--help` is instant. Exit codes: 0 success, 1 runtime
failure with a one-line message, 2 bad usage or bad input file, 130 interrupted (outputs finalised).
"""

from __future__ import annotations

import click

from realtime.cli import app, batch, bench, export, info, outputs, synth, train, video, view


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mega-rt")
def main():
    """mega-rt: real-time human mesh recovery from video with MEGA."""


for command in (
    info.info,
    info.fetch,
    synth.synth,
    video.video,
    video.stream,
    batch.batch,
    bench.bench,
    export.export_cmd,
    export.verify,
    train.train_cmd,
    train.eval_cmd,
    train.score_cmd,
    app.app,
    outputs.fit,
    outputs.export_anim,
    view.view,
):
    main.add_command(command)
