"""The sample-data package's error (its own module so both generators can raise it)."""

from __future__ import annotations

from labelloop.errors import LabelloopError

__all__ = ["SampleDataError"]


class SampleDataError(LabelloopError):
    """The sample data cannot be built."""
