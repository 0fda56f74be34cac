"""The app contract: what an app folder declares, and how the server loads it."""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelloop.errors import LabelloopError
from labelloop.tasks.infer import InferTask
from labelloop.tasks.strategy import ScoringMethod, Strategy
from labelloop.tasks.train import TrainTask

__all__ = ["App", "AppLoadError", "load_app"]


class AppLoadError(LabelloopError):
    """The app folder cannot be loaded."""


@dataclass(frozen=True)
class App:
    """An app: its identity, labels and models (trainers and strategies come in later releases).

    Attributes:
        name: shown by clients, e.g. ``"labelloop - Radiology (0.1.0)"``.
        description: one line.
        version: the app's own version string.
        labels: label name -> integer value in label maps; ``background`` is 0.
        lesions: the labels that are lesions (each a name in ``labels`` other than the background,
            value 0): their measurements say ``"lesion": true``, and their component count is a
            lesion count.
        infer_tasks: model name -> inference task; names are ids (``[A-Za-z0-9._-]``).
        train_tasks: trainer name -> training task; each trains one of ``infer_tasks``.
        strategies: active-learning strategies (``random``, ``first`` and ``last`` are built in).
        scoring: scoring methods whose per-image scores strategies read.
    """

    name: str
    description: str
    version: str
    labels: Mapping[str, int] = field(default_factory=dict)
    lesions: frozenset[str] = frozenset()
    infer_tasks: Mapping[str, InferTask] = field(default_factory=dict)
    train_tasks: Mapping[str, TrainTask[Any]] = field(default_factory=dict)
    strategies: Mapping[str, Strategy] = field(default_factory=dict)
    scoring: Mapping[str, ScoringMethod] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = list(self.labels.values())
        if len(set(values)) != len(values):
            raise AppLoadError(f"App {self.name!r} gives two labels the same value: {dict(self.labels)}")
        if any(v < 0 for v in values):
            raise AppLoadError(f"App {self.name!r} has a negative label value: {dict(self.labels)}")
        if not isinstance(self.lesions, frozenset):
            raise AppLoadError(f"App {self.name!r}: lesions must be a frozenset of label names")
        unknown = sorted(n for n in self.lesions if self.labels.get(n, 0) == 0)
        if unknown:
            raise AppLoadError(
                f"App {self.name!r} declares lesions {unknown} that are not its labels (or are background)"
            )
        for method, scorer in self.scoring.items():
            if scorer.spec.model not in self.infer_tasks:
                raise AppLoadError(
                    f"Scoring method {method!r} uses {scorer.spec.model!r}, not one of the models"
                )
        for strategy_name, strategy in self.strategies.items():
            unknown = [m for m in strategy.spec.scores if m not in self.scoring]
            if unknown:
                raise AppLoadError(f"Strategy {strategy_name!r} reads unknown scoring methods {unknown}")
        for trainer, task in self.train_tasks.items():
            if task.model not in self.infer_tasks:
                raise AppLoadError(
                    f"Trainer {trainer!r} trains {task.model!r}, which is not one of the app's models"
                )

    @property
    def label_names(self) -> list[str]:
        """Label names ordered by value (MONAI Label's top-level ``labels`` array)."""
        return [name for name, _ in sorted(self.labels.items(), key=lambda kv: kv[1])]


_IMPORT_LOCK = threading.Lock()


def load_app(folder: Path) -> App:
    """Import the app package in ``folder`` and call its ``build_app() -> App``.

    The folder is a Python package (``__init__.py``) that may import ``labelloop.tasks`` and
    ``labelloop.imaging``; it is imported under the name ``labelloop_app_<folder name>``.
    """
    folder = folder.resolve()
    init = folder / "__init__.py"
    if not init.is_file():
        raise AppLoadError(f"{folder} is not an app folder: it has no __init__.py")
    module_name = f"labelloop_app_{folder.name.replace('-', '_')}"
    # One import at a time: a second server starting in this process must not find the module
    # half-executed in sys.modules.
    with _IMPORT_LOCK:
        module = sys.modules.get(module_name)
        if module is None or Path(getattr(module, "__file__", "")).resolve() != init:
            spec = importlib.util.spec_from_file_location(
                module_name, init, submodule_search_locations=[str(folder)]
            )
            if spec is None or spec.loader is None:
                raise AppLoadError(f"Cannot import the app in {folder}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception:
                sys.modules.pop(module_name, None)
                raise
    build = getattr(module, "build_app", None)
    if not callable(build):
        raise AppLoadError(f"The app in {folder} defines no build_app() function")
    app = build()
    if not isinstance(app, App):
        raise AppLoadError(f"build_app() in {folder} returned {type(app).__name__}, not labelloop.tasks.App")
    return app
