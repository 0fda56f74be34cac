"""House rules that tools don't check: apps import only the contracts, packages pin their surface."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP_ALLOWED = ("labelloop.tasks", "labelloop.imaging", "labelloop.errors")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize(
    "path", sorted((REPO / "apps").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO))
)
def test_apps_import_only_the_contracts(path: Path) -> None:
    for name in _imports(path):
        if name == "labelloop" or name.startswith("labelloop."):
            assert name.startswith(APP_ALLOWED), f"{path.name} imports {name}; apps may use {APP_ALLOWED}"
        for forbidden in ("fastapi", "starlette", "sqlalchemy"):
            assert not name.startswith(forbidden), f"{path.name} imports {name}: apps are pure ML code"


PACKAGES = [
    "labelloop.activelearning",
    "labelloop.api",
    "labelloop.auth",
    "labelloop.cli",
    "labelloop.datastore",
    "labelloop.datastore.sources",
    "labelloop.db",
    "labelloop.imaging",
    "labelloop.inference",
    "labelloop.jobs",
    "labelloop.measurements",
    "labelloop.registry",
    "labelloop.sampledata",
    "labelloop.tasks",
    "labelloop.workflows",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_declares_its_public_surface(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} has no __all__"
    missing = [item for item in exported if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
