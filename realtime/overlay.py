"""The Renderer stage: every person of a frame in one draw over the frame, composited on the GL side
(`MeshRenderer.overlay`), boxes and ids, and in the stochastic mode the mean mesh coloured by its
per-vertex sample spread with a legend. When the result carries `hud` (HudStats), the end-to-end fps
and latency in the top-left corner.

Text is sized from the frame (TEXT_HEIGHT of its height) and drawn over a dark outline, so ids and the
HUD read at any resolution and on any background."""

from __future__ import annotations

import numpy as np

from realtime.types import FrameResult, HudStats
from train.render import DEFAULT_COLORS, Camera, MeshRenderer, RendererConfig

STD_MAX_M = 0.10  # the top of the colour scale: 10 cm of spread between samples
TEXT_HEIGHT = 0.025  # of the frame height: ids and HUD figures
MIN_TEXT_PX = 10  # below this Hershey digits stop being legible
DIGIT_SHARE = 21 / 27  # Hershey simplex: digits and capitals take 21 of the font's 27 units of height
BOX_BGR = (0, 200, 255)
HUD_BGR = (255, 255, 255)
OUTLINE_BGR = (0, 0, 0)


def text_style(frame_height: int) -> tuple[float, int, int]:
    """(font scale, stroke thickness, digit height in px) of the overlay's text on a frame this high."""
    import cv2

    px = max(MIN_TEXT_PX, round(TEXT_HEIGHT * frame_height))
    thickness = max(1, round(px / 10))
    scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, round(px / DIGIT_SHARE), thickness)
    return scale, thickness, px


def text_rect(text: str, origin: tuple[int, int], frame_height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) that `put_text(image, text, origin)` may change, outline included."""
    import cv2

    scale, thickness, _ = text_style(frame_height)
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = outline_px(thickness) + thickness + 1  # the outline's offset, half strokes and the anti-aliased edge
    x, y = origin
    return x - pad, y - h - pad, x + w + pad, y + baseline + pad


def outline_px(thickness: int) -> int:
    return max(1, (thickness + 1) // 2)


def put_text(image: np.ndarray, text: str, origin: tuple[int, int], color=HUD_BGR) -> None:
    """`text` with its baseline starting at `origin`, in `color` over a dark outline (in place).

    The outline is the same text shifted in eight directions: a thicker stroke would not do, because
    OpenCV widens the spacing of the letters with the stroke and the two layers would drift apart."""
    import cv2

    scale, thickness, _ = text_style(image.shape[0])
    font = cv2.FONT_HERSHEY_SIMPLEX
    r = outline_px(thickness)
    x, y = origin
    for dx, dy in ((-r, -r), (0, -r), (r, -r), (-r, 0), (r, 0), (-r, r), (0, r), (r, r)):
        cv2.putText(image, text, (x + dx, y + dy), font, scale, OUTLINE_BGR, thickness, cv2.LINE_AA)
    cv2.putText(image, text, origin, font, scale, color, thickness, cv2.LINE_AA)


def hud_text(hud: HudStats) -> str:
    fps = f"{hud.fps:.1f} fps" if hud.fps > 0 else "-- fps"
    latency = f"{hud.latency_ms:.0f} ms" if hud.latency_ms is not None else "-- ms"
    return f"{fps}  {latency} latency"


def hud_origin(frame_height: int) -> tuple[int, int]:
    _, _, px = text_style(frame_height)
    return px // 2 + 2, px + px // 2 + 2


def hud_rect(hud: HudStats, frame_height: int) -> tuple[int, int, int, int]:
    """The part of the frame `draw_hud` may change."""
    return text_rect(hud_text(hud), hud_origin(frame_height), frame_height)


def draw_hud(image: np.ndarray, hud: HudStats) -> None:
    """The end-to-end fps and latency in the top-left corner (in place)."""
    put_text(image, hud_text(hud), hud_origin(image.shape[0]))


def draw_boxes(image: np.ndarray, boxes_xyxy: np.ndarray, track_ids: np.ndarray) -> None:
    """Box outlines and, for tracked people, their id just inside the box's top-left corner (in place)."""
    import cv2

    _, _, px = text_style(image.shape[0])
    line = max(1, px // 12)
    for box, tid in zip(boxes_xyxy.astype(int), track_ids):
        cv2.rectangle(image, tuple(box[:2]), tuple(box[2:]), BOX_BGR, line)
        if tid >= 0:
            put_text(image, str(int(tid)), (int(box[0]) + px // 3, int(box[1]) + px + px // 3), BOX_BGR)


def std_colormap() -> np.ndarray:
    """(256,3) BGR floats in [0,1]: OpenCV's TURBO map (blue sure, red unsure)."""
    import cv2

    return (
        cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0].astype(np.float32) / 255.0
    )


def std_colors(vertex_std: np.ndarray, std_max: float = STD_MAX_M) -> np.ndarray:
    """(K,V) metres -> (K,V,3) BGR floats in [0,1]: the colours the overlay looks up on the GL side."""
    levels = np.clip(vertex_std / std_max * 255.0, 0, 255).astype(np.uint8)
    return std_colormap()[levels]


def draw_legend(image: np.ndarray, std_max: float = STD_MAX_M) -> None:
    """A vertical colour bar with its scale in the top-right corner (in place)."""
    import cv2

    h = max(60, image.shape[0] // 4)
    w, x0, y0 = 14, image.shape[1] - 80, 12
    ramp = np.linspace(255, 0, h).astype(np.uint8)[:, None]
    bar = cv2.applyColorMap(np.repeat(ramp, w, 1), cv2.COLORMAP_TURBO)
    image[y0 : y0 + h, x0 : x0 + w] = bar
    font = cv2.FONT_HERSHEY_SIMPLEX
    for text, y in ((f"{std_max * 100:.0f} cm", y0 + 10), ("0 cm", y0 + h)):
        cv2.putText(image, text, (x0 + w + 4, y), font, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, text, (x0 + w + 4, y), font, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(image, "std", (x0 - 6, y0 + h + 16), font, 0.4, (255, 255, 255), 1, cv2.LINE_AA)


class OverlayRenderer:
    """Create it in the thread that renders: it owns the GL context."""

    def __init__(self, faces, opacity: float = 0.85, draw_boxes: bool = True, std_max: float = STD_MAX_M):
        self.renderer = MeshRenderer(faces, RendererConfig(samples=0))
        self.opacity, self.draw_boxes, self.std_max = opacity, draw_boxes, std_max
        self._colormap = std_colormap()

    def __call__(self, r: FrameResult) -> np.ndarray:
        frame = r.frame.image_bgr
        h, w = frame.shape[:2]
        cam = Camera.centred(w, h, r.focal)
        if r.vertex_std is not None:
            image = self.renderer.overlay(
                frame,
                r.verts_cam,
                cam,
                opacity=self.opacity,
                vertex_values=r.vertex_std,
                colormap=self._colormap,
                value_max=self.std_max,
            )
        else:  # a stable colour per track (BGR: the frame is BGR)
            colors = DEFAULT_COLORS[np.maximum(r.track_ids, 0) % len(DEFAULT_COLORS)][:, ::-1]
            image = self.renderer.overlay(frame, r.verts_cam, cam, colors, self.opacity)
        if self.draw_boxes:
            draw_boxes(image, r.boxes_xyxy, r.track_ids)
        if r.vertex_std is not None:
            draw_legend(image, self.std_max)
        if r.hud is not None:
            draw_hud(image, r.hud)
        return image

    def close(self):
        self.renderer.close()
