"""A real PostgreSQL server for the tests, started from Debian's binaries on 127.0.0.1.

Each test gets its own database. Migrated ones are copies of a template that is migrated once
per server (``CREATE DATABASE ... TEMPLATE``), so that no test pays for a migration from nothing;
a test of the migrations themselves asks for an empty one (``create_database(migrated=False)``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors, sql

from labelloop.db import Database
from tests.support.servers import free_port

TEMPLATE = "labelloop_template"

Connection = psycopg.Connection[tuple[Any, ...]]


def _bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    found = candidates[0] if candidates else shutil.which(name)
    if not found:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed; `make test-deps` installs Debian's postgresql package"
        )
    return found


@dataclass
class PostgresServer:
    port: int
    datadir: Path
    user: str
    _template_ready: bool = field(default=False, init=False, repr=False)
    _template_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def _psql(self, statement: str) -> None:
        subprocess.run(
            [
                _bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                statement,
            ],
            check=True,
            capture_output=True,
        )

    def _admin(self) -> Connection:
        """An autocommit connection to ``postgres``: CREATE DATABASE cannot run in a transaction."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        )

    def create_database(self, *, migrated: bool = True) -> str:
        """A new database: a copy of the session's migrated template, or empty with ``migrated=False``."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        if not migrated:
            with self._admin() as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return self.url(name)
        self._ensure_template()
        copy = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE)
        )
        with self._admin() as conn:
            try:
                conn.execute(copy)
            except errors.ObjectInUse:
                # "source database is being accessed by other users" (PostgreSQL has already waited
                # 5 s for exiting sessions). The template accepts no connection, so such a session
                # was opened before it was sealed and none can follow it: end them, then copy.
                ended = _end_sessions(conn, TEMPLATE)
                try:
                    conn.execute(copy)
                except errors.ObjectInUse as exc:
                    raise RuntimeError(
                        f"cannot copy {TEMPLATE}: still in use after ending its sessions {ended}; "
                        f"it allows connections: {_allows_connections(conn, TEMPLATE)}"
                    ) from exc
        return self.url(name)

    def _ensure_template(self) -> None:
        """The first time a migrated database is asked for: create, migrate and seal the template."""
        with self._template_lock:
            if self._template_ready:
                return
            template = sql.Identifier(TEMPLATE)
            with self._admin() as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(template))
                try:
                    db = Database(self.url(TEMPLATE))
                    try:
                        db.migrate()
                    finally:
                        db.dispose()
                    # Sealed: no connection to it can be made, so none can block a copy.
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                            template
                        )
                    )
                    _end_sessions(conn, TEMPLATE)
                except BaseException:
                    # No half-built template is left behind: the next test builds it again.
                    conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(template))
                    conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(template))
                    raise
            self._template_ready = True


def _end_sessions(conn: Connection, database: str) -> list[str]:
    """Terminate every session on ``database``, each waited for (up to 10 s) until it has exited."""
    rows = conn.execute(
        "SELECT pid, application_name, state, pg_terminate_backend(pid, 10000)"
        " FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchall()
    return [
        f"pid {pid} ({app or 'no application_name'}, {state}, ended: {ok})" for pid, app, state, ok in rows
    ]


def _allows_connections(conn: Connection, database: str) -> object:
    row = conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (database,)).fetchone()
    return row[0] if row else "no such database"


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def start_postgres(*, durable: bool = False) -> tuple[PostgresServer, Callable[[], None]]:
    """initdb + pg_ctl start on a free port, bound to 127.0.0.1; returns the server and its stop.

    Tests run it with ``fsync=off`` (nothing there must survive a power cut); ``durable`` keeps
    PostgreSQL's own defaults, for benchmarks that compare commit costs.
    """
    # Not under pytest's tmp dirs: those are private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="labelloop-pg-"))
    datadir = base / "pgdata"
    datadir.mkdir()
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(datadir, "postgres")
    subprocess.run(
        _as_postgres(
            [_bin("initdb"), "-D", str(datadir), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"]
        ),
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = base / "postgres.log"
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {datadir} -c max_connections=200"
    if not durable:
        opts += " -c fsync=off"
    subprocess.run(
        _as_postgres([_bin("pg_ctl"), "-D", str(datadir), "-l", str(log), "-o", opts, "-w", "start"]),
        check=True,
        capture_output=True,
    )
    server = PostgresServer(port=port, datadir=datadir, user=user)
    deadline = time.monotonic() + 30
    while True:
        try:
            server._psql("SELECT 1")
            break
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

    def stop() -> None:
        subprocess.run(
            _as_postgres([_bin("pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)

    return server, stop
