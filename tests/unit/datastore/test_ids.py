"""Unit tests of labelloop.datastore.ids: image, session and label ids, and tags."""

from __future__ import annotations

import pytest

from labelloop.datastore.ids import DEFAULT_TAG, validate_id, validate_tag
from labelloop.errors import InvalidIdError, InvalidInputError

# ------------------------------------------------------------------ ids and tags


@pytest.mark.parametrize(
    "value",
    ["a", "0", "case.001", "spleen_10", "A-b_c.9", "x" * 128, "liver.seg", "UPPER"],
)
def test_valid_ids_are_returned_unchanged(value: str):
    assert validate_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        ".hidden",
        "-dash",
        "_under",
        "a..b",
        "..",
        "a/b",
        "../etc",
        "a\\b",
        "a b",
        "a:b",
        "x" * 129,
        "café",
        "abc\n",
        "a\x00b",
    ],
    ids=repr,
)
def test_invalid_ids_are_refused(value: str | None):
    with pytest.raises(InvalidIdError) as info:
        validate_id(value)
    assert "image id" in str(info.value)
    assert isinstance(info.value, InvalidInputError)


def test_validate_id_names_what_it_checked():
    with pytest.raises(InvalidIdError, match="session id"):
        validate_id("a/b", "session id")


@pytest.mark.parametrize("value", [None, ""])
def test_missing_tag_means_final(value: str | None):
    assert validate_tag(value) == DEFAULT_TAG == "final"


@pytest.mark.parametrize("value", ["final", "original", "reviewer-2", "v1.2"])
def test_valid_tags(value: str):
    assert validate_tag(value) == value


@pytest.mark.parametrize("value", ["a/b", "..", "../final", " ", "final\n", "-x"], ids=repr)
def test_invalid_tags_are_refused(value: str):
    with pytest.raises(InvalidIdError, match="tag"):
        validate_tag(value)
