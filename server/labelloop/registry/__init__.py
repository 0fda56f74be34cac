"""Model versions: files, metrics, training-set records, the active version, rollback, promotion."""

from labelloop.registry.promotion import PromotionPolicy, decide_promotion
from labelloop.registry.store import ModelVersion, Registry

__all__ = ["ModelVersion", "PromotionPolicy", "Registry", "decide_promotion"]
