"""Child processes that die with their parent: landscape workers, torchrun and its ranks.

A child started by effdl calls :func:`die_with_parent` (directly, or as ``preexec_fn`` of a subprocess) so that
killing the parent, even with ``kill -9``, never leaves workers running and writing results afterwards.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

__all__ = ["die_with_parent"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Asks the kernel to send ``sig`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``); exits
    at once if the parent is already gone. Returns False where the platform has no such request (then nothing
    changes).

    Example:
        >>> die_with_parent() in (True, False)
        True
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
    return True
