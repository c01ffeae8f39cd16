"""Boxes -> square crop boxes at the backbone's aspect -> one batched warp + normalisation on the device.

The warp is the affine map of `train.data.augment.crop_matrix` (what the model was trained on): crop
pixel (u', v') samples the frame at c + (u' - w/2, v' - h/2) * b / h, pixel centres at integers, black
outside the frame. All crops of all frames of a batch come from one `grid_sample` launch: the frames
are stacked (F,3,H,W) and each frame's crops are laid out side by side in its grid row. Shrinking a
person of 400 px to a 128 px crop with bilinear sampling aliases; training pre-shrank with an area
filter, so here the grid is supersampled `ss` times and average-pooled back (one more launch).
On a CPU the frames are not converted whole: each frame's sampled region is copied into a black float
canvas and the grid is shifted by the region's origin (`Cropper.crop`), the same samples.

Everything that decides shapes (crop boxes, supersampling factor, which frame and rank a person has) is
computed on the host from the host-side boxes and sent to the device in one copy: nothing is read back.
On CUDA the frames go through a ring of pinned host buffers and are copied on a side stream.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from realtime.types import Crops, Detections

BOX_SCALE = 1.2  # crop side / person extent: the middle of the training range (1.1, 1.35)


def square_boxes(boxes_xyxy, input_hw: tuple[int, int], scale: float = BOX_SCALE):
    """(K,4) -> centre (K,2) and size (K,): the box's height side of an input_hw-shaped box covering it.

    numpy arrays (the pipeline: host-side boxes) or tensors alike."""
    xp = torch if isinstance(boxes_xyxy, torch.Tensor) else np
    h, w = input_hw
    x0, y0, x1, y1 = (boxes_xyxy[..., i] for i in range(4))
    center = xp.stack([(x0 + x1) / 2, (y0 + y1) / 2], -1)
    size = xp.maximum(y1 - y0, (x1 - x0) * (h / w)) * scale
    return center, size.clip(min=4.0)


BOX_FAULTS = ("not finite", "inverted or zero-area", "outside the frame")


def box_faults(boxes_xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """(K,4) xyxy boxes of a width x height frame -> (K,) int8: 0 usable, else 1 + an index of BOX_FAULTS.

    A box partly inside the frame is usable (the crop pads black); one wholly outside would become a
    person made of padding, and a non-finite or empty box has no crop at all."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    faults = np.zeros(len(b), np.int8)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(b).all(1)
        empty = ~((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))
        outside = (b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= width) | (b[:, 1] >= height)
    faults[outside] = 3
    faults[empty] = 2
    faults[~finite] = 1
    return faults


class BoxCheck:
    """Drops the boxes `box_faults` finds unusable and counts them by fault, for one line at the end."""

    def __init__(self):
        self.dropped = dict.fromkeys(BOX_FAULTS, 0)

    def __call__(self, boxes_xyxy: np.ndarray, width: int, height: int, *columns: np.ndarray) -> tuple:
        """(boxes, *columns) with the unusable rows removed from each."""
        faults = box_faults(boxes_xyxy, width, height)
        if not faults.any():
            return (boxes_xyxy, *columns)
        for i, name in enumerate(BOX_FAULTS, start=1):
            self.dropped[name] += int((faults == i).sum())
        keep = faults == 0
        return (boxes_xyxy[keep], *(c[keep] for c in columns))

    @property
    def total(self) -> int:
        return sum(self.dropped.values())

    def note(self) -> str | None:
        """ "5 boxes dropped (2 not finite, 3 outside the frame)", or None when none was."""
        if not self.total:
            return None
        parts = ", ".join(f"{n} {name}" for name, n in self.dropped.items() if n)
        return f"{self.total} box{'es' if self.total != 1 else ''} dropped ({parts})"


class Cropper:
    def __init__(
        self, input_hw: tuple[int, int], mean, std, device="cpu", box_scale: float = BOX_SCALE, max_supersample: int = 4
    ):
        self.input_hw = tuple(input_hw)
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.box_scale = box_scale
        self.max_supersample = max_supersample
        self._staging = PinnedFrames(self.device) if self.device.type == "cuda" else None
        self._image_size: dict[tuple[int, int], torch.Tensor] = {}

    def frames_to_tensor(self, images_bgr) -> torch.Tensor:
        """list of (H,W,3) uint8 BGR -> (F,3,H,W) float32 BGR in [0, 255] on the device.

        The permuted view is channels_last, so the float copy is one contiguous pass; BGR -> RGB happens
        on the small crops instead of the frames. On a CPU the stacked frames are used where they are."""
        if self._staging is not None:
            stacked = self._staging(images_bgr)
        else:
            stacked = torch.from_numpy(np.stack(images_bgr))
        return stacked.permute(0, 3, 1, 2).float()

    def image_size_wh(self, width: int, height: int) -> torch.Tensor:
        """(2,) float32 [W, H] on the device, uploaded once per frame size."""
        key = (int(width), int(height))
        if key not in self._image_size:
            self._image_size[key] = torch.tensor(key, dtype=torch.float32, device=self.device)
        return self._image_size[key]

    def crop(self, images_bgr, detections: list[Detections]) -> Crops:
        """Crops of the people of a batch of frames ((H,W,3) uint8 BGR, all of one size).

        On CUDA the whole frames go to the device (`frames_to_tensor`). On a CPU only the part of each
        frame that some crop samples is converted to float: for a few people that is a fraction of the
        frame, and the conversion of whole 720p frames cost as much as the warp itself."""
        if self.device.type != "cpu":
            return self(self.frames_to_tensor(images_bgr), detections)
        height, width = images_bgr[0].shape[:2]
        boxes = [d.boxes_xyxy for d in detections]
        regions = self.sampled_regions(boxes, width, height)
        rows = int(max(1, (regions[:, 3] - regions[:, 1]).max()))
        cols = int(max(1, (regions[:, 2] - regions[:, 0]).max()))
        canvas = torch.empty(len(images_bgr), rows, cols, 3)
        for i, (image, (x0, y0, x1, y1)) in enumerate(zip(images_bgr, regions.tolist())):
            # outside the region the canvas is black, like the outside of the frame (grid_sample's zeros)
            canvas[i, y1 - y0 :].zero_()
            canvas[i, : y1 - y0, x1 - x0 :].zero_()
            canvas[i, : y1 - y0, : x1 - x0].copy_(torch.from_numpy(image[y0:y1, x0:x1]))
        return self(canvas.permute(0, 3, 1, 2), detections, origin_xy=regions[:, :2], frame_wh=(width, height))

    def sampled_regions(self, boxes_per_frame, width: int, height: int) -> np.ndarray:
        """(F,4) int64 x0, y0, x1, y1 per frame: the pixels inside the frame that the bilinear taps of
        that frame's crops read (exclusive ends, one pixel of margin against rounding); empty (0,0,0,0)
        for a frame without people."""
        h, w = self.input_hw
        regions = np.zeros((len(boxes_per_frame), 4), np.int64)
        for i, boxes in enumerate(boxes_per_frame):
            if len(boxes) == 0:
                continue
            center, size = square_boxes(np.asarray(boxes, np.float64), self.input_hw, self.box_scale)
            # the outermost sub-pixel centres lie within half a crop pixel (size / h frame pixels) of
            # the crop box's edges; one crop pixel of reach covers them at any supersampling
            half_w, half_h = (w / 2 + 1) * size / h, (h / 2 + 1) * size / h
            x0 = np.floor((center[:, 0] - half_w).min()) - 1
            y0 = np.floor((center[:, 1] - half_h).min()) - 1
            x1 = np.floor((center[:, 0] + half_w).max()) + 3
            y1 = np.floor((center[:, 1] + half_h).max()) + 3
            x0, x1 = np.clip([x0, x1], 0, width)
            y0, y1 = np.clip([y0, y1], 0, height)
            if x1 > x0 and y1 > y0:
                regions[i] = (x0, y0, x1, y1)
        return regions

    def __call__(
        self, frames: torch.Tensor, detections: list[Detections], origin_xy: np.ndarray | None = None, frame_wh=None
    ) -> Crops:
        """Crops from (F,3,H,W) float frames on the device. With `origin_xy` (F,2), `frames` holds for
        each frame only a region of it, whose pixel (0, 0) is frame pixel origin_xy, and black elsewhere;
        `frame_wh` is then the frames' true size."""
        f, _, H, W = frames.shape
        h, w = self.input_hw
        counts = [d.count for d in detections]
        k_max = max(counts, default=0)
        wh = self.image_size_wh(*(frame_wh or (W, H)))
        if k_max == 0:
            empty = torch.zeros(0, device=self.device)
            return Crops(
                torch.zeros(0, 3, h, w, device=self.device),
                empty.view(0, 2),
                empty,
                torch.zeros(0, dtype=torch.int64, device=self.device),
                wh,
            )
        boxes = np.concatenate([d.boxes_xyxy for d in detections]).astype(np.float32, copy=False)
        center_h, size_h = square_boxes(boxes, self.input_hw, self.box_scale)
        ss = int(min(self.max_supersample, max(1, math.ceil(float(size_h.max()) / h / 1.5))))
        slot_h = np.repeat(np.arange(f), counts)
        rank_h = np.concatenate([np.arange(c) for c in counts])
        origin_h = np.zeros((len(boxes), 2), np.float32) if origin_xy is None else np.asarray(origin_xy)[slot_h]
        # the per-person bookkeeping in one host -> device copy (slot and rank are exact in float32); from
        # pinned memory on CUDA, as a copy from pageable memory may wait for the work queued before it
        book = torch.from_numpy(
            np.concatenate([center_h, size_h[:, None], slot_h[:, None], rank_h[:, None], origin_h], 1).astype(
                np.float32
            )
        )
        if self.device.type == "cuda":
            book = book.pin_memory()
        book = book.to(self.device, non_blocking=True)
        center, size = book[:, :2], book[:, 2]
        slot, rank = book[:, 3].long(), book[:, 4].long()
        hs, ws = h * ss, w * ss
        # crop pixel centres in units of the output crop (supersampled sub-pixels), then frame pixels
        v = (torch.arange(hs, device=self.device, dtype=torch.float32) + 0.5) / ss - 0.5
        u = (torch.arange(ws, device=self.device, dtype=torch.float32) + 0.5) / ss - 0.5
        k = (size / h)[:, None]  # frame pixels per crop pixel
        src_x = center[:, 0:1] - book[:, 5:6] + (u[None] - w / 2.0) * k  # (N,ws), in `frames` pixels
        src_y = center[:, 1:2] - book[:, 6:7] + (v[None] - h / 2.0) * k  # (N,hs)
        # normalised coordinates for align_corners=False: x_n = (2x + 1) / W - 1
        gx = ((2 * src_x + 1) / W - 1)[:, None, :].expand(-1, hs, -1)
        gy = ((2 * src_y + 1) / H - 1)[:, :, None].expand(-1, -1, ws)
        grid_n = torch.stack([gx, gy], -1)  # (N,hs,ws,2)
        # lay each frame's crops side by side: (F, hs, k_max * ws, 2); empty slots sample outside (zeros)
        grid = torch.full((f, k_max, hs, ws, 2), -2.0, device=self.device)
        grid[slot, rank] = grid_n
        grid = grid.permute(0, 2, 1, 3, 4).reshape(f, hs, k_max * ws, 2)
        out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if ss > 1:
            # the pooling windows tile each crop exactly, so pooling the row of crops before picking the
            # people out equals pooling each crop, and the pick moves ss*ss times less data
            out = F.avg_pool2d(out, ss)
        out = out.view(f, 3, h, k_max, w).permute(0, 3, 1, 2, 4)[slot, rank]  # (N,3,h,w)
        images = (out.flip(1) / 255.0 - self.mean) / self.std  # BGR -> RGB
        return Crops(images.contiguous(), center, size, slot, wh)


class PinnedFrames:
    """Frames -> (F,H,W,3) uint8 on a CUDA device through a ring of pinned host buffers.

    Decoded frames are pageable memory; a copy from there is synchronous, however `non_blocking` is
    set. Each batch is written into the next pinned buffer and copied on a side stream that the
    compute stream waits for (an event, not the host), so the copy overlaps with work already queued.
    A buffer is refilled only once its previous copy finished (`slots` batches later)."""

    def __init__(self, device, slots: int = 2):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device)
        self._slots: list[list] = [[None, None, None] for _ in range(slots)]  # pinned bytes, numpy view, copy event
        self._next = 0

    def __call__(self, images_bgr) -> torch.Tensor:
        shape = (len(images_bgr), *images_bgr[0].shape)
        n = math.prod(shape)
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if slot[0] is None or slot[0].numel() < n:
            pinned = torch.empty(n, dtype=torch.uint8, pin_memory=True)
            slot[0], slot[1], slot[2] = pinned, pinned.numpy(), None
        elif slot[2] is not None:
            slot[2].synchronize()  # the copy of `slots` batches ago still reads this buffer
        host = slot[1][:n].reshape(shape)
        for i, image in enumerate(images_bgr):
            host[i] = image
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            # allocated on the side stream, so the allocator orders its reuse after this copy
            frames = torch.empty(shape, dtype=torch.uint8, device=self.device)
            frames.copy_(slot[0][:n].view(shape), non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        slot[2] = done
        compute.wait_event(done)
        frames.record_stream(compute)
        return frames
