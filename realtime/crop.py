"""Boxes -> square crop boxes at the backbone's aspect -> one batched warp + normalisation on the device.

The warp is the affine map of `train.data.augment.crop_matrix` (what the model was trained on): crop
pixel (u', v') samples the frame at c + (u' - w/2, v' - h/2) * b / h, pixel centres at integers, black
outside the frame. All crops of all frames of a batch come from one `grid_sample` launch: the frames
are stacked (F,3,H,W) and each frame's crops are laid out side by side in its grid row. Shrinking a
person of 400 px to a 128 px crop with bilinear sampling aliases; training pre-shrank with an area
filter, so here the grid is supersampled `ss` times and average-pooled back (one more launch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from realtime.types import Crops, Detections

BOX_SCALE = 1.2  # crop side / person extent: the middle of the training range (1.1, 1.35)


def square_boxes(boxes_xyxy: torch.Tensor, input_hw: tuple[int, int], scale: float = BOX_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,4) -> centre (K,2) and size (K,): the box's height side of an input_hw-shaped box covering it."""
    h, w = input_hw
    x0, y0, x1, y1 = boxes_xyxy.unbind(-1)
    center = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2], -1)
    size = torch.maximum(y1 - y0, (x1 - x0) * (h / w)) * scale
    return center, size.clamp(min=4.0)


class Cropper:
    def __init__(self, input_hw: tuple[int, int], mean, std, device="cpu", box_scale: float = BOX_SCALE, max_supersample: int = 4):
        self.input_hw = tuple(input_hw)
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.box_scale = box_scale
        self.max_supersample = max_supersample

    def frames_to_tensor(self, images_bgr) -> torch.Tensor:
        """list of (H,W,3) uint8 BGR -> (F,3,H,W) float32 BGR in [0, 255] on the device.

        The permuted view is channels_last, so the float copy is one contiguous pass; BGR -> RGB happens
        on the small crops instead of the frames."""
        import numpy as np

        stacked = torch.from_numpy(np.stack(images_bgr)).to(self.device, non_blocking=True)
        return stacked.permute(0, 3, 1, 2).float()

    def __call__(self, frames: torch.Tensor, detections: list[Detections]) -> Crops:
        f, _, H, W = frames.shape
        h, w = self.input_hw
        counts = [d.count for d in detections]
        k_max = max(counts) if counts else 0
        wh = torch.tensor([W, H], dtype=torch.float32, device=self.device)
        if k_max == 0:
            empty = torch.zeros(0, device=self.device)
            return Crops(torch.zeros(0, 3, h, w, device=self.device), empty.view(0, 2), empty, torch.zeros(0, dtype=torch.int64, device=self.device), wh)
        boxes = torch.cat([d.boxes_xyxy for d in detections]).to(self.device, torch.float32)
        slot = torch.repeat_interleave(torch.arange(f), torch.tensor(counts)).to(self.device)
        center, size = square_boxes(boxes, self.input_hw, self.box_scale)
        ss = int(min(self.max_supersample, max(1, math.ceil(float(size.max()) / h / 1.5))))
        hs, ws = h * ss, w * ss
        # crop pixel centres in units of the output crop (supersampled sub-pixels), then frame pixels
        v = (torch.arange(hs, device=self.device, dtype=torch.float32) + 0.5) / ss - 0.5
        u = (torch.arange(ws, device=self.device, dtype=torch.float32) + 0.5) / ss - 0.5
        k = (size / h)[:, None]  # frame pixels per crop pixel
        src_x = center[:, 0:1] + (u[None] - w / 2.0) * k  # (N,ws)
        src_y = center[:, 1:2] + (v[None] - h / 2.0) * k  # (N,hs)
        # normalised coordinates for align_corners=False: x_n = (2x + 1) / W - 1
        gx = ((2 * src_x + 1) / W - 1)[:, None, :].expand(-1, hs, -1)
        gy = ((2 * src_y + 1) / H - 1)[:, :, None].expand(-1, -1, ws)
        grid_n = torch.stack([gx, gy], -1)  # (N,hs,ws,2)
        # lay each frame's crops side by side: (F, hs, k_max * ws, 2); empty slots sample outside (zeros)
        rank = torch.cat([torch.arange(c) for c in counts]).to(self.device)
        grid = torch.full((f, k_max, hs, ws, 2), -2.0, device=self.device)
        grid[slot, rank] = grid_n
        grid = grid.permute(0, 2, 1, 3, 4).reshape(f, hs, k_max * ws, 2)
        out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out.view(f, 3, hs, k_max, ws).permute(0, 3, 1, 2, 4)[slot, rank]  # (N,3,hs,ws)
        if ss > 1:
            out = F.avg_pool2d(out, ss)
        images = (out.flip(1) / 255.0 - self.mean) / self.std  # BGR -> RGB
        return Crops(images.contiguous(), center, size, slot, wh)
