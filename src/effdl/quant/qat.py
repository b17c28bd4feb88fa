"""Training-loop callbacks of quantization-aware training: WrapNet's overflow penalty and freezing the activation
ranges for the last epochs.

QAT itself needs no callback: :func:`~effdl.quant.quantize_` swaps in fake-quant layers (STE, or LSQ with
``lsq=True``) and the usual :class:`~effdl.train.Trainer` trains them.
"""

from __future__ import annotations

from typing import Any

import torch

from effdl.core.callback import Callback, TrainerView
from effdl.core.config import check_range
from effdl.quant.api import freeze_
from effdl.quant.modules import Accumulator

__all__ = ["FreezeQuantizers", "OverflowPenalty"]


class OverflowPenalty(Callback):
    """Adds WrapNet's overflow penalty (Ni et al., ICLR 2021) to the loss: ``weight`` times the sum over layers of
    the mean of ``relu(|acc| - 2^(b-1)) / 2^(b-1)``, which pulls accumulator values back into the ``b``-bit range.
    Needs a model quantized with ``accumulator_bits``. Pair it with learned steps (``QuantConfig(lsq=True)``): the
    penalty then grows the steps until the integers fit; with min-max scales it can only shrink the weights, which
    the scales follow, so the integers stay as large. The default weight held 8-bit accumulators within a point of
    32-bit ones on the MNIST-1D CNN at W4A4 (``benchmarks/wrapnet.py``).

    Example:
        >>> OverflowPenalty().weight
        10.0
    """

    def __init__(self, weight: float = 10.0) -> None:
        check_range("weight", weight, 0.0, hint="use weight=10")
        self.weight = weight

    def on_loss(self, trainer: TrainerView, batch, outputs: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        penalties = [m.penalty for m in trainer.model.modules() if isinstance(m, Accumulator) and m.penalty is not None]
        if not penalties or self.weight == 0:
            return loss
        return loss + self.weight * torch.stack(penalties).sum()


class FreezeQuantizers(Callback):
    """From epoch ``epoch`` on (0-based), activation ranges stop moving in training mode (a common last phase of
    QAT, so that the final epochs train against fixed scales).

    Example:
        >>> FreezeQuantizers(epoch=3).state_dict()
        {}
    """

    def __init__(self, epoch: int) -> None:
        check_range("epoch", epoch, 0, hint="use epoch=0 to freeze from the start")
        self.epoch = epoch

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        freeze_(trainer.model, epoch >= self.epoch)

    def state_dict(self) -> dict[str, Any]:
        return {}
