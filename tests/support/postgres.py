"""A real PostgreSQL server for the tests, started from Debian's binaries on 127.0.0.1."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import free_port


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

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def _psql(self, sql: str) -> None:
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
                sql,
            ],
            check=True,
            capture_output=True,
        )

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._psql(f"CREATE DATABASE {name}")
        return self.url(name)


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def start_postgres() -> tuple[PostgresServer, Callable[[], None]]:
    """initdb + pg_ctl start on a free port, bound to 127.0.0.1; returns the server and its stop."""
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
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {datadir} -c fsync=off -c max_connections=200"
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
