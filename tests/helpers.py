"""Helpers shared by tests of resumable training."""

from effdl.train import Callback


class Crash(Exception):
    """Raised by :class:`CrashAt` in place of a kill."""


class CrashAt(Callback):
    """Simulates a kill: raises after the given global step (checkpoints written so far stay on disk)."""

    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer, batch, loss):
        if trainer.step + 1 == self.step:
            raise Crash
