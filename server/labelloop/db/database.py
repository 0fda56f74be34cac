"""Engine, transactions and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.sql.dml import Insert

__all__ = ["MIGRATIONS", "Database"]

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
_WRITE = "labelloop_write"


@dataclass
class _Snapshot:
    """The read transaction that ``Database.snapshot()`` shares, opened on the first read."""

    database: Database
    thread: int
    conn: Connection | None = None
    open: bool = True

    def close(self) -> None:
        """End it: later reads of the block open transactions of their own."""
        self.open = False
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.close()  # rolls the read transaction back: it wrote nothing


_snapshot: ContextVar[_Snapshot | None] = ContextVar("labelloop_db_snapshot", default=None)


class Database:
    """A SQLAlchemy engine plus the two kinds of transaction the datastore uses.

    ``read()`` is a plain transaction. ``write()`` takes the write lock up front on SQLite
    (``BEGIN IMMEDIATE``), so two writers queue on ``busy_timeout`` instead of failing with
    "database is locked" when a read lock would have to be upgraded; on PostgreSQL it is a
    plain transaction whose row locks (``FOR UPDATE``) do the same job.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs.update(
                connect_args={"check_same_thread": False, "timeout": 60},
                pool_size=8,
                max_overflow=56,
                pool_timeout=60,
            )
        else:
            kwargs.update(pool_pre_ping=True, pool_size=8, max_overflow=24, pool_timeout=60)
        self.engine: Engine = create_engine(url, **kwargs)
        # SQLite: this process's writers queue here, not in SQLite's busy handler, which sleeps and
        # polls (1, 2, 5, 10 ... 100 ms) and so wakes a waiting writer up to tens of milliseconds
        # after the lock is free: 16 concurrent label saves took twice as long. Other processes'
        # writers (job workers) still meet busy_timeout.
        self._writers = threading.RLock() if self.is_sqlite else None
        if self.is_sqlite:
            self._install_sqlite_hooks(self.engine)

    @staticmethod
    def _install_sqlite_hooks(engine: Engine) -> None:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when transactions begin (SQLAlchemy's recipe).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk when it returns (WAL fsynced), so an acknowledged label
            # survives a power cut, not only a crash of the server (NORMAL's promise). It costs one
            # fsync of the WAL per commit (bench/small_requests.py measures it).
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (inside ``snapshot()``, the snapshot's)."""
        shared = _snapshot.get()
        if (
            shared is not None
            and shared.open
            and shared.database is self
            and shared.thread == threading.get_ident()
        ):
            if shared.conn is None:
                shared.conn = self.engine.connect()
                shared.conn.begin()
            try:
                yield shared.conn
            except BaseException:
                shared.close()  # a failed statement may have spoilt the transaction (PostgreSQL)
                raise
            return
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every ``read()`` of this thread in the block shares one read transaction, until its first
        ``write()``.

        For requests that read from several services (``/info/``): one connection checkout and one
        ``BEGIN``/``COMMIT`` instead of one per read, and a consistent view across them. A
        ``write()`` ends the snapshot first, so what the block reads after writing is never older
        than its own write. Other threads (and nested snapshots' owners) read as without it.
        """
        shared = _Snapshot(self, threading.get_ident())
        token = _snapshot.set(shared)
        try:
            yield
        finally:
            _snapshot.reset(token)
            shared.close()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed when the block ends without an exception."""
        shared = _snapshot.get()
        if shared is not None and shared.database is self and shared.thread == threading.get_ident():
            shared.close()  # what follows the write reads it
        with self._writers or contextlib.nullcontext(), self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    def migrate(self) -> None:
        """Apply every Alembic migration up to head; safe when several processes start at once."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.write() as conn:
            if not self.is_sqlite:
                # One migrator at a time across processes; the lock ends with the transaction.
                conn.execute(text("SELECT pg_advisory_xact_lock(7254019)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def lock(self, conn: Connection, name: str) -> None:
        """Serialise writers on ``name`` until the transaction ends.

        SQLite writers are already serialised by ``BEGIN IMMEDIATE``; PostgreSQL takes a
        transaction-scoped advisory lock, for inserts that row locks cannot cover.
        """
        if not self.is_sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})

    def insert_ignore(self, table: Table, **values: Any) -> Insert:
        """``INSERT ... ON CONFLICT DO NOTHING`` for this backend.

        Whether it inserted: add ``.returning(<key column>)`` and see if a row comes back (the
        result's ``rowcount`` is -1 on PostgreSQL with psycopg).
        """
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table).values(**values).on_conflict_do_nothing()
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(**values).on_conflict_do_nothing()

    def ping(self) -> bool:
        """Whether the database answers a query (health checks)."""
        try:
            with self.read() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()
