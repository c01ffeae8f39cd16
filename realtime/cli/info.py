"""mega-rt info and mega-rt fetch: what is installed, and the public assets."""

from __future__ import annotations

import click

from realtime.cli.common import fail


@click.command()
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
        except ImportError:
            click.echo(f"{mod}: not installed")
        except Exception as e:  # installed but broken (a missing shared library, a version clash): say why
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            click.echo(
                f"{mod}: installed but does not import ({e.__class__.__name__}{': ' + reason if reason else ''})"
            )
    click.echo(f"asset folders searched: {', '.join(str(d) for d in assets.search_dirs())}")
    status = assets.asset_status()
    ok = sum(v.startswith("ok") for v in status.values())
    click.echo(f"assets: {ok}/{len(status)} present and verified")
    for name, st in status.items():
        if not st.startswith("ok"):
            click.echo(f"  {name}: {st}")
    if ok < len(status):
        click.echo("  -> run `mega-rt fetch` (internet) or set MEGA_RT_ASSETS to a folder that holds them")


@click.command()
@click.option(
    "--dest", type=click.Path(file_okay=False), default=None, help="Folder to download into (default: the user cache)."
)
@click.option(
    "--base-url", default=None, help="Mirror to fetch from instead of the upstream hosts (files at BASE/<name>)."
)
@click.option(
    "--weights",
    "weights_kind",
    type=click.Choice(["official"]),
    default=None,
    help="Print how to get the official MEGA weights (Zenodo 14974141) and where to put them.",
)
def fetch(dest, base_url, weights_kind):
    """Download the public assets (Mesh-VQ-VAE connection matrices, template, part segmentation), verifying sha256."""
    if weights_kind == "official":
        from realtime.cli.video import official_weights_help

        click.echo(official_weights_help())
        return
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
        paths = assets.fetch(
            dest_root=Path(dest) if dest else None, base_url=base_url, progress_factory=progress_factory
        )
    except assets.AssetError as e:
        fail(str(e), 1)
    finally:
        for b in bars:
            b.close()
    click.echo(f"{len(paths)} assets verified in {paths[0].parents[1] if paths else dest}")
