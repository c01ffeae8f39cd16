"""Process-group set-up for `torchrun` (DDP) and the single-process fallback.

Under torchrun (WORLD_SIZE > 1) every process joins one group: NCCL on GPUs (one per process,
LOCAL_RANK picks it), gloo on CPU. Without torchrun nothing is initialised and rank 0 of 1 runs alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda was asked for but torch sees no CUDA GPU; set device: cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(device_preference: str = "auto") -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather_cat(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate equally-shaped tensors of all ranks along dim 0, in rank order."""
    if info.world == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(info.world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average named floats over ranks (for logging)."""
    if info.world == 1 or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return dict(zip(values, (t / info.world).tolist()))


def gather_objects(obj, info: DistInfo) -> list:
    if info.world == 1:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out
