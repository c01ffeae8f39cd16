"""One frame of a video as a small PNG, for the README pictures (`make readme-images`).

    python docs/frame_png.py VIDEO.mp4 OUT.png [--frame N] [--width W]

The frame is downscaled to W pixels wide (area filter) and written with the highest PNG compression;
exit code 2 with one line when the video cannot be read or has fewer frames.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def frame_png(video: Path, out: Path, frame: int, width: int) -> int:
    """Write frame `frame` of `video` to `out`, `width` pixels wide; returns the PNG's size in bytes."""
    import cv2

    from train.io import write_bytes_atomic

    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            raise ValueError(f"{video}: cannot be opened as a video (run `make readme-images` to make it)")
        image = None
        for _ in range(frame + 1):  # read forward: seeking is not frame-exact in every container
            ok, image = cap.read()
            if not ok:
                raise ValueError(f"{video}: has fewer than {frame + 1} frames; pick a smaller --frame")
    finally:
        cap.release()
    h, w = image.shape[:2]
    if width < w:
        image = cv2.resize(image, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError(f"{out}: OpenCV cannot encode a PNG")
    write_bytes_atomic(out, data.tobytes())
    return len(data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--frame", type=int, default=0, help="0-based frame index (default 0)")
    p.add_argument("--width", type=int, default=800, help="output width in pixels (default 800)")
    a = p.parse_args(argv)
    if a.frame < 0 or a.width < 16:
        print("frame_png: --frame must be >= 0 and --width >= 16", file=sys.stderr)
        return 2
    if not a.out.parent.is_dir():
        print(f"{a.out}: folder {a.out.parent} does not exist", file=sys.stderr)
        return 2
    try:
        size = frame_png(a.video, a.out, a.frame, a.width)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"wrote {a.out} ({size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
