"""The Renderer stage: every person of a frame in one draw over the frame, composited on the GL side
(`MeshRenderer.overlay`), boxes and ids, and in the stochastic mode the mean mesh coloured by its
per-vertex sample spread with a legend."""

from __future__ import annotations

import numpy as np

from realtime.types import FrameResult
from train.render import DEFAULT_COLORS, Camera, MeshRenderer, RendererConfig

STD_MAX_M = 0.10  # the top of the colour scale: 10 cm of spread between samples


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
        import cv2

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
            for box, tid in zip(r.boxes_xyxy.astype(int), r.track_ids):
                cv2.rectangle(image, tuple(box[:2]), tuple(box[2:]), (0, 200, 255), 1)
                if tid >= 0:
                    cv2.putText(
                        image,
                        str(int(tid)),
                        (int(box[0]) + 2, int(box[1]) + 14),
                        cv2.FONT_HERSHEY_SIMPLEX,
                        0.5,
                        (0, 200, 255),
                        1,
                        cv2.LINE_AA,
                    )
        if r.vertex_std is not None:
            draw_legend(image, self.std_max)
        return image

    def close(self):
        self.renderer.close()
