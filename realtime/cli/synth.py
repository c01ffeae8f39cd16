"""mega-rt synth: synthetic clips with ground truth, crop datasets and detection datasets."""

from __future__ import annotations

import click

from realtime.cli.common import fail, parse_size


@click.command()
@click.argument("out", required=False, type=click.Path(dir_okay=False))
@click.option("--people", type=int, default=3, show_default=True, help="People in the scene.")
@click.option("--frames", type=int, default=90, show_default=True, help="Frames to render.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same scene and ground truth.")
@click.option("--size", default="1280x720", show_default=True, help="Frame size WxH.")
@click.option("--fps", type=float, default=30.0, show_default=True)
@click.option(
    "--focal", type=float, default=None, help="Focal length in pixels (default: the pipeline's 1000/224*max(W,H))."
)
@click.option(
    "--dataset",
    "dataset_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write training crops into this folder instead of a video.",
)
@click.option(
    "--detection-dataset",
    "detection_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write person-detection training images (YOLO layout, one scene each, --size, up to --people) into this folder.",
)
@click.option(
    "--samples",
    type=int,
    default=1000,
    show_default=True,
    help="Crops (--dataset) or training images (--detection-dataset; plus a tenth as validation images) to write.",
)
@click.option(
    "--crop",
    type=click.Choice(["224x224", "256x192"]),
    default="224x224",
    show_default=True,
    help="Crop size HxW: the backbone input (256x192 for ViT).",
)
def synth(out, people, frames, seed, size, fps, focal, dataset_dir, detection_dir, samples, crop):
    """Render synthetic people with exact ground truth: OUT.mp4 + OUT.npz, a crop dataset (--dataset DIR),
    or a person-detection dataset (--detection-dataset DIR)."""
    from pathlib import Path

    if sum(x is not None for x in (out, dataset_dir, detection_dir)) != 1:
        fail(
            "give one of OUT.mp4 (a video), --dataset DIR (training crops) or --detection-dataset DIR (detector training images)"
        )
    width, height = parse_size(size, "--size")
    if focal is not None and focal <= 0:
        fail(f"--focal {focal}: must be positive")

    from tqdm import tqdm

    from realtime.video_write import SinkError, VideoWriter, write_failure
    from train import assets
    from train.render import RendererUnavailable

    try:
        if dataset_dir is not None:
            if samples < 1:
                fail(f"--samples {samples}: must be at least 1")
            from train.synthetic.crops import CropDatasetConfig, write_crop_dataset

            crop_hw = (224, 224) if crop == "224x224" else (256, 192)
            cfg = CropDatasetConfig(samples=samples, crop_hw=crop_hw, image_wh=(width, height), seed=seed)
            with tqdm(total=samples, desc="crops", unit="crop", disable=None) as bar:
                shards = write_crop_dataset(dataset_dir, cfg, progress=lambda n: bar.update(n - bar.n))
            click.echo(f"{samples} crops in {len(shards)} shards in {dataset_dir} (index.json)")
            return
        if detection_dir is not None:
            from train.synthetic.detection import DetectionDatasetConfig, write_detection_dataset

            if samples < 1 or people < 1:
                fail(f"--samples {samples} --people {people}: both must be at least 1")
            cfg = DetectionDatasetConfig.with_validation(
                samples,
                image_wh=(width, height),
                max_people=people,
                seed=seed,
            )
            with tqdm(total=cfg.samples + cfg.val_samples, desc="images", unit="img", disable=None) as bar:
                index = write_detection_dataset(detection_dir, cfg, progress=lambda n: bar.update(n - bar.n))
            click.echo(
                f"{index['images']['train']} training + {index['images']['val']} validation images, "
                f"{index['labelled_people']} people, in {detection_dir} (index.json)"
            )
            return
        if people < 1 or frames < 1:
            fail(f"--people {people} --frames {frames}: both must be at least 1")
        out_path = Path(out)
        if out_path.suffix.lower() != ".mp4":
            fail(f"{out}: the video must be an .mp4 file")
        if not out_path.parent.is_dir():
            fail(f"{out_path.parent}: folder not found")
        from train.synthetic.clip import write_scene_video
        from train.synthetic.scene import SceneConfig

        cfg = SceneConfig(width=width, height=height, frames=frames, people=people, seed=seed, fps=fps, focal=focal)
        with tqdm(total=frames, desc="frames", unit="frame", disable=None) as bar:
            video, npz = write_scene_video(
                out_path,
                cfg,
                progress=lambda n: bar.update(n - bar.n),
                open_video=lambda path, size_wh, fps: VideoWriter(path, size_wh, fps, name=out_path),
            )
        click.echo(f"{video} ({frames} frames, {width}x{height}, {people} people) and ground truth {npz}")
    except (RendererUnavailable, assets.AssetError, SinkError) as e:
        fail(str(e), 1)
    except OSError as e:  # an output that cannot be written: name the file the user gave, not its temporary one
        fail(write_failure(out or dataset_dir or detection_dir, e), 1)
