"""A progress callback that records its calls, for code that reports ``(done, total, what)``."""

from __future__ import annotations

from collections.abc import Callable


def record(calls: list[tuple[int, int, str]]) -> Callable[[int, int, str], None]:
    def progress(done: int, total: int, what: str) -> None:
        calls.append((done, total, what))

    return progress
