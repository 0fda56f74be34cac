"""``labelloop user | audit | keys`` and the refusal to serve a network address without auth."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
import requests

from labelloop.server import check_exposure, is_loopback
from labelloop.settings import AuthSettings, Settings
from tests.cli.test_cli import run_cli
from tests.support.servers import APP_DIR, free_port, start_thread_server


def _db_flags(data: Path, database_url: str | None) -> list[str]:
    return ["--data-dir", str(data)] + (["--database-url", database_url] if database_url else [])


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    return subprocess.run(
        [sys.executable, "-m", "labelloop.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def test_serve_refuses_a_network_address_without_auth(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.0.2.7", "::"):
        result = run_cli("serve", "--app", str(APP_DIR), "--data-dir", str(tmp_path / "d"), "--host", host)
        assert result.returncode == 2, result.stderr
        assert f"Refusing to serve {host} without authentication" in result.stderr
        assert "LABELLOOP_AUTH__ENABLED=true" in result.stderr and "--allow-unauthenticated" in result.stderr
    assert not (tmp_path / "d").exists(), "refused before anything was written"


def test_exposure_rules() -> None:
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
    for host in ("0.0.0.0", "::", "10.0.0.5", "example.org"):
        assert not is_loopback(host)
    open_net = Settings(host="0.0.0.0")
    check_exposure(open_net, allow_unauthenticated=True)
    check_exposure(Settings(host="0.0.0.0", auth=AuthSettings(enabled=True)), allow_unauthenticated=False)
    with pytest.raises(Exception, match="Refusing to serve 0.0.0.0"):
        check_exposure(open_net, allow_unauthenticated=False)


def test_user_commands_make_users_who_can_log_in(tmp_path: Path, database_url: str | None) -> None:
    data = tmp_path / "data"
    flags = _db_flags(data, database_url)
    added = _cli(
        "user",
        "add",
        "grey",
        "--role",
        "monailabel-reviewer",
        "--password-stdin",
        *flags,
        stdin="long password 1\n",
    )
    assert added.returncode == 0, added.stderr
    assert "added grey with monailabel-reviewer" in added.stdout
    again = _cli("user", "add", "grey", "--role", "monailabel-user", *flags)
    assert again.returncode == 1 and "exists already" in again.stderr
    bad_role = _cli("user", "add", "x", "--role", "monailabel-root", *flags)
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr
    short = _cli("user", "add", "y", "--role", "monailabel-user", "--password-stdin", *flags, stdin="short\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    assert _cli("user", "add", "bot", "--role", "monailabel-admin", *flags).returncode == 0
    listed = _cli("user", "list", *flags).stdout
    rows = [line.split() for line in listed.splitlines()[1:]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("bot", "active", "monailabel-admin"),
        ("grey", "active", "monailabel-reviewer"),
    ]

    token = _cli("user", "token", "bot", "--expires", "30d", *flags)
    assert token.returncode == 0 and token.stdout.startswith("ll_")
    api_token = token.stdout.strip()

    settings = Settings(
        app=APP_DIR,
        data_dir=data,
        port=free_port(),
        database_url=database_url,
        auth=AuthSettings(enabled=True),
    )
    server = start_thread_server(settings)
    try:
        login = requests.post(
            f"{server.url}/auth/token", data={"username": "grey", "password": "long password 1"}, timeout=30
        )
        assert login.status_code == 200
        grey = {"Authorization": f"Bearer {login.json()['access_token']}"}
        bot = {"Authorization": f"Bearer {api_token}"}
        assert requests.get(f"{server.url}/datastore/", headers=grey, timeout=30).status_code == 200
        assert requests.get(f"{server.url}/audit/", headers=bot, timeout=30).status_code == 200

        assert (
            _cli(
                "user", "set-password", "grey", "--password-stdin", *flags, stdin="long password 2\n"
            ).returncode
            == 0
        )
        assert requests.get(f"{server.url}/datastore/", headers=grey, timeout=30).status_code == 401
        assert _cli("user", "revoke-token", api_token, *flags).returncode == 0
        assert requests.get(f"{server.url}/audit/", headers=bot, timeout=30).status_code == 401
        row = _cli("user", "tokens", "bot", *flags).stdout.splitlines()[1].split()
        assert row[-1] == "revoked" and row[-2].endswith("Z"), f"last use recorded: {row}"
        assert _cli("user", "disable", "grey", *flags).returncode == 0
        relogin = requests.post(
            f"{server.url}/auth/token", data={"username": "grey", "password": "long password 2"}, timeout=30
        )
        assert relogin.status_code == 401
        assert "disabled" in _cli("user", "list", *flags).stdout
    finally:
        server.stop()

    verify = _cli("audit", "verify", *flags)
    assert verify.returncode == 0 and "audit chain intact" in verify.stdout


def test_audit_verify_names_the_first_tampered_row(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(app=APP_DIR, data_dir=data, port=free_port())
    server = start_thread_server(settings)
    try:
        for _ in range(3):
            requests.get(f"{server.url}/datastore/image", params={"image": "nope"}, timeout=30)
        requests.get(f"{server.url}/audit/", timeout=30)
    finally:
        server.stop()
    intact = _cli("audit", "verify", "--data-dir", str(data))
    assert intact.returncode == 0, intact.stderr
    assert "audit chain intact: 4 rows" in intact.stdout

    # Someone with write access to the database rewrites who did it.
    with sqlite3.connect(data / "labelloop.db") as conn:
        assert conn.execute("UPDATE audit_events SET user = 'mallory' WHERE seq = 2").rowcount == 1
    broken = _cli("audit", "verify", "--data-dir", str(data))
    assert broken.returncode == 1
    assert "audit chain broken at row 2" in broken.stderr

    # ... or deletes the row and re-chains nothing.
    with sqlite3.connect(data / "labelloop.db") as conn:
        conn.execute("UPDATE audit_events SET user = 'admin' WHERE seq = 2")
    assert _cli("audit", "verify", "--data-dir", str(data)).returncode == 0
    with sqlite3.connect(data / "labelloop.db") as conn:
        conn.execute("DELETE FROM audit_events WHERE seq = 3")
    deleted = _cli("audit", "verify", "--data-dir", str(data))
    assert deleted.returncode == 1 and "audit chain broken at row 4" in deleted.stderr


def test_keys_rotate_keeps_tokens_of_the_previous_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (
        _cli(
            "user",
            "add",
            "a",
            "--role",
            "monailabel-user",
            "--password-stdin",
            "--data-dir",
            str(data),
            stdin="password 123\n",
        ).returncode
        == 0
    )
    server = start_thread_server(
        Settings(app=APP_DIR, data_dir=data, port=free_port(), auth=AuthSettings(enabled=True))
    )
    try:

        def token() -> dict[str, str]:
            answer = requests.post(
                f"{server.url}/auth/token", data={"username": "a", "password": "password 123"}, timeout=30
            )
            return {"Authorization": f"Bearer {answer.json()['access_token']}"}

        first = token()
        rotated = _cli("keys", "rotate", "--data-dir", str(data))
        assert rotated.returncode == 0 and "new signing key" in rotated.stdout
        second = token()
        assert requests.get(f"{server.url}/info/", headers=first, timeout=30).status_code == 200
        assert _cli("keys", "rotate", "--data-dir", str(data)).returncode == 0
        assert requests.get(f"{server.url}/info/", headers=first, timeout=30).status_code == 401
        assert requests.get(f"{server.url}/info/", headers=second, timeout=30).status_code == 200
    finally:
        server.stop()
