"""`mega-rt export`: PyTorch MEGA -> ONNX graphs (-> TensorRT plans) in the engine cache, with a manifest
and the parity each graph reached.

    models = build_models(ModelSource(cfg, weights, mesh_weights))
    result = export_engine(models, ExportSpec(format="onnx", precision="fp16", batch=(1, 8, 64)))

The engine folder is `cache_dir()/engines/<config>-<config hash>-<weights hash>/<format>-<precision>-
b<min>-<opt>-<max>[-q<Q>t<T>][-trt<version>-sm<cc>]/` and holds the graph files, `manifest.json`
and, for TensorRT, the ONNX files the plans were built from. Nothing is written into the source tree.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engines import adapters
from engines.manifest import Manifest

FORMATS = ("onnx", "tensorrt", "torch-tensorrt")
NUM_VERTS = 6890


# ---- the PyTorch models an engine is built from -----------------------------------------------------
@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: checkpoint files, or random weights of `config` from `seed`."""

    config: object  # MegaConfig, or None to take it from the checkpoint
    mega_weights: Path | None = None
    mesh_weights: Path | None = None
    seed: int = 0
    config_ref: str | None = None  # how the user named the config (shipped name or YAML path), for rebuilds

    @property
    def random(self) -> bool:
        return self.mega_weights is None


@dataclass
class Models:
    source: ModelSource
    cfg: object  # MegaConfig
    mesh_cfg: object  # MeshVQVAEConfig
    full: torch.nn.Module  # Mega with its token encoder (stochastic mode)
    det: torch.nn.Module  # decoder-only Mega with the folded empty encoder (deterministic mode)
    mesh_vqvae: torch.nn.Module
    weights: dict = field(default_factory=dict)
    weights_hash: str = ""


def _sha256(path: Path) -> str:
    from engines.onnx_export import file_sha256

    return file_sha256(path)


def build_models(source: ModelSource, assets_dir=None, expect_sha256: dict | None = None) -> Models:
    """Build (or load) MEGA in both forms and the Mesh-VQ-VAE, in eval mode on the CPU."""
    from train.checkpoint import load_mega, load_mesh_vqvae
    from train.config import MeshVQVAEConfig, builtin_config
    from train.model.mega import Mega, fold_empty_encoder
    from train.model.mesh_vqvae import MeshVQVAE

    weights = {}
    cfg = source.config
    if source.mega_weights is not None:
        path = Path(source.mega_weights)
        full, cfg = load_mega(path, cfg, with_encoder=True)
        weights["mega"] = {"path": str(path.resolve()), "sha256": _sha256(path)}
    else:
        torch.manual_seed(source.seed)
        full = Mega(cfg, with_encoder=True).eval()
        weights["mega"] = {"random_seed": source.seed}
    mesh_cfg = builtin_config("mesh_vqvae", MeshVQVAEConfig)
    if source.mesh_weights is not None:
        path = Path(source.mesh_weights)
        # an own checkpoint embeds its config; the official one carries none and is configs/mesh_vqvae.yaml
        mesh_vqvae, mesh_cfg = load_mesh_vqvae(path, assets_dir=assets_dir)
        weights["mesh"] = {"path": str(path.resolve()), "sha256": _sha256(path)}
    else:
        torch.manual_seed(source.seed + 1)
        mesh_vqvae = MeshVQVAE.from_assets(mesh_cfg, assets_dir).eval()
        weights["mesh"] = {"random_seed": source.seed + 1}
    if expect_sha256:
        for key, sha in expect_sha256.items():
            if sha and weights.get(key, {}).get("sha256") != sha:
                from engines.manifest import EngineMismatch

                raise EngineMismatch(f"{weights[key].get('path')}: weights changed since the engine was built (sha256 differs)")

    # the deterministic model shares the weights; its encoder is folded into one constant slot
    det = Mega(cfg, with_encoder=False, backbone=full.backbone)
    det.decoder = full.decoder
    with torch.no_grad():
        det.empty_slot.copy_(fold_empty_encoder(full.state_dict(), cfg))
    det.eval()

    return Models(source, cfg, mesh_cfg, full, det, mesh_vqvae, weights, weights_hash(weights, cfg))


def random_weights(seed: int) -> dict:
    """The `weights` record of random models (what build_models writes without checkpoint files)."""
    return {"mega": {"random_seed": seed}, "mesh": {"random_seed": seed + 1}}


def weights_hash(weights: dict, cfg) -> str:
    """Short hash naming the weights: file sha256s, or the seeds (and config) of random weights."""
    from train.config import config_hash

    blob = "|".join(
        f"{k}:{v.get('sha256') or 'random-' + str(v['random_seed']) + '-' + config_hash(cfg)}" for k, v in sorted(weights.items())
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def models_from_manifest(manifest: Manifest, assets_dir=None) -> Models:
    """Rebuild the exact PyTorch models an engine was exported from (the `torch` side of verify)."""
    from train.config import MegaConfig, config_from_dict

    cfg = config_from_dict(MegaConfig, manifest.mega_config, "manifest mega_config")
    w = manifest.weights
    source = ModelSource(
        cfg,
        Path(w["mega"]["path"]) if "path" in w["mega"] else None,
        Path(w["mesh"]["path"]) if "path" in w["mesh"] else None,
        seed=w["mega"].get("random_seed", 0),
    )
    models = build_models(source, assets_dir, expect_sha256={k: v.get("sha256") for k, v in w.items()})
    if models.weights_hash != manifest.weights_hash:
        from engines.manifest import EngineMismatch

        raise EngineMismatch(f"rebuilt models do not match the engine's weights hash; rebuild: {manifest.rebuild_command}")
    return models


def graph_module(graph: str, models: Models, precision: str = "fp32", samples: int = 1) -> torch.nn.Module:
    """The export adapter of `graph`, in `precision` (a cast copy; the models stay fp32)."""
    cast = lambda m: adapters.cast_for_precision(m, precision)  # noqa: E731
    # bf16 keeps 8 mantissa bits, ~4 mm at a metre: the mesh decoder (token ids in, vertices out) stays
    # fp32 there; fp16 (~0.5 mm) is cast, and its error is part of the measured vertex error
    cast_mesh = (lambda m: m) if precision == "bf16" else cast  # noqa: E731
    if graph == "det":
        return adapters.DetGraph(cast(models.det), cast_mesh(models.mesh_vqvae)).eval()
    if graph == "encode":
        return adapters.EncodeGraph(cast(models.full), samples).eval()
    if graph == "step":
        return adapters.StepGraph(cast(models.full)).eval()
    if graph == "mesh":
        return adapters.MeshDecoderGraph(cast_mesh(models.mesh_vqvae)).eval()
    raise KeyError(f"unknown graph {graph!r}")


def torch_backends(models: Models, graphs, precision: str = "fp32", samples: int = 1, device=None, compile=False, cuda_graphs=False) -> dict:
    from engines.backends.torch_backend import TorchBackend

    out = {}
    for g in graphs:
        ins, outs = adapters.graph_specs(g, models.cfg, NUM_VERTS)
        out[g] = TorchBackend(graph_module(g, models, precision, samples), ins, outs, g, device, compile, cuda_graphs)
    return out


# ---- the export itself ----------------------------------------------------------------------------
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

    @property
    def graphs(self) -> tuple[str, ...]:
        return adapters.STOCHASTIC_GRAPHS if self.stochastic else adapters.DET_GRAPHS

    def rows(self, graph: str) -> int:
        """Rows per crop of a graph's inputs: Q for the per-sample graphs."""
        return self.samples if self.stochastic and graph in ("step", "mesh") else 1

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
    args = ["mega-rt", "export", "--format", spec.format, "--precision", spec.precision, "--batch", ":".join(map(str, spec.batch))]
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
    return {
        name: [[b * r if d == -1 else d for d in s.shape] for b in spec.batch]
        for name, s in ins.items()
    }


def export_engine(models: Models, spec: ExportSpec, root: Path | None = None, progress=print, parity: bool = True) -> ExportResult:
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
    stale = folder / "manifest.json"
    if stale.exists():
        stale.unlink()  # a half-rewritten folder must not look valid
    temperature = cfg.temperature if spec.temperature is None else spec.temperature
    graphs: dict[str, dict] = {}
    n = len(spec.graphs)
    for i, g in enumerate(spec.graphs, start=1):
        t0 = time.perf_counter()
        module = graph_module(g, models, spec.precision, spec.samples)
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
            target = PlanTarget(folder / f"{g}.plan", shapes, int(spec.workspace_gib * (1 << 30)), timing_cache)
            info = build_plan_torch_tensorrt(module, feeds, target, log=progress)
            ins, outs = plan_io_names(folder / f"{g}.plan")
            ours = adapters.GRAPHS[g]
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
            info = export_graph(module, feeds, adapters.GRAPHS[g].outputs, folder / f"{g}.onnx", spec.opset)
            info["onnx"] = info["file"]
            if spec.format == "tensorrt":
                from engines.trt_build import PlanTarget, build_plan

                progress(f"[{i}/{n}] {g}: building TensorRT {trt_info.tensorrt_version} plan for {trt_info.gpu_name}")
                target = PlanTarget(folder / f"{g}.plan", shapes, int(spec.workspace_gib * (1 << 30)), timing_cache)
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
        software=_software(spec.opset),
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
        progress("parity: running the exported graphs against PyTorch fp32")
        manifest.parity = measure_parity(folder, manifest, models, spec, progress)
    manifest.write(folder)
    return ExportResult(folder, manifest, time.perf_counter() - t_start)


def normalisation(models: Models) -> dict:
    bb = models.full.backbone
    return {
        "layout": "NCHW float32 RGB, (x/255 - mean) / std",
        "mean": list(bb.mean),
        "std": list(bb.std),
        "input_hw": [models.cfg.input_height, models.cfg.input_width],
    }


def _software(opset: int) -> dict:
    import platform

    out = {"python": platform.python_version(), "torch": torch.__version__, "opset": opset}
    for mod in ("onnx", "onnxruntime", "tensorrt", "torch_tensorrt"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    try:
        from importlib.metadata import version

        out["mega_rt"] = version("mega-rt")
    except Exception:
        pass
    return out


# ---- parity -------------------------------------------------------------------------------------
def measure_parity(folder: Path, manifest: Manifest, models: Models, spec: ExportSpec, progress=print) -> dict:
    """Each graph against PyTorch fp32 on the same inputs, and for stochastic engines the whole loop.

    Runs where the artefact can run here: ONNX on onnxruntime (CPU or CUDA), plans on TensorRT when
    a GPU is present. What could not run is recorded as skipped with the reason.
    """
    from engines.backends.base import BackendError
    from engines.load import load_graph_backends
    from engines.verify import compare_backends, summarise

    batch = min(max(spec.parity_batch, spec.batch[0]), spec.batch[2])
    try:
        candidates = load_graph_backends(folder, manifest)
    except (BackendError, ImportError) as e:
        progress(f"  parity skipped: {e}")
        return {"skipped": str(e)}
    backend_name = next(iter(candidates.values())).name
    device = next(iter(candidates.values())).device
    reference = torch_backends(models, spec.graphs, "fp32", spec.samples, device=device)
    out: dict = {"backend": backend_name, "reference": "torch fp32", "batch": batch, "graphs": {}}
    for g in spec.graphs:
        feeds = adapters.example_inputs(g, batch, models.cfg, spec.rows(g), seed=100, device=device)
        diffs = compare_backends(reference[g], candidates[g], feeds)
        out["graphs"][g] = summarise(diffs)
        progress(f"  {g:<7} " + "  ".join(d.line().replace("  ", " ") for d in diffs.values()))
    if spec.stochastic:
        out["loop"] = stochastic_parity(models, candidates, spec, batch, device)
        loop = out["loop"]
        progress(
            f"  loop    Q={spec.samples} T={spec.steps}: tokens {loop['tokens_mismatched']}/{loop['tokens_numel']} differ, "
            f"verts max {loop['verts_max_abs']:.3g}"
        )
    return out


def stochastic_parity(models: Models, backends: dict, spec: ExportSpec, batch: int, device, seed: int = 7) -> dict:
    """The full T-step loop over `backends` against `Mega.generate` + decode, fed the same noise.

    The noise is drawn once on the CPU (in `Mega.generate`'s order) and passed pre-scaled to both, so
    the comparison does not depend on which device's generator the backend would use.
    """
    from engines.runner import MegaRunner
    from train import sampling

    cfg = models.cfg
    temperature = cfg.temperature if spec.temperature is None else spec.temperature
    images = adapters.example_inputs("encode", batch, cfg, seed=101)["images"]
    rows, n, s = batch * spec.samples, cfg.seq_length, cfg.num_embeddings
    g = torch.Generator().manual_seed(seed)
    noise = []
    for t in range(1, spec.steps + 1):
        temp = sampling.step_temperature(t, spec.steps, temperature)
        noise.append((temp * sampling.gumbel((rows, n, s), g), temp * sampling.gumbel((rows, n), g)))
    with torch.inference_mode():
        ref, _ = models.full.generate(images, samples=spec.samples, steps=spec.steps, temperature=temperature, noise=noise)
        ref_verts = models.mesh_vqvae.decode(ref.tokens)
    runner = MegaRunner(backends, cfg.seq_length, cfg.num_embeddings, spec.samples, spec.steps, temperature)
    got = runner.stochastic(images.to(device), noise=noise)
    ne = got.tokens.cpu().long() != ref.tokens
    return {
        "seed": seed,
        "tokens_mismatched": int(ne.sum()),
        "tokens_numel": ne.numel(),
        "verts_max_abs": float((got.verts.cpu() - ref_verts).abs().max()),
        "rot6d_max_abs": float((got.rot6d.cpu() - ref.rot6d[:: spec.samples]).abs().max()),
        "cam_max_abs": float((got.cam.cpu() - ref.cam_crop[:: spec.samples]).abs().max()),
    }
