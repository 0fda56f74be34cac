"""The promotion policy: whether a freshly trained version replaces the active one."""

from __future__ import annotations

from typing import Literal

__all__ = ["PromotionPolicy", "decide_promotion"]

#: ``always``: every finished run; ``if_better``: a higher validation Dice than the active version's on
#: the same validation images; ``manual``: never by itself (``POST /model/{m}/versions/{n}/activate``).
PromotionPolicy = Literal["always", "if_better", "manual"]


def decide_promotion(
    policy: PromotionPolicy, new: float | None, old: float | None, *, has_active: bool
) -> tuple[bool, str]:
    """``(promote, why)`` for a new version whose validation mean Dice is ``new`` against the active
    version's ``old`` (both measured on the same images; ``None`` when there was nothing to measure)."""
    if policy == "always":
        return True, "promotion policy is 'always'"
    if policy == "manual":
        return (
            False,
            "promotion policy is 'manual'; activate it with POST /model/{model}/versions/{n}/activate",
        )
    if not has_active:
        return True, "there was no active version"
    if new is None:
        return False, "no validation Dice to compare"
    if old is None or new > old:
        return (
            True,
            f"validation Dice {new:.4f} beats the active version's {old if old is not None else 'none'}",
        )
    return False, f"validation Dice {new:.4f} does not beat the active version's {old:.4f}"
