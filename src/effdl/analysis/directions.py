"""Directions in weight space for loss-landscape plots (Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss
Landscape of Neural Nets", NeurIPS 2018): random Gaussian directions with filter- or layer-normalization, an
orthogonal second direction, and the PCA directions of an optimization trajectory.

A direction is a ``dict`` from parameter name to a tensor of that parameter's shape (``model.named_parameters()``
order). Parameters with one dimension (biases, BatchNorm/LayerNorm scales and shifts) are zero in the direction by
default (``ignore="biasbn"``, the paper's choice), so they stay at their trained values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from effdl.core.config import check_choice
from effdl.core.errors import ConfigError, ShapeError

__all__ = [
    "IGNORE_OPTIONS",
    "NORMS",
    "Direction",
    "check_direction",
    "direction_dot",
    "direction_norm",
    "normalize_direction",
    "random_direction",
    "random_directions",
    "trajectory_directions",
]

Direction = dict[str, torch.Tensor]

NORMS = ("filter", "layer", "none")
IGNORE_OPTIONS = ("biasbn", "none")


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    params = {n: p.detach() for n, p in model.named_parameters()}
    if not params:
        raise ConfigError(f"{type(model).__name__} has no parameters; a loss landscape needs weights to move")
    return params


def check_direction(model: nn.Module, direction: Mapping[str, torch.Tensor]) -> None:
    """Raises :class:`ShapeError` unless ``direction`` has exactly the model's parameter names and shapes.

    Example:
        >>> check_direction(nn.Linear(2, 1), {"weight": torch.zeros(1, 2)})
        Traceback (most recent call last):
        ...
        effdl.core.errors.ShapeError: the direction does not match Linear's parameters: missing ['bias']; ...
    """
    params = _params(model)
    missing = [n for n in params if n not in direction]
    extra = [n for n in direction if n not in params]
    shapes = [
        f"{n}: {tuple(direction[n].shape)} vs {tuple(p.shape)}"
        for n, p in params.items()
        if n in direction and direction[n].shape != p.shape
    ]
    problems = [
        f"{label} {items[:5]}"
        for label, items in (("missing", missing), ("unknown", extra), ("shapes", shapes))
        if items
    ]
    if problems:
        raise ShapeError(
            f"the direction does not match {type(model).__name__}'s parameters: {'; '.join(problems)}; "
            "build it with random_direction(model) for this model"
        )


def direction_dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Inner product of two directions over all their tensors (float64 accumulation)."""
    return float(sum((a[n].double() * b[n].double()).sum() for n in a))


def direction_norm(d: Mapping[str, torch.Tensor]) -> float:
    """Euclidean norm of a direction over all its tensors."""
    return direction_dot(d, d) ** 0.5


def _units(t: torch.Tensor, norm: str) -> torch.Tensor:
    """The tensor as rows of the units that are normalized together: filters (dim 0), the layer, or everything."""
    return t.reshape(t.shape[0], -1) if norm == "filter" else t.reshape(1, -1)


def normalize_direction(
    direction: Mapping[str, torch.Tensor],
    model: nn.Module,
    *,
    norm: str = "filter",
    ignore: str = "biasbn",
) -> Direction:
    """Rescales ``direction`` to the scale of the model's weights.

    Args:
        direction: a direction of the model's parameter shapes.
        model: the model whose weights set the scale.
        norm: ``filter`` (each filter ``d_i`` of a conv/linear weight becomes ``d_i / ||d_i|| * ||w_i||``; for a
            Linear layer a filter is one output neuron, i.e. a row), ``layer`` (each tensor scaled to the norm of
            its weight) or ``none`` (left as is).
        ignore: ``biasbn`` zeroes one-dimensional parameters (biases, normalization layers); ``none`` moves them
            too: under ``filter``/``layer`` norms their direction is the parameter itself (as in the paper's
            code), under ``none`` it is left random.

    Example:
        >>> lin = nn.Linear(3, 2)
        >>> d = normalize_direction({"weight": torch.ones(2, 3), "bias": torch.ones(2)}, lin)
        >>> torch.allclose(d["weight"].norm(dim=1), lin.weight.detach().norm(dim=1)), float(d["bias"].abs().sum())
        (True, 0.0)
    """
    check_choice("norm", norm, NORMS)
    check_choice("ignore", ignore, IGNORE_OPTIONS)
    check_direction(model, direction)
    out: Direction = {}
    for name, w in _params(model).items():
        d = direction[name].detach().clone()
        if w.dim() <= 1 and ignore == "biasbn":
            d.zero_()
        elif w.dim() <= 1 and norm != "none":
            d.copy_(w)  # the paper's choice for biases/BN when they are not ignored: move them in proportion
        elif norm != "none":
            rows, wrows = _units(d, norm), _units(w, norm)
            # d_i <- d_i / ||d_i|| * ||w_i||  (Li et al. 2018, eq. 1); eps keeps an all-zero d_i at zero
            rows.mul_(wrows.norm(dim=1, keepdim=True) / (rows.norm(dim=1, keepdim=True) + 1e-10))
        out[name] = d
    return out


def random_direction(
    model: nn.Module,
    *,
    norm: str = "filter",
    ignore: str = "biasbn",
    seed: int = 0,
) -> Direction:
    """A Gaussian random direction ``N(0, I)`` of the model's parameter shapes, normalized by
    :func:`normalize_direction`. Seeded by its own generator (the global RNG is untouched).

    Example:
        >>> conv = nn.Conv1d(2, 4, 3)
        >>> d = random_direction(conv, seed=1)
        >>> torch.allclose(d["weight"].flatten(1).norm(dim=1), conv.weight.detach().flatten(1).norm(dim=1))
        True
    """
    g = torch.Generator().manual_seed(seed)
    raw = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in _params(model).items()}
    return normalize_direction(raw, model, norm=norm, ignore=ignore)


def _orthogonalize(y: Direction, x: Direction, model: nn.Module, norm: str) -> Direction:
    """``y`` made orthogonal to ``x`` unit by unit (filters, layers, or the whole model), keeping the norm of each
    unit of ``y``, so that a filter-normalized ``y`` stays filter-normalized and ``<x, y> = 0`` overall."""
    out = {n: t.clone() for n, t in y.items()}
    if norm == "none":
        coef = direction_dot(x, y) / max(direction_dot(x, x), 1e-30)
        scale = direction_norm(y)
        for n in out:
            out[n] -= coef * x[n]
        new = direction_norm(out)
        for n in out:
            out[n] *= scale / max(new, 1e-30)
        return out
    for name in out:
        if out[name].dim() == 0 or float(x[name].abs().sum()) == 0.0:
            continue
        rows, xr = _units(out[name], norm), _units(x[name], norm)
        keep = rows.norm(dim=1, keepdim=True)
        rows -= (rows * xr).sum(1, keepdim=True) / (xr * xr).sum(1, keepdim=True).clamp_min(1e-30) * xr
        rows.mul_(keep / (rows.norm(dim=1, keepdim=True) + 1e-10))
    return out


def random_directions(
    model: nn.Module,
    dims: int,
    *,
    norm: str = "filter",
    ignore: str = "biasbn",
    orthogonal: bool = True,
    seed: int = 0,
) -> list[Direction]:
    """``dims`` (1 or 2) random normalized directions, the second seeded with ``seed + 1`` and, with
    ``orthogonal``, made exactly orthogonal to the first (unit by unit, norms kept).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x, y = random_directions(net, 2)
        >>> abs(direction_dot(x, y)) < 1e-6
        True
    """
    if dims not in (1, 2):
        raise ConfigError(f"dims must be 1 or 2, got {dims}")
    first = random_direction(model, norm=norm, ignore=ignore, seed=seed)
    if dims == 1:
        return [first]
    second = random_direction(model, norm=norm, ignore=ignore, seed=seed + 1)
    return [first, _orthogonalize(second, first, model, norm) if orthogonal else second]


def trajectory_directions(
    model: nn.Module,
    snapshots: Sequence[Mapping[str, torch.Tensor]],
    *,
    ignore: str = "biasbn",
) -> tuple[list[Direction], torch.Tensor, list[float]]:
    """PCA directions of an optimization path (Li et al. 2018, section 7): the two leading principal components
    of the matrix whose rows are ``theta_i - theta_final`` for the snapshots ``theta_i``, with ``model`` holding
    the final weights.

    Args:
        model: the model at the end of the path.
        snapshots: state dicts (or parameter dicts) saved along the path, e.g. one per epoch; at least 2.
        ignore: ``biasbn`` leaves one-dimensional parameters out of the PCA (zero in the directions).

    Returns:
        ``(directions, coords, explained)``: two unit-norm directions, the ``(len(snapshots), 2)`` coordinates of
        each snapshot in them (projections), and the fraction of the path's variance each explains.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> path = [{k: v + 0.1 * i for k, v in net.state_dict().items()} for i in range(4)]
        >>> (d1, d2), coords, explained = trajectory_directions(net, path, ignore="none")
        >>> coords.shape, round(explained[0], 3)
        (torch.Size([4, 2]), 1.0)
    """
    check_choice("ignore", ignore, IGNORE_OPTIONS)
    if len(snapshots) < 2:
        raise ConfigError(f"trajectory_directions needs at least 2 snapshots along the path, got {len(snapshots)}")
    params = _params(model)
    names = [n for n, p in params.items() if not (ignore == "biasbn" and p.dim() <= 1)]
    rows = []
    for i, snap in enumerate(snapshots):
        missing = [n for n in names if n not in snap]
        bad = [n for n in names if n in snap and snap[n].shape != params[n].shape]
        if missing or bad:
            raise ShapeError(
                f"snapshot {i} does not match the model: missing {missing[:3]}, other shapes {bad[:3]}; "
                "pass checkpoints of the same architecture as the final model"
            )
        rows.append(torch.cat([(snap[n].double() - params[n].double()).flatten() for n in names]))
    matrix = torch.stack(rows)  # (T, P); the paper centres on the final point, not the mean
    _, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    total = float((s * s).sum()) or 1.0
    k = min(2, vh.shape[0])
    comps = [vh[i] for i in range(k)]
    while len(comps) < 2:  # a path in one dimension: any orthogonal unit vector will do for the second axis
        g = torch.Generator().manual_seed(0)
        v = torch.randn(vh.shape[1], generator=g, dtype=torch.float64)
        v -= (v @ comps[0]) * comps[0]
        comps.append(v / v.norm())
    coords = (matrix @ torch.stack(comps).T).float()
    explained = [float(s[i] ** 2) / total if i < len(s) else 0.0 for i in range(2)]
    directions = []
    for comp in comps:
        d, offset = {}, 0
        for n, p in params.items():
            if n in names:
                d[n] = comp[offset : offset + p.numel()].reshape(p.shape).to(p.dtype)
                offset += p.numel()
            else:
                d[n] = torch.zeros_like(p)
        directions.append(d)
    return directions, coords, explained
