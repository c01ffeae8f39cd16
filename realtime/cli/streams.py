"""`mega-rt stream SRC SRC ...`: the CLI side of realtime/multistream.py (several streams, one model)."""

from __future__ import annotations

from pathlib import Path

import click

from realtime.cli.common import fail, refuse_overwriting_inputs

EXIT_INTERRUPTED = 130


def open_streams(specs: list[str], kw: dict, out_dir, summary_path, no_render: bool, tick_frames, retries: int, retry_delay: float, inputs: dict) -> list:  # fmt: skip
    """Check the options and outputs of several streams (one line, exit 2, for any that cannot go) and
    open every source; `inputs`: the files the run reads, by option (an output must not replace one)."""
    from realtime.multistream import open_source, output_paths, stream_names
    from realtime.sinks import SinkError, check_writable
    from realtime.sources import SourceError

    if kw["boxes"]:
        fail("--boxes holds the boxes of one video: it cannot go with several streams (use a detector)")
    if tick_frames is not None and tick_frames < 1:
        fail(f"--tick-frames {tick_frames}: must be at least 1")
    if retries < 0 or retry_delay < 0:
        fail("--retries and --retry-delay must be >= 0")
    if out_dir is None and summary_path is None:
        fail("several streams write one overlay and one results file each: give --out-dir DIR (and/or --summary FILE)")
    outputs = {}
    if out_dir is not None:
        try:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            fail(f"--out-dir {out_dir}: cannot create ({e.strerror})")
        for name in stream_names(specs):
            for kind, p in output_paths(out_dir, name, not no_render, True).items():
                if p:
                    outputs[f"--out-dir {kind} of {name}"] = p
    if summary_path:
        outputs["--summary"] = summary_path
    refuse_overwriting_inputs(outputs, inputs)
    try:
        for p in outputs.values():
            check_writable(Path(p))
    except SinkError as e:
        fail(str(e))
    sources = []
    try:
        for s in specs:
            sources.append(open_source(s, kw["max_frames"]))
    except SourceError as e:
        for src in sources:
            src.stop()
        fail(str(e))
    return sources


def run_many(specs: list[str], sources: list, stages: tuple, kw: dict, out_dir, summary_path, no_render: bool, no_progress: bool, tick_frames, retries: int, retry_delay: float):  # fmt: skip
    """Run all streams on `stages` = (detector built untracked, regressor, faces, description); exits
    like `mega-rt stream` (0, 1 when a stream failed, 2 bad input, 130 interrupted)."""
    from realtime.multistream import StreamOptions, run_streams
    from realtime.multistream import write_summary as write_json
    from realtime.sinks import SinkError
    from realtime.sources import SourceError

    detector, regressor, faces, what = stages
    opts = StreamOptions(
        sources=tuple(specs), out_dir=out_dir, overlay=not no_render and out_dir is not None, results=out_dir is not None,
        max_people=kw["max_people"], max_frames=kw["max_frames"], max_batch=tick_frames, track=not kw["no_track"],
        smooth=kw["smooth"], retries=retries, retry_delay_s=retry_delay, meta={"weights": what, **kw["run_meta"]},
    )  # fmt: skip
    click.echo(f"{len(specs)} streams -> {out_dir or 'no files'}  ({what}, backend {kw['backend']}, detector {getattr(detector, 'name', '?')})")  # fmt: skip
    from tqdm import tqdm

    from train.render import RendererUnavailable

    bar = tqdm(desc="streams", unit="frame", disable=True if no_progress else None, leave=False)
    try:
        summary = run_streams(opts, sources, detector, regressor, faces, progress=lambda n: bar.update(n - bar.n))
    except (SinkError, SourceError) as e:
        fail(str(e))
    except RendererUnavailable as e:
        fail(str(e), 1)
    finally:
        bar.close()
    for line in summary.lines():
        click.echo(line)
    if summary_path:
        write_json(summary_path, summary)
        click.echo(f"wrote {summary_path}")
    for s in summary.streams:
        for p in s["outputs"]:
            click.echo(f"wrote {p}")
    if summary.status == "interrupted":
        raise SystemExit(EXIT_INTERRUPTED)
    failed = [s["name"] for s in summary.streams if s["status"] == "failed"]
    if failed:
        fail(f"{len(failed)} of {len(specs)} streams failed ({', '.join(failed)}); the others' outputs are complete", 1)
