"""Fine-tuning as a recipe step: :class:`FinetuneConfig` trains the current model with the one training loop,
optionally distilling from the uncompressed model, and keeps what earlier steps ask training to keep (the zeros of
magnitude pruning). With a quantization config before it, it is quantization-aware training."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from effdl.core.callback import Callback
from effdl.core.config import Config
from effdl.core.errors import ConfigError
from effdl.core.report import Report
from effdl.core.transform import TransformContext, find_transform, register_transform
from effdl.distill.callback import Distillation
from effdl.distill.config import DistillConfig
from effdl.measure.profiler import profile
from effdl.models.base import model_spec
from effdl.train.callbacks import CSVLogger
from effdl.train.config import TrainConfig
from effdl.train.loop import Trainer
from effdl.train.run import default_train_config

__all__ = ["FinetuneConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneConfig(Config):
    """Training from the current weights, optionally distilling from the uncompressed model.

    Attributes:
        train: overrides of the model's recommended training settings (:class:`~effdl.train.TrainConfig` fields;
            see ``effdl models``), e.g. ``{"epochs": 10, "lr": 0.001}``.
        distill: distil from the uncompressed model (the run's teacher) with these settings.

    Example:
        >>> FinetuneConfig(train={"epochs": 5}, distill=DistillConfig()).describe()
        'finetune 5 epochs + KD'
        >>> FinetuneConfig(train={"epoch": 5})
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: FinetuneConfig.train: TrainConfig has no field(s) 'epoch'; valid fields: ...
    """

    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    distill: DistillConfig | None = None

    def validate(self) -> None:
        if not isinstance(self.train, dict):
            raise ConfigError(f"FinetuneConfig.train must be a mapping of training settings, got {self.train!r}")
        object.__setattr__(self, "train", {k: v for k, v in self.train.items() if v is not None})
        try:
            TrainConfig.from_dict(self.train)  # unknown fields and bad values raise here, with the valid ones
        except ConfigError as exc:
            raise ConfigError(f"FinetuneConfig.train: {exc}") from exc
        if self.distill is not None and not isinstance(self.distill, DistillConfig):
            raise ConfigError(f"FinetuneConfig.distill must be a DistillConfig or None, got {self.distill!r}")

    def describe(self) -> str:
        epochs = self.train.get("epochs", "default")
        return f"finetune {epochs} epochs" + (" + KD" if self.distill else "")


@register_transform(FinetuneConfig)
def _finetune(model: nn.Module, config: FinetuneConfig, context: TransformContext) -> Report:
    data = context.dataset
    if data is None:
        raise ConfigError("a FinetuneConfig step trains the model and needs the dataset: pass dataset= (DatasetSplits)")
    spec = model_spec(model) or {}
    train = default_train_config(spec.get("name", ""), progress=context.progress, **config.train)
    callbacks: list[Callback] = []
    if context.out_dir is not None:
        callbacks.append(CSVLogger(context.out_dir / "metrics.csv"))
    for earlier in context.history:  # e.g. magnitude pruning: keep its zeros
        keep = find_transform(earlier).keep_during_training
        if keep is not None:
            callbacks.extend(keep(model, earlier))
    if config.distill is not None:
        if context.teacher is None:
            raise ConfigError("a FinetuneConfig with distill needs a teacher model: pass teacher= (the original)")
        callbacks.append(Distillation(context.teacher, config.distill))
    x = data.example_inputs(2)
    before = profile(model, x, latency=False).summary()
    trainer = Trainer(model, train, callbacks=callbacks, out_dir=context.out_dir)
    last = context.out_dir / "checkpoints" / "last.safetensors" if context.out_dir is not None else None
    resume = last is not None and last.is_file()  # an interrupted step continues from its own checkpoint
    history = trainer.fit(data.train, data.test, resume=resume).history
    model.eval()
    after = profile(model, x, latency=False).summary()
    details = {"train": train.to_dict(), "history": history, "resumed": resume}
    return Report(command="finetune", before=before, after=after, config=config.to_dict(), details=details)
