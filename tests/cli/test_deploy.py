"""The container files, checked without a container engine: their settings validate, and ``serve``
would start with them (a container listens on every interface, so auth must be on)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from labelloop.server import check_exposure
from labelloop.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("LABELLOOP_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("LABELLOOP_"):
            monkeypatch.setenv(key, value)
    return Settings()


def test_the_image_serves_every_interface_with_auth_on(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(_dockerfile_env(), monkeypatch)
    assert settings.host == "0.0.0.0" and settings.auth.enabled
    check_exposure(settings, allow_unauthenticated=False)  # serve starts
    cmd = re.search(r"^CMD (.+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert cmd and "--allow-unauthenticated" not in cmd[1]


def test_compose_settings_validate_and_publish_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    server = compose["services"]["server"]
    settings = _settings({**_dockerfile_env(), **server["environment"]}, monkeypatch)
    assert settings.database_url and settings.database_url.startswith("postgresql+psycopg://")
    check_exposure(settings, allow_unauthenticated=False)
    assert all(port.startswith("127.0.0.1:") for port in server["ports"]), "published on the host's loopback"


def test_the_image_runs_unprivileged_with_a_health_check() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the last USER is not root"
    health = re.search(r"^HEALTHCHECK .*\n?.*CMD (.+)$", text, re.M)
    assert health and "/health" in health[1]


def test_the_build_context_leaves_out_the_venv_and_data() -> None:
    ignored = {line.strip() for line in (DEPLOY.parent / ".dockerignore").read_text().splitlines()}
    assert {".venv/", "data/", ".git/"} <= ignored


def test_compose_commands_are_ones_the_cli_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelloop.cli import _parser

    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    worker = services["worker"]["command"]
    assert worker[0] == "labelloop"
    assert _parser().parse_args(worker[1:]).command == "worker"
    shell = services["sample-data"]["command"][-1]
    sample = shlex.split(shell.split("||", 1)[1])
    assert sample[0] == "labelloop" and _parser().parse_args(sample[1:]).command == "sample-data"
    assert services["server"]["environment"]["LABELLOOP_JOBS__WORKERS"] == "0", "jobs run in the worker"
    assert services["worker"]["environment"] == services["server"]["environment"]
    assert services["worker"]["volumes"] == services["server"]["volumes"], "one data dir for both"
