"""Knowledge distillation: Hinton's KD loss with temperature and FitNets feature hints, as a training callback.

Example:
    >>> from effdl.models import create_model
    >>> from effdl.train import Trainer, TrainConfig
    >>> from effdl.data import get_dataset
    >>> teacher, student = create_model("test_mlp"), create_model("test_mlp")
    >>> data = get_dataset("mnist1d")
    >>> cb = Distillation(teacher, DistillConfig(alpha=0.9, temperature=4.0))
    >>> _ = Trainer(student, TrainConfig(epochs=1, progress=False), callbacks=[cb]).fit(data.train)
"""

from effdl.distill.callback import Distillation
from effdl.distill.config import DistillConfig
from effdl.distill.losses import hint_loss, kd_loss

__all__ = ["DistillConfig", "Distillation", "hint_loss", "kd_loss"]
