"""Fixtures of the integration tests: one real Orthanc (DICOMweb) for the whole run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.orthanc import OrthancServer, start_orthanc


@pytest.fixture(scope="session")
def orthanc_server() -> Iterator[OrthancServer]:
    """Orthanc 1.10 with its DICOMweb plugin, no authentication, loopback clients only."""
    server, stop = start_orthanc()
    try:
        yield server
    finally:
        stop()


@pytest.fixture
def orthanc(orthanc_server: OrthancServer) -> OrthancServer:
    """The shared Orthanc, emptied for this test."""
    orthanc_server.clear()
    return orthanc_server
