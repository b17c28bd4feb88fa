"""Quantized-weight training study (Li, De, Xu, Studer, Samet & Goldstein, "Training Quantized Nets: A Deeper
Understanding", NeurIPS 2017): how the weights are kept during training decides what low-precision training can
reach.

- ``binaryconnect`` (BC, Courbariaux et al. 2015): full-precision shadow weights receive the updates; the forward
  and backward passes use their quantized values; shadow weights are clipped to the representable range.
- ``stochastic`` (SR): no shadow weights; after every update the weights are rounded stochastically back onto the
  grid (unbiased, so small updates survive in expectation).
- ``deterministic`` (R): no shadow weights; round to nearest after every update (updates smaller than half a step
  are lost, so training stalls).

All three use the same fixed grid per layer, set when training starts: ``bits`` bits, step ``max|w| / qmax``
(binary: ``mean|w|``, codes -1 and +1). Weights of Conv and Linear layers are quantized; biases and normalization
parameters stay in float, as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from effdl.core.callback import Callback, TrainerView
from effdl.core.config import check_choice
from effdl.quant.math import check_bits, dequantize, qrange, quantize

__all__ = ["TRAINING_METHODS", "QuantizedWeightTraining"]

TRAINING_METHODS = ("binaryconnect", "stochastic", "deterministic")
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class QuantizedWeightTraining(Callback):
    """Trains with ``bits``-bit weights kept as ``method`` says (see the module docstring). Outside the optimizer
    step the model's weights are always the quantized ones, so evaluation and saving see the quantized model.

    Args:
        method: ``binaryconnect``, ``stochastic`` or ``deterministic``.
        bits: weight bits, 1 to 8.
        seed: seed of the stochastic rounding.

    Example:
        >>> cb = QuantizedWeightTraining("stochastic", bits=2)
        >>> cb.method, cb.bits
        ('stochastic', 2)
    """

    def __init__(self, method: str, *, bits: int, seed: int = 0) -> None:
        check_choice("method", method, TRAINING_METHODS)
        self.method = method
        self.bits = check_bits(bits)
        self.qmin, self.qmax = qrange(bits, signed=True)
        self.binary = bits == 1
        self.generator = torch.Generator().manual_seed(seed)
        self.scales: dict[str, torch.Tensor] = {}
        self.shadow: dict[str, torch.Tensor] = {}
        self._before: dict[str, torch.Tensor] = {}

    def _weights(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {n: m.weight for n, m in model.named_modules() if isinstance(m, _LAYERS)}

    def _quantize(self, w: torch.Tensor, scale: torch.Tensor, *, stochastic: bool) -> torch.Tensor:
        zero = torch.zeros_like(scale)
        q = quantize(w, scale, zero, self.qmin, self.qmax, binary=self.binary, stochastic=stochastic,
                     generator=self.generator)  # fmt: skip
        return dequantize(q, scale, zero)

    @torch.no_grad()
    def on_fit_start(self, trainer: TrainerView) -> None:
        weights = self._weights(trainer.model)
        if not self.scales:  # a fresh run (a resumed one restored its scales and shadows)
            for name, w in weights.items():
                a = w.detach().abs()
                self.scales[name] = a.mean() if self.binary else a.max() / self.qmax
                if self.method == "binaryconnect":
                    self.shadow[name] = w.detach().clone()
        for name, w in weights.items():
            src = self.shadow.get(name, w.detach())
            w.copy_(self._quantize(src, self.scales[name], stochastic=False))

    @torch.no_grad()
    def on_after_backward(self, trainer: TrainerView) -> None:
        if self.method == "binaryconnect":
            self._before = {n: w.detach().clone() for n, w in self._weights(trainer.model).items()}

    @torch.no_grad()
    def on_batch_end(self, trainer: TrainerView, batch, loss: float) -> None:
        for name, w in self._weights(trainer.model).items():
            scale = self.scales[name]
            if self.method == "binaryconnect":
                # the optimizer's update, applied to the shadow weights, which are clipped to the grid's range
                s = self.shadow[name]
                s.add_(w.detach() - self._before[name])
                bound = scale * (1 if self.binary else self.qmax)
                s.clamp_(-bound, bound)
                w.copy_(self._quantize(s, scale, stochastic=False))
            else:
                w.copy_(self._quantize(w.detach(), scale, stochastic=self.method == "stochastic"))

    def state_dict(self) -> dict[str, Any]:
        return {
            "scales": dict(self.scales),
            "shadow": dict(self.shadow),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scales = dict(state.get("scales", {}))
        self.shadow = {k: v.clone() for k, v in state.get("shadow", {}).items()}
        if "generator" in state:
            self.generator.set_state(state["generator"])
