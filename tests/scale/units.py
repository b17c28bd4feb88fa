"""Units of work for the scale tests: module-level, so that pool and Ray workers import them by name."""

import os
import signal
from pathlib import Path


def square_or_fail(shared, unit):
    """``unit ** 2 + shared``; a negative unit raises (a deterministic failure)."""
    if unit < 0:
        raise ValueError(f"negative unit {unit}")
    return unit * unit + shared


def die_once(shared, unit):
    """Kills its own worker the first time it runs for a unit (a marker file remembers), then returns the unit."""
    marker = Path(shared) / f"seen-{unit}"
    if unit % 2 == 0 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return unit


def always_die(shared, unit):
    """Kills its worker every time."""
    os.kill(os.getpid(), signal.SIGKILL)


def node_of(shared, unit):
    """The Ray node this unit ran on (and the unit, to keep results keyed)."""
    import time

    import ray

    time.sleep(shared)
    return ray.get_runtime_context().get_node_id(), unit


def climb(shared, params, report):
    """A trial whose score grows with its step at rate ``q``: reports each step to the scheduler."""
    for step in range(1, shared + 1):
        report({"score": params["q"] * step})
    return {"score": params["q"] * shared, "q": params["q"]}
