"""A migrated job queue on SQLite and, in a second run of each test, on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labelloop.db import Database
from labelloop.jobs import JobQueue


@pytest.fixture
def queue(database_url: str | None, tmp_path: Path) -> Iterator[JobQueue]:
    db = Database(database_url or f"sqlite:///{tmp_path / 'jobs.db'}")
    db.migrate()
    yield JobQueue(db)
    db.dispose()
