"""A small Vision Transformer (Dosovitskiy et al. 2021): patch embedding, multi-head self-attention, MLP, LayerNorm."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.models.base import conv_nd, expect_inputs, register_model, spatial_dims

__all__ = ["Attention", "TransformerBlock", "VisionTransformer"]


class Attention(nn.Module):
    """Multi-head self-attention with explicit ``num_heads`` and ``head_dim`` (so pruning can remove whole heads).

    ``qkv`` maps ``dim -> 3 * num_heads * head_dim`` laid out as (q|k|v, head, head_dim); ``proj`` maps back.

    Example:
        >>> Attention(16, num_heads=2)(torch.zeros(1, 5, 16)).shape
        torch.Size([1, 5, 16])
    """

    def __init__(self, dim: int, *, num_heads: int, head_dim: int | None = None) -> None:
        super().__init__()
        if head_dim is None:
            if dim % num_heads:
                raise ConfigError(f"dim={dim} is not divisible by num_heads={num_heads}; pass head_dim or change them")
            head_dim = dim // num_heads
        self.num_heads, self.head_dim = num_heads, head_dim
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim)
        self.proj = nn.Linear(num_heads * head_dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (b, heads, n, head_dim)
        attn = (q @ k.transpose(-2, -1)) * (self.head_dim**-0.5)  # (b, heads, n, n); Vaswani et al. eq. 1
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(LN(x))`` then ``x + mlp(LN(x))``; ``attention(dim, num_heads=...)`` builds the
    attention (bidirectional :class:`Attention` by default; the language model passes a causal one).

    Example:
        >>> TransformerBlock(16, num_heads=2, mlp_ratio=2.0)(torch.zeros(1, 5, 16)).shape
        torch.Size([1, 5, 16])
    """

    def __init__(
        self, dim: int, *, num_heads: int, mlp_ratio: float, attention: Callable[..., nn.Module] = Attention
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention(dim, num_heads=num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Patch embedding (strided conv, 1D or 2D), class token, learned position embedding, transformer blocks,
    final LayerNorm and a Linear head on the class token.

    Example:
        >>> m = VisionTransformer((3, 8, 8), 10, patch_size=4, dim=16, depth=1, num_heads=2)
        >>> m(torch.zeros(2, 3, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        patch_size: int = 4,
        dim: int = 128,
        depth: int = 6,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        sdim = spatial_dims("VisionTransformer", input_shape)
        if any(s % patch_size for s in input_shape[1:]):
            raise ConfigError(f"input size {tuple(input_shape[1:])} is not divisible by patch_size={patch_size}")
        num_patches = math.prod(s // patch_size for s in input_shape[1:])
        self.patch_embed = conv_nd(sdim)(input_shape[0], dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)
        self.blocks = nn.Sequential(
            *(TransformerBlock(dim, num_heads=num_heads, mlp_ratio=mlp_ratio) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        expect_inputs(self, input_shape, fixed_size=True)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (b, patches, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def _vit(*, input_shape, num_classes, patch_size=4, dim=128, depth=6, num_heads=4, mlp_ratio=2.0):
    return VisionTransformer(
        input_shape, num_classes, patch_size=patch_size, dim=dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio
    )


register_model(
    "vit",
    description="tiny ViT: 4x4 patches, dim 128, 6 blocks, 4 heads",
    input_shape=(3, 32, 32),
    train_defaults={"epochs": 30, "lr": 1e-3, "batch_size": 128, "weight_decay": 5e-2},
)(_vit)
register_model(
    "vit_1d",
    description="tiny ViT on 1D signals (patches of 4 samples, dim 64, 4 blocks)",
    input_shape=(1, 40),
    dim=64,
    depth=4,
    num_heads=4,
    train_defaults={"epochs": 60, "lr": 1e-3, "batch_size": 64, "weight_decay": 5e-2},
)(_vit)
register_model("test_vit", description="tiny ViT for tests", input_shape=(3, 8, 8), dim=16, depth=1, num_heads=2)(_vit)
