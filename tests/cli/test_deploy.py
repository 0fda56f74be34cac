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
