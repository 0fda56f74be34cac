"""A real nginx (Debian's ``/usr/sbin/nginx``) in front of test servers, on 127.0.0.1.

Each proxy runs from a generated configuration in a temporary prefix that holds everything it writes
(pid, error and access logs, temp paths), in the foreground (``daemon off``), so it never touches the
system's ``/etc/nginx`` or ``/var/log/nginx``, nor a system nginx on port 80.

The proxy settings follow ``deploy/nginx.conf``: the same headers, ``proxy_request_buffering off``,
and nginx's default ``proxy_next_upstream error timeout`` (no ``non_idempotent``). What nginx then
does with the requests of a replica that dies (measured by tests/integration/test_replicas.py):

- a request it cannot *connect* with is passed to the next replica, whatever its method: nothing
  was sent, so that is always safe;
- a POST already sent is never passed on: its client gets a 502 (``non_idempotent`` would replay it,
  and a replayed ``POST /activelearning/{strategy}`` with ``skip`` would skip a case its annotator
  never saw, a replayed ``POST /train`` would answer 429 for the job it had queued);
- a GET, HEAD, PUT or DELETE already sent is replayed on the next replica when nginx holds its whole
  body. ``proxy_request_buffering off`` does not prevent that: a body that arrived with the request
  headers is pre-read, and nginx then treats the request as buffered. So a small
  ``PUT /datastore/label`` is replayed or answered 502 depending on how its bytes arrived, and a
  replay after the first try had committed meets that save's own version: with ``If-Match`` it
  answers 409 (nothing is saved twice), without it a second identical version is saved.

The access log is JSON, one object per request, with the ``X-Request-Id`` the client sent, every
replica nginx tried (``$upstream_addr``) and what each answered, so a test can account for every
answer.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.support.servers import free_port

__all__ = ["NGINX", "NginxProxy", "nginx_config", "nginx_in_front", "start_nginx"]

NGINX = "/usr/sbin/nginx"

#: ``deploy/nginx.conf``'s balancing: one user's requests go to one replica while it is up.
HASH_BY_USER = "hash $http_authorization consistent;"

_LOG_FORMAT = (
    "escape=json '{"
    '"id":"$http_x_request_id",'
    '"method":"$request_method",'
    '"uri":"$uri",'
    '"status":$status,'
    '"upstream":"$upstream_addr",'
    '"upstream_status":"$upstream_status",'
    '"msec":$msec,'
    '"request_time":$request_time,'
    '"upstream_response_time":"$upstream_response_time"'
    "}'"
)


@dataclass
class NginxProxy:
    """A running nginx: its URL, its prefix directory and process."""

    url: str
    prefix: Path
    process: subprocess.Popen[bytes]

    @property
    def access_log_path(self) -> Path:
        return self.prefix / "logs" / "access.log"

    @property
    def error_log_path(self) -> Path:
        return self.prefix / "logs" / "error.log"

    def access_log(self) -> list[dict[str, Any]]:
        """Every request nginx has logged so far, oldest first (one JSON object per line)."""
        lines = self.access_log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def error_log(self) -> str:
        return self.error_log_path.read_text() if self.error_log_path.exists() else ""


def nginx_config(
    prefix: Path, port: int, upstreams: Sequence[str], balance: str | None = HASH_BY_USER
) -> str:
    """The configuration of a proxy on ``127.0.0.1:port`` for ``upstreams`` (``host:port`` each).

    ``balance`` is the upstream block's balancing directive (``None``: round robin).
    """
    logs = prefix / "logs"
    servers = "\n".join(f"        server {u} max_fails=3 fail_timeout=10s;" for u in upstreams)
    # As root, nginx runs its workers as "nobody" unless told otherwise, and nobody may not enter the
    # private temp dir: they run as the test's own user instead.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    return f"""
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {logs}/error.log notice;
{user}

events {{
    worker_connections 1024;
}}

http {{
    log_format replicas {_LOG_FORMAT};
    access_log {logs}/access.log replicas;
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;

    upstream labelloop {{
        {balance or ""}
{servers}
        keepalive 16;
        # Shorter than uvicorn's keep-alive (5 s): nginx never reuses an idle connection the replica
        # is closing at that moment, which would fail a POST sent on it with a 502.
        keepalive_timeout 4s;
    }}

    server {{
        listen 127.0.0.1:{port};
        server_name _;

        client_max_body_size 2g;
        proxy_request_buffering off;
        proxy_read_timeout 361m;
        proxy_send_timeout 10m;
        # nginx's default, written out: pass a request on when the replica could not be reached or
        # failed before answering, except a POST already sent (see the module's docstring).
        proxy_next_upstream error timeout;

        location / {{
            proxy_pass http://labelloop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            # Which replica answered (the last one tried), for the tests.
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        requests.get(f"http://127.0.0.1:{port}/nginx-is-up", timeout=2)
        return True
    except (OSError, requests.RequestException):
        return False


def start_nginx(
    upstreams: Sequence[str], balance: str | None = HASH_BY_USER, timeout: float = 30.0
) -> tuple[NginxProxy, Any]:
    """Start nginx in front of ``upstreams``; returns the proxy and its stop function.

    It has answered an HTTP request (whatever the replicas say) when this returns.
    """
    if not os.access(NGINX, os.X_OK):
        raise RuntimeError(f"{NGINX} is not installed; `make test-deps` installs Debian's nginx package")
    prefix = Path(tempfile.mkdtemp(prefix="labelloop-nginx-"))
    (prefix / "logs").mkdir()
    (prefix / "temp").mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, port, upstreams, balance))
    check = subprocess.run(
        [NGINX, "-t", "-q", "-p", str(prefix), "-e", str(prefix / "logs" / "error.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        shutil.rmtree(prefix, ignore_errors=True)
        raise RuntimeError(f"nginx refused its configuration: {check.stderr}")
    out = open(prefix / "logs" / "stderr.log", "ab")  # noqa: SIM115 - closed by stop()
    process = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-e", str(prefix / "logs" / "error.log"), "-c", str(conf)],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proxy = NginxProxy(url=f"http://127.0.0.1:{port}", prefix=prefix, process=process)

    def stop() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # graceful: finish the requests it is serving
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        out.close()
        shutil.rmtree(prefix, ignore_errors=True)

    deadline = time.monotonic() + timeout
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            log = proxy.error_log()
            stop()
            raise RuntimeError(f"nginx did not come up (exit {process.returncode}): {log}")
        time.sleep(0.05)
    return proxy, stop


@contextmanager
def nginx_in_front(upstreams: Sequence[str], balance: str | None = HASH_BY_USER) -> Iterator[NginxProxy]:
    """``with nginx_in_front(["127.0.0.1:8001", "127.0.0.1:8002"]) as proxy: ...``"""
    proxy, stop = start_nginx(upstreams, balance)
    try:
        yield proxy
    finally:
        stop()
