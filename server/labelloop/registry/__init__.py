"""Model versions: files, metrics, training-set records, the active version, rollback."""

from labelloop.registry.store import ModelVersion, Registry

__all__ = ["ModelVersion", "Registry"]
