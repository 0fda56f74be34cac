"""What every command shares: the settings flags, logging, and a progress line."""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from labelloop.settings import Settings

__all__ = [
    "SERVER_FLAGS",
    "DATABASE_FLAGS",
    "Progress",
    "add_settings_flags",
    "configure_logging",
    "settings_from",
]

# flag -> Settings field
SERVER_FLAGS: dict[str, str] = {
    "--app": "app",
    "--studies": "studies",
    "--data-dir": "data_dir",
    "--database-url": "database_url",
    "--host": "host",
    "--port": "port",
    "--log-level": "log_level",
}

#: The flags of commands that only need the database (and the data dir it may live in).
DATABASE_FLAGS = ["--data-dir", "--database-url", "--log-level"]


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


def _settings_rows(model: type[BaseModel], env: str) -> Iterator[tuple[str, str, str]]:
    """``(environment variable, default, description)`` of every setting of ``model``, nested
    sections included (``LABELLOOP_<SECTION>__<NAME>``)."""
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from _settings_rows(kind, f"{env}{name.upper()}__")
            continue
        yield f"{env}{name.upper()}", _shown(_default(field)), field.description or ""


def settings_epilog() -> str:
    """Every setting with its environment variable and default, generated from ``Settings`` so the
    help cannot drift from what the server reads."""
    lines = ["every setting (environment variable = default: meaning):"]
    for env, default, description in _settings_rows(Settings, "LABELLOOP_"):
        if env == "LABELLOOP_APP":
            default = "apps/radiology of the current directory"
        elif env == "LABELLOOP_DATA_DIR":
            default = "$XDG_DATA_HOME/labelloop or ~/.local/share/labelloop"
        lines.append(f"  {env}={default}")
        lines.append(f"      {description}")
    lines.append("Lists and nested values are JSON: LABELLOOP_CORS_ORIGINS='[\"https://ohif.example\"]'.")
    return "\n".join(lines)


def _field_help(name: str) -> str:
    field = Settings.model_fields[name]
    env = f"LABELLOOP_{name.upper()}"
    if name == "app":
        shown = "current directory's apps/radiology"
    elif name == "data_dir":
        shown = "$XDG_DATA_HOME/labelloop or ~/.local/share/labelloop"
    else:
        shown = _shown(_default(field)) or "none"
    return f"{field.description}. Env {env}; default: {shown}"


def add_settings_flags(parser: argparse.ArgumentParser, flags: Sequence[str]) -> None:
    for flag in flags:
        name = SERVER_FLAGS[flag]
        kind: Callable[[str], Any] = int if name == "port" else str
        parser.add_argument(flag, dest=name, type=kind, default=None, help=_field_help(name))


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name) for name in SERVER_FLAGS.values() if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def configure_logging(settings: Settings, *, to_file: bool) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    fmt = logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] (%(name)s) - %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if to_file:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            settings.log_file, maxBytes=50 * 1024 * 1024, backupCount=5, encoding="utf-8"
        )
        handler.setFormatter(fmt)
        root.addHandler(handler)


class Progress:
    """Progress of a long step on stderr: a rewritten line on a terminal, else a line per 10%."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.tty = sys.stderr.isatty()
        self.last_decile = -1
        self.started = time.monotonic()

    def __call__(self, done: int, total: int, item: str) -> None:
        pct = 100 * done // max(total, 1)
        line = f"{self.what}: {done}/{total} ({pct}%) {item}"
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line[:150])
            if done >= total:
                sys.stderr.write("\n")
        elif pct // 10 != self.last_decile or done >= total:
            self.last_decile = pct // 10
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
