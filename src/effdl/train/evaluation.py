"""Evaluation: loss and accuracy over a dataset."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["evaluate"]


def evaluate(model: nn.Module, data: Dataset, *, batch_size: int = 512) -> dict[str, float]:
    """Mean cross-entropy loss and top-1 accuracy of ``model`` on ``data`` (in eval mode, no gradients).

    Example:
        >>> x = torch.randn(10, 4); y = torch.zeros(10, dtype=torch.long)
        >>> m = nn.Linear(4, 2)
        >>> with torch.no_grad():
        ...     _ = m.weight.zero_(); _ = m.bias.copy_(torch.tensor([1.0, 0.0]))
        >>> evaluate(m, torch.utils.data.TensorDataset(x, y))["accuracy"]
        1.0
    """
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    try:
        with torch.no_grad():
            for x, y in DataLoader(data, batch_size=batch_size):
                out = model(x)
                total_loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
                correct += int((out.argmax(dim=1) == y).sum())
                count += len(y)
    finally:
        model.train(was_training)
    if count == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    return {"loss": total_loss / count, "accuracy": correct / count}
