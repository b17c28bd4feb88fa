"""Multi-task learning: one network for many tasks. Hard parameter sharing, per-task models, and AdaShare (Sun et
al., NeurIPS 2020: each task learns which residual blocks to execute or skip); per-task metrics and the multi-task
gain; label-budget allocation across tasks. The embedded data is :func:`effdl.data.load_scenes` (rendered scenes
with segmentation, depth, normals, edges and counts)."""

from effdl.multitask.adashare import (
    AdaShareConfig,
    AdaSharePolicy,
    AdaShareResult,
    sharing_by_depth,
    sharing_loss,
    sparsity_loss,
    train_adashare,
)
from effdl.multitask.budget import (
    ALLOCATIONS,
    LabelledSubsets,
    PilotEstimate,
    adaptive_allocation,
    fixed_allocation,
    pilot_gains,
)
from effdl.multitask.model import MultiTaskNet, ResidualBlock
from effdl.multitask.study import AllocationComparison, SharingComparison, compare_allocations, compare_sharing
from effdl.multitask.tasks import KINDS, SCENE_TASK_SPECS, TaskSpec, scene_task_specs
from effdl.multitask.training import (
    MASK_KEY,
    MultiTaskConfig,
    MultiTaskLoss,
    delta_mtl,
    evaluate_multitask,
    train_multitask,
)

__all__ = [
    "ALLOCATIONS",
    "KINDS",
    "MASK_KEY",
    "SCENE_TASK_SPECS",
    "AdaShareConfig",
    "AdaSharePolicy",
    "AdaShareResult",
    "AllocationComparison",
    "LabelledSubsets",
    "MultiTaskConfig",
    "MultiTaskLoss",
    "MultiTaskNet",
    "PilotEstimate",
    "ResidualBlock",
    "SharingComparison",
    "TaskSpec",
    "adaptive_allocation",
    "compare_allocations",
    "compare_sharing",
    "delta_mtl",
    "evaluate_multitask",
    "fixed_allocation",
    "pilot_gains",
    "scene_task_specs",
    "sharing_by_depth",
    "sharing_loss",
    "sparsity_loss",
    "train_adashare",
    "train_multitask",
]
