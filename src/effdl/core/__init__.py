"""Shared contracts with no algorithms: configs, registries, errors, checkpoints, reports, seeding."""

from effdl.core.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from effdl.core.config import Config, check_choice, check_options, check_range
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
from effdl.core.registry import Registry, RegistryEntry
from effdl.core.report import REPORT_SCHEMA_VERSION, ModelSummary, Report, report_schema
from effdl.core.seed import get_rng_state, seed_everything, set_rng_state

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DatasetNotFoundError",
    "EffdlError",
    "ModelSummary",
    "Registry",
    "RegistryEntry",
    "Report",
    "ShapeError",
    "UnknownNameError",
    "UnsafeCheckpointError",
    "UnsupportedError",
    "check_choice",
    "check_options",
    "check_range",
    "get_rng_state",
    "load_checkpoint",
    "read_metadata",
    "report_schema",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
]
