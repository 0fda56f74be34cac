"""Next sample on SQLite and PostgreSQL: leases keep annotators apart, expire, renew and end; rankings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labelloop.activelearning import RankEntry, reader_tag
from labelloop.errors import InvalidParamsError, NotFoundError
from labelloop.tasks import Candidate, Ranked, Strategy, StrategyContext, StrategySpec
from tests.unit.activelearning.conftest import SHAPE, Lab, LabFactory


@pytest.fixture
def lab(make_lab: LabFactory, database_url: str | None) -> Lab:
    """Three images ``img1..img3``, leases of 60 s, one read per image."""
    return make_lab(database_url)


def handed_out(lab: Lab, *holders: str, strategy: str = "first") -> list[str | None]:
    """The image each holder is given in turn (``None`` for ``{}``)."""
    handouts = [lab.activelearning.next_sample(strategy, {"client_id": h}, "user") for h in holders]
    return [h.image.id if h is not None else None for h in handouts]


def finish(lab: Lab, image_id: str) -> None:
    lab.save_label(image_id, "final", np.zeros(SHAPE))


# ------------------------------------------------------------ leases


def test_next_sample_leases_the_image_to_its_holder(lab: Lab) -> None:
    answer = lab.activelearning.next_sample("first", {}, "alice")
    assert answer is not None and answer.image.id == "img1" and Path(answer.path).is_file()
    assert (answer.lease.holder, answer.lease.expires_at, answer.renewed) == (
        "alice",
        lab.clock.now + 60.0,
        False,
    )
    leases = lab.activelearning.open_leases()
    assert [(lease.image_id, lease.holder) for lease in leases] == [("img1", "alice")]


def test_the_client_id_holds_the_lease_rather_than_the_user(lab: Lab) -> None:
    answer = lab.activelearning.next_sample("first", {"client_id": "slicer-7"}, "alice")
    assert answer is not None and answer.lease.holder == "slicer-7"


def test_an_image_leased_to_one_holder_is_never_handed_to_another(lab: Lab) -> None:
    assert handed_out(lab, "alice", "bob", "carol", "dave") == ["img1", "img2", "img3", None]


def test_the_same_holder_gets_its_open_lease_back_renewed(lab: Lab) -> None:
    first = lab.activelearning.next_sample("last", {}, "alice")
    lab.clock.advance(30)
    again = lab.activelearning.next_sample("first", {}, "alice")
    assert again is not None and first is not None
    assert again.image.id == first.image.id == "img3"
    assert (again.lease.holder, again.lease.expires_at, again.renewed) == (
        "alice",
        lab.clock.now + 60.0,
        True,
    )
    assert [lease.expires_at for lease in lab.activelearning.open_leases()] == [lab.clock.now + 60.0]


def test_a_renewed_lease_outlives_its_first_expiry(lab: Lab) -> None:
    handed_out(lab, "alice")
    lab.clock.advance(50)
    handed_out(lab, "alice")
    lab.clock.advance(50)  # 100 s after the first lease, 50 s after the renewal
    assert handed_out(lab, "bob") == ["img2"]


def test_a_lease_holds_until_it_expires_and_then_frees_the_image(lab: Lab) -> None:
    handed_out(lab, "alice")
    lab.clock.advance(59)
    assert handed_out(lab, "bob") == ["img2"]
    lab.clock.advance(2)  # alice's lease is 61 s old, bob's 2 s
    assert handed_out(lab, "carol") == ["img1"]
    assert {lease.holder for lease in lab.activelearning.open_leases()} == {"bob", "carol"}


def test_a_holder_whose_lease_expired_gets_a_new_image_not_a_renewal(lab: Lab) -> None:
    handed_out(lab, "alice")
    lab.clock.advance(61)
    answer = lab.activelearning.next_sample("last", {}, "alice")
    assert answer is not None and answer.image.id == "img3" and answer.renewed is False


def test_release_ends_the_lease_and_frees_the_image(lab: Lab) -> None:
    handed_out(lab, "alice")
    lab.activelearning.release("img1", "alice")
    assert lab.activelearning.open_leases() == []
    assert handed_out(lab, "bob") == ["img1"]


def test_releasing_a_lease_one_does_not_hold_is_not_found(lab: Lab) -> None:
    handed_out(lab, "alice")
    with pytest.raises(NotFoundError, match="'bob' holds no lease on image 'img1'"):
        lab.activelearning.release("img1", "bob")
    lab.activelearning.release("img1", "alice")
    with pytest.raises(NotFoundError):
        lab.activelearning.release("img1", "alice")


def test_a_lease_on_an_image_that_got_its_final_label_is_not_renewed(lab: Lab) -> None:
    handed_out(lab, "alice")
    finish(lab, "img1")
    answer = lab.activelearning.next_sample("first", {}, "alice")
    assert answer is not None and answer.image.id == "img2" and answer.renewed is False


def test_labelled_images_are_not_handed_out_and_then_nothing_is_left(lab: Lab) -> None:
    finish(lab, "img1")
    finish(lab, "img3")
    assert handed_out(lab, "alice", "bob") == ["img2", None]
    assert lab.activelearning.next_sample("first", {}, "bob") is None


def test_an_empty_datastore_has_no_next_sample(make_lab: LabFactory) -> None:
    assert make_lab(images=()).activelearning.next_sample("random", {}, "alice") is None


@pytest.mark.parametrize("client_id", [123, "x" * 257, ["alice"]])
def test_an_invalid_client_id_is_refused(lab: Lab, client_id: Any) -> None:
    with pytest.raises(InvalidParamsError, match="client_id"):
        lab.activelearning.next_sample("first", {"client_id": client_id}, "alice")
    assert lab.activelearning.open_leases() == []


def test_no_client_id_and_no_user_is_refused(lab: Lab) -> None:
    with pytest.raises(InvalidParamsError, match="client_id"):
        lab.activelearning.next_sample("first", {}, "")


def test_an_unknown_strategy_is_not_found_and_leases_nothing(lab: Lab) -> None:
    with pytest.raises(NotFoundError, match="Strategy 'nope'"):
        lab.activelearning.next_sample("nope", {}, "alice")
    with pytest.raises(NotFoundError, match="Strategy 'nope'"):
        lab.activelearning.ranking("nope", {}, 10)
    assert lab.activelearning.open_leases() == []


# ------------------------------------------------------------ double reading


def test_with_two_reads_an_image_goes_to_two_holders_but_not_a_third(make_lab: LabFactory) -> None:
    lab = make_lab(reads=2)
    assert handed_out(lab, "alice", "bob", "carol") == ["img1", "img1", "img2"]


def test_with_two_reads_a_reader_is_not_given_the_image_they_already_read(make_lab: LabFactory) -> None:
    lab = make_lab(reads=2)
    handed_out(lab, "alice")
    lab.save_label("img1", reader_tag("alice"), np.ones(SHAPE))
    lab.activelearning.release("img1", "alice")
    assert handed_out(lab, "alice", "bob", "carol") == ["img2", "img1", "img2"]


# ------------------------------------------------------------ rankings


class ByEntropy(Strategy):
    """Highest stored ``entropy`` first."""

    spec = StrategySpec(description="by entropy", scores=("entropy",))

    def rank(
        self, candidates: Sequence[Candidate], context: StrategyContext, config: Mapping[str, Any]
    ) -> list[Ranked]:
        def entropy(c: Candidate) -> float:
            score = c.scores.get("entropy")
            return score.value if score is not None and score.value is not None else -1.0

        ordered = sorted(candidates, key=entropy, reverse=True)
        return [Ranked(c.image_id, entropy(c), f"entropy {entropy(c)}") for c in ordered]


def put_entropy(lab: Lab, image_id: str, value: float, model_version: int = 3) -> None:
    lab.activelearning.scores.put(
        image_id,
        "entropy",
        model="segmentation",
        model_version=model_version,
        image_sha256=lab.datastore.images.get(image_id).sha256,
        value=value,
        details={},
    )


def test_ranking_orders_unfinished_images_with_their_stored_scores(make_lab: LabFactory) -> None:
    lab = make_lab(strategies={"entropy": ByEntropy()})
    for image_id, value in [("img1", 0.2), ("img2", 0.9), ("img3", 0.5)]:
        put_entropy(lab, image_id, value)
    finish(lab, "img3")
    assert lab.activelearning.ranking("entropy", {}, 10) == [
        RankEntry(
            rank=1,
            image_id="img2",
            score=0.9,
            model_version=3,
            scores={"entropy": 0.9},
            reason="entropy 0.9",
            leased=False,
        ),
        RankEntry(
            rank=2,
            image_id="img1",
            score=0.2,
            model_version=3,
            scores={"entropy": 0.2},
            reason="entropy 0.2",
            leased=False,
        ),
    ]


def test_next_sample_takes_the_strategys_first_choice_with_its_score(make_lab: LabFactory) -> None:
    lab = make_lab(strategies={"entropy": ByEntropy()})
    put_entropy(lab, "img1", 0.2)
    put_entropy(lab, "img3", 0.7)
    answer = lab.activelearning.next_sample("entropy", {}, "alice")
    assert answer is not None and (answer.image.id, answer.score, answer.reason) == (
        "img3",
        0.7,
        "entropy 0.7",
    )


def test_ranking_stops_at_the_limit_and_leases_nothing(lab: Lab) -> None:
    assert [row.image_id for row in lab.activelearning.ranking("last", {}, 2)] == ["img3", "img2"]
    assert lab.activelearning.open_leases() == []


def test_ranking_leaves_out_images_leased_to_all_their_readers(lab: Lab) -> None:
    handed_out(lab, "alice")
    assert [row.image_id for row in lab.activelearning.ranking("first", {}, 10)] == ["img2", "img3"]


def test_ranking_flags_an_image_that_still_waits_for_its_second_reader(make_lab: LabFactory) -> None:
    lab = make_lab(reads=2)
    handed_out(lab, "alice")
    ranked = lab.activelearning.ranking("first", {}, 10)
    assert [(row.image_id, row.leased) for row in ranked] == [
        ("img1", True),
        ("img2", False),
        ("img3", False),
    ]


def test_ranking_counts_an_expired_lease_as_ended(lab: Lab) -> None:
    handed_out(lab, "alice")
    lab.clock.advance(61)
    assert [row.image_id for row in lab.activelearning.ranking("first", {}, 10)] == ["img1", "img2", "img3"]
