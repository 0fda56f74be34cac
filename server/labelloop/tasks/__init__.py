"""The contracts an app implements (``App`` now; inference, training and strategy tasks later)."""

from labelloop.tasks.app import App, AppLoadError, load_app

__all__ = ["App", "AppLoadError", "load_app"]
