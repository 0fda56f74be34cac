"""Unit tests of labelloop.datastore.labels's pure helpers: the If-Match header."""

from __future__ import annotations

import pytest

from labelloop.datastore.labels import parse_if_match

# ------------------------------------------------------------------ If-Match


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("*", ["*"]),
        (" * ", ["*"]),
        ('"3"', ['"3"']),
        ('"1", "2"', ['"1"', '"2"']),
        ('"1","2" ,\t"3"', ['"1"', '"2"', '"3"']),
        ('"1",, "2",', ['"1"', '"2"']),
        ('W/"7"', ['W/"7"']),
    ],
    ids=repr,
)
def test_parse_if_match(header: str | None, expected: list[str] | None):
    assert parse_if_match(header) == expected
