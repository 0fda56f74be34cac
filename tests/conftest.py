"""Fixtures: real servers on 127.0.0.1 (uvicorn), a real PostgreSQL, small volumes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from labelloop.auth import UserStore
from labelloop.db import Database
from labelloop.settings import JobSettings, Settings
from tests.support.browser import chromium
from tests.support.postgres import PostgresServer, start_postgres
from tests.support.servers import APP_DIR, LiveServer, free_port, start_thread_server
from tests.support.volumes import make_image, make_label


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run; each test gets its own database."""
    server, stop = start_postgres()
    try:
        yield server
    finally:
        stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium (Debian's, by Playwright) per test module.

    Not per session: Playwright's sync API keeps an event loop running in the main thread until it
    stops, and ``asyncio.run`` in any later test would fail ("cannot be called from a running event
    loop").
    """
    with chromium() as launched:
        yield launched


_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _database_url(request: pytest.FixtureRequest, *, migrated: bool) -> str | None:
    if request.param == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(migrated=migrated)


@pytest.fixture(params=_BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Run the test on the embedded SQLite default and on a fresh PostgreSQL database.

    The PostgreSQL database is already migrated: a copy of the session's template, so that no
    test waits for the migrations (migrating it again is a no-op). ``None`` for SQLite, where the
    test or the server starts from a new file.
    """
    return _database_url(request, migrated=True)


@pytest.fixture(params=_BACKENDS)
def empty_database_url(request: pytest.FixtureRequest) -> str | None:
    """Like ``database_url``, but the PostgreSQL database is empty: for tests that migrate from nothing."""
    return _database_url(request, migrated=False)


ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start servers (uvicorn in a thread) with a fresh data dir; all are stopped after the test."""
    started: list[LiveServer] = []

    def factory(database_url: str | None = None, **overrides: Any) -> LiveServer:
        """Servers start no job worker process unless a test passes ``jobs=JobSettings(...)``."""
        data_dir = tmp_path_factory.mktemp("data")
        overrides.setdefault("jobs", JobSettings(workers=0))
        settings = Settings(
            app=APP_DIR, data_dir=data_dir, port=free_port(), database_url=database_url, **overrides
        )
        server = start_thread_server(settings)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: ServerFactory, database_url: str | None) -> LiveServer:
    """A server on SQLite and, in a second run of the test, on PostgreSQL."""
    return make_server(database_url)


@pytest.fixture
def sqlite_server(make_server: ServerFactory) -> LiveServer:
    """A server on the embedded SQLite default only."""
    return make_server()


@pytest.fixture
def users_of() -> Iterator[Callable[[LiveServer], UserStore]]:
    """``users_of(server)``: the users of a running server's database (closed after the test)."""
    opened: list[Database] = []

    def open_store(server: LiveServer) -> UserStore:
        db = Database(server.settings.resolved_database_url)
        opened.append(db)
        return UserStore(db)

    yield open_store
    for db in opened:
        db.dispose()


@pytest.fixture
def volumes(tmp_path: Path) -> Callable[..., Path]:
    """``volumes(name, kind="image"|"label", **kw)`` writes a small test volume and returns its path."""

    def write(name: str, kind: str = "image", **kwargs: Any) -> Path:
        path = tmp_path / name
        (make_image if kind == "image" else make_label)(path, **kwargs)
        return path

    return write
