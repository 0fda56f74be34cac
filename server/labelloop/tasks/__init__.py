"""The contracts an app implements: ``App`` and ``InferTask`` (training and strategies come later)."""

from labelloop.tasks.app import App, AppLoadError, load_app
from labelloop.tasks.bundle import BundleError, BundleTask
from labelloop.tasks.infer import (
    InferOutput,
    InferRequest,
    InferSpec,
    InferTask,
    InferType,
    Points,
    config_choices,
    parse_points,
)

__all__ = [
    "App",
    "AppLoadError",
    "BundleError",
    "BundleTask",
    "InferOutput",
    "InferRequest",
    "InferSpec",
    "InferTask",
    "InferType",
    "Points",
    "config_choices",
    "load_app",
    "parse_points",
]
