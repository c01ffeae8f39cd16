"""`mega-rt export`: PyTorch MEGA -> ONNX graphs (-> TensorRT plans) in the engine cache, with a manifest
and the parity each graph reached.

    models = build_models(ModelSource(cfg, weights, mesh_weights))      # engines.models
    result = export_engine(models, ExportSpec(format="onnx", precision="fp16", batch=(1, 8, 64)))

The engine folder is `cache_dir()/engines/<config>-<config hash>-<weights hash>/<format>-<precision>-
b<min>-<opt>-<max>[-q<Q>t<T>][-trt<version>-sm<cc>]/` and holds the graph files, `manifest.json`
and, for TensorRT, the ONNX files the plans were built from. Nothing is written into the source tree.

A stochastic export writes `encode`, the full-length `step` (any visible count, so any `--steps`), one
fixed-length `step_v{K}` per step of its T (the encoder over the K visible tokens only; token-equal to
`step`) and `mesh`; the runner takes `step_v{K}` where the count fits and `step` otherwise, and the
parity figures compare the loop over the fixed-length steps with PyTorch's full-length one.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from engines import adapters
from engines.manifest import MANIFEST_NAME, Manifest
from engines.models import NUM_VERTS, Models, graph_module, normalisation

FORMATS = ("onnx", "tensorrt", "torch-tensorrt")
# what an export writes into its folder besides the manifest: stale ones go before a rebuild
GRAPH_SUFFIXES = (".onnx", ".plan", ".engine")


@dataclass(frozen=True)
class ExportSpec:
    format: str = "onnx"
    precision: str = "fp32"
    batch: tuple[int, int, int] = (1, 8, 32)  # crops: min, opt, max
    stochastic: bool = False
    samples: int = 8
    steps: int = 5
    temperature: float | None = None  # None: the config's
    opset: int = 18
    workspace_gib: float = 4.0
    parity_batch: int = 2

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r}: use {', '.join(FORMATS)}")
        if self.precision not in adapters.PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: use fp32, fp16 or bf16")
        if self.precision == "bf16" and self.format != "torch-tensorrt":
            # ONNX types Conv/BatchNormalization in bfloat16 only from opset 22; the TorchScript
            # exporter writes at most opset 20 and TensorRT 10 parses at most 20
            raise ValueError(
                "bf16 cannot go through ONNX here (bfloat16 Conv needs opset 22): use --format torch-tensorrt "
                "for bf16 engines, or fp16"
            )
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"batch {lo}:{opt}:{hi}: need 1 <= min <= opt <= max")
        if self.stochastic and (self.samples < 1 or self.steps < 1):
            raise ValueError("samples and steps must be >= 1")

    def graphs(self, num_tokens: int) -> tuple[str, ...]:
        """Deterministic: oneshot. Stochastic: encode, the full-length step (any visible count, so any
        --steps), the fixed-length steps of the spec's T for `num_tokens` tokens (`step_v{K}`, the encoder
        over 1 + K positions; the runner takes them where they fit) and mesh."""
        if not self.stochastic:
            return adapters.ONESHOT_GRAPHS
        fixed = dict.fromkeys(adapters.fixed_step_graphs(num_tokens, self.steps))
        return ("encode", "step", *fixed, "mesh")

    def rows(self, graph: str) -> int:
        """Rows per crop of a graph's inputs: Q for the per-sample graphs."""
        return self.samples if self.stochastic and adapters.per_sample(graph) else 1

    def name(self, runtime_key: str = "") -> str:
        lo, opt, hi = self.batch
        parts = [self.format, self.precision, f"b{lo}-{opt}-{hi}"]
        if self.stochastic:
            parts.append(f"q{self.samples}t{self.steps}")
        if runtime_key:
            parts.append(runtime_key)
        return "-".join(parts)


@dataclass
class ExportResult:
    folder: Path
    manifest: Manifest
    seconds: float


def engines_root() -> Path:
    from train.assets import cache_dir

    return cache_dir() / "engines"


def engine_folder(models: Models, spec: ExportSpec, root: Path | None = None, runtime_key: str = "") -> Path:
    return folder_for(models.cfg, models.weights_hash, spec, root, runtime_key)


def folder_for(cfg, weights_hash_: str, spec: ExportSpec, root: Path | None = None, runtime_key: str = "") -> Path:
    from train.config import config_hash

    root = Path(root) if root is not None else engines_root()
    return root / f"{cfg.name}-{config_hash(cfg)[:8]}-{weights_hash_[:8]}" / spec.name(runtime_key)


def rebuild_command(models: Models, spec: ExportSpec) -> str:
    args = [
        "mega-rt",
        "export",
        "--format",
        spec.format,
        "--precision",
        spec.precision,
        "--batch",
        ":".join(map(str, spec.batch)),
    ]
    if spec.stochastic:
        args += ["--stochastic", "--samples", str(spec.samples), "--steps", str(spec.steps)]
    w = models.weights
    config_ref = models.source.config_ref or models.cfg.name
    if "path" in w["mega"]:
        args += ["--weights", w["mega"]["path"]]
        if models.source.config_ref:
            args += ["--config", config_ref]
    else:
        args += ["--config", config_ref, "--seed", str(models.source.seed)]
    if "path" in w["mesh"]:
        args += ["--mesh-weights", w["mesh"]["path"]]
    if spec.stochastic and spec.temperature is not None:
        args += ["--temperature", str(spec.temperature)]
    if spec.format != "onnx" and spec.workspace_gib != ExportSpec.workspace_gib:
        args += ["--workspace", str(spec.workspace_gib)]
    if spec.format != "torch-tensorrt" and spec.opset != ExportSpec.opset:
        args += ["--opset", str(spec.opset)]
    return shlex.join(args)


def _profile(graph: str, spec: ExportSpec, cfg) -> dict:
    """input name -> [min, opt, max] shapes (rows = crops x rows-per-crop)."""
    ins, _ = adapters.graph_specs(graph, cfg, NUM_VERTS)
    r = spec.rows(graph)
    return {name: [[b * r if d == -1 else d for d in s.shape] for b in spec.batch] for name, s in ins.items()}


def export_engine(
    models: Models, spec: ExportSpec, root: Path | None = None, progress=print, parity: bool = True
) -> ExportResult:
    """Export every graph of `spec`, build plans for TensorRT formats, measure parity, write the manifest."""
    from engines.onnx_export import export_graph

    t_start = time.perf_counter()
    cfg = models.cfg
    trt_info = None
    if spec.format in ("tensorrt", "torch-tensorrt"):
        from engines.trt_build import runtime_info

        trt_info = runtime_info()
    folder = engine_folder(models, spec, root, trt_info.key if trt_info else "")
    folder.mkdir(parents=True, exist_ok=True)
    # a half-rewritten folder must not look valid, and graphs of an earlier export (other names) must
    # not linger beside the new ones
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    for stale in folder.iterdir():
        if stale.suffix in GRAPH_SUFFIXES and stale.is_file():
            stale.unlink()
    temperature = cfg.temperature if spec.temperature is None else spec.temperature
    graphs: dict[str, dict] = {}
    names = spec.graphs(cfg.seq_length)
    casts: dict = {}  # the step graphs share one cast copy of MEGA
    n = len(names)
    for i, g in enumerate(names, start=1):
        t0 = time.perf_counter()
        module = graph_module(g, models, spec.precision, spec.samples, casts)
        profile = _profile(g, spec, cfg)
        shapes = {k: tuple(map(tuple, v)) for k, v in profile.items()}
        timing_cache = engines_root() / "timing" / f"{trt_info.key}.cache" if trt_info else None
        if spec.format == "torch-tensorrt":
            # straight from the PyTorch module: no ONNX in between (this is also the bf16 path)
            from engines.trt_build import BuildError, PlanTarget, build_plan_torch_tensorrt, plan_io_names

            progress(f"[{i}/{n}] {g}: building with torch-tensorrt ({spec.precision}) for {trt_info.gpu_name}")
            # an example batch of 1 would be specialised by torch.export; use 2 when the range allows
            example = min(max(2, spec.batch[0]), spec.batch[2])
            feeds = adapters.example_inputs(g, example, cfg, spec.rows(g), seed=i)
            target = PlanTarget(
                folder / f"{g}.plan", shapes, int(spec.workspace_gib * (1 << 30)), timing_cache, spec.precision
            )
            info = build_plan_torch_tensorrt(module, feeds, target, log=progress)
            ins, outs = plan_io_names(folder / f"{g}.plan")
            ours = adapters.graph_io(g)
            if len(ins) != len(ours.inputs) or len(outs) != len(ours.outputs):
                raise BuildError(
                    f"{g}: torch-tensorrt plan has {len(ins)} inputs / {len(outs)} outputs, "
                    f"expected {len(ours.inputs)} / {len(ours.outputs)}"
                )
            # torch-tensorrt names the tensors itself; inputs and outputs keep the signature order
            info.update(file=f"{g}.plan", tensor_names=dict(zip(ours.inputs + ours.outputs, ins + outs)))
        else:
            # trace at 2 crops: a batch of 1 could be specialised away; the batch axis is symbolic anyway
            feeds = adapters.example_inputs(g, 2, cfg, spec.rows(g), seed=i)
            progress(f"[{i}/{n}] {g}: exporting ONNX ({spec.precision}, opset {spec.opset})")
            info = export_graph(module, feeds, adapters.graph_io(g).outputs, folder / f"{g}.onnx", spec.opset)
            info["onnx"] = info["file"]
            if spec.format == "tensorrt":
                from engines.trt_build import PlanTarget, build_plan

                progress(f"[{i}/{n}] {g}: building TensorRT {trt_info.tensorrt_version} plan for {trt_info.gpu_name}")
                target = PlanTarget(
                    folder / f"{g}.plan", shapes, int(spec.workspace_gib * (1 << 30)), timing_cache, spec.precision
                )
                built = build_plan(folder / f"{g}.onnx", target, log=progress)
                info.update(built, file=f"{g}.plan")
        info["profile"] = profile
        if spec.format != "onnx":
            from engines.onnx_export import file_sha256

            info["sha256"] = file_sha256(folder / info["file"])
        info["seconds"] = round(time.perf_counter() - t0, 2)
        graphs[g] = info

    from train.config import config_hash, config_to_dict

    manifest = Manifest(
        format=spec.format,
        precision=spec.precision,
        mode="stochastic" if spec.stochastic else "deterministic",
        graphs=graphs,
        batch=list(spec.batch),
        mega_config=config_to_dict(cfg),
        mega_config_hash=config_hash(cfg),
        mesh_config=config_to_dict(models.mesh_cfg),
        mesh_config_hash=config_hash(models.mesh_cfg),
        weights=models.weights,
        weights_hash=models.weights_hash,
        normalisation=normalisation(models),
        software=software_versions(spec.opset),
        rebuild_command=rebuild_command(models, spec),
        samples=spec.samples if spec.stochastic else 1,
        steps=spec.steps if spec.stochastic else 0,
        temperature=temperature if spec.stochastic else 0.0,
        tensorrt=(
            {
                "version": trt_info.tensorrt_version,
                "gpu_name": trt_info.gpu_name,
                "compute_capability": trt_info.compute_capability,
                "workspace_bytes": int(spec.workspace_gib * (1 << 30)),
                "timing_cache": str(engines_root() / "timing" / f"{trt_info.key}.cache"),
                "strongly_typed": True,
            }
            if trt_info
            else None
        ),
    )
    if parity:
        from engines.verify import measure_parity

        progress("parity: running the exported graphs against PyTorch fp32")
        batch = min(max(spec.parity_batch, spec.batch[0]), spec.batch[2])
        manifest.parity = measure_parity(folder, manifest, models, batch, progress)
    manifest.write(folder)
    return ExportResult(folder, manifest, time.perf_counter() - t_start)


def software_versions(opset: int) -> dict:
    """Versions of what built the engine; libraries that are not installed are left out."""
    import importlib
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__, "opset": opset}
    for mod in ("onnx", "onnxruntime", "tensorrt", "torch_tensorrt"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except (ImportError, OSError):  # not installed, or its native libraries are missing
            continue
    try:
        out["mega_rt"] = version("mega-rt")
    except PackageNotFoundError:  # run from a source checkout that was never installed
        pass
    return out
