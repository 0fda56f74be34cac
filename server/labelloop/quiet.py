"""Silencing warnings for a moment, safely with threads.

``warnings.catch_warnings()`` swaps the process's one global filter list on entry and puts back
what it saw on exit. Two threads inside it at once restore each other's lists: a filter one of them
set (or a test's ``error`` filter) is lost or comes back at the wrong time. Every place labelloop
silences warnings, and the route building whose pydantic code does so itself, holds one lock here,
so those never interleave within a process.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["WARNINGS_LOCK", "quiet_warnings"]

#: Held while the global warning filters are swapped (reentrant: a silenced block may nest).
WARNINGS_LOCK = threading.RLock()


@contextmanager
def quiet_warnings() -> Iterator[None]:
    """Ignore every warning raised in the block (and only there), under ``WARNINGS_LOCK``."""
    with WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
