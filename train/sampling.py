"""MEGA's mask schedules and sampling as small pure torch functions.

Randomness is always explicit: a `torch.Generator` or noise tensors passed in, so the same seed gives
the same mesh, and the same math can be exported with noise as a graph input.

Paper (§3.4) vs official `generate()` — we follow the paper:
- after step t of T, n_t = floor(N (1 - cos(pi t / 2T))) tokens are visible, and all N after step T.
  The official code computes masked = max(1, floor(N cos(pi t / 2T))) from batch row 0 and so ends
  with one token still masked (set to 0). Tests drive `sample_step` with the official counts to prove
  each step matches; the product uses `visible_counts`.
- noise temperature at step t is A (1 - t/T).
- candidates: Gumbel-max over the logits; which to reveal: the raw logit of the chosen candidate plus
  Gumbel noise (already-visible positions have +inf confidence, so revealed tokens never change).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

MASKED = 0  # placeholder token id stored at masked positions (the official code uses 0 too)


def pretrain_mask_count(num_tokens: int, tau: torch.Tensor) -> torch.Tensor:
    """Number of masked tokens M = floor(N cos(pi tau / 2)) for tau ~ U[0,1) (pre-training schedule)."""
    return torch.floor(num_tokens * torch.cos(math.pi * tau / 2)).long()


def visible_counts(num_tokens: int, steps: int) -> list[int]:
    """[n_1, ..., n_T]: tokens visible after each step; n_T = N (paper schedule)."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    counts = [math.floor(num_tokens * (1 - math.cos(math.pi * t / (2 * steps)))) for t in range(1, steps + 1)]
    counts[-1] = num_tokens  # cos(pi/2) is not exactly 0 in floating point
    return counts


def official_visible_counts(num_tokens: int, steps: int) -> list[int]:
    """What the official generate() leaves visible after each step (for parity tests only)."""
    out, masked_now = [], num_tokens
    for step in range(steps):
        ratio = (step + 1) / steps
        mask_len = math.floor(num_tokens * math.cos(ratio * math.pi * 0.5))
        mask_len = max(1, min(masked_now - 1, mask_len))
        out.append(num_tokens - mask_len)
        masked_now = mask_len
    return out


def step_temperature(step: int, steps: int, max_temperature: float) -> float:
    """A (1 - t/T) for step t in 1..T."""
    return max_temperature * (1.0 - step / steps)


def gumbel(
    shape: Sequence[int], generator: torch.Generator | None = None, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Standard Gumbel noise -log(-log U), U in (0,1), from an explicit generator."""
    u = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    return -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - torch.finfo(dtype).eps)))


def reveal_threshold_mask(confidence: torch.Tensor, num_visible: torch.Tensor | int) -> torch.Tensor:
    """Positions whose confidence is strictly above the (num_visible+1)-th largest: the top `num_visible`.

    Fixed shapes only (a full sort and a gather), so it exports; ties at the cut are left masked, as
    in the official code. num_visible == N reveals everything.
    """
    b, n = confidence.shape
    padded = torch.cat([confidence, confidence.new_full((b, 1), -torch.inf)], dim=1)
    ordered = torch.sort(padded, dim=1, descending=True).values
    k = torch.as_tensor(num_visible, device=confidence.device, dtype=torch.long).reshape(-1, 1).expand(b, 1)
    threshold = torch.gather(ordered, 1, k)
    return confidence > threshold


def sample_step(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    visible: torch.Tensor,
    num_visible: torch.Tensor | int,
    token_noise: torch.Tensor,
    confidence_noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One MaskGIT-style step.

    logits (B,N,S); tokens (B,N) long; visible (B,N) bool; num_visible = n_t after this step;
    token_noise (B,N,S) and confidence_noise (B,N) are Gumbel noise already scaled by the temperature.
    Returns (tokens, visible) with masked positions holding MASKED.
    """
    candidates = torch.argmax(logits + token_noise, dim=-1)
    candidate_logit = torch.gather(logits, -1, candidates.unsqueeze(-1)).squeeze(-1)
    candidates = torch.where(visible, tokens, candidates)
    confidence = torch.where(visible, torch.full_like(candidate_logit, torch.inf), candidate_logit.float())
    confidence = confidence + confidence_noise
    new_visible = reveal_threshold_mask(confidence, num_visible)
    return torch.where(new_visible, candidates, torch.full_like(candidates, MASKED)), new_visible


StepNoise = tuple[torch.Tensor, torch.Tensor]


def generate(
    logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch: int,
    num_tokens: int,
    codebook_size: int,
    steps: int,
    max_temperature: float,
    generator: torch.Generator | None = None,
    noise: Sequence[StepNoise] | None = None,
    counts: Sequence[int] | None = None,
    device=None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """T-step stochastic decoding.

    `logits_fn(tokens, visible) -> (B,N,S)` runs the network. Noise per step comes from `noise`
    (pre-scaled pairs, e.g. replayed official noise) or is drawn from `generator` and scaled by
    A (1 - t/T). `counts` overrides the visible-count schedule (parity tests).
    Returns the final tokens (B,N) and the tokens after every step (0 = still masked).
    """
    counts = list(counts) if counts is not None else visible_counts(num_tokens, steps)
    if len(counts) != steps:
        raise ValueError(f"need {steps} visible counts, got {len(counts)}")
    tokens = torch.full((batch, num_tokens), MASKED, dtype=torch.long, device=device)
    visible = torch.zeros((batch, num_tokens), dtype=torch.bool, device=device)
    history = []
    for t in range(1, steps + 1):
        logits = logits_fn(tokens, visible)
        if noise is not None:
            token_noise, confidence_noise = noise[t - 1]
        else:
            temp = step_temperature(t, steps, max_temperature)
            token_noise = temp * gumbel(logits.shape, generator, logits.device)
            confidence_noise = temp * gumbel(logits.shape[:2], generator, logits.device)
        tokens, visible = sample_step(logits, tokens, visible, counts[t - 1], token_noise, confidence_noise)
        history.append(tokens)
    return tokens, history
