"""A small decoder-only transformer language model (GPT-2 layout: pre-norm blocks of causal self-attention and a
GELU MLP, learned positions), the embedded default for weight-only quantization and one-shot pruning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from effdl.core.errors import ConfigError, ShapeError
from effdl.models.base import InputCheck, _tracing, register_model
from effdl.models.vit import TransformerBlock

__all__ = ["GPT", "CausalSelfAttention", "TokenCheck"]


class TokenCheck(InputCheck):
    """Checks that a language model gets a ``(batch, length)`` tensor of integer tokens, at most ``context`` long
    and inside the vocabulary."""

    def __init__(self, model_name: str, context: int, vocab_size: int) -> None:
        super().__init__(model_name, (context,), fixed_size=False)
        self.vocab_size = vocab_size

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if _tracing() or not args or not isinstance(args[0], torch.Tensor):
            return
        x, context = args[0], self.input_shape[0]
        if x.dim() != 2 or x.dtype.is_floating_point or x.dtype == torch.bool:
            raise ShapeError(
                f"{self.model_name} expects integer tokens of shape (batch, length <= {context}), got a "
                f"{x.dtype} tensor of shape {tuple(x.shape)}; encode text with effdl.data.encode_bytes and add the "
                "batch dimension with tokens.unsqueeze(0)"
            )
        if x.shape[1] > context:
            raise ShapeError(
                f"{self.model_name} reads at most {context} tokens, got {x.shape[1]}; keep the last {context} "
                f"(x[:, -{context}:]) or build the model with input_shape=({x.shape[1]},)"
            )
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
            raise ShapeError(
                f"{self.model_name} has a vocabulary of {self.vocab_size} tokens, got token ids in "
                f"[{int(x.min())}, {int(x.max())}]"
            )


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; ``qkv`` maps ``dim -> 3 * dim`` laid out as (q|k|v, head, head_dim).

    Example:
        >>> CausalSelfAttention(16, num_heads=2)(torch.zeros(1, 5, 16)).shape
        torch.Size([1, 5, 16])
    """

    def __init__(self, dim: int, *, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"dim={dim} is not divisible by num_heads={num_heads}; change one of them")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)  # (b, heads, n, head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class GPT(nn.Module):
    """Token and position embeddings, decoder blocks, a final LayerNorm and an untied output layer.

    ``forward(tokens)`` takes int64 tokens of shape ``(batch, length)`` and returns logits of shape
    ``(batch, vocabulary, length)``: the layout ``F.cross_entropy`` takes with targets ``(batch, length)``, so the
    training loop and evaluation treat every position as one classification.

    Example:
        >>> m = GPT(vocab_size=32, context=8, dim=16, depth=1, num_heads=2)
        >>> m(torch.zeros(2, 5, dtype=torch.long)).shape
        torch.Size([2, 32, 5])
    """

    def __init__(
        self, *, vocab_size: int, context: int, dim: int = 256, depth: int = 4, num_heads: int = 4,
        mlp_ratio: float = 4.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.context = context
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(context, dim)
        self.blocks = nn.Sequential(
            *(TransformerBlock(dim, num_heads=num_heads, mlp_ratio=mlp_ratio, attention=CausalSelfAttention)
              for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.apply(_init)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 * depth)
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / (2 * depth) ** 0.5)

    def forward(self, tokens):
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.blocks(self.tok_emb(tokens) + self.pos_emb(pos))
        return self.head(self.norm(x)).transpose(1, 2)  # (batch, vocab, length)

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, steps: int, *, greedy: bool = True, seed: int = 0) -> torch.Tensor:
        """Appends ``steps`` tokens to ``tokens`` (shape ``(batch, length)``), greedily or by sampling.

        Example:
            >>> m = GPT(vocab_size=32, context=8, dim=16, depth=1, num_heads=2).eval()
            >>> m.generate(torch.zeros(1, 3, dtype=torch.long), 4).shape
            torch.Size([1, 7])
        """
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            logits = self(tokens[:, -self.context :])[:, :, -1]
            nxt = logits.argmax(1) if greedy else torch.multinomial(logits.softmax(1), 1, generator=g)[:, 0]
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        return tokens


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)


_GPT_TRAIN = {"epochs": 1, "batch_size": 32, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.01, "grad_clip": 1.0}


def _gpt(
    *, input_shape: Sequence[int], num_classes: int, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0
) -> GPT:
    if len(input_shape) != 1:
        raise ConfigError(f"gpt takes input_shape (context,), got {tuple(input_shape)}; e.g. input_shape=(128,)")
    model = GPT(vocab_size=num_classes, context=int(input_shape[0]), dim=dim, depth=depth, num_heads=num_heads,
                mlp_ratio=mlp_ratio)  # fmt: skip
    check = TokenCheck("gpt", int(input_shape[0]), num_classes)
    model.input_check = check
    model.register_forward_pre_hook(check)
    return model


register_model(
    "gpt_tiny",
    description="decoder-only transformer LM, 4 blocks of width 256 (byte-level; for pysource)",
    input_shape=(128,),
    fixed_size=False,
    train_defaults=_GPT_TRAIN,
    inputs="tokens",
    num_classes=256,
    dim=256,
    depth=4,
    num_heads=4,
)(_gpt)
register_model(
    "test_gpt",
    description="tiny decoder-only LM for tests (1 block of width 32)",
    input_shape=(16,),
    fixed_size=False,
    train_defaults={**_GPT_TRAIN, "epochs": 1},
    inputs="tokens",
    num_classes=256,
    dim=32,
    depth=1,
    num_heads=2,
)(_gpt)
