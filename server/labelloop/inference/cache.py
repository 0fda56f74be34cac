"""A thread-safe least-recently-used cache bounded by the bytes of what it holds."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["ByteLRU", "nbytes"]

V = TypeVar("V")


def nbytes(value: Any) -> int:
    """Approximate memory of arrays and tensors in ``value`` (nested in dicts, lists, dataclasses)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    numel = getattr(value, "numel", None)
    element_size = getattr(value, "element_size", None)
    if callable(numel) and callable(element_size):
        return int(numel()) * int(element_size())
    if isinstance(value, Mapping):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    fields = getattr(value, "__dataclass_fields__", None)
    if fields:
        return sum(nbytes(getattr(value, name)) for name in fields)
    return 0


class ByteLRU(Generic[V]):
    """Maps keys to values while their total size stays under ``budget`` bytes.

    A value larger than the whole budget is not kept. ``hits`` and ``misses`` count lookups.
    """

    def __init__(self, budget: int, size: Callable[[Any], int] = nbytes) -> None:
        self.budget = budget
        self._size = size
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def used(self) -> int:
        return self._used

    def lookup(self, key: Hashable) -> tuple[bool, V | None]:
        """``(found, value)``; a cached ``None`` is found."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return False, None
            self._items.move_to_end(key)
            self.hits += 1
            return True, item[0]

    def get(self, key: Hashable) -> V | None:
        return self.lookup(key)[1]

    def put(self, key: Hashable, value: V) -> None:
        size = self._size(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._used -= old[1]
            if size > self.budget:
                return
            self._items[key] = (value, size)
            self._used += size
            while self._used > self.budget:
                _, (_, evicted) = self._items.popitem(last=False)
                self._used -= evicted

    def __len__(self) -> int:
        return len(self._items)
