"""The strategies every app has, for compatibility with MONAI Label clients: random, first, last."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from labelloop.tasks import Candidate, Ranked, Strategy, StrategyContext, StrategySpec

__all__ = ["RandomStrategy", "FirstStrategy", "LastStrategy", "BUILTIN_STRATEGIES"]


class RandomStrategy(Strategy):
    """A uniformly random unlabelled image (leases keep two annotators apart, not weights)."""

    spec = StrategySpec(description="Random unlabelled image")

    def rank(
        self, candidates: Sequence[Candidate], context: StrategyContext, config: Mapping[str, Any]
    ) -> list[Ranked]:
        order = list(candidates)
        context.rng.shuffle(order)
        return [Ranked(c.image_id, None, "random order") for c in order]


class FirstStrategy(Strategy):
    """The unlabelled image with the smallest id."""

    spec = StrategySpec(description="First unlabelled image (by id)")

    def rank(
        self, candidates: Sequence[Candidate], context: StrategyContext, config: Mapping[str, Any]
    ) -> list[Ranked]:
        return [
            Ranked(c.image_id, None, "smallest id first")
            for c in sorted(candidates, key=lambda c: c.image_id)
        ]


class LastStrategy(Strategy):
    """The unlabelled image with the largest id."""

    spec = StrategySpec(description="Last unlabelled image (by id)")

    def rank(
        self, candidates: Sequence[Candidate], context: StrategyContext, config: Mapping[str, Any]
    ) -> list[Ranked]:
        ordered = sorted(candidates, key=lambda c: c.image_id, reverse=True)
        return [Ranked(c.image_id, None, "largest id first") for c in ordered]


BUILTIN_STRATEGIES: dict[str, Strategy] = {
    "random": RandomStrategy(),
    "first": FirstStrategy(),
    "last": LastStrategy(),
}
