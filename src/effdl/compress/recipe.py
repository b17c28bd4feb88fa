"""Recipes: an ordered list of compression steps, each a saved config, that ``effdl compress`` replays.

A recipe file (YAML or JSON) looks like this::

    name: default
    steps:
      - step: prune
        method: structured          # or magnitude
        config: {ratio: 0.5, criterion: l1}
      - step: finetune
        train: {epochs: 10}         # overrides of the model's recommended training settings
        distill: {alpha: 0.7}       # optional: distil from the uncompressed model
      - step: quantize              # real int8; must be the last step
        config: {runtime: auto}
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Self

from effdl.core.config import Config
from effdl.core.errors import ConfigError
from effdl.core.io import atomic_write_text
from effdl.distill.config import DistillConfig
from effdl.factorize.config import LowRankFactorization
from effdl.prune.structured import StructuredPruning
from effdl.prune.unstructured import MagnitudePruning
from effdl.quant.config import Int8Config, QuantConfig
from effdl.train.config import TrainConfig

__all__ = [
    "STEP_TYPES",
    "FactorizeStep",
    "FinetuneStep",
    "PruneStep",
    "QATStep",
    "QuantizeStep",
    "Recipe",
    "Step",
    "shipped_recipes",
]

_PRUNING = {"structured": StructuredPruning, "magnitude": MagnitudePruning}


def _check_train(owner: str, train: dict[str, Any]) -> None:
    if not isinstance(train, dict):
        raise ConfigError(f"{owner}: train must be a mapping of training settings, got {type(train).__name__}")
    TrainConfig.from_dict(train)  # unknown fields and bad values raise here, with the valid fields listed


class Step:
    """A step of a recipe: a frozen config with a ``kind`` and a dict form ``{"step": kind, ...}``. Fields named
    in ``nested`` hold configs (written as their dicts, ``None`` allowed); the others are plain values."""

    kind: ClassVar[str] = ""
    nested: ClassVar[dict[str, type]] = {}

    def describe(self) -> str:
        """One line for tables and logs."""
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        """``{"step": kind, field: value, ...}`` with nested configs as dicts."""
        out: dict[str, Any] = {"step": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, Config) else copy.deepcopy(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; unknown keys are refused with the valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        _no_extra(data, {"step", *names})
        kwargs: dict[str, Any] = {}
        for name in names:
            value = data.get(name)
            if value is None:  # missing or null: the field's default
                continue
            kwargs[name] = cls.nested[name].from_dict(value) if name in cls.nested else value
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneStep(Step, Config):
    """Structured (channel) or magnitude (weight) pruning.

    Example:
        >>> from effdl.prune import L1FilterPruning
        >>> PruneStep(config=L1FilterPruning(ratio=0.5)).describe()
        'prune structured l1 50%'
    """

    kind: ClassVar[str] = "prune"
    config: StructuredPruning | MagnitudePruning

    def validate(self) -> None:
        if not isinstance(self.config, StructuredPruning | MagnitudePruning):
            raise ConfigError(f"prune step: config must be StructuredPruning or MagnitudePruning, got {self.config!r}")
        if type(self.config) not in (StructuredPruning, MagnitudePruning):  # e.g. L1FilterPruning: store the base
            base = StructuredPruning if isinstance(self.config, StructuredPruning) else MagnitudePruning
            object.__setattr__(self, "config", base.from_dict(self.config.to_dict()))  # so it round-trips equal

    def describe(self) -> str:
        if isinstance(self.config, StructuredPruning):
            return f"prune structured {self.config.criterion} {self.config.ratio:.0%}"
        return f"prune magnitude {self.config.sparsity:.0%}"

    def to_dict(self) -> dict[str, Any]:
        method = "structured" if isinstance(self.config, StructuredPruning) else "magnitude"
        return {"step": self.kind, "method": method, "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        method = data.get("method", "structured")
        if method not in _PRUNING:
            raise ConfigError(f"prune step: method must be one of {list(_PRUNING)}, got {method!r}")
        _no_extra(data, {"step", "method", "config"})
        return cls(config=_PRUNING[method].from_dict(data.get("config") or {}))


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneStep(Step, Config):
    """Training from the current weights, optionally distilling from the uncompressed model.

    ``train`` overrides the model's recommended training settings (see ``effdl models``).

    Example:
        >>> FinetuneStep(train={"epochs": 5}, distill=DistillConfig()).describe()
        'finetune 5 epochs + KD'
    """

    kind: ClassVar[str] = "finetune"
    nested: ClassVar[dict[str, type]] = {"distill": DistillConfig}
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    distill: DistillConfig | None = None

    def validate(self) -> None:
        _check_train("finetune step", self.train)

    def describe(self) -> str:
        epochs = self.train.get("epochs", "default")
        return f"finetune {epochs} epochs" + (" + KD" if self.distill else "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FactorizeStep(Step, Config):
    """Low-rank factorization.

    Example:
        >>> FactorizeStep(config=LowRankFactorization(energy=0.95)).describe()
        'factorize energy'
    """

    kind: ClassVar[str] = "factorize"
    nested: ClassVar[dict[str, type]] = {"config": LowRankFactorization}
    config: LowRankFactorization = dataclasses.field(default_factory=LowRankFactorization)

    def describe(self) -> str:
        return f"factorize {self.config.selector}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class QATStep(Step, Config):
    """Simulated quantization at any bit width, then training (QAT), optionally with distillation.

    Example:
        >>> QATStep(config=QuantConfig(bits_w=4, bits_a=4), train={"epochs": 3}).describe()
        'qat W4A4 3 epochs'
    """

    kind: ClassVar[str] = "qat"
    nested: ClassVar[dict[str, type]] = {"config": QuantConfig, "distill": DistillConfig}
    config: QuantConfig = dataclasses.field(default_factory=QuantConfig)
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    distill: DistillConfig | None = None

    def validate(self) -> None:
        _check_train("qat step", self.train)

    def describe(self) -> str:
        a = self.config.bits_a if self.config.bits_a is not None else 32
        epochs = self.train.get("epochs", "default")
        return f"qat W{self.config.bits_w}A{a} {epochs} epochs" + (" + KD" if self.distill else "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantizeStep(Step, Config):
    """Post-training int8 with real int8 kernels (torch.ao or onnxruntime); the last step of a recipe.

    Example:
        >>> QuantizeStep().describe()
        'int8 (auto)'
    """

    kind: ClassVar[str] = "quantize"
    nested: ClassVar[dict[str, type]] = {"config": Int8Config}
    config: Int8Config = dataclasses.field(default_factory=Int8Config)

    def describe(self) -> str:
        return f"int8 ({self.config.runtime})"


#: step kind -> step class
STEP_TYPES: dict[str, type] = {s.kind: s for s in (PruneStep, FinetuneStep, FactorizeStep, QATStep, QuantizeStep)}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """An ordered list of steps, saved as YAML or JSON and replayed by :func:`~effdl.compress.compress_model`.

    Example:
        >>> from effdl.prune import L1FilterPruning
        >>> r = Recipe([PruneStep(config=L1FilterPruning(ratio=0.5)), FinetuneStep(train={"epochs": 5}),
        ...             QuantizeStep()], name="demo")
        >>> Recipe.from_dict(r.to_dict()) == r
        True
        >>> [s.kind for s in r.steps]
        ['prune', 'finetune', 'quantize']
    """

    steps: list[Step]
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", list(self.steps))
        if not self.steps:
            raise ConfigError("a recipe needs at least one step, e.g. {step: prune, config: {ratio: 0.5}}")
        for i, step in enumerate(self.steps):
            if not isinstance(step, Step):
                raise ConfigError(f"recipe step {i} is {type(step).__name__}, not a step; use PruneStep(...) etc.")
            if isinstance(step, QuantizeStep) and i != len(self.steps) - 1:
                raise ConfigError(
                    f"the quantize step (real int8) must be the last step, found at position {i + 1} of "
                    f"{len(self.steps)}; use a qat step to keep training a quantized model"
                )

    def to_dict(self) -> dict[str, Any]:
        """The plain form written to YAML/JSON."""
        return {"name": self.name, "description": self.description, "steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Parses the plain form, naming the step and field at fault on bad input."""
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            raise ConfigError("a recipe is a mapping with a list under 'steps'; see recipes/default.yaml")
        unknown = sorted(set(data) - {"name", "description", "steps"})
        if unknown:
            raise ConfigError(f"recipe has unknown key(s) {unknown}; valid keys: name, description, steps")
        steps = []
        for i, item in enumerate(data["steps"]):
            kind = item.get("step") if isinstance(item, dict) else None
            if kind not in STEP_TYPES:
                raise ConfigError(f"recipe step {i + 1}: 'step' must be one of {', '.join(STEP_TYPES)}, got {kind!r}")
            try:
                steps.append(STEP_TYPES[kind].from_dict(item))
            except ConfigError as exc:
                raise ConfigError(f"recipe step {i + 1} ({kind}): {exc}") from exc
        return cls(steps, name=str(data.get("name") or ""), description=str(data.get("description") or ""))

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the recipe atomically: JSON for ``.json``, YAML otherwise."""
        import yaml  # lazily: `import effdl` stays light

        path = Path(path)
        data = self.to_dict()
        text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        """Reads a recipe file (YAML or JSON), or a recipe shipped under ``recipes/`` by name (e.g. ``default``)."""
        import yaml

        path = _resolve(path)
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML/JSON: {exc}") from exc
        return cls.from_dict(data)

    def fingerprint(self) -> str:
        """A hash of the steps: a resumed run checks that the recipe did not change."""
        return hashlib.sha256(json.dumps(self.to_dict()["steps"], sort_keys=True).encode()).hexdigest()[:16]


def shipped_recipes() -> dict[str, Path]:
    """The recipes that ship with effdl, by name."""
    root = Path(__file__).with_name("recipes")
    return {p.stem: p for p in sorted(root.glob("*.yaml"))}


def _resolve(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    shipped = shipped_recipes()
    if str(path) in shipped:
        return shipped[str(path)]
    raise ConfigError(f"no recipe file {str(path)!r}; give a path or one of the shipped recipes: {', '.join(shipped)}")


def _no_extra(data: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise ConfigError(f"unknown key(s) {extra}; valid keys: {', '.join(sorted(allowed))}")
