"""The radiology app's active-learning strategies (apps/radiology/strategies.py).

``rank()`` is tested on hand-made ``Candidate``s.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from apps.radiology import build_app
from apps.radiology.strategies import DiverseStrategy, EpistemicStrategy, TTAStrategy
from labelloop.errors import InvalidParamsError
from labelloop.tasks import Candidate, Score, StrategyContext
from tests.support.candidates import candidate as _candidate


def test_the_app_registers_strategies_with_the_scores_they_read() -> None:
    app = build_app()
    assert {"epistemic", "tta", "diverse"} <= set(app.strategies)
    assert set(app.scoring) == {"epistemic", "tta"}
    for strategy in app.strategies.values():
        assert set(strategy.spec.scores) <= set(app.scoring) and strategy.spec.description
    assert app.strategies["diverse"].spec.config == {"diversity": 0.5}
    assert all(m.spec.model == "segmentation" for m in app.scoring.values())


# ---------------------------------------------------------------- rank() on hand-made candidates


def _score(value: float | None, version: int | None = 3, method: str = "epistemic", **details: Any) -> Score:
    return Score(method, value, "segmentation", version, details)


def _rank(
    strategy: Any, candidates: list[Candidate], busy: list[Candidate] | None = None, **config: Any
) -> Any:
    return strategy.rank(candidates, StrategyContext(busy=busy or [], rng=random.Random(7)), config)


def test_most_uncertain_first_with_value_version_and_place_in_the_reason() -> None:
    candidates = [_candidate(i, {"epistemic": _score(v)}) for i, v in (("a", 0.1), ("b", 0.3), ("c", 0.2))]
    ranked = _rank(EpistemicStrategy(), candidates)
    assert [r.image_id for r in ranked] == ["b", "c", "a"]
    assert [r.score for r in ranked] == [0.3, 0.2, 0.1]
    assert "0.3" in ranked[0].reason and "segmentation v3" in ranked[0].reason and "#1" in ranked[0].reason


def test_unscored_images_come_last_in_random_order_and_say_so() -> None:
    scored = [_candidate("s1", {"epistemic": _score(0.2)}), _candidate("s2", {"epistemic": _score(0.1)})]
    unscored = [_candidate(f"u{i}") for i in range(6)] + [_candidate("nan", {"epistemic": _score(None)})]
    ranked = _rank(EpistemicStrategy(), [*unscored[:3], *scored, *unscored[3:]])
    assert [r.image_id for r in ranked[:2]] == ["s1", "s2"]
    tail = [r.image_id for r in ranked[2:]]
    assert sorted(tail) == sorted(c.image_id for c in unscored) and tail != [c.image_id for c in unscored]
    assert all(r.score is None and r.reason.startswith("not scored yet") for r in ranked[2:])
    nothing = _rank(EpistemicStrategy(), [_candidate("x"), _candidate("y")])
    assert all("no trained model" in r.reason for r in nothing)


def test_scores_of_an_older_model_version_rank_after_the_newest() -> None:
    candidates = [
        _candidate("old-high", {"epistemic": _score(0.9, version=1)}),
        _candidate("new-low", {"epistemic": _score(0.1, version=2)}),
        _candidate("new-high", {"epistemic": _score(0.5, version=2)}),
    ]
    ranked = _rank(EpistemicStrategy(), candidates)
    assert [r.image_id for r in ranked] == ["new-high", "new-low", "old-high"]
    assert "older" in ranked[2].reason and "segmentation v1" in ranked[2].reason


def test_tta_reads_only_tta_scores() -> None:
    candidates = [
        _candidate("a", {"epistemic": _score(0.9), "tta": _score(0.1, method="tta")}),
        _candidate("b", {"epistemic": _score(0.1), "tta": _score(0.5, method="tta")}),
        _candidate("c", {"epistemic": _score(0.5)}),
    ]
    ranked = _rank(TTAStrategy(), candidates)
    assert [r.image_id for r in ranked] == ["b", "a", "c"] and ranked[2].score is None


def _embedded(image_id: str, value: float, direction: list[float], version: int = 3) -> Candidate:
    return _candidate(image_id, {"epistemic": _score(value, version, embedding=direction)})


#: Four well-separated looks, and a near-copy of the first.
E1, E2, E3, E4 = ([float(i == k) for i in range(4)] for k in range(4))


E1_COPY = [0.99, 0.05, 0.0, 0.0]


def test_diverse_does_not_rank_near_copies_next_to_each_other() -> None:
    candidates = [
        _embedded("a", 1.0, E1),
        _embedded("a-copy", 0.95, E1_COPY),
        _embedded("b", 0.6, E2),
        _embedded("c", 0.4, E3),
        _embedded("d", 0.3, E4),
    ]
    ranked = _rank(DiverseStrategy(), candidates)
    order = [r.image_id for r in ranked]
    assert order[0] == "a" and order[-1] == "a-copy", order
    assert "most like a (ranked above it)" in ranked[-1].reason
    plain = _rank(DiverseStrategy(), candidates, diversity=0.0)
    assert [r.image_id for r in plain] == ["a", "a-copy", "b", "c", "d"], "diversity 0 is epistemic"


def test_diverse_avoids_near_copies_of_images_busy_with_other_annotators() -> None:
    busy = [_embedded("taken", 0.9, E1)]
    candidates = [
        _embedded("like-taken", 1.0, E1_COPY),
        _embedded("other", 0.7, E2),
        _embedded("third", 0.5, E3),
    ]
    ranked = _rank(DiverseStrategy(), candidates, busy)
    assert ranked[0].image_id == "other"
    worst = next(r for r in ranked if r.image_id == "like-taken")
    assert "taken (leased to another annotator)" in worst.reason and "cosine" in worst.reason
    assert _rank(EpistemicStrategy(), candidates, busy)[0].image_id == "like-taken"


def test_diverse_handles_missing_embeddings_versions_and_unscored_images() -> None:
    candidates = [
        _candidate("bare", {"epistemic": _score(0.8)}),
        _embedded("a", 1.0, E1),
        _embedded("old", 2.0, E2, version=1),
        _candidate("none"),
    ]
    ranked = _rank(DiverseStrategy(), candidates)
    assert [r.image_id for r in ranked] == ["a", "bare", "old", "none"]
    assert "no embedding" in ranked[1].reason and "older" in ranked[2].reason
    assert ranked[3].score is None and ranked[3].reason.startswith("not scored yet")


@pytest.mark.parametrize("bad", [1.5, -0.1, "0.5", True, None])
def test_diversity_must_be_a_number_from_0_to_1(bad: Any) -> None:
    with pytest.raises(InvalidParamsError, match="diversity"):
        _rank(DiverseStrategy(), [_embedded("a", 1.0, E1)], diversity=bad)
