"""The one backend interface: named tensors in, named tensors out, an optional CUDA stream.

    backend = load_backend("oneshot.onnx")        # or a .plan, or TorchBackend(module, ...)
    out = backend.run({"images": crops})          # {"tokens": ..., "verts": ...}

Every implementation (torch, onnxruntime, tensorrt) takes and returns `torch.Tensor`s, so the pipeline
never converts between array libraries, and declares its tensors (`inputs`, `outputs`: name -> spec
with the batch dimension as -1). Outputs may live in buffers the backend reuses on the next call
(CUDA graphs and TensorRT bind fixed addresses): clone what you keep.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable

# dtype names as numpy spells them; the common vocabulary of ONNX, TensorRT and torch here
DTYPES = ("float32", "float16", "bfloat16", "int32", "int64", "bool", "uint8", "int8")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # one of DTYPES
    shape: tuple[int, ...]  # -1 where dynamic (the batch)

    def describe(self) -> str:
        dims = ",".join("B" if d == -1 else str(d) for d in self.shape)
        return f"{self.name} {self.dtype}[{dims}]"


class BackendError(RuntimeError):
    """A backend that cannot load or run what it was given; one line that says what to do."""


class BackendUnavailable(BackendError, ImportError):
    """The library a backend needs is not installed; the message names the extra to install."""


EXTRAS = {
    "onnxruntime": "pip install 'mega-rt[onnx]'",
    "onnx": "pip install 'mega-rt[onnx]'",
    "tensorrt": "pip install 'mega-rt[tensorrt]' (needs an NVIDIA GPU and driver)",
    "torch_tensorrt": "pip install 'mega-rt[tensorrt]' (needs an NVIDIA GPU and driver)",
}


def require(module: str) -> Any:
    """Import an optional library or raise BackendUnavailable telling how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        hint = EXTRAS.get(module, f"pip install {module}")
        raise BackendUnavailable(f"{module} is not installed ({e.__class__.__name__}: {e}); {hint}") from None


@runtime_checkable
class Backend(Protocol):
    name: str  # "torch" | "onnxruntime" | "tensorrt"
    graph: str  # which graph it runs ("oneshot", "encode", "step", "mesh") or "" when unknown
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    @property
    def device(self): ...

    def run(self, feeds: Mapping[str, Any], stream: Any = None) -> dict[str, Any]: ...


def torch_dtype(name: str):
    import torch

    return {
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
        "int32": torch.int32,
        "int64": torch.int64,
        "bool": torch.bool,
        "uint8": torch.uint8,
        "int8": torch.int8,
    }[name]


def dtype_name(dtype) -> str:
    """torch.dtype -> numpy-style name."""
    return str(dtype).replace("torch.", "")


def check_feeds(backend: Backend, feeds: Mapping[str, Any]) -> None:
    """One-line errors for missing/unknown names, wrong dtypes or ranks, and mismatched batch sizes."""
    missing = [n for n in backend.inputs if n not in feeds]
    unknown = [n for n in feeds if n not in backend.inputs]
    if missing or unknown:
        expected = ", ".join(s.describe() for s in backend.inputs.values())
        raise BackendError(
            f"{backend.name} {backend.graph or 'graph'}: missing {missing} unknown {unknown}; expected {expected}"
        )
    batch = None
    for name, spec in backend.inputs.items():
        t = feeds[name]
        got = dtype_name(t.dtype)
        if got != spec.dtype:
            raise BackendError(f"{backend.name} {backend.graph}: input {name} is {got}, expected {spec.dtype}")
        if t.dim() != len(spec.shape) or any(d not in (-1, s) for d, s in zip(spec.shape, t.shape)):
            raise BackendError(
                f"{backend.name} {backend.graph}: input {name} has shape {tuple(t.shape)}, expected {spec.describe()}"
            )
        if spec.shape and spec.shape[0] == -1:
            if batch is None:
                batch = t.shape[0]
            elif t.shape[0] != batch:
                raise BackendError(
                    f"{backend.name} {backend.graph}: input {name} has {t.shape[0]} rows, the others {batch}"
                )
