"""Model benchmarks: deterministic crops/s, Mesh-VQ-VAE decode ms, stochastic ms per crop.

Figures come from wall-clock timing after warm-up under `torch.inference_mode`, with the median of
several repeats (CUDA is synchronised around each repeat when the model runs on a GPU). Random
weights: speed does not depend on the values.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field


@dataclass
class BenchResult:
    name: str
    batch: int
    ms: float  # median wall time per call
    per_item_ms: float
    items_per_s: float
    repeats: int
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        extra = "".join(f"  {k}={v}" for k, v in self.extra.items())
        return (
            f"{self.name:<28} batch {self.batch:>3}  {self.ms:9.1f} ms/call  "
            f"{self.per_item_ms:8.1f} ms/item  {self.items_per_s:8.2f} items/s{extra}"
        )


def _time(fn, repeats: int, warmup: int, device) -> list[float]:
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _result(name, batch, times, items, **extra) -> BenchResult:
    ms = statistics.median(times)
    return BenchResult(name, batch, ms, ms / items, 1000.0 * items / ms, len(times), extra)


def bench_model(
    config_name: str = "mega_hrnet",
    batches=(1, 8),
    samples: int = 8,
    steps: int = 5,
    repeats: int = 5,
    warmup: int = 1,
    device: str = "cpu",
    stochastic: bool = True,
    optimize: bool = True,
    precision: str = "fp32",
    assets_dir=None,
    progress=print,
) -> list[BenchResult]:
    """The figures of issue #2: deterministic MEGA, Mesh-VQ-VAE decode, stochastic Q x T per crop."""
    import torch

    from train.config import MegaConfig, MeshVQVAEConfig, builtin_config
    from train.model.mega import Mega
    from train.model.mesh_vqvae import MeshVQVAE

    dev = torch.device(device)
    cfg = builtin_config(config_name, MegaConfig)
    results: list[BenchResult] = []
    torch.manual_seed(0)
    import contextlib

    from train.model.inference import prepare_for_inference

    # bf16 autocast: a speed option (oneDNN avx512_bf16 / tensor cores), not exact to fp32
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(dev.type, dtype=half)) if half is not None else contextlib.nullcontext
    with torch.inference_mode():
        det = Mega(cfg, with_encoder=False).eval().to(dev)
        if optimize:
            det = prepare_for_inference(det)
        vq = MeshVQVAE.from_assets(builtin_config("mesh_vqvae", MeshVQVAEConfig), assets_dir).eval().to(dev)
        for b in batches:
            images = torch.randn(b, 3, cfg.input_height, cfg.input_width, device=dev)
            tokens = torch.randint(0, cfg.num_embeddings, (b, cfg.seq_length), device=dev)
            if optimize:
                images = images.contiguous(memory_format=torch.channels_last)

            def run_det():
                with autocast():
                    return det(images)

            r = _result("deterministic (MEGA)", b, _time(run_det, repeats, warmup, dev), b, precision=precision)
            progress(r.line())
            results.append(r)
            # the mesh decoder stays fp32 (its output is the user's mesh in mm)
            r = _result("mesh-vqvae decode", b, _time(lambda: vq.decode(tokens), repeats, warmup, dev), b)
            progress(r.line())
            results.append(r)
            r = _result(
                "deterministic + decode", b, _time(lambda: vq.decode(run_det().tokens), repeats, warmup, dev), b
            )
            progress(r.line())
            results.append(r)
        del det
        if stochastic:
            full = Mega(cfg, with_encoder=True).eval().to(dev)
            image = torch.randn(1, 3, cfg.input_height, cfg.input_width, device=dev)
            if optimize:
                full = prepare_for_inference(full)
                image = image.contiguous(memory_format=torch.channels_last)
            gen = torch.Generator(device=dev).manual_seed(0)

            def run():
                with autocast():
                    out, _ = full.generate(image, samples=samples, steps=steps, generator=gen)
                return vq.decode(out.tokens)

            r = _result(
                f"stochastic Q={samples} T={steps} +decode",
                1,
                _time(run, max(2, repeats // 2), warmup, dev),
                1,
                samples=samples,
                steps=steps,
            )
            progress(r.line())
            results.append(r)
    return results


def results_json(results: list[BenchResult], **meta) -> dict:
    return {"meta": meta, "results": [asdict(r) for r in results]}
