"""Processes of this host: a module of its own, below every package, so that the datastore (stale
scratch files) and the idle job worker (claims of dead workers) share it without the worker
importing the datastore, NumPy or the imaging readers."""

from __future__ import annotations

import os

__all__ = ["pid_alive"]


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
