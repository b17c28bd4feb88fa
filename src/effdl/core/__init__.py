"""Shared contracts with no algorithms: configs, registries, errors, checkpoints, reports, seeding."""

from effdl.core.callback import Callback, TrainerView
from effdl.core.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from effdl.core.config import Config, check_choice, check_options, check_range, config_class, last_match
from effdl.core.errors import (
    CheckpointError,
    ConfigError,
    DatasetNotFoundError,
    EffdlError,
    ShapeError,
    UnknownNameError,
    UnsafeCheckpointError,
    UnsupportedError,
)
from effdl.core.modules import eval_mode, swap_module_
from effdl.core.recipe import Recipe
from effdl.core.registry import Registry, RegistryEntry
from effdl.core.report import REPORT_SCHEMA_VERSION, ModelSummary, Report, report_schema
from effdl.core.seed import get_rng_state, seed_everything, set_rng_state
from effdl.core.transform import Applied, Transform, TransformContext, apply_, find_transform, register_transform

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "Applied",
    "Callback",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DatasetNotFoundError",
    "EffdlError",
    "ModelSummary",
    "Recipe",
    "Registry",
    "RegistryEntry",
    "Report",
    "ShapeError",
    "TrainerView",
    "Transform",
    "TransformContext",
    "UnknownNameError",
    "UnsafeCheckpointError",
    "UnsupportedError",
    "apply_",
    "check_choice",
    "check_options",
    "check_range",
    "config_class",
    "eval_mode",
    "find_transform",
    "get_rng_state",
    "last_match",
    "load_checkpoint",
    "read_metadata",
    "register_transform",
    "report_schema",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "swap_module_",
]
