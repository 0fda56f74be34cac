"""Hand-made active-learning candidates, for the tests of strategies and of the scores they rank."""

from __future__ import annotations

from labelloop.tasks import Candidate, Score


def candidate(image_id: str, scores: dict[str, Score] | None = None) -> Candidate:
    return Candidate(image_id=image_id, scores=scores or {})
