"""How much a file may make us decode, decided from its header before any voxel is read.

A compressed upload of a few megabytes can declare gigabytes of voxels (a decompression bomb), and a
header of 66 bytes can declare 2048³ of them. ``DecodeLimits`` bounds one file; ``DecodeBudget``
bounds the bytes that all decodes in this process hold at once, so N uploads at the same time cannot
add up to more memory than the machine has.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from labelloop.errors import BusyError, PayloadTooLargeError

__all__ = ["DecodeBudget", "DecodeLimits", "DecodeSize"]


@dataclass(frozen=True)
class DecodeSize:
    """What a file's header says decoding it takes: ``voxels`` and the ``bytes`` held while decoding."""

    voxels: int
    bytes: int


@dataclass(frozen=True)
class DecodeLimits:
    """The most one file may declare: ``max_voxels`` voxels, ``max_bytes`` bytes decoded in memory."""

    max_voxels: int
    max_bytes: int

    def check(self, size: DecodeSize, what: str) -> None:
        """``PayloadTooLargeError`` (413) naming the limit when ``size`` is over it."""
        if size.voxels > self.max_voxels:
            raise PayloadTooLargeError(
                f"{what} declares {size.voxels:,} voxels, over the limit of {self.max_voxels:,} "
                "(setting datastore.max_voxels)"
            )
        if size.bytes > self.max_bytes:
            raise PayloadTooLargeError(
                f"{what} needs {size.bytes:,} bytes decoded, over the limit of {self.max_bytes:,} "
                "(setting datastore.max_decoded_bytes)"
            )


class DecodeBudget:
    """Bytes that decodes in flight may hold together; a decode waits for its share, then gives up.

    ``reserve(n)`` blocks until ``n`` bytes are free (``n`` is cut to the whole budget, so one file
    within ``DecodeLimits`` always fits alone), for at most ``wait_s`` seconds, then raises
    ``BusyError`` (503).
    """

    def __init__(self, total_bytes: int, wait_s: float) -> None:
        self.total_bytes = total_bytes
        self.wait_s = wait_s
        self._free = total_bytes
        self._cond = threading.Condition()

    @property
    def free(self) -> int:
        with self._cond:
            return self._free

    @contextmanager
    def reserve(self, n: int) -> Iterator[None]:
        n = max(0, min(n, self.total_bytes))
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while self._free < n:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    if self._free >= n:
                        break
                    raise BusyError(
                        "The server is decoding other uploads; try again shortly "
                        "(setting datastore.decode_budget_bytes)"
                    )
            self._free -= n
        try:
            yield
        finally:
            with self._cond:
                self._free += n
                self._cond.notify_all()
