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
def fetch(dest, base_url):
    """Download the public assets (Mesh-VQ-VAE connection matrices, template, part segmentation), verifying sha256."""
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


@main.command("bench")
@click.option("--config", "config_name", default="mega_hrnet", show_default=True, help="Shipped config: mega_hrnet, mega_resnet or mega_vit.")
@click.option("--batch", "batch_text", default="1,8", show_default=True, help="Comma-separated batch sizes.")
@click.option("--samples", default=8, show_default=True, help="Q hypotheses per crop (stochastic).")
@click.option("--steps", default=5, show_default=True, help="T decoding steps (stochastic).")
@click.option("--repeats", default=5, show_default=True, help="Timed repeats per figure (median reported).")
@click.option("--threads", default=None, type=int, help="torch CPU threads (default: torch's choice).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--no-stochastic", is_flag=True, help="Skip the stochastic figure.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON.")
def bench(config_name, batch_text, samples, steps, repeats, threads, device, no_stochastic, json_path):
    """Benchmark the PyTorch model (random weights): deterministic crops/s, mesh decode ms, stochastic ms/crop."""
    import json
    import platform

    import torch

    from engines.bench import bench_model, results_json
    from train.assets import AssetError
    from train.config import ConfigError

    batches = _parse_batches(batch_text)
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        _fail("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    click.echo(f"torch {torch.__version__}  device {device}  threads {torch.get_num_threads()}  config {config_name}")
    try:
        results = bench_model(config_name, batches, samples, steps, repeats, device=device, stochastic=not no_stochastic, progress=click.echo)
    except (AssetError, ConfigError) as e:
        _fail(str(e))
    if json_path:
        meta = dict(config=config_name, device=device, threads=torch.get_num_threads(), torch=torch.__version__, cpu=platform.processor())
        from pathlib import Path

        Path(json_path).write_text(json.dumps(results_json(results, **meta), indent=1))
        click.echo(f"wrote {json_path}")


if __name__ == "__main__":
    sys.exit(main())
