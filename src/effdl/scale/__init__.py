"""Scale-out: independent units of work (grid points, sweeps, architectures to train) run in this process, in a
local process pool, or on a Ray cluster (``effdl[ray]``), with the same results for the same seeds.

Ray is imported only when its backend is chosen.
"""

from effdl.scale.cluster import local_cluster
from effdl.scale.executor import (
    BACKENDS,
    ExecutorConfig,
    UnitFailure,
    UnitResults,
    UnitsFailedError,
    ray_error,
    ray_session,
    run_units,
)
from effdl.scale.trials import SCHEDULERS, run_trials

__all__ = [
    "BACKENDS",
    "SCHEDULERS",
    "ExecutorConfig",
    "UnitFailure",
    "UnitResults",
    "UnitsFailedError",
    "local_cluster",
    "ray_error",
    "ray_session",
    "run_trials",
    "run_units",
]
