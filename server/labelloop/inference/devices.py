"""Which device inference runs on."""

from __future__ import annotations

from typing import Any

__all__ = ["resolve_device", "is_out_of_memory"]


def resolve_device(name: str) -> Any:
    """``auto``: the first CUDA device if there is one, else the CPU; otherwise ``torch.device(name)``."""
    import torch

    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device running out of memory (CUDA's OOM, or allocator messages)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
