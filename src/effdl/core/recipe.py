"""Recipes: a plain, ordered list of configs (prune, fine-tune, factorize, quantize, ...) saved as YAML or JSON and
replayed step by step. Each step is a tagged config dict, so a recipe needs no table of step kinds::

    name: default
    version: 2
    steps:
    - {type: StructuredPruneConfig, ratio: 0.5, criterion: l1}
    - {type: FinetuneConfig, train: {epochs: 10}, distill: {type: DistillConfig, alpha: 0.5}}
    - {type: Int8Config, runtime: auto}

Recipes written by effdl before version 2 (``{step: prune, method: structured, config: {...}}``) still load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from effdl.core.config import TYPE_KEY, Config
from effdl.core.errors import ConfigError, UnknownNameError, UnsupportedError
from effdl.core.io import atomic_write_text, load_yaml
from effdl.core.transform import find_transform

__all__ = ["RECIPE_DIRS", "RECIPE_FORMAT_VERSION", "Recipe", "shipped_recipes"]

RECIPE_FORMAT_VERSION = 2

#: folders searched for recipes given by name (``Recipe.load("default")``); packages append theirs
RECIPE_DIRS: list[Path] = []


@dataclasses.dataclass(frozen=True)
class Recipe:
    """An ordered list of configs, saved as YAML or JSON and replayed by :func:`~effdl.core.transform.apply_` or
    ``effdl.compress_model``.

    Example:
        >>> @dataclasses.dataclass(frozen=True, kw_only=True)
        ... class HalveConfig(Config):
        ...     ratio: float = 0.5
        >>> r = Recipe([HalveConfig(), HalveConfig(ratio=0.25)], name="demo")
        >>> Recipe.from_dict(r.to_dict()) == r
        True
        >>> r.to_dict()["steps"][1]
        {'type': 'HalveConfig', 'version': 1, 'ratio': 0.25}
    """

    steps: list[Config]
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", list(self.steps))
        if not self.steps:
            raise ConfigError("a recipe needs at least one step, e.g. [StructuredPruneConfig(ratio=0.5)]")
        for i, step in enumerate(self.steps):
            if not isinstance(step, Config):
                raise ConfigError(
                    f"recipe step {i + 1} is {type(step).__name__}, not a config; use e.g. StructuredPruneConfig(...)"
                )
        for i, step in enumerate(self.steps[:-1]):
            try:
                entry = find_transform(step)
            except UnsupportedError:
                continue  # a config without a transform here (e.g. its family is not imported): nothing to check
            if not entry.in_place:
                raise ConfigError(
                    f"{type(step).__name__} (step {i + 1} of {len(self.steps)}) makes a new model that later steps "
                    "cannot change; it must be the last step (to keep training a quantized model, use QuantConfig "
                    "and a FinetuneConfig step)"
                )

    def to_dict(self) -> dict[str, Any]:
        """The plain form written to YAML/JSON."""
        return {
            "name": self.name,
            "description": self.description,
            "version": RECIPE_FORMAT_VERSION,
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Parses the plain form (or the format before version 2), naming the step and field at fault."""
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            raise ConfigError("a recipe is a mapping with a list under 'steps'; see recipes/default.yaml")
        unknown = sorted(set(data) - {"name", "description", "version", "steps"})
        if unknown:
            raise ConfigError(f"recipe has unknown key(s) {unknown}; valid keys: name, description, version, steps")
        version = data.get("version", 1)
        if not isinstance(version, int) or version > RECIPE_FORMAT_VERSION:
            raise ConfigError(
                f"recipe version {version!r} is not one this effdl reads (up to {RECIPE_FORMAT_VERSION}); upgrade effdl"
            )
        steps: list[Config] = []
        for i, item in enumerate(data["steps"]):
            items = _legacy_step(i, item) if version < 2 and isinstance(item, dict) and "step" in item else [item]
            for entry in items:
                if not isinstance(entry, dict) or TYPE_KEY not in entry:
                    raise ConfigError(
                        f"recipe step {i + 1} must be a config mapping with a 'type' tag, e.g. "
                        f"{{type: StructuredPruneConfig, ratio: 0.5}}; got {entry!r}"
                    )
                try:
                    steps.append(Config.from_dict(entry))
                except (ConfigError, UnknownNameError) as exc:
                    raise type(exc)(f"recipe step {i + 1} ({entry.get(TYPE_KEY)}): {exc}") from exc
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
        """Reads a recipe file (YAML or JSON), or a shipped recipe by name (e.g. ``default``)."""
        path = _resolve(path)
        data = load_yaml(path.read_text(), what=str(path))  # JSON is YAML too; no aliases, bounded size
        return cls.from_dict(data)

    def fingerprint(self) -> str:
        """A hash of the steps: a resumed run checks that the recipe did not change."""
        return hashlib.sha256(json.dumps(self.to_dict()["steps"], sort_keys=True).encode()).hexdigest()[:16]


def shipped_recipes() -> dict[str, Path]:
    """The recipes that ship with effdl (the YAML files in :data:`RECIPE_DIRS`), by name."""
    found: dict[str, Path] = {}
    for root in RECIPE_DIRS:
        for p in sorted(Path(root).glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def _resolve(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    shipped = shipped_recipes()
    if str(path) in shipped:
        return shipped[str(path)]
    raise ConfigError(f"no recipe file {str(path)!r}; give a path or one of the shipped recipes: {', '.join(shipped)}")


# The recipe format before version 2: {step: KIND, ...} items whose configs had no type tag. Each kind becomes one
# or more tagged configs at version 1 (the configs' own `upgrade` then renames old fields).
_LEGACY_PRUNE = {"structured": "StructuredPruneConfig", "magnitude": "MagnitudePruneConfig"}
_LEGACY_KEYS = {
    "prune": {"step", "method", "config"},
    "finetune": {"step", "train", "distill"},
    "factorize": {"step", "config"},
    "qat": {"step", "config", "train", "distill"},
    "quantize": {"step", "config"},
}


def _legacy_step(index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    kind = item.get("step")
    if kind not in _LEGACY_KEYS:
        raise ConfigError(f"recipe step {index + 1}: 'step' must be one of {', '.join(_LEGACY_KEYS)}, got {kind!r}")
    extra = sorted(set(item) - _LEGACY_KEYS[kind])
    if extra:
        raise ConfigError(
            f"recipe step {index + 1} ({kind}): unknown key(s) {extra}; valid keys: {sorted(_LEGACY_KEYS[kind])}"
        )

    def tagged(tag: str, fields: Any) -> dict[str, Any]:
        if fields is not None and not isinstance(fields, dict):
            raise ConfigError(f"recipe step {index + 1} ({kind}): expected a mapping of settings, got {fields!r}")
        return {TYPE_KEY: tag, "version": 1, **(fields or {})}

    def finetune() -> dict[str, Any]:
        distill = item.get("distill")
        return tagged("FinetuneConfig", {
            "train": item.get("train") or {},
            "distill": None if distill is None else tagged("DistillConfig", distill),
        })  # fmt: skip

    if kind == "prune":
        method = item.get("method", "structured")
        if method not in _LEGACY_PRUNE:
            raise ConfigError(f"recipe step {index + 1} (prune): method must be one of {list(_LEGACY_PRUNE)}")
        return [tagged(_LEGACY_PRUNE[method], item.get("config"))]
    if kind == "finetune":
        return [finetune()]
    if kind == "factorize":
        return [tagged("LowRankConfig", item.get("config"))]
    if kind == "qat":
        return [tagged("QuantConfig", item.get("config")), finetune()]
    return [tagged("Int8Config", item.get("config"))]
