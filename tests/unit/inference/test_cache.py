"""The inference caches: a least-recently-used map bounded by the bytes of what it holds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labelloop.inference import ByteLRU, nbytes


def sized(budget: int) -> ByteLRU[bytes]:
    """A cache whose values are ``bytes`` weighing their length."""
    return ByteLRU(budget, size=len)


def test_nbytes_counts_arrays_tensors_and_containers() -> None:
    @dataclass
    class Prepared:
        image: np.ndarray
        extras: dict[str, object]

    array = np.zeros((4, 5, 6), dtype=np.int16)  # 240 bytes
    tensor = torch.zeros(10, dtype=torch.float32)  # 40 bytes
    assert nbytes(array) == 240 and nbytes(tensor) == 40
    assert nbytes({"a": array, "b": [tensor, (tensor,)]}) == 320
    assert nbytes(Prepared(array, {"t": tensor, "name": "ct"})) == 280
    assert nbytes("not an array") == 0 and nbytes(None) == 0


def test_the_least_recently_used_entry_goes_first_when_the_budget_is_exceeded() -> None:
    cache = sized(10)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # "b" is now the least recently used
    cache.put("c", b"cccc")
    assert cache.lookup("b") == (False, None)
    assert (cache.get("a"), cache.get("c")) == (b"aaaa", b"cccc")
    assert (len(cache), cache.used) == (2, 8)


def test_a_value_larger_than_the_whole_budget_is_not_kept() -> None:
    cache = sized(10)
    cache.put("small", b"12345")
    cache.put("huge", b"x" * 11)
    assert cache.lookup("huge") == (False, None)
    assert cache.get("small") == b"12345" and cache.used == 5


def test_putting_a_key_again_replaces_its_value_and_its_size() -> None:
    cache = sized(10)
    cache.put("a", b"12345678")
    cache.put("a", b"12")
    cache.put("b", b"12345678")  # fits only because "a" now weighs 2
    assert (cache.get("a"), cache.used, len(cache)) == (b"12", 10, 2)


def test_a_key_replaced_by_an_oversized_value_is_dropped() -> None:
    cache = sized(10)
    cache.put("a", b"1234")
    cache.put("a", b"x" * 20)
    assert cache.lookup("a") == (False, None) and cache.used == 0


def test_a_cached_none_is_found_and_lookups_are_counted() -> None:
    cache: ByteLRU[None] = ByteLRU(100)
    cache.put("classical", None)
    assert cache.lookup("classical") == (True, None)
    assert cache.lookup("absent") == (False, None)
    assert (cache.hits, cache.misses) == (1, 1)


def test_the_default_size_is_the_memory_of_the_arrays() -> None:
    cache: ByteLRU[np.ndarray] = ByteLRU(1000)
    cache.put("first", np.zeros(100, dtype=np.float32))  # 400 bytes
    cache.put("second", np.zeros(100, dtype=np.float32))
    cache.put("third", np.zeros(100, dtype=np.float32))  # 1200 > 1000: "first" goes
    assert cache.used == 800 and cache.lookup("first")[0] is False
