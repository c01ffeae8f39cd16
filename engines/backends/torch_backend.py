"""The PyTorch backend: an export adapter run eagerly, optionally compiled, optionally replayed as CUDA graphs.

It is the reference every other backend is compared with (`mega-rt verify`), and the fallback when
neither onnxruntime nor TensorRT is installed. CUDA-graph replay needs fixed shapes: one graph is
captured per input-shape signature (in practice per batch bucket, `engines.runner.BATCH_BUCKETS`) on
first use, after a warm-up on a side stream, and later calls copy their inputs into that graph's static
buffers and replay it.

`compile` takes a torch.compile mode. "reduce-overhead" and "max-autotune" make inductor capture its
own CUDA graphs (cudagraph trees), which cannot be nested inside ours: with those modes the backend
does not capture graphs itself (`cuda_graphs` then only says that graphs are wanted).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Mapping

import torch

from engines.backends.base import BackendError, TensorSpec, check_feeds

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
# modes in which inductor replays CUDA graphs of its own
INDUCTOR_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compile_mode(compile: bool | str | None) -> str | None:
    """None (eager) or one of COMPILE_MODES; True means "default"; anything else is a one-line error."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return "default"
    if compile not in COMPILE_MODES:
        raise BackendError(f"unknown torch.compile mode {compile!r}; choose one of {', '.join(COMPILE_MODES)}")
    return compile


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        module: torch.nn.Module,
        inputs: dict[str, TensorSpec],
        outputs: dict[str, TensorSpec],
        graph: str = "",
        device: str | torch.device | None = None,
        compile: bool | str | None = None,
        cuda_graphs: bool = False,
    ):
        self.graph = graph
        self.inputs = inputs
        self.outputs = outputs
        self._device = normalise_device(device) if device is not None else module_device(module)
        if module_device(module) != self._device:
            # graph adapters share the caller's models: move a copy, never the caller's modules
            module = copy.deepcopy(module)
        self.module = module.eval().to(self._device)
        if cuda_graphs and self._device.type != "cuda":
            raise BackendError(f"torch {graph}: CUDA graphs need a CUDA device, got {self._device}")
        self.compile_mode = compile_mode(compile)
        self.cuda_graphs = cuda_graphs and self.compile_mode not in INDUCTOR_GRAPH_MODES
        # dynamic=False: shapes are per batch bucket anyway, and CUDA graphs freeze them
        if self.compile_mode is None:
            self._fn = self.module
        else:
            import torch._dynamo

            # dynamo keeps its compiled entries per code object: the fixed-length step graphs of one
            # loop share StepGraph.forward (one entry per step and batch bucket, 35 for T=5), past the
            # default limit of 8, after which it would run the rest eagerly
            limits = torch._dynamo.config
            limits.recompile_limit = max(limits.recompile_limit, 128)
            mode = None if self.compile_mode == "default" else self.compile_mode
            self._fn = torch.compile(self.module, mode=mode, dynamic=False)
        self._captured: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], tuple[torch.Tensor, ...]]] = {}

    @property
    def device(self) -> torch.device:
        return self._device

    def run(self, feeds: Mapping[str, Any], stream: Any = None) -> dict[str, torch.Tensor]:
        check_feeds(self, feeds)
        ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            args = [feeds[n].to(self._device, non_blocking=True) for n in self.inputs]
            out = self._replay(args) if self.cuda_graphs else self._fn(*args)
        if isinstance(out, torch.Tensor):
            out = (out,)
        return dict(zip(self.outputs, out))

    def _replay(self, args: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        key = tuple((tuple(a.shape), a.dtype) for a in args)
        if key not in self._captured:
            static_in = [a.clone() for a in args]
            # warm up on a side stream (allocator pools, cuBLAS handles, torch.compile) before capture
            side = torch.cuda.Stream(self._device)
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._fn(*static_in)
            torch.cuda.current_stream(self._device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._fn(*static_in)
            if isinstance(static_out, torch.Tensor):
                static_out = (static_out,)
            self._captured[key] = (graph, static_in, tuple(static_out))
        graph, static_in, static_out = self._captured[key]
        for dst, src in zip(static_in, args):
            dst.copy_(src)
        graph.replay()
        return static_out


def normalise_device(device) -> torch.device:
    """`device` with its index ("cuda" -> "cuda:0"), as parameters report theirs."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def module_device(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
