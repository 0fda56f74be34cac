"""The settings file a server or a standalone worker writes for its worker and job processes."""

from __future__ import annotations

import os
from pathlib import Path

from labelloop.settings import Settings

__all__ = ["write_settings_file"]


def write_settings_file(settings: Settings) -> Path:
    """The settings as JSON for the worker and job processes (readable by this user only)."""
    folder = settings.data_dir / "run"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"settings-{os.getpid()}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when a file of that name was left with wider permissions
    with os.fdopen(fd, "w") as f:
        f.write(settings.model_dump_json())
    return path
