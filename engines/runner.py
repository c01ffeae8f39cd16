"""MEGA inference over backends: one `oneshot` launch per batch, or the stochastic host loop.

The stochastic loop is the MaskGIT pattern of NVIDIA's diffusion demos: `encode` once per crop (its
image tokens come out repeated Q times, so the Q samples ride the batch dimension), then `step` T
times with the noise drawn here, then `mesh` once. The noise is drawn with `train.sampling.gumbel` in
the same order as `Mega.generate` draws it (token noise, then confidence noise, per step), so the same
generator seed gives the same samples on every backend; or it is passed in (replayed official noise).
Every tensor of the loop keeps its shape from step to step, so the whole loop can be captured in one
CUDA graph on backends that keep fixed buffers.

Step graphs: each step runs `step_v{K}` when the backends have the fixed-length graph for the K tokens
visible before it (`engines.adapters.fixed_step_graphs`: the encoder over 1 + K positions), else the
full-length `step` graph (all N positions, key-padding mask). Both give the same tokens.

Batch buckets (`buckets`, e.g. BATCH_BUCKETS): a batch of B crops is padded to the smallest bucket
>= B, so that static-shape backends (CUDA graphs, torch.compile, TensorRT profiles) see a handful of
shapes; the padded rows are dropped before anything is returned, and their noise is zero, so the real
rows draw exactly the noise an unpadded call draws (same seed, same samples as without buckets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engines.adapters import fixed_step_name
from train import sampling

# crops per call the pipeline's static-shape backends are built for; larger batches run in chunks of 64
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def bucket_for(batch: int, buckets=BATCH_BUCKETS) -> int:
    """The smallest bucket holding `batch` rows (ValueError above the largest: chunk first)."""
    for b in sorted(buckets):
        if b >= batch:
            return b
    raise ValueError(f"batch of {batch} is above the largest bucket {max(buckets)}: split it into chunks first")


def pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """`x` with zero rows appended up to `rows` (itself when it has them already)."""
    missing = rows - x.shape[0]
    if missing <= 0:
        return x
    return torch.cat([x, x.new_zeros((missing, *x.shape[1:]))])


@dataclass
class StochasticResult:
    tokens: torch.Tensor  # (B*Q, N) int32, crop-major
    verts: torch.Tensor  # (B*Q, V, 3) canonical
    rot6d: torch.Tensor  # (B, 6) per crop (the rotation/camera head never sees the tokens)
    rotmat: torch.Tensor  # (B, 3, 3)
    cam_crop: torch.Tensor  # (B, 3) weak-perspective camera of the crop
    history: list[torch.Tensor]  # tokens after each step, 0 where still masked


class MegaRunner:
    """Holds the backends of one engine folder (any mix of torch / onnxruntime / tensorrt)."""

    def __init__(
        self,
        backends: dict,
        seq_length: int,
        codebook_size: int,
        samples: int = 1,
        steps: int = 5,
        temperature: float = 1.0,
        buckets: tuple[int, ...] | None = None,
        graph_loop: bool = False,
    ):
        """`buckets`: pad batches to these sizes (None: run every batch size as it comes).
        `graph_loop`: on CUDA, capture the whole stochastic loop once per bucket and replay it
        (`capture_stochastic`); the backends themselves must then run eagerly (no nested capture)."""
        self.backends = backends
        self.seq_length = seq_length
        self.codebook_size = codebook_size
        self.samples = samples
        self.steps = steps
        self.temperature = temperature
        self.buckets = tuple(sorted(buckets)) if buckets else None
        self.graph_loop = graph_loop
        self._loops: dict[tuple, object] = {}

    @property
    def stochastic_ready(self) -> bool:
        names = set(self.backends)
        has_step = "step" in names or any(n.startswith("step_v") for n in names)
        return {"encode", "mesh"} <= names and has_step

    def _bucket(self, batch: int) -> int:
        return batch if self.buckets is None else bucket_for(batch, self.buckets)

    def step_backend(self, visible_before: int):
        """The fixed-length step graph for `visible_before` visible tokens, else the full-length one."""
        backend = self.backends.get(fixed_step_name(visible_before), self.backends.get("step"))
        if backend is None:
            raise KeyError(
                f"no step graph for {visible_before} visible tokens (have {', '.join(sorted(self.backends))}); "
                "build the fixed-length step graphs for these steps, or the full-length step graph"
            )
        return backend

    def deterministic(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if "oneshot" not in self.backends:
            raise KeyError("this engine has no oneshot graph; export without --stochastic")
        batch = images.shape[0]
        out = self.backends["oneshot"].run({"images": pad_rows(images, self._bucket(batch))})
        return out if self._bucket(batch) == batch else {k: v[:batch] for k, v in out.items()}

    def stochastic(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
        noise=None,
        counts=None,
        timings: dict | None = None,
    ) -> StochasticResult:
        """Q samples per crop in T steps. `noise`: per step (token_noise, confidence_noise) already
        scaled by the temperature (the graph then multiplies by 1); `counts`: override n_t (tests).
        `timings`, when given, receives wall-clock ms per stage (encode, step, mesh).

        With `graph_loop` (and neither `noise`, `counts` nor `timings`) the loop of this batch's
        bucket replays as one CUDA graph, captured on first use with `generator` registered."""
        if not self.stochastic_ready:
            raise KeyError("this engine has no encode/step/mesh graphs; export with --stochastic")
        temperature = self.temperature if temperature is None else temperature
        batch = images.shape[0]
        bucket = self._bucket(batch)
        padded = pad_rows(images, bucket)
        if self.graph_loop and noise is None and counts is None and timings is None:
            key = (bucket, temperature, padded.dtype)
            if key not in self._loops:
                self._loops[key] = self.capture_stochastic(padded, temperature, generator)
            result = self._loops[key](padded)
        else:
            result = self._loop(padded, batch * self.samples, generator, temperature, noise, counts, timings)
        return result if bucket == batch else _first_rows(result, batch, self.samples)

    def _loop(self, images, real_rows, generator, temperature, noise, counts, timings) -> StochasticResult:
        """The host loop over the rows of `images`; rows past `real_rows` (bucket padding) get zero noise."""
        import time

        steps, n, s = self.steps, self.seq_length, self.codebook_size
        counts = list(counts) if counts is not None else sampling.visible_counts(n, steps)
        if len(counts) != steps:
            raise ValueError(f"need {steps} visible counts, got {len(counts)}")
        device = self.step_backend(0).device
        # synchronise only to time the stages: a CUDA-graph capture of this loop must not sync
        timed = timings is not None and device.type == "cuda"
        sync = (lambda: torch.cuda.synchronize(device)) if timed else (lambda: None)
        clock = {"encode": 0.0, "step": 0.0, "mesh": 0.0}

        t0 = time.perf_counter()
        enc = self.backends["encode"].run({"images": images})
        # a copy: backends may reuse the buffer (inductor's CUDA graphs overwrite it on their next call)
        image_tokens = enc["image_tokens"].to(device, copy=True)
        pose = {k: enc[k].clone() for k in ("rot6d", "rotmat", "cam_crop")}
        sync()
        clock["encode"] = time.perf_counter() - t0
        rows = image_tokens.shape[0]
        tokens = torch.zeros(rows, n, dtype=torch.int32, device=device)
        visible = torch.zeros(rows, n, dtype=torch.bool, device=device)
        history = []
        t0 = time.perf_counter()
        for t in range(1, steps + 1):
            if noise is not None:
                token_noise, confidence_noise = (x.to(device) for x in noise[t - 1])
                scale = 1.0
            else:
                # same draws, same order as train.sampling.generate, for the real rows only
                token_noise = sampling.gumbel((real_rows, n, s), generator, device)
                confidence_noise = sampling.gumbel((real_rows, n), generator, device)
                scale = sampling.step_temperature(t, steps, temperature)
            token_noise, confidence_noise = pad_rows(token_noise, rows), pad_rows(confidence_noise, rows)
            out = self.step_backend(counts[t - 2] if t > 1 else 0).run(
                {
                    "image_tokens": image_tokens,
                    "tokens": tokens,
                    "visible": visible,
                    "token_noise": token_noise,
                    "confidence_noise": confidence_noise,
                    "temperature": torch.full((rows,), scale, dtype=torch.float32, device=device),
                    "num_visible": torch.full((rows,), counts[t - 1], dtype=torch.int32, device=device),
                }
            )
            # backends may reuse output buffers: the next step reads these as inputs
            tokens, visible = out["next_tokens"].clone(), out["next_visible"].clone()
            history.append(tokens)
        sync()
        clock["step"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        verts = self.backends["mesh"].run({"tokens": tokens})["verts"].clone()
        sync()
        clock["mesh"] = time.perf_counter() - t0
        if timings is not None:
            timings.update({k: 1000 * v for k, v in clock.items()})
        return StochasticResult(tokens, verts, pose["rot6d"], pose["rotmat"], pose["cam_crop"], history)

    def capture_stochastic(
        self, images: torch.Tensor, temperature: float | None = None, generator: torch.Generator | None = None
    ):
        """Capture encode + T steps (noise drawn on the device) + mesh in one CUDA graph.

        Returns `replay(images) -> StochasticResult` for this batch size (all rows of `images`, no
        bucket padding here): it copies the crops into the captured input and replays the graph; the
        result tensors are the graph's static outputs (overwritten by the next replay).

        Noise: with `generator` (a CUDA torch.Generator, e.g. the Regressor's seeded one) the graph is
        registered with it (CUDAGraph.register_generator_state), so every replay draws from its current
        state and advances it; its state before the warm-up is restored after the capture, so the first
        replay draws what the first eager call would. Without one, the device's default CUDA generator
        is used (seed it with torch.cuda.manual_seed), advanced the same way. Needs backends that run
        on the GPU without host synchronisation: torch (eager) or tensorrt (not onnxruntime).
        """
        device = self.step_backend(0).device
        if device.type != "cuda" or any(b.name == "onnxruntime" for b in self.backends.values()):
            raise ValueError("capturing the loop needs CUDA torch or tensorrt backends")
        temperature = self.temperature if temperature is None else temperature
        rows = images.shape[0] * self.samples
        static_images = images.to(device).clone()
        state = generator.get_state() if generator is not None else None
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up: lazy initialisation must happen outside the capture
            self._loop(static_images, rows, generator, temperature, None, None, None)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if generator is not None:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            result = self._loop(static_images, rows, generator, temperature, None, None, None)
        if state is not None:
            generator.set_state(state)

        def replay(new_images: torch.Tensor) -> StochasticResult:
            static_images.copy_(new_images)
            graph.replay()
            return result

        return replay


def _first_rows(result: StochasticResult, batch: int, samples: int) -> StochasticResult:
    """The rows of the first `batch` crops (bucket padding dropped); views, no copies."""
    rows = batch * samples
    return StochasticResult(
        result.tokens[:rows],
        result.verts[:rows],
        result.rot6d[:batch],
        result.rotmat[:batch],
        result.cam_crop[:batch],
        [h[:rows] for h in result.history],
    )
