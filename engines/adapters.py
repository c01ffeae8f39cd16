"""Export-only modules: tensor-only signatures, fixed shapes, no data-dependent branches, noise as inputs.

Four graphs cover both inference modes (DESIGN.md, style 6):

    oneshot images (B,3,H,W) f32 -> tokens (B,N) i32, rot6d (B,6), rotmat (B,3,3), cam_crop (B,3),
                                    verts (B,V,3) canonical
            backbone + decoder-only MEGA (folded empty encoder) + argmax + Mesh-VQ-VAE decode: one launch
    encode  images (B,3,H,W) f32 -> image_tokens (B*Q,L,D), rot6d (B,6), rotmat (B,3,3), cam_crop (B,3)
            the per-crop half of the stochastic mode; Q (samples) is baked in, so the image tokens come
            out already repeated crop-major and the Q samples ride the batch dimension of `step`
    step    image_tokens (R,L,D), tokens (R,N) i32, visible (R,N) bool, token_noise (R,N,S),
            confidence_noise (R,N), temperature (R,), num_visible (R,) i32
                               -> next_tokens (R,N) i32, next_visible (R,N) bool
            one MaskGIT step: the encoder over all N positions with a key-padding mask
            (`TokenEncoder.forward_padded`), the decoder, Gumbel-max candidates and the fixed-width
            reveal (`train.sampling.sample_step`, a 55-wide sort + gather + compare). The noise is
            standard Gumbel noise and is scaled by `temperature` inside the graph, so the host passes
            A(1 - t/T) per row and the same noise as `train.sampling.generate` draws.
    step_vK the same signature and outputs, for a step whose rows all show exactly K visible tokens:
            the encoder gathers those K and runs over 1 + K positions instead of N + 1 (static shapes, one
            graph per K; a T-step loop needs `fixed_step_graphs(N, T)`, e.g. K = 0, 2, 10, 22, 37)
    mesh    tokens (R,N) i32 -> verts (R,V,3): codebook lookup + Mesh-VQ-VAE decoder

Interfaces are precision-independent: inputs and outputs are float32 / int32 / bool whatever the
precision inside. Token ids are int32 because that is TensorRT's native index type; the graphs widen
them to int64 where torch indexing needs it.

Precision: `cast_for_precision` casts a copy of a module to fp16/bf16 for export, but keeps LayerNorm
and the attention softmax in fp32 (fp16 sums of squares over 1024 channels overflow; the softmax of
an fp16 score loses the small weights), and every graph computes the rotation matrix and the sampling
in fp32. TensorRT 11 builds strongly typed networks, so the precision written into the ONNX graph is
the precision the engine runs in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from train import sampling
from train.geometry import rot6d_to_matrix

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class GraphIO:
    """Names of a graph's inputs and outputs, in signature order (dim 0 of every tensor is the batch)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


GRAPHS: dict[str, GraphIO] = {
    "oneshot": GraphIO(("images",), ("tokens", "rot6d", "rotmat", "cam_crop", "verts")),
    "encode": GraphIO(("images",), ("image_tokens", "rot6d", "rotmat", "cam_crop")),
    "step": GraphIO(
        ("image_tokens", "tokens", "visible", "token_noise", "confidence_noise", "temperature", "num_visible"),
        ("next_tokens", "next_visible"),
    ),
    "mesh": GraphIO(("tokens",), ("verts",)),
}

# Which graphs one export builds.
ONESHOT_GRAPHS = ("oneshot",)
STOCHASTIC_GRAPHS = ("encode", "step", "mesh")

FIXED_STEP_PREFIX = "step_v"


def fixed_step_name(visible_before: int) -> str:
    """Name of the fixed-length step graph for rows showing `visible_before` tokens (signature of `step`)."""
    return f"{FIXED_STEP_PREFIX}{int(visible_before)}"


def fixed_step_count(graph: str) -> int | None:
    """`visible_before` of a fixed-length step graph name, None for any other graph."""
    rest = graph[len(FIXED_STEP_PREFIX) :] if graph.startswith(FIXED_STEP_PREFIX) else ""
    return int(rest) if rest.isdigit() else None


def fixed_step_graphs(num_tokens: int, steps: int) -> tuple[str, ...]:
    """The fixed-length step graphs a T-step loop needs, one per step: the counts visible before each
    step, 0 then n_1 .. n_{T-1} of `train.sampling.visible_counts` (0, 2, 10, 22, 37 for N=54, T=5)."""
    before = [0, *sampling.visible_counts(num_tokens, steps)[:-1]]
    return tuple(fixed_step_name(n) for n in before)


def per_sample(graph: str) -> bool:
    """Whether a graph's rows are crops x Q (the step graphs and mesh) rather than crops."""
    return graph in ("step", "mesh") or fixed_step_count(graph) is not None


def graph_io(graph: str) -> GraphIO:
    """The interface of `graph`; fixed-length step graphs share the `step` signature."""
    return GRAPHS["step"] if fixed_step_count(graph) is not None else GRAPHS[graph]


# ---- precision ----------------------------------------------------------------------------------
class Fp32LayerNorm(nn.Module):
    """LayerNorm computed in fp32 inside a low-precision graph, returning the input's dtype."""

    def __init__(self, ln: nn.LayerNorm):
        super().__init__()
        self.normalized_shape = ln.normalized_shape
        self.eps = ln.eps
        self.weight = nn.Parameter(ln.weight.detach().float().clone(), requires_grad=False)
        self.bias = nn.Parameter(ln.bias.detach().float().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class Fp32SoftmaxAttention(nn.Module):
    """`train.model.transformer.Attention` with low-precision matmuls and an fp32 softmax.

    Used only in fp16/bf16 graphs; fp32 graphs keep the original module (and its SDPA), so their math
    is the reference math. q is scaled before the product to keep q.k inside the fp16 range.
    """

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.num_heads = attn.num_heads
        self.qkv = attn.qkv
        self.proj = attn.proj

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        head_dim = c // self.num_heads
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        scores = ((q * head_dim**-0.5) @ k.transpose(-1, -2)).float()
        if attend is not None:
            scores = scores.masked_fill(~attend[:, None, None, :], float("-inf"))
        weights = scores.softmax(-1).to(v.dtype)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, t, c))


def cast_for_precision(module: nn.Module, precision: str) -> nn.Module:
    """A copy of `module` in `precision` with LayerNorm and softmax kept in fp32 (the original is untouched)."""
    from train.model.transformer import Attention

    dtype = PRECISIONS[precision]
    if dtype == torch.float32:
        return module
    module = copy.deepcopy(module).to(dtype)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(parent, name, Fp32LayerNorm(child))
            elif isinstance(child, Attention):
                setattr(parent, name, Fp32SoftmaxAttention(child))
    return module


def _model_dtype(module: nn.Module) -> torch.dtype:
    # the first floating parameter that is not an fp32 LayerNorm tells the graph's compute dtype
    for m in module.modules():
        if isinstance(m, Fp32LayerNorm):
            continue
        for p in m.parameters(recurse=False):
            if p.is_floating_point():
                return p.dtype
    return torch.float32


# ---- graphs -------------------------------------------------------------------------------------
class OneShotGraph(nn.Module):
    """Deterministic mode in one graph: crops -> tokens, rotation, camera, canonical vertices."""

    def __init__(self, model: nn.Module, mesh_vqvae: nn.Module):
        super().__init__()
        if model.encoder is not None:
            raise ValueError(
                "OneShotGraph takes the decoder-only MEGA (train.model.mega.decoder_only), whose empty encoder is folded"
            )
        self.model = model
        self.mesh_vqvae = mesh_vqvae
        self.dtype = _model_dtype(model)

    def forward(self, images: torch.Tensor):
        out = self.model.deterministic(self.model.image_features(images.to(self.dtype)))
        tokens = out.logits.float().argmax(-1)
        rot6d = out.rot6d.float()
        verts = self.mesh_vqvae.decode(tokens).float()
        return tokens.to(torch.int32), rot6d, rot6d_to_matrix(rot6d), out.cam_crop.float(), verts


class EncodeGraph(nn.Module):
    """Per-crop work of the stochastic mode: backbone, image tokens (repeated Q times), rotation, camera."""

    def __init__(self, model: nn.Module, samples: int):
        super().__init__()
        self.model = model
        self.samples = samples
        self.dtype = _model_dtype(model)

    def forward(self, images: torch.Tensor):
        features = self.model.image_features(images.to(self.dtype))
        image_tokens = self.model.decoder.image_tokens(features)
        _, length, dim = image_tokens.shape
        # crop-major rows (crop 0's Q samples first), as Mega.generate's repeat_interleave; expand +
        # reshape instead of repeat_interleave keeps the ONNX graph a plain Expand/Reshape
        image_tokens = image_tokens.unsqueeze(1).expand(-1, self.samples, -1, -1).reshape(-1, length, dim)
        rot6d, cam = self.model.decoder.rotcam(features)
        rot6d = rot6d.float()
        return image_tokens.float(), rot6d, rot6d_to_matrix(rot6d), cam.float()


class StepGraph(nn.Module):
    """One fixed-shape stochastic step (see the module docstring for the signature).

    `visible_before=None`: any step, the encoder over all N positions with a key-padding mask.
    `visible_before=n`: only a step whose rows all show exactly n visible tokens (the fixed-length step
    graph `step_v{n}`): the encoder gathers those n tokens and runs over 1 + n positions
    (`TokenEncoder.forward_fixed`), with the same inputs and outputs.
    """

    def __init__(self, model: nn.Module, visible_before: int | None = None):
        super().__init__()
        if model.encoder is None:
            raise ValueError("StepGraph needs MEGA with its token encoder (Mega(cfg, with_encoder=True))")
        self.model = model
        self.visible_before = visible_before
        self.dtype = _model_dtype(model)

    def forward(self, image_tokens, tokens, visible, token_noise, confidence_noise, temperature, num_visible):
        tokens = tokens.long()
        if self.visible_before is None:
            cls, feats = self.model.encoder.forward_padded(tokens, visible)
        else:
            cls, feats = self.model.encoder.forward_fixed(tokens, visible, self.visible_before)
        slots = self.model.decoder.slots(cls, feats, visible)
        logits, _ = self.model.decoder(image_tokens.to(self.dtype), slots)
        # the sampling runs in fp32 whatever the network precision (ties and the reveal cut are exact there)
        next_tokens, next_visible = sampling.sample_step(
            logits.float(),
            tokens,
            visible,
            num_visible.long(),
            token_noise * temperature[:, None, None],
            confidence_noise * temperature[:, None],
        )
        return next_tokens.to(torch.int32), next_visible


class MeshDecoderGraph(nn.Module):
    """Tokens -> canonical vertices (codebook lookup + Mesh-VQ-VAE decoder)."""

    def __init__(self, mesh_vqvae: nn.Module):
        super().__init__()
        self.mesh_vqvae = mesh_vqvae

    def forward(self, tokens: torch.Tensor):
        return self.mesh_vqvae.decode(tokens.long()).float()


# ---- example inputs -----------------------------------------------------------------------------
def example_inputs(
    graph: str, batch: int, cfg, samples: int = 1, seed: int = 0, device="cpu"
) -> dict[str, torch.Tensor]:
    """Valid inputs of `graph` for `batch` crops (rows = batch * samples for step and mesh).

    Images are standard normal (what ImageNet-normalised crops look like); the step gets a partly
    revealed state, standard Gumbel noise and a reveal count above the visible count, so the export
    trace and the parity checks exercise every branch of the sampler.
    """
    g = torch.Generator().manual_seed(seed)
    n, s = cfg.seq_length, cfg.num_embeddings
    if graph in ("oneshot", "encode"):
        feeds = {"images": torch.randn(batch, 3, cfg.input_height, cfg.input_width, generator=g)}
    elif graph == "step" or fixed_step_count(graph) is not None:
        rows = batch * samples
        fixed = fixed_step_count(graph)
        if fixed is None:
            visible = torch.rand(rows, n, generator=g) < 0.3
        else:  # exactly `fixed` visible tokens per row, at random positions
            ranks = torch.rand(rows, n, generator=g).argsort(1).argsort(1)
            visible = ranks < fixed
        tokens = torch.where(visible, torch.randint(0, s, (rows, n), generator=g), torch.zeros((), dtype=torch.long))
        feeds = {
            "image_tokens": torch.randn(rows, cfg.cond_length, cfg.emb_dim, generator=g),
            "tokens": tokens.to(torch.int32),
            "visible": visible,
            "token_noise": sampling.gumbel((rows, n, s), g),
            "confidence_noise": sampling.gumbel((rows, n), g),
            "temperature": torch.full((rows,), 0.8),
            "num_visible": (visible.sum(1) + 10).clamp(max=n).to(torch.int32),
        }
    elif graph == "mesh":
        feeds = {"tokens": torch.randint(0, s, (batch * samples, n), generator=g, dtype=torch.int32)}
    else:
        raise KeyError(f"unknown graph {graph!r} ({', '.join(GRAPHS)})")
    return {k: v.to(device) for k, v in feeds.items()}


def graph_specs(graph: str, cfg, num_verts: int = 6890):
    """(inputs, outputs): name -> TensorSpec of a graph's interface for `cfg`; -1 marks the batch dim."""
    from engines.backends.base import TensorSpec

    n, s, length, dim = cfg.seq_length, cfg.num_embeddings, cfg.cond_length, cfg.emb_dim
    images = ("float32", (-1, 3, cfg.input_height, cfg.input_width))
    pose = {"rot6d": ("float32", (-1, 6)), "rotmat": ("float32", (-1, 3, 3)), "cam_crop": ("float32", (-1, 3))}
    table = {
        "oneshot": (
            {"images": images},
            {"tokens": ("int32", (-1, n)), **pose, "verts": ("float32", (-1, num_verts, 3))},
        ),
        "encode": ({"images": images}, {"image_tokens": ("float32", (-1, length, dim)), **pose}),
        "step": (
            {
                "image_tokens": ("float32", (-1, length, dim)),
                "tokens": ("int32", (-1, n)),
                "visible": ("bool", (-1, n)),
                "token_noise": ("float32", (-1, n, s)),
                "confidence_noise": ("float32", (-1, n)),
                "temperature": ("float32", (-1,)),
                "num_visible": ("int32", (-1,)),
            },
            {"next_tokens": ("int32", (-1, n)), "next_visible": ("bool", (-1, n))},
        ),
        "mesh": ({"tokens": ("int32", (-1, n))}, {"verts": ("float32", (-1, num_verts, 3))}),
    }
    if fixed_step_count(graph) is not None:
        graph = "step"
    if graph not in table:
        raise KeyError(f"unknown graph {graph!r} ({', '.join(GRAPHS)}, {FIXED_STEP_PREFIX}N)")
    ins, outs = table[graph]
    assert tuple(ins) == GRAPHS[graph].inputs and tuple(outs) == GRAPHS[graph].outputs
    return (
        {k: TensorSpec(k, d, shape) for k, (d, shape) in ins.items()},
        {k: TensorSpec(k, d, shape) for k, (d, shape) in outs.items()},
    )
