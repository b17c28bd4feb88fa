"""Statistics of the inputs each layer sees on calibration data — the second moment ``X^T X`` (GPTQ, SparseGPT),
per-feature norms (Wanda, AWQ) and a row sample — and the layer-by-layer schedule of one-shot methods, which
collect a layer's statistics with the earlier layers already transformed (as GPTQ and SparseGPT do)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from effdl.core.errors import ConfigError, ShapeError
from effdl.core.modules import eval_mode

__all__ = [
    "InputStats",
    "calibration_batches",
    "collect_input_stats",
    "execution_order",
    "inverse_hessian_factor",
    "layer_by_layer",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class InputStats:
    """What one layer's inputs looked like over the calibration data, flattened to rows of ``in_features``.

    Attributes:
        rows: number of input rows seen (tokens x batches, or examples).
        gram: ``sum_rows x^T x`` (in, in) in float64, or None when not asked for.
        sq_sum: ``sum_rows x_j^2`` per input feature (in,): ``sqrt`` of it is Wanda's ``||X_j||_2``.
        abs_sum: ``sum_rows |x_j|`` per input feature (in,): AWQ's activation magnitude.
        sample: up to ``max_sample`` input rows (float32), for searches that replay the layer.
    """

    rows: int = 0
    gram: torch.Tensor | None = None
    sq_sum: torch.Tensor | None = None
    abs_sum: torch.Tensor | None = None
    sample: torch.Tensor | None = None

    def hessian(self) -> torch.Tensor:
        """``2 X^T X / rows`` (float64): the Hessian of the layer's squared reconstruction error (GPTQ eq. 1)."""
        if self.gram is None or self.rows == 0:
            raise ConfigError("these statistics were collected without gram=True; collect them with gram=True")
        return 2.0 * self.gram / self.rows

    def feature_norm(self) -> torch.Tensor:
        """``||X_j||_2`` per input feature (Wanda's activation norm)."""
        return self.sq_sum.sqrt()

    def mean_abs(self) -> torch.Tensor:
        """Mean ``|x_j|`` per input feature (AWQ's activation magnitude)."""
        return self.abs_sum / max(self.rows, 1)


def inverse_hessian_factor(
    w: torch.Tensor, hessian: torch.Tensor, *, damp: float, method: str, perm: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The common start of GPTQ and SparseGPT: the weight (out, in) as float32 with the columns of dead inputs
    (zero Hessian diagonal) zeroed, optionally permuted by ``perm``, and the upper Cholesky factor of the inverse of
    the damped Hessian (``damp`` times its mean diagonal added), float32. ``method`` names the caller in errors.

    Example:
        >>> x = torch.randn(64, 4); x[:, 3] = 0
        >>> w, u = inverse_hessian_factor(torch.ones(2, 4), 2 * x.T @ x / 64, damp=0.01, method="GPTQ")
        >>> w[:, 3].tolist(), u.shape, bool(torch.allclose(u, u.triu()))
        ([0.0, 0.0], torch.Size([4, 4]), True)
    """
    W = w.detach().float().clone()
    H = hessian.detach().double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    if perm is not None:
        W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], dtype=H.dtype)
    try:
        factor = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()
    except RuntimeError as exc:
        raise ConfigError(
            f"{method}: the layer's input Hessian is not positive definite even with damp={damp} ({exc}); raise "
            "damp (e.g. damp=0.1) or calibrate on more data"
        ) from exc
    return W, factor


def calibration_batches(data: Any, batches: int) -> Iterator[tuple]:
    """Yields the input tuples of up to ``batches`` batches of ``data`` (a DataLoader, a Dataset, or an iterable of
    tensors or ``(inputs, targets)``, where ``inputs`` may be a tuple of tensors for a model with several inputs);
    raises :class:`ConfigError` if there are none.

    Example:
        >>> [x[0].shape for x in calibration_batches([torch.zeros(2, 3)] * 5, 2)]
        [torch.Size([2, 3]), torch.Size([2, 3])]
    """
    if batches < 1:
        raise ConfigError(f"calibration batches must be >= 1, got {batches}")
    if data is None:
        raise ConfigError("this method needs calibration data; pass data= (e.g. a DataLoader of the training split)")
    source = DataLoader(data, batch_size=64) if isinstance(data, Dataset) else data
    used = 0
    for batch in source:
        if isinstance(batch, torch.Tensor):
            yield (batch,)
        elif isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
            yield (batch[0],)  # (inputs, targets)
        elif isinstance(batch, list | tuple) and batch and isinstance(batch[0], list | tuple) and batch[0]:
            yield tuple(batch[0])  # ((input, input, ...), targets): a model with several inputs
        else:
            raise ShapeError(f"calibration batches must be tensors or (inputs, targets), got {type(batch).__name__}")
        used += 1
        if used >= batches:
            return
    if used == 0:
        raise ConfigError("calibration got no data (an empty dataset or loader); pass at least one batch")


class _Stop(Exception):
    """Raised by a hook to end a calibration forward once the layers of interest have run."""


def _rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    k = getattr(module, "in_features", None) or x.shape[-1]
    if x.shape[-1] != k:
        raise ShapeError(f"{type(module).__name__} got inputs with {x.shape[-1]} features, expected {k}")
    return x.detach().reshape(-1, k).float()


def collect_input_stats(
    model: nn.Module,
    layers: dict[str, nn.Module],
    batches: list[tuple],
    *,
    gram: bool = False,
    max_sample: int = 0,
    stop_after: bool = False,
) -> dict[str, InputStats]:
    """Runs ``batches`` through ``model`` (eval mode, no gradients) and records the inputs of ``layers``
    (Linear-like modules whose first argument has ``in_features`` as its last dimension).

    Args:
        model: the network.
        layers: module name -> module, all inside ``model``.
        batches: input tuples (from :func:`calibration_batches`).
        gram: also accumulate ``X^T X`` (costs ``in^2`` floats per layer).
        max_sample: keep up to this many input rows per layer (0: none).
        stop_after: end each forward once every layer has run (only when each runs once per forward).

    Example:
        >>> m = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> s = collect_input_stats(m, {"0": m[0]}, [(torch.ones(4, 3),)], gram=True)
        >>> s["0"].rows, s["0"].hessian()[0, 0].item()
        (4, 2.0)
    """
    stats = {name: InputStats() for name in layers}
    pending: set[str] = set()

    def hook(name: str) -> Callable:
        def record(module: nn.Module, args: tuple) -> None:
            x = _rows(module, args[0])
            s = stats[name]
            if s.sq_sum is None:
                s.sq_sum = torch.zeros(x.shape[1], dtype=torch.float64)
                s.abs_sum = torch.zeros(x.shape[1], dtype=torch.float64)
                if gram:
                    s.gram = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
            s.rows += x.shape[0]
            s.sq_sum += (x * x).sum(0, dtype=torch.float64)
            s.abs_sum += x.abs().sum(0, dtype=torch.float64)
            if gram:  # one float32 product per batch (fast), summed over batches in float64
                s.gram += (x.T @ x).double()
            if max_sample:
                have = 0 if s.sample is None else s.sample.shape[0]
                if have < max_sample:
                    take = x[: max_sample - have].clone()
                    s.sample = take if s.sample is None else torch.cat([s.sample, take])
            pending.discard(name)
            if stop_after and not pending:
                raise _Stop

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with eval_mode(model), torch.no_grad():
            for args in batches:
                pending.update(layers)
                try:
                    model(*args)
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
    missing = [n for n, s in stats.items() if s.rows == 0]
    if missing:
        raise ConfigError(
            f"layers {', '.join(missing)} did not run on the calibration data; leave them out (ignore=) or check "
            "that the model uses them"
        )
    return stats


def execution_order(model: nn.Module, layers: dict[str, nn.Module], args: tuple) -> tuple[list[str], bool]:
    """The names of ``layers`` in the order the model first calls them on ``args``, and whether each is called
    exactly once per forward (then a forward may stop after a layer has run). Layers never called come last.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> execution_order(m, {"1": m[1], "0": m[0]}, (torch.zeros(1, 2),))
        (['0', '1'], True)
    """
    calls: dict[str, int] = {}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, inputs: tuple) -> None:
            calls[name] = calls.get(name, 0) + 1

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with eval_mode(model), torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    order = list(calls) + [n for n in layers if n not in calls]
    return order, all(c == 1 for c in calls.values()) and len(calls) == len(layers)


def layer_by_layer(
    model: nn.Module,
    layers: dict[str, nn.Module],
    batches: list[tuple],
    transform: Callable[[str, nn.Module, InputStats], None],
    *,
    gram: bool = False,
    max_sample: int = 0,
    sequential: bool = True,
    progress: Any = None,
) -> list[str]:
    """Calls ``transform(name, module, stats)`` for each layer in execution order, with the statistics of its
    inputs on ``batches``. With ``sequential`` (GPTQ's and SparseGPT's schedule) each layer's inputs are collected
    after the earlier layers were transformed, so later layers see (and compensate) the earlier errors; otherwise
    all statistics come from the original model in one pass. Returns the names in the order they were done.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> seen = []
        >>> layer_by_layer(m, dict(m.named_children()), [(torch.ones(3, 2),)], lambda n, l, s: seen.append(s.rows))
        ['0', '1']
        >>> seen
        [3, 3]
    """
    if not batches:
        raise ConfigError("no calibration batches; pass data with at least one batch")
    order, once = execution_order(model, layers, batches[0])
    if not sequential:
        stats = collect_input_stats(model, layers, batches, gram=gram, max_sample=max_sample)
        for name in order:
            transform(name, layers[name], stats[name])
        return order
    for i, name in enumerate(order):
        s = collect_input_stats(model, {name: layers[name]}, batches, gram=gram, max_sample=max_sample,
                                stop_after=once)  # fmt: skip
        transform(name, layers[name], s[name])
        log.debug("layer %d/%d done: %s", i + 1, len(order), name)
        if progress is not None:
            progress.update(1)
    return order
