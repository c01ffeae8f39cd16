"""The onnxruntime backend: CPU, or the CUDA execution provider when the installed onnxruntime has it.

On CPU, torch tensors cross as numpy arrays (zero-copy where the memory allows). With the CUDA EP the
inputs are bound in place (`io_binding` on the torch tensors' device pointers) and outputs are written
into torch tensors allocated here, so crops and vertices never leave the GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from engines.backends.base import BackendError, TensorSpec, check_feeds, require, torch_dtype

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self, path: str | Path, graph: str = "", providers: list[str] | None = None, threads: int | None = None
    ):
        ort = require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"{path}: ONNX file not found")
        self.graph = graph or path.stem
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # errors only: fp16 graphs log a warning per constant it cannot pre-fold on the CPU
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        if providers is None:
            providers = (
                ["CUDAExecutionProvider", "CPUExecutionProvider"]
                if "CUDAExecutionProvider" in available
                else ["CPUExecutionProvider"]
            )
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendError(
                f"onnxruntime {ort.__version__} has no {', '.join(missing)} (available: {', '.join(available)}); "
                "for CUDA install onnxruntime-gpu instead of onnxruntime"
            )
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:
            raise BackendError(f"{path}: onnxruntime cannot load it: {str(e).splitlines()[0][:300]}") from e
        self._symbols = {}  # output dim name -> (input name, axis) that defines it
        self.inputs, self.outputs = {}, {}
        for i in self.session.get_inputs():
            self.inputs[i.name] = TensorSpec(
                i.name, _dtype(i.type, path), tuple(d if isinstance(d, int) else -1 for d in i.shape)
            )
            for axis, d in enumerate(i.shape):
                if isinstance(d, str):
                    self._symbols.setdefault(d, (i.name, axis))
        self._output_dims = {}
        for o in self.session.get_outputs():
            self.outputs[o.name] = TensorSpec(
                o.name, _dtype(o.type, path), tuple(d if isinstance(d, int) else -1 for d in o.shape)
            )
            self._output_dims[o.name] = list(o.shape)
        self._cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self._device = torch.device("cuda", 0) if self._cuda else torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    def run(self, feeds: Mapping[str, Any], stream: Any = None) -> dict[str, torch.Tensor]:
        check_feeds(self, feeds)
        if self._cuda:
            return self._run_cuda(feeds, stream)
        arrays = {n: feeds[n].detach().cpu().contiguous().numpy() for n in self.inputs}
        out = self.session.run(list(self.outputs), arrays)
        return {n: torch.from_numpy(a) for n, a in zip(self.outputs, out)}

    def _run_cuda(self, feeds, stream) -> dict[str, torch.Tensor]:
        import numpy as np

        binding = self.session.io_binding()
        kept = []  # keep the contiguous device copies alive until the run is over
        for n, spec in self.inputs.items():
            t = feeds[n].to(self._device).contiguous()
            kept.append(t)
            binding.bind_input(n, "cuda", t.device.index or 0, np.dtype(spec.dtype), tuple(t.shape), t.data_ptr())
        outputs = {}
        for n, spec in self.outputs.items():
            shape = tuple(self._resolve(d, feeds) for d in self._output_dims[n])
            outputs[n] = torch.empty(shape, dtype=torch_dtype(spec.dtype), device=self._device)
            binding.bind_output(n, "cuda", self._device.index or 0, np.dtype(spec.dtype), shape, outputs[n].data_ptr())
        # onnxruntime runs on its own CUDA stream: make the producer's work visible first
        (stream or torch.cuda.current_stream(self._device)).synchronize()
        self.session.run_with_iobinding(binding)
        return outputs

    def _resolve(self, dim, feeds) -> int:
        if isinstance(dim, int):
            return dim
        if dim not in self._symbols:
            raise BackendError(
                f"onnxruntime {self.graph}: output dim {dim!r} is not an input dim; cannot preallocate on CUDA"
            )
        name, axis = self._symbols[dim]
        return int(feeds[name].shape[axis])


def _dtype(ort_type: str, path: Path) -> str:
    if ort_type not in _ORT_TYPES:
        raise BackendError(f"{path}: tensor type {ort_type} is not supported by mega-rt")
    return _ORT_TYPES[ort_type]
