"""Stopping the server: periodic work that is mid-way finishes before the database pool goes.

A connection still checked out when the pool is disposed returns to the discarded pool and is
never closed (psycopg warns when it is garbage-collected; issue 17, item 18).
"""

from __future__ import annotations

import gc
import threading
import time
import warnings
from collections.abc import Callable

import pytest
from sqlalchemy import text

from labelloop.datastore.sessions import SessionStore
from labelloop.db import Database
from labelloop.settings import SessionSettings
from tests.support.servers import LiveServer


def test_stopping_waits_for_a_loop_that_holds_a_connection(
    make_server: Callable[..., LiveServer], database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    holding = threading.Event()

    def slow_cleanup(self: SessionStore) -> int:
        with self._ctx.db.read() as conn:
            holding.set()
            time.sleep(1.0)
            conn.execute(text("SELECT 1"))
        events.append("cleanup done")
        return 0

    dispose = Database.dispose

    def recorded_dispose(self: Database) -> None:
        events.append("dispose")
        dispose(self)

    monkeypatch.setattr(SessionStore, "remove_expired", slow_cleanup)
    monkeypatch.setattr(Database, "dispose", recorded_dispose)
    server = make_server(database_url, sessions=SessionSettings(cleanup_interval_s=0.05))
    assert holding.wait(30), "the session cleanup loop never ran"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server.stop()
        gc.collect()
    assert events[-2:] == ["cleanup done", "dispose"], events
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks
