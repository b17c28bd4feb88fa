"""The models users bring, for tests and benchmarks: the small Hugging Face families of :mod:`effdl.models.hf`
(built from config, random weights) and models made of torch's own transformer modules.

Example:
    >>> model, x = real_model("torch_encoder")
    >>> model(x).shape
    torch.Size([2, 10, 32])
"""

from __future__ import annotations

import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.models.hf import HF_FAMILIES, tiny_hf_model

__all__ = ["REAL_MODELS", "TorchEncoder", "TorchMHA", "real_model"]


class TorchEncoder(nn.Module):
    """Two ``nn.TransformerEncoderLayer`` blocks (batch first) and a Linear head, as a user would stack them."""

    def __init__(self, dim: int = 32, heads: int = 4, hidden: int = 64) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, hidden, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class TorchMHA(nn.Module):
    """``nn.MultiheadAttention`` followed by an MLP, with residuals."""

    def __init__(self, dim: int = 32, heads: int = 4, hidden: int = 64) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.fc2(torch.relu(self.fc1(x)))


REAL_MODELS = (*HF_FAMILIES, "torch_encoder", "torch_mha")


def real_model(name: str, *, batch: int = 2, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A model of :data:`REAL_MODELS` (eval mode, seeded weights) and a batch it accepts. The Hugging Face ones need
    the ``hf`` extra."""
    if name in HF_FAMILIES:
        return tiny_hf_model(name, batch=batch, seed=seed)
    torch.manual_seed(seed)
    if name == "torch_encoder":
        model: nn.Module = TorchEncoder()
    elif name == "torch_mha":
        model = TorchMHA()
    else:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(REAL_MODELS)}")
    x = torch.randn(batch, 10, 32, generator=torch.Generator().manual_seed(seed))
    return model.eval(), x
