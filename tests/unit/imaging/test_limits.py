"""``DecodeLimits`` and ``DecodeBudget``: one file's ceiling, and the bytes all decodes share."""

from __future__ import annotations

import threading
import time

import pytest

from labelloop.errors import BusyError, PayloadTooLargeError
from labelloop.imaging import DecodeBudget, DecodeLimits, DecodeSize


def test_limits_name_the_setting_that_refuses() -> None:
    limits = DecodeLimits(max_voxels=100, max_bytes=400)
    limits.check(DecodeSize(100, 400), "ok")
    with pytest.raises(PayloadTooLargeError, match="101 voxels, over the limit of 100 .*max_voxels"):
        limits.check(DecodeSize(101, 10), "The image")
    with pytest.raises(
        PayloadTooLargeError, match="401 bytes decoded, over the limit of 400 .*max_decoded_bytes"
    ):
        limits.check(DecodeSize(10, 401), "The image")


def test_budget_makes_decodes_wait_for_each_other_then_gives_up() -> None:
    budget = DecodeBudget(total_bytes=100, wait_s=0.3)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with budget.reserve(70):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(5)
    with budget.reserve(30):  # fits next to the first
        assert budget.free == 0
    started = time.monotonic()
    with pytest.raises(BusyError, match="decode_budget_bytes"):
        with budget.reserve(50):
            pass
    assert 0.25 < time.monotonic() - started < 2
    # A waiting decode goes ahead as soon as the first one ends.
    threading.Timer(0.1, release.set).start()
    with budget.reserve(100):
        assert budget.free == 0
    thread.join()
    assert budget.free == 100


def test_one_file_larger_than_the_budget_still_runs_alone() -> None:
    budget = DecodeBudget(total_bytes=100, wait_s=0.1)
    with budget.reserve(10_000):
        assert budget.free == 0
    assert budget.free == 100
