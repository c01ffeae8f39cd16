"""The PyTorch models an engine is built from, and the torch backends over them.

    models = build_models(ModelSource(cfg, weights, mesh_weights))    # MEGA in both forms + Mesh-VQ-VAE
    backends = torch_backends(models, ["oneshot"], "fp16", device="cuda")
    models = prepare_for_serving(models)                              # BN folded, channels_last

`build_models` loads checkpoint files strictly (or draws random weights of a config from a seed) and
records which weights they are, so an engine's manifest can name them and `models_from_manifest` can
rebuild exactly the models an engine was exported from.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engines import adapters
from engines.manifest import EngineMismatch, Manifest

NUM_VERTS = 6890


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
    oneshot: torch.nn.Module  # decoder-only Mega with the folded empty encoder (deterministic mode)
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
    from train.model.mega import Mega, decoder_only
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
                raise EngineMismatch(
                    f"{weights[key].get('path')}: weights changed since the engine was built (sha256 differs)"
                )
    oneshot = decoder_only(full)
    return Models(source, cfg, mesh_cfg, full, oneshot, mesh_vqvae.eval(), weights, weights_hash(weights, cfg))


def random_weights(seed: int) -> dict:
    """The `weights` record of random models (what build_models writes without checkpoint files)."""
    return {"mega": {"random_seed": seed}, "mesh": {"random_seed": seed + 1}}


def weights_hash(weights: dict, cfg) -> str:
    """Short hash naming the weights: file sha256s, or the seeds (and config) of random weights."""
    from train.config import config_hash

    blob = "|".join(
        f"{k}:{v.get('sha256') or 'random-' + str(v['random_seed']) + '-' + config_hash(cfg)}"
        for k, v in sorted(weights.items())
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
        raise EngineMismatch(
            f"rebuilt models do not match the engine's weights hash; rebuild: {manifest.rebuild_command}"
        )
    return models


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def prepare_for_serving(models: Models, warn=_stderr) -> Models:
    """The network the pipeline runs: the shared backbone with BatchNorm folded into the convolutions
    and in channels_last layout (`train.model.inference.prepare_for_inference`), for both MEGA forms.

    The same outputs within float rounding, one memory pass less per conv. When the rewrite cannot be
    applied, `warn` gets one line saying so and the models keep their plain backbone.
    """
    from train.model.inference import prepare_for_inference

    try:
        backbone = prepare_for_inference(models.full.backbone)
    except RuntimeError as e:
        warn(
            f"warning: BatchNorm folding / channels_last not applied to the {models.cfg.name} backbone ({e}); running it unfolded"
        )
        return models
    models.full.backbone = backbone
    models.oneshot.backbone = backbone
    return models


def graph_module(
    graph: str, models: Models, precision: str = "fp32", samples: int = 1, casts: dict | None = None
) -> torch.nn.Module:
    """The export adapter of `graph`, in `precision` (a cast copy; the models stay fp32).

    `casts`: a dict shared by the calls of one set of graphs, so that the step graphs of one loop
    share one cast copy of MEGA instead of one each."""
    casts = {} if casts is None else casts

    def cast(m):
        key = (id(m), precision)
        if key not in casts:
            casts[key] = adapters.cast_for_precision(m, precision)
        return casts[key]

    # bf16 keeps 8 mantissa bits, ~4 mm at a metre: the mesh decoder (token ids in, vertices out) stays
    # fp32 there; fp16 (~0.5 mm) is cast, and its error is part of the measured vertex error
    cast_mesh = (lambda m: m) if precision == "bf16" else cast  # noqa: E731
    if graph == "oneshot":
        return adapters.OneShotGraph(cast(models.oneshot), cast_mesh(models.mesh_vqvae)).eval()
    if graph == "encode":
        return adapters.EncodeGraph(cast(models.full), samples).eval()
    if graph == "step":
        return adapters.StepGraph(cast(models.full)).eval()
    if adapters.fixed_step_count(graph) is not None:
        return adapters.StepGraph(cast(models.full), adapters.fixed_step_count(graph)).eval()
    if graph == "mesh":
        return adapters.MeshDecoderGraph(cast_mesh(models.mesh_vqvae)).eval()
    raise KeyError(f"unknown graph {graph!r} ({', '.join(adapters.GRAPHS)})")


def torch_backends(
    models: Models, graphs, precision: str = "fp32", samples: int = 1, device=None, compile=None, cuda_graphs=False
) -> dict:
    """graph name -> TorchBackend running that graph's adapter over `models`.

    `graphs` may name fixed-length step graphs (`adapters.fixed_step_graphs(N, T)`); `compile` is a
    torch.compile mode ("default", "reduce-overhead", "max-autotune") or None/False for eager (True
    means "default"); `cuda_graphs` captures one CUDA graph per input shape (see TorchBackend)."""
    from engines.backends.torch_backend import TorchBackend

    models = models_on(models, device)
    casts: dict = {}
    out = {}
    for g in graphs:
        ins, outs = adapters.graph_specs(g, models.cfg, NUM_VERTS)
        module = graph_module(g, models, precision, samples, casts)
        out[g] = TorchBackend(module, ins, outs, g, device, compile, cuda_graphs)
    return out


def models_on(models: Models, device) -> Models:
    """`models` on `device`: the same objects when they are there already, else one copy of all three
    (the two MEGA forms keep sharing their backbone and decoder), so that the graphs of one runner
    share one copy and the caller's models stay where they are."""
    import copy
    import dataclasses

    from engines.backends.torch_backend import module_device, normalise_device

    if device is None or module_device(models.full) == normalise_device(device):
        return models
    full, oneshot, mesh_vqvae = copy.deepcopy((models.full, models.oneshot, models.mesh_vqvae))
    return dataclasses.replace(
        models, full=full.to(device), oneshot=oneshot.to(device), mesh_vqvae=mesh_vqvae.to(device)
    )


def normalisation(models: Models) -> dict:
    """The input normalisation the crops of these models must have (written into every manifest)."""
    bb = models.full.backbone
    return {
        "layout": "NCHW float32 RGB, (x/255 - mean) / std",
        "mean": list(bb.mean),
        "std": list(bb.std),
        "input_hw": [models.cfg.input_height, models.cfg.input_width],
    }
