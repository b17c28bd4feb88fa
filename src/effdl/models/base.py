"""The model registry, ``create_model``, and the input-shape check every reference model carries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from effdl.core.config import check_options
from effdl.core.errors import ConfigError, EffdlError, ShapeError
from effdl.core.modules import eval_mode
from effdl.core.registry import Registry

__all__ = [
    "MODELS",
    "InputCheck",
    "check_example_inputs",
    "create_model",
    "example_batch",
    "expect_inputs",
    "list_models",
    "model_spec",
    "register_model",
]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

_AXES = {2: "(batch, channels, length)", 3: "(batch, channels, height, width)"}


def register_model(
    name: str,
    *,
    description: str,
    input_shape: Sequence[int],
    fixed_size: bool = True,
    train_defaults: dict[str, Any] | None = None,
    inputs: str = "float",
    num_classes: int = 10,
    **defaults: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Registers a model factory ``f(input_shape=..., num_classes=..., **kwargs) -> nn.Module``.

    Args:
        name: registry name.
        description: one line for ``effdl models``.
        input_shape: default shape of one example (no batch dimension).
        fixed_size: whether the model needs exactly that spatial size (e.g. Flatten -> Linear) or takes any; used
            only for models that do not check their inputs themselves (see :func:`expect_inputs`).
        train_defaults: training settings known to work for this model (``TrainConfig`` field values).
        inputs: what the model reads: ``"float"`` tensors or ``"tokens"`` (int64 ids below ``num_classes``, the
            vocabulary of a language model); :func:`example_batch` makes a random batch of either.
        num_classes: outputs when :func:`create_model` is not told (the vocabulary of a language model).
        **defaults: keyword arguments passed to the factory for this name (variants share one factory).

    Example:
        >>> "cnn1d" in MODELS
        True
    """

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(
            name,
            factory,
            description=description,
            input_shape=tuple(input_shape),
            fixed_size=fixed_size,
            train_defaults=dict(train_defaults or {}),
            inputs=inputs,
            num_classes=num_classes,
            defaults=dict(defaults),
        )
        return factory

    return decorator


class InputCheck:
    """Forward pre-hook that turns a wrong input shape into a :class:`ShapeError` that says what to do.

    It checks the number of dimensions, the channels, and (for fixed-size models) the spatial size. It is skipped
    while tracing or compiling, so it never enters an exported graph.

    Example:
        >>> m = nn.Flatten()
        >>> _ = m.register_forward_pre_hook(InputCheck("demo", (1, 4), fixed_size=True))
        >>> m(torch.zeros(2, 4))
        Traceback (most recent call last):
        ...
        effdl.core.errors.ShapeError: demo expects inputs of shape (N, 1, 4) = (batch, channels, length), ...
    """

    def __init__(self, model_name: str, input_shape: Sequence[int], *, fixed_size: bool) -> None:
        self.model_name = model_name
        self.input_shape = tuple(int(s) for s in input_shape)
        self.fixed_size = fixed_size

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if _tracing() or not args or not isinstance(args[0], torch.Tensor):
            return
        got = tuple(args[0].shape)
        want = self.input_shape
        layout = _AXES.get(len(want), "(batch, ...)")
        expected = f"(N, {', '.join(map(str, want))})"
        msg = f"{self.model_name} expects inputs of shape {expected} = {layout}, got {got}"
        if len(got) == len(want):
            if got[0] == want[0] and len(want) >= 2:
                hint = "add the batch dimension with x.unsqueeze(0)"
            else:
                hint = "add the channel dimension with x.unsqueeze(1)"
            raise ShapeError(f"{msg}; {hint}")
        if len(got) != len(want) + 1:
            raise ShapeError(f"{msg}; reshape the input to {expected}")
        if got[1] != want[0]:
            raise ShapeError(
                f"{msg}: {got[1]} channels instead of {want[0]}; build the model with input_shape={got[1:]}"
            )
        if self.fixed_size and got[2:] != want[1:]:
            raise ShapeError(
                f"{msg}: this model's layer sizes depend on the input size; resize the input to {want[1:]} or "
                f"build the model with input_shape={got[1:]}"
            )


def expect_inputs(model: nn.Module, input_shape: Sequence[int], *, fixed_size: bool) -> InputCheck:
    """Makes ``model`` check the shape of its first input on every call (an :class:`InputCheck` pre-hook, reachable
    as ``model.input_check``). Reference models call this in their constructor, so the check holds however they
    are built.

    Example:
        >>> m = expect_inputs(nn.Flatten(), (1, 4), fixed_size=True)
        >>> m.model_name
        'Flatten'
    """
    check = InputCheck(type(model).__name__, input_shape, fixed_size=fixed_size)
    model.input_check = check
    model.register_forward_pre_hook(check)
    return check


def _tracing() -> bool:
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return True
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing

    return is_fx_symbolic_tracing()


def create_model(
    name: str, *, input_shape: Sequence[int] | None = None, num_classes: int | None = None, **kwargs: Any
) -> nn.Module:
    """Builds a registered model; it remembers how it was built (:func:`model_spec`) so checkpoints can rebuild it.

    Args:
        name: registry name (``effdl models`` lists them).
        input_shape: shape of one example, e.g. ``(1, 40)``; defaults to the model's own.
        num_classes: number of outputs (default: the model's own, 10 for classifiers).
        **kwargs: architecture options of the model's factory.

    Example:
        >>> m = create_model("cnn1d")
        >>> m(torch.zeros(2, 1, 40)).shape
        torch.Size([2, 10])
        >>> create_model("cnn1d", depth=3)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: cnn1d got unknown option(s) 'depth'; valid options: channels, kernel_sizes, ...
    """
    entry = MODELS.entry(name)
    shape = tuple(int(s) for s in (input_shape if input_shape is not None else entry.meta["input_shape"]))
    if num_classes is None:
        num_classes = entry.meta.get("num_classes", 10)
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got num_classes={num_classes}")
    check_options(entry.name, entry.obj, kwargs, reserved=("input_shape", "num_classes"))
    options = {**entry.meta["defaults"], **kwargs}
    model = entry.obj(input_shape=shape, num_classes=num_classes, **options)
    model.effdl_spec = {"name": entry.name, "input_shape": list(shape), "num_classes": num_classes, "kwargs": kwargs}
    check = getattr(model, "input_check", None)
    if not isinstance(check, InputCheck):
        check = expect_inputs(model, shape, fixed_size=entry.meta["fixed_size"])
    check.model_name = entry.name  # errors name the model as the user asked for it
    return model


def example_batch(model: nn.Module | str, batch_size: int = 2, *, seed: int = 0) -> torch.Tensor:
    """A random batch a registered model accepts (by name, or a model built by :func:`create_model`): standard
    normal floats of its input shape, or uniform token ids below its vocabulary for language models.

    Example:
        >>> example_batch("cnn1d").shape
        torch.Size([2, 1, 40])
        >>> example_batch("test_gpt").dtype
        torch.int64
    """
    spec = model_spec(model) if isinstance(model, nn.Module) else None
    name = spec["name"] if spec else model
    if not isinstance(name, str):
        raise ConfigError("example_batch needs a registered model name or a model built by create_model")
    entry = MODELS.entry(name)
    shape = tuple(spec["input_shape"]) if spec else entry.meta["input_shape"]
    g = torch.Generator().manual_seed(seed)
    if entry.meta.get("inputs") == "tokens":
        vocab = spec["num_classes"] if spec else entry.meta["num_classes"]
        return torch.randint(0, vocab, (batch_size, *shape), generator=g)
    return torch.randn(batch_size, *shape, generator=g)


def model_spec(model: nn.Module) -> dict[str, Any] | None:
    """How a model made by :func:`create_model` was built (name, input shape, classes, options), else None.

    Example:
        >>> model_spec(create_model("mlp"))["name"]
        'mlp'
    """
    spec = getattr(model, "effdl_spec", None)
    return dict(spec) if spec is not None else None


def list_models() -> list[dict[str, Any]]:
    """Name, description, default input shape and training defaults of every registered model.

    Example:
        >>> any(m["name"] == "resnet20" for m in list_models())
        True
    """
    return [
        {
            "name": e.name,
            "description": e.description,
            "input_shape": e.meta["input_shape"],
            "train_defaults": e.meta["train_defaults"],
        }
        for e in MODELS.entries()
    ]


def conv_nd(dim: int) -> type[nn.Module]:
    """``nn.Conv1d`` or ``nn.Conv2d`` for a spatial dimension of 1 or 2."""
    return {1: nn.Conv1d, 2: nn.Conv2d}[_check_dim(dim)]


def bn_nd(dim: int) -> type[nn.Module]:
    """``nn.BatchNorm1d`` or ``nn.BatchNorm2d``."""
    return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[_check_dim(dim)]


def spatial_dims(model_name: str, input_shape: Sequence[int]) -> int:
    """Number of spatial dimensions of ``(channels, *spatial)``; only 1 and 2 are supported."""
    dim = len(input_shape) - 1
    if dim not in (1, 2):
        raise ConfigError(
            f"{model_name} takes input_shape (channels, length) or (channels, height, width), got {tuple(input_shape)}"
        )
    return dim


def _check_dim(dim: int) -> int:
    if dim not in (1, 2):
        raise ConfigError(f"only 1D and 2D convolutions are supported, got dim={dim}")
    return dim


def check_example_inputs(model: nn.Module, example_inputs: Any, *, caller: str) -> tuple:
    """Runs ``model`` once (eval mode, no gradients) on ``example_inputs`` and returns them as a tuple; raises
    :class:`ShapeError` naming ``caller`` when they are missing, not tensors, or not accepted by the model.

    Example:
        >>> check_example_inputs(nn.Linear(3, 2), torch.zeros(1, 3), caller="prune_")[0].shape
        torch.Size([1, 3])
        >>> check_example_inputs(nn.Linear(3, 2), None, caller="prune_")
        Traceback (most recent call last):
        ...
        effdl.core.errors.ShapeError: prune_ needs example_inputs (a batch the model accepts, e.g. ...
    """
    if example_inputs is None:
        raise ShapeError(
            f"{caller} needs example_inputs (a batch the model accepts, e.g. data.example_inputs()) to trace the model"
        )
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    if not all(isinstance(a, torch.Tensor) for a in args):
        raise ShapeError(f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}")
    try:
        with eval_mode(model), torch.no_grad():
            model(*args)
    except EffdlError:
        raise
    except Exception as exc:
        shapes = ", ".join(str(tuple(a.shape)) for a in args)
        raise ShapeError(
            f"{type(model).__name__} does not run on example_inputs of shape {shapes} ({type(exc).__name__}: {exc}); "
            "pass a batch the model accepts"
        ) from exc
    return args
