"""The frozen dataclasses that travel between pipeline stages (DESIGN.md, "The data path of one frame").

Each stage takes one and returns the next and knows nothing about its neighbours; `pipeline.py` is the
only place that knows the order. Detections live on the host (numpy): the detector's boxes reach the
tracker there, and the crop's index bookkeeping (which frame, which rank, how much supersampling) is
computed from them without reading anything back from the device. Tensors keep their device from the
crop until realtime/collect.py copies a whole batch to the host at once; per-person rows are flattened
across the frames of a batch, frame by frame, and `frame_slot` says which frame of the batch a row
belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source: every source frame has one, undecodable ones too (stand_in)
    image_bgr: np.ndarray  # (H,W,3) uint8 BGR
    captured_s: float  # time.perf_counter() when the source produced it (latency starts here)
    time_s: float | None = None  # the frame's timestamp in the source, seconds from its start (None: unknown)
    stand_in: bool = False  # undecodable in the source: image_bgr is the last good frame (or black)


@dataclass(frozen=True)
class Detections:
    """People of one frame, on the host."""

    frame_index: int
    boxes_xyxy: np.ndarray  # (K,4) float32 pixels
    scores: np.ndarray  # (K,) float32
    track_ids: np.ndarray  # (K,) int64; -1 when no tracker gave one

    @property
    def count(self) -> int:
        return int(self.boxes_xyxy.shape[0])


@dataclass(frozen=True)
class Crops:
    """All people of a batch of frames, warped to the backbone's input and normalised."""

    images: torch.Tensor  # (N,3,h,w) float32, normalised as the backbone declares
    box_center: torch.Tensor  # (N,2) pixels: centre of the crop box
    box_size: torch.Tensor  # (N,) pixels: side of the crop box along the crop's height
    frame_slot: torch.Tensor  # (N,) int64: which frame of the batch
    image_size_wh: torch.Tensor  # (2,) float32


@dataclass(frozen=True)
class MeshPred:
    tokens: torch.Tensor  # (N,S,54) int32 token ids (S = 1 deterministic, Q samples stochastic)
    rotmat: torch.Tensor  # (N,3,3) canonical -> camera
    cam_crop: torch.Tensor  # (N,3) weak-perspective (s, tx, ty) of the crop
    verts_canonical: torch.Tensor  # (N,V,3): the mesh (stochastic: the mean of the Q samples)
    vertex_std: torch.Tensor | None  # (N,V) metres: RMS distance of the Q samples to their mean


@dataclass(frozen=True)
class Meshes:
    verts_cam: torch.Tensor  # (N,V,3) OpenCV camera frame, metres
    cam_t_full: torch.Tensor  # (N,3) full-image camera translation (cam_crop_to_full)
    vertex_std: torch.Tensor | None  # (N,V)
    focal: torch.Tensor  # () pixels, principal point at the image centre; on the device (no read-back)


@dataclass(frozen=True)
class HudStats:
    """What the overlay's heads-up display shows, measured by the pipeline's timer (realtime/timing.py)."""

    fps: float  # frames written per second, end to end, over the last seconds (0: fewer than two yet)
    latency_ms: float | None  # capture to written, mean over the same seconds (None: nothing written yet)


@dataclass(frozen=True)
class FrameResult:
    """Everything the sinks need for one frame (numpy, on the host)."""

    frame: Frame
    boxes_xyxy: np.ndarray  # (K,4)
    scores: np.ndarray  # (K,)
    track_ids: np.ndarray  # (K,)
    tokens: np.ndarray  # (K,S,54) int16
    rotmat: np.ndarray  # (K,3,3)
    cam_crop: np.ndarray  # (K,3)
    cam_t_full: np.ndarray  # (K,3)
    verts_cam: np.ndarray  # (K,V,3) float32
    vertex_std: np.ndarray | None  # (K,V) float32
    focal: float
    overlay: np.ndarray | None = None  # (H,W,3) uint8 BGR, set by the renderer
    hud: HudStats | None = None  # set by the pipeline when the overlay shows fps and latency
