"""Pre-norm transformer block with the official MEGA layout (timm 1.0.15 `Block(dim, heads)`).

Parameter names (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2) match the official checkpoints.
Attention has no qkv bias, scale head_dim^-0.5, MLP 4x with exact GELU, no LayerScale.
An optional key-padding mask lets a fixed-length sequence stand in for a variable-length one
(export and the fixed-shape stochastic step rely on this equivalence).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None = None) -> torch.Tensor:
        """x (B,T,C); attend (B,T) bool, True where a key may be attended to (None: all)."""
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        mask = None if attend is None else attend[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float = 1e-5, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attend)
        return x + self.mlp(self.norm2(x))


class Blocks(nn.Sequential):
    """nn.Sequential of Blocks (keys `transformer.<i>.*`) that passes the key-padding mask along."""

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None = None) -> torch.Tensor:
        for block in self:
            x = block(x, attend)
        return x


def single_token_block(x: torch.Tensor, sd: dict, prefix: str, eps: float) -> torch.Tensor:
    """One Block applied to a length-1 sequence from raw weights, without building the module.

    With a single token, softmax attention is the identity over values, so attention reduces to
    proj(v). This lets the deterministic model fold the encoder's fully-masked output into a constant
    without building or keeping the 12-block encoder.
    """
    dim = x.shape[-1]
    h = F.layer_norm(x, (dim,), sd[prefix + "norm1.weight"], sd[prefix + "norm1.bias"], eps)
    w_v = sd[prefix + "attn.qkv.weight"][2 * dim :]
    x = x + F.linear(F.linear(h, w_v), sd[prefix + "attn.proj.weight"], sd[prefix + "attn.proj.bias"])
    h = F.layer_norm(x, (dim,), sd[prefix + "norm2.weight"], sd[prefix + "norm2.bias"], eps)
    h = F.gelu(F.linear(h, sd[prefix + "mlp.fc1.weight"], sd[prefix + "mlp.fc1.bias"]))
    return x + F.linear(h, sd[prefix + "mlp.fc2.weight"], sd[prefix + "mlp.fc2.bias"])
