"""Active-learning contracts: scoring methods that measure images, strategies that rank them.

A ``ScoringMethod`` turns one image into a number (and optional details such as an
embedding) using the active version of one of the app's models; the server runs it in a
scoring job and stores the result with that model version. A ``Strategy`` ranks the
candidate images from those stored scores; the server then leases the first one it can.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelloop.imaging import Volume

__all__ = [
    "Candidate",
    "Ranked",
    "Score",
    "ScoreOutput",
    "ScoringMethod",
    "ScoringSpec",
    "Strategy",
    "StrategyContext",
    "StrategySpec",
]


@dataclass(frozen=True)
class ScoringSpec:
    """What ``/info/`` lists under ``scoring``.

    Attributes:
        description: one line.
        model: the inference model whose active version the method uses.
        config: user-tunable options (a list means "one of these").
    """

    description: str
    model: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreOutput:
    """One image's score.

    Attributes:
        value: larger means "more worth annotating" (e.g. more uncertain).
        details: JSON-able extras, e.g. ``{"embedding": [...]}`` for diversity.
    """

    value: float
    details: dict[str, Any] = field(default_factory=dict)


class ScoringMethod(ABC):
    """Scores images with the active version of ``spec.model``. Pure ML code."""

    spec: ScoringSpec

    @abstractmethod
    def load(self, weights: Path, device: Any) -> Any:
        """Build what ``score`` needs (a network with ``weights``) on ``device``."""

    @abstractmethod
    def score(self, model: Any, image: Volume, device: Any) -> ScoreOutput:
        """Score one image: ``image.array`` is ``(I, J, K)`` on its RAS affine."""


@dataclass(frozen=True)
class Score:
    """A stored score: which method, value, and the model version that produced it."""

    method: str
    value: float | None
    model: str
    model_version: int | None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """An image a strategy may choose, with its stored scores (method -> ``Score``)."""

    image_id: str
    info: Mapping[str, Any] = field(default_factory=dict)
    scores: Mapping[str, Score] = field(default_factory=dict)


@dataclass(frozen=True)
class StrategyContext:
    """What else is going on, for strategies that look beyond one image.

    Attributes:
        busy: images leased to other annotators right now, with their scores (a diverse
            strategy avoids handing out near-copies of them).
        rng: a seeded random generator (reproducible random choices).
    """

    busy: Sequence[Candidate] = ()
    rng: random.Random = field(default_factory=random.Random)


@dataclass(frozen=True)
class Ranked:
    """A strategy's verdict on one candidate: its score and why it ranks there."""

    image_id: str
    score: float | None
    reason: str


@dataclass(frozen=True)
class StrategySpec:
    """What ``/info/`` lists under ``strategies``.

    Attributes:
        description: one line.
        config: user-tunable options.
        scores: the scoring methods whose stored scores the strategy reads.
    """

    description: str
    config: Mapping[str, Any] = field(default_factory=dict)
    scores: tuple[str, ...] = ()


class Strategy(ABC):
    """Orders candidate images, most useful to annotate first."""

    spec: StrategySpec

    @abstractmethod
    def rank(
        self, candidates: Sequence[Candidate], context: StrategyContext, config: Mapping[str, Any]
    ) -> list[Ranked]:
        """All candidates worth handing out, best first (the server leases the first free one)."""
