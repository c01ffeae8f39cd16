"""The one device-to-host copy of a batch: every output the sinks need, read back at once.

The batch's device outputs (tokens, rotmat, cam_crop, cam_t_full, verts_cam, vertex_std, focal) are
packed into one contiguous byte buffer on the device (one `cat`), and that buffer is copied to the host
in one transfer: on CUDA into a pinned buffer with `non_blocking` and an event, so the host can queue
the next batch before it waits; on a CPU the packed buffer is read where it is. Which rows belong to
which frame is known on the host already (the rows are frame by frame, and the detections say how many
each frame has), so nothing else is read back: no per-frame `nonzero`, no per-field `.cpu()`.

    collector = Collector(device)
    pending = collector.submit(frames, detections, pred, meshes)   # queues the copy
    results = pending.result()                                      # waits; one FrameResult per frame
"""

from __future__ import annotations

import math

import numpy as np
import torch

from realtime.types import Detections, Frame, FrameResult, Meshes, MeshPred

# dtypes numpy has no equivalent of travel as float32 (the sinks store float32/float16 anyway)
_WIDEN = {torch.bfloat16: torch.float32}


class Pending:
    """A batch whose copy is queued; `result()` waits for it (once) and splits it into frames."""

    def __init__(self, frames, detections, layout, host: np.ndarray, done, owned: bool):
        self.frames, self.detections = list(frames), list(detections)
        self._layout = layout  # name -> (numpy dtype, shape, byte offset)
        self._host = host
        self._done = done  # CUDA event of the copy, None on a CPU
        self._owned = owned  # False: `host` is a reused pinned buffer, copy it out before use
        self._results: list[FrameResult] | None = None

    @property
    def resolved(self) -> bool:
        return self._results is not None

    def result(self) -> list[FrameResult]:
        if self._results is None:
            if self._done is not None:
                self._done.synchronize()
            buf = self._host if self._owned else self._host.copy()
            self._results = _split(self.frames, self.detections, _unpack(buf, self._layout))
            self._host = None
        return self._results


class Collector:
    """Packs a batch's outputs and copies them to the host in one transfer (see the module docstring).

    On CUDA the copies land in a ring of `buffers` pinned host buffers; a buffer is reused only after
    the batch that last used it was resolved (resolving it here if the caller has not)."""

    def __init__(self, device, buffers: int = 2):
        self.device = torch.device(device)
        self._ring: list[list] = [
            [None, None, None] for _ in range(max(1, buffers))
        ]  # pinned bytes, numpy view, Pending
        self._next = 0

    def submit(self, frames: list[Frame], detections: list[Detections], pred: MeshPred, meshes: Meshes) -> Pending:
        outputs = {"tokens": pred.tokens, "rotmat": pred.rotmat, "cam_crop": pred.cam_crop, "cam_t_full": meshes.cam_t_full,
                   "verts_cam": meshes.verts_cam, "focal": meshes.focal.reshape(1)}  # fmt: skip
        if meshes.vertex_std is not None:
            outputs["vertex_std"] = meshes.vertex_std
        packed, layout = _pack(outputs)
        if packed.device.type != "cuda":
            return Pending(frames, detections, layout, packed.numpy(), None, owned=True)
        slot = self._ring[self._next]
        self._next = (self._next + 1) % len(self._ring)
        if slot[2] is not None and not slot[2].resolved:
            slot[2].result()  # its rows are still in this buffer
        n = packed.numel()
        if slot[0] is None or slot[0].numel() < n:
            pinned = torch.empty(max(n, 1 << 20), dtype=torch.uint8, pin_memory=True)
            slot[0], slot[1] = pinned, pinned.numpy()
        slot[0][:n].copy_(packed, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(packed.device))
        slot[2] = Pending(frames, detections, layout, slot[1][:n], done, owned=False)
        return slot[2]


def _pack(outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """One uint8 tensor holding every output's bytes, widest dtype first (so each field starts aligned to
    its own item size), and where each one lies."""
    tensors = {k: (t.to(_WIDEN[t.dtype]) if t.dtype in _WIDEN else t).detach().contiguous() for k, t in outputs.items()}
    device = tensors["verts_cam"].device
    order = sorted(tensors, key=lambda k: -tensors[k].element_size())
    layout, parts, offset = {}, [], 0
    for name in order:
        t = tensors[name]
        layout[name] = (_numpy_dtype(t.dtype), tuple(t.shape), offset)
        parts.append(t.reshape(-1).view(torch.uint8).to(device))
        offset += t.numel() * t.element_size()
    return torch.cat(parts), layout


_NUMPY = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64, torch.int64: np.int64, torch.int32: np.int32,
          torch.int16: np.int16, torch.uint8: np.uint8, torch.bool: np.bool_}  # fmt: skip


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(_NUMPY[dtype])


def _unpack(buf: np.ndarray, layout: dict) -> dict[str, np.ndarray]:
    return {
        name: np.frombuffer(buf, dtype, math.prod(shape), offset).reshape(shape)
        for name, (dtype, shape, offset) in layout.items()
    }


def _split(frames: list[Frame], detections: list[Detections], out: dict[str, np.ndarray]) -> list[FrameResult]:
    """Batch arrays -> one FrameResult per frame; the rows are frame by frame, `count` rows each."""
    f32 = {k: out[k].astype(np.float32, copy=False) for k in ("rotmat", "cam_crop", "cam_t_full", "verts_cam")}
    tokens = out["tokens"].astype(np.int16)
    std = out["vertex_std"].astype(np.float32, copy=False) if "vertex_std" in out else None
    focal = float(out["focal"][0])
    results, start = [], 0
    for frame, det in zip(frames, detections):
        rows = slice(start, start + det.count)
        start += det.count
        results.append(FrameResult(
            frame=frame, boxes_xyxy=det.boxes_xyxy, scores=det.scores, track_ids=det.track_ids, tokens=tokens[rows],
            rotmat=f32["rotmat"][rows], cam_crop=f32["cam_crop"][rows], cam_t_full=f32["cam_t_full"][rows],
            verts_cam=f32["verts_cam"][rows], vertex_std=std[rows] if std is not None else None, focal=focal,
        ))  # fmt: skip
    if start != out["verts_cam"].shape[0]:
        raise RuntimeError(
            f"collect: the detections hold {start} people but the batch has {out['verts_cam'].shape[0]} rows"
        )
    return results
