"""Training-loop callbacks: the protocol (:class:`~effdl.core.callback.Callback`, re-exported here) and the
metric loggers."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effdl.core.callback import Callback
from effdl.core.errors import ConfigError
from effdl.core.io import atomic_write_text

if TYPE_CHECKING:
    from effdl.train.loop import Trainer

__all__ = ["CSVLogger", "Callback", "Snapshots", "TensorBoardLogger"]


class CSVLogger(Callback):
    """Appends one row of metrics per epoch to ``path`` (only on the main process).

    On resume, rows written after the checkpoint (by the interrupted run) are dropped, so the file matches an
    uninterrupted run.

    Example:
        >>> import tempfile, pathlib
        >>> log = CSVLogger(pathlib.Path(tempfile.mkdtemp()) / "metrics.csv")
        >>> log.state_dict()
        {'rows': 0}
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.rows = 0
        self._fields: list[str] | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if not trainer.is_main:
            return
        fields = list(metrics)
        new_file = self.rows == 0 or not self.path.is_file()
        text = "" if new_file else self.path.read_text()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        if new_file:
            writer.writeheader()
        writer.writerow(metrics)
        atomic_write_text(self.path, text + buf.getvalue())  # whole file, atomically (never through a symlink)
        self.rows += 1

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = int(state.get("rows", 0))
        if self.path.exists():
            lines = self.path.read_text().splitlines(keepends=True)
            atomic_write_text(self.path, "".join(lines[: self.rows + 1]) if self.rows else "")


class Snapshots(Callback):
    """Saves the model's weights to ``folder/epoch_NNN.safetensors`` before training (epoch 0) and after every
    ``every`` epochs (only on the main process): the optimization path that
    :func:`effdl.analysis.trajectory_directions` turns into PCA directions (``effdl landscape --trajectory``).

    Example:
        >>> import tempfile
        >>> Snapshots(tempfile.mkdtemp(), every=5).every
        5
    """

    def __init__(self, folder: str | os.PathLike, *, every: int = 1) -> None:
        if every < 1:
            raise ConfigError(f"every must be >= 1 epoch, got {every}")
        self.folder = Path(folder)
        self.every = every

    def _save(self, trainer: Trainer, epoch: int) -> None:
        from effdl.models.checkpoint import save_model

        save_model(trainer.model, self.folder / f"epoch_{epoch:03d}.safetensors", meta={"epoch": epoch})

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.is_main and not (self.folder / "epoch_000.safetensors").exists():
            self._save(trainer, 0)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if trainer.is_main and epoch % self.every == 0:  # epoch counts the epochs done, from 1
            self._save(trainer, epoch)


class TensorBoardLogger(Callback):
    """Writes the epoch metrics as TensorBoard scalars (needs the ``tensorboard`` package).

    Example:
        >>> TensorBoardLogger.available() in (True, False)
        True
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.log_dir = Path(log_dir)
        self._writer = None

    @staticmethod
    def available() -> bool:
        """Whether the tensorboard package is installed."""
        import importlib.util

        return importlib.util.find_spec("tensorboard") is not None

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if not trainer.is_main:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, int | float):
                self._writer.add_scalar(key, value, epoch)
        self._writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
