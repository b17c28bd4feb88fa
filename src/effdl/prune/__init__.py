"""Pruning: structured (physically removes channels, neurons and heads, following residual, concat, depthwise and
attention dependencies), unstructured magnitude masks (also N:M), one-shot Wanda and SparseGPT, sensitivity
analysis, lottery tickets and dynamic sparse training.

Example:
    >>> import torch
    >>> from effdl.models import create_model
    >>> from effdl.prune import L1FilterPruneConfig, prune_
    >>> model = create_model("test_resnet")
    >>> report = prune_(model, L1FilterPruneConfig(ratio=0.5), example_inputs=torch.zeros(1, 3, 8, 8))
    >>> report.after.macs < report.before.macs
    True
"""

from effdl.core.deprecation import deprecated_config, module_getattr
from effdl.prune.api import groups_table, measure_summary, prune_
from effdl.prune.criteria import CRITERIA, channel_scores
from effdl.prune.dynamic import DynamicSparseTraining, DynamicSparsityConfig, erk_densities
from effdl.prune.graph import (
    Channel,
    DependencyGraph,
    Group,
    Site,
    build_dependency_graph,
    register_function_rule,
    register_module_handler,
)
from effdl.prune.lottery import EarlyBird, LotteryResult, LotteryTicketConfig, RewindPoint, reinitialize_
from effdl.prune.oneshot import OneShotPruneConfig, SparseGPTConfig, WandaConfig, sparsegpt_prune, wanda_mask
from effdl.prune.sensitivity import SensitivityResult, sensitivity_analysis, sensitivity_config
from effdl.prune.storage import load_sparse_state_dict, save_sparse
from effdl.prune.structured import (
    L1FilterPruneConfig,
    StructuredPruneConfig,
    compute_scores,
    plan_structured,
    select_channels,
)
from effdl.prune.surgery import PruningPlan, make_plan, remove_channels_, resize_to_state_dict_, zero_channels_
from effdl.prune.unstructured import (
    GradualMagnitudePruning,
    KeepSparsity,
    MagnitudePruneConfig,
    apply_masks_,
    check_n_m,
    cubic_sparsity,
    magnitude_masks,
    masks_from_zeros,
    n_m_mask,
    prunable_weights,
    sparsity_of,
)

__all__ = [
    "CRITERIA",
    "Channel",
    "DependencyGraph",
    "DynamicSparseTraining",
    "DynamicSparsityConfig",
    "EarlyBird",
    "GradualMagnitudePruning",
    "Group",
    "KeepSparsity",
    "L1FilterPruneConfig",
    "LotteryResult",
    "LotteryTicketConfig",
    "MagnitudePruneConfig",
    "OneShotPruneConfig",
    "PruningPlan",
    "RewindPoint",
    "SensitivityResult",
    "Site",
    "SparseGPTConfig",
    "StructuredPruneConfig",
    "WandaConfig",
    "apply_masks_",
    "build_dependency_graph",
    "channel_scores",
    "check_n_m",
    "compute_scores",
    "cubic_sparsity",
    "erk_densities",
    "groups_table",
    "load_sparse_state_dict",
    "magnitude_masks",
    "make_plan",
    "masks_from_zeros",
    "measure_summary",
    "n_m_mask",
    "plan_structured",
    "prunable_weights",
    "prune_",
    "register_function_rule",
    "register_module_handler",
    "reinitialize_",
    "remove_channels_",
    "resize_to_state_dict_",
    "save_sparse",
    "select_channels",
    "sensitivity_analysis",
    "sensitivity_config",
    "sparsegpt_prune",
    "sparsity_of",
    "wanda_mask",
    "zero_channels_",
]

# the names before the architecture change (one release)
__getattr__ = module_getattr(__name__, {
    "StructuredPruning": lambda: deprecated_config("StructuredPruning", StructuredPruneConfig),
    "L1FilterPruning": lambda: deprecated_config("L1FilterPruning", L1FilterPruneConfig),
    "MagnitudePruning": lambda: deprecated_config("MagnitudePruning", MagnitudePruneConfig),
    "LotteryTicket": lambda: deprecated_config("LotteryTicket", LotteryTicketConfig),
    "DynamicSparsity": lambda: deprecated_config("DynamicSparsity", DynamicSparsityConfig),
})  # fmt: skip
