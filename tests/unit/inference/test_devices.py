"""Which device inference runs on, and which errors mean that it ran out of memory."""

from __future__ import annotations

import pytest
import torch

from labelloop.inference import is_out_of_memory, resolve_device


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks CUDA where there is one")
def test_auto_is_the_cpu_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_is_the_first_cuda_device_with_cuda() -> None:
    assert resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("cpu", torch.device("cpu")), ("cuda", torch.device("cuda")), ("cuda:1", torch.device("cuda", 1))],
)
def test_a_named_device_is_taken_as_it_is(name: str, expected: torch.device) -> None:
    assert resolve_device(name) == expected


def test_an_unknown_device_name_is_refused() -> None:
    with pytest.raises(RuntimeError):
        resolve_device("abacus")


@pytest.mark.parametrize(
    "exc",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:83] DefaultCPUAllocator: Out of memory"),
    ],
)
def test_allocator_failures_are_out_of_memory(exc: BaseException) -> None:
    assert is_out_of_memory(exc)


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("shapes cannot be multiplied"), ValueError("out of memory"), MemoryError()],
)
def test_other_errors_are_not_out_of_memory(exc: BaseException) -> None:
    assert not is_out_of_memory(exc)
