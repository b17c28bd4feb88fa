"""Helpers shared by tests: simulated kills of resumable training, and running the command line."""

from effdl.cli.main import main
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


def run_cli(capsys, *argv):
    """Runs ``effdl argv...`` in process; returns ``(exit code, stdout, stderr)``."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(capsys, *argv, message):
    """Asserts that ``effdl argv...`` exits 2 with one ``effdl CMD: error: ...`` line containing ``message`` and no
    traceback; returns stderr."""
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith("effdl ") and ": error: " in err, err
    assert message in err, err
    return err
