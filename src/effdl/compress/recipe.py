"""The recipes that ship with effdl (``compress/recipes/*.yaml``, loadable by name) and the step classes of the
recipe format before version 2, kept as deprecated shims for one release: a recipe is now a plain list of configs
(:class:`~effdl.core.recipe.Recipe`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effdl.compress.finetune import FinetuneConfig
from effdl.core.config import Config
from effdl.core.deprecation import warn_once
from effdl.core.errors import ConfigError
from effdl.core.recipe import RECIPE_DIRS, Recipe, shipped_recipes
from effdl.quant.config import Int8Config

__all__ = ["FactorizeStep", "FinetuneStep", "PruneStep", "QATStep", "QuantizeStep", "Recipe", "shipped_recipes"]

SHIPPED = Path(__file__).with_name("recipes")
if SHIPPED not in RECIPE_DIRS:
    RECIPE_DIRS.append(SHIPPED)


def PruneStep(*, config: Config) -> Config:
    """Deprecated: a recipe step is the pruning config itself."""
    warn_once("PruneStep(config=C)", "the config C itself as the recipe step")
    return config


def FactorizeStep(*, config: Config) -> Config:
    """Deprecated: a recipe step is the :class:`~effdl.factorize.LowRankConfig` itself."""
    warn_once("FactorizeStep(config=C)", "the config C itself as the recipe step")
    return config


def QuantizeStep(*, config: Config | None = None) -> Config:
    """Deprecated: a recipe step is the :class:`~effdl.quant.Int8Config` itself."""
    warn_once("QuantizeStep(config=C)", "Int8Config(...) itself as the recipe step")
    return config or Int8Config()


def FinetuneStep(*, train: dict[str, Any] | None = None, distill: Any = None) -> FinetuneConfig:
    """Deprecated: use :class:`~effdl.compress.FinetuneConfig`."""
    warn_once("FinetuneStep", "FinetuneConfig")
    return FinetuneConfig(train=train or {}, distill=distill)


def QATStep(**_: Any) -> None:
    """Removed: QAT is two steps, the quantization config then a :class:`~effdl.compress.FinetuneConfig`."""
    raise ConfigError(
        "QATStep is gone: QAT is two recipe steps, QuantConfig(...) then FinetuneConfig(train=..., distill=...)"
    )
