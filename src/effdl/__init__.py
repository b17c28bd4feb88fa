"""effdl: efficient deep learning on PyTorch — measure, prune, quantize, factorize, distill, analyse.

The top level re-exports the curated public API. Importing it stays light: plotting and export libraries are
imported only when a function that needs them is called.

Example:
    >>> import effdl
    >>> model = effdl.create_model("cnn1d")
    >>> effdl.profile(model, effdl.get_dataset("mnist1d").example_inputs(), latency=False).params
    23402
"""

from effdl._version import __version__
from effdl.adaptive import AnyPrecisionConfig, any_precision_
from effdl.analysis import LandscapeConfig, SharpnessConfig, loss_surface, sharpness_report
from effdl.compress import FinetuneConfig, compress_model, find_lottery_ticket, sweep
from effdl.core import (
    CheckpointError,
    Config,
    ConfigError,
    DatasetNotFoundError,
    EffdlError,
    ModelSummary,
    Recipe,
    Report,
    ShapeError,
    UnknownNameError,
    UnsafeCheckpointError,
    UnsupportedError,
    apply_,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)
from effdl.core.deprecation import deprecated_config, module_getattr
from effdl.data import DatasetSplits, get_dataset, list_datasets
from effdl.distill import Distillation, DistillConfig
from effdl.factorize import LowRankConfig, factorize_
from effdl.measure import MeasureConfig, Profile, count_macs, measure_latency, profile
from effdl.models import create_model, list_models, load_model, save_model
from effdl.prune import (
    L1FilterPruneConfig,
    LotteryTicketConfig,
    MagnitudePruneConfig,
    SparseGPTConfig,
    StructuredPruneConfig,
    WandaConfig,
    prune_,
)
from effdl.quant import AWQConfig, GPTQConfig, HQQConfig, Int8Config, QuantConfig, RTNConfig, convert_int8, quantize_
from effdl.scale import ExecutorConfig, run_units
from effdl.train import Callback, TrainConfig, Trainer, evaluate, train_model

__all__ = [
    "AWQConfig",
    "AnyPrecisionConfig",
    "Callback",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DatasetNotFoundError",
    "DatasetSplits",
    "DistillConfig",
    "Distillation",
    "EffdlError",
    "ExecutorConfig",
    "FinetuneConfig",
    "GPTQConfig",
    "HQQConfig",
    "Int8Config",
    "L1FilterPruneConfig",
    "LandscapeConfig",
    "LotteryTicketConfig",
    "LowRankConfig",
    "MagnitudePruneConfig",
    "MeasureConfig",
    "ModelSummary",
    "Profile",
    "QuantConfig",
    "RTNConfig",
    "Recipe",
    "Report",
    "ShapeError",
    "SharpnessConfig",
    "SparseGPTConfig",
    "StructuredPruneConfig",
    "TrainConfig",
    "Trainer",
    "UnknownNameError",
    "UnsafeCheckpointError",
    "UnsupportedError",
    "WandaConfig",
    "__version__",
    "any_precision_",
    "apply_",
    "compress_model",
    "convert_int8",
    "count_macs",
    "create_model",
    "evaluate",
    "factorize_",
    "find_lottery_ticket",
    "get_dataset",
    "list_datasets",
    "list_models",
    "load_checkpoint",
    "load_model",
    "loss_surface",
    "measure_latency",
    "profile",
    "prune_",
    "quantize_",
    "run_units",
    "save_checkpoint",
    "save_model",
    "seed_everything",
    "sharpness_report",
    "sweep",
    "train_model",
]

# the names before the architecture change (one release)
__getattr__ = module_getattr(__name__, {
    "StructuredPruning": lambda: deprecated_config("StructuredPruning", StructuredPruneConfig),
    "L1FilterPruning": lambda: deprecated_config("L1FilterPruning", L1FilterPruneConfig),
    "MagnitudePruning": lambda: deprecated_config("MagnitudePruning", MagnitudePruneConfig),
    "LowRankFactorization": lambda: deprecated_config("LowRankFactorization", LowRankConfig),
})  # fmt: skip
