"""The strategies every app has: random, first and last, on hand-made candidates and through next sample."""

from __future__ import annotations

import random

from labelloop.activelearning import BUILTIN_STRATEGIES, FirstStrategy, LastStrategy, RandomStrategy
from labelloop.tasks import Candidate, StrategyContext
from tests.unit.activelearning.conftest import LabFactory

IDS = ["case-10", "case-02", "case-31", "case-07", "case-19", "case-25"]
CANDIDATES = [Candidate(image_id) for image_id in IDS]


def ranked_ids(strategy: RandomStrategy | FirstStrategy | LastStrategy, seed: int = 0) -> list[str]:
    ranked = strategy.rank(CANDIDATES, StrategyContext(rng=random.Random(seed)), {})
    assert all(r.score is None for r in ranked)
    return [r.image_id for r in ranked]


def test_first_ranks_by_smallest_id() -> None:
    assert ranked_ids(FirstStrategy()) == sorted(IDS)


def test_last_ranks_by_largest_id() -> None:
    assert ranked_ids(LastStrategy()) == sorted(IDS, reverse=True)


def test_random_ranks_every_candidate_once_in_an_order_its_rng_decides() -> None:
    orders = {tuple(ranked_ids(RandomStrategy(), seed)) for seed in range(8)}
    assert all(sorted(order) == sorted(IDS) for order in orders)
    assert len(orders) > 1
    assert ranked_ids(RandomStrategy(), 5) == ranked_ids(RandomStrategy(), 5)


def test_the_builtins_are_registered_under_their_monai_label_names() -> None:
    assert {name: type(s) for name, s in BUILTIN_STRATEGIES.items()} == {
        "random": RandomStrategy,
        "first": FirstStrategy,
        "last": LastStrategy,
    }


def test_every_app_offers_the_builtins_beside_its_own(make_lab: LabFactory) -> None:
    described = make_lab(images=()).activelearning.describe()
    assert {"random", "first", "last"} <= described.keys()
    assert described["first"] == {"description": "First unlabelled image (by id)", "config": {}}


def test_next_sample_hands_out_in_the_builtin_order(make_lab: LabFactory) -> None:
    lab = make_lab(images=("b", "c", "a"))
    handouts = [lab.activelearning.next_sample(s, {}, f"reader-{s}") for s in ("last", "first", "random")]
    assert [h.image.id if h else None for h in handouts] == ["c", "a", "b"]


def test_random_next_sample_with_a_seed_is_reproducible(make_lab: LabFactory) -> None:
    al = make_lab(images=tuple(f"img{i}" for i in range(6))).activelearning
    picks = []
    for seed in [1, 2, 3, 4] * 2:
        handout = al.next_sample("random", {"seed": seed}, "alice")
        assert handout is not None
        picks.append(handout.image.id)
        al.release(picks[-1], "alice")
    assert picks[:4] == picks[4:] and len(set(picks)) > 1
