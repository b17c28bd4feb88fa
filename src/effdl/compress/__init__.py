"""The one pipeline: recipes (plain lists of configs: prune, fine-tune with or without distillation, factorize,
quantize, int8) replayed on a trained model with a profile after every step, resumable, deployed to ONNX, and
reported with tables and Pareto plots; recipes found by a search towards a target (per-layer pruning ratios and
precision under an accuracy tolerance, with a latency model measured on this machine); sweeps over recipe grids;
the lottery-ticket search.

Example:
    >>> from effdl.prune import L1FilterPruneConfig
    >>> from effdl.quant import Int8Config
    >>> recipe = Recipe([L1FilterPruneConfig(ratio=0.5), FinetuneConfig(train={"epochs": 5}), Int8Config()])
    >>> [s.describe() for s in recipe.steps]
    ['prune structured l1 50%', 'finetune 5 epochs', 'int8 (auto)']
"""

from effdl.compress.deploy import Deployment
from effdl.compress.finetune import FinetuneConfig
from effdl.compress.grid import SweepPoint, sweep
from effdl.compress.latency_model import LatencyModel, LatencyTable
from effdl.compress.lottery import find_lottery_ticket
from effdl.compress.pipeline import CompressOutcome, Stage, compress_model
from effdl.compress.recipe import FactorizeStep, FinetuneStep, PruneStep, QATStep, QuantizeStep, shipped_recipes
from effdl.compress.target import SearchPoint, TargetConfig, TargetOutcome, compress_to_target
from effdl.core.recipe import Recipe

__all__ = [
    "CompressOutcome",
    "Deployment",
    "FactorizeStep",
    "FinetuneConfig",
    "FinetuneStep",
    "LatencyModel",
    "LatencyTable",
    "PruneStep",
    "QATStep",
    "QuantizeStep",
    "Recipe",
    "SearchPoint",
    "Stage",
    "SweepPoint",
    "TargetConfig",
    "TargetOutcome",
    "compress_model",
    "compress_to_target",
    "find_lottery_ticket",
    "shipped_recipes",
    "sweep",
]
