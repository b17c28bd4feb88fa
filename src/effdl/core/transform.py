"""Transforms dispatched by config type: each family registers one handler per config class
(``@register_transform(StructuredPruneConfig)``), and one entry point, :func:`apply_`, runs a config or a recipe of
them on a model. The family verbs (``prune_``, ``quantize_``, ``factorize_``) are thin wrappers over it.

A handler is ``fn(model, config, context) -> Report`` for a transform that changes the model in place, or
``-> Applied(model, report)`` for one that makes a new model (real int8). Any exception half-way restores the
user's model exactly (its state before the call; for a list of configs, before the first) before it propagates."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from effdl.core.config import Config
from effdl.core.errors import ConfigError, NonFiniteError, UnsupportedError
from effdl.core.report import Report

if TYPE_CHECKING:
    from effdl.core.recipe import Recipe

__all__ = [
    "Applied",
    "Transform",
    "TransformContext",
    "apply_",
    "check_finite",
    "find_transform",
    "register_transform",
    "restored_on_failure",
    "run_transform",
    "transforms",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TransformContext:
    """What a handler gets besides the model and its config.

    Attributes:
        example_inputs: a batch the model accepts (traces it, counts MACs, checks equivalences).
        data: batches of ``(inputs, targets)`` for calibration and data-driven criteria.
        dataset: the dataset splits (``.train``/``.test``), for steps that train (fine-tuning).
        teacher: the uncompressed model, for distillation.
        out_dir: the step's folder (training checkpoints live there, so an interrupted step resumes).
        loss_fn: loss for gradient-based criteria (default cross-entropy).
        batch_size: the serving batch size (e.g. to pick the fastest int8 runtime).
        threads: torch threads for timing.
        progress: progress bars.
        history: the configs applied earlier in the same run (fine-tuning keeps what they ask it to keep).
        options: handler-specific extras (e.g. ``calibration_batches``).
        strict: raise instead of leaving layers out: a step whose report lists layers it left untransformed
            (``details["left_out"]``: layers kept float, unpruned, unfactorized, each with its reason) fails, and
            the model is restored.
    """

    example_inputs: Any = None
    data: Iterable | None = None
    dataset: Any = None
    teacher: nn.Module | None = None
    out_dir: Path | None = None
    loss_fn: Callable | None = None
    batch_size: int | None = None
    threads: int | None = None
    progress: bool = True
    history: list[Config] = dataclasses.field(default_factory=list)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    strict: bool = False


@dataclasses.dataclass
class Applied:
    """A transform's result when it makes a new model: the model and the report."""

    model: nn.Module
    report: Report


Handler = Callable[[nn.Module, Any, TransformContext], "Report | Applied"]


@dataclasses.dataclass(frozen=True)
class Transform:
    """A registered handler.

    Attributes:
        config_type: the config class it handles (subclasses too, unless they have their own handler).
        fn: the handler.
        in_place: whether it changes the model in place (False: it returns a new model in :class:`Applied`).
        keep_during_training: ``fn(model, config) -> callbacks`` that later training steps must run to keep what
            this transform did (e.g. the zeros of magnitude pruning).
    """

    config_type: type
    fn: Handler
    in_place: bool = True
    keep_during_training: Callable[[nn.Module, Any], list] | None = None


_TRANSFORMS: dict[type, Transform] = {}


def register_transform(
    config_type: type,
    *,
    in_place: bool = True,
    keep_during_training: Callable[[nn.Module, Any], list] | None = None,
) -> Callable[[Handler], Handler]:
    """Decorator that registers ``fn(model, config, context)`` as the handler of ``config_type``.

    Example:
        >>> @dataclasses.dataclass(frozen=True, kw_only=True)
        ... class ScaleConfig(Config):
        ...     factor: float = 2.0
        >>> @register_transform(ScaleConfig)
        ... def _scale(model, config, context):
        ...     for p in model.parameters():
        ...         p.data.mul_(config.factor)
        ...     return Report(command="scale")
        >>> import torch
        >>> m = nn.Linear(1, 1, bias=False); _ = m.weight.data.fill_(1.0)
        >>> _ = apply_(m, ScaleConfig(factor=3.0), example_inputs=torch.ones(1, 1))
        >>> m.weight.item()
        3.0
    """
    if not (isinstance(config_type, type) and issubclass(config_type, Config)):
        raise ConfigError(f"register_transform takes a Config subclass, got {config_type!r}")

    def decorator(fn: Handler) -> Handler:
        _TRANSFORMS[config_type] = Transform(config_type, fn, in_place, keep_during_training)
        return fn

    return decorator


def find_transform(config: Config) -> Transform:
    """The handler registered for ``config``'s class, or for its nearest base class that has one."""
    if not isinstance(config, Config):
        raise ConfigError(
            f"expected a config object (e.g. StructuredPruneConfig(ratio=0.5)), got {type(config).__name__}"
        )
    for cls in type(config).__mro__:
        if cls in _TRANSFORMS:
            return _TRANSFORMS[cls]
    known = ", ".join(sorted(c.__name__ for c in _TRANSFORMS)) or "(none)"
    raise UnsupportedError(f"no transform handles {type(config).__name__}; configs with a transform: {known}")


def transforms() -> dict[str, Transform]:
    """Every registered transform, by config class name (a copy)."""
    return {cls.__name__: t for cls, t in sorted(_TRANSFORMS.items(), key=lambda kv: kv[0].__name__)}


@contextlib.contextmanager
def restored_on_failure(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """On any exception inside the block, puts ``model`` back exactly as it was when the block began (modules,
    parameters, buffers, mode; the user's own object, not a copy) and re-raises.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> try:
        ...     with restored_on_failure(m):
        ...         m.weight = None
        ...         raise RuntimeError("half-way")
        ... except RuntimeError:
        ...     pass
        >>> m.weight.shape
        torch.Size([2, 2])
    """
    backup = copy.deepcopy(model) if enabled else None
    try:
        yield
    except BaseException:
        if backup is not None:
            model.__dict__.clear()
            model.__dict__.update(backup.__dict__)
        raise


def check_finite(model: nn.Module, example_inputs: Any = None) -> None:
    """Raises :class:`NonFiniteError` naming the first parameter or buffer of ``model`` (or the example input) that
    holds a NaN or an infinity: a transform on such a model gives silently broken results (a NaN filter ranks as
    the most important, one infinite weight turns every quantized output into NaN).

    Example:
        >>> m = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     m.weight[0, 0] = float("nan")
        >>> check_finite(m)
        Traceback (most recent call last):
        ...
        effdl.core.errors.NonFiniteError: weight holds NaN or infinite values; effdl does not transform such a ...
    """
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
            raise NonFiniteError(
                f"{name} holds NaN or infinite values; effdl does not transform such a model (find where they came "
                "from: a diverged training run, a corrupt checkpoint)"
            )
    inputs = example_inputs if isinstance(example_inputs, tuple | list) else (example_inputs,)
    for i, x in enumerate(inputs):
        if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise NonFiniteError(f"example input {i} holds NaN or infinite values; pass a finite batch")


def run_transform(model: nn.Module, config: Config, context: TransformContext, *, restore: bool = True) -> Applied:
    """Runs the handler of ``config`` on ``model``. On any exception an in-place transform's model is restored to
    its state before the call (see :func:`restored_on_failure`; ``restore=False`` leaves that to the caller) and
    the exception propagates.

    Returns:
        :class:`Applied` with the resulting model (``model`` itself for in-place transforms) and the report.
    """
    entry = find_transform(config)
    check_finite(model, context.example_inputs)
    with restored_on_failure(model, enabled=restore and entry.in_place):
        result = entry.fn(model, config, context)
        report = result.report if isinstance(result, Applied) else result
        if not isinstance(report, Report):
            raise UnsupportedError(
                f"the handler of {type(config).__name__} returned {type(result).__name__}; a handler returns a "
                "Report or Applied(model, report)"
            )
        left_out = (report.details or {}).get("left_out") or []
        if context.strict and left_out:
            listed = "; ".join(f"{e['layer']}: {e['reason']}" for e in left_out[:5])
            more = f" (and {len(left_out) - 5} more)" if len(left_out) > 5 else ""
            raise UnsupportedError(
                f"strict: {config.describe()} left {len(left_out)} layer(s) out: {listed}{more}; the model was "
                "restored. Pass strict=False to accept (they are listed in the report), or exclude them yourself"
            )
    return result if isinstance(result, Applied) else Applied(model, result)


def apply_(
    model: nn.Module,
    config: Config | Recipe | list[Config],
    *,
    example_inputs: Any,
    data: Iterable | None = None,
    **context: Any,
) -> Report:
    """Transforms ``model`` in place as ``config`` (one config, or a recipe / list of them in order) says, and
    reports what changed. The handler is looked up by the config's type.

    Args:
        model: the model (changed in place).
        config: a config object, a :class:`~effdl.core.recipe.Recipe`, or a list of configs.
        example_inputs: a batch the model accepts.
        data: batches of ``(inputs, targets)`` for calibration and data-driven criteria.
        **context: further :class:`TransformContext` fields (``dataset``, ``teacher``, ``out_dir``, ...).

    On any exception the model is restored to its state before the call, also when an earlier config of the
    list had already been applied.

    Returns:
        The :class:`~effdl.core.Report` of the transform; for several configs, one report whose ``before`` is the
        first step's, ``after`` the last step's, and ``details["steps"]`` every step's report.

    Raises:
        UnsupportedError: a config whose transform makes a new model (real int8); use
            ``effdl.quant.convert_int8`` or run it in a recipe with ``effdl.compress_model``.
    """
    steps = _steps(config)
    unknown = sorted(set(context) - {f.name for f in dataclasses.fields(TransformContext)})
    if unknown:
        raise ConfigError(f"apply_ got unknown argument(s) {unknown}; see TransformContext for the valid ones")
    for step in steps:  # refuse before anything changes
        if not find_transform(step).in_place:
            raise UnsupportedError(
                f"{type(step).__name__} makes a new model and cannot change this one in place; call "
                "effdl.quant.convert_int8(model, config, ...) or run it as the last step of effdl.compress_model"
            )
    ctx = TransformContext(example_inputs=example_inputs, data=data, **context)
    reports = []
    with restored_on_failure(model):  # all steps or none: a failing later step also undoes the earlier ones
        for step in steps:
            reports.append(run_transform(model, step, ctx, restore=False).report)
            ctx.history.append(step)
    if len(reports) == 1:
        return reports[0]
    return Report(
        command="apply",
        before=reports[0].before,
        after=reports[-1].after,
        config={"steps": [s.to_dict() for s in steps]},
        details={"steps": [r.to_dict() for r in reports]},
    )


def _steps(config: Any) -> list[Config]:
    if isinstance(config, Config):
        return [config]
    steps = getattr(config, "steps", config)  # a Recipe or a plain list
    if isinstance(steps, list | tuple) and steps and all(isinstance(s, Config) for s in steps):
        return list(steps)
    raise ConfigError(
        f"expected a config, a Recipe or a non-empty list of configs, got {type(config).__name__}; e.g. "
        "apply_(model, StructuredPruneConfig(ratio=0.5), example_inputs=x)"
    )
