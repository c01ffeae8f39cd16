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
    _defaults()


def _defaults():
    """What `mega-rt video IN.mp4` runs without options: weights and their source, detector, device,
    precision, backend; nothing is downloaded here."""
    from realtime import official
    from realtime.infer import WeightsMissing
    from realtime.weights import DEFAULT_DETECTOR, resolve_detector, resolve_weights

    click.echo("a run without options uses:")
    folder = official.weights_dir()
    for r in official.wanted(official.BACKBONES, vqmae=True):
        click.echo(f"  {r}: {official.check_installed(folder, r, full=False)} ({folder / r})")
    online = not official.offline()
    try:
        w = resolve_weights(download=False)
        line = f"{w.description} [{w.source}]"
        if w.source == "demo" and online:
            line += f"; a run fetches the official weights first (Zenodo {official.RECORD_ID}, --no-download to skip)"
        click.echo(f"  weights: {line}")
        if w.warning:
            click.echo(f"    warning: {w.warning}")
    except WeightsMissing as e:
        click.echo(f"  weights: none ({e})")
    try:
        d = resolve_detector(DEFAULT_DETECTOR, download=False)
        click.echo(f"  detector: {d.spec} [{d.source}]")
    except WeightsMissing:
        how = "fetched by ultralytics into the cache on the first run" if online else "offline: not available"
        click.echo(
            f"  detector: {DEFAULT_DETECTOR} ({how}); bundled for synthetic clips: --detector demo --det-imgsz 320"
        )
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    click.echo(f"  device: {'cuda' if cuda else 'cpu'}, precision {'fp16' if cuda else 'fp32'}, backend torch")
    click.echo(f"  offline: {'yes (MEGA_RT_OFFLINE)' if not online else 'no'}")


@click.command()
@click.option(
    "--dest", type=click.Path(file_okay=False), default=None, help="Folder for the assets (default: the user cache)."
)
@click.option(
    "--base-url",
    default=None,
    help="Where the assets come from instead of their upstream hosts: a mirror URL, file://DIR or a plain DIR (files at BASE/<name>).",
)
@click.option(
    "--weights",
    "weights_kind",
    type=click.Choice(["official"]),
    default=None,
    help="Also get the official MEGA checkpoints (Zenodo 14974141) into the cache.",
)
@click.option(
    "--backbone",
    default="hrnet",
    show_default=True,
    help="Comma-separated official MEGA backbones: hrnet, resnet, vit.",
)
@click.option("--vqmae", is_flag=True, help="Also the pre-trained VQMAE (VQMAE/mega_pretrained).")
@click.option(
    "--from",
    "from_path",
    type=click.Path(exists=True),
    default=None,
    help="Install the official checkpoints from a folder or archive in the official layout (offline).",
)
@click.option(
    "--api-url",
    default=None,
    help=f"Zenodo REST API base (default: ${'{'}MEGA_RT_ZENODO_API{'}'} or https://zenodo.org/api).",
)
def fetch(dest, base_url, weights_kind, backbone, vqmae, from_path, api_url):
    """Download the public assets (Mesh-VQ-VAE connection matrices, template, part segmentation), verifying
    sha256; with --weights official, also the official MEGA checkpoints, verified and loaded strictly."""
    from pathlib import Path

    from realtime import official
    from train import assets

    backbones = tuple(b.strip() for b in backbone.split(",") if b.strip())
    bad = [b for b in backbones if b not in official.BACKBONES]
    if bad or not backbones:
        fail(f"--backbone {backbone}: expected a comma-separated list of {', '.join(official.BACKBONES)}")
    if (from_path or vqmae) and weights_kind != "official":
        fail("--from and --vqmae go with --weights official")
    bars = []

    def progress_factory(name):
        from tqdm import tqdm

        bar = tqdm(desc=name, unit="B", unit_scale=True, unit_divisor=1024, leave=False)
        bars.append(bar)

        def update(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        return update

    local_base = base_url is not None and (base_url.startswith("file://") or "://" not in base_url)
    # with --weights official, assets already found (MEGA_RT_ASSETS or the cache) are not fetched again
    names = assets.PRODUCT_ASSETS
    if weights_kind == "official" and dest is None:
        names = tuple(n for n, st in assets.asset_status().items() if not st.startswith("ok"))
    if official.offline() and ((names and not local_base) or (weights_kind == "official" and not from_path)):
        fail(
            f"MEGA_RT_OFFLINE is set: nothing is downloaded. Copy the files of Zenodo record {official.RECORD_ID} "
            f"({official.RECORD_URL}) here and run `mega-rt fetch --weights official --from DIR`; assets: --base-url DIR"
        )
    try:
        paths = assets.fetch(
            names, dest_root=Path(dest) if dest else None, base_url=base_url, progress_factory=progress_factory
        )
        if paths or weights_kind != "official":
            click.echo(f"{len(paths)} assets verified in {paths[0].parents[1] if paths else dest}")
        if weights_kind == "official":
            if from_path:
                got = official.install_from(Path(from_path), backbones, vqmae, echo=click.echo)
            else:
                click.echo(
                    f"fetching {', '.join(official.wanted(backbones, vqmae))} from Zenodo record {official.RECORD_ID} "
                    f"({official.api_url(api_url)})"
                )
                got = official.fetch_official(
                    backbones, vqmae, api=api_url, progress_factory=progress_factory, echo=click.echo
                )
            click.echo(f"official weights ready in {official.weights_dir()} (lock: {official.LOCK_FILE}):")
            for r, p in got.items():
                click.echo(f"  {r}  {p}")
    except (assets.AssetError, official.OfficialError) as e:
        fail(str(e), 1)
    finally:
        for b in bars:
            b.close()
