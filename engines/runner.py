"""MEGA inference over backends: one `oneshot` launch per batch, or the stochastic host loop.

The stochastic loop is the MaskGIT pattern of NVIDIA's diffusion demos: `encode` once per crop (its
image tokens come out repeated Q times, so the Q samples ride the batch dimension), then `step` T
times with the noise drawn here, then `mesh` once. The noise is drawn with `train.sampling.gumbel` in
the same order as `Mega.generate` draws it (token noise, then confidence noise, per step), so the same
generator seed gives the same samples on every backend; or it is passed in (replayed official noise).
Every tensor of the loop keeps its shape from step to step, so the whole loop can be captured in one
CUDA graph on backends that keep fixed buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from train import sampling


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
    ):
        self.backends = backends
        self.seq_length = seq_length
        self.codebook_size = codebook_size
        self.samples = samples
        self.steps = steps
        self.temperature = temperature

    @property
    def stochastic_ready(self) -> bool:
        return {"encode", "step", "mesh"} <= set(self.backends)

    def deterministic(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if "oneshot" not in self.backends:
            raise KeyError("this engine has no oneshot graph; export without --stochastic")
        return self.backends["oneshot"].run({"images": images})

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
        `timings`, when given, receives wall-clock ms per stage (encode, step, mesh)."""
        import time

        if not self.stochastic_ready:
            raise KeyError("this engine has no encode/step/mesh graphs; export with --stochastic")
        temperature = self.temperature if temperature is None else temperature
        steps, n, s = self.steps, self.seq_length, self.codebook_size
        counts = list(counts) if counts is not None else sampling.visible_counts(n, steps)
        step_backend = self.backends["step"]
        device = step_backend.device
        # synchronise only to time the stages: a CUDA-graph capture of this loop must not sync
        timed = timings is not None and device.type == "cuda"
        sync = (lambda: torch.cuda.synchronize(device)) if timed else (lambda: None)
        clock = {"encode": 0.0, "step": 0.0, "mesh": 0.0}

        t0 = time.perf_counter()
        enc = self.backends["encode"].run({"images": images})
        image_tokens = enc["image_tokens"].to(device)
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
                # same draws, same order as train.sampling.generate
                token_noise = sampling.gumbel((rows, n, s), generator, device)
                confidence_noise = sampling.gumbel((rows, n), generator, device)
                scale = sampling.step_temperature(t, steps, temperature)
            out = step_backend.run(
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

    def capture_stochastic(self, images: torch.Tensor, temperature: float | None = None):
        """Capture encode + T steps (noise drawn on the device) + mesh in one CUDA graph.

        Returns `replay(images) -> StochasticResult` for this batch size: it copies the crops into
        the captured input and replays the graph; the result tensors are the graph's static outputs
        (overwritten by the next replay). Noise comes from the default CUDA generator, whose state
        CUDA graphs advance on every replay (seed it with torch.cuda.manual_seed). Needs backends that
        run on the GPU without host synchronisation: torch (eager) or tensorrt (not onnxruntime).
        """
        device = self.backends["step"].device
        if device.type != "cuda" or any(b.name == "onnxruntime" for b in self.backends.values()):
            raise ValueError("capturing the loop needs CUDA torch or tensorrt backends")
        static_images = images.to(device).clone()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up: lazy initialisation must happen outside the capture
            self.stochastic(static_images, temperature=temperature)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            result = self.stochastic(static_images, temperature=temperature)

        def replay(new_images: torch.Tensor) -> StochasticResult:
            static_images.copy_(new_images)
            graph.replay()
            return result

        return replay
