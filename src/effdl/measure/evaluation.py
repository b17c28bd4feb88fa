"""Evaluation: mean loss and top-1 accuracy over a dataset or a list of batches. It lives in ``measure`` so that
training, pruning, quantization and the analysis packages share one definition of "the model's loss"."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from effdl.core.errors import ConfigError
from effdl.core.modules import eval_mode

__all__ = ["evaluate", "sqnr_db", "stack_batches", "targets_in"]


def _batches(data: Any, batch_size: int) -> Iterable:
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size)
    return data


def evaluate(
    model: nn.Module,
    data: Dataset | Iterable,
    *,
    batch_size: int = 512,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Mean loss and top-1 accuracy of ``model`` on ``data`` in eval mode, without gradients.

    Args:
        model: the network.
        data: a Dataset of ``(input, target)`` pairs (read in order, ``batch_size`` at a time) or an iterable of
            ``(inputs, targets)`` batches.
        batch_size: batch size when ``data`` is a Dataset.
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch's *mean* loss, like ``nn.MSELoss()``; default
            cross-entropy. Accuracy is reported for integer targets and 2-D outputs only (``nan`` otherwise).

    Outputs of shape ``(batch, classes, *positions)`` with integer targets ``(batch, *positions)`` (a language
    model's logits) count every position as one example: the loss is per token and accuracy is per-token top-1.

    Example:
        >>> x = torch.randn(10, 4); y = torch.zeros(10, dtype=torch.long)
        >>> m = nn.Linear(4, 2)
        >>> with torch.no_grad():
        ...     _ = m.weight.zero_(); _ = m.bias.copy_(torch.tensor([1.0, 0.0]))
        >>> evaluate(m, torch.utils.data.TensorDataset(x, y))["accuracy"]
        1.0
    """
    total_loss, correct, count, classify = 0.0, 0, 0, True
    with eval_mode(model), torch.no_grad():
        for x, y in _batches(data, batch_size):
            out = model(x)
            n = targets_in(out, y)
            if loss_fn is None:
                total_loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            else:
                total_loss += float(loss_fn(out, y)) * n
            if classify and not y.dtype.is_floating_point and out.dim() == y.dim() + 1:
                correct += int((out.argmax(dim=1) == y).sum())
            else:
                classify = False
            count += n
    if count == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    return {"loss": total_loss / count, "accuracy": correct / count if classify else float("nan")}


def targets_in(outputs: torch.Tensor, targets: torch.Tensor) -> int:
    """How many predictions a batch holds: one per example, or one per position when integer targets carry
    positions (``outputs`` of shape ``(batch, classes, *positions)``, ``targets`` of ``(batch, *positions)``).

    Example:
        >>> targets_in(torch.zeros(2, 5, 7), torch.zeros(2, 7, dtype=torch.long))
        14
        >>> targets_in(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
        2
    """
    positional = not targets.dtype.is_floating_point and targets.dim() >= 2 and outputs.dim() == targets.dim() + 1
    return targets.numel() if positional else len(targets)


def stack_batches(data: Dataset, batch_size: int, *, max_examples: int | None = None) -> list[tuple]:
    """The first ``max_examples`` examples of ``data`` as a list of stacked ``(inputs, targets)`` batches, in the
    order :func:`evaluate` reads them (so both give bit-identical sums). Evaluating many times over pre-stacked
    batches skips the per-example collation of a DataLoader.

    Example:
        >>> ds = torch.utils.data.TensorDataset(torch.arange(5.), torch.arange(5))
        >>> [b[0].tolist() for b in stack_batches(ds, 2, max_examples=3)]
        [[0.0, 1.0], [2.0]]
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}; use batch_size=512")
    if max_examples is not None and max_examples < 1:
        raise ConfigError(f"max_examples must be >= 1 or None (all), got {max_examples}")
    n = len(data) if max_examples is None else min(len(data), max_examples)
    if n == 0:
        raise ConfigError("the dataset is empty; pass data with at least one (input, target) example")
    subset = data if n == len(data) else torch.utils.data.Subset(data, range(n))
    return [(x, y) for x, y in DataLoader(subset, batch_size=batch_size)]


def sqnr_db(reference: torch.Tensor, output: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of ``output`` against ``reference`` in dB:
    ``10 log10(mean(ref^2) / mean((ref - out)^2))`` (inf when they are equal).

    Example:
        >>> round(sqnr_db(torch.ones(4), torch.full((4,), 1.1)), 1)
        20.0
    """
    ref, out = reference.detach().double(), output.detach().double()
    noise = float((ref - out).pow(2).mean())
    if noise == 0.0:
        return float("inf")
    return float(10 * torch.log10(ref.pow(2).mean() / noise))
