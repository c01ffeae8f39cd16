"""The TensorRT backend: a plan run with execute_async_v3 on torch-owned device buffers, optionally as CUDA graphs.

Device memory is torch's (the caching allocator, `data_ptr()` bound with set_tensor_address), so a
crop tensor from the GPU cropper is bound in place and vertices come back as torch tensors on the same
device; no pycuda/cuda-python buffers. Outputs live in buffers reused for the next call of the same
shape: clone what you keep.

Streams: execute_async_v3 runs on a stream the backend owns (a torch.cuda.Stream, never the legacy
default stream, which TensorRT would have to synchronise and CUDA graphs cannot capture). A call
makes that stream wait for the caller's stream (`stream`, else the current one), enqueues there, and
makes the caller's stream wait for it, so the caller sees the outputs in order without a host sync.
Inputs made here (a host copy, a contiguous copy) are `record_stream`ed onto the backend's stream, so
the allocator does not hand their memory out again before the enqueued work has read them.

CUDA graphs (`cuda_graphs=True`): per input-shape signature (in practice per batch bucket), with an
execution context of its own (a context's shapes and addresses are frozen into what it captured), the
first call copies the inputs into static buffers, runs execute_async_v3 once uncaptured (TensorRT
finishes its shape-dependent set-up there), then captures it; later calls copy new inputs into the
same buffers and replay.

Written against the documented TensorRT 10/11 Python runtime API (Runtime.deserialize_cuda_engine,
num_io_tensors / get_tensor_name / get_tensor_mode / get_tensor_dtype / get_tensor_shape,
IExecutionContext.set_input_shape / set_tensor_address / get_tensor_shape / execute_async_v3).
Not run in this repository's CI: it needs a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from engines.backends.base import BackendError, TensorSpec, check_feeds, require, torch_dtype


def _dtype_names(trt) -> dict:
    table = {
        trt.DataType.FLOAT: "float32",
        trt.DataType.HALF: "float16",
        trt.DataType.INT32: "int32",
        trt.DataType.INT8: "int8",
        trt.DataType.BOOL: "bool",
    }
    for attr, name in (("BF16", "bfloat16"), ("INT64", "int64"), ("UINT8", "uint8")):
        if hasattr(trt.DataType, attr):
            table[getattr(trt.DataType, attr)] = name
    return table


class TensorRTBackend:
    name = "tensorrt"

    def __init__(
        self,
        plan_path: str | Path,
        graph: str = "",
        device: int = 0,
        cuda_graphs: bool = False,
        tensor_names: dict[str, str] | None = None,
    ):
        """`tensor_names` maps our tensor names to the plan's where they differ (torch-tensorrt plans)."""
        from engines.trt_build import deserialize

        trt = require("tensorrt")
        if not torch.cuda.is_available():
            raise BackendError("the tensorrt backend needs a CUDA GPU, and torch sees none")
        plan_path = Path(plan_path)
        if not plan_path.is_file():
            raise BackendError(f"{plan_path}: TensorRT plan not found")
        self.graph = graph or plan_path.stem
        self._device = torch.device("cuda", device)
        with torch.cuda.device(self._device):
            self._runtime, self.engine = deserialize(plan_path.read_bytes(), trt)
            # graph mode makes one context per captured shape; each context holds activation memory
            self.context = None if cuda_graphs else self.engine.create_execution_context()
        names = _dtype_names(trt)
        to_ours = {v: k for k, v in (tensor_names or {}).items()}
        self._engine_name: dict[str, str] = {}
        self.inputs, self.outputs = {}, {}
        for i in range(self.engine.num_io_tensors):
            engine_name = self.engine.get_tensor_name(i)
            ours = to_ours.get(engine_name, engine_name)
            self._engine_name[ours] = engine_name
            dtype = self.engine.get_tensor_dtype(engine_name)
            if dtype not in names:
                raise BackendError(f"{plan_path.name}: tensor {engine_name} has unsupported type {dtype}")
            spec = TensorSpec(ours, names[dtype], tuple(int(d) for d in self.engine.get_tensor_shape(engine_name)))
            is_input = self.engine.get_tensor_mode(engine_name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs)[ours] = spec
        self.cuda_graphs = cuda_graphs
        self._stream = torch.cuda.Stream(self._device)
        self._buffers: dict[str, torch.Tensor] = {}
        # shape key -> (graph, its execution context, static inputs, static outputs)
        self._graphs: dict[tuple, tuple] = {}

    @property
    def device(self) -> torch.device:
        return self._device

    # ---- one call ---------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any], stream: Any = None) -> dict[str, torch.Tensor]:
        check_feeds(self, feeds)
        caller = stream if stream is not None else torch.cuda.current_stream(self._device)
        with torch.cuda.device(self._device):
            with torch.cuda.stream(caller):
                inputs = {n: self._on_device(feeds[n]) for n in self.inputs}
            self._stream.wait_stream(caller)
            with torch.cuda.stream(self._stream):
                # inside a capture the graph's private pool keeps its blocks until the graph goes
                if not torch.cuda.is_current_stream_capturing():
                    for t in inputs.values():
                        t.record_stream(self._stream)
                if self.cuda_graphs:
                    outputs = self._replay(inputs)
                else:
                    outputs = self._bind(self.context, inputs, reuse=self._buffers)
                    self._enqueue(self.context, self._stream)
            caller.wait_stream(self._stream)
        return outputs

    def _on_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self._device, non_blocking=True).contiguous()

    def _bind(
        self, context, inputs: dict[str, torch.Tensor], reuse: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Set input shapes and addresses; allocate (or reuse) outputs of the resulting shapes and bind them."""
        for name, t in inputs.items():
            engine_name = self._engine_name[name]
            if not context.set_input_shape(engine_name, tuple(t.shape)):
                raise BackendError(
                    f"tensorrt {self.graph}: input {name} shape {tuple(t.shape)} is outside the engine's profile "
                    f"{self._profile(engine_name)}; rebuild with a wider --batch range"
                )
            context.set_tensor_address(engine_name, t.data_ptr())
        outputs = {}
        for name, spec in self.outputs.items():
            engine_name = self._engine_name[name]
            shape = tuple(int(d) for d in context.get_tensor_shape(engine_name))
            buf = reuse.get(name)
            if buf is None or tuple(buf.shape) != shape:
                # the caller's stream waited for every earlier call, so a replaced buffer is free
                buf = torch.empty(shape, dtype=torch_dtype(spec.dtype), device=self._device)
                reuse[name] = buf
            context.set_tensor_address(engine_name, buf.data_ptr())
            outputs[name] = buf
        return outputs

    def _enqueue(self, context, stream) -> None:
        if not context.execute_async_v3(stream.cuda_stream):
            raise BackendError(f"tensorrt {self.graph}: execute_async_v3 failed (see the TensorRT log)")

    def _profile(self, engine_name: str) -> str:
        # TensorRT 10 and 11 name it so; the message that quotes it is only a hint
        profile_shape = getattr(self.engine, "get_tensor_profile_shape", None)
        if profile_shape is None:
            return "(not reported by this TensorRT)"
        lo, _, hi = profile_shape(engine_name, 0)
        return f"{tuple(lo)}..{tuple(hi)}"

    # ---- CUDA graphs --------------------------------------------------------------------------------
    def _replay(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Runs on the backend's stream (the caller made it current)."""
        key = tuple((n, tuple(inputs[n].shape)) for n in self.inputs)
        if key not in self._graphs:
            context = self.engine.create_execution_context()
            static_in = {n: t.clone() for n, t in inputs.items()}
            static_out: dict[str, torch.Tensor] = {}
            self._bind(context, static_in, reuse=static_out)
            self._enqueue(context, self._stream)  # uncaptured first run: TensorRT's lazy set-up must not be captured
            self._stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream):
                self._enqueue(context, self._stream)
            self._graphs[key] = (graph, context, static_in, static_out)
            return static_out  # the uncaptured run computed these inputs already
        graph, _, static_in, static_out = self._graphs[key]
        for n, buf in static_in.items():
            buf.copy_(inputs[n], non_blocking=True)
        graph.replay()  # on the backend's stream, after the copies above
        return static_out
