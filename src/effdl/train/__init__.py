"""One small training loop with callbacks, resumable checkpoints and torchrun data parallelism.

Example:
    >>> from effdl.train import TrainConfig
    >>> TrainConfig(epochs=3).epochs
    3
"""

from effdl.measure.summary import summarize  # moved to measure; kept here for one release
from effdl.train.callbacks import Callback, CSVLogger, Snapshots, TensorBoardLogger
from effdl.train.config import TrainConfig
from effdl.train.distributed import DistContext
from effdl.train.evaluation import evaluate
from effdl.train.loop import Trainer, TrainResult
from effdl.train.optim import build_optimizer, build_scheduler
from effdl.train.run import TrainOutcome, default_train_config, train_model
from effdl.train.state import load_train_state, save_train_state

__all__ = [
    "CSVLogger",
    "Callback",
    "DistContext",
    "Snapshots",
    "TensorBoardLogger",
    "TrainConfig",
    "TrainOutcome",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "default_train_config",
    "evaluate",
    "load_train_state",
    "save_train_state",
    "summarize",
    "train_model",
]
