"""MEGA (the official CVQMAE): image backbone + masked token encoder + image-conditioned decoder.

Read top to bottom: TokenEncoder (visible mesh tokens -> features), MegaDecoder (image tokens + slots ->
token logits; pooled image features -> rotation and camera), Mega (the whole network and its two
inference modes), PretrainModel (the official VQMAE: the same encoder and a decoder without image).

Parameter names equal the official checkpoints' keys (sequence-first `pos_embedding` [T,1,C], the
Embedding called `proj`, `rotcam_head.0/.2`), so official files load strictly with no mapping.

Two inference modes:
- deterministic: all tokens masked, one decoder pass, argmax. With nothing visible the encoder sees
  only its cls token, so its output is a constant; `decoder_only(full)` keeps that constant as a
  buffer (`empty_slot`) of a model without the encoder.
- stochastic: `train.sampling.generate` drives `step_logits` T times; the backbone and the image-token
  embedding run once per crop, Q samples ride the batch dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from train.config import MegaConfig
from train.geometry import rot6d_to_matrix
from train.model.transformer import Block, Blocks, single_token_block


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) float32: sin on even, cos on odd channels, base 10000 (not a saved parameter)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


def visible_positions(visible: torch.Tensor) -> torch.Tensor | None:
    """(B,n) ascending visible positions if every row shows the same number n, else None."""
    counts = visible.sum(1)
    n = int(counts[0])
    if not bool((counts == n).all()):
        return None
    # a stable sort puts visible (False after negation) positions first, in ascending order
    return torch.argsort((~visible).to(torch.uint8), dim=1, stable=True)[:, :n]


class TokenEncoder(nn.Module):
    def __init__(self, cfg: MegaConfig):
        super().__init__()
        d = cfg.emb_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embedding = nn.Parameter(torch.zeros(cfg.seq_length, 1, d))
        self.proj = nn.Embedding(cfg.num_embeddings, d)
        self.transformer = Blocks(*[Block(d, cfg.encoder_heads, cfg.layer_norm_eps) for _ in range(cfg.encoder_layers)])
        self.layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)

    def forward(self, tokens: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B,N) long, visible (B,N) bool -> (cls feature (B,C), token features (B,N,C)).

        Token features are meaningful only at visible positions. Positions are added before the
        visible tokens are chosen, so attention over the visible set does not depend on their order.
        When all rows show the same count the visible tokens are gathered (less work); otherwise all N
        run with a key-padding mask, which computes the same thing.
        """
        b, n = tokens.shape
        x = self.proj(tokens) + self.pos_embedding[:, 0].unsqueeze(0)
        cls = self.cls_token[0].expand(b, 1, -1)
        positions = visible_positions(visible)
        if positions is not None:
            idx = positions.unsqueeze(-1).expand(-1, -1, x.shape[-1])
            out = self.layer_norm(self.transformer(torch.cat([cls, torch.gather(x, 1, idx)], dim=1)))
            feats = torch.zeros_like(x).scatter(1, idx, out[:, 1:])
            return out[:, 0], feats
        return self.forward_padded(tokens, visible)

    def forward_padded(self, tokens: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-shape version: all N positions with a key-padding mask (export-friendly)."""
        b = tokens.shape[0]
        x = self.proj(tokens) + self.pos_embedding[:, 0].unsqueeze(0)
        x = torch.cat([self.cls_token[0].expand(b, 1, -1), x], dim=1)
        attend = torch.cat([torch.ones_like(visible[:, :1]), visible], dim=1)
        out = self.layer_norm(self.transformer(x, attend))
        return out[:, 0], out[:, 1:]

    def forward_fixed(
        self, tokens: torch.Tensor, visible: torch.Tensor, count: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` for rows that all show exactly `count` visible tokens, with static shapes.

        In T-step sampling the visible count before each step is a constant of T, so the encoder can
        run over 1 + count positions instead of all N (what `forward` does after a host-side count).
        The visible positions are taken in ascending order with a top-k over unique keys (a stable
        argsort does not export) and the outputs are read back per position with a gather (no
        scatter), so the graph exports to ONNX/TensorRT with a constant k. Same math, same order as
        `forward`, hence the same numbers.
        """
        b, n = tokens.shape
        cls = self.cls_token[0].expand(b, 1, -1)
        if count == 0:
            out = self.layer_norm(self.transformer(cls))
            return out[:, 0], out.new_zeros(b, n, out.shape[-1])
        x = self.proj(tokens) + self.pos_embedding[:, 0].unsqueeze(0)
        # larger key = smaller position among the visible ones; masked positions rank last
        order = torch.arange(n, 0, -1, device=tokens.device, dtype=torch.float32)
        key = torch.where(visible, order, -1.0)
        positions = torch.topk(key, count, dim=1, sorted=True).indices
        dim = x.shape[-1]
        gathered = torch.gather(x, 1, positions.unsqueeze(-1).expand(-1, -1, dim))
        out = self.layer_norm(self.transformer(torch.cat([cls, gathered], dim=1)))
        # where each visible position sits in the gathered list (masked positions read slot 0, unused)
        slot = (torch.cumsum(visible.to(torch.int32), dim=1) - 1).clamp(min=0).to(torch.long)
        feats = torch.gather(out[:, 1:], 1, slot.unsqueeze(-1).expand(-1, -1, dim))
        return out[:, 0], feats

    def empty_output(self) -> torch.Tensor:
        """(C,) the cls feature when nothing is visible — a constant of the weights."""
        return self.layer_norm(self.transformer(self.cls_token))[0, 0]


def fold_empty_encoder(state_dict: dict, cfg: MegaConfig, prefix: str = "encoder.") -> torch.Tensor:
    """The encoder's fully-masked output computed from raw weights, without building the encoder."""
    x = state_dict[prefix + "cls_token"][0].float()  # (1,C)
    for i in range(cfg.encoder_layers):
        x = single_token_block(x, state_dict, f"{prefix}transformer.{i}.", cfg.layer_norm_eps)
    d = x.shape[-1]
    x = torch.nn.functional.layer_norm(
        x, (d,), state_dict[prefix + "layer_norm.weight"], state_dict[prefix + "layer_norm.bias"], cfg.layer_norm_eps
    )
    return x[0]


def decoder_only(full: Mega) -> Mega:
    """The deterministic model of `full`: its backbone and decoder (shared, not copied), no encoder, and
    the encoder's fully-masked output folded into `empty_slot`. Every decoder-only MEGA is made here."""
    if full.encoder is None:
        raise ValueError("decoder_only needs MEGA with its token encoder (the weights to fold)")
    model = Mega(full.cfg, with_encoder=False, backbone=full.backbone, decoder=full.decoder)
    with torch.no_grad():
        model.empty_slot.copy_(fold_empty_encoder(full.encoder.state_dict(), full.cfg, prefix=""))
    return model.eval()  # inference only: the shared backbone and decoder go to eval mode too


def rotcam_modules(cfg: MegaConfig) -> dict[str, nn.Module]:
    """MEGA's rotation/camera head, by the attribute names its decoder (and the official keys) use;
    also built alone by the backbone stage, which can pre-train it."""
    d = cfg.emb_dim
    # the official head has Dropout(0.5) between linears and no activation
    return {
        "rotcam_head": nn.Sequential(nn.Linear(cfg.cond_dim, d), nn.Dropout(0.5), nn.Linear(d, d), nn.Dropout(0.5)),
        "rot_predictor": nn.Linear(d, 6),
        "cam_predictor": nn.Linear(d, 3),
    }


def rotcam_forward(head: nn.Module, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,C,h,w) backbone features -> rot6d (B,6), cam_crop (B,3) through `head`'s rotcam modules."""
    h = head.rotcam_head(features.mean(dim=(2, 3)))
    return head.rot_predictor(h), head.cam_predictor(h)


class MegaDecoder(nn.Module):
    def __init__(self, cfg: MegaConfig):
        super().__init__()
        d = cfg.emb_dim
        self.cond_length = cfg.cond_length
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embedding = nn.Parameter(torch.zeros(cfg.seq_length + 1, 1, d))
        self.transformer = Blocks(*[Block(d, cfg.decoder_heads, cfg.layer_norm_eps) for _ in range(cfg.decoder_layers)])
        self.head = nn.Linear(d, cfg.dim_tokens)
        for name, module in rotcam_modules(cfg).items():  # rotcam_head, rot_predictor, cam_predictor
            setattr(self, name, module)
        self.cond_emb = nn.Linear(cfg.cond_dim, d)
        self.register_buffer("cond_positions", sinusoidal_positions(cfg.cond_length, d), persistent=False)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)

    def image_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """(B,C,h,w) backbone features -> (B,h*w,D) image tokens (row-major flatten)."""
        flat = features.flatten(2).transpose(1, 2)
        return self.cond_emb(flat) + self.cond_positions

    def rotcam(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Average-pooled features -> rot6d (B,6), cam_crop (B,3). Never sees the tokens."""
        return rotcam_forward(self, features)

    def slots(self, cls_feature: torch.Tensor, token_features: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """(B,N+1,D): slot 0 = encoder cls output, then encoder output where visible, mask token elsewhere."""
        tokens = torch.where(visible.unsqueeze(-1), token_features, self.mask_token[0].to(token_features.dtype))
        return torch.cat([cls_feature.unsqueeze(1), tokens], dim=1) + self.pos_embedding[:, 0].unsqueeze(0)

    def forward(self, image_tokens: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits (B,N,S), head input (B,N,D)). Outputs are read after the image tokens and cls slot."""
        x = self.transformer(torch.cat([image_tokens, slots], dim=1))
        head_input = x[:, self.cond_length + 1 :]
        return self.head(head_input), head_input


@dataclass(frozen=True)
class MegaOutput:
    logits: torch.Tensor  # (B,N,S)
    tokens: torch.Tensor  # (B,N) long
    rot6d: torch.Tensor  # (B,6)
    rotmat: torch.Tensor  # (B,3,3)
    cam_crop: torch.Tensor  # (B,3) weak perspective (s, tx, ty)


class Mega(nn.Module):
    """The full network. `with_encoder=False` builds the deterministic (decoder-only) model."""

    def __init__(
        self,
        cfg: MegaConfig,
        with_encoder: bool = True,
        backbone: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ):
        super().__init__()
        from train.model.backbones import build_backbone

        self.cfg = cfg
        self.backbone = backbone if backbone is not None else build_backbone(cfg)
        self.encoder = TokenEncoder(cfg) if with_encoder else None
        self.decoder = decoder if decoder is not None else MegaDecoder(cfg)
        # folded encoder output for the fully masked input; set from weights when the encoder is absent
        self.register_buffer("empty_slot", torch.zeros(cfg.emb_dim), persistent=False)

    # ---- pieces -------------------------------------------------------------------------------
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def encode_tokens(self, tokens: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder is not None:
            return self.encoder(tokens, visible)
        if bool(visible.any()):
            raise RuntimeError("this MEGA was built without its encoder (deterministic mode only)")
        b, n = tokens.shape
        cls = self.empty_slot.expand(b, -1)
        return cls, cls.new_zeros(b, n, cls.shape[-1])

    def empty_cls(self, batch: int) -> torch.Tensor:
        cls = self.encoder.empty_output() if self.encoder is not None else self.empty_slot
        return cls.expand(batch, -1)

    def step_logits(self, image_tokens: torch.Tensor, tokens: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Logits for every position given the visible tokens (one stochastic step's network pass)."""
        cls, feats = self.encode_tokens(tokens, visible)
        return self.decoder(image_tokens, self.decoder.slots(cls, feats, visible))[0]

    # ---- inference modes ----------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> MegaOutput:
        """Deterministic mode: all tokens masked, one decoder pass, argmax."""
        return self.deterministic(self.image_features(images))

    def deterministic(self, features: torch.Tensor) -> MegaOutput:
        b = features.shape[0]
        n, d = self.cfg.seq_length, self.cfg.emb_dim
        visible = torch.zeros(b, n, dtype=torch.bool, device=features.device)
        slots = self.decoder.slots(self.empty_cls(b), features.new_zeros(b, n, d), visible)
        logits, _ = self.decoder(self.decoder.image_tokens(features), slots)
        rot6d, cam = self.decoder.rotcam(features)
        return MegaOutput(logits, logits.argmax(-1), rot6d, rot6d_to_matrix(rot6d), cam)

    def generate(
        self,
        images: torch.Tensor,
        samples: int,
        steps: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        noise=None,
        counts=None,
    ) -> tuple[MegaOutput, list[torch.Tensor]]:
        """Stochastic mode: Q = `samples` hypotheses per crop, rows ordered crop-major (B*Q).

        The backbone, the image tokens and the rotation/camera head run once per crop.
        """
        steps = self.cfg.steps if steps is None else steps
        temperature = self.cfg.temperature if temperature is None else temperature
        features = self.image_features(images)
        b = features.shape[0]
        image_tokens = self.decoder.image_tokens(features).repeat_interleave(samples, dim=0)
        rot6d, cam = self.decoder.rotcam(features)
        tokens, history = _sample_tokens(
            self.cfg, lambda tok, vis: self.step_logits(image_tokens, tok, vis), b * samples, steps, temperature,
            generator, noise, counts, features.device,
        )  # fmt: skip
        rot6d = rot6d.repeat_interleave(samples, 0)
        cam = cam.repeat_interleave(samples, 0)
        logits = torch.empty(0, device=features.device)  # not meaningful after T steps
        return MegaOutput(logits, tokens, rot6d, rot6d_to_matrix(rot6d), cam), history


class PretrainDecoder(nn.Module):
    """Decoder of the pre-training model (official VQMAE): no image tokens, no rotation/camera head."""

    def __init__(self, cfg: MegaConfig):
        super().__init__()
        d = cfg.emb_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embedding = nn.Parameter(torch.zeros(cfg.seq_length + 1, 1, d))
        self.transformer = Blocks(*[Block(d, cfg.decoder_heads, cfg.layer_norm_eps) for _ in range(cfg.decoder_layers)])
        self.head = nn.Linear(d, cfg.dim_tokens)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)

    slots = MegaDecoder.slots

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head_input = self.transformer(slots)[:, 1:]
        return self.head(head_input), head_input


class PretrainModel(nn.Module):
    """Masked token model on mesh tokens alone (pre-training stage; official VQMAE keys)."""

    def __init__(self, cfg: MegaConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = TokenEncoder(cfg)
        self.decoder = PretrainDecoder(cfg)

    def forward(self, tokens: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        cls, feats = self.encoder(tokens, visible)
        return self.decoder(self.decoder.slots(cls, feats, visible))[0]

    def generate(
        self, batch: int, steps: int = 5, temperature: float = 1.0, generator=None, noise=None, counts=None, device=None
    ):
        return _sample_tokens(
            self.cfg, lambda tok, vis: self(tok, vis), batch, steps, temperature, generator, noise, counts, device
        )


def _sample_tokens(cfg: MegaConfig, logits_fn, batch, steps, temperature, generator, noise, counts, device):
    """The paper's T-step sampler (train/sampling.py) over `logits_fn(tokens, visible)`."""
    from train import sampling

    return sampling.generate(
        logits_fn, batch=batch, num_tokens=cfg.seq_length, codebook_size=cfg.num_embeddings, steps=steps,
        max_temperature=temperature, generator=generator, noise=noise, counts=counts, device=device,
    )  # fmt: skip
