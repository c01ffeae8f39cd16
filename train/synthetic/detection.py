"""Person-detection training images from synthetic scenes, in the YOLO layout ultralytics trains on.

    mega-rt synth --detection-dataset DIR --samples 1500 --size 640x360

Every image is its own scene (`plan_scene`: a camera, a background, 1..max_people people walking or
standing), so backgrounds, distances and crowding vary image to image. Layout:

    DIR/images/{train,val}/NNNNNN.jpg   RGB scenes (JPEG, as a camera delivers)
    DIR/labels/{train,val}/NNNNNN.txt   one line per person: `0 cx cy w h`, normalised to the image
    DIR/index.json                      format, sizes, seed, counts

A person is labelled with the box of their projected mesh (clipped to the image) when at least
`min_visibility` of them is seen and the box is at least `min_box_px` on its shorter side; less
visible people are left unlabelled, as annotators of real images skip them. The validation images come
from other seeds than the training ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.io import atomic_write, write_json_atomic, write_text_atomic

FORMAT = "mega-rt-synth-detection/1"


@dataclass(frozen=True)
class DetectionDatasetConfig:
    samples: int = 1500  # training images
    val_samples: int = 150
    image_wh: tuple[int, int] = (640, 360)
    max_people: int = 5
    seed: int = 0
    min_visibility: float = 0.1
    min_box_px: float = 6.0
    msaa: int = 4

    @classmethod
    def with_validation(cls, samples: int, **kw) -> "DetectionDatasetConfig":
        """`samples` training images plus a tenth as many validation images (at least one)."""
        return cls(samples=samples, val_samples=max(1, samples // 10), **kw)

    def __post_init__(self):
        if self.samples < 1 or self.val_samples < 1:
            raise ValueError("a detection dataset needs at least one training and one validation image")
        if self.max_people < 1:
            raise ValueError("max_people must be at least 1")


def yolo_label_lines(
    boxes_xyxy: np.ndarray, visibility: np.ndarray, image_wh: tuple[int, int], min_visibility: float, min_box_px: float
) -> list[str]:
    """Boxes (K,4) in pixels -> YOLO lines `0 cx cy w h` (normalised) of the people worth detecting."""
    w, h = image_wh
    lines = []
    for (x0, y0, x1, y1), vis in zip(boxes_xyxy.astype(np.float64), visibility):
        if vis < min_visibility or min(x1 - x0, y1 - y0) < min_box_px:
            continue
        lines.append(f"0 {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
    return lines


def _scene_seed(seed: int, split: str, i: int) -> int:
    # disjoint streams for train and val, and for different dataset seeds
    return int(np.random.SeedSequence([seed, 0 if split == "train" else 1, i]).generate_state(1)[0])


def write_detection_dataset(out_dir: str | os.PathLike, cfg: DetectionDatasetConfig, body=None, progress=None) -> dict:
    """Render the images and labels; returns the index written to `out_dir/index.json`."""
    import cv2

    from train.render import MeshRenderer, RendererConfig
    from train.synthetic.body import SyntheticBody
    from train.synthetic.scene import SceneConfig, plan_scene, pose_frames, render_scene

    out_dir = Path(out_dir)
    body = body or SyntheticBody()
    w, h = cfg.image_wh
    counts, done = {"train": 0, "val": 0, "people": 0}, 0
    with MeshRenderer(body.faces, RendererConfig(samples=cfg.msaa)) as renderer:
        for split, n in (("train", cfg.samples), ("val", cfg.val_samples)):
            (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
            (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed = _scene_seed(cfg.seed, split, i)
                people = 1 + int(np.random.default_rng(seed).integers(cfg.max_people))
                plan = plan_scene(
                    SceneConfig(width=w, height=h, frames=1, people=people, seed=seed, msaa=cfg.msaa), body
                )
                truth = pose_frames(plan, body)
                image, visibility = next(render_scene(plan, truth, renderer))
                lines = yolo_label_lines(truth.boxes_xyxy[0], visibility, (w, h), cfg.min_visibility, cfg.min_box_px)
                stem = f"{i:06d}"
                with atomic_write(out_dir / "images" / split / f"{stem}.jpg") as tmp:
                    if not cv2.imwrite(
                        str(tmp), np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 92]
                    ):
                        raise OSError(f"{tmp}: cannot write the image")
                write_text_atomic(out_dir / "labels" / split / f"{stem}.txt", "".join(line + "\n" for line in lines))
                counts[split] += 1
                counts["people"] += len(lines)
                done += 1
                if progress:
                    progress(done)
    index = {"format": FORMAT, "image_wh": [w, h], "seed": cfg.seed, "max_people": cfg.max_people,
             "images": {"train": counts["train"], "val": counts["val"]}, "labelled_people": counts["people"],
             "classes": ["person"]}  # fmt: skip
    write_json_atomic(out_dir / "index.json", index)
    return index
