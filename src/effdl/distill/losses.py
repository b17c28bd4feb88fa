"""Pure distillation losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from effdl.core.errors import ShapeError

__all__ = ["embedding_loss", "hint_loss", "kd_loss"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton et al.'s knowledge-distillation loss: ``T^2 * KL(softmax(t / T) || softmax(s / T))``, averaged over
    the batch. The ``T^2`` keeps the gradient scale independent of ``T`` ("Distilling the Knowledge in a Neural
    Network", 2015, section 2).

    Example:
        >>> z = torch.tensor([[2.0, 0.0, -1.0]])
        >>> float(kd_loss(z, z))
        0.0
        >>> bool(kd_loss(z, -z) > 0)
        True
    """
    if student_logits.shape != teacher_logits.shape:
        raise ShapeError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ; "
            "the student must predict the teacher's classes"
        )
    log_p = F.log_softmax(student_logits / temperature, dim=-1)
    log_q = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * temperature**2


def hint_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNets' hint loss (Romero et al., ICLR 2015): the mean squared error between a (regressed) student feature
    map and the teacher's, which is not trained through.

    Example:
        >>> float(hint_loss(torch.ones(2, 3), torch.zeros(2, 3)))
        1.0
    """
    if student_feature.shape != teacher_feature.shape:
        raise ShapeError(
            f"hint feature shapes differ: student {tuple(student_feature.shape)}, teacher "
            f"{tuple(teacher_feature.shape)}; pick layers with the same spatial size"
        )
    return F.mse_loss(student_feature, teacher_feature.detach())


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Distillation for sentence encoders: ``1 - cos(student, teacher)`` per row, averaged (what retrieval and
    similarity use), plus the MSE of the L2-normalized embeddings so the scale is matched too
    (sentence-transformers' model distillation uses the MSE to the teacher's embedding; Reimers & Gurevych 2020).

    Example:
        >>> e = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> float(embedding_loss(e, e))
        0.0
        >>> round(float(embedding_loss(e, e.flip(1))), 3)  # orthogonal: 1 - cos = 1, squared distance 2
        3.0
    """
    if student.shape != teacher.shape:
        raise ShapeError(
            f"student embeddings {tuple(student.shape)} and teacher embeddings {tuple(teacher.shape)} differ; the "
            "student must keep the teacher's embedding width"
        )
    s, t = F.normalize(student, dim=-1), F.normalize(teacher.detach(), dim=-1)
    return (1 - (s * t).sum(-1)).mean() + (s - t).pow(2).sum(-1).mean()
