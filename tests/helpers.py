"""Paths every test module may need: the repository root and the shared test data beside it."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MEGA_RT_SHARED", ROOT.parent / "shared"))
ASSETS = Path(os.environ.get("MEGA_RT_ASSETS", SHARED / "assets"))
REFERENCE = Path(os.environ.get("MEGA_RT_REFERENCE", SHARED / "reference"))


def write_scene_clip(out, cfg, body=None, **kw):
    """`mega-rt synth`'s clip as the CLI writes it (H.264 through the pipeline's video writer): (video, npz)."""
    from realtime.video_write import VideoWriter
    from train.synthetic.clip import write_scene_video

    return write_scene_video(
        out, cfg, body, open_video=lambda path, size_wh, fps: VideoWriter(path, size_wh, fps), **kw
    )
