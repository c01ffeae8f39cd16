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
    with torch.inference_mode():
        det = Mega(cfg, with_encoder=False).eval().to(dev)
        vq = MeshVQVAE.from_assets(builtin_config("mesh_vqvae", MeshVQVAEConfig), assets_dir).eval().to(dev)
        for b in batches:
            images = torch.randn(b, 3, cfg.input_height, cfg.input_width, device=dev)
            tokens = torch.randint(0, cfg.num_embeddings, (b, cfg.seq_length), device=dev)
            r = _result("deterministic (MEGA)", b, _time(lambda: det(images), repeats, warmup, dev), b)
            progress(r.line())
            results.append(r)
            r = _result("mesh-vqvae decode", b, _time(lambda: vq.decode(tokens), repeats, warmup, dev), b)
            progress(r.line())
            results.append(r)
            r = _result(
                "deterministic + decode", b, _time(lambda: vq.decode(det(images).tokens), repeats, warmup, dev), b
            )
            progress(r.line())
            results.append(r)
        del det
        if stochastic:
            full = Mega(cfg, with_encoder=True).eval().to(dev)
            image = torch.randn(1, 3, cfg.input_height, cfg.input_width, device=dev)
            gen = torch.Generator(device=dev).manual_seed(0)

            def run():
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
