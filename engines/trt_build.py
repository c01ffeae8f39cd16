"""ONNX -> TensorRT plan (TensorRT 10.x and 11.x), and torch-tensorrt -> plan.

Precision lives in the ONNX graph (engines.adapters.cast_for_precision), and the network is strongly
typed on both major versions: 11.x is always strongly typed, has no FP16/BF16 builder flags and
deprecates the STRONGLY_TYPED creation flag (not passed there); on 10.x we ask for STRONGLY_TYPED so
that the same ONNX file gives the same precision on both. fp32 plans clear BuilderFlag.TF32 (on by
default), so that an fp32 engine computes fp32 matmuls and convolutions (`build_flags`). Each plan
gets one optimization profile (min/opt/max of the batch), a workspace limit, and a timing cache shared
by every build on the same TensorRT version and GPU (keyed in the file name), which turns rebuilds of
a known graph from minutes into seconds.

Plans only load on the exact TensorRT version and compute capability they were built with; the
manifest written beside them records both and engines.load refuses a mismatch.

Written against the documented TensorRT Python API (Builder, create_network, OnnxParser,
create_optimization_profile / set_shape, set_memory_pool_limit, create_timing_cache /
set_timing_cache, build_serialized_network). Not run in this repository's CI: it needs a GPU.
"""

from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass
from pathlib import Path

from engines.backends.base import BackendError, require
from train.io import write_bytes_atomic


class BuildError(RuntimeError):
    """TensorRT could not parse or build a graph; the message carries the parser/builder's first error."""


@dataclass(frozen=True)
class RuntimeInfo:
    """What a plan is tied to: the TensorRT version and the GPU."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.9"

    @property
    def key(self) -> str:
        return f"trt{self.tensorrt_version}-sm{self.compute_capability.replace('.', '')}"


def runtime_info(device: int = 0) -> RuntimeInfo:
    trt = require("tensorrt")
    import torch

    if not torch.cuda.is_available():
        raise BackendError("TensorRT needs a CUDA GPU, and torch sees none")
    major, minor = torch.cuda.get_device_capability(device)
    return RuntimeInfo(trt.__version__, torch.cuda.get_device_name(device), f"{major}.{minor}")


_LOGGER = None


def logger(trt):
    """One TensorRT logger for the process: builders and runtimes keep a reference to it."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


@dataclass(frozen=True)
class BuildFlags:
    """What a build sets, by the names the TensorRT Python API gives them."""

    network: tuple[str, ...]  # NetworkDefinitionCreationFlag members to set
    clear: tuple[str, ...]  # BuilderFlag members to clear


def build_flags(tensorrt_version: str, precision: str) -> BuildFlags:
    """The flags of a build on `tensorrt_version` of a graph in `precision` (fp32 | fp16 | bf16).

    10.x: STRONGLY_TYPED, so that precision comes from the graph as on 11.x; 11.x: nothing (strong typing
    is always on and the flag is deprecated). fp32: TF32 cleared (it would round fp32 matmul and
    convolution inputs to 10 mantissa bits); fp16/bf16 graphs keep it for their few fp32 layers.
    """
    try:
        major = int(str(tensorrt_version).split(".")[0])
    except ValueError:
        raise BuildError(f"TensorRT version {tensorrt_version!r} is not MAJOR.MINOR...") from None
    if major < 10:
        raise BuildError(f"TensorRT {tensorrt_version}: mega-rt builds with TensorRT 10 or 11; upgrade it")
    if precision not in ("fp32", "fp16", "bf16"):
        raise BuildError(f"precision {precision!r}: use fp32, fp16 or bf16")
    return BuildFlags(("STRONGLY_TYPED",) if major == 10 else (), ("TF32",) if precision == "fp32" else ())


def _network_flags(trt, flags: BuildFlags) -> int:
    return sum(1 << int(getattr(trt.NetworkDefinitionCreationFlag, name)) for name in flags.network)


@dataclass(frozen=True)
class PlanTarget:
    """What both builders are asked for: where the plan goes, its one profile, workspace and timing cache."""

    path: Path
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input name -> (min, opt, max) shapes
    workspace_bytes: int
    timing_cache: Path | None = None  # shared by builds on the same TensorRT version and GPU
    precision: str = "fp32"  # the graph's precision: fp32 plans are built without TF32


def build_plan(onnx_path: str | Path, target: PlanTarget, log=print) -> dict:
    """Parse `onnx_path`, build one optimization profile, serialise the plan to `target.path`.

    Returns {"seconds", "bytes", "timing_cache"}.
    """
    trt = require("tensorrt")
    onnx_path = Path(onnx_path)
    profile, timing_cache_path = target.profile, target.timing_cache
    flags = build_flags(trt.__version__, target.precision)
    builder = trt.Builder(logger(trt))
    network = builder.create_network(_network_flags(trt, flags))
    parser = trt.OnnxParser(network, logger(trt))
    # parse_from_file resolves external weight files next to the model
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(
            f"{onnx_path.name}: TensorRT {trt.__version__} cannot parse it: {errors[0] if errors else 'unknown error'}"
        )

    config = builder.create_builder_config()
    for name in flags.clear:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(target.workspace_bytes))
    opt_profile = builder.create_optimization_profile()
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    if set(profile) != names:
        raise BuildError(
            f"{onnx_path.name}: profile covers {sorted(profile)}, the network's inputs are {sorted(names)}"
        )
    for name, (lo, opt, hi) in profile.items():
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)

    cache = None
    if timing_cache_path is not None:
        timing_cache_path = Path(timing_cache_path)
        blob = timing_cache_path.read_bytes() if timing_cache_path.is_file() else b""
        cache = config.create_timing_cache(blob)
        # a cache from another TensorRT build or GPU must not be mixed in silently
        if not config.set_timing_cache(cache, False):
            raise BuildError(
                f"{timing_cache_path}: TensorRT {trt.__version__} rejects this timing cache (another TensorRT "
                "build or GPU wrote it?); delete the file and the next build writes a new one"
            )

    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError(f"{onnx_path.name}: TensorRT {trt.__version__} failed to build the engine (see the log above)")
    seconds = time.perf_counter() - t0
    info = _save_plan(plan, target, seconds, log)
    if cache is not None:
        # a build killed mid-write must not leave a truncated cache (or plan) that a later build loads
        timing_cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(timing_cache_path, bytes(cache.serialize()))
    return info


def _save_plan(plan, target: PlanTarget, seconds: float, log, how: str = "") -> dict:
    """Write a serialised plan to `target.path`, log it, and return what the manifest records of the build."""
    path = Path(target.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, bytes(plan))
    size = path.stat().st_size
    log(f"  built {path.name}{how} in {seconds:.1f} s ({size / 1e6:.1f} MB)")
    return {
        "seconds": round(seconds, 2),
        "bytes": size,
        "timing_cache": str(target.timing_cache) if target.timing_cache else None,
    }


def build_plan_torch_tensorrt(module, feeds: dict, target: PlanTarget, log=print) -> dict:
    """torch.export the adapter and let torch-tensorrt (dynamo) write a plain TensorRT plan.

    The module must already be in its target precision: since torch-tensorrt 2.13 the top-level
    `enabled_precisions` is silently dropped, and on TensorRT 11 the network is strongly typed anyway.
    The plan's tensor names are torch-tensorrt's; the caller maps them to ours by position.
    """
    import torch

    torch_trt = require("torch_tensorrt")
    plan_path, profile = Path(target.path), target.profile
    lo, hi = min(p[0][0] for p in profile.values()), max(p[2][0] for p in profile.values())
    # every input shares the one batch dim; a fixed batch exports static shapes
    batch = torch.export.Dim("batch", min=lo, max=hi) if hi > lo else None
    dynamic_shapes = {name: {0: batch} for name in feeds} if batch is not None else None
    device = torch.device("cuda")
    module = copy.deepcopy(module).to(device).eval()  # the caller's (CPU) models stay where they are
    args = tuple(t.to(device) for t in feeds.values())
    t0 = time.perf_counter()
    try:
        exported = torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as e:
        raise BuildError(f"{plan_path.name}: torch.export failed: {str(e).splitlines()[0][:300]}") from e
    inputs = [
        torch_trt.Input(min_shape=profile[n][0], opt_shape=profile[n][1], max_shape=profile[n][2], dtype=t.dtype)
        for n, t in feeds.items()
    ]
    convert = torch_trt.dynamo.convert_exported_program_to_serialized_trt_engine
    # the module is cast already and torch-tensorrt >= 2.13 keeps the dtypes it is given (explicit
    # typing): no precision options, which 2.14 no longer has
    options = {
        "arg_inputs": inputs,
        "workspace_size": int(target.workspace_bytes),
        "require_full_compilation": True,
        "disable_tf32": target.precision == "fp32",
    }
    if target.timing_cache:
        options["timing_cache_path"] = str(target.timing_cache)
    options = checked_options(convert, options, f"torch-tensorrt {torch_trt.__version__}")
    try:
        plan = convert(exported, **options)
    except Exception as e:
        raise BuildError(f"{plan_path.name}: torch-tensorrt conversion failed: {str(e).splitlines()[0][:300]}") from e
    if not plan:
        raise BuildError(f"{plan_path.name}: torch-tensorrt returned no engine (an unsupported op? see the log above)")
    seconds = time.perf_counter() - t0
    return _save_plan(plan, target, seconds, log, how=f" with torch-tensorrt {torch_trt.__version__}")


def checked_options(fn, options: dict, what: str) -> dict:
    """`options`, if every key is a parameter `fn` names; else a BuildError naming the unknown keys.

    A `**kwargs` catch-all does not count: a library that swallows an option it no longer has (as
    torch-tensorrt did with `enabled_precisions`) would otherwise build something else than asked.
    """
    params = inspect.signature(fn).parameters
    named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(options) - named)
    if unknown:
        raise BuildError(
            f"{what}: {getattr(fn, '__name__', fn)} has no option {', '.join(unknown)}; "
            "this mega-rt does not support this version, install the one constraints.txt pins"
        )
    return options


def plan_io_names(plan_path: str | Path) -> tuple[list[str], list[str]]:
    """(input names, output names) of a plan in engine order."""
    trt = require("tensorrt")
    _, engine = deserialize(Path(plan_path).read_bytes(), trt)
    ins, outs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        (ins if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(name)
    return ins, outs


def deserialize(plan: bytes, trt=None):
    """-> (runtime, engine); keep the runtime referenced as long as the engine lives."""
    trt = trt or require("tensorrt")
    runtime = trt.Runtime(logger(trt))
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise BackendError(
            f"TensorRT {trt.__version__} could not deserialize the plan (built with another TensorRT version or GPU?); "
            "rebuild it with `mega-rt export --format tensorrt ...`"
        )
    return runtime, engine
