"""Pruning: structured (physically removes channels, neurons and heads, following residual, concat, depthwise and
attention dependencies), unstructured magnitude masks, sensitivity analysis, lottery tickets and dynamic sparse
training.

Example:
    >>> import torch
    >>> from effdl.models import create_model
    >>> from effdl.prune import L1FilterPruning, prune_
    >>> model = create_model("test_resnet")
    >>> report = prune_(model, L1FilterPruning(ratio=0.5), example_inputs=torch.zeros(1, 3, 8, 8))
    >>> report.after.macs < report.before.macs
    True
"""

from effdl.prune.api import measure_summary, prune_
from effdl.prune.criteria import CRITERIA, channel_scores
from effdl.prune.dynamic import DynamicSparseTraining, DynamicSparsity, erk_densities
from effdl.prune.graph import Channel, DependencyGraph, Group, Site, build_dependency_graph, register_module_handler
from effdl.prune.lottery import EarlyBird, LotteryResult, LotteryTicket, RewindPoint, find_lottery_ticket, reinitialize_
from effdl.prune.sensitivity import SensitivityResult, sensitivity_analysis
from effdl.prune.storage import load_sparse_state_dict, save_sparse
from effdl.prune.structured import L1FilterPruning, StructuredPruning, compute_scores, plan_structured, select_channels
from effdl.prune.surgery import PruningPlan, make_plan, remove_channels_, resize_to_state_dict_, zero_channels_
from effdl.prune.unstructured import (
    GradualMagnitudePruning,
    KeepSparsity,
    MagnitudePruning,
    apply_masks_,
    cubic_sparsity,
    magnitude_masks,
    masks_from_zeros,
    prunable_weights,
    sparsity_of,
)

__all__ = [
    "CRITERIA",
    "Channel",
    "DependencyGraph",
    "DynamicSparseTraining",
    "DynamicSparsity",
    "EarlyBird",
    "GradualMagnitudePruning",
    "Group",
    "KeepSparsity",
    "L1FilterPruning",
    "LotteryResult",
    "LotteryTicket",
    "MagnitudePruning",
    "PruningPlan",
    "RewindPoint",
    "SensitivityResult",
    "Site",
    "StructuredPruning",
    "apply_masks_",
    "build_dependency_graph",
    "channel_scores",
    "compute_scores",
    "cubic_sparsity",
    "erk_densities",
    "find_lottery_ticket",
    "load_sparse_state_dict",
    "magnitude_masks",
    "make_plan",
    "masks_from_zeros",
    "measure_summary",
    "plan_structured",
    "prunable_weights",
    "prune_",
    "register_module_handler",
    "reinitialize_",
    "remove_channels_",
    "resize_to_state_dict_",
    "save_sparse",
    "select_channels",
    "sensitivity_analysis",
    "sparsity_of",
    "zero_channels_",
]
