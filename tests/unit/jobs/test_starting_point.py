"""A training run's log says where it starts and why (issue 17, item 11: ``pretrained`` means what it
says)."""

from __future__ import annotations

from labelloop.jobs.training import starting_point


def test_pretrained_fine_tunes_the_active_version_and_says_so() -> None:
    assert starting_point("segmentation", 3, True) == "fine-tuning version 3 (pretrained=true)"


def test_from_scratch_always_gives_the_reason() -> None:
    assert starting_point("segmentation", 3, False) == "from scratch (pretrained=false; version 3 is active)"
    assert starting_point("segmentation", None, False) == "from scratch (pretrained=false)"
    untrained = starting_point("segmentation", None, True)
    assert untrained.startswith("from scratch: no version of segmentation is active yet")
    assert "pretrained=true fine-tunes the active version" in untrained
