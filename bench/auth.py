"""What log-in and the audit trail cost a request: auth off against auth on, in the same run.

Two ``labelloop serve`` processes on fresh data dirs (SQLite): one with auth off, one with
``LABELLOOP_AUTH__ENABLED=true`` and a user made with ``labelloop user add``. Over one keep-alive
``requests.Session`` each, the benchmark times

- ``GET /info/`` and ``GET /datastore/?output=stats``: small requests that are not audited, so the
  difference is authentication alone (a JWT check and one user lookup, or an API token lookup);
- ``GET /datastore/image`` (a 32x32x16 NIfTI) and ``GET /datastore/image/info``: reads of patient
  data, each recorded in the audit trail (one write transaction) before the answer goes out, on both
  servers, so the ratio is authentication again and the absolute time includes the audit write;
- ``HEAD /datastore/image``: the same image, not audited, for the cost of the audit write itself;
- ``POST /auth/token``: a log-in, which verifies an argon2id hash (deliberately slow).

Usage::

    python bench/auth.py [--samples 300]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests

if __package__ in (None, ""):  # run as ``python bench/auth.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import (  # noqa: E402
    interrupt_on_sigterm,
    measure,
    ms,
    render_table,
    scratch_dir,
    serve,
    summarize,
)
from labelloop.imaging import write_volume  # noqa: E402

PASSWORD = "benchmark password"


def _add_user(data_dir: Path) -> str:
    subprocess.run(
        [sys.executable, "-m", "labelloop.cli", "user", "add", "bench", "--role", "monailabel-admin"]
        + ["--password-stdin", "--data-dir", str(data_dir)],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    token = subprocess.run(
        [sys.executable, "-m", "labelloop.cli", "user", "token", "bench", "--data-dir", str(data_dir)],
        text=True,
        check=True,
        capture_output=True,
    )
    return token.stdout.strip()


def _upload(session: requests.Session, url: str, image: Path) -> None:
    with image.open("rb") as f:
        answer = session.put(
            f"{url}/datastore/image", params={"image": "case1"}, files={"file": f}, timeout=60
        )
    answer.raise_for_status()


REQUESTS: dict[str, tuple[str, str]] = {
    "GET /info/": ("GET", "/info/"),
    "GET /datastore/?output=stats": ("GET", "/datastore/?output=stats"),
    "HEAD /datastore/image (not audited)": ("HEAD", "/datastore/image?image=case1"),
    "GET /datastore/image (audited)": ("GET", "/datastore/image?image=case1"),
    "GET /datastore/image/info (audited)": ("GET", "/datastore/image/info?image=case1"),
}


def _series(session: requests.Session, url: str, samples: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for name, (method, path) in REQUESTS.items():

        def call(_i: int, method: str = method, path: str = path) -> None:
            answer = session.request(method, url + path, timeout=30)
            if answer.status_code != 200:
                raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:200]}")

        out[name] = measure(call, samples=samples, warmup=20)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    interrupt_on_sigterm()
    results: dict[str, dict[str, list[float]]] = {}
    with scratch_dir("labelloop-bench-auth-") as root:
        image = root / "case1.nii.gz"
        write_volume(image, np.arange(32 * 32 * 16, dtype=np.int16).reshape(32, 32, 16), np.eye(4))

        off_dir, on_dir = root / "off", root / "on"
        off_dir.mkdir()
        with serve(off_dir, log_level="WARNING") as server, requests.Session() as session:
            _upload(session, server.url, image)
            results["auth off"] = _series(session, server.url, args.samples)

        api_token = _add_user(on_dir)
        with serve(on_dir, log_level="WARNING", env={"LABELLOOP_AUTH__ENABLED": "true"}) as server:
            with requests.Session() as session:
                login: Callable[[int], object] = lambda _i: session.post(  # noqa: E731
                    f"{server.url}/auth/token", data={"username": "bench", "password": PASSWORD}, timeout=30
                ).raise_for_status()
                logins = measure(login, samples=min(args.samples, 50), warmup=2)
                jwt = session.post(
                    f"{server.url}/auth/token", data={"username": "bench", "password": PASSWORD}, timeout=30
                ).json()["access_token"]
                session.headers["Authorization"] = f"Bearer {jwt}"
                _upload(session, server.url, image)
                results["auth on, JWT"] = _series(session, server.url, args.samples)
                session.headers["Authorization"] = f"Bearer {api_token}"
                results["auth on, API token"] = _series(session, server.url, args.samples)

    base = results["auth off"]
    rows = []
    for name in REQUESTS:
        off = summarize(base[name])
        row = [name, ms(off.p50), ms(off.p95)]
        for column in ("auth on, JWT", "auth on, API token"):
            on = summarize(results[column][name])
            row += [ms(on.p50), ms(on.p95), f"{on.p50 / off.p50:.2f}x"]
        rows.append(row)
    headers = [
        "request",
        "off p50",
        "off p95",
        "JWT p50",
        "JWT p95",
        "JWT/off",
        "token p50",
        "token p95",
        "token/off",
    ]
    print(f"milliseconds per request, {args.samples} samples each, one keep-alive connection, SQLite")
    print(render_table(headers, rows))
    head = summarize(base["HEAD /datastore/image (not audited)"]).p50
    read = summarize(base["GET /datastore/image (audited)"]).p50
    print(f"\naudit write, auth off: GET /datastore/image p50 {ms(read)} ms vs HEAD {ms(head)} ms")
    stats = summarize(logins)
    print(f"POST /auth/token (argon2id verify + sign): p50 {ms(stats.p50)} ms, p95 {ms(stats.p95)} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
