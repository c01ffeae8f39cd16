"""ViTPose-style ViT as MEGA uses it (ViT-H: embed 1280, depth 32, 16 heads, 256x192 crops).

Details that matter for matching the official weights and outputs:
- patch embedding is a 16x16 stride-16 conv with padding 2 (ViTPose's `4 + 2 * (ratio // 2 - 1)` at
  ratio 1), so 256x192 gives floor((256 + 4 - 16) / 16) + 1 = 16 by 12 tokens;
- `pos_embed` has one extra leading slot (from cls-token pre-training) and is applied as
  `x + pos[:, 1:] + pos[:, :1]`; there is no cls token in the sequence;
- pre-norm blocks, LayerNorm eps 1e-6, qkv with bias, attention written out (q scaled first),
  exact GELU MLP x4, stochastic depth growing linearly to `drop_path_rate` (training only);
- `last_norm`, then tokens are laid back out as a (B, C, 16, 12) map (row-major).
"""

from __future__ import annotations

import torch
from torch import nn

from train.model.backbone_base import IMAGENET_MEAN, IMAGENET_STD
from train.model.transformer import Mlp  # same layout (fc1, act, fc2) as the official ViT

LN_EPS = 1e-6
PATCH_PADDING = 2


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample in training, identity in eval."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size, padding=PATCH_PADDING)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images)  # (B, C, hp, wp)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """Plain ViT trunk returning (B, embed_dim, hp, wp) features."""

    def __init__(
        self,
        input_hw: tuple[int, int] = (256, 192),
        patch_size: int = 16,
        embed_dim: int = 1280,
        depth: int = 32,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.55,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"vit_embed_dim {embed_dim} is not divisible by vit_heads {num_heads}")
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        h, w = self.input_hw
        # the position table is sized H//p x W//p (ViTPose), the token grid by the padded conv,
        # floor((n + 4) / p); they disagree when n % 16 >= 12 and the addition would fail
        grid = tuple((n + 2 * PATCH_PADDING - patch_size) // patch_size + 1 for n in (h, w))
        if grid != (h // patch_size, w // patch_size):
            raise ValueError(
                f"ViT input {h}x{w} with patch {patch_size} gives a {grid[0]}x{grid[1]} token grid but a "
                f"{h // patch_size}x{w // patch_size} position table; choose a size whose sides are "
                f"multiples of {patch_size}"
            )

        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1] + 1, embed_dim))
        # linear in depth, as torch.linspace(0, rate, depth) (plain floats so meta-device builds work)
        rates = [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, r) for r in rates)
        self.last_norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

        self.feature_hw = grid
        self.channels = embed_dim
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        b, c, hp, wp = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = x + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for block in self.blocks:
            x = block(x)
        x = self.last_norm(x)
        return x.transpose(1, 2).reshape(b, c, hp, wp)
