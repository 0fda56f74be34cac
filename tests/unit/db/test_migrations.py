"""The Alembic migrations: one head, upgrade and downgrade cleanly, and match the tables in code.

pytest-alembic's checks run against SQLite and a real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_alembic.config import Config
from pytest_alembic.tests import (  # noqa: F401  (collected as tests here)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Engine, create_engine, inspect, text

import labelloop.server  # noqa: F401  (imports every package, so their tables are on the shared metadata)
from labelloop.db import MIGRATIONS, Database
from tests.support.postgres import PostgresServer


@pytest.fixture
def alembic_config() -> Config:
    return Config(config_options={"script_location": str(MIGRATIONS)})


@pytest.fixture
def alembic_engine(empty_database_url: str | None, tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(empty_database_url or f"sqlite:///{tmp_path / 'migrations.db'}")
    yield engine
    engine.dispose()


def test_migrate_twice_is_a_no_op(empty_database_url: str | None, tmp_path: Path) -> None:
    db = Database(empty_database_url or f"sqlite:///{tmp_path / 'twice.db'}")
    db.migrate()
    db.migrate()
    tables = set(inspect(db.engine).get_table_names())
    assert {"images", "labels", "label_versions", "sessions", "alembic_version"} <= tables
    db.dispose()


@pytest.mark.postgres
def test_a_database_copied_from_the_template_is_at_head(postgres: PostgresServer) -> None:
    """The tests' PostgreSQL databases are copies of one migrated template; they must be at head."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    db = Database(postgres.create_database())
    try:
        with db.read() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head
        db.migrate()  # a no-op on a copy
        with db.read() as conn:
            assert conn.execute(text("SELECT value FROM counters WHERE name = 'images'")).scalar_one() == 0
    finally:
        db.dispose()
