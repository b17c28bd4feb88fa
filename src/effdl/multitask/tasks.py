"""What a task is to a multi-task network: the shape of its output, its loss, and its metric (with its direction).
Five kinds cover dense and image-level tasks; :data:`SCENE_TASK_SPECS` maps the embedded scene dataset onto them."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from effdl.core.errors import ConfigError

__all__ = ["KINDS", "SCENE_TASK_SPECS", "TaskSpec", "scene_task_specs"]

#: task kinds: (dense?, metric name, higher is better)
KINDS = {
    "segment": (True, "mIoU", True),  # per-pixel classes: cross-entropy; mean intersection over union
    "regress": (True, "abs err", False),  # per-pixel value: L1; mean absolute error
    "normal": (True, "angle err", False),  # per-pixel unit vector: 1 - cosine; mean angle in degrees
    "boundary": (True, "F1", True),  # per-pixel binary: weighted BCE; F1 at 0.5
    "label": (False, "accuracy", True),  # image-level classes: cross-entropy; accuracy
}


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task: its kind (see :data:`KINDS`) and its output channels (classes for ``segment``/``label``, 1 for
    ``regress``/``boundary``, 3 for ``normal``); ``pos_weight`` weighs the positives of a ``boundary`` task.

    Example:
        >>> TaskSpec("label", 4).metric_name, TaskSpec("regress", 1).higher_is_better
        ('accuracy', False)
    """

    kind: str
    channels: int
    pos_weight: float = 3.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown task kind {self.kind!r}; the kinds are {', '.join(KINDS)}")
        if self.channels < 1:
            raise ConfigError(f"a {self.kind} task needs at least one output channel, got {self.channels}")

    @property
    def dense(self) -> bool:
        """Per-pixel output (else one per image)."""
        return KINDS[self.kind][0]

    @property
    def metric_name(self) -> str:
        """The metric's name."""
        return KINDS[self.kind][1]

    @property
    def higher_is_better(self) -> bool:
        """Direction of the metric."""
        return KINDS[self.kind][2]

    def loss(self, out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss over the examples where ``mask`` is true (all without a mask; 0 when none is)."""
        if mask is not None:
            if not bool(mask.any()):
                return out.sum() * 0.0  # keeps the graph: no labels of this task in the batch
            out, target = out[mask], target[mask]
        if self.kind in ("segment", "label"):
            return F.cross_entropy(out, target)
        if self.kind == "regress":
            return F.l1_loss(out[:, 0], target)
        if self.kind == "normal":
            return (1.0 - F.cosine_similarity(out, target, dim=1)).mean()
        weight = torch.tensor(self.pos_weight, dtype=out.dtype)
        return F.binary_cross_entropy_with_logits(out[:, 0], target, pos_weight=weight)

    def metric_state(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sufficient statistics of one batch (summed over batches, then read by :meth:`metric`)."""
        if self.kind == "segment":
            k = self.channels
            idx = target.flatten() * k + out.argmax(dim=1).flatten()
            return torch.bincount(idx, minlength=k * k).double()  # confusion matrix, row = truth
        if self.kind == "regress":
            return torch.tensor([float((out[:, 0] - target).abs().sum()), target.numel()], dtype=torch.float64)
        if self.kind == "normal":
            cos = F.cosine_similarity(out, target, dim=1).clamp(-1.0, 1.0)
            return torch.tensor([float(torch.rad2deg(torch.acos(cos)).sum()), cos.numel()], dtype=torch.float64)
        if self.kind == "boundary":
            pred, truth = out[:, 0] > 0, target > 0.5
            return torch.tensor([float((pred & truth).sum()), float(pred.sum()), float(truth.sum())],
                                dtype=torch.float64)  # fmt: skip
        return torch.tensor([float((out.argmax(dim=1) == target).sum()), len(target)], dtype=torch.float64)

    def metric(self, state: torch.Tensor) -> float:
        """The metric from summed :meth:`metric_state` statistics.

        Example:
            >>> spec = TaskSpec("boundary", 1)
            >>> spec.metric(spec.metric_state(torch.tensor([[[1.0, -1.0]]]), torch.tensor([[1.0, 1.0]])))
            0.6666666666666666
        """
        if self.kind == "segment":
            conf = state.reshape(self.channels, self.channels)
            inter, union = conf.diag(), conf.sum(0) + conf.sum(1) - conf.diag()
            present = union > 0
            return float((inter[present] / union[present]).mean()) if bool(present.any()) else math.nan
        if self.kind == "boundary":
            tp, predicted, true = (float(v) for v in state)
            return 2 * tp / (predicted + true) if predicted + true > 0 else math.nan
        return float(state[0] / state[1]) if float(state[1]) > 0 else math.nan


def scene_task_specs(max_objects: int = 3) -> dict[str, TaskSpec]:
    """The tasks of :func:`effdl.data.load_scenes` as :class:`TaskSpec` s.

    Example:
        >>> sorted(scene_task_specs())
        ['count', 'depth', 'edge', 'normal', 'segment']
    """
    return {
        "segment": TaskSpec("segment", 4),
        "depth": TaskSpec("regress", 1),
        "normal": TaskSpec("normal", 3),
        "edge": TaskSpec("boundary", 1),
        "count": TaskSpec("label", max_objects + 1),
    }


SCENE_TASK_SPECS = scene_task_specs()
