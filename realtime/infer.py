"""The Regressor stage: all crops of a batch through MEGA on one backend (engines/), in chunks of the
backend's batch range; deterministic (one `oneshot` launch per chunk) or stochastic (Q samples x T steps,
`engines.runner.MegaRunner.stochastic`, reduced here to the mean mesh and its per-vertex spread).

`load_models` decides which weights run: explicit files, the shipped demo weights
(`train/demo_weights/`), or - only when asked - random weights of a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from realtime.types import Crops, MeshPred


class WeightsMissing(RuntimeError):
    """No weights to run; the message says how to get them."""


class RegressorOptionError(ValueError):
    """Options that do not go together (CUDA graphs on a CPU, compile on an engine); one line for the user."""


NO_WEIGHTS = (
    "no MEGA weights: the demo weights are not installed (train/demo_weights/, built by "
    "`mega-rt train --recipe configs/recipes/synthetic_demo.yaml --package`); pass --weights MEGA.pt --mesh-weights TOKENIZER.pt "
    "(official ones: `mega-rt fetch --weights official`), or --random-weights to test the plumbing"
)


def load_models(
    weights=None, mesh_weights=None, random_weights: bool = False, config=None, seed: int = 0, fast: bool = True
):
    """engines.models.Models from checkpoint files, the demo weights, or random weights of `config`;
    with `fast`, the served form (`engines.models.prepare_for_serving`: BN folded, channels_last).

    Returns (models, description)."""
    from engines.models import ModelSource, build_models, prepare_for_serving

    if random_weights:
        source = ModelSource(config, None, None, seed)
        what = f"random weights ({config.name}, seed {seed})"
    else:
        if weights is None:
            from train.checkpoint import CheckpointError
            from train.demo import demo_weights

            try:
                weights, demo_mesh = demo_weights()
            except CheckpointError:
                raise WeightsMissing(NO_WEIGHTS) from None
            mesh_weights = mesh_weights or demo_mesh
            what = "demo weights (synthetic training, train/demo_weights)"
        else:
            what = f"weights {Path(weights).name}"
        if mesh_weights is None:
            raise WeightsMissing(
                "--weights needs --mesh-weights (the Mesh-VQ-VAE tokenizer, e.g. MESH_VQVAE/mesh_vqvae_54)"
            )
        source = ModelSource(None, Path(weights), Path(mesh_weights))
    models = build_models(source)
    if fast:
        models = prepare_for_serving(models)
    return models, what


@dataclass(frozen=True)
class RegressorSpec:
    input_hw: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_focal: float  # the crop focal the model assumes (1000 for MEGA)
    max_batch: int  # crops per backend call


class Regressor:
    def __init__(self, runner, spec: RegressorSpec, samples: int = 1, seed: int = 0, device="cpu"):
        self.runner = runner
        self.spec = spec
        self.samples = samples
        self.stochastic = samples > 1
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __call__(self, crops: Crops) -> MeshPred:
        n = crops.images.shape[0]
        if n == 0:
            # on the regressor's device, so that nothing downstream moves an empty batch across
            z = partial(torch.zeros, device=self.device)
            return MeshPred(
                z(0, 1, 54, dtype=torch.int32),
                z(0, 3, 3),
                z(0, 3),
                z(0, 6890, 3),
                z(0, 6890) if self.stochastic else None,
            )
        parts = [self._run(crops.images[s : s + self.spec.max_batch]) for s in range(0, n, self.spec.max_batch)]
        cat = lambda i: torch.cat([p[i] for p in parts]) if parts[0][i] is not None else None  # noqa: E731
        return MeshPred(cat(0), cat(1), cat(2), cat(3), cat(4))

    def _run(self, images: torch.Tensor):
        if not self.stochastic:
            out = self.runner.deterministic(images)
            # backends may reuse output buffers: clone what we keep
            return (
                out["tokens"][:, None].clone(),
                out["rotmat"].clone(),
                out["cam_crop"].clone(),
                out["verts"].clone(),
                None,
            )
        res = self.runner.stochastic(images, generator=self.generator)
        b, q = images.shape[0], self.samples
        verts = res.verts.view(b, q, *res.verts.shape[1:])
        mean = verts.mean(1)
        std = (verts - mean[:, None]).square().sum(-1).mean(1).sqrt()
        return res.tokens.view(b, q, -1), res.rotmat, res.cam_crop, mean, std


def graph_options(device, backend: str, cuda_graphs: bool | None, compile: str | None) -> tuple[bool, str | None]:
    """(cuda_graphs, compile mode) for a run: CUDA graphs default on where the device is CUDA and the
    backend can replay them (torch, tensorrt); asking for them elsewhere, or for compile on another
    backend than torch, is a RegressorOptionError."""
    from engines.backends.base import BackendError
    from engines.backends.torch_backend import compile_mode

    cuda = torch.device(device).type == "cuda"
    if cuda_graphs and not cuda:
        raise RegressorOptionError(
            f"--cuda-graphs needs a CUDA device (the device is {device}); drop it or use --device cuda"
        )
    if cuda_graphs and backend == "onnxruntime":
        raise RegressorOptionError("--cuda-graphs applies to the torch and tensorrt backends, not onnxruntime")
    if cuda_graphs is None:
        cuda_graphs = cuda and backend in ("torch", "tensorrt")
    try:
        mode = compile_mode(compile)
    except BackendError as e:
        raise RegressorOptionError(str(e)) from None
    if mode is not None and backend != "torch":
        raise RegressorOptionError(f"--compile applies to the torch backend; a {backend} engine is compiled already")
    return cuda_graphs, mode


def build_regressor(models=None, backend: str = "torch", engine=None, samples: int = 1, steps: int | None = None, temperature: float | None = None,
                    max_batch: int = 32, device="cpu", seed: int = 0, threads: int | None = None, precision: str = "fp32",
                    cuda_graphs: bool | None = None, compile: str | None = None, fixed_steps: bool = True) -> Regressor:  # fmt: skip
    """A Regressor on the torch backend (from `models`) or on an exported engine folder.

    `cuda_graphs` (None: on where the device is CUDA): replay CUDA graphs, one per batch bucket
    (`engines.runner.BATCH_BUCKETS`; crops padded up to it, padded rows dropped), captured on first
    use: the oneshot graph per bucket, or the whole stochastic loop per bucket with the Regressor's
    seeded generator registered. `compile`: a torch.compile mode for the torch backend
    ("default", "reduce-overhead", "max-autotune"; inductor's own CUDA graphs replace ours in the
    last two). `fixed_steps`: the torch backend's stochastic steps run the fixed-length step graphs.
    """
    from engines.backends.torch_backend import INDUCTOR_GRAPH_MODES
    from engines.runner import BATCH_BUCKETS, MegaRunner

    cuda_graphs, compile = graph_options(device, backend, cuda_graphs, compile)
    # static shapes (graphs, compile) want few batch sizes: pad to buckets, at most 64 crops a call
    bucketed = cuda_graphs or compile is not None
    graph_loop = samples > 1 and cuda_graphs and compile not in INDUCTOR_GRAPH_MODES
    if bucketed:
        max_batch = min(max_batch, max(BATCH_BUCKETS))
    if engine is None:
        if backend != "torch":
            raise WeightsMissing(f"--backend {backend} needs --engine DIR (build one with `mega-rt export`)")
        from engines.adapters import fixed_step_graphs
        from engines.models import torch_backends

        cfg = models.cfg
        steps = steps or cfg.steps
        if samples > 1:
            step_graphs = fixed_step_graphs(cfg.seq_length, steps) if fixed_steps else ("step",)
            graphs = ["encode", *dict.fromkeys(step_graphs), "mesh"]
        else:
            graphs = ["oneshot"]
        # the stochastic loop is captured as a whole (graph_loop): its graphs run eagerly inside it
        backends = torch_backends(models, graphs, precision, samples, device, compile, cuda_graphs and not graph_loop)
        bb = models.full.backbone
        spec = RegressorSpec(
            (cfg.input_height, cfg.input_width), tuple(bb.mean), tuple(bb.std), cfg.crop_focal_length, max_batch
        )
        runner = MegaRunner(
            backends,
            cfg.seq_length,
            cfg.num_embeddings,
            samples,
            steps,
            cfg.temperature if temperature is None else temperature,
            buckets=BATCH_BUCKETS if bucketed else None,
            graph_loop=graph_loop,
        )
    else:
        from engines.load import load_runner
        from engines.manifest import Manifest

        manifest = Manifest.read(Path(engine))
        if samples > 1 and manifest.mode != "stochastic":
            raise WeightsMissing(
                f"{engine}: a deterministic engine; export with --stochastic --samples {samples} for --samples"
            )
        if samples > 1 and manifest.samples != samples:
            raise WeightsMissing(f"{engine}: built for {manifest.samples} samples, not {samples}")
        opts = {"threads": threads} if backend == "onnxruntime" else {}
        if backend == "tensorrt":
            opts["cuda_graphs"] = cuda_graphs and not graph_loop
        elif backend == "torch":
            opts.update(device=device, compile=compile, cuda_graphs=cuda_graphs and not graph_loop)
        runner = load_runner(engine, backend=backend, **opts)
        if steps:
            runner.steps = steps
        if temperature is not None:
            runner.temperature = temperature
        lo, hi = manifest.batch[0], manifest.batch[2]
        if bucketed:  # the buckets inside the engine's profile, and its largest batch
            runner.buckets = tuple(sorted({b for b in BATCH_BUCKETS if lo <= b <= hi} | {min(hi, max(BATCH_BUCKETS))}))
            runner.graph_loop = graph_loop
        norm = manifest.normalisation
        spec = RegressorSpec(
            tuple(norm["input_hw"]),
            tuple(norm["mean"]),
            tuple(norm["std"]),
            manifest.mega_config.get("crop_focal_length", 1000.0),
            min(max_batch, hi),
        )
        device = next(iter(runner.backends.values())).device
    return Regressor(runner, spec, samples, seed, device)
