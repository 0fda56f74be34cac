"""Model versions: files, metrics, training-set records, the active version, rollback, promotion."""

from labelloop.registry.promotion import PromotionPolicy, decide_promotion
from labelloop.registry.store import ModelVersion, Registry, active_versions_in, model_lock

__all__ = [
    "ModelVersion",
    "PromotionPolicy",
    "Registry",
    "active_versions_in",
    "decide_promotion",
    "model_lock",
]
