"""Double reading: readers' labels under their reader tags, their agreement, the majority-vote final label."""

from __future__ import annotations

import numpy as np
import pytest

from labelloop.activelearning import agreement, complete_reads, reader_tag
from labelloop.datastore import LabelVersion
from labelloop.imaging import read_volume
from tests.unit.activelearning.conftest import SHAPE, Lab, LabFactory


@pytest.fixture
def lab(make_lab: LabFactory) -> Lab:
    """One image, two reads needed."""
    return make_lab(images=("img1",), reads=2)


def region(*slices: slice, value: int = 1) -> np.ndarray:
    """A label map that is ``value`` inside ``array[slices]`` and 0 elsewhere."""
    array = np.zeros(SHAPE, dtype=np.uint8)
    array[slices] = value
    return array


def read(lab: Lab, holder: str, array: np.ndarray, image_id: str = "img1") -> LabelVersion:
    return lab.save_label(image_id, reader_tag(holder), array, author=holder)


def final_array(lab: Lab, image_id: str = "img1") -> np.ndarray:
    return np.asarray(read_volume(lab.datastore.labels.get(image_id, "final").path).array)


# ------------------------------------------------------------ reader tags


@pytest.mark.parametrize(
    ("holder", "tag"),
    [("alice", "read.alice"), ("Dr Smith/CT#1", "read.Dr_Smith_CT_1"), ("a.b-c_d", "read.a.b-c_d")],
)
def test_a_readers_tag_is_read_dot_their_name_made_safe(holder: str, tag: str) -> None:
    assert reader_tag(holder) == tag


def test_a_readers_tag_is_at_most_128_characters() -> None:
    assert reader_tag("x" * 300) == "read." + "x" * 123


# ------------------------------------------------------------ agreement


def test_agreement_is_the_dice_of_two_readers(lab: Lab) -> None:
    reads = [read(lab, "alice", region(slice(0, 4))), read(lab, "bob", region(slice(2, 6)))]
    # 96 voxels each, 48 shared: 2 * 48 / (96 + 96)
    assert agreement(reads) == {"dice": 0.5, "pairs": {"read.alice|read.bob": 0.5}}


def test_agreement_averages_the_dice_of_each_label_value(lab: Lab) -> None:
    both = region(slice(0, 2))
    alice = both + region(slice(4, 6), value=2)
    bob = both + region(slice(6, 8), value=2)
    reads = [read(lab, "alice", alice), read(lab, "bob", bob)]
    assert agreement(reads)["dice"] == 0.5  # label 1: 1.0, label 2: 0.0


def test_agreement_of_three_readers_averages_their_pairs(lab: Lab) -> None:
    same = region(slice(0, 4))
    reads = [read(lab, "ann", same), read(lab, "bob", same), read(lab, "cy", region(slice(4, 8)))]
    measured = agreement(reads)
    assert measured["pairs"] == {"read.ann|read.bob": 1.0, "read.ann|read.cy": 0.0, "read.bob|read.cy": 0.0}
    assert measured["dice"] == pytest.approx(1 / 3, abs=1e-4)


def test_two_empty_reads_agree_fully(lab: Lab) -> None:
    reads = [read(lab, "alice", np.zeros(SHAPE)), read(lab, "bob", np.zeros(SHAPE))]
    assert agreement(reads)["dice"] == 1.0


def test_a_single_read_has_no_agreement(lab: Lab) -> None:
    assert agreement([read(lab, "alice", region(slice(0, 4)))]) == {"dice": None, "pairs": {}}


# ------------------------------------------------------------ completing an image


def test_one_read_of_two_stores_no_final_label(lab: Lab) -> None:
    read(lab, "alice", region(slice(0, 4)))
    outcome = lab.activelearning.complete_reads("img1")
    assert outcome is not None
    assert (outcome.reads, outcome.reads_needed, outcome.final_version) == (1, 2, None)
    assert lab.datastore.labels.versions("img1", "final") == []


def test_two_reads_store_the_final_label_with_their_agreement(lab: Lab) -> None:
    alice = region(slice(0, 4))
    read(lab, "alice", alice)
    read(lab, "bob", region(slice(2, 6)))
    outcome = lab.activelearning.complete_reads("img1")
    assert outcome is not None and outcome.final_version == 1
    assert outcome.agreement == {"dice": 0.5, "pairs": {"read.alice|read.bob": 0.5}}
    np.testing.assert_array_equal(final_array(lab), alice)  # where two readers disagree, the first wins
    assert lab.activelearning.next_sample("first", {}, "carol") is None, "the image is finished"


def test_a_disagreement_of_two_goes_to_the_earlier_reader(lab: Lab) -> None:
    bob = region(slice(2, 6))
    read(lab, "bob", bob)
    read(lab, "alice", region(slice(0, 4)))
    lab.activelearning.complete_reads("img1")
    np.testing.assert_array_equal(final_array(lab), bob)


def test_the_final_label_of_three_reads_is_their_majority_vote(make_lab: LabFactory) -> None:
    lab = make_lab(images=("img1",), reads=3)
    read(lab, "ann", region(slice(0, 4)))
    read(lab, "bob", region(slice(2, 6)))
    read(lab, "cy", region(slice(2, 4)) + region(slice(6, 8)))
    outcome = complete_reads(lab.datastore, "img1", 3)
    assert outcome.final_version == 1
    np.testing.assert_array_equal(final_array(lab), region(slice(2, 4)))  # 0:2, 4:6, 6:8 have one vote


def test_an_image_that_already_has_a_final_label_is_left_alone(lab: Lab) -> None:
    curated = region(slice(0, 8))
    lab.save_label("img1", "final", curated)
    read(lab, "alice", region(slice(0, 4)))
    read(lab, "bob", region(slice(2, 6)))
    outcome = lab.activelearning.complete_reads("img1")
    assert outcome is not None and outcome.final_version is None
    assert [v.version for v in lab.datastore.labels.versions("img1", "final")] == [1]
    np.testing.assert_array_equal(final_array(lab), curated)


def test_without_double_reading_complete_reads_does_nothing(make_lab: LabFactory) -> None:
    lab = make_lab(images=("img1",))
    read(lab, "alice", region(slice(0, 4)))
    read(lab, "bob", region(slice(2, 6)))
    assert lab.activelearning.complete_reads("img1") is None
    assert lab.datastore.labels.versions("img1", "final") == []
