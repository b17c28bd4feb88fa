"""Compression pipelines: recipes of steps (prune, fine-tune with or without distillation, factorize, QAT, int8)
replayed on a trained model with a profile after every step, resumable, deployed to ONNX, and reported with
tables and Pareto plots; sweeps over recipe grids.

Example:
    >>> from effdl.prune import L1FilterPruning
    >>> recipe = Recipe([PruneStep(config=L1FilterPruning(ratio=0.5)), FinetuneStep(train={"epochs": 5}),
    ...                  QuantizeStep()], name="demo")
    >>> [s.describe() for s in recipe.steps]
    ['prune structured l1 50%', 'finetune 5 epochs', 'int8 (auto)']
"""

from effdl.compress.deploy import Deployment
from effdl.compress.grid import SweepPoint, sweep
from effdl.compress.pipeline import CompressOutcome, Stage, compress_model
from effdl.compress.recipe import (
    STEP_TYPES,
    FactorizeStep,
    FinetuneStep,
    PruneStep,
    QATStep,
    QuantizeStep,
    Recipe,
    shipped_recipes,
)

__all__ = [
    "STEP_TYPES",
    "CompressOutcome",
    "Deployment",
    "FactorizeStep",
    "FinetuneStep",
    "PruneStep",
    "QATStep",
    "QuantizeStep",
    "Recipe",
    "Stage",
    "SweepPoint",
    "compress_model",
    "shipped_recipes",
    "sweep",
]
