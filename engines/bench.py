"""`mega-rt bench model`: deterministic crops/s, Mesh-VQ-VAE decode ms, stochastic ms per crop.

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


def time_calls(fn, repeats: int, warmup: int, device) -> list[float]:
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


def bench_result(name, batch, times, items, **extra) -> BenchResult:
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
    """The PyTorch MEGA itself: deterministic crops/s, Mesh-VQ-VAE decode ms, stochastic Q x T per crop.

    With `optimize` the models are the ones the video pipeline runs (`engines.models.prepare_for_serving`:
    BatchNorm folded, channels_last), fed NCHW crops as the cropper makes them.
    """
    import contextlib

    import torch

    from engines.models import ModelSource, build_models, prepare_for_serving
    from train.config import MegaConfig, builtin_config

    dev = torch.device(device)
    cfg = builtin_config(config_name, MegaConfig)
    results: list[BenchResult] = []
    models = build_models(ModelSource(cfg, seed=0), assets_dir)
    if optimize:
        models = prepare_for_serving(models, warn=progress)
    # bf16 autocast: a speed option (oneDNN avx512_bf16 / tensor cores), not exact to fp32
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(dev.type, dtype=half)) if half is not None else contextlib.nullcontext
    with torch.inference_mode():
        oneshot = models.oneshot.to(dev)
        vq = models.mesh_vqvae.to(dev)
        for b in batches:
            images = torch.randn(b, 3, cfg.input_height, cfg.input_width, device=dev)
            tokens = torch.randint(0, cfg.num_embeddings, (b, cfg.seq_length), device=dev)

            def run_oneshot():
                with autocast():
                    return oneshot(images)

            r = bench_result(
                "deterministic (MEGA)", b, time_calls(run_oneshot, repeats, warmup, dev), b, precision=precision
            )
            progress(r.line())
            results.append(r)
            # the mesh decoder stays fp32 (its output is the user's mesh in mm)
            r = bench_result("mesh-vqvae decode", b, time_calls(lambda: vq.decode(tokens), repeats, warmup, dev), b)
            progress(r.line())
            results.append(r)
            r = bench_result(
                "deterministic + decode",
                b,
                time_calls(lambda: vq.decode(run_oneshot().tokens), repeats, warmup, dev),
                b,
            )
            progress(r.line())
            results.append(r)
        if stochastic:
            full = models.full.to(dev)
            image = torch.randn(1, 3, cfg.input_height, cfg.input_width, device=dev)
            gen = torch.Generator(device=dev).manual_seed(0)

            def run():
                with autocast():
                    out, _ = full.generate(image, samples=samples, steps=steps, generator=gen)
                return vq.decode(out.tokens)

            r = bench_result(
                f"stochastic Q={samples} T={steps} +decode",
                1,
                time_calls(run, max(2, repeats // 2), warmup, dev),
                1,
                samples=samples,
                steps=steps,
            )
            progress(r.line())
            results.append(r)
    return results


def results_json(results: list[BenchResult], **meta) -> dict:
    return {"meta": meta, "results": [asdict(r) for r in results]}
